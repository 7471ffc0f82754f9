"""Room activity in the state (issue 18): kept per (provider, room) in both stores, newer reports win, the
serial does not move, a state from before the table reads as no activity, and read-only opens write nothing."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from reconciler.model import RoomActivity
from reconciler.state import (
    NoState,
    RoomActivityStore,
    StateDamaged,
    StateError,
    StateMissing,
    open_state,
    sqlite_path,
)

from .helpers import make_record, start_worker


def raw_sql(store_url: str, *statements: str) -> None:
    """Run `statements` on the state's database as another program would (to build an older state)."""
    if store_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(store_url)) as db:
            for statement in statements:
                db.execute(statement)
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)


def rooms_of(store: object) -> RoomActivityStore:
    """The room-activity half of a store (what the daemon writes and plan reads)."""
    assert isinstance(store, RoomActivityStore)
    return store


def test_room_activity_is_kept_and_a_newer_report_replaces_an_older_one(store_url: str) -> None:
    store = open_state(store_url)
    rooms = rooms_of(store)
    assert rooms.room_activity({}) == []
    serial = store.put(make_record())
    rooms.record_rooms(
        [
            RoomActivity("volcengine:app-1", "class-1", True, 100.0, "callback"),
            RoomActivity("volcengine:app-1", "class-2", True, 100.5, "resync"),
            RoomActivity("zego:7", "class-1", False, 90.0, "callback"),
        ]
    )
    rooms.record_rooms([RoomActivity("volcengine:app-1", "class-1", False, 150.0, "callback")])
    rooms.record_rooms(
        [RoomActivity("volcengine:app-1", "class-2", False, 50.0, "callback")]
    )  # older than what is kept
    assert store.serial() == serial  # knowledge about rooms, not a task change: saved plans stay valid
    store.close()
    reader = open_state(store_url, create=False)
    assert rooms_of(reader).room_activity({}) == [
        RoomActivity("volcengine:app-1", "class-1", False, 150.0, "callback"),
        RoomActivity("volcengine:app-1", "class-2", True, 100.5, "resync"),
        RoomActivity("zego:7", "class-1", False, 90.0, "callback"),
    ]
    reader.close()


def test_a_state_from_before_room_activity_reads_none_and_gets_the_table_from_its_first_writer(
    store_url: str,
) -> None:
    store = open_state(store_url)
    store.put(make_record())
    store.close()
    # A new state has the table from the start; one made before it had none (and schema 1).
    raw_sql(store_url, "DROP TABLE capctl_room_activity", "UPDATE capctl_meta SET schema_version = 1")
    reader = open_state(store_url, create=False)
    assert rooms_of(reader).room_activity({}) == []
    with pytest.raises(StateError, match="read-only"):
        rooms_of(reader).record_rooms([RoomActivity("volcengine:app-1", "r", True, 1.0, "callback")])
    reader.close()
    writer = open_state(store_url)
    rooms_of(writer).record_rooms([RoomActivity("volcengine:app-1", "r", True, 1.0, "callback")])
    assert [r.room for r in rooms_of(writer).room_activity({})] == ["r"]
    assert len(writer.load().records) == 1
    writer.close()


def test_no_state_knows_no_room_and_records_none() -> None:
    missing = NoState(StateMissing("sqlite:///nowhere.db"))
    assert missing.room_activity({}) == []
    with pytest.raises(StateError, match="cannot record room activity"):
        missing.record_rooms([RoomActivity("volcengine:app-1", "r", True, 1.0, "callback")])


def test_rooms_quiet_since_before_a_time_are_forgotten(store_url: str) -> None:
    store = open_state(store_url)
    rooms = rooms_of(store)
    assert rooms.forget_rooms(1000.0) == 0  # no table yet: nothing to forget, none made
    serial = store.serial()
    rooms.record_rooms(
        [
            RoomActivity("volcengine:app-1", "class-old", False, 100.0, "callback"),
            RoomActivity("volcengine:app-1", "class-new", False, 900.0, "callback"),
            RoomActivity("volcengine:app-1", "lobby", True, 50.0, "resync"),  # active: kept however old its report
        ]
    )
    assert rooms.forget_rooms(500.0) == 1
    assert [r.room for r in rooms.room_activity({})] == ["class-new", "lobby"]
    assert store.serial() == serial
    store.close()
    reader = open_state(store_url, create=False)
    with pytest.raises(StateError, match="read-only"):
        rooms_of(reader).forget_rooms(1000.0)
    reader.close()


