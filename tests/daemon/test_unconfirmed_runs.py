"""Runs the daemon's records do not account for, or account for only in part: a run `capctl state rm` forgot, a
start whose answer was lost, a re-issue cut short by a crash. The daemon ends each as `capctl apply` does."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from reconciler import transitions
from reconciler.model import Action, TaskRecord, TaskStatus
from reconciler.plan import PlanOptions, diff
from reconciler.sim.faults import FaultConfig
from reconciler.spec import load_spec_set
from reconciler.state.sqlite import SQLiteStateStore
from tests.daemon.conftest import Harness, write_specs
from tests.daemon.test_reissue import metric
from tests.specdocs import recording_job, snapshot_job

LOBBY = "SnapshotJob/audit/lobby"
REC = "RecordingJob/rec/lobby"


async def test_a_forgotten_run_is_started_again_with_the_declared_settings(harness: Harness) -> None:
    """`state rm` forgets a running task, then its interval changes: the daemon's start was answered "already
    started" and taken as a run of the new settings, while the vendor kept the old interval."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], interval=5, idle=180))
    await harness.start()
    await harness.advance(1)
    await harness.stop()
    store = SQLiteStateStore(harness.state_path)
    store.delete(LOBBY)  # capctl state rm
    store.close()
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], interval=10, idle=240))
    await harness.start()
    await harness.advance(5)
    [task] = harness.running_sim_tasks("volcengine")
    assert (task.interval, task.max_idle) == (10, 240)
    assert harness.calls("StopSnapshot") == 1
    assert harness.record(LOBBY).status is TaskStatus.RUNNING


