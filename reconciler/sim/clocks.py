"""A clock that runs at a multiple of real time, for demos (`capctl sim --speed 60`).

It reads the real time only through an inner Clock (SystemClock by default), as the house rules require,
and can change speed while running without jumping.
"""

from __future__ import annotations

from reconciler.clock import Clock, SystemClock

__all__ = ["MAX_OFFSET", "MAX_SPEED", "MIN_SPEED", "ScaledClock", "check_offset", "check_speed"]

# A simulated day in under a second at most: an infinite or absurd factor (1e300) puts the clock past what a
# timestamp can hold, and every answer after that fails.
MIN_SPEED, MAX_SPEED = 0.01, 100_000.0
MAX_OFFSET = 86_400.0  # a clock off by more than a day is no vendor's (and refuses every signed call)


def check_speed(speed: float) -> None:
    """ValueError unless `speed` is a factor a ScaledClock can run at (NaN and Infinity are not)."""
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"must be a factor from {MIN_SPEED:g} to {MAX_SPEED:g}, got {speed:g}")


def check_offset(offset: float) -> None:
    """ValueError unless `offset` is seconds a simulator's clock may start off the machine's (NaN is not)."""
    if not -MAX_OFFSET <= offset <= MAX_OFFSET:
        raise ValueError(f"must be seconds from {-MAX_OFFSET:g} to {MAX_OFFSET:g}, got {offset:g}")


class ScaledClock:
    def __init__(self, speed: float = 1.0, inner: Clock | None = None, *, offset: float = 0.0) -> None:
        """`offset`: seconds the clock starts off the inner one's (a vendor whose clock is off)."""
        self._inner = inner or SystemClock()
        self._speed = 1.0
        self._real_now = self._inner.now()
        self._real_mono = self._inner.monotonic()
        self._sim_now = self._real_now + offset
        self._sim_mono = 0.0
        self.set_speed(speed)

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        check_speed(speed)
        self._sim_now, self._sim_mono = self.now(), self.monotonic()
        self._real_now, self._real_mono = self._inner.now(), self._inner.monotonic()
        self._speed = float(speed)

    def now(self) -> float:
        return self._sim_now + (self._inner.now() - self._real_now) * self._speed

    def monotonic(self) -> float:
        return self._sim_mono + (self._inner.monotonic() - self._real_mono) * self._speed

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds / self._speed)
