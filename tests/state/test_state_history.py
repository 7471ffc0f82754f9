"""The status page's timeline history in the state (walk 6d): each record's run is written in its commit's
transaction, room spans with room activity; a deleted record takes its runs (and when it was first seen)
along, pruning bounds age and count, a state from before the table reads as none and gets it from its first
writer, and `state copy` carries it. Both stores."""

from __future__ import annotations

import re

import pytest

from reconciler.clock import FakeClock
from reconciler.model import Observed, ObservedState, TaskStatus
from reconciler.spec.models import RoomSelector
from reconciler.state import HistorySpan, HistoryStore, SerialMismatch, StateDamaged, open_state
from reconciler.state.sql import SqlStateStore
from reconciler.status import History
from reconciler.status.history import MAX_INTERVALS
from reconciler.transitions import observed

from .helpers import make_record
from .test_state_rooms import raw_sql

KEY = "SnapshotJob/lobby-audit/lobby"
IDLE = "idle timeout (Volcengine IdleTimeOut)"


def runs(store: HistoryStore) -> list[tuple[float, float | None, str | None]]:
    return [(s.start, s.end, s.reason) for s in store.history() if s.kind == "run" and s.subject == KEY]


def sql(store: object) -> SqlStateStore:
    assert isinstance(store, SqlStateStore)
    return store


def test_a_task_seen_running_again_opens_a_run_of_its_own_and_its_last_stays_closed(store_url: str) -> None:
    """A dormant record seen running kept its old start (walk 19c): its run was the old one, which had ended
    (an ended span keeps its end), so the page's history showed no run while it ran."""
    store = sql(open_state(store_url))
    try:
        slept = make_record(status=TaskStatus.DORMANT, started_at=100.0, stopped_at=130.0, stop_reason=IDLE)
        store.put(slept)
        store.put(observed(slept, Observed(ObservedState.RUNNING, started_at=500.0), 520.0))
        assert runs(store) == [(100.0, 130.0, IDLE), (500.0, None, None)]
    finally:
        store.close()


def test_runs_are_written_with_their_records_in_their_transaction(store_url: str) -> None:
    store = sql(open_state(store_url))
    try:
        serial = store.put(make_record(status=TaskStatus.RUNNING, started_at=100.0, observed_at=100.0))
        assert runs(store) == [(100.0, None, None)]
        stopped = make_record(status=TaskStatus.STOPPED, started_at=100.0, stopped_at=130.0, stop_reason=IDLE)
        store.put(stopped)
        store.put(stopped.evolve(status=TaskStatus.PENDING, stopped_at=140.0))  # the re-issue's intent: no new run
        assert runs(store) == [(100.0, 130.0, IDLE)]
        store.put(make_record(status=TaskStatus.RUNNING, started_at=150.0))
        store.put(make_record(status=TaskStatus.RUNNING, started_at=200.0))  # replaced before its end was seen
        # (kept open: it ended where the next began, which the page reads back: `History.restore`)
        assert runs(store) == [(100.0, 130.0, IDLE), (150.0, None, None), (200.0, None, None)]
        with pytest.raises(SerialMismatch):  # one transaction with its record: neither is written
            store.put(make_record(status=TaskStatus.RUNNING, started_at=300.0), expected_serial=serial)
        assert runs(store)[-1] == (200.0, None, None)
        # A thumbnail done at once, or a start that failed: ended when last observed.
        store.put(make_record(status=TaskStatus.FAILED, started_at=200.0, observed_at=210.0))
        assert runs(store)[-1] == (200.0, 210.0, None)

        before = store.serial()
        room = HistorySpan("room", "volcengine:app-1", "lobby", 90.0, None)
        store.record_rooms([], [room])
        store.record_rooms([], [HistorySpan("room", "volcengine:app-1", "lobby", 90.0, 125.0)])
        store.record_rooms([], [HistorySpan("seen", KEY, "", 80.0, None)])  # when the daemon first saw it (26b)
        assert store.serial() == before  # what the daemon saw, not a task change: saved plans stay valid
        assert HistorySpan("seen", KEY, "", 80.0, None) in store.history()
        store.delete(KEY)
        assert store.history() == [HistorySpan("room", "volcengine:app-1", "lobby", 90.0, 125.0)]
    finally:
        store.close()


