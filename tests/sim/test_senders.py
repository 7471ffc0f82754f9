"""The in-process callback sender hands an app the request the HTTP sender sends (reconciler/sim/senders.py).

Tests and the day benchmark deliver the simulator's callbacks in-process; `capctl sim` over HTTP. What the
daemon's callback endpoint reads must not depend on which: the same method, path, query, Host, content type
and length, body bytes, and the answer's status back. (Every test of tests/sim using `cb_client` runs with
both senders too: signatures, retries, what counts as delivered.)
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from reconciler.sim.senders import AsgiSender, HttpSender, SendError, encode_body
from tests.sim.conftest import SimClient

# What a request handler can read of a request, less what only a network connection has (client address).
SCOPE_KEYS = ("type", "method", "scheme", "path", "raw_path", "query_string", "server", "root_path", "http_version")
HEADERS = (b"host", b"content-type", b"content-length")


class Recorder:
    """An ASGI app that keeps what it was sent and answers `status`."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        headers = dict(scope["headers"])
        self.requests.append(
            {**{k: scope[k] for k in SCOPE_KEYS}, "headers": {k: headers.get(k) for k in HEADERS}, "body": body}
        )
        await send({"type": "http.response.start", "status": self.status, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    "url", ["http://daemon.test/callbacks/volcengine", "https://daemon.test:8443/hooks/zego?tenant=a%20b"]
)
@pytest.mark.parametrize("status", [200, 401, 503])
async def test_in_process_sender_delivers_what_the_http_sender_sends(url: str, status: int) -> None:
    body = encode_body({"EventType": "SnapshotRealTimeData", "EventData": '{"Room":"lobby ü"}', "n": 1.5})
    over_http, in_process = Recorder(status), Recorder(status)
    http = HttpSender(5.0, httpx.ASGITransport(app=over_http))
    assert await http.post(url, body) == status
    assert await AsgiSender(in_process).post(url, body) == status
    await http.aclose()
    assert in_process.requests == over_http.requests
    [request] = in_process.requests
    assert request["body"] == body and request["headers"][b"content-type"] == b"application/json"


def test_the_body_is_httpx_own_json_encoding() -> None:
    body = {"EventData": '{"Room":"lobby ü"}', "n": [1, 2.5, None], "ok": True}
    assert encode_body(body) == httpx.Request("POST", "http://x", json=body).content


async def test_no_answer_is_a_send_error_logged_and_retried(cb_client: SimClient) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    sim = cb_client.sim
    sim.config.callback_sender = HttpSender(5.0, httpx.MockTransport(refuse))
    with pytest.raises(SendError, match="ConnectError: connection refused"):
        await sim.config.callback_sender.post("http://daemon.test/x", b"{}")
    sim.publish("volcengine", "lobby", user_id="alice")
    await sim.deliver_due()
    [entry] = [e for e in sim.callbacks.log if e["event"] == "UserJoinRoom"]
    assert entry["status"] is None and entry["error"] == "ConnectError: connection refused" and not entry["ok"]
    assert sim.callbacks.pending >= 1  # queued again for its retry
    assert json.loads(encode_body(entry["body"]))["EventType"] == "UserJoinRoom"
