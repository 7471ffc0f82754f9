"""The host's wall clock steps (NTP, a VM restored from a snapshot) while the daemon runs: the waits it measures
itself keep their length, on the monotonic clock (docs/failure-modes.md, "The host's wall clock steps")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from reconciler.clock import FakeClock
from reconciler.model import TaskRecord, TaskStatus
from reconciler.sim.faults import FaultConfig
from reconciler.state import open_state
from reconciler.state.base import StateError
from reconciler.state.sqlite import SQLiteStateStore
from tests.daemon.conftest import Harness, write_specs
from tests.daemon.test_http import client
from tests.daemon.test_room_jobs import SHOWS, lose_callbacks
from tests.daemon.test_status_page import task_of
from tests.specdocs import snapshot_job

LOBBY = "SnapshotJob/audit/lobby"
HOUR = 3600.0


class VendorHost:
    """The vendor's clock, on another machine: it runs on at the monotonic pace while the daemon's host steps."""

    def __init__(self, daemon: FakeClock) -> None:
        self._daemon, self._base = daemon, daemon.now() - daemon.monotonic()

    def now(self) -> float:
        return self._base + self._daemon.monotonic()

    def daemon(self, vendor_time: float) -> float:
        """The daemon's wall time when the vendor's reads `vendor_time`."""
        return vendor_time - self._base + self._daemon.now() - self._daemon.monotonic()

    def monotonic(self) -> float:
        return self._daemon.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._daemon.sleep(seconds)


@pytest.fixture
async def stepped(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, clock, vendor_clock=VendorHost(clock))  # type: ignore[arg-type]
    yield h
    if h.daemon is not None:
        await h.stop()
    await h.sim.callbacks.aclose()


@pytest.mark.parametrize("step", [-HOUR, -30.0, HOUR, 86400.0])
async def test_a_backoff_wait_keeps_its_length_when_the_wall_clock_steps(stepped: Harness, step: float) -> None:
    write_specs(stepped.specs, snapshot_job("audit", ["lobby"], idle=20))
    await stepped.start()
    await stepped.advance(50)  # runs ended at 20 and 45 s: the second unproductive one waits 60 s
    record = stepped.record(LOBBY)
    assert record.status is TaskStatus.STOPPED and record.next_attempt_at is not None
    left = record.next_attempt_at - stepped.clock.now()
    assert 30 < left <= 70
    stepped.clock.step(step)
    await stepped.advance(left - 2)
    assert stepped.calls("StartSnapshot") == 2  # a step forward does not cut the wait short
    await stepped.advance(3)
    assert stepped.calls("StartSnapshot") == 3  # nor does a step back make it an hour longer


@pytest.mark.parametrize("step", [-600.0, -30.0, 600.0])
async def test_a_run_that_stops_is_seen_on_time_when_the_wall_clock_steps(stepped: Harness, step: float) -> None:
    write_specs(stepped.specs, snapshot_job("audit", ["lobby"], idle=20))
    stepped.sim.config.volcengine_callback_url = None  # polling only: its look is the one it planned
    await stepped.start()
    await stepped.advance(1)
    assert stepped.record(LOBBY).status is TaskStatus.RUNNING
    stepped.clock.step(step)
    await stepped.advance(30)  # idled out at 20 s; looked at its expected deadline (25 s), re-issued at once
    record = stepped.record(LOBBY)
    assert (record.status, record.reissue_count, record.unproductive_runs) == (TaskStatus.RUNNING, 1, 1)


@pytest.mark.parametrize("step", [-600.0, 600.0])
async def test_the_prune_grace_keeps_its_length_when_the_wall_clock_steps(stepped: Harness, step: float) -> None:
    write_specs(stepped.specs, snapshot_job("audit", ["lobby"]))
    (stepped.specs / "big.yaml").write_text(snapshot_job("big", ["r0", "r1", "r2"]))
    await stepped.start(prune_grace=60)
    await stepped.advance(1)
    assert stepped.daemon is not None
    (stepped.specs / "jobs.yaml").write_text("")  # 1 task of 4: pruned after the grace unless it comes back
    assert stepped.daemon.reload()
    await stepped.advance(10)
    stepped.clock.step(step)
    await stepped.advance(48)  # resyncs every 30 s look at it: a step forward does not end its grace early
    assert stepped.calls("StopSnapshot") == 0 and stepped.record(LOBBY).status is TaskStatus.RUNNING
    await stepped.advance(2)  # nor does a step back hold it 10 minutes longer
    assert stepped.calls("StopSnapshot") == 1 and stepped.record(LOBBY).status is TaskStatus.REMOVED


@pytest.mark.parametrize("step", [-200.0, 200.0])
async def test_a_look_an_image_callback_sets_after_a_step_is_on_time(stepped: Harness, step: float) -> None:
    """Within the callbacks' 300 s: the first callback after the step moves the schedule set before it, then
    sets its own on the clock as it is now (not moved again): the run a fault ends is seen when its images stop
    (2 intervals + 5 s), as without a step (test_reissue.py)."""
    write_specs(stepped.specs, snapshot_job("audit", ["lobby"], idle=20, interval=5))
    stepped.sim.publish("volcengine", "lobby", user_id="alice")
    await stepped.start()
    await stepped.advance(36)  # looked at about 30 s in; the next sweep is 57-60 s in
    stepped.clock.step(step)
    await stepped.advance(4.5)  # the image of 40 s is the first thing the daemon hears after the step
    polls, stopped_at = stepped.calls("GetSnapshotTask"), stepped.clock.now()
    stepped.sim.stop_task(
        "volcengine", stepped.record(LOBBY).vendor_task_id or "", room_id="lobby", reason="StartTaskFailed"
    )
    await stepped.advance(16)
    record = stepped.record(LOBBY)
    assert record.status is TaskStatus.RUNNING and record.reissue_count == 1
    assert record.started_at is not None and record.started_at <= stopped_at + 15
    assert stepped.calls("GetSnapshotTask") - polls == 1


async def test_a_room_entry_after_a_step_forward_is_newer_than_the_listing_before_it(stepped: Harness) -> None:
    """The vendor's clock agreed with the daemon's until the daemon's stepped 200 s forward (callbacks still
    fresh): a stream's callback must be put on the daemon's clock as it is now. Before, the offset measured
    before the step was kept for 10 min, the entry read as 200 s older than a listing that said the room
    was empty, and the room was not captured until the next listing, minutes later."""
    write_specs(stepped.specs, SHOWS)
    await stepped.start()
    stepped.sim.publish("zego", "show-1", stream_id="s1", user_id="host")
    await stepped.advance(2)
    assert len(stepped.running_sim_tasks("zego")) == 1
    stepped.clock.step(200.0)
    lose_callbacks(stepped, 1.0)
    stepped.sim.unpublish("zego", "show-1", stream_id="s1", user_id="host")  # room_close lost
    await stepped.advance(100)  # a listing says the room has no stream; its run idles out, not re-issued
    assert stepped.calls("StartRecord") == 1
    lose_callbacks(stepped, 0.0)
    stepped.sim.publish("zego", "show-1", stream_id="s2", user_id="host")  # its stream_create arrives
    await stepped.advance(2)
    assert len(stepped.running_sim_tasks("zego")) == 1 and stepped.calls("StartRecord") == 2


async def test_on_postgresql_a_step_back_moves_the_stored_wait_and_the_leader_keeps_its_lease(
    stepped: Harness, pg_url: str
) -> None:
    """The lease is on the database server's clock and the renew deadline on the monotonic one: a step of the
    daemon's host changes neither; the waiting record is moved by a fenced write of this term."""
    write_specs(stepped.specs, snapshot_job("audit", ["lobby"], idle=20))
    daemon = await stepped.start(open_state(pg_url))
    await stepped.advance(50)
    record = stepped.record(LOBBY)
    assert record.status is TaskStatus.STOPPED and record.next_attempt_at is not None
    left, epoch = record.next_attempt_at - stepped.clock.now(), daemon.lease.elector.epoch
    stepped.clock.step(-HOUR)
    with capture_logs() as logs:
        await stepped.advance(left + 1)
    assert stepped.calls("StartSnapshot") == 3
    assert daemon.lease.elector.epoch == epoch and daemon.lease_lost is None
    assert not [e for e in logs if e["event"] == "lost leadership"]
    [stepped_log] = [e for e in logs if e["event"].startswith("wall clock stepped")]
    assert (stepped_log["seconds"], stepped_log["waits_moved"]) == (-HOUR, 1)


