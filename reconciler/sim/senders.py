"""How the simulator's callbacks leave it: a POST over HTTP, or the same request handed to an ASGI app.

`capctl sim` (and the real-time check) sends over HTTP with httpx: timeouts, connection errors, what a vendor's
webhook sender meets. Tests and the day benchmark run the daemon in the same process: `AsgiSender` gives its app
the request the HTTP sender would make (method, path, query, host, content type and length, the same body
bytes) with no HTTP client in between, which costs a quarter of a Volcengine callback run's CPU
(bench/README.md, "Coverage over a simulated day"). tests/sim/test_senders.py holds the two to the same request.
The queue (`callbacks.py`) keeps the vendors' rules (what counts as delivered, retries) for both.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import httpx
from starlette.types import ASGIApp, Message

from reconciler.httpclient import StatelessClient

__all__ = ["AsgiSender", "CallbackSender", "HttpSender", "SendError", "encode_body"]

CONTENT_TYPE = "application/json"


class SendError(Exception):
    """No answer (connection refused, timeout): the message is what the callback log records."""


class CallbackSender(Protocol):
    async def post(self, url: str, body: bytes) -> int:
        """POST `body` (JSON) to `url`; the answer's status. Raises SendError when there is none."""
        ...

    async def aclose(self) -> None: ...


def encode_body(body: dict[str, Any]) -> bytes:
    """The bytes httpx sends for `json=body` (httpx's own encoding), whichever sender sends them."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class HttpSender:
    """Over HTTP with httpx (a cookie-less client, created on first use); `transport` for tests."""

    def __init__(self, timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._urls: dict[str, httpx.URL] = {}  # each URL parsed once, not twice a callback as text would be

    async def post(self, url: str, body: bytes) -> int:
        if self._client is None:
            self._client = StatelessClient(transport=self._transport, timeout=self._timeout)
        parsed = self._urls.get(url) or self._urls.setdefault(url, httpx.URL(url))
        try:
            response = await self._client.post(parsed, content=body, headers={"content-type": CONTENT_TYPE})
        except httpx.HTTPError as exc:
            raise SendError(f"{type(exc).__name__}: {exc}") from exc
        return response.status_code

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class AsgiSender:
    """Into an ASGI app in this process, as httpx's ASGI transport would hand it the HTTP sender's request;
    an exception from the app propagates (as it does through that transport)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._scopes: dict[str, dict[str, Any]] = {}  # per URL: the scope less its headers

    async def post(self, url: str, body: bytes) -> int:
        scope = self._scopes.get(url) or self._scopes.setdefault(url, _scope(httpx.URL(url)))
        headers = [*scope["headers"], (b"content-length", str(len(body)).encode())]
        status: int | None = None
        answered = asyncio.Event()
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await answered.wait()  # as httpx's transport: a disconnect only once the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                answered.set()

        await self.app({**scope, "headers": headers}, receive, send)
        if status is None or not answered.is_set():
            raise RuntimeError(f"the app at {url} returned without a complete answer")
        return status

    async def aclose(self) -> None:
        pass


def _scope(url: httpx.URL) -> dict[str, Any]:
    host = url.netloc  # what httpx sends as Host: the port only when it is not the scheme's default
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "headers": [(b"host", host), (b"content-type", CONTENT_TYPE.encode())],
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.raw_path.split(b"?")[0],
        "query_string": url.query,
        "server": (url.host, url.port),
        "client": None,
        "root_path": "",
    }
