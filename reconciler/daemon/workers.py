"""The worker loop: take a key from the queue, reconcile it, requeue it (controller-runtime's
processNextWorkItem). A failed reconcile is retried with the queue's per-key backoff and counted by
reason; a successful one forgets that backoff and is queued again when the reconciler says. While the
daemon does not hold the state lease, keys are dropped: every key is queued again once it is back.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import structlog

from reconciler.clock import Clock
from reconciler.daemon.metrics import LAST_VENDOR_FAILURE, Metrics, VendorFailure, error_reason
from reconciler.daemon.queue import ShutDown, WorkQueue
from reconciler.daemon.reconciler import ReconcileFailed, Reconciler
from reconciler.daemon.storehealth import StoreHealth
from reconciler.providers.base import VendorError
from reconciler.state.base import StateError

__all__ = ["Workers"]

log = structlog.get_logger("capctl.daemon")


class Workers:
    def __init__(
        self,
        queue: WorkQueue,
        reconciler: Reconciler,
        metrics: Metrics,
        clock: Clock,
        store_health: StoreHealth,
        acting: Callable[[], bool],
    ) -> None:
        self.queue = queue
        self.reconciler = reconciler
        self.metrics = metrics
        self.clock = clock
        self.store_health = store_health
        self._acting = acting  # False while the lease is lost
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.run(), name=f"capctl-worker-{i}") for i in range(count)]

    async def stop(self, grace: float) -> None:
        """After the queue shut down: let in-flight reconciles finish for `grace` seconds, then cancel them."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("shutdown grace period over: in-flight work cancelled", tasks=len(pending), grace=grace)
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def run(self) -> None:
        """One worker: until the queue shuts down."""
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: str) -> None:
        if not self._acting():
            return  # not acting; every key is queued again once the lease is back
        started = self.clock.monotonic()
        failure = VendorFailure()
        LAST_VENDOR_FAILURE.set(failure)
        # The log lines of this pass carry its key and id. Bound and reset by token: `bound_contextvars` reads the
        # whole context first (every context variable of httpx, anyio, ...), a few % of a busy daemon's CPU.
        tokens = structlog.contextvars.bind_contextvars(key=key, reconcile_id=next(self._ids))
        try:
            result = await self.reconciler.reconcile(key)
        except (ReconcileFailed, VendorError, StateError) as exc:
            reason = error_reason(exc, failure, state_write=self.store_health.last_failed_write)
            self.metrics.reconcile_errors.labels(reason=reason).inc()
            delay = self.queue.add_rate_limited(key)
            if not self._acting():
                # It stopped leading meanwhile (lost, superseded, a newer capctl's schema): `process` retries
                # nothing, and "retrying with backoff" promised a retry that never came (walk 60b).
                log.warning(
                    "reconcile failed; not retried here: this replica does not lead now",
                    error="; ".join([str(exc), *getattr(exc, "__notes__", ())]),
                    retry="by the leader, which reconciles every task when it takes over",
                )
                return
            log.warning(
                "reconcile failed; retrying with backoff",
                # A note: the executor's word on what the vendor did all the same (a start that runs, walk 56c).
                error="; ".join([str(exc), *getattr(exc, "__notes__", ())]),
                retry_in=delay,
                failures=self.queue.failures(key),
            )
            return
        finally:
            self.metrics.reconcile_seconds.observe(self.clock.monotonic() - started)
            structlog.contextvars.reset_contextvars(**tokens)
        if not result.keep_backoff:
            self.queue.forget(key)
        self.queue.add_all(result.wake)
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)
