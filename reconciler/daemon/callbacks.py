"""Vendor webhooks turned into small, verified events; everything that is not verified is refused.

A callback is parsed, matched to a Provider by its app id, checked against that Provider's
callbackSecret with the vendor's own signature scheme (the providers' signing modules), and refused when
its time is more than `MAX_SKEW` from the daemon's clock, so a captured callback cannot be replayed later.
ZEGO's signature covers only the timestamp and nonce, not the body (the vendor's design), so within that
window one captured signature would sign any body: `ReplayGuard` remembers each signed pair with a digest
of its body, answers an exact repeat as the vendor's retry and refuses the pair with another body.
What comes out is only a hint: the controller enqueues the keys it names and re-reads the truth itself.
No secret, signature or raw body ever enters an error message.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler import stopreasons
from reconciler.daemon.bodies import load_json
from reconciler.model import ProviderConfig
from reconciler.providers import volc_signing, zego_signing
from reconciler.secrets import Secret

VOLC, ZEGO = "volcengine", "zego"
MAX_SKEW = 300.0  # seconds between a callback's own time and the daemon clock
DEDUPE_SIZE = 50_000  # callback ids remembered (vendors retry twice within seconds)
# ZEGO (timestamp, nonce) pairs remembered; each is forgotten once its time is outside MAX_SKEW (it cannot
# pass the time check again), the oldest first when there are more (about 200 bytes each: ≤ 25 MB).
REPLAY_MEMORY = 100_000

# ZEGO cloud-recording event_type values (vendor-apis.md, "Cloud-recording callbacks").
ZEGO_UPLOAD_FINISHED, ZEGO_ABNORMAL_END, ZEGO_ZERO_STREAMS, ZEGO_NORMAL_EXIT, ZEGO_STOPPED_UPLOADING = 1, 2, 4, 5, 7
# UNCONFIRMED (not in vendor-apis.md): ZEGO's room-stream webhook names a new stream `event: stream_create`.
ZEGO_STREAM_EVENTS = frozenset({"stream_create"})


class CallbackRejected(Exception):
    """The callback is refused with HTTP `status`; `reason` is safe to send back and to log."""

    def __init__(self, status: int, reason: str, *, logged: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.logged = logged  # False: the same refusal was already logged once; say it only once


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """What a verified callback tells the controller. Flags, because one event may say several things."""

    vendor: str
    app_id: str
    event: str
    dedupe_key: str
    at: float
    task_id: str | None = None
    room_id: str | None = None
    output: bool = False  # the run produced something (an image, an uploaded file)
    ended: bool = False  # the vendor says the run ended: look now
    rollover: bool = False  # it ended at its max duration
    room_active: bool = False  # someone joined / a stream appeared: wake dormant tasks of the room
    room_empty: bool = False  # the room has no stream: the task will idle out one idle timeout from now
    room_left: bool = False  # a user left the room (Volcengine UserLeaveRoom): it may now be empty
    user_id: str | None = None  # who joined or left
    end_reason: str | None = None  # why the run ended, when the vendor said so (stopreasons.zego_callback)
    signed_pair: str | None = None  # ZEGO: app id, timestamp and nonce, all its signature covers
    body_digest: str = ""  # ZEGO: sha256 of the body (signature aside), to tell a retry from a replay


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = load_json(body)
    except ValueError as exc:
        raise CallbackRejected(400, str(exc)) from None
    if not isinstance(data, dict):
        raise CallbackRejected(400, f"malformed callback: expected a JSON object, got {type(data).__name__}")
    return data


def _secrets(providers: Iterable[ProviderConfig], vendor: str, app_id: str) -> list[Secret]:
    matching = [p for p in providers if p.type == vendor and p.app_id == app_id]
    secrets = [p.callback_secret for p in matching if isinstance(p.callback_secret, Secret)]
    if not secrets:
        what = "no Provider" if not matching else "no Provider with a callbackSecret"
        raise CallbackRejected(401, f"{what} for {vendor} app id {app_id!r}: cannot verify the callback")
    return secrets


def _check_time(at: float, now: float) -> None:
    skew = at - now
    if abs(skew) > MAX_SKEW:
        side = "ahead of" if skew > 0 else "behind"
        raise CallbackRejected(
            401,
            f"stale callback: its time is {abs(skew):.0f} s {side} the daemon clock (at most {MAX_SKEW:.0f} s allowed)",
        )


def _event_time(value: Any, field: str) -> float:
    """Unix seconds from ISO 8601 text, or from a number of seconds or milliseconds."""
    if isinstance(value, bool):
        raise CallbackRejected(400, f"malformed callback: {field} is not a time")
    if isinstance(value, int | float):
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, str):
        if value.isdigit():
            return _event_time(int(value), field)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise CallbackRejected(400, f"malformed callback: {field} {value[:40]!r} is not a time") from None
        if parsed.tzinfo is None:
            raise CallbackRejected(400, f"malformed callback: {field} {value[:40]!r} has no time zone")
        return parsed.timestamp()
    raise CallbackRejected(400, f"malformed callback: {field} is missing")


def _text(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def parse_volcengine(body: bytes, providers: Iterable[ProviderConfig], now: float) -> CallbackEvent:
    """A Volcengine webhook (`{EventType, EventData, EventTime, EventId, AppId, Version, Nonce, Signature}`)."""
    data = _json_object(body)
    app_id = _text(data, "AppId")
    if app_id is None:
        raise CallbackRejected(400, "malformed callback: AppId is missing")
    secrets = _secrets(providers, VOLC, app_id)
    if not isinstance(data.get("Signature"), str):
        raise CallbackRejected(401, "missing Signature")
    if not any(volc_signing.verify_callback(data, s.reveal()) for s in secrets):
        raise CallbackRejected(401, "bad signature (check the Provider's callbackSecret)")
    at = _event_time(data.get("EventTime"), "EventTime")
    _check_time(at, now)
    event_type, event_id = _text(data, "EventType") or "", _text(data, "EventId") or ""
    raw = data.get("EventData")
    try:
        event_data = load_json(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise CallbackRejected(400, f"malformed callback: EventData is not JSON ({exc})") from None
    if not isinstance(event_data, dict):
        raise CallbackRejected(400, "malformed callback: EventData is not a JSON object")
    return CallbackEvent(
        vendor=VOLC,
        app_id=app_id,
        event=event_type,
        dedupe_key=f"volc:{app_id}:{event_id}",
        at=at,
        task_id=_text(event_data, "TaskId"),
        room_id=_text(event_data, "RoomId"),
        output=event_type == "SnapshotRealTimeData",
        room_active=event_type == "UserJoinRoom",
        room_left=event_type == "UserLeaveRoom",
        user_id=_text(event_data, "UserId"),
    )


def _digest(data: Mapping[str, Any]) -> str:
    """The body as signed, key order and spacing aside; the signature is left out (it follows from the pair)."""
    canonical = json.dumps({k: v for k, v in data.items() if k != "signature"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_zego(body: bytes, providers: Iterable[ProviderConfig], now: float) -> CallbackEvent:
    """A ZEGO webhook: cloud recording (`event_type`), thumbnails (`event: snapshot`) or room streams."""
    data = _json_object(body)
    app_id = _text(data, "app_id") or _text(data, "appid")
    if app_id is None:
        raise CallbackRejected(400, "malformed callback: app_id is missing")
    secrets = _secrets(providers, ZEGO, app_id)
    if data.get("signature") is None:
        raise CallbackRejected(401, "missing signature")
    if not any(zego_signing.verify_callback(data, s) for s in secrets):
        raise CallbackRejected(401, "bad signature (check the Provider's callbackSecret)")
    at = _event_time(data.get("timestamp"), "timestamp")
    _check_time(at, now)
    pair, digest = f"{app_id}:{data.get('timestamp')}:{data.get('nonce')}", _digest(data)
    task_id, room_id = _text(data, "task_id"), _text(data, "room_id")
    event_type = data.get("event_type")
    if isinstance(event_type, int) and not isinstance(event_type, bool):
        detail = data.get("detail")
        quit_reason = detail.get("quit_reason") if isinstance(detail, dict) else None
        sequence = _text(data, "sequence") or f"{data.get('nonce')}:{at}"
        return CallbackEvent(
            vendor=ZEGO,
            app_id=app_id,
            event=f"event_type {event_type}",
            dedupe_key=f"zego:{app_id}:{task_id}:{sequence}",
            at=at,
            task_id=task_id,
            room_id=room_id,
            output=event_type in (ZEGO_UPLOAD_FINISHED, ZEGO_STOPPED_UPLOADING),
            ended=event_type in (ZEGO_ABNORMAL_END, ZEGO_NORMAL_EXIT, ZEGO_STOPPED_UPLOADING),
            rollover=event_type == ZEGO_ABNORMAL_END and quit_reason == stopreasons.ZEGO_QUIT_MAX_DURATION,
            room_empty=event_type == ZEGO_ZERO_STREAMS,
            end_reason=stopreasons.zego_callback(event_type, quit_reason),
            signed_pair=pair,
            body_digest=digest,
        )
    event = _text(data, "event") or "unknown"
    return CallbackEvent(
        vendor=ZEGO,
        app_id=app_id,
        event=event,
        dedupe_key=f"zego:{app_id}:{event}:{task_id or room_id}:{data.get('nonce')}:{at}",
        at=at,
        task_id=task_id,
        room_id=room_id,
        room_active=event in ZEGO_STREAM_EVENTS,
        signed_pair=pair,
        body_digest=digest,
    )


PARSERS = {VOLC: parse_volcengine, ZEGO: parse_zego}


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


class ReplayGuard:
    """The ZEGO (timestamp, nonce) pairs seen within the time window, each with the digest of its body.

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

    def first_time(self, event: CallbackEvent, now: float) -> bool:
        """True for a pair not seen yet, False for an exact repeat; raises CallbackRejected for a replay."""
        if event.signed_pair is None:
            return True
        # Lazy expiry from the oldest arrival: times in the window differ by at most 2 × MAX_SKEW, so an
        # expired pair waits at most that long behind a younger one (and the cap bounds it meanwhile).
        while self._seen and next(iter(self._seen.values())).expires < now:
            self._seen.popitem(last=False)
        seen = self._seen.get(event.signed_pair)
        if seen is None:
            self._seen[event.signed_pair] = _Signed(event.at + self._window, event.body_digest)
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True
        if seen.digest == event.body_digest:
            return False
        logged, seen.warned = not seen.warned, True
        raise CallbackRejected(
            409,
            "replayed signature: this timestamp and nonce already signed a different callback body",
            logged=logged,
        )
