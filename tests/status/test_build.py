"""From records and history to one page's snapshot: grouping, order, filters, pagination, gaps, decisions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from reconciler.clock import FakeClock
from reconciler.daemon.records import RecordCache
from reconciler.model import TaskStatus
from reconciler.spec.models import RoomSelector
from reconciler.state import open_state
from reconciler.state.base import run_of
from reconciler.status import History, StatusQuery, build_snapshot
from reconciler.status.build import MAX_ATTENTION
from reconciler.status.history import MAX_INTERVALS
from reconciler.status.model import Gap, Interval, Reissue, StatusSnapshot
from tests.status.conftest import IDLE, LEADER, NOW, VOLC, ZEGO, Told, inputs, record


def test_tasks_are_grouped_by_job_then_status_problems_first() -> None:
    records = [
        record("SnapshotJob/lobby-audit/a", vendor_task_id="t-a", started_at=NOW - 300),
        record("SnapshotJob/lobby-audit/b", TaskStatus.STOPPED, stopped_at=NOW - 20, stop_reason=IDLE),
        record("SnapshotJob/lobby-audit/c", TaskStatus.FAILED, last_error="StartSnapshot: InvalidParameter"),
        record("RecordingJob/class-rec/r1"),
    ]
    snap = build_snapshot(inputs(records, next_observation={"SnapshotJob/lobby-audit/a": NOW + 30}), StatusQuery(), NOW)
    assert [j.job for j in snap.jobs] == ["RecordingJob/class-rec", "SnapshotJob/lobby-audit"]
    lobby = snap.jobs[1]
    assert [(g.status, [t.target for t in g.tasks]) for g in lobby.groups] == [
        ("failed", ["c"]),
        ("stopped", ["b"]),
        ("running", ["a"]),
    ]
    running = lobby.groups[2].tasks[0]
    assert (running.vendor_task_id, running.running_since, running.next_observation) == ("t-a", NOW - 300, NOW + 30)
    assert lobby.groups[1].tasks[0].stop_reason == IDLE
    assert lobby.groups[0].tasks[0].last_error == "StartSnapshot: InvalidParameter"
    assert snap.totals == (("failed", 1), ("stopped", 1), ("running", 2))
    assert not snap.all_running
    assert [j.job for j in snap.attention] == ["SnapshotJob/lobby-audit"]


def test_ten_thousand_tasks_are_paginated_and_counted_whole() -> None:
    records = [
        record(
            f"SnapshotJob/job-{i // 100:03d}/room-{i % 100:02d}",
            TaskStatus.STOPPED if i % 7 == 0 else TaskStatus.RUNNING,
        )
        for i in range(10_000)
    ]
    snap = build_snapshot(inputs(records), StatusQuery(page=3, per_page=250), NOW)
    assert (snap.page.number, snap.page.pages, snap.page.matching) == (3, 40, 10_000)
    assert (snap.page.first, snap.page.last) == (501, 750)
    assert sum(len(g.tasks) for j in snap.jobs for g in j.groups) == 250
    assert [j.job for j in snap.jobs] == ["SnapshotJob/job-005", "SnapshotJob/job-006", "SnapshotJob/job-007"]
    # a group on the page counts every task of its job with that status, not only those shown
    job5 = snap.jobs[0]
    assert sum(len(g.tasks) for g in job5.groups) == 100 and job5.total == 100
    assert dict(snap.totals) == {"stopped": 1429, "running": 8571}
    assert len(snap.attention) == MAX_ATTENTION and snap.attention_more == 100 - MAX_ATTENTION
    assert len(snap.rooms) == 100  # the rooms of the page's tasks only
    past_the_end = build_snapshot(inputs(records), StatusQuery(page=99, per_page=250), NOW)
    assert past_the_end.page.number == 40  # the last page, not an empty one


def test_filters_by_job_name_or_kind_and_name_and_by_status() -> None:
    records = [
        record("SnapshotJob/lobby/a"),
        record("SnapshotJob/lobby/b", TaskStatus.DORMANT),
        record("RecordingJob/lobby/a"),
        record("SnapshotJob/hall/a", TaskStatus.DORMANT),
    ]

    def keys(query: StatusQuery) -> list[str]:
        snap = build_snapshot(inputs(records), query, NOW)
        return [t.key for j in snap.jobs for g in j.groups for t in g.tasks]

    assert keys(StatusQuery(job="lobby")) == ["RecordingJob/lobby/a", "SnapshotJob/lobby/b", "SnapshotJob/lobby/a"]
    assert keys(StatusQuery(job="SnapshotJob/lobby")) == ["SnapshotJob/lobby/b", "SnapshotJob/lobby/a"]
    assert keys(StatusQuery(status="dormant")) == ["SnapshotJob/hall/a", "SnapshotJob/lobby/b"]
    assert keys(StatusQuery(job="lobby", status="dormant")) == ["SnapshotJob/lobby/b"]
    assert keys(StatusQuery(job="nothing")) == []


def test_filters_by_room_across_jobs_kinds_and_pages() -> None:
    # "Was room a captured?": its tasks of every job, and only its timeline, without paging through the others.
    records = [record(f"SnapshotJob/j{i:03d}/r{i}") for i in range(300)] + [
        record("SnapshotJob/lobby/a"),
        record("SnapshotJob/lobby/a-2", TaskStatus.DORMANT),
        record("RecordingJob/class/a", TaskStatus.STOPPED),
        record("ThumbnailJob/t/record/a", TaskStatus.DONE),  # a file id with slashes ends in "a": not room a
    ]

    def shown(snap: StatusSnapshot) -> list[str]:
        return [t.key for j in snap.jobs for g in j.groups for t in g.tasks]

    snap = build_snapshot(inputs(records), StatusQuery(room="a", per_page=1), NOW)
    assert (snap.page.matching, snap.page.pages) == (2, 2)
    both = build_snapshot(inputs(records), StatusQuery(room="a"), NOW)
    assert shown(both) == ["RecordingJob/class/a", "SnapshotJob/lobby/a"]
    # one timeline per vendor account's room a (the ZEGO app's and the Volcengine app's), none of another room
    assert sorted((r.room, r.account, len(r.captures)) for r in both.rooms) == [("a", VOLC, 1), ("a", ZEGO, 1)]
    assert dict(both.totals)["running"] == 301  # the counts are never filtered
    one = build_snapshot(inputs(records), StatusQuery(room="a", job="class", status="stopped"), NOW)
    assert shown(one) == ["RecordingJob/class/a"]
    files = build_snapshot(inputs(records), StatusQuery(room="record/a"), NOW)
    assert shown(files) == ["ThumbnailJob/t/record/a"]


def test_reissues_carry_the_reason_the_run_before_them_ended() -> None:
    key = "SnapshotJob/lobby-audit/lobby"
    told = Told()
    first = told.start(record(key), NOW - 3000)
    second = told.start(told.stop(first, NOW - 2000, seen=NOW - 1990), NOW - 1990, reissue_count=1)
    latest = told.start(told.stop(second, NOW - 900, "max duration"), NOW - 899, reissue_count=2)
    task = build_snapshot(inputs([latest], history=told.history), StatusQuery(), NOW).jobs[0].groups[0].tasks[0]
    assert task.reissue_count == 2
    assert task.reissues == (Reissue(NOW - 899, "max duration"), Reissue(NOW - 1990, IDLE))


def test_a_start_after_a_vendor_stop_that_counted_no_reissue_is_listed_as_none() -> None:
    """Walk 42B-6: `apply --replace` of a task the vendor had idled out (or its job restored from the tombstone)
    read "Re-issues 0" above a listed `idle timeout` re-issue: the page guessed from the end reason. The runs'
    re-issue counts at their starts say it, as the record and the metric do; a restarted daemon draws the same."""
    told, key = Told(), "SnapshotJob/audit/hall"
    first = told.start(record(key), NOW - 900)
    replaced = told.start(told.stop(first, NOW - 800), NOW - 700)  # a replace: the count stays 0
    reissued = told.start(told.stop(replaced, NOW - 600), NOW - 500, reissue_count=1)
    expected = (Reissue(NOW - 500, IDLE),)
    task = build_snapshot(inputs([reissued], history=told.history), StatusQuery(), NOW).jobs[0].groups[0].tasks[0]
    assert (task.reissue_count, task.reissues) == (1, expected)


def test_gaps_are_split_where_the_room_was_active() -> None:
    key = "SnapshotJob/lobby-audit/lobby"
    told = Told()
    history = told.history
    first = told.start(record(key), NOW - 5000)
    told.stop(first, NOW - 4000, seen=NOW - 3990)
    told.room_active("lobby", NOW - 3500)  # someone came in while nothing captured
    second = told.start(first, NOW - 3000)
    told.room_idle("lobby", NOW - 1500)
    told.stop(second, NOW - 1000)
    stopped = history.runs(key)[-1]
    assert stopped.end == NOW - 1000
    snap = build_snapshot(
        inputs([second.evolve(status=TaskStatus.DORMANT, stopped_at=NOW - 1000)], history=history), StatusQuery(), NOW
    )
    (room,) = snap.rooms
    assert room.room == "lobby" and room.activity_reported
    assert room.active == (Interval(NOW - 3500, NOW - 1500),)
    (line,) = room.captures
    assert line.runs == (Interval(NOW - 5000, NOW - 4000), Interval(NOW - 3000, NOW - 1000))
    assert line.gaps == (
        Gap(NOW - 4000, NOW - 3500, False, IDLE),
        Gap(NOW - 3500, NOW - 3000, True, IDLE),
        Gap(NOW - 1000, NOW, False, IDLE),
    )
    assert room.lost_seconds == 500
    assert line.known_since == NOW - 5000


def test_a_selector_room_active_before_its_task_first_ran_reads_as_capture_lost_not_as_no_gap() -> None:
    """Walk 25e: room-0003, active from 04:17:21 and left out past its selector job's maxRooms until another
    room emptied at 04:24:49, read "1 run; no gap" and lost 0 s: its task's history began at its first run.
    A named room's task, whose history begins as it does, is drawn as before."""
    told = Told()
    told.room_active("room-0003", NOW - 900)  # left out: no task for 450 s
    selected = told.start(record("SnapshotJob/sel/room-0003", selector="room-*"), NOW - 450)
    told.room_active("lobby", NOW - 900)
    named = told.start(record("SnapshotJob/audit/lobby"), NOW - 450)
    snap = build_snapshot(inputs([selected, named], history=told.history), StatusQuery(), NOW)
    lobby, room = snap.rooms
    assert room.room == "room-0003" and room.lost_seconds == 450
    (line,) = room.captures
    assert line.gaps == (Gap(NOW - 900, NOW - 450, True, None),) and line.known_since == NOW - 900
    assert lobby.room == "lobby" and lobby.lost_seconds == 0 and lobby.captures[0].known_since == NOW - 450
    # A task with more runs than the history keeps (after a restart its first kept run may not be its first):
    # not extended over the activity before, which dropped runs may have captured; left as History knows it.
    busy, run = Told(), record("SnapshotJob/sel/room-0005", selector="room-*")
    busy.room_active("room-0005", NOW - 86_000)
    for i in range(MAX_INTERVALS + 4):
        run = busy.start(run, NOW - 80_000 + 600 * i)
        busy.stop(run, NOW - 80_000 + 600 * i + 599, "ended (Volcengine UnknownStopReason)")
    (crowded,) = build_snapshot(inputs([run], history=busy.history), StatusQuery(), NOW).rooms
    assert crowded.captures[0].known_since == NOW - 80_000


