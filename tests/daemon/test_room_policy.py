"""Issue 17: rooms known empty are not re-issued into, a join starts them, and the daemon's coverage view."""

from __future__ import annotations

import re

import pytest

from reconciler.daemon import coverage, policy
from reconciler.daemon.reconciler import Result
from reconciler.daemon.runtime import EMPTY, KeyRuntime
from reconciler.model import ApiFamily, JobKind, TaskStatus
from reconciler.providers.zego_signing import callback_signature
from tests.daemon.conftest import Harness, write_specs
from tests.daemon.test_http import ZEGO_SECRET, client
from tests.daemon.test_prune import metrics
from tests.daemon.test_units import record
from tests.specdocs import recording_job, snapshot_job

LOBBY = "SnapshotJob/audit/lobby"
IDLE = "idle timeout (Volcengine IdleTimeOut)"


def test_a_room_is_known_empty_only_with_room_callbacks_after_an_idle_out_and_no_activity_since() -> None:
    idled = record(stop_reason=IDLE)  # started 1000, stopped 1060
    assert policy.room_known_empty(idled, feed=True, active_at=None, emptied_at=None)
    assert not policy.room_known_empty(idled, feed=False, active_at=None, emptied_at=None)  # polling only
    assert not policy.room_known_empty(
        record(stop_reason="max duration (ZEGO quit_reason 4)"), feed=True, active_at=None, emptied_at=None
    )
    assert not policy.room_known_empty(idled, feed=True, active_at=1030.0, emptied_at=None)  # joined in the run
    assert policy.room_known_empty(idled, feed=True, active_at=1030.0, emptied_at=1040.0)  # … and left again
    assert not policy.room_known_empty(idled, feed=True, active_at=1050.0, emptied_at=1040.0)  # … and came back


def test_an_end_without_a_cause_is_an_idle_out_where_the_idle_timer_explains_it() -> None:
    # ZEGO's status answers carry no quit reason: an idle-out seen by polling reads "ended (ZEGO status 4)".
    ended = "ended (ZEGO status 4)"
    never_streamed = record(stop_reason=ended)  # idle 60 s: started 1000, ended 1060
    assert policy.idled_out(never_streamed)
    assert policy.room_known_empty(never_streamed, feed=True, active_at=None, emptied_at=None)
    assert not policy.room_known_empty(never_streamed, feed=True, active_at=1030.0, emptied_at=None)
    longer = record(stop_reason=ended, stopped_at=1500.0)
    assert not policy.idled_out(longer)
    assert policy.room_known_empty(longer, feed=True, active_at=1030.0, emptied_at=1400.0)  # emptied, idle, ended
    assert not policy.room_known_empty(longer, feed=True, active_at=1030.0, emptied_at=1470.0)  # ended too soon
    assert not policy.room_known_empty(longer, feed=True, active_at=900.0, emptied_at=None)  # there since before
    assert not policy.room_known_empty(longer, feed=True, active_at=1450.0, emptied_at=1400.0)  # came back
    assert not policy.room_known_empty(longer, feed=False, active_at=1030.0, emptied_at=1400.0)  # polling only
    assert not policy.idled_out(record(stop_reason=ended, stopped_at=1020.0))  # a fault: shorter than idle


def test_a_known_empty_room_waits_dormant_for_the_repair_slot_unless_activity_or_rollover() -> None:
    idled = record(stop_reason=IDLE, productive=True)
    decision = policy.reissue_decision(idled, 2000.0, room_empty=True)
    assert (decision.delay, decision.dormant) == (policy.EMPTY_ROOM_RECHECK, True)
    assert policy.reissue_decision(idled, 2000.0).immediate  # not known empty: a productive run goes at once
    assert policy.reissue_decision(idled, 2000.0, room_empty=True, room_active=True).immediate
    assert policy.reissue_decision(idled, 2000.0, room_empty=True, rollover_hint=True).immediate


def test_a_join_after_the_room_emptied_may_find_the_run_idled_out() -> None:
    running = record(status=TaskStatus.RUNNING, stopped_at=None)  # idle 60 s, started 1000
    assert policy.may_have_idled(running, active_at=None, emptied_at=1100.0, now=1160.0)
    assert not policy.may_have_idled(running, active_at=None, emptied_at=1100.0, now=1159.0)  # not yet
    assert not policy.may_have_idled(running, active_at=1120.0, emptied_at=1100.0, now=1160.0)  # came back
    assert not policy.may_have_idled(running, active_at=None, emptied_at=900.0, now=1160.0)  # an older run's
    assert not policy.may_have_idled(record(stop_reason=IDLE), active_at=None, emptied_at=1100.0, now=1200.0)


