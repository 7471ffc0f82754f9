"""Room-selector jobs at run time: (selector job × known active rooms) → desired tasks, and their plan view.

Pure: the room activity comes from the state (`StateStore.room_activity()`, written by the daemon from room
callbacks and the room-listing resync), the records tell which rooms already run. `plan`/`apply` and the
daemon call the same `select`, so they agree on which rooms a selector job captures:

- a room is captured when a selector covers its id (`spec/selectors.py`) and it is known active in the
  vendor account of the job's Provider (type + appId: activity is the account's, whatever the Provider
  document is called, so a Provider renamed knows its rooms at once);
- a room named by a job of the same kind and provider belongs to that job (offline this is a spec error;
  at run time the named job wins and the selector lists the room as claimed); between two selector jobs
  that overlap, the first by name takes the room;
- `maxRooms` caps the rooms a job holds: rooms already running are kept first (in room order), then new
  ones in room order; beyond the cap nothing new is started and the rest is returned as `left_out`, so the
  caller can warn and count (a room past a lowered cap whose task still runs is not: it is left to end);
- a room whose activity ended is not chosen any more, but its task is not stopped: `leaving` keeps it with
  restartPolicy Never, so it is observed until it ends at the vendor by its idle timeout, and is not
  re-issued until the room is active again;
- a room the selector does not cover (any more) is not the job's: its task is deleted as any undeclared one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.model import (
    Action,
    Change,
    DesiredTask,
    JobKind,
    Observed,
    ObservedState,
    ProviderConfig,
    RestartPolicy,
    RoomActivity,
    TaskRecord,
    TaskStatus,
    job_of,
    split_key,
)
from reconciler.plan import Plan, PlanOptions, label_matcher, rfc3339, selector_matches
from reconciler.spec.checks import CheckedJob
from reconciler.spec.expand import expand, hashes_under
from reconciler.spec.models import RecordingJobSpec, RoomSelector, SnapshotJobSpec
from reconciler.spec.selectors import covers, describe

__all__ = [
    "Selection",
    "accounts_of",
    "annotate",
    "holding",
    "in_view",
    "leaving",
    "named_rooms",
    "select",
    "selected_tasks",
    "selector_of",
    "selector_view",
    "uncovered",
    "unheard",
    "unheard_jobs",
    "unheard_note",
    "unselected",
]

_HOLDING = frozenset({TaskStatus.RUNNING, TaskStatus.PENDING})  # a task that holds its room now


@dataclass(frozen=True, slots=True)
class Selection:
    """What one selector job captures now."""

    job: str  # `Kind/name`
    provider: str
    selector: RoomSelector
    active: tuple[str, ...]  # covered rooms known active (room order)
    chosen: tuple[str, ...]  # those it has a task for (within maxRooms)
    left_out: tuple[str, ...]  # covered and active, but beyond maxRooms: nothing is started for them
    claimed: tuple[tuple[str, str], ...]  # (room, `Kind/name` of the job that has it instead)
    seen_at: float | None  # the newest room report of its provider's account: how fresh it is (None: none)
    tasks: tuple[DesiredTask, ...]


def selector_of(job: CheckedJob) -> RoomSelector | None:
    spec = job.job.model.spec
    if isinstance(spec, SnapshotJobSpec | RecordingJobSpec) and isinstance(spec.rooms, RoomSelector):
        return spec.rooms
    return None


def accounts_of(providers: Mapping[str, ProviderConfig]) -> dict[str, str]:
    """Provider name → its vendor account, the key of room activity (how a state of schema 1, which kept the
    activity by Provider name, is read and upgraded)."""
    return {name: config.account for name, config in providers.items()}


def named_rooms(tasks: Iterable[DesiredTask]) -> dict[tuple[str, str, str], str]:
    """(kind, provider, room) → `Kind/name` of the job naming it, for the room jobs among `tasks`."""
    return {
        (t.kind.value, t.provider, t.target): f"{t.kind.value}/{t.job}"
        for t in tasks
        if t.selector is None and t.kind is not JobKind.THUMBNAIL
    }


def holding(records: Mapping[str, TaskRecord]) -> set[str]:
    """The task keys that hold their room now (running, or a start under way)."""
    return {key for key, r in records.items() if r.status in _HOLDING}


def select(
    jobs: Sequence[CheckedJob],
    activity: Iterable[RoomActivity],
    named: Mapping[tuple[str, str, str], str],
    held: Collection[str],
    providers: Mapping[str, ProviderConfig],
    key: bytes | None = None,
) -> list[Selection]:
    """The selections of `jobs` (selector jobs) given the known room `activity`, the rooms `named` by other
    jobs (`named_rooms`), the task keys that hold their room now (`holding`) and the `providers` that say each
    job's vendor account; task hashes keyed with `key`."""
    active: dict[str, list[str]] = {}
    seen: dict[str, float] = {}
    for report in activity:
        seen[report.account] = max(seen.get(report.account, report.last_seen), report.last_seen)
        if report.active:
            active.setdefault(report.account, []).append(report.room)
    taken = dict(named)
    selections = []
    for c in sorted(jobs, key=lambda j: (j.job.kind, j.job.name)):
        selector = selector_of(c)
        assert selector is not None, f"{c.job.ref()} is not a selector job"
        kind, provider, job = c.job.kind, c.provider.name, f"{c.job.kind}/{c.job.name}"
        account = providers[provider].account
        covered = sorted({room for room in active.get(account, ()) if covers(selector, room)})
        free: list[tuple[str, str]] = []
        claimed: list[tuple[str, str]] = []
        for room in covered:
            owner = taken.setdefault((kind, provider, room), job)
            (free if owner == job else claimed).append((room, owner))
        rooms = [room for room, _ in free]
        # Rooms already held first, so a cap reached never stops a running capture to start another.
        ordered = sorted(rooms, key=lambda room: (f"{job}/{room}" not in held, room))
        cap = len(ordered) if selector.max_rooms is None else selector.max_rooms
        chosen = sorted(ordered[:cap])
        # Past a lowered cap a room still held runs on, left to end (the plan's `ending`): it is captured, so
        # neither left out (warned of, counted as not captured) nor free for a later selector job to start.
        left_out = sorted(room for room in ordered[cap:] if f"{job}/{room}" not in held)
        for room in left_out:  # not captured: a later selector job may take it
            del taken[(kind, provider, room)]
        selections.append(
            Selection(
                job=job,
                provider=provider,
                selector=selector,
                active=tuple(covered),
                chosen=tuple(chosen),
                left_out=tuple(left_out),
                claimed=tuple((room, owner) for room, owner in claimed),
                seen_at=seen.get(account),
                tasks=tuple(expand(c, key, chosen)),
            )
        )
    return selections


