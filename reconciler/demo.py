"""`capctl demo`: the main job end to end on the quickstart specs, against a local simulator.

It runs the real pieces, not a recording: the simulator and the daemon are subprocesses (`capctl sim`,
`capctl run`), plan and apply go through the same engine as the CLI, and room activity is driven through the
simulator's control API, whose clock the demo moves forward so idle timeouts happen in seconds.

It works on any ports: the simulator may take any free one (port 0; it says which), the quickstart specs
take their endpoints from the `CAPCTL_*_ENDPOINT` variables the demo sets (inherited by the daemon), and
the daemon's port is known before the simulator starts, because the simulator must be told where to send
callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import math
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reconciler import logs
from reconciler.clock import SystemClock
from reconciler.engine import apply_plan, make_plan, provider_pool
from reconciler.listen import url_of
from reconciler.plan import PlanOptions, fmt_seconds, plan_to_json
from reconciler.providers.volcengine import stop_reason_of
from reconciler.providers.zego_client import recording_stop_reason
from reconciler.render import render_apply_result, render_text
from reconciler.secrets import new_fingerprint_key
from reconciler.spec import SpecSet
from reconciler.state import open_state

__all__ = ["SIM_ENDPOINTS", "DemoError", "quickstart", "quickstart_copy", "run_demo", "sim_url", "until_stopped"]

DEMO_STATE = Path(".capctl/demo.db")
DEMO_STATE_URL = f"sqlite:///{DEMO_STATE}"
WAIT_SECONDS = 60.0
# The variables the quickstart specs (specs/providers.yaml) read their endpoints from, and the simulator's
# path for each (docs/simulator.md): the demo points them at its own simulator, wherever it listens.
SIM_ENDPOINTS = {
    "CAPCTL_VOLC_ENDPOINT": "/volc",
    "CAPCTL_ZEGO_RTC_ENDPOINT": "/zego/rtc",
    "CAPCTL_ZEGO_CLOUDRECORD_ENDPOINT": "/zego/cloudrecord",
}
SIM_READY = re.compile(r"^capctl sim listening on (http://\S+) ")
STREAMS: list[tuple[str, str, dict[str, Any]]] = [  # (vendor, room, publisher): one per room of the quickstart
    ("volcengine", "lobby", {"userId": "alice", "streamType": 0}),
    ("volcengine", "vip-1", {"userId": "bob", "streamType": 0}),
    ("zego", "class-101", {"userId": "teacher", "streamId": "teacher"}),
]


class DemoError(Exception):
    pass


def quickstart() -> str:
    """The quickstart specs shipped in the package: reconciler/quickstart links to the repository's specs/,
    whose files the build copies into the sdist and the wheel, so an installed capctl has them too. Run from a
    checkout (an editable install), the link itself is where it leads: `cp -r LINK specs`, which the demo's
    last line suggests, would copy the relative link, dangling, and the daemon would watch the link's parent,
    reconciler/, reloading the set at each edit of the code or the docs."""
    shipped = Path(str(files("reconciler") / "quickstart"))
    return str(shipped.resolve() if shipped.is_symlink() else shipped)


def quickstart_copy(source: str | None = None) -> str:
    """The shell line the demo's last line suggests to copy the quickstart specs (or `source`) into ./specs:
    quoted, as a venv's path may hold a space (`~/My Projects/.venv`), which split it into two arguments."""
    return f"cp -r {shlex.quote(source or quickstart())} specs"


