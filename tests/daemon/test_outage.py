"""Issue 14, points 1–3: the daemon survives state-store outages and says when it cannot act.

Lease tests run the daemon on the suite's real PostgreSQL (skipped without CAPCTL_TEST_POSTGRES_URL); the
write-failure and wrong-secret tests on a real SQLite file and the simulator.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import psycopg.conninfo
import pytest
from structlog.testing import capture_logs

from reconciler import logs
from reconciler.cli.common import locked
from reconciler.daemon import Daemon
from reconciler.daemon.policy import CALLBACK_RETRY_WINDOW
from reconciler.execute import STARTED_UNRECORDED_RETRIED, STOPPED_UNRECORDED_RETRIED
from reconciler.leader import LeaderSettings
from reconciler.model import TaskStatus
from reconciler.providers.volc_signing import sign_callback
from reconciler.sim.faults import FaultConfig
from reconciler.state import open_state
from reconciler.state.base import Lock, StateError, StateStore
from reconciler.state.postgres import PostgresStateStore
from reconciler.state.sqlite import SQLiteStateStore
from tests.daemon.conftest import DAEMON, Harness, write_specs
from tests.daemon.test_status_page import task_of
from tests.servers import daemon_output
from tests.specdocs import selector_job, snapshot_job
from tests.state.helpers import make_record
from tests.state.test_state_leader import Proxy

LOBBY = "SnapshotJob/audit/lobby"


def client(harness: Harness) -> httpx.AsyncClient:
    assert harness.daemon is not None
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.daemon.asgi_app), base_url=DAEMON)


def metric(text: str, name: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    assert lines, f"{name} not in the metrics"
    return float(lines[0].split()[-1])


async def stop_at_vendor(harness: Harness) -> None:
    """Stop the task at the vendor and ask the daemon to look (as `capctl sync` does)."""
    harness.sim.stop_task(
        "volcengine", harness.record(LOBBY).vendor_task_id or "", room_id="lobby", reason="UnknownStopReason"
    )
    assert harness.daemon is not None
    harness.daemon.sync(None)


def take_the_lease(other: StateStore, pg_url: str) -> Lock:
    """The daemon's lease lapses (a long pause) and `other` takes it."""
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("UPDATE capctl_lock SET expires_at = now() - interval '1 second'")
    return other.lock("capctl apply")


async def test_a_renewal_failing_while_the_lease_is_valid_is_retried(harness: Harness, pg_url: str) -> None:
    """A database restart drops the daemon's connection: the renewal fails once, is retried, and the
    daemon keeps working (before: 'lost the state lock; no more work is taken', for good)."""
    logged = io.StringIO()
    logs.configure("info", json_logs=True, stream=logged)
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    store = open_state(pg_url)
    assert isinstance(store, PostgresStateStore)
    daemon = await harness.start(store, leader=LeaderSettings(6.0, 5.0, 1.0))
    await harness.advance(1)
    conn = store._conn  # the daemon's own connection: end it as a restart would
    assert conn is not None
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    await harness.advance(10)  # several renewals: the first one after the restart fails, the next reconnects
    assert "lost leadership" not in logged.getvalue()
    assert daemon.lease_lost is None and daemon.readiness().ready
    starts = harness.calls("StartSnapshot")
    await stop_at_vendor(harness)
    await harness.advance(40)  # one resync: the stopped task is seen and re-issued
    assert harness.calls("StartSnapshot") == starts + 1
    async with client(harness) as http:
        assert metric((await http.get("/metrics")).text, "capctl_lease_held") == 1


