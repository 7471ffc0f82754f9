"""Issue 13, points 16 and 17 end to end: a vendor that cannot be reached, and Ctrl-C during an apply.

An unreachable endpoint is a closed loopback port (bound, then closed); a failing or slow vendor is the
simulator with faults. The CLI runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest

from reconciler.execute import GIVE_UP_AFTER, REPLACE_STOPPED_UNRECORDED, STARTED_UNRECORDED, STOPPED_UNRECORDED
from reconciler.transitions import MAY_RUN
from tests.e2e.conftest import CANARY_AK, CANARY_SK, SIM_SECRETS, Workdir
from tests.specdocs import providers, snapshot_job
from tests.state.conftest import pg_url  # noqa: F401  (the suite's PostgreSQL)

ROOMS = [f"r{i}" for i in range(30)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed on leaving: nothing listens there


def progress_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "; retrying (attempt " in line]


def assert_no_secret(work: Workdir) -> None:
    for text in work.outputs:
        for secret in (*SIM_SECRETS, CANARY_AK, CANARY_SK):
            assert secret not in text


def test_an_unreachable_endpoint_is_named_with_its_provider_and_retries_show_progress(work: Workdir) -> None:
    port = closed_port()
    work.write("providers.yaml", providers(f"http://127.0.0.1:{port}"))
    work.write("jobs.yaml", snapshot_job("audit", ROOMS))
    applied = work.apply(expect=1)
    where = f"cannot connect to http://127.0.0.1:{port} (connection refused)"
    tried = f"volc (volcengine): StartSnapshot: {where} after 3 tries"  # CAPCTL_MAX_ATTEMPTS=3 in the tests
    skipped = f"not attempted: volc (volcengine) did not answer: StartSnapshot: {where} after 3 tries"
    for room in ROOMS:  # those started before the provider was given up on were tried, the rest not
        line = f"✗ SnapshotJob/audit/{room} (create): "
        assert line + tried in applied.stdout or line + skipped in applied.stdout
    lines = progress_lines(applied.stderr)
    assert lines[0].startswith(f"volc: StartSnapshot: {where}; retrying (attempt 2/3, next in ")
    assert len(lines) < len(ROOMS)  # 60 retries, rate-limited to a line per provider every few seconds
    assert len(applied.stderr.splitlines()) < len(ROOMS)  # nor a log line per failure: stdout lists them
    assert "Apply complete: 0 created" in applied.stdout and "30 failed (" in applied.stdout
    assert_no_secret(work)


def test_a_start_refused_at_the_port_at_every_try_does_not_say_it_may_run(work: Workdir) -> None:
    """Walk 51A-1: no byte of a start refused at the port reached the vendor, yet apply's ✗ line, `state list`
    and the next plan said `may run at the vendor` (a connect refused counted as a lost answer). It is a
    refusal (`start_refused`): the next apply starts it anew."""
    port = closed_port()
    work.write("providers.yaml", providers(f"http://127.0.0.1:{port}"))
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    applied = work.apply(expect=1).stdout
    where = f"cannot connect to http://127.0.0.1:{port} (connection refused) after 3 tries"
    assert f"✗ SnapshotJob/audit/lobby (create): volc (volcengine): StartSnapshot: {where}\n" in applied
    (task,) = state_tasks(work).values()
    assert task["status"] == "failed" and task["start_refused"]
    assert MAY_RUN not in work.capctl("state", "list").stdout
    work.write("providers.yaml", providers(work.sim.base))
    assert MAY_RUN not in work.capctl("plan").stdout
    assert "Apply complete: 1 created" in work.apply().stdout


def test_apply_gives_up_on_a_provider_after_five_changes_in_a_row_got_no_answer(work: Workdir) -> None:
    port = closed_port()
    work.write("providers.yaml", providers(f"http://127.0.0.1:{port}"))
    work.write("jobs.yaml", snapshot_job("audit", ROOMS))
    applied = work.apply("--parallelism", "2", expect=1)
    where = f"cannot connect to http://127.0.0.1:{port} (connection refused) after 3 tries"
    tried = [
        line
        for line in applied.stdout.splitlines()
        if line.endswith(f"(create): volc (volcengine): StartSnapshot: {where}")
    ]
    skipped = f"not attempted: volc (volcengine) did not answer: StartSnapshot: {where}"
    # Five failed in a row, plus the one that may still be in flight beside the fifth (two at a time): five
    # or six rounds of retries, not thirty.
    assert GIVE_UP_AFTER <= len(tried) <= GIVE_UP_AFTER + 1
    summary = "Apply complete: 0 created, 0 updated, 0 replaced, 0 re-issued, 0 deleted, 30 failed"
    assert f"{summary} ({30 - len(tried)} of them not attempted)." in applied.stdout
    tasks = state_tasks(work)
    assert len(tasks) == len(ROOMS)  # every task's record says why it is not running
    assert sum(t["last_error"] == skipped for t in tasks.values()) == len(ROOMS) - len(tried)
    assert all(t["status"] == "failed" and where in t["last_error"] for t in tasks.values())
    # The vendor is back: the next apply starts every task.
    work.write("providers.yaml", providers(work.sim.base))
    assert "Apply complete: 30 created" in work.apply().stdout


def test_a_slow_refresh_reports_progress_on_stderr_and_keeps_json_on_stdout_clean(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ROOMS[:3]))
    work.apply()
    port = closed_port()
    work.write("providers.yaml", providers(f"http://127.0.0.1:{port}"))  # the vendor moved away
    plan = work.capctl("plan", "--format", "json", expect=1)
    data = json.loads(plan.stdout)  # nothing else on stdout
    assert sorted(data["unobserved"]) == [f"SnapshotJob/audit/{r}" for r in ROOMS[:3]]
    where = f"cannot connect to http://127.0.0.1:{port} (connection refused)"
    assert any(f"volc (volcengine): GetSnapshotTask: {where} after 3 tries" in note for note in data["notes"])
    assert progress_lines(plan.stderr)[0].startswith(f"volc: GetSnapshotTask: {where}; retrying (attempt 2/3")
    assert_no_secret(work)


def test_vendor_errors_while_retrying_show_progress_and_the_final_error_counts_the_tries(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ROOMS[:2]))
    work.sim.faults(errorRate=1.0, apis=["StartSnapshot"])
    applied = work.apply(expect=1)
    assert "volc (volcengine): StartSnapshot: InternalError.Unknown: simulated internal error after 3 tries" in (
        applied.stdout
    )
    line = progress_lines(applied.stderr)[0]
    assert line.startswith(
        "volc: StartSnapshot: InternalError.Unknown: simulated internal error; retrying (attempt 2/3"
    )


def start_slow_apply(work: Workdir, rooms: list[str]) -> subprocess.Popen[str]:
    """An apply of `rooms` against a vendor answering in 300 ms, two at a time, once its first starts are seen."""
    work.write("jobs.yaml", snapshot_job("audit", rooms))
    work.sim.faults(latencyMs=300, apis=["StartSnapshot"])
    proc = work.spawn("apply", "--auto-approve", "--parallelism", "2")
    deadline = time.monotonic() + 60
    while len(work.sim.requests("StartSnapshot")) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the apply ended before it could be interrupted"
    return proc


def summary_counts(stdout: str) -> dict[str, int]:
    (line,) = [line for line in stdout.splitlines() if line.startswith("Apply interrupted: ")]
    counts = {}
    for part in line.removeprefix("Apply interrupted: ").rstrip(".").split(", "):
        number, words = part.split(" ", 1)
        counts[words] = int(number)
    return counts


def state_tasks(work: Workdir) -> dict[str, dict[str, Any]]:
    out = work.capctl("state", "list", "-o", "json").stdout
    return {t["key"]: t for t in json.loads(out)["tasks"]}


STOPS = [
    (signal.SIGINT, 130, "Interrupted"),
    (signal.SIGTERM, 143, "Terminated (SIGTERM)"),
    (signal.SIGHUP, 129, "Hung up (SIGHUP)"),  # it killed the apply at once, as SIGTERM did
]


@pytest.mark.parametrize(("signum", "code", "said"), STOPS, ids=["ctrl-c", "sigterm", "sighup"])
def test_ctrl_c_or_sigterm_lets_the_calls_in_flight_finish_reports_what_is_left_and_exits_128_plus_it(
    work: Workdir, signum: int, code: int, said: str
) -> None:
    """SIGTERM (Kubernetes, a CI runner) killed the apply at once: exit 143, no summary, tasks left pending."""
    proc = start_slow_apply(work, ROOMS)
    os.kill(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"{said}: no new change starts; the changes in flight finish." in stderr
    counts = summary_counts(stdout)
    assert counts["cut short in flight"] == 0 and counts["failed"] == 0
    assert counts["created"] > 0 and counts["not started"] > 0
    assert counts["created"] + counts["not started"] == len(ROOMS)
    # The state matches the vendor: every task the vendor runs is recorded as running, nothing else is.
    running = {t["roomId"] for t in work.sim.tasks("volcengine", state="running")}
    recorded = {key.rsplit("/", 1)[1] for key, task in state_tasks(work).items() if task["status"] == "running"}
    assert running == recorded and len(running) == counts["created"]
    work.sim.http.delete("/faults")
    assert f"Apply complete: {counts['not started']} created" in work.apply().stdout
    assert len(work.sim.tasks("volcengine")) == len(ROOMS)  # nothing started twice


def test_an_apply_whose_terminal_hung_up_finishes_its_calls_in_flight_and_records_them(work: Workdir) -> None:
    """An ssh session dropped: the terminal is gone (every write fails with EIO) and SIGHUP arrives. The apply
    was killed with its calls in flight (tasks left pending); now it finishes them, its summary is dropped."""
    terminal, tty = os.openpty()
    work.write("jobs.yaml", snapshot_job("audit", ROOMS))
    work.sim.faults(latencyMs=300, apis=["StartSnapshot"])
    proc = work.spawn("apply", "--auto-approve", "--parallelism", "2", stdout=tty, stderr=tty)
    os.close(tty)
    deadline = time.monotonic() + 60
    while len(work.sim.requests("StartSnapshot")) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the apply ended before its terminal hung up"
    os.close(terminal)  # the terminal is gone: writes to it fail
    os.kill(proc.pid, signal.SIGHUP)
    assert proc.wait(timeout=60) == 129
    running = {t["roomId"] for t in work.sim.tasks("volcengine", state="running")}
    statuses = {key.rsplit("/", 1)[1]: task["status"] for key, task in state_tasks(work).items()}
    assert running and running == {room for room, status in statuses.items() if status == "running"}
    assert "pending" not in statuses.values()  # no call left unresolved
    work.sim.http.delete("/faults")
    work.apply()
    assert sorted(t["roomId"] for t in work.sim.tasks("volcengine", state="running")) == sorted(ROOMS)
    assert len(work.sim.tasks("volcengine")) == len(ROOMS)  # nothing started twice


def test_nohup_apply_ignores_sighup_and_applies_every_change(work: Workdir) -> None:
    """SIGHUP ignored when it started (`nohup capctl apply`) stays ignored: the apply outlives its terminal."""
    work.write("jobs.yaml", snapshot_job("audit", ROOMS[:8]))
    work.sim.faults(latencyMs=300, apis=["StartSnapshot"])

    def nohup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = work.spawn("apply", "--auto-approve", "--parallelism", "2", preexec_fn=nohup)
    deadline = time.monotonic() + 60
    while not work.sim.requests("StartSnapshot") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGHUP)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Apply complete: 8 created" in stdout and "Hung up" not in stderr


def test_a_second_ctrl_c_cuts_the_calls_in_flight_short_and_the_next_apply_resolves_them(work: Workdir) -> None:
    proc = start_slow_apply(work, ROOMS)
    os.kill(proc.pid, signal.SIGINT)
    assert proc.stderr is not None
    # The second press once the first is taken: two sent blind, a loaded machine may merge them into one.
    first = proc.stderr.readline()
    if first.startswith("Started a new state at"):  # said before its first change (walk 14b)
        first = proc.stderr.readline()
    assert first.startswith("Interrupted: no new change starts"), first
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, first + stderr
    counts = summary_counts(stdout)
    assert counts["created"] + counts["cut short in flight"] + counts["not started"] == len(ROOMS)
    cut = [line for line in stdout.splitlines() if line.startswith("… SnapshotJob/audit/")]
    assert len(cut) == counts["cut short in flight"]
    assert all("interrupted while its vendor call was in flight" in line for line in cut)
    recorded = state_tasks(work)
    for line in cut:  # the intent of each one cut short is in the state
        assert recorded[line.split()[1]]["status"] == "pending"
    work.sim.http.delete("/faults")
    work.apply()
    assert sorted(t["roomId"] for t in work.sim.tasks("volcengine", state="running")) == sorted(ROOMS)
    assert len(work.sim.tasks("volcengine")) == len(ROOMS)  # no task lost, none started twice


def test_a_state_store_that_fails_half_way_stops_the_apply_says_what_it_did_and_the_next_one_finishes(
    work: Workdir,
) -> None:
    rooms = ROOMS[:12]
    work.write("jobs.yaml", snapshot_job("audit", rooms))
    work.capctl("state", "init")
    with sqlite3.connect(work.state) as db:  # the disk fills up once four task records are written
        db.execute(
            "CREATE TRIGGER disk_full BEFORE INSERT ON capctl_records WHEN (SELECT count(*) FROM capctl_records) >= 4"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    applied = work.apply("--parallelism", "2", expect=1)
    # Not a bare error line: the summary says what was done and left, as after Ctrl-C; no change started after it.
    (summary,) = [line for line in applied.stdout.splitlines() if line.startswith("Apply stopped ")]
    assert summary.startswith("Apply stopped (the state store failed): ")
    assert summary.endswith(" not started.") and not summary.endswith(" 0 not started.")
    failed = [line for line in applied.stdout.splitlines() if line.startswith("✗ SnapshotJob/audit/")]
    assert failed and all("(create): the state store failed: " in line for line in failed)
    assert applied.stderr.rstrip().endswith(
        "database or disk is full: apply again once the state store can be written: it finishes what this one left"
    )
    assert "Traceback" not in applied.stderr
    recorded = state_tasks(work)  # every task the vendor runs has its intent (or more) in the state
    assert {t["roomId"] for t in work.sim.tasks("volcengine", state="running")} <= {k.split("/")[2] for k in recorded}
    with sqlite3.connect(work.state) as db:
        db.execute("DROP TRIGGER disk_full")
    work.apply()
    assert sorted(t["roomId"] for t in work.sim.tasks("volcengine", state="running")) == sorted(rooms)
    assert {t["status"] for t in state_tasks(work).values()} == {"running"}


def test_a_start_the_vendor_answered_but_the_state_could_not_record_says_it_runs(work: Workdir) -> None:
    """Walk 55D-1: a PostgreSQL stopped (or a disk filled) while starts were in flight failed their commits after
    the vendor had started them: `✗ … the state store failed: …` read as nothing started (`34 failed` while the
    simulator ran all 50). Such a line says the task runs; one whose intent could not be written says nothing."""
    rooms = ROOMS[:6]
    work.write("jobs.yaml", snapshot_job("audit", rooms))
    work.capctl("state", "init")
    with sqlite3.connect(work.state) as db:  # intents are written; the disk fills before r1's start is recorded
        db.execute(
            "CREATE TRIGGER disk_full BEFORE UPDATE ON capctl_records"
            " WHEN json_extract(NEW.body, '$.key') = 'SnapshotJob/audit/r1'"
            " AND json_extract(NEW.body, '$.status') = 'running'"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    applied = work.apply("--parallelism", "1", expect=1)
    failed = [line for line in applied.stdout.splitlines() if line.startswith("✗ ")]
    assert failed == [
        "✗ SnapshotJob/audit/r1 (create): the state store failed: "
        f"sqlite:///{work.state}: database or disk is full; {STARTED_UNRECORDED}"
    ], applied.stdout
    assert [t["roomId"] for t in work.sim.tasks("volcengine", state="running")] == ["r0", "r1"]
    assert state_tasks(work)["SnapshotJob/audit/r1"]["status"] == "pending"
    with sqlite3.connect(work.state) as db:
        db.execute("DROP TRIGGER disk_full")
    work.apply()  # takes r1's run up: no second run
    assert sorted(t["roomId"] for t in work.sim.tasks("volcengine")) == sorted(rooms)


def _fail_record(work: Workdir, key: str, status: str) -> None:
    """The disk fills just before `key`'s record goes to `status` (its vendor call answered)."""
    with sqlite3.connect(work.state) as db:
        db.execute(
            "CREATE TRIGGER disk_full BEFORE UPDATE ON capctl_records"
            f" WHEN json_extract(NEW.body, '$.key') = '{key}' AND json_extract(NEW.body, '$.status') = '{status}'"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )


