"""FakeClock: sleepers wake exactly when the clock reaches them, even at large timestamps."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.clock import FakeClock


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