def selected_tasks(
    tasks: Mapping[str, DesiredTask],
    jobs: Sequence[CheckedJob],
    activity: Iterable[RoomActivity],
    records: Mapping[str, TaskRecord],
    providers: Mapping[str, ProviderConfig],
    key: bytes | None = None,
) -> tuple[dict[str, DesiredTask], list[Selection]]:
    """The spec set's `tasks` with those of its selector `jobs`: one per chosen room, and those `leaving`
    their room; and the selections. What `plan`, `apply` and the daemon all work from."""
    selections = select(jobs, activity, named_rooms(tasks.values()), holding(records), providers, key)
    chosen = {**tasks, **{t.key: t for s in selections for t in s.tasks}}
    return {**chosen, **leaving(jobs, chosen, records, providers, key)}, selections


def unselected(key: str, selections: Sequence[Selection]) -> str | None:
    """Why a selector job's task `key` is not among the plan's tasks (a `--replace` of it), from what the plan
    knows: `SnapshotJob/classes leaves room 'class-3' out, past its maxRooms (2)`; None for any other key."""
    for s in selections:
        room = key.removeprefix(s.job + "/")
        if room == key or "/" in room:
            continue
        if not covers(s.selector, room):
            return f"the room selector of {s.job} ({describe(s.selector)}) does not cover room {room!r}"
        if room in s.left_out:
            return f"{s.job} leaves room {room!r} out, past its maxRooms ({s.selector.max_rooms})"
        if owner := dict(s.claimed).get(room):
            return f"room {room!r} is taken by {owner}"
        return f"room {room!r} is not known active: {s.job} starts it when a room callback says it is"
    return None


def unheard(selections: Sequence[Selection], providers: Mapping[str, ProviderConfig]) -> list[Selection]:
    """The selections whose room callbacks the daemon cannot verify: no Provider of their vendor app has a
    `callbackSecret`. It then learns no room activity for them (the listing resync asks only about rooms a
    callback named), so they start nothing."""
    deaf = _deaf(providers)
    return [s for s in selections if s.provider in deaf]


