"""End-to-end harness: the real `capctl` CLI (subprocesses) against a real `capctl sim` on loopback.

One simulator per test module (fake clock, moved by the tests through its control API), reset before every
test; each test gets its own spec directory and SQLite state under tmp_path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ServerOutput, daemon_output, sim_output
from tests.specdocs import STORAGE, providers

# Distinctive storage credentials: tests assert they never appear anywhere capctl writes.
CANARY_AK = "AKCANARY0000E2E"
CANARY_SK = "canary-storage-secret-7f3a9c"
SIM_SECRETS = ("capctl-sim-volc-secret", "0123456789abcdef0123456789abcdef")


class Sim:
    def __init__(self, base: str) -> None:
        self.base = base
        # A connection per call: the simulator (uvicorn) closes one idle for 5 s, and a call the test makes about
        # 5 s after its last (one capctl run on a loaded machine) could go out on it as it closed: ReadError.
        self.http = httpx.Client(
            base_url=f"{base}/_sim", timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)
        )

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = self.http.post(path, json=body or {})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def get(self, path: str, **params: str | int) -> Any:
        answer = self.http.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def faults(self, **config: float | str | list[str]) -> None:
        answer = self.http.put("/faults", json=config)
        assert answer.status_code == 200, answer.text

    def advance(self, seconds: float) -> None:
        self.post("/clock", {"advance": seconds})

    def publish(self, vendor: str, room: str, **who: str | int) -> None:
        self.post("/publish", {"vendor": vendor, "roomId": room, **who})

    def unpublish(self, vendor: str, room: str, **who: str | int) -> None:
        self.post("/unpublish", {"vendor": vendor, "roomId": room, **who})

    def tasks(self, vendor: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("vendor", vendor), ("state", state)) if v}
        return list(self.get("/tasks", **params)["tasks"])

    def requests(self, api: str | None = None) -> list[dict[str, Any]]:
        entries = self.get("/requests", limit=10000)
        items = entries["requests"] if isinstance(entries, dict) else entries
        return [e for e in items if api is None or e.get("api") == api]

    def throttled(self) -> int:
        return int(self.get("/throttled")["total"])


@pytest.fixture(scope="module")
def sim_server() -> Iterator[Sim]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "sim", "--fake-clock", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sim = Sim(sim_output(proc).url())
    yield sim
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def sim(sim_server: Sim) -> Sim:
    sim_server.post("/reset")
    return sim_server


class Workdir:
    """A spec directory + state for one test, and a way to run the CLI in it."""

    def __init__(self, root: Path, sim: Sim) -> None:
        self.root = root
        self.specs = root / "specs"
        self.specs.mkdir()
        self.state = root / "state.db"
        self.sim = sim
        self.env = {
            **os.environ,
            "CAPCTL_STATE": f"sqlite:///{self.state}",
            "CAPCTL_MAX_ATTEMPTS": "3",
            "S3_AK": CANARY_AK,
            "S3_SK": CANARY_SK,
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        self.outputs: list[str] = []
        self.spawned: list[subprocess.Popen[str]] = []
        self.write("providers.yaml", providers(sim.base))
        self.write("storage.yaml", STORAGE)

    def write(self, name: str, text: str) -> Path:
        path = self.specs / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def capctl(
        self,
        *args: str,
        expect: int | None = 0,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`capctl ARGS` here; `stdin`: the text it reads (else none)."""
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            cwd=self.root,
            text=True,
            capture_output=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
        self.outputs += [proc.stdout, proc.stderr]
        if expect is not None:
            assert proc.returncode == expect, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    def apply(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        return self.capctl("apply", "--auto-approve", *args, expect=expect)

    def spawn(
        self,
        *args: str,
        stdout: int = subprocess.PIPE,
        stderr: int = subprocess.PIPE,
        preexec_fn: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        """`capctl ARGS` here as a background process (no stdin), for tests that signal it or read it live."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=preexec_fn,
        )
        self.spawned.append(proc)
        return proc

    def reap(self) -> None:
        """Kill what the test left running: a daemon whose start timed out on a loaded machine (its test failed
        before its own clean-up) ran on for 50 minutes, loading the machine for every test after it."""
        for proc in self.spawned:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    def run_daemon(
        self, *args: str, preexec_fn: Callable[[], None] | None = None, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[str], ServerOutput]:
        """`capctl run --listen 127.0.0.1:0 ARGS` here, and its log (read by one thread; it says the URL)."""
        proc = self.spawn(
            "run", "--listen", "127.0.0.1:0", *args, stdout=subprocess.DEVNULL, preexec_fn=preexec_fn, env=env
        )
        return proc, daemon_output(proc)


@pytest.fixture
def work(tmp_path: Path, sim: Sim) -> Iterator[Workdir]:
    workdir = Workdir(tmp_path, sim)
    yield workdir
    workdir.reap()