@pytest.mark.parametrize(
    ("action", "rooms", "status", "said"),
    [
        ("delete", ["r0"], "removed", STOPPED_UNRECORDED),  # r1 pruned
        ("replace", ["r0", "r1"], "stopped", REPLACE_STOPPED_UNRECORDED),  # idleTimeout changed
    ],
)
def test_a_stop_the_vendor_answered_but_the_state_could_not_record_says_it_is_stopped(
    work: Workdir, action: str, rooms: list[str], status: str, said: str
) -> None:
    """Walk 58e (55D-1 for stops): a delete or a replace's stop the vendor answered, whose record then failed,
    said a bare `the state store failed: …`, read as nothing stopped while the run had ended. It says the task is
    stopped and what the next apply does; that apply does it, stopping nothing twice."""
    work.write("jobs.yaml", snapshot_job("audit", ["r0", "r1"]))
    work.capctl("state", "init")
    work.apply()
    key = "SnapshotJob/audit/r1"
    _fail_record(work, key, status)
    work.write("jobs.yaml", snapshot_job("audit", rooms, idle=60 if action == "replace" else 20))
    applied = work.apply("--target", key, expect=1)
    failed = [line for line in applied.stdout.splitlines() if line.startswith("✗ ")]
    assert failed == [
        f"✗ {key} ({action}): the state store failed: sqlite:///{work.state}: database or disk is full; {said}"
    ], applied.stdout
    assert [t["roomId"] for t in work.sim.tasks("volcengine", state="running")] == ["r0"]
    with sqlite3.connect(work.state) as db:
        db.execute("DROP TRIGGER disk_full")
    work.apply()
    assert sorted(t["roomId"] for t in work.sim.tasks("volcengine", state="running")) == rooms
    assert state_tasks(work)[key]["status"] == ("removed" if action == "delete" else "running")