def unheard_jobs(jobs: Sequence[CheckedJob], providers: Mapping[str, ProviderConfig]) -> list[CheckedJob]:
    """The selector `jobs` `unheard` would name, for `validate`, which has no selection (no state)."""
    deaf = _deaf(providers)
    return [c for c in jobs if c.provider.name in deaf]


def _deaf(providers: Mapping[str, ProviderConfig]) -> set[str]:
    """The Providers of a vendor app that no Provider gives a `callbackSecret`."""
    heard = {(p.type, p.app_id) for p in providers.values() if p.callback_secret is not None}
    return {name for name, p in providers.items() if (p.type, p.app_id) not in heard}


def unheard_note(job: str, provider: str) -> str:
    return (
        f"Room selector {job} starts nothing: Provider '{provider}' has no callbackSecret, "
        "so `capctl run` cannot verify the vendor's room callbacks and learns no room activity; give it one "
        '(docs/daemon.md, "Room-selector jobs").'
    )


def leaving(
    jobs: Sequence[CheckedJob],
    chosen: Collection[str],
    records: Mapping[str, TaskRecord],
    providers: Mapping[str, ProviderConfig],
    key: bytes | None = None,
) -> dict[str, DesiredTask]:
    """The tasks selector `jobs` ran in rooms they cover but do not choose now (`chosen`: the keys of the tasks
    they do choose): the room's activity ended, it is past maxRooms or another selector took it. Each keeps
    restartPolicy Never and the spec hash it ran with, so it is observed until it ends at the vendor and never
    stopped, re-issued or changed (a spec edit reaches it when its room is chosen again).

    A room its job's selector no longer covers (named before the job became a selector, or a glob edited) is
    not among them: its task is no longer declared, and is planned as a delete like any other. A run started
    through another Provider document of the job's vendor account (the Provider renamed) is among them while
    that document is declared (it is observed through it), as its room is the account's; so is one whose
    document is gone but whose recorded home is the job's Provider's (`moves.rehome` re-homes it)."""
    by_job = {f"{c.job.kind}/{c.job.name}": c for c in jobs}
    rooms: dict[str, list[str]] = {}
    for task_key, record in records.items():
        job = by_job.get(job_of(task_key))
        if job is None or task_key in chosen or record.status is TaskStatus.REMOVED:
            continue
        selector = selector_of(job)
        started, now = providers.get(record.provider), providers[job.provider.name]
        same_app = started.account == now.account if started is not None else record.home == now.home(record.family)
        if selector is not None and same_app and covers(selector, record.target):
            rooms.setdefault(f"{job.job.kind}/{job.job.name}", []).append(record.target)
    return {
        t.key: dataclasses.replace(
            t, restart_policy=RestartPolicy.NEVER, spec_hash=_ran_with(t, records[t.key], key), ending=True
        )
        for job, names in rooms.items()
        for t in expand(by_job[job], key, sorted(names))
    }


def _ran_with(task: DesiredTask, record: TaskRecord, key: bytes | None) -> str:
    """The spec hash a leaving task keeps: the one it ran with; under a renamed Provider, when it ran with the
    same content, the new name's (so it is re-homed as it is, and not replaced once its room is chosen again)."""
    if record.provider != task.provider and hashes_under(task, record.provider, key)[0] == record.spec_hash:
        return task.spec_hash
    return record.spec_hash


def in_view(selections: Sequence[Selection], jobs: Sequence[CheckedJob], options: PlanOptions) -> list[Selection]:
    """The selector jobs a plan narrowed by --target or -l covers (their lines are shown): a target naming the
    job (whatever its room part: any room may become active), its job's labels matching, or a --replace key."""
    if not (options.targets or options.labels):
        return list(selections)
    labels = {f"{c.job.kind}/{c.job.name}": c.job.model.metadata.labels for c in jobs}
    matches = label_matcher(options.labels)

    def shown(s: Selection) -> bool:
        # A two-part target (kind/name) matches every room of the job: the room part here is a placeholder.
        targeted = not options.targets or any(
            selector_matches("/".join(t.split("/", 2)[:2]), f"{s.job}/-") for t in options.targets
        )
        return (targeted and matches(labels.get(s.job, {}))) or any(job_of(k) == s.job for k in options.replace)

    return [s for s in selections if shown(s)]