async def test_a_lost_lease_stops_the_daemon_acting_until_it_takes_it_again(harness: Harness, pg_url: str) -> None:
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    daemon = await harness.start(open_state(pg_url), leader=LeaderSettings(6.0, 4.0, 2.0))
    await harness.advance(1)
    other = open_state(pg_url)
    try:
        lock = take_the_lease(other, pg_url)
        await harness.advance(3)
        async with client(harness) as http:
            ready = await http.get("/readyz")
            # A standby now: ready (it can take callbacks into the inbox), naming the holder.
            assert ready.status_code == 200
            assert "standby: lost leadership (lost to another holder" in ready.text and "capctl apply" in ready.text
            assert metric((await http.get("/metrics")).text, "capctl_lease_held") == 0
            assert metric((await http.get("/metrics")).text, "capctl_leader") == 0
            assert (await http.post("/api/v1/sync")).status_code == 503  # sync is the leader's
            woken = await http.post("/api/v1/wake", json={"keys": ["SnapshotJob/*"]})  # and so is wake
            assert woken.status_code == 503 and woken.json()["reason"].startswith("not acting: standby: lost")
            assert woken.json()["reason"].endswith("(send it to the leader)")  # the one it lost the lock to
        starts = harness.calls("StartSnapshot")
        await stop_at_vendor(harness)
        await harness.advance(40)
        assert harness.calls("StartSnapshot") == starts  # not acting: the other holder owns the state
        tombstone = make_record("SnapshotJob/gone/lobby", status=TaskStatus.REMOVED, removed_at=harness.clock.now())
        other.put(tombstone)  # what the other holder changed meanwhile
        lock.release()
        await harness.advance(2)
        assert daemon.lease_lost is None and daemon.readiness().ready
        assert daemon.records.get(tombstone.key) == tombstone  # the state was read again
        daemon.sync(None)
        await harness.advance(5)
        assert harness.calls("StartSnapshot") == starts + 1  # acting again: the stopped task is re-issued
        async with client(harness) as http:
            assert metric((await http.get("/metrics")).text, "capctl_lease_held") == 1
    finally:
        other.close()


async def test_a_leader_deposed_while_its_writes_failed_is_a_ready_standby(harness: Harness, pg_url: str) -> None:
    """Walk 20F-1: a database outage long enough to cost the leader its term left a write of that term
    failed; as a standby it writes no changes, so nothing cleared it and /readyz said 503 `cannot write to
    the state store` for as long as it stood by (a Kubernetes pod out of the Service for hours)."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    daemon = await harness.start(open_state(pg_url), leader=LeaderSettings(6.0, 4.0, 2.0))
    await harness.advance(1)
    failing = (
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;"
        " CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON capctl_records FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    other = open_state(pg_url)
    try:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(failing)
            await stop_at_vendor(harness)
            await harness.advance(3)
            assert "cannot write to the state store" in daemon.readiness().reason  # acting: it cannot
            admin.execute("DROP TRIGGER refuse ON capctl_records")  # the database is well again, but meanwhile
            admin.execute("UPDATE capctl_lock SET expires_at = now() - interval '1 second'")  # the term ended
        lock = other.lock("capctl run on http://other:8080")  # and another replica leads
        await harness.advance(3)
        ready = daemon.readiness()
        assert ready.ready and ready.reason.startswith("ready (standby: lost leadership"), ready.reason
        lock.release()
        await harness.advance(10)  # it leads again: its own writes say whether it can write
        assert daemon.readiness().reason == f"ready (leader, epoch {daemon.lease.elector.epoch})"
        assert harness.record(LOBBY).status.value == "running"
    finally:
        other.close()


async def test_a_state_store_that_cannot_be_written_shows_on_readyz_and_in_metrics(harness: Harness) -> None:
    """A full disk: observations cannot be recorded. /readyz says 503 and why, failed reconciles are
    counted as state-write, and the stopped task no longer counts as running."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    store = SQLiteStateStore(harness.state_path, clock=harness.clock)
    daemon = await harness.start(store)
    await harness.advance(1)
    db = store._db
    assert db is not None
    db.execute("PRAGMA query_only = ON")  # every write now fails in SQLite itself
    await stop_at_vendor(harness)
    with capture_logs() as failing:
        await harness.advance(40)
    async with client(harness) as http:
        ready = await http.get("/readyz")
        text = (await http.get("/metrics")).text
    assert ready.status_code == 503 and "cannot write to the state store" in ready.text, ready.text
    # One line says the outage, however many reconciles fail (walk 13C-3: before, only a line per failed one).
    events = [e["event"] for e in failing]
    assert events.count("cannot write to the state store; changes wait until it can") == 1
    assert events.count("reconcile failed; retrying with backoff") > 1
    assert metric(text, 'capctl_reconcile_errors_total{reason="state-write"}') >= 1
    assert metric(text, 'capctl_tasks{status="running"}') == 0
    assert metric(text, 'capctl_tasks{status="stopped"}') == 1
    async with client(harness) as http:  # the status page says it too (before: "holds the state lease and acts")
        detail = (await http.get("/api/v1/status")).json()["replica"]["detail"]
    assert detail.startswith("holds the state lease and acts (epoch 1); but cannot write to the state store: ")
    assert detail.endswith(": changes wait until it can"), detail
    db.execute("PRAGMA query_only = OFF")  # space again: the retry records it and the daemon is ready
    with capture_logs() as back:
        await harness.advance(45)  # its next backoff step (40 s after the 4th failed reconcile)
    assert daemon.readiness().ready
    async with client(harness) as http:
        assert (await http.get("/api/v1/status")).json()["replica"][
            "detail"
        ] == "holds the state lease and acts (epoch 1)"
    (written,) = [e for e in back if e["event"] == "the state store can be written again"]
    assert written["failed_writes"] >= events.count("reconcile failed; retrying with backoff")
    assert harness.record(LOBBY).status.value == "running" and harness.calls("StartSnapshot") == 2


