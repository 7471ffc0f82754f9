"""Volcengine request signing (HMAC-SHA256 "V4") and webhook signatures, as pure functions.

Kept apart from the provider so the arithmetic can be checked byte for byte against the documented
vector and the official `volcengine` SDK, with no I/O and no clock: the caller passes the time in.
The rules are those of shared/vendor-apis.md ("Request signing", "Callbacks").
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = ["ALGORITHM", "canonical_query", "sign_callback", "sign_request", "verify_callback"]

ALGORITHM = "HMAC-SHA256"
_SIGNED_NAMES = frozenset({"content-type", "content-md5", "host"})
_DEFAULT_PORTS = ("80", "443")
# The callback fields that enter the signature, besides the secret; "Noce" is an older spelling of Nonce.
_CALLBACK_FIELDS = ("EventType", "EventData", "EventTime", "EventId", "AppId", "Version")


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _quote(text: str) -> str:
    return quote(text, safe="-_.~").replace("+", "%20")


@functools.lru_cache(maxsize=16384)
def canonical_query(query: str) -> str:
    """Keys sorted (repeated keys keep their order), keys and values percent-quoted with `-_.~` safe.
    Kept for the last 16,384 queries: a daemon signs the same ones again and again (every POST of an API,
    every status query of a task), and quoting them is a third of the signing. (A daemon polling more
    tasks than are kept would miss every time, as the least recent is the next needed.)"""
    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    return "&".join(f"{_quote(k)}={_quote(v)}" for k in sorted(grouped) for v in grouped[k])


def _signed_headers(headers: Mapping[str, str], netloc: str) -> dict[str, str]:
    """Lower-cased names → values of the headers that enter the signature; Host defaults to the URL's."""
    signed = {k.lower(): v for k, v in headers.items() if k.lower() in _SIGNED_NAMES or k.lower().startswith("x-")}
    host = signed.get("host", netloc.rpartition("@")[2])
    name, sep, port = host.rpartition(":")
    if sep and port in _DEFAULT_PORTS:  # "[::1]" splits into "[:" and "1]": never a default port
        host = name
    signed["host"] = host
    return signed


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    now: datetime,
) -> dict[str, str]:
    """The headers to add to a request so the Volcengine gateway accepts it.

    `url` is the full request URL (its path and query are signed), `headers` those the request will
    carry (Host is taken from the URL when absent), `now` an aware datetime. Returns `X-Date`,
    `X-Content-Sha256` and `Authorization`.
    """
    if now.tzinfo is None:
        raise ValueError("sign_request: `now` must be timezone-aware")
    x_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    date = x_date[:8]
    body_hash = _sha256_hex(body)
    parts = urlsplit(url)
    signed = _signed_headers({**headers, "X-Date": x_date, "X-Content-Sha256": body_hash}, parts.netloc)
    names = sorted(signed)
    signed_names = ";".join(names)
    canonical_request = "\n".join(
        [
            method.upper(),
            quote(unquote(parts.path or "/"), safe="/"),
            canonical_query(parts.query),
            "".join(f"{name}:{signed[name]}\n" for name in names),
            signed_names,
            body_hash,
        ]
    )
    scope = f"{date}/{region}/{service}/request"
    string_to_sign = "\n".join([ALGORITHM, x_date, scope, _sha256_hex(canonical_request.encode())])
    signature = hmac.new(_signing_key(secret_key, date, region, service), string_to_sign.encode(), hashlib.sha256)
    return {
        "X-Date": x_date,
        "X-Content-Sha256": body_hash,
        "Authorization": f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature.hexdigest()}",
    }


@functools.lru_cache(maxsize=64)
def _signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The key derived for one day, region and service: the same for every call of that day (four HMACs)."""
    key = secret_key.encode()
    for part in (date, region, service, "request"):
        key = _hmac(key, part)
    return key


def sign_callback(payload: Mapping[str, Any], secret: str) -> str:
    """The `Signature` Volcengine puts on a webhook: sha256 hex of the sorted, concatenated values of
    EventType, EventData, EventTime, EventId, AppId, Version, Nonce (or Noce) and the callback secret.
    Raises ValueError when one of those fields is missing."""
    values = [payload.get(name) for name in _CALLBACK_FIELDS] + [payload.get("Nonce", payload.get("Noce"))]
    if any(value is None for value in values):
        raise ValueError("callback payload lacks one of " + ", ".join((*_CALLBACK_FIELDS, "Nonce")))
    return _sha256_hex("".join(sorted([*map(str, values), secret])).encode())


def verify_callback(payload: Mapping[str, Any], secret: str) -> bool:
    """True when the webhook's `Signature` matches (constant-time compare); False when it differs or a
    signed field is missing."""
    given = payload.get("Signature")
    if not isinstance(given, str):
        return False
    try:
        expected = sign_callback(payload, secret)
    except ValueError:
        return False
    return hmac.compare_digest(expected.encode(), given.lower().encode())  # bytes: str must be ASCII
