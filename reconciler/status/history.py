"""The last 24 h of each task's runs and each room's activity, as the daemon saw them, for the timeline.

The state store keeps one run per task in its record (the current or last one: its start, stop and stop
reason), which is all reconciling needs; the status page's timeline needs the runs before it and the rooms'
activity. The daemon tells this history about every record it reads or commits (`note`) and every room
callback (`room_active` / `room_idle`), and the state keeps the same (`capctl_history`): each commit of a
record writes its run in its own transaction (`run_of`), and the rooms' spans go with the room-activity batch
(`take_rooms`), as does when each task was first seen (a "seen" span: its history is complete from then, so
the gaps before its first kept run are drawn after a restart as before it), and which rooms each selector
job's globs covered when (a "selector" span per spec load that changed them, `cover`: a room a widened
selector takes in had no capture lost before the edit). So a restarted daemon, a new
leader or a standby's page reads it back (`restore`) and draws what the daemon before it saw. Bounded: runs
and activity that ended before the window are dropped as new ones come (a room with nothing left is
forgotten), and each task or room keeps at most `MAX_INTERVALS`; the state is pruned alike (`prune_due`). Time
comes from the injected clock. Not thread-safe on its own (but `restored`, which only reads): the daemon
writes it on its loop, and the page reads it there."""

from __future__ import annotations

import itertools
import json
import math
from collections import deque
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, replace

from reconciler.clock import Clock
from reconciler.model import TaskRecord
from reconciler.spec.models import RoomSelector
from reconciler.spec.selectors import matches_any
from reconciler.state.base import HistorySpan, began_of, run_of
from reconciler.status.model import TIMELINE_SECONDS, Interval

__all__ = ["MAX_INTERVALS", "Activity", "Cover", "History", "Restored", "Run"]

MAX_INTERVALS = 96  # per task or room: a run every 15 minutes for 24 h; older ones go first


@dataclass(frozen=True, slots=True)
class Run:
    start: float
    end: float | None  # None while it runs (or while its end is not known yet)
    reason: str | None  # why it ended, as recorded (`idle timeout (Volcengine IdleTimeOut)`)
    # The task's re-issue count at its start (`began_of`), None where not known (a state from before it): a run
    # whose count is above the run before it's was a re-issue, whatever that run's end reason says.
    reissues: int | None = None


@dataclass(frozen=True, slots=True)
class Activity:
    start: float
    end: float | None  # None while the room is active


@dataclass(frozen=True, slots=True)
class Cover:
    """A room-selector job's `match` / `exclude` in force from `start` (a spec set loaded) to `end` (None while
    it is): which rooms the job covered when, so a room a widened selector takes in is not drawn as lost before
    the edit (walk 41C-4). Kept as a "selector" span: subject the job, the globs as JSON in its reason."""

    start: float
    end: float | None
    match: tuple[str, ...]
    exclude: tuple[str, ...]

    def covers(self, room: str) -> bool:
        return matches_any(room, self.match) and not matches_any(room, self.exclude)

    def span(self, job: str) -> HistorySpan:
        text = json.dumps({"match": self.match, "exclude": self.exclude}, separators=(",", ":"))
        return HistorySpan("selector", job, "", self.start, self.end, text)


@dataclass(frozen=True, slots=True)
class Restored:
    """The history the state keeps, made ready off the loop (`History.restored`), to `install` on it."""

    runs: dict[str, deque[Run]]
    rooms: dict[tuple[str, str], deque[Activity]]
    first_seen: dict[str, float]  # where the state's is the first: this daemon's, if any, is not to be written
    covers: dict[str, list[Cover]]  # by job (`Cover`)
    covers_closed: frozenset[tuple[str, float]]  # (job, start) of open spans a later one followed: closed, to write


