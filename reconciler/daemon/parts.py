"""The daemon's parts wired together: which part calls which, built once; `controller.py` runs them.

Split from the controller so that it reads as lifecycle and behaviour only (issue 15: well under 300
lines). Construction order matters in one place: the metrics come first, since the prune guard checks its
arguments before the store is touched. The hooks a part calls back into (`_regained`, `_in_force`,
`_specs_taken`, `_act_on`, `_woken`) are the controller's: they join several parts.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx
import structlog

from reconciler import gcpause
from reconciler.clock import Clock
from reconciler.daemon import policy
from reconciler.daemon.coverage import RoomGauges, room_counts
from reconciler.daemon.fencing import LeaderStore, fenceable
from reconciler.daemon.inbox import Inbox
from reconciler.daemon.lease import Lease
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.prune import PRUNE_GRACE, PruneGuard
from reconciler.daemon.queue import WorkQueue
from reconciler.daemon.reconciler import Reconciler
from reconciler.daemon.records import RecordCache
from reconciler.daemon.roomjobs import RoomSelectors
from reconciler.daemon.router import CallbackRouter, RoutedCallback
from reconciler.daemon.runtime import RuntimeMap
from reconciler.daemon.specset import SpecState
from reconciler.daemon.storehealth import StoreHealth, WatchedStore
from reconciler.daemon.tasks import Background
from reconciler.daemon.vendors import VendorClients
from reconciler.daemon.workers import Workers
from reconciler.execute import Executor
from reconciler.leader import LeaderSettings
from reconciler.spec import SpecSet
from reconciler.state.base import DAEMON_HOLDER, StateError, StateStore

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["HTTP_SHUTDOWN_GRACE", "SHUTDOWN_GRACE", "WORKERS", "DaemonParts"]

log = structlog.get_logger("capctl.daemon")

WORKERS = 16  # keys reconciled at once; vendor pacing is the budgets' job, this bounds memory and sockets
SHUTDOWN_GRACE = 10.0  # seconds in-flight vendor calls get to finish on SIGTERM
HTTP_SHUTDOWN_GRACE = 5  # then seconds the HTTP side gives open requests (a callback being read) to finish


class DaemonParts(ABC):
    """Every part of the daemon as an attribute (tests and the HTTP side reach them as `daemon.<part>`)."""

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
        local_only: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        if resync <= 0:
            raise ValueError(f"resync must be positive, got {resync}")
        # Before the store is touched: the prune guard checks its arguments. `capctl run` passes the ones it
        # served while it waited for the store, so a scrape sees one series throughout.
        self.metrics = metrics or Metrics()
        self.pruning = PruneGuard(clock, self.metrics, prune=prune, max_prune=max_prune, grace=prune_grace)
        self.paths = list(paths)
        self.clock = clock
        self.resync = resync
        self.prune = prune
        self.store_health = StoreHealth(clock)
        # Leader election (lease.py): writes go through the current term's fenced store (fencing.py).
        self.leader_settings = leader = leader or LeaderSettings()
        self._in_thread = elect_in_thread  # store calls off the loop (not in tests on a fake clock)
        self._key_look = False  # a standby's read of the state's key under way (`_look_at_key`)
        self._shared = shared = fenceable(store)  # raises StateError for a store that cannot fence writes
        self.lease = Lease(
            shared,
            holder,
            leader,
            clock,
            self.metrics,
            refresh=self._read_afresh,
            fetch=lambda: self.records.fetch(leading=self.lease.elector.is_leader),
            regained=self._regained,
            unheard=self._heard_again,
            may_lead=lambda: self.specs.current is not None,
            standing_by=self._look_at_key,
            in_thread=elect_in_thread,  # its store calls block: off the loop, but for tests on a fake clock
        )
        self.metrics.state_store_reachable.set_function(lambda: float(self.lease.elector.last_error is None))
        self.state = LeaderStore(shared, self.lease.elector)
        self.records = RecordCache(WatchedStore(self.state, self.store_health), clock, history_store=shared)
        self.queue = WorkQueue(clock)
        self.runtimes = RuntimeMap()
        self.router = CallbackRouter(self.records, self.metrics, clock)
        self.rooms = RoomSelectors(  # room-selector jobs: room activity in, their tasks out (roomjobs.py)
            self.state,  # (its history writes fenced like the tasks')
            self.metrics,
            clock,
            records=self.records.values,
            history=self.records.history,
            provider=lambda name, family: self.vendors.provider(name, family),
            in_force=self._in_force,
            enqueue=self.queue.add,
            woken=self._woken,
            forget=self._forget_tasks,
            leading=self.lease.acting,
        )
        self.background = Background()  # the daemon's loop and its timers, watcher and reloads (tasks.py)
        self.specs = SpecState(paths, store.fingerprint_key(), self.metrics, clock, self._specs_taken)
        self.spec_digest: str | None = None  # of the set in force: logged, exported, on the status page
        self.vendors = VendorClients(clock, self.metrics, transport, guard=self.lease.elector)
        self._workers = workers
        self._rng = rng or random.Random()
        self._grace = shutdown_grace
        self._watch_debounce_ms = watch_debounce_ms  # None: no file watcher (tests call reload() themselves)
        self.sync_token = sync_token or None  # when set, POST /api/v1/sync needs it as a bearer token
        self.status_page = status_page  # GET / and GET /api/v1/status (daemon/status.py), read-only
        self.status_token = status_token or None  # when set, both need it
        # --listen is loopback: without its token, the page and sync/wake answer only a Host this machine's own
        # clients send (listen.named_locally), not a DNS-rebound web page's name.
        self.local_only = local_only
        self._stop_watching = asyncio.Event()
        self._stopping = False  # `stop` began: callbacks go to the inbox, for the next leader (walk 34a)
        self.inbox = Inbox(
            self.state,
            self.router,
            clock,
            self.lease.acting,
            self._act_on,
            in_thread=elect_in_thread,
            outdated=self.lease.outdate,
        )
        provider = self.vendors.provider
        executor = Executor(
            self.records, provider, clock, parallelism=1, rng=self._rng, retry_in=self.queue.next_backoff
        )
        parts = (self.records, self.runtimes, provider, executor, self.pruning, self.metrics, clock)
        self.reconciler = Reconciler(*parts, resync=resync, rng=self._rng, backing_off=self.queue.backing_off)
        self._app: Starlette | None = None  # built on first use (`asgi_app`)
        # Task and room counts come from the leader alone: a standby's records are those it read last (at
        # start, or when it last led), and a sum over the replicas must count each task once.
        leading = self.lease.acting
        self.metrics.watch(lambda: self.reconciler.status_counts() if leading() else None, lambda: self.queue.depth)
        self.metrics.registry.register(
            RoomGauges(lambda: room_counts(self.records.values(), self.runtimes.snapshot()) if leading() else {})
        )
        self.workers = Workers(self.queue, self.reconciler, self.metrics, clock, self.store_health, self.lease.acting)

    def _read_afresh(self) -> None:
        """The whole state, read when the daemon starts and when a term begins. A state replaced meanwhile by
        one of another lineage (`state copy --force` of another state's backup while no replica led) holds
        another fingerprint key: the specs are keyed with it again, or every task looks changed (replaced)."""
        self.records.refresh(leading=self.lease.elector.is_leader)
        key = self._shared.reread_fingerprint_key()
        replaced = self._rekey(key, reload=False)
        # Files that do not load leave in force the set keyed with the old key, under which every task looks
        # changed (a replace of each): no term is acted in until a reload (the watcher's, SIGHUP) loads them.
        if self.specs.current is not None and self.specs.keyed_with != key and not (replaced and self.specs.reload()):
            raise StateError(
                "the state was replaced (another fingerprint key) and the specs do not load to be keyed with it: "
                "nothing is done until they load, or the set in force, keyed with the old key, would replace every task"
            )
        gcpause.freeze_heap()  # the records just read live until the next term's read

    def _look_at_key(self) -> None:
        """A standby's look at the state's key, after each lease tick: it kept the key read at its start, and
        after a state of another lineage was copied in its spec digest differed from the leader's until it
        restarted (CapctlSpecSetsDiffer). A task of its own, one at a time: a store call that hangs (a dead
        connection) must not delay the lock attempts, and so a failover."""
        if not self._key_look:
            self._key_look = True
            self.background.spawn(self._rekey_standby(), "capctl-key-look")

    async def _rekey_standby(self) -> None:
        try:
            read = self._shared.peek_fingerprint_key  # never makes a key
            key = await asyncio.to_thread(read) if self._in_thread else read()
        except StateError:  # the lock attempts say when the store cannot be reached
            return
        finally:
            self._key_look = False
        if key is not None and not self.lease.elector.is_leader:
            self._rekey(key, reload=True)

    def _rekey(self, key: bytes | None, *, reload: bool) -> bool:
        """Key the specs with the state's `key` when it is another than theirs (whether it was), reloading them
        with `reload` (a standby: its spec digest is then the leader's; a takeover reloads in `_read_afresh`)."""
        if key == self.specs.fingerprint_key:
            return False
        log.warning("the state was replaced: its fingerprint key changed; specs keyed with the new one")
        self.specs.fingerprint_key = self.rooms.jobs.key = key
        if reload:
            self.specs.reload()
        return True

    @abstractmethod
    def _regained(self) -> None:
        """A new term: the lease read the state again."""

    @abstractmethod
    def _heard_again(self) -> None:
        """This term went on through refusals longer than the vendors retry callbacks (`Lease.unheard`): rooms
        known empty get their repair start now. Raises StateError (tried again)."""

    @abstractmethod
    def _in_force(self, spec: SpecSet) -> None:
        """The effective spec set (with the selector jobs' tasks) is put in force."""

    @abstractmethod
    def _specs_taken(self, old: SpecSet | None, spec: SpecSet) -> None:
        """A valid spec set was read."""

    @abstractmethod
    def _act_on(self, routed: RoutedCallback) -> None:
        """A verified callback is acted on (now, or drained from the inbox)."""

    @abstractmethod
    def _woken(self, keys: list[str], source: str) -> None:
        """The rooms of `keys` are active: the room listing found them active again (`source` "room listing"),
        or their first activity made a selector job's tasks of them ("room selected")."""

    @abstractmethod
    def _forget_tasks(self, keys: list[str]) -> None:
        """Selector tasks whose rooms were forgotten (`roomjobs.forgotten_tasks`): delete their records, and
        what the daemon keeps per key."""
