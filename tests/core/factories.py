"""Small builders for desired tasks and records, so table tests read as data."""

from __future__ import annotations

from typing import Any

from reconciler.model import ApiFamily, DesiredTask, JobKind, RestartPolicy, TaskRecord, TaskStatus
from reconciler.redact import redact_tree


def desired(
    room: str = "lobby",
    *,
    interval: int = 5,
    bucket: str = "audit",
    job: str = "lobby-audit",
    family: ApiFamily = ApiFamily.VOLC_SNAPSHOT,
    restart: RestartPolicy = RestartPolicy.ALWAYS,
    kind: JobKind = JobKind.SNAPSHOT,
    idle: int = 180,
) -> DesiredTask:
    request: dict[str, Any] = {
        "AppId": "app",
        "RoomId": room,
        "TaskId": job,
        "MaxIdleTime": idle,
        "ImageConfig": {"Interval": interval},
        "StorageConfig": {"Type": 0, "TosConfig": {"Bucket": bucket}},
    }
    fixed = f"fixed:{room}:{bucket}:{family.value}:{idle}"
    return DesiredTask(
        key=f"{kind.value}/{job}/{room}",
        kind=kind,
        job=job,
        target=room,
        provider="volc",
        family=family,
        request=request,
        spec_hash=f"{fixed}:{interval}",
        fixed_hash=fixed,
        updatable={"interval": interval} if family is ApiFamily.VOLC_SNAPSHOT else {},
        idle_timeout=idle,
        restart_policy=restart,
    )


def record_for(task: DesiredTask, status: TaskStatus = TaskStatus.RUNNING, **changes: Any) -> TaskRecord:
    base = TaskRecord(
        key=task.key,
        provider=task.provider,
        family=task.family,
        kind=task.kind,
        target=task.target,
        spec_hash=task.spec_hash,
        fixed_hash=task.fixed_hash,
        updatable=dict(task.updatable),
        status=status,
        vendor_task_id="vt-" + task.target,
        request=redact_tree(task.request),
        idle_timeout=task.idle_timeout,
        restart_policy=task.restart_policy,
    )
    return base.evolve(**changes)
