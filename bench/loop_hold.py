"""Benchmark: how long each answer and event holds the daemon's event loop (a scrape, a page, a sync, ...).

`capctl run` serves HTTP on a thread of its own but collects `/metrics`, builds each status page and answers
callbacks, /readyz, sync and wake on the daemon's loop (they read records the loop changes); a spec reload
and a term's read of the state (start, takeover) read in a thread and take the result on the loop. While the
loop is held, no callback, sync or worker step runs. This measures each hold: the real daemon (as `capctl
run` builds it, on a SQLite state file) and the real simulator in one process on one virtual clock
(tests/daemon/conftest.py's harness, as coverage_day.py uses it), `--jobs` × `--rooms` SnapshotJob tasks,
every one started and running. Then, `--runs` times each: `Metrics.render` (the whole scrape), the status
page's snapshot build (the first page, `?room=`, `?job=`, the last page, 500 a page), /readyz, a routed room
callback, a spec reload that changes one job (its take, on the loop), a takeover's adoption of the state it
read and its `regained` pass, `sync` and `wake` with a glob matching every key; and, for scale, the parts off
the loop: the page's rendering (on the HTTP thread) and the takeover's read (in a thread); and a full
collection of the cyclic garbage collector (it runs in whichever step allocates past its threshold, on the
loop most often: the slowest answer of each case is one). Prints the median,
CPU median and the slowest of each. Target: < 100 ms held per answer at 10,000 tasks; nothing near a
callback's 5 s answer budget or the lease's renew deadline (10 s) at 100,000.

Then the collector over time (walk 32b): `--takeovers` takeovers (the read, its adoption, `regained`) each
followed by a reload, with the objects frozen and the RSS after each (a frozen heap that leaked would grow
there), then the full (generation 2) passes during `--hour` seconds of the steady daemon (every task running,
its sweeps, the resync) with their count and length, and one full pass timed at the end. `--gc` picks what
the daemon does: `freeze` (what it does: the heap frozen after each term's read and each spec set taken),
`none` (those freezes skipped), `threshold` (no freeze, thresholds raised to 50,000/20/100).

    .venv/bin/python bench/loop_hold.py [--jobs 1000] [--rooms 10] [--runs 30] [--hour 3600] [--takeovers 20]
        [--gc freeze|none|threshold] [--no-cases]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT, machine, median

sys.path.insert(0, str(ROOT))  # the harness lives with the daemon tests

from reconciler import gcpause, logs
from reconciler.clock import FakeClock
from reconciler.daemon.specset import read_specs
from reconciler.daemon.status import snapshot_provider
from reconciler.status import StatusQuery
from reconciler.status.render import render_html, to_json
from tests.daemon.conftest import SIM, Harness
from tests.daemon.test_http import volc_body
from tests.specdocs import STORAGE, providers, snapshot_job


class FullPasses:
    """The collector's generation-2 passes, timed through `gc.callbacks`."""

    def __init__(self) -> None:
        self.lengths: list[float] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                self._began = time.perf_counter()
            else:
                self.lengths.append(time.perf_counter() - self._began)


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


