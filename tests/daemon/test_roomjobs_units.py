"""Unit tests of the daemon's room-selector parts: the room book, what a callback says of its room, which
tasks a new selection changes, the listing's pacing, and the leaving rooms' restart policy."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.clock import FakeClock
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.roomjobs import (
    QUIET_RELIST,
    QUIET_RELIST_MAX,
    ROOM_RETENTION,
    RoomBook,
    RoomJobs,
    activity_of,
    changed_tasks,
    forgotten_tasks,
)
from reconciler.daemon.roomlisting import MIN_INTERVAL, RoomLister
from reconciler.daemon.vendorclock import AGREE, KEEP, WINDOW, VendorClocks
from reconciler.model import RestartPolicy, RoomActivity, TaskRecord, TaskStatus
from reconciler.providers.base import ErrorKind, Provider, VendorError
from reconciler.providers.callbacks import CallbackEvent
from reconciler.spec import SpecSet, load_spec_set
from reconciler.state.sqlite import SQLiteStateStore
from tests.daemon.conftest import write_specs
from tests.daemon.test_room_jobs import classes
from tests.specdocs import VOLC_ACCOUNT as VOLC
from tests.specdocs import ZEGO_ACCOUNT as ZEGO
from tests.specdocs import snapshot_job
from tests.state.helpers import make_record


def event(**flags: object) -> CallbackEvent:
    base = CallbackEvent(vendor="volcengine", app_id="a", event="e", dedupe_key="k", at=0.0, room_id="class-1")
    return dataclasses.replace(base, **flags)  # type: ignore[arg-type]


def test_what_a_callback_says_of_its_room() -> None:
    assert activity_of(event(room_active=True)) is True
    assert activity_of(event(room_entered=True)) is True  # a ZEGO room_create or room_login: a stream follows
    assert activity_of(event(room_closed=True)) is False
    assert activity_of(event(room_left=True)) is None  # others may still publish
    assert activity_of(event(room_active=True, room_id=None)) is None


def test_the_room_book_keeps_the_newest_report_and_writes_in_one_batch(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path / "state.db")
    book = RoomBook(store)
    assert book.note(VOLC, "class-1", True, 10.0, "callback")
    assert not book.note(VOLC, "class-1", True, 11.0, "callback")  # no change of activity
    assert not book.note(VOLC, "class-1", False, 5.0, "resync")  # older than what is known: dropped
    assert not book.note(VOLC, "class-1", False, 11.0, "callback")  # a close at the entry's instant: dropped
    assert book.note(VOLC, "class-2", False, 12.0, "resync")
    assert store.room_activity({}) == []  # nothing written per report
    assert book.flush() == 2 and book.flush() == 0
    assert sorted((a.room, a.active, a.last_seen) for a in store.room_activity({})) == [
        ("class-1", True, 11.0),
        ("class-2", False, 12.0),
    ]
    again = RoomBook(store)
    again.load({})
    assert {(a.room, a.active) for a in again.activity()} == {("class-1", True), ("class-2", False)}
    store.close()


def test_the_room_book_forgets_rooms_quiet_for_longer_than_the_retention(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path / "state.db")
    book = RoomBook(store)
    book.note(VOLC, "class-1", False, 100.0, "callback")
    book.note(VOLC, "class-2", False, 200.0, "callback")
    book.note(VOLC, "lobby", True, 50.0, "callback")  # active: kept however old
    assert not book.note(VOLC, "class-1", False, 100.0 + ROOM_RETENTION, "resync")  # still quiet: kept as 100
    book.flush()
    assert book.forget_quiet(150.0 + ROOM_RETENTION) == 1
    assert sorted(a.room for a in book.activity()) == ["class-2", "lobby"]
    assert sorted(a.room for a in store.room_activity({})) == ["class-2", "lobby"]
    assert book.note(VOLC, "class-1", True, 160.0 + ROOM_RETENTION, "callback")  # learned again: a new room
    store.close()


@pytest.fixture
def selecting(tmp_path: Path) -> Iterator[tuple[SpecSet, RoomBook]]:
    """The `classes` selector job's spec set, and a room book that knows class-1 active."""
    spec = load_spec_set([str(write_specs(tmp_path / "specs", classes()))])
    store = SQLiteStateStore(tmp_path / "state.db")
    book = RoomBook(store)
    book.note(VOLC, "class-1", True, 1.0, "callback")
    yield spec, book
    store.close()


def test_rooms_to_list_are_the_covered_ones_known_or_heard_of(selecting: tuple[SpecSet, RoomBook]) -> None:
    spec, book = selecting
    book.note(VOLC, "lobby", True, 1.0, "callback")  # not covered
    book.heard_of(VOLC, "class-2")
    book.heard_of(VOLC, "class-test-1")  # excluded
    book.heard_of(ZEGO, "class-3")  # another provider, without a selector job
    book.note(VOLC, "class-4", False, 1.0, "resync")  # known quiet: listed again after QUIET_RELIST
    book.note(VOLC, "class-5", False, 1.0, "resync")
    book.heard_of(VOLC, "class-5")  # a user left a room we thought quiet: its join was lost, ask now
    assert book.to_list(spec, 2.0) == [(VOLC, "class-1"), (VOLC, "class-2"), (VOLC, "class-5")]
    assert book.to_list(spec, 2.0) == [(VOLC, "class-1")]  # heard of once: listed once
    assert book.to_list(spec, 1.0 + QUIET_RELIST) == [(VOLC, "class-1"), (VOLC, "class-4"), (VOLC, "class-5")]


