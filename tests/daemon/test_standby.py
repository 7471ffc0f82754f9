"""Issue 16 in process: a standby beside the leader on one state (SQLite and PostgreSQL), on the fake clock.

The simulator's callbacks go to the standby, as a Service would send them to any replica: the standby
verifies and stores them in the state's inbox, and the leader acts on them.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg.conninfo
import pytest
from structlog.testing import capture_logs

from reconciler.daemon.controller import Daemon
from reconciler.daemon.fencing import LeaderStore
from reconciler.daemon.inbox import entry_of
from reconciler.daemon.records import RecordCache
from reconciler.daemon.specset import read_specs
from reconciler.leader import LeaderSettings, NotLeader
from reconciler.model import RoomActivity, TaskRecord, TaskStatus
from reconciler.secrets import keyed_hash
from reconciler.sim.faults import FaultConfig
from reconciler.spec import load_spec_set
from reconciler.state import open_state
from reconciler.state.base import InboxEntry, Snapshot, StateError, StateStore
from reconciler.state.postgres import PostgresStateStore
from reconciler.state.sql import iso_utc
from reconciler.state.sqlite import SQLiteStateStore
from reconciler.status.history import History, Restored
from tests.daemon.conftest import DAEMON, Harness, settle, write_specs
from tests.daemon.test_http import volc_body, zego_body
from tests.daemon.test_units import record
from tests.specdocs import recording_job, selector_job, snapshot_job
from tests.state.test_state_damage import raw_sql
from tests.state.test_state_leader import Proxy

CLASS = "RecordingJob/rec/class-1"
LOBBY = "SnapshotJob/audit/lobby"


@pytest.fixture(params=["sqlite", "postgresql"])
async def two_stores(request: pytest.FixtureRequest, harness: Harness) -> AsyncIterator[tuple[StateStore, StateStore]]:
    if request.param == "sqlite":
        yield SQLiteStateStore(harness.state_path, clock=harness.clock), SQLiteStateStore(harness.state_path)
        return
    url = request.getfixturevalue("pg_url")
    yield open_state(url), open_state(url)


async def test_a_standby_stores_callbacks_and_the_leader_acts_on_them(
    harness: Harness, two_stores: tuple[StateStore, StateStore]
) -> None:
    leader_store, standby_store = two_stores
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=30))
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    # A resync of an hour: only the callback can make the leader look at the recording before then.
    leader = await harness.start(leader_store, resync=3600.0)
    standby = await harness.start_standby(standby_store, resync=3600.0)
    try:
        await settle()
        assert standby.readiness().ready and standby.readiness().reason.startswith("ready (standby: the leader is")
        assert standby.sync(None)[1].endswith("(send it to the leader)")  # sync is the leader's (503)
        harness._daemon_app = standby.asgi_app  # every callback now reaches the standby
        with capture_logs() as logs:  # (from the first claim: the inbox line is said once a minute)
            await harness.advance(5)
            harness.sim.unpublish("zego", "class-1", stream_id="teacher")
            await harness.advance(40)  # idle timeout: the vendor's callback goes to the standby
            record = leader.records.get(CLASS)
            # The stored room_close said the room emptied: the leader leaves the run dormant in it (16D-1) ...
            assert record is not None and record.status is TaskStatus.DORMANT and record.reissue_count == 0
            harness.sim.publish("zego", "class-1", stream_id="teacher")
            await harness.advance(5)
        record = leader.records.get(CLASS)
        assert record is not None and record.reissue_count == 1  # ... and the stored stream_create starts it
        stored = standby.metrics.callbacks.labels(vendor="zego", outcome="stored")._value.get()
        assert stored >= 1
        assert any(e["event"] == "callbacks taken from the inbox" for e in logs)
        reissues = [e for e in logs if e["event"] == "decision" and e.get("action") == "reissue"]
        # Re-issued on the next stream, with the stored end callback's quit reason.
        assert reissues and reissues[0]["reason"].startswith("vendor stopped it: idle timeout (ZEGO quit_reason 3)")
        standby_calls = standby.metrics.render().decode()
        assert 'capctl_vendor_calls_total{api="StartRecord"' not in standby_calls  # no mutating call
        assert "capctl_leader 0.0" in standby_calls
    finally:
        await standby.stop()
        standby.records.close()


async def test_callbacks_taken_from_the_inbox_are_said_once_a_minute(harness: Harness) -> None:
    """Behind a Service half the callbacks reach the standby: a line at every claim (each retry period, 1,800 an
    hour) drowned the leader's log. One line a minute, counting every callback taken since the last."""
    rooms = [f"class-{i}" for i in range(4)]
    write_specs(harness.specs, recording_job("rec", rooms, idle=600))
    leader = await harness.start(resync=3600.0)
    standby = await harness.start_standby(resync=3600.0)
    try:
        await settle()
        harness._daemon_app = standby.asgi_app  # every callback now reaches the standby
        with capture_logs() as logs:
            for room in rooms:  # callbacks stored in four retry periods of one minute
                harness.sim.publish("zego", room, stream_id="teacher")
                await harness.advance(5)
            said = [e for e in logs if e["event"] == "callbacks taken from the inbox"]
            assert len(said) == 1
            await harness.advance(60)
            harness.sim.publish("zego", rooms[0], stream_id="student")
            await harness.advance(5)
        said = [e for e in logs if e["event"] == "callbacks taken from the inbox"]
        stored = standby.metrics.callbacks.labels(vendor="zego", outcome="stored")._value.get()
        # The second counts the minute's claims; what is claimed after it waits for the next line.
        assert len(said) == 2 and said[1]["count"] > 1 and sum(e["count"] for e in said) <= stored
        assert leader.lease_lost is None
    finally:
        await standby.stop()
        standby.records.close()


async def test_the_standby_leads_when_the_leader_stops_and_reads_the_state_first(harness: Harness) -> None:
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=30))
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    settings = LeaderSettings(6.0, 4.0, 1.0)
    await harness.start(leader=settings)
    standby = Daemon(
        [str(harness.specs)],
        SQLiteStateStore(harness.state_path),
        harness.clock,
        transport=httpx.ASGITransport(app=harness.sim_app),
        rng=random.Random(2),
        elect_in_thread=False,
        leader=settings,
    )
    await standby.start()
    try:
        await harness.advance(3)
        assert standby.lease_lost is not None
        with capture_logs() as logs:
            await harness.stop()  # resigns: the lock is free for the standby
            await harness.advance(2)
        assert standby.lease_lost is None and standby.readiness().reason == "ready (leader, epoch 2)"
        assert [e["epoch"] for e in logs if e["event"] == "became leader"] == [2]
        # A rollout's routine, not a warning (every other lost lead is).
        assert [(e["reason"], e["log_level"]) for e in logs if e["event"] == "lost leadership"] == [
            ("shutting down", "info")
        ]
        record = standby.records.get(CLASS)
        assert record is not None and record.reissue_count == 0  # observed, still running: not started again
        assert len([t for t in harness.sim.tasks("zego") if t.running]) == 1
    finally:
        await standby.stop()
        standby.records.close()


