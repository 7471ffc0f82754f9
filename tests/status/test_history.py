"""The run history behind the timeline: runs open on a new start and close on a recorded stop, bounded."""

from __future__ import annotations

from reconciler.model import TaskStatus
from reconciler.state.base import HistorySpan
from reconciler.status.history import MAX_INTERVALS, Activity, Run
from tests.status.conftest import IDLE, NOW, VOLC, Told, record

KEY = "SnapshotJob/lobby-audit/lobby"


def test_a_stop_closes_the_run_and_a_reissue_opens_the_next() -> None:
    told = Told()
    history = told.history
    running = told.start(record(KEY), NOW - 100)
    told.start(told.stop(running, NOW - 60, seen=NOW - 55), NOW - 50, reissue_count=1)
    assert history.runs(KEY) == (Run(NOW - 100, NOW - 60, IDLE, 0), Run(NOW - 50, None, None, 1))  # (re-issues)
    assert history.known_since(KEY) == NOW - 100


def test_a_run_replaced_before_its_stop_was_seen_ends_where_the_next_begins() -> None:
    told = Told()
    history = told.history
    told.note(record(KEY, started_at=NOW - 100), NOW - 100)
    told.note(record(KEY, started_at=NOW - 40), NOW - 40)
    assert history.runs(KEY) == (Run(NOW - 100, NOW - 40, None, 0), Run(NOW - 40, None, None, 0))


def test_the_same_record_noted_twice_changes_nothing() -> None:
    told = Told()
    history = told.history
    stopped = record(KEY, TaskStatus.STOPPED, vendor_task_id="t", started_at=NOW - 100, stopped_at=NOW - 10)
    stopped = stopped.evolve(stop_reason=IDLE)  # a run that ended (a vendor task: not a failed start left)
    told.note(stopped, NOW)
    told.note(stopped.evolve(status=TaskStatus.DORMANT), NOW + 5)
    assert history.runs(KEY) == (Run(NOW - 100, NOW - 10, IDLE, 0),)


def test_room_activity_opens_once_and_closes_on_idle() -> None:
    told = Told()
    history = told.history
    assert history.activity(VOLC, "lobby") is None  # never reported: unknown, not "empty"
    told.room_active("lobby", NOW - 50)
    told.room_active("lobby", NOW - 40)  # a second user joining changes nothing
    told.room_idle("lobby", NOW - 30)
    told.room_idle("lobby", NOW - 20)
    assert history.activity(VOLC, "lobby") == (Activity(NOW - 50, NOW - 30),)


def test_history_is_bounded_per_task_and_by_its_window() -> None:
    told = Told(start=NOW, window=1000)
    history = told.history
    for i in range(MAX_INTERVALS + 10):
        told.note(record(KEY, started_at=NOW + i * 10), NOW + i * 10)
    runs = history.runs(KEY)
    assert len(runs) == MAX_INTERVALS
    assert runs[-1].start == NOW + (MAX_INTERVALS + 9) * 10
    told.note(record(KEY, started_at=NOW + (MAX_INTERVALS + 9) * 10), NOW + (MAX_INTERVALS + 9) * 10 + 995)
    # only the run that ended inside the window and the open one are left
    assert [r.start for r in history.runs(KEY)] == [NOW + (MAX_INTERVALS + 8) * 10, NOW + (MAX_INTERVALS + 9) * 10]
    history.forget(KEY)
    assert history.runs(KEY) == ()
    assert history.known_since(KEY) is None


def test_a_room_quiet_for_the_whole_window_is_forgotten() -> None:
    """Rooms made on the fly must not pile up for the daemon's lifetime."""
    told = Told(start=NOW, window=1000)
    history = told.history
    told.room_active("class-1", NOW + 10)
    told.room_idle("class-1", NOW + 20)
    told.room_active("lobby", NOW + 30)  # still active: kept however long ago it began
    told.note(record(KEY, started_at=NOW + 40), NOW + 1010)  # a write trims; class-1 ended inside the window
    assert history.activity(VOLC, "class-1") == (Activity(NOW + 10, NOW + 20),)
    told.note(record(KEY, started_at=NOW + 40), NOW + 1200)  # class-1 ended before the window
    assert history.activity(VOLC, "class-1") is None
    assert history.activity(VOLC, "lobby") == (Activity(NOW + 30, None),)


def test_a_run_that_ended_before_the_window_noted_again_is_not_drawn_and_breaks_nothing() -> None:
    """Walk 6d: once a write trimmed a task's runs away (its last ended over a day ago: its starts kept
    failing, its room stayed empty), the next write of its record raised IndexError after the commit, so
    the daemon's copy of it went stale and the task never started again (pending a day after the vendor
    recovered)."""
    told = Told(start=NOW, window=1000)
    history = told.history
    stopped = record(KEY, TaskStatus.STOPPED, started_at=NOW, stopped_at=NOW + 10, stop_reason=IDLE)
    told.note(stopped, NOW + 10)
    told.note(record("SnapshotJob/lobby-audit/hall", started_at=NOW + 1500), NOW + 1500)  # a write trims
    assert history.runs(KEY) == ()
    told.note(stopped.evolve(status=TaskStatus.FAILED, observed_at=NOW + 1600), NOW + 1600)
    assert history.runs(KEY) == ()
    told.start(stopped, NOW + 1700)
    assert history.runs(KEY) == (Run(NOW + 1700, None, None, 0),)


def test_the_history_read_back_from_the_state_ends_a_run_where_the_next_began() -> None:
    """The state keeps a run open whose record never showed its end (replaced, re-issued before a stop was
    seen); read back, it ended where the next one began, as `note` draws it."""
    told = Told()
    told.history.restore(
        [
            HistorySpan("run", KEY, "", NOW - 100, NOW - 60, IDLE),
            HistorySpan("run", KEY, "", NOW - 50, None),
            HistorySpan("run", KEY, "", NOW - 20, None),
            HistorySpan("room", VOLC, "lobby", NOW - 110, NOW - 55),
        ]
    )
    assert told.history.runs(KEY) == (
        Run(NOW - 100, NOW - 60, IDLE),
        Run(NOW - 50, NOW - 20, None),
        Run(NOW - 20, None, None),
    )
    assert told.history.activity(VOLC, "lobby") == (Activity(NOW - 110, NOW - 55),)


def test_a_first_sight_of_a_key_without_a_record_is_not_taken() -> None:
    """Walk 27a-4: a `seen` row an older capctl's delete left (a standby reads it before a leader drops it)
    gave the key, made again, its predecessor's first sight: the room's session before it read as lost."""
    told = Told()
    other = "SnapshotJob/lobby-audit/hall"
    spans = [HistorySpan("seen", KEY, "", NOW - 900, None), HistorySpan("seen", other, "", NOW - 800, None)]
    told.history.restore(spans, {other})
    assert told.history.known_since(KEY) is None
    assert told.history.known_since(other) == NOW - 800
