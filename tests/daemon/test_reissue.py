"""The daemon against the in-process simulator: starts, re-issues, backs off, sleeps, wakes and rolls over."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from reconciler.clock import FakeClock
from reconciler.daemon import policy
from reconciler.model import RestartPolicy, TaskStatus
from reconciler.plan import PlanOptions, diff
from tests.daemon.conftest import Harness, VendorClock, write_specs
from tests.daemon.test_http import client, volc_body
from tests.specdocs import recording_job, snapshot_job

LOBBY = "SnapshotJob/audit/lobby"
CLASS = "RecordingJob/rec/class-1"


def metric(harness: Harness, name: str, **labels: str) -> float:
    assert harness.daemon is not None
    value = harness.daemon.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def plan_reason(harness: Harness, key: str) -> str:
    """What `capctl plan` says of the task as the daemon left it (no refresh)."""
    assert harness.daemon is not None and harness.daemon.reconciler.spec is not None
    task, record = harness.daemon.reconciler.spec.tasks[key], harness.record(key)
    plan = diff(
        {key: task}, {key: record}, {}, options=PlanOptions(refreshed=False), state_serial=0, now=harness.clock.now()
    )
    return plan.changes[0].reason


async def test_starts_declared_tasks_and_reissues_after_idle_timeout_by_polling(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    harness.sim.config.volcengine_callback_url = None  # polling only: no callbacks at all
    await harness.start()
    await harness.advance(1)
    assert harness.record(LOBBY).status is TaskStatus.RUNNING
    assert len(harness.running_sim_tasks()) == 1
    await harness.advance(30)  # idled out at 20 s; seen at its expected deadline (25 s) and re-issued at once
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.RUNNING
    assert record.reissue_count == 1
    assert record.started_at == harness.clock.now() - 6  # re-issued at 25 s: the first re-issue is immediate
    assert len(harness.running_sim_tasks()) == 1
    assert metric(harness, "capctl_reissues_total", reason="idle timeout") == 1
    assert metric(harness, "capctl_reissue_gap_seconds_count") == 1
    assert metric(harness, "capctl_vendor_calls_total", api="StartSnapshot", outcome="ok") == 2


async def test_image_callbacks_make_a_run_productive_and_add_no_polling(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, interval=5))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await harness.advance(600)
    assert harness.record(LOBBY).productive
    assert harness.record(LOBBY).reissue_count == 0
    # Images arrive every 5 s and each one says the run cannot idle out for 25 s, but no hint holds a
    # look off past --resync (30 s): one status query per resync period, about 20, and none more.
    assert 18 <= harness.calls("GetSnapshotTask") <= 22
    polls = harness.calls("GetSnapshotTask")
    harness.sim.unpublish("volcengine", "lobby", user_id="alice")
    await harness.advance(30)  # idles out 20 s after the last image; seen by then + 5 s at the latest
    record = harness.record(LOBBY)
    # The room is known empty (alice left, nobody came back): no re-issue, dormant until room activity.
    assert record.reissue_count == 0 and record.status is TaskStatus.DORMANT
    assert record.unproductive_runs == 0  # the run that ended had produced images
    assert plan_reason(harness, LOBBY).startswith("dormant after its room emptied; wakes on room activity")
    assert 1 <= harness.calls("GetSnapshotTask") - polls <= 3


async def test_a_volcengine_run_ended_by_a_fault_is_seen_when_its_images_stop(harness: Harness) -> None:
    """Volcengine has no task-stopped callback: a run a fault ended in a room with a stream is looked at
    2 image intervals + 5 s after its last image (15 s), not at the next sweep (up to --resync, 30 s)."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, interval=5))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await harness.advance(36)  # looked at about 30 s in; the next sweep is 57-60 s in
    polls, stopped_at = harness.calls("GetSnapshotTask"), harness.clock.now()
    harness.sim.stop_task(
        "volcengine", harness.record(LOBBY).vendor_task_id or "", room_id="lobby", reason="StartTaskFailed"
    )
    await harness.advance(16)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.RUNNING and record.reissue_count == 1  # a fault: retried at once
    assert record.started_at is not None and record.started_at <= stopped_at + 15
    assert harness.calls("GetSnapshotTask") - polls == 1  # one look, when the images stopped


