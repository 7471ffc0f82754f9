"""Room-selector jobs in the daemon: room activity in, the selector jobs' desired tasks out.

A selector job (`rooms: {match: "class-*"}`) has no tasks in the spec set: which rooms it captures is
known only at run time. The daemon learns room activity from the router's room and stream callbacks
and from the room-listing resync (`roomlisting.py`), keeps it in a `RoomBook` by vendor account and room
(loaded from the state at start, written back in batches, never per callback; a Provider document renamed
names the same account, so nothing is forgotten), and derives the tasks with the same pure
`reconciler.rooms.select` as `capctl plan` and `capctl apply`, so all three agree on which rooms run.

The result is the *effective* spec set the reconciler works from: the spec set's tasks, plus one task
per chosen room, plus a task for every room a selector job ran in that it covers but does not choose any
more (its activity ended, or it is past maxRooms): `reconciler.rooms.leaving`, as `plan` and `apply` add
them. Those are kept with restartPolicy Never: the reconciler keeps observing them until they end at the
vendor by their idle timeout, never stops them and never re-issues them; once their room is active again
they are plain tasks again and are re-issued. A selector task is therefore never pruned because its room
is not in the named-room spec (only a room its selector no longer covers is pruned), and a restart starts
nothing twice: task ids are deterministic, the records and the activity come back from the state.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector

from reconciler.clock import Clock, StepWatch, Throttle
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.prune import MAX_LOGGED
from reconciler.daemon.roomlisting import RoomLister
from reconciler.daemon.roomorder import supersedes
from reconciler.daemon.storehealth import NEVER_RETRIED
from reconciler.daemon.vendorclock import VendorClocks
from reconciler.model import (
    ApiFamily,
    DesiredTask,
    ProviderConfig,
    RoomActivity,
    TaskRecord,
    TaskStatus,
    account_of,
    job_of,
)
from reconciler.providers.base import Provider
from reconciler.providers.callbacks import CallbackEvent
from reconciler.providers.family import listing_family
from reconciler.rooms import Selection, accounts_of, selected_tasks, selector_of, unheard, unheard_note
from reconciler.spec import SpecSet
from reconciler.spec.models import RoomSelector
from reconciler.spec.selectors import covers
from reconciler.state.base import RoomActivityStore, StateError, StateStore, StateTooNew
from reconciler.status.history import History

__all__ = [
    "QUIET_RELIST",
    "QUIET_RELIST_MAX",
    "ROOM_RETENTION",
    "ROOM_STATES",
    "SELECT_DELAY",
    "Effective",
    "RoomBook",
    "RoomJobs",
    "RoomSelectors",
    "activity_of",
    "changed_tasks",
    "forgotten_tasks",
]

log = structlog.get_logger("capctl.daemon")

# Seconds between a room callback and the selection it changes: callbacks within it are decided (and
# their activity written to the state) together. Well inside the 2 s first-stream-to-capture target.
SELECT_DELAY = 0.2
# Seconds between two listings of a room known inactive (an active or just-heard-of room is listed at every
# resync): a lost "stream appeared" callback of a quiet room is repaired within this, at a tenth of the calls.
# The longer a room has been quiet, the less likely it is to come back unannounced: the wait grows to a
# quarter of its quiet time, at most QUIET_RELIST_MAX (32 listings in a quiet day instead of 288).
QUIET_RELIST = 300.0
QUIET_RELIST_MAX = 3_600.0

# Seconds a room known inactive is remembered (in the book and the state): rooms made on the fly (a class,
# a call) would otherwise pile up, each listed every QUIET_RELIST for ever. A forgotten room is learned
# again from its next callback, as a new room is.
ROOM_RETENTION = 86_400.0

ROOM_STATES = ("active", "chosen", "left_out", "claimed")


def activity_of(event: CallbackEvent) -> bool | None:
    """What a room callback says of its room: True a stream was published or a user entered (a Volcengine
    join, a ZEGO room_create or room_login: a stream is likely to follow, and waiting for its own callback,
    which may be late, delays the capture), False the room closed, None nothing about its activity."""
    if event.room_id is None:
        return None
    if event.room_active or event.room_entered:
        return True
    if event.room_closed:
        return False
    return None


class RoomBook:
    """The daemon's last known activity of every room, by (vendor account, room id): `ProviderConfig.account`,
    so every Provider document of one vendor app shares it, and a rename keeps it."""

    def __init__(self, store: StateStore, history: History | None = None) -> None:
        self._store = store if isinstance(store, RoomActivityStore) else None
        self._history = history  # the status page's: its rooms' spans are written with each batch
        self._rooms: dict[tuple[str, str], RoomActivity] = {}
        self._unwritten: dict[tuple[str, str], RoomActivity] = {}
        self._heard_of: set[tuple[str, str]] = set()  # named by a callback that said nothing of its activity
        self._quiet_seen: dict[tuple[str, str], float] = {}  # a quiet room's newest report that it is still quiet

    def load(self, providers: Mapping[str, ProviderConfig]) -> None:
        """Read what earlier runs learned (at start, and when the lease is taken again). A state of schema 1,
        which kept activity by Provider name, is upgraded first: `providers` say which account a name means."""
        if self._store is None:
            return
        accounts = accounts_of(providers)
        if (upgraded := self._store.upgrade_rooms(accounts)) is not None:
            rooms, unknown = upgraded
            log.info("state upgraded: room activity kept by vendor account", rooms=rooms, providers_unknown=unknown)
        loaded = {(r.account, r.room): r for r in self._store.room_activity(accounts)}
        # What this replica heard and could not write yet (a database outage that cost it the lease) is news
        # the state lacks: a callback it answered 200 is not sent again, and a room entered then was never
        # selected after the lease came back (walk 60f-2). What another holder wrote since wins if newer.
        for key, report in self._unwritten.items():
            known = loaded.get(key)
            if known is None or supersedes(known.last_seen, known.active, report.last_seen, report.active):
                loaded[key] = report
        self._rooms = loaded
        self._quiet_seen = {}

    def note(self, account: str, room: str, active: bool, at: float, source: str) -> bool:
        """Remember one report; True when it changes whether the room is active (or it is a new room)."""
        key = (account, room)
        old = self._rooms.get(key)
        if old is not None and not supersedes(old.last_seen, old.active, at, active):
            return False  # a late report older than what is known (`roomorder`: it must not undo a newer one)
        if old is not None and not old.active and not active:
            # Still quiet: the report of when it went quiet stays (ROOM_RETENTION counts from it), and this
            # one only paces the next listing.
            self._quiet_seen[key] = at
            return False
        self._quiet_seen.pop(key, None)
        report = RoomActivity(account=account, room=room, active=active, last_seen=at, source=source)
        self._rooms[key] = self._unwritten[key] = report
        return old is None or old.active != active

    def heard_of(self, account: str, room: str) -> None:
        """A callback named the room without saying whether it is active (a login, a user leaving): unless the
        room is known active, the next room-listing resync asks, so a lost stream callback is repaired."""
        known = self._rooms.get((account, room))
        if known is None or not known.active:
            self._heard_of.add((account, room))

    def activity(self) -> list[RoomActivity]:
        return list(self._rooms.values())

    def knows(self, account: str, room: str) -> bool:
        return (account, room) in self._rooms

    def to_list(self, spec: SpecSet, now: float) -> list[tuple[str, str]]:
        """The rooms the listing resync asks about, among those a selector job covers: the active ones and
        those heard of, and the inactive ones due again (`_relist_due`)."""
        selectors: dict[str, list[RoomSelector]] = {}
        for c in spec.selector_jobs:
            selector = selector_of(c)
            if selector is not None:
                selectors.setdefault(spec.providers[c.provider.name].account, []).append(selector)
        due = {k for k, r in self._rooms.items() if r.active or self._relist_due(k, r, now)}
        rooms = sorted(due | self._heard_of)
        self._heard_of = set()
        return [(a, room) for a, room in rooms if any(covers(s, room) for s in selectors.get(a, ()))]

    def _relist_due(self, key: tuple[str, str], quiet: RoomActivity, now: float) -> bool:
        """Whether a quiet room is due for a listing: QUIET_RELIST after the last one, more as it stays quiet."""
        wait = min(QUIET_RELIST_MAX, max(QUIET_RELIST, (now - quiet.last_seen) / 4))
        return now - max(quiet.last_seen, self._quiet_seen.get(key, quiet.last_seen)) >= wait

    def forget_quiet(self, now: float) -> int:
        """Forget the rooms inactive for more than ROOM_RETENTION (counted from the report that they went
        quiet, however often a listing found them quiet since), here and in the state."""
        cutoff = now - ROOM_RETENTION
        quiet = [k for k, r in self._rooms.items() if not r.active and r.last_seen < cutoff]
        for key in quiet:
            del self._rooms[key]
            self._unwritten.pop(key, None)
            self._quiet_seen.pop(key, None)
        if self._store is not None:
            self._store.forget_rooms(cutoff)
        return len(quiet)

    def flush(self) -> int:
        """Write the reports learned since the last flush, in one batch; returns how many. A write that fails
        (StateError, raised) keeps them for the next flush, but for a state a newer capctl raised: no flush of
        this replica writes to it again, and one that was not fenced (at its stop) wrote them into it."""
        reports, self._unwritten = list(self._unwritten.values()), {}
        spans = self._history.take_rooms() if self._history is not None and self._store is not None else []
        if (reports or spans) and self._store is not None:
            try:
                self._store.record_rooms(reports, spans)
            except StateTooNew:
                raise
            except StateError:
                self._unwritten = {(r.account, r.room): r for r in reports}
                if self._history is not None:
                    self._history.untake(spans)
                raise
        return len(reports)


class _SelectorGauges(Collector):
    """`capctl_selector_rooms` and `capctl_selector_rooms_left_out`, read at scrape time from the counts of the
    last selection (`job` -> state -> rooms); the label is `job_name`, as capctl_rooms_active's (coverage.py):
    Prometheus gives every scraped series a `job` label of its own and renames ours `exported_job`."""

    def __init__(self, counts: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self._counts = counts

    def collect(self) -> list[GaugeMetricFamily]:
        rooms = GaugeMetricFamily(
            "capctl_selector_rooms",
            "Rooms of each room-selector job by state: active (covered and active), chosen (has a task), "
            "left_out (past maxRooms), claimed (a named-room job has it)",
            labels=["job_name", "state"],
        )
        left_out = GaugeMetricFamily(
            "capctl_selector_rooms_left_out",
            "Active rooms a room-selector job covers but does not capture because of its maxRooms",
            labels=["job_name"],
        )
        for job, counts in sorted(self._counts().items()):
            for state in ROOM_STATES:
                rooms.add_metric([job, state], counts[state])
            left_out.add_metric([job], counts["left_out"])
        return [rooms, left_out]


@dataclass(frozen=True, slots=True)
class Effective:
    spec: SpecSet  # the spec set with the selector jobs' tasks added
    selections: tuple[Selection, ...]


class RoomJobs:
    """Decides the selector jobs' tasks from the room book; says what is left out and what is claimed."""

    def __init__(
        self, metrics: Metrics, fingerprint_key: bytes | None, leading: Callable[[], bool] = lambda: True
    ) -> None:
        self.key = fingerprint_key  # the state's: selector tasks are keyed with it, to compare with records
        # Each selector job's room counts by state, exported by the leader alone, as capctl_rooms_active: a
        # standby selects no room (its status page says so), and a sum over the replicas counts each room once.
        self._counts: dict[str, dict[str, int]] = {}
        self._leading = leading
        metrics.registry.register(_SelectorGauges(lambda: self._counts if leading() else {}))
        # (job, room, why) logged and still so: a room left out or claimed is said once while it stays so
        # (again if it comes back so later), and the set holds the rooms of now, not every room ever left out.
        self._warned: set[tuple[str, str, str]] = set()

    def effective(self, spec: SpecSet, book: RoomBook, records: Mapping[str, TaskRecord]) -> Effective:
        if not spec.selector_jobs:
            self._tell(())
            return Effective(spec, ())
        tasks, selected = selected_tasks(
            spec.tasks, spec.selector_jobs, book.activity(), records, spec.providers, self.key
        )
        selections = tuple(selected)
        self._tell(selections)
        return Effective(dataclasses.replace(spec, tasks=tasks), selections)

    def rooms_left_out(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The active rooms each selector job leaves out now (past its maxRooms), for the status page."""
        jobs: dict[str, list[str]] = {}
        for job, room, why in self._warned:
            if why == "max":
                jobs.setdefault(job, []).append(room)
        return tuple((job, tuple(sorted(rooms))) for job, rooms in sorted(jobs.items()))

    def _tell(self, selections: tuple[Selection, ...]) -> None:
        """Metrics, and the leader's log line when a room becomes left out or claimed (not at every decision)."""
        warned, self._warned = self._warned, set()
        # A selector job that left the specs has no counts, so its series go too.
        self._counts = {
            s.job: dict(zip(ROOM_STATES, map(len, (s.active, s.chosen, s.left_out, s.claimed)), strict=True))
            for s in selections
        }
        if not self._leading():
            # Nor its log lines (a standby's page showed its own `room selector at maxRooms` beside "a standby
            # selects no room"): a new term's reselection says what its leader leaves out (walk 26d-7).
            return
        for s in selections:
            for room in s.left_out:
                self._warned.add((s.job, room, "max"))
                if (s.job, room, "max") not in warned:
                    log.warning(
                        "room selector at maxRooms: room not captured",
                        job=s.job,
                        room=room,
                        max_rooms=s.selector.max_rooms,
                        left_out=len(s.left_out),
                    )
            for room, owner in s.claimed:
                self._warned.add((s.job, room, owner))
                if (s.job, room, owner) not in warned:
                    log.warning("room selector clash: another job has the room", job=s.job, room=room, by=owner)


def changed_tasks(old: Mapping[str, DesiredTask], new: Mapping[str, DesiredTask]) -> set[str]:
    """The keys whose desired task appeared, went, or changed (content or restart policy)."""

    def same(a: DesiredTask, b: DesiredTask) -> bool:
        return (a.spec_hash, a.restart_policy) == (b.spec_hash, b.restart_policy)

    keys = {k for k, t in new.items() if (o := old.get(k)) is None or not same(o, t)}
    return keys | (set(old) - set(new))


# A selector task's record is kept while its run may still need a look, or its room may come back soon.
_SETTLED = (TaskStatus.STOPPED, TaskStatus.DONE, TaskStatus.DORMANT, TaskStatus.FAILED)


def forgotten_tasks(spec: SpecSet, book: RoomBook, records: Iterable[TaskRecord], now: float) -> list[str]:
    """The selector tasks to forget with their rooms: a selector job's task whose room the book forgot (quiet
    for ROOM_RETENTION) and whose last run ended ROOM_RETENTION ago or more. Rooms made on the fly would
    otherwise leave a record each for ever (in the state, in memory, in every resync and status page); the
    room's next activity starts its task as a new room's, with the same ids (they derive from job and room)."""
    jobs = {f"{c.job.kind}/{c.job.name}": spec.providers[c.provider.name].account for c in spec.selector_jobs}
    cutoff = now - ROOM_RETENTION
    return sorted(
        r.key
        for r in records
        if r.status in _SETTLED
        and (account := jobs.get(job_of(r.key))) is not None
        and not book.knows(account, r.target)
        and max(filter(None, (r.stopped_at, r.observed_at, r.started_at)), default=cutoff) <= cutoff
    )


class RoomSelectors:
    """The daemon's room-selector half, as the controller wires it: the spec set it loads goes through
    `take` (which puts the effective set in force), room callbacks through `learn`, the resync timer calls
    `resync`, a lease taken again `regained`. Keys whose selector task changed are handed to `enqueue`."""

    def __init__(
        self,
        store: StateStore,
        metrics: Metrics,
        clock: Clock,
        *,
        records: Callable[[], Iterable[TaskRecord]],
        history: History | None = None,
        provider: Callable[[str, ApiFamily], Provider],
        in_force: Callable[[SpecSet], None],
        enqueue: Callable[[str], None],
        woken: Callable[[list[str], str], None],
        forget: Callable[[list[str]], None],
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.book = RoomBook(store, history)
        self._history = history
        self._leading = leading
        self.vendor_clocks = VendorClocks()
        self._steps = StepWatch(clock)  # the daemon's clock stepping moves the vendors' offsets from it
        self.jobs = RoomJobs(metrics, store.fingerprint_key(), leading)
        self.lister = RoomLister(self._listing_provider, clock)
        self._clock = clock
        self._records = records
        self._provider = provider
        self._in_force = in_force
        self._enqueue = enqueue
        self._woken = woken  # keys in rooms known active (and why): wake what is dormant there
        self._forget = forget  # deletes records (`forgotten_tasks`) from the state and the daemon's memory
        self._spec: SpecSet | None = None  # as loaded: without the selector jobs' tasks
        self._effective: SpecSet | None = None
        self._batch: asyncio.Task[None] | None = None  # the pending decision over a batch of room callbacks
        self._write_failed = Throttle(clock)  # one `room activity not written` line a minute, whatever the rate
        self._outdated = False  # a write met a schema a newer capctl raised: said once, nothing written since

    def load(self, spec: SpecSet | None) -> None:
        """Read the room activity earlier runs learned (upgrading a state of schema 1), at start and when the
        lease is taken again; without a valid spec set nothing is read: which account a name means is unknown."""
        if spec is not None:
            self.book.load(spec.providers)

    def take(self, spec: SpecSet) -> SpecSet:
        """A spec set was loaded: put it in force with its selector jobs' tasks; returns that set. Its warnings
        are logged here, once per load, as `plan` notes them: not at each `reselect` (each batch of room
        callbacks), where anyone who can open a room added a line."""
        self._spec = spec
        effective = self._select(spec)
        if self._history is not None:  # which rooms each selector job covers from now (the status page's)
            self._history.cover({s.job: s.selector for s in effective.selections})
        for s in unheard(effective.selections, spec.providers):
            log.warning("room selector cannot learn of its rooms", job=s.job, detail=unheard_note(s.job, s.provider))
        for warning in spec.warnings():
            log.warning("spec warning", detail=warning)
        return effective.spec

    def _select(self, spec: SpecSet) -> Effective:
        """Put `spec` in force with the tasks its selector jobs have for the rooms known now."""
        records = {r.key: r for r in self._records()}
        effective = self.jobs.effective(spec, self.book, records)
        self._effective = effective.spec
        self._in_force(self._effective)
        return effective

    def learn(self, event: CallbackEvent) -> None:
        """A verified callback: note what it says of its room; decide once the batch (SELECT_DELAY) is in."""
        spec, active = self._spec, activity_of(event)
        if event.room_id is None or spec is None:
            return
        # Its vendor app's room, noted once whichever of the specs' Providers (one or several) name that app.
        account = account_of(event.vendor, event.app_id)
        declared = any(c.account == account for c in spec.providers.values())
        if declared and active is not None:  # ordered by the vendor's time: a late close must not undo a newer open
            # ... put on the daemon's clock, as the listing's reports are (`vendorclock`)
            if step := self._steps.check():
                self.vendor_clocks.step(step)
            at = self.vendor_clocks.heard(account, event.at, self._clock.now())
            self.book.note(account, event.room_id, active, at, "callback")
        elif declared and spec.selector_jobs:  # only the listing resync of selector jobs asks about these
            self.book.heard_of(account, event.room_id)
        # (A room that emptied changes only the status page's history: written with a batch too.)
        written = active is not None or (self._history is not None and self._history.rooms_unwritten)
        if written and (self._batch is None or self._batch.done()):
            self._batch = asyncio.get_running_loop().create_task(self._decide_soon(), name="capctl-rooms")

    async def _decide_soon(self) -> None:
        await self._clock.sleep(SELECT_DELAY)
        self.reselect()

    def _store_rooms(self, write: Callable[[], object]) -> None:
        """A room-activity write to the state; one that fails (a locked SQLite file, PostgreSQL restarting) is
        logged and tried again at the next batch or resync: it must not end the resync timer, whose polling is
        every task's safety net (before, one failure ended it for the process's life). One refused for a schema a
        newer capctl raised is dropped, said once: this replica gave the lead up for good (walk 60b)."""
        try:
            write()
        except StateTooNew as exc:
            if not self._outdated:
                self._outdated = True
                log.warning("room activity not written", error=str(exc), retry=NEVER_RETRIED, dropped=True)
        except StateError as exc:
            if (held := self._write_failed.allow()) is not None:
                repeats = {"repeats_held_back": held} if held else {}
                log.warning("room activity not written", error=str(exc), retry="at the next batch or resync", **repeats)

    def reselect(self) -> set[str]:
        """Write the activity learned since last time (one batch) and queue the selector tasks it changes;
        returns the tasks it added to the set in force (told of their room's activity already)."""
        self._store_rooms(self.book.flush)
        spec, before = self._spec, self._effective
        if spec is None or before is None or not spec.selector_jobs:
            return set()
        after = self._select(spec).spec.tasks
        keys = changed_tasks(before.tasks, after)
        for key in sorted(keys):
            self._enqueue(key)
        if keys:
            # Which ones: a room that closed leaves its task to end at the vendor, and no other line says so.
            log.info("room activity: selector tasks changed", keys=len(keys), first=sorted(keys)[:MAX_LOGGED])
        # The activity that selected these rooms reached none of their tasks (not in force yet): they learn of
        # it as a named room's task does, or `capctl_rooms_active` never counted a room with one stream in it.
        if added := sorted(key for key in keys if key in after and key not in before.tasks):
            self._woken(added, "room selected")
        return set(added)

    async def resync(self) -> None:
        """The room-listing resync (`roomlisting.py`): the vendors' answers, as callbacks' reports, then one
        decision. Repairs a room callback the vendor never delivered."""
        spec = self._spec
        if spec is None or not spec.selector_jobs:
            # Still the book's writes: without room callbacks (polling) nothing else batches them, and when tasks
            # were first seen (`seen` rows) reached the state only at a clean stop (walk 27a-6).
            self._store_rooms(self.book.flush)
            return
        woken: set[tuple[str, str]] = set()
        self._store_rooms(lambda: self.book.forget_quiet(self._clock.now()))
        if gone := forgotten_tasks(spec, self.book, self._records(), self._clock.now()):
            self._forget(gone)
            # Out of the set in force before anything awaits: a worker finding one of them desired without
            # its record would start it as a new task.
            self.reselect()
        for report in await self.lister.list_rooms(self.book.to_list(spec, self._clock.now())):
            if self.book.note(report.account, report.room, report.active, report.last_seen, report.source):
                woken |= {(report.account, report.room)} if report.active else set()
        added = self.reselect()
        if woken and (effective := self._effective) is not None:  # a stream callback was lost: the listing
            # is the only news that people are back; every task in force there, named-room or selector (but
            # those the listing has just added, told so once)
            accounts = accounts_of(effective.providers)
            self._woken(
                [
                    t.key
                    for t in effective.tasks.values()
                    if (accounts[t.provider], t.target) in woken and t.key not in added
                ],
                "room listing",
            )

    def regained(self) -> None:
        """The state lease was taken again: another holder may have learned rooms meanwhile."""
        self.load(self._spec)
        self.reselect()

    def stop(self) -> None:
        if self._batch is not None:
            self._batch.cancel()
        if self._history is not None and not self._leading():
            # A standby's globs are not in force, the leader's are: written, they closed the leader's span
            # (a rolling update's edit), and the page drew the rooms by globs no replica applied (48B-3).
            self._history.keep_covers()
        self._store_rooms(self.book.flush)

    def _listing_provider(self, account: str) -> Provider:
        """The provider that lists the rooms of `account`: that of the first selector job on it (by name)."""
        assert self._spec is not None
        providers = self._spec.providers
        name = min(c.provider.name for c in self._spec.selector_jobs if providers[c.provider.name].account == account)
        return self._provider(name, listing_family(providers[name].type))
