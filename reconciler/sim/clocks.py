"""A clock that runs at a multiple of real time, for demos (`capctl sim --speed 60`).

It reads the real time only through an inner Clock (SystemClock by default), as the house rules require,
and can change speed while running without jumping.
"""

from __future__ import annotations

from reconciler.clock import Clock, SystemClock

__all__ = ["ScaledClock"]


class ScaledClock:
    def __init__(self, speed: float = 1.0, inner: Clock | None = None) -> None:
        self._inner = inner or SystemClock()
        self._speed = 1.0
        self._real_now = self._inner.now()
        self._real_mono = self._inner.monotonic()
        self._sim_now = self._real_now
        self._sim_mono = 0.0
        self.set_speed(speed)

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._sim_now, self._sim_mono = self.now(), self.monotonic()
        self._real_now, self._real_mono = self._inner.now(), self._inner.monotonic()
        self._speed = float(speed)

    def now(self) -> float:
        return self._sim_now + (self._inner.now() - self._real_now) * self._speed

    def monotonic(self) -> float:
        return self._sim_mono + (self._inner.monotonic() - self._real_mono) * self._speed

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds / self._speed)