async def test_a_standby_answers_503_when_it_cannot_store_a_callback_and_200_on_the_retry(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    standby = Daemon(
        [str(harness.specs)],
        SQLiteStateStore(harness.state_path),
        harness.clock,
        transport=httpx.ASGITransport(app=harness.sim_app),
        elect_in_thread=False,
    )
    await standby.start()
    body = volc_body(harness, event_id="kept-1")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            blocker = sqlite3.connect(harness.state_path, timeout=0)
            blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database past the 5 s busy timeout
            try:
                refused = await http.post("/callbacks/volcengine", json=body)
            finally:
                blocker.rollback()
                blocker.close()
            assert refused.status_code == 503 and "cannot store the callback for the leader" in refused.text
            stored = await http.post("/callbacks/volcengine", json=body)  # the vendor's retry
            assert stored.status_code == 200 and stored.json()["reason"] == "stored for the leader"
            again = await http.post("/callbacks/volcengine", json=body)
            assert again.status_code == 200 and again.json()["reason"] == "duplicate: already stored for the leader"
            forged = await http.post("/callbacks/volcengine", json=volc_body(harness, event_id="x", secret="guess"))
            assert forged.status_code == 401  # verified as the leader would
    finally:
        await standby.stop()
        standby.records.close()


async def test_a_zego_retry_a_standby_refused_is_acted_on_once_that_replica_leads(harness: Harness) -> None:
    """Walk 60f-3: PostgreSQL down, a standby answered a ZEGO callback 503 (the inbox could not be written) and
    remembered its signed pair; by the vendor's next retry that replica led, and took the retry for the vendor's
    repeat of a callback it had acted on: `200 duplicate: already accepted`, and nothing was ever done with it
    (a room that opened in the outage was never captured)."""
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=600))
    harness.sim.config.zego_callback_url = None  # only the callbacks this test sends
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    settings = LeaderSettings(6.0, 4.0, 1.0)
    await harness.start(leader=settings)
    await harness.advance(1)
    run = harness.record(CLASS).vendor_task_id
    assert run is not None and not harness.record(CLASS).productive
    standby = await harness.start_standby(leader=settings)
    body = zego_body(harness, task_id=run, room_id="class-1") | {"event_type": 1}  # uploaded: the run is productive
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            blocker = sqlite3.connect(harness.state_path, timeout=0)
            blocker.execute("BEGIN EXCLUSIVE")  # the inbox cannot be written
            try:
                refused = await http.post("/callbacks/zego", json=body)
            finally:
                blocker.rollback()
                blocker.close()
            assert refused.status_code == 503, refused.text
            await harness.stop()  # the leader goes: the standby leads
            await harness.advance(2)
            assert standby.lease_lost is None
            retry = await http.post("/callbacks/zego", json=body)  # the vendor's retry
            assert (retry.status_code, retry.json()["reason"]) == (200, "accepted")  # before: a duplicate
            again = await http.post("/callbacks/zego", json=body)
            assert (again.status_code, again.json()["reason"]) == (200, "duplicate: already accepted")
        await harness.advance(1)
        record = standby.records.get(CLASS)
        assert record is not None and record.productive
    finally:
        await standby.stop()
        standby.records.close()


async def test_a_leader_past_its_renew_deadline_makes_no_mutating_call_and_stands_by(harness: Harness) -> None:
    """As a leader paused past its deadline finds itself on resuming: the start is refused before any
    request leaves, the status query still goes out, and it steps down (`renew deadline passed`)."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    daemon = await harness.start(leader=LeaderSettings(6.0, 4.0, 1.0))
    await harness.advance(2)
    assert daemon.spec is not None and daemon.lease.acting()
    task, record = daemon.spec.tasks["SnapshotJob/audit/lobby"], daemon.records.get("SnapshotJob/audit/lobby")
    assert record is not None
    provider = daemon.vendors.provider(task.provider, task.family)
    starts = harness.calls("StartSnapshot")
    harness.clock.set(harness.clock.now() + 5)  # no tick ran: the last renew is now 5 s old (deadline 4 s)
    with capture_logs() as logs:
        with pytest.raises(NotLeader, match="does not lead now"):
            await provider.start(task, None)
        with pytest.raises(NotLeader):
            await provider.stop(record)
        await provider.observe(record)  # reading changes nothing: allowed
    assert harness.calls("StartSnapshot") == starts and harness.calls("StopSnapshot") == 0
    assert [(e["reason"], e["log_level"]) for e in logs if e["event"] == "lost leadership"] == [
        ("renew deadline passed", "warning")
    ]
    assert daemon.lease_lost is not None and "capctl_leader 0.0" in daemon.metrics.render().decode()


async def test_a_start_granted_its_rate_slot_after_the_renew_deadline_sends_nothing(harness: Harness) -> None:
    """The second guard (`fencing.request_guard`): a start that was allowed to begin waits for a rate-budget slot,
    and the process resumes from a pause past its renew deadline before any renew runs. The request hook asks
    `may_act()` again right before the request would leave: the start fails with NotLeader and the vendor gets
    nothing."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    daemon = await harness.start(leader=LeaderSettings(6.0, 4.0, 1.0))
    await harness.advance(2)
    assert daemon.spec is not None and daemon.lease.acting()
    task = daemon.spec.tasks["SnapshotJob/audit/lobby"]
    provider = daemon.vendors.provider(task.provider, task.family)
    starts = harness.calls("StartSnapshot")
    (budget,) = (b for (_, api), b in daemon.vendors.budgets.all().items() if api == "StartSnapshot")
    budget.throttled()  # the next slot is THROTTLE_PAUSE (0.25 s) away: earlier than the next renew (1 s)
    start = asyncio.ensure_future(provider.start(task, None))
    await settle()
    assert not start.done() and budget.waiting == 1  # let in (may_act held), waiting for its slot
    with capture_logs() as logs:
        harness.clock.set(harness.clock.now() + 5)  # the pause ends: the slot is due first, the renew after it
        with pytest.raises(NotLeader, match="does not lead now"):
            await start
    assert harness.calls("StartSnapshot") == starts
    assert [e["reason"] for e in logs if e["event"] == "lost leadership"] == ["renew deadline passed"]