def test_a_room_quiet_for_longer_is_listed_less_often(selecting: tuple[SpecSet, RoomBook]) -> None:
    spec, book = selecting
    book.note(VOLC, "class-4", False, 0.0, "callback")  # went quiet at 0
    looks, now = [], 0.0
    while now < 86_400:
        now += 30  # the resync period
        if (VOLC, "class-4") in book.to_list(spec, now):
            looks.append(now)
            book.note(VOLC, "class-4", False, now, "resync")  # found still quiet
    gaps = [b - a for a, b in itertools.pairwise(looks)]
    assert looks[0] == QUIET_RELIST and gaps[:3] == [QUIET_RELIST] * 3  # the first 20 minutes: every 5 minutes
    assert all(b >= a for a, b in itertools.pairwise(gaps)) and max(gaps) <= QUIET_RELIST_MAX + 30
    assert len(looks) == 32  # instead of 288 at a fixed 5 minutes


def test_changed_tasks_sees_a_restart_policy_change(selecting: tuple[SpecSet, RoomBook]) -> None:
    spec, book = selecting
    jobs = RoomJobs(Metrics(), None)
    active = jobs.effective(spec, book, {}).spec.tasks
    key = "SnapshotJob/classes/class-1"
    assert active[key].restart_policy is RestartPolicy.ALWAYS
    record = make_record(key).evolve(status=TaskStatus.RUNNING)
    book.note(VOLC, "class-1", False, 2.0, "callback")
    ended = jobs.effective(spec, book, {key: record}).spec.tasks
    assert ended[key].restart_policy is RestartPolicy.NEVER  # observed until it ends, never re-issued
    # The spec it ran with (here another than the job's now): never replaced or updated by a spec edit.
    assert ended[key].spec_hash == record.spec_hash != active[key].spec_hash
    assert changed_tasks(active, ended) == {key}
    assert changed_tasks(ended, ended) == set()
    assert key not in jobs.effective(spec, book, {}).spec.tasks  # no record, no activity: no task


def test_selector_tasks_are_forgotten_with_their_rooms_once_their_run_ended_a_day_ago(tmp_path: Path) -> None:
    spec = load_spec_set([str(write_specs(tmp_path / "specs", classes(), snapshot_job("named", ["lobby"])))])
    book = RoomBook(SQLiteStateStore(tmp_path / "state.db"))
    book.note(VOLC, "class-known", False, 0.0, "callback")  # quiet, but not for a day yet: still known
    now, day = ROOM_RETENTION + 100.0, ROOM_RETENTION

    def stopped(key: str, at: float, status: TaskStatus = TaskStatus.STOPPED) -> TaskRecord:
        return make_record(key, status=status, started_at=at - 60, stopped_at=at, observed_at=at)

    records = [
        stopped("SnapshotJob/classes/class-gone", now - day - 1),  # forgotten
        stopped("SnapshotJob/classes/class-dormant", now - day - 1, TaskStatus.DORMANT),  # forgotten
        stopped("SnapshotJob/classes/class-recent", now - day + 60),  # its run ended within the day
        stopped("SnapshotJob/classes/class-known", now - day - 1),  # its room is still known
        stopped("SnapshotJob/classes/class-removed", now - day - 1, TaskStatus.REMOVED),  # a tombstone's own rule
        make_record("SnapshotJob/classes/class-runs", status=TaskStatus.RUNNING, started_at=0.0),  # may still run
        stopped("SnapshotJob/named/lobby", now - day - 1),  # a named room's task stays
        stopped("SnapshotJob/other/class-x", now - day - 1),  # not a selector job of this set: pruned, if at all
    ]
    assert forgotten_tasks(spec, book, records, now) == [
        "SnapshotJob/classes/class-dormant",
        "SnapshotJob/classes/class-gone",
    ]


def test_left_out_rooms_are_remembered_while_left_out_and_a_gone_job_s_series_are_removed(
    selecting: tuple[SpecSet, RoomBook], tmp_path: Path
) -> None:
    spec, book = selecting
    capped = load_spec_set([str(write_specs(tmp_path / "capped", classes(max_rooms=1)))])
    metrics = Metrics()
    jobs = RoomJobs(metrics, None)
    for n in range(2, 6):  # rooms made on the fly, each left out for a while
        book.note(VOLC, f"class-{n}", True, float(n), "callback")
        jobs.effective(capped, book, {})
        assert jobs.rooms_left_out() == (("SnapshotJob/classes", (f"class-{n}",)),)  # the status page (18H-2)
        book.note(VOLC, f"class-{n}", False, float(n) + 0.5, "callback")
    jobs.effective(capped, book, {})
    assert jobs._warned == set()  # none left out now: nothing kept for the rooms that were
    sample = metrics.registry.get_sample_value
    assert sample("capctl_selector_rooms_left_out", {"job_name": "SnapshotJob/classes"}) == 0
    jobs.effective(dataclasses.replace(spec, selector_jobs=()), book, {})  # the job left the specs
    assert sample("capctl_selector_rooms_left_out", {"job_name": "SnapshotJob/classes"}) is None
    assert sample("capctl_selector_rooms", {"job_name": "SnapshotJob/classes", "state": "active"}) is None


