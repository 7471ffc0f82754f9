"""A look that finds a running task running writes its record only every `STILL_RUNNING_WRITE_EVERY`.

The write would change nothing but `observed_at`: a quarter of a callback-driven daemon's commits were those.
Anything new (a stop, a start time learnt) is written at once; `capctl apply` records every observation.
"""

from __future__ import annotations

from reconciler import engine
from reconciler.daemon import policy
from reconciler.model import Observed, ObservedState, TaskStatus
from reconciler.state.sqlite import SQLiteStateStore
from tests.daemon.conftest import Harness, write_specs
from tests.specdocs import snapshot_job

LOBBY = "SnapshotJob/audit/lobby"
RESYNC = 30.0


def stored(harness: Harness) -> tuple[int, float]:
    """The state's serial and the lobby record's `observed_at`, as another process reads them."""
    store = SQLiteStateStore(harness.state_path, create=False)
    try:
        snapshot = store.load()
    finally:
        store.close()
    observed_at = snapshot.records[LOBBY].observed_at
    assert observed_at is not None
    return snapshot.serial, observed_at


async def test_a_running_task_seen_running_is_recorded_every_few_minutes_not_at_every_look(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=600))
    harness.sim.publish("volcengine", "lobby", user_id="u")  # it keeps running: nothing but the look's time is new
    harness.sim.config.volcengine_callback_url = None  # polling only: every look is a status query
    await harness.start(resync=RESYNC)
    await harness.advance(1)
    started = harness.record(LOBBY).started_at
    assert started is not None and harness.record(LOBBY).status is TaskStatus.RUNNING
    serial, _ = stored(harness)
    looks = harness.calls("GetSnapshotTask")
    await harness.advance(2 * policy.STILL_RUNNING_WRITE_EVERY)
    looks = harness.calls("GetSnapshotTask") - looks
    assert looks >= 2 * policy.STILL_RUNNING_WRITE_EVERY / (RESYNC * 1.1) - 1  # ~20 looks
    serial_after, observed_at = stored(harness)
    assert serial_after - serial <= 2  # one write per STILL_RUNNING_WRITE_EVERY, not one per look
    # Never older than the period and one look: `state list` shows a recent look.
    assert harness.clock.now() - observed_at <= policy.STILL_RUNNING_WRITE_EVERY + RESYNC * 1.1
    assert harness.record(LOBBY).status is TaskStatus.RUNNING and len(harness.running_sim_tasks()) == 1


async def test_a_stop_is_written_at_once_and_apply_records_every_observation(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=600))
    harness.sim.publish("volcengine", "lobby", user_id="u")
    await harness.start(resync=RESYNC)
    await harness.advance(1)
    record = harness.record(LOBBY)
    assert record.observed_at is not None
    now = record.observed_at + 10
    running = {LOBBY: Observed(ObservedState.RUNNING)}
    every = policy.STILL_RUNNING_WRITE_EVERY
    cache = harness.daemon.records if harness.daemon else None
    assert cache is not None
    assert engine.persist_observations(cache, {LOBBY: record}, running, now, still_running_every=every)[LOBBY] is record
    later = record.observed_at + every
    assert (
        engine.persist_observations(cache, {LOBBY: record}, running, later, still_running_every=every)[
            LOBBY
        ].observed_at
        == later
    )
    # Without the throttle (plan/apply's refresh) and for anything new, the observation is written.
    assert engine.persist_observations(cache, {LOBBY: record}, running, now)[LOBBY].observed_at == now
    ended = {LOBBY: Observed(ObservedState.STOPPED, reason="IdleTimeOut")}
    new = engine.persist_observations(cache, {LOBBY: record}, ended, now, still_running_every=every)[LOBBY]
    assert new.status is TaskStatus.STOPPED and cache.get(LOBBY) == new