async def test_empty_room_backs_off_goes_dormant_and_wakes_on_room_activity(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    await harness.start()
    with capture_logs() as logs:
        await harness.advance(300)
    record = harness.record(LOBBY)
    # Runs end at 20, 45, 130, 275 s: re-issued at once, then after 60 s, 120 s; the 4th makes it dormant.
    assert record.status is TaskStatus.DORMANT
    assert harness.calls("StartSnapshot") == 4
    assert record.next_attempt_at is not None and record.stopped_at is not None
    assert record.next_attempt_at - record.stopped_at == pytest.approx(
        policy.backoff_delay(4) + policy.DEADLINE_MARGIN, abs=0.1
    )
    assert any(e.get("reason") == "dormant: no room activity" for e in logs)
    assert plan_reason(harness, LOBBY).startswith("dormant after 4 idle runs;")  # as the daemon counted them
    calls = len(harness.sim.log.entries())
    await harness.advance(100)
    assert len(harness.sim.log.entries()) == calls  # dormant: no calls at all
    harness.sim.publish("volcengine", "lobby", user_id="bob")  # UserJoinRoom callback wakes it
    await harness.advance(1)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.RUNNING
    assert harness.calls("StartSnapshot") == 5
    await harness.advance(120)
    assert harness.record(LOBBY).productive  # images flow again


async def test_dormant_task_tries_again_at_its_backoff_slot(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    await harness.start()
    await harness.advance(300)
    slot = harness.record(LOBBY).next_attempt_at
    assert slot is not None
    await harness.advance(slot - harness.clock.now() + 1)
    assert harness.calls("StartSnapshot") == 5
    assert harness.record(LOBBY).status is TaskStatus.RUNNING


async def test_a_dormant_task_whose_job_is_made_never_says_nothing_wakes_it_and_nothing_does(
    harness: Harness,
) -> None:
    """Walk 31a-3: a task dormant with a re-issue slot, its job then made restartPolicy Never (no hash change):
    `plan`, `state list` and the status page said it wakes on room activity or at that slot, and `capctl wake`
    said it woke it, though nothing would start it. Its slot goes at once; every view says `stopped` under Never."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    daemon = await harness.start(sync_token="tok")
    await harness.advance(300)
    slot = harness.record(LOBBY).next_attempt_at
    assert harness.record(LOBBY).status is TaskStatus.DORMANT and slot is not None
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, restart="Never"))
    assert daemon.reload()
    await harness.advance(1)
    record = harness.record(LOBBY)
    assert (record.status, record.next_attempt_at) == (TaskStatus.STOPPED, None)
    assert plan_reason(harness, LOBBY) == "stopped; restartPolicy Never"
    async with await client(harness) as http:
        woken = await http.post("/api/v1/wake", json={"keys": [LOBBY]}, headers={"authorization": "Bearer tok"})
    assert woken.json()["lines"] == [
        f"{LOBBY} is stopped: nothing to wake; restartPolicy Never: nothing re-issues it (an edit of its job, "
        "or apply --replace, starts it once more)."
    ]
    harness.sim.publish("volcengine", "lobby", user_id="bob")
    await harness.advance(slot - harness.clock.now() + 5)  # room activity, then the old slot: no start
    assert harness.calls("StartSnapshot") == 4 and harness.record(LOBBY).status is TaskStatus.STOPPED


async def test_an_edit_starts_a_task_dormant_after_idle_runs_with_no_word_of_its_room(harness: Harness) -> None:
    # No room callback says the room is empty: the edit may be the fix (a job naming the wrong user idles out
    # while the room is full), so it is started at once, unlike one dormant in a room known empty (walk 16D-5).
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    await harness.start()
    await harness.advance(300)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.DORMANT and not record.room_empty
    assert harness.daemon is not None
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, interval=10))
    assert harness.daemon.reload()
    await harness.advance(1)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.RUNNING and record.updatable == {"interval": 10}
    assert harness.calls("StartSnapshot") == 5


async def test_recording_rollover_is_reissued_without_backoff(harness: Harness) -> None:
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=30, max_duration=300))
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    await harness.start()
    await harness.advance(1)
    first = harness.record(CLASS).vendor_task_id
    await harness.advance(305)
    record = harness.record(CLASS)
    assert record.vendor_task_id != first and record.status is TaskStatus.RUNNING
    assert metric(harness, "capctl_reissues_total", reason="rollover") == 1
    gap_sum = metric(harness, "capctl_reissue_gap_seconds_sum")
    assert gap_sum <= 1.0  # the end callback makes the daemon look at once
    await harness.advance(300)
    assert metric(harness, "capctl_reissues_total", reason="rollover") == 2
    assert harness.record(CLASS).unproductive_runs == 0
    assert len(harness.running_sim_tasks("zego")) == 1


async def test_recording_seen_ended_by_polling_alone_is_reissued_with_its_status(harness: Harness) -> None:
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=30))
    harness.sim.config.zego_callback_url = None
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    await harness.start()
    await harness.advance(5)
    harness.sim.stop_task("zego", harness.record(CLASS).vendor_task_id or "", reason=6)  # network lost
    with capture_logs(processors=[merge_contextvars]) as logs:
        await harness.advance(40)
    decisions = [e for e in logs if e["event"] == "decision" and e.get("action") == "reissue"]
    assert len(decisions) == 1
    # DescribeRecordStatus gives the status, not the quit reason (vendor-apis.md; only the callback names it):
    # polling alone says the status, and an end 5 s into a 30 s idle timeout is taken for a fault (re-issued now).
    assert "vendor stopped it: ended (ZEGO status 4) at " in decisions[0]["reason"]
    assert decisions[0]["key"] == CLASS
    assert harness.record(CLASS).status is TaskStatus.RUNNING
    assert harness.record(CLASS).reissue_count == 1


async def test_restart_policy_never_is_not_reissued_until_the_job_is_always(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, restart="Never"))
    daemon = await harness.start()
    await harness.advance(200)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.DONE
    assert harness.calls("StartSnapshot") == 1
    # The job made Always (nothing else changed, so no hash did): the run that ended under Never is re-issued.
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    assert daemon.reload()
    await harness.advance(1)
    assert harness.record(LOBBY).status is TaskStatus.RUNNING
    assert harness.calls("StartSnapshot") == 2
    # Made Never again while it runs: no call, but the record learns it, so the run's end is `done` (8c-11).
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, restart="Never"))
    assert daemon.reload()
    await harness.advance(1)
    assert harness.record(LOBBY).restart_policy is RestartPolicy.NEVER
    harness.sim.unpublish("volcengine", "lobby", user_id="alice")
    await harness.advance(200)
    assert harness.record(LOBBY).status is TaskStatus.DONE
    assert harness.calls("StartSnapshot") == 2 and harness.calls("UpdateSnapshot") == 0


async def test_three_tasks_are_polled_once_per_resync_not_at_the_budget(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["a", "b", "c"], idle=600))
    harness.sim.config.volcengine_callback_url = None
    for room in "abc":
        harness.sim.publish("volcengine", room, user_id="u")
    await harness.start()
    await harness.advance(300)
    polls = harness.calls("GetSnapshotTask")
    # One look per task per resync period (30 s ± 10 %): about 30, never the 60/s the budget would allow.
    assert 24 <= polls <= 36
    assert harness.sim.limiter.throttled_total == 0


@pytest.mark.parametrize("idle", [20, 30])
async def test_recording_ended_by_callback_is_reissued_with_the_callbacks_reason(harness: Harness, idle: int) -> None:
    """The last stream's end closes the room (ZEGO `room_close`): the run's idle-out (event_type 2, quit_reason 3)
    comes in a room known empty, whether before ZEGO's "room has zero streams" (event_type 4, within 30 s of the
    room emptying; idle 20 s) or with it (30 s): it waits dormant, and the next stream re-issues it with the end
    callback's reason (before 16D-1 a room_close named no task, and a 20 s run was re-issued into the empty room)."""
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=idle))
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    await harness.start()
    await harness.advance(5)
    harness.sim.unpublish("zego", "class-1", stream_id="teacher")
    with capture_logs(processors=[merge_contextvars]) as logs:
        await harness.advance(40)  # idle timeout → event_type 2, quit_reason 3
    decisions = [e for e in logs if e["event"] == "decision" and e.get("action") == "reissue"]
    record = harness.record(CLASS)
    assert (decisions, record.status, record.reissue_count) == ([], TaskStatus.DORMANT, 0)
    assert (record.stop_reason or "").startswith("idle timeout (ZEGO quit_reason 3)")
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    with capture_logs(processors=[merge_contextvars]) as logs:
        await harness.advance(2)
    decisions = [e for e in logs if e["event"] == "decision" and e.get("action") == "reissue"]
    assert [d["key"] for d in decisions] == [CLASS]
    assert decisions[0]["reason"].startswith("vendor stopped it: idle timeout (ZEGO quit_reason 3) at ")
    assert harness.record(CLASS).status is TaskStatus.RUNNING


