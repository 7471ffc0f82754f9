"""How a task record changes when something happens to its task. Pure functions of (record, event, now).

`apply` and the daemon both move records through these, so a task's history means the same whatever
drove it. The intent record (`PENDING` + ClientTaskId) is what makes non-idempotent starts crash-safe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any

from reconciler import stopreasons
from reconciler.model import (
    ApiFamily,
    DesiredTask,
    Observed,
    ObservedState,
    RestartPolicy,
    TaskRecord,
    TaskStatus,
)
from reconciler.redact import redact_tree
from reconciler.secrets import KEYED_HASH_PREFIX, map_hidden

__all__ = [
    "FOUND_BY_START",
    "MAY_RUN",
    "PRODUCTIVE_MARGIN",
    "REPLACED",
    "TOMBSTONE_RETENTION",
    "UNKNOWN_SETTINGS",
    "action_failed",
    "client_task_id",
    "confirmable",
    "ended_as_idle",
    "ended_by_capctl",
    "ended_by_fault",
    "ended_by_removal",
    "failed",
    "failed_may_run",
    "failed_start_left",
    "findable_start",
    "found_running",
    "handed_over_to",
    "intent",
    "laid_end",
    "left_to_its_room",
    "lost_start",
    "never_reissued",
    "not_attempted",
    "observed",
    "removed",
    "replace_cut_short",
    "replace_resumed",
    "restored",
    "resumable_start",
    "reverted",
    "revives",
    "run_counts",
    "run_ended_at",
    "run_goes_on",
    "runs_as_sent",
    "settings_since",
    "start_outstanding",
    "start_unconfirmed",
    "started",
    "still_running",
    "stoppable",
    "stopped",
    "submitted",
    "submitted_before",
    "taken_as",
    "taken_over",
    "tombstone_expired",
    "unfound_start",
    "updated",
    "volc_holders",
    "volc_holding",
    "volc_task_held",
    "volc_task_name",
    "waits_for_room",
    "was_productive",
    "woken",
]

PRODUCTIVE_MARGIN = 2.0  # seconds beyond the idle timeout that make a run "clearly longer"
# How long a tombstone (a pruned task's record) is kept: a spec restored within it resumes the task's history.
TOMBSTONE_RETENTION = 7 * 86400.0
# How a replace or a delete deals with a ZEGO start never confirmed (`findable_start`, `lost_start`), and its cost.
FOUND_BY_START = (
    "found by its recorded ClientTaskId (a StartRecord: ZEGO answers with that recording; if none runs, it "
    "starts one, stopped at once, a few seconds billed) and stopped"
)

# The hashes of a run of settings no record holds (`found_running`): never a task's (a keyed hash is hex).
UNKNOWN_SETTINGS = KEYED_HASH_PREFIX + "unknown"


def found_running(record: TaskRecord) -> TaskRecord:
    """The intent of a Volcengine start answered "already started" by a run of settings capctl never recorded,
    until that run's stop is answered: its settings unknown, no later start (after that stop failed, or a crash)
    takes the run for one it began with the spec's, which kept the vendor's old settings under "No changes"
    (walk 53A-1); a plan replaces it (stopped by its RoomId + TaskId, then started)."""
    return record.evolve(spec_hash=UNKNOWN_SETTINGS, fixed_hash=UNKNOWN_SETTINGS)


def client_task_id(task: DesiredTask, record: TaskRecord | None) -> str:
    """Deterministic per (task, spec, run): a retry of the same start reuses it, a new run gets a new one.

    The spec enters by its content with every secret left out, not by `spec_hash`: that one is keyed with the
    state's own random key, so a lost state (a new key) gave a first start another ClientTaskId, and ZEGO
    started a second recording beside the first run still recording. Secrets stay out so that the id, sent to
    the vendor and recorded, cannot be used to test guesses of them."""
    generation = f"{record.reissue_count}:{record.vendor_task_id or ''}" if record else "0:"
    public = json.dumps(
        {"provider": task.provider, "request": map_hidden(task.request, _hidden)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256(f"{task.key}\0{public}\0{generation}".encode()).hexdigest()
    return f"capctl-{digest[:24]}"


def _hidden(_: object) -> str:
    return "\0secret\0"


def was_productive(record: TaskRecord) -> bool:
    """A run is productive when a callback reported output, or it lasted clearly longer than its idle
    timeout (a task that never saw a stream stops exactly one idle timeout after it started)."""
    if record.productive:
        return True
    if record.started_at is None or record.stopped_at is None or record.idle_timeout is None:
        return False
    return record.stopped_at - record.started_at > record.idle_timeout + _margin(record.idle_timeout)


def _margin(idle_timeout: int) -> float:
    """How far a run's length may be from its idle timeout and still be taken for one (vendor lag)."""
    return max(PRODUCTIVE_MARGIN, 0.05 * idle_timeout)