@contextlib.contextmanager
def _process(
    args: list[str], *, stdout: Any = subprocess.DEVNULL, stderr: Any = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[str]]:
    # -P: the working directory stays off the children's import path, or a `reconciler/` there (a capctl
    # checkout's, where the demo finds ./specs) would run as the simulator and the daemon instead of this capctl.
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "reconciler", *args],
        stdout=stdout,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def _signals_end_it_as_ctrl_c_does() -> Iterator[None]:
    """SIGTERM (`kill`, `timeout`, a service manager) and SIGHUP (its terminal closed) end the demo through its
    clean-up, as Ctrl-C does, which stops the simulator and the daemon it started. By default they would end
    the demo alone and leave both running, holding their ports. The exit code is 128 + the signal's number."""

    def end(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    # One ignored when it started stays ignored, as `capctl apply` keeps it: `nohup capctl demo` outlives its terminal.
    taken = [s for s in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {signum: signal.signal(signum, end) for signum in taken}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def sim_url(proc: subprocess.Popen[str], within: float = WAIT_SECONDS) -> str:
    """The URL a `capctl sim` started with stdout piped says it listens on (the real port for port 0).
    Its output is read to the end on a thread, so the simulator never blocks on a full pipe. A simulator that
    exits is reported at once with what it said (its own error: a port taken), whether or not its output
    has ended (a process it left may hold the pipe); one still starting is waited for as long as the demo
    waits for its daemon (`within`): a cold start on a loaded machine takes more than a few seconds."""
    assert proc.stdout is not None
    stdout, lines = proc.stdout, queue.SimpleQueue[str | None]()

    def read() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True, name="capctl-demo-sim-output").start()
    said: list[str] = []
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=min(left, 0.2))
        except queue.Empty:
            if proc.poll() is None:
                continue
            line = None  # exited, its output not ended: what it said before exiting is in the queue by now
            with contextlib.suppress(queue.Empty):
                while (more := lines.get(timeout=0.2)) is not None:
                    said.append(more.strip())
        if line is None:
            code = proc.wait()
            raise DemoError(f"the simulator exited at start-up (exit code {code}): " + " ".join(said).strip())
        if found := SIM_READY.match(line):
            return found.group(1)
        said.append(line.strip())
    so_far = " ".join(said).strip()
    raise DemoError(
        f"the simulator did not say where it listens within {within:.0f} s"
        + (f"; it said: {so_far}" if so_far else " (it said nothing)")
    )


def _reserve(host: str, port: int, what: str) -> socket.socket:
    """Hold (host, port) bound, not listening (connections are refused as by a free port), until the
    server that needs it starts; port 0 takes a free port now, so that its number is known in advance.
    Without SO_REUSEADDR no one else can bind it meanwhile; but then the connections of an earlier run that
    the kernel keeps for a minute after it ended (TIME_WAIT) refuse it too. So when nothing listens there,
    it is bound once more with SO_REUSEADDR, as every server (the daemon too) binds its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return _bound(family, host, port, reuse=False)
    except OSError as exc:
        error = exc
    if error.errno == errno.EADDRINUSE and not _listening(family, host, port):
        try:
            return _bound(family, host, port, reuse=True)
        except OSError as exc:
            error = exc
    raise DemoError(
        f"{host}:{port}: {error.strerror}: the demo's {what} needs it (is a `capctl run` already running? "
        "stop it first, or choose another port)"
    )


def _bound(family: socket.AddressFamily, host: str, port: int, *, reuse: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse))
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _listening(family: socket.AddressFamily, host: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) == 0


def _sim_environment(base: str) -> dict[str, str]:
    return {name: base + path for name, path in SIM_ENDPOINTS.items()}


def _check_endpoints(spec_set: SpecSet, base: str) -> None:
    """Every provider must call the demo's simulator: a spec set with literal endpoints elsewhere is refused."""
    for config in spec_set.providers.values():
        urls = (config.endpoint,) if config.type == "volcengine" else (config.rtc_endpoint, config.cloudrecord_endpoint)
        for url in urls:
            if not url.startswith(base + "/"):
                raise DemoError(
                    f"provider {config.name} ({config.source}) calls {url}, not the demo's simulator at {base}: "
                    f"give its endpoints as references, e.g. {{env: CAPCTL_VOLC_ENDPOINT, default: ...}} as "
                    "specs/providers.yaml does"
                )