# What capctl before schema 2 made: room activity by Provider document name (the test builds it, as that code did).
SCHEMA_1_ROOMS = (
    "CREATE TABLE capctl_room_activity (provider TEXT NOT NULL, room TEXT NOT NULL, active INTEGER NOT NULL,"
    " last_seen DOUBLE PRECISION NOT NULL, source TEXT NOT NULL, PRIMARY KEY (provider, room))"
)
VOLC = "volcengine:app-1"
ACCOUNTS = {"volc": VOLC, "volc-old": VOLC, "zego": "zego:7"}


def schema_1_state(store_url: str) -> None:
    """A state as capctl before schema 2 left it: a record, and activity of rooms kept by Provider name."""
    store = open_state(store_url)
    store.fingerprint_key()  # as every command takes it first: keyed records with no key are damage (walk 16E-8)
    store.put(make_record())
    store.close()
    rows = [
        ("volc", "class-1", 1, 100.0, "callback"),
        ("volc-old", "class-1", 0, 90.0, "resync"),  # the same account and room, known before: the newer wins
        ("volc-old", "class-2", 1, 80.0, "callback"),  # a name the specs renamed: its rooms are the account's
        ("zego", "class-1", 0, 70.0, "callback"),
        ("gone", "x", 1, 60.0, "callback"),  # a Provider no longer in the specs: its account is unknown
    ]
    inserts = [f"INSERT INTO capctl_room_activity VALUES ('{p}', '{r}', {a}, {t}, '{s}')" for p, r, a, t, s in rows]
    raw_sql(
        store_url,
        "DROP TABLE capctl_room_activity",
        SCHEMA_1_ROOMS,
        *inserts,
        "UPDATE capctl_meta SET schema_version = 1",
    )


UPGRADED = [
    RoomActivity(VOLC, "class-1", True, 100.0, "callback"),
    RoomActivity(VOLC, "class-2", True, 80.0, "callback"),
    RoomActivity("zego:7", "class-1", False, 70.0, "callback"),
]


def test_a_state_of_schema_1_is_read_by_account_and_upgraded_in_place_once(store_url: str) -> None:
    schema_1_state(store_url)
    reader = open_state(store_url, create=False)
    assert rooms_of(reader).room_activity(ACCOUNTS) == UPGRADED  # read as the account's, nothing written
    assert rooms_of(reader).upgrade_rooms(ACCOUNTS) is None  # a read-only open never upgrades
    reader.close()
    store = open_state(store_url)
    serial = store.serial()
    with pytest.raises(StateError, match=r"kept by Provider name \(state schema 1\); `capctl run` upgrades it"):
        rooms_of(store).record_rooms([RoomActivity(VOLC, "class-3", True, 200.0, "callback")])
    assert rooms_of(store).upgrade_rooms(ACCOUNTS) == (3, ["gone"])
    assert rooms_of(store).upgrade_rooms(ACCOUNTS) is None  # once
    assert rooms_of(store).room_activity({}) == UPGRADED  # kept by account now: no names needed
    rooms_of(store).record_rooms([RoomActivity(VOLC, "class-1", False, 200.0, "callback")])
    assert rooms_of(store).room_activity({})[0] == RoomActivity(VOLC, "class-1", False, 200.0, "callback")
    assert store.serial() == serial and len(store.load().records) == 1  # the records are untouched
    store.close()
    # A capctl that knows only schema 1 refuses the state from now on (as this one refuses a newer one).
    raw_sql(store_url, "UPDATE capctl_meta SET schema_version = 3")
    with pytest.raises(StateError, match=r"state schema version 3 was written by a newer capctl .*upgrade capctl"):
        open_state(store_url, create=False)


def test_a_schema_a_newer_capctl_raises_while_this_one_runs_is_refused_at_the_next_read(store_url: str) -> None:
    """A rolling update: this capctl opened the state (a daemon, standing by), then a newer one beside it raised
    the schema. The daemon reads the state again when it takes the lead: refused, naming both versions, not
    misread (a schema-1 daemon that led a schema-2 state read no room activity: walk 36c-1)."""
    store = open_state(store_url)
    try:
        store.put(make_record())
        raw_sql(store_url, "UPDATE capctl_meta SET schema_version = 3")
        with pytest.raises(StateError, match=r"state schema version 3 was written by a newer capctl \(this one knows"):
            store.load()
    finally:
        store.close()


