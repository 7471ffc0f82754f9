"""Composition of the simulator: one Starlette app serving both vendors and the control API on one port.

Path prefixes select the vendor (fixed; others depend on them): `/volc` (Volcengine OpenAPI), `/zego/rtc`
(MediaThumbnails), `/zego/cloudrecord` (current recording API), `/zego/legacy/{op}` (v1 recording API) and
`/_sim/` (control). Each prefix is routed with and without a trailing slash, never redirected, and also
under a caller prefix `/as/<name>/` (the request log names the caller; docs/simulator.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from reconciler.clock import Clock, FakeClock, SystemClock
from reconciler.headers import NoSniffApp
from reconciler.listen import bind, parse_listen, url_of
from reconciler.sim import control, volc, zego
from reconciler.sim.clocks import ScaledClock
from reconciler.sim.config import (
    VOLC_PREFIX,
    ZEGO_CLOUDRECORD_PREFIX,
    ZEGO_LEGACY_PREFIX,
    ZEGO_RTC_PREFIX,
    SimConfig,
    ZegoApp,
)
from reconciler.sim.coverage import summary_lines
from reconciler.sim.scenario import Scenario
from reconciler.sim.simulator import CallerPrefix, Simulator

__all__ = ["create_app", "serve"]

PUMP_INTERVAL = 0.2  # real seconds between background passes that fire due events and callbacks
PROGRESS_EVERY = 30.0  # real seconds between the progress lines of a scenario being played


def create_app(
    config: SimConfig | None = None,
    clock: Clock | None = None,
    *,
    on_scenario_end: Callable[[dict[str, Any]], None] | None = None,
    on_scenario_progress: Callable[[dict[str, Any]], None] | None = None,
    progress_every: float = PROGRESS_EVERY,
) -> Starlette:
    """The simulator app; the Simulator is `app.state.sim`. Under a server, a background task delivers
    callbacks as they fall due, calls `on_scenario_progress(scenario status)` every `progress_every` real
    seconds while a loaded scenario plays and `on_scenario_end(coverage report)` once it has played out;
    in-process tests call `await app.state.sim.advance(...)` instead. Calls under `/as/<name>/` are routed
    like the root and logged with `<name>` as their caller."""
    sim = Simulator(config or SimConfig(), clock or SystemClock())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pump = asyncio.create_task(_pump(sim, on_scenario_end, on_scenario_progress, progress_every))
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
    app = NoSniffApp(routes=routes, lifespan=lifespan)  # nosniff on every answer, as the daemon's
    app.router.redirect_slashes = False
    app.state.sim = sim
    app.add_middleware(CallerPrefix)
    return app


async def _pump(
    sim: Simulator,
    on_scenario_end: Callable[[dict[str, Any]], None] | None,
    on_scenario_progress: Callable[[dict[str, Any]], None] | None,
    progress_every: float,
) -> None:
    said_at = time.monotonic()
    while True:
        await asyncio.sleep(PUMP_INTERVAL)  # real time on purpose: it polls the sim clock, whatever its speed
        await sim.deliver_due()
        if sim.playing is None or sim.playing.reported:
            continue
        if sim.scenario_finished():
            if on_scenario_end is not None:
                sim.playing.reported = True
                on_scenario_end(sim.coverage(until=sim.playing.end))
        elif on_scenario_progress is not None and time.monotonic() - said_at >= progress_every:
            said_at = time.monotonic()
            on_scenario_progress(sim.scenario_status())


def serve(
    listen: str = "127.0.0.1:8750",
    *,
    speed: float = 1.0,
    volcengine_callback_url: str | None = None,
    zego_callback_url: str | None = None,
    fake_clock: bool = False,
    clock_offset: float = 0.0,
    scenario: Scenario | None = None,
    coverage_out: Path | None = None,
    zego_apps: Sequence[ZegoApp] = (),
) -> None:
    """Run the simulator under uvicorn until interrupted (`capctl sim`).

    Prints one line with the address it serves on once the port is bound (the real port for port 0);
    raises ValueError for a malformed `listen`, OSError when the address cannot be bound. With a
    `scenario`, plays it from the start and, once it has played out, prints the coverage summary, writes
    the full report as JSON to `coverage_out` (if given; OSError naming it when it cannot) and stops. A
    scenario loaded later through the control API gets its summary printed too, and the simulator keeps
    serving. `clock_offset`: seconds its clock starts off this machine's (a vendor whose clock is off;
    negative: behind). `zego_apps`: served beside the built-in ZEGO app (`capctl sim --zego-app`)."""
    host, port = parse_listen(listen, example="127.0.0.1:8750")
    sock = bind(host, port)
    clock: Clock = (
        FakeClock(start=SystemClock().now() + clock_offset) if fake_clock else ScaledClock(speed, offset=clock_offset)
    )
    config = SimConfig(volcengine_callback_url=volcengine_callback_url, zego_callback_url=zego_callback_url)
    config.zego_apps.extend(zego_apps)
    server: uvicorn.Server | None = None
    unwritten: list[OSError] = []  # the coverage report's write, failed: said once the server has stopped

    def finished(report: dict[str, Any]) -> None:
        print("\n".join(summary_lines(report)), flush=True)
        if coverage_out is not None:
            try:
                coverage_out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
            except OSError as exc:  # a disk filled or the directory went while the scenario played
                unwritten.append(exc)
        if server is not None and scenario is not None:
            server.should_exit = True

    def progress(status: dict[str, Any]) -> None:  # minutes of traffic pass in silence otherwise
        played = min(clock.now(), status["end"]) - status["start"]
        print(
            f"scenario: {played:.0f} of {status['end'] - status['start']:.0f} s played"
            f" ({status['played']} of {status['actions']} room events)",
            flush=True,
        )

    app = create_app(config, clock, on_scenario_end=finished, on_scenario_progress=progress)
    app.state.sim.in_process = False
    if scenario is not None:
        app.state.sim.load_scenario(scenario)
    time_mode = "fake clock: POST /_sim/clock moves it" if fake_clock else f"clock speed {speed:g}x"
    if clock_offset:
        time_mode += f", started {abs(clock_offset):g} s {'ahead of' if clock_offset > 0 else 'behind'} this machine's"
    notes = f"; playing a scenario of {scenario.duration:g} s" if scenario is not None else ""
    if zego_apps:
        notes += f"; ZEGO apps {', '.join(str(a.app_id) for a in config.zego_apps)}"
    print(
        f"capctl sim listening on {url_of(sock)} (Volcengine /volc; ZEGO /zego/rtc, /zego/cloudrecord,"
        f" /zego/legacy; control API /_sim; {time_mode}{notes})",
        flush=True,
    )
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
    for exc in unwritten:
        raise OSError(exc.errno, f"cannot write the coverage report {coverage_out}: {exc.strerror}")


class _Server(uvicorn.Server):
    """uvicorn, without raising the signal that stopped it again once it shut down cleanly: the process died
    of it (143 on SIGTERM, which a container runtime reports as a failure). It exits 0, as `capctl run` does."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
            yield
            return
        previous = {signum: signal.signal(signum, self.handle_exit) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