def _apply_at_its_first_start(work: Workdir) -> subprocess.Popen[str]:
    """An apply of three rooms, one at a time, as its first StartSnapshot (slowed down) is in flight."""
    work.write("jobs.yaml", snapshot_job("audit", ROOMS[:3]))
    work.capctl("state", "init")
    work.sim.faults(latencyMs=300, apis=["StartSnapshot"])
    proc = work.spawn("apply", "--auto-approve", "--parallelism", "1")
    deadline = time.monotonic() + 60
    while not work.sim.requests("StartSnapshot") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    return proc


def test_an_apply_whose_lock_was_taken_over_names_the_holder_to_wait_for(work: Workdir, pg_url: str) -> None:  # noqa: F811
    """Walk 23a (after 22C-1): an apply whose lease was taken over while it ran ends like one whose store failed
    (what was done and left), but its advice is not to wait for a store that can be written: another capctl,
    named, holds the lock and is to be waited for or stopped."""
    import psycopg

    work.env["CAPCTL_STATE"] = pg_url
    proc = _apply_at_its_first_start(work)
    with psycopg.connect(pg_url, autocommit=True) as conn:  # a replica takes the lease (as if it had lapsed)
        conn.execute(
            "UPDATE capctl_lock SET token = 'theirs', holder = 'pid 1 on elsewhere (capctl run)', epoch = epoch + 1"
        )
    stdout, stderr = proc.communicate(timeout=60)
    said = " ".join(stderr.split())
    assert proc.returncode == 1 and "Traceback" not in said, said
    assert "Apply stopped (the state store failed): " in stdout, stdout
    assert said.endswith(
        "pid 1 on elsewhere (capctl run) holds the state lock now: wait for it to finish, or stop it, then apply "
        "again: it finishes what this one left"
    ), said
    assert "once the state store can be written" not in said


