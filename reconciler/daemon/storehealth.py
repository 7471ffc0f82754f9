"""What the daemon knows about its state store's health, for `/readyz`, metrics and error reasons.

Every store call the daemon makes goes through `WatchedStore`, which notes when calls start and end and
whether the last write failed. The probes then answer from these notes without touching the store
themselves: a probe that queried a hung database would hang with it (issue 14). A call still running
after `STUCK_AFTER` seconds, or a write that failed and was not followed by a successful one, means
the daemon cannot act, and `/readyz` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import structlog

from reconciler.clock import Clock
from reconciler.leader import NotLeader
from reconciler.model import TaskRecord
from reconciler.state.base import (
    Fenced,
    Lock,
    LockHeld,
    SerialMismatch,
    Snapshot,
    StateError,
    StateStore,
    StateTooNew,
)
from reconciler.state.sql import iso_utc

__all__ = ["NEVER_RETRIED", "STUCK_AFTER", "StoreHealth", "WatchedStore", "probe_store"]

T = TypeVar("T")

log = structlog.get_logger("capctl.daemon")

STUCK_AFTER = 3.0  # seconds a store call may run before the daemon reports the store as not answering

# What a log line says of the retry of a write refused for a schema a newer capctl raised: none comes, this replica
# gave the lead up for good (walk 60b: "at the next batch or resync" promised one).
NEVER_RETRIED = "never: a newer capctl raised the state's schema, and this replica writes no more to it"


class StoreHealth:
    """Notes on store calls. Written by the daemon's thread and read by the HTTP server's: every field is
    replaced whole (no read-modify-write across threads that matters for a probe)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._ids = itertools.count()
        self._running: dict[int, float] = {}  # call id -> monotonic start
        self.write_error: str | None = None  # the last write's error, until a write succeeds
        self.write_failures = 0  # failed writes since the last successful one
        self.failing_since: float | None = None  # wall time of the first of those failures
        self.read_error: str | None = None  # the last read's error, until a read succeeds
        self.last_failed_write = False  # whether the most recent failure was a write (error reasons)

    @contextmanager
    def call(self, *, write: bool) -> Iterator[None]:
        ident = next(self._ids)
        self._running[ident] = self._clock.monotonic()
        try:
            yield
        except (SerialMismatch, LockHeld, Fenced, NotLeader, StateTooNew):
            raise  # the store answered (or was not asked): a conflict, a term that ended or a newer schema, no outage
        except StateError as exc:
            self.last_failed_write = write
            if write:
                self.write_failures += 1
                self.write_error = str(exc)
                if self.failing_since is None:
                    self.failing_since = self._clock.now()
                    # One line for the outage (a full disk fails every key's reconcile, each logged on its own).
                    log.warning("cannot write to the state store; changes wait until it can", error=str(exc))
            else:
                self.read_error = str(exc)
            raise
        else:
            if write:
                if self.failing_since is not None:
                    log.info(
                        "the state store can be written again",
                        failed_writes=self.write_failures,
                        since=iso_utc(self.failing_since),
                    )
                self.write_error, self.write_failures, self.failing_since = None, 0, None
            self.read_error = None
        finally:
            self._running.pop(ident, None)

    def stuck_for(self) -> float | None:
        """Seconds the oldest running store call has waited, when that is STUCK_AFTER or more."""
        started = list(self._running.values())  # a copy in one step: the daemon's thread may be changing it
        waited = self._clock.monotonic() - min(started) if started else 0.0
        return waited if waited >= STUCK_AFTER else None

    def problem(self, *, acting: bool = True) -> str | None:
        """Why the daemon cannot use its store now, or None. A replica not `acting` writes no changes (a
        standby, or a leader that lost its term with writes failing): a write of its last term that failed is
        no reason it cannot take callbacks now, which a store that answers reads says."""
        if (waited := self.stuck_for()) is not None:
            return f"the state store has not answered for {waited:.0f} s"
        if self.write_error is not None and acting:
            since = iso_utc(self.failing_since or self._clock.now())
            return (
                f"cannot write to the state store: {self.write_failures} failed write(s) since {since},"
                f" last: {self.write_error}"
            )
        if self.read_error is not None:
            return f"the state store does not answer: {self.read_error}"
        return None


class WatchedStore:
    """A `StateStore` that reports each call to a `StoreHealth` and otherwise delegates."""

    def __init__(self, inner: StateStore, health: StoreHealth) -> None:
        self.inner = inner
        self.health = health
        self.url = inner.url

    def _read(self, call: Callable[[], T]) -> T:
        with self.health.call(write=False):
            return call()

    def _write(self, call: Callable[[], T]) -> T:
        with self.health.call(write=True):
            return call()

    def load(self) -> Snapshot:
        return self._read(self.inner.load)

    def serial(self) -> int:
        return self._read(self.inner.serial)

    def put(self, record: TaskRecord, *, expected_serial: int | None = None) -> int:
        return self._write(lambda: self.inner.put(record, expected_serial=expected_serial))

    def put_many(self, records: Iterable[TaskRecord], *, expected_serial: int | None = None) -> int:
        return self._write(lambda: self.inner.put_many(records, expected_serial=expected_serial))

    def delete(self, key: str, *, expected_serial: int | None = None) -> int:
        return self._write(lambda: self.inner.delete(key, expected_serial=expected_serial))

    def fingerprint_key(self, new: bytes | None = None) -> bytes | None:
        return self._write(lambda: self.inner.fingerprint_key(new))

    def check_lock(self) -> None:
        self.inner.check_lock()  # (the daemon's store holds no command's lease: no query, nothing to report)

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> Lock:
        return self._read(lambda: self.inner.lock(holder, lease_seconds=lease_seconds))

    def close(self) -> None:
        self.inner.close()


async def probe_store(health: StoreHealth, serial: Callable[[], int], timeout: float) -> None:
    """Ask the store for its serial in a worker thread, waiting at most `timeout`: an error
    is noted in `health` (readiness reads it). A call already stuck is not piled onto."""
    if health.stuck_for() is not None:
        return
    loop = asyncio.get_running_loop()
    answered = asyncio.Event()

    def probe() -> None:
        # An error is noted by the watched store (readiness reads it), so it is not raised again here.
        # Twice: after a database restart the first call finds the old connection dead, the second
        # reconnects (a read, so repeating it is harmless).
        for _ in range(2):
            with contextlib.suppress(StateError):
                serial()
                break
        with contextlib.suppress(RuntimeError):  # the loop may be gone when a hung call returns
            loop.call_soon_threadsafe(answered.set)

    # A daemon thread, not the loop's executor: a call hung on the database must not hold up shutdown.
    threading.Thread(target=probe, name="capctl-store-probe", daemon=True).start()
    # On timeout the call keeps running; `store_health` reports it once it has waited STUCK_AFTER.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(answered.wait(), timeout)
