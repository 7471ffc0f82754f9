"""Shared pieces of the benchmark scripts: spec-set generation, state population, process helpers.

Benchmarks are plain scripts (never timed tests): each prints its figures. They share the spec generator
so every benchmark measures the same kind of spec set, and the simulator launcher so every loopback
benchmark talks to a real `capctl sim` subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CAPCTL = str(ROOT / ".venv" / "bin" / "capctl")

PROVIDERS = """\
apiVersion: capctl/v1
kind: Provider
metadata: {{name: volc-sim}}
spec:
  type: volcengine
  appId: {{env: CAPCTL_VOLC_APP_ID, default: "capctl-sim-volc"}}
  accessKey: {{env: VOLC_ACCESS_KEY, default: AKCAPCTLSIM0000000001}}
  secretKey: {{env: VOLC_SECRET_KEY, default: capctl-sim-volc-secret}}
  endpoint: {endpoint}
  callbackSecret: {{env: VOLC_CALLBACK_SECRET, default: capctl-sim-volc-callback}}
"""

STORAGE = """\
apiVersion: capctl/v1
kind: Storage
metadata: {name: volc-tos}
spec: {type: tos, accountId: "2100000000", region: 0, bucket: capctl-snapshots}
"""

JOB = """\
apiVersion: capctl/v1
kind: SnapshotJob
metadata: {{name: {name}, labels: {{team: bench}}}}
spec:
  provider: volc-sim
  rooms: [{rooms}]
  interval: 5s
  storage: volc-tos
  idleTimeout: {idle}s
"""


def write_specs(directory: Path, jobs: int, rooms: int, *, port: int = 8750, idle: int = 180) -> Path:
    """Providers + storage + `jobs` SnapshotJob files of `rooms` rooms each: `jobs * rooms` tasks."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "providers.yaml").write_text(PROVIDERS.format(endpoint=f"http://127.0.0.1:{port}/volc"))
    (directory / "storage.yaml").write_text(STORAGE)
    for j in range(jobs):
        names = ", ".join(f"room-{j}-{r}" for r in range(rooms))
        (directory / f"job-{j:05d}.yaml").write_text(JOB.format(name=f"job-{j:05d}", rooms=names, idle=idle))
    return directory


def room_names(jobs: int, rooms: int) -> Iterator[str]:
    for j in range(jobs):
        for r in range(rooms):
            yield f"room-{j}-{r}"


def populate_state(spec_dir: Path, state_url: str) -> int:
    """Record every task of the spec set as running, as a finished `apply` would (a no-op plan follows)."""
    from reconciler import transitions
    from reconciler.spec import load_spec_set
    from reconciler.state import open_state

    spec_set = load_spec_set([str(spec_dir)])
    now = time.time()
    records = []
    for task in spec_set.tasks.values():
        ref = {k: task.request[k] for k in ("AppId", "RoomId", "TaskId")}
        pending = transitions.intent(task, None, now, reissue=False)
        records.append(transitions.started(pending, ref["TaskId"], ref, now))
    store = open_state(state_url)
    try:
        store.put_many(records)
    finally:
        store.close()
    return len(records)


def bench_env() -> dict[str, str]:
    """The environment for capctl children: bytecode caching on, as an installed capctl has it."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most events in any `window`-second sliding window (how a vendor counts a rate limit)."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def simulator(port: int, *extra: str) -> Iterator[str]:
    """A `capctl sim` subprocess on loopback; yields its base URL."""
    proc = subprocess.Popen(
        [CAPCTL, "sim", "--listen", f"127.0.0.1:{port}", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/_sim/config")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def daemon(spec_dir: Path, state_url: str, port: int, resync: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `capctl run` subprocess on loopback, its output to `log_path`; yields it once /healthz answers."""
    argv = [CAPCTL, "run", "--listen", f"127.0.0.1:{port}", "--resync", resync, "--state", state_url, str(spec_dir)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=bench_env())
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
            yield proc
        finally:
            proc.terminate()
            proc.wait(30)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return f"{os.cpu_count()} cpus ({cpu}), python {sys.version.split()[0]}"
