"""Hand-built records, histories and snapshots for the status page's tests (no daemon, no clock but numbers)."""

from __future__ import annotations

from typing import Any

from reconciler.clock import FakeClock
from reconciler.model import ApiFamily, JobKind, TaskRecord, TaskStatus
from reconciler.status import History, Replica, StatusInputs

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
IDLE = "idle timeout (Volcengine IdleTimeOut)"
# The vendor accounts of the records' Providers (`record`): a room's activity is its account's.
VOLC, ZEGO = "volcengine:app-prod", "zego:1"
ACCOUNTS = {"volc-prod": VOLC, "zego-prod": ZEGO}
LEADER = Replica(
    role="leader",
    detail="holds the state lease",
    spec_digest="sha256:0123456789abcdef",
    spec_loaded_at=NOW - 600,
    spec_summary="2 files, 4 documents: 1 provider, 1 storage, 2 jobs → 3 tasks (volcengine 3)",
    spec_error=None,
    spec_error_since=None,
)


def record(key: str, status: TaskStatus = TaskStatus.RUNNING, **fields: Any) -> TaskRecord:
    kind, _, target = key.split("/", 2)
    thumbnail = kind == JobKind.THUMBNAIL.value
    return TaskRecord(
        key=key,
        provider="volc-prod" if kind == JobKind.SNAPSHOT.value else "zego-prod",
        family=ApiFamily.ZEGO_THUMBNAIL
        if thumbnail
        else ApiFamily.VOLC_SNAPSHOT
        if kind == JobKind.SNAPSHOT.value
        else ApiFamily.ZEGO_RECORD,
        kind=JobKind(kind),
        target=target,
        spec_hash="hmac:1",
        fixed_hash="hmac:1",
        status=status,
        **fields,
    )


class Told:
    """A `History` on a fake clock, told what happened when (each call moves the clock there first)."""

    def __init__(self, start: float = NOW - 86_400, window: float | None = None) -> None:
        self.clock = FakeClock(start)
        self.history = History(self.clock) if window is None else History(self.clock, window)

    def note(self, record: TaskRecord, at: float) -> None:
        self.clock.set(at)
        self.history.note(record)

    def start(self, run: TaskRecord, at: float, **fields: Any) -> TaskRecord:
        """`run` (re)started at `at`: the record as committed."""
        running = run.evolve(status=TaskStatus.RUNNING, started_at=at, stopped_at=None, stop_reason=None, **fields)
        self.note(running, at)
        return running

    def stop(self, run: TaskRecord, at: float, reason: str = IDLE, *, seen: float | None = None) -> TaskRecord:
        """The vendor ended `run` at `at` for `reason`; the daemon recorded it at `seen` (by default, then)."""
        stopped = run.evolve(status=TaskStatus.STOPPED, stopped_at=at, stop_reason=reason)
        self.note(stopped, at if seen is None else seen)
        return stopped

    def seed(self, records: list[TaskRecord], at: float) -> None:
        for r in records:
            self.note(r, at)

    def room_active(self, room: str, at: float, account: str = VOLC) -> None:
        self.clock.set(at)
        self.history.room_active(account, room)

    def room_idle(self, room: str, at: float, account: str = VOLC) -> None:
        self.clock.set(at)
        self.history.room_idle(account, room)


def inputs(
    records: list[TaskRecord],
    *,
    history: History | None = None,
    replica: Replica = LEADER,
    events: list[dict[str, Any]] | None = None,
    next_observation: dict[str, float] | None = None,
    prune_grace: float = 0.0,
) -> StatusInputs:
    if history is None:
        told = Told()
        told.seed(records, NOW - 3600)
        history = told.history
    return StatusInputs(
        records=records,
        replica=replica,
        history=history,
        next_observation=(next_observation or {}).get,
        events=events or [],
        accounts=ACCOUNTS,
        prune_grace=prune_grace,
    )
