"""`capctl run` and `capctl state rm` as users call them: the real CLI against the simulator on loopback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import httpx
import pytest
from typer.testing import CliRunner

from reconciler import cli
from reconciler.listen import bind, url_of
from reconciler.model import TaskStatus
from reconciler.state import open_state
from tests.e2e.conftest import Workdir
from tests.servers import ServerOutput
from tests.specdocs import snapshot_job
from tests.state.helpers import make_record

FAULT = {"reason": "UserDisconnect"}  # a Volcengine StopReason that is neither an idle-out nor a stop by the API


def start_daemon(work: Workdir, *args: str) -> tuple[subprocess.Popen[str], ServerOutput, httpx.Client]:
    """`capctl run --listen 127.0.0.1:0` in the work directory, once it answers /readyz with 200."""
    daemon, log = work.run_daemon(*args)
    http = httpx.Client(base_url=log.url(), timeout=5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if http.get("/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return daemon, log, http


def test_run_serves_probes_reissues_and_stops_cleanly_on_sigterm(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"], idle="20s"))
    daemon, log, http = start_daemon(work, "--resync", "1s")
    try:
        deadline = time.monotonic() + 60
        assert http.get("/healthz").status_code == 200
        while not work.sim.tasks("volcengine", state="running") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(work.sim.tasks("volcengine", state="running")) == 1
        locked = work.capctl("apply", "--auto-approve", expect=1)
        assert "holds the state lock" in locked.stderr and "capctl run" in locked.stderr
        work.sim.advance(21)  # the room never had a stream: the task idles out; the 1 s sweep sees it
        deadline = time.monotonic() + 60
        while len(work.sim.requests("StartSnapshot")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(work.sim.tasks("volcengine", state="running")) == 1
        # Then the vendor ends the new run by a fault: it says nothing about the room, so it is not taken for a
        # 2nd idle-out (backed off 60 s) but retried at once (a 2nd fault in a row would wait 5 s).
        run = work.sim.tasks("volcengine", state="running")[0]
        work.sim.post("/tasks/stop", {"vendor": "volcengine", "taskId": run["taskId"], "roomId": "lobby"} | FAULT)
        deadline = time.monotonic() + 60
        while len(work.sim.requests("StartSnapshot")) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(work.sim.tasks("volcengine", state="running")) == 1
        assert "capctl_" in http.get("/metrics").text
        # Every answer says nosniff, not only the status page's (each route once: the page sets its own)
        answers = [
            *(http.get(path) for path in ("/healthz", "/readyz", "/metrics", "/", "/api/v1/status", "/nowhere")),
            http.post("/api/v1/sync", content=b"[]"),
            http.post("/callbacks/volcengine", content=b"not json"),
            http.get("/callbacks/volcengine"),
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 404, 400, 400, 405]
        assert all(a.headers.get_list("x-content-type-options") == ["nosniff"] for a in answers)
        with socket.create_connection((http.base_url.host, http.base_url.port)) as garbage:  # uvicorn logs it
            garbage.sendall(b"garbage\r\n\r\n")
            assert garbage.recv(100).startswith(b"HTTP/1.1 400")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    stderr = log.text()
    assert daemon.returncode == 0, stderr
    # A state it had to make is said once, where it is (a lost state or a wrong URL starts every task silently)
    [new] = [line for line in map(json.loads, stderr.splitlines()) if line["event"] == "started a new state"]
    assert new["level"] == "warning" and new["state"] == f"sqlite:///{work.state}" and "docs/state.md" in new["note"]
    assert '"event": "decision"' in stderr and '"action": "reissue"' in stderr
    assert '"reason": "vendor stopped it: user disconnected (Volcengine UserDisconnect)' in stderr
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line JSON: uvicorn's was bare text
    bad_request = {"event": "Invalid HTTP request received.", "logger": "uvicorn.error", "level": "warning"}
    assert any(bad_request.items() <= line.items() for line in lines)
    assert len(work.sim.tasks("volcengine", state="running")) == 1  # stopping capctl never stops a capture


@pytest.mark.parametrize(
    ("args", "sig"),
    [
        (("run", "--listen", "127.0.0.1:0"), signal.SIGTERM),
        (("sim", "--listen", "127.0.0.1:0"), signal.SIGINT),
        (("run", "--listen", "127.0.0.1:0"), signal.SIGHUP),
    ],
    ids=["run-SIGTERM", "sim-SIGINT", "run-SIGHUP"],
)
def test_a_server_stopped_while_it_imports_exits_0(work: Workdir, args: tuple[str, ...], sig: signal.Signals) -> None:
    """Walk 30c-6/35b: a SIGTERM in a server's first ~0.5 s (importing uvicorn and the daemon, before its own
    handlers) killed it: 143, not the documented clean stop (0); Ctrl-C said click's `Aborted!`, exit 1; a SIGHUP to
    `run` (re-read the specs) killed it too: 129, walk 36a-3. The
    import-time lines Python prints (PYTHONPROFILEIMPORTTIME) say when the command's own imports are under way."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    proc = work.spawn(*args, stdout=subprocess.DEVNULL, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # uvicorn: imported by the command only, after the CLI parsed its options
        seen.append(line)
        if "uvicorn" in line:
            break
    proc.send_signal(sig)
    if sig is signal.SIGHUP:  # walk 36a-3: `run` re-reads its specs on it, and reads them as it starts: it killed it
        for line in proc.stderr:
            seen.append(line)
            if '"event": "listening"' in line:
                break
        proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 0, "".join(seen[-5:]) + rest
    assert "Traceback" not in rest and "Aborted" not in rest, rest


