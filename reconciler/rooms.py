"""Room-selector jobs at run time: (selector job × known active rooms) → desired tasks, and their plan view.

Pure: the room activity comes from the state (`StateStore.room_activity()`, written by the daemon from room
callbacks and the room-listing resync), the records tell which rooms already run. `plan`/`apply` and the
daemon call the same `select`, so they agree on which rooms a selector job captures:

- a room is captured when a selector covers its id (`spec/selectors.py`) and it is known active;
- a room named by a job of the same kind and provider belongs to that job (offline this is a spec error;
  at run time the named job wins and the selector lists the room as claimed); between two selector jobs
  that overlap, the first by name takes the room;
- `maxRooms` caps the rooms a job holds: rooms already running are kept first (in room order), then new
  ones in room order; beyond the cap nothing new is started and the rest is returned as `left_out`, so the
  caller can warn and count;
- a room whose activity ended is not desired any more, but its task is not stopped: it ends at the vendor
  by its idle timeout, and is not re-issued until the room is active again (`leave_ended` keeps such tasks
  out of a plan's deletes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.model import (
    Action,
    DesiredTask,
    JobKind,
    ProviderConfig,
    RoomActivity,
    TaskRecord,
    TaskStatus,
    job_of,
)
from reconciler.plan import Plan, rfc3339
from reconciler.spec.checks import CheckedJob
from reconciler.spec.expand import expand
from reconciler.spec.models import RecordingJobSpec, RoomSelector, SnapshotJobSpec
from reconciler.spec.selectors import covers, describe

__all__ = [
    "Selection",
    "holding",
    "leave_ended",
    "named_rooms",
    "select",
    "selector_of",
    "selector_view",
    "unheard",
    "unheard_note",
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
    seen_at: float | None  # the newest room report of its provider: how fresh the knowledge is (None: none)
    tasks: tuple[DesiredTask, ...]


def selector_of(job: CheckedJob) -> RoomSelector | None:
    spec = job.job.model.spec
    if isinstance(spec, SnapshotJobSpec | RecordingJobSpec) and isinstance(spec.rooms, RoomSelector):
        return spec.rooms
    return None


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
    key: bytes | None = None,
) -> list[Selection]:
    """The selections of `jobs` (selector jobs) given the known room `activity`, the rooms `named` by other
    jobs (`named_rooms`) and the task keys that hold their room now (`holding`); task hashes keyed with `key`."""
    active: dict[str, list[str]] = {}
    seen: dict[str, float] = {}
    for report in activity:
        seen[report.provider] = max(seen.get(report.provider, report.last_seen), report.last_seen)
        if report.active:
            active.setdefault(report.provider, []).append(report.room)
    taken = dict(named)
    selections = []
    for c in sorted(jobs, key=lambda j: (j.job.kind, j.job.name)):
        selector = selector_of(c)
        assert selector is not None, f"{c.job.ref()} is not a selector job"
        kind, provider, job = c.job.kind, c.provider.name, f"{c.job.kind}/{c.job.name}"
        covered = sorted({room for room in active.get(provider, ()) if covers(selector, room)})
        free: list[tuple[str, str]] = []
        claimed: list[tuple[str, str]] = []
        for room in covered:
            owner = taken.setdefault((kind, provider, room), job)
            (free if owner == job else claimed).append((room, owner))
        rooms = [room for room, _ in free]
        # Rooms already held first, so a cap reached never stops a running capture to start another.
        ordered = sorted(rooms, key=lambda room: (f"{job}/{room}" not in held, room))
        cap = len(ordered) if selector.max_rooms is None else selector.max_rooms
        chosen, left_out = sorted(ordered[:cap]), sorted(ordered[cap:])
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
                seen_at=seen.get(provider),
                tasks=tuple(expand(c, key, chosen)),
            )
        )
    return selections


def unheard(selections: Sequence[Selection], providers: Mapping[str, ProviderConfig]) -> list[Selection]:
    """The selections whose room callbacks the daemon cannot verify: no Provider of their vendor app has a
    `callbackSecret`. It then learns no room activity for them (the listing resync asks only about rooms a
    callback named), so they start nothing."""
    heard = {(p.type, p.app_id) for p in providers.values() if p.callback_secret is not None}
    return [
        s
        for s in selections
        if (config := providers.get(s.provider)) is not None and (config.type, config.app_id) not in heard
    ]


def unheard_note(selection: Selection) -> str:
    return (
        f"Room selector {selection.job} starts nothing: Provider '{selection.provider}' has no callbackSecret, "
        "so `capctl run` cannot verify the vendor's room callbacks and learns no room activity; give it one "
        '(docs/daemon.md, "Room-selector jobs").'
    )


def leave_ended(
    plan: Plan,
    selections: Sequence[Selection],
    records: Mapping[str, TaskRecord],
    providers: Mapping[str, ProviderConfig],
) -> Plan:
    """`plan` without the deletes of selector jobs' tasks whose room is no longer chosen (their job is still
    in the specs: they end at the vendor by themselves), with a note saying so and each job's view, and a note
    for each selector job that cannot learn of its rooms (`unheard`)."""
    jobs = {s.job for s in selections}

    def left(change_key: str) -> bool:
        return job_of(change_key) in jobs

    ended = [
        c
        for c in plan.changes
        if c.action is Action.DELETE and left(c.key) and (r := records.get(c.key)) and r.status in _HOLDING
    ]  # one the vendor was seen to end is not "left to end" any more: it is only not re-issued
    changes = tuple(c for c in plan.changes if not (c.action is Action.DELETE and left(c.key)))
    notes = plan.notes
    if ended:
        notes += (
            f"{len(ended)} task(s) of room-selector jobs whose room is no longer active (or is past maxRooms) are "
            "left to end at the vendor, not stopped: "
            + ", ".join(c.key for c in ended[:3])
            + (f" (and {len(ended) - 3} more)" if len(ended) > 3 else "")
            + ".",
        )
    notes += tuple(unheard_note(s) for s in unheard(selections, providers))
    actions = {c.key: c.action for c in changes}
    views = tuple(selector_view(s, actions, records) for s in selections)
    return dataclasses.replace(plan, changes=changes, notes=notes, selectors=views)


def selector_view(
    selection: Selection, actions: Mapping[str, Action], records: Mapping[str, TaskRecord]
) -> dict[str, Any]:
    """The plan JSON of one selector job: its rooms by what happens to them, and their counts."""
    prefix = selection.job + "/"
    running = sorted(r.target for k, r in records.items() if k.startswith(prefix) and r.status is TaskStatus.RUNNING)
    start = [
        room
        for room in selection.chosen
        if actions.get(prefix + room) in (Action.CREATE, Action.REISSUE, Action.REPLACE)
    ]
    ending = [room for room in running if room not in selection.chosen]
    lists: dict[str, list[Any]] = {
        "active": list(selection.active),
        "running": running,
        "start": start,
        "left_out": list(selection.left_out),
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