async def test_a_standby_shows_the_state_the_leader_recorded_and_exports_no_task_counts(
    harness: Harness, two_stores: tuple[StateStore, StateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standby's cache is the state as it read it at start: its page reads the records afresh, and its
    /metrics leaves task and room counts to the leader (a sum over replicas counts each task once), a
    selector job's room counts too (walk 26d-5: a standby exported them, so a sum counted a room left out twice,
    while its page says that a standby selects no room)."""
    leader_store, standby_store = two_stores
    write_specs(
        harness.specs, snapshot_job("audit", ["lobby"], idle=20), selector_job("classes", "class-*", max_rooms=1)
    )
    leader = await harness.start(leader_store)
    standby = await harness.start_standby(standby_store)
    try:
        await harness.advance(30)  # nobody in the lobby: it idles out at 20 s and the leader re-issues it
        record = leader.records.get(LOBBY)
        assert record is not None and record.reissue_count == 1 and record.started_at is not None
        restored_on: list[int] = []  # walk 31d: seconds at 100,000 tasks, in a thread, not on the loop
        restored = History.restored

        def watched(history: History, *args: Any) -> Restored:
            restored_on.append(threading.get_ident())
            return restored(history, *args)

        monkeypatch.setattr(History, "restored", watched)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            page = (await http.get("/api/v1/status")).json()
            metrics = (await http.get("/metrics")).text
        assert page["replica"]["role"] == "standby"
        assert restored_on and threading.get_ident() not in restored_on
        (task,) = (t for j in page["jobs"] for g in j["groups"] for t in g["tasks"])
        assert (task["key"], task["status"], task["reissue_count"]) == (LOBBY, record.status.value, 1)
        assert task["running_since"] == iso_utc(record.started_at)
        assert "capctl_tasks{" not in metrics and "capctl_rooms_active{" not in metrics
        assert "capctl_selector_rooms{" not in metrics and "capctl_selector_rooms_left_out{" not in metrics
        leading = leader.metrics.render().decode()
        assert 'capctl_tasks{status="running"} 1.0' in leading
        assert 'capctl_selector_rooms_left_out{job_name="SnapshotJob/classes"} 0.0' in leading
    finally:
        await standby.stop()
        standby.records.close()


async def test_a_standby_logs_no_room_left_out_and_its_new_term_does(harness: Harness) -> None:
    """Walk 26d-7: a standby logged `room selector at maxRooms` for the rooms it read from the state, and its
    page listed that line under "a standby selects no room". Only a leader says it; the standby, once it
    takes the lead, says what it leaves out itself."""
    write_specs(harness.specs, selector_job("classes", "class-*", max_rooms=1))
    await harness.start()
    for room in ("class-1", "class-2"):
        harness.sim.publish("volcengine", room, user_id="t")
    await harness.advance(2)  # the leader takes class-1, leaves class-2 out, and writes the room activity
    with capture_logs() as logs:
        standby = await harness.start_standby()
        await harness.advance(2)
    try:
        assert not standby.lease.acting()
        assert [e for e in logs if e["event"].startswith("room selector")] == []
        gauge = 'capctl_selector_rooms_left_out{job_name="SnapshotJob/classes"}'
        assert gauge not in standby.metrics.render().decode()
        with capture_logs() as logs:
            await harness.stop()  # the leader goes: the standby takes the lock within a retry period
            await harness.advance(5)
        assert standby.lease.acting()
        left_out = [e["room"] for e in logs if e["event"] == "room selector at maxRooms: room not captured"]
        assert left_out == ["class-2"]
        assert f"{gauge} 1.0" in standby.metrics.render().decode()  # its term's counts, exported at once (28b)
    finally:
        await standby.stop()
        standby.records.close()


async def test_a_replica_without_a_valid_spec_set_leaves_the_lead_to_one_that_has_one(
    harness: Harness, two_stores: tuple[StateStore, StateStore]
) -> None:
    """A pod whose specs do not load (a secret missing from its environment, a bad checkout) leading would
    act on nothing, while a replica with a valid set stood by: it stands by until it has a valid set."""
    broken_store, good_store = two_stores
    broken_specs = harness.tmp_path / "broken"
    broken_specs.mkdir()
    (broken_specs / "jobs.yaml").write_text("apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {name: x}\nspec: {}\n")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    broken = await harness.start_standby(broken_store, broken_specs, holder="capctl run on broken")  # first
    try:
        await harness.advance(3)
        assert not broken.lease.elector.is_leader
        assert "no valid spec set in force" in broken.readiness().reason
        good = await harness.start(good_store)
        await harness.advance(3)
        assert good.lease.acting() and harness.calls("StartSnapshot") == 1
        write_specs(broken_specs, snapshot_job("audit", ["lobby"]))
        assert broken.reload()
        await harness.stop()  # the leader goes: the replica, valid now, takes over
        await harness.advance(3)
        assert broken.lease.acting() and harness.calls("StartSnapshot") == 1  # observed running: not started again
    finally:
        await broken.stop()
        broken.records.close()


async def test_a_standby_that_cannot_store_callbacks_warns_once_a_minute_not_per_callback(
    harness: Harness, pg_url: str
) -> None:
    """A database outage fails every callback a standby receives (6 rooms: 45 warnings in 40 s by hand; a
    fleet's images every 5 s would log hundreds a second): one warning, with the repeats it held back."""
    given = psycopg.conninfo.conninfo_to_dict(pg_url)
    proxy = Proxy((str(given["host"]), int(str(given["port"]))))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start(open_state(pg_url))
    relayed = PostgresStateStore(pg_url.replace(f":{given['port']}/", f":{proxy.port}/"), connect_timeout=2)
    standby = await harness.start_standby(relayed)
    try:
        proxy.cut()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            with capture_logs() as logs:
                for n in range(4):
                    refused = await http.post("/callbacks/volcengine", json=volc_body(harness, event_id=f"e{n}"))
                    assert refused.status_code == 503
                harness.clock.advance(61)
                assert (
                    await http.post("/callbacks/volcengine", json=volc_body(harness, event_id="e9"))
                ).status_code == 503
            # A lock attempt fails too: the role says why, once. The lease has a connection of its own (walk
            # 14D-1): its first attempt finds it broken, the next one cannot connect, as the status read.
            await harness.advance(4)
            detail = (await http.get("/api/v1/status")).json()["replica"]["detail"]
        assert detail.endswith("; tasks as this replica last read them") and detail.count("cannot connect") == 1
        warned = [e for e in logs if e["event"] == "could not store a callback in the inbox; the vendor retries"]
        assert [e["repeats_held_back"] for e in warned] == [0, 3]
    finally:
        await standby.stop()
        standby.records.close()
        proxy.close()


async def test_a_leader_stopping_keeps_its_lease_while_in_flight_work_has_its_grace(harness: Harness) -> None:
    """SIGTERM while a start is retrying (the vendor answers 500). The leader stopped renewing at the signal:
    past the renew deadline, inside the shutdown grace, it logged 'lost leadership: renew deadline passed' and
    each in-flight reconcile 'reconcile failed; retrying with backoff' (does not lead now), a retry that never
    comes. It renews until the in-flight work is done, then resigns: 'shutting down', as docs/daemon.md says."""
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StartSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start(leader=LeaderSettings(6.0, 4.0, 1.0), shutdown_grace=2.0)
    await harness.advance(1)  # the start is between two tries
    starts = harness.calls("StartSnapshot")
    with capture_logs() as logs:
        await harness.stop()  # moves the fake clock on while the grace runs
    assert [e["reason"] for e in logs if e["event"] == "lost leadership"] == ["shutting down"]
    assert not [e for e in logs if "does not lead now" in str(e.get("error"))]
    assert harness.calls("StartSnapshot") > starts  # the in-flight start went on trying, as the leader


async def test_a_sighup_once_sigterm_came_reads_nothing(harness: Harness) -> None:
    """Walk 35a-5: the SIGHUP handler stays until the process ends. In the shutdown's grace a SIGHUP put a new
    set in force (`spec set loaded`, `acting: true`) that acted on nothing; after `stop`, on a task nobody
    awaited, its vendor clients configured after they were closed. It is ignored, and said so."""
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StartSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    leader = await harness.start(shutdown_grace=2.0)
    in_force = leader.specs.current
    await harness.advance(1)  # a start is retrying: the stop waits for it (its grace)
    stopping = asyncio.ensure_future(leader.stop())
    await settle()
    write_specs(harness.specs, snapshot_job("audit", ["lobby", "hall"]))
    with capture_logs() as logs:
        leader.reload_soon()  # SIGHUP in the grace
        while not stopping.done():
            await harness.advance(0.5)
        await stopping
        leader.reload_soon()  # SIGHUP after `stop`, before the process ends
        await settle()
    events = [e["event"] for e in logs]
    assert "spec set loaded" not in events and events.count("SIGHUP ignored: shutting down") == 2, events
    assert leader.specs.current is in_force


async def test_a_callback_reaching_a_leader_as_it_stops_is_kept_for_the_next_leader(harness: Harness) -> None:
    """A callback reaching the leader once SIGTERM came was acted on in a queue shut down and a room book saved
    once, answered 200: the vendor did not retry, the standby never heard it. It is stored in the inbox, as a
    standby stores one, and the next leader takes it."""
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StartSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    settings = LeaderSettings(6.0, 4.0, 1.0)
    leader = await harness.start(leader=settings, shutdown_grace=2.0)
    # Its own starts fail and retry as it leads: its stop would wait the default 10 s grace of wall time.
    standby = await harness.start_standby(leader=settings, shutdown_grace=0.1)
    try:
        await harness.advance(1)  # a start is retrying: the stop waits for it (its grace)
        stopping = asyncio.ensure_future(leader.stop())
        await settle()
        assert not stopping.done()
        body = json.dumps(volc_body(harness, event_id="late")).encode()
        assert await leader.handle_callback("volcengine", body) == (200, "stored for the leader")
        # Walk 35a-8: `capctl sync` was answered 200 `queued`, into a queue that takes no keys.
        assert leader.sync(None)[:2] == (503, "not acting: shutting down (send it again once the next leader leads)")

        class Down:  # the store fails as the callback comes
            def inbox_put(self, entry: InboxEntry) -> bool:
                raise StateError("database down")

        kept, leader.inbox._state = leader.inbox._state, Down()  # type: ignore[assignment]
        again = json.dumps(volc_body(harness, event_id="later")).encode()
        # Walk 35a-6: 503, the vendor retries; the leader's answer said `standby: …`.
        assert await leader.handle_callback("volcengine", again) == (
            503,
            "shutting down: cannot store the callback for the leader: database down",
        )
        leader.inbox._state = kept
        while not stopping.done():
            await harness.advance(0.5)
        await stopping
        leader.records.close()
        harness.daemon = None
        with capture_logs() as logs:
            await harness.advance(3)  # the standby leads and takes the inbox
        assert standby.lease_lost is None
        assert any(e["event"] == "callbacks taken from the inbox" and e["count"] == 1 for e in logs)
    finally:
        await standby.stop()
        standby.records.close()


async def test_a_claim_of_the_inbox_cut_short_by_a_shutdown_still_acts_on_what_it_took(harness: Harness) -> None:
    """Walk 35a-2: SIGTERM cancels the leader's periodic drain; one cancelled while its claim ran in its thread
    lost what the claim marked consumed (a room callback a standby had answered 200): never acted on, and the
    next leader found it consumed. The claim's entries are acted on when it ends, before the room activity is
    saved for the last time."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    leader = await harness.start()
    assert leader.spec is not None
    body = json.dumps(volc_body(harness)).encode()  # lobby's join
    event = leader.router.verify("volcengine", body, leader.spec.providers.values(), harness.clock.now())
    claiming, release = threading.Event(), threading.Event()

    class Claiming:  # the leader's store, its claim held in its thread until released
        def inbox_claim(self, *, now: float) -> list[InboxEntry]:
            claiming.set()
            release.wait(5)
            return [entry_of(event, body, now)]

    leader.inbox._state, leader.inbox._in_thread = Claiming(), True  # type: ignore[assignment]
    threading.Timer(0.3, release.set).start()  # the claim ends once the stop is under way
    try:
        await harness.advance(2)  # the periodic drain claims
        assert await asyncio.to_thread(claiming.wait, 5)
        await leader.stop()  # SIGTERM: the drain is cancelled while its claim runs
    finally:
        release.set()
        leader.records.close()
        harness.daemon = None
    store = open_state(f"sqlite:///{harness.state_path}")
    try:
        account = leader.spec.providers["volc"].account
        assert [r.room for r in store.room_activity({"volc": account})] == ["lobby"], "the callback was lost"
    finally:
        store.close()


async def test_a_stop_waits_for_its_work_and_a_claim_of_the_inbox_one_grace_in_all(harness: Harness) -> None:
    """Walk 36a-1: the stop waited its grace for the in-flight work, then a grace again for a claim of the inbox
    under way: a store that hangs (both wait on it) held a SIGTERM twice the grace (20 s of a pod's 30 s)."""
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StartSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    grace = 0.6
    leader = await harness.start(shutdown_grace=grace)
    claiming, release = threading.Event(), threading.Event()

    class Hung:  # the leader's store, its claim hung in its thread until the test ends
        def inbox_claim(self, *, now: float) -> list[InboxEntry]:
            claiming.set()
            release.wait(10)
            return []

    leader.inbox._state, leader.inbox._in_thread = Hung(), True  # type: ignore[assignment]
    try:
        await harness.advance(2)  # a start is retrying (the stop waits for it) and the periodic drain claims
        assert await asyncio.to_thread(claiming.wait, 5)
        began = time.monotonic()
        with capture_logs() as logs:
            await leader.stop()
        took = time.monotonic() - began
    finally:
        release.set()
        leader.records.close()
        harness.daemon = None
    events = [line["event"] for line in logs]
    assert "shutdown grace period over: in-flight work cancelled" in events
    # Walk 37a-1: a claim cut short by the grace was silent, though what it takes is then acted on by no one.
    assert any(e.startswith("shutdown grace period over: a claim of the callback inbox") for e in events), events
    assert grace <= took < 1.8 * grace, f"the stop took {took:.2f} s for a grace of {grace} s"


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE capctl_records SET body = 'not json'",
        # Walk 35a-3: the room activity is read after the lock too (`rooms.load`), and was left out.
        "UPDATE capctl_room_activity SET active = 7",
    ],
)
async def test_a_replica_whose_first_read_fails_gives_its_lock_up(harness: Harness, pg_url: str, damage: str) -> None:
    """The first read at start failed (a row damaged as it started: exit 1) after the lock was taken: the
    process closed its store without releasing, and the next replica waited a lease duration for the lock."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    store = open_state(pg_url)
    store.put(record(key=LOBBY))
    account = load_spec_set([harness.specs], env={}).providers["volc"].account
    store.record_rooms([RoomActivity(account, "lobby", True, harness.clock.now(), "callback")])
    daemon = Daemon([str(harness.specs)], store, harness.clock, elect_in_thread=False)
    raw_sql(pg_url, damage)
    with pytest.raises(StateError):
        await daemon.start()
    store.close()
    other = open_state(pg_url)
    try:
        other.lock("capctl run on another pod").release()  # free now: no LockHeld
    finally:
        other.close()


class UnstorableInbox(SQLiteStateStore):
    """A state whose inbox cannot be written while `failing` is set (a locked file, a database restarting)."""

    failing = False

    def inbox_put(self, entry: InboxEntry) -> bool:
        if self.failing:
            raise StateError("database is locked")
        return super().inbox_put(entry)


async def test_a_leader_as_it_stops_refuses_what_it_cannot_act_on_as_shutting_down(harness: Harness) -> None:
    """Walk 35b: a stopping leader still holds its lease, but its queue takes no keys: `capctl sync` was answered
    200 `queued 1` for a key nothing reconciled, and a callback it could not store got a standby's 503
    (`standby: cannot store …`). Both are 503s saying it is shutting down."""
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StartSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    store = UnstorableInbox(harness.state_path, clock=harness.clock)
    leader = await harness.start(store, leader=LeaderSettings(6.0, 4.0, 1.0), shutdown_grace=2.0)
    await harness.advance(1)  # a start is retrying: the stop waits for it (its grace)
    stopping = asyncio.ensure_future(leader.stop())
    await settle()
    assert not stopping.done()
    refused = "not acting: shutting down (send it again once the next leader leads)"
    assert leader.sync(["SnapshotJob/audit/lobby"]) == (503, refused, [], 0)
    assert leader.wake(["SnapshotJob/audit/lobby"]) == (503, refused, [])
    store.failing = True
    body = json.dumps(volc_body(harness, event_id="unstored")).encode()
    assert await leader.handle_callback("volcengine", body) == (
        503,
        "shutting down: cannot store the callback for the leader: database is locked",
    )
    while not stopping.done():
        await harness.advance(0.5)
    await stopping
    leader.records.close()
    harness.daemon = None


async def test_a_takeover_whose_room_activity_cannot_be_read_is_tried_again_not_given_up(harness: Harness) -> None:
    """A new term reads the room activity after the records (`rooms.regained`: the schema-2 upgrade, then the
    read). A StateError there ended the lease's renewals for good: the standby turned leader, acted until its
    renew deadline and never renewed or tried to lead again. It is retried like a failed read of the records."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    settings = LeaderSettings(6.0, 4.0, 1.0)
    await harness.start(leader=settings)
    standby = await harness.start_standby(leader=settings)
    try:
        await harness.advance(3)
        with sqlite3.connect(harness.state_path) as db:  # a room table the daemon cannot read
            db.execute("ALTER TABLE capctl_room_activity RENAME TO kept")
            db.execute("CREATE TABLE capctl_room_activity (provider TEXT)")
        with capture_logs() as logs:
            await harness.stop()  # resigns: the standby takes the lock and fails to read the rooms
            await harness.advance(2)
        assert "leading but cannot read the state; retrying" in [e["event"] for e in logs]
        with sqlite3.connect(harness.state_path) as db:
            db.execute("DROP TABLE capctl_room_activity")
            db.execute("ALTER TABLE kept RENAME TO capctl_room_activity")
        await harness.advance(12)  # three renew deadlines: a replica that stopped renewing has lost the lead
        assert standby.readiness().reason == "ready (leader, epoch 2)"
    finally:
        await standby.stop()
        standby.records.close()


class NewerStore(SQLiteStateStore):
    """The store of a newer capctl, as far as its schema goes: it reads a state of schema 3."""

    def _check_version(self, version: int) -> None:
        if version > 3:
            super()._check_version(version)


async def test_a_takeover_of_a_state_a_newer_capctl_raised_gives_the_lead_up(harness: Harness) -> None:
    """Walk 36c-2, a rolling update to a release that raises the schema: a replica of this one that takes the lead
    afterwards cannot read the state (nor can any retry), and holding the lock as it retried kept the newer
    replica from leading. It gives the lead up, says why, and never tries again."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    settings = LeaderSettings(6.0, 4.0, 1.0)
    await harness.start(leader=settings)
    old = await harness.start_standby(leader=settings, holder="capctl run on old")
    newer: Daemon | None = None
    try:
        with sqlite3.connect(harness.state_path) as db:  # as a newer release's first replica upgrades the state
            db.execute("UPDATE capctl_meta SET schema_version = 3")
        with capture_logs() as logs:
            await harness.stop()  # resigns: the old standby takes the lock
            await harness.advance(2)
        assert "cannot lead a state of a newer schema: lead given up; standing by" in [e["event"] for e in logs]
        lost = [e for e in logs if e["event"] == "lost leadership" and e["epoch"] == 2]
        assert [(e["reason"], e["log_level"]) for e in lost] == [("state schema newer than this capctl", "warning")]
        why = "state schema version 3 was written by a newer capctl (this one knows version 2); upgrade capctl"
        outdated = f"not ready (standby: never leads: sqlite:///{harness.state_path}: {why})"
        assert old.readiness().reason == outdated  # nor can it read for a standby's work: to be replaced
        # Walk 37a: no replica leads yet, so "(send it to the leader)" named no one.
        hint = "(send it to a replica of the newer capctl once one leads)"
        assert old.sync(None)[:2] == (
            503,
            f"not acting: standby: never leads: sqlite:///{harness.state_path}: {why} {hint}",
        )
        newer = await harness.start_standby(NewerStore(harness.state_path), leader=settings, holder="capctl run on new")
        await harness.advance(3)
        assert newer.readiness().reason == "ready (leader, epoch 3)"
        assert old.readiness().reason == outdated
    finally:
        for replica in (old, newer):
            if replica is not None:
                await replica.stop()
                replica.records.close()


async def test_a_leader_whose_state_a_newer_capctl_raised_gives_the_lead_up_at_its_next_write(harness: Harness) -> None:
    """Walk 58c: the newer release's first pod raises the schema while this one leads (it upgrades as it starts,
    a standby). The leader checked the schema only when it read the state (its start, a takeover): it went on
    re-issuing into a state it no longer knows, holding the lock the newer pod needed. Its next write is
    refused: it re-issues nothing, gives the lead up, says why, and the newer replica leads."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    settings = LeaderSettings(6.0, 4.0, 1.0)
    old = await harness.start(leader=settings)
    newer: Daemon | None = None
    try:
        await harness.advance(3)
        starts = harness.calls("StartSnapshot")
        with sqlite3.connect(harness.state_path) as db:  # as a newer release's first replica upgrades the state
            db.execute("UPDATE capctl_meta SET schema_version = 3")
        with capture_logs() as logs:
            await harness.advance(30)  # lobby idles out (nobody in it): its re-issue is this leader's next write
        assert "cannot lead a state of a newer schema: lead given up; standing by" in [e["event"] for e in logs]
        lost = [e for e in logs if e["event"] == "lost leadership"]
        assert [e["reason"] for e in lost] == ["state schema newer than this capctl"]
        why = "state schema version 3 was written by a newer capctl (this one knows version 2); upgrade capctl"
        assert old.readiness().reason == f"not ready (standby: never leads: sqlite:///{harness.state_path}: {why})"
        assert harness.calls("StartSnapshot") == starts
        newer = await harness.start_standby(NewerStore(harness.state_path), leader=settings, holder="capctl run on new")
        await harness.advance(3)
        assert newer.readiness().reason == "ready (leader, epoch 2)"
    finally:
        if newer is not None:
            await newer.stop()
            newer.records.close()


