"""ZEGO webhooks, parsed and verified (see `callbacks` for what every vendor's parser shares).

Cloud recording (`event_type`), thumbnails (`event: snapshot`) and room streams all arrive here.
ZEGO's signature covers only the timestamp and nonce, not the body (the vendor's design), so each event
carries its signed pair and a digest of its body: the daemon's `ReplayGuard` answers an exact repeat as
the vendor's retry and refuses the pair with another body.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler import stopreasons
from reconciler.model import ProviderConfig
from reconciler.providers import zego_signing
from reconciler.providers.callbacks import CallbackEvent, Signing, of_app, room_text, text, verified
from reconciler.providers.zego_client import QUIT_MAX_DURATION, quit_stop_reason
from reconciler.stopreasons import Phrase

__all__ = [
    "ABNORMAL_END",
    "ENTRY_EVENTS",
    "NORMAL_EXIT",
    "STOPPED_UPLOADING",
    "STREAM_EVENTS",
    "UPLOAD_FINISHED",
    "VENDOR",
    "ZERO_STREAMS",
    "callback_stop_reason",
    "parse_zego",
]

VENDOR = "zego"
# Where its callback keeps the app id, signature and time (`callbacks.verified`).
SIGNING = Signing(VENDOR, ("app_id", "appid"), "signature", "timestamp", zego_signing.verify_callback)
# Cloud-recording event_type values (vendor-apis.md, "Cloud-recording callbacks").
UPLOAD_FINISHED, ABNORMAL_END, ZERO_STREAMS, NORMAL_EXIT, STOPPED_UPLOADING = 1, 2, 4, 5, 7
# UNCONFIRMED (not in vendor-apis.md): ZEGO's room-stream webhook names a new stream `event: stream_create`.
STREAM_EVENTS = frozenset({"stream_create"})
ENTRY_EVENTS = frozenset({"room_create", "room_login"})  # a user is in the room: a stream may follow


def callback_stop_reason(event_type: int, quit_reason: object) -> str | None:
    """Why a cloud-recording callback says the run ended, or None when the event is not an end."""
    code = stopreasons.vendor_code(quit_reason)
    if event_type == ABNORMAL_END and code is not None:
        return quit_stop_reason(code)
    if event_type in (ABNORMAL_END, NORMAL_EXIT, STOPPED_UPLOADING):
        return stopreasons.stop_reason(Phrase.ENDED, f"ZEGO event_type {event_type}")
    return None


def _digest(data: Mapping[str, Any]) -> str:
    """The body as signed, key order and spacing aside; the signature is left out (it follows from the pair)."""
    canonical = json.dumps({k: v for k, v in data.items() if k != "signature"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_zego(body: bytes, providers: Iterable[ProviderConfig], now: float) -> CallbackEvent:
    """A ZEGO webhook: cloud recording (`event_type`), thumbnails (`event: snapshot`) or room streams."""
    data, app_id, at = verified(body, providers, now, SIGNING)
    # The pair is named by its signature, not by its timestamp and nonce: the signature covers their sorted
    # concatenation, which another cut between the two (`1796…834` + `567` for `1796…` + `834567`) gives too.
    # Lower case: the check ignores case, so `ABC…` would otherwise be another pair. Hashed: it signs for 300 s.
    signed = hashlib.sha256(str(data.get("signature")).lower().encode()).hexdigest()
    pair, digest = f"{app_id}:{signed}", _digest(data)
    with of_app(app_id):
        room_id = room_text(data, "room_id", VENDOR)
    task_id = text(data, "task_id")
    run_id = None if task_id is None else (VENDOR, task_id)
    event_type = data.get("event_type")
    if isinstance(event_type, int) and not isinstance(event_type, bool):
        detail = data.get("detail")
        quit_reason = detail.get("quit_reason") if isinstance(detail, dict) else None
        sequence = text(data, "sequence") or f"{data.get('nonce')}:{at}"
        return CallbackEvent(
            vendor=VENDOR,
            app_id=app_id,
            event=f"event_type {event_type}",
            dedupe_key=f"zego:{app_id}:{task_id}:{sequence}",
            at=at,
            task_id=task_id,
            room_id=room_id,
            output=event_type in (UPLOAD_FINISHED, STOPPED_UPLOADING),
            ended=event_type in (ABNORMAL_END, NORMAL_EXIT, STOPPED_UPLOADING),
            rollover=event_type == ABNORMAL_END and quit_reason == QUIT_MAX_DURATION,
            room_empty=event_type == ZERO_STREAMS,
            end_reason=callback_stop_reason(event_type, quit_reason),
            signed_pair=pair,
            body_digest=digest,
            run_id=run_id,
        )
    event = text(data, "event") or "unknown"
    return CallbackEvent(
        vendor=VENDOR,
        app_id=app_id,
        event=event,
        dedupe_key=f"zego:{app_id}:{event}:{task_id or room_id}:{data.get('nonce')}:{at}",
        at=at,
        task_id=task_id,
        room_id=room_id,
        room_active=event in STREAM_EVENTS,
        room_closed=event == "room_close",
        signed_pair=pair,
        body_digest=digest,
        run_id=run_id,
        room_entered=event in ENTRY_EVENTS,
    )
