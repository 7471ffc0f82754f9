"""The daemon's leadership: several `capctl run` replicas on one state, one leads and acts (issue 16).

`reconciler/leader.py`'s `LeaderElector` does the election on the state's lock; this module runs it for
the daemon. Every replica ticks the elector off the event loop (its store calls block) every retry
period. A replica acts only once its term's takeover is done (the state read afresh, every key queued to
be observed before anything is started: `regained`) and while `may_act()` holds, so a standby, a leader
whose renewals failed past the renew deadline and a leader that was paused all drop their work. Writes go
through the term's fenced store (`fencing.LeaderStore`), mutating vendor calls through `fencing`'s guard.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog

from reconciler.clock import Clock, Throttle
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.policy import CALLBACK_RETRY_WINDOW
from reconciler.leader import LeaderElector, LeaderEvent, LeaderSettings, StepDown
from reconciler.state.base import StateError, StateTooNew
from reconciler.state.fenced import FenceableStore

__all__ = ["Lease"]

log = structlog.get_logger("capctl.daemon")

T = TypeVar("T")


class Lease:
    def __init__(
        self,
        store: FenceableStore,
        holder: str,
        settings: LeaderSettings,
        clock: Clock,
        metrics: Metrics,
        *,
        refresh: Callable[[], object],
        fetch: Callable[[], object],
        regained: Callable[[], None],
        may_lead: Callable[[], bool],
        unheard: Callable[[], None] | None = None,
        standing_by: Callable[[], None] | None = None,
        in_thread: bool = True,
    ) -> None:
        self._in_thread = in_thread  # False: ticks run on the loop (in-process tests on a fake clock)
        # The ticks' thread, its own: the loop's default executor holds the calls that wait for the store (a term's
        # read, a callback stored while it reads, the probe: walk 32a), and a renewal queued there missed its deadline.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capctl-lease")
        self._refresh = refresh  # reads the whole state afresh (raises StateError)
        # The store's part of `refresh`, before it: off the loop (at 100,000 tasks, seconds of it; walk 31d).
        self._fetch = fetch
        self.clock = clock
        self.metrics = metrics
        self.elector = LeaderElector(store, holder, clock=clock, settings=settings, on_event=self._event)
        self._regained = regained  # called once a term's takeover read the state: observe, then act
        # Called when a term went on through refusals longer than the vendors retry callbacks (`unheard`): a
        # leader keeps its term through an outage shorter than the renew deadline, and no takeover follows.
        self._unheard_in_term = unheard
        # Called after each tick that left this replica a standby; must not block (it delays no lock attempt).
        self._standing_by = standing_by
        # A replica with no valid spec set in force would lead and act on nothing while one that has a set
        # stands by: it does not try to take the lock until it has one.
        self._may_lead = may_lead
        self._held_back = False  # started without a valid spec set: its first valid set tries at once
        self._unreachable: str | None = None  # the store's error at the last attempt (logged when it changes)
        # Stretches in which callbacks may have gone unanswered (`silence`): this replica listens from now on;
        # while the store fails its lock attempts it (and, in an outage, every replica) answers them 503.
        self._listening_since = clock.monotonic()
        self._refused_from: float | None = None  # the first failed attempt of the stretch going on
        # Since the last term began: the longest refused stretch over CALLBACK_RETRY_WINDOW, and when (the
        # clock's `now`) the last such stretch ended; None while there was none.
        self._refused: tuple[float, float] | None = None
        self._acting_epoch: int | None = None  # the term whose takeover is done
        # A takeover reading the state (in a thread, seconds at 100,000 tasks): `lead_now` and `keep` both attempt,
        # and a second read adopted after the first term acted dropped the commits made in between (walk 32a).
        self._taking_over = False
        # Why this term's last takeover attempt failed (`takeover_failed`): the replica holds the lock, so no
        # other can lead, and acts on nothing; not ready meanwhile, and counted as a refused stretch.
        self._takeover_error: str | None = None
        self._wait = settings.retry_period
        self._lost_why: str | None = None  # the reason of the last `lost leadership`
        self._lost_to_leader = False  # that loss was to another replica (`send_instead`)
        # A tick runs in a thread that a cancelled task does not stop: `release` waits for it, and no tick
        # runs after it, so a replica shutting down cannot take the lock on its way out.
        self._ticking = threading.Lock()
        self._released = False
        self._holding_only = False  # shutting down: renew a lock held, never take one
        # A takeover that cannot read the state is tried every retry period: said once a minute (an outage, or
        # spec files that do not load under a replaced state's key, can last hours).
        self._unread = Throttle(clock)
        # Why this replica never leads again (a newer capctl raised the state's schema; walk 36c-2), or None.
        self._outdated: str | None = None

    def unheard(self) -> tuple[float, float] | None:
        """Whether callbacks may have gone unanswered, before this new term, for longer than the vendors retry
        them (CALLBACK_RETRY_WINDOW): the longest such stretch (seconds) and when (the clock's `now`) the last
        one ended; None if none did. A stretch is one in which the store failed this replica's lock attempts
        (every replica answered callbacks 503), or the previous holder's silence as the store recorded it
        (`Lock.silent_for`: a crash, a scale to 0, a single replica restarted) less the time this replica has
        listened since."""
        mono, now = self.clock.monotonic(), self.clock.now()
        stretches = [self._refused] if self._refused is not None else []
        if self._refused_from is not None:
            stretches.append((mono - self._refused_from, now))
        listened = mono - self._listening_since
        stretches.append(((self.elector.silent_for or 0.0) - listened, now - listened))
        long = [(length, end) for length, end in stretches if length > CALLBACK_RETRY_WINDOW]
        if not long:
            return None
        return max(length for length, _ in long), max(end for _, end in long)

    @property
    def outdated(self) -> str | None:
        """Why this replica never leads again (a newer capctl raised the state's schema), or None."""
        return self._outdated

    def outdate(self, why: str) -> None:
        """A standby's write met a schema a newer capctl raised (`StateTooNew`: `why`): it never leads, and is not
        ready, for a Service to send callbacks to the newer replicas, not to one that refuses them (walk 60b)."""
        if self._outdated is None:
            self._outdated = why
            log.error("cannot lead a state of a newer schema: standing by for good", error=why)

    @property
    def taking_over(self) -> bool:
        """A takeover reads the state now (the replica leads, and acts once it is read)."""
        return self._taking_over

    @property
    def takeover_failed(self) -> str | None:
        """Why this leader's takeover keeps failing (it holds the lock and acts on nothing), or None."""
        return self._takeover_error if self.elector.is_leader and not self.acting() else None

    def acting(self) -> bool:
        """Leading, the takeover done, and the last renew younger than the renew deadline."""
        epoch = self._acting_epoch
        return epoch is not None and self.elector.epoch == epoch and self.elector.may_act()

    def role(self) -> str:
        """What this replica is now, for /readyz: `leader, epoch N` or `standby: ...`."""
        if self.acting():
            return f"leader, epoch {self.elector.epoch}"
        return self.lost or "standby"

    @property
    def lost(self) -> str | None:
        """Why this replica does not act (a standby, or a leader still reading the state), or None."""
        if self.acting():
            return None
        elector = self.elector
        if elector.is_leader:
            return f"leader (epoch {elector.epoch}): reading the state before acting"
        if self._outdated is not None:
            return f"standby: never leads: {self._outdated}"
        if not self._may_lead():
            return "standby: no valid spec set in force; it tries to take the lead once it has one"
        if elector.last_error is not None:
            return f"standby: the state store cannot be reached: {elector.last_error}"
        if elector.other_holder is not None:
            return f"standby: the leader is {elector.other_holder}"
        if self._lost_why is not None:
            return f"standby: lost leadership ({self._lost_why}); trying to take the lead"
        return "standby: trying to take the lead"

    def send_instead(self) -> str:
        """Where `sync` or `wake`, refused while this replica does not act (`lost`), goes instead: to the leader
        only when one is known (seen holding the lock, or the replica this one just lost it to); with none (the
        lock free, the store out of reach, an outdated replica before a newer one leads), "the leader" named no
        one (walk 37a)."""
        elector = self.elector
        if elector.is_leader:
            return "send it again in a moment: this replica acts once it has read the state"
        if self._outdated is not None:
            return "send it to a replica of the newer capctl once one leads"
        if elector.last_error is None and (elector.other_holder is not None or self._lost_to_leader):
            return "send it to the leader"  # (lost to another replica: before the next attempt sees it hold)
        return "no replica is known to lead now: send it again once one leads"

    async def take(self, *, lead: bool) -> None:
        """The first attempt, at start (`lead`: the specs read are valid): lead or stand by; either way read
        the state (raises StateError)."""
        self._held_back = not lead
        self._wait = await self._tick(lead)
        await self._renewing(self._fetch)
        self._refresh()
        if (epoch := self.elector.epoch) is not None:
            self._acting_epoch = epoch
            self._refused = None
            self._acts()

    def hold_only(self) -> None:
        """Shutting down: a leader goes on renewing while its in-flight work has its grace (that work acts
        as the leader it is, and leadership is given up once, by `release`); a standby takes no lock now, and
        a term not taken over yet is not (a takeover reading now does not act)."""
        self._holding_only = True

    def release(self) -> None:
        """Shutting down: a leader gives its lock up now, for a standby to take within a retry period."""
        with self._ticking:
            self._released = True
            # A stretch in which no callback reached it (its takeover failing: not ready) is going on: the release
            # says it was last heard when that began, or the next term's silence began here (walk 26a).
            refused = self._refused_from
            self.elector.resign(unheard_for=None if refused is None else self.clock.monotonic() - refused)
        self._thread.shutdown(wait=False, cancel_futures=True)  # its thread ends (a hung store call: at its timeout)

    async def keep(self) -> None:
        """Renew as the leader, try to take the lock as a standby, every retry period (the elector says
        when exactly); a new term is taken over (state read afresh, then `regained`) before it acts."""
        while True:
            await self.clock.sleep(self._wait)
            await self._attempt(self._may_lead() and not self._holding_only and self._outdated is None)

    async def lead_now(self) -> None:
        """The first valid spec set of a replica that started without one: try to lead now, not a retry
        period later (as a replica started with a valid set does). Not on the way out: a SIGHUP in the shutdown's
        grace took the lock and held it, acting on nothing, until `release`; after it, ticked on its shut thread."""
        if self._held_back and not self._holding_only and self._outdated is None:
            self._held_back = False
            await self._attempt(True)

    async def _attempt(self, lead: bool) -> None:
        self._wait = await self._tick(lead)
        self._tell_reachability(self.elector.last_error)
        if self._standing_by is not None and not self.elector.is_leader and not self._released:
            self._standing_by()
        epoch = self.elector.epoch
        if epoch is None:
            self._takeover_error = None
        elif epoch != self._acting_epoch and not self._taking_over and not self._holding_only:
            await self._take_over(epoch)  # not on the way out: it acted into a queue shut down (walk 33a)
        self._track_refusals(self.elector.last_error is not None or self.takeover_failed is not None)
        if self._refused is not None and self._unheard_in_term is not None and self.acting():
            try:
                self._unheard_in_term()
                self._refused = None
            except StateError:  # tried again next retry period
                pass

    async def _tick(self, lead: bool) -> float:
        """Renew as the leader; as a standby, try to take the lock if `lead`."""
        return await self._off_loop(self._tick_once, lead)

    async def _off_loop(self, call: Callable[..., T], *args: object) -> T:
        """`call(*args)`, a store call that blocks: in the lease's thread (on the loop for tests on a fake clock)."""
        if not self._in_thread:
            return call(*args)
        return await asyncio.get_running_loop().run_in_executor(self._thread, functools.partial(call, *args))

    async def _renewing(self, call: Callable[[], object]) -> None:
        """`call()` off the loop, a leader renewing every retry period meanwhile: a term's read (seconds at 100,000
        tasks) awaited before the next renewal left it past the renew deadline on a loaded node, and the new
        leader stepped down as soon as it had read (walk 32a). On the loop (a fake clock's tests): just `call()`."""
        if not self._in_thread:
            call()
            return
        reading = asyncio.ensure_future(asyncio.to_thread(call))
        while not reading.done():
            waiting = asyncio.ensure_future(self.clock.sleep(self._wait))
            try:
                await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            if not reading.done() and self.elector.is_leader:
                self._wait = await self._tick(False)  # a renewal: a standby (it lost the lock) takes none
        await reading

    def _tick_once(self, lead: bool) -> float:
        with self._ticking:
            if self._released or not (lead or self.elector.is_leader):
                return self.elector.settings.retry_period
            return self.elector.tick()

    def _track_refusals(self, refused: bool) -> None:
        """The stretches in which this replica's callbacks may have been refused (`unheard`): its lock attempts
        failed (every replica answered 503), or its takeover did (not ready: a Service sent them nowhere)."""
        now = self.clock.monotonic()
        if refused and self._refused_from is None:
            self._refused_from = now
        elif not refused and self._refused_from is not None:
            if (length := now - self._refused_from) > CALLBACK_RETRY_WINDOW:
                longest = max(length, self._refused[0]) if self._refused is not None else length
                self._refused = (longest, self.clock.now())
            self._refused_from = None

    def _tell_reachability(self, error: str | None) -> None:
        """One line when the store stops answering this replica's lock attempts and one when it answers
        again: a standby says nothing else during an outage (the leader also logs `lost leadership`)."""
        if (error is None) != (self._unreachable is None):
            if error is not None:
                log.warning("cannot reach the state store; trying again every retry period", error=error)
            else:
                log.info("the state store answers again", role=self.role())
        self._unreachable = error

    async def _take_over(self, epoch: int) -> None:
        before = self._acting_epoch
        self._taking_over = True
        try:
            await self._renewing(self._fetch)
            self._refresh()  # whoever led meanwhile changed the state
            # A renewal as it read ended the term (the next one reads again), or SIGTERM came: its `regained`
            # queued into a queue shut down and consumed the inbox for nothing (walk 33a); the lock is released.
            if self.elector.epoch != epoch or self._holding_only:
                return
            self._acting_epoch = epoch
            self._regained()  # reads the state too (room activity): a failure there is retried the same way
            self._refused = self._refused_from = self._takeover_error = None
            self._acts()
        except StateTooNew as exc:
            # No retry reads it, and holding the lock kept the newer replica that can from leading: give it up.
            self._acting_epoch, self._outdated = before, str(exc)
            log.error("cannot lead a state of a newer schema: lead given up; standing by", epoch=epoch, error=str(exc))
            self.elector.resign(reason=StepDown.OUTDATED)
        except StateError as exc:
            # Not acting in this term until a takeover completes; raised on, it would end the renewals for good.
            self._acting_epoch = before
            self._takeover_error = str(exc)
            if (held := self._unread.allow()) is not None:
                repeats = {"repeats_held_back": held} if held else {}
                log.warning("leading but cannot read the state; retrying", epoch=epoch, error=str(exc), **repeats)
        finally:
            self._taking_over = False

    def _acts(self) -> None:
        """This term's takeover is done: it leads and acts (the gauges alerts read)."""
        self.metrics.leader.set(1)
        self.metrics.lease_held.set(1)

    def _event(self, event: LeaderEvent) -> None:
        """From the elector, on whichever thread noticed: log and count (prometheus metrics are thread-safe)."""
        self.metrics.leadership_changes.inc()
        if event.event == LeaderEvent.BECAME:
            # `capctl_leader` waits for the takeover (`_acts`): a leader that cannot read the state acts on
            # nothing, and exporting 1 kept CapctlLeaderMissing quiet while no replica acted (walk 25B-2).
            self.metrics.leader_epoch.set(event.epoch)
            log.info(LeaderEvent.BECAME, epoch=event.epoch, holder=self.elector.holder)
            return
        self.metrics.leader.set(0)
        self.metrics.lease_held.set(0)
        if event.reason is StepDown.OUTDATED and event.detail:  # a write of this term met a schema a newer capctl
            self._outdated = event.detail  # raised (a takeover that read one set it before it resigned)
            log.error("cannot lead a state of a newer schema: lead given up; standing by", epoch=event.epoch)
        self._lost_why = f"{event.reason}: {event.detail}" if event.detail else str(event.reason)
        self._lost_to_leader = event.reason in (StepDown.LOST, StepDown.SUPERSEDED)
        # Giving the lead up to shut down is a rollout's routine: a warning on every pod's stop taught on-call to
        # skip the lost leads that matter.
        say = log.info if event.reason is StepDown.RESIGNED else log.warning
        say(
            LeaderEvent.LOST,
            epoch=event.epoch,
            reason=str(event.reason),
            detail=event.detail or None,
            holder=self.elector.holder,
        )