async def test_room_activity_an_old_leader_never_read_from_the_inbox_wakes_nothing_it_already_saw(
    harness: Harness,
) -> None:
    """A rolling update from a version without the inbox (walk 6G-4): the old leader never reads what the new
    standby stores. Alice joins and leaves lobby; the old leader re-issues lobby on its own looks, which idle
    out in the empty room: backing off. At takeover the new leader took the entries at once and woke lobby on
    the old join (its leave in the same batch): a start into an empty room."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    settings = LeaderSettings(6.0, 4.0, 1.0)
    old = await harness.start(leader=settings, resync=10.0)

    async def reads_no_inbox() -> int:  # a version before the inbox
        return 0

    old.inbox.drain = reads_no_inbox  # type: ignore[method-assign]
    new = await harness.start_standby(leader=settings, resync=10.0)
    try:
        harness._daemon_app = new.asgi_app  # the Service sends the callbacks to the new pod
        await harness.advance(3)
        harness.sim.publish("volcengine", "lobby", user_id="alice")
        await harness.advance(4)
        harness.sim.unpublish("volcengine", "lobby", user_id="alice")
        await harness.advance(190)  # the old leader's re-issues idle out: it backs off
        record = harness.record(LOBBY)
        assert record.status is not TaskStatus.RUNNING and (record.next_attempt_at or 0) > harness.clock.now() + 10
        starts = harness.calls("StartSnapshot")
        with capture_logs() as logs:
            await harness.stop()  # the old pod goes: the new one leads and takes the inbox
            await harness.advance(5)
        assert new.lease_lost is None and any(e["event"] == "callbacks taken from the inbox" for e in logs)
        assert [e for e in logs if e["event"] == "room activity: waking task"] == []
        assert harness.calls("StartSnapshot") == starts
        # An entry stored after its last start is news: it wakes the task, as before.
        assert new.reconciler.wake([LOBBY], "UserJoinRoom", received_at=harness.clock.now()) == [(LOBBY, 0.0)]
    finally:
        await new.stop()
        new.records.close()


async def _lead_beside_a_standby_then_copy_in_another_lineage(
    harness: Harness, tmp_path: Path, *, break_specs: bool = False, others: tuple[str, ...] = ()
) -> tuple[Daemon, TaskRecord, list[Daemon]]:
    """A leader runs class-1 beside a standby, then stops; the state is replaced by `state copy --force` of
    another state's backup (another fingerprint key) recording the same run, while no replica leads."""
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=30))
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    settings = LeaderSettings(6.0, 4.0, 1.0)
    await harness.start(leader=settings)
    standby = await harness.start_standby(leader=settings)
    more = [await harness.start_standby(leader=settings, holder=holder) for holder in others]
    await harness.advance(3)
    running = harness.record(CLASS)
    # The other lineage: the same run recorded in a state whose key is another (its hashes keyed with it)
    unkeyed = load_spec_set([harness.specs]).tasks[CLASS]
    other = SQLiteStateStore(tmp_path / "other.db")
    other.fingerprint_key(b"k" * 32)
    other.put(
        running.evolve(
            spec_hash=keyed_hash(b"k" * 32, unkeyed.spec_hash), fixed_hash=keyed_hash(b"k" * 32, unkeyed.fixed_hash)
        )
    )
    if break_specs:
        jobs = harness.specs / "jobs.yaml"
        jobs.write_text(jobs.read_text() + "\nspec: [unclosed\n")
    await harness.stop()  # resigns; the copy lands before the standby's next try
    live = SQLiteStateStore(harness.state_path)
    live.import_copy(other.export(), replace=True)
    other.close()
    live.close()
    return standby, running, more


