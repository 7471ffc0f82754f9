"""`capctl demo` as a new user runs it, on ports of its choosing: the walk-through must work on any of them.

Its end-to-end run is the installed capctl's, in tests/deploy/test_package.py; these are its ports, signals and
refusals."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.demo import DemoError, quickstart, quickstart_copy, sim_url, until_stopped
from reconciler.spec import load_spec_set
from tests.servers import children_of

REPO = Path(__file__).resolve().parents[2]


PYTHON_M_CAPCTL = (sys.executable, "-m", "reconciler")


def test_the_copy_the_demo_suggests_of_its_shipped_specs_is_a_spec_set(tmp_path: Path) -> None:
    """Walk 35c: the demo ends `cp -r QUICKSTART specs` to start from these. Run from a checkout (as here, an
    editable install) reconciler/quickstart is a relative link to ../specs: the copy was that link, dangling,
    and `capctl validate` found `specs: a symbolic link to '../specs', which does not exist`."""
    assert (REPO / "reconciler" / "quickstart").is_symlink()  # the case: the package's files are the checkout's
    subprocess.run(["sh", "-c", quickstart_copy()], cwd=tmp_path, check=True)  # the line as the demo prints it
    assert load_spec_set([tmp_path / "specs"], env={}).summary().startswith("3 files, 7 documents")


def test_the_copy_the_demo_suggests_runs_as_printed_from_a_path_with_a_space(tmp_path: Path) -> None:
    """Walk 36b: capctl installed in `~/My Projects/.venv` printed `cp -r ~/My Projects/…/quickstart specs`,
    which a shell splits into two sources (`cp: cannot stat '…/My'`)."""
    shipped = tmp_path / "My Projects" / "quickstart"
    shutil.copytree(quickstart(), shipped)
    (tmp_path / "work").mkdir()
    subprocess.run(["sh", "-c", quickstart_copy(str(shipped))], cwd=tmp_path / "work", check=True)
    assert load_spec_set([tmp_path / "work" / "specs"], env={}).summary().startswith("3 files, 7 documents")


def demo(cwd: Path, *args: str, capctl: tuple[str, ...] = PYTHON_M_CAPCTL) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*capctl, "demo", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def specs_calling_elsewhere(tmp_path: Path) -> Path:
    """The quickstart specs with a literal Volcengine endpoint: the demo refuses them once its simulator runs."""
    specs = tmp_path / "specs"
    shutil.copytree(REPO / "specs", specs)
    providers = specs / "providers.yaml"
    literal = re.sub(
        r"endpoint: \{env: CAPCTL_VOLC_ENDPOINT, [^}]*\}", "endpoint: http://127.0.0.1:8750/volc", providers.read_text()
    )
    providers.write_text(literal)
    return specs


def test_demo_refuses_specs_that_would_call_elsewhere(tmp_path: Path) -> None:
    """Given no path where ./specs is (a capctl checkout), the demo plays ./specs, not the copy it ships. Refused,
    it leaves the last demo's state as it was (it was deleted, and a new one made, before the check: walk 13a)."""
    specs_calling_elsewhere(tmp_path)
    (tmp_path / ".capctl").mkdir()
    (tmp_path / ".capctl" / "demo.db").write_text("the last demo's state")
    run = demo(tmp_path, "--listen", "127.0.0.1:0", "--daemon-listen", "127.0.0.1:0")
    assert run.returncode == 1
    error = " ".join(run.stderr.split())
    assert "provider volc-sim (specs/providers.yaml" in error
    assert "calls http://127.0.0.1:8750/volc, not the demo's simulator" in error
    assert "CAPCTL_VOLC_ENDPOINT" in error
    assert [p.name for p in (tmp_path / ".capctl").iterdir()] == ["demo.db"]
    assert (tmp_path / ".capctl" / "demo.db").read_text() == "the last demo's state"