async def test_last_user_leaving_makes_the_daemon_look_just_after_the_idle_deadline(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, interval=5))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await harness.advance(60)
    left_at = harness.clock.now()
    harness.sim.unpublish("volcengine", "lobby", user_id="alice")  # UserLeaveRoom: the room is now empty
    await harness.advance(40)
    record = harness.record(LOBBY)
    # The run idles out 20 s after the leave; the daemon looks 0.5 s later and sees it stopped (without
    # the leave it would only look one idle timeout + the 5 s margin after the last image). The room is
    # empty: the task goes dormant instead of being re-issued.
    assert record.reissue_count == 0 and record.status is TaskStatus.DORMANT
    assert record.observed_at is not None
    assert 20 <= record.observed_at - left_at <= 20 + policy.PROBE_DELAY + policy.PROBE_INTERVAL
    back_at = harness.clock.now()
    harness.sim.publish("volcengine", "lobby", user_id="alice")  # UserJoinRoom: started at once
    await harness.advance(5)
    record = harness.record(LOBBY)
    assert record.reissue_count == 1 and record.status is TaskStatus.RUNNING and record.started_at is not None
    assert record.started_at - back_at < 2


async def test_an_image_callback_arriving_after_the_leave_does_not_delay_the_look(harness: Harness) -> None:
    # Callbacks race: the image taken just before the last user left can arrive after UserLeaveRoom. It
    # proves nothing about the empty room, so the look stays just after the idle deadline.
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, interval=5))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await harness.advance(60)
    left_at = harness.clock.now()
    harness.sim.unpublish("volcengine", "lobby", user_id="alice")
    await harness.advance(0.1)  # UserLeaveRoom delivered
    late_image = volc_body(
        harness, event_id="late-image", event_type="SnapshotRealTimeData", data={"RoomId": "lobby", "TaskId": "audit"}
    )
    async with await client(harness) as http:
        assert (await http.post("/callbacks/volcengine", json=late_image)).status_code == 200
    await harness.advance(40)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.DORMANT and record.observed_at is not None
    assert 20 <= record.observed_at - left_at <= 20 + policy.PROBE_DELAY + policy.PROBE_INTERVAL