def test_a_selector_widened_to_an_active_room_draws_no_loss_from_before_the_edit() -> None:
    """Walk 41C-4: `match: lobby-*` widened to `[lobby-*, stage-*]` while stage-1 had been active an hour drew
    that hour as capture lost for the job, which did not want the room then. Only the time since the widened
    globs came into force is; lobby-9, which the old globs covered too (left out past maxRooms, 25e), keeps its
    loss from its session's start. Read back from the spans the state keeps, the page is the same."""
    told, job = Told(), "SnapshotJob/sel"
    told.clock.set(NOW - 5000)
    told.history.cover({job: RoomSelector.model_validate({"match": ["lobby-*"], "maxRooms": 1})})
    told.room_active("stage-1", NOW - 3600)
    told.room_active("lobby-9", NOW - 3600)  # covered, left out past maxRooms
    told.clock.set(NOW - 1800)
    told.history.cover({job: RoomSelector.model_validate({"match": ["lobby-*", "stage-*"], "maxRooms": 2})})
    stage = told.start(record(f"{job}/stage-1", selector="lobby-*, stage-*"), NOW - 1790)
    lobby = told.start(record(f"{job}/lobby-9", selector="lobby-*, stage-*"), NOW - 1790)

    def lines(history: History) -> dict[str, tuple[Gap, ...]]:
        snap = build_snapshot(inputs([stage, lobby], history=history), StatusQuery(), NOW)
        return {room.room: room.captures[0].gaps for room in snap.rooms}

    drawn = lines(told.history)
    assert drawn == {
        "stage-1": (Gap(NOW - 1800, NOW - 1790, True, None),),  # from the edit: the start's own delay
        "lobby-9": (Gap(NOW - 3600, NOW - 1790, True, None),),
    }
    spans = [*told.history.take_rooms(), *(span for r in (stage, lobby) if (span := run_of(r)) is not None)]
    assert [(s.start, s.end) for s in spans if s.kind == "selector"] == [(NOW - 5000, NOW - 1800), (NOW - 1800, None)]
    again = History(told.clock)
    again.restore(spans)
    again.cover(
        {job: RoomSelector.model_validate({"match": ["lobby-*", "stage-*"], "maxRooms": 3})}
    )  # a restart; maxRooms: no change
    assert again.take_rooms() == [] and lines(again) == drawn
    # A state from before the spans (none kept): drawn as before, from the session's start.
    old = History(told.clock)
    old.restore([s for s in spans if s.kind != "selector"])
    assert lines(old)["stage-1"] == (Gap(NOW - 3600, NOW - 1790, True, None),)