def test_a_lock_left_by_a_process_gone_from_this_host_says_when_it_lapses(work: Workdir, pg_url: str) -> None:  # noqa: F811
    """Walk 55D-2: an apply that could not release its lease (PostgreSQL stopped under it) or was killed left
    the lock for 60 s; the next apply said "wait for it to finish" of a process that was gone. A holder on this
    host that runs no more is named so, with when the lease lapses; one that runs keeps the old advice."""
    import psycopg

    work.env["CAPCTL_STATE"] = pg_url
    work.write("jobs.yaml", snapshot_job("audit", ROOMS[:1]))
    work.capctl("state", "init")
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()  # its pid is free now
    # Walk 56c: a pid not running here with a freshly renewed lease may be a capctl in another container (host
    # network) or on another machine of the same name: both are said. Unrenewed past two renewals: it stopped.
    cases = ((gone.pid, 50, "if it ran here"), (gone.pid, 20, "not been renewed"), (os.getpid(), 50, "wait for"))
    for pid, left, said in cases:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(  # its lease, as a lock.acquire leaves it (init released the lock: no row)
                "INSERT INTO capctl_lock (name, holder, token, since, expires_at, epoch)"
                " VALUES ('apply', %s, 'theirs', now(), now() + %s * interval '1 second', 1)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = 'theirs',"
                " expires_at = excluded.expires_at, epoch = capctl_lock.epoch + 1",
                (f"pid {pid} on {socket.gethostname()} (capctl apply)", left),
            )
        applied = work.apply(expect=1)
        text = " ".join(applied.stderr.split())
        assert said in text and "Traceback" not in text, text
        if said == "if it ran here":
            assert (
                f"no process {pid} runs on this host now: if it ran here, it ended without releasing the lock"
                " (killed, or the state store was out of reach when it tried), and the lock lapses by itself in "
            ) in text, text
            assert text.endswith(
                "s: run this again then; if it runs in another container or on another machine of the same host"
                " name, it renews the lock: wait for it to finish"
            ), text
        elif said == "not been renewed":
            assert re.search(
                rf"no process {pid} runs on this host now, and its lease has not been renewed for \d+ s \(a running"
                r" capctl renews it every 15 s\): it ended, or lost the state store, without releasing the lock;"
                r" the lock lapses by itself in \d+ s: run this again then$",
                text,
            ), text
    assert work.sim.requests("StartSnapshot") == []