class OnceFailingStore(SQLiteStateStore):
    """A state whose next `put_many` fails once `fail_next` is set (a VM restored from a snapshot: its
    database connection is gone too)."""

    fail_next = False

    def put_many(self, records: Iterable[TaskRecord], **options: Any) -> int:
        if self.fail_next:
            self.fail_next = False
            raise StateError("database is locked")
        return super().put_many(records, **options)


async def test_a_step_whose_wait_cannot_be_written_keeps_it_all_the_same(stepped: Harness) -> None:
    """The write moving the waits failed (a VM restored from a snapshot has lost its database connection too),
    and the step was forgotten: the backoff lasted an hour longer (walk 14A-2). The wait keeps its length,
    its move is written at the next pass that can, and the step is counted."""
    write_specs(stepped.specs, snapshot_job("audit", ["lobby"], idle=20))
    store = OnceFailingStore(stepped.state_path, clock=stepped.clock)
    daemon = await stepped.start(store)
    await stepped.advance(50)  # the second unproductive run waits 60 s
    record = stepped.record(LOBBY)
    assert record.status is TaskStatus.STOPPED and record.next_attempt_at is not None
    left = record.next_attempt_at - stepped.clock.now()
    stepped.clock.step(-HOUR)
    store.fail_next = True
    await stepped.advance(left - 2)
    assert stepped.calls("StartSnapshot") == 2
    with capture_logs() as logs:
        await stepped.advance(3)  # its pass: the move is not written, the re-issue is on time all the same
    assert not store.fail_next and stepped.calls("StartSnapshot") == 3
    [stepped_log] = [e for e in logs if e["event"].startswith("wall clock stepped")]
    assert (stepped_log["waits_moved"], stepped_log["retry"]) == (0, "at the next pass")
    assert b"capctl_wall_clock_steps_total 1.0" in daemon.metrics.render()


