"""The daemon's core: a level-triggered controller that keeps every declared task running.

Every source of work (spec reloads, the resync timer, vendor callbacks, due times) only enqueues task
keys. A worker takes one key, re-reads the desired task and the recorded state, observes the vendor when
an observation is due, decides with the same pure `diff` as `capctl plan`, acts through the same
`Executor` as `capctl apply`, and returns when to look again (controller-runtime's RequeueAfter).
Re-issue pacing and polling cadence come from `policy`; everything here is wiring and bookkeeping.
Time comes only from the injected clock, so tests drive hours of daemon life in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import httpx
import structlog

from reconciler import engine, stopreasons, transitions
from reconciler.budget import HEADROOM, BudgetRegistry
from reconciler.clock import Clock
from reconciler.daemon import policy
from reconciler.daemon.callbacks import PARSERS, CallbackEvent, CallbackRejected, Deduper, ReplayGuard
from reconciler.daemon.metrics import (
    API_NAMES,
    LAST_VENDOR_FAILURE,
    VENDOR_ERROR_REASONS,
    CountingProvider,
    Metrics,
    VendorFailure,
)
from reconciler.daemon.queue import ShutDown, WorkQueue
from reconciler.daemon.records import RecordCache
from reconciler.daemon.storehealth import StoreHealth, WatchedStore
from reconciler.daemon.watch import watch_specs
from reconciler.execute import Executor, needs_observation
from reconciler.model import (
    Action,
    ApiFamily,
    Change,
    DesiredTask,
    Observed,
    ObservedState,
    RestartPolicy,
    TaskRecord,
    TaskStatus,
)
from reconciler.plan import PlanError, PlanOptions, diff
from reconciler.providers import ProviderPool
from reconciler.providers.base import Provider, VendorError
from reconciler.providers.volcengine import DEFAULT_RATE_LIMITS as VOLC_LIMITS
from reconciler.providers.zego_client import DEFAULT_RATE_LIMITS as ZEGO_LIMITS
from reconciler.spec import SpecErrors, SpecSet, load_spec_set
from reconciler.spec.errors import did_you_mean
from reconciler.state.base import DAEMON_HOLDER, Lock, LockHeld, StateError, StateStore
from reconciler.state.sql import iso_utc

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = structlog.get_logger("capctl.daemon")

T = TypeVar("T")

WORKERS = 16  # keys reconciled at once; vendor pacing is the budgets' job, this bounds memory and sockets
RESYNC_JITTER = 0.1  # the resync timer fires every resync × [0.9, 1.1]
SHUTDOWN_GRACE = 10.0  # seconds in-flight vendor calls get to finish on SIGTERM
LEASE_SECONDS = 60.0
HTTP_TIMEOUT = 10.0
MAX_LOGGED_ERRORS = 20  # spec errors listed in one log line; the count says how many there were
# Seconds a per-budget running-task count is reused before it is recounted: the count only sets the sweep
# period, and recounting 10,000 records every second was 1.4 % of a core in the steady state.
COUNTS_TTL = 10.0
LEASE_RETRY_FIRST = 0.5  # seconds before retrying a failed lease renewal; doubles up to a sixth of the lease
STORE_PROBE_TIMEOUT = 3.5  # seconds /readyz waits for its store probe: past STUCK_AFTER, so a hung store shows
# Seconds a task must stay missing from the spec set before it is pruned: a spec file rewritten in place
# (not atomically) is briefly missing documents, and stopping a recording for that was worse than waiting.
PRUNE_GRACE = 30.0


class ReconcileFailed(Exception):
    """A vendor or state error while reconciling one key: the key is retried with backoff."""


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str


class Daemon:
    """`capctl run` without the process around it: tests drive it with a FakeClock and ASGI transports.

    `start()` takes the state lock (held until `stop()`), reads the state and the specs, and starts the
    workers and timers; `asgi_app` serves callbacks, probes and metrics; `reload()` re-reads the specs.
    """

    def __init__(
        self,
        paths: Sequence[str],
        store: StateStore,
        clock: Clock,
        *,
        resync: float = 30.0,
        prune: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        workers: int = WORKERS,
        rng: random.Random | None = None,
        holder: str = DAEMON_HOLDER,
        shutdown_grace: float = SHUTDOWN_GRACE,
        lease_seconds: float = LEASE_SECONDS,
        watch_debounce_ms: int | None = None,
        sync_token: str | None = None,
        max_prune: float = policy.MAX_PRUNE_PERCENT,
        prune_grace: float = PRUNE_GRACE,
        status_page: bool = True,
        status_token: str | None = None,
    ) -> None:
        if resync <= 0:
            raise ValueError(f"resync must be positive, got {resync}")
        if not 0 <= max_prune <= 100:
            raise ValueError(f"max_prune must be a percentage from 0 to 100, got {max_prune}")
        if prune_grace < 0:
            raise ValueError(f"prune_grace must not be negative, got {prune_grace}")
        self.paths = list(paths)
        self.clock = clock
        self.resync = resync
        self.prune = prune
        self.max_prune = max_prune
        self.prune_grace = prune_grace
        self._prune_blocked: set[str] = set()  # removed from the specs, held back by --max-prune
        self._absent_since: dict[str, float] = {}  # removed from the specs at: pruned once prune_grace has passed
        self._prune_pending: set[str] = set()  # removed, within the grace period
        self._unstoppable: set[str] = set()  # removed, but their provider too: reported once, not retried
        self.store_health = StoreHealth(clock)
        self.records = RecordCache(WatchedStore(store, self.store_health), clock)
        self._fingerprint_key = store.fingerprint_key()  # specs are keyed with it, to compare with records
        self.queue = WorkQueue(clock)
        # Why the daemon does not act (it lost the state lease and tries to take it again), or None.
        self.lease_lost: str | None = None
        # key -> status the gauge counts instead of the record's: observed but not recorded (state write
        # failed), or "unknown" (the observation failed). A stopped task must not count as running.
        self._unconfirmed: dict[str, str] = {}
        self.metrics = Metrics()
        self.metrics.watch(self._status_counts, lambda: self.queue.depth)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.spec: SpecSet | None = None
        self.spec_error: str | None = "the specs have not been read yet"
        self.spec_invalid_since: float | None = None  # first failed load since the last good one
        self.spec_loaded_at: float | None = None  # when the set in force was loaded
        self._transport = transport
        self._workers = workers
        self._rng = rng or random.Random()
        self._holder = holder
        self._grace = shutdown_grace
        self._lease_seconds = lease_seconds
        self._watch_debounce_ms = watch_debounce_ms  # None: no file watcher (tests call reload() themselves)
        self.sync_token = sync_token or None  # when set, POST /api/v1/sync needs it as a bearer token
        self.status_page = status_page  # GET / and GET /api/v1/status (reconciler/daemon/status.py)
        self.status_token = status_token or None  # when set, both need it
        self._stop_watching = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._deduper = Deduper()
        self._replays = ReplayGuard()
        self._next_observe: dict[str, float] = {}  # wall time each running task is next observed
        self._looked_at: dict[str, float] = {}  # wall time each running task was last observed (or tried)
        self._observe_now: set[str] = set()  # restart or callback: observe before acting
        self._rollover_hint: dict[str, str] = {}  # key -> vendor task id a callback said hit max duration
        self._end_reason: dict[str, tuple[str, str]] = {}  # key -> (vendor task id, why a callback said it ended)
        self._rooms: dict[tuple[str, str, str], list[str]] = {}  # (vendor, app id, room) -> keys
        self._room_activity: dict[str, float] = {}  # key -> time of the last room-activity callback for it
        self._room_users: dict[tuple[str, str, str], set[str]] = {}  # users seen joining and not yet leaving
        self._probe_until: dict[str, float] = {}  # key -> end of the short-interval looks around its stop
        self._counts: dict[tuple[str, ApiFamily], int] = {}
        self._counts_at = float("-inf")
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._lock: Lock | None = None
        self._http: httpx.AsyncClient | None = None
        self._pool: ProviderPool | None = None
        self._providers: dict[tuple[str, ApiFamily], CountingProvider] = {}
        self._executor: Executor | None = None
        self._app: Starlette | None = None
        self.budgets = BudgetRegistry(clock)

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the state (raises LockHeld naming the holder), read it, load the specs, start working."""
        self._loop = asyncio.get_running_loop()
        self._lock = self.records.lock(self._holder, lease_seconds=self._lease_seconds)
        self.metrics.lease_held.set(1)
        try:
            self.records.refresh()
        except BaseException:
            self._lock.release()
            self._lock = None
            raise
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(HTTP_TIMEOUT, connect=5.0), limits=limits, transport=self._transport
        )
        self._pool = ProviderPool({}, budgets=self.budgets, clock=self.clock, http=self._http)
        self._executor = Executor(self.records, self._provider, self.clock, parallelism=1, rng=self._rng)
        # Observe before acting: whatever may still run at the vendor is looked at before anything starts.
        for record in self.records.values():
            if needs_observation(record):
                self._observe_now.add(record.key)
        self.reload()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(), name=f"capctl-worker-{i}") for i in range(self._workers)]
        self._tasks.append(loop.create_task(self._resync_timer(), name="capctl-resync"))
        self._tasks.append(loop.create_task(self._renew_lease(), name="capctl-lease"))
        if self._watch_debounce_ms is not None:
            watcher = watch_specs(
                self.paths, self.reload_async, stop=self._stop_watching, debounce_ms=self._watch_debounce_ms
            )
            self._tasks.append(loop.create_task(watcher, name="capctl-watch"))
        log.info(
            "daemon started",
            paths=self.paths,
            state=self.records.url,
            resync=self.resync,
            prune=self.prune,
            records=len(self.records.keys()),
        )

    async def stop(self) -> None:
        """Stop taking work, let in-flight calls finish (bounded), release everything. Vendor tasks keep running."""
        self.queue.shut_down()
        self._stop_watching.set()
        workers = [t for t in self._tasks if t.get_name().startswith("capctl-worker")]
        timers = [t for t in self._tasks if t not in workers]
        for timer in timers:
            timer.cancel()
        if workers:
            _, pending = await asyncio.wait(workers, timeout=self._grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "shutdown grace period over: in-flight work cancelled", tasks=len(pending), grace=self._grace
                )
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._pool is not None:
            await self._pool.aclose()
        if self._http is not None:
            await self._http.aclose()
        if self._lock is not None:
            try:
                self._lock.release()
            except StateError as exc:  # the store is down: the lease lapses by itself
                log.warning("could not release the state lock", error=str(exc))
            self._lock = None
        log.info("daemon stopped")

    @property
    def asgi_app(self) -> Starlette:
        if self._app is None:
            from reconciler.daemon.http import create_app

            self._app = create_app(self)
        return self._app

    async def on_daemon_loop(self, call: Callable[..., T], *args: object) -> T:
        """Run `call(*args)` on the daemon's event loop. `capctl run` serves HTTP on a thread of its own, so
        that probes answer while the daemon's loop waits on a hung state store; whatever touches the
        daemon's state (callbacks, sync) comes back here. In-process (tests, one loop) it is a plain call."""
        loop = self._loop
        if loop is None or loop is asyncio.get_running_loop():
            return call(*args)

        async def run() -> T:
            return call(*args)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))

    async def probe_store(self) -> None:
        """Ask the store for its serial in a worker thread, waiting at most STORE_PROBE_TIMEOUT: an error
        is noted in `store_health` (readiness reads it). A call already stuck is not piled onto."""
        if self.store_health.stuck_for() is not None:
            return
        loop = asyncio.get_running_loop()
        answered = asyncio.Event()

        def probe() -> None:
            # An error is noted by the watched store (readiness reads it), so it is not raised again here.
            # Twice: after a database restart the first call finds the old connection dead, the second
            # reconnects (a read, so repeating it is harmless).
            for _ in range(2):
                with contextlib.suppress(StateError):
                    self.records.serial()
                    break
            with contextlib.suppress(RuntimeError):  # the loop may be gone when a hung call returns
                loop.call_soon_threadsafe(answered.set)

        # A daemon thread, not the loop's executor: a call hung on the database must not hold up shutdown.
        threading.Thread(target=probe, name="capctl-store-probe", daemon=True).start()
        # On timeout the call keeps running; `store_health` reports it once it has waited STUCK_AFTER.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(answered.wait(), STORE_PROBE_TIMEOUT)

    def readiness(self) -> Readiness:
        """Answered from what the daemon knows, without touching the store (it may hang): see probe_store."""
        if self.lease_lost is not None:
            return Readiness(False, f"not acting: {self.lease_lost}")
        if (problem := self.store_health.problem()) is not None:
            return Readiness(False, f"not acting: {problem}")
        if self.spec is None:
            return Readiness(False, f"no valid spec set in force: {self.spec_error}")
        if self.spec_error is not None and self.spec_invalid_since is not None:
            # Still ready (the last valid set runs), but a probe body is where an operator looks first.
            since = iso_utc(self.spec_invalid_since)
            return Readiness(True, f"ready; spec set invalid since {since}: {self.spec_error}")
        return Readiness(True, "ready")

    # --- specs ------------------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the specs. An invalid or vanished set is logged and ignored: the last valid set stays."""
        return self._take_specs(self._read_specs())

    async def reload_async(self) -> bool:
        """`reload()` with the reading and validating in a thread, so that a large spec set never stalls the
        event loop (probes, callbacks) while it loads; one at a time, so an older read never wins."""
        async with self._reload_lock:
            return self._take_specs(await asyncio.to_thread(self._read_specs))

    def reload_soon(self) -> None:
        """`reload_async()` as a task of its own (for SIGHUP, whose handler cannot await)."""

        async def reload() -> None:
            await self.reload_async()

        self._tasks = [t for t in self._tasks if not t.done()]  # earlier reloads: a long-lived daemon gets many
        self._tasks.append(asyncio.get_running_loop().create_task(reload(), name="capctl-reload"))

    def _read_specs(self) -> SpecSet | SpecErrors:
        try:
            return load_spec_set(self.paths, fingerprint_key=self._fingerprint_key)
        except SpecErrors as exc:
            return exc

    def _take_specs(self, spec: SpecSet | SpecErrors) -> bool:
        if isinstance(spec, SpecErrors):
            exc = spec
            count = len(exc.errors) or 1
            self.spec_error = (
                f"{count} error{'s' if count != 1 else ''}, first: {exc.errors[0]}" if exc.errors else str(exc)
            )
            if self.spec_invalid_since is None:
                self.spec_invalid_since = self.clock.now()
            self.metrics.spec_load(errors=count, at=self.clock.now())
            log.error(
                "spec set rejected; the last valid set stays in force"
                if self.spec
                else "spec set rejected; waiting for a valid one",
                errors=[str(e) for e in exc.errors[:MAX_LOGGED_ERRORS]],
                count=len(exc.errors),
            )
            return False
        old, self.spec, self.spec_error, self.spec_invalid_since = self.spec, spec, None, None
        self.spec_loaded_at = self.clock.now()
        self.metrics.spec_load(errors=0, at=self.clock.now())
        assert self._pool is not None, "reload() before start()"
        self._pool.update_configs(spec.providers)
        self._providers.clear()  # rebuilt on use, over the pool's (possibly rebuilt) providers
        self._rooms = {}
        for task in spec.tasks.values():
            config = spec.providers[task.provider]
            self._rooms.setdefault((config.type, config.app_id, task.target), []).append(task.key)
        if old is None:
            keys = set(spec.tasks) | set(self.records.keys())
        else:
            keys = {k for k, t in spec.tasks.items() if (o := old.tasks.get(k)) is None or o.spec_hash != t.spec_hash}
            keys |= set(old.tasks) - set(spec.tasks)
        self._check_prune(spec)
        for key in sorted(keys):
            self.queue.add(key)
        log.info("spec set loaded", summary=spec.summary(), changed=len(keys) if old is not None else None)
        return True

    def _check_prune(self, spec: SpecSet) -> None:
        """The safeguard Argo CD and Flux have: a spec change that would prune more than `max_prune` % of
        the tasks in the state (tombstones aside) prunes none of them and waits for a human (see docs/daemon.md).
        Decided per spec change, over every task then missing from the specs."""
        self._unstoppable &= set(self.records.keys()) - set(spec.tasks)
        live = [r for r in self.records.values() if r.status is not TaskStatus.REMOVED]
        missing = {r.key for r in live if r.key not in spec.tasks} if self.prune else set()
        blocked = missing if policy.prune_blocked(len(missing), len(live), self.max_prune) else set()
        self._start_grace(missing, blocked)
        if blocked and blocked != self._prune_blocked:
            log.warning(
                "prune blocked: too many tasks removed at once; waiting for a human",
                tasks=len(blocked),
                of=len(live),
                max_prune=self.max_prune,
                first=sorted(blocked)[:MAX_LOGGED_ERRORS],
                to_confirm="stop the daemon and run `capctl apply`, or restart it with --max-prune 100",
            )
        elif self._prune_blocked and not blocked:
            log.info("prune no longer blocked", tasks=len(missing))
        self._prune_blocked = blocked
        self._export_prune_gauges()

    def _start_grace(self, missing: set[str], blocked: set[str]) -> None:
        """Remember since when each task has been missing; say once which tasks will be pruned after the
        grace period, and which came back in time (docs/daemon.md, "Pruning and its safeguard")."""
        now = self.clock.now()
        before = self._absent_since
        self._absent_since = {key: before.get(key, now) for key in missing}
        came_back = self._prune_pending - missing
        self._prune_pending = {k for k in missing - blocked if now < self._absent_since[k] + self.prune_grace}
        if new := sorted(self._prune_pending - before.keys()):
            log.info(
                "prune pending: tasks removed from the specs are stopped after the grace period unless they return",
                tasks=len(new),
                grace=self.prune_grace,
                first=new[:MAX_LOGGED_ERRORS],
            )
        if came_back:
            log.info("prune cancelled: tasks are back in the specs", tasks=len(came_back))

    def _export_prune_gauges(self) -> None:
        self.metrics.prune_blocked.labels(reason="max-prune").set(len(self._prune_blocked))
        self.metrics.prune_blocked.labels(reason="grace").set(len(self._prune_pending))
        self.metrics.prune_blocked.labels(reason="provider-missing").set(len(self._unstoppable))

    # --- workers ----------------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self._process(key)
            finally:
                self.queue.done(key)

    async def _process(self, key: str) -> None:
        if self.lease_lost is not None:
            return  # not acting; every key is queued again once the lease is back
        started = self.clock.monotonic()
        failure = VendorFailure()
        LAST_VENDOR_FAILURE.set(failure)
        with structlog.contextvars.bound_contextvars(key=key, reconcile_id=next(self._ids)):
            try:
                requeue = await self.reconcile(key)
            except (ReconcileFailed, VendorError, StateError) as exc:
                self.metrics.reconcile_errors.labels(reason=self._error_reason(exc, failure)).inc()
                delay = self.queue.add_rate_limited(key)
                log.warning(
                    "reconcile failed; retrying with backoff",
                    error=str(exc),
                    retry_in=delay,
                    failures=self.queue.failures(key),
                )
                return
            finally:
                self.metrics.reconcile_seconds.observe(self.clock.monotonic() - started)
        self.queue.forget(key)
        if requeue is not None:
            self.queue.add_after(key, requeue)

    def _error_reason(self, exc: Exception, failure: VendorFailure) -> str:
        if isinstance(exc, StateError):
            return "state-write" if self.store_health.last_failed_write else "state-read"
        kind = exc.kind if isinstance(exc, VendorError) else failure.kind
        return VENDOR_ERROR_REASONS[kind] if kind is not None else "other"

    def _status_counts(self) -> dict[str, int]:
        """Tasks by status for `capctl_tasks`: the records', except where the daemon knows better."""
        counts = Counter(self.records.status_counts())
        for key, status in list(self._unconfirmed.items()):  # a copy: scraped from the HTTP thread
            record = self.records.get(key)
            if record is not None and record.status.value != status:
                counts[record.status.value] -= 1
                counts[status] += 1
        return dict(counts)

    async def reconcile(self, key: str) -> float | None:
        """One pass over one key; returns seconds until it should be looked at again (None: only on events)."""
        spec = self.spec
        if spec is None:
            return None  # no valid spec set yet: nothing is decided, nothing is stopped
        task, record, now = spec.tasks.get(key), self.records.get(key), self.clock.now()
        if task is None:
            return await self._reconcile_removed(key, record)
        observed: dict[str, Observed] = {}
        if record is not None and self._observation_due(record, now):
            obs = self._with_end_reason(record, await self._observe(record))
            observed[key] = obs
            if obs.state is ObservedState.UNKNOWN:
                self._unconfirmed[key] = "unknown"
            else:
                self._unconfirmed.pop(key, None)
            try:
                record = engine.persist_observations(self.records, {key: record}, {key: obs}, now).get(key, record)
            except StateError:
                if obs.state is not ObservedState.RUNNING:  # it ended, but the record cannot say so yet
                    self._unconfirmed[key] = TaskStatus.STOPPED.value
                self._observe_now.add(key)  # the retry looks again instead of trusting the stale record
                raise
        if record is not None and self._waiting_to_reissue(task, record):
            active_at = self._room_activity.get(key)
            room_active = active_at is not None and active_at >= (record.started_at or 0.0)
            decision = policy.reissue_decision(record, now, rollover_hint=self._hinted(record), room_active=room_active)
            if not decision.immediate:
                return self._postpone(record, decision, now)
            record = record.evolve(status=TaskStatus.STOPPED)  # its time has come: diff re-issues it
        records = {key: record} if record is not None else {}
        change = diff(
            {key: task}, records, observed, options=PlanOptions(prune=self.prune), state_serial=0, now=now
        ).changes[0]
        if change.action is Action.NOOP:
            log.debug("no change", reason=change.reason)
            engine.persist_restored(self.records, (change,), records)
            return self._next_look(key, now)
        await self._execute(change, task, record)
        return self._next_look(key, self.clock.now())

    async def _reconcile_removed(self, key: str, record: TaskRecord | None) -> float | None:
        self._next_observe.pop(key, None)
        self._looked_at.pop(key, None)
        self._unconfirmed.pop(key, None)
        now = self.clock.now()
        if record is not None and record.status is TaskStatus.REMOVED:
            if engine.collect_tombstones(self.records, {key: record}, {}, now):
                log.info("tombstone forgotten", removed_at=record.removed_at)
                return None
            return max(0.0, (record.removed_at or now) + transitions.TOMBSTONE_RETENTION - now)
        if record is None or not self.prune or key in self._prune_blocked:
            return None
        wait = self._absent_since.setdefault(key, now) + self.prune_grace - now
        if wait > 0:
            return wait  # looked at again when the grace period ends; a reload that restores it cancels this
        if key in self._prune_pending:
            self._prune_pending.discard(key)
            self._export_prune_gauges()
        assert self.spec is not None
        try:
            plan = diff(
                {}, {key: record}, {}, options=PlanOptions(), state_serial=0, now=now, providers=self.spec.providers
            )
        except PlanError as exc:
            if key not in self._unstoppable:  # once per task: no retry loop, no log line per resync
                self._unstoppable.add(key)
                self._export_prune_gauges()
                log.error("cannot prune", error=str(exc))
            return None
        await self._execute(plan.changes[0], None, record)
        self._absent_since.pop(key, None)
        if key in self._unstoppable:  # its provider came back and the stop went through
            self._unstoppable.discard(key)
            self._export_prune_gauges()
        return transitions.TOMBSTONE_RETENTION

    async def _execute(self, change: Change, task: DesiredTask | None, record: TaskRecord | None) -> None:
        assert self._executor is not None
        log.info("decision", action=change.action.value, reason=change.reason)
        desired = {change.key: task} if task is not None else {}
        records = {change.key: record} if record is not None else {}
        result = (await self._executor.apply((change,), desired, records)).results[0]
        if not result.ok:
            raise ReconcileFailed(f"{change.action.value} failed: {result.error}")
        if change.action is Action.REISSUE and record is not None:
            self._count_reissue(record)
        self._observe_now.discard(change.key)
        self._unconfirmed.pop(change.key, None)
        self._rollover_hint.pop(change.key, None)
        self._end_reason.pop(change.key, None)
        self._next_observe.pop(change.key, None)  # a new run: its first look is at its own deadline
        self._looked_at.pop(change.key, None)  # ... and its start is its last observation
        self._probe_until.pop(change.key, None)
        if result.note:
            log.info("done", action=change.action.value, note=result.note)

    def _count_reissue(self, before: TaskRecord) -> None:
        after = self.records.get(before.key)
        rollover = policy.is_rollover(before, hinted=self._hinted(before))
        # The vocabulary's phrase, not the whole reason: one label per cause, whichever vendor code came with it.
        reason = "rollover" if rollover else stopreasons.phrase_of(before.stop_reason or "unknown")
        self.metrics.reissues.labels(reason=reason[:64]).inc()
        if after is not None and after.started_at is not None and before.stopped_at is not None:
            self.metrics.reissue_gap.observe(max(0.0, after.started_at - before.stopped_at))

    def next_observation(self, key: str) -> float | None:
        """When the daemon next asks the vendor about a running task (None: not planned yet)."""
        return self._next_observe.get(key)

    # --- re-issue pacing --------------------------------------------------------------------------------

    @staticmethod
    def _waiting_to_reissue(task: DesiredTask, record: TaskRecord) -> bool:
        return (
            record.status in (TaskStatus.STOPPED, TaskStatus.DORMANT)
            and task.restart_policy is RestartPolicy.ALWAYS
            and record.spec_hash == task.spec_hash
        )

    def _with_end_reason(self, record: TaskRecord, obs: Observed) -> Observed:
        """Polling may say only 'ended (ZEGO status 4)'; a callback may have said why: prefer its words."""
        hint = self._end_reason.get(record.key)
        if hint is None or hint[0] != record.vendor_task_id or obs.state is not ObservedState.STOPPED:
            return obs
        return dataclasses.replace(obs, reason=hint[1])

    def _hinted(self, record: TaskRecord) -> bool:
        return record.vendor_task_id is not None and self._rollover_hint.get(record.key) == record.vendor_task_id

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
                reason="dormant: no room activity" if decision.dormant else "backing off unproductive runs",
            )
        return decision.delay

    # --- observation cadence ----------------------------------------------------------------------------

    def _observation_due(self, record: TaskRecord, now: float) -> bool:
        if not needs_observation(record) or record.status is TaskStatus.DORMANT:
            return False
        if record.key in self._observe_now:
            return True
        due = self._next_observe.get(record.key)
        return due is None or now >= due

    async def _observe(self, record: TaskRecord) -> Observed:
        self._observe_now.discard(record.key)
        try:
            obs = await self._provider(record.provider, record.family).observe(record)
        except VendorError as exc:
            obs = Observed(ObservedState.UNKNOWN, detail=str(exc))
            self.metrics.reconcile_errors.labels(reason=VENDOR_ERROR_REASONS[exc.kind]).inc()
            log.warning("observation failed", error=str(exc))
        now = self.clock.now()
        self._looked_at[record.key] = now
        swept = now + self._period(record) * (1 - RESYNC_JITTER + 2 * RESYNC_JITTER * self._rng.random())
        probe_until = self._probe_until.get(record.key)
        if probe_until is not None and now < probe_until and obs.state is ObservedState.RUNNING:
            # Its stop is due one idle timeout after the last user left: every second from just after that
            # (a look held to --resync may come before it: the regular sweep until then).
            probe_from = probe_until - policy.DEADLINE_MARGIN + policy.PROBE_DELAY
            self._next_observe[record.key] = (
                now + policy.PROBE_INTERVAL if now >= probe_from else min(swept, probe_from)
            )
        else:
            self._probe_until.pop(record.key, None)
            self._next_observe[record.key] = swept
        log.debug("observed", state=obs.state.value, reason=obs.reason)
        return obs

    def _next_look(self, key: str, now: float) -> float | None:
        """When this key needs its worker again: its next observation or its scheduled re-issue."""
        record = self.records.get(key)
        if record is None:
            return None
        if record.next_attempt_at is not None and record.status in (TaskStatus.STOPPED, TaskStatus.DORMANT):
            return max(0.0, record.next_attempt_at - now)
        if not needs_observation(record) or record.status is TaskStatus.DORMANT:
            return None
        due = self._next_observe.get(key)
        if due is None:
            # Just started: look at its first expected deadline, or after one sweep, whichever is first.
            deadline = policy.expected_deadline(record)
            due = now + self._period(record)
            if deadline is not None and deadline > now:
                due = min(due, deadline)
            self._next_observe[key] = due
        return max(0.0, due - now)

    def _hint_look(self, record: TaskRecord, hint: float) -> float:
        """Set the next look a callback suggests, held to one sweep period after the last observation."""
        last = self._looked_at.get(record.key, record.observed_at or record.started_at or self.clock.now())
        due = self._next_observe[record.key] = policy.hinted_look(hint, last, self._period(record))
        return due

    def _period(self, record: TaskRecord) -> float:
        return policy.sweep_period(self.resync, self._running_count(record), self._query_rate(record))

    def _running_count(self, record: TaskRecord) -> int:
        """Running tasks sharing this record's query budget (recounted at most once a second)."""
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
        api = API_NAMES[record.family]["observe"]
        config = self.spec.providers.get(record.provider) if self.spec else None
        defaults = VOLC_LIMITS if record.family is ApiFamily.VOLC_SNAPSHOT else ZEGO_LIMITS
        rate = (config.rate_limits.get(api) if config else None) or defaults[api]
        return rate * HEADROOM

    # --- providers --------------------------------------------------------------------------------------

    def _provider(self, name: str, family: ApiFamily) -> Provider:
        counted = self._providers.get((name, family))
        if counted is None:
            assert self._pool is not None
            counted = self._providers[(name, family)] = CountingProvider(self._pool(name, family), self.metrics)
        return counted

    # --- callbacks --------------------------------------------------------------------------------------

    def handle_callback(self, vendor: str, body: bytes) -> tuple[int, str]:
        """Verify and act on one webhook; returns (HTTP status, reason). Acting = enqueueing keys."""
        parse = PARSERS.get(vendor)
        if parse is None:
            return 404, f"no callback route for {vendor!r}"
        if self.lease_lost is not None:  # its writes would race the lease's holder; the vendor retries
            return 503, f"not acting: {self.lease_lost}"
        providers = self.spec.providers.values() if self.spec else ()
        now = self.clock.now()
        try:
            event = parse(body, providers, now)
            first = self._replays.first_time(event, now)
        except CallbackRejected as exc:
            self.metrics.callbacks.labels(vendor=vendor, outcome="rejected").inc()
            if exc.logged:
                log.warning("callback rejected", vendor=vendor, status=exc.status, reason=exc.reason)
            return exc.status, exc.reason
        if not first or not self._deduper.first_time(event.dedupe_key):
            self.metrics.callbacks.labels(vendor=vendor, outcome="duplicate").inc()
            return 200, "duplicate: already accepted"
        self.metrics.callbacks.labels(vendor=vendor, outcome="accepted").inc()
        self._on_event(event)
        return 200, "accepted"

    def _on_event(self, event: CallbackEvent) -> None:
        record = self._record_of(event)
        if record is not None:
            self._on_task_event(event, record)
        if event.room_id is not None and event.room_active:  # the status page's room timeline
            self.records.history.room_active(event.room_id)
        elif event.room_id is not None and event.room_empty:
            self.records.history.room_idle(event.room_id)
        if event.room_active and event.room_id is not None:
            self._wake_room(event)
        if event.room_id is not None and event.user_id is not None and (event.room_active or event.room_left):
            self._track_users(event)

    def _record_of(self, event: CallbackEvent) -> TaskRecord | None:
        if event.task_id is None:
            return None
        if event.vendor == "volcengine":
            return self.records.by_vendor_id(("volcengine", event.app_id, event.room_id or "", event.task_id))
        return self.records.by_vendor_id(("zego", event.task_id))

    def _on_task_event(self, event: CallbackEvent, record: TaskRecord) -> None:
        key = record.key
        if event.output and not record.productive and record.status is TaskStatus.RUNNING:
            self.records.put(record.evolve(productive=True))
            log.info("run is productive", key=key, callback=event.event)
        if event.ended:
            if event.rollover and record.vendor_task_id is not None:
                self._rollover_hint[key] = record.vendor_task_id
            if event.end_reason and record.vendor_task_id is not None:
                self._end_reason[key] = (record.vendor_task_id, event.end_reason)
            self._observe_now.add(key)
            self.queue.add(key)
            log.info("callback: run ended; observing", key=key, callback=event.event)
            return
        idle = record.idle_timeout
        if (event.output or event.room_empty) and idle is not None:
            # The run cannot idle out before one idle timeout after this event: no need to poll until then.
            # Reckoned from when the event reached us, on our clock: the vendor's clock may be skewed.
            covered = self.clock.now() + idle + policy.DEADLINE_MARGIN
            if record.max_duration is not None and record.started_at is not None:
                covered = min(covered, record.started_at + record.max_duration + policy.DEADLINE_MARGIN)
            current = self._next_observe.get(key)
            if event.room_empty or current is None:
                due = self._hint_look(record, covered)
            elif key not in self._probe_until:
                # While probing after the last user left, an image may still arrive that was taken before
                # the leave (callbacks race each other): it must not push the look past the idle deadline.
                due = self._hint_look(record, max(current, covered))
            else:
                return
            self.queue.add_after(key, max(0.0, due - self.clock.now()))

    def _track_users(self, event: CallbackEvent) -> None:
        """Volcengine has no task-stopped callback: when the last user we saw join leaves, the room's runs
        will idle out one idle timeout from now, so look just after that instead of a sweep later. A user
        who joined before we started is unknown: their leave also triggers the looks (a few extra polls)."""
        room = (event.vendor, event.app_id, event.room_id or "")
        users = self._room_users.setdefault(room, set())
        if event.room_active:
            users.add(event.user_id or "")
            return
        users.discard(event.user_id or "")
        if users:
            return
        del self._room_users[room]
        self.records.history.room_idle(room[2])
        now = self.clock.now()
        for key in self._rooms.get(room, []):
            record = self.records.get(key)
            if record is None or record.status is not TaskStatus.RUNNING or record.idle_timeout is None:
                continue
            # The vendor's idle clock started no later than it sent this callback: the stop is at most
            # one idle timeout away, on our clock.
            stop = now + record.idle_timeout
            self._probe_until[key] = stop + policy.DEADLINE_MARGIN
            due = self._hint_look(record, stop + policy.PROBE_DELAY)
            self.queue.add_after(key, max(0.0, due - now))

    def _wake_room(self, event: CallbackEvent) -> None:
        now = self.clock.now()
        for key in self._rooms.get((event.vendor, event.app_id, event.room_id or ""), []):
            # Remembered: a run that looks running now but already ended is re-issued at once when seen.
            self._room_activity[key] = now  # our clock: compared with our records' start times
            record = self.records.get(key)
            if record is None or record.next_attempt_at is None or record.next_attempt_at <= now:
                continue
            if record.status in (TaskStatus.DORMANT, TaskStatus.STOPPED):
                self.records.put(record.evolve(next_attempt_at=now))
                self.queue.add(key)
                log.info("room activity: waking task", key=key, callback=event.event, was=record.status.value)

    # --- operator requests ------------------------------------------------------------------------------

    def sync(self, keys: Sequence[str] | None) -> tuple[int, str, list[str]]:
        """`capctl sync`: reconcile `keys` (None: every key) now, looking at the vendor first; returns
        (HTTP status, reason, the keys queued). It only enqueues: the workers still decide (a backing-off
        or dormant task keeps waiting), vendor calls stay within the budgets, and a key already queued is
        queued once, so repeating the request costs nothing more. Any unknown key: nothing is queued."""
        if self.spec is None:
            return 503, f"no valid spec set in force: {self.spec_error}", []
        if self.lease_lost is not None:
            return 503, f"not acting: {self.lease_lost}", []
        known = set(self.spec.tasks) | set(self.records.keys())  # a removed job's tasks are pruned by a sync
        if keys is None:
            wanted = sorted(known)
        else:
            wanted = list(dict.fromkeys(keys))
            unknown = [k for k in wanted if k not in known]
            if unknown:
                listed = ", ".join(unknown[:MAX_LOGGED_ERRORS]) + (", …" if len(unknown) > MAX_LOGGED_ERRORS else "")
                # Hints only among the first key's own job: a cheap request must not cost a scan of every key.
                job = unknown[0].rpartition("/")[0] + "/"
                hint = did_you_mean(unknown[0], (k for k in known if k.startswith(job)))
                return 404, f"unknown task key(s), in neither the spec set nor the state: {listed}{hint}", []
        for key in wanted:
            record = self.records.get(key)
            if record is not None and needs_observation(record):
                self._observe_now.add(key)
            self.queue.add(key)
        log.info("sync requested", keys=len(wanted), every_key=keys is None)
        return 200, f"queued {len(wanted)} task key(s)", wanted

    # --- timers -----------------------------------------------------------------------------------------

    async def _resync_timer(self) -> None:
        """Every resync period (with jitter) every key is looked at: the level-triggered safety net."""
        while True:
            await self.clock.sleep(self.resync * (1 - RESYNC_JITTER + 2 * RESYNC_JITTER * self._rng.random()))
            if self.spec is None:
                continue
            for key in set(self.spec.tasks) | set(self.records.keys()):
                self.queue.add(key)

    async def _renew_lease(self) -> None:
        """Keep a PostgreSQL lease alive (a no-op for SQLite's OS lock), and take it again when lost.

        A renewal that fails while the lease is still valid (the database restarting, a dropped
        connection) is retried with backoff within the lease's remaining time; only another holder, or
        the lease running out, means it is lost. Then the daemon stops acting (workers drop their keys,
        /readyz answers 503, capctl_lease_held is 0) and tries to take the lease again every retry
        period; once it holds it, it re-reads the state (another holder may have changed it) and
        reconciles every key, as at start."""
        period = self._lease_seconds / 3
        valid_until = self.clock.monotonic() + self._lease_seconds
        wait, retry = period, LEASE_RETRY_FIRST
        while True:
            await self.clock.sleep(wait)
            if self._lock is None:
                if self._retake_lease():
                    valid_until = self.clock.monotonic() + self._lease_seconds
                    wait, retry = period, LEASE_RETRY_FIRST
                else:
                    wait, retry = retry, min(retry * 2, period)
                continue
            began = self.clock.monotonic()
            try:
                self._lock.renew()
            except LockHeld as exc:
                self._lose_lease(f"another holder took the state lock: {exc.holder}")
                wait, retry = LEASE_RETRY_FIRST, LEASE_RETRY_FIRST
                continue
            except StateError as exc:
                left = valid_until - self.clock.monotonic()
                if left <= 0:
                    self._lose_lease(f"the state lock lapsed: it could not be renewed ({exc})")
                    wait, retry = LEASE_RETRY_FIRST, LEASE_RETRY_FIRST
                    continue
                log.warning("state lock renewal failed; retrying", error=str(exc), lease_left=round(left, 1))
                wait, retry = min(retry, left), min(retry * 2, period)
                continue
            valid_until = began + self._lease_seconds
            wait, retry = period, LEASE_RETRY_FIRST

    def _lose_lease(self, why: str) -> None:
        log.error("lost the state lock; not acting until it is taken again", reason=why)
        self.lease_lost = f"{why}; trying to take it again"
        self.metrics.lease_held.set(0)
        self._lock = None  # the old lease row lapses by itself (or is already another holder's)

    def _retake_lease(self) -> bool:
        try:
            lock = self.records.lock(self._holder, lease_seconds=self._lease_seconds)
        except StateError as exc:
            log.info("state lock still unavailable", error=str(exc))
            return False
        try:
            self.records.refresh()  # whoever held it meanwhile may have changed the state
        except StateError as exc:
            with contextlib.suppress(StateError):
                lock.release()
            log.warning("took the state lock but cannot read the state; retrying", error=str(exc))
            return False
        self._lock, self.lease_lost = lock, None
        self.metrics.lease_held.set(1)
        self._counts_at = float("-inf")
        self._unconfirmed.clear()
        for record in self.records.values():
            if needs_observation(record):
                self._observe_now.add(record.key)
        keys = set(self.records.keys()) | (set(self.spec.tasks) if self.spec else set())
        for key in sorted(keys):
            self.queue.add(key)
        log.info("took the state lock again; acting", records=len(self.records.keys()))
        return True