class SimControl:
    """The simulator's control API (docs/simulator.md)."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=f"{base}/_sim", timeout=10.0)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        answer = self.http.post(path, json=body)
        answer.raise_for_status()
        return answer.json()

    def publish(self, vendor: str, room: str, who: dict[str, Any], *, on: bool) -> None:
        self.post("/publish" if on else "/unpublish", {"vendor": vendor, "roomId": room, **who})

    def advance(self, seconds: float) -> None:
        self.post("/clock", {"advance": seconds})

    def tasks(self) -> list[dict[str, Any]]:
        answer = self.http.get("/tasks")
        answer.raise_for_status()
        data = answer.json()
        return list(data["tasks"] if isinstance(data, dict) else data)


def _sim_stop_reason(task: dict[str, Any]) -> str:
    """Why the simulator ended a task, in the words plans and `state list` use."""
    if task.get("state") == "running":
        return "-"
    if task.get("vendor") == "volcengine":
        return stop_reason_of(task.get("stopReason") or None, task.get("status"))
    return recording_stop_reason(task.get("status"), task.get("quitReason"))


def _sim_table(sim: SimControl, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("VENDOR", "ROOM", "TASK", "STATE", "STOP REASON", "IMAGES"):
        table.add_column(column)
    for t in sim.tasks():
        cells = (
            str(t.get("vendor", "")),
            str(t.get("roomId", t.get("fileId", ""))),
            str(t.get("taskId", "")),
            str(t.get("state", "")),
            _sim_stop_reason(t),
            str(t.get("images", "-")),
        )
        table.add_row(*map(Text, cells))
    return table


class Walkthrough:
    def __init__(self, spec_set: SpecSet, paths: list[str], console: Console, sim: SimControl) -> None:
        self.spec_set, self.paths, self.console, self.sim = spec_set, paths, console, sim
        self.state_url = DEMO_STATE_URL

    def step(self, text: str) -> None:
        self.console.print(Text(f"\n▶ {text}", style="bold cyan"), soft_wrap=True)

    def command(self, text: str) -> None:
        self.console.print(Text(f"$ {text}", style="bold"), soft_wrap=True)  # may quote user paths

    def plan_and_apply(self, *, apply: bool) -> None:
        asyncio.run(self._plan_and_apply(apply))

    async def _plan_and_apply(self, apply: bool) -> None:
        store = open_state(self.state_url)
        clock = SystemClock()
        try:
            async with provider_pool(self.spec_set.providers, clock) as pool:
                run = await make_plan(self.spec_set.tasks, store, pool, clock, options=PlanOptions(), paths=self.paths)
                render_text(plan_to_json(run.plan), self.console)
                if apply:
                    result = await apply_plan(
                        run.plan, self.spec_set.tasks, run.snapshot, run.observed, store, pool, clock, parallelism=10
                    )
                    render_apply_result(result, self.console)
        finally:
            store.close()


def _daemon_lines(
    proc: subprocess.Popen[str], console: Console, seen: list[dict[str, Any]], lock: threading.Lock
) -> None:
    """Echo the daemon's decisions (its JSON log lines) as readable lines."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if os.environ.get("CAPCTL_DEMO_DEBUG"):
            sys.stderr.write(line)
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        with lock:
            seen.append(event)
        text = _describe(event)
        if text:
            console.print(Text.assemble(("  daemon", "magenta"), f" │ {text}"), soft_wrap=True)


def _describe(event: dict[str, Any]) -> str | None:
    name, key = event.get("event"), event.get("key", "")
    if name == "decision" and event.get("action") not in (None, "no-op", "wait"):
        return f"{key}: {event['action']} — {event.get('reason', '')}"
    if name == "started":
        return f"{key}: started (vendor task {event.get('vendor_task_id')})"
    if name == "decision" and event.get("action") == "wait":
        return f"{key}: waits{_wait(event.get('retry_in'))} — {event.get('reason', '')}"
    if name in ("daemon started", "spec set loaded", "room activity: waking task", "callback: run ended; observing"):
        detail = event.get("summary") or event.get("callback") or ""
        return f"{name} {key} {detail}".strip()
    return None