class History:
    def __init__(self, clock: Clock, window: float = TIMELINE_SECONDS) -> None:
        self.clock = clock
        self.window = window
        self._runs: dict[str, deque[Run]] = {}
        self._first_seen: dict[str, float] = {}
        # By (vendor account, room id): two vendor apps may both have a room `lobby`, and they are two rooms.
        self._rooms: dict[tuple[str, str], deque[Activity]] = {}
        self._unwritten: set[tuple[str, str]] = set()  # rooms whose spans changed since `take_rooms`
        # Tasks first seen since `take_rooms`: when a task was first seen is kept too (a "seen" span), or a
        # restarted daemon drew its history as beginning at its first kept run, and lost the gaps before it.
        self._unseen: set[str] = set()
        # Each selector job's globs over time (`cover`), and those of the spec set in force, applied again to a
        # history read back (`install`): a load before the read is not undone by it.
        self._covers: dict[str, list[Cover]] = {}
        self._in_force: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None
        self._covers_unwritten: set[tuple[str, float]] = set()  # (job, start): only these are written (48B-2)
        self._trimmed = clock.now()
        self._pruned: float | None = None

    # --- writing --------------------------------------------------------------------------------------------

    def note(self, record: TaskRecord) -> None:
        """A record as read or committed: a new `started_at` opens a run, a recorded stop closes the open one."""
        now = self.clock.now()
        self._trim(now)
        if record.key not in self._first_seen:
            self._first_seen[record.key] = now
            self._unseen.add(record.key)
        runs = self._runs.get(record.key) or None  # (emptied by `_trim`: its runs ended before the window)
        run = run_of(record)  # with its end as the state keeps it (`capctl_history`)
        if run is not None and (runs is None or runs[-1].start != run.start):
            if runs is None:
                if run.end is not None and run.end < now - self.window:
                    return  # a run that ended before the window (`_trim` dropped it): nothing to draw
                runs = self._runs[record.key] = deque(maxlen=MAX_INTERVALS)
            elif runs[-1].end is None:  # replaced or re-issued before its end was seen: it ended by then
                runs[-1] = replace(runs[-1], end=run.start)
            began = began_of(record)
            runs.append(Run(run.start, None, None, None if began is None else record.reissue_count))
        if run is None or runs is None or runs[-1].end is not None or run.end is None:
            return
        runs[-1] = replace(runs[-1], end=max(run.end, runs[-1].start), reason=record.stop_reason)

    def forget(self, key: str) -> None:
        """A record deleted from the state (a tombstone forgotten, `state rm`)."""
        self._runs.pop(key, None)
        self._first_seen.pop(key, None)
        self._unseen.discard(key)

    def cover(self, selectors: Mapping[str, RoomSelector]) -> None:
        """A spec set was loaded with these selector jobs (`Kind/name` -> selector): a job whose `match` or
        `exclude` changed (or that is new) covers from now by its new globs; one no longer there, no more. The
        same globs loaded again (a restart, a reload) change nothing: the page stays as it was drawn."""
        self._in_force = {job: (tuple(s.match), tuple(s.exclude)) for job, s in selectors.items()}
        self._apply_covers()

    def _apply_covers(self) -> None:
        if self._in_force is None:
            return
        now = self.clock.now()
        for job in sorted(self._covers.keys() | self._in_force.keys()):
            kept = self._covers.setdefault(job, [])
            last = kept[-1] if kept and kept[-1].end is None else None
            globs = self._in_force.get(job)
            if last is not None and globs == (last.match, last.exclude):
                continue
            start = now
            if last is not None and last.start >= now and globs is not None:
                # In force for no time: replaced (one row per start), from its start, not before it (the clock
                # stepped back): its row, written, is overwritten then; one of an earlier start read back as
                # followed by it, the replaced globs (walk 49B-2)
                kept.pop()
                start = last.start
            elif last is not None:  # (a removal closes it, at its start at the earliest: its row, written, ends)
                kept[-1] = replace(last, end=max(now, last.start))
                self._covers_unwritten.add((job, last.start))
            elif globs is not None and kept and (end := kept[-1].end) is not None and end > now:
                # Back in the specs before its last span's end (the clock stepped back since): from that end, not
                # before it, or read back in start order the closed span followed it and the job read as
                # removed (walk 50B-2); one in force for no time is replaced (one row per start).
                start = end
                if kept[-1].start >= end:
                    kept.pop()
            if globs is not None:
                kept.append(Cover(start, None, *globs))
                self._covers_unwritten.add((job, start))
                del kept[:-MAX_INTERVALS]  # as the state keeps them: an edit a minute must not grow it (48B-2)

    def room_active(self, account: str, room: str) -> None:
        """A room callback of the vendor `account` said someone is in `room` (a user joined, a stream appeared)."""
        spans = self._rooms.setdefault((account, room), deque(maxlen=MAX_INTERVALS))
        if not spans or spans[-1].end is not None:
            spans.append(Activity(self.clock.now(), None))
            self._unwritten.add((account, room))

    def room_idle(self, account: str, room: str) -> None:
        """A room callback of the vendor `account` said `room` emptied (its last user left, no stream left)."""
        spans = self._rooms.get((account, room))
        if spans and spans[-1].end is None:
            spans[-1] = Activity(spans[-1].start, max(self.clock.now(), spans[-1].start))
            self._unwritten.add((account, room))

    def restore(self, spans: Iterable[HistorySpan], keys: Container[str] | None = None) -> None:
        """Take the history the state keeps (read at start, when a term begins, or for a standby's page) as
        the whole history: it holds what this daemon noted and what a daemon before it did. `keys`: the
        records read with it; a `seen` row of another key is an orphan (an older capctl's delete left it),
        whose old time a key made again would take as its first sight (walk 27a)."""
        self.install(self.restored(spans, keys))

    def restored(self, spans: Iterable[HistorySpan], keys: Container[str] | None = None) -> Restored:
        """`restore`'s work, which changes nothing here: safe in a thread while the loop notes (at 100,000
        tasks it takes seconds, walk 31d); the loop then `install`s it, or drops it (a term began meanwhile)."""
        runs: dict[str, deque[Run]] = {}
        rooms: dict[tuple[str, str], deque[Activity]] = {}
        # First seen: the state's, but where this daemon saw a task first and has not written it yet. A time it
        # wrote and the state no longer holds went with its record (deleted, perhaps by another replica): kept,
        # a task made again under that key drew its predecessor's room sessions as capture lost (walk 27a).
        # (A copy: the loop may note meanwhile; `install` takes this daemon's as they are then.)
        mine = {key: at for key in tuple(self._unseen) if (at := self._first_seen.get(key)) is not None}
        first_seen: dict[str, float] = {}  # the state's, where they are the first
        covers: dict[str, list[Cover]] = {}
        closed: set[tuple[str, float]] = set()  # "selector" spans closed here, to be written so
        spans = tuple(spans)  # (read twice: how each run began first)
        began = {(s.subject, s.start): int(s.reason or 0) for s in spans if s.kind == "began" and _digits(s.reason)}
        for span in spans:  # in start order
            if span.kind == "run":
                kept = runs.setdefault(span.subject, deque(maxlen=MAX_INTERVALS))
                if kept and kept[-1].end is None:  # replaced or re-issued before its end was seen: ended by then
                    kept[-1] = replace(kept[-1], end=span.start)
                kept.append(Run(span.start, span.end, span.reason, began.get((span.subject, span.start))))
            elif span.kind == "room":
                rooms.setdefault((span.subject, span.room), deque(maxlen=MAX_INTERVALS)).append(
                    Activity(span.start, span.end)
                )
            elif (
                span.kind == "seen"
                and (keys is None or span.subject in keys)
                and span.start <= first_seen.get(span.subject, mine.get(span.subject, span.start))
            ):
                first_seen[span.subject] = span.start  # (an earlier one of this daemon's stays, to be written)
            elif span.kind == "selector" and (globs := _globs(span.reason)) is not None:
                kept_covers = covers.setdefault(span.subject, [])
                if kept_covers and kept_covers[-1].end is None:  # two replicas loaded it: ended by the next
                    kept_covers[-1] = replace(kept_covers[-1], end=span.start)
                    closed.add((span.subject, kept_covers[-1].start))
                kept_covers.append(Cover(span.start, span.end, *globs))
        covers = {job: kept[-MAX_INTERVALS:] for job, kept in covers.items()}  # (a state not pruned yet)
        return Restored(runs, rooms, first_seen, covers, frozenset(closed))

    def install(self, restored: Restored) -> None:
        """Take a `restored` history as the whole history (on the loop), with the first sights noted since it
        was read."""
        self._unseen -= restored.first_seen.keys()
        first_seen = {key: at for key in self._unseen if (at := self._first_seen.get(key)) is not None}
        first_seen.update(restored.first_seen)
        self._runs, self._rooms, self._unwritten, self._first_seen = restored.runs, restored.rooms, set(), first_seen
        self._covers, self._covers_unwritten = restored.covers, set(restored.covers_closed)
        self._apply_covers()
        self._trimmed = self.clock.now() - self.window  # trimmed at the next note

    def take_rooms(self) -> list[HistorySpan]:
        """The spans of the rooms whose activity changed since the last call, and when the tasks seen since were
        first seen, for the state (written with the room-activity batch); `untake` puts them back when that
        write failed."""
        taken = [
            HistorySpan("room", account, room, a.start, a.end)
            for account, room in sorted(self._unwritten)
            for a in self._rooms.get((account, room), ())
        ]
        taken += [HistorySpan("seen", key, "", self._first_seen[key], None) for key in sorted(self._unseen)]
        taken += [c.span(job) for job, c in self._covers_to_write()]
        self._unwritten, self._unseen, self._covers_unwritten = set(), set(), set()
        return taken

    def untake(self, spans: Iterable[HistorySpan]) -> None:
        self._unwritten |= {(s.subject, s.room) for s in spans if s.kind == "room"}
        self._unseen |= {s.subject for s in spans if s.kind == "seen" and s.subject in self._first_seen}
        self._covers_unwritten |= {(s.subject, s.start) for s in spans if s.kind == "selector"}

    def keep_covers(self) -> None:
        """Write no `selector` span this replica opened or closed since `take_rooms`: it does not lead, so the
        globs it loaded are not in force (the leader's are, written by it)."""
        self._covers_unwritten = set()

    def _covers_to_write(self) -> list[tuple[str, Cover]]:
        """The spans changed since `take_rooms`, not each job's every span: an edit wrote them all again, the
        state's pruned ones with them (48B-2)."""
        return [
            (job, c)
            for job, covers in sorted(self._covers.items())
            for c in covers
            if (job, c.start) in self._covers_unwritten
        ]

    @property
    def rooms_unwritten(self) -> bool:
        return bool(self._unwritten or self._unseen or self._covers_unwritten)

    def prune_due(self) -> float | None:
        """The horizon to prune the state's history to (spans that ended before it go), at most once per
        `window / MAX_INTERVALS` (15 minutes); None when it is not due yet."""
        now = self.clock.now()
        if self._pruned is not None and now < self._pruned + self.window / MAX_INTERVALS:
            return None
        self._pruned = now
        return now - self.window

    def _trim(self, now: float) -> None:
        """Drop what ended before the window, at most once per tenth of it (reads skip it anyway)."""
        if now < self._trimmed + self.window / 10:
            return
        self._trimmed = now
        horizon = now - self.window
        for table in (self._runs, self._rooms):
            for spans in table.values():
                while spans and spans[0].end is not None and spans[0].end < horizon:
                    spans.popleft()
        for job, covers in list(self._covers.items()):
            if kept := [c for c in covers if c.end is None or c.end >= horizon]:
                self._covers[job] = kept
            else:
                del self._covers[job]
        # A room quiet for the whole window is forgotten: rooms made on the fly (a class, a call) would
        # otherwise pile up for the daemon's lifetime. A task's key stays until its record is deleted.
        for room in [room for room, spans in self._rooms.items() if not spans]:
            del self._rooms[room]

    # --- reading --------------------------------------------------------------------------------------------

    def runs(self, key: str) -> tuple[Run, ...]:
        return tuple(self._runs.get(key, ()))

    def known_since(self, key: str) -> float | None:
        """From when this task's history is complete: its first run's start, or when the daemon first saw it."""
        runs = self._runs.get(key)
        first = self._first_seen.get(key)
        if runs:
            return runs[0].start if first is None else min(runs[0].start, first)
        return first

    def covered_from(self, job: str, room: str, at: float) -> float | None:
        """Since when `job`'s selector has covered `room` without a break, as of `at` (by the globs in force
        since the spec sets kept), or None when that is not known: no globs kept in force at `at` (a state from
        before them, or the task was made before the first load that kept them)."""
        covers = [(c, covered) for c, covered in self._covering(job, room) if c.start <= at]
        if not covers or (covers[-1][0].end is not None and covers[-1][0].end < at) or not covers[-1][1]:
            return None
        since = covers[-1][0].start
        for before, covered in reversed(covers[:-1]):
            if not covered or (before.end is not None and before.end < since):
                break
            since = before.start
        return since

    def left_out(self, job: str, room: str) -> bool:
        """Whether `job`'s globs in force now, as kept, leave `room` out (narrowed away from it, or the job out of
        the specs: its last span closed); False when none are kept (a state from before them)."""
        last = covers[-1] if (covers := self._covers.get(job)) else None
        return last is not None and (last.end is not None or not last.covers(room))

    def uncovered(self, job: str, room: str) -> list[Interval]:
        """When `job`'s globs, as kept, did not cover `room`: globs in force that left it out, and the job out of
        the specs between two spans (a selector narrowed and widened again, walk 48B-1) or since the last one
        closed (the job removed: its tasks' prune grace, walk 53c). Before the first span kept, not known: none.
        Each stretch the room stayed out is one, from the edit that left it out: narrowed again (or the job put
        back still leaving it out) is no new edit, its task's prune and its loss are the first one's (54b)."""
        covers = self._covers.get(job, ())
        out = [Interval(a.end, b.start) for a, b in itertools.pairwise(covers) if a.end is not None and a.end < b.start]
        if covers and (gone := covers[-1].end) is not None:
            out.append(Interval(gone, math.inf))
        out += [
            Interval(c.start, math.inf if c.end is None else c.end)
            for c, covered in self._covering(job, room)
            if not covered
        ]
        merged: list[Interval] = []
        for i in sorted(out, key=lambda i: i.start):
            if merged and i.start <= merged[-1].end:
                merged[-1] = Interval(merged[-1].start, max(merged[-1].end, i.end))
            else:
                merged.append(i)
        return merged

    def _covering(self, job: str, room: str) -> list[tuple[Cover, bool]]:
        """Each of `job`'s spans and whether it covers `room`, matched once per distinct globs: an edit made
        often alternates a few, and a page of 500 selector tasks matched 96 spans each twice (walk 49b)."""
        seen: dict[tuple[tuple[str, ...], tuple[str, ...]], bool] = {}
        out = []
        for c in self._covers.get(job, ()):
            globs = (c.match, c.exclude)
            if (on := seen.get(globs)) is None:
                on = seen[globs] = c.covers(room)
            out.append((c, on))
        return out

    def activity(self, account: str, room: str) -> tuple[Activity, ...] | None:
        """The room's activity spans, or None when no room callback was seen for it within the window."""
        spans = self._rooms.get((account, room))
        return None if spans is None else tuple(spans)


def _globs(text: str | None) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """A "selector" span's globs as a capctl writes them; None for anything else (a row edited by hand)."""
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    match, exclude = value.get("match"), value.get("exclude")
    texts = all(isinstance(g, list) and all(isinstance(x, str) for x in g) for g in (match, exclude))
    return (tuple(match), tuple(exclude)) if texts else None  # type: ignore[arg-type]


def _digits(text: str | None) -> bool:
    """A `began` span's count as a capctl writes it (a row edited by hand to something else is not known)."""
    return text is not None and text.isascii() and text.isdigit() and len(text) < 19
