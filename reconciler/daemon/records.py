"""The daemon's write-through view of the state store.

The daemon holds the state lock for its lifetime, so it is the only writer: it reads every record once at
start and keeps a copy that each commit updates (the commit first, then the copy, so the copy is never
ahead of the store). Workers read records from memory instead of loading the whole store per key,
callbacks find a task by its vendor id, and a start the Volcengine task another key may run (`holding`),
through indexes kept in step with the records.
It satisfies `StateStore`, so the executor commits through it unchanged. Every record it reads or
commits is also told to the status page's run history (`reconciler.status.history`), which the state keeps
too (`history_store`): read back with the records, so a restart or a new leader keeps the timelines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from reconciler import transitions
from reconciler.clock import Clock, SystemClock
from reconciler.model import TaskRecord, TaskStatus
from reconciler.providers.family import FAMILIES
from reconciler.state.base import HistorySpan, HistoryStore, Lock, Snapshot, StateStore
from reconciler.status.history import MAX_INTERVALS, History, Restored

__all__ = ["RecordCache", "vendor_id"]

if TYPE_CHECKING:
    from reconciler.providers.callbacks import RunId


def vendor_id(record: TaskRecord) -> RunId | None:
    """How a callback names this record's current run: its family says (`Family.run_id`). A tombstone has
    none: the vendor task it names may be another key's now (a renamed job's, handed over), whose callbacks
    went to the tombstone when it was read after that key (walk 28a); and one stopped has nothing to hint."""
    if record.status is TaskStatus.REMOVED:
        return None
    return FAMILIES[record.family].run_id(record)


class RecordCache:
    def __init__(
        self, store: StateStore, clock: Clock | None = None, history_store: HistoryStore | None = None
    ) -> None:
        self.store = store
        self.url = store.url
        self.history = History(clock or SystemClock())
        self.history_store = history_store
        self._records: dict[str, TaskRecord] = {}
        # Every live key naming a run, the last put last: two live records may name one Volcengine task (a job
        # renamed with its taskId, the new key took it over under --no-prune); when one leaves (its
        # tombstone), the other is still there to hear its callbacks (walk 29b).
        self._by_vendor_id: dict[RunId, dict[str, None]] = {}
        self._by_volc_task: dict[tuple[str, str, str], set[str]] = {}
        # The thumbnail submissions ZEGO took (`transitions.taken_as`) by file: a renamed job's key with no
        # record takes its file's (`transitions.submitted_before`) without a scan of every record.
        self._submitted: dict[str, set[str]] = {}
        # `fetch`'s read, for `refresh` to adopt, and what was committed through the cache while it read.
        self._fetched: tuple[dict[str, TaskRecord], Restored | None] | None = None
        self._written: dict[str, TaskRecord | None] | None = None

    def fetch(self, *, leading: bool = False) -> None:
        """The store's part of `refresh`, which may run off the loop: at 100,000 tasks the read takes ~5 s of
        CPU and the history's restore ~2 s, and on the loop no callback was answered meanwhile (walk 31d). A
        commit through the cache while it reads is noted and laid over the read (the store has it first, so
        the read may or may not); `refresh` notes every record in the history again. `leading`: first drop
        the `seen` rows of keys without a record (an older capctl's delete left them), before this leader
        makes any key again."""
        self._written = {}
        try:
            if leading and self.history_store is not None:
                self.history_store.prune_orphans()
            self._fetched = self.read_restored()
        except BaseException:
            self._written = None
            raise

    def refresh(self, *, leading: bool = False) -> dict[str, TaskRecord]:
        """Read everything from the store (at start, and when a term begins), the history with it: what
        `fetch` read, or (none fetched) read now."""
        if self._fetched is None:
            self.fetch(leading=leading)
        assert self._fetched is not None
        (records, history), written = self._fetched, self._written or {}
        self._fetched = self._written = None
        for key, record in written.items():
            if record is None:
                records.pop(key, None)
            else:
                records[key] = record
        return self.adopt(records, history)

    def read(self) -> tuple[dict[str, TaskRecord], list[HistorySpan] | None]:
        """The records and the history the store holds (the history first: a run committed meanwhile is
        in the records, and noted from them)."""
        history = None if self.history_store is None else self.history_store.history()
        return self.store.load().records, history

    def read_restored(self) -> tuple[dict[str, TaskRecord], Restored | None]:
        """`read`, its history made ready (`History.restored`): off the loop, ~2 s at 100,000 tasks (walk 31d),
        changing nothing here, for `adopt` on the loop (a takeover's `refresh`; a standby's page, which drops
        it if a term began meanwhile: a late read must not undo what the leader noted since)."""
        records, history = self.read()
        return records, None if history is None else self.history.restored(history, records)

    def adopt(self, records: Mapping[str, TaskRecord], history: Restored | None = None) -> dict[str, TaskRecord]:
        """Take `records` and `history`, just read from the store, as the whole cache (a standby's status page
        reads them: it shows the leader's)."""
        if history is not None:
            self.history.install(history)
        self._records = {}
        self._by_vendor_id = {}
        self._by_volc_task = {}
        for record in records.values():
            self._remember(record)
        return dict(self._records)

    def prune_history(self) -> int:
        """Bound the state's history as the page's (at most every 15 minutes); returns the spans dropped."""
        if self.history_store is None or (horizon := self.history.prune_due()) is None:
            return 0
        return self.history_store.prune_history(horizon, MAX_INTERVALS)

    def get(self, key: str) -> TaskRecord | None:
        return self._records.get(key)

    def keys(self) -> list[str]:
        return list(self._records)

    def values(self) -> list[TaskRecord]:
        return list(self._records.values())

    def by_vendor_id(self, vid: RunId) -> TaskRecord | None:
        """The live record a callback about run `vid` is for. Of two (a renamed job's keys, both live under
        --no-prune), the one that started it last, which took it over: not the last written, which after a
        restart is the last in key order and then whichever a poll wrote last (walk 30a). Ties: the last put."""
        keys = self._by_vendor_id.get(vid)
        if not keys:
            return None
        return max((self._records[key] for key in reversed(keys)), key=lambda record: record.started_at or 0.0)

    def holding(self, name: tuple[str, str, str]) -> dict[str, TaskRecord]:
        """The records that may be running the Volcengine task `name` (`transitions.volc_task_held`), by key."""
        return {key: self._records[key] for key in self._by_volc_task.get(name, ())}

    def submitted(self, file: str) -> list[TaskRecord]:
        """The records of this file (its fileId, the task's target) that hold a thumbnail submission ZEGO took
        (`transitions.taken_as`), of any key, settings or Provider."""
        return [self._records[key] for key in self._submitted.get(file, ())]

    def status_counts(self) -> dict[str, int]:
        return dict(Counter(r.status.value for r in self._records.values()))

    def _remember(self, record: TaskRecord) -> None:
        self._forget(record.key)
        self._records[record.key] = record
        self.history.note(record)
        vid = vendor_id(record)
        if vid is not None:
            self._by_vendor_id.setdefault(vid, {})[record.key] = None
        if (name := transitions.volc_task_held(record)) is not None:
            self._by_volc_task.setdefault(name, set()).add(record.key)
        if transitions.taken_as(record) is not None:
            self._submitted.setdefault(record.target, set()).add(record.key)

    def _forget(self, key: str) -> None:
        old = self._records.pop(key, None)
        vid = vendor_id(old) if old is not None else None
        if vid is not None and (keys := self._by_vendor_id.get(vid)) is not None:
            keys.pop(key, None)
            if not keys:
                del self._by_vendor_id[vid]
        if old is not None and (name := transitions.volc_task_held(old)) is not None:
            holders = self._by_volc_task[name]
            holders.discard(key)
            if not holders:
                del self._by_volc_task[name]
        if old is not None and transitions.taken_as(old) is not None:
            same = self._submitted[old.target]
            same.discard(key)
            if not same:
                del self._submitted[old.target]

    # --- StateStore -------------------------------------------------------------------------------------

    def load(self) -> Snapshot:
        return Snapshot(self.store.serial(), dict(self._records))

    def serial(self) -> int:
        return self.store.serial()

    def fingerprint_key(self, new: bytes | None = None) -> bytes | None:
        return self.store.fingerprint_key(new)

    def check_lock(self) -> None:
        self.store.check_lock()

    def put(self, record: TaskRecord, *, expected_serial: int | None = None) -> int:
        serial = self.store.put(record, expected_serial=expected_serial)
        self._remember(record)
        self._wrote(record.key, record)
        return serial

    def put_many(self, records: Iterable[TaskRecord], *, expected_serial: int | None = None) -> int:
        batch = list(records)
        serial = self.store.put_many(batch, expected_serial=expected_serial)
        for record in batch:
            self._remember(record)
            self._wrote(record.key, record)
        return serial

    def delete(self, key: str, *, expected_serial: int | None = None) -> int:
        serial = self.store.delete(key, expected_serial=expected_serial)
        self._forget(key)
        self.history.forget(key)
        self._wrote(key, None)
        return serial

    def _wrote(self, key: str, record: TaskRecord | None) -> None:
        if (written := self._written) is not None:  # a `fetch` is reading
            written[key] = record

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> Lock:
        return self.store.lock(holder, lease_seconds=lease_seconds)

    def close(self) -> None:
        self.store.close()
