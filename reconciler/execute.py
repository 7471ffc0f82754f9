"""Carrying out a plan, and observing vendor status for one: the engine's I/O edge.

Each change is executed on its own, concurrently within an in-flight window, every vendor call paced by
its rate budget and retried with backoff. The window is sized by Little's law (in flight = rate × time
per change × a margin) from the budgets' rates and the time changes are observed to take, so the rate
budget, not the window, bounds an apply; `parallelism` caps it. Each state change is committed as soon as
it happens (the intent before a non-idempotent start, the vendor id right after), so a crash loses nothing
already done. A terminal error is recorded on its task; the rest of the plan goes on. An `Interrupt`
(Ctrl-C) first starts nothing new and lets the changes in flight finish, then, pressed again, cuts them
short; either way the result says what was done, what was cut short and how many were never started.
Once `GIVE_UP_AFTER` changes of one provider in a row got no answer at all (after their retries), the rest
of that provider's changes are not attempted, each recorded on its task: a dead endpoint costs one round
of retries, not one per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from reconciler import failpoints, logs, transitions
from reconciler.budget import HOLDUP, Holdup, Priority
from reconciler.clock import Clock
from reconciler.model import (
    Action,
    ApiFamily,
    Change,
    DesiredTask,
    Observed,
    ObservedState,
    TaskRecord,
    TaskStatus,
    job_of,
)
from reconciler.providers.base import ErrorKind, Provider, StartResult, VendorError
from reconciler.redact import redact_tree
from reconciler.retry import RetryHook, RetryPolicy, call_with_retry
from reconciler.state.base import StateError, StateStore

__all__ = [
    "CUT_SHORT",
    "GIVE_UP_AFTER",
    "INITIAL_WINDOW",
    "MARGIN",
    "MAX_WINDOW",
    "MIN_WINDOW",
    "REPLACE_STOPPED_UNRECORDED",
    "REPLACE_STOPPED_UNRECORDED_RETRIED",
    "SMOOTHING",
    "STARTED_UNRECORDED",
    "STARTED_UNRECORDED_RETRIED",
    "STOPPED_UNRECORDED",
    "STOPPED_UNRECORDED_RETRIED",
    "ApplyResult",
    "ChangeResult",
    "Executor",
    "Interrupt",
    "ProviderLookup",
    "WindowSizer",
    "needs_observation",
    "observe_all",
]

log = logs.lazy_logger("capctl.execute")  # structlog imported by the first line written

ProviderLookup = Callable[[str, ApiFamily], Provider]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChangeResult:
    key: str
    action: Action
    ok: bool
    error: str | None = None
    note: str | None = None
    cut_short: bool = False  # interrupted while its vendor call was in flight
    not_attempted: bool = False  # left out: its provider had stopped answering (counted as failed)


CUT_SHORT = "interrupted while its vendor call was in flight: its intent is recorded, the next apply resolves it"
# A start the vendor answered whose record then failed: a bare "the state store failed" read as nothing started.
# Who takes it up: the next apply, or under the daemon its own retry (walk 56c: "the next apply" in its log).
_STARTED = "the vendor started it before the state could record that: it runs"
STARTED_UNRECORDED = f"{_STARTED}; the next apply takes it up"
STARTED_UNRECORDED_RETRIED = f"{_STARTED}; its retry takes it up, starting no second one"
# A stop the vendor answered whose record then failed (a delete, a replace's stop): it read as nothing stopped, the
# run still going (walk 58e). Its record still says running: the next stop finds nothing and records it so.
_STOPPED = "the vendor stopped it before the state could record that: it is stopped"
STOPPED_UNRECORDED = f"{_STOPPED}; the next apply records it"
STOPPED_UNRECORDED_RETRIED = f"{_STOPPED}; its retry records it"
_REPLACE_STOPPED = "the vendor stopped its old run before the state could record that: nothing runs"
REPLACE_STOPPED_UNRECORDED = f"{_REPLACE_STOPPED}; the next apply starts it"
REPLACE_STOPPED_UNRECORDED_RETRIED = f"{_REPLACE_STOPPED}; its retry starts it"
# What the vendor did before a record failed -> what the failure says: by the next apply, by the daemon's retry.
_UNRECORDED: Final = {
    "started": (STARTED_UNRECORDED, STARTED_UNRECORDED_RETRIED),
    "stopped": (STOPPED_UNRECORDED, STOPPED_UNRECORDED_RETRIED),
    "replace-stopped": (REPLACE_STOPPED_UNRECORDED, REPLACE_STOPPED_UNRECORDED_RETRIED),
}


@dataclass(frozen=True, slots=True)
class ApplyResult:
    results: tuple[ChangeResult, ...]
    not_started: int = 0  # changes left out because the apply was interrupted, or its state store failed
    interrupted: bool = False
    store_error: str | None = None  # the state store failed: no change started after it

    def __repr__(self) -> str:  # asyncio.run reprs the result it returns: keep 10,000 results out of it
        return f"ApplyResult(results={len(self.results)}, failed={len(self.failed)})"

    @property
    def failed(self) -> tuple[ChangeResult, ...]:
        return tuple(r for r in self.results if not r.ok and not r.cut_short)

    @property
    def cut_short(self) -> tuple[ChangeResult, ...]:
        return tuple(r for r in self.results if r.cut_short)

    def summary(self) -> str:
        done: dict[str, int] = {}
        for r in self.results:
            if r.ok:
                done[r.action.value] = done.get(r.action.value, 0) + 1
        words = {
            "create": "created",
            "update": "updated",
            "replace": "replaced",
            "reissue": "re-issued",
            "delete": "deleted",
        }
        if done.get(Action.MOVE.value):  # said only when some were: most applies move nothing
            words["move"] = "re-homed"
        parts = [f"{done.get(a, 0)} {w}" for a, w in words.items()]
        skipped = sum(1 for r in self.results if r.not_attempted)
        failed = f"{len(self.failed)} failed" + (f" ({skipped} of them not attempted)" if skipped else "")
        if self.store_error is not None:
            return (
                f"Apply stopped (the state store failed): {', '.join(parts)}, {failed}, {self.not_started} not started."
            )
        if not self.interrupted:
            return f"Apply complete: {', '.join(parts)}, {failed}."
        return (
            f"Apply interrupted: {', '.join(parts)}, {failed}, "
            f"{len(self.cut_short)} cut short in flight, {self.not_started} not started."
        )


class Interrupt:
    """Ctrl-C for an apply, in two steps as Terraform has them: the first press starts nothing new and lets
    the changes in flight finish; the second cuts those short (their intent records stay for the next apply)."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.cutting = asyncio.Event()

    def press(self) -> int:
        """Record one press; returns 1 for the first, 2 from the second on."""
        if not self.stopping.is_set():
            self.stopping.set()
            return 1
        self.cutting.set()
        return 2


