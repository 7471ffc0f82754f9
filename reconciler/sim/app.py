"""Composition of the simulator: one Starlette app serving both vendors and the control API on one port.

Path prefixes select the vendor (fixed; others depend on them): `/volc` (Volcengine OpenAPI), `/zego/rtc`
(MediaThumbnails), `/zego/cloudrecord` (current recording API), `/zego/legacy/{op}` (v1 recording API) and
`/_sim/` (control). Each prefix is routed with and without a trailing slash, never redirected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route

from reconciler.clock import Clock, FakeClock, SystemClock
from reconciler.listen import bind, parse_listen, url_of
from reconciler.sim import control, volc, zego
from reconciler.sim.clocks import ScaledClock
from reconciler.sim.config import (
    VOLC_PREFIX,
    ZEGO_CLOUDRECORD_PREFIX,
    ZEGO_LEGACY_PREFIX,
    ZEGO_RTC_PREFIX,
    SimConfig,
)
from reconciler.sim.simulator import Simulator

__all__ = ["create_app", "serve"]

PUMP_INTERVAL = 0.2  # real seconds between background passes that fire due events and callbacks


def create_app(config: SimConfig | None = None, clock: Clock | None = None) -> Starlette:
    """The simulator app; the Simulator is `app.state.sim`. Under a server, a background task delivers
    callbacks as they fall due; in-process tests call `await app.state.sim.advance(...)` instead."""
    sim = Simulator(config or SimConfig(), clock or SystemClock())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pump = asyncio.create_task(_pump(sim))
        try:
            yield
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            await sim.callbacks.aclose()

    routes = [
        Route(VOLC_PREFIX, volc.endpoint, methods=["GET", "POST"]),
        Route(VOLC_PREFIX + "/", volc.endpoint, methods=["GET", "POST"]),
        Route(ZEGO_RTC_PREFIX, zego.rtc_endpoint, methods=["GET", "POST"]),
        Route(ZEGO_RTC_PREFIX + "/", zego.rtc_endpoint, methods=["GET", "POST"]),
        Route(ZEGO_CLOUDRECORD_PREFIX, zego.cloudrecord_endpoint, methods=["GET", "POST"]),
        Route(ZEGO_CLOUDRECORD_PREFIX + "/", zego.cloudrecord_endpoint, methods=["GET", "POST"]),
        Route(ZEGO_LEGACY_PREFIX + "/{op}", zego.legacy_endpoint, methods=["GET", "POST"]),
        *control.routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.router.redirect_slashes = False
    app.state.sim = sim
    return app


async def _pump(sim: Simulator) -> None:
    while True:
        await asyncio.sleep(PUMP_INTERVAL)  # real time on purpose: it polls the sim clock, whatever its speed
        await sim.deliver_due()


def serve(
    listen: str = "127.0.0.1:8750",
    *,
    speed: float = 1.0,
    volcengine_callback_url: str | None = None,
    zego_callback_url: str | None = None,
    fake_clock: bool = False,
) -> None:
    """Run the simulator under uvicorn until interrupted (`capctl sim`).

    Prints one line with the address it serves on once the port is bound (the real port for port 0);
    raises ValueError for a malformed `listen`, OSError when the address cannot be bound."""
    import uvicorn

    host, port = parse_listen(listen, example="127.0.0.1:8750")
    sock = bind(host, port)
    clock: Clock = FakeClock(start=SystemClock().now()) if fake_clock else ScaledClock(speed)
    config = SimConfig(volcengine_callback_url=volcengine_callback_url, zego_callback_url=zego_callback_url)
    app = create_app(config, clock)
    app.state.sim.in_process = False
    time_mode = "fake clock: POST /_sim/clock moves it" if fake_clock else f"clock speed {speed:g}x"
    print(
        f"capctl sim listening on {url_of(sock)} (Volcengine /volc; ZEGO /zego/rtc, /zego/cloudrecord,"
        f" /zego/legacy; control API /_sim; {time_mode})",
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