def ended_by_fault(record: TaskRecord) -> bool:
    """The vendor ended the stopped run for a cause that says nothing about its room: a fault (ZEGO quit_reason
    1, 2, 5, 6, 1001+; Volcengine `StartTaskFailed`, `UserDisconnect`, status 4), a stop out of band, a task
    not found (`stopreasons.FAULTS`); an end whose cause the vendor did not give (`ended (ZEGO status 4)`,
    `UnknownStopReason`) before its idle timeout. Not one: an idle-out, a max-duration end, such an end as
    long as the idle timeout (what an idle-out seen by polling alone looks like), a reason in other words."""
    if record.status not in (TaskStatus.STOPPED, TaskStatus.DORMANT) or record.stop_reason is None:
        return False
    phrase = stopreasons.phrase_of(record.stop_reason)
    if phrase in stopreasons.FAULTS:
        return True
    if phrase != stopreasons.Phrase.ENDED:
        return False
    if record.started_at is None or record.stopped_at is None or record.idle_timeout is None:
        return False  # no cause, no length: taken for an idle-out, as before
    return record.stopped_at - record.started_at < record.idle_timeout - _margin(record.idle_timeout)


def ended_as_idle(record: TaskRecord, emptied_at: float | None = None) -> bool:
    """The stopped run ended for a cause the vendor did not give (`ended (ZEGO status 4)`: ZEGO's status answers
    carry no quit reason), as its idle timer would have ended it: one idle timeout after its start (a run that
    never saw a stream), or one idle timeout or more after its room was seen emptying (`emptied_at`, no
    activity since): an idle-out as polling sees it."""
    if record.status not in (TaskStatus.STOPPED, TaskStatus.DORMANT) or record.stop_reason is None:
        return False
    if record.stopped_at is None or record.idle_timeout is None:
        return False
    if stopreasons.phrase_of(record.stop_reason) != stopreasons.Phrase.ENDED:
        return False
    margin = _margin(record.idle_timeout)
    if record.started_at is not None and abs(record.stopped_at - record.started_at - record.idle_timeout) <= margin:
        return True
    return emptied_at is not None and record.stopped_at >= emptied_at + record.idle_timeout - margin


def run_counts(record: TaskRecord) -> tuple[int, int]:
    """(idle-outs, vendor faults) in a row of a task that waits to be started again, the run that ended last
    included (`started` writes them when it is): a productive run resets both; a fault adds to the second
    only (it says nothing about the room, so it never leads to dormancy); any other unproductive end adds to
    the first and ends a series of faults (the vendor ran it to its idle deadline)."""
    if was_productive(record):
        return 0, 0
    if ended_by_fault(record):
        return record.unproductive_runs, record.fault_runs + 1
    return record.unproductive_runs + 1, 0


def resumable_start(task: DesiredTask, record: TaskRecord | None) -> bool:
    """The last start of this same spec was never confirmed, and a start under its recorded ClientTaskId takes
    it up again: a crash (PENDING) or answers lost or refused after the vendor may have acted (FAILED). The
    vendor may be running it, under that id. (`start_unconfirmed`: whatever the spec, may it run.)"""
    return (
        record is not None
        and record.vendor_task_id is None
        and record.client_task_id is not None
        and record.spec_hash == task.spec_hash
    )


def start_unconfirmed(record: TaskRecord) -> bool:
    """Its last start got no answer that named a vendor task: a crash or a Ctrl-C during the call (PENDING),
    or every try failed (FAILED), among them answers lost after the vendor acted. It may be running. A ZEGO
    start the vendor refused keeps no ClientTaskId (`Executor.start`): nothing runs under it (a refused resume
    of an earlier start keeps it: that start may run); nor does a start refused with no answer lost
    (`start_refused`). A failed start left to its room (`failed_start_left`) may run as much: removed, it is
    stopped (walk 47a)."""
    return (
        record.vendor_task_id is None
        and start_outstanding(record)
        and not (record.status is not TaskStatus.PENDING and record.start_refused)
        and (record.family is not ApiFamily.ZEGO_RECORD or record.client_task_id is not None)
    )


MAY_RUN = "its start was never confirmed: it may run at the vendor"


def failed_may_run(record: TaskRecord) -> bool:
    """A failed start that may run all the same (`start_unconfirmed`): answers lost, or a retry of such a start
    refused (walk 46A-1), one left to its room so (`failed_start_left`, walk 49a). Its error alone read as a
    start refused outright, where nothing runs (walk 47B-3): `state list` and the status page add `MAY_RUN`.
    Not a thumbnail's submission (nothing runs)."""
    return (
        (record.status is TaskStatus.FAILED or failed_start_left(record))
        and record.family is not ApiFamily.ZEGO_THUMBNAIL
        and start_unconfirmed(record)
    )


