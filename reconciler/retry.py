"""Retrying vendor calls: jittered exponential backoff with a cap, throttling never fatal too soon.

Retryable errors (5xx, timeouts, dropped connections) get `max_attempts`; throttling answers get a
larger allowance, because the rate budget has already slowed down and the call will go through.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from reconciler.clock import Clock
from reconciler.providers.base import ErrorKind, VendorError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 0.5
    cap: float = 15.0
    max_attempts: int = 6
    max_throttled: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetryPolicy:
        """`CAPCTL_MAX_ATTEMPTS` (like AWS_MAX_ATTEMPTS): tries per call for 5xx, timeouts, dropped connections."""
        raw = env.get("CAPCTL_MAX_ATTEMPTS")
        if raw is None:
            return cls()
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise ValueError(f"CAPCTL_MAX_ATTEMPTS={raw!r}: expected a whole number from 1 to 100")
        return cls(max_attempts=int(raw))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full-range jitter in [50 %, 100 %] of the capped exponential step."""
        step = min(self.cap, self.base * 2.0 ** (attempt - 1))
        return step * (0.5 + rng.random() / 2)


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    clock: Clock,
    policy: RetryPolicy,
    rng: random.Random,
    on_retry: Callable[[VendorError, int, float], None] | None = None,
) -> T:
    failures = throttles = 0
    while True:
        try:
            return await call()
        except VendorError as exc:
            if exc.kind is ErrorKind.THROTTLED:
                throttles += 1
                if throttles > policy.max_throttled:
                    raise
                attempt = throttles
            elif exc.kind is ErrorKind.RETRYABLE:
                failures += 1
                if failures >= policy.max_attempts:
                    raise
                attempt = failures
            else:
                raise
            delay = policy.delay(attempt, rng)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            await clock.sleep(delay)