class Listing:
    def __init__(self, streams: dict[str, int], failing: set[str]) -> None:
        self.streams, self.failing, self.calls = streams, failing, 0

    async def room_streams(self, room: str) -> int:
        self.calls += 1
        if room in self.failing:
            raise VendorError(ErrorKind.RETRYABLE, "HTTP 500", "vendor server error", api="DescribeSimpleStreamList")
        return self.streams.get(room, 0)


async def test_the_lister_reports_answers_skips_failures_and_paces_each_room() -> None:
    clock = FakeClock(start=100.0)
    vendor = Listing({"a": 2}, failing={"c"})

    def provider(name: str) -> Provider:
        return vendor  # type: ignore[return-value]

    lister = RoomLister(provider, clock)
    reports = await lister.list_rooms([("zego", "a"), ("zego", "b"), ("zego", "c")])
    assert reports == [
        RoomActivity("zego", "a", True, 100.0, "resync"),
        RoomActivity("zego", "b", False, 100.0, "resync"),
    ]
    clock.advance(MIN_INTERVAL - 1)
    assert await lister.list_rooms([("zego", "a")]) == [] and vendor.calls == 3  # too soon for that room
    clock.advance(1)
    assert len(await lister.list_rooms([("zego", "a")])) == 1 and vendor.calls == 4
    assert len(lister) == 1  # b and c were listed longer ago than MIN_INTERVAL: nothing kept for them


@pytest.mark.parametrize("asked_active", [True, False], ids=["closed-meanwhile", "entered-meanwhile"])
async def test_a_listing_answer_does_not_undo_a_callback_of_a_moment_during_the_call(
    tmp_path: Path, asked_active: bool
) -> None:
    """Seen live: a listing sent before a RoomDestroy and answered after it ("active") was stamped at its
    answer, so the close was undone (and left a new room out at maxRooms until the next listing); the other
    way, an entry undone leaves the room quiet until its next quiet look, 5 min on."""
    clock, store = FakeClock(start=100.0), SQLiteStateStore(tmp_path / "state.db")
    book = RoomBook(store)
    book.note(VOLC, "class-1", asked_active, 90.0, "callback")

    class Slow:
        async def room_streams(self, room: str) -> int:
            clock.advance(0.2)  # the room changes while the call is out, and its callback arrives first
            assert book.note(VOLC, room, not asked_active, clock.now(), "callback")
            clock.advance(0.3)
            return int(asked_active)  # the room as the vendor saw it when asked

    def provider(name: str) -> Provider:
        return Slow()  # type: ignore[return-value]

    [report] = await RoomLister(provider, clock).list_rooms([(VOLC, "class-1")])
    assert report.last_seen == 100.0
    assert not book.note(report.account, report.room, report.active, report.last_seen, report.source)
    assert {(a.room, a.active) for a in book.activity()} == {("class-1", not asked_active)}
    store.close()


def test_vendor_clocks_correct_only_an_offset_that_callbacks_prove() -> None:
    clocks, delays = VendorClocks(), itertools.cycle([1.5, 0.05, 0.7, 10.0])
    # Clocks that agree: each callback keeps its own time, whatever its delay (their order is the vendor's).
    for t in range(0, 100, 5):
        sent = 1e9 + t
        assert clocks.heard("volc", sent, sent + next(delays)) == sent
    # 300 s ahead, drifting 100 µs/s: on the daemon's clock within AGREE (and the fastest delivery).
    for t in range(0, 7200, 5):
        sent = 1e9 + t
        skew = 300 + 1e-4 * t
        daemon_at = clocks.heard("zego", sent + skew, sent + next(delays))
        assert sent - AGREE <= daemon_at <= sent + AGREE + 0.05
    # A correction follows the drift, but not every faster delivery: the same one between two callbacks.
    in_use = 2e9 - clocks.heard("zego", 2e9, 2e9 - 300.9)
    assert clocks.heard("zego", 2e9, 2e9 - 300.8) == 2e9 - in_use
    # After a quiet spell, a callback retried a minute late keeps that correction: the last KEEP bound it.
    quiet = 2e9 + WINDOW + 1
    assert clocks.heard("zego", quiet, quiet - 240) == quiet - in_use
    # Bounds older than the window and than the last KEEP callbacks are forgotten: 5 min behind now, as KEEP
    # callbacks since show (put at their arrival: the fastest delivery so far).
    later = quiet + WINDOW + 1
    times = [clocks.heard("zego", later + n - 300, later + n + 0.1) for n in range(KEEP)]
    assert times[0] == later - 300 - in_use  # the first of them still with the correction in use
    assert times[-1] == later + KEEP - 1 + 0.1
