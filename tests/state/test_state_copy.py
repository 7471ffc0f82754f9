"""`capctl state copy`'s two halves, `export` and `import_copy`, between real SQLite and PostgreSQL stores:
everything a state holds arrives (records with tombstones and backoffs, the fingerprint key, room activity,
the inbox), a destination that holds tasks is refused unless replaced, its serial never moves back, and a
copy that fails half-way writes nothing."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from reconciler.model import RoomActivity, TaskStatus
from reconciler.state import InboxEntry, StateError, open_state, sqlite_path
from reconciler.state.base import HistorySpan
from reconciler.state.sql import SqlStateStore, StateCopy

from .helpers import make_record
from .test_state_rooms import ACCOUNTS, UPGRADED, VOLC, schema_1_state

KEY = b"k" * 32


def sql_store(url: str) -> SqlStateStore:
    store = open_state(url)
    assert isinstance(store, SqlStateStore)
    return store


def fill(store: SqlStateStore) -> None:
    """A state a few months old: a running task, a tombstone, a dormant one backing off, rooms, callbacks."""
    store.fingerprint_key(KEY)
    store.put(make_record("SnapshotJob/a/lobby", status=TaskStatus.RUNNING, vendor_task_id="a", reissue_count=4))
    store.put(make_record("SnapshotJob/old/hall", status=TaskStatus.REMOVED, removed_at=1_000.0, stopped_at=999.0))
    store.put(make_record("SnapshotJob/a/vip", status=TaskStatus.DORMANT, next_attempt_at=5_000.0, unproductive_runs=3))
    store.record_rooms(
        [RoomActivity(VOLC, "lobby", True, 10.0, "callback"), RoomActivity(VOLC, "vip", False, 9.0, "resync")],
        [HistorySpan("room", VOLC, "lobby", 10.0, None), HistorySpan("seen", "SnapshotJob/a/lobby", "", 8.0, None)],
    )
    for n in range(2):
        store.inbox_put(InboxEntry("zego", f"event-{n}", {"room_id": "lobby", "n": n}, f"sha-{n}", 100.0 + n))
    store.inbox_claim(now=200.0, limit=1)  # one handled (kept, so a retry of it is still a duplicate), one not


def test_a_copy_of_a_state_of_schema_1_keeps_its_rooms_for_its_first_daemon_to_upgrade(
    sqlite_url: str, pg_url: str
) -> None:
    """Copied before any daemon of schema 2 ran on it (moving to PostgreSQL at the upgrade), a state keeps its
    activity by Provider name, and its schema: the copy is upgraded as the source would have been."""
    schema_1_state(sqlite_url)
    src, dst = sql_store(sqlite_url), sql_store(pg_url)
    dst.import_copy(src.export())
    assert dst.export().schema == 1  # restored from a backup of before the upgrade: the older capctl reads it
    assert dst.room_activity(ACCOUNTS) == UPGRADED
    assert dst.upgrade_rooms(ACCOUNTS) == (3, ["gone"])
    assert dst.room_activity({}) == UPGRADED
    dst.import_copy(sql_store(sqlite_url.replace("state.db", "new.db")).export(), replace=True)  # schema 2 again
    assert dst.room_activity({}) == [] and dst.upgrade_rooms(ACCOUNTS) is None
    src.close()
    dst.close()


@pytest.mark.parametrize("direction", ["sqlite-to-postgres", "postgres-to-sqlite"])
def test_a_copy_holds_everything_the_state_held(direction: str, sqlite_url: str, pg_url: str) -> None:
    src_url, dst_url = (sqlite_url, pg_url) if direction == "sqlite-to-postgres" else (pg_url, sqlite_url)
    src, dst = sql_store(src_url), sql_store(dst_url)
    fill(src)
    source = src.export()

    serial = dst.import_copy(source)

    assert serial == source.serial == dst.serial() and source.key_hex == KEY.hex()
    copied = dst.export()
    assert (copied.records, copied.key_hex, copied.rooms, copied.inbox, copied.history) == (
        source.records,
        source.key_hex,
        source.rooms,
        source.inbox,
        source.history,
    )
    assert {s.kind for s in copied.history} == {"room", "seen"}  # the status page's timelines (26b)
    assert dst.load().records == src.load().records and dst.fingerprint_key() == KEY
    assert dst.room_activity({}) == src.room_activity({})
    assert [e.dedupe_key for e in dst.inbox_claim(now=300.0)] == ["event-1"]  # the handled one stays handled
    src.close()
    dst.close()


def test_a_destination_holding_tasks_is_refused_unless_replaced_and_its_serial_never_moves_back(
    store_url: str, sqlite_url: str
) -> None:
    src = sql_store(sqlite_url.replace("state.db", "source.db"))
    fill(src)
    dst = sql_store(store_url)
    dst.fingerprint_key()  # as every command takes it first: keyed records with no key are damage (walk 16E-8)
    for n in range(30):  # a busier state: its serial is above the source's
        dst.put(make_record(f"SnapshotJob/other/room-{n}"))
    before = dst.export()

    with pytest.raises(StateError, match=r"already holds a state \(30 task record\(s\), serial 30\): nothing was"):
        dst.import_copy(src.export())
    assert dst.export() == before

    serial = dst.import_copy(src.export(), replace=True)
    assert serial == 31 and dst.load().records == src.load().records  # 31: never back to the source's 3
    src.close()
    dst.close()


def test_a_copy_that_fails_half_way_writes_nothing(store_url: str, sqlite_url: str) -> None:
    src = sql_store(sqlite_url.replace("state.db", "source.db"))
    fill(src)
    good = src.export()
    dst = sql_store(store_url)
    before = dst.export()
    # The inbox goes in last, after every record: a twice-stored callback fails its primary key there.
    bad = StateCopy(good.serial, good.records, good.key_hex, good.rooms, [*good.inbox, good.inbox[0]])
    progress: list[tuple[int, int]] = []

    with pytest.raises(StateError):
        dst.import_copy(bad, progress=lambda done, total: progress.append((done, total)))

    assert progress == [(3, 3)]  # the records were written ...
    assert dst.export() == before and dst.load().records == {}  # ... and rolled back with the rest
    src.close()
    dst.close()


def test_a_state_from_before_keys_rooms_and_the_inbox_is_copied_as_it_is(sqlite_url: str, store_url: str) -> None:
    old = sql_store(sqlite_url.replace("state.db", "old.db"))
    old.put(make_record(spec_hash="sha256:" + "c" * 64, fixed_hash="sha256:" + "c" * 64))
    old.close()
    with sqlite3.connect(sqlite_path(old.url)) as db:  # as capctl before issue 14 left it
        db.execute("DROP TABLE capctl_fingerprint_key")
    db.close()
    src, dst = sql_store(old.url), sql_store(store_url)

    copy = src.export()
    dst.import_copy(copy)

    assert (copy.key_hex, copy.rooms, copy.inbox) == (None, [], [])
    reader = open_state(store_url, create=False)
    assert reader.fingerprint_key() is None and reader.load().records == src.load().records  # keyed by its first writer
    reader.close()
    src.close()
    dst.close()


def test_a_record_row_this_capctl_cannot_read_is_refused_by_name_before_anything_is_copied(sqlite_url: str) -> None:
    src = sql_store(sqlite_url)
    src.put(make_record())
    src.close()
    with sqlite3.connect(sqlite_path(src.url)) as db:
        db.execute("UPDATE capctl_records SET body = '{\"key\": 1}'")
    db.close()
    src = sql_store(sqlite_url)
    with pytest.raises(StateError, match="row 'SnapshotJob/lobby-audit/lobby'"):
        src.export()
    src.close()


# Walk 18E-5: a source whose key was lost (its records keyed) was copied as "no fingerprint key (the source's
# hashes are not keyed yet)", and a hand-edited key as it was: the copy reported success, the copy's first plan
# refused it as damage. Now the source is refused, nothing copied.
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("DELETE FROM capctl_fingerprint_key", "its records hold keyed task hashes, but the capctl_fingerprint_key"),
        ("UPDATE capctl_fingerprint_key SET key_hex = 'zz'", "holds no 32-byte key in hex"),
    ],
)
def test_a_source_whose_fingerprint_key_is_lost_or_damaged_is_refused(sqlite_url: str, edit: str, message: str) -> None:
    src = sql_store(sqlite_url)
    fill(src)
    src.close()
    with sqlite3.connect(sqlite_path(src.url)) as db:
        db.execute(edit)
    db.close()
    src = sql_store(sqlite_url)
    with pytest.raises(StateError, match=message):
        src.export()
    src.close()


@contextmanager
def _role(pg_url: str, name: str, grant: str) -> Iterator[tuple[str, str]]:
    """A database user (`grant` on the test's schema), its URL and the schema; dropped afterwards."""
    import psycopg

    admin, schema = pg_url.split("?")[0], pg_url.rsplit("%3D", 1)[1]
    role = f"{schema}_{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT {grant} ON SCHEMA {schema} TO {role}")
    try:
        yield pg_url.replace("://postgres@", f"://{role}@", 1), schema
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


