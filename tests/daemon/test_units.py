"""The daemon's pure parts on their own: the work queue and the re-issue / polling policy."""

from __future__ import annotations

import asyncio

import pytest

from reconciler import transitions
from reconciler.clock import FakeClock
from reconciler.daemon import policy
from reconciler.daemon.queue import ShutDown, WorkQueue
from reconciler.daemon.router import Deduper
from reconciler.model import ApiFamily, JobKind, TaskRecord, TaskStatus


async def test_queue_deduplicates_and_requeues_keys_added_while_processing() -> None:
    queue = WorkQueue(FakeClock())
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert queue.depth == 2
    key = await queue.get()
    assert key == "a"
    queue.add("a")  # while a worker holds it: not handed to a second worker
    assert await queue.get() == "b"
    assert queue.depth == 0
    queue.done("a")
    assert await queue.get() == "a"  # dirty: queued again once the first worker was done


async def test_delayed_adds_keep_the_earliest_due_time_and_wake_a_waiting_worker() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add_after("k", 10)
    queue.add_after("k", 30)  # later: ignored
    waiter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    clock.advance(9.9)
    await asyncio.sleep(0)
    assert not waiter.done()
    clock.advance(0.1)
    assert await asyncio.wait_for(waiter, 10) == "k"
    queue.done("k")
    clock.advance(30)
    await asyncio.sleep(0)
    assert queue.depth == 0 and queue.delayed == 0