def test_a_tombstones_room_active_after_its_removal_is_no_capture_lost() -> None:
    """Walk 41c: class-102 excluded from its job's selector (its task stopped and tombstoned at 12:10:46) read
    "1m lost while active", growing while the room stayed active: the job no longer wants it. Its line ends at
    the removal; the activity before it, while the task ran or waited, is drawn as before."""
    told, OUT_OF_BAND = Told(), "stopped out of band (Volcengine StopByAPI)"
    told.room_active("class-102", NOW - 900)
    run = told.start(record("SnapshotJob/sel/class-102", selector="class-*"), NOW - 890)
    stopped = told.stop(run, NOW - 700, OUT_OF_BAND)  # lost: 100 s, the room active
    tombstone = told.stop(told.start(stopped, NOW - 600), NOW - 300, "removed from specs")
    removed = tombstone.evolve(status=TaskStatus.REMOVED, removed_at=NOW - 300)
    (room,) = build_snapshot(inputs([removed], history=told.history), StatusQuery(), NOW).rooms
    (line,) = room.captures
    assert line.gaps == (Gap(NOW - 900, NOW - 890, True, None), Gap(NOW - 700, NOW - 600, True, OUT_OF_BAND))
    assert room.lost_seconds == 110


def test_a_job_restored_from_its_tombstone_lists_no_reissue_and_no_capture_lost_while_it_was_removed() -> None:
    """Walk 41c: RecordingJob class-recs removed (its class-102 run stopped, `removed from specs`) and put back 3
    minutes later read "Re-issues 0" above a listed re-issue `removed from specs`, and its room "3m lost while
    active": the restore started the task anew, and nothing was wanted while the job was out of the specs. A
    replace (its idleTimeout edited) was listed as a re-issue `replaced` too; its own gap is lost capture still."""
    told, key = Told(), "RecordingJob/class-recs/class-102"
    told.room_active("class-102", NOW - 900, account=ZEGO)
    run = told.start(record(key, selector="class-*"), NOW - 890)
    removed = told.stop(run, NOW - 700, "removed from specs").evolve(status=TaskStatus.REMOVED, removed_at=NOW - 700)
    restored = told.start(removed.evolve(removed_at=None), NOW - 500)
    replaced = told.start(told.stop(restored, NOW - 300, "replaced"), NOW - 299)  # a spec edit: no re-issue either
    snap = build_snapshot(inputs([replaced], history=told.history), StatusQuery(), NOW)
    assert snap.jobs[0].groups[0].tasks[0].reissues == ()
    (room,) = snap.rooms
    assert room.captures[0].gaps == (
        Gap(NOW - 900, NOW - 890, True, None),
        Gap(NOW - 700, NOW - 500, False, "removed from specs"),
        Gap(NOW - 300, NOW - 299, True, "replaced"),
    )
    assert room.lost_seconds == 11


