"""ZEGO request and callback signing, as pure functions.

Kept apart from the HTTP code so the vendor's published vectors can test the signing alone, and so the
daemon can verify cloud-recording callbacks without importing a provider. Nothing here reads the clock or
the OS random source directly: callers pass the time and a `RandomBytes` source (tests pass a fixed one).

- Signature 2.0 (every server API call): query params `AppId`, `SignatureNonce`, `Timestamp`,
  `SignatureVersion=2.0`, `Signature = md5(str(AppId) + nonce + secret + str(Timestamp))`.
- Legacy cloud recording `POST /access_token` body: `{app_id, seq, token, version: 1}` where `token` is
  base64 of `{"ver": 1, "hash": md5(str(app_id) + secret + nonce + str(expired)), "nonce", "expired"}`.
- Cloud-recording callbacks: `signature = sha1("".join(sorted([secret, timestamp, nonce])))`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.secrets import Secret

__all__ = [
    "LEGACY_TOKEN_LIFETIME",
    "SIGNATURE_VERSION",
    "RandomBytes",
    "access_token_request",
    "callback_signature",
    "legacy_token",
    "new_nonce",
    "signature",
    "signature_params",
    "verify_callback",
]

RandomBytes = Callable[[int], bytes]
"""`os.urandom`-shaped: n -> n random bytes."""

SIGNATURE_VERSION = "2.0"
LEGACY_TOKEN_LIFETIME = 3600  # seconds; vendor-apis.md: `expired` = now + 1 h


def new_nonce(random_bytes: RandomBytes = os.urandom) -> str:
    """16 lowercase hex chars from 8 random bytes (fresh per request)."""
    return random_bytes(8).hex()


def signature(app_id: int, nonce: str, secret: str, timestamp: int) -> str:
    """Signature 2.0: lowercase hex md5(str(AppId) + nonce + secret + str(timestamp))."""
    return hashlib.md5(f"{app_id}{nonce}{secret}{timestamp}".encode()).hexdigest()


def signature_params(app_id: int, secret: str, now: float, random_bytes: RandomBytes = os.urandom) -> dict[str, str]:
    """The common query parameters of one signed request (a fresh nonce each call)."""
    nonce = new_nonce(random_bytes)
    timestamp = int(now)
    return {
        "AppId": str(app_id),
        "SignatureNonce": nonce,
        "Timestamp": str(timestamp),
        "SignatureVersion": SIGNATURE_VERSION,
        "Signature": signature(app_id, nonce, secret, timestamp),
    }


def legacy_token(app_id: int, secret: str, nonce: str, expired: int) -> str:
    """The `token` field of a legacy `/access_token` request: standard base64 (padded) of compact JSON."""
    digest = hashlib.md5(f"{app_id}{secret}{nonce}{expired}".encode()).hexdigest()
    payload = {"ver": 1, "hash": digest, "nonce": nonce, "expired": expired}
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def access_token_request(
    app_id: int,
    secret: str,
    now: float,
    *,
    seq: int,
    random_bytes: RandomBytes = os.urandom,
    lifetime: int = LEGACY_TOKEN_LIFETIME,
) -> dict[str, Any]:
    """The JSON body of `POST {legacy endpoint}/access_token`. Lower-case keys, integers as integers."""
    token = legacy_token(app_id, secret, new_nonce(random_bytes), int(now) + lifetime)
    return {"app_id": app_id, "seq": seq, "token": token, "version": 1}


def callback_signature(secret: str, timestamp: str, nonce: str) -> str:
    """Cloud-recording callback signature: lowercase hex sha1 of [secret, timestamp, nonce] sorted."""
    return hashlib.sha1("".join(sorted([secret, timestamp, nonce])).encode()).hexdigest()


def verify_callback(payload: Mapping[str, Any], secret: str | Secret) -> bool:
    """True when a callback body's `signature` matches its `timestamp` and `nonce` (constant time).

    Numbers are accepted as their decimal text (vendors send `timestamp` either way). A payload that
    lacks a field, or carries a non-text signature, is simply not verified.
    """
    fields = [payload.get("timestamp"), payload.get("nonce"), payload.get("signature")]
    if any(v is None or isinstance(v, bool) or not isinstance(v, str | int) for v in fields):
        return False
    timestamp, nonce, given = (str(v) for v in fields)
    key = secret.reveal() if isinstance(secret, Secret) else secret
    expected = callback_signature(key, timestamp, nonce)
    return hmac.compare_digest(expected.encode(), given.lower().encode())