def test_how_each_run_began_is_kept_and_read_back(store_url: str) -> None:
    """Walk 42B-6: the re-issue count at each run's start (a `began` span), so a restarted daemon tells a
    replace of a run the vendor ended from a re-issue as the record does; an intent's bumped count is not taken
    for the run before it, a run an older capctl kept (no `began` row) reads as not known, a delete takes it."""
    store = sql(open_state(store_url))
    try:
        raw_sql(store_url, f"INSERT INTO capctl_history VALUES ('run', '{KEY}', '', 50.0, 60.0, '{IDLE}')")
        first = make_record(status=TaskStatus.RUNNING, started_at=100.0)
        store.put(first)
        store.put(first.evolve(status=TaskStatus.STOPPED, stopped_at=130.0, stop_reason=IDLE))
        replaced = first.evolve(started_at=150.0)  # a replace: no re-issue counted
        store.put(replaced)
        store.put(replaced.evolve(status=TaskStatus.STOPPED, stopped_at=190.0, stop_reason=IDLE))
        store.put(replaced.evolve(status=TaskStatus.PENDING, reissue_count=1, reissuing=True))  # its intent
        store.put(replaced.evolve(started_at=200.0, reissue_count=1))
        history = History(FakeClock(300.0))
        history.restore(store.history())
        assert [(r.start, r.reissues) for r in history.runs(KEY)] == [(50.0, None), (100.0, 0), (150.0, 0), (200.0, 1)]
        store.delete(KEY)
        assert store.history() == []
        # As an older capctl's delete leaves one (its forget knows no `began`): dropped when a leader takes over.
        raw_sql(store_url, f"INSERT INTO capctl_history VALUES ('began', '{KEY}', '', 100.0, 100.0, '0')")
        assert store.prune_orphans() == 1 and store.history() == []
    finally:
        store.close()


def test_how_a_run_longer_than_the_window_began_is_kept_while_its_run_is(store_url: str) -> None:
    """Walk 44B-1: a `began` span ends as it starts, so pruning by age dropped it from a run that began before the
    window but ended in it (or runs on), while the run's row stayed: a daemon restarted then read its count as not
    known and listed the replace after the vendor's stop as a re-issue again (42B-6). It goes with its run."""
    store = sql(open_state(store_url))
    try:
        day = 24 * 3600.0
        long = make_record(status=TaskStatus.RUNNING, started_at=100.0)
        store.put(long)
        store.put(long.evolve(status=TaskStatus.STOPPED, stopped_at=100.0 + day, stop_reason=IDLE))
        store.put(long.evolve(started_at=150.0 + day))  # a replace: no re-issue counted
        other = "SnapshotJob/lobby-audit/hall"  # an old run ended before the window: its run and `began` go
        ended = make_record(key=other, status=TaskStatus.STOPPED, vendor_task_id="hall", started_at=50.0)
        store.put(ended.evolve(stopped_at=60.0))
        assert store.prune_history(ended_before=200.0, keep=96) == 2
        history = History(FakeClock(200.0 + day))
        history.restore(store.history())
        assert [(r.start, r.reissues) for r in history.runs(KEY)] == [(100.0, 0), (150.0 + day, 0)]
        assert [s for s in store.history() if s.subject == other] == []
    finally:
        store.close()


def test_a_first_sight_is_kept_only_while_its_record_is(store_url: str) -> None:
    """Walk 27a-4: a `seen` row outliving its record (a standby's stop flushing it after the leader deleted the
    record; an older capctl's delete, which left it) gave a key made again its predecessor's first sight."""
    store = sql(open_state(store_url))
    try:
        other = "SnapshotJob/lobby-audit/hall"
        store.record_rooms([], [HistorySpan("seen", KEY, "", 80.0, None)])  # no record: not kept
        assert store.history() == []
        store.put(make_record(key=other))
        store.record_rooms([], [HistorySpan("seen", other, "", 85.0, None)])
        assert HistorySpan("seen", other, "", 85.0, None) in store.history()
        # As an older capctl leaves one (its delete took the runs only): dropped when a leader takes over.
        raw_sql(store_url, f"INSERT INTO capctl_history VALUES ('seen', '{KEY}', '', 70.0, NULL, NULL)")
        serial = store.serial()
        assert store.prune_orphans() == 1
        assert [s for s in store.history() if s.kind == "seen"] == [HistorySpan("seen", other, "", 85.0, None)]
        assert store.serial() == serial
    finally:
        store.close()


