"""Benchmark (issue 17): a simulated day of rooms coming and going, and what the daemon really captures.

The real daemon (`reconciler.daemon.Daemon`, as `capctl run` builds it, on a SQLite state file) and the real
simulator run in this one process on one virtual clock: the daemon's vendor calls reach the simulator's
ASGI app through the daemon's httpx client, and the simulator's callbacks reach the daemon's app as the
request its HTTP sender would make, handed over in-process (`AsgiSender`, docs/simulator.md; `capctl sim` and
the real-time check send them over HTTP); time jumps from one due event to the next (the daemon tests'
discrete-event harness, tests/daemon/conftest.py). The traffic is the default scenario
(examples/scenarios/day.yaml: sessions per room per day with peak hours, users, drop-outs; or `--scenario`)
cut to `--rooms` and `--hours`; one job covers every room (Volcengine SnapshotJob, ZEGO RecordingJob).

Seven runs: per vendor, with every callback delivered, with 10 % of them lost, and with polling only (no
callbacks at all); and ZEGO recordings with a `--max-duration` shorter than most sessions (rollover). The
runs share nothing, so each has a process of its own, all at once (`--processes` caps that). Per run it prints, from
the simulator's ground truth (GET /_sim/coverage): the share of stream-seconds captured, the time from a
room's first stream to its first capture (p50, p99), vendor calls per empty room-hour (and per API), rollover
gaps, and the CPU time per simulated hour. The last line is one JSON object.

    .venv/bin/python bench/coverage_day.py [--rooms 200] [--hours 6] [--resync 30] [--vendors volcengine,zego]
    .venv/bin/python bench/coverage_day.py --scenario examples/scenarios/compressed.yaml --rooms 16 --hours 0.05 \
        --start-hour 0 --idle 10 --resync 5 --vendors volcengine   # the real-time check's traffic, virtually
    .venv/bin/python bench/coverage_day.py --selector   # issue 18: the job names no room, it selects them

With `--selector` the job covers the rooms with a room selector (`rooms: {match: "<prefix>*"}`) and knows
no room by name: each is started when its first stream's callback arrives (or the room-listing resync finds
it). After the measured span a room outside the selector gets a stream for a minute; the run counts the tasks
started there (must be 0).
Polling-only runs are left out: without callbacks a selector job learns of no room.

With `--faults R` the vendor ends runs by faults (bursts of 1 to 3 in a row, R per room-hour; `play`), and each
run counts the runs they ended (bench/README.md, "Vendor faults in occupied rooms").
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from common import ROOT

sys.path.insert(0, str(ROOT))  # the harness lives with the daemon tests

from reconciler import logs
from reconciler.clock import FakeClock
from reconciler.daemon import policy
from reconciler.sim.scenario import load_scenario, parse_scenario
from reconciler.sim.world import SimTask
from tests.daemon.conftest import SIM, Harness
from tests.specdocs import STORAGE, providers, recording_job, snapshot_job

DEFAULT_SCENARIO = ROOT / "examples" / "scenarios" / "day.yaml"
START = 1_767_225_600.0  # the virtual clock's start (2026-01-01 00:00 UTC)
MODES = {"callbacks": 0.0, "lossy callbacks": 0.1, "polling": None}  # mode -> share of callbacks lost
OUTSIDE = "outside-0000"  # with --selector: a busy room the selector does not cover
OUTSIDE_SECONDS = 60.0  # how long it is watched for a task (a covered room is started within seconds)
# The rollover run: ZEGO recordings with every callback delivered and a maxDuration shorter than most
# sessions, so that runs end at their max duration while streams are published.
ROLLOVER = "rollover"
# CPU seconds of each run at 200 rooms x 6 h (bench/README.md). All seven at once let the OS share the two cores
# to the end (the longest run is alone only for the last ~2 s); with fewer `--processes` the longest are
# submitted first, so the last to finish is a short run (longest processing time first). Three processes
# ended ~5 % later: the two polling runs (~48 s) start together and a ~20 s run is left alone at the end.
CPU_ESTIMATE = {"polling": 48.0, ("volcengine", "callbacks"): 37.0, ("volcengine", "lossy callbacks"): 35.0}
CPU_OTHERWISE = 21.0  # ZEGO with callbacks (no image callbacks), and the rollover run
# Seconds a room must have been empty before its calls count as a dormant room's: the job's idle timeout,
# the daemon's look after it, and a minute to spare (the calls around each session's end are not dormant).
SETTLE = 120.0
# --faults: what the vendor says when it ends a run by a fault (ZEGO quit_reason, Volcengine StopReason), how
# long after a faulted run's stop the next one may start and still be failed (a burst), and how far into it.
FAULT_REASONS: dict[str, list[str | int]] = {
    "zego": [1, 2, 5, 6, 1001],
    "volcengine": ["StartTaskFailed", "UserDisconnect"],
}
FAULT_NEXT_RUN = 10.0
FAULT_INTO_RUN = 2.0


def scenario_for(
    path: Path,
    vendor: str,
    rooms: int,
    hours: float,
    start_hour: float,
    loss: float | None,
    seed: int,
    reorder: float | None = None,
) -> dict[str, Any]:
    base = load_scenario(path).model_dump()
    chaos = {**base["callbacks"], "loss": loss or 0.0}
    if reorder is not None:
        chaos["reorder"] = reorder
    job = "capture" if vendor == "volcengine" else "zego"
    return {
        **base,
        "vendor": vendor,
        "rooms": rooms,
        "duration": hours * 3600,
        "seed": seed,
        "callbacks": chaos,
        "jobs": [job],
    }


async def run(vendor: str, mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    loss = 0.0 if mode == ROLLOVER else MODES[mode]
    work = tmp / f"{vendor}-{mode.replace(' ', '-')}"
    work.mkdir(parents=True)
    scenario = scenario_for(
        args.scenario, vendor, args.rooms, args.hours, args.start_hour, loss, args.seed, args.reorder
    )
    rooms = [f"{scenario['room_prefix']}{i:04d}" for i in range(args.rooms)]
    job = (
        snapshot_job("capture", rooms, idle=args.idle)
        if vendor == "volcengine"
        else recording_job("rec", rooms, idle=args.idle, max_duration=args.max_duration if mode == ROLLOVER else "24h")
    )
    if args.selector:  # the same job, covering the scenario's rooms by a selector instead of by name
        job = job.replace(f"rooms: [{', '.join(rooms)}]", f'rooms: {{match: "{scenario["room_prefix"]}*"}}')
    specs = work / "specs"
    specs.mkdir()
    (specs / "providers.yaml").write_text(providers(SIM, callbacks=loss is not None) + "---\n" + STORAGE)
    (specs / "jobs.yaml").write_text(job)

    clock = FakeClock(start=START)
    harness = Harness(work, clock)
    if loss is None:  # polling only: the vendor sends nothing
        harness.sim.config.volcengine_callback_url = None
        harness.sim.config.zego_callback_url = None
    harness.sim.load_scenario(parse_scenario(scenario))
    cpu = time.process_time()
    wall = time.perf_counter()
    await harness.start(resync=args.resync)
    faults = await play(harness, vendor, args)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    report = harness.sim.coverage(until=START + args.hours * 3600)
    if args.selector:  # after the measured span (so it weighs on no figure): a room the selector does not cover
        harness.sim.publish(vendor, OUTSIDE, user_id="outsider", stream_id="outsider")
        await harness.advance(OUTSIDE_SECONDS)
    outside = sum(1 for t in harness.sim.tasks(vendor) if t.room_id == OUTSIDE)
    settled_calls, settled_hours = harness.sim.world.coverage.settled_empty_calls(SETTLE, START + args.hours * 3600)
    await harness.stop()
    await harness.sim.callbacks.aclose()
    (totals,) = report["jobs"]
    rollover = totals["gapsByCause"].get("rollover", {})
    return {
        "coverage": totals["coverage"],
        "time_to_capture_p50_s": totals["timeToCaptureP50Seconds"],
        "time_to_capture_p99_s": totals["timeToCaptureP99Seconds"],
        "calls_per_empty_room_hour": report["calls"]["perEmptyRoomHour"],
        "calls_per_room_hour": report["calls"]["perRoomHour"],
        "calls_per_dormant_room_hour": settled_calls / settled_hours if settled_hours else None,
        "calls_while_empty_by_api": report["calls"]["whileEmptyByApi"],
        "empty_room_hours": report["calls"]["emptyRoomHours"],
        "rollover_gaps": rollover.get("count", 0),
        "rollover_gap_p99_s": rollover.get("p99Seconds"),
        "gaps_by_cause": {c: v["count"] for c, v in totals["gapsByCause"].items()},
        "room_fills": totals["roomFills"],
        "tasks_outside_selector": outside if args.selector else None,
        "faults": faults,
        "cpu_s_per_sim_hour": cpu / args.hours,
        "wall_s": wall,
    }


async def play(harness: Harness, vendor: str, args: argparse.Namespace) -> int:
    """Advance through the measured span; with `--faults`, the vendor ends runs by faults on the way: bursts at
    random times (`--seed`), each in one random room, of 1 to 3 faults in a row (the first ends the room's
    running task, each next one the run started after it, 2 s into that run, if one starts within 10 s). The
    draws do not depend on what the daemon does; a burst in a room with no running task ends nothing.
    Returns how many runs the faults ended."""
    end = harness.clock.now() + args.hours * 3600
    rng = random.Random(args.seed)
    bursts, at = [], harness.clock.now()
    while args.faults > 0 and (at := at + rng.expovariate(args.faults * args.rooms / 3600)) < end:
        reasons = [rng.choice(FAULT_REASONS[vendor]) for _ in range(rng.randint(1, 3))]
        bursts.append((at, rng.randrange(args.rooms), reasons))
    prefix, ended = load_scenario(args.scenario).room_prefix, 0
    for at, index, reasons in bursts:
        await harness.advance(max(0.0, at - harness.clock.now()))
        room = f"{prefix}{index:04d}"
        for i, reason in enumerate(reasons):
            running = await next_run(harness, vendor, room, wait=0.0 if i == 0 else FAULT_NEXT_RUN, end=end)
            if running is None:
                break
            harness.sim.world.stop_out_of_band(running, reason)
            ended += 1
    await harness.advance(max(0.0, end - harness.clock.now()))
    return ended


async def next_run(harness: Harness, vendor: str, room: str, *, wait: float, end: float) -> SimTask | None:
    """The room's running task, 2 s into it, or one started within `wait` seconds (before `end`)."""
    deadline = min(end, harness.clock.now() + wait)
    while True:
        running = [t for t in harness.running_sim_tasks(vendor) if t.room_id == room]
        if running:
            if wait > 0:  # a run the daemon re-issued: the vendor fails it again a moment later
                await harness.advance(min(FAULT_INTO_RUN, max(0.0, end - harness.clock.now())))
                running = [t for t in harness.running_sim_tasks(vendor) if t.room_id == room]
            return running[0] if running else None
        if harness.clock.now() >= deadline:
            return None
        await harness.advance(min(0.5, deadline - harness.clock.now()))


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def run_in_process(vendor: str, mode: str, args: argparse.Namespace, tmp: Path, cap: float | None) -> dict[str, Any]:
    """One run in a worker process of its own (the runs share nothing: each has its clock, daemon, sim).
    `cap`: the longest backoff wait (`policy.REISSUE_BACKOFF_CAP`) for this process, to draw the trade-off."""
    logs.configure("warning", json_logs=True, stream=io.StringIO())
    # What lives now (modules, the parent's objects) stays: set aside, no full collection walks it again.
    gc.collect()  # (a previous run's garbage first: frozen, it would never be freed)
    gc.freeze()
    if cap is not None:
        policy.REISSUE_BACKOFF_CAP = cap
    return asyncio.run(run(vendor, mode, args, tmp))