async def test_a_start_the_vendor_answered_but_the_state_could_not_record_is_logged_as_running(
    harness: Harness,
) -> None:
    """Walk 56c (after 55D-1): under the daemon, a start the vendor answered whose record then failed logged only
    `reconcile failed; retrying with backoff` with `error=…: database or disk is full`, read as nothing started.
    It says the task runs and that its own retry takes it up (no apply needed), and that retry starts no second."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    store = SQLiteStateStore(harness.state_path, create=True, clock=harness.clock)
    with sqlite3.connect(harness.state_path) as db:  # the intent is written; the disk fills before the start is
        db.execute(  # recorded
            "CREATE TRIGGER disk_full BEFORE UPDATE ON capctl_records"
            f" WHEN json_extract(NEW.body, '$.key') = '{LOBBY}' AND json_extract(NEW.body, '$.status') = 'running'"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    with capture_logs() as logs_:
        await harness.start(store)
        await harness.advance(1)
    (failed,) = [e for e in logs_ if e["event"] == "reconcile failed; retrying with backoff"]
    assert failed["error"].endswith(f"database or disk is full; {STARTED_UNRECORDED_RETRIED}"), failed
    assert harness.calls("StartSnapshot") == 1
    with sqlite3.connect(harness.state_path) as db:
        db.execute("DROP TRIGGER disk_full")
    await harness.advance(10)  # its backoff step: the retry takes the run up
    assert harness.record(LOBBY).status is TaskStatus.RUNNING
    assert harness.calls("StartSnapshot") <= 2 and len(harness.running_sim_tasks("volcengine")) == 1


async def test_a_prune_the_vendor_answered_but_the_state_could_not_record_is_logged_as_stopped(
    harness: Harness,
) -> None:
    """Walk 58e (56c for stops): the daemon's prune whose stop the vendor answered, whose tombstone then failed,
    logged only `…: database or disk is full`, read as the run going on. It says it is stopped and that its retry
    records it; that retry does, with no second stop answered."""
    for room in ("lobby", "hall"):
        harness.sim.publish("volcengine", room, user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby", "hall"]))
    store = SQLiteStateStore(harness.state_path, create=True, clock=harness.clock)
    daemon = await harness.start(store, prune_grace=0.0)
    await harness.advance(1)
    with sqlite3.connect(harness.state_path) as db:
        db.execute(
            "CREATE TRIGGER disk_full BEFORE UPDATE ON capctl_records"
            f" WHEN json_extract(NEW.body, '$.key') = '{LOBBY}' AND json_extract(NEW.body, '$.status') = 'removed'"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    write_specs(harness.specs, snapshot_job("audit", ["hall"]))
    with capture_logs() as logs_:
        assert daemon.reload()
        await harness.advance(2)
    failed = [e for e in logs_ if e["event"] == "reconcile failed; retrying with backoff"]
    assert failed and failed[0]["error"].endswith(f"database or disk is full; {STOPPED_UNRECORDED_RETRIED}"), failed
    assert [t.room_id for t in harness.running_sim_tasks("volcengine")] == ["hall"]
    with sqlite3.connect(harness.state_path) as db:
        db.execute("DROP TRIGGER disk_full")
    await harness.advance(60)  # its backoff step: the retry records it
    assert harness.record(LOBBY).status is TaskStatus.REMOVED


async def test_a_state_file_moved_away_stops_the_daemon_acting_until_it_is_put_back(harness: Harness) -> None:
    """Before (walk 13C-1), the daemon went on acting on the moved file: what it wrote then was lost, and
    an apply at the path made a new state beside it, every task started again."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    daemon = await harness.start(leader=LeaderSettings(6.0, 4.0, 1.0))
    await harness.advance(1)
    away = harness.state_path.with_name("away.db")
    harness.state_path.rename(away)
    starts = harness.calls("StartSnapshot")
    await stop_at_vendor(harness)
    await harness.advance(40)
    assert harness.calls("StartSnapshot") == starts  # its intent cannot be recorded: no start
    async with client(harness) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and "the state file is gone from that path" in ready.text, ready.text
        assert metric((await http.get("/metrics")).text, "capctl_leader") == 0
    away.rename(harness.state_path)
    await harness.advance(2)  # the next attempt takes the lock again, and the takeover re-issues the task
    assert daemon.readiness().ready
    await harness.advance(5)
    assert harness.calls("StartSnapshot") == starts + 1
    assert harness.record(LOBBY).status.value == "running"


