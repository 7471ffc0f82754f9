"""A leader's view of the state: the store plus the epoch of its term, every write fenced (issue 16).

A replica that was paused (GC pause, VM freeze, SIGSTOP) past its lease may resume while another replica
leads. Its writes must then fail, not overwrite the new leader's: each write through this view checks, in
its own transaction, that its epoch is still the lock's (`Fenced` otherwise, nothing written). A command
(`capctl apply`, `state rm` …) has the same check made by its store itself (`SqlStateStore.command_epoch`, set
while it holds the lock), since it hands that store to the executor: `LockTakenOver`, a `Fenced`, when it fails;
the executor asks it too before a stop no write precedes (`check_lock`), as the daemon's providers ask `may_act`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from reconciler.model import RoomActivity, TaskRecord

from .base import (
    Fenced,
    HistorySpan,
    HistoryStore,
    InboxEntry,
    Lock,
    RoomActivityStore,
    Snapshot,
    StateStore,
    StateTooNew,
)
from .sql import INBOX_KEEP_SECONDS

__all__ = ["FenceableStore", "FencedStore", "ReadThrough"]


class FenceableStore(StateStore, HistoryStore, RoomActivityStore, Protocol):
    """A store whose writes can carry a leader's epoch, and that keeps the callback inbox, room activity and
    the status page's history (both SQL stores)."""

    def put_many(
        self, records: Iterable[TaskRecord], *, expected_serial: int | None = None, fence: int | None = None
    ) -> int: ...

    def delete(self, key: str, *, expected_serial: int | None = None, fence: int | None = None) -> int: ...

    def inbox_put(self, entry: InboxEntry) -> bool: ...

    def reread_fingerprint_key(self) -> bytes | None: ...

    def peek_fingerprint_key(self) -> bytes | None: ...

    def inbox_claim(
        self, *, now: float, limit: int = 500, keep: float = INBOX_KEEP_SECONDS, fence: int | None = None
    ) -> list[InboxEntry]: ...

    def record_rooms(
        self, reports: Iterable[RoomActivity], spans: Iterable[HistorySpan] = (), *, fence: int | None = None
    ) -> None: ...


class ReadThrough:
    """What every view of a shared store passes straight through: reads, and the fingerprint key (not fenced:
    it is written only where no key exists yet, and every replica would write the same row)."""

    def __init__(self, store: FenceableStore) -> None:
        self.store = store
        self.url = store.url

    def load(self) -> Snapshot:
        return self.store.load()

    def serial(self) -> int:
        return self.store.serial()

    def fingerprint_key(self, new: bytes | None = None) -> bytes | None:
        return self.store.fingerprint_key(new)

    def check_lock(self) -> None:
        self.store.check_lock()


class FencedStore(ReadThrough):
    """A `StateStore` whose writes carry `epoch`; `on_fenced` hears of a superseded one, or of a state whose schema
    a newer capctl raised meanwhile (`StateTooNew`: this term can write no more either), before it is raised."""

    def __init__(
        self, store: FenceableStore, epoch: int, on_fenced: Callable[[Fenced | StateTooNew], None] | None = None
    ) -> None:
        super().__init__(store)
        self.epoch = epoch
        self._on_fenced = on_fenced

    def _fenced(self, exc: Fenced | StateTooNew) -> Fenced | StateTooNew:
        if self._on_fenced is not None:
            self._on_fenced(exc)
        return exc

    def put(self, record: TaskRecord, *, expected_serial: int | None = None) -> int:
        return self.put_many((record,), expected_serial=expected_serial)

    def put_many(self, records: Iterable[TaskRecord], *, expected_serial: int | None = None) -> int:
        try:
            return self.store.put_many(records, expected_serial=expected_serial, fence=self.epoch)
        except (Fenced, StateTooNew) as exc:
            raise self._fenced(exc) from None

    def delete(self, key: str, *, expected_serial: int | None = None) -> int:
        try:
            return self.store.delete(key, expected_serial=expected_serial, fence=self.epoch)
        except (Fenced, StateTooNew) as exc:
            raise self._fenced(exc) from None

    def inbox_put(self, entry: InboxEntry) -> bool:
        # Any replica stores callbacks, leader or not: not fenced.
        return self.store.inbox_put(entry)

    def inbox_claim(self, *, now: float, limit: int = 500, keep: float = INBOX_KEEP_SECONDS) -> list[InboxEntry]:
        try:
            return self.store.inbox_claim(now=now, limit=limit, keep=keep, fence=self.epoch)
        except (Fenced, StateTooNew) as exc:
            raise self._fenced(exc) from None

    def record_rooms(self, reports: Iterable[RoomActivity], spans: Iterable[HistorySpan] = ()) -> None:
        try:
            self.store.record_rooms(reports, spans, fence=self.epoch)
        except (Fenced, StateTooNew) as exc:
            raise self._fenced(exc) from None

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> Lock:
        return self.store.lock(holder, lease_seconds=lease_seconds)

    def close(self) -> None:
        self.store.close()
