"""The state-store contract: load records, commit record changes, hold the apply lock.

A store keeps one `serial` that moves on every committed change, so a saved plan can tell the state
moved since it was made. Each commit is atomic (one record put or delete); a crash loses nothing
already committed. `lock()` is an OS lock or an expiring lease: a holder that died releases it by itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from reconciler.model import RoomActivity, TaskRecord, TaskStatus
from reconciler.transitions import start_outstanding

__all__ = [
    "DAEMON_HOLDER",
    "Fenced",
    "HistorySpan",
    "HistoryStore",
    "InboxEntry",
    "Lock",
    "LockHeld",
    "LockTakenOver",
    "NoState",
    "RoomActivityStore",
    "SerialMismatch",
    "Snapshot",
    "StateDamaged",
    "StateError",
    "StateMissing",
    "StateStore",
    "StateTooNew",
    "StateUnreachable",
    "began_of",
    "daemon_holder",
    "run_of",
]

# The command name a daemon locks the state under; `LockHeld` recognises a daemon by it. The daemon adds
# where it serves (`capctl run on http://127.0.0.1:8080`), so others can point `capctl sync` at it.
DAEMON_HOLDER = "capctl run"


def daemon_holder(url: str) -> str:
    return f"{DAEMON_HOLDER} on {url}"


class StateError(Exception):
    """The state store could not be read or written (names the store, never a secret)."""


class StateUnreachable(StateError):
    """No connection to the store's server could be made (refused, timed out, an unknown host, a server starting
    up, a login refused): nothing was read or written. `capctl run` waits for it at start (`--state-wait`);
    the one-shot commands fail at once. `where` is the store's URL without its password."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where


class StateTooNew(StateError):
    """The state's schema is newer than this capctl knows (a newer capctl raised it): no retry reads it, and
    reading it as the older schema would misread it. A daemon that meets it as it takes the lead gives it up."""


class StateMissing(StateError):
    """A read-only open found no state where it looked (no file, or no capctl tables): nothing was created."""

    def __init__(self, where: str) -> None:
        super().__init__(f"no state at {where}")
        self.where = where


class StateDamaged(StateError):
    """A store that exists but is not a whole capctl state (empty file, missing tables, corrupt pages).

    Never read as empty or repaired in place: that would re-create every task or restart the serial."""

    def __init__(self, where: str, detail: str, *, remedy: str = "") -> None:
        super().__init__(
            f"{where} looks damaged ({detail}); restore it from a backup, or move it away to start a new state" + remedy
        )
        self.where = where


class LockHeld(StateError):
    def __init__(self, holder: str, *, expires_in: float | None = None) -> None:
        super().__init__(f"state is locked by {holder}")
        self.holder = holder
        # Seconds until a lease lapses, as the database server counts them (None: an OS lock, held until its
        # process ends): a standby retries then rather than a whole retry period later.
        self.expires_in = expires_in

    @property
    def daemon(self) -> bool:
        """Held by a `capctl run` daemon, which keeps the lock for its lifetime (waiting will not help)."""
        return f"({DAEMON_HOLDER}" in self.holder

    @property
    def daemon_url(self) -> str | None:
        """Where the daemon holding the lock serves its API, when its holder string says so."""
        found = re.search(rf"\({re.escape(DAEMON_HOLDER)} on (\S+)\)", self.holder)
        return found.group(1) if found else None


class Fenced(StateError):
    """A write of a leader whose term (epoch) was superseded: another holder took the lock since.

    Raised inside the write's transaction, so nothing of it was written; the writer must stop acting."""

    def __init__(self, epoch: int, current: int | None, message: str | None = None) -> None:
        now = "no one holds the lock" if current is None else f"the current epoch is {current}"
        super().__init__(message or f"leadership epoch {epoch} was superseded ({now}): nothing was written")
        self.epoch = epoch
        self.current = current


class LockTakenOver(Fenced):
    """A write of a command (`apply`, `state rm` …) whose lease lapsed while it held the lock (it was paused:
    SIGSTOP, a frozen VM, a laptop lid) and was taken over: refused like a deposed leader's, nothing written."""

    def __init__(self, epoch: int, current: int | None, holder: str | None) -> None:
        by = f" ({holder})" if holder else ""
        super().__init__(
            epoch,
            current,
            f"the state lock was taken over{by} after this command's lease lapsed (was it paused?): it writes"
            " nothing more, and nothing of this write was written",
        )
        self.holder = holder


class SerialMismatch(StateError):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"state serial is {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """A verified vendor callback kept in the state until the leader consumes it (issue 16).

    `payload` is what the callback router parsed from the body (plain JSON, no signature or secret: the
    store refuses keys that look like one), `digest` the body's sha256, `received_at` wall time."""

    vendor: str
    dedupe_key: str
    payload: dict[str, Any]
    digest: str
    received_at: float


