"""From what the daemon knows to one page's `StatusSnapshot`: pure, so tests and the benchmark call it directly.

The daemon hands over its records, when it next observes each task, the run history, the recent log events
and what this replica is (`StatusInputs`); `build_snapshot` filters, sorts and paginates, and computes the
timelines and their gaps only for the rooms on the page, so a request costs one pass over the records
plus the page itself.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler import transitions
from reconciler.model import ApiFamily, JobKind, TaskRecord, TaskStatus, job_of
from reconciler.status.history import MAX_INTERVALS, History, Run
from reconciler.status.model import (
    SETTLED,
    STATUS_ORDER,
    CaptureLine,
    Decision,
    Gap,
    Interval,
    JobView,
    PageInfo,
    Reissue,
    Replica,
    RoomTimeline,
    StatusGroup,
    StatusQuery,
    StatusSnapshot,
    TaskView,
)

__all__ = [
    "MAX_ATTENTION",
    "MIN_GAP_SECONDS",
    "MIN_WINDOW_SECONDS",
    "StatusInputs",
    "build_snapshot",
]

MAX_ATTENTION = 50  # troubled jobs listed at the top; the rest are counted and reached through the filter
MAX_FIELD_CHARS = 300  # a log field longer than this is cut on the page (the log line itself has it whole)
# A shorter gap is not shown: a new task's first start, or a callback-driven re-issue, takes a few hundred
# milliseconds, and at 24 h per bar a second is a twentieth of a pixel.
MIN_GAP_SECONDS = 1.0
MIN_WINDOW_SECONDS = 900.0  # the shortest span a timeline draws
# How late after the daemon's prune grace a prune still counts as the edit's own (its queue, a takeover's fresh
# grace): a held prune a human confirmed takes minutes (stop the daemon, `capctl apply --prune`).
PRUNE_LATE_SECONDS = 60.0
_RANK = {s: i for i, s in enumerate(STATUS_ORDER)}


def _never(_: str) -> float | None:
    return None


@dataclass(frozen=True, slots=True)
class StatusInputs:
    """What the daemon knows, handed over as is (the builder copies nothing it does not show)."""

    records: Sequence[TaskRecord]
    replica: Replica
    history: History
    next_observation: Callable[[str], float | None] = _never  # when the daemon next observes a task
    events: Sequence[Mapping[str, Any]] = ()  # recent log events, oldest first (reconciler.logs.recent_events)
    next_retry: Callable[[str], float | None] = _never  # when it tries a task whose last reconcile failed again
    # key -> why the last look at the vendor failed: the task's status is unknown (the vendor down, a wrong secret)
    look_errors: Mapping[str, str] = field(default_factory=dict)
    unknown_since: Mapping[str, float] = field(default_factory=dict)  # key -> its first failed look in a row
    # Provider name -> its vendor account: a room is an account's (two apps may both have a `lobby`)
    accounts: Mapping[str, str] = field(default_factory=dict)
    # The daemon's --prune-grace: a stopped selector task pruned within it (and PRUNE_LATE_SECONDS) of the edit
    # that left its room out was the edit's own prune, no loss after the edit (walk 53c).
    prune_grace: float = 0.0
    # False: --no-prune, no prune of the daemon's own comes: a task still the job's is kept from the edit on (its
    # page drew none for the grace and a minute, then the loss since the edit: walk 54b). A tombstone's removal
    # says itself whether it was the edit's own prune (one made before a restart with --no-prune).
    prunes: bool = True


def build_snapshot(inputs: StatusInputs, query: StatusQuery, now: float) -> StatusSnapshot:
    # One pass over every record: counts per job and status, and the sort keys of those the filters keep.
    counts: dict[tuple[str, TaskStatus], int] = {}
    matching: list[tuple[str, int, str, TaskRecord]] = []
    rank, last = _RANK, len(_RANK)
    # Per job, its tasks left to their rooms: stopped as a room-selector job's normal life, not a trouble.
    waiting: Counter[str] = Counter()
    prune_held = inputs.replica.prune_held
    status_filter, key_filter = query.status, query.job is not None or query.room is not None
    for record in inputs.records:
        key, status = record.key, record.status  # a StrEnum is its text: `.value` per record cost a third
        job = job_of(key)
        counts[job, status] = counts.get((job, status), 0) + 1
        if status is TaskStatus.STOPPED and _waits_for_room(record, prune_held, inputs.history):
            waiting[job] += 1
        if (status_filter is None or status == status_filter) and (not key_filter or query.matches_key(key)):
            matching.append((job, rank.get(status, last), key, record))
    by_job: dict[str, dict[str, int]] = defaultdict(dict)
    totals: Counter[str] = Counter()
    for (job, state), n in counts.items():
        by_job[job][state.value] = n
        totals[state.value] += n
    matching.sort()  # keys are unique, so the records themselves are never compared
    pages = max(1, -(-len(matching) // query.per_page))
    number = min(query.page, pages)
    shown = [m[3] for m in matching[(number - 1) * query.per_page : number * query.per_page]]
    # A job needs a look when a task of it is not running, done or removed, nor waiting for its room.
    unsettled = {j: sum(n for s, n in c.items() if s not in SETTLED) - waiting[j] for j, c in by_job.items()}
    troubled = sorted((j for j, n in unsettled.items() if n), key=lambda j: (-unsettled[j], j))
    return StatusSnapshot(
        generated_at=now,
        replica=inputs.replica,
        totals=_ordered(totals),
        jobs_total=len(by_job),
        jobs_removed=sum(1 for c in by_job.values() if c.keys() == {TaskStatus.REMOVED.value}),
        attention=tuple(_job_view(j, by_job[j], ()) for j in troubled[:MAX_ATTENTION]),
        attention_more=max(0, len(troubled) - MAX_ATTENTION),
        job_names=tuple(sorted(by_job)),
        query=query,
        page=PageInfo(number, query.per_page, len(matching), pages),
        jobs=_jobs_on_page(shown, by_job, inputs, now),
        rooms=_rooms_on_page(shown, inputs, now),
        decisions=_decisions(inputs, query),
        unknown=len(inputs.look_errors),
        waiting=sum(waiting.values()),
    )


def _ordered(counts: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(((s, n) for s, n in counts.items() if n), key=lambda sn: _RANK.get(sn[0], len(_RANK))))


def _job_view(job: str, counts: Mapping[str, int], tasks: Sequence[TaskView]) -> JobView:
    groups: dict[str, list[TaskView]] = defaultdict(list)
    for task in tasks:
        groups[task.status].append(task)
    return JobView(
        job=job,
        counts=_ordered(counts),
        groups=tuple(StatusGroup(s, counts[s], tuple(groups[s])) for s, _ in _ordered(counts) if groups.get(s)),
    )


def _jobs_on_page(
    shown: Sequence[TaskRecord], by_job: Mapping[str, Mapping[str, int]], inputs: StatusInputs, now: float
) -> tuple[JobView, ...]:
    tasks: dict[str, list[TaskView]] = defaultdict(list)
    for record in shown:  # already in job order
        tasks[job_of(record.key)].append(_task_view(record, inputs, now))
    return tuple(_job_view(job, by_job[job], views) for job, views in tasks.items())


def _task_view(record: TaskRecord, inputs: StatusInputs, now: float) -> TaskView:
    status = record.status.value
    return TaskView(
        key=record.key,
        job=job_of(record.key),
        target=record.target,
        provider=record.provider,
        status=status,
        vendor_task_id=record.vendor_task_id,
        running_since=record.started_at if status == "running" else None,
        stopped_at=record.stopped_at if status != "running" else None,
        stop_reason=record.stop_reason if status != "running" else None,
        reissue_count=record.reissue_count,
        reissues=_reissues(inputs.history.runs(record.key), now - inputs.history.window),
        last_error=record.last_error,
        status_unknown=inputs.look_errors.get(record.key),
        status_unknown_since=inputs.unknown_since.get(record.key),
        next_observation=inputs.next_observation(record.key) if status == "running" else None,
        next_attempt=_next_attempt(record, inputs),
        prune_held=record.key in inputs.replica.prune_held,
        # Only a submission the vendor took: an edited entry's failed or pending one keeps the last one's start.
        submitted_at=record.started_at if record.family is ApiFamily.ZEGO_THUMBNAIL and record.vendor_task_id else None,
        waits_for_room=_waits_for_room(record, inputs.replica.prune_held, inputs.history),
        start_may_run=transitions.failed_may_run(record),
    )


def _waits_for_room(record: TaskRecord, prune_held: Collection[str], history: History) -> bool:
    """Left to its room (`transitions.left_to_its_room`), and not a removed one whose stop a prune holds (or
    `--no-prune` keeps, or its prune grace): its job's globs kept in the state leave its room out, which every
    replica reads alike (a standby has no `prune_held`, the leader's memory: it said "when its room is selected
    again" of a task no selection starts); `prune_held` still tells a state kept before the globs were."""
    if not transitions.left_to_its_room(record) or record.key in prune_held:
        return False
    return not history.left_out(job_of(record.key), record.target)


def _next_attempt(record: TaskRecord, inputs: StatusInputs) -> float | None:
    """A stopped or dormant task's re-issue slot; a failed one's next retry in the daemon's queue, or else the
    one recorded with its failure (the queue's is exact after `capctl sync` or a restart)."""
    status = record.status
    if status is TaskStatus.FAILED:
        return inputs.next_retry(record.key) or record.next_attempt_at
    return record.next_attempt_at if status in (TaskStatus.STOPPED, TaskStatus.DORMANT) else None


def _reissues(runs: Sequence[Run], horizon: float) -> tuple[Reissue, ...]:
    """Each run that followed one which ended with a reason: started again because of that reason. Where the
    history keeps the task's re-issue count at both runs' starts (`Run.reissues`), the counts say it, as the
    record and `capctl_reissues_total` do: a replace or a restore of a run the vendor had ended is none (walk
    42B-6). Otherwise (runs an older capctl kept) it is guessed from why the run before ended: not one that
    followed a replace or a removal (the spec restored), which capctl ended, not the vendor."""
    found = [
        Reissue(after.start, before.reason)
        for before, after in itertools.pairwise(runs)
        if before.reason is not None and after.start >= horizon and _reissued(before, after)
    ]
    return tuple(reversed(found))


def _reissued(before: Run, after: Run) -> bool:
    if before.reissues is not None and after.reissues is not None:
        return after.reissues > before.reissues
    return before.reason is not None and not transitions.ended_by_capctl(before.reason)


def _rooms_on_page(shown: Sequence[TaskRecord], inputs: StatusInputs, now: float) -> tuple[RoomTimeline, ...]:
    """Rooms of the page's snapshot and recording tasks (a thumbnail's target is a file, not a room), each of
    its vendor account (a task of a Provider no longer declared: of that name, which no activity is of)."""
    history, accounts = inputs.history, inputs.accounts
    own_prune = inputs.prune_grace + PRUNE_LATE_SECONDS
    rooms: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in shown:
        if record.kind is not JobKind.THUMBNAIL:
            rooms[record.target, accounts.get(record.provider, record.provider)].append(record.key)
    selected = {record.key for record in shown if record.selector is not None}
    may_run = {record.key for record in shown if transitions.failed_may_run(record)}
    # A tombstone's job no longer wants its room captured: what the room did after the removal is no loss of it.
    removed = {r.key: r.removed_at for r in shown if r.status is TaskStatus.REMOVED and r.removed_at is not None}
    live = {r.key for r in shown if r.status is not TaskStatus.REMOVED}
    window = _window(rooms, history, now)
    timelines = []
    for room, account in sorted(rooms):
        spans = history.activity(account, room)
        active = _clip([Interval(a.start, now if a.end is None else a.end) for a in spans or ()], window)
        timelines.append(
            RoomTimeline(
                room=room,
                account=account,
                window=window,
                active=active,
                activity_reported=spans is not None,
                captures=tuple(
                    replace(
                        _capture_line(
                            key,
                            history,
                            window,
                            active,
                            room if key in selected else None,
                            removed.get(key),
                            now if key in live else removed.get(key),
                            own_prune if inputs.prunes or key not in live else 0.0,
                        ),
                        start_may_run=key in may_run,
                    )
                    for key in rooms[room, account]
                ),
            )
        )
    return tuple(timelines)


def _window(rooms: Mapping[tuple[str, str], Sequence[str]], history: History, now: float) -> Interval:
    """One scale for every bar of the page: the last 24 h, or less when the history known for these rooms
    is younger (a daemon started 10 minutes ago draws 10 minutes, not a sliver of a day), at least
    MIN_WINDOW_SECONDS."""
    known = [t for keys in rooms.values() for k in keys if (t := history.known_since(k)) is not None]
    known += [a[0].start for room, account in rooms if (a := history.activity(account, room))]
    earliest = min(known, default=now)
    return Interval(max(now - history.window, min(earliest, now - MIN_WINDOW_SECONDS)), now)


def _clip(spans: Iterable[Interval], window: Interval) -> tuple[Interval, ...]:
    clipped = (Interval(max(s.start, window.start), min(s.end, window.end)) for s in spans)
    return tuple(s for s in clipped if s.end > s.start)


def _capture_line(
    key: str,
    history: History,
    window: Interval,
    active: Sequence[Interval],
    selected: str | None,
    removed: float | None,
    stayed: float | None,
    own_prune: float,
) -> CaptureLine:
    """`selected`: the room, for a room-selector job's task; `stayed`: until when the task was the job's (now,
    or a tombstone's removal; None: not known); `own_prune`: how long after an edit its own prune may come."""
    runs = history.runs(key)
    since = history.known_since(key)
    if selected is not None and since is not None and len(runs) < MAX_INTERVALS:
        # A room-selector job's task exists from its room's first run: the activity before it, in the session
        # it started in, was not captured (left out past maxRooms, or the start's own delay), and is drawn as
        # lost, not as history unknown: "was room-0003 captured?" read "no gap" for 7 minutes left out (25e).
        # Not when its oldest runs were dropped (MAX_INTERVALS): the first one kept is not its first. Nor
        # before the job's globs covered the room: a selector widened to a room already active (41C-4).
        began = next((a.start for a in active if a.start <= since < a.end), since)
        covered = history.covered_from(job_of(key), selected, since)
        since = began if covered is None else max(began, covered)
    if selected is not None:  # nor while its globs left the room out (narrowed, then widened again: 48B-1)
        uncovered = history.uncovered(job_of(key), selected)
        active = _without(active, [u for u in uncovered if not _kept(u, runs, stayed, own_prune)])
    end = window.end if removed is None else max(window.start, min(removed, window.end))
    known = Interval(end if since is None else min(end, max(since, window.start)), end)
    spans = _clip([Interval(r.start, window.end if r.end is None else r.end) for r in runs], window)
    gaps: list[Gap] = []
    cursor, reason = known.start, _reason_before(runs, known.start)
    for run, span in zip(_in_window(runs, window), spans, strict=True):
        if span.start - cursor >= MIN_GAP_SECONDS:
            gaps += _split_by_activity(Interval(cursor, span.start), active, reason)
        cursor, reason = max(cursor, span.end), run.reason
    if known.end - cursor >= MIN_GAP_SECONDS:
        gaps += _split_by_activity(Interval(cursor, known.end), active, reason)
    return CaptureLine(key=key, runs=spans, gaps=tuple(gaps), known_since=known.start)


def _kept(uncovered: Interval, runs: Sequence[Run], stayed: float | None, own_prune: float) -> bool:
    """Whether the task stayed the job's while its globs left the room out: a run that went on across the
    edit (a prune held by `--max-prune`, or none: a pruned run ends by its removal, no loss after it anyway),
    or, for the globs in force now (or since the job's removal), until a prune tombstones it later than the
    edit's own prune would have (held, `--no-prune`; the line of a tombstone ends at its removal). Its loss
    then is real: the safeguard presumes the edit a mistake until a human confirms it, as a named-room task's
    is drawn (walk 49B-1), and a confirmation does not undo that (walk 50B-3). Not within the daemon's prune
    grace: the user asked for the room out, and the grace only guards against a spec file rewritten in place;
    `capctl apply --prune` of the same edit drew no loss (walk 53c). Read from the record, not from the
    leader's `prune_held`, which a standby does not have: every replica's page draws the same (walk 50B-1)."""
    if stayed is not None and uncovered.end == math.inf and stayed > uncovered.start + own_prune:
        return True
    return any(r.start < uncovered.start and (r.end is None or r.end > uncovered.start) for r in runs)


def _without(spans: Sequence[Interval], cuts: Sequence[Interval]) -> tuple[Interval, ...]:
    """`spans` less the time `cuts` (in start order) hold."""
    out = []
    for span in spans:
        start = span.start
        for cut in cuts:
            if cut.end <= start or cut.start >= span.end:
                continue
            if cut.start > start:
                out.append(Interval(start, cut.start))
            start = max(start, cut.end)
        if start < span.end:
            out.append(Interval(start, span.end))
    return tuple(out)


def _in_window(runs: Sequence[Run], window: Interval) -> list[Run]:
    """The runs `_clip` keeps, in the same order (so they pair with their clipped spans)."""
    return [r for r in runs if min(window.end if r.end is None else r.end, window.end) > max(r.start, window.start)]


def _reason_before(runs: Sequence[Run], at: float) -> str | None:
    ended = [r for r in runs if r.end is not None and r.end <= at]
    return ended[-1].reason if ended else None


def _split_by_activity(gap: Interval, active: Sequence[Interval], reason: str | None) -> list[Gap]:
    """The gap in pieces: while the room was active (capture lost) and while it was not. After a run its
    removal stopped, none is lost: the job was out of the specs until it was restored."""
    if transitions.ended_by_removal(reason):
        active = ()
    cuts = sorted({gap.start, gap.end} | {t for a in active for t in (a.start, a.end) if gap.start < t < gap.end})
    pieces = []
    for start, end in itertools.pairwise(cuts):
        mid = (start + end) / 2
        pieces.append(Gap(start, end, any(a.start <= mid < a.end for a in active), reason))
    merged: list[Gap] = []
    for piece in pieces:  # neighbours of the same kind are one gap
        if merged and merged[-1].room_active == piece.room_active:
            merged[-1] = Gap(merged[-1].start, piece.end, piece.room_active, reason)
        else:
            merged.append(piece)
    return [g for g in merged if g.seconds >= MIN_GAP_SECONDS]  # a piece under a second is not drawn, nor lost


def _decisions(inputs: StatusInputs, query: StatusQuery) -> tuple[Decision, ...]:
    """The newest log events that pass the filters: `job` and `room` by the event's task key, or by its `job` and
    `room` fields (a room a selector job left out or another job has: no task, so only these lines say why);
    `status` by that task's status."""
    if query.decisions == 0:
        return ()
    status_of = {r.key: r.status.value for r in inputs.records} if query.status is not None else {}
    found: list[Decision] = []
    for event in reversed(inputs.events):
        key = event.get("key")
        key = key if isinstance(key, str) and key.count("/") >= 2 else None
        about = key or _room_key(event)
        if (query.job is not None or query.room is not None) and (about is None or not query.matches_key(about)):
            continue
        if query.status is not None and (key is None or status_of.get(key) != query.status):
            continue
        found.append(_decision(event, key))
        if len(found) == query.decisions:
            break
    return tuple(found)


def _room_key(event: Mapping[str, Any]) -> str | None:
    """The task key a room-selector line (its `job` and `room` fields) is about, or None."""
    job, room = event.get("job"), event.get("room")
    if isinstance(job, str) and job.count("/") == 1 and isinstance(room, str) and room:
        return f"{job}/{room}"
    return None


def _decision(event: Mapping[str, Any], key: str | None) -> Decision:
    skip = {"event", "timestamp", "level", "key"}
    return Decision(
        at=str(event.get("timestamp", "")),
        level=str(event.get("level", "")),
        event=_cut(str(event.get("event", ""))),
        key=key,
        fields=tuple((k, _cut(_field_text(v))) for k, v in event.items() if k not in skip),
    )


def _field_text(value: object) -> str:
    """A logged value as the JSON log line writes it (`null`, `true`, `["specs"]`), a text as itself."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 1] + "…"
