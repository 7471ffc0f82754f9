"""The only way the program reads time, so tests can drive it exactly.

`now()` is wall time in unix seconds (stored in state, shown to users); `monotonic()` measures intervals
and paces rate budgets; `StepWatch` notices the wall clock stepping (NTP) so the daemon's waits keep their
length. `FakeClock` advances only when told to, and wakes sleepers whose time has come; its `step()` moves
wall time alone, as NTP steps a host's clock.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "LOG_INTERVAL",
    "STEP_TOLERANCE",
    "Clock",
    "FakeClock",
    "StepWatch",
    "SystemClock",
    "Throttle",
    "Throttles",
    "is_time",
]

_EARLIEST, _LATEST = -62_135_596_800.0, 253_402_300_799.0  # 0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z


def is_time(value: float) -> bool:
    """Unix seconds a clock could give: years 1..9999 (NaN, infinities and 1e308 are not). What the state and a
    saved plan accept as a time, so every time shown formats (`time.gmtime`, RFC 3339) and compares."""
    return _EARLIEST <= value <= _LATEST  # NaN fails both


LOG_INTERVAL = 60.0  # seconds between two log lines about the same problem (a resource, a flood of bad requests)
# Seconds the wall clock may move against the monotonic one between two checks before it counts as stepped:
# NTP slews at most 0.5 ms/s, so only a step (NTP's, a VM restored, a clock set by hand) gets this far.
STEP_TOLERANCE = 1.0


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        import asyncio  # here, not at the top: `capctl plan --no-refresh` never loads asyncio

        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only through `advance()` / `set()`; `sleep()` waits for simulated time.

    Sleepers are keyed by the exact wall time `next_wakeup()` reports, so `set(clock.next_wakeup())`
    always wakes the earliest sleeper, however large the timestamps (no float rounding can strand it).
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0  # kept apart from `_now`: small steps must not vanish in a large float
        self._sleepers: list[tuple[float, int, float, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        import asyncio

        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), self._mono + seconds, fut))
        await fut

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._mono += seconds  # exact, whatever the size of the wall timestamp
        self._now += seconds
        self._wake()

    def set(self, when: float) -> None:
        """Move wall time forward to `when` (never back) and wake every sleeper due by then."""
        if when > self._now:
            self._mono += when - self._now
            self._now = when
        self._wake()

    def step(self, seconds: float) -> None:
        """Step wall time alone by `seconds`, either way, as NTP or a restored VM does; the monotonic clock and
        every sleeper stay where they were (a sleep is a duration: it ends at the same monotonic time)."""
        self._now += seconds
        self._sleepers = [(due + seconds, seq, mono, fut) for due, seq, mono, fut in self._sleepers]
        heapq.heapify(self._sleepers)

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, mono_due, fut = heapq.heappop(self._sleepers)
            # a sleeper wakes having slept its full time on the monotonic scale, rounding notwithstanding
            self._mono = max(self._mono, mono_due)
            if not fut.done():
                fut.set_result(None)

    def next_wakeup(self) -> float | None:
        """Wall time at which the earliest sleeper wakes, or None."""
        return self._sleepers[0][0] if self._sleepers else None


class StepWatch:
    """Notices the wall clock stepping against the monotonic one (NTP, a VM restored from a snapshot)."""

    def __init__(self, clock: Clock, tolerance: float = STEP_TOLERANCE) -> None:
        self._clock = clock
        self._tolerance = tolerance
        # None until a reading is had: a thread held up at the first (a loaded host) must not take 0.0 for the
        # offset, or the next check reported the whole of wall minus monotonic time (~1.8e9 s) as a step.
        self._offset = self._read()

    def _read(self) -> float | None:
        """Wall minus monotonic time, or None when this thread was held up between the readings (a pause
        there is not a step)."""
        before = self._clock.monotonic()
        wall = self._clock.now()
        after = self._clock.monotonic()
        return None if after - before > self._tolerance / 2 else wall - (before + after) / 2

    def check(self) -> float:
        """Seconds the wall clock stepped since the last check (negative: back), or 0.0 within the tolerance.
        Each check takes the offset up, so a slow slew never adds up to a step."""
        offset = self._read()
        if offset is None:
            return 0.0
        step, self._offset = offset - (offset if self._offset is None else self._offset), offset
        return step if abs(step) > self._tolerance else 0.0

    def reset(self) -> None:
        """Forget any step so far (times read from elsewhere are on the clock as it is now)."""
        if (offset := self._read()) is not None:  # an offset of 0.0 is one too
            self._offset = offset


class Throttle:
    """Lets one event through per `interval` seconds and counts those it held back meanwhile."""

    def __init__(self, clock: Clock, interval: float = LOG_INTERVAL) -> None:
        self._clock = clock
        self._interval = interval
        self._next = float("-inf")
        self._held = 0

    def allow(self) -> int | None:
        """None: hold this one back. Else let it through: the number held back since the last one."""
        now = self._clock.monotonic()
        if now < self._next:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next = now + self._interval
        return held


class Throttles:
    """One `Throttle` per kind of event; the caller keeps the kinds few (a Provider and a cause, not a task)."""

    def __init__(self, clock: Clock, interval: float = LOG_INTERVAL) -> None:
        self._clock = clock
        self._interval = interval
        self._by_kind: dict[Hashable, Throttle] = {}

    def allow(self, kind: Hashable | None) -> dict[str, int] | None:
        """None: hold this one back. Else the fields to log it with: `repeats_held_back` when some were. A
        `kind` of None is never held back."""
        if kind is None:
            return {}
        held = self._by_kind.setdefault(kind, Throttle(self._clock, self._interval)).allow()
        return None if held is None else ({"repeats_held_back": held} if held else {})