@dataclass(frozen=True, slots=True)
class HistorySpan:
    """One span of the status page's timeline history, kept in the state (`capctl_history`): a task's run
    (`kind` "run", `subject` its key, `room` "") or a room's activity ("room", the vendor account, the room),
    or when a task was first seen ("seen", its key, "", no end: the task's history is complete from then),
    or how a run began ("began", its key, "", the run's start as both times, `reason` the record's re-issue
    count then, in digits: `began_of`). Times and the stop reason as the records hold them: nothing secret."""

    kind: str
    subject: str
    room: str
    start: float
    end: float | None  # None while it runs (or the room is active)
    reason: str | None = None  # why a run ended, as recorded (`idle timeout (Volcengine IdleTimeOut)`)


def began_of(record: TaskRecord) -> HistorySpan | None:
    """How the record's run began: the task's re-issue count at its start (a run whose count is above the run
    before it's was a re-issue; a replace, a restore or a run seen again counts none), or None when that is not
    known from the record: before its first start, or after an intent for the next run (pending, or a start
    that failed), which may have counted the next one already. The run's own row keeps only how it ended, and
    the vendor's stop reason stays when a replace or a restore follows it (walk 42B-6). A span of its own (no
    new column): an older capctl reads the state as before and ignores it. A failed start left to its room
    (`stopped`, no vendor task) is such an intent too: its start is still the run before it's, its count the
    next one's, written where that run had no row (a run an older capctl started: walk 49D-3)."""
    if record.started_at is None or start_outstanding(record):  # (its intent's count, not its run's)
        return None
    return HistorySpan("began", record.key, "", record.started_at, record.started_at, str(record.reissue_count))


def run_of(record: TaskRecord) -> HistorySpan | None:
    """The run a record describes (its current or last one), or None before its first start. A run ends when
    the record says it no longer runs: at its recorded stop, else when it was last observed (a thumbnail done
    at once, a start that failed)."""
    if record.started_at is None:
        return None
    end: float | None = None
    if record.status not in (TaskStatus.RUNNING, TaskStatus.PENDING):
        end = record.stopped_at if record.stopped_at is not None else record.observed_at
        end = record.started_at if end is None else max(end, record.started_at)
    return HistorySpan("run", record.key, "", record.started_at, end, record.stop_reason if end is not None else None)


@dataclass(frozen=True, slots=True)
class Snapshot:
    serial: int
    records: dict[str, TaskRecord]

    def __repr__(self) -> str:  # a snapshot may hold 100,000 records: never print them all
        return f"Snapshot(serial={self.serial}, records={len(self.records)})"


class NoState:
    """The state of a setup where nothing was created yet, for commands that only read (`plan`).

    A read-only command never creates a state; finding none, it plans as a brand-new store would start:
    serial 0 and no record (as Terraform plans without a state). Writing to it is a bug, so it raises.
    """

    def __init__(self, missing: StateMissing, key: bytes | None = None) -> None:
        self.url = missing.where
        self.missing = missing
        self._key = key

    def load(self) -> Snapshot:
        return Snapshot(serial=0, records={})

    def record(self, key: str) -> TaskRecord | None:
        return None

    def serial(self) -> int:
        return 0

    def fingerprint_key(self, new: bytes | None = None) -> bytes | None:
        """No state, no key: the caller uses a per-run key (there is no record to compare with); or `key`, the
        one an apply stores in the state it creates once its changes are confirmed."""
        return self._key

    def put(self, record: TaskRecord, *, expected_serial: int | None = None) -> int:
        raise StateError(f"{self.missing}: a read-only command cannot record {record.key}")

    def put_many(self, records: Iterable[TaskRecord], *, expected_serial: int | None = None) -> int:
        raise StateError(f"{self.missing}: a read-only command cannot record tasks")

    def delete(self, key: str, *, expected_serial: int | None = None) -> int:
        raise StateError(f"{self.missing}: a read-only command cannot forget {key}")

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> Lock:
        raise StateError(f"{self.missing}: a read-only command takes no lock")

    def check_lock(self) -> None:
        """No lock was taken: nothing to check."""

    def room_activity(self, accounts: Mapping[str, str]) -> list[RoomActivity]:
        return []

    def upgrade_rooms(self, accounts: Mapping[str, str]) -> tuple[int, list[str]] | None:
        return None

    def record_rooms(self, reports: Iterable[RoomActivity], spans: Iterable[HistorySpan] = ()) -> None:
        raise StateError(f"{self.missing}: a read-only command cannot record room activity")

    def forget_rooms(self, quiet_before: float) -> int:
        raise StateError(f"{self.missing}: a read-only command cannot forget room activity")

    def close(self) -> None:
        """Nothing was opened."""