@contextmanager
def _user_without_create(pg_url: str) -> Iterator[str]:
    """The URL of a database user that made the state (the first run creates every table, the room-activity one
    included, so it owns them) and then lost `CREATE` on the schema, as docs/state.md allows."""
    import psycopg

    with _role(pg_url, "user", "USAGE, CREATE") as (url, schema):
        sql_store(url).close()
        with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:
            conn.execute(f"REVOKE CREATE ON SCHEMA {schema} FROM {schema}_user")
        yield url


def test_a_user_without_create_on_the_schema_keeps_writing_a_state_made_before(sqlite_url: str, pg_url: str) -> None:
    """docs/state.md: the database user needs `CREATE` on the schema the first time, then only `SELECT`,
    `INSERT`, `UPDATE` and `DELETE`. PostgreSQL checks that privilege even for `CREATE TABLE IF NOT EXISTS`
    of a table that exists, so no such statement may run once the tables are there."""
    import psycopg

    with _user_without_create(pg_url) as url:
        store = sql_store(url)
        with store.lock("capctl apply"):
            fill(store)  # the key, records, room activity, the inbox
        store.record_rooms([RoomActivity(VOLC, "hall", True, 20.0, "callback")])
        assert store.fingerprint_key() == KEY
        source = sql_store(sqlite_url)
        fill(source)
        store.import_copy(source.export(), replace=True)
        assert {r.room for r in store.room_activity({})} == {"lobby", "vip"}
        with psycopg.connect(pg_url, autocommit=True) as conn:  # a row by Provider name: schema 1 again
            conn.execute("INSERT INTO capctl_room_activity VALUES ('volc', 'hall', 1, 30.0, 'callback')")
            conn.execute("UPDATE capctl_meta SET schema_version = 1")
        assert store.upgrade_rooms(ACCOUNTS) == (1, [])  # rows rewritten: no CREATE needed
        store.close()


