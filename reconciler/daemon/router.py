"""Vendor callbacks in, task keys and hints out: the only part of the daemon that sees a webhook.

A callback is verified and parsed by its vendor's parser (`providers.family`, the providers own their
payloads), deduplicated (`Deduper`: a vendor's retry is acted on once; `ReplayGuard`: a ZEGO signature
put on another body is refused), ordered (`RoomOrder`: a late callback of an earlier moment that would undo
a newer one is stale) and translated into the keys it concerns, using the indexes the router owns: rooms to
the task keys capturing them, and the users seen in each room. It never decides anything: the reconciler
turns a `RoutedCallback` into runtime hints, the controller into queued keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from reconciler.clock import Clock, SystemClock, Throttle
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.records import RecordCache
from reconciler.daemon.roomorder import RoomOrder
from reconciler.model import ProviderConfig, account_of
from reconciler.providers.callbacks import MAX_SKEW, CallbackEvent, CallbackRejected
from reconciler.providers.family import vendor as vendor_named
from reconciler.spec import SpecSet

__all__ = ["ROOM_USERS_MEMORY", "CallbackRouter", "Deduper", "ReplayGuard", "RoutedCallback"]

log = structlog.get_logger("capctl.daemon")

DEDUPE_SIZE = 50_000  # callback ids remembered (vendors retry twice within seconds)
# ZEGO (timestamp, nonce) pairs remembered; each is forgotten once its time (+ _RECUT_SLACK) is outside MAX_SKEW
# (it cannot pass the time check again), the oldest first when there are more (about 200 bytes each: ≤ 25 MB).
REPLAY_MEMORY = 100_000
# A ZEGO signature re-cut between its timestamp and nonce (`1796…000` + `834567` as `1796…000834` ms + `567`)
# reads a time up to 1 s later: a pair is kept that much past its window, else the re-cut passed in that second.
_RECUT_SLACK = 1.0
# Rooms whose users are tracked (`_track_users`). A room leaves the map when its last user leaves or it
# closes; one whose leave and close callbacks were both lost would stay for ever, so the least recently
# changed go first past this. A forgotten room's next leave counts as its emptying: a few extra looks.
ROOM_USERS_MEMORY = 100_000

Room = tuple[str, str, str]  # (vendor, app id, room id)


@dataclass(frozen=True, slots=True)
class RoutedCallback:
    """What one callback means for the daemon. `outcome` is the metrics label (accepted, duplicate,
    rejected); `event` is set only when accepted."""

    status: int
    reason: str
    outcome: str
    logged: bool = False  # a refusal worth a log line (a replayed pair is said once)
    app_id: str | None = None  # a refusal's app, when one of the spec set's (`CallbackRejected.app_id`)
    event: CallbackEvent | None = None
    task_key: str | None = None  # the key whose current run the callback is about
    woken: tuple[str, ...] = ()  # keys capturing a room where someone joined or a stream appeared
    emptied: tuple[str, ...] = ()  # keys capturing a room whose last user we saw join has left
    # The callback says its room was entered or emptied, but a newer contrary callback of the room was seen
    # already (`roomorder`): it wakes nothing, empties nothing, and its room hints are ignored.
    stale: bool = False
    # When a standby stored it in the inbox (its `received_at`), for one the leader claims from there; None:
    # received now. Room activity older than a task's last start wakes nothing of it (`Reconciler.wake`).
    received_at: float | None = None


class CallbackRouter:
    def __init__(
        self,
        records: RecordCache,
        metrics: Metrics,
        clock: Clock | None = None,
        *,
        room_memory: int = ROOM_USERS_MEMORY,
    ) -> None:
        self._records = records
        self._metrics = metrics
        self._clock = clock or SystemClock()
        # One `callback rejected` line a minute per vendor, app and status: whoever reaches the route must not
        # decide the log's volume (a flood of forged callbacks); the metric counts every refusal. The app is
        # one the spec set declares, or None (`CallbackRejected.app_id`): a forger cannot add lines by app ids.
        self._said: dict[tuple[str, str | None, int], Throttle] = {}
        self._deduper = Deduper()
        self._replays = ReplayGuard()
        self._rooms: dict[Room, list[str]] = {}  # room -> keys
        # users seen joining and not yet leaving, least recently changed room first
        self._room_users: OrderedDict[Room, set[str]] = OrderedDict()
        self._room_memory = room_memory
        self._order = RoomOrder()

    @staticmethod
    def knows(vendor: str) -> bool:
        return vendor_named(vendor) is not None

    def index(self, spec: SpecSet) -> None:
        """A new spec set: which keys capture which room."""
        self._rooms = {}
        for task in spec.tasks.values():
            config = spec.providers[task.provider]
            self._rooms.setdefault((config.type, config.app_id, task.target), []).append(task.key)

    def route(self, vendor: str, body: bytes, providers: Iterable[ProviderConfig], now: float) -> RoutedCallback:
        """Verify, deduplicate and translate one webhook of a known `vendor` (see `knows`); counted by outcome."""
        routed = self._route(vendor, body, providers, now)
        self._metrics.counter(self._metrics.callbacks, vendor, routed.outcome).inc()
        if routed.logged:
            self._warn(vendor, routed.status, routed.reason, routed.app_id)
        return routed

    def refuse(self, vendor: str, status: int, reason: str) -> tuple[int, str]:
        """A callback refused before it could be verified (no valid spec set yet): counted and logged as any."""
        self.count(vendor, "rejected")
        self._warn(vendor, status, reason)
        return status, reason

    def _warn(self, vendor: str, status: int, reason: str, app_id: str | None = None) -> None:
        held = self._said.setdefault((vendor, app_id, status), Throttle(self._clock)).allow()
        if held is not None:
            about = {"app_id": app_id} if app_id is not None else {}
            repeats = {"repeats_held_back": held} if held else {}
            log.warning("callback rejected", vendor=vendor, **about, status=status, reason=reason, **repeats)

    def _route(self, vendor: str, body: bytes, providers: Iterable[ProviderConfig], now: float) -> RoutedCallback:
        found = vendor_named(vendor)
        assert found is not None, "route() of an unknown vendor"
        try:
            event = found.parse_callback()(body, providers, now)
            first = self._replays.first_time(event, now)
        except CallbackRejected as exc:
            return RoutedCallback(exc.status, exc.reason, "rejected", logged=exc.logged, app_id=exc.app_id)
        if not first:
            return RoutedCallback(200, "duplicate: already accepted", "duplicate")
        return self._translate(event)

    def count(self, vendor: str, outcome: str) -> None:
        """Count a callback whose outcome was decided elsewhere (a standby's inbox: `stored`)."""
        self._metrics.counter(self._metrics.callbacks, vendor, outcome).inc()

    def verify(self, vendor: str, body: bytes, providers: Iterable[ProviderConfig], now: float) -> CallbackEvent:
        """Only verify and parse (a standby, which stores the event for the leader); raises CallbackRejected.
        A vendor's exact retry passes: the inbox keeps one entry per callback, and a retry after a failed
        store must be stored. A refusal is counted and logged as `route` does."""
        found = vendor_named(vendor)
        assert found is not None, "verify() of an unknown vendor"
        try:
            event = found.parse_callback()(body, providers, now)
            # Known, not acted on: a retry of a callback refused 503 (the inbox down) is no duplicate once this
            # replica leads (walk 60f-3: the vendor's last retry was answered `duplicate` and the room never heard).
            self._replays.first_time(event, now, acted=False)
        except CallbackRejected as exc:
            self.count(vendor, "rejected")
            if exc.logged:
                self._warn(vendor, exc.status, exc.reason, exc.app_id)
            raise
        return event

    def route_event(self, event: CallbackEvent) -> RoutedCallback:
        """An event verified elsewhere (the inbox: a standby verified it): deduplicated and translated."""
        routed = self._translate(event)
        self.count(event.vendor, routed.outcome)
        return routed

    def _translate(self, event: CallbackEvent) -> RoutedCallback:
        if not self._deduper.first_time(event.dedupe_key):
            return RoutedCallback(200, "duplicate: already accepted", "duplicate")
        record = self._records.by_vendor_id(event.run_id) if event.run_id is not None else None
        task_key = record.key if record else None
        if event.room_id is None:
            return RoutedCallback(200, "accepted", "accepted", event=event, task_key=task_key)
        room = (event.vendor, event.app_id, event.room_id)
        waking = event.room_active or event.room_entered
        if (waking or event.room_left or event.room_closed or event.room_empty) and not self._order.news(
            room, event.at, opening=waking, closes_room=event.room_closed
        ):
            return RoutedCallback(200, "accepted", "accepted", event=event, task_key=task_key, stale=True)
        woken = tuple(self._rooms.get(room, ())) if waking else ()
        emptied: tuple[str, ...] = ()
        if event.room_closed or (event.user_id is not None and (event.room_active or event.room_left)):
            emptied = self._track_users(room, event)
        account = account_of(event.vendor, event.app_id)
        if event.room_active:  # the status page's room timeline
            self._records.history.room_active(account, event.room_id)
        elif event.room_empty or event.room_closed or emptied:  # a close ends it whoever was seen (ZEGO names none)
            self._records.history.room_idle(account, event.room_id)
        return RoutedCallback(200, "accepted", "accepted", event=event, task_key=task_key, woken=woken, emptied=emptied)

    def _track_users(self, room: Room, event: CallbackEvent) -> tuple[str, ...]:
        """Volcengine has no task-stopped callback: when the last user we saw join (or start a stream) leaves
        (or stops it), or the room closes, the room's runs will idle out one idle timeout from now. A user who
        joined before we started is unknown: their leave also counts as the room emptying (a few extra polls)."""
        if event.room_closed:  # nobody is left, whoever we saw (ZEGO's room callbacks name no user to track)
            self._room_users.pop(room, None)
            return tuple(self._rooms.get(room, ()))  # a repeat after the last leave: `_emptied` skips it
        users = self._room_users.setdefault(room, set())
        self._room_users.move_to_end(room)
        if event.room_active:
            users.add(event.user_id or "")
            if len(self._room_users) > self._room_memory:
                self._room_users.popitem(last=False)
            return ()
        users.discard(event.user_id or "")
        if users:
            return ()
        del self._room_users[room]
        return tuple(self._rooms.get(room, ()))


class Deduper:
    """Remembers the last `size` callback ids: a vendor's retry of a delivered callback is acted on once."""

    def __init__(self, size: int = DEDUPE_SIZE) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first_time(self, key: str) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


@dataclass(slots=True)
class _Signed:
    expires: float  # daemon time after which the pair fails the time check anyway
    digest: str
    warned: bool = False
    acted: bool = True  # routed (acted on) here; False: only verified, for the inbox (a standby)


class ReplayGuard:
    """The ZEGO (timestamp, nonce) pairs seen within the time window (named by their signature), each with the
    digest of its body.

    The same pair with the same body is the vendor's retry (answered as a duplicate); with another body it
    is a captured signature put on a forged body: refused with 409, logged once per pair. Memory is bounded
    twice: a pair is forgotten when its time leaves the MAX_SKEW window (it would be refused as stale), and
    at most `size` pairs are kept (the oldest forgotten first). A pair forgotten early by the cap is no
    longer recognised; its callback is still only a hint that the controller checks against the vendor.
    """

    def __init__(self, size: int = REPLAY_MEMORY, window: float = MAX_SKEW) -> None:
        self._seen: OrderedDict[str, _Signed] = OrderedDict()
        self._size = size
        self._window = window

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, event: CallbackEvent, now: float, *, acted: bool = True) -> bool:
        """True for a pair not acted on yet, False for an exact repeat of one that was; raises CallbackRejected for
        a replay. `acted=False`: only verified (a standby's inbox, whose store may fail and the vendor retry)."""
        if event.signed_pair is None:
            return True
        # Lazy expiry from the oldest arrival: times in the window differ by at most 2 × MAX_SKEW, so an
        # expired pair waits at most that long behind a younger one (and the cap bounds it meanwhile).
        while self._seen and next(iter(self._seen.values())).expires < now:
            self._seen.popitem(last=False)
        seen = self._seen.get(event.signed_pair)
        if seen is None:
            self._seen[event.signed_pair] = _Signed(
                event.at + self._window + _RECUT_SLACK, event.body_digest, acted=acted
            )
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True
        if seen.digest == event.body_digest:
            first, seen.acted = not seen.acted, seen.acted or acted
            return first
        logged, seen.warned = not seen.warned, True
        raise CallbackRejected(
            409,
            "replayed signature: this signature already signed a different callback body (ZEGO signs a timestamp"
            " and nonce, not the body; the same signature is the same pair, however its digits are split)",
            logged=logged,
            app_id=event.app_id,
        )