async def test_a_wrong_secret_is_counted_and_its_tasks_are_not_counted_as_running(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    daemon = await harness.start()
    await harness.advance(1)
    monkeypatch.setenv("VOLC_SK", "not-the-secret")
    assert daemon.reload()
    await stop_at_vendor(harness)
    await harness.advance(40)
    async with client(harness) as http:
        text = (await http.get("/metrics")).text
    assert metric(text, 'capctl_reconcile_errors_total{reason="vendor-auth"}') >= 1
    assert metric(text, 'capctl_tasks{status="running"}') == 0
    assert metric(text, 'capctl_tasks{status="unknown"}') == 1


async def test_a_wrong_secret_is_said_once_a_minute_not_once_per_task(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every task's look fails alike: a line per task and sweep (1,000 a sweep at 1,000 tasks) filled the log
    and pushed every decision off the status page's recent events. One line a minute per Provider and cause,
    with how many it held back; the metric still counts each."""
    rooms = [f"room-{i}" for i in range(5)]
    for room in rooms:
        harness.sim.publish("volcengine", room, user_id="u")
    write_specs(harness.specs, snapshot_job("audit", rooms, idle=600))
    daemon = await harness.start()
    await harness.advance(1)
    monkeypatch.setenv("VOLC_SK", "not-the-secret")
    assert daemon.reload()
    with capture_logs() as logs:
        daemon.sync(None)  # every task looked at now, as `capctl sync` asks
        await harness.advance(5)
        failed = [e for e in logs if e["event"] == "observation failed"]
        assert len(failed) == 1 and "repeats_held_back" not in failed[0]
        await harness.advance(61)
        daemon.sync(None)
        await harness.advance(5)
    failed = [e for e in logs if e["event"] == "observation failed"]
    assert len(failed) == 2 and failed[1]["repeats_held_back"] >= 4
    async with client(harness) as http:
        text = (await http.get("/metrics")).text
    assert metric(text, 'capctl_reconcile_errors_total{reason="vendor-auth"}') >= 10


def test_probes_answer_while_the_database_is_paused(tmp_path: Path, pg_url: str) -> None:
    """`capctl run` on PostgreSQL, its connection's backend stopped (SIGSTOP): /healthz answers at once
    and /readyz answers 503 naming the store (before: both hung until the database came back)."""
    name = f"capctl-pause-{secrets.token_hex(4)}"
    specs = write_specs(tmp_path / "specs")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "run", "--listen", "127.0.0.1:0", str(specs)],
        env={**os.environ, "CAPCTL_STATE": f"{pg_url}&application_name={name}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    backend: int | None = None
    try:
        http = httpx.Client(base_url=daemon_output(daemon).url(), timeout=10)
        assert http.get("/readyz").status_code == 200
        with psycopg.connect(pg_url, autocommit=True) as admin:
            row = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
        assert row is not None
        backend = int(row[0])
        os.kill(backend, signal.SIGSTOP)
        assert http.get("/healthz").status_code == 200
        not_ready = http.get("/readyz")
        assert not_ready.status_code == 503 and "state store has not answered" in not_ready.text
        assert http.get("/healthz").status_code == 200
    finally:
        if backend is not None:
            os.kill(backend, signal.SIGCONT)
        daemon.terminate()
        daemon.wait(timeout=30)


async def test_every_replica_exports_whether_it_reaches_the_state_store(harness: Harness, pg_url: str) -> None:
    """A database outage: the leader soon stands by and nobody reconciles, so no reconcile error says it;
    `capctl_state_store_reachable` (the alert CapctlStateStoreUnreachable) does, until the store is back."""
    given = psycopg.conninfo.conninfo_to_dict(pg_url)
    proxy = Proxy((str(given["host"]), int(str(given["port"]))))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    store = PostgresStateStore(pg_url.replace(f":{given['port']}/", f":{proxy.port}/"), connect_timeout=2)
    try:
        await harness.start(store, leader=LeaderSettings(6.0, 4.0, 1.0))
        await harness.advance(1)
        async with client(harness) as http:
            assert metric((await http.get("/metrics")).text, "capctl_state_store_reachable") == 1
            proxy.cut()
            with capture_logs() as cut:
                await harness.advance(6)  # renewals fail past the renew deadline: it stands by
            text = (await http.get("/metrics")).text
            assert metric(text, "capctl_state_store_reachable") == 0 and metric(text, "capctl_leader") == 0
            assert metric(text, 'capctl_reconcile_errors_total{reason="state-read"}') == 0
            ready = await http.get("/readyz")  # the store's error once, not twice (role, then reason)
            assert ready.status_code == 503 and ready.text.startswith("not ready (standby: the state store cannot")
            assert ready.text.count("cannot connect to the PostgreSQL state store") == 1
            proxy.restore()
            with capture_logs() as back:
                await harness.advance(2)  # the next attempt reaches the store (its lease lapses on the server's clock)
            assert metric((await http.get("/metrics")).text, "capctl_state_store_reachable") == 1
        # Said once each way, whatever the role (a standby logs nothing else during an outage).
        assert [e["event"] for e in cut].count("cannot reach the state store; trying again every retry period") == 1
        # The leader's inbox claims failed every retry period until the deadline: one line, not one each (60f-1).
        assert [e["event"] for e in cut].count("could not claim the callback inbox") == 1
        assert [e["event"] for e in back].count("the state store answers again") == 1
    finally:
        await harness.stop()
        proxy.close()


async def leads_again(harness: Harness, daemon: Daemon) -> None:
    """The database is back: wait (20 s of real time at most) for the old lease to lapse on the server's clock
    and the daemon to lead again."""
    for _ in range(40):
        await harness.advance(0.5)
        if daemon.lease.acting():
            return
        await asyncio.sleep(0.2)


async def test_a_room_known_empty_gets_its_repair_start_once_an_outage_that_refused_callbacks_ends(
    harness: Harness, pg_url: str
) -> None:
    """Walk 20F-3: someone joined a room known empty while PostgreSQL was down; every replica answered the
    join's callbacks 503 (the inbox could not be written) and Volcengine's two retries ended before the
    database was back. The task slept on to its hourly repair start: up to an hour of that room lost."""
    given = psycopg.conninfo.conninfo_to_dict(pg_url)
    proxy = Proxy((str(given["host"]), int(str(given["port"]))))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    store = PostgresStateStore(pg_url.replace(f":{given['port']}/", f":{proxy.port}/"), connect_timeout=2)
    try:
        harness.sim.publish("volcengine", "lobby", user_id="u")
        daemon = await harness.start(store, leader=LeaderSettings(3.0, 2.0, 0.5))
        await harness.advance(30)
        harness.sim.unpublish("volcengine", "lobby", user_id="u")
        await harness.advance(30)  # the run idles out in the emptied room: dormant until activity
        dormant = harness.record(LOBBY)
        assert dormant.status is TaskStatus.DORMANT and dormant.room_empty, dormant
        starts = harness.calls("StartSnapshot")
        proxy.cut()
        await harness.advance(3)  # past the renew deadline: it stands by
        assert not daemon.lease.acting()
        harness.sim.publish("volcengine", "lobby", user_id="u")  # a join: its callbacks answered 503, retried, lost
        await harness.advance(30)
        assert harness.calls("StartSnapshot") == starts
        proxy.restore()
        await leads_again(harness, daemon)
        await harness.advance(2)
        assert harness.calls("StartSnapshot") == starts + 1  # before: only at the repair start, an hour on
        assert harness.record(LOBBY).status is TaskStatus.RUNNING
    finally:
        await harness.stop()
        proxy.close()


async def test_a_room_the_leader_heard_enter_before_an_outage_cost_it_the_lease_is_captured_when_it_leads_again(
    harness: Harness, pg_url: str
) -> None:
    """Walk 60f-2: PostgreSQL stopped; before the renew deadline the leader answered a room's join 200 and kept
    it in memory (`room activity not written`), then stood by. Taking the lease back read the room activity from
    the state, which lacked the join, so the room was never selected: the vendor does not send an answered
    callback again, and no listing asks about a room the daemon does not know."""
    given = psycopg.conninfo.conninfo_to_dict(pg_url)
    proxy = Proxy((str(given["host"]), int(str(given["port"]))))
    write_specs(harness.specs, selector_job("classes", "class-*"))
    store = PostgresStateStore(pg_url.replace(f":{given['port']}/", f":{proxy.port}/"), connect_timeout=2)
    try:
        daemon = await harness.start(store, leader=LeaderSettings(6.0, 4.0, 1.0))
        await harness.advance(2)
        proxy.cut()
        harness.sim.publish("volcengine", "class-1", user_id="u")  # its callbacks reach the leader: answered 200
        with capture_logs() as logs:
            await harness.advance(2)
        assert any(e["event"] == "room activity not written" for e in logs), logs
        await harness.advance(4)  # past the renew deadline: it stands by
        assert not daemon.lease.acting() and harness.calls("StartSnapshot") == 0
        proxy.restore()
        await leads_again(harness, daemon)
        await harness.advance(3)
        assert [t.room_id for t in harness.running_sim_tasks()] == ["class-1"]  # before: never started
        assert harness.record("SnapshotJob/classes/class-1").status is TaskStatus.RUNNING
        assert [(a.room, a.active) for a in store.room_activity({})] == [("class-1", True)]
    finally:
        await harness.stop()
        proxy.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    ("down", "joined", "command"),
    [(5.0, False, False), (5.0, True, False), (60.0, False, False), (60.0, True, False), (60.0, True, True)],
)
async def test_a_restart_longer_than_the_vendor_retries_gives_rooms_known_empty_their_repair_start(
    harness: Harness, request: pytest.FixtureRequest, backend: str, down: float, joined: bool, command: bool
) -> None:
    """Walk 21D-1: the only replica is restarted (a rollout, a crash, a scale to 0 and back). A join while
    no replica listened is lost once Volcengine's two retries, 5 s apart, end: before, its room known empty
    slept on to the hourly repair start. A restart within the retries costs nothing (a join is heard by the
    new replica, no repair start without one); a longer one costs one repair start per such room. A command
    (`capctl apply`, `state rm`, `wake`) run meanwhile answers no callback: before, its release was read as the
    last listener's, and the silence before it was lost (walk 25B-3)."""
    pg_url = str(request.getfixturevalue("pg_url")) if backend == "postgres" else ""

    def store() -> StateStore:
        return PostgresStateStore(pg_url) if pg_url else SQLiteStateStore(harness.state_path, clock=harness.clock)

    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    harness.sim.publish("volcengine", "lobby", user_id="u")
    await harness.start(store())
    await harness.advance(30)
    harness.sim.unpublish("volcengine", "lobby", user_id="u")
    await harness.advance(30)  # the run idles out in the emptied room: dormant until activity
    assert harness.record(LOBBY).status is TaskStatus.DORMANT and harness.record(LOBBY).room_empty
    starts = harness.calls("StartSnapshot")
    await harness.stop()  # lets the lock go: the store records when
    if joined:
        harness.sim.publish("volcengine", "lobby", user_id="u")  # its callbacks find no replica: retried
    await harness.advance(down)
    if pg_url and down > CALLBACK_RETRY_WINDOW:  # the server's clock is not the test's: its record is moved
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE capctl_lock SET expires_at = expires_at - %s * interval '1 second'", (down,))
    if command:
        held = store()
        try:
            with locked(held, "capctl apply"):
                await harness.advance(2)
        finally:
            held.close()
    with capture_logs() as logs:
        await harness.start(store())
        await harness.advance(8)  # past Volcengine's last retry of a join in a quick restart
    woken = [e for e in logs if e["event"].startswith("callbacks went unanswered longer")]
    assert len(woken) == (down > CALLBACK_RETRY_WINDOW), logs
    assert harness.calls("StartSnapshot") == starts + (joined or down > CALLBACK_RETRY_WINDOW)
    if joined:
        assert harness.record(LOBBY).status is TaskStatus.RUNNING


async def test_only_rooms_judged_empty_before_the_silence_ended_get_the_repair_start(harness: Harness) -> None:
    """Walk 21A-1: an outage marked the replica until its next term: that takeover, days later (the leader's
    node drained), made every dormant task of the fleet start at once, rooms judged empty long after the
    outage included. Only a room judged empty by the time the silence ended may have lost a join."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    harness.sim.publish("volcengine", "lobby", user_id="u")
    daemon = await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock))
    lease = daemon.lease

    def outage_just_ended(seconds: float) -> None:
        lease._track_refusals(True)
        assert lease._refused_from is not None
        lease._refused_from -= seconds  # it began that long ago
        lease._track_refusals(False)

    await harness.advance(30)
    outage_just_ended(CALLBACK_RETRY_WINDOW + 10)
    assert lease.unheard() is not None
    harness.sim.unpublish("volcengine", "lobby", user_id="u")
    await harness.advance(30)  # judged empty after the outage: every join since is heard
    assert harness.record(LOBBY).status is TaskStatus.DORMANT and harness.record(LOBBY).room_empty
    starts = harness.calls("StartSnapshot")
    epoch = lease.elector.epoch
    assert epoch is not None
    await lease._take_over(epoch)
    await harness.advance(5)
    assert harness.calls("StartSnapshot") == starts and lease.unheard() is None
    outage_just_ended(CALLBACK_RETRY_WINDOW + 10)  # judged before this one: its join may be lost
    await lease._take_over(epoch)
    await harness.advance(5)
    assert harness.calls("StartSnapshot") == starts + 1
    await harness.stop()


async def _lobby_known_empty(harness: Harness, store: StateStore | None = None) -> Daemon:
    """A daemon (on SQLite unless `store`) whose lobby task is dormant in its room known empty, its repair start an
    hour on."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    harness.sim.publish("volcengine", "lobby", user_id="u")
    daemon = await harness.start(store or SQLiteStateStore(harness.state_path, clock=harness.clock))
    await harness.advance(30)
    harness.sim.unpublish("volcengine", "lobby", user_id="u")
    await harness.advance(30)
    assert harness.record(LOBBY).status is TaskStatus.DORMANT and harness.record(LOBBY).room_empty
    return daemon


@pytest.mark.parametrize(("stuck", "woken"), [(5.0, False), (30.0, True)])
async def test_a_leader_whose_takeover_keeps_failing_is_not_ready_and_counts_it_as_unheard(
    harness: Harness, stuck: float, woken: bool
) -> None:
    """Walk 25B-2: a leader whose takeover cannot read the state holds the lock, so no replica acts, yet read
    `ready (leader (epoch N): reading the state before acting)`. Not ready now: a Service sends callbacks to
    the other replicas, or (one replica) nowhere, so a stretch longer than the vendor's retries gives rooms
    known empty their repair start once the takeover completes, as an outage does."""
    daemon = await _lobby_known_empty(harness)
    lease, starts = daemon.lease, harness.calls("StartSnapshot")
    read = lease._refresh

    def cannot_read() -> object:
        raise StateError("state.db: the state cannot be read")

    lease._refresh, lease._acting_epoch = cannot_read, None  # a new term whose takeover fails
    await harness.advance(stuck)
    ready = daemon.readiness()
    assert not ready.ready, ready
    assert ready.reason.endswith(
        "reading the state before acting): the last try failed: state.db: the state cannot be read"
    )
    lease._refresh = read
    await harness.advance(3)
    assert daemon.readiness().ready and lease.acting()
    assert harness.calls("StartSnapshot") == starts + woken
    await harness.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_leader_stopped_while_its_takeover_kept_failing_leaves_the_stretch_to_the_next_one(
    harness: Harness, request: pytest.FixtureRequest, backend: str
) -> None:
    """Walk 26a (after 25B-2): a leader stuck in its takeover is not ready, so (one replica behind a Service) no
    callback reached it; restarting it (the way out of a damaged row: stop, `state rm`, start) released the lock
    as "heard until now", and the next daemon's silence began there: no wake, the room slept to its repair start.
    Its release now records its last sign of life as when the stretch began."""
    pg_url = str(request.getfixturevalue("pg_url")) if backend == "postgres" else ""

    def store() -> StateStore:
        return PostgresStateStore(pg_url) if pg_url else SQLiteStateStore(harness.state_path, clock=harness.clock)

    daemon = await _lobby_known_empty(harness, store())
    lease, starts = daemon.lease, harness.calls("StartSnapshot")

    def cannot_read() -> object:
        raise StateError("state.db: the state cannot be read")

    lease._refresh, lease._acting_epoch = cannot_read, None  # a new term whose takeover fails
    await harness.advance(30)
    assert not daemon.readiness().ready
    await harness.stop()
    await harness.advance(1)  # restarted at once (PostgreSQL's record is on the server's clock: 30 s before, too)
    with capture_logs() as logs:
        await harness.start(store())
        await harness.advance(3)
    woken = [e for e in logs if e["event"].startswith("callbacks went unanswered longer")]
    assert (len(woken), harness.calls("StartSnapshot")) == (1, starts + 1), logs


@pytest.mark.parametrize(("refused", "woken"), [(5.0, False), (20.0, True)])
async def test_a_leader_that_kept_its_term_through_refusals_wakes_rooms_known_empty(
    harness: Harness, refused: float, woken: bool
) -> None:
    """Walk 25B-4: a leader keeps its term through an outage shorter than its renew deadline (`--renew-deadline
    30s`: 20 s of refused renewals). Every standby answered callbacks 503 meanwhile (the inbox could not be
    written), so a join may be lost, yet no new term came to wake rooms known empty: they slept on to the
    hourly repair start. The wake now runs when the store answers the leader again; a stretch within the
    vendor's retries costs nothing."""
    daemon = await _lobby_known_empty(harness)
    lease, starts = daemon.lease, harness.calls("StartSnapshot")
    lease._track_refusals(True)  # renewals refused since `refused` s ago, the term kept
    assert lease._refused_from is not None
    lease._refused_from -= refused
    with capture_logs() as logs:
        await harness.advance(5)  # the next renew is answered
    assert lease.acting() and lease.unheard() is None
    said = [e for e in logs if e["event"].startswith("callbacks went unanswered longer")]
    assert (len(said), harness.calls("StartSnapshot")) == (woken, starts + woken), logs
    await harness.stop()


async def test_a_callback_whose_hint_cannot_be_written_is_still_answered_and_acted_on(harness: Harness) -> None:
    """Before, an image callback arriving while the state could not be written (PostgreSQL restarting, a full
    disk) failed with a traceback and a 500: the write of "this run is productive" was not caught. Now it is
    answered 200, logged, and written by the next image once the store is back."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    store = SQLiteStateStore(harness.state_path, clock=harness.clock)
    daemon = await harness.start(store)
    await harness.advance(1)
    daemon.records.put(harness.record(LOBBY).evolve(productive=False))  # as before its first image
    db = store._db
    assert db is not None
    db.execute("PRAGMA query_only = ON")

    def image(n: int) -> bytes:
        body = {
            "EventType": "SnapshotRealTimeData",
            "EventData": json.dumps({"TaskId": harness.record(LOBBY).vendor_task_id, "RoomId": "lobby"}),
            "EventTime": str(int(harness.clock.now() * 1000)),
            "EventId": f"image-{n}",
            "AppId": "capctl-sim-volc",
            "Version": "2020-12-01",
            "Nonce": "n",
        }
        body["Signature"] = sign_callback(body, "capctl-sim-volc-callback")
        return json.dumps(body).encode()

    async with client(harness) as http:
        with capture_logs() as logs:
            answer = await http.post("/callbacks/volcengine", content=image(1))
        assert answer.status_code == 200, answer.text
        assert any(e["event"] == "callback hint not written to the state" for e in logs), logs
        db.execute("PRAGMA query_only = OFF")
        assert (await http.post("/callbacks/volcengine", content=image(2))).status_code == 200
    assert harness.record(LOBBY).productive


async def test_a_lease_regained_in_a_vendor_outage_keeps_status_unknown_since_at_the_last_good_look(
    harness: Harness, pg_url: str
) -> None:
    """Walk 40b: the third way a term begins (38c-2 tested a restart and a takeover by the standby): the lease
    lost and taken again while the looks fail. The new term forgets the runtime's `unknown_since`; its first
    failed look must say the state's last good look, not the time the lease came back."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    daemon = await harness.start(open_state(pg_url), leader=LeaderSettings(6.0, 4.0, 2.0))
    await harness.advance(1)
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["GetSnapshotTask"]))
    down_from = harness.clock.now()
    await harness.advance(120)  # the looks fail
    other = open_state(pg_url)
    try:
        lock = take_the_lease(other, pg_url)
        await harness.advance(30)
        assert daemon.lease_lost is not None
        lock.release()
        await harness.advance(60)  # taken again: its first look of the term fails too
    finally:
        other.close()
    assert daemon.lease_lost is None
    async with client(harness) as http:
        down = (await http.get("/api/v1/status")).json()
    since = datetime.fromisoformat(task_of(down, LOBBY)["status_unknown_since"]).timestamp()
    assert down_from - 300 <= since <= down_from, since - down_from
