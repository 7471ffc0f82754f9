"""Hand-built records, histories and snapshots for the status page's tests (no daemon, no clock but numbers)."""

from __future__ import annotations

from typing import Any

from reconciler.model import ApiFamily, JobKind, TaskRecord, TaskStatus
from reconciler.status import History, Replica, StatusInputs

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
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


def inputs(
    records: list[TaskRecord],
    *,
    history: History | None = None,
    replica: Replica = LEADER,
    events: list[dict[str, Any]] | None = None,
    next_observation: dict[str, float] | None = None,
) -> StatusInputs:
    if history is None:
        history = History()
        history.seed(records, NOW - 3600)
    return StatusInputs(
        records=records,
        replica=replica,
        history=history,
        next_observation=next_observation or {},
        events=events or [],
    )