def test_a_file_size_limit_reached_mid_apply_names_the_io_error_and_leaks_nothing(work: Workdir) -> None:
    """A real write refused by the system (RLIMIT_FSIZE, as `ulimit -f`; SIGXFSZ ignored): SQLite says only
    `disk I/O error`; the error now names which one and what usually causes it (walk 13C-7)."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))  # the -wal reaches it within 40 starts

    work.write("jobs.yaml", snapshot_job("audit", ROOMS))
    work.capctl("state", "init")
    applied = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve"],
        cwd=work.root,
        env=work.env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limited,  # the child only sets a limit and a signal disposition before exec
    )
    assert applied.returncode == 1, applied.stderr
    assert "disk I/O error (SQLITE_IOERR_WRITE: the system refused a read or write of the database" in applied.stderr
    assert "a file size limit (ulimit -f)" in applied.stderr and "Traceback" not in applied.stderr
    recorded = state_tasks(work)  # every task the vendor runs has its intent (or more) in the state
    assert {t["roomId"] for t in work.sim.tasks("volcengine", state="running")} <= {k.split("/")[2] for k in recorded}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_apply_whose_state_a_newer_capctl_upgraded_meanwhile_writes_no_more_and_says_to_use_that_capctl(
    work: Workdir, backend: str, request: pytest.FixtureRequest
) -> None:
    """Walk 59c (after 58C-1): a newer capctl beside this one (a rolling update's first daemon pod) raises the
    schema while an apply runs. SQLite's apply (an OS lock, no lease) wrote on as the older schema; PostgreSQL's
    stopped, but told the user to apply again "once the state store can be written", which this capctl never
    can: it stops at its next write, starts nothing after it, and says which capctl finishes the work."""
    if backend == "postgres":
        url = request.getfixturevalue("pg_url")
        work.env["CAPCTL_STATE"] = url
    proc = _apply_at_its_first_start(work)
    raise_schema = "UPDATE capctl_meta SET schema_version = 3"
    if backend == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(raise_schema)
    else:
        with sqlite3.connect(work.state) as db:
            db.execute(raise_schema)
    stdout, stderr = proc.communicate(timeout=60)
    said = " ".join(stderr.split())
    assert proc.returncode == 1 and "Traceback" not in said, said
    assert "Apply stopped (the state store failed): " in stdout, stdout
    assert "state schema version 3 was written by a newer capctl" in said, said
    assert said.endswith(
        "a newer capctl upgraded the state while this apply ran, and this one writes no more to it; the changes "
        "already started run on: apply again with that capctl (or a newer one): it finishes what this one left"
    ), said
    assert "once the state store can be written" not in said
    assert len(work.sim.requests("StartSnapshot")) == 1  # nothing started after the write that was refused