def test_a_demo_whose_simulator_port_is_taken_leaves_nothing_behind(tmp_path: Path) -> None:
    """It made .capctl/ (and deleted the last demo's state) before its simulator failed to bind (walk 13a)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = demo(tmp_path, "--listen", f"127.0.0.1:{port}", "--daemon-listen", "127.0.0.1:0", str(REPO / "specs"))
    error = " ".join(run.stderr.split())
    assert run.returncode == 1 and f"cannot listen on 127.0.0.1:{port}: Address already in use" in error, error
    assert list(tmp_path.iterdir()) == []


def test_a_simulator_that_exits_at_start_up_is_reported_at_once_with_its_error() -> None:
    """Walk 61a-2: the demo knew the simulator had failed only when its output ended, and gave up after a fixed
    15 s; a process holding the pipe (here one it left behind; in the full suite a simulator slow to import on a
    loaded machine) turned "cannot listen on …: Address already in use" into "did not say where it listens"."""
    script = 'echo "Error: cannot listen on 127.0.0.1:1: Address already in use"; sleep 30 & exit 1'
    proc = subprocess.Popen(
        ["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        started = time.monotonic()
        with pytest.raises(DemoError, match=r"exited at start-up \(exit code 1\): Error: cannot listen on") as raised:
            sim_url(proc, within=60)
        assert time.monotonic() - started < 10, raised.value  # not the bound: the exit, within a poll
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_simulator_still_starting_is_named_with_what_it_said() -> None:
    proc = subprocess.Popen(["sh", "-c", "echo importing; exec sleep 30"], stdout=subprocess.PIPE, text=True)
    try:
        with pytest.raises(DemoError, match=r"within 1 s; it said: importing$"):
            sim_url(proc, within=1)
    finally:
        proc.kill()
        proc.wait()


def test_the_daemon_port_an_earlier_run_just_left_is_free_to_the_next(tmp_path: Path) -> None:
    """A server's connections stay in TIME_WAIT for a minute after it closed them: `capctl demo` run again
    at once on the same ports said "Address already in use (is a `capctl run` already running?)"."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemon's listener (uvicorn)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, _ = server.accept()
            conn.close()  # the server's side closes first: its end of the connection waits in TIME_WAIT
            client.recv(1)
    with socket.socket() as plain, pytest.raises(OSError, match="Address already in use"):
        plain.bind(("127.0.0.1", port))  # nothing listens, yet a bind without SO_REUSEADDR is refused
    specs = specs_calling_elsewhere(tmp_path)  # the demo stops right after taking its ports
    run = demo(tmp_path, "--listen", "127.0.0.1:0", "--daemon-listen", f"127.0.0.1:{port}", str(specs))
    error = " ".join(run.stderr.split())
    assert run.returncode == 1 and "not the demo's simulator" in error, error


@contextlib.contextmanager
def running_demo(cwd: Path, *, sighup_ignored: bool = False) -> Iterator[tuple[subprocess.Popen[str], set[int]]]:
    """A demo on free ports, once its simulator listens, and its children; whatever it left running is killed."""
    ports = ["--listen", "127.0.0.1:0", "--daemon-listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "demo", *ports, str(REPO / "specs")],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
        preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if sighup_ignored else None,  # nohup
    )
    assert proc.stdout is not None
    children: set[int] = set()
    try:
        first = proc.stdout.readline()  # said once the simulator listens
        assert first.startswith("capctl demo: simulator on http://127.0.0.1:"), first
        children |= children_of(proc.pid)
        yield proc, children
    finally:
        proc.kill()
        proc.communicate(timeout=30)
        for child in children:  # left running by a demo that did not stop them (they are reaped otherwise)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_sigterm_ends_the_demo_and_the_simulator_it_started(tmp_path: Path) -> None:
    """`kill`, `timeout` or a closed terminal end the demo through its clean-up, as Ctrl-C does: it once
    exited alone and left its simulator and daemon running on their ports."""
    with running_demo(tmp_path) as (proc, children):
        assert children, "the demo's simulator"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert not any(Path(f"/proc/{child}").exists() for child in children)


def test_the_simulator_and_the_daemon_are_this_capctl_not_a_reconciler_in_the_working_directory(
    tmp_path: Path,
) -> None:
    """Run from a capctl checkout (where ./specs is) with another capctl installed, the demo's children
    imported the checkout's `reconciler/` (the working directory comes first on `python -m`'s path)."""
    shadow = tmp_path / "reconciler"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    (shadow / "__main__.py").write_text('print("the reconciler/ of the working directory")\n')
    capctl = str(Path(sys.executable).parent / "capctl")  # the installed script: its own path comes first, not cwd
    specs = specs_calling_elsewhere(tmp_path)  # the demo stops once its simulator runs
    run = demo(tmp_path, "--listen", "127.0.0.1:0", "--daemon-listen", "127.0.0.1:0", str(specs), capctl=(capctl,))
    error = " ".join(run.stderr.split())
    assert run.returncode == 1 and "not the demo's simulator" in error, error


def test_a_sighup_ignored_when_the_demo_started_stays_ignored(tmp_path: Path) -> None:
    """`nohup capctl demo`: the terminal closing must not end it (it did: its SIGHUP handler replaced nohup's
    SIG_IGN, as `capctl apply` no longer does); SIGTERM still ends it through its clean-up."""
    with running_demo(tmp_path, sighup_ignored=True) as (proc, _):
        proc.send_signal(signal.SIGHUP)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM


def test_ctrl_c_stops_a_kept_demo_with_130() -> None:
    """`--keep-running` waits until it is stopped: Ctrl-C is an interrupt, exit 130, as a shell reports it (it
    was 0), SIGTERM a clean stop, exit 0 (the installed demo's end-to-end run sends that one)."""
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], text=True)
    try:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        assert until_stopped(daemon) == 128 + signal.SIGINT
    finally:
        daemon.kill()
        daemon.wait()