def test_the_max_duration_is_probed_only_when_the_next_look_would_pass_it() -> None:
    recording = record(status=TaskStatus.RUNNING, stopped_at=None, max_duration=600)  # started 1000
    assert policy.rollover_at(recording, next_look=1601.0) == 1600.0
    assert policy.rollover_at(recording, next_look=1599.0) is None  # a regular look comes first
    assert policy.rollover_at(record(status=TaskStatus.RUNNING), next_look=1e9) is None  # no max duration


@pytest.mark.parametrize(
    ("status", "stop_reason", "rt", "active", "captured"),
    [
        (TaskStatus.RUNNING, None, KeyRuntime(room_activity=1010.0), 1, 1),
        (TaskStatus.DORMANT, IDLE, KeyRuntime(room_activity=1010.0), 0, 0),  # idled out after the join
        (TaskStatus.DORMANT, IDLE, KeyRuntime(room_activity=1070.0), 1, 0),  # a join since: waiting to start
        (TaskStatus.RUNNING, None, KeyRuntime(room_activity=1010.0, room_emptied=1020.0), 0, 0),
        (TaskStatus.RUNNING, None, EMPTY, 0, 0),  # no room callbacks: nothing known
    ],
)
def test_rooms_active_and_captured_per_job(
    status: TaskStatus, stop_reason: str | None, rt: KeyRuntime, active: int, captured: int
) -> None:
    r = record(status=status, stop_reason=stop_reason)
    other = record(key="SnapshotJob/b/r2", status=TaskStatus.RUNNING)
    counts = coverage.room_counts([r, other], {r.key: rt})
    assert counts == {"SnapshotJob/a": (active, captured), "SnapshotJob/b": (0, 0)}


def test_room_gauges_leave_out_thumbnail_jobs_and_jobs_removed_whole() -> None:
    """Walk 60a: every ThumbnailJob (it has no room) and every job of tombstones only (7 days) was exported as a
    0 series of capctl_rooms_active / capctl_rooms_captured. A job with a task in force still counts."""
    thumb = record(
        key="ThumbnailJob/t//record/a.mp4",
        family=ApiFamily.ZEGO_THUMBNAIL,
        kind=JobKind.THUMBNAIL,
        status=TaskStatus.DONE,
    )
    gone = record(key="SnapshotJob/gone/r", status=TaskStatus.REMOVED)
    kept = [record(key="SnapshotJob/b/r1", status=TaskStatus.REMOVED), record(key="SnapshotJob/b/r2")]
    counts = coverage.room_counts([thumb, gone, *kept], {r.key: KeyRuntime(room_activity=1070.0) for r in kept})
    assert counts == {"SnapshotJob/b": (1, 0)}


def sample(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found is not None, name
    return float(found.group(1))


async def test_an_emptied_room_costs_no_starts_and_a_join_starts_it_at_once(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, interval=5))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await harness.advance(60)
    text = await metrics(harness)
    assert sample(text, 'capctl_rooms_active{job_name="SnapshotJob/audit"}') == 1
    assert sample(text, 'capctl_rooms_captured{job_name="SnapshotJob/audit"}') == 1
    harness.sim.unpublish("volcengine", "lobby", user_id="alice")
    await harness.advance(3600 - 60)  # empty for most of an hour: dormant, no start, no look
    calls = harness.sim.log.entries()
    starts, looks = harness.calls("StartSnapshot"), harness.calls("GetSnapshotTask")
    seen_stopped = harness.record(LOBBY).observed_at
    assert starts == 1 and harness.record(LOBBY).status is TaskStatus.DORMANT and seen_stopped is not None
    assert not [e for e in calls if e.api == "GetSnapshotTask" and e.time > seen_stopped + 1]
    text = await metrics(harness)
    assert sample(text, 'capctl_rooms_active{job_name="SnapshotJob/audit"}') == 0
    assert sample(text, "capctl_capture_gap_seconds_count") == 0
    back = harness.clock.now()
    harness.sim.publish("volcengine", "lobby", user_id="bob")
    await harness.advance(5)
    r = harness.record(LOBBY)
    assert r.status is TaskStatus.RUNNING and r.started_at is not None and r.started_at - back < 2
    assert harness.calls("GetSnapshotTask") == looks
    text = await metrics(harness)
    assert sample(text, "capctl_capture_gap_seconds_count") == 1
    assert sample(text, "capctl_capture_gap_seconds_sum") <= r.started_at - back
    assert sample(text, 'capctl_rooms_captured{job_name="SnapshotJob/audit"}') == 1


async def test_a_rollover_is_seen_by_probing_at_the_max_duration_without_its_end_callback(harness: Harness) -> None:
    # The end callback of a rollover may come late or never: the daemon looks just after the max duration.
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=30, max_duration=300))
    harness.sim.config.zego_callback_url = None  # nothing announces the end
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    await harness.start()
    await harness.advance(1)
    first = harness.record("RecordingJob/rec/class-1")
    await harness.advance(305)
    record = harness.record("RecordingJob/rec/class-1")
    assert record.vendor_task_id != first.vendor_task_id and record.status is TaskStatus.RUNNING
    assert first.started_at is not None and record.started_at is not None
    gap = record.started_at - (first.started_at + 300)
    assert gap <= policy.PROBE_DELAY + policy.PROBE_INTERVAL  # the sweep alone: up to --resync (30 s)
    assert sample(await metrics(harness), "capctl_reissue_gap_seconds_sum") <= gap + 0.01


