"""Failures that got no answer from a vendor (refused, timed out, dropped) as readable `VendorError`s.

Such a failure says nothing about the request, only about where it was sent, so the message names the
endpoint's origin (scheme, host and port: never its path, query or user info, which could carry a
credential) and the operating system's reason ("connection refused"). The exception's own text is never
quoted: it is not needed, and whatever it might echo stays out. The provider that made the call tags the
error with its name and type (`VendorError.named`).
"""

from __future__ import annotations

import os
import socket
import ssl

import httpx

from reconciler.httpclient import AnswerTooLarge, AnswerTooSlow
from reconciler.providers.base import ErrorKind, VendorError

__all__ = ["DEFAULT_PORTS", "endpoint_origin", "transport_error"]

DEFAULT_PORTS = {"http": 80, "https": 443}
# httpx's failures raised before a byte of the request is written (a CONNECT refused by a proxy included).
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


def endpoint_origin(url: str) -> str:
    """`https://user:pw@rtc.example/volc/?Action=X` → `https://rtc.example:443`: where a call went, safely."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "the configured endpoint"
    port = parsed.port or DEFAULT_PORTS.get(parsed.scheme)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host  # an IPv6 address
    return f"{parsed.scheme}://{host}{f':{port}' if port else ''}"


def _os_reason(exc: BaseException) -> str | None:
    """The OS's word for why a connection failed, found on the exception chain (httpx wraps it twice)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "host name not resolved"
        if isinstance(current, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(current, OSError) and current.errno:
            return os.strerror(current.errno).lower()
        current = current.__cause__ or current.__context__
    return None


def transport_error(exc: httpx.RequestError, url: str, *, api: str) -> VendorError:
    """A retryable `VendorError` for a request that got no (complete) answer from `url`."""
    origin = endpoint_origin(url)
    reason = _os_reason(exc)
    if isinstance(exc, AnswerTooSlow):
        message = f"no complete answer from {origin} within {exc.deadline:g} s (its bytes kept trickling in)"
    elif isinstance(exc, AnswerTooLarge):
        message = f"the answer from {origin} is larger than the limit of {exc.limit:,} bytes: not read further"
    elif isinstance(exc, httpx.ConnectTimeout):
        message = f"cannot connect to {origin} (timed out)"
    elif isinstance(exc, httpx.PoolTimeout):
        message = f"no free connection to {origin} in time (every one of the client's connections was busy)"
    elif isinstance(exc, httpx.TimeoutException):
        message = f"no answer from {origin} in time ({type(exc).__name__})"
    elif isinstance(exc, httpx.ConnectError):
        message = f"cannot connect to {origin} ({reason or 'connection failed'})"
    elif isinstance(exc, httpx.ProxyError):
        message = f"cannot connect to {origin} through the proxy (the proxy refused the tunnel)"
    elif isinstance(exc, httpx.TransportError):
        message = f"connection to {origin} lost before an answer ({reason or type(exc).__name__})"
    else:  # a broken encoding, too many redirects: the answer could not be read
        message = f"the answer from {origin} could not be read ({type(exc).__name__})"
    # A connect that failed (to the endpoint, or through a proxy's tunnel) or a connection never free sent no
    # byte of the request: it cannot have acted (a start so refused runs nothing).
    unsent = isinstance(exc, _UNSENT)
    return VendorError(ErrorKind.RETRYABLE, "", message, api=api, unsent=unsent)