def test_a_user_the_database_refuses_is_told_what_capctl_needs_of_it_and_nothing_is_made(pg_url: str) -> None:
    """Walk 35D-3: a user without CREATE on the schema (its first apply) or without grants on tables a DBA made
    read only the server's `permission denied for schema public` / `… for table capctl_meta`."""
    import psycopg

    with _role(pg_url, "granted_nothing", "USAGE") as (url, schema):
        with pytest.raises(StateError) as no_create:
            sql_store(url)  # as apply and run open it: an empty state is made
        assert f"permission denied for schema {schema} (capctl makes its tables in that schema when apply or run" in (
            str(no_create.value)
        )
        assert "grant this user CREATE on it, or run that apply as a user who has it;" in str(no_create.value)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone() == (0,)
        sql_store(pg_url).close()  # the tables made by their owner, nothing granted
        for create in (False, True):  # plan and state list; apply
            with pytest.raises(StateError) as no_grant:
                open_state(url, create=create)
            assert str(no_grant.value).endswith(
                "permission denied for table capctl_meta (this user needs SELECT, INSERT, UPDATE and DELETE on every"
                " capctl table (capctl_*): have the tables' owner grant them, or use that user: docs/state.md)"
            )


def test_a_state_in_a_schema_this_user_may_not_use_is_named_never_taken_for_no_state(pg_url: str) -> None:
    """Walk 36B-5: without USAGE on the schema holding the state, PostgreSQL skips it when resolving names:
    `state list` said `No state`, and apply with a schema of the user's own first on its search_path made a
    second, empty state there (every task started again)."""
    import psycopg

    sql_store(pg_url).close()  # the state, made by the tables' owner
    with _role(pg_url, "no_usage", "CREATE") as (url, schema):  # CREATE alone: the schema is not the user's to use
        user = f"{schema}_no_usage"
        with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {user} AUTHORIZATION {user}")
        own_first = url.replace(f"%3D{schema}", f"%3D{user}%2C{schema}")
        folded = url.replace(f"%3D{schema}", f"%3D{schema.upper()}")  # PostgreSQL folds it (walk 37B-2)
        for target, create in ((url, False), (url, True), (own_first, True), (folded, False)):  # list; apply; …
            with pytest.raises(StateError) as hidden:
                open_state(target, create=create)
            assert (
                f"capctl's tables are in schema {schema}, on this user's search_path, but this user ({user}) may not"
                f" use that schema (no USAGE privilege), so they look absent: have the schema's owner grant it (GRANT"
                f" USAGE ON SCHEMA {schema} TO {user})"
            ) in str(hidden.value)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            made = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (user,)).fetchone()
        assert made == (0,)
        # A schema a GRANT must quote (walk 37B-2: the GRANT named it bare, folded), of the longest name PostgreSQL
        # keeps: a longer one on the path is cut to it (walk 38B-3: read as another name, so as no state).
        mixed = f"{schema}_Q".ljust(63, "q")
        with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{mixed}"')
        try:
            sql_store(pg_url.replace(f"%3D{schema}", f"%3D%22{mixed}%22")).close()
            for spelled in (mixed, f"{mixed}_and_more"):
                with pytest.raises(StateError, match=f'GRANT USAGE ON SCHEMA "{mixed}" TO {user}\\)'):
                    open_state(url.replace(f"%3D{schema}", f"%3D%22{spelled}%22"), create=False)
        finally:
            with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{mixed}" CASCADE')
        # A reserved word is quoted too, as quote_ident does (bare, `GRANT USAGE ON SCHEMA order` is a syntax error).
        with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "order" CASCADE')
            conn.execute('CREATE SCHEMA "order"')
        try:
            sql_store(pg_url.replace(f"%3D{schema}", "%3D%22order%22")).close()
            with pytest.raises(StateError, match=f'GRANT USAGE ON SCHEMA "order" TO {user}\\)'):
                open_state(url.replace(f"%3D{schema}", "%3D%22order%22"), create=False)
        finally:
            with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:
                conn.execute('DROP SCHEMA "order" CASCADE')
    with _role(pg_url, "revoked", "USAGE") as (url, schema):  # USAGE revoked under an open state
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {schema}_revoked")
        store = open_state(url)
        try:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f"REVOKE USAGE ON SCHEMA {schema} FROM {schema}_revoked")
            for step in (store.load, lambda: store.lock("capctl run")):  # it said: dropped, restore a backup
                with pytest.raises(StateError) as revoked:
                    step()
                assert "may not use that schema (no USAGE privilege)" in str(revoked.value)
                assert "restore" not in str(revoked.value)
        finally:
            store.close()