async def dormant_recording(harness: Harness) -> str:
    """class-1's recording ran while a teacher published, then went dormant in the emptied room; its key."""
    key = "RecordingJob/rec/class-1"
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=30))
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    await harness.start()
    await harness.advance(60)
    harness.sim.unpublish("zego", "class-1", stream_id="teacher")
    await harness.advance(120)
    assert harness.record(key).status is TaskStatus.DORMANT  # zero-stream callbacks: the room is empty
    return key


async def test_a_zego_room_close_makes_a_legacy_recording_dormant_without_a_start_into_the_empty_room(
    harness: Harness,
) -> None:
    # A legacy recording has no "zero streams" callback: ZEGO's room_close (which names no user) is the only word
    # that its room emptied. Its idle-out, seen by polling as `ended (ZEGO status 4)`, was re-issued into the
    # empty room (walk 16D-1).
    key = "RecordingJob/rec/class-1"
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=30, provider="zego-legacy"))
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    await harness.start()
    await harness.advance(60)
    harness.sim.unpublish("zego", "class-1", stream_id="teacher")
    await harness.advance(120)
    r = harness.record(key)
    assert r.status is TaskStatus.DORMANT and r.reissue_count == 0, (r.status, r.stop_reason)
    assert harness.calls("start") == 1


async def test_a_zego_room_login_wakes_a_recording_dormant_in_its_empty_room(harness: Harness) -> None:
    # ZEGO sends room_create, room_login and stream_create for one arrival: the first one to reach the
    # daemon starts the capture (a late or lost stream_create no longer holds it up).
    key = await dormant_recording(harness)
    timestamp, nonce = int(harness.clock.now()), "98765"
    login = {
        "event": "room_login",
        "appid": "1234567890",
        "room_id": "class-1",
        "user_account": "pupil",
        "timestamp": timestamp,
        "nonce": nonce,
        "signature": callback_signature(ZEGO_SECRET, str(timestamp), nonce),
    }
    async with await client(harness) as http:
        assert (await http.post("/callbacks/zego", json=login)).status_code == 200
    await harness.advance(1)
    assert harness.record(key).status is TaskStatus.RUNNING


async def test_a_dormant_task_is_not_reconciled_at_every_resync_but_still_wakes(harness: Harness) -> None:
    """Its worker is due at its slot, and a room callback queues it: the resync leaves it out."""
    key = await dormant_recording(harness)
    assert harness.daemon is not None
    reconciler = harness.daemon.reconciler
    passes: list[str] = []
    reconcile = reconciler.reconcile

    async def counted(k: str) -> Result:
        passes.append(k)
        return await reconcile(k)

    reconciler.reconcile = counted  # type: ignore[method-assign, assignment]
    await harness.advance(600)  # twenty resyncs
    assert passes.count(key) == 0 and harness.record(key).status is TaskStatus.DORMANT
    harness.sim.publish("zego", "class-1", stream_id="teacher")  # people are back: stream callbacks wake it
    await harness.advance(2)
    assert passes.count(key) >= 1 and harness.record(key).status is TaskStatus.RUNNING


@pytest.mark.parametrize("restart", [None, "Never"])
async def test_a_spec_edit_of_a_task_dormant_in_its_empty_room_waits_for_the_room_and_then_starts_with_it(
    harness: Harness, restart: str | None
) -> None:
    # At night every class room is empty and its task dormant; an edit merged then started every one of them
    # into its empty room, billed until its idle timeout (walk 16D-5). It waits for the room as the task does
    # (an edit that also switches restartPolicy to Never starts it once more: then, not never).
    key = await dormant_recording(harness)
    assert harness.daemon is not None and harness.record(key).room_empty
    starts, hash_before = harness.calls("StartRecord"), harness.record(key).spec_hash
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=45, restart=restart))
    assert harness.daemon.reload()
    await harness.advance(60)
    r = harness.record(key)
    assert r.status is TaskStatus.DORMANT and r.spec_hash == hash_before and harness.calls("StartRecord") == starts
    harness.sim.publish("zego", "class-1", stream_id="teacher")  # people are back: it starts, with the edit
    await harness.advance(2)
    r = harness.record(key)
    assert r.status is TaskStatus.RUNNING and r.idle_timeout == 45 and r.spec_hash != hash_before
    assert harness.calls("StartRecord") == starts + 1 and harness.calls("StopRecord") == 0 and not r.room_empty
    assert sample(await metrics(harness), "capctl_capture_gap_seconds_count") == 1  # the gap of a replace too