def _replaces(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == "decision" and e.get("action") == "replace"]


async def test_a_state_of_another_lineage_copied_in_while_it_stands_by_is_led_without_replacing_a_task(
    harness: Harness, tmp_path: Path
) -> None:
    """`state copy --force` of another state's backup (another fingerprint key) while no replica led: the standby
    kept the key it read at start, so every record's hash differed from its specs' and it replaced every task."""
    standby, running, (third,) = await _lead_beside_a_standby_then_copy_in_another_lineage(
        harness, tmp_path, others=("capctl run on a third pod",)
    )
    old_key = standby.specs.fingerprint_key
    try:
        starts = harness.calls("StartRecord")
        with capture_logs() as logs:
            await harness.advance(5)
            # A reload's read under the old key, in its thread while the takeover re-keyed: read again, not taken
            assert standby.specs.take(read_specs(standby.specs.paths, old_key), old_key)
            current, record = standby.specs.current, standby.records.get(CLASS)
            assert current is not None and record is not None and current.tasks[CLASS].spec_hash == record.spec_hash
            await harness.advance(2)
        assert standby.readiness().reason.startswith("ready (leader")
        assert not _replaces(logs), logs
        assert harness.calls("StartRecord") == starts and harness.calls("StopRecord") == 0
        record = standby.records.get(CLASS)
        assert record is not None and record.vendor_task_id == running.vendor_task_id
        assert "the state was replaced: its fingerprint key changed; specs keyed with the new one" in [
            e["event"] for e in logs
        ]
        # The replica still standing by keyed its specs with the new key too: it kept the old one, and its
        # spec digest differed from the leader's (CapctlSpecSetsDiffer) until it restarted
        assert "(capctl run on standby)" in third.readiness().reason
        assert third.spec_digest == standby.spec_digest
    finally:
        await third.stop()
        third.records.close()
        await standby.stop()
        standby.records.close()