def estimated_cpu(run: tuple[str, str, float | None]) -> float:
    vendor, mode, _ = run
    return CPU_ESTIMATE.get(mode) or CPU_ESTIMATE.get((vendor, mode)) or CPU_OTHERWISE


def line(vendor: str, mode: str, r: dict[str, Any]) -> str:
    empty = r["empty_room_hours"] or 1.0
    by_api = ", ".join(f"{api} {n / empty:.2f}" for api, n in r["calls_while_empty_by_api"].items())
    return (
        f"{vendor:10} {mode:15} coverage {fmt(r['coverage'] and 100 * r['coverage'], '.2f')} %"
        f"  time to capture p50 {fmt(r['time_to_capture_p50_s'], '.1f')} s"
        f" p99 {fmt(r['time_to_capture_p99_s'], '.1f')} s"
        f"  calls/empty room-hour {fmt(r['calls_per_empty_room_hour'], '.1f')} ({by_api})"
        f" (/room-hour {fmt(r['calls_per_room_hour'], '.1f')};"
        f" once dormant, 2 min after the room emptied: {fmt(r['calls_per_dormant_room_hour'], '.2f')})"
        f"  rollover gaps {r['rollover_gaps']} p99 {fmt(r['rollover_gap_p99_s'], '.2f')} s"
        f"  CPU {r['cpu_s_per_sim_hour']:.2f} s/sim-hour  wall {r['wall_s']:.1f} s"
        f"  gaps {r['gaps_by_cause']}"
        + ("" if r["tasks_outside_selector"] is None else f"  tasks outside the selector {r['tasks_outside_selector']}")
        + (f"  runs ended by faults {r['faults']}" if r["faults"] else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO, help="traffic; rooms, hours, seed replaced")
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--resync", type=float, default=30.0, help="the daemon's --resync, seconds")
    parser.add_argument("--idle", type=int, default=30, help="the job's idleTimeout, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--start-hour", type=float, default=8.0, help="hour of the day the run starts (peaks: 9-12, 19-22)"
    )
    parser.add_argument("--vendors", default="volcengine,zego")
    parser.add_argument("--selector", action="store_true", help="the job selects its rooms (issue 18)")
    parser.add_argument("--reorder", type=float, help="share of callbacks delivered late (default: the scenario's)")
    parser.add_argument(
        "--max-duration", type=int, default=1800, help="the ZEGO job's maxDuration in the rollover run, seconds"
    )
    parser.add_argument(
        "--faults",
        type=float,
        default=0.0,
        help="bursts of vendor faults per room-hour (1-3 runs ended in a row each; default 0: none)",
    )
    parser.add_argument(
        "--processes",
        type=positive,
        help="runs at once, one process each (default: every run at once; the OS shares the cores)",
    )
    parser.add_argument(
        "--backoff-caps",
        help="comma-separated seconds: instead of the usual runs, polling only with each longest backoff wait"
        " (the trade-off of coverage against calls per room-hour)",
    )
    args = parser.parse_args()
    if not 0 <= args.faults < 3600:  # (NaN and infinity too: bursts would never end)
        parser.error(f"--faults: expected bursts per room-hour from 0 to 3600, got {args.faults:g}")
    print(
        f"{args.rooms} rooms, {args.hours:g} h of {args.scenario.name} from {args.start_hour:g}:00,"
        f" --resync {args.resync:g}s, idleTimeout {args.idle}s, rollover run: maxDuration {args.max_duration}s",
        flush=True,
    )
    vendors = args.vendors.split(",")
    # A selector job learns of rooms from callbacks only: no polling-only run, and no rollover run for it.
    runs: list[tuple[str, str, float | None]] = [
        (v, m, None) for v in vendors for m in MODES if not (args.selector and MODES[m] is None)
    ]
    runs += [("zego", ROLLOVER, None)] if "zego" in vendors and not args.selector else []
    if args.backoff_caps:  # the polling-only trade-off instead: one polling run per vendor and cap
        runs = [(v, "polling", float(c)) for v in vendors for c in args.backoff_caps.split(",")]
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    processes = args.processes or len(runs)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(processes) as pool:
        order = sorted(range(len(runs)), key=lambda i: estimated_cpu(runs[i]), reverse=True)
        futures = {i: pool.submit(run_in_process, *runs[i][:2], args, Path(tmp) / f"{i}", runs[i][2]) for i in order}
        for i, (vendor, mode, cap) in enumerate(runs):  # printed in the usual order, whichever ends first
            r = futures[i].result()
            name = mode if cap is None else f"{mode}, cap {cap:g}s"
            results[f"{vendor}/{name}"] = r
            print(line(vendor, name, r), flush=True)
    print(f"all runs: {time.perf_counter() - started:.1f} s wall, {processes} processes", flush=True)
    keys: tuple[str, ...] = (
        "coverage",
        "time_to_capture_p99_s",
        "calls_per_empty_room_hour",
        "calls_per_dormant_room_hour",
        "rollover_gap_p99_s",
    )
    keys += ("tasks_outside_selector",) if args.selector else ()
    keys += ("faults",) if args.faults else ()
    print(json.dumps({name: {k: r[k] for k in keys} for name, r in results.items()}))


if __name__ == "__main__":
    main()