def test_a_restarted_daemon_draws_the_gaps_before_a_tasks_first_kept_run_as_the_one_before_it() -> None:
    """Walk 26b: a task whose starts kept failing for 49 min while its room was active read "49m lost while
    active"; after a restart, "no gap · known since" its first run: when the daemon first saw the task was not
    kept, so its history began at its first run. It is kept now (a "seen" span), and read back."""
    told = Told(NOW - 3600)
    told.note(record("SnapshotJob/a/lobby", TaskStatus.PENDING, started_at=None), NOW - 3600)
    told.room_active("lobby", NOW - 3540)
    run = told.start(record("SnapshotJob/a/lobby"), NOW - 600)
    before = build_snapshot(inputs([run], history=told.history), StatusQuery(), NOW).rooms
    assert before[0].lost_seconds == 2940
    kept = told.history.take_rooms()  # what the daemon's room batch writes (the run went with its record)
    written = run_of(run)
    assert written is not None
    restarted = Told(NOW - 300)
    restarted.history.restore(sorted([written, *kept], key=lambda s: (s.kind, s.subject, s.room, s.start)))
    restarted.note(run, NOW - 300)  # the records as read at the start
    restarted.clock.set(NOW)
    assert build_snapshot(inputs([run], history=restarted.history), StatusQuery(), NOW).rooms == before
    assert [s.kind for s in kept] == ["room", "seen"] and told.history.take_rooms() == []
    assert restarted.history.take_rooms() == []  # nothing to write again


