"""A `capctl run` replica started before its PostgreSQL waits for it (starting.py), as a real process.

It exited 1 at once, which Kubernetes turns into a CrashLoopBackOff whose delays grow to 5 minutes.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import time

import httpx

from tests.e2e.conftest import Workdir
from tests.e2e.test_cli_replicas import OwnPostgres, free_port, wait_for
from tests.specdocs import snapshot_job

PASSWORD = "pw-4e-31337"  # trust authentication ignores it; it must never be printed


def waits(lines: list[str]) -> list[dict[str, object]]:
    """The daemon's `state store unreachable; waiting for it` log entries so far."""
    entries = [json.loads(line) for line in list(lines) if line.startswith("{")]
    return [e for e in entries if e.get("event") == "state store unreachable; waiting for it"]


def test_a_replica_started_before_its_postgresql_is_alive_not_ready_and_starts_once_it_answers(work: Workdir) -> None:
    pg = OwnPostgres()  # initialised, not started: nothing listens on its port yet
    shown = pg.url  # the URL as logs and probes show it: without the password
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"], idle="180s"))
    proc, log = work.run_daemon("--state", pg.url.replace("postgres@", f"postgres:{PASSWORD}@"))
    try:
        wait_for("two failed attempts", lambda: len(waits(log.lines)) >= 2)
        # `listening` is said once the daemon runs; meanwhile each warning says where the probes answer
        with httpx.Client(base_url=str(waits(log.lines)[0]["url"]), timeout=5) as http:
            assert http.get("/healthz").status_code == 200  # alive: the kubelet does not restart it
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.headers["x-content-type-options"] == "nosniff", ready.text
            assert ready.text.startswith("not ready (waiting for the state store: attempt ")
            assert f"cannot connect to the PostgreSQL state store {shown}: " in ready.text
            scraped = http.get("/metrics").text
            assert (
                "capctl_state_store_reachable 0.0" in scraped and "capctl_state_store_connect_failures_total" in scraped
            )
            assert http.post("/api/v1/sync").status_code == 503
            pg.start()
            wait_for("the daemon to lead", lambda: http.get("/readyz").text.startswith("ready (leader"), timeout=40)
            wait_for("the task to start", lambda: len(work.sim.tasks("volcengine", state="running")) == 1)
            assert "capctl_state_store_reachable 1.0" in http.get("/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        with contextlib.suppress(subprocess.CalledProcessError):  # never started: the assertions above say why
            pg.stop()
        shutil.rmtree(pg.dir, ignore_errors=True)
    assert proc.returncode == 0
    text = log.text()
    assert PASSWORD not in text
    logged = waits(log.lines)
    assert [e["attempt"] for e in logged] == list(range(1, len(logged) + 1))  # one line per attempt
    assert all(e["state"] == shown and e["level"] == "warning" for e in logged)
    assert '"event": "daemon started"' in text


def test_state_wait_bounds_the_wait_a_signal_ends_it_and_one_shot_commands_never_wait(work: Workdir) -> None:
    # Nothing listens there; libpq's other secret parameters are never printed either (walk 49C-1, 50c).
    secrets = f"sslpassword={PASSWORD}&oauth_client_secret={PASSWORD}"
    dead = f"postgresql://capctl:{PASSWORD}@127.0.0.1:{free_port()}/capctl?{secrets}"
    began = time.monotonic()
    bounded = work.capctl("run", "--listen", "127.0.0.1:0", "--state", dead, "--state-wait", "2s", expect=1).stderr
    assert time.monotonic() - began >= 2
    # Bounded, by the daemon's own account, not by the run's length (at load 25 its start-up alone took 20 s,
    # and a first attempt of over 2 s was its only one, the message rounding the wait up): no retry is set past
    # the 2 s, and it gives up once they have passed, not before.
    assert all(float(str(e["waited"])) + float(str(e["retry_in"])) <= 2.05 for e in waits(bounded.splitlines()))
    gave_up = re.search(r"gave up after (\d+) s \(--state-wait\)", bounded)
    assert '"event": "cannot open the state store"' in bounded and gave_up and int(gave_up[1]) >= 2, bounded
    assert PASSWORD not in bounded
    at_once = work.capctl("run", "--listen", "127.0.0.1:0", "--state", dead, "--state-wait", "0", expect=1).stderr
    assert "cannot open the state store" in at_once and "waiting for it" not in at_once
    typo = work.capctl("run", "--state", dead, "--state-wait", "soon", expect=1).stderr
    assert "--state-wait: invalid duration 'soon'" in typo and typo.rstrip().endswith(", or forever")
    planned = work.capctl("plan", "--state", dead, expect=1).stderr
    assert "cannot connect to the PostgreSQL state store" in planned and PASSWORD not in planned
    for command in (("apply", "--auto-approve"), ("state", "list"), ("wake", "SnapshotJob/audit/lobby")):
        said = work.capctl(*command, "--state", dead, expect=1)
        assert "cannot connect to the PostgreSQL state store" in said.stderr, (command, said.stderr)
        assert PASSWORD not in said.stdout + said.stderr, command
    unreached = work.capctl("sync", "--daemon", f"http://127.0.0.1:{free_port()}/?token={PASSWORD}", expect=1)
    assert "cannot reach the daemon at http://127.0.0.1:" in unreached.stderr
    assert PASSWORD not in unreached.stdout + unreached.stderr
    proc, log = work.run_daemon("--state", dead)
    wait_for("a failed attempt", lambda: bool(waits(log.lines)))
    proc.send_signal(signal.SIGTERM)  # a rollout or scale-down while it waits: a clean stop
    assert proc.wait(timeout=30) == 0
    assert "signal received while waiting for the state store: stopping" in log.text()


def test_a_state_that_fails_while_the_daemon_starts_is_logged_and_ends_it(work: Workdir) -> None:
    """A state whose first write fails as the daemon is built (a full disk, an SQLite file busy past its
    5 s): before (walk 13C-4) the error escaped as a bare `Error:` line, no JSON log, its store not closed."""
    import sqlite3

    from reconciler.state import SQLiteStateStore

    SQLiteStateStore(work.state).close()  # a state without a fingerprint key yet: the daemon writes one
    with sqlite3.connect(work.state) as db:
        db.execute(
            "CREATE TRIGGER disk_full BEFORE INSERT ON capctl_fingerprint_key"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"], idle="180s"))
    failed = work.capctl("run", "--listen", "127.0.0.1:0", expect=1).stderr
    (entry,) = [json.loads(line) for line in failed.splitlines() if line.startswith("{") and '"level": "error"' in line]
    assert entry["event"] == "cannot read the state store" and "database or disk is full" in entry["error"], failed
    assert "Error:" not in failed and "Traceback" not in failed
    assert work.sim.tasks("volcengine") == []