def step_in_looks(harness: Harness, steps: list[float]) -> list[float]:
    """The wall clock steps by each of `steps` (popped, last first) while a GetSnapshotTask awaits its answer."""
    sim = harness.sim_app

    async def stepping(scope: Any, receive: Any, send: Any) -> None:
        if steps and b"GetSnapshotTask" in scope.get("query_string", b""):
            harness.clock.step(steps.pop())  # while the look awaits its answer
        await sim(scope, receive, send)

    harness.sim_app = stepping
    return steps


async def test_a_step_that_lands_during_a_look_moves_the_next_look_once(stepped: Harness) -> None:
    """The step came while a look awaited the vendor: the look's next one, set after the call on the clock as
    it was then (stepped already), was moved by the step again at the next pass, and a run that stopped after
    a step forward was seen that much later (walk 14A-6)."""
    write_specs(stepped.specs, snapshot_job("audit", ["lobby"], idle=20))
    stepped.sim.config.volcengine_callback_url = None  # polling only: its looks are the ones it planned
    stepped.sim.publish("volcengine", "lobby", user_id="alice")  # the run goes on past its idle deadline
    steps = step_in_looks(stepped, [600.0])
    await stepped.start()
    await stepped.advance(30)  # looked at its idle deadline (25 s): running; the step landed in that look
    assert not steps and stepped.calls("StartSnapshot") == 1
    stepped.sim.stop_task("volcengine", stepped.record(LOBBY).vendor_task_id or "", room_id="lobby")
    await stepped.advance(120)  # within a sweep period of its last look it is seen stopped and re-issued
    assert stepped.calls("StartSnapshot") == 2


@pytest.mark.parametrize(("step", "during_look"), [(-30.0, False), (HOUR, True)])
async def test_a_step_keeps_status_unknown_since_at_the_first_failed_look(
    stepped: Harness, step: float, during_look: bool
) -> None:
    """Walk 39b-1: the term's start was not moved with a step, while its looks were: after a step back, a task this
    replica had seen running in its term looked unseen in it, and its first failed look said `status unknown since`
    the state's last good look, written by the replica before the restart (minutes before the vendor failed). A
    step landing during that look must not do the same by moving the term's start past the look before."""
    write_specs(stepped.specs, snapshot_job("audit", ["lobby"]))
    stepped.sim.publish("volcengine", "lobby", user_id="alice")
    steps = step_in_looks(stepped, [])
    await stepped.start()
    await stepped.advance(200)  # the record's last good look stays its start (written at least every 300 s)
    await stepped.stop()
    await stepped.start()  # a new term: its first look sees the run running
    await stepped.advance(1)
    if not during_look:
        stepped.clock.step(step)
        await stepped.advance(1)  # a pass catches up with the step
    stepped.sim.faults.set(FaultConfig(error_rate=1.0, apis=["GetSnapshotTask"]))
    down_from = stepped.clock.now()
    steps += [step] if during_look else []
    await stepped.advance(600)
    assert not steps
    async with await client(stepped) as http:
        down = (await http.get("/api/v1/status")).json()
    assert down["unknown"] == 1
    since = datetime.fromisoformat(task_of(down, LOBBY)["status_unknown_since"]).timestamp()
    assert since >= down_from, since - down_from
