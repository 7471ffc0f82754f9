"""`capctl state import`: adopting a task started outside capctl, as `terraform import` adopts a resource.

capctl never adopts a vendor task by itself: no vendor lists an app's tasks, and neither Volcengine nor ZEGO
answers with the settings a task was started with. Without this step a task the team's own scripts started is
started a second time (ZEGO, another Volcengine TaskId, thumbnails), or stopped and started again with the
spec's settings (the same Volcengine TaskId). Import is the explicit step: the operator names the vendor task,
its status query proves it runs in the key's room, and the record written is the one a start of the spec
would have written, so the next plan shows it unchanged and capctl keeps it from then on.

Pure: the caller observes the probe record at the vendor and writes the adopted one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from reconciler import transitions
from reconciler.model import ApiFamily, DesiredTask, Observed, ObservedState, TaskRecord, TaskStatus
from reconciler.providers.base import MAX_VENDOR_ID, vendor_id_ok
from reconciler.spec.errors import quote
from reconciler.spec.fields import room_id_problem

__all__ = ["AdoptError", "AlreadyRecorded", "Claims", "adopted", "check_unclaimed", "describe", "probe"]

# Seed 001's Id rule, which a Volcengine TaskId must follow; ZEGO ids are opaque text.
_VOLC_ID = re.compile(r"[a-zA-Z0-9_@\-.]{1,128}")


class AdoptError(Exception):
    """Why a vendor task cannot be imported: said to the operator as is."""


class AlreadyRecorded(AdoptError):
    """The key is tracked already. `what` says as what; the message adds the way out (`state rm` first), which
    a list's import says once after its lines rather than on each (walk 17d)."""

    def __init__(self, key: str, what: str) -> None:
        self.what = what
        super().__init__(f"{what}: nothing imported; `capctl state rm {key}` first to replace its record")


def _vendor_ref(task: DesiredTask, vendor_id: str, app_id: str) -> dict[str, str]:
    """The ids a start of `task` would have recorded (each provider's `StartResult.vendor_ref`), naming
    `vendor_id` instead of the task the spec would start."""
    if task.family is ApiFamily.VOLC_SNAPSHOT:
        ids = {name: str(task.request[name]) for name in ("AppId", "BusinessId") if name in task.request}
        return {**ids, "RoomId": task.target, "TaskId": vendor_id}
    if task.family is ApiFamily.ZEGO_THUMBNAIL:
        return {"TaskId": vendor_id, "FileId": task.target}
    return {"TaskId": vendor_id, "RoomId": task.target, "AppId": app_id}


def probe(task: DesiredTask, vendor_id: str, now: float, *, app_id: str) -> TaskRecord:
    """The record of `task` as if its start had answered `vendor_id`: what the status query is made with,
    and (once the vendor confirms it) what is stored. It holds no ClientTaskId: capctl never sent one.
    `app_id`: the app of the task's Provider, which a ZEGO recording's record keeps."""
    if not vendor_id_ok(vendor_id):
        raise AdoptError(
            f"vendor task id {vendor_id!r}: expected the vendor's id of the task, 1 to {MAX_VENDOR_ID} characters"
        )
    if task.family is ApiFamily.VOLC_SNAPSHOT and not _VOLC_ID.fullmatch(vendor_id):
        raise AdoptError(f"vendor task id {vendor_id!r}: a Volcengine TaskId is 1 to 128 of a-z A-Z 0-9 _ @ - .")
    start = transitions.intent(task, None, now, reissue=False).evolve(client_task_id=None)
    return transitions.started(start, vendor_id, _vendor_ref(task, vendor_id, app_id), now)


def describe(record: TaskRecord) -> str:
    """The vendor task a record names, as the operator knows it."""
    ids = record.vendor_ref
    if record.family is ApiFamily.VOLC_SNAPSHOT:
        return f"Volcengine snapshot task {ids['TaskId']} in room {ids['RoomId']}"
    if record.family is ApiFamily.ZEGO_THUMBNAIL:
        return f"ZEGO MediaThumbnails task {ids['TaskId']} of file {ids['FileId']}"
    api = "legacy API" if record.family is ApiFamily.ZEGO_RECORD_LEGACY else "current API"
    return f"ZEGO recording {ids['TaskId']} ({api}) in room {ids['RoomId']}"


