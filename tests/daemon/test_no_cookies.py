"""Neither the daemon's vendor calls, nor `capctl apply`'s, nor the simulator's callbacks send back a cookie.

Every answer here sets one, as a vendor gateway might: one client serves every Provider document (every
account), so a cookie kept from one answer would be sent with another account's calls
(`reconciler/httpclient.py`).
"""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.clock import SystemClock
from reconciler.engine import provider_pool
from reconciler.model import ApiFamily
from reconciler.sim.app import create_app
from reconciler.sim.senders import AsgiSender, HttpSender
from reconciler.spec import load_spec_set
from tests.daemon.conftest import Harness, write_specs
from tests.specdocs import recording_job, snapshot_job


class SetsCookies:
    """ASGI middleware: a cookie on every answer; the Cookie header of every request recorded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cookies_sent: list[str | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        self.cookies_sent.append(headers[b"cookie"].decode() if b"cookie" in headers else None)

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"set-cookie", b"gw=sticky; Path=/")]}
            await send(message)

        await self.app(scope, receive, with_cookie)


async def test_the_daemon_and_the_simulator_send_no_cookie_back(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20), recording_job("rec", ["class-1"], idle=20))
    vendor = SetsCookies(harness.sim_app)
    harness.sim_app = vendor  # the daemon's vendor calls go through it
    in_process = harness.sim.config.callback_sender
    assert isinstance(in_process, AsgiSender)
    daemon = SetsCookies(in_process.app)
    # And the simulator's callbacks, over HTTP as `capctl sim` sends them (in-process there is no cookie store).
    harness.sim.config.callback_sender = HttpSender(5.0, httpx.ASGITransport(app=daemon))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    harness.sim.publish("zego", "class-1", stream_id="s1")
    await harness.start()
    await harness.advance(120)
    assert len(vendor.cookies_sent) >= 4 and len(daemon.cookies_sent) >= 4
    assert set(vendor.cookies_sent) == {None}
    assert set(daemon.cookies_sent) == {None}


async def test_apply_sends_no_cookie_back(tmp_path: Path) -> None:
    """`provider_pool` is what `capctl plan` and `apply` call the vendors through (on the system clock, as
    they run: the budgets pace in real time)."""
    specs = write_specs(tmp_path / "specs", snapshot_job("audit", ["lobby", "hall", "foyer"]))
    spec_set = load_spec_set([specs])
    clock = SystemClock()
    sim = SetsCookies(create_app(None, clock))
    async with provider_pool(spec_set.providers, clock, transport=httpx.ASGITransport(app=sim)) as pool:
        provider = pool("volc", ApiFamily.VOLC_SNAPSHOT)
        for task in spec_set.tasks.values():
            await provider.start(task, None)
    assert sim.cookies_sent == [None, None, None]
