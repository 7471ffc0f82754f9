"""Benchmark 3: the daemon's steady state with 10,000 running tasks and nothing changing.

Starts `capctl sim`, then `capctl run` on 1,000 SnapshotJobs × 10 rooms (idleTimeout 86400 s, so nothing
idles out) with an empty state: the daemon starts every task itself (150/s), then only polls. Once every
task runs it settles, then samples the daemon's CPU time and RSS (/proc) for a window (60 s) and counts the
GetSnapshotTask calls the simulator received in that window. Then it stops the daemon and measures the
CPU cost of one poll (this process observing recorded tasks through the same provider code, paced by the
same budget), so "CPU beyond the budgeted polling itself" = total − polls × cost per poll.
Targets: beyond-polling CPU < 5 % of one core, RSS < 300 MB, poll rate within 5 % of the query budget
(60/s × headroom) and never above 60 in any one-second window.

    .venv/bin/python bench/daemon_steady.py [--jobs 1000] [--rooms 10] [--window 60] [--settle 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from common import daemon, free_port, http_json, machine, max_in_window, simulator, write_specs

from reconciler.budget import HEADROOM

QUERY_LIMIT = 60.0  # Volcengine GetSnapshotTask
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of one Prometheus counter's samples whose labels include `labels`."""
    import urllib.request

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def poll_times(base: str, since: float, until: float) -> list[float]:
    entries = http_json("GET", base + "/_sim/requests")["requests"]
    return [e["time"] for e in entries if e["api"] == "GetSnapshotTask" and since <= e["time"] < until]


async def cost_per_poll(spec_dir: Path, state_url: str, polls: int) -> float:
    """CPU seconds per GetSnapshotTask of the provider code (signing, HTTP, parsing), paced by its budget."""
    from reconciler.clock import SystemClock
    from reconciler.engine import provider_pool
    from reconciler.spec import load_spec_set
    from reconciler.state import open_state

    spec_set = load_spec_set([str(spec_dir)])
    store = open_state(state_url)
    records = list(store.load().records.values())[:polls]
    store.close()
    clock = SystemClock()
    async with provider_pool(spec_set.providers, clock) as pool:
        started = time.process_time()
        await asyncio.gather(*(pool(r.provider, r.family).observe(r) for r in records))
        return (time.process_time() - started) / len(records)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    tasks = args.jobs * args.rooms
    print(f"machine: {machine()}")
    sim_port, daemon_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp, simulator(sim_port) as base:
        spec_dir = write_specs(Path(tmp) / "specs", args.jobs, args.rooms, port=sim_port, idle=86400)
        state_url = f"sqlite:///{tmp}/state.db"
        daemon_url = f"http://127.0.0.1:{daemon_port}"
        with daemon(spec_dir, state_url, daemon_port, "30s", Path(tmp) / "daemon.log") as proc:
            t0 = time.monotonic()
            while metric(daemon_url + "/metrics", "capctl_tasks", status="running") < tasks:
                time.sleep(2)
            print(f"daemon started {tasks} tasks in {time.monotonic() - t0:.1f} s")
            time.sleep(args.settle)
            wall0, cpu0 = time.time(), cpu_seconds(proc.pid)
            calls0 = metric(daemon_url + "/metrics", "capctl_vendor_calls_total", api="GetSnapshotTask")
            peak = 0.0
            while time.time() - wall0 < args.window:
                peak = max(peak, rss_mb(proc.pid))
                time.sleep(1)
            wall1, cpu1 = time.time(), cpu_seconds(proc.pid)
            calls1 = metric(daemon_url + "/metrics", "capctl_vendor_calls_total", api="GetSnapshotTask")
            times = poll_times(base, wall0, wall1)
            answers = http_json("GET", base + "/_sim/throttled")["throttled"]
            throttled = [f"{t['api']} {'in' if t['time'] >= wall0 else 'before'} the window" for t in answers]
        span = wall1 - wall0
        polls = calls1 - calls0
        budget = QUERY_LIMIT * HEADROOM
        time.sleep(2)  # the daemon's last polls leave the simulator's one-second window first
        per_poll = asyncio.run(cost_per_poll(spec_dir, state_url, 300))
        total = (cpu1 - cpu0) / span
        beyond = total - polls / span * per_poll
        print(
            f"daemon, {tasks} running tasks, {span:.0f} s window: CPU {100 * total:.1f} % of one core, "
            f"peak RSS {peak:.0f} MB"
        )
        print(
            f"polls {polls:.0f} (daemon metric) / {len(times)} (sim log) = {polls / span:.1f}/s; "
            f"budget {budget:.1f}/s (60/s × {HEADROOM}): {polls / span / budget:.3f} × budget; "
            f"most in any 1 s window {max_in_window(times)} (limit 60)"
        )
        print(f"throttled answers since the simulator started: {len(throttled)} ({', '.join(throttled) or 'none'})")
        print(
            f"CPU per poll {1000 * per_poll:.2f} ms → polling {100 * polls / span * per_poll:.1f} % of a core; "
            f"beyond polling {100 * beyond:.1f} % of one core"
        )


if __name__ == "__main__":
    main()