async def test_a_replaced_state_is_not_led_under_the_old_key_while_the_specs_do_not_load(
    harness: Harness, tmp_path: Path
) -> None:
    """As above, with the spec files broken meanwhile: re-keying them failed, the set read at start (keyed with
    the old key) stayed in force, and the new leader replaced every task. It does not act until they load,
    and is not ready meanwhile (walk 25B-2)."""
    standby, _, _ = await _lead_beside_a_standby_then_copy_in_another_lineage(harness, tmp_path, break_specs=True)
    try:
        starts = harness.calls("StartRecord")
        with capture_logs() as logs:
            await harness.advance(5)
            # Not ready (walk 25B-2): it holds the lock, so no replica acts; it read ready (leader …) before
            ready = standby.readiness()
            assert not ready.ready and ready.reason.startswith("not ready (leader (epoch "), ready
            assert "reading the state before acting): the last try failed: " in ready.reason, ready
            # and exported as no leader (CapctlLeaderMissing), not as the replica that leads and acts
            assert "capctl_leader 0.0" in standby.metrics.render().decode()
            # Said once a minute, not at each retry period's try (it lasts until the files are fixed)
            assert [e["event"] for e in logs].count("leading but cannot read the state; retrying") == 1, logs
            write_specs(harness.specs, recording_job("rec", ["class-1"], idle=30))
            assert await standby.reload_async()  # as the watcher does
            await harness.advance(3)
        assert standby.readiness().reason.startswith("ready (leader")
        assert "capctl_leader 1.0" in standby.metrics.render().decode()
        assert not _replaces(logs), logs
        assert harness.calls("StartRecord") == starts and harness.calls("StopRecord") == 0
    finally:
        await standby.stop()
        standby.records.close()