def test_a_piece_of_a_gap_under_a_second_is_not_reported_as_lost_capture() -> None:
    """A join that woke the task 20 ms before its start read "capture lost while the room was active (0s)"."""
    key = "SnapshotJob/lobby-audit/lobby"
    told = Told()
    first = told.start(record(key), NOW - 600)
    told.stop(first, NOW - 300)
    told.room_active("lobby", NOW - 100.02)
    told.start(first, NOW - 100)
    snap = build_snapshot(inputs([first.evolve(status=TaskStatus.RUNNING)], history=told.history), StatusQuery(), NOW)
    (room,) = snap.rooms
    (line,) = room.captures
    assert line.gaps == (Gap(NOW - 300, NOW - 100.02, False, IDLE),)
    assert room.lost_seconds == 0


def test_a_room_without_callbacks_has_unknown_activity_and_thumbnails_have_no_room() -> None:
    records = [record("SnapshotJob/lobby-audit/lobby", started_at=NOW - 100), record("ThumbnailJob/thumbs/file-1")]
    snap = build_snapshot(inputs(records), StatusQuery(), NOW)
    (room,) = snap.rooms
    assert (room.room, room.activity_reported, room.active) == ("lobby", False, ())
    # history known from the daemon's start (NOW - 3600) on; the run began later: a gap before it
    assert room.captures[0].gaps == (Gap(NOW - 3600, NOW - 100, False, None),)


