"""Benchmark 2: `capctl apply` of 2,000 creates against the simulator at 150 requests/s, 30 ms latency.

Starts `capctl sim` on loopback, injects 30 ms latency on every call, generates 200 SnapshotJobs × 10
rooms pointing at it and runs the real CLI (`apply --auto-approve --no-refresh`, at the default window unless
`--parallelism N` is given, which is passed on as the cap). The
physical floor is 2,000 / 150 = 13.3 s. Prints the CLI wall time and its ratio to the floor, the CLI's
start (its launch to the first StartSnapshot seen by the simulator), the span from the first to the last
StartSnapshot (the executor alone), its tail (the last StartSnapshot to the CLI's exit), the most requests
in any 1 s window at the simulator, and the number of throttling answers provoked (must be 0). Then the
baseline a user would otherwise write: a plain sequential loop of StartSnapshot calls through the official
Volcengine SDK against the same simulator.

    .venv/bin/python bench/apply_throughput.py [--jobs 200] [--rooms 10] [--parallelism N] [--baseline 2000]
        [--port P]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from common import CAPCTL, bench_env, free_port, http_json, machine, max_in_window, simulator, write_specs

RATE = 150.0  # Volcengine StartSnapshot, the simulator's default limit
LATENCY_MS = 30


def run_apply(spec_dir: Path, state_url: str, parallelism: int | None) -> tuple[float, float]:
    """The CLI's wall time, and when it was launched (unix time, as the simulator logs its requests)."""
    cap = ["--parallelism", str(parallelism)] if parallelism else []
    argv = [CAPCTL, "apply", "--auto-approve", "--no-refresh", *cap, "--state", state_url, str(spec_dir)]
    launched, started = time.time(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=bench_env(), check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"capctl apply failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return wall, launched


def start_times(base: str) -> list[float]:
    """When the simulator received each StartSnapshot (its request log, on its clock)."""
    entries = http_json("GET", base + "/_sim/requests")["requests"]
    return [e["time"] for e in entries if e["api"] == "StartSnapshot"]


def window_margin(times: list[float], limit: int) -> float:
    """How close the vendor came to counting `limit` + 1 requests in one second: the shortest span of
    `limit` + 1 consecutive arrivals, minus 1 s (negative: one of them was throttled). Even pacing at
    headroom h leaves (1/h - 1) s; what arrival jitter ate of it is the rest."""
    ordered = sorted(times)
    return min(ordered[i + limit] - ordered[i] for i in range(len(ordered) - limit)) - 1.0


def sdk_baseline(base: str, port: int, count: int) -> float:
    """A sequential loop over the official SDK's `Service.json`, the straightforward user-written script."""
    from volcengine.ApiInfo import ApiInfo
    from volcengine.base.Service import Service
    from volcengine.Credentials import Credentials
    from volcengine.ServiceInfo import ServiceInfo

    config = http_json("GET", base + "/_sim/config")["volcengine"]
    info = ServiceInfo(
        f"127.0.0.1:{port}",
        {"Accept": "application/json"},
        Credentials(config["accessKey"], config["secretKey"], "rtc", config["region"]),
        5,
        5,
    )
    apis = {
        "StartSnapshot": ApiInfo(
            "POST", config["pathPrefix"] + "/", {"Action": "StartSnapshot", "Version": "2023-11-01"}, {}, {}
        )
    }
    service = Service(info, apis)
    started = time.perf_counter()
    for i in range(count):
        body = {
            "AppId": config["appId"],
            "RoomId": f"sdk-room-{i}",
            "TaskId": "sdk-loop",
            "StorageConfig": {
                "Type": 0,
                "TosConfig": {"AccountId": "2100000000", "Region": 0, "Bucket": "capctl-snapshots"},
            },
        }
        service.json("StartSnapshot", {}, json.dumps(body))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--parallelism", type=int, default=None, help="the cap to pass (default: capctl's own)")
    parser.add_argument("--baseline", type=int, default=2000, help="SDK loop calls (0 to skip)")
    parser.add_argument("--port", type=int, default=None, help="the simulator's loopback port (default: a free one)")
    args = parser.parse_args()
    tasks = args.jobs * args.rooms
    floor = tasks / RATE
    print(f"machine: {machine()}")
    port = args.port or free_port()
    with tempfile.TemporaryDirectory() as tmp, simulator(port) as base:
        spec_dir = write_specs(Path(tmp) / "specs", args.jobs, args.rooms, port=port, idle=86400)
        http_json("PUT", base + "/_sim/faults", {"latencyMs": LATENCY_MS})
        wall, launched = run_apply(spec_dir, f"sqlite:///{tmp}/state.db", args.parallelism)
        times = start_times(base)
        span, logged = max(times) - min(times), len(times)
        tail = launched + wall - max(times)  # the last answer, its commit, the summary and the exit
        throttled = http_json("GET", base + "/_sim/throttled")["total"]
        running = len(http_json("GET", base + "/_sim/tasks?vendor=volcengine&state=running")["tasks"])
        print(
            f"capctl apply {tasks} creates, parallelism {args.parallelism or 'default'}, {LATENCY_MS} ms latency, "
            f"{RATE:.0f}/s limit: wall {wall:.2f} s = {wall / floor:.3f} × floor ({floor:.2f} s); "
            f"launch→first StartSnapshot {min(times) - launched:.2f} s; "
            f"first→last StartSnapshot {span:.2f} s = {span / ((logged - 1) / RATE):.3f} × paced span; "
            f"last StartSnapshot→exit {tail:.3f} s; "
            f"most in any 1 s window at the sim {max_in_window(times)}; "
            f"margin to the limit {window_margin(times, int(RATE)) * 1000:.1f} ms; throttled answers {throttled}; "
            f"running tasks {running}"
        )
        if args.baseline:
            http_json("POST", base + "/_sim/reset")
            http_json("PUT", base + "/_sim/faults", {"latencyMs": LATENCY_MS})
            sdk = sdk_baseline(base, port, args.baseline)
            sdk_floor = args.baseline / RATE
            print(
                f"official SDK sequential loop, {args.baseline} StartSnapshot: wall {sdk:.2f} s = "
                f"{sdk / sdk_floor:.3f} × floor ({sdk_floor:.2f} s)"
            )


if __name__ == "__main__":
    main()