def replace_resumed(task: DesiredTask, record: TaskRecord) -> bool:
    """A replace cut short after its stop (a crash, a start that failed) whose spec has not changed since: only
    its start remains, taken up again as the replace it is (its old run was stopped first; a second stop
    would end the new run it may have started). One left to its room (`failed_start_left`) too: walk 47a made
    it stoppable, and its room's reopening stopped what its start began (walk 48A-1)."""
    return (
        record.replacing
        and record.vendor_task_id is None
        and start_outstanding(record)
        and record.spec_hash == task.spec_hash
    )


def replace_cut_short(record: TaskRecord) -> bool:
    """A replace's stop ended its run and was committed, and the process died before its start's intent
    (failpoint `stop.after-commit`): capctl stopped it, not the vendor, so the start that remains is the
    replace's, no re-issue (walk 49a). (A spec changed since is a replace anyway: `plan._diff_changed`.) A
    Volcengine start never confirmed that the stop ended has no vendor id: `Executor._stop_for_replace` marks it
    `start_refused` with no error (walk 50a); a replace's start refused and left to its room keeps its error."""
    if record.status is not TaskStatus.STOPPED or record.stop_reason != REPLACED:
        return False
    return record.vendor_task_id is not None or (record.start_refused and record.last_error is None)


def findable_start(task: DesiredTask, record: TaskRecord) -> bool:
    """A ZEGO start that was never confirmed (`start_unconfirmed`) and that a start of `task` under its recorded
    ClientTaskId finds: same Provider (ZEGO answers such a start with the recording, if it runs). A tombstone
    whose removal left such a start running (`unfound_start`) too: restored with another spec, a start under a
    new ClientTaskId would record the room twice (walk 25f)."""
    left = (
        record.status is TaskStatus.REMOVED
        and record.family is ApiFamily.ZEGO_RECORD
        and not record.vendor_task_id
        and not record.start_refused  # refused, or never sent: nothing of it runs
    )
    unconfirmed = start_unconfirmed(record) or left
    return record.client_task_id is not None and unconfirmed and record.provider == task.provider


def confirmable(task: DesiredTask, record: TaskRecord) -> bool:
    """A Volcengine start never confirmed (`start_unconfirmed`: a crash, answers lost), of a spec that differs
    from `task` only in values the vendor updates in place. Asked by the RoomId + TaskId it sent, the vendor says
    whether it runs: then it is that start's run (`observed` confirms it) and an update, not a replace, makes
    it `task`'s."""
    return (
        record.family is ApiFamily.VOLC_SNAPSHOT
        and start_unconfirmed(record)
        and record.provider == task.provider
        and record.fixed_hash == task.fixed_hash
        and bool(task.updatable)
        and record.updatable != task.updatable
    )


def stoppable(record: TaskRecord) -> bool:
    """Removing this task means a vendor call to stop it (a one-shot thumbnail, or a run that already
    ended or never got a vendor id, has nothing to stop). A Volcengine start that was never confirmed
    (`start_unconfirmed`) may be running: the vendor names it by the RoomId + TaskId capctl sent, so it is
    stopped by those (an unknown task answers not-found); a ZEGO one (current API) is found first (`lost_start`)."""
    if record.family is ApiFamily.ZEGO_THUMBNAIL:
        return False
    if record.family is ApiFamily.VOLC_SNAPSHOT and start_unconfirmed(record):
        return True
    if lost_start(record):
        return True
    return record.vendor_task_id is not None and record.status in (TaskStatus.RUNNING, TaskStatus.PENDING)


def lost_start(record: TaskRecord) -> bool:
    """A ZEGO start (current API) never confirmed, which may run: ZEGO finds it only by a start under its recorded
    ClientTaskId (its stored request), which answers with that recording, or starts one when none runs. A delete
    finds it so (`Executor._delete`), then stops what it answered: left alone, it recorded,
    unknown, to its idle timeout or maximum duration (walk 25f-2). A start refused or never sent is no such
    start (`start_unconfirmed`: it keeps no ClientTaskId, or is marked `start_refused`)."""
    return record.family is ApiFamily.ZEGO_RECORD and start_unconfirmed(record)


def unfound_start(record: TaskRecord) -> str | None:
    """What a removal that cannot stop this record leaves at the vendor: a legacy ZEGO start never confirmed,
    which nothing finds (no idempotency key), may run on. None when nothing it started can run (a stoppable task,
    one whose run ended, a thumbnail). One text for the plan's reason and the apply's line after the delete."""
    if stoppable(record) or not start_unconfirmed(record) or record.family is ApiFamily.ZEGO_THUMBNAIL:
        return None
    return (
        "its last start was never confirmed and the legacy API cannot find that recording; if it runs, it ends "
        "by itself at its idle timeout or its maximum duration"
    )