async def test_a_task_past_the_query_window_goes_on_without_counting_reissues(harness: Harness) -> None:
    """GetSnapshotTask answers for 72 h only (vendor-apis.md): a task running longer is "not found" at every
    look, and the re-issue that follows is answered "already started". The run goes on: no re-issue is
    counted, in the record or the metric, and the run is not backed off as a short idle one."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await harness.advance(1)
    started_at = harness.record(LOBBY).started_at
    harness.sim.world.queried_volc_task = lambda app_id, room_id, task_id: None  # type: ignore[method-assign]
    await harness.advance(300)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.RUNNING
    assert (record.reissue_count, record.unproductive_runs, record.started_at) == (0, 0, started_at)
    assert metric(harness, "capctl_reissues_total", reason="not found at the vendor") == 0
    assert metric(harness, "capctl_vendor_calls_total", api="StartSnapshot", outcome="ok") > 2
    assert len(harness.running_sim_tasks()) == 1


# A vendor clock minutes off the daemon's, drifting (100 µs/s), either way: a run's length must still be read
# right (docs/daemon.md "Two clocks"). Polling only: callbacks this far off are refused as stale anyway.
SKEWS = [pytest.param(300.0, 1e-4, id="vendor-ahead"), pytest.param(-300.0, -1e-4, id="vendor-behind")]
JOBS = [
    pytest.param("volcengine", LOBBY, snapshot_job("audit", ["lobby"], idle=20), id="volcengine"),
    pytest.param(
        "zego", "RecordingJob/rec/lobby", recording_job("rec", ["lobby"], idle=20, max_duration=300), id="zego"
    ),
]


@pytest.mark.parametrize(("offset", "drift"), SKEWS)
@pytest.mark.parametrize(("vendor", "key", "job"), JOBS)
async def test_a_skewed_vendor_clock_neither_hides_an_empty_room_nor_an_active_one(
    tmp_path: Path, clock: FakeClock, offset: float, drift: float, vendor: str, key: str, job: str
) -> None:
    harness = Harness(tmp_path, clock, vendor_clock=VendorClock(clock, offset, drift))
    write_specs(harness.specs, job)
    harness.sim.config.volcengine_callback_url = harness.sim.config.zego_callback_url = None
    harness.sim.publish(vendor, "lobby", user_id="alice", stream_id="alice")
    try:
        await harness.start()
        await harness.advance(60)
        harness.sim.unpublish(vendor, "lobby", user_id="alice", stream_id="alice")
        await harness.advance(40)  # it idles out 20 s after the stream left: a run of 80 s, productive by its length
        first = harness.record(key)
        assert (first.status, first.reissue_count, first.unproductive_runs) == (TaskStatus.RUNNING, 1, 0)
        assert metric(harness, "capctl_reissue_gap_seconds_sum") <= policy.DEADLINE_MARGIN + 1
        await harness.advance(30)  # the next run idles out: the first unproductive one is re-issued at once
        second = harness.record(key)
        assert (second.status, second.reissue_count, second.unproductive_runs) == (TaskStatus.RUNNING, 2, 1)
        await harness.advance(300)  # then 60 s, 120 s of backoff; the 4th in a row makes it dormant
        record = harness.record(key)
        assert (record.status, record.unproductive_runs) == (TaskStatus.DORMANT, 3)
        assert record.stopped_at is not None and record.started_at is not None
        assert record.stopped_at - record.started_at == pytest.approx(20, abs=policy.DEADLINE_MARGIN)
        assert record.stopped_at <= clock.now()  # a stop on the daemon's clock, not the vendor's
    finally:
        if harness.daemon is not None:
            await harness.stop()
        await harness.sim.callbacks.aclose()


async def test_vendor_faults_are_retried_within_seconds_and_sleep_only_in_a_room_known_empty(harness: Harness) -> None:
    """Faults a second apart in a room with a stream since before the run: at once, then 5 s after the stop (it
    was 60 s, as a 2nd idle-out). Once a callback says the room emptied, a fault makes the task dormant, and the
    room's next stream starts it."""
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=60))
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    await harness.start()
    await harness.advance(5)
    for reason in (6, 1001):
        harness.sim.stop_task("zego", harness.record(CLASS).vendor_task_id or "", reason=reason)
        await harness.advance(1)
    assert harness.record(CLASS).status is TaskStatus.STOPPED and harness.record(CLASS).fault_runs == 1
    await harness.advance(4.5)
    record = harness.record(CLASS)
    assert record.status is TaskStatus.RUNNING and (record.fault_runs, record.unproductive_runs) == (2, 0)
    assert metric(harness, "capctl_reissues_total", reason="internal error") == 1
    harness.sim.unpublish("zego", "class-1", stream_id="teacher")
    await harness.advance(35)  # ZEGO's "room has zero streams" (event_type 4) arrived: the room is known empty
    harness.sim.stop_task("zego", harness.record(CLASS).vendor_task_id or "", reason=5)  # before its idle timeout
    await harness.advance(30)
    assert harness.record(CLASS).status is TaskStatus.DORMANT and not harness.running_sim_tasks("zego")
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    await harness.advance(2)
    assert harness.record(CLASS).status is TaskStatus.RUNNING and harness.record(CLASS).fault_runs == 3


