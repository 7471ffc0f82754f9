"""Benchmark: the status page's answer at 10,000 tasks (issue 20: under 200 ms per page answer).

Builds what a daemon with N tasks knows (records, 24 h of runs with idle-outs and re-issues, room activity,
a full ring of recent log events), then asks the real routes over ASGI (no socket: the figure is capctl's
own time) for the page and its JSON twin, unfiltered, filtered by status and by job, at 100 and 500 tasks
per page. Prints the median wall time, the median CPU time (what the figure would be on an idle machine) and
the slowest of `--runs` answers for each.

    .venv/bin/python bench/status_page.py [--tasks 10000] [--runs 30] [--pythonpath TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time

from common import machine, median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--pythonpath", help="measure the reconciler package of another tree")
    args = parser.parse_args()
    if args.pythonpath:
        sys.path.insert(0, args.pythonpath)
    print(machine())
    asyncio.run(measure(args.tasks, args.runs))


async def measure(tasks: int, runs: int) -> None:
    import httpx
    from starlette.applications import Starlette

    from reconciler.logs import RECENT_EVENTS
    from reconciler.model import ApiFamily, JobKind, TaskRecord, TaskStatus
    from reconciler.status import (
        History,
        Replica,
        StatusInputs,
        StatusQuery,
        StatusSnapshot,
        build_snapshot,
        status_routes,
    )

    now = 1_800_000_000.0
    rng = random.Random(20)
    clock = _Replay(now - 86400)
    history = History(clock)
    records: list[TaskRecord] = []
    for i in range(tasks):
        key = f"SnapshotJob/job-{i // 10:05d}/room-{i:06d}"
        record = TaskRecord(
            key=key,
            provider="volc-prod",
            family=ApiFamily.VOLC_SNAPSHOT,
            kind=JobKind.SNAPSHOT,
            target=f"room-{i:06d}",
            spec_hash="hmac:x",
            fixed_hash="hmac:x",
            vendor_task_id=f"task-{i}",
        )
        start = now - 86400 + rng.uniform(0, 3600)
        for _ in range(rng.randint(1, 6)):  # a few idle-outs and re-issues in the last 24 h
            record = record.evolve(status=TaskStatus.RUNNING, started_at=start, stopped_at=None, stop_reason=None)
            clock.t = start
            history.note(record)
            stop = start + rng.uniform(600, 14_000)
            if stop >= now:
                break
            reason = "idle timeout (Volcengine IdleTimeOut)"
            record = record.evolve(status=TaskStatus.STOPPED, stopped_at=stop, stop_reason=reason)
            clock.t = stop - 300
            history.room_active(record.provider, record.target)
            clock.t = stop
            history.note(record)
            clock.t = stop + 200
            history.room_idle(record.provider, record.target)
            start = stop + rng.uniform(1, 900)
        if record.status is TaskStatus.STOPPED and rng.random() < 0.9:  # most were re-issued and run now
            record = record.evolve(status=TaskStatus.RUNNING, started_at=start, stopped_at=None, stop_reason=None)
            clock.t = start
            history.note(record)
        records.append(record)
    events = [
        {"timestamp": "2027-01-15T07:59:00Z", "level": "info", "event": "decision", "key": r.key, "action": "reissue"}
        for r in records[:RECENT_EVENTS]
    ]
    replica = Replica("leader", "holds the state lease", "sha256:0123456789abcdef", now - 600, "bench", None, None)
    inputs = StatusInputs(
        records, replica, history, {r.key: now + 30 for r in records}.get, events
    )  # no accounts: rooms by Provider name, as told above

    async def provider(query: StatusQuery) -> StatusSnapshot:
        return build_snapshot(inputs, query, now)

    app = Starlette(routes=status_routes(provider))
    cases = [
        ("/", {}),
        ("/", {"per_page": "500"}),
        ("/", {"status": "stopped"}),
        ("/", {"job": "job-00500"}),
        ("/", {"page": "50"}),
        ("/api/v1/status", {}),
        ("/api/v1/status", {"per_page": "500"}),
    ]
    counts = {s: sum(1 for r in records if r.status.value == s) for s in ("running", "stopped")}
    print(f"{tasks} tasks ({counts['running']} running, {counts['stopped']} stopped), {runs} answers each")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://status.local") as client:
        for path, params in cases:
            times, cpu = [], []
            for _ in range(runs):
                started, started_cpu = time.perf_counter(), time.process_time()
                answer = await client.get(path, params=params)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)
                assert answer.status_code == 200, answer.text[:200]
            query = "&".join(f"{k}={v}" for k, v in params.items())
            label = f"GET {path}{'?' + query if query else ''}"
            size = len(answer.content) / 1024
            print(
                f"  {label:<34} median {median(times) * 1000:6.1f} ms (CPU {median(cpu) * 1000:6.1f} ms)"
                f"  max {max(times) * 1000:6.1f} ms  {size:6.0f} KiB"
            )


class _Replay:
    """A clock set to each moment of the generated history in turn (it goes back from one task to the next,
    which `FakeClock` rightly refuses)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


if __name__ == "__main__":
    main()