def volc_task_name(family: ApiFamily, fields: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(AppId, RoomId, TaskId) of a Volcengine snapshot request or vendor ref: how the vendor names the task,
    so two capctl tasks with the same name are one vendor task (a job renamed with its `taskId` kept)."""
    if family is not ApiFamily.VOLC_SNAPSHOT:
        return None
    app, room, task = (fields.get(f) for f in ("AppId", "RoomId", "TaskId"))
    if isinstance(app, str) and isinstance(room, str) and isinstance(task, str) and app and room and task:
        return app, room, task
    return None


def volc_task_held(record: TaskRecord | None) -> tuple[str, str, str] | None:
    """The Volcengine task (`volc_task_name`) that this record's run may be, so that a stop of the record
    would end it; None when it names none or has nothing to stop."""
    if record is None or not stoppable(record):
        return None
    return volc_task_name(record.family, record.vendor_ids)


def volc_holders(records: Mapping[str, TaskRecord], kept: Container[str]) -> dict[tuple[str, str, str], str]:
    """The Volcengine tasks that the records of the `kept` keys may be running (`volc_task_held`), each with
    its key. Another record naming one of them must not be stopped when it is removed: that would end the kept
    key's run (a renamed job's new key took the running task over while the old key was kept)."""
    return {name: key for key, record in records.items() if key in kept and (name := volc_task_held(record))}


def volc_holding(
    records: Mapping[str, TaskRecord], but: Container[str] = ()
) -> dict[tuple[str, str, str], list[TaskRecord]]:
    """The records (but those of the keys `but`) that may be running each Volcengine task (`volc_task_held`)."""
    held: dict[tuple[str, str, str], list[TaskRecord]] = {}
    for key, record in records.items():
        if key not in but and (name := volc_task_held(record)) is not None:
            held.setdefault(name, []).append(record)
    return held


def settings_since(record: TaskRecord) -> float:
    """When `record` last started or updated in place the run it may hold (0: never recorded)."""
    return max(record.started_at or 0.0, record.updated_at or 0.0)


def runs_as_sent(holders: Sequence[TaskRecord], key: str, request: Mapping[str, Any]) -> bool:
    """Whether the run that `holders` (the records naming one Volcengine task, `volc_task_held`) may be running
    is another key's, started with `request` (redacted): a renamed job's new key takes it over as it runs. Its
    settings are those of the record that started it, or updated it in place, last (an older one, no longer
    declared, kept its own, walk 54C-1; one declared again and updated since the run was taken from it holds the
    run's, 55E-1), unless a start is unconfirmed (it may have begun later), an update unconfirmed, or the
    settings unknown (`found_running`): each such record, and that last one, must have sent `request`."""
    unsure = [r for r in holders if start_unconfirmed(r)]
    confirmed = [r for r in holders if not start_unconfirmed(r)]
    last = [max(confirmed, key=settings_since)] if confirmed else []
    return bool(holders) and all(
        r.key != key and r.request == request and not r.update_unconfirmed and r.spec_hash != UNKNOWN_SETTINGS
        for r in unsure + last
    )


def handed_over_to(record: TaskRecord, holders: Mapping[tuple[str, str, str], str]) -> str | None:
    """The key of `holders` (`volc_holders`) whose run is this removed record's Volcengine task: its delete
    retires it without a stop. None: it is its own."""
    name = volc_task_name(record.family, record.vendor_ids)
    return holders.get(name) if name is not None else None


def intent(
    task: DesiredTask, record: TaskRecord | None, now: float, *, reissue: bool, replace: bool = False
) -> TaskRecord:
    """The record written before a start call; `replace`: a replace's, its old run stopped."""
    if record is not None and resumable_start(task, record):
        # Resume that start under its recorded ClientTaskId (the vendor answers with the same task, if it
        # started one) and its recorded counters: it is still the same run.
        # No next attempt: this is it (a running task that kept its retry slot was listed `due`, walk 14b).
        return record.evolve(status=TaskStatus.PENDING, last_error=None, removed_at=None, next_attempt_at=None)
    cid = client_task_id(task, record) if task.family is ApiFamily.ZEGO_RECORD else None
    # A thumbnail's accepted submission outlives later ones until one of them is taken (walk 20d-6).
    accepted = record.accepted if record is not None else None
    if record is not None and record.family is ApiFamily.ZEGO_THUMBNAIL and record.vendor_task_id:
        accepted = {name: getattr(record, name) for name in (*_ACCEPTED, *_TAKEN_UNDER)}
    base = record or TaskRecord(
        key=task.key,
        provider=task.provider,
        family=task.family,
        kind=task.kind,
        target=task.target,
        spec_hash=task.spec_hash,
        fixed_hash=task.fixed_hash,
    )
    # A re-issue whose start is tried again (after a crash, a failure) was counted at its first intent.
    counted = reissue and not (base.reissuing and start_outstanding(base))
    unproductive, faults = run_counts(base) if counted else (base.unproductive_runs, base.fault_runs)
    return base.evolve(
        provider=task.provider,
        family=task.family,
        spec_hash=task.spec_hash,
        fixed_hash=task.fixed_hash,
        updatable=dict(task.updatable),
        status=TaskStatus.PENDING,
        vendor_task_id=None,
        client_task_id=cid,
        reissue_count=base.reissue_count + (1 if counted else 0),
        reissuing=reissue,
        replacing=replace,
        unproductive_runs=unproductive,
        fault_runs=faults,
        idle_timeout=task.idle_timeout,
        max_duration=task.max_duration,
        restart_policy=task.restart_policy,
        request=redact_tree(task.request),
        labels=dict(task.labels),
        selector=task.selector,
        home=task.home or None,
        # Another try of a failed start keeps its error until a start succeeds: a task whose starts keep
        # failing would otherwise show `pending` without a word for most of each round of retries.
        last_error=base.last_error if base.status is TaskStatus.FAILED else None,
        next_attempt_at=None,
        removed_at=None,
        productive=False,
        update_unconfirmed=False,
        room_empty=False,
        start_refused=False,
        accepted=accepted if task.family is ApiFamily.ZEGO_THUMBNAIL else None,
    )


# What a record that runs no longer waits for, however it came to run (a start, a start confirmed, a run seen):
# a dormant or backing-off record seen running kept its slot and its empty room, and when the run ended the
# daemon honoured that stale slot instead of deciding afresh (walk 18e).
_RUNS: dict[str, Any] = {"next_attempt_at": None, "room_empty": False}


def started(record: TaskRecord, vendor_task_id: str, vendor_ref: dict[str, str], now: float) -> TaskRecord:
    one_shot = record.family is ApiFamily.ZEGO_THUMBNAIL
    return record.evolve(
        **_RUNS,
        accepted=None,
        status=TaskStatus.DONE if one_shot else TaskStatus.RUNNING,
        vendor_task_id=vendor_task_id,
        vendor_ref=dict(vendor_ref),
        started_at=now,
        observed_at=now,
        stopped_at=None,
        stop_reason=None,
        last_error=None,
        reissuing=False,
        replacing=False,
    )


def run_goes_on(started_record: TaskRecord, before: TaskRecord) -> TaskRecord:
    """A re-issue the vendor answered "already running": its run never ended (a stop inferred wrongly, or a
    Volcengine task past GetSnapshotTask's 72 h window, seen "not found" while it runs). The same run goes
    on: no re-issue is counted and it keeps its start time, so it is not taken for a short, idle run."""
    return started_record.evolve(
        reissue_count=before.reissue_count,
        unproductive_runs=before.unproductive_runs,
        fault_runs=before.fault_runs,
        started_at=before.started_at or started_record.started_at,
    )


def updated(record: TaskRecord, task: DesiredTask, now: float) -> TaskRecord:
    return record.evolve(
        spec_hash=task.spec_hash,
        fixed_hash=task.fixed_hash,
        updatable=dict(task.updatable),
        request=redact_tree(task.request),
        labels=dict(task.labels),
        observed_at=now,
        last_error=None,
        update_unconfirmed=False,
        updated_at=max(now, record.updated_at or now),  # its intent's stamp: after another key's takeover
    )


def stopped(record: TaskRecord, reason: str, now: float, *, ended_at: float | None = None) -> TaskRecord:
    """`ended_at`: when the run ended on the daemon's clock (`run_ended_at`); None: now."""
    return record.evolve(status=TaskStatus.STOPPED, stop_reason=reason, stopped_at=ended_at or now, observed_at=now)


def run_ended_at(record: TaskRecord, obs: Observed, now: float) -> float:
    """When the run the vendor reports ended, on the daemon's clock (`laid_end`); without it, now: the run
    ended when it was seen ended."""
    laid = laid_end(record, obs, now)
    return now if laid is None else laid


def laid_end(record: TaskRecord, obs: Observed, now: float) -> float | None:
    """The end of the run the vendor reports, on the daemon's clock (docs/daemon.md "Two clocks"); None when
    the answer or the record lacks a time.

    The vendor's EndTime is on the vendor's clock, which may be minutes off the daemon's and drift: compared
    with the daemon's own start time it would make an empty room's runs look productive (vendor ahead) or a
    productive run look empty (vendor behind). So the run's length is read from the vendor's two times of the
    same run (StartTime to EndTime: one clock) and laid from the start the daemon recorded, never after `now`
    (it ended before it was seen ended): a run the daemon took up running (a start resumed after a crash,
    recorded as starting then) would otherwise end hours ahead of the daemon's clock."""
    if obs.ended_at is None or obs.started_at is None or record.started_at is None:
        return None
    return min(now, record.started_at + max(0.0, obs.ended_at - obs.started_at))


def observed(record: TaskRecord, obs: Observed, now: float) -> TaskRecord:
    """Fold a vendor observation into the record (UNKNOWN changes nothing but nothing is learnt). A start never
    confirmed (`confirmable`), seen running, is confirmed with the ids it sent; seen not running, it stays as it
    is: its start is tried again as planned."""
    if record.vendor_task_id is None and start_unconfirmed(record):
        if obs.state is not ObservedState.RUNNING or (name := volc_task_name(record.family, record.request)) is None:
            return record
        ids = ("AppId", "BusinessId", "RoomId", "TaskId")
        ref = {k: v for k in ids if isinstance(v := record.request.get(k), str) and v}
        began = now if obs.started_at is None else min(obs.started_at, now)  # (the vendor's clock may be ahead)
        return started(record, name[2], ref, now).evolve(started_at=began)
    if obs.state is ObservedState.RUNNING:
        # Never later than now: the vendor's clock may be ahead of the daemon's.
        vendor_start = None if obs.started_at is None else min(obs.started_at, now)
        if record.status is TaskStatus.RUNNING:
            # The vendor's start time only when the daemon took none (a record from before start times).
            return record.evolve(**_RUNS, observed_at=now, started_at=record.started_at or vendor_start)
        # Recorded not running (dormant, backing off, ended, a start resumed after a crash): this is a run of its
        # own. Its start is the vendor's, else when it was seen, and the last run's stop no longer holds: kept,
        # the next end was measured from the old start, and a short idle run looked productive (walk 19c).
        began = now if vendor_start is None else vendor_start
        return record.evolve(
            **_RUNS, status=TaskStatus.RUNNING, observed_at=now, started_at=began, stopped_at=None, stop_reason=None
        )
    if obs.state is ObservedState.UNKNOWN:
        return record
    if record.status is TaskStatus.DORMANT:
        # Its run ended before it went dormant: seeing it stopped again changes nothing (it must stay dormant,
        # or plan/apply would re-issue what the daemon decided to leave alone).
        return record.evolve(observed_at=now)
    reason = obs.reason or obs.detail or obs.state.value
    if obs.state is ObservedState.NOT_FOUND:
        reason = obs.reason or stopreasons.NOT_FOUND
    return stopped(record, reason, now, ended_at=run_ended_at(record, obs, now))


def still_running(record: TaskRecord, new: TaskRecord, since: float) -> bool:
    """`new` only moves the `observed_at` of a running `record` last recorded observed after `since`."""
    return (
        record.status is TaskStatus.RUNNING
        and record.observed_at is not None
        and record.observed_at > since
        and new.evolve(observed_at=record.observed_at) == record
    )


def failed(record: TaskRecord, error: str, now: float, *, next_attempt_at: float | None = None) -> TaskRecord:
    """A start that failed; `next_attempt_at`: when the daemon tries it again (its backoff), in the same write."""
    return record.evolve(status=TaskStatus.FAILED, last_error=error, observed_at=now, next_attempt_at=next_attempt_at)


def action_failed(record: TaskRecord, action: str, error: str) -> TaskRecord:
    """A failed update, stop or delete: the error is recorded with its action, the status stays what it
    was (a task whose stop failed still runs). `observed_at` stays: nothing was seen, and a restart reads it as
    the last good look (`status unknown since`, walk 39B-2)."""
    return record.evolve(last_error=f"{action} failed: {error}")


def not_attempted(record: TaskRecord, error: str) -> TaskRecord:
    """A change left out because its provider stopped answering: the reason is recorded, nothing else
    changes (no call was made, nothing was observed)."""
    return record.evolve(last_error=error)


REPLACED = "replaced"  # the stop reason of a run a replace stopped (a spec change, `--replace`)
_REMOVED = "removed from specs"  # a tombstone's stop reason when its removal stopped it
_HANDED_OVER = "handed over to "


def ended_by_removal(reason: str | None) -> bool:
    """Whether a run ended because its task was taken out of the specs: the run after it (the spec restored)
    starts the task anew, it is no re-issue."""
    return reason is not None and (reason == _REMOVED or reason.startswith(_HANDED_OVER))


def ended_by_capctl(reason: str | None) -> bool:
    """Whether capctl itself ended the run (a replace, a removal): the run after it is no re-issue, which answers
    a stop the vendor made (the record's `reissue_count` counts neither)."""
    return reason == REPLACED or ended_by_removal(reason)


def removed(record: TaskRecord, now: float, *, handed_to: str | None = None) -> TaskRecord:
    """The tombstone of a pruned task: vendor ids, counters and (for a thumbnail) the content hash stay.
    `handed_to`: the key of the specs that holds its vendor task now (not stopped: that key's run goes on)."""
    stopped_now = record.status in (TaskStatus.RUNNING, TaskStatus.PENDING) and record.family is not (
        ApiFamily.ZEGO_THUMBNAIL
    )
    reason = f"{_HANDED_OVER}{handed_to}" if handed_to else _REMOVED
    return record.evolve(
        status=TaskStatus.REMOVED,
        stop_reason=reason if stopped_now else record.stop_reason,
        stopped_at=now if stopped_now else record.stopped_at,
        next_attempt_at=None,
        last_error=None,
        removed_at=now,
    )


# What a thumbnail submission the vendor took is (`TaskRecord.accepted`): what a later intent overwrites.
_ACCEPTED = ("spec_hash", "fixed_hash", "updatable", "request", "vendor_task_id", "vendor_ref", "started_at")
# ... and where it was taken, which `restored` leaves as the record has it: a Provider renamed since re-homes the
# submission with its record (`moves.rehome`), also when the entry is edited back to it after the rename.
_TAKEN_UNDER = ("provider", "home")


def reverted(task: DesiredTask, record: TaskRecord) -> bool:
    """A thumbnail whose later submission was not taken (refused, or pending: its answer lost) is back to its
    accepted one."""
    return (
        record.status is not TaskStatus.DONE
        and record.accepted is not None
        and record.accepted.get("spec_hash") == task.spec_hash
    )


def revives(record: TaskRecord) -> bool:
    """A no-op of this record is a thumbnail back in the specs as submitted (`restored`): its tombstone, or its
    accepted submission after an edit not taken."""
    return record.status is TaskStatus.REMOVED or (record.accepted is not None and record.status is not TaskStatus.DONE)


def restored(record: TaskRecord) -> TaskRecord:
    """A submitted thumbnail back in the specs, unchanged (a tombstone, or an edit not taken reverted): done
    again as it was accepted, without a second submission."""
    back = {name: record.accepted[name] for name in _ACCEPTED if name in record.accepted} if record.accepted else {}
    return record.evolve(
        **back,
        status=TaskStatus.DONE,
        removed_at=None,
        accepted=None,
        last_error=None,
        start_refused=False,
        client_task_id=None,
        next_attempt_at=None,
    )


def submitted(record: TaskRecord) -> bool:
    """A thumbnail submission ZEGO took, as its record holds it: `done`, or the tombstone of one (not one
    whose later edit was refused or its answer lost: that record's content is not what ZEGO took)."""
    return (
        record.family is ApiFamily.ZEGO_THUMBNAIL
        and bool(record.vendor_task_id)
        and record.accepted is None
        and record.status in (TaskStatus.DONE, TaskStatus.REMOVED)
    )


def submitted_before(
    task: DesiredTask,
    candidates: Iterable[TaskRecord],
    declared: Container[str],
    under: Callable[[str], str] | None = None,
) -> TaskRecord | None:
    """The submission ZEGO took of a thumbnail key with no record, under a key no longer `declared` (a
    ThumbnailJob renamed, an entry moved to another job): the record of the very content (file, settings, vendor
    account) as that key holds it. `taken_over` makes it this key's tombstone: the plan reads it as a no-op
    (`submitted before as KEY`) and `engine.persist_restored` revives it `done` with that ZEGO task id:
    MediaThumbnails has no idempotency key, so a new submission made the thumbnails twice (walk 58b). Two keys
    both declared stay two submissions (a task is kind/name/fileId): a submission already taken by a declared
    key is not taken again. `candidates`: records that may be it (the caller's index by file, or all).
    `under`: the task's content hash had its job named another Provider (`spec.expand.hashes_under`): a
    submission under a Provider since renamed, of the same account, is this content too (walk 60a-4: a job
    renamed with its Provider in one edit was submitted again). Of several keys holding it, the one that holds
    it last (`done`, else the last removed) is named (walk 60a-3: an entry moved twice was said taken from the
    key of the first move)."""
    if task.family is not ApiFamily.ZEGO_THUMBNAIL:
        return None

    def same_content(r: TaskRecord) -> bool:
        if r.spec_hash == task.spec_hash:  # (a hash holds the Provider's name: the same one, of a known home)
            return r.home in (None, task.home)
        return under is not None and r.home == task.home and r.spec_hash == under(r.provider)

    held_by = (taken_as(r) for r in candidates)
    same = [r for r in held_by if r is not None and r.family is task.family and same_content(r)]
    # One submission is one key's: another key of the specs that took it already (two jobs naming one file)
    # keeps it, and this one is submitted.
    held = {r.vendor_task_id for r in same if r.key in declared}
    taken = [r for r in same if r.key not in declared and r.vendor_task_id not in held]
    if not taken:
        return None
    return min(taken, key=lambda r: (r.status is not TaskStatus.DONE, -(r.removed_at or 0.0), r.key))


def taken_as(record: TaskRecord) -> TaskRecord | None:
    """The submission ZEGO took that a thumbnail's record holds, as a record of it: the record itself
    (`submitted`), or, a later edit not taken (refused, or its answer lost), its accepted one (`restored`: walk
    60a-6, an entry edited back as its job was renamed was submitted again); None if it holds none."""
    if record.family is not ApiFamily.ZEGO_THUMBNAIL or record.accepted is None:
        return record if submitted(record) else None
    return before if submitted(before := restored(record)) else None


def taken_over(before: TaskRecord, task: DesiredTask) -> TaskRecord:
    """The submission `before` holds (`submitted_before`) as `task`'s tombstone, to be revived under its key:
    under its Provider document (the same account's) and content hash, as the record of a moved task is."""
    return before.evolve(
        key=task.key,
        labels=dict(task.labels),
        selector=task.selector,
        status=TaskStatus.REMOVED,
        provider=task.provider,
        home=task.home,
        spec_hash=task.spec_hash,
        fixed_hash=task.fixed_hash,
    )


def tombstone_expired(record: TaskRecord, now: float) -> bool:
    return (
        record.status is TaskStatus.REMOVED
        and record.removed_at is not None
        and now >= record.removed_at + TOMBSTONE_RETENTION
    )


def waits_for_room(task: DesiredTask, record: TaskRecord) -> bool:
    """A dormant task whose room callbacks said is empty (`TaskRecord.room_empty`) waits for the room's
    activity whatever its spec says: an edit (an interval, a storage key) is started with the room's next
    activity, not into the empty room now. Only in the same room of the same vendor account (another Provider
    or app is another room). A task dormant after idle runs seen by polling only does not wait for an edit:
    nothing says its room is empty, and the edit may be the fix (a job naming the wrong user idles out)."""
    if record.status is not TaskStatus.DORMANT or not record.room_empty:
        return False
    same_account = record.home is None or record.home.partition(" at ")[0] == task.home.partition(" at ")[0]
    return record.provider == task.provider and record.family is task.family and same_account


def failed_start_left(record: TaskRecord) -> bool:
    """A failed start the daemon left to its room once the room closed (walk 43B-1): `stopped`, yet no run of
    it ended (no vendor task). Its next start is what the failed one was (`plan._start_again`); read as a run
    the vendor stopped, a first start was a re-issue, counted, with an unproductive run (walk 44c-3)."""
    return record.status is TaskStatus.STOPPED and record.vendor_task_id is None


def start_outstanding(record: TaskRecord) -> bool:
    """A start not confirmed since its intent: pending (the call made or not), failed, or a failed start left
    to its room (`failed_start_left`). Its record still tells of the run before it, and its intent may have
    counted the next one already."""
    return record.status in (TaskStatus.PENDING, TaskStatus.FAILED) or failed_start_left(record)


def left_to_its_room(record: TaskRecord) -> bool:
    """A room-selector task that ended with its room (stopped, no re-issue slot): its job starts it again when
    the room is selected again (active, within maxRooms), and nothing else does, `capctl wake` included."""
    return record.selector is not None and record.status is TaskStatus.STOPPED and record.next_attempt_at is None


def never_reissued(record: TaskRecord) -> bool:
    """A stopped task whose job the last apply or daemon pass recorded as restartPolicy Never (made Never after
    its run ended: a run that ends under Never is `done`): neither its slot nor `capctl wake` starts it; an edit
    of its job, or `apply --replace`, does."""
    return record.status is TaskStatus.STOPPED and record.restart_policy is RestartPolicy.NEVER


def woken(record: TaskRecord) -> TaskRecord | None:
    """`capctl wake`: a dormant or backing-off task, made due now with its backoff cleared (the next apply,
    or the daemon, re-issues it); None when it is not waiting. A stopped task of a job made restartPolicy Never
    (`never_reissued`) is not: nothing would re-issue it (walk 31a-3)."""
    waiting = record.status is TaskStatus.DORMANT or (
        record.status is TaskStatus.STOPPED
        and not never_reissued(record)
        and (record.next_attempt_at is not None or record.unproductive_runs > 0 or record.fault_runs > 0)
    )
    if not waiting:
        return None
    return record.evolve(
        status=TaskStatus.STOPPED, next_attempt_at=None, unproductive_runs=0, fault_runs=0, room_empty=False
    )