def test_decisions_newest_first_filtered_by_job_and_by_the_tasks_status() -> None:
    records = [record("SnapshotJob/lobby/a"), record("SnapshotJob/hall/a", TaskStatus.STOPPED)]
    events = [
        {"timestamp": "t1", "level": "info", "event": "spec set loaded", "summary": "x"},
        {"timestamp": "t2", "level": "info", "event": "decision", "key": "SnapshotJob/lobby/a", "action": "create"},
        {"timestamp": "t3", "level": "warning", "event": "observation failed", "key": "SnapshotJob/hall/a"},
        {"timestamp": "t4", "level": "info", "event": "decision", "key": "SnapshotJob/hall/a", "reason": "x" * 400},
    ]

    def seen(query: StatusQuery) -> list[str]:
        return [d.at for d in build_snapshot(inputs(records, events=events), query, NOW).decisions]

    assert seen(StatusQuery()) == ["t4", "t3", "t2", "t1"]
    assert seen(StatusQuery(decisions=2)) == ["t4", "t3"]
    assert seen(StatusQuery(decisions=0)) == []
    assert seen(StatusQuery(job="lobby")) == ["t2"]
    assert seen(StatusQuery(status="stopped")) == ["t4", "t3"]
    assert seen(StatusQuery(room="a")) == ["t4", "t3", "t2"]  # both rooms named a, not the spec set's line
    assert seen(StatusQuery(room="b")) == []
    newest = build_snapshot(inputs(records, events=events), StatusQuery(), NOW).decisions[0]
    assert newest.key == "SnapshotJob/hall/a" and newest.event == "decision"
    (reason,) = (v for k, v in newest.fields if k == "reason")
    assert len(reason) == 300 and reason.endswith("…")
    # Walk 25e: a room left out past maxRooms has no task; its job's warning names it by `job` and `room`.
    left_out = {"timestamp": "t5", "level": "warning", "event": "room selector at maxRooms: room not captured"}
    events.append({**left_out, "job": "SnapshotJob/classes", "room": "b", "max_rooms": "1"})
    assert seen(StatusQuery(room="b")) == ["t5"] and seen(StatusQuery(job="classes")) == ["t5"]
    assert seen(StatusQuery(room="b", job="lobby")) == [] and seen(StatusQuery(room="b", status="running")) == []


def test_decision_fields_read_as_the_json_log_writes_them_not_as_python() -> None:
    events: list[dict[str, object]] = [
        {"timestamp": "t1", "level": "info", "event": "spec set loaded", "changed": None, "acting": True}
    ]
    events += [{"timestamp": "t2", "level": "info", "event": "watching specs", "roots": ["specs"], "debounce_ms": 500}]
    decisions = build_snapshot(inputs([], events=events), StatusQuery(), NOW).decisions
    assert [dict(d.fields) for d in decisions] == [
        {"roots": '["specs"]', "debounce_ms": "500"},
        {"changed": "null", "acting": "true"},
    ]


def test_the_timeline_spans_the_known_history_at_least_15_minutes_at_most_24_hours() -> None:
    key = "SnapshotJob/lobby-audit/lobby"
    young = Told(start=NOW - 600)
    young.note(record(key, started_at=NOW - 600), NOW - 600)
    (room,) = build_snapshot(inputs([record(key)], history=young.history), StatusQuery(), NOW).rooms
    assert room.window == Interval(NOW - 900, NOW)  # 10 minutes of history: drawn on 15
    hour = Told(start=NOW - 3600)
    hour.note(record(key, started_at=NOW - 3000), NOW - 3000)
    (room,) = build_snapshot(inputs([record(key)], history=hour.history), StatusQuery(), NOW).rooms
    assert room.window == Interval(NOW - 3000, NOW)
    old = Told(start=NOW - 3 * 86_400)
    old.note(record(key, started_at=NOW - 2 * 86_400), NOW - 2 * 86_400)
    (room,) = build_snapshot(inputs([record(key)], history=old.history), StatusQuery(), NOW).rooms
    assert room.window == Interval(NOW - 86_400, NOW)
    assert room.captures[0].runs == (Interval(NOW - 86_400, NOW),)  # the run, cut at the window


def test_tombstones_and_done_thumbnails_need_no_look() -> None:
    records = [
        record("SnapshotJob/old/a", TaskStatus.REMOVED, stop_reason="removed from specs"),
        record("ThumbnailJob/thumbs/f1", TaskStatus.DONE),
        record("SnapshotJob/lobby/a"),
    ]
    snap = build_snapshot(inputs(records), StatusQuery(), NOW)
    assert snap.all_running and snap.attention == ()
    assert dict(snap.totals) == {"running": 1, "done": 1, "removed": 1}
    snap = build_snapshot(inputs([*records, record("SnapshotJob/lobby/b", TaskStatus.PENDING)]), StatusQuery(), NOW)
    assert not snap.all_running and [j.job for j in snap.attention] == ["SnapshotJob/lobby"]


