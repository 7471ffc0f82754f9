"""`sim` and `demo`: the local vendor simulator, and the walk-through that plays the quickstart against it.

Both stand in for the vendors on this machine; neither reads the user's state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.common import (
    check_named,
    check_writable,
    fail,
    load_specs,
    out_console,
    paths_or_default,
    split_listen,
    stop_cleanly_while_starting,
)
from reconciler.cli.options import PathsArg

__all__ = ["demo", "sim"]


def sim(
    ctx: typer.Context,
    listen: Annotated[
        str, typer.Option("--listen", metavar="HOST:PORT", help="HOST:PORT to serve on.")
    ] = "127.0.0.1:8750",
    speed: Annotated[
        float,
        typer.Option(
            "--speed", metavar="FACTOR", min=0.01, help="Simulated time runs this much faster (at most 100000)."
        ),
    ] = 1.0,
    fake_clock: Annotated[
        bool, typer.Option("--fake-clock", help="Time moves only via POST /_sim/clock (for tests).")
    ] = False,
    clock_offset: Annotated[
        float,
        typer.Option(
            "--clock-offset",
            metavar="SECONDS",
            help="Start the clock this far off this machine's (negative: behind), as a vendor whose clock is off.",
        ),
    ] = 0.0,
    volcengine_callback_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Where to POST Volcengine callbacks: the daemon's http://HOST:PORT/callbacks/volcengine. Without"
            " it none is sent, and a room-selector job learns of no room.",
        ),
    ] = None,
    zego_callback_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="Where to POST ZEGO callbacks: the daemon's http://HOST:PORT/callbacks/zego (as above)."
        ),
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            metavar="FILE",
            path_type=str,  # as typed: pathlib reads "" as "."
            help="Play this room-traffic scenario (YAML, see docs/simulator.md), print its coverage, then stop.",
        ),
    ] = None,
    coverage_out: Annotated[
        str | None,
        typer.Option(
            "--coverage-out",
            metavar="FILE",
            path_type=str,
            help="With --scenario: also write the full coverage report (JSON).",
        ),
    ] = None,
    zego_app: Annotated[
        list[str] | None,
        typer.Option(
            "--zego-app",
            metavar="APPID:SERVER_SECRET:CALLBACK_SECRET",
            help="Serve this ZEGO app too, beside the built-in 1234567890 (repeatable): specs of several apps "
            "can point at one simulator.",
        ),
    ] = None,
) -> None:
    """Run the local vendor simulator (Volcengine under /volc, ZEGO under /zego, control API under /_sim).

    Every path also works under /as/NAME/ (the request log, GET /_sim/requests, names NAME as the caller).
    """
    stop_cleanly_while_starting(ctx)  # its imports take ~0.3 s: a SIGTERM meanwhile is a clean stop too
    from reconciler.sim import serve
    from reconciler.sim.clocks import check_offset, check_speed
    from reconciler.sim.config import BUILTIN_ZEGO_APP, parse_zego_app
    from reconciler.sim.scenario import ScenarioError, load_scenario
    from reconciler.spec.fields import callback_url_problem

    check_named("--scenario", scenario)
    check_named("--coverage-out", coverage_out)
    split_listen(listen, "127.0.0.1:8750")
    try:
        check_speed(speed)
    except ValueError as exc:
        fail(f"--speed: {exc}")
    try:
        check_offset(clock_offset)
    except ValueError as exc:
        fail(f"--clock-offset: {exc}")
    if fake_clock and speed != 1.0:  # taken silently before: the clock stood still all the same
        fail("sim: --speed and --fake-clock exclude each other (a fake clock moves only by POST /_sim/clock)")
    if coverage_out is not None and scenario is None:
        fail("sim: --coverage-out needs --scenario")
    if coverage_out is not None:
        check_writable("coverage report", coverage_out)
    for flag, url in (
        ("--volcengine-callback-url", volcengine_callback_url),
        ("--zego-callback-url", zego_callback_url),
    ):
        # As a spec's callbackUrl: `http://` or `file:///x` was taken, and each callback then failed (walk 13a).
        if url is not None and (problem := callback_url_problem(url)):
            fail(f"{flag}: {problem}")
    zego_apps = []
    for text in zego_app or ():
        try:
            zego_apps.append(parse_zego_app(text))
        except ValueError as exc:
            fail(f"--zego-app: {exc}")
        if zego_apps[-1].app_id in {a.app_id for a in (BUILTIN_ZEGO_APP, *zego_apps[:-1])}:
            fail(f"--zego-app: app {zego_apps[-1].app_id} is given twice (1234567890 is built in)")
    try:
        played = load_scenario(Path(scenario)) if scenario is not None else None
    except ScenarioError as exc:
        fail(f"sim: {exc}")
    try:
        serve(
            listen,
            speed=speed,
            fake_clock=fake_clock,
            clock_offset=clock_offset,
            volcengine_callback_url=volcengine_callback_url,
            zego_callback_url=zego_callback_url,
            scenario=played,
            coverage_out=Path(coverage_out) if coverage_out is not None else None,
            zego_apps=zego_apps,
        )
    except OSError as exc:
        fail(f"sim: {exc.strerror}")


def demo(
    paths: PathsArg = None,
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Where the demo's simulator listens (port 0: any free port). The quickstart specs follow it "
            "through the CAPCTL_*_ENDPOINT variables the demo sets.",
        ),
    ] = "127.0.0.1:8750",
    daemon_listen: Annotated[
        str,
        typer.Option(
            "--daemon-listen",
            metavar="HOST:PORT",
            help="Where the demo's daemon (`capctl run`) listens (port 0: any free port).",
        ),
    ] = "127.0.0.1:8081",
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Leave the daemon and the simulator running at the end, until Ctrl-C (exit 130) or SIGTERM (exit 0).",
        ),
    ] = False,
) -> None:
    """Walk through the main job end to end on the quickstart specs, against a local simulator.

    plan → apply → a room empties → its task idles out → plan shows the re-issue and why → apply re-issues it →
    the daemon keeps it all running by itself. State goes to .capctl/demo.db, apart from your real state.
    Without ./specs (a capctl checkout's quickstart specs), it plays the copy of them that capctl ships.
    """
    from reconciler.demo import DemoError, quickstart, run_demo

    sim_at = split_listen(listen, "127.0.0.1:8750")
    daemon_at = split_listen(daemon_listen, "127.0.0.1:8081", "--daemon-listen")
    # ./specs is a capctl checkout's quickstart (every command's default); elsewhere, the copy capctl ships.
    spec_paths = paths_or_default(paths) if paths or Path("specs").exists() else [quickstart()]
    load_specs(spec_paths)  # bad specs fail here, before anything starts; the demo reads them again
    try:
        code = run_demo(
            spec_paths,
            lambda paths, key: load_specs(paths, fingerprint_key=key),
            sim_at=sim_at,
            daemon_at=daemon_at,
            console=out_console(),
            keep_running=keep_running,
        )
    except DemoError as exc:
        fail(f"demo: {exc}")
    if code:
        raise typer.Exit(code)