class Claims:
    """Task records as an import checks a probe against them: by key, and by the vendor task each names, indexed
    once. Comparing every probe with every record made a list of 1,000 against a state of 10,000 take 20 s."""

    def __init__(self, records: Mapping[str, TaskRecord] | None = None) -> None:
        self.records: dict[str, TaskRecord] = {}
        self._holders: dict[tuple[object, ...], str] = {}
        for record in (records or {}).values():
            self.add(record)

    def add(self, record: TaskRecord) -> None:
        """Count `record` in (a tombstone names its key only: its vendor task is no longer capctl's)."""
        self.records.setdefault(record.key, record)
        if record.status is TaskStatus.REMOVED:
            return
        if (held := transitions.volc_task_held(record)) is not None:
            self._holders.setdefault(("volc", *held), record.key)
        if record.vendor_task_id is not None:
            self._holders.setdefault((record.family, record.vendor_task_id), record.key)

    def holder(self, record: TaskRecord) -> str | None:
        """Another record's key that already names this vendor task (importing it twice would have two keys
        re-issue and stop one task): a Volcengine task by AppId, RoomId and TaskId, the others by their id."""
        name = transitions.volc_task_name(record.family, record.vendor_ref)
        key = ("volc", *name) if name is not None else (record.family, record.vendor_task_id)
        holder = self._holders.get(key)
        return holder if holder != record.key else None


def check_unclaimed(record: TaskRecord, records: Mapping[str, TaskRecord] | Claims) -> None:
    """AdoptError unless the state's `records` leave the probe `record` free to import: its key is not tracked
    (nothing is imported over a record) and no other key names the same vendor task."""
    claims = records if isinstance(records, Claims) else Claims(records)
    existing = claims.records.get(record.key)
    if existing is not None:
        what = "a tombstone of a removed job" if existing.status is TaskStatus.REMOVED else existing.status.value
        raise AlreadyRecorded(
            record.key, f"already in the state ({what}, vendor task {existing.vendor_task_id or '-'})"
        )
    holder = claims.holder(record)
    if holder is not None:
        raise AdoptError(f"the {describe(record)} is already recorded as {holder}'s: nothing imported")


def adopted(record: TaskRecord, observed: Observed | None) -> TaskRecord:
    """The record to store once the vendor answered `observed` for the probe `record`, or AdoptError. A
    thumbnail task has no status query (`observed` None): it is recorded as submitted on the operator's word,
    so it is not submitted a second time."""
    if record.family is ApiFamily.ZEGO_THUMBNAIL:
        return record
    assert observed is not None, f"{record.key}: a status query is needed to import it"
    if observed.room is not None and observed.room != record.target:
        # The vendor's text: quoted when no room can have it (an escape sequence, 10 kB), as a callback's room is.
        room = observed.room if room_id_problem(observed.room, "zego") is None else quote(observed.room)
        raise AdoptError(
            f"the vendor reports {record.vendor_ref['TaskId']} in room {room}, "
            f"not in {record.key}'s room {record.target}: nothing imported"
        )
    if observed.state is ObservedState.RUNNING:
        # The vendor's start, never later than now (`record.started_at`, the probe's): its clock may be ahead,
        # and a start time past year 9999 is one the state refuses on its next load (every command stopped).
        now = record.started_at
        if observed.started_at is None or now is None:
            return record
        return record.evolve(started_at=min(observed.started_at, now))
    if observed.state is ObservedState.NOT_FOUND:
        window = (
            " (GetSnapshotTask finds a task by its room and TaskId, started in the last 72 hours: a TaskId of"
            " another room is not found, nor an older task, which cannot be checked)"
            if record.family is ApiFamily.VOLC_SNAPSHOT
            else ""
        )
        raise AdoptError(f"the vendor does not know the {describe(record)}{window}: nothing imported")
    if observed.state is ObservedState.UNKNOWN:
        raise AdoptError(f"could not read the status of the {describe(record)}: {observed.detail}; nothing imported")
    reason = observed.reason or observed.detail or observed.state.value
    raise AdoptError(
        f"the {describe(record)} has ended ({reason}): nothing running to import; "
        f"`capctl apply` starts {record.key} anew"
    )
