"""The daemon's controller: lifecycle, workers, the state lease, timers and metrics (controller-runtime's split).

Every source of work (spec reloads, the resync timer, vendor callbacks, due times) only enqueues task
keys. A worker takes one key and hands it to the `Reconciler` (`reconciler.py`), which decides it and
returns when to look again (controller-runtime's RequeueAfter). Callbacks go through the `CallbackRouter`
(`router.py`); what the daemon remembers per key is one `KeyRuntime` value (`runtime.py`); the spec set
in force and the prune guard live in `specset.py` and `prune.py`. docs/architecture.md draws the parts.
Time comes only from the injected clock, so tests drive hours of daemon life in milliseconds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import httpx
import structlog

from reconciler.clock import Clock
from reconciler.daemon import policy
from reconciler.daemon.coverage import RoomGauges, room_counts
from reconciler.daemon.digest import spec_digest
from reconciler.daemon.fencing import LeaderStore, fenceable
from reconciler.daemon.inbox import Inbox
from reconciler.daemon.lease import Lease
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.prune import PRUNE_GRACE, PruneGuard
from reconciler.daemon.queue import WorkQueue
from reconciler.daemon.readiness import STORE_PROBE_TIMEOUT, Readiness, readiness_of
from reconciler.daemon.reconciler import RESYNC_JITTER, ReconcileFailed, Reconciler
from reconciler.daemon.records import RecordCache
from reconciler.daemon.roomjobs import RoomSelectors
from reconciler.daemon.router import CallbackRouter, RoutedCallback
from reconciler.daemon.runtime import RuntimeMap
from reconciler.daemon.specset import SpecState, changed_keys
from reconciler.daemon.storehealth import StoreHealth, WatchedStore, probe_store
from reconciler.daemon.sync import known_keys, sync_keys
from reconciler.daemon.vendors import VendorClients
from reconciler.daemon.watch import watch_specs
from reconciler.daemon.workers import Workers
from reconciler.execute import Executor
from reconciler.leader import LeaderSettings
from reconciler.spec import SpecSet
from reconciler.state.base import DAEMON_HOLDER, StateStore

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["PRUNE_GRACE", "RESYNC_JITTER", "Daemon", "Readiness", "ReconcileFailed"]

log = structlog.get_logger("capctl.daemon")

T = TypeVar("T")

WORKERS = 16  # keys reconciled at once; vendor pacing is the budgets' job, this bounds memory and sockets
SHUTDOWN_GRACE = 10.0  # seconds in-flight vendor calls get to finish on SIGTERM


class Daemon:
    """`capctl run` without the process around it: tests drive it with a FakeClock and ASGI transports.

    `start()` leads or stands by (several replicas may share a state: lease.py), reads the state and the
    specs, and starts the workers and timers; `asgi_app` serves callbacks, probes and metrics; `reload()`
    re-reads the specs.
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
        leader: LeaderSettings | None = None,
        elect_in_thread: bool = True,
        watch_debounce_ms: int | None = None,
        sync_token: str | None = None,
        max_prune: float = policy.MAX_PRUNE_PERCENT,
        prune_grace: float = PRUNE_GRACE,
        status_page: bool = True,
        status_token: str | None = None,
    ) -> None:
        if resync <= 0:
            raise ValueError(f"resync must be positive, got {resync}")
        self.metrics = Metrics()  # before the store is touched: the prune guard checks its arguments
        self.pruning = PruneGuard(clock, self.metrics, prune=prune, max_prune=max_prune, grace=prune_grace)
        self.paths = list(paths)
        self.clock = clock
        self.resync = resync
        self.prune = prune
        self.store_health = StoreHealth(clock)
        # Leader election (lease.py): writes go through the current term's fenced store (fencing.py).
        self.leader_settings = leader = leader or LeaderSettings()
        shared = fenceable(store)  # raises StateError for a store that cannot fence writes
        self.lease = Lease(
            shared,
            holder,
            leader,
            clock,
            self.metrics,
            refresh=lambda: self.records.refresh(),
            regained=self._regained,
            in_thread=elect_in_thread,  # its store calls block: off the loop, but for tests on a fake clock
        )
        self.state = LeaderStore(shared, self.lease.elector)
        self.records = RecordCache(WatchedStore(self.state, self.store_health), clock)
        self.queue = WorkQueue(clock)
        self.runtimes = RuntimeMap()
        self.router = CallbackRouter(self.records, self.metrics)
        self.rooms = RoomSelectors(  # room-selector jobs: room activity in, their tasks out (roomjobs.py)
            store,
            self.metrics,
            clock,
            records=self.records.values,
            provider=lambda name, family: self.vendors.provider(name, family),
            in_force=self._in_force,
            enqueue=self.queue.add,
            woken=lambda keys: self.queue.add_all_after(self.reconciler.wake(keys, "room listing")),
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.specs = SpecState(paths, store.fingerprint_key(), self.metrics, clock, self._specs_taken)
        self.vendors = VendorClients(clock, self.metrics, transport, guard=self.lease.elector)
        self._workers = workers
        self._rng = rng or random.Random()
        self._grace = shutdown_grace
        self._watch_debounce_ms = watch_debounce_ms  # None: no file watcher (tests call reload() themselves)
        self.sync_token = sync_token or None  # when set, POST /api/v1/sync needs it as a bearer token
        self.status_page = status_page  # GET / and GET /api/v1/status (daemon/status.py), read-only
        self.status_token = status_token or None  # when set, both need it
        self._stop_watching = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.inbox = Inbox(self.state, self.router, clock, self.lease.acting, self._act_on, in_thread=elect_in_thread)
        provider = self.vendors.provider
        executor = Executor(self.records, provider, clock, parallelism=1, rng=self._rng)
        parts = (self.records, self.runtimes, provider, executor, self.pruning, self.metrics, clock)
        self.reconciler = Reconciler(*parts, resync=resync, rng=self._rng)
        self._app: Starlette | None = None
        self.metrics.watch(self.reconciler.status_counts, lambda: self.queue.depth)
        self.metrics.registry.register(RoomGauges(lambda: room_counts(self.records.values(), self.runtimes.snapshot())))
        self.workers = Workers(self.queue, self.reconciler, self.metrics, clock, self.store_health, self.lease.acting)

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Lead or stand by (lease.py), read the state and the specs, start working (a standby's workers
        drop their keys until it leads)."""
        self._loop = asyncio.get_running_loop()
        await self.lease.take()
        self.vendors.open()
        self.reconciler.observe_first()  # whatever may still run at the vendor is looked at before anything starts
        self.rooms.book.load()
        self.reload()
        loop = asyncio.get_running_loop()
        self.workers.start(self._workers)
        self._tasks = [loop.create_task(self._resync_timer(), name="capctl-resync")]
        self._tasks.append(loop.create_task(self.lease.keep(), name="capctl-lease"))
        self._tasks.append(loop.create_task(self.inbox.keep(self.leader_settings.retry_period), name="capctl-inbox"))
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
        for timer in self._tasks:  # timers, the watcher, reloads
            timer.cancel()
        await self.workers.stop(self._grace)
        self.rooms.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.vendors.aclose()
        self.lease.release()
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

    @property
    def lease_lost(self) -> str | None:
        """Why this replica does not act (a standby, or a new leader still reading the state), or None."""
        return self.lease.lost

    async def probe_store(self) -> None:
        """Ask the store for its serial, bounded (`storehealth.probe_store`); readiness reads the outcome."""
        await probe_store(self.store_health, self.records.serial, STORE_PROBE_TIMEOUT)

    def readiness(self) -> Readiness:
        """Answered from what the daemon knows, without touching the store (it may hang): `readiness.py`."""
        return readiness_of(self.lease, self.store_health, self.specs)

    @property
    def spec(self) -> SpecSet | None:
        """The spec set in force (the last valid one), or None before the first valid load."""
        return self.specs.current

    # --- specs ------------------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the specs. An invalid or vanished set is logged and ignored: the last valid set stays."""
        return self.specs.reload()

    async def reload_async(self) -> bool:
        """`reload()` in a thread, one at a time (`SpecState.reload_async`)."""
        return await self.specs.reload_async()

    def reload_soon(self) -> None:
        """`reload_async()` as a task of its own (for SIGHUP, whose handler cannot await)."""

        async def reload() -> None:
            await self.reload_async()

        self._tasks = [t for t in self._tasks if not t.done()]  # earlier reloads: a long-lived daemon gets many
        self._tasks.append(asyncio.get_running_loop().create_task(reload(), name="capctl-reload"))

    def _specs_taken(self, old: SpecSet | None, spec: SpecSet) -> None:
        self.vendors.configure(spec.providers)
        before = self.reconciler.spec if old is not None else None
        spec = self.rooms.take(spec)  # with the room-selector jobs' tasks; put in force by `_in_force`
        keys = changed_keys(before, spec, self.records.keys())
        self.pruning.check(spec, self.records.values())
        self.queue.add_all(sorted(keys))
        digest = spec_digest(spec)
        self.metrics.spec_digest(digest)
        log.info(
            "spec set loaded",
            summary=spec.summary(),
            changed=len(keys) if old is not None else None,
            digest=digest,
            acting=self.lease.acting(),  # only the leader's set acts
        )

    def _in_force(self, spec: SpecSet) -> None:
        self.reconciler.spec = spec
        self.router.index(spec)

    # --- requests ---------------------------------------------------------------------------------------

    def handle_callback(self, vendor: str, body: bytes) -> tuple[int, str]:
        """Verify and act on one webhook; returns (HTTP status, reason). Acting = enqueueing keys."""
        if not self.router.knows(vendor):
            return 404, f"no callback route for {vendor!r}"
        providers = self.spec.providers.values() if self.spec else ()
        if self.lease_lost is not None:  # a standby: verified and kept in the inbox for the leader
            return self.inbox.store(vendor, body, providers)
        routed = self.router.route(vendor, body, providers, self.clock.now())
        self._act_on(routed)
        return routed.status, routed.reason

    def _act_on(self, routed: RoutedCallback) -> None:
        if routed.event is not None:
            self.rooms.learn(routed.event)
        self.queue.add_all_after(self.reconciler.on_callback(routed))

    def sync(self, keys: Sequence[str] | None) -> tuple[int, str, list[str]]:
        """`capctl sync`: reconcile `keys` (None: every key) now, looking at the vendor first (`sync.py`)."""
        if self.spec is None:
            return 503, f"no valid spec set in force: {self.specs.error}", []
        if self.lease_lost is not None:
            return 503, f"not acting: {self.lease_lost} (send it to the leader)", []
        status, reason, wanted = sync_keys(keys, known_keys(self.records.keys(), self.spec))
        if status == 200:
            self.reconciler.observe_first(wanted)
            self.queue.add_all(wanted)
            log.info("sync requested", keys=len(wanted), every_key=keys is None)
        return status, reason, wanted

    # --- timers -----------------------------------------------------------------------------------------

    async def _resync_timer(self) -> None:
        """Every resync period (with jitter) every key is looked at: the level-triggered safety net."""
        while True:
            await self.clock.sleep(self.resync * (1 - RESYNC_JITTER + 2 * RESYNC_JITTER * self._rng.random()))
            if self.spec is not None:
                self.queue.add_all(known_keys(self.records.keys(), self.spec))
                if self.lease.acting():  # a standby neither lists rooms nor records their activity
                    await self.rooms.resync()

    def _regained(self) -> None:
        """A new term (`became leader`): the state was read again, so recount, look before acting (unconfirmed
        starts are resolved by their client task id, as at a restart), consume the inbox, reconcile all."""
        self.reconciler.recount()
        self.runtimes.clear_unconfirmed()
        self.rooms.regained()
        self.reconciler.observe_first()
        self.queue.add_all(sorted(known_keys(self.records.keys(), self.spec)))
        self.inbox.drain_soon()  # what standbys stored meanwhile
        digest = spec_digest(self.spec) if self.spec is not None else None
        log.info("took over: state read again; acting", records=len(self.records.keys()), spec_digest=digest)
