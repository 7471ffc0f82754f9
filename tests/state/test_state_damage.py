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

from reconciler.state import StateDamaged, StateError, StateMissing, StateStore, codec, open_state, sqlite_path
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
_HAND_EDITS = [
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
]


@pytest.mark.parametrize(
    ("store_url", "statement", "detail"),
    # An edit PostgreSQL's typed columns refuse itself is SQLite's alone.
    [
        (db, statement, detail)
        for statement, detail, only_sqlite in _HAND_EDITS
        for db in (("sqlite",) if only_sqlite else ("sqlite", "postgres"))
    ],
    indirect=["store_url"],
)
def test_a_hand_edited_serial_version_or_key_is_damage(
    store: StateStore, store_url: str, statement: str, detail: str
) -> None:
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


# Walk 16e "Left alone", 18f: a record row capctl cannot read stops every command and the daemon, `state rm`
# of that very row too (it read the record first), so the operator needed SQL. Now `state rm KEY` names it
# out: the row is shown as stored (escaped, bounded), forgotten after a confirmation, and the error of every
# other command names that command.
def test_a_damaged_record_row_is_shown_and_forgotten_by_its_exact_key(store_url: str, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from reconciler import cli

    good, bad = "SnapshotJob/a/r1", "SnapshotJob/a/r2"
    store = open_state(store_url)
    store.put_many([make_record(good, vendor_task_id="vt-1"), make_record(bad, vendor_task_id="vt-2")])
    store.close()
    stored = json.loads(codec.encode(make_record(bad, vendor_task_id="vt-2")))
    body = json.dumps({**stored, "reissue_count": "many\u202e", "zz": "x" * 5000}, ensure_ascii=False)
    raw_sql(store_url, f"UPDATE capctl_records SET body = '{body}' WHERE key = '{bad}'")
    way_out = f"restore the state from a backup, correct that row by hand, or forget it with `capctl state rm {bad}`"

    def run(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli.app, [*args, "--state", store_url], env={"NO_COLOR": "1", "COLUMNS": "200"})
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result
        return result.exit_code, result.stdout, result.stderr

    code, out, err = run("state", "list")
    assert code == 1 and f"row '{bad}': stored record '{bad}' has a reissue_count of the wrong type" in err, err
    assert way_out in err, err
    code, out, err = run("state", "show", bad)
    assert code == 1 and out == "", (out, err)
    assert f"Row '{bad}' as stored ({len(body):,} characters):" in err, err
    assert '"reissue_count": "many\\u202e"' in err and "\u202e" not in err, err  # escaped, never raw
    assert f"x… ({len(body) - 2000:,} more characters)" in err and "x" * 5000 not in err, err  # bounded
    assert err.rstrip().endswith(f"{way_out} (docs/failure-modes.md)"), err
    code, out, err = run("state", "rm", "SnapshotJob/a/*")
    assert code == 1 and f"a glob never forgets a damaged row: name it, `capctl state rm {bad}`" in err, err
    code, out, err = run("state", "rm", bad)  # no terminal to confirm on: nothing forgotten
    assert code == 1 and "state rm needs confirmation: run it on a terminal, or pass --auto-approve" in err, err
    assert f"Problem: stored record '{bad}' has a reissue_count of the wrong type (str)" in err, err
    assert open_state(store_url).keys() == [good, bad]

    code, out, err = run("state", "rm", "SnapshotJob/a/r2*", bad, "--auto-approve")  # named: a glob may match too
    assert code == 0 and err.count("as stored") == 1, (out, err)
    assert f"Forgot the damaged row '{bad}' (serial 2): its vendor task vt-2 may still run at the vendor" in out
    assert f"adopt it again with `capctl state import {bad} vt-2`" in out, out
    after = open_state(store_url)
    assert after.keys() == [good] and after.load().records[good] == make_record(good, vendor_task_id="vt-1")
    after.close()


_R2_FF = b"SnapshotJob/a/".hex() + "ff"  # `SnapshotJob/a/` and a byte that is not UTF-8
_BYTES_KEY = "its key is stored as bytes (a BLOB, or text not in UTF-8), not text"


@pytest.mark.parametrize(
    ("edit", "key", "detail"),
    [
        ("key = CAST('SnapshotJob/a/r2' AS BLOB)", "SnapshotJob/a/r2", _BYTES_KEY),
        (f"key = X'{_R2_FF}'", "SnapshotJob/a/\udcff", _BYTES_KEY),  # the key as argv gives its bytes
        (f"key = CAST(X'{_R2_FF}' AS TEXT)", "SnapshotJob/a/\udcff", _BYTES_KEY),
        ("body = CAST(X'7bff7d' AS TEXT)", "SnapshotJob/a/r2", "stored record is not valid JSON: 'utf-8' codec"),
        ("key = NULL", "SnapshotJob/a/r2", "its key is NULL (SQL NULL: the row's key column was emptied)"),
    ],
)
def test_a_record_row_holding_bytes_is_damage_named_and_forgotten_by_its_key(
    sqlite_url: str, edit: str, key: str, detail: str
) -> None:
    """Walk 20A-2: SQLite keeps what another tool or a terminal that is not UTF-8 wrote. A key stored as a BLOB
    was a traceback from every command and the daemon (RowDamaged's message called `str.isprintable` on bytes,
    `state rm`'s glob `str.split`), and no key typed matched the row; text that is not UTF-8 (a key or a body)
    was `Could not decode to UTF-8 column 'body'`, `state rm` of that row too: SQL was the only way out again."""
    from typer.testing import CliRunner

    from reconciler import cli

    store = open_state(sqlite_url)
    store.put_many([make_record("SnapshotJob/a/r1"), make_record("SnapshotJob/a/r2", vendor_task_id="vt-2")])
    store.close()
    raw_sql(sqlite_url, f"UPDATE capctl_records SET {edit} WHERE key = 'SnapshotJob/a/r2'")

    def run(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli.app, [*args, "--state", sqlite_url], env={"NO_COLOR": "1", "COLUMNS": "300"})
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result
        return result.exit_code, result.stdout, result.stderr

    for command in (("state", "list"), ("state", "rm", "SnapshotJob/*")):
        code, out, err = run(*command)
        assert code == 1 and f"row {key!r}: {detail}" in err, (command, err)
        assert codec.forget_command(key) in err, err
    code, out, err = run("state", "rm", key, "--auto-approve")
    assert code == 0 and f"Forgot the damaged row {key!r} (serial 2): its vendor task" in out, (out, err)
    after = open_state(sqlite_url)
    assert after.keys() == ["SnapshotJob/a/r1"] and list(after.load().records) == ["SnapshotJob/a/r1"]
    after.close()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("body", "its key is NULL and its record names 'SnapshotJob/a/r1', which another row holds"),
        ("'not json'", "its body names no key either"),
    ],
)
def test_a_record_row_with_a_null_key_no_key_names_is_damage_with_a_way_out_by_hand(
    sqlite_url: str, body: str, detail: str
) -> None:
    """A NULL key (SQLite's TEXT PRIMARY KEY allows it) was skipped by `load`: its task's record silently gone,
    the next apply started it anew. A row `state rm` cannot name (its record's key is another row's, or it has
    none) is damage whose way out is a statement by hand; nothing is written."""
    store = open_state(sqlite_url)
    store.put_many([make_record("SnapshotJob/a/r1"), make_record("SnapshotJob/a/r2")])
    store.close()
    raw_sql(
        sqlite_url,
        "UPDATE capctl_records SET body = (SELECT body FROM capctl_records WHERE key = 'SnapshotJob/a/r1')"
        " WHERE key = 'SnapshotJob/a/r2'",
    )
    raw_sql(sqlite_url, f"UPDATE capctl_records SET key = NULL, body = {body} WHERE key = 'SnapshotJob/a/r2'")
    store = open_state(sqlite_url)
    with pytest.raises(codec.RowDamaged) as err:
        store.load()
    assert f"{sqlite_url}: " in str(err.value) and detail in str(err.value)
    assert 'delete that row by hand (sqlite3 FILE "DELETE FROM capctl_records WHERE key IS NULL")' in str(err.value)
    assert store.keys() == ["SnapshotJob/a/r1"] and store.serial() == 1
    assert store.record("SnapshotJob/a/r1") == make_record("SnapshotJob/a/r1")  # the other row reads as it is
    store.close()


def test_the_daemon_names_the_way_out_of_a_damaged_record_row(sqlite_url: str, tmp_path: Path) -> None:
    from tests.e2e.test_cli_contract import capctl, write_specs
    from tests.specdocs import snapshot_job

    write_specs(tmp_path, snapshot_job("a", ["r1"]))
    store = open_state(sqlite_url)
    store.put(make_record("SnapshotJob/a/r1"))
    store.close()
    raw_sql(sqlite_url, "UPDATE capctl_records SET body = 'not json'")
    proc = capctl("run", "--listen", "127.0.0.1:0", "--state", sqlite_url, cwd=tmp_path)
    assert proc.returncode == 1, proc
    assert "cannot read the state store" in proc.stderr + proc.stdout
    assert "or forget it with `capctl state rm SnapshotJob/a/r1`" in proc.stderr + proc.stdout, proc