def _wait(seconds: object) -> str:
    """` 1h`, ` 4m30s`: a wait as the plan writes one (`fmt_seconds`), rounded up so it never reads shorter;
    nothing when the log line has no number."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    return " " + fmt_seconds(math.ceil(max(0.0, seconds)))


def _dormant(event: dict[str, Any], key: str) -> bool:
    return event.get("event") == "decision" and event.get("key") == key and event.get("status") == "dormant"


def _reissued(event: dict[str, Any], key: str) -> bool:
    return event.get("event") == "started" and event.get("key") == key and event.get("reissue") is True


def _wait_for(
    seen: list[dict[str, Any]],
    lock: threading.Lock,
    predicate: Callable[[dict[str, Any]], bool],
    proc: subprocess.Popen[str],
) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        with lock:
            if any(predicate(e) for e in seen):
                return True
        time.sleep(0.2)
    return False


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_demo(
    paths: list[str],
    load: Callable[[list[str], bytes | None], SpecSet],
    *,
    sim_at: tuple[str, int],
    daemon_at: tuple[str, int],
    console: Console,
    keep_running: bool = False,
) -> int:
    """The walk-through, with the simulator on `sim_at` and the daemon on `daemon_at` (port 0: any free port).
    `load` reads the specs once the demo has pointed the CAPCTL_*_ENDPOINT variables at its simulator, with the
    fingerprint key of the demo's new state (as every command reads them: records and specs hashed alike).
    Returns the exit code: 0, or 130 when Ctrl-C stopped a `keep_running` demo (SIGTERM then is a clean stop: 0)."""
    logs.configure("warning")  # the walk-through speaks for itself; the daemon's decisions are echoed below
    reserved = _reserve(*daemon_at, "daemon")
    daemon_listen = url_of(reserved).removeprefix("http://")
    callbacks = f"http://{daemon_listen}/callbacks"
    sim_args = ["sim", "--fake-clock", "--listen", _address(*sim_at)]
    sim_args += ["--volcengine-callback-url", f"{callbacks}/volcengine", "--zego-callback-url", f"{callbacks}/zego"]
    with (
        _signals_end_it_as_ctrl_c_does(),
        reserved,
        _process(sim_args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as sim_proc,
    ):
        base = sim_url(sim_proc)
        os.environ.update(_sim_environment(base))  # for the specs read here and by the daemon (it inherits them)
        key = new_fingerprint_key()
        spec_set = load(paths, key)
        _check_endpoints(spec_set, base)
        # Only now, both ports had and the specs calling the simulator: a demo that cannot start left a .capctl/
        # behind and the last demo's state deleted (walk 13a).
        DEMO_STATE.parent.mkdir(parents=True, exist_ok=True)
        DEMO_STATE.unlink(missing_ok=True)
        store = open_state(DEMO_STATE_URL)
        try:
            if store.fingerprint_key(key) != key:
                raise DemoError(f"another capctl demo started in this directory meanwhile ({DEMO_STATE})")
        finally:
            store.close()
        console.print(
            Text.assemble(
                ("capctl demo", "bold"),
                f": simulator on {base} (clock moved by the demo), daemon on http://{daemon_listen}, "
                f"state {DEMO_STATE}, specs {' '.join(paths)}",
                " (the quickstart specs shipped with capctl)" if paths == [quickstart()] else "",
            ),
            soft_wrap=True,
        )
        console.print(
            Text(
                "  the specs' endpoints follow the simulator: "
                + " ".join(f"{k}={v}" for k, v in _sim_environment(base).items())
            ),
            soft_wrap=True,
        )
        sim = SimControl(base)
        walk = Walkthrough(spec_set, paths, console, sim)
        walk.step("Users publish streams in lobby, vip-1 and class-101")
        for vendor, room, who in STREAMS:
            sim.publish(vendor, room, who, on=True)
        walk.step("Review what capctl would do")
        walk.command("capctl plan")
        walk.plan_and_apply(apply=False)
        walk.step("Converge")
        walk.command("capctl apply --auto-approve")
        walk.plan_and_apply(apply=True)
        sim.advance(10)
        console.print(_sim_table(sim, "At the (simulated) vendors, 10 s later"))
        walk.step("Everyone leaves the lobby; 21 s pass: its snapshot task idles out (MaxIdleTime 20 s)")
        sim.publish("volcengine", "lobby", {"userId": "alice", "streamType": 0}, on=False)
        sim.advance(21)
        console.print(_sim_table(sim, "At the vendors"))
        walk.step("The plan shows the re-issue, and why")
        walk.command("capctl plan")
        walk.plan_and_apply(apply=False)
        walk.command("capctl apply --auto-approve")
        walk.plan_and_apply(apply=True)
        reserved.close()  # the daemon binds it next (a closed socket's `with` exit is a no-op)
        code = _daemon_phase(walk, daemon_listen, keep_running)
    # Without --keep-running the daemon has stopped by now: its status page is offered, not linked.
    page = "" if keep_running else "`capctl demo --keep-running` to browse the daemon's status page, "
    start = f" (`{quickstart_copy()}` to start from these)" if paths == [quickstart()] else ""
    console.print(
        Text.assemble(
            ("\nDone.", "bold green"),
            " Next: `capctl state list --state sqlite:///.capctl/demo.db`, "
            f"{page}`capctl docs spec-language` to write your own specs{start}, "
            "`capctl docs daemon` to run capctl in a cluster.",
        ),
        soft_wrap=True,
    )
    return code


def _daemon_phase(walk: Walkthrough, listen: str, keep_running: bool) -> int:
    console, sim = walk.console, walk.sim
    walk.step("Now the daemon keeps the jobs running by itself")
    walk.command(f"capctl run --resync 5s --listen {listen} --state {walk.state_url} {' '.join(walk.paths)}")
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()
    args = ["run", "--resync", "5s", "--listen", listen, "--state", walk.state_url, *walk.paths]
    with _process(args, stderr=subprocess.PIPE) as daemon:
        reader = threading.Thread(target=_daemon_lines, args=(daemon, console, seen, lock), daemon=True)
        reader.start()
        if not _wait_for(seen, lock, lambda e: e.get("event") == "daemon started", daemon):
            with lock:
                said = "; ".join(f"{e.get('event')}: {e.get('error', '')}" for e in seen if e.get("level") == "error")
            raise DemoError(f"the daemon did not start: {said or 'it said nothing'}")
        walk.step("Rooms vip-1 and class-101 empty; 31 s pass at the vendors: both tasks idle out")
        console.print(
            "  The room callbacks (UserLeaveRoom, stream_close) tell the daemon the rooms are empty: it does not "
            "restart a task there, which would only idle out again; the tasks wait, dormant, at no vendor cost."
        )
        for vendor, room, who in STREAMS[1:]:
            sim.publish(vendor, room, who, on=False)
        sim.advance(31)
        keys = ("RecordingJob/class-rec/class-101", "SnapshotJob/lobby-audit/vip-1")
        # The lobby too: apply re-issued it into its empty room, and the table below says it waits dormant; its
        # second idle-out may reach the daemon after the other two (a poll, not a callback), so wait for it.
        for key in ("SnapshotJob/lobby-audit/lobby", *keys):
            if not _wait_for(seen, lock, functools.partial(_dormant, key=key), daemon):
                raise DemoError(f"the daemon did not leave {key} dormant within {WAIT_SECONDS:.0f} s")
        walk.step("People come back to vip-1 and class-101: their first stream starts the tasks again")
        for vendor, room, who in STREAMS[1:]:
            sim.publish(vendor, room, who, on=True)
        for key in keys:
            if not _wait_for(seen, lock, functools.partial(_reissued, key=key), daemon):
                raise DemoError(f"the daemon did not re-issue {key} within {WAIT_SECONDS:.0f} s")
        console.print(
            _sim_table(sim, "At the vendors: running again where people came back; the empty lobby waits, dormant")
        )
        if keep_running:
            console.print(Text(f"  The daemon's status page shows it too: http://{listen}/"), soft_wrap=True)
            console.print("The daemon and the simulator keep running; press Ctrl-C (or send SIGTERM) to stop.")
            return until_stopped(daemon)
    return 0


def until_stopped(daemon: subprocess.Popen[str]) -> int:
    """Wait while a `--keep-running` demo serves. Its walk-through is done, so being stopped is how it ends: SIGTERM
    (`docker stop`, systemd, `kill`) is a clean stop, exit 0, as `capctl run` and uvicorn exit; Ctrl-C 130, as a
    shell reports it. Either way the daemon and the simulator are stopped first (the callers' clean-up)."""
    try:
        daemon.wait()
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except SystemExit as exc:  # raised by `_signals_end_it_as_ctrl_c_does`
        if exc.code != 128 + signal.SIGTERM:
            raise
    return 0
