"""The vendors' signature algorithms, written from vendor-apis.md without looking at the providers.

The simulator recomputes every request signature and signs every callback with these functions. They are
checked in tests against the official Volcengine SDK signer and the documented ZEGO vectors, so a bug shared
with the providers' own signing cannot hide.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

__all__ = [
    "constant_time_equal",
    "decode_legacy_token",
    "make_legacy_token",
    "parse_volc_authorization",
    "volc_callback_signature",
    "volc_is_signable_header",
    "volc_signature",
    "zego_callback_signature",
    "zego_legacy_token_hash",
    "zego_signature",
]

# --- Volcengine HMAC-SHA256 "V4" ---------------------------------------------------------------------

_SIGNED_HEADER_NAMES = frozenset({"content-type", "content-md5", "host"})


def volc_is_signable_header(name: str) -> bool:
    """The SDK signs Content-Type, Content-Md5, Host and every X-* header."""
    lower = name.lower()
    return lower in _SIGNED_HEADER_NAMES or lower.startswith("x-")


@functools.lru_cache(maxsize=4096)  # a client sends the same queries again and again (each API, each task polled)
def volc_canonical_query(raw_query: str) -> str:
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    parts = [
        f"{quote(key, safe='-_.~')}={quote(value, safe='-_.~')}" for key in sorted(grouped) for value in grouped[key]
    ]
    return "&".join(parts).replace("+", "%20")


def _strip_default_port(host: str) -> str:
    name, sep, port = host.rpartition(":")
    return name if sep and port in ("80", "443") else host


@functools.lru_cache(maxsize=64)  # the same for every request of a day: four HMACs each
def volc_signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(secret_key.encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def volc_signature(
    *,
    secret_key: str,
    method: str,
    path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    x_date: str,
    region: str,
    service: str,
) -> str:
    """Hex signature over `headers` (already restricted to the signed ones; names in any case)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "host" in lowered:
        lowered["host"] = _strip_default_port(lowered["host"])
    names = sorted(lowered)
    canonical_headers = "".join(f"{n}:{lowered[n]}\n" for n in names)
    body_hash = hashlib.sha256(body).hexdigest()
    canonical_request = "\n".join(
        [
            method.upper(),
            quote(path or "/", safe="/").replace("+", "%20"),
            volc_canonical_query(raw_query),
            canonical_headers,
            ";".join(names),
            body_hash,
        ]
    )
    date = x_date[:8]
    string_to_sign = "\n".join(
        [
            "HMAC-SHA256",
            x_date,
            f"{date}/{region}/{service}/request",
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = volc_signing_key(secret_key, date, region, service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class VolcAuthorization:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_volc_authorization(value: str) -> VolcAuthorization | None:
    """Parse `HMAC-SHA256 Credential=AK/date/region/service/request, SignedHeaders=a;b, Signature=hex`."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != "HMAC-SHA256":
        return None
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return None
        fields[key] = val
    try:
        credential = fields["Credential"].split("/")
        signed = tuple(h for h in fields["SignedHeaders"].split(";") if h)
        signature = fields["Signature"]
    except KeyError:
        return None
    if len(credential) != 5 or credential[4] != "request" or not signed or not signature:
        return None
    return VolcAuthorization(credential[0], credential[1], credential[2], credential[3], signed, signature)


def volc_callback_signature(fields: list[str], secret: str) -> str:
    """Sorted-string concatenation of the event values plus the secret, SHA-256, lowercase hex.

    UNCONFIRMED (vendor-apis.md): the final encoding; the simulator uses lowercase hex.
    """
    return hashlib.sha256("".join(sorted([*fields, secret])).encode()).hexdigest()


# --- ZEGO ---------------------------------------------------------------------------------------------


def zego_signature(app_id: int | str, nonce: str, server_secret: str, timestamp: int | str) -> str:
    """Signature 2.0: md5(AppId + SignatureNonce + ServerSecret + Timestamp), lowercase hex."""
    return hashlib.md5(f"{app_id}{nonce}{server_secret}{timestamp}".encode()).hexdigest()


def zego_callback_signature(secret: str, timestamp: int | str, nonce: str) -> str:
    """sha1 of [callback secret, timestamp, nonce] sorted as strings and concatenated."""
    return hashlib.sha1("".join(sorted([secret, str(timestamp), nonce])).encode()).hexdigest()


def zego_legacy_token_hash(app_id: int, server_secret: str, nonce: str, expired: int) -> str:
    return hashlib.md5(f"{app_id}{server_secret}{nonce}{expired}".encode()).hexdigest()


@dataclass(frozen=True)
class LegacyToken:
    hash: str
    nonce: str
    expired: int


def decode_legacy_token(token: str) -> LegacyToken | None:
    """The legacy /access_token `token`: base64 of JSON {ver: 1, hash, nonce, expired}."""
    try:
        decoded = json.loads(base64.b64decode(token, validate=True))
    except (ValueError, TypeError):
        return None
    if not isinstance(decoded, dict) or decoded.get("ver") != 1:
        return None
    h, nonce, expired = decoded.get("hash"), decoded.get("nonce"), decoded.get("expired")
    if not isinstance(h, str) or not isinstance(nonce, str) or type(expired) is not int:
        return None
    return LegacyToken(h, nonce, expired)


def make_legacy_token(app_id: int, server_secret: str, nonce: str, expired: int) -> str:
    """Build a legacy token as a client would (used by tests and docs examples)."""
    payload = {
        "ver": 1,
        "hash": zego_legacy_token_hash(app_id, server_secret, nonce, expired),
        "nonce": nonce,
        "expired": expired,
    }
    return base64.b64encode(json.dumps(payload).encode()).decode()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
