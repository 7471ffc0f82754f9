"""Vendor-side rate limits: at most N accepted requests in any 1-second window, per (app, API).

A sliding window (not a token bucket) because the vendors count requests per second and design.md warns
that a burst-N bucket lets 2N through in its first second. Every throttled answer is recorded, so tests and
benchmarks can assert "zero throttling".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["SlidingWindowLimiter", "Throttle"]


@dataclass(frozen=True)
class Throttle:
    """One throttled answer; `forced` marks those caused by a throttling-burst fault."""

    time: float
    vendor: str
    app_id: str
    api: str
    forced: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "time": self.time,
            "vendor": self.vendor,
            "appId": self.app_id,
            "api": self.api,
            "forced": self.forced,
        }


class SlidingWindowLimiter:
    """Accepts a request when fewer than `limit` were accepted in the last second (sim-clock seconds, or where
    `window_at` says the window is)."""

    def __init__(self, max_records: int = 10_000) -> None:
        self._accepted: dict[tuple[str, str, str], deque[float]] = {}
        self.throttled: deque[Throttle] = deque(maxlen=max_records)
        self.throttled_total = 0

    def try_acquire(
        self, vendor: str, app_id: str, api: str, limit: int | None, now: float, *, window_at: float | None = None
    ) -> bool:
        """`now` is the simulator's time (recorded with a throttled answer); `window_at`, where the window is, when
        it moves otherwise (Simulator._window_time)."""
        if limit is None:
            return True
        at = now if window_at is None else window_at
        window = self._accepted.setdefault((vendor, app_id, api), deque())
        while window and window[0] <= at - 1.0:
            window.popleft()
        if len(window) >= limit:
            self.record(Throttle(now, vendor, app_id, api))
            return False
        window.append(at)
        return True

    def record(self, throttle: Throttle) -> None:
        self.throttled.append(throttle)
        self.throttled_total += 1

    def reset(self) -> None:
        self._accepted.clear()
        self.throttled.clear()
        self.throttled_total = 0