# The in-flight window (Little's law): changes in flight = budget rate × seconds a change takes besides
# waiting for its budget × MARGIN, between MIN_WINDOW and the cap. Before the first change is done,
# INITIAL_WINDOW. MARGIN covers the spread of those times, so the budget always has a request waiting.
MARGIN = 2.0
MIN_WINDOW = 4
INITIAL_WINDOW = 16
MAX_WINDOW = 128  # the cap when `parallelism` is not given ("auto")
SMOOTHING = 0.2  # weight of the newest observation in the moving average of a change's time


class WindowSizer:
    """How many changes to keep in flight, from the budgets they use and the time they are seen to take."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: dict[str, tuple[float, float]] = {}  # budget -> (its rate, average seconds per change)

    def observe(self, holdup: Holdup, seconds: float) -> None:
        """One change took `seconds` in all, `holdup.waited` of them waiting for budget slots."""
        if not holdup.budget:  # no vendor call (a thumbnail forgotten): nothing to learn
            return
        work = max(0.0, seconds - holdup.waited)
        _, average = self._seen.get(holdup.budget, (holdup.rate, work))
        self._seen[holdup.budget] = (holdup.rate, average + SMOOTHING * (work - average))

    @property
    def size(self) -> int:
        if not self._seen:
            return min(self.cap, INITIAL_WINDOW)
        needed = sum(rate * average for rate, average in self._seen.values()) * MARGIN
        return max(min(self.cap, MIN_WINDOW), min(self.cap, math.ceil(needed)))


class Executor:
    def __init__(
        self,
        store: StateStore,
        providers: ProviderLookup,
        clock: Clock,
        *,
        parallelism: int | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        on_retry: RetryHook | None = None,
        retry_in: Callable[[str], float] | None = None,
    ) -> None:
        """`parallelism` caps the changes in flight (None: `MAX_WINDOW`); within it the window is sized
        from the rate budgets and the observed time per change. `on_retry` hears of every retry.
        `retry_in(key)`: the seconds until a task whose start failed is tried again (the daemon's backoff),
        recorded with the failure as its next attempt; None (apply): the next apply tries it."""
        if parallelism is not None and parallelism < 1:
            raise ValueError("parallelism must be at least 1")
        self._store = store
        self._providers = providers
        self._clock = clock
        self.window = WindowSizer(parallelism or MAX_WINDOW)
        self._retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._on_retry = _with_log(on_retry)
        self._retry_in = retry_in
        # Keys whose start just failed and may run all the same (`transitions.failed_may_run`): its result says
        # so, as `state list` does; the error alone read as a refusal, nothing running (walk 50D-4).
        self._may_run: set[str] = set()
        # Keys whose start or stop the vendor answered but whose record then failed: what it did (`_UNRECORDED`).
        self._unrecorded: dict[str, str] = {}

    async def apply(
        self,
        changes: tuple[Change, ...],
        desired: Mapping[str, DesiredTask],
        records: Mapping[str, TaskRecord],
        *,
        on_done: Callable[[ChangeResult], None] | None = None,
        interrupt: Interrupt | None = None,
        requested: Collection[str] = (),
    ) -> ApplyResult:
        """Every change that is not a no-op, in plan order, within the window, until `interrupt` says
        otherwise; the result counts what was done, what was cut short and what was never started. A
        cancellation from outside cancels the changes in flight and propagates. `records` has every record
        that may run a Volcengine task one of the starts names (`capctl apply`: the whole state; the daemon:
        the key's own and those `RecordCache.holding` finds): a start answered "already started" by a run none
        of them accounts for restarts it (`start`). `requested`: the keys `--replace` names, stopped and started
        again whatever their records say (a replace cut short after its stop too: its start may have begun a run)."""
        interrupt = interrupt or Interrupt()
        actionable = list(enumerate(c for c in changes if c.action is not Action.NOOP))
        results: dict[int, ChangeResult] = {}
        if any(change.action is Action.MOVE for _, change in actionable):
            actionable = self._move(actionable, desired, records, results, on_done)
        stopped_first = _stops_before_starts(actionable, desired, records)
        held = _held_elsewhere(actionable, desired, records)
        shared = _shares_vendor_task(actionable, desired, records)
        after = _settings_after(actionable, desired, records)
        # Those stops go first (plan order otherwise); each start they gate waits for its stop to end.
        todo = deque(sorted(actionable, key=lambda item: item[0] not in stopped_first))
        running: dict[asyncio.Task[ChangeResult], tuple[int, Change]] = {}
        # Per apply (the daemon runs one change per apply): provider -> (its changes that failed in a row
        # without an answer, the first of those errors).
        silent: dict[str, tuple[int, VendorError]] = {}
        loop = asyncio.get_running_loop()
        cut = loop.create_task(interrupt.cutting.wait())
        # The first change whose state write failed: no change starts after it, those in flight finish (each was
        # committed as an intent before its call), then it is raised (the daemon's reason `state-write`).
        store_failed: list[StateError] = []

        def collect(task: asyncio.Task[ChangeResult]) -> None:
            index, change = running.pop(task)
            if task.cancelled():
                result = ChangeResult(change.key, change.action, ok=False, error=CUT_SHORT, cut_short=True)
            elif isinstance(error := task.exception(), StateError):
                store_failed.append(error)
                ran = ""
                if (done := self._unrecorded.pop(change.key, None)) is not None:
                    ran = _UNRECORDED[done][self._retry_in is not None]
                    error.add_note(ran)  # the daemon logs the error raised below: it says so too (walk 56c)
                    ran = f"; {ran}"
                error_text = f"the state store failed: {error}{ran}"
                result = ChangeResult(change.key, change.action, ok=False, error=error_text)
            else:
                result = task.result()
            results[index] = result
            if on_done is not None:
                on_done(result)

        async def cut_short() -> None:
            for task in running:
                task.cancel()
            await asyncio.wait(running)

        try:
            while todo or running:
                while todo and len(running) < self.window.size and not interrupt.stopping.is_set() and not store_failed:
                    index, change = todo.popleft()
                    one = functools.partial(
                        self._run_one,
                        change,
                        desired.get(change.key),
                        records.get(change.key),
                        silent,
                        held.get(index),
                        shared=index in shared,
                        requested=change.key in requested,
                        after=after.get(index, 0.0),
                    )
                    running[loop.create_task(self._gated(index, one, stopped_first))] = (index, change)
                if not running:
                    break
                done, _ = await asyncio.wait({*running, cut}, return_when=asyncio.FIRST_COMPLETED)
                if cut in done:
                    await cut_short()
                for task in [t for t in running if t.done()]:
                    collect(task)
        except asyncio.CancelledError:
            if running:
                await cut_short()
            raise
        finally:
            cut.cancel()
        if store_failed:
            raise store_failed[0]
        ordered = tuple(results[i] for i in sorted(results))
        return ApplyResult(ordered, not_started=len(todo), interrupted=interrupt.stopping.is_set())

    def _move(
        self,
        actionable: list[tuple[int, Change]],
        desired: Mapping[str, DesiredTask],
        records: Mapping[str, TaskRecord],
        results: dict[int, ChangeResult],
        on_done: Callable[[ChangeResult], None] | None,
    ) -> list[tuple[int, Change]]:
        """Write every move's record (`moves.rehome` re-homed it: no vendor call) in one commit, before any call;
        returns the other changes."""
        moves = [(index, change) for index, change in actionable if change.action is Action.MOVE]
        self._store.put_many(_moved(records[c.key], desired[c.key]) for _, c in moves)
        for index, change in moves:
            results[index] = ChangeResult(change.key, change.action, ok=True)
            if on_done is not None:
                on_done(results[index])
        return [(index, change) for index, change in actionable if change.action is not Action.MOVE]

    async def _gated(
        self, index: int, one: Callable[[], Awaitable[ChangeResult]], stopped_first: Mapping[int, _Gate]
    ) -> ChangeResult:
        """Run change `index`: after the stop its start waits for, if any; a stop others wait for opens
        their gate when it ends, however it ends."""
        for gate in stopped_first.values():
            if index in gate.starts:
                await gate.ended.wait()
        try:
            return await self._timed(one)
        finally:
            if index in stopped_first:
                stopped_first[index].ended.set()

    async def _timed(self, one_change: Callable[[], Awaitable[ChangeResult]]) -> ChangeResult:
        """Run one change (in its own asyncio task, so `HOLDUP` is its own) and feed the window sizer."""
        holdup = Holdup()
        HOLDUP.set(holdup)
        began = self._clock.monotonic()
        result = await one_change()
        if result.ok:  # a failure's time is mostly backoff, not the vendor's latency
            self.window.observe(holdup, self._clock.monotonic() - began)
        return result

    # --- one change ---------------------------------------------------------------------------------

    async def _run_one(
        self,
        change: Change,
        task: DesiredTask | None,
        record: TaskRecord | None,
        silent: dict[str, tuple[int, VendorError]],
        held_by: str | None,
        *,
        shared: bool = False,
        requested: bool = False,
        after: float = 0.0,
    ) -> ChangeResult:
        """One change, unless `GIVE_UP_AFTER` changes of its provider in a row got no answer (`silent`).
        `held_by`: for a delete, the kept key whose record holds its vendor task too (`_held_elsewhere`);
        `shared`: for a start, another record names its vendor task too (`_shares_vendor_task`);
        `requested`: a replace `--replace` asked for; `after`: for an update or a start, `_settings_after`."""
        streak, first = silent.get(change.provider, (0, None))
        if first is not None and streak >= GIVE_UP_AFTER:
            return self._not_attempted(change, task, record, first)
        try:
            note = await self._dispatch(change, task, record, held_by, shared=shared, requested=requested, after=after)
        except VendorError as exc:
            # Info, not warning: the apply's result lists every failure, and against a dead endpoint a warning
            # each would repeat 2,000 of them on stderr.
            log.info("change failed", key=change.key, action=change.action.value, error=str(exc))
            if exc.unanswered:  # no answer after every retry (refused, timed out, 5xx), or a lost one
                streak, first = silent.get(change.provider, (0, exc))
                silent[change.provider] = (streak + 1, first)
            else:  # the vendor answered: it is reachable
                silent.pop(change.provider, None)
            may_run = f"; {transitions.MAY_RUN}" if change.key in self._may_run else ""
            self._may_run.discard(change.key)
            return ChangeResult(change.key, change.action, ok=False, error=f"{exc}{may_run}")
        silent.pop(change.provider, None)
        return ChangeResult(change.key, change.action, ok=True, note=note)

    def _not_attempted(
        self, change: Change, task: DesiredTask | None, record: TaskRecord | None, first: VendorError
    ) -> ChangeResult:
        """Record on the task why its change was left out (a new task gets a failed record, as a failed
        create has; a replace cut short is left as it is), and report it as failed."""
        who = f"{first.provider} ({first.provider_type})" if first.provider else change.provider
        error = f"not attempted: {who} did not answer: {str(first).removeprefix(who + ': ')}"
        if record is not None:
            # A replace cut short keeps no error: recorded, its lost start's form read as a failed start, which
            # the daemon held in its backoff, not started at once as that replace (walk 51B-2).
            if not transitions.replace_cut_short(record):
                self._store.put(transitions.not_attempted(record, error))
        elif task is not None:
            # No call was made: nothing of it runs, as after a refusal (a fixed spec creates it, nothing to stop).
            unsent = transitions.intent(task, None, self._clock.now(), reissue=False)
            self._store.put(self._failed(unsent.evolve(client_task_id=None, start_refused=True), error))
        return ChangeResult(change.key, change.action, ok=False, error=error, not_attempted=True)

    def _failed(self, record: TaskRecord, error: str) -> TaskRecord:
        now = self._clock.now()
        retry_at = now + self._retry_in(record.key) if self._retry_in is not None else None
        return transitions.failed(record, error, now, next_attempt_at=retry_at)

    async def _dispatch(
        self,
        change: Change,
        task: DesiredTask | None,
        record: TaskRecord | None,
        held_by: str | None,
        *,
        shared: bool,
        requested: bool = False,
        after: float = 0.0,
    ) -> str | None:
        action = change.action
        if action is Action.DELETE:
            assert record is not None
            return await self._delete(record, held_by)
        assert task is not None, f"{change.key}: no desired task for {action.value}"
        if action is Action.UPDATE:
            assert record is not None
            # The intent of an update: until its answer is recorded, the vendor may hold either value, from now
            # (`updated_at`: a run another key took over before is this key's again, `transitions.runs_as_sent`;
            # later than that takeover was recorded, also after the wall clock stepped back).
            now = self._clock.now()
            sent = record.evolve(
                update_unconfirmed=True, updated_at=now if now > after else math.nextafter(after, math.inf)
            )
            self._store.put(sent)
            try:
                await self._update(task, sent)
            except VendorError as exc:
                # An answered refusal changed nothing at the vendor; a lost answer may have changed it, and an
                # update sent again refused leaves the vendor holding whatever the first one left (from its time).
                unconfirmed = exc.unanswered or record.update_unconfirmed
                at = sent.updated_at if exc.unanswered else record.updated_at
                failed = sent.evolve(update_unconfirmed=unconfirmed, updated_at=at)
                self._store.put(transitions.action_failed(failed, "update", str(exc)))
                raise
            failpoints.hit("update.after-call")
            if transitions.start_unconfirmed(sent):  # a saved plan's update of a start never confirmed: it runs
                sent = transitions.observed(sent, Observed(ObservedState.RUNNING), self._clock.now())
            self._store.put(transitions.updated(sent, task, self._clock.now()))
            return None
        # A replace cut short after its stop is taken up with its start alone, unless --replace asks for it
        # again: then whatever its start may have begun is stopped too (as Terraform's -replace).
        replace = action is Action.REPLACE
        stops = replace and record is not None and (requested or not transitions.replace_resumed(task, record))
        if stops and record is not None:
            if transitions.findable_start(task, record):
                step = self._find_unconfirmed(record, task)
                record = await self._recording_failure(record, "replace (find its unconfirmed start)", step)
            record = await self._recording_failure(record, "replace (stop)", self._stop_for_replace(record))
        reissue = action is Action.REISSUE
        return await self.start(
            task, record, reissue=reissue, replace=replace, stopped=stops, take_over=shared, after=after
        )

    async def _recording_failure(self, record: TaskRecord, action: str, step: Awaitable[T]) -> T:
        """Run one step of a change; a vendor error is recorded on the task (status unchanged), then raised.
        Starts record their own failures (`start`): their status does change, to failed."""
        try:
            return await step
        except VendorError as exc:
            self._store.put(transitions.action_failed(record, action, str(exc)))
            raise

    async def _update(self, task: DesiredTask, record: TaskRecord) -> None:
        provider = self._providers(task.provider, task.family)
        await self._call(lambda: provider.update(task, record))

    async def start(
        self,
        task: DesiredTask,
        record: TaskRecord | None,
        *,
        reissue: bool,
        replace: bool = False,
        stopped: bool = False,
        priority: Priority | None = None,
        take_over: bool = True,
        after: float = 0.0,
    ) -> str | None:
        """Intent → start → commit. Failpoints mark the three places a crash can interrupt it. `stopped`: a
        replace that stopped what its record may run just before (`_dispatch`). `after`: the latest time another
        record holding its Volcengine task set that run's settings (`_settings_after`).

        A Volcengine start answered "already started" at its first try (or after tries that cannot have acted:
        throttled, refused at the port) finds a run that was there before it.
        Unless the record says it was started with these very settings (a run older than the vendor's 72 h
        status window, an unconfirmed start; not a refused one), or `take_over` (another key's record names that
        vendor task: a renamed job taking its run over, docs/daemon.md), its settings are unknown (a task `state
        rm` forgot, one started from another state), and the vendor would go on running them while the state
        says the specs' settings: it is stopped and started again."""
        provider = self._providers(task.provider, task.family)
        # A Volcengine start never confirmed may run under the RoomId + TaskId this one sends: a refusal of this
        # one says nothing of it (it keeps naming the task, so a prune stops it; walk 46A-1). A replace's own
        # start taken up again too (no stop before it: walk 47B-1); a replace that stopped first left none (the
        # stop of a start never confirmed leaves its record as one left to its room is: walk 48a).
        name = transitions.volc_task_name(task.family, task.request)
        resumed = transitions.resumable_start(task, record) or (
            name is not None
            and record is not None
            and not stopped
            and transitions.start_unconfirmed(record)
            and transitions.volc_task_held(record) == name
        )
        pending = transitions.intent(task, record, self._clock.now(), reissue=reissue, replace=replace)
        self._store.put(pending)
        failpoints.hit("start.before-call")
        prio = priority if priority is not None else Priority.REISSUE if reissue else Priority.CHANGE
        acted = False  # an earlier try may have started it (its answer lost); a throttled or refused one did not

        async def attempt() -> StartResult:
            nonlocal acted
            try:
                return await provider.start(task, pending.client_task_id, priority=prio)
            except VendorError as exc:
                acted = acted or exc.may_have_acted
                raise

        restarted = found_runs = False
        held = pending  # what the state says of it: the found run's settings unknown until its stop is answered
        try:
            result = await self._call(attempt)
            # (A record of these settings whose start was refused runs nothing of them: walk 53A-2.)
            ran = record is not None and record.spec_hash == task.spec_hash and not record.start_refused
            known = take_over or acted or ran
            if result.already_running and not known:
                found = transitions.started(pending, result.vendor_task_id, result.vendor_ref, self._clock.now())
                found_runs = True  # until its stop is answered: a refused stop is no refusal of this start
                held = transitions.found_running(pending)
                self._store.put(held)
                await self._stop_remote(found)
                found_runs = False
                held = pending
                result = await self._call(attempt)
                restarted = True
        except VendorError as exc:
            # A refusal says this start did nothing: no recording to find by its ClientTaskId, unless it resumed
            # an earlier start under that id, which may run whatever this answer says. Refused with no answer
            # lost before it (`call_with_retry` marks a lost one `may_have_acted`; a throttled try is an answer, a
            # connect refused at every try sent nothing, walk 51A-1) and
            # resuming nothing, nothing of it runs: a replace has nothing to stop. (A run it found, whose stop
            # failed, still runs: `found_runs`.)
            refused = not (exc.may_have_acted or resumed or found_runs)
            kept = held.evolve(client_task_id=None, start_refused=True) if refused else held
            failed = self._failed(kept, str(exc))
            self._store.put(failed)
            if transitions.failed_may_run(failed):
                self._may_run.add(failed.key)
            raise
        failpoints.hit("start.after-call")
        done = transitions.started(pending, result.vendor_task_id, result.vendor_ref, self._clock.now())
        if not result.already_running and transitions.settings_since(done) <= after:
            # This start set the run's settings after every other holder's, also after the wall clock stepped
            # back: `updated_at` says so (`started_at` stays the clock's), or `runs_as_sent` took a stale key's.
            done = done.evolve(updated_at=math.nextafter(after, math.inf))
        if result.already_running and reissue and record is not None and not record.reissuing:
            # (A re-issue taken up again: the run is likely its own, started before the crash or the lost answer.)
            done = transitions.run_goes_on(done, record)
        with self._unrecorded_if_failing(task.key, "started"):  # its intent stays `pending`: the next apply finds it
            self._store.put(done)
        failpoints.hit("start.after-commit")
        log.info(
            "started",
            key=task.key,
            vendor_task_id=result.vendor_task_id,
            reissue=reissue,
            already_running=result.already_running,
        )
        if restarted:
            return "the vendor already ran it, with settings capctl had not recorded: stopped and started again"
        return "the vendor reports it was already running" if result.already_running else None

    async def _find_unconfirmed(self, record: TaskRecord, task: DesiredTask | None) -> TaskRecord:
        """A ZEGO start that was never confirmed, before its replace or delete: ZEGO finds that recording only by
        a start under its ClientTaskId, which answers with it when it runs (and starts one when it does not).
        The start sends `task`'s request (a replace: the new spec's), or without one (a delete) the record's
        stored request, its secrets shown as fingerprints: a recording it starts has no storage credentials
        that work, and is stopped at once. Its id is recorded on the record, so the stop that follows stops it."""
        provider = self._providers(record.provider, record.family)
        cid = record.client_task_id
        sent = task or _as_started(record)
        self._store.check_lock()  # (a start: it begins a recording where none runs)
        result = await self._call(lambda: provider.start(sent, cid, priority=Priority.CHANGE))
        failpoints.hit("find.after-call")
        found = transitions.started(record, result.vendor_task_id, result.vendor_ref, self._clock.now())
        self._store.put(found)
        return found

    async def _stop_remote(self, record: TaskRecord) -> bool:
        """Stop at the vendor; False when there was nothing to stop (already stopped or unknown)."""
        if not transitions.stoppable(record):
            return False
        self._store.check_lock()  # refused as its intent writes are, once the command's lock was taken over
        provider = self._providers(record.provider, record.family)
        try:
            await self._call(lambda: provider.stop(record))
        except VendorError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return False
            raise
        failpoints.hit("stop.after-call")
        return True

    async def _stop_for_replace(self, record: TaskRecord) -> TaskRecord:
        if await self._stop_remote(record):
            # A Volcengine start never confirmed, stopped by its RoomId + TaskId: nothing of it runs now. Left as
            # is, the record read as a lost start left to its room (may run) after a crash before the intent, and
            # a refusal of the start taken up then kept it so (walk 49a). Its error is of a start now stopped: gone,
            # so that `transitions.replace_cut_short` tells it from a replace's refused start left to its room.
            unconfirmed = record.vendor_task_id is None
            record = transitions.stopped(record, transitions.REPLACED, self._clock.now())
            record = record.evolve(start_refused=True, last_error=None) if unconfirmed else record
            with self._unrecorded_if_failing(record.key, "replace-stopped"):
                self._store.put(record)
            failpoints.hit("stop.after-commit")
        return record

    async def _delete(self, record: TaskRecord, held_by: str | None) -> str | None:
        """Prune: stop it, and keep its record as a tombstone (restoring the spec resumes its history). A vendor
        task that the kept key `held_by` holds too is not stopped: the stop would end that key's run. A ZEGO
        start never confirmed is found first (`transitions.lost_start`). A vendor error is recorded on the task
        as it is then (a recording found keeps its id), and raised."""
        if held_by is not None:
            self._store.put(transitions.removed(record, self._clock.now(), handed_to=held_by))
            return f"its vendor task is {held_by}'s now (the same RoomId and TaskId): not stopped"
        found = transitions.lost_start(record)
        refusal: VendorError | None = None
        if found:
            try:
                record = await self._find_unconfirmed(record, None)
            except VendorError as exc:
                # An answered refusal of the stored request (ZEGO checks what a start sends, and the request now
                # carries fingerprints): the delete cannot find it, as before; retried, it would fail for ever.
                if exc.unanswered or exc.kind is not ErrorKind.TERMINAL:
                    what = "delete (find its unconfirmed start)"
                    self._store.put(transitions.action_failed(record, what, str(exc)))
                    raise
                refusal = exc
        stopped = await self._recording_failure(record, "delete", self._stop_remote(record))
        with self._unrecorded_if_failing(record.key, "stopped" if stopped else None):
            self._store.put(transitions.removed(record, self._clock.now()))
        failpoints.hit("stop.after-commit")
        if refusal is not None:
            return (
                f"its last start was never confirmed, and the StartRecord that looks for it was refused ({refusal}): "
                "if it runs, it ends by itself at its idle timeout or its maximum duration"
            )
        if found:
            return f"its last start was never confirmed: {transitions.FOUND_BY_START}"
        if stopped:
            return None
        left = transitions.unfound_start(record)
        return left or "nothing to stop at the vendor; its record is kept as a tombstone"

    @contextlib.contextmanager
    def _unrecorded_if_failing(self, key: str, done: str | None) -> Iterator[None]:
        """Notes that the vendor `done` what this write records, should the write fail (`_UNRECORDED`)."""
        try:
            yield
        except StateError:
            if done is not None:
                self._unrecorded[key] = done
            raise

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        return await call_with_retry(
            call, clock=self._clock, policy=self._retry, rng=self._rng, on_retry=self._on_retry
        )


def _as_started(record: TaskRecord) -> DesiredTask:
    """The task a record's last start sent, from its stored request (secrets as fingerprints): what finds that
    start at a vendor that knows it by its request (`Executor._find_unconfirmed`) once its spec is gone."""
    return DesiredTask(
        key=record.key,
        kind=record.kind,
        job=job_of(record.key).partition("/")[2],
        target=record.target,
        provider=record.provider,
        family=record.family,
        request=record.request,
        spec_hash=record.spec_hash,
        fixed_hash=record.fixed_hash,
        idle_timeout=record.idle_timeout,
        max_duration=record.max_duration,
    )


def _log_retry(exc: VendorError, attempt: int, delay: float) -> None:
    log.info("retrying", error=str(exc), kind=exc.kind.value, attempt=attempt, delay=round(delay, 2))


def _with_log(hook: RetryHook | None) -> RetryHook:
    """Every retry is logged (info); `hook`, when given, hears of it too (the CLI's progress lines)."""
    if hook is None:
        return _log_retry

    def both(exc: VendorError, attempt: int, delay: float) -> None:
        _log_retry(exc, attempt, delay)
        hook(exc, attempt, delay)

    return both


@dataclass
class _Gate:
    """A delete whose vendor task a start of the same plan names too, and the starts that wait for it."""

    starts: set[int]
    ended: asyncio.Event


def _stops_before_starts(
    actionable: list[tuple[int, Change]], desired: Mapping[str, DesiredTask], records: Mapping[str, TaskRecord]
) -> dict[int, _Gate]:
    """Deletes (by index) that stop the vendor task a start of this plan starts: a job renamed with its
    `taskId` kept, a room moved to another job of the same `taskId`. Volcengine answers that start "already
    started" while the old task runs, and the stop that follows would end it: the stop must come first."""
    starts: dict[tuple[str, str, str], set[int]] = {}
    for index, change in actionable:
        task = desired.get(change.key)
        if change.action is not Action.DELETE and task is not None:
            name = transitions.volc_task_name(task.family, task.request)
            if name is not None:
                starts.setdefault(name, set()).add(index)
    gates: dict[int, _Gate] = {}
    for index, change in actionable:
        record = records.get(change.key)
        if change.action is Action.DELETE and record is not None and transitions.stoppable(record):
            name = transitions.volc_task_name(record.family, record.vendor_ids)
            if name in starts:
                gates[index] = _Gate(starts[name], asyncio.Event())
    return gates


def _held_elsewhere(
    actionable: list[tuple[int, Change]], desired: Mapping[str, DesiredTask], records: Mapping[str, TaskRecord]
) -> dict[int, str]:
    """Deletes (by index) whose vendor task a record the specs keep holds too, with that record's key: a renamed
    job's new key took the running task ("already started") while the old key was kept (`--no-prune`, a
    `--target` or `-l` apply). Their stop would end the kept key's run: they are retired without one."""
    if not any(change.action is Action.DELETE for _, change in actionable):
        return {}
    holders = transitions.volc_holders(records, desired)
    return {
        index: holder
        for index, change in actionable
        if change.action is Action.DELETE
        and (record := records.get(change.key)) is not None
        and (holder := transitions.handed_over_to(record, holders)) is not None
    }


def _settings_after(
    actionable: list[tuple[int, Change]], desired: Mapping[str, DesiredTask], records: Mapping[str, TaskRecord]
) -> dict[int, float]:
    """Updates and starts (by index) of a Volcengine task other records name too, with the latest time one of
    those started or updated it: the change sets the run's settings after them whatever the wall clock says
    since (a step back), and its record must say so, or the run's settings would be taken from a stale key
    (`runs_as_sent`; an update: walk 57A-1, a start: 58A-2)."""
    held = transitions.volc_holding(records)
    after: dict[int, float] = {}
    for index, change in actionable:
        name = _settings_set(change, desired, records)
        others = [r for r in held.get(name, []) if r.key != change.key] if name is not None else []
        if others:
            after[index] = max(transitions.settings_since(r) for r in others)
    return after


def _settings_set(
    change: Change, desired: Mapping[str, DesiredTask], records: Mapping[str, TaskRecord]
) -> tuple[str, str, str] | None:
    """The Volcengine task whose settings `change` sets: an update's, the one its record holds; a start's, the
    one its request names. None: a delete, or not a Volcengine task."""
    if change.action is Action.UPDATE:
        return transitions.volc_task_held(records.get(change.key))
    task = desired.get(change.key)
    if change.action is Action.DELETE or task is None:
        return None
    return transitions.volc_task_name(task.family, task.request)


def _shares_vendor_task(
    actionable: list[tuple[int, Change]], desired: Mapping[str, DesiredTask], records: Mapping[str, TaskRecord]
) -> set[int]:
    """Starts (by index) whose Volcengine task another record may be running (`volc_task_held`) with the very
    request this start sends (`transitions.runs_as_sent`): a renamed job's new key. Its "already started" is that
    record's run, taken over as it is (docs/daemon.md, "Pruning"). One renamed and edited at once is not: taken
    over, the vendor kept the old settings under the new ones' record (walk 53A-3); it is stopped and started
    again, as a run of unknown ones."""
    held = transitions.volc_holding(records)
    return {
        index
        for index, change in actionable
        if change.action is not Action.DELETE
        and (task := desired.get(change.key)) is not None
        and (name := transitions.volc_task_name(task.family, task.request)) is not None
        and transitions.runs_as_sent(held.get(name, []), change.key, redact_tree(task.request))
    }


def needs_observation(record: TaskRecord) -> bool:
    return (
        record.family is not ApiFamily.ZEGO_THUMBNAIL
        and record.vendor_task_id is not None
        and record.status in (TaskStatus.RUNNING, TaskStatus.PENDING, TaskStatus.DORMANT)
    )


# After this many tasks of one provider in a row failed their status query, or changes of one provider in a
# row got no answer (retries included), the rest of that provider's are not tried: a vendor outage then costs
# one round of retries, not one per task.
GIVE_UP_AFTER = 5


async def observe_all(
    records: Mapping[str, TaskRecord],
    providers: ProviderLookup,
    clock: Clock,
    *,
    retry: RetryPolicy | None = None,
    rng: random.Random | None = None,
    concurrency: int = 64,
    on_done: Callable[[str, Observed], None] | None = None,
    on_retry: RetryHook | None = None,
    wanted: Callable[[TaskRecord], bool] = needs_observation,
) -> dict[str, Observed]:
    """Observe every record that can be running (or those `wanted` picks). Pacing is the rate budgets' job; a
    read is always safe to retry, so 5xx, timeouts and dropped connections are retried as apply's calls are;
    what still fails becomes UNKNOWN (left as is, and the plan says it is incomplete)."""
    semaphore = asyncio.Semaphore(concurrency)
    policy, jitter, hook = retry or RetryPolicy(), rng or random.Random(), _with_log(on_retry)
    failing: dict[str, tuple[int, str]] = {}  # provider -> (tasks failed in a row, the last error)
    observed: dict[str, Observed] = {}

    async def one(record: TaskRecord) -> None:
        async with semaphore:
            streak, last = failing.get(record.provider, (0, ""))
            if streak >= GIVE_UP_AFTER:
                detail = f"not tried: the last {streak} status queries to provider {record.provider} failed ({last})"
                obs = Observed(ObservedState.UNKNOWN, detail=detail)
            else:
                try:  # the lookup too: a task's Provider may have left the specs (renamed, say)
                    provider = providers(record.provider, record.family)
                    obs = await call_with_retry(
                        lambda: provider.observe(record), clock=clock, policy=policy, rng=jitter, on_retry=hook
                    )
                    failing.pop(record.provider, None)
                except VendorError as exc:
                    streak, _ = failing.get(record.provider, (0, ""))
                    failing[record.provider] = (streak + 1, str(exc))
                    obs = Observed(ObservedState.UNKNOWN, detail=str(exc))
        observed[record.key] = obs
        if on_done is not None:
            on_done(record.key, obs)

    await asyncio.gather(*(one(r) for r in records.values() if wanted(r)))
    return observed


def _moved(record: TaskRecord, task: DesiredTask) -> TaskRecord:
    """A move's record as written: re-homed already (`moves.rehome`), with the task's labels. A tombstoned
    thumbnail back in the specs as submitted is revived, as its no-op is (`engine.persist_restored`): under a
    renamed Provider its no-op is this move, and before, the record stayed a tombstone of a declared task."""
    moved = record.evolve(labels=dict(task.labels), selector=task.selector)
    return transitions.restored(moved) if transitions.revives(moved) else moved