async def test_wake_over_http_starts_a_dormant_task_at_once_and_says_what_it_left(harness: Harness) -> None:
    """`capctl wake --daemon` (walk 18H-7): the daemon holds the lock, so the leader clears the waiting itself."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby", "hall"], idle=20))
    harness.sim.publish("volcengine", "hall", user_id="alice")
    await harness.start(sync_token="tok-wake")
    await harness.advance(300)
    assert harness.record(LOBBY).status is TaskStatus.DORMANT
    starts = harness.calls("StartSnapshot")
    async with await client(harness) as http:
        assert (await http.post("/api/v1/wake", json={"keys": [LOBBY]})).status_code == 401
        auth = {"authorization": "Bearer tok-wake"}
        typo = await http.post("/api/v1/wake", json={"keys": ["SnapshotJob/audit/lobbi"]}, headers=auth)
        assert typo.status_code == 404 and "did you mean" in typo.json()["reason"]
        assert harness.record(LOBBY).status is TaskStatus.DORMANT  # a KEY matching nothing wakes nothing
        assert (await http.post("/api/v1/wake", content=b"", headers=auth)).status_code == 400
        woken = await http.post("/api/v1/wake", json={"keys": ["SnapshotJob/audit/*"]}, headers=auth)
        assert woken.status_code == 200, woken.json()
        assert woken.json()["reason"] == "woke 1 task, queued for an immediate reconcile"
        [line, left] = woken.json()["lines"]
        assert line.startswith(f"Woke {LOBBY} (was dormant after ") and ", next slot " in line
        assert left == "SnapshotJob/audit/*: left 1 task not waiting (1 running)."
        await harness.advance(1)
        assert harness.record(LOBBY).status is TaskStatus.RUNNING  # started now, not at its slot
        assert harness.calls("StartSnapshot") == starts + 1
        again = await http.post("/api/v1/wake", json={"keys": [LOBBY]}, headers=auth)
        assert again.json() == {
            "ok": True,
            "reason": "woke no task, queued none",
            "lines": [f"{LOBBY} is running: nothing to wake."],
        }
