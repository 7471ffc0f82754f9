"""Volcengine webhooks, parsed and verified (see `callbacks` for what every vendor's parser shares).

Volcengine signs the whole callback (`volc_signing.verify_callback`); the events capctl uses are
`SnapshotRealTimeData` (an image was taken), `UserJoinRoom`, `UserLeaveRoom`, `RoomDestroy` and the stream
events `User{Video,Audio}Stream{Start,Stop}` (names and `EventData {RoomId, UserId, Timestamp}` corroborated
by a public BytePlus integration, the vendor's own page not retrieved: docs/providers-volcengine.md). A join
and each stream start are separate signals that people are in the room, so a capture waits for the earliest
of them rather than for one that may be late or lost. It has no task-stopped callback: the daemon infers a
stop from the room emptying.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.jsonlimits import load_json
from reconciler.model import ProviderConfig
from reconciler.providers import volc_signing
from reconciler.providers.callbacks import (
    CallbackEvent,
    CallbackRejected,
    Signing,
    of_app,
    room_text,
    text,
    verified,
)

__all__ = ["STREAM_STARTS", "STREAM_STOPS", "VENDOR", "parse_volcengine"]

VENDOR = "volcengine"
# A user's main stream went up / down: as telling as the user's join / leave (docs/providers-volcengine.md).
STREAM_STARTS = frozenset({"UserVideoStreamStart", "UserAudioStreamStart"})
STREAM_STOPS = frozenset({"UserVideoStreamStop", "UserAudioStreamStop"})
# Where its callback keeps the app id, signature and time (`callbacks.verified`).
SIGNING = Signing(
    VENDOR, ("AppId",), "Signature", "EventTime", lambda data, s: volc_signing.verify_callback(data, s.reveal())
)


def parse_volcengine(body: bytes, providers: Iterable[ProviderConfig], now: float) -> CallbackEvent:
    """A Volcengine webhook (`{EventType, EventData, EventTime, EventId, AppId, Version, Nonce, Signature}`)."""
    data, app_id, at = verified(body, providers, now, SIGNING)
    event_type, event_id = text(data, "EventType") or "", text(data, "EventId")
    raw = data.get("EventData")
    with of_app(app_id):
        if event_id is None:
            # Signed as "" (or an object): every such callback would share one dedupe key, and all but the
            # first were answered "duplicate: already accepted" and dropped without a word.
            raise CallbackRejected(400, "malformed callback: EventId is empty or not text (what names a callback)")
        try:
            event_data = load_json(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise CallbackRejected(400, f"malformed callback: EventData is not JSON ({exc})") from None
        if not isinstance(event_data, dict):
            raise CallbackRejected(400, "malformed callback: EventData is not a JSON object")
        task_id, room_id = text(event_data, "TaskId"), room_text(event_data, "RoomId", VENDOR)
    return CallbackEvent(
        vendor=VENDOR,
        app_id=app_id,
        event=event_type,
        dedupe_key=f"volc:{app_id}:{event_id}",
        at=at,
        task_id=task_id,
        room_id=room_id,
        output=event_type == "SnapshotRealTimeData",
        room_active=event_type == "UserJoinRoom" or event_type in STREAM_STARTS,
        room_left=event_type == "UserLeaveRoom" or event_type in STREAM_STOPS,
        room_closed=event_type == "RoomDestroy",
        user_id=text(event_data, "UserId"),
        run_id=None if task_id is None else (VENDOR, app_id, room_id or "", task_id),
    )
