"""Rate budgets: even pacing, never more than N in any second, priorities, catch-up, throttling events."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from reconciler.budget import HEADROOM, MAX_LAG, THROTTLE_FACTOR, THROTTLE_PAUSE, Priority, RateBudget
from reconciler.clock import FakeClock


async def drive(clock: FakeClock, tasks: list[asyncio.Task[None]], *, late: float = 0.0) -> None:
    """Run until every task is done, moving the clock to each sleeper (`late` seconds after it)."""
    while not all(t.done() for t in tasks):
        for _ in range(5):
            await asyncio.sleep(0)
        wakeup = clock.next_wakeup()
        if wakeup is not None and not all(t.done() for t in tasks):
            clock.set(wakeup + late)


async def grants(
    budget: RateBudget, clock: FakeClock, n: int, *, late: float = 0.0, priority: Priority = Priority.CHANGE
) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        await budget.take(priority)
        times.append(clock.monotonic())

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await drive(clock, tasks, late=late)
    return times


def most_in_any_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


async def test_paced_evenly_and_never_more_than_the_limit_in_any_second() -> None:
    clock = FakeClock()
    budget = RateBudget("volc/StartSnapshot", 150, clock)
    times = await grants(budget, clock, 400)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(1 / (150 * HEADROOM))
    assert most_in_any_second(times) <= 150


async def test_timer_lateness_is_caught_up_without_bursting() -> None:
    clock = FakeClock()
    budget = RateBudget("volc/StartSnapshot", 150, clock)
    times = await grants(budget, clock, 300, late=0.002)  # every wake-up 2 ms late (< MAX_LAG)
    interval = 1 / (150 * HEADROOM)
    assert times[-1] - times[0] == pytest.approx(299 * interval, abs=MAX_LAG + 1e-6)  # nothing lost
    assert most_in_any_second(times) <= 150


async def test_higher_priority_waiters_go_first() -> None:
    clock = FakeClock()
    budget = RateBudget("zego/DescribeRecordStatus", 10, clock)
    order: list[str] = []

    async def one(name: str, priority: Priority) -> None:
        await budget.take(priority)
        order.append(name)

    tasks = [asyncio.create_task(one(f"poll{i}", Priority.POLL)) for i in range(3)]
    tasks.append(asyncio.create_task(one("reissue", Priority.REISSUE)))
    tasks.append(asyncio.create_task(one("create", Priority.CHANGE)))
    await drive(clock, tasks)
    assert order == ["create", "reissue", "poll0", "poll1", "poll2"]  # by priority, then first come


async def test_throttling_answers_within_one_window_are_one_event() -> None:
    clock = FakeClock()
    budget = RateBudget("volc/StartSnapshot", 150, clock)
    base = budget.effective_rate
    for _ in range(5):  # five requests of the same congested second come back throttled
        budget.throttled()
    assert budget.effective_rate == pytest.approx(base * THROTTLE_FACTOR)
    assert budget.stats.throttled == 5
    clock.advance(1.5)
    budget.throttled()  # a new window: a new event
    assert budget.effective_rate == pytest.approx(base * THROTTLE_FACTOR**2)


async def test_throttling_pauses_briefly_then_recovers() -> None:
    clock = FakeClock()
    budget = RateBudget("volc/StartSnapshot", 150, clock)
    budget.throttled()
    start = clock.monotonic()
    times = await grants(budget, clock, 40)
    assert times[0] - start == pytest.approx(THROTTLE_PAUSE)
    assert budget.effective_rate == pytest.approx(150 * HEADROOM)  # recovered after a few dozen grants


async def test_a_waiter_cancelled_in_the_queue_gives_its_slot_to_the_next_and_counts_no_grant() -> None:
    """A reconcile cancelled while it waits for a slot (shutdown grace over, a key re-queued): its slot is not
    spent on it, the next waiter gets it, one interval after the previous grant, as if it had never queued."""
    clock = FakeClock()
    budget = RateBudget("zego/StartRecord", 10, clock)
    granted: list[tuple[str, float]] = []

    async def one(name: str) -> None:
        await budget.take()
        granted.append((name, clock.monotonic()))

    first, cancelled, last = (asyncio.create_task(one(n)) for n in ("first", "cancelled", "last"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert [name for name, _ in granted] == ["first"] and budget.waiting == 2
    cancelled.cancel()
    await drive(clock, [first, last])
    assert cancelled.cancelled() and budget.waiting == 0
    interval = 1 / (10 * HEADROOM)
    assert granted == [("first", 0.0), ("last", pytest.approx(interval))]
    assert budget.stats.granted == 2