async def test_a_start_whose_answer_was_lost_is_updated_when_the_vendor_runs_it(harness: Harness) -> None:
    """Every StartSnapshot answer lost (the start took effect), then an interval change: the daemon stopped and
    started the task again (a replace) where the vendor runs it and an update does."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    harness.sim.faults.set(FaultConfig(timeout_rate=1.0, phase="after", apis=["StartSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], interval=5, idle=180))
    daemon = await harness.start()
    for _ in range(60):  # a round of tries, each answer lost
        await harness.advance(5)
        if harness.record(LOBBY).status is TaskStatus.FAILED:
            break
    assert harness.record(LOBBY).status is TaskStatus.FAILED, harness.record(LOBBY)
    harness.sim.faults.set(FaultConfig())
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], interval=10, idle=180))
    assert daemon.reload()
    await harness.advance(60)
    assert harness.calls("StopSnapshot") == 0
    assert harness.calls("UpdateSnapshot") == 1
    [task] = harness.running_sim_tasks("volcengine")
    assert task.interval == 10
    assert harness.record(LOBBY).status is TaskStatus.RUNNING


async def test_a_reissue_resumed_after_a_crash_is_counted_as_a_reissue(harness: Harness) -> None:
    """A crash between a re-issue's intent and its start: the next pass planned it as a create, and
    `capctl_reissues_total` missed it (its record's re-issue count was right: counted at the intent)."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    daemon = await harness.start()
    await harness.advance(1)
    assert daemon.reconciler.spec is not None
    task = daemon.reconciler.spec.tasks[LOBBY]
    await harness.stop()
    store = SQLiteStateStore(harness.state_path)
    ran = store.load().records[LOBBY]
    harness.sim.stop_task("volcengine", ran.vendor_task_id or "", room_id="lobby", reason="UnknownStopReason")
    # The re-issue's intent, committed before the crash (`Executor.start`, failpoint start.before-call).
    now = harness.clock.now()
    pending = transitions.intent(task, transitions.stopped(ran, "idle timeout", now), now, reissue=True)
    store.put(pending)
    store.close()
    for start in (pending, transitions.failed(pending, "lost", now)):  # cut short; failed: tried again
        plan = diff({LOBBY: task}, {LOBBY: start}, {}, options=PlanOptions(), state_serial=0, now=now)
        assert plan.changes[0].action is Action.REISSUE, plan.changes[0]
    await harness.start()
    await harness.advance(1)
    assert harness.record(LOBBY).status is TaskStatus.RUNNING
    assert harness.record(LOBBY).reissue_count == 1
    assert metric(harness, "capctl_reissues_total", reason="idle timeout") == 1


@pytest.mark.parametrize("family", ["volcengine", "zego"])
async def test_a_replace_resumed_after_its_stop_is_a_replace_and_stops_nothing_again(
    harness: Harness, family: str
) -> None:
    """A crash between a replace's stop and its start (its intent committed, failpoint start.before-call): the
    next pass planned a create ("an earlier start was not confirmed"), `apply` said "1 created". It is the
    replace's start, planned and done as one, without a second stop (ZEGO: nor a start under its ClientTaskId
    to find that start first)."""
    key, stop_api = (LOBBY, "StopSnapshot") if family == "volcengine" else (REC, "StopRecord")

    def job(idle: int) -> str:
        if family == "volcengine":
            return snapshot_job("audit", ["lobby"], idle=idle)
        return recording_job("rec", ["lobby"], idle=idle)

    write_specs(harness.specs, job(180))
    await harness.start()
    await harness.advance(1)
    await harness.stop()
    write_specs(harness.specs, job(240))
    store = SQLiteStateStore(harness.state_path)
    task = load_spec_set([harness.specs], fingerprint_key=store.fingerprint_key()).tasks[key]
    ran = store.load().records[key]
    # The replace's stop, committed (reason `replaced`), then its start's intent (`Executor.start`).
    harness.sim.stop_task(family, ran.vendor_task_id or "", room_id="lobby")
    now = harness.clock.now()
    pending = transitions.intent(task, transitions.stopped(ran, "replaced", now), now, reissue=False, replace=True)
    store.put(pending)
    store.close()
    for start in (pending, transitions.failed(pending, "lost", now)):  # cut short; failed: tried again
        plan = diff({key: task}, {key: start}, {}, options=PlanOptions(), state_serial=0, now=now)
        assert plan.changes[0].action is Action.REPLACE, plan.changes[0]
    stops = harness.calls(stop_api)
    with capture_logs() as logs:
        await harness.start()
        await harness.advance(1)
    assert [e["action"] for e in logs if e["event"] == "decision"] == ["replace"]
    assert harness.calls(stop_api) == stops
    [running] = harness.running_sim_tasks(family)
    assert (running.max_idle, harness.record(key).vendor_task_id) == (240, running.task_id)
    assert harness.record(key).status is TaskStatus.RUNNING and not harness.record(key).replacing


async def test_a_dormant_task_an_apply_saw_running_is_decided_afresh_when_the_daemon_sees_it_stopped(
    harness: Harness,
) -> None:
    """`capctl apply` saw a dormant task running (a vendor status lagging its idle-out) and recorded it so, with
    its old slot kept: when the daemon then saw it stopped, it honoured that stale slot (walk 18e)."""
    from reconciler.model import Observed, ObservedState

    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    store, dormant = await _ran_for(harness, 300)
    assert dormant.status is TaskStatus.DORMANT and dormant.next_attempt_at is not None
    store.put(transitions.observed(dormant, Observed(ObservedState.RUNNING), harness.clock.now()))  # as apply does
    store.close()
    await harness.advance(30)
    await harness.start()
    await harness.advance(2)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.DORMANT and record.next_attempt_at is not None
    assert record.next_attempt_at > dormant.next_attempt_at + 29, (record, dormant)  # its own, not the old one


@pytest.mark.parametrize("lost", [False, True], ids=["confirmed", "lost-start"])
async def test_a_replace_killed_after_its_stop_is_started_at_once_as_a_replace(harness: Harness, lost: bool) -> None:
    """`apply --replace` (spec unchanged) killed at stop.after-commit: `stopped`, reason `replaced`, its vendor id
    kept. The daemon read it as a run the vendor ended: counted as one more unproductive run, it waited out its
    backoff (or went dormant), then re-issued it, counted. capctl stopped it: its replace's start goes at once,
    no re-issue counted (walk 49a). So too when what it stopped was a start whose answers were lost (no vendor
    id, marked `start_refused` by the stop): 49a's check wanted a vendor id, and the backoff held it (walk 50a)."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    store, ran = await _ran_for(harness, 1)
    harness.sim.stop_task("volcengine", ran.vendor_task_id or "", room_id="lobby", reason="StopByAPI")
    # Two idle runs before the replace, whose stop was committed (`Executor._stop_for_replace`), then the crash.
    before = ran.evolve(unproductive_runs=2)
    stopped = transitions.stopped(before, transitions.REPLACED, harness.clock.now())
    store.put(stopped.evolve(vendor_task_id=None, start_refused=True) if lost else stopped)
    store.close()
    await harness.start()
    await harness.advance(5)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.RUNNING, record
    assert (record.reissue_count, record.unproductive_runs) == (0, 2)
    assert harness.calls("StopSnapshot") == 0 and len(harness.running_sim_tasks("volcengine")) == 1


async def _ran_for(harness: Harness, seconds: float) -> tuple[SQLiteStateStore, TaskRecord]:
    """The daemon run for `seconds` of its clock, then stopped: its state opened, and the lobby's record."""
    await harness.start()
    await harness.advance(seconds)
    await harness.stop()
    store = SQLiteStateStore(harness.state_path)
    return store, store.load().records[LOBBY]