async def over_time(harness: Harness, daemon: Any, hour: float, takeovers: int, reloads: list[Any]) -> None:
    passes = FullPasses()
    gc.callbacks.append(passes)
    lengths = passes.lengths
    frozen, rss = [], []
    key = daemon.specs.fingerprint_key
    for n in range(takeovers):  # as `Lease._take_over` does, then a reload that changes one job
        await asyncio.to_thread(daemon.records.fetch)
        daemon._read_afresh()
        daemon._regained()
        daemon.specs.take(reloads[n % 2], key)
        await harness.advance(10)
        frozen.append(gc.get_freeze_count())
        rss.append(rss_mib())
    if takeovers:
        print(
            f"  {takeovers} takeovers + reloads: {len(lengths)} full passes, max {1000 * max(lengths or [0]):.1f} ms;"
            f" frozen {frozen[0]:,} after the first, {frozen[-1]:,} after the last (max {max(frozen):,});"
            f" RSS {rss[0]:.0f} MiB after the first, {rss[-1]:.0f} MiB after the last (max {max(rss):.0f})"
        )
    lengths.clear()
    wall = time.perf_counter()
    for _ in range(int(hour // 10)):
        await harness.advance(10)
    print(
        f"  then steady {hour:.0f} s: {len(lengths)} full passes, median {1000 * median(lengths or [0]):.1f} ms,"
        f" max {1000 * max(lengths or [0]):.1f} ms, total {sum(lengths):.2f} s"
        f" ({time.perf_counter() - wall:.0f} s wall); RSS {rss_mib():.0f} MiB, frozen {gc.get_freeze_count():,}"
    )
    gc.callbacks.remove(passes)
    began = time.perf_counter()
    gc.collect()
    print(f"  a full pass then: {1000 * (time.perf_counter() - began):.1f} ms")


async def measure(jobs: int, rooms: int, runs: int, tmp: Path, args: argparse.Namespace) -> None:
    specs = tmp / "specs"
    specs.mkdir()
    (specs / "providers.yaml").write_text(providers(SIM, callbacks=True) + "---\n" + STORAGE)
    docs = [snapshot_job(f"job-{j:05d}", [f"room-{j}-{r}" for r in range(rooms)], idle=86400) for j in range(jobs)]
    (specs / "jobs.yaml").write_text("---\n".join(docs))
    harness = Harness(tmp, FakeClock(start=1_800_000_000.0))
    wall = time.perf_counter()
    daemon = await harness.start(resync=30.0)
    tasks = jobs * rooms
    while (running := daemon.reconciler.status_counts().get("running", 0)) < tasks:
        await harness.advance(10)
    print(f"{running} tasks running after {time.perf_counter() - wall:.0f} s of wall time")
    provide = snapshot_provider(daemon)  # a leader's: no store read, the build on the loop only
    middle = jobs // 2
    page, large = StatusQuery.parse({}), StatusQuery.parse({"per_page": "500"})
    by_room = StatusQuery.parse({"room": f"room-{middle}-0"})
    by_job = StatusQuery.parse({"job": f"job-{middle:05d}"})
    last = StatusQuery.parse({"page": str(-(-tasks // 50))})
    scrape = daemon.metrics.render()
    print(f"/metrics: {len(scrape) // 1024} KiB, {len(scrape.splitlines())} lines")
    snapshot = await provide(page)

    async def build(query: StatusQuery) -> None:
        await provide(query)

    # A reload that changes one job's idle timeout, and the next that changes it back: one job changed each.
    key = daemon.specs.fingerprint_key
    changed = docs[middle].replace("86400", "86399")
    (specs / "jobs.yaml").write_text("---\n".join([*docs[:middle], changed, *docs[middle + 1 :]]))
    reloads = [read_specs([str(specs)], key)]
    (specs / "jobs.yaml").write_text("---\n".join(docs))
    reloads.append(read_specs([str(specs)], key))
    events = iter(range(10**9))
    if args.hour or args.takeovers:
        await over_time(harness, daemon, args.hour, args.takeovers, reloads)
    if not args.cases:
        await harness.stop()
        await harness.sim.callbacks.aclose()
        return

    async def callback() -> None:
        body = volc_body(harness, event_id=f"e{next(events)}", data={"RoomId": f"room-{middle}-1", "UserId": "u"})
        await daemon.handle_callback("volcengine", json.dumps(body).encode())

    def reload() -> None:
        daemon.specs.take(reloads[next(events) % 2], key)

    def adopt() -> None:
        daemon.records.refresh()  # what `fetch` read in its thread, as a takeover takes it

    async def fetch() -> None:
        await asyncio.to_thread(daemon.records.fetch)

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("GET /metrics (on the loop)", daemon.metrics.render),
        ("GET / build (on the loop)", lambda: build(page)),
        ("GET /?per_page=500 build (on the loop)", lambda: build(large)),
        ("GET /?room= build (on the loop)", lambda: build(by_room)),
        ("GET /?job= build (on the loop)", lambda: build(by_job)),
        ("GET /?page=last build (on the loop)", lambda: build(last)),
        ("GET / render (HTTP thread)", lambda: render_html(snapshot)),
        ("GET /api/v1/status render (HTTP thread)", lambda: to_json(snapshot)),
        ("GET /readyz (on the loop)", daemon.readiness),
        ("POST /callbacks, a room event (on the loop)", callback),
        ("spec reload, one job changed (on the loop)", reload),
        ("takeover: the state read (a thread)", fetch),
        ("takeover: the read adopted (on the loop)", adopt),
        ("takeover: regained (on the loop)", daemon._regained),
        ("POST /api/v1/sync SnapshotJob/* (on the loop)", lambda: daemon.sync(["SnapshotJob/*"])),
        ("POST /api/v1/wake SnapshotJob/* (on the loop)", lambda: daemon.wake(["SnapshotJob/*"])),
        ("a full garbage collection (wherever it falls)", gc.collect),
    ]
    for name, call in cases:
        walls, cpus = [], []
        for _ in range(runs):
            if call is adopt:
                await fetch()
            w, c = time.perf_counter(), time.process_time()
            if asyncio.iscoroutine(result := call()):
                await result
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        print(
            f"  {name:48} median {1000 * median(walls):7.1f} ms (CPU {1000 * median(cpus):6.1f} ms)"
            f"  max {1000 * max(walls):7.1f} ms"
        )
    print(f"  (sync: {daemon.sync(['SnapshotJob/*'])[1]}; wake: {daemon.wake(['SnapshotJob/*'])[1]})")
    await harness.stop()
    await harness.sim.callbacks.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--hour", type=float, default=3600.0)
    parser.add_argument("--takeovers", type=int, default=20)
    parser.add_argument("--gc", choices=["freeze", "none", "threshold"], default="freeze")
    parser.add_argument("--no-cases", dest="cases", action="store_false")
    args = parser.parse_args()
    if args.gc != "freeze":
        gcpause.freeze_heap = lambda: None  # the daemon's freezes skipped
    if args.gc == "threshold":
        gc.set_threshold(50_000, 20, 100)
    print(machine(), f"gc={args.gc}")
    logs.configure("info", json_logs=True, stream=io.StringIO())  # as the daemon logs, into memory
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(measure(args.jobs, args.rooms, args.runs, Path(tmp), args))


if __name__ == "__main__":
    main()