def annotate(
    plan: Plan,
    selections: Sequence[Selection],
    records: Mapping[str, TaskRecord],
    observed: Mapping[str, Observed],
    providers: Mapping[str, ProviderConfig],
) -> Plan:
    """`plan` with each selector job's view, a note naming the tasks left to end at the vendor (`leaving`:
    seen running, or recorded so when not observed) and one for each selector job that cannot learn of its
    rooms (`unheard`)."""
    chosen = {s.job: frozenset(s.chosen) for s in selections}

    def runs(task_key: str) -> bool:
        obs = observed.get(task_key)
        if obs is not None and obs.state is not ObservedState.UNKNOWN:
            return obs.state is ObservedState.RUNNING
        return (r := records.get(task_key)) is not None and r.status in _HOLDING

    live = {k for k in records if job_of(k) in chosen and runs(k)}
    ended = [
        c.key
        for c in plan.changes
        if c.action in (Action.NOOP, Action.MOVE) and c.key in live and split_key(c.key)[2] not in chosen[job_of(c.key)]
    ]
    notes = plan.notes
    if ended:
        notes += (
            f"{len(ended)} task(s) of room-selector jobs whose room is no longer active (or is past maxRooms) are "
            "left to end at the vendor, not stopped: "
            + ", ".join(ended[:3])
            + (f" (and {len(ended) - 3} more)" if len(ended) > 3 else "")
            + ".",
        )
    notes += tuple(unheard_note(s.job, s.provider) for s in unheard(selections, providers))
    actions = {c.key: c.action for c in plan.changes}
    views = tuple(selector_view(s, actions, live) for s in selections)
    selectors = [(s.job, s.selector, s.provider) for s in selections]
    changes = tuple(uncovered(c, selectors) for c in plan.changes)
    return dataclasses.replace(plan, changes=changes, notes=notes, selectors=views)


def uncovered(change: Change, selectors: Iterable[tuple[str, RoomSelector, str]]) -> Change:
    """A selector job's delete (of a room its selector does not cover: named before the job became a selector,
    or a glob edited) says so: `removed from specs` alone read as if the job had gone. `selectors`: each
    selector job's `Kind/name`, selector and provider; `plan`, `apply` and the daemon say it alike."""
    if change.action is not Action.DELETE:
        return change
    for job, selector, provider in selectors:
        if job == job_of(change.key):
            why = f"its job's room selector ({describe(selector)} on provider '{provider}') does not cover this room"
            return dataclasses.replace(change, reason=change.reason.replace("removed from specs", why, 1))
    return change


def selector_view(selection: Selection, actions: Mapping[str, Action], live: Collection[str]) -> dict[str, Any]:
    """The plan JSON of one selector job: its rooms by what happens to them, and their counts (`live`: the
    task keys that run, as observed or else recorded). Only rooms its selector covers: one it no longer covers
    (a glob edited) is the plan's delete, not a room of the job that runs or is left to end."""
    prefix = selection.job + "/"
    rooms = (k.removeprefix(prefix) for k in live if k.startswith(prefix))
    running = sorted(room for room in rooms if covers(selection.selector, room))
    start = [
        room
        for room in selection.chosen
        if actions.get(prefix + room) in (Action.CREATE, Action.REISSUE, Action.REPLACE)
    ]
    ending = [room for room in running if room not in selection.chosen]
    # Past the cap and not running: left out. Also a room whose record still holds it (so `select` left it to
    # end) but whose run the vendor was seen to end: the plan listed it nowhere (walk 53D-2).
    taken = {*selection.chosen, *running, *(room for room, _ in selection.claimed)}
    left_out = [room for room in selection.active if room not in taken]
    lists: dict[str, list[Any]] = {
        "active": list(selection.active),
        "running": running,
        "start": start,
        "left_out": left_out,
        "ending": ending,
        "claimed": [{"room": room, "by": owner} for room, owner in selection.claimed],
    }
    return {
        "job": selection.job,
        "provider": selection.provider,
        "rooms": describe(selection.selector),
        "max_rooms": selection.selector.max_rooms,
        "seen_at": None if selection.seen_at is None else rfc3339(selection.seen_at),
        **lists,
        "counts": {name: len(value) for name, value in lists.items()},
    }
