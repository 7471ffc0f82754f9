"""When the daemon re-issues a stopped task, and how often it looks at a running one. Pure.

Re-issue without thrashing (design.md): the first re-issue after a stop is immediate; consecutive
unproductive runs (a task that idled out without output) back off exponentially; past a threshold the
task is dormant (no calls) until room activity or its next backoff slot. A run that produced something
resets the count. A max-duration rollover is re-issued at once and never counts against the task.

Rooms known empty (issue 17): when the vendor sends room callbacks, a run that idled out with no room
activity reported since the room was last seen empty is not re-issued at all: the task goes dormant and is
started on the room's next join or stream. Only a repair slot every EMPTY_ROOM_RECHECK remains, for a join
whose callback was lost (≤ 2 calls per empty room-hour: one start, one look at its idle deadline).

Vendor faults: a run the vendor ended for a cause that says nothing about its room (`transitions.ended_by_fault`:
a network loss, an engine failure, an internal error, a stop out of band) is not an idle-out, so it neither
feeds that backoff nor leads to dormancy: it is retried as Kubernetes restarts a crashing container
(CrashLoopBackOff), the first time at once, then after 5 s, 10 s, 20 s, 40 s, and 60 s each time after that,
counted from the stop, until a productive run resets the count. Whether the room was occupied before the
run started does not matter (a fault ends a run whatever the room holds); only a room known empty (a room
callback said it emptied, and no activity since) makes the task dormant until its next activity.

Polling: each running task is observed once per sweep period = max(resync, tasks ÷ query budget), so the
budget is a ceiling and never a target. Callback hints move a look, but never past one sweep period after
the last observation: a run that stopped unannounced is seen within that period. Volcengine sends no
task-stopped callback, so a snapshot run is also looked at when its images stop arriving (`image_silence_look`,
as vendor-apis.md allows): a run a fault ended in a room with streams is seen in seconds, not at the next sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler import stopreasons, transitions
from reconciler.model import ApiFamily, TaskRecord, TaskStatus

__all__ = [
    "CALLBACK_RETRY_WINDOW",
    "DEADLINE_MARGIN",
    "DORMANT_AFTER",
    "EMPTY_ROOM_RECHECK",
    "FAULT_RETRY_BASE",
    "FAULT_RETRY_CAP",
    "IMAGE_SILENCE_INTERVALS",
    "MAX_PRUNE_PERCENT",
    "PROBE_DELAY",
    "PROBE_INTERVAL",
    "REISSUE_BACKOFF_BASE",
    "REISSUE_BACKOFF_CAP",
    "ROLLOVER_SLACK",
    "STILL_RUNNING_WRITE_EVERY",
    "ReissueDecision",
    "backoff_delay",
    "expected_deadline",
    "fault_delay",
    "hinted_look",
    "idled_out",
    "image_silence_look",
    "is_rollover",
    "may_have_idled",
    "postpone",
    "prune_blocked",
    "reissue_decision",
    "rollover_at",
    "room_known_empty",
    "sweep_period",
]

REISSUE_BACKOFF_BASE = 60.0  # seconds: the wait after the 2nd unproductive run in a row
# The longest wait between two attempts of an unproductive task where nothing says its room is empty (polling
# only): chosen from the trade-off measured by `bench/coverage_day.py --backoff-caps` (bench/README.md; 100
# rooms × 6 h, polling only): 120 s 98.5 % of stream-seconds for 49 calls per empty room-hour, 300 s 95.1 % for
# 24, 900 s 82.6 % for 11, 1,800 s 60.8 % for 7.4, 3,600 s 37.2 % for 5.5. Past 300 s each call saved costs
# at least 1 % of coverage; below it, one more percent costs some 7 calls.
REISSUE_BACKOFF_CAP = 300.0
# The retry after a vendor fault (CrashLoopBackOff's 10 s doubling to 5 min, shortened: a fault in an occupied
# room costs capture every second it waits): the 2nd fault in a row waits 5 s, each next one twice as long, at
# most 60 s, so a vendor that fails every run is asked once a minute per task, no more.
FAULT_RETRY_BASE = 5.0
FAULT_RETRY_CAP = 60.0
DORMANT_AFTER = 4  # unproductive runs in a row after which the task goes dormant
ROLLOVER_SLACK = 2.0  # seconds: a run this close to its max duration ended because of it
# A look that finds a running task running, with nothing else new, writes its record (`observed_at`) only when
# the recorded look is this old, as kubelet writes an unchanged node status every nodeStatusReportFrequency (5
# min): decisions read the daemon's own time of the last look (`KeyRuntime.looked_at`); only a callback hint
# before the first look after a restart reads the record's, where an older time brings a look forward.
STILL_RUNNING_WRITE_EVERY = 300.0
DEADLINE_MARGIN = 5.0  # seconds after an expected vendor deadline before looking (the vendor's own lag)
# A run whose room emptied stops one idle timeout later: look just after that, then every PROBE_INTERVAL
# while it still runs, until DEADLINE_MARGIN has passed (a re-issue within a second of the stop).
PROBE_DELAY = 0.5
# Image intervals without an image after which a running snapshot run is looked at: one late image (the
# callback's own delay, a retry) is not yet a stop.
IMAGE_SILENCE_INTERVALS = 2
PROBE_INTERVAL = 1.0
# seconds: how long a task whose room is known empty stays dormant before one repair start (a lost join)
EMPTY_ROOM_RECHECK = 3600.0
# seconds: a callback refused (or sent while no replica listened) is lost once the vendor's retries end:
# Volcengine's, and ZEGO cloud recording's, two retries 5 s apart (vendor-apis.md); ZEGO room callbacks go on
# for 62 s. A silence longer than this may have lost a room's join: a new term gives its rooms known empty
# their repair start at once (walks 20F-3, 21D-1); a shorter one (a quick restart) loses nothing.
CALLBACK_RETRY_WINDOW = 10.0


# --max-prune: a spec change may prune at most this share (%) of the tasks in the state at once; above it,
# none is pruned until a human confirms (as Argo CD's and Flux's prune safeguards).
MAX_PRUNE_PERCENT = 50.0


def prune_blocked(removed: int, known: int, max_percent: float) -> bool:
    """More than `max_percent` % of the `known` tasks would be pruned. 100 disables the safeguard; with a
    single task, removing it is 100 %: blocked unless disabled."""
    if removed == 0 or max_percent >= 100:
        return False
    return removed * 100 > max_percent * max(known, removed)


@dataclass(frozen=True, slots=True)
class ReissueDecision:
    """`delay` 0 means now. `unproductive` (idle-outs) and `faults` (vendor faults) count the run that just
    ended (`transitions.run_counts`)."""

    delay: float
    dormant: bool
    rollover: bool
    unproductive: int
    faults: int = 0
    room_empty: bool = False  # dormant because its room is known empty (`room_known_empty`)

    @property
    def immediate(self) -> bool:
        return self.delay <= 0


def is_rollover(record: TaskRecord, *, hinted: bool = False) -> bool:
    """The run ended at its max duration: a callback said so (quit_reason 4) or its length shows it."""
    if hinted:
        return True
    if record.max_duration is None or record.started_at is None or record.stopped_at is None:
        return False
    return record.stopped_at - record.started_at >= record.max_duration - ROLLOVER_SLACK


def backoff_delay(unproductive: int) -> float:
    """0 for the first re-issue after a stop (0 or 1 unproductive runs), then 60 s, 120 s, 240 s, ≤ 300 s."""
    if unproductive <= 1:
        return 0.0
    return min(REISSUE_BACKOFF_CAP, REISSUE_BACKOFF_BASE * 2.0 ** (unproductive - 2))


def fault_delay(faults: int) -> float:
    """0 for the first retry after a vendor fault, then 5 s, 10 s, 20 s, 40 s, ≤ 60 s (from the stop)."""
    if faults <= 1:
        return 0.0
    return min(FAULT_RETRY_CAP, FAULT_RETRY_BASE * 2.0 ** (faults - 2))


def idled_out(record: TaskRecord) -> bool:
    """The vendor stopped the run for its idle timeout: it saw no stream for that long (it said so, or the run
    ended without a cause exactly one idle timeout after its start, `transitions.ended_as_idle`)."""
    if record.status is TaskStatus.RUNNING:
        return False
    phrase = stopreasons.phrase_of(record.stop_reason or "")
    return phrase == stopreasons.Phrase.IDLE_TIMEOUT or transitions.ended_as_idle(record)


def room_known_empty(record: TaskRecord, *, feed: bool, active_at: float | None, emptied_at: float | None) -> bool:
    """The stopped run's room is known to be empty now: room callbacks arrive for its app (`feed`), and either
    the run idled out (the vendor saw no stream for one idle timeout) with no room activity reported since the
    run started or the room was last seen empty (`emptied_at`), whichever is later; or it ended without a cause
    one idle timeout or more after a callback said the room emptied, with no activity since (an idle-out as
    polling sees it, `transitions.ended_as_idle`); or a fault ended it (which says nothing of the room) and a
    callback said the room emptied after its last activity."""
    if not feed:
        return False
    if transitions.ended_by_fault(record):
        return emptied_at is not None and (active_at is None or active_at < emptied_at)
    since = max(record.started_at or 0.0, emptied_at or 0.0)
    if active_at is not None and active_at >= since:
        return False
    if idled_out(record):
        return True
    # A longer run ended without a cause is an idle-out only one idle timeout after a callback said its room
    # emptied: a user there since before its start may be there still.
    emptied = emptied_at is not None and (active_at is None or active_at < emptied_at)
    return emptied and transitions.ended_as_idle(record, emptied_at)


def may_have_idled(record: TaskRecord, *, active_at: float | None, emptied_at: float | None, now: float) -> bool:
    """A running record whose room was seen emptying during its run, one idle timeout ago or more, with no
    activity since: the vendor may have stopped it unannounced (Volcengine has no task-stopped callback)."""
    if record.status is not TaskStatus.RUNNING or emptied_at is None or record.idle_timeout is None:
        return False
    if active_at is not None and active_at >= emptied_at:
        return False
    return emptied_at >= (record.started_at or 0.0) and now >= emptied_at + record.idle_timeout


def reissue_decision(
    record: TaskRecord,
    now: float,
    *,
    rollover_hint: bool = False,
    room_active: bool = False,
    room_empty: bool = False,
) -> ReissueDecision:
    """What to do with a task the vendor stopped (restartPolicy Always).

    A wait already scheduled (`next_attempt_at`) is honoured until it has passed; then the task goes.
    `room_active`: room activity was reported since the run started, so there is something to capture now.
    `room_empty`: the room is known empty (`room_known_empty`): dormant until activity or the repair slot.
    A run a vendor fault ended waits `fault_delay` from its stop whatever the room holds (room activity does
    not mend the vendor), unless its room is known empty.
    """
    rollover = is_rollover(record, hinted=rollover_hint)
    unproductive, faults = (0, 0) if rollover else transitions.run_counts(record)
    if faults:
        return _after_fault(record, now, unproductive, faults, room_active=room_active, room_empty=room_empty)
    if room_active:
        return ReissueDecision(0.0, False, rollover, unproductive)
    if record.next_attempt_at is not None:
        wait = max(0.0, record.next_attempt_at - now)
        return ReissueDecision(wait, record.status is TaskStatus.DORMANT and wait > 0, rollover, unproductive)
    if rollover:
        return ReissueDecision(0.0, False, True, unproductive)
    if room_empty:
        return ReissueDecision(EMPTY_ROOM_RECHECK, True, False, unproductive, room_empty=True)
    delay = backoff_delay(unproductive)
    return ReissueDecision(delay, unproductive >= DORMANT_AFTER, False, unproductive)


def _after_fault(
    record: TaskRecord, now: float, unproductive: int, faults: int, *, room_active: bool, room_empty: bool
) -> ReissueDecision:
    """`reissue_decision` of a run a vendor fault ended: its retry `fault_delay` after the stop; dormant, as an
    idle-out would be, while its room is known empty, and woken by room activity to that same retry."""
    retry = max(0.0, (record.stopped_at or now) + fault_delay(faults) - now)
    if record.status is TaskStatus.DORMANT and room_active:
        return ReissueDecision(retry, False, False, unproductive, faults)
    if record.next_attempt_at is not None:
        wait = max(0.0, record.next_attempt_at - now)
        return ReissueDecision(wait, record.status is TaskStatus.DORMANT and wait > 0, False, unproductive, faults)
    if room_empty:
        return ReissueDecision(max(retry, EMPTY_ROOM_RECHECK), True, False, unproductive, faults, room_empty=True)
    return ReissueDecision(retry, False, False, unproductive, faults)


def postpone(record: TaskRecord, decision: ReissueDecision, now: float) -> TaskRecord:
    """The record of a task whose re-issue waits: dormant or stopped, with its next attempt time."""
    status = TaskStatus.DORMANT if decision.dormant else TaskStatus.STOPPED
    return record.evolve(status=status, next_attempt_at=now + decision.delay, room_empty=decision.room_empty)


def sweep_period(resync: float, tasks: int, query_rate: float) -> float:
    """How often each running task of one query budget is observed: max(resync, tasks ÷ rate)."""
    if query_rate <= 0:
        raise ValueError(f"query rate must be positive, got {query_rate}")
    return max(resync, tasks / query_rate)


def hinted_look(hint: float, last_observed: float, period: float) -> float:
    """When to look at a running task that a callback hint says can wait until `hint`: never later than one
    sweep period after its last observation. A hint may bring a look forward, never hold it off past
    `--resync` (ZEGO signs only a callback's timestamp and nonce, so its body cannot be trusted that far)."""
    return min(hint, last_observed + period)


def image_silence_look(record: TaskRecord, now: float, last_observed: float, share: float) -> float | None:
    """When to look at a running Volcengine snapshot run whose image arrived at `now`, should no next image
    come: IMAGE_SILENCE_INTERVALS image intervals plus DEADLINE_MARGIN later. Never sooner than `share` (one
    task's share of its query budget: tasks ÷ query rate) after its last observation, so these looks, all
    together, stay within the budget. None for a run that sends no images at an interval (ZEGO)."""
    interval = record.updatable.get("interval") if record.family is ApiFamily.VOLC_SNAPSHOT else None
    if interval is None:
        return None
    return max(now + IMAGE_SILENCE_INTERVALS * interval + DEADLINE_MARGIN, last_observed + share)


def rollover_at(record: TaskRecord, next_look: float) -> float | None:
    """When a running recording reaches its max duration, if that comes before `next_look`: the daemon then
    probes around it (as around an idle deadline) instead of waiting for the end callback, which may be
    late or lost (rollover gap, issue 17)."""
    if record.max_duration is None or record.started_at is None:
        return None
    at = record.started_at + record.max_duration
    return at if next_look > at else None


def expected_deadline(record: TaskRecord) -> float | None:
    """The earliest time the vendor may stop a running task by itself, when no output was seen:
    one idle timeout after its start (a room that never had a stream), or its max duration."""
    if record.started_at is None:
        return None
    deadlines = [record.started_at + d for d in (record.idle_timeout, record.max_duration) if d is not None]
    return min(deadlines) + DEADLINE_MARGIN if deadlines else None