def test_which_rooms_a_selector_job_covered_when_is_kept_closed_and_pruned(store_url: str) -> None:
    """Walk 41C-4: each selector job's globs in force (a "selector" span, open while they are) are written with
    the room batch, read back after a restart (the same globs loaded again write nothing), closed when edited
    or when the job leaves the specs, and pruned by age once closed: the globs in force stay however old."""
    job, wide = "SnapshotJob/sel", RoomSelector.model_validate({"match": ["lobby-*", "stage-*"]})
    store, clock = sql(open_state(store_url)), FakeClock(100.0)
    try:
        history = History(clock)
        history.cover({job: RoomSelector.model_validate({"match": "lobby-*"})})
        clock.set(200.0)
        history.cover({job: wide})
        store.record_rooms([], history.take_rooms())
        again = History(clock)  # a restart
        again.restore(store.history())
        again.cover({job: wide})
        assert again.take_rooms() == [] and again.covered_from(job, "lobby-1", 250.0) == 100.0
        assert again.covered_from(job, "stage-1", 250.0) == 200.0
        clock.set(300.0)
        again.cover({})  # the job left the specs
        store.record_rooms([], again.take_rooms())
        spans = [(s.start, s.end, s.reason) for s in store.history() if s.kind == "selector"]
        assert spans == [
            (100.0, 200.0, '{"match":["lobby-*"],"exclude":[]}'),
            (200.0, 300.0, '{"match":["lobby-*","stage-*"],"exclude":[]}'),
        ]
        store.record_rooms([], [HistorySpan("selector", "SnapshotJob/other", "", 10.0, None, spans[0][2])])
        assert store.prune_history(ended_before=250.0, keep=96) == 1
        assert [(s.subject, s.start) for s in store.history() if s.kind == "selector"] == [
            ("SnapshotJob/other", 10.0),
            (job, 200.0),
        ]
    finally:
        store.close()


def test_a_selector_edited_often_writes_each_span_once_and_stays_within_the_cap(store_url: str) -> None:
    """Walk 48B-2: each edit wrote every one of the job's spans again (200 edits in a day: 20,100 rows), and
    the daemon kept them all: the state's pruned ones came back at the next edit, past the 96-a-job cap."""
    job, store, clock = "SnapshotJob/sel", sql(open_state(store_url)), FakeClock(1000.0)
    try:
        history, written = History(clock), 0
        for edit in range(MAX_INTERVALS + 10):
            clock.set(1000.0 + edit)
            history.cover({job: RoomSelector.model_validate({"match": f"r{edit % 2}-*"})})
            spans = history.take_rooms()
            written += len(spans)
            store.record_rooms([], spans)
            if edit == MAX_INTERVALS + 5:
                store.prune_history(ended_before=0.0, keep=MAX_INTERVALS)
        assert written == 2 * (MAX_INTERVALS + 10) - 1  # the first opens one; each next closes one, opens one
        kept = [s for s in store.history() if s.kind == "selector"]
        assert len(kept) == MAX_INTERVALS + 4 and kept[-1].end is None
        again = History(clock)  # a restart, the job's current globs loaded again
        again.restore(store.history())
        again.cover({job: RoomSelector.model_validate({"match": f"r{(MAX_INTERVALS + 9) % 2}-*"})})
        assert again.take_rooms() == [] and again.covered_from(job, "r1-x", clock.now()) == clock.now()
    finally:
        store.close()


