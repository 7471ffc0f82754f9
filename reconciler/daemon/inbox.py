"""No callback lost in a failover: a standby stores what it verified, the leader consumes it (issue 16).

The Service sends vendor callbacks to any replica. A standby verifies one as the leader would (the
router's vendor parsers and replay guard), then stores the event in the state's inbox and answers 200
only once it is committed; a store that fails answers 503, so the vendor retries. The leader claims the
inbox every retry period (and at once when it takes over) and routes each entry as if it had received
it: deduplicated by the callback's own key, against what it received directly too.

An entry holds the parsed event, never the body: no signature, no secret (the store refuses such keys).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from reconciler.clock import Clock, Throttle
from reconciler.model import ProviderConfig
from reconciler.providers.callbacks import CallbackEvent, CallbackRejected
from reconciler.state.base import InboxEntry, StateError, StateTooNew

if TYPE_CHECKING:
    from reconciler.daemon.fencing import LeaderStore
    from reconciler.daemon.router import CallbackRouter, RoutedCallback

__all__ = ["Inbox", "entry_of", "event_of"]

log = structlog.get_logger("capctl.daemon")

T = TypeVar("T")

# The replay guard's inputs: the standby already checked them, and the leader's check is per body.
_NOT_STORED = frozenset({"signed_pair", "body_digest"})


def entry_of(event: CallbackEvent, body: bytes, now: float) -> InboxEntry:
    """The inbox entry of a verified event (`body` only gives its digest)."""
    payload = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name not in _NOT_STORED}
    if event.run_id is not None:
        payload["run_id"] = list(event.run_id)
    digest = event.body_digest or hashlib.sha256(body).hexdigest()
    return InboxEntry(event.vendor, event.dedupe_key, payload, digest, now)


def event_of(entry: InboxEntry) -> CallbackEvent:
    """The event a standby stored (fields a later version added and this one lacks are ignored)."""
    names = {f.name for f in dataclasses.fields(CallbackEvent)} - _NOT_STORED
    fields: dict[str, Any] = {k: v for k, v in entry.payload.items() if k in names}
    if isinstance(fields.get("run_id"), list):
        fields["run_id"] = tuple(fields["run_id"])
    return CallbackEvent(**fields, body_digest=entry.digest)


class Inbox:
    """A standby's `store` of verified callbacks, and the leader's consumption of them (`drain`)."""

    def __init__(
        self,
        state: LeaderStore,
        router: CallbackRouter,
        clock: Clock,
        acting: Callable[[], bool],
        deliver: Callable[[RoutedCallback], None],
        *,
        in_thread: bool = True,
        outdated: Callable[[str], None] = lambda why: None,
    ) -> None:
        self._in_thread = in_thread  # False: claims run on the loop (in-process tests on a fake clock)
        self._state = state
        self._router = router
        self._clock = clock
        self._acting = acting
        self._deliver = deliver  # the controller acts on a routed callback (queues its keys)
        self._outdated = outdated  # told of a newer schema met storing a callback: the replica never leads
        self._draining: asyncio.Task[int] | None = None
        self._claim: asyncio.Future[list[InboxEntry]] | None = None  # the last claim (`claimed` awaits it)
        # A database outage fails every callback a standby receives: one warning a minute, not one each.
        self._unstored = Throttle(clock)
        self._said_taken, self._taken = Throttle(clock), 0  # `callbacks taken from the inbox`: once a minute
        # A claim fails every retry period while the database is down (until the renew deadline, or for as long
        # as the lease's own connection still answers): one warning a minute, as for the stores (walk 60f-1).
        self._unclaimed = Throttle(clock)
        # Stores go one at a time, in the order verified: racing threads stored a room's leave before its join,
        # and a leader claiming between the two acted on them in that order (walk 32a).
        self._storing = asyncio.Lock()

    async def store(
        self, vendor: str, body: bytes, providers: Iterable[ProviderConfig], *, who: str = "standby"
    ) -> tuple[int, str]:
        """(HTTP status, reason) for a callback a standby received: 200 only once it is stored. Verified on the
        loop, stored off it: the store's one connection waits while a read holds it (a takeover's, a standby
        page's: seconds at 100,000 tasks), and on the loop nothing ran meanwhile (walk 32a). `who` begins a 503's
        reason: `standby`, or `shutting down` for a leader stopping (it was worded as a standby's, walk 35b)."""
        now = self._clock.now()
        try:
            event = self._router.verify(vendor, body, providers, now)
        except CallbackRejected as exc:
            return exc.status, exc.reason
        entry = entry_of(event, body, now)
        try:
            async with self._storing:
                stored = await self._off_loop(lambda: self._state.inbox_put(entry))
        except StateError as exc:
            if isinstance(exc, StateTooNew):
                self._outdated(str(exc))
            if (held := self._unstored.allow()) is not None:
                log.warning(
                    "could not store a callback in the inbox; the vendor retries",
                    vendor=vendor,
                    error=str(exc),
                    repeats_held_back=held,
                )
            return 503, f"{who}: cannot store the callback for the leader: {exc}"
        self._router.count(vendor, "stored" if stored else "duplicate")
        return 200, "stored for the leader" if stored else "duplicate: already stored for the leader"

    async def drain(self) -> int:
        """The leader claims what standbys stored (oldest first) and acts on each; returns how many."""
        if not self._acting():
            return 0
        now = self._clock.now()
        self._claim = claim = asyncio.ensure_future(self._off_loop(lambda: self._state.inbox_claim(now=now)))
        # The claim commits in its thread even if this drain is cancelled (a SIGTERM cancels the periodic drain):
        # what it marked consumed is acted on when it ends, whoever awaits it; else those callbacks, answered 200
        # by a standby, were lost (walk 35a-2).
        claim.add_done_callback(self._act_on_claimed)
        try:
            entries = await asyncio.shield(claim)
        except StateError:  # said by `_act_on_claimed`
            return 0
        # Said once a minute with the count since: behind a Service, half the callbacks reach a standby, and a
        # line every retry period (1,800 an hour, whatever the rooms) drowned the decisions.
        if self._taken and self._said_taken.allow() is not None:
            log.info("callbacks taken from the inbox", count=self._taken)
            self._taken = 0
        return len(entries)

    async def claimed(self, timeout: float) -> None:
        """Shutting down: wait (at most `timeout` s) for a claim still under way, so that what it took is acted on
        before the room activity is saved for the last time."""
        if self._claim is not None and not self._claim.done():
            await asyncio.wait([self._claim], timeout=timeout)
            if not self._claim.done():  # a hung store: what it takes once it commits reaches no one (walk 37a-1)
                log.warning(
                    "shutdown grace period over: a claim of the callback inbox is still under way; callbacks it "
                    "takes are not acted on"
                )

    def _act_on_claimed(self, claim: asyncio.Future[list[InboxEntry]]) -> None:
        """Act on each entry a claim took (oldest first), as if received now."""
        if claim.cancelled():
            return
        if (exc := claim.exception()) is not None:
            # Fenced / NotLeader: the term ended; otherwise retried next period
            if isinstance(exc, StateError) and (held := self._unclaimed.allow()) is not None:
                repeats = {"repeats_held_back": held} if held else {}
                log.warning("could not claim the callback inbox", error=str(exc), **repeats)
            return
        entries = claim.result()
        for entry in entries:
            routed = self._router.route_event(event_of(entry))
            self._deliver(dataclasses.replace(routed, received_at=entry.received_at))
        self._taken += len(entries)

    async def _off_loop(self, call: Callable[[], T]) -> T:
        """`call()`, a store call: in a thread (on the loop for tests on a fake clock)."""
        return await asyncio.to_thread(call) if self._in_thread else call()

    def drain_soon(self) -> None:
        """`drain()` as a task of its own (a takeover, which cannot await); one at a time."""
        if self._draining is None or self._draining.done():
            self._draining = asyncio.get_running_loop().create_task(self.drain(), name="capctl-inbox-drain")

    async def keep(self, period: float) -> None:
        """Drain every `period` (the retry period) while leading."""
        while True:
            await self._clock.sleep(period)
            await self.drain()