def test_an_upgrade_that_dies_half_way_leaves_the_state_as_it_was(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema_1_state(store_url)
    monkeypatch.setenv("CAPCTL_FAILPOINTS", "state-upgrade.rooms-written")  # killed as by kill -9 there
    worker = start_worker("upgrade", store_url, json.dumps(ACCOUNTS))
    assert worker.wait(timeout=60) == 137, worker.communicate()
    reader = open_state(store_url, create=False)
    assert rooms_of(reader).room_activity(ACCOUNTS) == UPGRADED  # still schema 1: read by name
    assert rooms_of(reader).room_activity({}) == []  # (without the names nothing is known)
    reader.close()
    monkeypatch.delenv("CAPCTL_FAILPOINTS")
    worker = start_worker("upgrade", store_url, json.dumps(ACCOUNTS))
    out, err = worker.communicate(timeout=60)
    assert (worker.returncode, out) == (0, "(3, ['gone'])\n"), err


def test_rows_an_older_capctl_wrote_by_name_after_the_upgrade_are_keyed_anew(store_url: str) -> None:
    """A rolling upgrade: the new replica upgraded the state while the old leader still ran and kept writing
    rows by Provider name; the next upgrade (a daemon starting, or taking the lead) keys them by account."""
    schema_1_state(store_url)
    store = open_state(store_url)
    assert rooms_of(store).upgrade_rooms(ACCOUNTS) == (3, ["gone"])
    raw_sql(
        store_url,
        "INSERT INTO capctl_room_activity VALUES ('volc', 'class-9', 1, 300.0, 'callback')",  # news, by name
        "INSERT INTO capctl_room_activity VALUES ('volc', 'class-2', 0, 10.0, 'callback')",  # older than kept
    )
    assert rooms_of(store).room_activity(ACCOUNTS)[-2:] == [
        RoomActivity(VOLC, "class-9", True, 300.0, "callback"),
        RoomActivity("zego:7", "class-1", False, 70.0, "callback"),
    ]
    assert rooms_of(store).upgrade_rooms(ACCOUNTS) == (2, [])
    assert rooms_of(store).upgrade_rooms(ACCOUNTS) is None
    assert rooms_of(store).room_activity({}) == [
        *UPGRADED[:2],
        RoomActivity(VOLC, "class-9", True, 300.0, "callback"),
        UPGRADED[2],
    ]
    store.close()


# Walk 16E-5: a room-activity row edited by hand or restored oddly stopped `capctl run` at start with a
# ValueError traceback (`float('y')`), or (PostgreSQL's 'Infinity') kept a room seen forever.
@pytest.mark.parametrize(
    ("store_url", "edit", "shown"),
    [
        *((db, "active = 5", "holds active 5, last_seen 100.0") for db in ("sqlite", "postgres")),
        *((db, "last_seen = 'Infinity'", "holds active 1, last_seen ") for db in ("sqlite", "postgres")),
        # SQLite keeps the text (PostgreSQL's typed columns refuse the edit itself)
        ("sqlite", "active = 'x', last_seen = 'y'", "holds active 'x', last_seen 'y'"),
    ],
    indirect=["store_url"],
)
def test_a_room_activity_row_no_capctl_writes_is_damage_naming_the_room(store_url: str, edit: str, shown: str) -> None:
    store = open_state(store_url)
    rooms_of(store).record_rooms([RoomActivity("volcengine:app-1", "class-1", True, 100.0, "callback")])
    store.close()
    raw_sql(store_url, f"UPDATE capctl_room_activity SET {edit}")
    reader = open_state(store_url, create=False)
    with pytest.raises(StateDamaged, match=r"the capctl_room_activity row of room 'class-1' \(volcengine:app-1\) "):
        rooms_of(reader).room_activity({})
    with pytest.raises(StateDamaged, match=re.escape(shown) + ".*; or delete that row: callbacks and the room"):
        rooms_of(reader).room_activity({})
    reader.close()