def test_a_decisions_fields_read_as_the_log_line_writes_them() -> None:
    """`"reissue": true` in the JSON log line read `True` (Python's spelling) on the page and in its API."""
    records = [record("SnapshotJob/lobby/a")]
    event = {"timestamp": "t1", "level": "info", "event": "started", "key": "SnapshotJob/lobby/a"}
    events = [{**event, "reissue": True, "already_running": False, "detail": None, "reconcile_id": 3}]
    (started,) = build_snapshot(inputs(records, events=events), StatusQuery(), NOW).decisions
    assert dict(started.fields) == {
        "reissue": "true",
        "already_running": "false",
        "detail": "null",
        "reconcile_id": "3",
    }


def test_rooms_of_two_vendor_apps_sharing_an_id_are_two_timelines() -> None:
    """A ZEGO `lobby` full of people says nothing of the Volcengine `lobby`: before, both were one timeline,
    and the Volcengine task's idle gap showed as capture lost while the (other app's) room was active."""
    told = Told()
    volc = told.stop(told.start(record("SnapshotJob/a/lobby"), NOW - 3000), NOW - 2500)
    zego = told.start(record("RecordingJob/b/lobby"), NOW - 3000)
    told.room_active("lobby", NOW - 2900, account=ZEGO)
    snap = build_snapshot(inputs([volc, zego], history=told.history), StatusQuery(), NOW)
    assert [(r.room, r.account, r.activity_reported, r.lost_seconds) for r in snap.rooms] == [
        ("lobby", VOLC, False, 0.0),
        ("lobby", ZEGO, True, 0.0),
    ]
    assert [c.key for r in snap.rooms for c in r.captures] == ["SnapshotJob/a/lobby", "RecordingJob/b/lobby"]