def test_a_selector_edited_after_the_clock_stepped_back_reads_back_by_the_globs_in_force(store_url: str) -> None:
    """Walk 49B-2: an edit with the clock stepped back before the last one's start replaced that span in memory
    but opened a row of an earlier start, the replaced one left open: read back (a restart, a standby's page),
    the job's rooms were drawn by the replaced globs; a removal alike left the job's row open."""
    job, store, clock = "SnapshotJob/sel", sql(open_state(store_url)), FakeClock(1000.0)
    try:
        history = History(clock)
        for step, match in ((0.0, "lobby-*"), (60.0, "*"), (-10.0, "stage-*")):  # stepped back 10 s
            clock.step(step)
            history.cover({job: RoomSelector.model_validate({"match": match})})
            store.record_rooms([], history.take_rooms())
        again = History(clock)
        again.restore(store.history())
        assert again.covered_from(job, "stage-1", 1070.0) == 1060.0  # by `stage-*`, the globs in force
        assert again.covered_from(job, "lobby-1", 1070.0) is None  # not by `*`, which it replaced
        history.cover({})  # the job removed, the clock still behind
        store.record_rooms([], history.take_rooms())
        assert [(s.start, s.end) for s in store.history() if s.kind == "selector"][-1] == (1060.0, 1060.0)
        clock.step(5.0)  # back in the specs (a spec file rewritten in place), the clock behind still (walk 50B-2)
        history.cover({job: RoomSelector.model_validate({"match": "stage-*"})})
        store.record_rooms([], history.take_rooms())
        again.restore(store.history())
        assert again.covered_from(job, "stage-1", 1070.0) == 1060.0  # in the specs again, not removed
        assert [(u.start, u.end) for u in again.uncovered(job, "lobby-1")] == [(1060.0, float("inf"))]
        clock.step(20.0)  # removed at 1075, then back after the clock stepped back past its span's start
        for step, globs in ((0.0, None), (-30.0, "lobby-*")):
            clock.step(step)
            history.cover({} if globs is None else {job: RoomSelector.model_validate({"match": globs})})
            store.record_rooms([], history.take_rooms())
        again.restore(store.history())
        assert again.covered_from(job, "lobby-1", 1080.0) == 1075.0
        assert [(u.start, u.end) for u in again.uncovered(job, "stage-1")] == [(1000.0, 1060.0), (1075.0, float("inf"))]
    finally:
        store.close()


def test_the_history_is_pruned_by_age_and_by_count(store_url: str) -> None:
    store = sql(open_state(store_url))
    try:
        for start in range(100):
            store.put(make_record(status=TaskStatus.RUNNING, started_at=float(start)))
        store.put(make_record(key="SnapshotJob/lobby-audit/hall", status=TaskStatus.RUNNING, started_at=5.0))
        # run 0 ended before 2 (where run 1 began); of the 99 runs left, the newest 96 are kept, and of the 100
        # `began` spans the newest 96 alike (not by their own age: they go with their runs, walk 44B-1)
        assert store.prune_history(ended_before=2.0, keep=96) == 1 + 3 + 4
        assert sorted(s.start for s in store.history() if s.kind == "began" and s.subject == KEY) == [
            float(s) for s in range(4, 100)
        ]
        assert [start for start, _, _ in runs(store)] == [float(s) for s in range(4, 100)]
        assert [s.subject for s in store.history() if s.start == 5.0 and s.kind == "run"] == [
            "SnapshotJob/lobby-audit/hall",
            KEY,
        ]
    finally:
        store.close()


def test_a_state_from_before_the_history_reads_none_and_gets_it_from_its_first_writer(store_url: str) -> None:
    store = open_state(store_url)
    store.put(make_record(status=TaskStatus.RUNNING, started_at=100.0))
    store.close()
    raw_sql(store_url, "DROP TABLE capctl_history")
    reader = sql(open_state(store_url, create=False))
    assert reader.history() == []
    reader.close()
    writer = sql(open_state(store_url))
    try:
        writer.put(make_record(status=TaskStatus.STOPPED, started_at=100.0, stopped_at=120.0, stop_reason=IDLE))
        assert runs(writer) == [(100.0, 120.0, IDLE)]
    finally:
        writer.close()


