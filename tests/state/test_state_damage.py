"""Issue 14, point 10: a store that exists but is not a whole capctl state is an error, never a new state.

Some capctl tables but not all, or a meta table without its row, raise `StateDamaged` on open (read-only
or not) and on a write by a store opened before the damage; nothing is re-created, so the serial cannot
restart at 0 under a saved plan. An empty PostgreSQL database stays a new state.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from reconciler.state import StateDamaged, StateError, StateMissing, StateStore, open_state, sqlite_path
from reconciler.state.sql import SqlStateStore

from .helpers import make_record


def raw_sql(url: str, statement: str) -> list[tuple[object, ...]]:
    """Run `statement` on the store's database behind capctl's back (as an operator or a bug would)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(url)) as db:
            rows = db.execute(statement).fetchall()
        db.close()
        return rows
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


TABLES_LEFT = "SELECT count(*) FROM capctl_records"


@pytest.mark.parametrize("create", [True, False])
def test_a_dropped_meta_table_is_damage_and_is_not_recreated(store: StateStore, store_url: str, create: bool) -> None:
    store.put(make_record())
    store.close()
    raw_sql(store_url, "DROP TABLE capctl_meta")
    with pytest.raises(StateDamaged, match=r"looks damaged \(it has capctl_records but no capctl_meta table\)"):
        open_state(store_url, create=create)
    with pytest.raises(Exception, match="capctl_meta"):  # still gone: not re-created with serial 0
        raw_sql(store_url, "SELECT serial FROM capctl_meta")
    assert raw_sql(store_url, TABLES_LEFT) == [(1,)]


def test_a_deleted_meta_row_is_damage_for_open_and_for_an_open_store(store: StateStore, store_url: str) -> None:
    assert store.put(make_record()) == 1
    raw_sql(store_url, "DELETE FROM capctl_meta")
    for write in (lambda: store.put(make_record()), lambda: store.delete(make_record().key), store.load, store.serial):
        with pytest.raises(StateDamaged, match=r"looks damaged \(the capctl_meta table has no row\)"):
            write()
    with pytest.raises(StateDamaged, match=r"the capctl_meta table has no row"):
        open_state(store_url)
    assert raw_sql(store_url, "SELECT count(*) FROM capctl_meta") == [(0,)]  # no row put back at serial 0


def test_state_init_refuses_a_partial_schema(store: StateStore, store_url: str) -> None:
    store.close()
    raw_sql(store_url, "DROP TABLE capctl_records")
    with pytest.raises(StateDamaged, match=r"it has capctl_meta but no capctl_records table"):
        open_state(store_url, init=True)


def test_an_empty_postgres_database_is_a_new_state_and_a_mangled_one_an_error(pg_url: str) -> None:
    with pytest.raises(StateMissing, match="no capctl tables in that database"):
        open_state(pg_url, create=False)
    for created in (True, False):  # `capctl state init`: a new state, then "already exists"
        store = open_state(pg_url, init=True)
        assert isinstance(store, SqlStateStore) and store.created is created
        store.close()
    store = open_state(pg_url)
    store.put(make_record())
    store.close()
    raw_sql(pg_url, "ALTER TABLE capctl_meta RENAME COLUMN serial TO counter")
    with pytest.raises(StateError, match=r"^postgresql://.*column \"serial\" does not exist"):
        open_state(pg_url, create=False)


def test_a_mangled_postgres_table_is_one_error_line_from_every_command(pg_url: str, tmp_path: Path) -> None:
    from tests.e2e.test_cli_contract import capctl, write_specs
    from tests.specdocs import snapshot_job

    store = open_state(pg_url)
    store.put(make_record("SnapshotJob/audit/lobby"))
    store.close()
    raw_sql(pg_url, "ALTER TABLE capctl_records DROP COLUMN body")
    write_specs(tmp_path, snapshot_job("audit", ["lobby"]))
    key = "SnapshotJob/audit/lobby"
    for command in (("plan", "--no-refresh"), ("state", "list"), ("state", "show", key), ("state", "rm", key)):
        proc = capctl(*command, "--state", pg_url, cwd=tmp_path)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("Error: postgresql://") and "Traceback" not in proc.stderr, proc.stderr
        assert "body" in proc.stderr and "does not exist" in proc.stderr  # `r.body` or, for one record, `"body"`


def test_keys_and_one_record_are_read_without_decoding_the_others(store_url: str) -> None:
    """Shell completion and `state show KEY` read the keys and one record: they decoded the whole state
    (5 s at 50,000 tasks), and a record that cannot be decoded hid every key and every other record."""
    store = open_state(store_url)
    try:
        store.put_many([make_record("SnapshotJob/a/r2"), make_record("SnapshotJob/a/r1")])
        raw_sql(store_url, "UPDATE capctl_records SET body = 'not json' WHERE key = 'SnapshotJob/a/r2'")
        assert store.keys() == ["SnapshotJob/a/r1", "SnapshotJob/a/r2"]
        assert store.record("SnapshotJob/a/r1") == make_record("SnapshotJob/a/r1")
        assert store.record("SnapshotJob/a/r3") is None
        with pytest.raises(StateError, match="SnapshotJob/a/r2"):
            store.record("SnapshotJob/a/r2")
    finally:
        store.close()


# Walk 16E-4: capctl_meta numbers and the fingerprint key edited by hand. SQLite kept text in the serial
# (`serial + 1` then made it 1, so a stale saved plan could apply) and compared a text version with an
# int (TypeError); a key that is not hex was a ValueError traceback, and a short one keyed every hash anew, so
# a plan replaced every task.
@pytest.mark.parametrize(
    ("statement", "detail", "only_sqlite"),
    [
        ("UPDATE capctl_meta SET serial = -1", "the capctl_meta serial is -1, not a whole number", False),
        ("UPDATE capctl_meta SET serial = 'x'", "the capctl_meta serial is 'x', not a whole number", True),
        ("UPDATE capctl_meta SET serial = 1.5", "the capctl_meta serial is 1.5, not a whole number", True),
        ("UPDATE capctl_meta SET schema_version = 'x'", "the capctl_meta schema_version is 'x', not a whole", True),
        (
            "UPDATE capctl_fingerprint_key SET key_hex = 'ab'",
            "capctl_fingerprint_key table holds no 32-byte key",
            False,
        ),
        (
            "UPDATE capctl_fingerprint_key SET key_hex = 'zz'",
            "capctl_fingerprint_key table holds no 32-byte key",
            False,
        ),
    ],
)
def test_a_hand_edited_serial_version_or_key_is_damage(
    store: StateStore, store_url: str, statement: str, detail: str, only_sqlite: bool
) -> None:
    if only_sqlite and not store_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's typed columns refuse the edit itself")
    store.fingerprint_key()  # made and stored (before any record, as every command does)
    store.put(make_record())
    store.close()
    raw_sql(store_url, statement)
    with pytest.raises(StateDamaged, match=re.escape(detail)):
        again = open_state(store_url)
        try:
            again.fingerprint_key()
            again.load()
            again.put(make_record("SnapshotJob/b/c"))
        finally:
            again.close()
    assert raw_sql(store_url, "SELECT count(*) FROM capctl_records") == [(1,)]  # nothing written
