"""Benchmark 4: how soon capture resumes after the vendor stopped a task, with callbacks and with polling only.

For each mode: `capctl sim` (with the daemon's Volcengine callback URL, or none) and `capctl run` on
20 SnapshotJobs × 10 rooms (idleTimeout 10 s). Every room has a published stream, so the first runs are
productive; once they have run past their idle timeout the streams are unpublished, evenly over `--spread`
seconds, and each task idles out at the simulator (idle since + MaxIdleTime).

- **Polling only**: nothing tells the daemon the rooms are empty, so it re-issues each stopped task once
  it sees the stop (its next accepted StartSnapshot in the simulator's request log); the latency is that
  start minus the stop, per room. Target: at most the sweep period (max(--resync, tasks / query budget)) + 1 s.
- **Callbacks**: the room callbacks say the rooms are empty, so the daemon re-issues nothing into them
  (the room-aware policy, docs/daemon.md: the run goes dormant); the benchmark counts the starts made into
  empty rooms (expected 0). Then the streams come back, evenly over `--spread` seconds, and the latency is
  the first StartSnapshot of a room minus its stream's return. Target: p99 < 1 s.

Prints p50/p90/p99/max. `--spread 0` empties (and refills) every room at once: 200 stops then need 200
status queries at 58/s (3.4 s, a vendor limit) when polling.

    .venv/bin/python bench/reissue_latency.py [--jobs 20] [--rooms 10] [--idle 10] [--resync 5] [--spread 10]
        [--mode both|callbacks|polling]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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


def first_starts(base: str, since: dict[str, float]) -> dict[str, float]:
    """Per room: the time of the first accepted StartSnapshot at or after `since[room]` (simulator clock)."""
    starts: dict[str, float] = {}
    for entry in http_json("GET", base + "/_sim/requests")["requests"]:
        room = entry["body"].get("RoomId") if isinstance(entry["body"], dict) else None
        if (
            entry["api"] == "StartSnapshot"
            and entry["status"] == 200
            and room in since
            and room not in starts
            and entry["time"] >= since[room]
        ):
            starts[room] = entry["time"]
    return starts


def latencies(base: str, since: dict[str, float]) -> list[float]:
    """Per room: its first accepted StartSnapshot after `since[room]`, minus that time (seconds)."""
    starts = first_starts(base, since)
    return [starts[room] - at for room, at in since.items() if room in starts]


def stream(base: str, room: str, action: str) -> float:
    """Publish or unpublish the room's camera; returns when (the simulator's clock runs on the wall clock)."""
    at = time.time()
    http_json(
        "POST", f"{base}/_sim/{action}", {"vendor": "volcengine", "roomId": room, "userId": "cam", "streamType": 0}
    )
    return at


def evenly(rooms: list[str], spread: float, act: Callable[[str], float]) -> dict[str, float]:
    """`act` on each room in turn, evenly over `spread` seconds; what it returned per room."""
    begin, done = time.monotonic(), {}
    for i, room in enumerate(rooms):
        time.sleep(max(0.0, begin + i * spread / len(rooms) - time.monotonic()))
        done[room] = act(room)
    return done


def wait_for(base: str, since: dict[str, float], deadline: float) -> list[float]:
    found: list[float] = []
    while time.monotonic() < deadline:
        time.sleep(2)
        found = latencies(base, since)
        if len(found) == len(since):
            break
    return found


@dataclass
class Measured:
    latencies: list[float]
    into_empty: int | None = None  # callbacks: starts made into the empty rooms before their streams came back


def measure(mode: str, jobs: int, rooms_per_job: int, idle: int, resync: int, spread: float) -> Measured:
    sim_port, daemon_port = free_port(), free_port()
    callback = ["--volcengine-callback-url", f"http://127.0.0.1:{daemon_port}/callbacks/volcengine"]
    rooms = list(room_names(jobs, rooms_per_job))
    with tempfile.TemporaryDirectory() as tmp, simulator(sim_port, *(callback if mode == "callbacks" else ())) as base:
        for room in rooms:
            stream(base, room, "publish")
        spec_dir = write_specs(Path(tmp) / "specs", jobs, rooms_per_job, port=sim_port, idle=idle)
        state_url = f"sqlite:///{tmp}/state.db"
        with daemon(spec_dir, state_url, daemon_port, f"{resync}s", Path(tmp) / "daemon.log"):
            while running(base) < len(rooms):
                time.sleep(0.5)
            time.sleep(idle + 5)  # the first runs outlast their idle timeout: productive, re-issued at once
            evenly(rooms, spread, lambda room: stream(base, room, "unpublish"))
            stops = idle_stops(base, set(rooms))
            period = max(resync, len(rooms) / QUERY_BUDGET)
            if mode == "polling":
                found = wait_for(base, stops, time.monotonic() + idle + 1.1 * period + spread + 30)
                into_empty = None
            else:
                while running(base) > 0:  # every run idles out at the vendor
                    time.sleep(1)
                time.sleep(period + 2)  # a sweep after the last stop: time for a re-issue, were one made
                into_empty = len(first_starts(base, stops))
                back = evenly(rooms, spread, lambda room: stream(base, room, "publish"))
                found = wait_for(base, back, time.monotonic() + spread + 30)
        if len(found) < len(rooms):
            tail = (Path(tmp) / "daemon.log").read_text().splitlines()[-5:]
            print(
                f"  {mode}: only {len(found)} of {len(rooms)} rooms were captured again in time; daemon log ends:",
                *tail,
                sep="\n    ",
            )
        return Measured(found, into_empty)


def report(mode: str, what: str, measured: Measured, target: str) -> None:
    values = measured.latencies
    empty = "" if measured.into_empty is None else f"{measured.into_empty} starts into the empty rooms; "
    if not values:
        print(f"{mode}: {empty}no capture resumed")
        return
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    p90 = ordered[min(len(ordered) - 1, int(0.90 * len(ordered)))]
    print(
        f"{mode}: {empty}{len(values)} rooms, {what} p50 {statistics.median(values):.2f} s, "
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
    runs = [
        ("callbacks", "stream back → new StartSnapshot", "p99 < 1 s, 0 starts into empty rooms"),
        ("polling", "idle stop → new StartSnapshot", f"≤ sweep period {period:.1f} s + 1 s"),
    ]
    for mode, what, target in runs:
        if args.mode in ("both", mode):
            measured = measure(mode, args.jobs, args.rooms, args.idle, args.resync, args.spread)
            report(f"{mode}, {tasks} rooms emptying over {args.spread:g} s", what, measured, target)


if __name__ == "__main__":
    main()