async def test_rate_limited_backoff_grows_and_resets() -> None:
    queue = WorkQueue(FakeClock(), backoff_base=5, backoff_cap=300)
    assert [queue.add_rate_limited("k") for _ in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    queue.forget("k")
    assert queue.add_rate_limited("k") == 5


async def test_shutdown_releases_waiting_workers() -> None:
    queue = WorkQueue(FakeClock())
    waiter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.shut_down()
    with pytest.raises(ShutDown):
        await waiter
    queue.add("late")
    assert queue.depth == 0


async def test_a_queue_shut_down_arms_no_timer_for_a_late_delayed_add() -> None:
    """A worker whose in-flight call fails after `shut_down()` backs its key off: no timer task may be left
    sleeping on the clock, pending when the loop closes (walk 59d-1: "Task was destroyed but it is pending")."""
    queue = WorkQueue(FakeClock())
    queue.add_after("early", 10)
    queue.shut_down()
    queue.add_rate_limited("late")
    queue.add_after("later", 20)
    await asyncio.sleep(0)  # the cancelled timer of "early" runs to its end
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert queue.depth == 0


def record(**changes: object) -> TaskRecord:
    base = TaskRecord(
        key="SnapshotJob/a/r",
        provider="p",
        family=ApiFamily.VOLC_SNAPSHOT,
        kind=JobKind.SNAPSHOT,
        target="r",
        spec_hash="h",
        fixed_hash="f",
        status=TaskStatus.STOPPED,
        idle_timeout=60,
        started_at=1000.0,
        stopped_at=1060.0,
    )
    return base.evolve(**changes)


def test_backoff_numbers() -> None:
    assert [policy.backoff_delay(n) for n in range(8)] == [0, 0, 60, 120, 240, 300, 300, 300]
    assert policy.backoff_delay(30) == policy.REISSUE_BACKOFF_CAP


@pytest.mark.parametrize(
    ("unproductive_before", "delay", "dormant"),
    [
        (0, 0.0, False),  # the first re-issue after a stop is immediate
        (1, 60.0, False),
        (2, 120.0, False),
        (3, 240.0, True),  # the 4th unproductive run in a row: dormant
    ],
)
def test_unproductive_runs_back_off_then_go_dormant(unproductive_before: int, delay: float, dormant: bool) -> None:
    decision = policy.reissue_decision(record(unproductive_runs=unproductive_before), 2000.0)
    assert (decision.delay, decision.dormant, decision.unproductive) == (delay, dormant, unproductive_before + 1)


def test_productive_runs_rollover_and_room_activity_go_at_once() -> None:
    long_run = record(unproductive_runs=5, stopped_at=1000.0 + 60 + 30)  # clearly longer than the idle timeout
    assert policy.reissue_decision(long_run, 2000.0).immediate
    assert policy.reissue_decision(record(unproductive_runs=5, productive=True), 2000.0).immediate
    at_max = record(unproductive_runs=5, max_duration=300, stopped_at=1299.0)
    decision = policy.reissue_decision(at_max, 2000.0)
    assert decision.immediate and decision.rollover and decision.unproductive == 0
    assert policy.reissue_decision(record(unproductive_runs=5), 2000.0, rollover_hint=True).rollover
    assert policy.reissue_decision(record(unproductive_runs=5), 2000.0, room_active=True).immediate


def test_a_scheduled_wait_is_honoured_until_it_passes() -> None:
    waiting = record(status=TaskStatus.DORMANT, unproductive_runs=4, next_attempt_at=2500.0)
    decision = policy.reissue_decision(waiting, 2000.0)
    assert decision.delay == 500.0 and decision.dormant
    assert policy.reissue_decision(waiting, 2500.0).immediate
    assert policy.postpone(record(), policy.ReissueDecision(60.0, True, False, 4), 2000.0).status is TaskStatus.DORMANT


def test_fault_retry_numbers() -> None:
    assert [policy.fault_delay(n) for n in range(9)] == [0, 0, 5, 10, 20, 40, 60, 60, 60]
    assert policy.fault_delay(500) == policy.FAULT_RETRY_CAP  # a vendor failing every run: once a minute


FAULTS = (
    "network lost (ZEGO quit_reason 6)",
    "internal error (ZEGO quit_reason 1001)",
    "room login failed (ZEGO quit_reason 2)",
    "engine failed (ZEGO quit_reason 5)",
    "start failed (Volcengine StartTaskFailed)",
    "user disconnected (Volcengine UserDisconnect)",
    "failed (Volcengine status 4)",
    "stopped out of band (Volcengine StopByAPI)",
    "ended (Volcengine UnknownStopReason)",  # no cause given, and 10 s long: not an idle-out
    "not found at the vendor",
)


@pytest.mark.parametrize("reason", FAULTS)
def test_a_vendor_fault_is_retried_within_seconds_whatever_the_room_held(reason: str) -> None:
    # The second fault in a row, 10 s into a run whose room had a user since before it began (no activity
    # reported since the run started): 5 s after the stop, not the 60 s of a second idle-out.
    faulted = record(stop_reason=reason, stopped_at=1010.0, unproductive_runs=1, fault_runs=1)
    decision = policy.reissue_decision(faulted, 1012.0)
    assert (decision.delay, decision.dormant, decision.unproductive, decision.faults) == (3.0, False, 1, 2)
    assert policy.reissue_decision(faulted.evolve(fault_runs=0), 1012.0).immediate  # the first: at once
    # Room activity does not mend the vendor: the retry waits all the same; later faults wait longer.
    assert policy.reissue_decision(faulted, 1012.0, room_active=True).delay == 3.0
    assert policy.reissue_decision(faulted.evolve(fault_runs=9), 1012.0).delay == 58.0
    assert not policy.reissue_decision(faulted.evolve(fault_runs=9, unproductive_runs=9), 1012.0).dormant
    assert transitions.run_counts(faulted) == (1, 2)  # what the re-issue writes (`transitions.started`)


@pytest.mark.parametrize(
    ("reason", "stopped_at"),
    [
        ("idle timeout (ZEGO quit_reason 3)", 1010.0),
        ("idle timeout (Volcengine IdleTimeOut)", 1060.0),
        ("ended (ZEGO status 4)", 1060.0),  # no cause given, as long as its idle timeout: polling saw an idle-out
        ("ended (ZEGO status 4)", None),  # no length either
        ("IdleTimeOut", 1010.0),  # a reason in the vendor's words (an older capctl's record): not a known fault
    ],
)
def test_idle_outs_back_off_as_before_and_end_a_series_of_faults(reason: str, stopped_at: float | None) -> None:
    idle = record(stop_reason=reason, stopped_at=stopped_at, unproductive_runs=1, fault_runs=3)
    decision = policy.reissue_decision(idle, 2000.0)
    assert (decision.delay, decision.unproductive, decision.faults) == (60.0, 2, 0)
    assert transitions.run_counts(idle) == (2, 0)


def test_a_productive_run_or_a_rollover_ends_a_series_of_faults() -> None:
    long_run = record(stop_reason=FAULTS[0], stopped_at=1000.0 + 60 + 30, unproductive_runs=3, fault_runs=7)
    assert transitions.run_counts(long_run) == (0, 0) and policy.reissue_decision(long_run, 2000.0).immediate
    hinted = record(stop_reason=FAULTS[0], stopped_at=1010.0, fault_runs=7)
    assert policy.reissue_decision(hinted, 1010.0, rollover_hint=True).immediate


def test_a_fault_in_a_room_known_empty_goes_dormant_until_its_next_activity() -> None:
    faulted = record(stop_reason=FAULTS[0], stopped_at=1010.0, fault_runs=2)
    # A user joined before the run: occupied, not empty. Emptied after that: empty.
    assert not policy.room_known_empty(faulted, feed=True, active_at=900.0, emptied_at=None)
    assert not policy.room_known_empty(faulted, feed=True, active_at=900.0, emptied_at=800.0)
    assert not policy.room_known_empty(faulted, feed=False, active_at=900.0, emptied_at=1005.0)
    assert policy.room_known_empty(faulted, feed=True, active_at=900.0, emptied_at=1005.0)
    decision = policy.reissue_decision(faulted, 1011.0, room_empty=True)
    assert decision.dormant and decision.delay == policy.EMPTY_ROOM_RECHECK
    dormant = policy.postpone(faulted, decision, 1011.0)
    assert policy.reissue_decision(dormant, 1012.0).dormant
    woken = policy.reissue_decision(dormant, 1012.0, room_active=True)  # a join: the fault's retry, no more
    assert (woken.delay, woken.dormant) == (8.0, False)
    assert policy.reissue_decision(dormant, 1030.0, room_active=True).immediate


def test_a_fault_retry_survives_as_its_scheduled_wait() -> None:
    waiting = policy.postpone(
        faulted := record(stop_reason=FAULTS[0], stopped_at=1010.0, fault_runs=3),
        policy.reissue_decision(faulted, 1010.0),
        1010.0,
    )
    assert (waiting.status, waiting.next_attempt_at) == (TaskStatus.STOPPED, 1030.0)
    assert policy.reissue_decision(waiting, 1020.0).delay == 10.0
    assert policy.reissue_decision(waiting, 1030.0).immediate


def test_sweep_period_is_a_ceiling_on_the_budget_never_a_target() -> None:
    assert policy.sweep_period(30, 3, 60) == 30  # 3 tasks: once per resync, not 60/s
    assert policy.sweep_period(30, 6000, 60) == 100  # many tasks: stretched to stay within the budget
    with pytest.raises(ValueError, match="positive"):
        policy.sweep_period(30, 1, 0)
    assert policy.expected_deadline(record(status=TaskStatus.RUNNING)) == 1000 + 60 + policy.DEADLINE_MARGIN
    assert policy.expected_deadline(record(started_at=None)) is None


def test_a_snapshot_run_is_looked_at_when_its_images_stop_within_its_share_of_the_budget() -> None:
    running = record(status=TaskStatus.RUNNING, updatable={"interval": 5})
    # An image at 2000: no next one by 2 intervals + the margin later means the run may have ended.
    assert policy.image_silence_look(running, 2000, 1990, 0.5) == 2000 + 2 * 5 + policy.DEADLINE_MARGIN
    # Many tasks on one budget (a share of 40 s each): never sooner than that after the last look.
    assert policy.image_silence_look(running, 2000, 1990, 40) == 2030
    zego = running.evolve(family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING, updatable={})
    assert policy.image_silence_look(zego, 2000, 1990, 0.5) is None  # ZEGO names the end in a callback


def test_deduper_is_bounded() -> None:
    dedupe = Deduper(size=2)
    assert dedupe.first_time("a") and dedupe.first_time("b") and not dedupe.first_time("a")
    assert dedupe.first_time("c")  # evicts b, the least recently seen
    assert dedupe.first_time("b") and not dedupe.first_time("c")


@pytest.mark.parametrize(
    ("removed", "known", "max_percent", "blocked"),
    [
        (0, 4, 50, False),  # nothing removed
        (2, 4, 50, False),  # exactly half: allowed ("more than" blocks)
        (3, 4, 50, True),
        (1, 1, 50, True),  # a set of one task: removing it is 100 %
        (1, 1, 100, False),  # 100 disables the safeguard
        (4, 4, 100, False),
        (1, 1000, 0, True),  # 0: every prune waits for a human
        (1, 3, 34, False),
        (1, 3, 33, True),
    ],
)
def test_max_prune_share(removed: int, known: int, max_percent: float, blocked: bool) -> None:
    assert policy.prune_blocked(removed, known, max_percent) is blocked