def test_a_server_command_run_in_process_puts_the_signal_handlers_back() -> None:
    """The handlers a server command sets for its start are the command's: a test process that runs one (here one
    refused at once) keeps its own SIGTERM and Ctrl-C."""
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    before = [signal.getsignal(signum) for signum in signals]
    for args in (["run", "--resync", "0"], ["sim", "--speed", "0"]):
        assert CliRunner().invoke(cli.app, args).exit_code == 1
        assert [signal.getsignal(signum) for signum in signals] == before


def test_while_the_daemon_runs_apply_and_state_rm_say_so_and_sync_reaches_it(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"], idle="180s"))
    work.sim.publish("volcengine", "lobby", userId="u")
    # The daemon requires it; `capctl sync` sends it. Its newline is a Secret's made --from-file of an `echo`ed
    # file: the daemon refused every sync, and `capctl sync` failed printing the token ("Illegal header value").
    work.env["CAPCTL_SYNC_TOKEN"] = "tok-e2e-31337\n"
    work.capctl("state", "init")  # a state that exists: the daemon says nothing of starting one
    daemon, log, http = start_daemon(work, "--resync", "1h")
    url = str(http.base_url).rstrip("/")
    lobby = "SnapshotJob/audit/lobby"
    try:
        deadline = time.monotonic() + 60
        while not work.sim.tasks("volcengine", state="running") and time.monotonic() < deadline:
            time.sleep(0.1)
        applied = work.capctl("apply", "--auto-approve", expect=1).stderr
        assert "the capctl daemon holds the state lock (pid " in applied and f"(capctl run on {url})" in applied
        assert "wait for it to finish" not in applied
        assert f"`capctl sync --daemon {url} [KEY...]` makes it reconcile now" in " ".join(applied.split())
        removed = " ".join(work.capctl("state", "rm", lobby, expect=1).stderr.split())
        assert "the capctl daemon holds the state lock" in removed and "stop the daemon first (SIGTERM)" in removed
        assert "every replica of it: a standby takes the lock" in removed  # stopping the holder alone is not enough
        woken = " ".join(work.capctl("wake", lobby, expect=1).stderr.split())
        assert "It wakes a dormant task by itself at the first activity in its room" in woken
        assert f"`capctl wake --daemon {url} KEY...` makes it wake them and start them now" in woken
        assert "To wake them offline instead, stop the daemon first (SIGTERM)" in woken
        running = work.capctl("wake", "--daemon", url, lobby).stdout  # the leader answers of each KEY
        assert running == f"{lobby} is running: nothing to wake.\nwoke no task, queued none at {url}.\n"
        task = work.sim.tasks("volcengine", state="running")[0]
        work.sim.post("/tasks/stop", {"vendor": "volcengine", "taskId": task["taskId"], "roomId": "lobby"})
        synced = work.capctl("sync", lobby, env={"CAPCTL_DAEMON": url}).stdout
        assert synced == f"Queued 1 task(s) for an immediate reconcile at {url}.\n  {lobby}\n"
        deadline = time.monotonic() + 60  # with --resync 1h, only the sync makes the daemon look now
        while len(work.sim.requests("StartSnapshot")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(work.sim.tasks("volcengine", state="running")) == 1
        every = work.capctl("sync", "--daemon", url).stdout
        assert every == f"Queued every task (1) for an immediate reconcile at {url}.\n"
        anonymous = work.capctl("sync", "--daemon", url, env={"CAPCTL_SYNC_TOKEN": ""}, expect=1).stderr
        assert "queued nothing: missing or wrong bearer token" in " ".join(anonymous.split())
        typo = work.capctl("sync", "--daemon", url, "SnapshotJob/audit", "SnapshotJob/audit/lobbi", expect=1).stderr
        assert "queued nothing: no task 'SnapshotJob/audit/lobbi' in the spec set" in " ".join(typo.split())
        assert "did you mean SnapshotJob/audit/lobby?" in typo
        job = work.capctl("sync", "--daemon", url, "SnapshotJob/audit").stdout  # a job's tasks (walk 27b)
        assert job == f"Queued 1 task(s) for an immediate reconcile at {url}.\n  SnapshotJob/audit\n"
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert '"event": "sync requested"' in log.text() and "tok-e2e-31337" not in log.text()
    assert "started a new state" not in log.text()
    dead = " ".join(work.capctl("sync", "--daemon", url, expect=1).stderr.split())
    assert f"cannot reach the daemon at {url}" in dead and "CAPCTL_DAEMON" in dead
    not_a_daemon = " ".join(work.capctl("sync", "--daemon", work.sim.base, expect=1).stderr.split())
    assert f"{work.sim.base} answered 404 Not Found, not as a capctl daemon" in not_a_daemon
    with_password = url.replace("http://", "http://ops:pw-31337@")
    refused = " ".join(work.capctl("sync", "--daemon", with_password, expect=1).stderr.split())
    assert (
        f"cannot reach the daemon at {url.replace('http://', 'http://ops@')}" in refused and "pw-31337" not in refused
    )
    # Refused before anything is sent (the sim listens), saying what and where; a character outside ASCII was a
    # traceback, one of \x01 or DEL was sent (the daemon answered "wrong bearer token")
    for value, said in [
        ("tok-e2e\n31337", "a control character (U+000A) at character 8 of 13"),
        ("tok-e2e\x0131337", "a control character (U+0001) at character 8 of 13"),
        ("tök-e2e31337", "a character outside ASCII at character 2 of 12"),
    ]:
        broken = " ".join(
            work.capctl("sync", "--daemon", work.sim.base, env={"CAPCTL_SYNC_TOKEN": value}, expect=1).stderr.split()
        )
        assert f"Error: CAPCTL_SYNC_TOKEN holds {said}, which an HTTP header cannot carry" in broken, broken
        assert "31337" not in broken and "Traceback" not in broken
    for unreadable in ("http://[::1", "http://127.0.0.1:port"):  # a traceback from httpx before
        said = " ".join(work.capctl("sync", "--daemon", unreadable, expect=1).stderr.split())
        assert said.startswith("Error: --daemon: the URL cannot be read") and "Traceback" not in said, said


def test_run_rejects_bad_options(work: Workdir) -> None:
    assert "--resync" in work.capctl("run", "--resync", "soon", expect=1).stderr
    assert "--prune-grace: " in work.capctl("run", "--prune-grace", "a while", expect=1).stderr
    # Review 9b: "²" passed str.isdigit() and int() refused it: "invalid literal for int() with base 10".
    said = work.capctl("run", "--resync", "²", expect=1).stderr
    assert "--resync: invalid duration '²': use a whole number" in said and "int()" not in said, said
    assert "--listen" in work.capctl("run", "--listen", "nowhere", expect=1).stderr
    # User input is quoted as typed, never read as terminal markup.
    assert "got '[bold]lobby'" in work.capctl("sim", "--listen", "[bold]lobby", expect=1).stderr


def test_state_rm_forgets_without_stopping(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "hall"]))
    work.apply()
    assert (
        "no task 'SnapshotJob/audit/nowhere'"
        in work.capctl("state", "rm", "SnapshotJob/audit/nowhere", expect=1).stderr
    )
    refused = work.capctl("state", "rm", "SnapshotJob/audit/*", "SnapshotJob/audit/typo", expect=1).stderr
    assert "no task 'SnapshotJob/audit/typo' in the state (see `capctl state list`); nothing forgotten" in refused
    # Review 9b: a `?` stands for itself in task keys; `state list` and --target said so, `state rm` did not.
    said = " ".join(work.capctl("state", "rm", "SnapshotJob/audit/lobb?", expect=1).stderr.split())
    assert said.endswith("(in task keys only * is a wildcard: ? and [ stand for themselves, unlike in room selectors)")
    # A glob forgets every task it matches, in one transaction (hand many tasks back at once); one that matches
    # nothing beside it is no error.
    out = work.capctl("state", "rm", "SnapshotJob/audit/*", "RecordingJob/*").stdout
    serial = int(json.loads(work.capctl("state", "list", "-o", "json").stdout)["serial"])
    assert f"Removed SnapshotJob/audit/hall from the state (serial {serial})." in out
    assert f"Removed SnapshotJob/audit/lobby from the state (serial {serial})." in out
    assert "keep running" in out and "the next apply (or the daemon) starts them again" in out
    assert len(work.sim.tasks("volcengine", state="running")) == 2
    assert "no task" in work.capctl("state", "rm", "SnapshotJob/audit/lobby", expect=1).stderr
    # Their settings cannot be read back: the runs found under the TaskId are stopped and started again, and said.
    again = work.apply().stdout
    assert "2 created" in again and len(work.sim.requests("StopSnapshot")) == 2
    assert "! SnapshotJob/audit/lobby (create): the vendor already ran it, with settings capctl had not" in again
    assert len(work.sim.tasks("volcengine", state="running")) == 2


