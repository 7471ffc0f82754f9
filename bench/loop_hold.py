"""Benchmark: how long one `/metrics` scrape and one status page answer hold the daemon's event loop.

`capctl run` serves HTTP on a thread of its own but collects `/metrics` and builds each status page on the
daemon's loop (the gauges and the page read records the loop changes); while it does, no callback, sync or
worker step runs. This measures that hold: the real daemon (as `capctl run` builds it, on a SQLite state file)
and the real simulator in one process on one virtual clock (tests/daemon/conftest.py's harness, as
coverage_day.py uses it), `--jobs` × `--rooms` SnapshotJob tasks, every one started and running. Then,
`--runs` times each: `Metrics.render` (the whole scrape), the status page's snapshot build for the page and its
JSON twin (the part on the loop), and, for scale, the page's rendering (on the HTTP thread: holds no loop).
Prints the median, CPU median and the slowest of each. Target: < 100 ms held per answer at 10,000 tasks.

    .venv/bin/python bench/loop_hold.py [--jobs 1000] [--rooms 10] [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT, machine, median

sys.path.insert(0, str(ROOT))  # the harness lives with the daemon tests

from reconciler import logs
from reconciler.clock import FakeClock
from reconciler.daemon.status import snapshot_provider
from reconciler.status import StatusQuery
from reconciler.status.render import render_html, to_json
from tests.daemon.conftest import SIM, Harness
from tests.specdocs import STORAGE, providers, snapshot_job


async def measure(jobs: int, rooms: int, runs: int, tmp: Path) -> None:
    specs = tmp / "specs"
    specs.mkdir()
    (specs / "providers.yaml").write_text(providers(SIM, callbacks=True) + "---\n" + STORAGE)
    docs = (snapshot_job(f"job-{j:05d}", [f"room-{j}-{r}" for r in range(rooms)], idle=86400) for j in range(jobs))
    (specs / "jobs.yaml").write_text("---\n".join(docs))
    harness = Harness(tmp, FakeClock(start=1_800_000_000.0))
    wall = time.perf_counter()
    daemon = await harness.start(resync=30.0)
    tasks = jobs * rooms
    while (running := daemon.reconciler.status_counts().get("running", 0)) < tasks:
        await harness.advance(10)
    print(f"{running} tasks running after {time.perf_counter() - wall:.0f} s of wall time")
    provide = snapshot_provider(daemon)  # a leader's: no store read, the build on the loop only
    page, large = StatusQuery.parse({}), StatusQuery.parse({"per_page": "500"})
    scrape = daemon.metrics.render()
    print(f"/metrics: {len(scrape) // 1024} KiB, {len(scrape.splitlines())} lines")
    snapshot = await provide(page)

    async def build(query: StatusQuery) -> None:
        await provide(query)

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("GET /metrics (on the loop)", daemon.metrics.render),
        ("GET / build (on the loop)", lambda: build(page)),
        ("GET /?per_page=500 build (on the loop)", lambda: build(large)),
        ("GET / render (HTTP thread)", lambda: render_html(snapshot)),
        ("GET /api/v1/status render (HTTP thread)", lambda: to_json(snapshot)),
    ]
    for name, call in cases:
        walls, cpus = [], []
        for _ in range(runs):
            w, c = time.perf_counter(), time.process_time()
            if asyncio.iscoroutine(result := call()):
                await result
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        print(
            f"  {name:40} median {1000 * median(walls):7.1f} ms (CPU {1000 * median(cpus):6.1f} ms)"
            f"  max {1000 * max(walls):7.1f} ms"
        )
    await harness.stop()
    await harness.sim.callbacks.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(machine())
    logs.configure("info", json_logs=True, stream=io.StringIO())  # as the daemon logs, into memory
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(measure(args.jobs, args.rooms, args.runs, Path(tmp)))


if __name__ == "__main__":
    main()