def test_a_standby_draws_a_task_made_again_as_the_leader_does(tmp_path: Path) -> None:
    """A selector task forgotten after its room's session and made again at the room's next one: the leader's
    page begins its history at the new task, but a standby that had read the first task kept when it first saw
    it across its rereads of the state (and so does it once it leads): the first session read "10m lost while
    active" there. The state's `seen` rows are the whole truth a reread takes, as its runs and rooms are."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    clock = FakeClock(NOW - 3600)
    leader_store, standby_store = open_state(url), open_state(url)
    leader = RecordCache(leader_store, clock, leader_store)
    standby = RecordCache(standby_store, clock, standby_store)

    def batch() -> None:  # the leader's room batch
        leader_store.record_rooms([], leader.history.take_rooms())

    key = "SnapshotJob/sel/lobby"
    leader.put(record(key, started_at=NOW - 3600))
    leader.history.room_active(VOLC, "lobby")
    batch()
    clock.set(NOW - 3590)
    standby.adopt(*standby.read_restored())  # a look at the standby's page
    clock.set(NOW - 3000)
    leader.history.room_idle(VOLC, "lobby")
    leader.put(record(key, TaskStatus.STOPPED, started_at=NOW - 3600, stopped_at=NOW - 3000, stop_reason=IDLE))
    batch()
    clock.set(NOW - 2000)
    leader.delete(key)  # forgotten, its room quiet
    clock.set(NOW - 600)
    leader.history.room_active(VOLC, "lobby")
    leader.put(again := record(key, started_at=NOW - 600))
    batch()
    clock.set(NOW)
    standby.adopt(*standby.read_restored())
    restarted = RecordCache(standby_store, clock, standby_store)
    restarted.refresh()
    pages = [build_snapshot(inputs([again], history=c.history), StatusQuery(), NOW).rooms for c in (leader, standby)]
    assert pages[0][0].lost_seconds == 0
    assert pages[1] == pages[0]
    assert build_snapshot(inputs([again], history=restarted.history), StatusQuery(), NOW).rooms == pages[0]
    assert standby.history.take_rooms() == []  # nothing of its own to write
    leader_store.close()
    standby_store.close()


def test_when_a_selector_left_a_room_out_is_kept_by_span() -> None:
    """Walk 48B-1: what the page takes as no capture lost for a selector job's room: the globs in force that
    left it out, and the job out of the specs between two spans; nothing before the first span (not known)."""
    clock, job = FakeClock(NOW - 5000), "SnapshotJob/sel"
    history = History(clock)
    for at, globs in ((4000, ["*"]), (3000, ["lobby-*"]), (2500, None), (2000, ["*"])):
        clock.set(NOW - at)
        history.cover({} if globs is None else {job: RoomSelector.model_validate({"match": globs})})
    assert history.uncovered(job, "stage-1") == [Interval(NOW - 3000, NOW - 2000)]  # one stretch left out (54b)
    assert history.uncovered(job, "lobby-1") == [Interval(NOW - 2500, NOW - 2000)]


@pytest.mark.parametrize(
    ("edits", "held", "lost"),
    [
        ({3000: ["stage-*", "x"]}, False, 2510),  # always covering stage-1: its task's idle-out is capture lost
        ({3000: ["lobby-*"]}, False, 2510),  # narrowed while its task ran, left running (prune held, --no-prune)
        ({3000: None, 1000: ["*"]}, False, 2510),  # the job removed while its task ran (held), restored
        ({2000: ["lobby-*"]}, True, 2510),  # narrowed after its idle-out, its stop held now: the leader's page
        # The same on a standby's page (no `prune_held`: the leader's), or under --no-prune: no prune tombstoned it.
        ({2000: ["lobby-*"]}, False, 2510),
        # Tombstoned (REMOVED) so many seconds ago: by the narrowing's own prune, at once or after the daemon's
        # 30 s grace, no loss while left out (48B-1, 53c); held, then confirmed: the time before stays lost.
        ({2000: ["lobby-*"]}, 2000, 510),
        ({2000: ["lobby-*"]}, 1970, 510),
        ({2000: ["lobby-*"]}, 1900, 610),
        ({2000: ["lobby-*"]}, 1000, 1510),
        # Within the grace (and its minute late), not yet pruned: none after the edit yet; past it, held: lost.
        ({60: ["lobby-*"]}, False, 2450),
        ({120: ["lobby-*"]}, False, 2510),
        # The job removed from the specs: the same.
        ({2000: None}, 1970, 510),
        ({2000: None}, 1000, 1510),
        ({60: None}, False, 2450),
        ({2000: None}, False, 2510),
        # Narrowed again (or the job put back) with the room still left out: from the first edit (54b).
        ({2000: ["lobby-*"], 1000: ["lobby-*", "x"]}, False, 2510),
        ({2000: None, 1000: ["lobby-*"]}, False, 2510),
        ({120: ["lobby-*"], 60: ["lobby-*", "x"]}, False, 2510),
        ({60: ["lobby-*"], 30: ["lobby-*", "x"]}, False, 2450),
        ({2000: ["lobby-*"], 1990: ["lobby-*", "x"]}, 1970, 510),
    ],
)
def test_a_selector_task_its_job_kept_draws_its_loss_whatever_the_globs(
    edits: dict[int, list[str] | None], held: bool | int, lost: int
) -> None:
    """Walk 49B-1: the time a selector's globs left a room out is no capture lost only where the task was not
    the job's then: a narrowing (or removal) whose prune --max-prune held left it running, and its idle-out,
    the room still active, read as no loss. Walk 50B-1: a standby's page drew the held one's loss as none, the
    leader's as lost. Walk 50B-3: a held prune confirmed (`capctl apply --prune`) turned that loss into none.
    Walk 53c: the daemon's own prune, after its 30 s grace, drew those 30 s lost (`apply --prune`: none)."""
    told, job = Told(), "SnapshotJob/sel"
    told.clock.set(NOW - 5000)
    told.history.cover({job: RoomSelector.model_validate({"match": ["*"]})})
    told.room_active("stage-1", NOW - 4000)
    run = told.start(record(f"{job}/stage-1", selector="*"), NOW - 3990)  # (10 s lost: its start's delay)
    stopped = run
    for at in sorted({*edits, 2500}, reverse=True):
        if at == 2500:
            stopped = told.stop(run, NOW - 2500)
        else:
            told.clock.set(NOW - at)
            globs = edits[at]
            told.history.cover({} if globs is None else {job: RoomSelector.model_validate({"match": globs})})
    replica = dataclasses.replace(LEADER, prune_held=(stopped.key,) if held is True else ())
    if held is not True and held is not False:
        stopped = stopped.evolve(status=TaskStatus.REMOVED, removed_at=NOW - held)
    page = inputs([stopped], history=told.history, replica=replica, prune_grace=30)
    (room,) = build_snapshot(page, StatusQuery(), NOW).rooms
    assert room.lost_seconds == lost