def test_a_user_without_create_on_the_schema_takes_the_lock_of_a_lease_table_from_before_its_columns(
    pg_url: str,
) -> None:
    """Walk 26a: 25B-1 added `lease_seconds` to the lease row; its migration step also ran `CREATE TABLE IF NOT
    EXISTS` of the lease, inbox and history tables, which PostgreSQL refuses without CREATE even where they are.
    Upgraded, a user that owns the tables but lost CREATE (docs/state.md) took no lock: `permission denied for
    schema …` for every apply, and no `capctl run` replica led. Adding a column needs only the table's owner."""
    import psycopg

    with _user_without_create(pg_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:  # the lease table of a capctl from before both columns
            conn.execute("ALTER TABLE capctl_lock DROP COLUMN lease_seconds")
            conn.execute("ALTER TABLE capctl_lock DROP COLUMN epoch")
        store = sql_store(url)
        try:
            with store.lock("capctl apply", lease_seconds=30) as lock, psycopg.connect(url) as conn:
                assert lock.epoch == 1
                assert conn.execute("SELECT epoch, lease_seconds FROM capctl_lock").fetchall() == [(1, 30.0)]
        finally:
            store.close()


def test_the_documented_postgresql_backup_and_restore_of_a_state_in_a_schema_of_its_own(pg_url: str) -> None:
    """docs/state.md, Backups: `pg_dump --table='capctl_*'` finds no table in a schema of its own (the layout the
    docs suggest with `search_path`); `--schema` dumps it, and `state copy --force` from the restored database
    brings it back."""
    import psycopg

    if shutil.which("pg_dump") is None or shutil.which("psql") is None:
        pytest.skip("pg_dump and psql are not installed")
    admin = pg_url.partition("?")[0]
    schema = urllib.parse.unquote(pg_url.partition("search_path%3D")[2])
    store = sql_store(pg_url)
    fill(store)
    dumped = subprocess.run(["pg_dump", "--table=capctl_*", admin], capture_output=True, text=True)
    assert dumped.returncode == 1 and "no matching tables were found" in dumped.stderr
    dump = subprocess.run(["pg_dump", f"--schema={schema}", admin], capture_output=True, text=True, check=True)
    restore_db = f"{schema}_restore"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {restore_db}")
    try:
        restored = admin.rpartition("/")[0] + f"/{restore_db}"
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", restored], input=dump.stdout, text=True, check=True)
        store.put(make_record("SnapshotJob/a/later", status=TaskStatus.RUNNING))  # after the backup
        source = sql_store(pg_url.replace(admin, restored))
        try:
            store.import_copy(source.export(), replace=True)
        finally:
            source.close()
        assert sorted(store.load().records) == ["SnapshotJob/a/lobby", "SnapshotJob/a/vip", "SnapshotJob/old/hall"]
    finally:
        store.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {restore_db} WITH (FORCE)")


def test_a_user_that_owns_no_table_of_a_state_from_before_a_column_is_told_how_to_upgrade_it(pg_url: str) -> None:
    """Walk 27a: the tables made by another role (a DBA's), the user granted SELECT/INSERT/UPDATE/DELETE only, a
    lease table from before `lease_seconds`: every lock (every apply, every replica's /readyz) read only `must
    be owner of table capctl_lock`. It says what is missing and who can add it; once that user did, the other
    goes on."""
    import psycopg

    admin, schema = pg_url.split("?")[0], pg_url.rsplit("%3D", 1)[1]
    role = f"{schema}_dml"
    url = pg_url.replace("://postgres@", f"://{role}@", 1)
    sql_store(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE capctl_lock DROP COLUMN lease_seconds")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}")
    store = sql_store(url)
    try:
        with pytest.raises(StateError) as refused:
            store.lock("capctl apply")
        assert str(refused.value).startswith(f"{url}: must be owner of table capctl_lock. ")
        assert "(column capctl_lock.lease_seconds), once: run it (`capctl apply`) as the user that owns" in str(
            refused.value
        )
        owner = sql_store(pg_url)
        with owner.lock("capctl apply"):  # the owner's run adds the column
            pass
        owner.close()
        with store.lock("capctl apply", lease_seconds=30) as lock:
            assert lock.epoch == 2
    finally:
        store.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