async def test_a_term_reads_the_state_off_the_loop_and_keeps_what_was_committed_meanwhile(
    harness: Harness, tmp_path: Path
) -> None:
    """Walk 31d: at 100,000 tasks, reading the whole state takes seconds, and a term's read (at start, at a
    takeover) ran on the daemon's loop: no callback, probe or page was answered meanwhile. It runs in a thread
    now (`RecordCache.fetch`), and a commit through the cache while it reads is laid over what it read."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    loads: list[int] = []

    class Watched(SQLiteStateStore):
        def load(self) -> Snapshot:
            loads.append(threading.get_ident())
            return super().load()

    await harness.start(Watched(harness.state_path, clock=harness.clock), elect_in_thread=True)
    try:
        assert loads and threading.get_ident() not in loads
    finally:
        await harness.stop()
    store = open_state(f"sqlite:///{tmp_path / 'cache.db'}")
    cache = RecordCache(store, history_store=store)
    now = time.time()
    kept = record(key="SnapshotJob/a/kept", status=TaskStatus.RUNNING, started_at=now, stopped_at=None)
    gone = record(key="SnapshotJob/a/gone")
    store.put_many([kept, gone])
    cache.fetch()  # the history made ready in its thread too; then, before its read is adopted, the loop commits:
    cache.put(kept.evolve(reissue_count=3))
    cache.put(added := record(key="SnapshotJob/a/added"))
    cache.delete(gone.key)
    assert cache.refresh() == {kept.key: kept.evolve(reissue_count=3), added.key: added}
    assert [run.start for run in cache.history.runs(kept.key)] == [now]


def test_a_read_off_the_loop_changes_nothing_until_the_loop_adopts_it(tmp_path: Path) -> None:
    """A standby's page reads the state in a thread, and drops the read if a term began meanwhile (the term read
    the state itself, and the leader has noted runs since): the read must not have changed the history on its
    own, or a late read erased what the leader noted, and its rooms' activity never reached the state (walk 31d,
    the integrator's review). First sights noted while it read are kept when it is adopted."""
    store = open_state(f"sqlite:///{tmp_path / 'cache.db'}")
    cache = RecordCache(store, history_store=store)
    now = time.time()
    noted = record(key="SnapshotJob/a/noted", status=TaskStatus.RUNNING, started_at=now, stopped_at=None)
    cache.history.note(noted)  # noted by this replica as leader, not in the state yet
    cache.history.room_active("acct", "lobby")
    read = cache.read_restored()
    assert [run.start for run in cache.history.runs(noted.key)] == [now]
    assert cache.history.take_rooms(), "a read that was not adopted dropped the rooms' activity still to write"
    cache.history.note(late := record(key="SnapshotJob/a/late", status=TaskStatus.RUNNING, started_at=now))
    cache.adopt(*read)
    assert [span.subject for span in cache.history.take_rooms() if span.kind == "seen"] == [late.key]


async def test_a_standby_stores_a_callback_off_the_loop_while_a_read_holds_the_store(
    harness: Harness, two_stores: tuple[StateStore, StateStore]
) -> None:
    """Walk 32a: the state is read in a thread (a takeover's read, a standby page's: seconds at 100,000 tasks),
    on the store's one connection, under its mutex; a callback the replica stores in the inbox meanwhile waited
    for that mutex on the loop, which then ran nothing else (probes, lease ticks, the page) until the read ended."""
    leader_store, standby_store = two_stores
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start(leader_store)
    standby = await harness.start_standby(standby_store, elect_in_thread=True)
    holding, release, held_out = threading.Event(), threading.Event(), threading.Event()

    def read() -> None:  # as a read holds the store: its one connection, under its mutex
        with standby_store._mutex:  # type: ignore[attr-defined]
            holding.set()
            if not release.wait(3):
                held_out.set()

    reading = asyncio.ensure_future(asyncio.to_thread(read))
    try:
        assert await asyncio.to_thread(holding.wait, 5)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            posting = asyncio.ensure_future(http.post("/callbacks/volcengine", json=volc_body(harness)))
            for _ in range(50):
                await asyncio.sleep(0)
            assert not held_out.is_set(), "the loop waited for the store while it stored the callback"
            assert not posting.done()  # it waits for the store, in a thread
            release.set()
            stored = await posting
        assert stored.status_code == 200 and stored.json()["reason"] == "stored for the leader"
    finally:
        release.set()
        await reading
        await _stop(standby)


