"""The daemon's controller: lifecycle, timers, and the hooks that join its parts (controller-runtime's split).

Every source of work (spec reloads, the resync timer, vendor callbacks, due times) only enqueues task
keys. A worker takes one key and hands it to the `Reconciler` (`reconciler.py`), which decides it and
returns when to look again (controller-runtime's RequeueAfter). Callbacks go through the `CallbackRouter`
(`router.py`); what the daemon remembers per key is one `KeyRuntime` value (`runtime.py`); the spec set
in force and the prune guard live in `specset.py` and `prune.py`; `parts.py` builds and wires them all,
`readiness.py` answers /readyz, `tasks.py` keeps the loop's own tasks. docs/architecture.md draws the parts.
Time comes only from the injected clock, so tests drive hours of daemon life in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import structlog

from reconciler.daemon.digest import provider_settings, spec_digest
from reconciler.daemon.parts import DaemonParts
from reconciler.daemon.policy import EMPTY_ROOM_RECHECK
from reconciler.daemon.prune import MAX_LOGGED, PRUNE_GRACE
from reconciler.daemon.readiness import STORE_PROBE_TIMEOUT, Readiness, readiness_of
from reconciler.daemon.reconciler import RESYNC_JITTER, ReconcileFailed
from reconciler.daemon.router import RoutedCallback
from reconciler.daemon.runtime import EMPTY
from reconciler.daemon.specset import changed_keys, same_request
from reconciler.daemon.storehealth import probe_store
from reconciler.daemon.sync import known_keys, resync_keys, sync_keys
from reconciler.daemon.watch import tree_state, watch_specs
from reconciler.model import TaskStatus
from reconciler.spec import SpecErrors, SpecSet
from reconciler.spec.errors import quote
from reconciler.state.base import StateError
from reconciler.waking import plan_wake

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["PRUNE_GRACE", "RESYNC_JITTER", "Daemon", "Readiness", "ReconcileFailed"]

log = structlog.get_logger("capctl.daemon")

T = TypeVar("T")

LEASE_TASK = "capctl-lease"  # the lease renewals: kept through the shutdown grace (`stop`)


class Daemon(DaemonParts):
    """`capctl run` without the process around it: tests drive it with a FakeClock and ASGI transports.

    `start()` leads or stands by (several replicas may share a state: lease.py), reads the state and the
    specs, and starts the workers and timers; `asgi_app` serves callbacks, probes and metrics; `reload()`
    re-reads the specs. Its parts and how they are wired: `parts.py`.
    """

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Lead or stand by (lease.py), read the state and the specs, start working (a standby's workers
        drop their keys until it leads)."""
        self.background.bind()
        key = self.specs.fingerprint_key
        # What the read reads, for the watch (which begins later): a file written meanwhile is not missed.
        read = tree_state(self.paths) if self._watch_debounce_ms is not None else None
        specs = self.specs.read()  # before the lock: a replica without a valid set does not take the lead
        try:
            await self.lease.take(lead=not isinstance(specs, SpecErrors))
            if self.lease.acting():  # a first term at start: was anyone listening before this replica?
                self._wake_rooms_known_empty()
            self.vendors.open()
            self.reconciler.observe_first()  # whatever may still run at the vendor is looked at before anything starts
            self.rooms.load(specs if isinstance(specs, SpecSet) else None)  # reads the room activity
            self.specs.take(specs, key)
        except StateError:  # exit 1: the lock it took is given up now, not left to lapse for the next (walk 34a, 35a)
            self.lease.release()
            raise
        self.workers.start(self._workers)
        self.background.spawn(self._resync_timer(), "capctl-resync")
        self.background.spawn(self.lease.keep(), LEASE_TASK)
        self.background.spawn(self.inbox.keep(self.leader_settings.retry_period), "capctl-inbox")
        if (debounce_ms := self._watch_debounce_ms) is not None:
            watcher = watch_specs(
                self.paths,
                self.reload_async,
                stop=self._stop_watching,
                debounce_ms=debounce_ms,
                referenced=lambda: self.specs.referenced,
                read=read,
            )
            self.background.spawn(watcher, "capctl-watch")
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
        self._stopping = True
        self.queue.shut_down()
        self._stop_watching.set()
        self.lease.hold_only()
        self.background.cancel(keep=LEASE_TASK)  # timers, the watcher, reloads; not the lease renewals
        # One grace for both waits: each its own made a stop that waited for a hung store 2x as long (walk 36a-1).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        await self.workers.stop(self._grace)
        # A claim cut short by the cancel: its callbacks reach the room book.
        await self.inbox.claimed(max(0.0, deadline - loop.time()))
        self.background.cancel()
        self.rooms.stop()
        await self.background.join()
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
        """Run `call(*args)` on the daemon's event loop: HTTP is served on a thread of its own (`tasks.py`)."""
        return await self.background.call(call, *args)

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

    @property
    def in_force(self) -> SpecSet | None:
        """`spec` with the tasks its room-selector jobs have now (the reconciler's): the keys a takeover, the resync
        and `capctl sync` go over. Without them a selector task whose start failed (the state store down) was
        queued again by none of them once its backoff's re-queue fell in a term it did not lead (walk 60f-2)."""
        return self.reconciler.spec

    # --- specs ------------------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the specs. An invalid or vanished set is logged and ignored: the last valid set stays."""
        return self.specs.reload()

    async def reload_async(self) -> bool:
        """`reload()` in a thread, one at a time (`SpecState.reload_async`)."""
        return await self.specs.reload_async()

    def reload_soon(self) -> None:
        """`reload_async()` as a task of its own (for SIGHUP, whose handler cannot await); not once `stop` began:
        a set read then acts on nothing (its queue takes no keys), yet was said `spec set loaded`, `acting: true`,
        and read after `stop` it went on a task nobody awaits, its vendor clients opened after they closed (35a)."""
        if self._stopping:
            log.info("SIGHUP ignored: shutting down")
            return

        async def reload() -> None:
            await self.reload_async()

        self.background.spawn(reload(), "capctl-reload")

    def _specs_taken(self, old: SpecSet | None, spec: SpecSet) -> None:
        self.vendors.configure(spec.providers)
        if old is None:  # started without a valid set, it did not try to lead (lease.py): it may now
            self.background.spawn(self.lease.lead_now(), "capctl-lead")
        before = self.reconciler.spec if old is not None else None
        summary = spec.summary()  # of the set as loaded, as the status page says it (selector rooms apart)
        # Digested as loaded, too: with the rooms its selector jobs have now, the same files showed other digests
        # on two replicas (each learned its rooms at its own time), and on one from one load to the next.
        self.spec_digest = digest = spec_digest(spec, self.specs.fingerprint_key)
        spec = self.rooms.take(spec)  # with the room-selector jobs' tasks; put in force by `_in_force`
        recorded = self.records.keys()
        keys = changed_keys(before, spec, recorded)
        # Keys back in the set missed their room's callbacks meanwhile; the room book heard them.
        self.reconciler.recall_rooms(self.rooms.book.activity())
        # A prune no longer held back goes now, not at the next resync: its keys are in neither set. Only the
        # leader weighs prunes: a standby's records are the state as it last read it (`_regained` checks).
        released = self.pruning.check(spec, self.records.values()) if self.lease.acting() else set()
        # A changed task is tried at once, also one whose failed update waits for its backoff step (walk 44c-1);
        # not for its labels, selector or restartPolicy alone: no call of it changes, none that failed is fixed (55a).
        self.queue.retry_now(keys if before is None else {k for k in keys if not same_request(before, spec, k)})
        self.queue.add_all(sorted(keys | released))
        if old is not None and provider_settings(old) != provider_settings(spec):
            # A Provider added back (a rename's old one) or a key rotated may fix what failed: retry it now,
            # not at the end of its backoff (up to 5 minutes), though no task of the set changed.
            failing = sorted(k for k in recorded if self.queue.failures(k))
            self.queue.retry_now(failing)
            self.queue.add_all(failing)
        self.metrics.spec_digest(digest)
        log.info(
            "spec set loaded",
            summary=summary,
            changed=len(keys) if old is not None else None,
            digest=digest,
            acting=self.lease.acting(),  # only the leader's set acts
        )

    def _in_force(self, spec: SpecSet) -> None:
        self.reconciler.spec = spec
        self.router.index(spec)

    # --- requests ---------------------------------------------------------------------------------------

    async def handle_callback(self, vendor: str, body: bytes) -> tuple[int, str]:
        """Verify and act on one webhook; returns (HTTP status, reason). Acting = enqueueing keys. A standby
        stores it in the inbox, a store call that waits while a read holds the store (`Inbox.store`); so does
        a leader shutting down: its queue takes no keys and its room activity is saved once, so a callback it
        acted on was answered 200 and lost, and the vendor does not retry a 200 (walk 34a)."""
        if not self.router.knows(vendor):
            return 404, f"no callback route for {quote(vendor)}"  # the client's word: quoted at a bounded size
        if self.spec is None:
            # No Provider to verify it with yet. Not 401 "no Provider for … app id", which sent the operator
            # to the Providers' appId: 503, the vendor retries (and this daemon says why, as /readyz does).
            return self.router.refuse(vendor, 503, "no valid spec set in force yet: cannot verify the callback")
        providers = self.spec.providers.values()
        if self.lease_lost is not None or self._stopping:  # verified and kept in the inbox for the (next) leader
            return await self.inbox.store(vendor, body, providers, who="shutting down" if self._stopping else "standby")
        routed = self.router.route(vendor, body, providers, self.clock.now())
        self._act_on(routed)
        return routed.status, routed.reason

    def _act_on(self, routed: RoutedCallback) -> None:
        if routed.event is not None:
            self.rooms.learn(routed.event)
        self.queue.add_all_after(self.reconciler.on_callback(routed))

    def sync(self, keys: Sequence[str] | None) -> tuple[int, str, list[str], int]:
        """`capctl sync`: reconcile `keys` (keys or globs; None: every key) now, looking at the vendor first
        (`sync.py`); (HTTP status, reason, the keys queued, the tombstones matched and not queued)."""
        if self.spec is None:
            return 503, f"no valid spec set in force: {self.specs.error}", [], 0
        if (not_acting := self._not_acting()) is not None:
            return 503, not_acting, [], 0
        in_force = self.in_force or self.spec
        known = known_keys(self.records.keys(), in_force)
        status, reason, wanted, tombstones = sync_keys(keys, known, self.records.get, in_force.tasks)
        if status == 200:
            self.reconciler.observe_first(wanted)
            self.queue.retry_now(wanted)
            self.queue.add_all(wanted)
            log.info("sync requested", keys=len(wanted), every_key=keys is None)
        return status, reason, wanted, tombstones

    def wake(self, keys: Sequence[str]) -> tuple[int, str, list[str]]:
        """`capctl wake --daemon`: clear the waiting of the tasks `keys` (keys or globs) name, as the offline
        wake does (`waking.plan_wake`), written under this leader's lease (a standby's or a superseded
        leader's write fails, nothing written), and reconcile them now; (HTTP status, reason, what it says of
        each KEY). Any KEY that matches no task: nothing is woken."""
        if self.spec is None:
            return 503, f"no valid spec set in force: {self.specs.error}", []
        if (not_acting := self._not_acting()) is not None:
            return 503, not_acting, []
        wake = plan_wake(keys, self.records.keys(), self.records.get)
        if wake.unknown:
            return 404, wake.problem, []
        if wake.woken:
            # Due now rather than due at no set time: with none, the daemon's policy would find the room still
            # known empty and put the task back to sleep (a room callback's wake writes the same).
            now = self.clock.now()
            try:
                self.records.put_many(record.evolve(next_attempt_at=now) for record in wake.woken)
            except StateError as exc:
                return 503, f"nothing woken: the state could not be written: {exc}", []
            woken = [record.key for record in wake.woken]
            self.queue.add_all(woken)
            log.info("wake requested", keys=len(woken), first=woken[:MAX_LOGGED])
        n = len(wake.woken)
        if n == 0:  # each line says why; "queued" would claim a reconcile that is not coming
            return 200, "woke no task, queued none", wake.lines
        return 200, f"woke {n} task{'' if n == 1 else 's'}, queued for an immediate reconcile", wake.lines

    def _not_acting(self) -> str | None:
        """Why `sync` and `wake` are refused (503), or None. A leader shutting down still holds its lease, but
        its queue takes no keys: it answered `queued N` for keys nothing would reconcile (walk 35b)."""
        if self.lease_lost is not None:
            return f"not acting: {self.lease_lost} ({self.lease.send_instead()})"
        if self._stopping:
            return "not acting: shutting down (send it again once the next leader leads)"
        return None

    def _heard_again(self) -> None:
        # A takeover reconciles every key after its wake; within a term, the woken ones are queued here.
        self.queue.add_all(self._wake_rooms_known_empty())

    def _wake_rooms_known_empty(self) -> list[str]:
        """A new term (at start or at a takeover) after callbacks went unanswered longer than the vendor's
        retries last (`Lease.unheard`: a state-store outage in which every replica answered 503, or no replica
        listening at all): a room known empty may have people in it now whose join nobody heard. Its dormant
        task's repair start (EMPTY_ROOM_RECHECK, hourly) is made due now: one start, which idles out again at
        once if the room is still empty (walks 20F-3, 21D-1). A shorter silence (a quick restart) costs
        nothing: the vendor's retries reach the new term. Only a room judged empty by the time the silence
        ended: one judged since heard every join since, and a replica that stood by for days after an outage
        would otherwise wake every dormant task of the fleet (walk 21A-1).
        Returns the keys woken. Raises StateError: the takeover (or the wake) is tried again."""
        if (unheard := self.lease.unheard()) is None:
            return []
        silence, ended = unheard
        now = self.clock.now()
        judged_by = ended + EMPTY_ROOM_RECHECK  # the repair start of a room judged empty then
        due = [
            r.evolve(next_attempt_at=now)
            for r in self.records.values()
            if r.status is TaskStatus.DORMANT
            and r.room_empty
            and r.next_attempt_at is not None
            and now < r.next_attempt_at <= judged_by
        ]
        if due:
            self.records.put_many(due)
            log.info(
                "callbacks went unanswered longer than the vendor retries them: rooms known empty get their"
                " repair start now",
                silence=f"{silence:.0f}s",
                keys=len(due),
                first=[r.key for r in due][:MAX_LOGGED],
            )
        return [r.key for r in due]

    def _woken(self, keys: list[str], source: str) -> None:
        self.queue.add_all_after(self.reconciler.wake(keys, source))

    def _forget_tasks(self, keys: list[str]) -> None:
        forgotten = 0
        try:
            for key in keys:
                self.records.delete(key)  # and its status-page history
                self.runtimes.set(key, EMPTY)
                self.queue.forget(key)
                forgotten += 1
        except StateError as exc:  # the rest are tried again at the next resync
            log.warning("selector tasks not forgotten", error=str(exc), left=len(keys) - forgotten)
        if forgotten:
            log.info("selector tasks forgotten with their rooms", tasks=forgotten, first=keys[:MAX_LOGGED])

    # --- timers -----------------------------------------------------------------------------------------

    async def _resync_timer(self) -> None:
        """Every resync period (with jitter) every key is looked at, the level-triggered safety net, but for
        those waiting for a re-issue slot still ahead (`sync.resync_keys`) and those being reconciled or
        backing off after a failed reconcile (`WorkQueue.retrying`): their worker is due anyway."""
        while True:
            await self.clock.sleep(self.resync * (1 - RESYNC_JITTER + 2 * RESYNC_JITTER * self._rng.random()))
            if self.spec is not None:
                known = known_keys(self.records.keys(), self.in_force)
                due = resync_keys(known, self.records.get, self.clock.now())
                self.queue.add_all(key for key in due if not self.queue.retrying(key))
                if self.lease.acting():  # a standby neither lists rooms nor records their activity
                    await self.rooms.resync()
                    self._prune_history()

    def _prune_history(self) -> None:
        """The status page's history in the state, bounded as the page's own (a failure is tried again later)."""
        try:
            self.records.prune_history()
        except StateError as exc:
            log.warning("status page history not pruned", error=str(exc), retry="at a later resync")

    def _regained(self) -> None:
        """A new term (`became leader`): the state was read again, so recount, look before acting (unconfirmed
        starts are resolved by their client task id, as at a restart), consume the inbox, reconcile all."""
        self._wake_rooms_known_empty()
        self.reconciler.recount()
        self.runtimes.clear_unconfirmed()
        self.rooms.regained()
        self.reconciler.recall_rooms(self.rooms.book.activity())
        self.reconciler.observe_first()
        # The safeguard against the state as read now: a standby's view was stale, and a prune its old leader
        # held for a human is held here too (the keys it releases are among those queued below).
        if (spec := self.reconciler.spec) is not None:  # in force, with the selector jobs' tasks
            self.pruning.check(spec, self.records.values())
        self.queue.add_all(sorted(known_keys(self.records.keys(), self.in_force)))
        self.inbox.drain_soon()  # what standbys stored meanwhile
        log.info("took over: state read again; acting", records=len(self.records.keys()), spec_digest=self.spec_digest)
