"""Retrying vendor calls: jittered exponential backoff with a cap, throttling never fatal too soon.

Retryable errors (5xx, timeouts, dropped connections) get `max_attempts`; throttling answers get a
larger allowance, because the rate budget has already slowed down and the call will go through. The error
a call finally fails with says how many tries it took, and `may_have_acted` when any try did: a try whose answer
was lost may have acted (a recording started, an interval changed), whatever a later answer says.
`RetryReport` tells a person on a terminal that calls are being retried, instead of a silent wait of a dozen
seconds against a dead endpoint.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from reconciler.clock import Clock
from reconciler.jsonlimits import MAX_INT_DIGITS
from reconciler.providers.base import ErrorKind, VendorError
from reconciler.spec.errors import quote

__all__ = ["RetryHook", "RetryPolicy", "RetryReport", "call_with_retry"]

T = TypeVar("T")
RetryHook = Callable[[VendorError, int, float], None]  # (the failure, failures so far, seconds until the next try)
REPORT_EVERY = 5.0  # seconds between two progress lines about one provider


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
        # Not 5,000 digits either: int() refused them in Python's words, quoted whole.
        if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_INT_DIGITS) or not 1 <= int(raw) <= 100:
            raise ValueError(f"CAPCTL_MAX_ATTEMPTS={quote(raw)}: expected a whole number from 1 to 100")
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
    on_retry: RetryHook | None = None,
) -> T:
    failures = throttles = 0
    lost = False  # a try got no answer: the call may have acted, whatever a later answer says
    while True:
        try:
            return await call()
        except VendorError as exc:
            final = exc.after_a_lost_answer() if lost and not exc.may_have_acted else exc
            lost = final.may_have_acted  # (a connect refused sent nothing: it lost no answer)
            if exc.kind is ErrorKind.THROTTLED:
                throttles += 1
                if throttles > policy.max_throttled:
                    raise final.after_tries(throttles) from None
                attempt = throttles
            elif exc.kind is ErrorKind.RETRYABLE:
                failures += 1
                if failures >= policy.max_attempts:
                    raise (final.after_tries(failures) if failures > 1 else final) from None
                attempt = failures
            else:
                raise final from None
            delay = policy.delay(attempt, rng)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            await clock.sleep(delay)


class RetryReport:
    """Progress lines while vendor calls are retried: one per provider as soon as its calls start failing,
    then at most one per provider every `every` seconds, counting the retries in between (2,000 tasks
    against a dead endpoint print a handful of lines, not 2,000). Lines carry the provider's name, the
    API and the error's message, which never holds a secret."""

    def __init__(
        self, write: Callable[[str], None], clock: Clock, policy: RetryPolicy, *, every: float = REPORT_EVERY
    ) -> None:
        self._write = write
        self._clock = clock
        self._policy = policy
        self._every = every
        self._last: dict[str, float] = {}  # provider -> when its last line was written
        self._quiet: dict[str, int] = {}  # provider -> retries since its last line

    def __call__(self, exc: VendorError, attempt: int, delay: float) -> None:
        who = exc.provider or "vendor"
        now = self._clock.monotonic()
        last = self._last.get(who)
        if last is not None and now - last < self._every:
            self._quiet[who] = self._quiet.get(who, 0) + 1
            return
        self._last[who] = now
        quiet = self._quiet.pop(who, 0)
        limit = self._policy.max_throttled + 1 if exc.kind is ErrorKind.THROTTLED else self._policy.max_attempts
        others = f"; {quiet} other {'retry' if quiet == 1 else 'retries'} since the last line" if quiet else ""
        api = f"{exc.api}: " if exc.api else ""
        code = f"{exc.code}: " if exc.code else ""
        self._write(
            f"{who}: {api}{code}{exc.message}; retrying (attempt {attempt + 1}/{limit}, next in {delay:.1f} s){others}"
        )
