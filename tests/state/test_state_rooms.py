"""Room activity in the state (issue 18): kept per (provider, room) in both stores, newer reports win, the
serial does not move, a state from before the table reads as no activity, and read-only opens write nothing."""

from __future__ import annotations

import sqlite3

import pytest

from reconciler.model import RoomActivity
from reconciler.state import NoState, RoomActivityStore, StateError, StateMissing, open_state, sqlite_path

from .helpers import make_record


def rooms_of(store: object) -> RoomActivityStore:
    """The room-activity half of a store (what the daemon writes and plan reads)."""
    assert isinstance(store, RoomActivityStore)
    return store


def test_room_activity_is_kept_and_a_newer_report_replaces_an_older_one(store_url: str) -> None:
    store = open_state(store_url)
    rooms = rooms_of(store)
    assert rooms.room_activity() == []
    serial = store.put(make_record())
    rooms.record_rooms(
        [
            RoomActivity("volc", "class-1", True, 100.0, "callback"),
            RoomActivity("volc", "class-2", True, 100.5, "resync"),
            RoomActivity("zego", "class-1", False, 90.0, "callback"),
        ]
    )
    rooms.record_rooms([RoomActivity("volc", "class-1", False, 150.0, "callback")])
    rooms.record_rooms([RoomActivity("volc", "class-2", False, 50.0, "callback")])  # older than what is kept
    assert store.serial() == serial  # knowledge about rooms, not a task change: saved plans stay valid
    store.close()
    reader = open_state(store_url, create=False)
    assert rooms_of(reader).room_activity() == [
        RoomActivity("volc", "class-1", False, 150.0, "callback"),
        RoomActivity("volc", "class-2", True, 100.5, "resync"),
        RoomActivity("zego", "class-1", False, 90.0, "callback"),
    ]
    reader.close()


def test_a_state_from_before_room_activity_reads_none_and_gets_the_table_from_its_first_writer(
    store_url: str,
) -> None:
    store = open_state(store_url)
    store.put(make_record())
    store.close()
    # A new state has the table from the start; one made before it had none.
    drop = "DROP TABLE capctl_room_activity"
    if store_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(store_url)) as db:
            db.execute(drop)
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute(drop)
    reader = open_state(store_url, create=False)
    assert rooms_of(reader).room_activity() == []
    with pytest.raises(StateError, match="read-only"):
        rooms_of(reader).record_rooms([RoomActivity("volc", "r", True, 1.0, "callback")])
    reader.close()
    writer = open_state(store_url)
    rooms_of(writer).record_rooms([RoomActivity("volc", "r", True, 1.0, "callback")])
    assert [r.room for r in rooms_of(writer).room_activity()] == ["r"]
    assert len(writer.load().records) == 1
    writer.close()


def test_no_state_knows_no_room_and_records_none() -> None:
    missing = NoState(StateMissing("sqlite:///nowhere.db"))
    assert missing.room_activity() == []
    with pytest.raises(StateError, match="cannot record room activity"):
        missing.record_rooms([RoomActivity("volc", "r", True, 1.0, "callback")])


def test_rooms_quiet_since_before_a_time_are_forgotten(store_url: str) -> None:
    store = open_state(store_url)
    rooms = rooms_of(store)
    assert rooms.forget_rooms(1000.0) == 0  # no table yet: nothing to forget, none made
    serial = store.serial()
    rooms.record_rooms(
        [
            RoomActivity("volc", "class-old", False, 100.0, "callback"),
            RoomActivity("volc", "class-new", False, 900.0, "callback"),
            RoomActivity("volc", "lobby", True, 50.0, "resync"),  # active: kept however old its report
        ]
    )
    assert rooms.forget_rooms(500.0) == 1
    assert [r.room for r in rooms.room_activity()] == ["class-new", "lobby"]
    assert store.serial() == serial
    store.close()
    reader = open_state(store_url, create=False)
    with pytest.raises(StateError, match="read-only"):
        rooms_of(reader).forget_rooms(1000.0)
    reader.close()
