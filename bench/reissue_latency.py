"""Benchmark 4: time from a vendor's idle stop to capctl's re-issue, with callbacks and with polling only.

For each mode: `capctl sim` (with the daemon's Volcengine callback URL, or none) and `capctl run` on
20 SnapshotJobs × 10 rooms (idleTimeout 10 s). Every room has a published stream, so the first runs are
productive; once they have run past their idle timeout the streams are unpublished. Each task then idles
out at the simulator (idle since + MaxIdleTime), and the daemon re-issues it (its next accepted
StartSnapshot in the simulator's request log); the latency is the difference, per room. Rooms empty
evenly over `--spread` seconds (0 = all at once: then 200 stops need 200 status queries at 58/s, 3.4 s,
a vendor limit). Prints p50/p90/p99/max.
Targets: p99 < 1 s with callbacks (Volcengine: `UserLeaveRoom` → the expected idle deadline); polling
only: at most the sweep period (max(--resync, tasks / query budget)) + 1 s.

    .venv/bin/python bench/reissue_latency.py [--jobs 20] [--rooms 10] [--idle 10] [--resync 5] [--spread 10]
        [--mode both|callbacks|polling]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import (
    daemon,
    free_port,
    http_json,
    machine,
    room_names,
    simulator,
    write_specs,
)

from reconciler.budget import HEADROOM

QUERY_BUDGET = 60.0 * HEADROOM


def running(base: str) -> int:
    return len(http_json("GET", base + "/_sim/tasks?vendor=volcengine&state=running")["tasks"])


def idle_stops(base: str, rooms: set[str]) -> dict[str, float]:
    """When each room's run idles out, on the simulator's clock: idle since + MaxIdleTime (as the sim does)."""
    tasks = http_json("GET", base + "/_sim/tasks?vendor=volcengine&state=running")["tasks"]
    return {
        t["roomId"]: t["idleSince"] + t["maxIdleTime"]
        for t in tasks
        if t["roomId"] in rooms and t["idleSince"] is not None
    }


def latencies(base: str, stops: dict[str, float]) -> list[float]:
    """Per room: the first accepted StartSnapshot after its run's idle stop, minus that stop (seconds)."""
    starts: dict[str, float] = {}
    for entry in http_json("GET", base + "/_sim/requests")["requests"]:
        room = entry["body"].get("RoomId") if isinstance(entry["body"], dict) else None
        if (
            entry["api"] == "StartSnapshot"
            and entry["status"] == 200
            and room in stops
            and room not in starts
            and entry["time"] >= stops[room]
        ):
            starts[room] = entry["time"]
    return [starts[room] - stop for room, stop in stops.items() if room in starts]


def measure(mode: str, jobs: int, rooms_per_job: int, idle: int, resync: int, spread: float) -> list[float]:
    sim_port, daemon_port = free_port(), free_port()
    callback = ["--volcengine-callback-url", f"http://127.0.0.1:{daemon_port}/callbacks/volcengine"]
    rooms = list(room_names(jobs, rooms_per_job))
    with tempfile.TemporaryDirectory() as tmp, simulator(sim_port, *(callback if mode == "callbacks" else ())) as base:
        for room in rooms:
            http_json(
                "POST",
                base + "/_sim/publish",
                {"vendor": "volcengine", "roomId": room, "userId": "cam", "streamType": 0},
            )
        spec_dir = write_specs(Path(tmp) / "specs", jobs, rooms_per_job, port=sim_port, idle=idle)
        state_url = f"sqlite:///{tmp}/state.db"
        with daemon(spec_dir, state_url, daemon_port, f"{resync}s", Path(tmp) / "daemon.log"):
            while running(base) < len(rooms):
                time.sleep(0.5)
            time.sleep(idle + 5)  # the first runs outlast their idle timeout: productive, re-issued at once
            begin = time.monotonic()
            for i, room in enumerate(rooms):  # rooms empty one after another, evenly over `spread` s
                time.sleep(max(0.0, begin + i * spread / len(rooms) - time.monotonic()))
                http_json(
                    "POST",
                    base + "/_sim/unpublish",
                    {"vendor": "volcengine", "roomId": room, "userId": "cam", "streamType": 0},
                )
            stops = idle_stops(base, set(rooms))
            period = max(resync, len(rooms) / QUERY_BUDGET)
            deadline = time.monotonic() + idle + 1.1 * period + spread + 30
            found: list[float] = []
            while time.monotonic() < deadline:
                time.sleep(2)
                found = latencies(base, stops)
                if len(found) == len(rooms):
                    break
        if len(found) < len(rooms):
            tail = (Path(tmp) / "daemon.log").read_text().splitlines()[-5:]
            print(
                f"  {mode}: only {len(found)} of {len(rooms)} rooms were re-issued in time; daemon log ends:",
                *tail,
                sep="\n    ",
            )
        return found


def report(mode: str, values: list[float], target: str) -> None:
    if not values:
        print(f"{mode}: no re-issues seen")
        return
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    p90 = ordered[min(len(ordered) - 1, int(0.90 * len(ordered)))]
    print(
        f"{mode}: {len(values)} re-issues, stop → new StartSnapshot p50 {statistics.median(values):.2f} s, "
        f"p90 {p90:.2f} s, p99 {p99:.2f} s, max {ordered[-1]:.2f} s (target {target})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--idle", type=int, default=10)
    parser.add_argument("--resync", type=int, default=5)
    parser.add_argument("--mode", choices=("both", "callbacks", "polling"), default="both")
    parser.add_argument(
        "--spread",
        type=float,
        default=10.0,
        help="seconds over which the rooms empty (0: all at once, a burst bounded by the 60/s query budget)",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    tasks = args.jobs * args.rooms
    period = max(args.resync, tasks / QUERY_BUDGET)
    runs = [("callbacks", "p99 < 1 s"), ("polling", f"≤ sweep period {period:.1f} s + 1 s")]
    for mode, target in runs:
        if args.mode in ("both", mode):
            values = measure(mode, args.jobs, args.rooms, args.idle, args.resync, args.spread)
            report(f"{mode}, {tasks} rooms emptying over {args.spread:g} s", values, target)


if __name__ == "__main__":
    main()
