"""Runs the daemon's records do not account for, or account for only in part: a run `capctl state rm` forgot, a
start whose answer was lost, a re-issue cut short by a crash. The daemon ends each as `capctl apply` does."""

from __future__ import annotations

from reconciler import transitions
from reconciler.model import Action, TaskStatus
from reconciler.plan import PlanOptions, diff
from reconciler.sim.faults import FaultConfig
from reconciler.state.sqlite import SQLiteStateStore
from tests.daemon.conftest import Harness, write_specs
from tests.daemon.test_reissue import metric
from tests.specdocs import snapshot_job

LOBBY = "SnapshotJob/audit/lobby"


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
    harness.sim.stop_task("volcengine", ran.vendor_task_id or "", room_id="lobby", reason="ops")
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
