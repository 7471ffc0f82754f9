"""FakeClock: sleepers wake exactly when the clock reaches them, even at large timestamps."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.clock import FakeClock, StepWatch


async def test_tiny_sleeps_at_large_timestamps_wake_on_set_next_wakeup() -> None:
    clock = FakeClock(start=1_800_000_000.123)
    woke = []

    async def sleeper(i: int) -> None:
        await clock.sleep(1e-7 * (i + 1))
        woke.append(i)

    tasks = [asyncio.create_task(sleeper(i)) for i in range(3)]
    await asyncio.sleep(0)
    steps = 0
    while (wakeup := clock.next_wakeup()) is not None:
        clock.set(wakeup)
        await asyncio.sleep(0)
        steps += 1
        assert steps <= 3, "set(next_wakeup()) must always wake at least one sleeper"
    await asyncio.gather(*tasks)
    assert woke == [0, 1, 2] and clock.next_wakeup() is None


async def test_monotonic_keeps_small_steps() -> None:
    clock = FakeClock(start=1_800_000_000.0)
    clock.advance(1e-6)
    assert clock.monotonic() == pytest.approx(1e-6, abs=1e-12)
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_a_step_watch_sees_steps_either_way_but_not_a_slew() -> None:
    clock = FakeClock(start=1_800_000_000.0)
    watch = StepWatch(clock)
    clock.step(-3600)
    assert watch.check() == -3600 and watch.check() == 0.0  # each step is reported once
    clock.advance(10)
    clock.step(0.9)  # within the tolerance: an NTP slew or a sleeper's rounding, not a step
    assert watch.check() == 0.0
    clock.step(0.9)  # ... and slews do not add up across checks
    assert watch.check() == 0.0
    clock.step(86400)
    watch.reset()  # times read from elsewhere since are on the clock as it is now
    assert watch.check() == 0.0
    clock.step(30)
    assert watch.check() == 30


async def test_a_wall_clock_step_leaves_sleepers_on_the_monotonic_clock() -> None:
    clock = FakeClock(start=1_800_000_000.0)
    woke = asyncio.Event()

    async def sleeper() -> None:
        await clock.sleep(60)
        woke.set()

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    clock.step(-3600)
    clock.advance(59)
    await asyncio.sleep(0)
    assert not woke.is_set()
    clock.advance(1)
    await task
    assert clock.monotonic() == 60 and clock.now() == 1_800_000_000.0 - 3600 + 60


class _Paused(FakeClock):
    """A thread held up for `pause` seconds between the watch's readings of the two clocks."""

    pause = 0.0

    def now(self) -> float:
        self.advance(self.pause)
        return super().now()


def test_a_pause_between_the_two_readings_is_not_a_step() -> None:
    clock = _Paused(start=1_800_000_000.0)
    watch = StepWatch(clock)
    clock.pause = 5.0
    assert watch.check() == 0.0
    clock.pause = 0.0
    assert watch.check() == 0.0


def test_a_watch_held_up_at_its_first_reading_reports_no_step() -> None:
    """Made while its thread was held up, the watch took 0.0 for the offset: its first check reported the
    whole of wall minus monotonic time (~1.8e9 s) as a step, and the daemon moved every wait by as much
    (walk 14A-1). An offset of exactly 0.0 read by `reset` was likewise taken for none."""
    clock = _Paused(start=1_800_000_000.0)
    clock.pause = 5.0
    watch = StepWatch(clock)
    clock.pause = 0.0
    assert watch.check() == 0.0
    clock.step(-3600)
    assert watch.check() == -3600

    at_zero = FakeClock(start=3600.0)
    watch = StepWatch(at_zero)
    at_zero.step(-3600)  # wall minus monotonic is 0.0 now
    watch.reset()
    assert watch.check() == 0.0
