"""Runs the daemon's records do not account for, or account for only in part: a run `capctl state rm` forgot, a
start whose answer was lost, a re-issue cut short by a crash. The daemon ends each as `capctl apply` does."""

from __future__ import annotations

from reconciler.model import TaskStatus
from reconciler.state.sqlite import SQLiteStateStore
from tests.daemon.conftest import Harness, write_specs
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
