"""The daemon's state lease: taken at start, renewed, and taken again when lost (issue 14).

While the daemon does not hold it, it does not act: `lost` says why (workers drop their keys, /readyz
answers 503, `capctl_lease_held` is 0). SQLite's OS lock needs no renewal; PostgreSQL's lease row does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import structlog

from reconciler.clock import Clock
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.records import RecordCache
from reconciler.state.base import Lock, LockHeld, StateError

__all__ = ["LEASE_RETRY_FIRST", "Lease"]

log = structlog.get_logger("capctl.daemon")

LEASE_RETRY_FIRST = 0.5  # seconds before retrying a failed lease renewal; doubles up to a sixth of the lease


class Lease:
    def __init__(
        self,
        records: RecordCache,
        holder: str,
        seconds: float,
        clock: Clock,
        metrics: Metrics,
        *,
        regained: Callable[[], None],
    ) -> None:
        self.records = records
        self.holder = holder
        self.seconds = seconds
        self.clock = clock
        self.metrics = metrics
        self._regained = regained  # called once the lease is back and the state read again
        self.lock: Lock | None = None
        self.lost: str | None = None  # why the daemon does not act, or None

    def acting(self) -> bool:
        return self.lost is None

    def take(self) -> None:
        """Lock the state at start (raises LockHeld naming the holder) and read it."""
        self.lock = self.records.lock(self.holder, lease_seconds=self.seconds)
        self.metrics.lease_held.set(1)
        try:
            self.records.refresh()
        except BaseException:
            self.lock.release()
            self.lock = None
            raise

    def release(self) -> None:
        if self.lock is not None:
            try:
                self.lock.release()
            except StateError as exc:  # the store is down: the lease lapses by itself
                log.warning("could not release the state lock", error=str(exc))
            self.lock = None

    async def keep(self) -> None:
        """Keep a PostgreSQL lease alive (a no-op for SQLite's OS lock), and take it again when lost.

        A renewal that fails while the lease is still valid (the database restarting, a dropped
        connection) is retried with backoff within the lease's remaining time; only another holder, or
        the lease running out, means it is lost. Then the daemon stops acting (workers drop their keys,
        /readyz answers 503, capctl_lease_held is 0) and tries to take the lease again every retry
        period; once it holds it, it re-reads the state (another holder may have changed it) and
        reconciles every key, as at start."""
        period = self.seconds / 3
        valid_until = self.clock.monotonic() + self.seconds
        wait, retry = period, LEASE_RETRY_FIRST
        while True:
            await self.clock.sleep(wait)
            if self.lock is None:
                if self._retake():
                    valid_until = self.clock.monotonic() + self.seconds
                    wait, retry = period, LEASE_RETRY_FIRST
                else:
                    wait, retry = retry, min(retry * 2, period)
                continue
            began = self.clock.monotonic()
            try:
                self.lock.renew()
            except LockHeld as exc:
                self._lose(f"another holder took the state lock: {exc.holder}")
                wait, retry = LEASE_RETRY_FIRST, LEASE_RETRY_FIRST
                continue
            except StateError as exc:
                left = valid_until - self.clock.monotonic()
                if left <= 0:
                    self._lose(f"the state lock lapsed: it could not be renewed ({exc})")
                    wait, retry = LEASE_RETRY_FIRST, LEASE_RETRY_FIRST
                    continue
                log.warning("state lock renewal failed; retrying", error=str(exc), lease_left=round(left, 1))
                wait, retry = min(retry, left), min(retry * 2, period)
                continue
            valid_until = began + self.seconds
            wait, retry = period, LEASE_RETRY_FIRST

    def _lose_lease(self, why: str) -> None:
        log.error("lost the state lock; not acting until it is taken again", reason=why)
        self.lease_lost = f"{why}; trying to take it again"
        self.metrics.lease_held.set(0)
        self.lock = None  # the old lease row lapses by itself (or is already another holder's)

    def _lose(self, why: str) -> None:
        log.error("lost the state lock; not acting until it is taken again", reason=why)
        self.lost = f"{why}; trying to take it again"
        self.metrics.lease_held.set(0)
        self.lock = None  # the old lease row lapses by itself (or is already another holder's)

    def _retake(self) -> bool:
        try:
            lock = self.records.lock(self.holder, lease_seconds=self.seconds)
        except StateError as exc:
            log.info("state lock still unavailable", error=str(exc))
            return False
        try:
            self.records.refresh()  # whoever held it meanwhile may have changed the state
        except StateError as exc:
            with contextlib.suppress(StateError):
                lock.release()
            log.warning("took the state lock but cannot read the state; retrying", error=str(exc))
            return False
        self.lock, self.lost = lock, None
        self.metrics.lease_held.set(1)
        self._regained()
        return True
