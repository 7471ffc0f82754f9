"""The daemon's work queue: task keys, de-duplicated, one worker per key, delayed adds, per-key backoff.

The shape is controller-runtime's workqueue: a request is only a key. A key added while it is queued is
not queued twice; a key added while a worker holds it is marked dirty and queued again when that worker
is done, so no event is lost and no key is worked on by two workers at once. Delayed adds (RequeueAfter,
backoff expiry, due times) sit in a heap on the injected clock; the earliest delay for a key wins.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Iterable

from reconciler.clock import Clock

__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "ShutDown", "WorkQueue"]

BACKOFF_BASE = 5.0  # seconds before the first retry of a key whose reconcile failed
BACKOFF_CAP = 300.0  # the longest wait between retries of a failing key


class ShutDown(Exception):
    """`get()` was called (or was waiting) after `shut_down()`."""


class WorkQueue:
    def __init__(self, clock: Clock, *, backoff_base: float = BACKOFF_BASE, backoff_cap: float = BACKOFF_CAP) -> None:
        self._clock = clock
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()  # in _ready
        self._processing: set[str] = set()
        self._dirty: set[str] = set()  # added while processing: re-queued by done()
        self._delayed: list[tuple[float, int, str]] = []  # (due monotonic, seq, key)
        self._due: dict[str, float] = {}  # the earliest live due time of each delayed key
        self._failures: dict[str, int] = {}
        self._backoff_until: dict[str, float] = {}  # monotonic: before it, a failed key's change is not retried
        self._seq = itertools.count()
        self._getters: deque[asyncio.Future[None]] = deque()  # workers waiting in get(), woken one per key
        self._timer: asyncio.Task[None] | None = None  # one sleeper on the clock for the earliest delayed key
        self._timer_due: float | None = None
        self._shutting_down = False

    # --- adding -----------------------------------------------------------------------------------------

    def add(self, key: str) -> None:
        if self._shutting_down:
            return
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.append(key)
            self._wake_one()

    def add_all(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.add(key)

    def add_all_after(self, delays: Iterable[tuple[str, float]]) -> None:
        """`add_after` for each (key, delay): the reconciler's answers to a callback or a wake-up."""
        for key, delay in delays:
            self.add_after(key, delay)

    def add_after(self, key: str, delay: float) -> None:
        """Queue `key` after `delay` seconds; an earlier pending due time for the key is kept. A queue shut down
        takes none, as `add`: a worker finishing its in-flight call after `shut_down()` armed a timer no one
        cancelled, a task left pending when the loop closed (walk 59d-1)."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        due = self._clock.monotonic() + delay
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        self._due[key] = due
        heapq.heappush(self._delayed, (due, next(self._seq), key))
        if self._timer_due is None or due < self._timer_due:
            self._arm_timer(due)

    def add_rate_limited(self, key: str) -> float:
        """Queue `key` after its next backoff step (5 s, 10 s, … up to 5 min); returns the delay."""
        delay = self.next_backoff(key)
        self._failures[key] = self._failures.get(key, 0) + 1
        self._backoff_until[key] = self._clock.monotonic() + delay
        self.add_after(key, delay)
        return delay

    def next_backoff(self, key: str) -> float:
        """The delay `add_rate_limited` will give `key` (a failed start records it as its next attempt)."""
        return min(self._backoff_cap, self._backoff_base * 2.0 ** self._failures.get(key, 0))

    def forget(self, key: str) -> None:
        """The key succeeded: its backoff starts from the beginning next time."""
        self._failures.pop(key, None)
        self._backoff_until.pop(key, None)

    def retry_now(self, keys: Iterable[str]) -> None:
        """`capctl sync`: the next pass of `keys` may act, backoff step or not (their failure counts stay)."""
        for key in keys:
            self._backoff_until.pop(key, None)

    def backing_off(self, key: str) -> bool:
        """`key`'s last change failed and its backoff step is still ahead: a pass before it (its next look, a
        callback) only looks (walk 43B-2)."""
        return self._clock.monotonic() < self._backoff_until.get(key, float("-inf"))

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def retry_in(self, key: str) -> float | None:
        """Seconds until a key backing off after a failed reconcile is due; None when it is not backing off."""
        due = self._due.get(key) if key in self._failures else None
        return None if due is None else max(0.0, due - self._clock.monotonic())

    def retrying(self, key: str) -> bool:
        """A worker holds `key`, or its last reconcile failed and it waits for its backoff step. The resync
        leaves such keys alone: added now, a held key would run again the moment its worker is done, and a
        failing one at every resync, whatever its backoff (a failing vendor was retried back to back)."""
        return key in self._processing or key in self._failures

    # --- taking -----------------------------------------------------------------------------------------

    def _promote_due(self) -> None:
        now = self._clock.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._due.get(key) == due:
                del self._due[key]
                self.add(key)

    def next_due_in(self) -> float | None:
        """Seconds until the earliest delayed key is due (None when nothing is delayed)."""
        while self._delayed and self._due.get(self._delayed[0][2]) != self._delayed[0][0]:
            heapq.heappop(self._delayed)  # superseded by an earlier due time
        if not self._delayed:
            return None
        return max(0.0, self._delayed[0][0] - self._clock.monotonic())

    async def get(self) -> str:
        """The next ready key, now owned by the caller until `done(key)`."""
        while True:
            if self._shutting_down:
                raise ShutDown
            self._promote_due()
            if self._ready:
                key = self._ready.popleft()
                self._queued.discard(key)
                self._processing.add(key)
                return key
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass the wake-up on: this worker will not take the key
                raise

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _arm_timer(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = asyncio.get_running_loop().create_task(self._fire_at(due))

    async def _fire_at(self, due: float) -> None:
        await self._clock.sleep(due - self._clock.monotonic())
        self._timer, self._timer_due = None, None
        self._promote_due()
        wait = self.next_due_in()
        if wait is not None:
            self._arm_timer(self._clock.monotonic() + wait)

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def shut_down(self) -> None:
        """Stop handing out keys; workers waiting in `get()` raise `ShutDown`."""
        self._shutting_down = True
        if self._timer is not None:
            self._timer.cancel()
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # --- introspection ----------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Keys ready to be worked on now (the `capctl_queue_depth` gauge)."""
        return len(self._ready)

    @property
    def delayed(self) -> int:
        return len(self._due)