def test_state_copy_carries_the_history(store_url: str, sqlite_url: str) -> None:
    source = sql(open_state(store_url))
    source.fingerprint_key()  # as every command takes it first: keyed records with no key are damage (16E-8)
    source.put(make_record(status=TaskStatus.RUNNING, started_at=100.0))
    source.record_rooms([], [HistorySpan("room", "zego:7", "class-1", 95.0, None)])
    copy = source.export()
    source.close()
    target = sql(open_state(sqlite_url.replace("state.db", "copy.db")))
    try:
        target.import_copy(copy)
        assert target.history() == [
            HistorySpan("began", KEY, "", 100.0, 100.0, "0"),
            HistorySpan("room", "zego:7", "class-1", 95.0, None),
            HistorySpan("run", KEY, "", 100.0, None),
        ]
    finally:
        target.close()


# Walk 16E-7: a timeline row edited by hand (`start_at = 'abc'`, 'NaN') stopped `capctl run` at start with a
# ValueError traceback; NaN was read as a time.
@pytest.mark.parametrize(
    ("store_url", "edit", "shown"),
    [
        *((db, "start_at = 'NaN'", "holds start_at ") for db in ("sqlite", "postgres")),
        *((db, "end_at = 'Infinity'", "holds start_at 100.0, end_at ") for db in ("sqlite", "postgres")),
        # SQLite keeps the text (PostgreSQL's typed columns refuse the edit itself)
        ("sqlite", "start_at = 'abc'", "holds start_at 'abc', end_at 130.0"),
    ],
    indirect=["store_url"],
)
def test_a_history_row_no_capctl_writes_is_damage_naming_it(store_url: str, edit: str, shown: str) -> None:
    store = sql(open_state(store_url))
    store.put(make_record(status=TaskStatus.STOPPED, started_at=100.0, stopped_at=130.0, stop_reason=IDLE))
    store.close()
    raw_sql(store_url, f"UPDATE capctl_history SET {edit} WHERE kind = 'run'")
    reader = sql(open_state(store_url, create=False))
    try:
        with pytest.raises(StateDamaged, match=rf"the capctl_history row of run '{KEY}' '' {re.escape(shown)}"):
            reader.history()
    finally:
        reader.close()


def test_a_failed_start_left_to_its_room_writes_no_count_for_the_run_before_it(store_url: str) -> None:
    """Walk 49D-3: a re-issue's start that failed and was left to its room (`stopped`, no vendor task) still has
    the ended run's start, with the re-issue's count. Where that run had no `began` row (an older capctl started
    it: an upgrade, or a rollback and forward again), its put wrote one with the next run's count, so after a
    restart the re-issue read as no re-issue (both runs counted 1), unlike the record and the page before it."""
    store = sql(open_state(store_url))
    try:
        # The run an older capctl kept (no `began` row), ended by the vendor.
        raw_sql(store_url, f"INSERT INTO capctl_history VALUES ('run', '{KEY}', '', 100.0, 130.0, '{IDLE}')")
        ended = make_record(status=TaskStatus.STOPPED, vendor_task_id="lobby-audit", started_at=100.0)
        ended = ended.evolve(stopped_at=130.0, stop_reason=IDLE)
        intent = ended.evolve(status=TaskStatus.PENDING, vendor_task_id=None, reissue_count=1, reissuing=True)
        store.put(intent)
        store.put(intent.evolve(status=TaskStatus.FAILED, last_error="StartSnapshot: no answer"))
        left = intent.evolve(status=TaskStatus.STOPPED, last_error="StartSnapshot: no answer")
        store.put(left)  # the room closed
        memory = History(FakeClock(140.0))
        memory.note(left)  # a daemon reading it first (a start, a takeover)
        assert [(r.start, r.reissues) for r in memory.runs(KEY)] == [(100.0, None)]
        store.put(left.evolve(status=TaskStatus.RUNNING, vendor_task_id="lobby-audit", started_at=200.0))
        history = History(FakeClock(300.0))
        history.restore(store.history())
        assert [(r.start, r.reissues) for r in history.runs(KEY)] == [(100.0, None), (200.0, 1)]
    finally:
        store.close()