def test_servers_refuse_a_taken_address_before_doing_anything(work: Workdir) -> None:
    with bind("127.0.0.1", 0) as taken:
        address = url_of(taken).removeprefix("http://")
        sim = work.capctl("sim", "--listen", address, expect=1)
        assert f"cannot listen on {address}: Address already in use" in sim.stderr
        run = work.capctl("run", "--listen", address, expect=1)
        assert f"cannot listen on {address}: Address already in use" in run.stderr
    assert not work.state.exists()  # the daemon gave up before opening the state or taking its lock


def test_state_list_prints_vendor_errors_verbatim(work: Workdir) -> None:
    error = "InvalidParameter: [/RoomId] must match [[a-z]]"  # as rich markup this would crash the table
    store = open_state(f"sqlite:///{work.state}")
    refused = make_record("SnapshotJob/audit/lobby", status=TaskStatus.FAILED, last_error=error, start_refused=True)
    store.put(refused)  # (nothing runs: its REASON is the error alone)
    store.close()
    lines = work.capctl("state", "list").stdout.splitlines()
    assert lines[0] == "1 task (state serial 1)"
    assert lines[1].split()[:2] == ["KEY", "STATUS"] and lines[2].startswith("SnapshotJob/audit/lobby   failed   ")
    assert lines[2].endswith(f"   {error}")  # one line per task, never wrapped or cut, brackets kept