async def test_page_views_of_a_standby_share_the_read_under_way(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 32a: each view of a standby's page read the whole state in a thread of its own (seconds at 100,000
    tasks, under the store's one mutex, so the reads queued), and a view the read outlived left its thread
    behind: a dashboard polling a standby whose store hung used up the threads. Views share the read under way."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    standby = await harness.start_standby()
    reads, release = [], threading.Event()
    read_restored = RecordCache.read_restored

    def slow(cache: RecordCache) -> Any:
        reads.append(1)
        release.wait(5)
        return read_restored(cache)

    monkeypatch.setattr(RecordCache, "read_restored", slow)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            views = [asyncio.ensure_future(http.get("/api/v1/status")) for _ in range(3)]
            while not reads:
                await asyncio.sleep(0.005)
            for _ in range(20):
                await asyncio.sleep(0)
            release.set()
            pages = [(await view).json() for view in views]
        assert reads == [1] and all(page["replica"]["role"] == "standby" for page in pages)
    finally:
        await _stop(standby, release)


async def test_a_page_view_while_the_replica_reads_the_state_for_its_term_reads_nothing_more(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 32a: a view of the page while a new leader reads the state for its term (not acting yet) read the
    whole state too, queued with the term's read on the store's connection (the term acted that much later),
    and its adopt was thrown away by the term's. It shows the cache as last read, and says why."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    standby = await harness.start_standby(elect_in_thread=True)
    reads: list[str] = []
    reading, release = threading.Event(), threading.Event()
    fetch, read_restored = RecordCache.fetch, RecordCache.read_restored

    def slow_fetch(cache: RecordCache, **options: bool) -> None:
        reading.set()
        release.wait(5)
        fetch(cache, **options)

    def counted(cache: RecordCache) -> Any:
        reads.append(threading.current_thread().name)
        return read_restored(cache)

    monkeypatch.setattr(RecordCache, "fetch", slow_fetch)
    monkeypatch.setattr(RecordCache, "read_restored", counted)
    try:
        await harness.stop()  # the leader gives the lock up
        taking = asyncio.ensure_future(standby.lease._attempt(True))  # the standby's next tick takes it
        assert await asyncio.to_thread(reading.wait, 5)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            page = (await http.get("/api/v1/status")).json()
        assert reads == [] and "reading the state before acting" in page["replica"]["detail"]
        release.set()
        await asyncio.wait_for(taking, 5)
        assert standby.lease.acting() and len(reads) == 1  # the term's own read
    finally:
        await _stop(standby, release)


async def test_callbacks_a_standby_stores_reach_the_inbox_in_the_order_they_came(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 32a: a standby stores callbacks in threads (the store may be busy with a read); two of one room (a
    user joined, then left) raced for the store, and a leader claiming between the two acted on the leave
    first. They are stored one at a time, in the order they were verified."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    standby = await harness.start_standby(elect_in_thread=True)
    stored: list[str] = []
    second = threading.Event()
    put = LeaderStore.inbox_put

    def slow(state: LeaderStore, entry: InboxEntry) -> bool:
        if entry.dedupe_key.endswith("joined"):
            second.wait(0.3)  # the next callback's store, if it were under way, would finish first
        else:
            second.set()
        stored.append(entry.dedupe_key)
        return put(state, entry)

    monkeypatch.setattr(LeaderStore, "inbox_put", slow)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            posts = [
                asyncio.ensure_future(
                    http.post("/callbacks/volcengine", json=volc_body(harness, event_id=name, event_type=kind))
                )
                for name, kind in (("joined", "UserJoinRoom"), ("left", "UserLeaveRoom"))
            ]
            answers = [await post for post in posts]
        assert [answer.status_code for answer in answers] == [200, 200]
        assert [key.rsplit(":", 1)[-1] for key in stored] == ["joined", "left"]
    finally:
        await _stop(standby)


async def _stop(standby: Daemon, *waiting: threading.Event) -> None:
    """Let what a test held up go on (`waiting`), then stop the standby and close its store."""
    for event in waiting:
        event.set()
    await standby.stop()
    standby.records.close()


async def test_a_standby_with_other_globs_writes_none_of_them(harness: Harness, tmp_path: Path) -> None:
    """Walk 48B-3: during a rolling update, a standby holding other globs of a selector job than the leader's
    wrote them at its stop as the job's globs in force, closing the leader's span, and the page then drew the
    job's rooms by globs no replica applied (a room they leave out: no capture lost). Only the leader writes."""
    write_specs(harness.specs, selector_job("sel", "*"))
    edited = tmp_path / "edited"
    edited.mkdir()
    write_specs(edited, selector_job("sel", "stage-*"))
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock))
    await harness.advance(60)
    standby = await harness.start_standby(specs=edited)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
        assert (await http.get("/api/v1/status")).json()["replica"]["role"] == "standby"
    await standby.stop()
    standby.records.close()
    await harness.advance(60)
    with sqlite3.connect(harness.state_path) as db:
        kept = list(db.execute("SELECT end_at, reason FROM capctl_history WHERE kind = 'selector'"))
    assert kept == [(None, '{"match":["*"],"exclude":[]}')]


async def test_a_leader_that_gives_the_lead_up_for_a_newer_schema_promises_no_retry_of_its_room_activity(
    harness: Harness,
) -> None:
    """Walk 60b: the room-activity batch is the leader's first write after a newer capctl raised the schema. It was
    refused (58c), the lead given up, and the log said `room activity not written` with `retry: at the next batch or
    resync`: no batch or resync of this replica writes again (it never leads again; a standby lists no rooms), and
    the write it kept for later landed, unfenced, in the newer state at its next flush (its stop). Now it says the
    activity is dropped, and nothing of it reaches the state."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    settings = LeaderSettings(6.0, 4.0, 1.0)
    old = await harness.start(leader=settings)
    await harness.advance(3)
    with sqlite3.connect(harness.state_path) as db:  # as a newer release's first replica upgrades the state
        db.execute("UPDATE capctl_meta SET schema_version = 3")
    rooms = raw_sql(f"sqlite:///{harness.state_path}", "SELECT * FROM capctl_room_activity")
    inbox = raw_sql(f"sqlite:///{harness.state_path}", "SELECT count(*) FROM capctl_inbox")
    with capture_logs() as logs:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=old.asgi_app), base_url=DAEMON) as http:
            joined = await http.post("/callbacks/volcengine", json=volc_body(harness, event_id="join"))
            assert joined.status_code == 200, joined.text
            await harness.advance(30)
            # Nor does it store callbacks into the newer state's inbox: refused, the vendor retries them elsewhere.
            left = await http.post("/callbacks/volcengine", json=volc_body(harness, event_id="leave"))
        assert left.status_code == 503 and "was written by a newer capctl" in left.text, left.text
        await harness.stop()
    said = [(e["retry"], e.get("dropped")) for e in logs if e["event"] == "room activity not written"]
    assert said == [("never: a newer capctl raised the state's schema, and this replica writes no more to it", True)]
    assert "cannot lead a state of a newer schema: lead given up; standing by" in [e["event"] for e in logs]
    assert raw_sql(f"sqlite:///{harness.state_path}", "SELECT * FROM capctl_room_activity") == rooms
    assert raw_sql(f"sqlite:///{harness.state_path}", "SELECT count(*) FROM capctl_inbox") == inbox


async def test_a_reconcile_in_flight_when_the_lead_is_given_up_for_a_newer_schema_promises_no_retry(
    harness: Harness,
) -> None:
    """Walk 60b: a start is retrying (the vendor answers 500) when a newer capctl raises the schema. The lead is
    given up at the next write (the inbox's claim); the reconcile then failed with 'reconcile failed; retrying with
    backoff' and a `retry_in`: a retry that never comes, this replica never leading again."""
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StartSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start(leader=LeaderSettings(6.0, 4.0, 1.0))
    await harness.advance(0.5)  # the start is between two tries
    with sqlite3.connect(harness.state_path) as db:  # as a newer release's first replica upgrades the state
        db.execute("UPDATE capctl_meta SET schema_version = 3")
    with capture_logs() as logs:
        await harness.advance(60)
    failed = [(e["event"], e["retry"]) for e in logs if e["event"].startswith("reconcile failed")]
    assert failed == [
        (
            "reconcile failed; not retried here: this replica does not lead now",
            "by the leader, which reconciles every task when it takes over",
        )
    ]
    assert "cannot lead a state of a newer schema: lead given up; standing by" in [e["event"] for e in logs]


async def test_a_standby_whose_inbox_write_meets_a_newer_schema_is_not_ready(harness: Harness) -> None:
    """Walk 60b: a rolling update to a release that raises the schema; the newer pod leads, an old standby still
    runs. Its callbacks are refused (nothing written into a state it does not know: 60B-1), yet it answered
    `/readyz` 200 (`standby: the leader is …`), so a Service went on sending it callbacks it refuses. It is not
    ready from that refusal on (`standby: never leads: …`), and never tries to lead."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    settings = LeaderSettings(6.0, 4.0, 1.0)
    await harness.start(NewerStore(harness.state_path), leader=settings)
    old = await harness.start_standby(leader=settings, holder="capctl run on old")
    try:
        await harness.advance(2)
        assert old.readiness().ready, old.readiness().reason
        with sqlite3.connect(harness.state_path) as db:  # the newer leader upgrades the state
            db.execute("UPDATE capctl_meta SET schema_version = 3")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=old.asgi_app), base_url=DAEMON) as http:
            refused = await http.post("/callbacks/volcengine", json=volc_body(harness, event_id="join"))
        assert refused.status_code == 503 and "was written by a newer capctl" in refused.text, refused.text
        why = "state schema version 3 was written by a newer capctl (this one knows version 2); upgrade capctl"
        outdated = f"not ready (standby: never leads: sqlite:///{harness.state_path}: {why})"
        assert old.readiness().reason == outdated
        epoch = raw_sql(f"sqlite:///{harness.state_path}", "SELECT epoch FROM capctl_lock")
        await harness.stop()  # the newer leader resigns: the old standby does not take the lock
        await harness.advance(5)
        assert old.readiness().reason == outdated and not old.lease.elector.is_leader
        assert raw_sql(f"sqlite:///{harness.state_path}", "SELECT epoch FROM capctl_lock") == epoch
    finally:
        await old.stop()
        old.records.close()