class Lock(Protocol):
    holder: str
    epoch: int  # the term this lock began: raised at every acquisition, kept with the lock in the store
    # Seconds from the previous holder's last sign of life the store recorded (its last renew, or its release)
    # to this taking; None where none is recorded (the first lock of a state): what no holder listened through.
    silent_for: float | None

    def renew(self) -> None:
        """Extend a lease (no-op for OS locks); raises LockHeld if another holder took it over."""

    def release(self) -> None: ...

    def keep_silence(self) -> None:
        """This holder answers no callbacks (a one-shot command, not a daemon): the store keeps the previous
        holder's last sign of life as its record, so the next holder's `silent_for` still covers the time
        before this one."""

    def unheard_since(self, seconds_ago: float) -> None:
        """This holder has answered no callbacks for `seconds_ago` (a leader whose takeover keeps failing is not
        ready: a Service sends it none): its release records its last sign of life that long before, or the next
        holder's `silent_for` would begin at the release (walk 26a)."""

    def __enter__(self) -> Lock: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Leaving a `with store.lock(...)` block releases the lock."""


class StateStore(Protocol):
    url: str  # for messages: never contains a password

    def load(self) -> Snapshot: ...

    def serial(self) -> int: ...

    def fingerprint_key(self, new: bytes | None = None) -> bytes | None:
        """The random key of this state's fingerprints and task hashes (`secrets.py`); a writable store
        without one stores `new` (or a fresh key) first; None from a read-only open of a store without one."""

    def put(self, record: TaskRecord, *, expected_serial: int | None = None) -> int:
        """Insert or replace one record; returns the new serial. With `expected_serial`, compare-and-set."""

    def put_many(self, records: Iterable[TaskRecord], *, expected_serial: int | None = None) -> int:
        """Insert or replace several records in one commit (the serial moves once; not at all if empty)."""

    def delete(self, key: str, *, expected_serial: int | None = None) -> int: ...

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> Lock:
        """Take the exclusive lock at once or raise `LockHeld` naming the current holder."""

    def check_lock(self) -> None:
        """Raise `LockTakenOver` if the lease a command holds on this store was taken over; nothing where none
        is held so (SQLite's OS lock, the daemon: its guard is its providers' `may_act`). The executor asks
        before a vendor call no write of it precedes (a stop, a ZEGO find-start: walk 25d). A method of every
        store, not looked up by name: a wrapper that lacked it silently skipped the check (walk 26a)."""

    def close(self) -> None: ...


class HistoryStore(Protocol):
    """The status page's timeline history a store keeps (`HistorySpan`): runs are written with their records'
    commits, room spans with room activity; the daemon reads it back and prunes it."""

    def history(self) -> list[HistorySpan]: ...

    def prune_history(self, ended_before: float, keep: int) -> int:
        """Drop the spans that ended before `ended_before`, and all but the newest `keep` of each task or room."""

    def prune_orphans(self) -> int:
        """Drop when tasks whose record is gone were first seen (`seen` rows an older capctl's delete left)."""


@runtime_checkable
class RoomActivityStore(Protocol):
    """The room-activity half of a store (`reconciler/rooms.py`): the daemon writes, plan and apply read.

    Apart from `StateStore` so that wrappers of a store (the daemon's caches) need not forward it."""

    def record_rooms(self, reports: Iterable[RoomActivity], spans: Iterable[HistorySpan] = ()) -> None:
        """Keep the last known activity of these rooms (a report older than what is kept is dropped), and the
        status page's `spans` of room activity, in one transaction. Does not move the serial: activity is what
        the daemon learned of rooms, not a task change."""

    def forget_rooms(self, quiet_before: float) -> int:
        """Drop the rooms known inactive since before `quiet_before` (rooms made on the fly would otherwise
        pile up); returns how many. Does not move the serial."""

    def room_activity(self, accounts: Mapping[str, str]) -> list[RoomActivity]:
        """Every room's last known activity, by vendor account (empty before any was recorded). `accounts`
        (Provider name → `ProviderConfig.account`) reads a state of schema 1, which kept it by Provider name."""

    def upgrade_rooms(self, accounts: Mapping[str, str]) -> tuple[int, list[str]] | None:
        """Key a schema-1 state's room activity by account (`accounts` as above), in one transaction that
        raises the schema version; None when there is nothing to do, else (rooms kept, Provider names left
        out). The daemon runs it when it starts: only the specs know which account a Provider name meant."""
