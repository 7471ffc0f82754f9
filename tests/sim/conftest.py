"""Fixtures for the simulator tests: an in-process app on a FakeClock and clients that sign like the vendors.

Volcengine requests are signed with the official SDK signer (not the simulator's own code), ZEGO requests
with the documented signature-2.0 formula, so the tests check the simulator against independent signers.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send
from volcengine.auth.SignerV4 import SignerV4
from volcengine.auth.SignParam import SignParam
from volcengine.Credentials import Credentials

from reconciler.clock import FakeClock
from reconciler.sim import SimConfig, Simulator, create_app
from reconciler.sim.config import BUILTIN_VOLC_APP, BUILTIN_ZEGO_APP
from reconciler.sim.senders import AsgiSender, CallbackSender, HttpSender

VOLC_APP = BUILTIN_VOLC_APP.app_id
ZEGO_APP = BUILTIN_ZEGO_APP.app_id
START = 1_700_000_000.0


def sdk_sign(
    *,
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes,
    host: str,
    when: float,
    ak: str = BUILTIN_VOLC_APP.access_key,
    sk: str = BUILTIN_VOLC_APP.secret_key,
    region: str = "cn-north-1",
) -> dict[str, str]:
    """Headers produced by the official Volcengine SDK signer for this request."""
    param = SignParam()
    param.set_method(method)
    param.set_host(host)
    param.set_path(path)
    param.set_query(OrderedDict(query))
    param.set_body(body)
    param.set_date(datetime.fromtimestamp(when, UTC))
    headers: OrderedDict[str, str] = OrderedDict(Host=host)
    if method == "POST":
        headers["Content-Type"] = "application/json"
    param.set_header_list(headers)
    result = SignerV4.sign_only(param, Credentials(ak, sk, "rtc", region))
    return {
        **{k: v for k, v in headers.items() if k != "Host"},
        "X-Date": result.xdate,
        "X-Content-Sha256": result.xContextSha256,
        "Authorization": result.authorization,
    }


def zego_query(
    action: str, when: float, *, app_id: int = ZEGO_APP, secret: str = BUILTIN_ZEGO_APP.server_secret
) -> dict[str, str]:
    nonce = secrets.token_hex(8)
    ts = int(when)
    sig = hashlib.md5(f"{app_id}{nonce}{secret}{ts}".encode()).hexdigest()
    return {
        "Action": action,
        "AppId": str(app_id),
        "SignatureNonce": nonce,
        "Timestamp": str(ts),
        "SignatureVersion": "2.0",
        "Signature": sig,
    }


class SimClient:
    """An httpx client on the in-process app, with vendor-signed request helpers."""

    def __init__(self, http: httpx.AsyncClient, app: Starlette, clock: FakeClock) -> None:
        self.http = http
        self.app = app
        self.clock = clock

    @property
    def sim(self) -> Simulator:
        sim: Simulator = self.app.state.sim
        return sim

    async def volc(
        self, action: str, body: dict[str, Any] | None = None, *, path: str = "/volc/", **sign: Any
    ) -> httpx.Response:
        query = {"Action": action, "Version": "2023-11-01"}
        if action == "GetSnapshotTask":
            query.update(body or {})
            raw, method = b"", "GET"
        else:
            raw, method = json.dumps(body or {}).encode(), "POST"
        when = sign.pop("when", self.clock.now())
        headers = sdk_sign(method=method, path=path, query=query, body=raw, host="sim.test", when=when, **sign)
        return await self.http.request(method, f"{path}?{urlencode(query)}", content=raw, headers=headers)

    async def zego(self, action: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        query = zego_query(action, kw.pop("when", self.clock.now()), **kw)
        return await self.http.post("/zego/cloudrecord/", params=query, json=body)

    async def thumbs(self, params: list[tuple[str, str]], **kw: Any) -> httpx.Response:
        query = list(zego_query("MediaThumbnails", kw.pop("when", self.clock.now()), **kw).items())
        return await self.http.get("/zego/rtc/", params=[*query, *params])


def snapshot_body(task_id: str = "t1", room: str = "r1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "AppId": VOLC_APP,
        "RoomId": room,
        "TaskId": task_id,
        "StorageConfig": {"Type": 0, "TosConfig": {"AccountId": "2100000000", "Bucket": "b"}},
    }
    body.update(extra)
    return body


def scenario_body(**fields: Any) -> dict[str, Any]:
    """A small scenario (3 rooms, 5 minutes, back-to-back sessions) as the control API takes it."""
    return {
        "seed": 5,
        "duration": 300,
        "rooms": 3,
        "gap": {"min": 10, "max": 20},
        "session_length": {"min": 30, "max": 60},
        **fields,
    }


def record_body(room: str = "z1", **inputs: Any) -> dict[str, Any]:
    return {
        "RoomId": room,
        "RecordInputParams": {"RecordMode": 1, **inputs},
        "RecordOutputParams": {"OutputFileFormat": "jpg", "SnapshotInterval": 5},
        "StorageParams": {
            "Vendor": 2,
            "Region": "oss-cn-shanghai",
            "Bucket": "b",
            "AccessKeyId": "AKID-SECRET-VALUE",
            "AccessKeySecret": "SK-SECRET-VALUE",
        },
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def config() -> SimConfig:
    return SimConfig(seed=7)


@pytest.fixture
async def client(config: SimConfig, clock: FakeClock) -> AsyncIterator[SimClient]:
    app = create_app(config, clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as http:
        yield SimClient(http, app, clock)
    await app.state.sim.callbacks.aclose()


class Receiver:
    """A callback endpoint that records bodies and answers with queued status codes (then 200): over HTTP
    (`handler`, an httpx mock) or in-process (`app`, the ASGI app the in-process sender calls)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self._record(str(request.url), request.content))

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        assert scope["method"] == "POST" and not message["more_body"]
        url = f"{scope['scheme']}://{dict(scope['headers'])[b'host'].decode()}{scope['path']}"
        await send({"type": "http.response.start", "status": self._record(url, message["body"]), "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def _record(self, url: str, raw: bytes) -> int:
        self.received.append({"url": url, "body": json.loads(raw), "raw": raw})
        return self.statuses.pop(0) if self.statuses else 200

    def events(self, key: str) -> list[Any]:
        return [r["body"].get(key) for r in self.received]


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture(params=["http", "in-process"])
async def cb_client(request: pytest.FixtureRequest, receiver: Receiver) -> AsyncIterator[SimClient]:
    """A simulator sending its callbacks to `receiver`; every test using it runs with both senders."""
    clock = FakeClock(start=START)
    sender: CallbackSender = (
        HttpSender(5.0, httpx.MockTransport(receiver.handler)) if request.param == "http" else AsgiSender(receiver.app)
    )
    config = SimConfig(
        seed=1,
        volcengine_callback_url="http://daemon.test/callbacks/volcengine",
        zego_callback_url="http://daemon.test/callbacks/zego",
        callback_sender=sender,
    )
    app = create_app(config, clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim.test") as http:
        yield SimClient(http, app, clock)
    await app.state.sim.callbacks.aclose()
