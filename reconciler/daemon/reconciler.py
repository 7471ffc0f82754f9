"""Decides one task key: `reconcile(key) -> Result(requeue_after)`, as controller-runtime's Reconciler.

It re-reads the desired task and the recorded state, observes the vendor when an observation is due,
decides with the same pure `diff` as `capctl plan`, acts through the same `Executor` as `capctl apply`,
and says when to look again. Re-issue pacing and polling cadence come from `policy`; what it remembers
between two passes over a key is that key's `KeyRuntime` (`runtime.py`), changed only by its transition
functions. It also turns routed callbacks into runtime hints (`on_callback`). It owns no queue, worker,
lease or timer: the controller (`controller.py`) does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from reconciler import engine, stopreasons, transitions
from reconciler.budget import HEADROOM
from reconciler.clock import Clock, StepWatch, Throttle, Throttles
from reconciler.daemon import policy, runtime
from reconciler.daemon.metrics import Metrics, shared_failure, vendor_error_reason
from reconciler.daemon.prune import PruneGuard
from reconciler.daemon.records import RecordCache
from reconciler.daemon.router import RoutedCallback
from reconciler.daemon.runtime import RuntimeMap
from reconciler.execute import Executor, Interrupt, needs_observation
from reconciler.model import (
    Action,
    ApiFamily,
    Change,
    DesiredTask,
    Observed,
    ObservedState,
    RestartPolicy,
    RoomActivity,
    TaskRecord,
    TaskStatus,
)
from reconciler.moves import content_under, rehome
from reconciler.plan import PlanError, PlanOptions, diff
from reconciler.providers.base import Provider, VendorError
from reconciler.providers.callbacks import CallbackEvent
from reconciler.providers.family import FAMILIES
from reconciler.rooms import selector_of, uncovered
from reconciler.spec import SpecSet
from reconciler.state.base import StateError

__all__ = ["RESYNC_JITTER", "ReconcileFailed", "Reconciler", "Result"]

log = structlog.get_logger("capctl.daemon")

RESYNC_JITTER = 0.1  # looks and the resync timer are spread over period × [0.9, 1.1]
# Seconds a per-budget running-task count is reused before it is recounted: the count only sets the sweep
# period, and recounting 10,000 records every second was 1.4 % of a core in the steady state.
COUNTS_TTL = 10.0


class ReconcileFailed(Exception):
    """A vendor or state error while reconciling one key: the key is retried with backoff."""


@dataclass(frozen=True, slots=True)
class Result:
    requeue_after: float | None  # seconds until the key is looked at again; None: only on events
    wake: tuple[str, ...] = ()  # other keys to look at now (a prune's stop lets a renamed job's start go)
    # Nothing was decided (its look failed, or its backoff is still ahead): a failing key keeps its backoff.
    keep_backoff: bool = False


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A key's change being carried out, and the Volcengine tasks (`transitions.volc_task_name`) its calls may
    start or stop. A change decided for a declared key is cut short (`interrupt`) when the key leaves the specs,
    a prune when it comes back: a retried call would otherwise land on a task that is no longer what it was
    decided for (a run another key took over, a run declared again)."""

    names: frozenset[tuple[str, str, str]]
    declared: bool  # decided for a key of the specs (False: its prune)
    interrupt: Interrupt = dataclasses.field(default_factory=Interrupt)
    ended: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class Reconciler:
    def __init__(
        self,
        records: RecordCache,
        runtimes: RuntimeMap,
        provider: Callable[[str, ApiFamily], Provider],
        executor: Executor,
        prune: PruneGuard,
        metrics: Metrics,
        clock: Clock,
        *,
        resync: float,
        rng: random.Random,
        backing_off: Callable[[str], bool] = lambda key: False,
    ) -> None:
        self.records = records
        self._backing_off = backing_off  # the work queue's: a failed change's backoff step is still ahead
        self.runtimes = runtimes
        self._in_flight: dict[str, _InFlight] = {}
        self.spec = None  # set by the controller when a spec set is taken
        self._provider = provider
        self._executor = executor
        self._prune = prune
        self.metrics = metrics
        self.clock = clock
        self.resync = resync
        self._rng = rng
        self._counts: dict[tuple[str, ApiFamily], int] = {}
        self._counts_at = float("-inf")
        # (vendor, app id) whose room callbacks reach us: only there can a room be known empty
        self._room_feeds: set[tuple[str, str]] = set()
        self._hint_failed = Throttle(clock)  # one `callback hint not written` line a minute
        self._look_failed = Throttles(clock)  # `observation failed`, by Provider and shared cause
        self._steps = StepWatch(clock)  # the host's wall clock stepping under the daemon's own schedule
        # Waits a step should have moved but whose write failed: key -> (the record as it was, the step still
        # owed it). Written at the next catch-up if the record is still that one (one written since is on the
        # clock as it is now, and a lease regained reads every record afresh: neither is moved).
        self._unmoved: dict[str, tuple[TaskRecord, float]] = {}
        # Keys whose wait for a renamed job's prune was logged: kept while the wait lasts, not reset with the set
        # (a selector job's room callbacks put the set in force again, about once per resync).
        self._told_waiting: set[str] = set()
        self._term_began = float("-inf")  # when this replica's current term began (`observe_first` of all)
        self._terms = 0  # terms begun: one begun during a look (a lease regained) is told apart from a step

    @property
    def spec(self) -> SpecSet | None:
        return self._spec

    @spec.setter
    def spec(self, spec: SpecSet | None) -> None:
        self._spec = spec
        # Its tasks' requests, redacted once for every pass (`diff`'s memo keeps each request alive while
        # the set is in force, so no id is reused).
        self._redacted: dict[int, Any] = {}
        self._naming: dict[tuple[str, str, str], list[str]] | None = None  # built at the first prune (`_keys_naming`)
        for key, change in self._in_flight.items():
            if (
                spec is not None
                and (key in spec.tasks) is not change.declared
                and not change.interrupt.cutting.is_set()
            ):
                change.interrupt.press()
                change.interrupt.press()  # the second press cuts the calls in flight (and their retries) short

    def status_counts(self) -> dict[str, int]:
        """Tasks by status for `capctl_tasks`: the records', except where the daemon knows better (an end
        seen but not yet recorded, a failed observation). Collected on the daemon's loop (http.py's /metrics)."""
        counts = Counter(self.records.status_counts())
        for key, status in self.runtimes.unconfirmed().items():
            record = self.records.get(key)
            if record is not None and record.status.value != status:
                counts[record.status.value] -= 1
                counts[status] += 1
        return dict(counts)

    def observe_first(self, keys: Iterable[str] | None = None) -> None:
        """Look at the vendor before acting on each of `keys` (None: every record, as a term begins: a start, a
        lead regained) that may still run."""
        if keys is None:
            self._term_began, self._terms = self.clock.now(), self._terms + 1
        for record in self.records.values() if keys is None else filter(None, map(self.records.get, keys)):
            if needs_observation(record):
                self._update(record.key, runtime.observe_first)

    def recall_rooms(self, reports: Iterable[RoomActivity]) -> None:
        """Room activity the key's runtime missed (the room book, kept in the state, hears every room): learned
        before a restart or a takeover, or while the key was out of the set in force (callbacks reach only the
        keys of the set). A record whose room was last known active has that activity, as if its callback had
        been routed, so a run seen ended is re-issued at once instead of backed off while people are in its room."""
        active = {(r.account, r.room): r.last_seen for r in reports if r.active}
        now, tasks = self.clock.now(), self.spec.tasks if self.spec else {}
        for record in self.records.values():
            # A key back in the set after its Provider was renamed: its record, not re-homed yet, names a
            # Provider gone from the set; its task names the account (before, its room's activity was missed).
            task = tasks.get(record.key)
            at = active.get((self._account(task.provider if task else record.provider), record.target))
            known = self.runtimes.get(record.key).room_activity
            if at is not None and (known is None or known < min(at, now)):
                self._update(record.key, runtime.room_active, min(at, now))

    def recount(self) -> None:
        """The records were read again (lease regained): recount the budgets' running tasks on next use."""
        self._counts_at = float("-inf")
        self._catch_up(stored=False)  # the records as read now are another leader's, on the clock as it is now

    def _catch_up(self, *, stored: bool = True) -> float:
        """Before anything reads the wall clock against what the daemon scheduled on it: a wall clock that
        stepped since (NTP, a VM restored from a snapshot) moves that schedule with it, so each wait keeps its
        length on the monotonic clock. Before, a step back of an hour held every look and re-issue an hour
        late; a step forward cut every backoff short (the prune grace is on the monotonic clock itself).
        `stored`: the records' next attempt times (written by this leader on its clock) are moved too; a
        write that fails (a VM restored from a snapshot has lost its database connection too) is tried again
        at the next catch-up, or the step was forgotten and each wait was that much longer or shorter."""
        step = self._steps.check()
        if step:
            self.runtimes.step(step)
            self._term_began += step  # as the looks it is weighed against (`_failing_from`)
            self.metrics.clock_steps.inc()
        elif not self._unmoved:
            return 0.0  # every pass: nothing to do
        # What each waiting record is owed: a step's move not written yet, while the record is still that one
        # (one written since is on the clock as it is now; a lease regained reads every record afresh) ...
        owed = {key: (r, moved) for key, (r, moved) in self._unmoved.items() if self.records.get(key) is r}
        for record in self.records.values() if step and stored else ():  # ... and this step's
            if record.next_attempt_at is not None and record.status in (TaskStatus.STOPPED, TaskStatus.DORMANT):
                owed[record.key] = (record, owed.get(record.key, (record, 0.0))[1] + step)
        waits = [r.evolve(next_attempt_at=(r.next_attempt_at or 0.0) + moved) for r, moved in owed.values()]
        self._unmoved, error = {}, None
        try:
            if waits:
                self.records.put_many(waits)
        except StateError as exc:
            self._unmoved, error = owed, str(exc)
        if step:
            log.warning(
                "wall clock stepped: the daemon's waits keep their length",
                seconds=round(step, 1),
                waits_moved=0 if error else len(waits),
                **({"error": error, "retry": "at the next pass"} if error else {}),
            )
        elif waits and not error:
            log.info("wall clock stepped earlier: the waits it left are moved now", waits_moved=len(waits))
        return step

    def _as_moved(self, record: TaskRecord | None) -> TaskRecord | None:
        """`record` with the move a step owes it and could not write yet (`_catch_up`): its wait keeps its
        length meanwhile, not only once the state can be written again."""
        owed = self._unmoved.get(record.key) if record is not None else None
        if record is None or owed is None or owed[0] is not record or record.next_attempt_at is None:
            return record
        return record.evolve(next_attempt_at=record.next_attempt_at + owed[1])

    def _first_of_term(self, key: str) -> bool:
        """Whether this term has not looked at `key` yet (a restart, a takeover, or a start this term made)."""
        looked = self.runtimes.get(key).looked_at
        return looked is None or looked < self._term_began

    def _failing_from(self, record: TaskRecord, first_of_term: bool, now: float) -> float:
        """When a failed look's run of failures began, for `unknown_since`: now, but at this term's first look at a
        task last seen before the term, the looks may have failed under the leader before (a restart, a
        takeover in an outage): the state's last good look (written at least every STILL_RUNNING_WRITE_EVERY; an
        update the vendor took since moved it too; a failed update or stop does not, walk 39B-2)."""
        seen = record.observed_at
        return seen if first_of_term and seen is not None and seen < min(self._term_began, now) else now

    def _update(
        self, key: str, transition: Callable[..., runtime.KeyRuntime], *args: object, **kwargs: object
    ) -> runtime.KeyRuntime:
        """Apply one transition to the key's current value (no await between the read and the write)."""
        return self.runtimes.set(key, transition(self.runtimes.get(key), *args, **kwargs))

    async def reconcile(self, key: str) -> Result:
        """One pass over one key."""
        spec = self.spec
        if spec is None:
            return Result(None)  # no valid spec set yet: nothing is decided, nothing is stopped
        self._catch_up()
        task, record, now = spec.tasks.get(key), self._as_moved(self.records.get(key)), self.clock.now()
        if task is None:
            return await self._reconcile_removed(key, record)
        moved: dict[str, str] = {}
        # A Provider renamed (the same account's?), or a thumbnail's accepted submission taken under one renamed since.
        if record is not None and (record.provider != task.provider or record.accepted is not None):
            rehomed = rehome({key: task}, {key: record}, spec.providers, self.records.fingerprint_key())
            record, moved = rehomed.records[key], rehomed.moved
        submitted_as: dict[str, TaskRecord] = {}
        if record is None:  # a thumbnail ZEGO took under a key no longer declared (a ThumbnailJob renamed)
            under = content_under(task, self.records.fingerprint_key())
            before = transitions.submitted_before(task, self.records.submitted(task.target), spec.tasks, under)
            if before is not None:  # its no-op says so, as the CLI's plan does (walk 60a-1)
                submitted_as, record = {key: before}, transitions.taken_over(before, task)
        if record is not None:  # a label or selector edit alone changes no vendor task: record it here
            record = engine.record_labels(self.records, {key: record}, {key: task})[key]
        observed: dict[str, Observed] = {}
        # (A start never confirmed whose spec changed is looked at too: an update may do, if it runs.)
        if record is not None and (self._observation_due(record, now) or transitions.confirmable(task, record)):
            first_of_term, term = self._first_of_term(key), self._terms  # before the call: a step moves both times
            obs, stepped = await self._observe(record)
            first_of_term |= term != self._terms  # a term began during the call (the lease lost and regained)
            obs = self._with_end_reason(record, obs)
            if stepped:  # what is decided and written from here on is on the clock as it is now
                now = self.clock.now()
            observed[key] = obs
            unknown = obs.state is ObservedState.UNKNOWN
            self._update(
                key,
                runtime.unconfirmed,
                "unknown" if unknown else None,
                _look_error(obs) if unknown else None,
                self._failing_from(record, first_of_term, now),
            )
            try:
                record = engine.persist_observations(
                    self.records, {key: record}, {key: obs}, now, still_running_every=policy.STILL_RUNNING_WRITE_EVERY
                ).get(key, record)
            except StateError:
                if obs.state is not ObservedState.RUNNING:  # it ended, but the record cannot say so yet
                    self._update(key, runtime.unconfirmed, TaskStatus.STOPPED.value)
                self._update(key, runtime.observe_first)  # the retry looks again instead of trusting the record
                raise
            if self._left(key):
                return Result(0.0)  # what it saw is recorded; nothing is decided for a task no longer declared
        if record is not None and task.ending and record.status is TaskStatus.FAILED:
            # A start that failed for a room since closed (not seen running): left to its room, as a backing-off
            # task is (`_drop_slot`). Retried, it failed for the whole of a vendor outage, the page red for an
            # empty room, and then started a capture in it, billed until it idled out (walk 43B-1).
            self.records.put(record.evolve(status=TaskStatus.STOPPED, next_attempt_at=None))
            return Result(self._next_look(key, now))
        if record is not None and self._waiting_to_reissue(task, record):
            rt = self.runtimes.get(key)
            since = max(record.started_at or 0.0, rt.room_emptied or 0.0)
            room_active = rt.room_activity is not None and rt.room_activity >= since
            room_empty = policy.room_known_empty(
                record, feed=self._has_room_feed(record), active_at=rt.room_activity, emptied_at=rt.room_emptied
            )
            decision = policy.reissue_decision(
                record, now, rollover_hint=self._hinted(record), room_active=room_active, room_empty=room_empty
            )
            if not decision.immediate:
                return Result(self._postpone(record, decision, now))
            # Its time has come (room activity may come before the slot): diff re-issues it, no longer waiting.
            record = record.evolve(status=TaskStatus.STOPPED, next_attempt_at=None)
        records = {key: record} if record is not None else {}
        options = PlanOptions(prune=self._prune.prune)
        plan = diff(
            {key: task},
            records,
            observed,
            options=options,
            state_serial=0,
            now=now,
            redacted=self._redacted,
            moved=moved,
            submitted_as=submitted_as,
        )
        change = plan.changes[0]
        if change.action is Action.NOOP:
            # A thumbnail back in the specs as submitted: its record revives without a call, which the log says.
            (log.info if engine.persist_restored(self.records, (change,), records) else log.debug)(
                "no change", reason=change.reason
            )
            # A task of a job made restartPolicy Never while it waited: no slot of its starts it (walk 31a-3).
            same = record is not None and record.spec_hash == task.spec_hash
            self._drop_slot(key, now, at_once=task.ending or (same and task.restart_policy is RestartPolicy.NEVER))
            # A failed update's retry looks first (`observe_first`): with the vendor down that look fails too and
            # leaves the task as is, which is no success: counted one, it reset the backoff to 5 s (walk 43B-2).
            unseen = key in observed and observed[key].state is ObservedState.UNKNOWN
            return Result(self._next_look(key, now), keep_backoff=unseen)
        if change.action is Action.UPDATE and self._backing_off(key):
            # A pass for its next look (or a callback) before the failed update's backoff step: it does not send
            # the update again, or an outage got one every sweep, 6 tries each (walk 43B-2).
            return Result(self._next_look(key, now), keep_backoff=True)
        if change.action in _STARTS and (holder := self._held_by_removed(task)) is not None:
            # A job renamed with its taskId kept: the vendor would answer this start "already started", and the
            # old key's stop would then end the run. Its prune stops it first and wakes this key (`wake`).
            reason = f"its vendor task (RoomId + TaskId) is still {holder}'s, which is pruned first"
            # Info once: a prune held back for a human keeps it waiting through every resync.
            (log.debug if key in self._told_waiting else log.info)("decision", action="wait", reason=reason)
            self._told_waiting.add(key)
            return Result(None)
        self._told_waiting.discard(key)
        if change.action in _STARTS and (name := transitions.volc_task_name(task.family, task.request)) is not None:
            # A removed key's change being cut short may still end a call on this vendor task: it ends first.
            for other in [c for k, c in self._in_flight.items() if k != key and name in c.names]:
                if other.interrupt.cutting.is_set():
                    await other.ended.wait()
            if self._left(key):
                return Result(0.0)
            # The keys that may run its Volcengine task: one does (a renamed job's old key, never pruned), and
            # "already started" is its run, taken over; none does, and it is a run no record accounts for (`state
            # rm` forgot it), whose settings are unknown: the executor restarts it with the declared ones.
            records = {**self.records.holding(name), **records}
        elif change.action is Action.UPDATE and (name := transitions.volc_task_held(record)) is not None:
            # The keys that may run it too: the update is recorded after their start of it (walk 57A-1).
            records = {**self.records.holding(name), **records}
        names = (transitions.volc_task_name(task.family, task.request), transitions.volc_task_held(record))
        await self._carry_out(change, {key: task}, records, names, declared=True)
        return Result(self._next_look(key, self.clock.now()))

    async def _carry_out(
        self,
        change: Change,
        desired: Mapping[str, DesiredTask],
        records: Mapping[str, TaskRecord],
        names: Iterable[tuple[str, str, str] | None],
        *,
        declared: bool,
    ) -> None:
        """`_execute`, known as in flight (`_InFlight`) until it ends."""
        in_flight = self._in_flight[change.key] = _InFlight(frozenset(n for n in names if n is not None), declared)
        try:
            await self._execute(change, desired, records, in_flight.interrupt)
        finally:
            del self._in_flight[change.key]
            in_flight.ended.set()

    def _left(self, key: str) -> bool:
        """The key left the set in force while its pass awaited a vendor call: its decision is void (the set's
        reload queued it again, as a removed key)."""
        return self.spec is not None and key not in self.spec.tasks

    async def _reconcile_removed(self, key: str, record: TaskRecord | None) -> Result:
        if record is not None and self._prune.holds(key):
            return await self._observe_held(record)
        self._update(key, runtime.forgotten)
        self._told_waiting.discard(key)
        now = self.clock.now()
        if record is not None and record.status is TaskStatus.REMOVED:
            if engine.collect_tombstones(self.records, {key: record}, {}, now):
                log.info("tombstone forgotten", removed_at=record.removed_at)
                return Result(None)
            return Result(max(0.0, (record.removed_at or now) + transitions.TOMBSTONE_RETENTION - now))
        if record is None:
            return Result(None)
        wait = self._prune.wait(key)
        if wait is None or wait > 0:
            return Result(wait)
        assert self.spec is not None
        # Keys of the specs that name its Volcengine task (a renamed job's): one that holds it already keeps it
        # (the plan and the executor retire this key without a stop); one waiting to start it goes now (`wake`).
        name = transitions.volc_task_name(record.family, record.vendor_ids)
        naming = self._keys_naming(name) if name is not None else []
        holders = {k: r for k in naming if (r := self.records.get(k)) and transitions.volc_task_held(r) == name}
        desired = {k: self.spec.tasks[k] for k in holders}
        # Its Provider removed with it, another of the same account stops it (`moves.rehome`).
        rehomed = rehome(desired, {key: record, **holders}, self.spec.providers, self.records.fingerprint_key())
        records = rehomed.records
        try:
            plan = diff(
                desired,
                records,
                {},
                options=PlanOptions(),
                state_serial=0,
                now=now,
                providers=self.spec.providers,
                moved=rehomed.moved,
            )
        except PlanError as exc:
            if self._prune.unstoppable(key):  # once per task: no retry loop, no log line per resync
                log.error("cannot prune", error=str(exc))
            return Result(None, wake=tuple(naming))  # nothing stops it now: a key waiting to start it may
        selectors = [
            (f"{c.job.kind}/{c.job.name}", room_selector, c.provider.name)
            for c in self.spec.selector_jobs
            if (room_selector := selector_of(c))
        ]
        change = uncovered(next(c for c in plan.changes if c.key == key), selectors)
        await self._carry_out(change, desired, records, (name,), declared=False)
        self._prune.stopped(key)
        return Result(transitions.TOMBSTONE_RETENTION, wake=tuple(naming))

    async def _observe_held(self, record: TaskRecord) -> Result:
        """A task whose prune waits for a human (--max-prune) keeps running: it is looked at as often as a
        declared one, so that a stop by the vendor is recorded (`state list`, the status page, the next apply);
        nothing is decided for it (docs/daemon.md, "Pruning and its safeguard"; walk 32d-1: never looked at)."""
        key = record.key
        assert self.spec is not None
        # Its Provider renamed (removed, another of its home declared): looked at through that one, as its prune
        # stops it. Through the gone one it was never looked at: the vendor's end of its run went unseen and a
        # renamed job's key waiting for it (`_held_by_removed`) waited for a human (walk 45A-1).
        via = rehome({}, {key: record}, self.spec.providers, self.records.fingerprint_key()).records[key]
        name = transitions.volc_task_held(record)
        if via.provider not in self.spec.providers:
            # Nothing can observe it (nor stop it): its next look, never moved on, fell due at once pass after
            # pass, a hot loop (walk 33b-1). The resync looks again, and so a Provider restored. A key waiting
            # for it takes the task over, as when its prune finds it unstoppable (walk 45A-2).
            if self._prune.unstoppable(key):
                log.error(
                    "cannot prune",
                    error=f"provider {record.provider!r} was removed from the specs but still runs {key} (its "
                    "prune held for a human) and no declared Provider names its account (type, appId, endpoint): "
                    "nothing can look at or stop it. Put the Provider back, or forget it with `capctl state rm "
                    f"{key}` (its vendor task keeps running)",
                )
            return Result(None, wake=tuple(self._keys_naming(name)) if name is not None else ())
        self._prune.reachable(key)
        if self._observation_due(record, self.clock.now()):
            obs, _ = await self._observe(via)
            engine.persist_observations(
                self.records,
                {key: record},
                {key: self._with_end_reason(record, obs)},
                self.clock.now(),
                still_running_every=policy.STILL_RUNNING_WRITE_EVERY,
            )
        current = self.records.get(key)
        # A renamed job's key waiting for this prune to free their Volcengine task (`_held_by_removed`) may start
        # once the vendor has ended the run: before, it waited for the next resync (walk 44A-1).
        freed = name is not None and transitions.volc_task_held(current) != name
        wake = tuple(self._keys_naming(name)) if freed and name else ()
        if current is None or not needs_observation(current) or current.status is TaskStatus.DORMANT:
            # It ended: nothing more to see until a human decides (or the file returns).
            return Result(None, wake=wake)
        return Result(self._next_look(key, self.clock.now()), wake=wake)

    def _drop_slot(self, key: str, now: float, *, at_once: bool) -> None:
        """A waiting task for which this pass decided nothing to start is left to its room (restartPolicy Never:
        a room-selector task whose room closed, `transitions.left_to_its_room`) once its re-issue slot has
        passed: kept, `_next_look` queued the key again at once, thousands of passes a second (walk 30b-1). It
        goes `at_once` when the slot can start nothing: a selector task leaving its room (the slot was set while
        its room was still chosen, the run idled out before the room was known closed: walk 31a-1), or one of a
        job made restartPolicy Never since (walk 31a-3); `state list`, the status page and `plan` said `dormant`,
        to wake at that slot, for an hour in which nothing would start it. It is `stopped` (an edit of its job
        then starts it at once, as for any stopped task of a Never job)."""
        record = self.records.get(key)
        if record is None or record.next_attempt_at is None or (record.next_attempt_at > now and not at_once):
            return
        if record.status in (TaskStatus.STOPPED, TaskStatus.DORMANT):
            self.records.put(record.evolve(status=TaskStatus.STOPPED, next_attempt_at=None, room_empty=False))

    def _held_by_removed(self, task: DesiredTask) -> str | None:
        """The key removed from the specs and still to be pruned whose record holds the Volcengine task that
        `task` starts (a job renamed with its taskId kept), or None."""
        name = transitions.volc_task_name(task.family, task.request)
        if name is None:
            return None
        return next(
            (k for k in self._prune.removing() if transitions.volc_task_held(self.records.get(k)) == name), None
        )

    def _keys_naming(self, name: tuple[str, str, str]) -> list[str]:
        """The keys of the spec set in force whose task is the Volcengine task `name`: indexed once per set."""
        if self._naming is None:
            assert self.spec is not None
            naming: dict[tuple[str, str, str], list[str]] = {}
            for key, task in self.spec.tasks.items():
                if (its := transitions.volc_task_name(task.family, task.request)) is not None:
                    naming.setdefault(its, []).append(key)
            self._naming = naming
        return self._naming.get(name, [])

    async def _execute(
        self,
        change: Change,
        desired: Mapping[str, DesiredTask],
        records: Mapping[str, TaskRecord],
        interrupt: Interrupt | None = None,
    ) -> None:
        """Carry out one change; `desired` and `records` have its key's, and those of kept keys that hold a
        deleted record's vendor task too (the executor then retires it without a stop); for a start, `records`
        also has those that may run the Volcengine task it starts, for an update those that may run the one it
        updates (its `updated_at` then comes after theirs, walk 57A-1). `interrupt`: pressed when its key leaves the
        specs, or comes back to them during its prune (`_InFlight`)."""
        log.info("decision", action=change.action.value, reason=change.reason)
        record = records.get(change.key)
        result = (await self._executor.apply((change,), desired, records, interrupt=interrupt)).results[0]
        if result.cut_short:
            # The record holds what was committed before the cut. What the call cut short did is not known: a
            # key back in the specs is observed before anything is decided for it (`runtime.forgotten`).
            how = "is back in" if self._spec is not None and change.key in self._spec.tasks else "left"
            reason = f"its task {how} the specs while the change was in flight: what it committed stays recorded"
            log.info("cut short", action=change.action.value, reason=reason)
            return
        if not result.ok:
            if change.action is Action.UPDATE:  # it may have ended unseen (refused: no running task): the retry
                self._update(change.key, runtime.observe_first)  # looks first, and then starts it anew
            raise ReconcileFailed(f"{change.action.value} failed: {result.error}")
        if change.action is Action.REISSUE and record is not None:
            self._count_reissue(record)
        waiting = self.runtimes.get(change.key).waiting_since
        if waiting is not None and change.action in _STARTS:  # a replace too: an edit that waited for the room
            self.metrics.capture_gap.observe(max(0.0, self.clock.now() - waiting))
        self._update(change.key, runtime.acted)
        if result.note:
            log.info("done", action=change.action.value, note=result.note)

    def _count_reissue(self, before: TaskRecord) -> None:
        after = self.records.get(before.key)
        if after is not None and after.reissue_count == before.reissue_count and not before.reissuing:
            # Answered "already running": the run went on (`transitions.run_goes_on`), nothing re-issued. (A
            # re-issue taken up again, `reissuing`, was counted in its record at its first intent, not here.)
            return
        rollover = policy.is_rollover(before, hinted=self._hinted(before))
        # The vocabulary's phrase, not the whole reason: one label per cause, whichever vendor code came with it.
        reason = "rollover" if rollover else stopreasons.phrase_of(before.stop_reason or "unknown")
        self.metrics.reissues.labels(reason=reason[:64]).inc()
        if after is not None and after.started_at is not None and before.stopped_at is not None:
            self.metrics.reissue_gap.observe(max(0.0, after.started_at - before.stopped_at))

    # --- re-issue pacing --------------------------------------------------------------------------------

    @staticmethod
    def _waiting_to_reissue(task: DesiredTask, record: TaskRecord) -> bool:
        # An edited spec is started now (a replace: `diff`), unless the task is dormant in a room known empty:
        # then the room's activity starts it, with the new spec (`plan` says so too), also under a restartPolicy
        # switched to Never with the edit (an edit starts it once more, docs/spec-language.md).
        if record.spec_hash != task.spec_hash and transitions.waits_for_room(task, record):
            return True
        # A replace cut short after its stop is no run the vendor ended: its start goes now (walk 49a).
        return (
            record.status in (TaskStatus.STOPPED, TaskStatus.DORMANT)
            and task.restart_policy is RestartPolicy.ALWAYS
            and record.spec_hash == task.spec_hash
            and not transitions.replace_cut_short(record)
        )

    def _with_end_reason(self, record: TaskRecord, obs: Observed) -> Observed:
        """Polling may say only 'ended (ZEGO status 4)'; a callback may have said why: prefer its words."""
        hint = self.runtimes.get(record.key).end_reason
        if hint is None or hint[0] != record.vendor_task_id or obs.state is not ObservedState.STOPPED:
            return obs
        return dataclasses.replace(obs, reason=hint[1])

    def _has_room_feed(self, record: TaskRecord) -> bool:
        return self._room_app(record.provider) in self._room_feeds

    def _room_app(self, provider: str) -> tuple[str, str]:
        """(vendor, app id) of a Provider document: how room callbacks name where they come from."""
        config = self.spec.providers.get(provider) if self.spec else None
        return (config.type, config.app_id) if config is not None else ("", provider)

    def _hinted(self, record: TaskRecord) -> bool:
        hint = self.runtimes.get(record.key).rollover_hint
        return record.vendor_task_id is not None and hint == record.vendor_task_id

    def _postpone(self, record: TaskRecord, decision: policy.ReissueDecision, now: float) -> float:
        if record.next_attempt_at is None:
            waiting = policy.postpone(record, decision, now)
            self.records.put(waiting)
            log.info(
                "decision",
                action="wait",
                status=waiting.status.value,
                retry_in=round(decision.delay, 1),
                unproductive_runs=decision.unproductive,
                vendor_faults=decision.faults,
                reason=_wait_reason(decision),
            )
        return decision.delay

    # --- observation cadence ----------------------------------------------------------------------------

    def _observation_due(self, record: TaskRecord, now: float) -> bool:
        if not needs_observation(record) or record.status is TaskStatus.DORMANT:
            return False
        rt = self.runtimes.get(record.key)
        return rt.observe_now or rt.next_observe is None or now >= rt.next_observe

    async def _observe(self, record: TaskRecord) -> tuple[Observed, float]:
        """What the vendor says of `record`'s run, and the wall-clock step noticed once it answered (0.0: none)."""
        self._update(record.key, runtime.looking)
        try:
            obs = await self._provider(record.provider, record.family).observe(record)
        except VendorError as exc:
            obs = Observed(ObservedState.UNKNOWN, detail=str(exc))
            self.metrics.reconcile_errors.labels(reason=vendor_error_reason(exc)).inc()
            # A wrong secret or a vendor down fails every task's look alike: one line a minute per Provider and
            # cause (at 1,000 tasks each sweep wrote 1,000, pushing every decision off the status page).
            if (fields := self._look_failed.allow(shared_failure(record.provider, exc))) is not None:
                log.warning("observation failed", error=str(exc), **fields)
        # A step while the call was awaited: the schedule is moved before its next look is set on the clock as
        # it is now (moved at the next pass, that look was moved twice: a step forward of an hour, an hour late).
        stepped = self._catch_up()
        now = self.clock.now()
        swept = now + self._period(record) * (1 - RESYNC_JITTER + 2 * RESYNC_JITTER * self._rng.random())
        rollover = policy.rollover_at(record, swept) if obs.state is ObservedState.RUNNING else None
        if rollover is not None and now < rollover + policy.DEADLINE_MARGIN:
            self._update(record.key, runtime.probing, rollover)
        self._update(record.key, runtime.looked, now, swept, running=obs.state is ObservedState.RUNNING)
        log.debug("observed", state=obs.state.value, reason=obs.reason)
        return obs, stepped

    def _next_look(self, key: str, now: float) -> float | None:
        """When this key needs its worker again: its next observation or its scheduled re-issue."""
        record = self.records.get(key)
        if record is None:
            return None
        if record.next_attempt_at is not None and record.status in (TaskStatus.STOPPED, TaskStatus.DORMANT):
            return max(0.0, record.next_attempt_at - now)
        if not needs_observation(record) or record.status is TaskStatus.DORMANT:
            return None
        due = self.runtimes.get(key).next_observe
        if due is None:
            # Just started: look at its first expected deadline, or after one sweep, whichever is first.
            deadline = policy.expected_deadline(record)
            due = now + self._period(record)
            if deadline is not None and deadline > now:
                due = min(due, deadline)
            self._update(key, runtime.planned, due)
        return max(0.0, due - now)

    def _hint_look(self, record: TaskRecord, hint: float) -> float:
        """Set the next look a callback suggests, held to one sweep period after the last observation."""
        due = self._update(record.key, runtime.hinted_look, hint, self._last_look(record), self._period(record))
        assert due.next_observe is not None
        return due.next_observe

    def _last_look(self, record: TaskRecord) -> float:
        """When the running task was last observed (the record's time before the first look after a restart)."""
        rt = self.runtimes.get(record.key)
        return rt.looked_at if rt.looked_at is not None else record.observed_at or record.started_at or self.clock.now()

    def _period(self, record: TaskRecord) -> float:
        return policy.sweep_period(self.resync, self._running_count(record), self._query_rate(record))

    def _running_count(self, record: TaskRecord) -> int:
        """Running tasks sharing this record's query budget (recounted at most once per COUNTS_TTL)."""
        now = self.clock.monotonic()
        if now - self._counts_at > COUNTS_TTL:
            counts: dict[tuple[str, ApiFamily], int] = {}
            for r in self.records.values():
                if needs_observation(r) and r.status is not TaskStatus.DORMANT:
                    account = self._account(r.provider)
                    counts[(account, r.family)] = counts.get((account, r.family), 0) + 1
            self._counts, self._counts_at = counts, now
        return self._counts.get((self._account(record.provider), record.family), 1)

    def _account(self, provider: str) -> str:
        config = self.spec.providers.get(provider) if self.spec else None
        return config.account if config is not None else provider

    def _query_rate(self, record: TaskRecord) -> float:
        config = self.spec.providers.get(record.provider) if self.spec else None
        return FAMILIES[record.family].query_rate(config.rate_limits if config else None) * HEADROOM

    # --- callback hints ---------------------------------------------------------------------------------

    def on_callback(self, routed: RoutedCallback) -> list[tuple[str, float]]:
        """Turn an accepted callback into runtime hints; returns the keys to queue, each with its delay."""
        event = routed.event
        if event is None:  # refused, or a duplicate: nothing to do
            return []
        self._catch_up()
        queued: list[tuple[str, float]] = []
        if event.room_id is not None and event.task_id is None:
            self._room_feeds.add((event.vendor, event.app_id))
        record = self.records.get(routed.task_key) if routed.task_key is not None else None
        if record is not None:
            queued += self._on_task_event(event, record, stale=routed.stale)
        queued += self.wake(routed.woken, event.event, received_at=routed.received_at)
        queued += self._emptied(routed.emptied)
        return queued

    def _on_task_event(self, event: CallbackEvent, record: TaskRecord, *, stale: bool) -> list[tuple[str, float]]:
        """`stale`: the callback's word on its room is older than a contrary one (`roomorder`): ignored."""
        key = record.key
        room_empty = event.room_empty and not stale
        productive = event.output and not record.productive and record.status is TaskStatus.RUNNING
        if productive and self._write_hint(record.evolve(productive=True)):  # else the next image says it again
            log.info("run is productive", key=key, callback=event.event)
        if event.ended:
            if record.vendor_task_id is not None:
                self._update(
                    key, runtime.end_hinted, record.vendor_task_id, rollover=event.rollover, reason=event.end_reason
                )
            else:
                self._update(key, runtime.observe_first)
            log.info("callback: run ended; observing", key=key, callback=event.event)
            return [(key, 0.0)]
        if room_empty:
            self._update(key, runtime.room_emptied, self.clock.now())
        idle = record.idle_timeout
        if (event.output or room_empty) and idle is not None:
            # The run cannot idle out before one idle timeout after this event: no need to poll until then.
            # Reckoned from when the event reached us, on our clock: the vendor's clock may be skewed.
            covered = self.clock.now() + idle + policy.DEADLINE_MARGIN
            if record.max_duration is not None and record.started_at is not None:
                covered = min(covered, record.started_at + record.max_duration + policy.DEADLINE_MARGIN)
            rt = self.runtimes.get(key)
            if room_empty or rt.next_observe is None:
                hint = covered
            elif rt.probe_until is None:
                # While probing after the last user left, an image may still arrive that was taken before
                # the leave (callbacks race each other): it must not push the look past the idle deadline.
                hint = max(rt.next_observe, covered)
            else:
                return []
            # No task-stopped callback (Volcengine): a run a fault ended is seen when its images stop.
            share = self._running_count(record) / self._query_rate(record)
            silence = policy.image_silence_look(record, self.clock.now(), self._last_look(record), share)
            if event.output and silence is not None:
                hint = min(hint, silence)
            due = self._hint_look(record, hint)
            return [(key, max(0.0, due - self.clock.now()))]
        return []

    def _emptied(self, keys: tuple[str, ...]) -> list[tuple[str, float]]:
        """The last user we saw join left (or the room closed): the room's runs idle out one idle timeout from now."""
        now, queued = self.clock.now(), []
        for key in keys:
            record, rt = self.records.get(key), self.runtimes.get(key)
            if record is None or record.status is not TaskStatus.RUNNING or record.idle_timeout is None:
                continue
            # Told already since the last activity (a leave after the stream stops): the first report is the
            # nearest to the vendor's idle clock, so the probes stay where it put them.
            since = max(rt.room_activity or 0.0, record.started_at or 0.0)
            if rt.room_emptied is not None and rt.room_emptied >= since:
                continue
            # The vendor's idle clock started no later than it sent this callback: the stop is at most
            # one idle timeout away, on our clock.
            stop = now + record.idle_timeout
            self._update(key, runtime.room_emptied, now)
            self._update(key, runtime.probing, stop)
            due = self._hint_look(record, stop + policy.PROBE_DELAY)
            queued.append((key, max(0.0, due - now)))
        return queued

    def _write_hint(self, record: TaskRecord) -> bool:
        """A callback's word written to its record (a run productive, a dormant task woken). A store that
        cannot be written (PostgreSQL restarting, a full disk) must not fail the callback: before, it was
        answered 500 with a traceback. Logged at most once a minute; False when not written."""
        try:
            self.records.put(record)
        except StateError as exc:
            if (held := self._hint_failed.allow()) is not None:
                repeats = {"repeats_held_back": held} if held else {}
                log.warning("callback hint not written to the state", key=record.key, error=str(exc), **repeats)
            return False
        return True

    def wake(self, keys: Iterable[str], source: str, *, received_at: float | None = None) -> list[tuple[str, float]]:
        """Room activity reached the rooms of `keys` (a callback, or the room-listing resync: `source`): what
        was left dormant there is started again; returns the keys to queue, each with its delay.
        `received_at`: when a standby stored the callback in the inbox (None: received now). A key whose last
        run started after that was started after the activity, which is not news to it: received directly, it
        would have come before that start (a leader of a version without the inbox left the entries unread for
        the whole of a rolling update: woken, the task started into a room emptied since; walk 6G-4)."""
        self._catch_up()
        now, queued = self.clock.now(), []
        for key in keys:
            record, rt = self.records.get(key), self.runtimes.get(key)
            if received_at is not None and record is not None and received_at < (record.started_at or received_at):
                continue
            maybe_ended = record is not None and policy.may_have_idled(
                record, active_at=rt.room_activity, emptied_at=rt.room_emptied, now=now
            )
            # No record yet is no run either: a room-selector room's first stream makes its task, whose first
            # run then ends a capture gap as a named room's re-issue does (walk 5g: it counted none).
            uncaptured = record is None or record.status is not TaskStatus.RUNNING or maybe_ended
            # Remembered: a run that looks running now but already ended is re-issued at once when seen.
            # Our clock: compared with our records' start times.
            self._update(key, runtime.room_active, now, uncaptured=uncaptured)
            if maybe_ended:
                # The run may have idled out in the empty room: look now rather than at the next sweep.
                self._update(key, runtime.observe_first)
                queued.append((key, 0.0))
                continue
            if record is None or record.next_attempt_at is None or record.next_attempt_at <= now:
                continue
            if record.status in (TaskStatus.DORMANT, TaskStatus.STOPPED):
                # Unwritten, the worker still starts it: the room activity noted above makes it immediate.
                self._write_hint(record.evolve(next_attempt_at=now))
                queued.append((key, 0.0))
                log.info("room activity: waking task", key=key, callback=source, was=record.status.value)
        return queued


_STARTS = (Action.CREATE, Action.REPLACE, Action.REISSUE)


def _look_error(obs: Observed) -> str:
    """Why a task's status is unknown now, as the status page shows it."""
    return obs.detail or "the vendor's status could not be read"


def _wait_reason(decision: policy.ReissueDecision) -> str:
    """Why a stopped task waits, in the decision log line's words (docs/daemon.md, "Re-issue policy")."""
    if decision.dormant:
        return "dormant: no room activity"
    return "retrying after vendor faults" if decision.faults else "backing off unproductive runs"
