"""The status page of a running daemon (in-process simulator, fake clock): what it shows as tasks idle out
and are re-issued, rooms fill and empty, specs break; its token and --no-status-page."""

from __future__ import annotations

import html
import re
import sqlite3
from datetime import datetime
from typing import Any

import httpx
import pytest

from reconciler.sim.faults import FaultConfig
from reconciler.state.sqlite import SQLiteStateStore
from tests.daemon.conftest import DAEMON, Harness, settle, write_specs
from tests.daemon.test_http import client, volc_body
from tests.specdocs import recording_job, selector_job, snapshot_job

LOBBY = "SnapshotJob/audit/lobby"
HALL = "SnapshotJob/audit/hall"
IDLE = "idle timeout (Volcengine IdleTimeOut)"
TAGS = re.compile(r"<[^>]+>")


def task_of(status: dict[str, Any], key: str) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [t for j in status["jobs"] for g in j["groups"] for t in g["tasks"]]
    (task,) = (t for t in tasks if t["key"] == key)
    return task


def room_of(status: dict[str, Any], room: str) -> dict[str, Any]:
    rooms: list[dict[str, Any]] = status["rooms"]
    (found,) = (r for r in rooms if r["room"] == room)
    return found


def timelines(status: dict[str, Any]) -> list[Any]:
    """The rooms' timelines as spans that ended (start, end) and the starts of those that go on (whose end is now)."""

    def spans(items: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
        return [(i["start"], None if i["end"] == status["generated_at"] else i["end"]) for i in items]

    return [
        (r["room"], spans(r["active"]), [(c["key"], spans(c["runs"]), spans(c["gaps"])) for c in r["captures"]])
        for r in status["rooms"]
    ]


async def test_the_page_follows_an_idle_out_and_its_reissue(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby", "hall"], idle=20))
    harness.sim.publish("volcengine", "hall", user_id="alice")  # hall is busy; nobody is in the lobby
    await harness.start()
    await harness.advance(1)
    async with await client(harness) as http:
        before = (await http.get("/api/v1/status")).json()
        assert before["all_running"] is True and before["totals"] == {"running": 2}
        assert before["replica"]["role"] == "leader" and before["replica"]["spec_digest"].startswith("sha256:")
        lobby = task_of(before, LOBBY)
        assert lobby["vendor_task_id"] == harness.record(LOBBY).vendor_task_id
        assert lobby["running_since"] is not None and lobby["reissue_count"] == 0
        assert lobby["next_observation"] is not None
        assert room_of(before, "hall")["activity_reported"] is True  # alice's UserJoinRoom callback
        assert room_of(before, "lobby")["activity_reported"] is False

        # The lobby idles out at 20 s; nobody is there (room callbacks arrive, from the hall): it waits,
        # dormant, until bob's join re-issues it. The hall keeps running.
        await harness.advance(40)
        assert task_of((await http.get("/api/v1/status")).json(), LOBBY)["status"] == "dormant"
        harness.sim.publish("volcengine", "lobby", user_id="bob")
        await harness.advance(5)
        after = (await http.get("/api/v1/status")).json()
        lobby = task_of(after, LOBBY)
        assert lobby["status"] == "running" and lobby["reissue_count"] == 1
        assert [r["reason"] for r in lobby["reissues"]] == [IDLE]
        (line,) = room_of(after, "lobby")["captures"]
        assert len(line["runs"]) == 2
        (gap,) = line["gaps"]
        assert gap["reason"] == IDLE and gap["room_active"] is False and gap["seconds"] >= 1
        assert task_of(after, HALL)["reissue_count"] == 0 and not room_of(after, "hall")["captures"][0]["gaps"]
        reissued = [d for d in after["decisions"] if d["event"] == "decision" and d["fields"]["action"] == "reissue"]
        assert [d["key"] for d in reissued] == [LOBBY]
        page = (await http.get("/", params={"job": "audit"})).text
    assert IDLE in page and "Every task is running." in page

    # The history is the state's (walk 6d: the daemon's memory only): a standby's page shows the leader's, a
    # restarted daemon the same runs, gaps and room activity, not a timeline begun again from the last run.
    led, followed = await leader_and_standby_pages(harness)
    assert followed["replica"]["role"] == "standby" and followed["generated_at"] == led["generated_at"]
    assert followed["rooms"] == led["rooms"] and task_of(followed, LOBBY)["reissues"] == lobby["reissues"]
    await harness.stop()
    await harness.start()
    async with await client(harness) as http:
        restarted = (await http.get("/api/v1/status")).json()
    assert timelines(restarted) == timelines(led) and task_of(restarted, LOBBY)["reissues"] == lobby["reissues"]
    assert all(room["activity_reported"] and room["active"] for room in restarted["rooms"])


async def test_an_invalid_spec_change_shows_and_the_last_valid_set_stays(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    await harness.start()
    async with await client(harness) as http:
        valid = (await http.get("/api/v1/status")).json()["replica"]
        (harness.specs / "jobs.yaml").write_text("kind: SnapshotJob\nspec: [not, a, mapping\n")
        assert harness.daemon is not None and not harness.daemon.reload()
        broken = (await http.get("/api/v1/status")).json()["replica"]
        page = (await http.get("/")).text
    assert valid["spec_error"] is None and valid["spec_loaded_at"] is not None
    assert "jobs.yaml:" in broken["spec_error"] and broken["spec_error_since"] is not None
    assert (broken["spec_digest"], broken["spec_loaded_at"]) == (valid["spec_digest"], valid["spec_loaded_at"])
    assert "The last spec change is invalid" in page and "stays in force" in page


async def test_the_page_shows_the_spec_digest_the_log_and_the_metrics_show(harness: Harness) -> None:
    """One digest per spec set everywhere (before, the page hashed the set another way: two digests for one set)."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    await harness.start()
    async with await client(harness) as http:
        shown = (await http.get("/api/v1/status")).json()["replica"]["spec_digest"]
        metrics = (await http.get("/metrics")).text
        page = (await http.get("/")).text
    assert f'capctl_spec_set_info{{digest="{shown}"}} 1.0' in metrics
    assert shown in page


async def test_a_token_guards_the_page_not_the_callbacks(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start(status_token="page-token-1")
    async with await client(harness) as http:
        assert (await http.get("/")).status_code == 401
        assert (await http.get("/api/v1/status")).status_code == 401
        ok = await http.get("/api/v1/status", headers={"authorization": "Bearer page-token-1"})
        assert ok.status_code == 200 and ok.json()["totals"] == {"running": 1}
        callback = await http.post("/callbacks/volcengine", json=volc_body(harness))
        assert callback.status_code == 200 and callback.json()["reason"] == "accepted"  # its signature suffices
        assert (await http.get("/healthz")).status_code == 200


async def test_no_status_page_serves_neither_route(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start(status_page=False)
    async with await client(harness) as http:
        off = await http.get("/")
        assert off.status_code == 404 and "--no-status-page" in off.text
        assert (await http.get("/api/v1/status")).status_code == 404
        assert (await http.get("/readyz")).status_code == 200


async def test_a_zego_room_that_closed_is_not_shown_active_nor_its_idle_out_as_lost_capture(harness: Harness) -> None:
    """ZEGO room callbacks name no user the daemon could follow out: `room_close` itself ends the activity
    (before, the room stayed active on the page, and the recording's idle-out read as capture lost)."""
    write_specs(harness.specs, recording_job("rec", ["show-1"], idle=30))
    harness.sim.publish("zego", "show-1", stream_id="s1", user_id="host")
    await harness.start()
    await harness.advance(5)
    harness.sim.unpublish("zego", "show-1", stream_id="s1", user_id="host")  # stream_close, room_logout, room_close
    await harness.advance(90)  # the recording idles out at 30 s, and the room stays empty
    async with await client(harness) as http:
        room = room_of((await http.get("/api/v1/status")).json(), "show-1")
    assert harness.running_sim_tasks("zego") == []
    assert room["activity_reported"] is True
    (span,) = room["active"]
    assert span["seconds"] < 10
    assert room["lost_seconds"] == 0
    assert all(not gap["room_active"] for gap in room["captures"][0]["gaps"])


async def lobby_unseen(harness: Harness) -> float:
    """`lobby` captured, then every look at it fails (Volcengine's GetSnapshotTask down) from the time returned."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await harness.advance(1)
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["GetSnapshotTask"]))
    return harness.clock.now()


async def test_a_task_whose_status_cannot_be_read_is_shown_unknown_not_running(harness: Harness) -> None:
    """As `capctl_tasks{status="unknown"}` counts it: the vendor down, the record still says running (before,
    the page showed it running with no error, and "Every task is running.")."""
    down_from = await lobby_unseen(harness)
    await harness.advance(120)  # the next looks fail
    async with await client(harness) as http:
        down = (await http.get("/api/v1/status")).json()
        page = (await http.get("/")).text
        metrics = (await http.get("/metrics")).text
        harness.sim.faults.set(FaultConfig())
        await harness.advance(120)
        back = (await http.get("/api/v1/status")).json()
    assert 'capctl_tasks{status="unknown"} 1.0' in metrics
    assert down["totals"] == {"running": 1} and down["unknown"] == 1 and down["all_running"] is False
    assert "GetSnapshotTask" in task_of(down, LOBBY)["status_unknown"]
    # Walk 37c-3: since when (the first failed look of the run, not the last): which rooms, since when.
    since = datetime.fromisoformat(task_of(down, LOBBY)["status_unknown_since"]).timestamp()
    assert down_from <= since <= down_from + 60, since - down_from
    assert "status unknown since" in re.sub(r"<[^>]+>", "", page)
    assert "status unknown" in page and "The status of 1 task is unknown" in page
    assert "Every task is running." not in page
    assert back["unknown"] == 0 and back["all_running"] is True and task_of(back, LOBBY)["status_unknown"] is None
    assert task_of(back, LOBBY)["status_unknown_since"] is None


@pytest.mark.parametrize("how", ["restart", "takeover"])
async def test_a_status_unknown_since_outlives_a_restart_or_takeover(harness: Harness, how: str) -> None:
    """Walk 38c-2: the time was the replica's memory only: restarted, or taken over by the standby, ten minutes
    into an outage, the page said `status unknown since` the new leader's first look, a minute ago. The state's
    last good look of the task (written at least every 5 minutes) bounds the first failure."""
    down_from = await lobby_unseen(harness)
    standby = await harness.start_standby() if how == "takeover" else None
    await harness.advance(600)
    await harness.stop()
    if standby is None:
        await harness.start()
    await harness.advance(60)
    daemon = standby or harness.daemon
    assert daemon is not None
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=daemon.asgi_app), base_url=DAEMON) as http:
            down = (await http.get("/api/v1/status")).json()
    finally:
        if standby is not None:
            await standby.stop()
            standby.records.close()
    assert down["replica"]["role"] == "leader" and down["unknown"] == 1
    since = datetime.fromisoformat(task_of(down, LOBBY)["status_unknown_since"]).timestamp()
    assert down_from - 300 <= since <= down_from, since - down_from


async def test_a_failed_update_in_an_outage_is_no_good_look_after_a_restart(harness: Harness) -> None:
    """Walk 39B-2: an update the vendor refused during the outage wrote the record's `observed_at`, which a
    restart reads as the last good look: `status unknown since` the failed update, minutes after the first
    failed look. A failed action observes nothing: the time stays the last look that saw the task."""
    down_from = await lobby_unseen(harness)
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["GetSnapshotTask", "UpdateSnapshot"]))
    await harness.advance(60)
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], interval=10))
    assert harness.daemon is not None and harness.daemon.reload()
    await harness.advance(300)  # the update is sent and fails
    assert (harness.record(LOBBY).last_error or "").startswith("update failed"), harness.record(LOBBY)
    await harness.stop()
    await harness.start()
    await harness.advance(60)
    async with await client(harness) as http:
        down = (await http.get("/api/v1/status")).json()
    since = datetime.fromisoformat(task_of(down, LOBBY)["status_unknown_since"]).timestamp()
    assert down_from - 300 <= since <= down_from, since - down_from


async def test_a_failed_update_in_an_outage_backs_off(harness: Harness) -> None:
    """Walk 43B-2: with the vendor down, a failed update was tried again every 5 s for the whole outage (six
    UpdateSnapshot calls each time, ~150 in ten minutes for one task): the look that followed each failure failed
    too and left the task as is, a pass that succeeded and so reset the key's backoff (5 s, 10 s, ... 5 min), and
    the pass of its next look sent the update again whatever the backoff. `capctl sync` still sends it at once."""
    await lobby_unseen(harness)
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["GetSnapshotTask", "UpdateSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], interval=10))
    assert harness.daemon is not None and harness.daemon.reload()
    await harness.advance(600)
    assert (harness.record(LOBBY).last_error or "").startswith("update failed"), harness.record(LOBBY)
    assert harness.calls("UpdateSnapshot") <= 8 * 6  # 8 rounds of tries at most: 5 s, 10 s, ... doubling
    harness.sim.faults.set(FaultConfig())  # the vendor back: `capctl sync` sends it now, backoff or not
    async with await client(harness) as http:
        assert (await http.post("/api/v1/sync", json={"keys": [LOBBY]})).status_code == 200
    await harness.advance(2)
    (task,) = harness.running_sim_tasks()
    assert task.interval == 10 and harness.record(LOBBY).last_error is None, harness.record(LOBBY)


async def test_an_invalid_spec_change_is_quoted_error_by_error(harness: Harness) -> None:
    """Every error, each with its place (before, only the first: `2 errors, first: …`)."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]), snapshot_job("hall", ["hall"]))
    await harness.start()
    jobs = harness.specs / "jobs.yaml"
    jobs.write_text(jobs.read_text().replace("  interval:", "  intervl:"))
    assert harness.daemon is not None and not harness.daemon.reload()
    async with await client(harness) as http:
        error = (await http.get("/api/v1/status")).json()["replica"]["spec_error"]
        page = (await http.get("/")).text
        ready = (await http.get("/readyz")).text
    lines = error.splitlines()
    assert lines[0] == "2 errors:" and len(lines) == 3
    assert all("jobs.yaml:" in line and "intervl" in line for line in lines[1:]) and lines[1] != lines[2]
    assert lines[2].split(" ")[0] in page  # its file:line:col:
    assert "2 errors, first: " in ready  # the probe keeps its one line


async def test_the_log_and_the_page_count_a_spec_sets_tasks_alike(harness: Harness) -> None:
    """A selector job's rooms active at a reload are not counted as the set's tasks in the log only (before:
    `→ 2 tasks … + 1 room selector` in the log, `→ 1 task … + 1 room selector` on the page, for one set)."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]), selector_job("classes", "class-*"))
    await harness.start()
    harness.sim.publish("volcengine", "class-1", user_id="alice")
    await harness.advance(5)
    assert harness.daemon is not None and harness.daemon.reload()  # the same set, read again
    async with await client(harness) as http:
        status = (await http.get("/api/v1/status")).json()
    (loaded, *_) = [d for d in status["decisions"] if d["event"] == "spec set loaded"]  # newest first
    assert "SnapshotJob/classes/class-1" in [t["key"] for j in status["jobs"] for g in j["groups"] for t in g["tasks"]]
    assert loaded["fields"]["summary"] == status["replica"]["spec_summary"]
    assert "→ 1 task (volcengine 1) + 1 room selector" in loaded["fields"]["summary"]


async def test_a_standby_says_why_it_does_not_act_without_saying_standby_twice(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock))
    standby = await harness.start_standby()
    try:
        await settle()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            replica = (await http.get("/api/v1/status")).json()["replica"]
    finally:
        await standby.stop()
        standby.records.close()
    assert replica["role"] == "standby"
    assert replica["detail"].startswith("does not act: the leader is ") and "standby" not in replica["detail"]


async def test_a_standbys_page_says_the_rooms_left_out_are_on_the_leaders(harness: Harness) -> None:
    """Walk 25e: through the Service (or `port-forward svc/capctl`) on-call reached the standby and asked why
    class-2 was not captured: `?room=class-2` read "No task matches." and nothing else, as a standby selects
    no room and has no `left_out`; the leader's page named it."""
    write_specs(harness.specs, selector_job("classes", "class-*", max_rooms=1))
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock))
    harness.sim.publish("volcengine", "class-1", user_id="alice")
    harness.sim.publish("volcengine", "class-2", user_id="bob")
    await harness.advance(5)
    standby = await harness.start_standby()
    note = "A standby selects no room: the active rooms that room-selector jobs leave out past their maxRooms"
    try:
        await settle()
        async with await client(harness) as http:
            led = (await http.get("/api/v1/status", params={"room": "class-2"})).json()
            led_page = (await http.get("/", params={"room": "class-2"})).text
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            followed = (await http.get("/", params={"room": "class-2"})).text
    finally:
        await standby.stop()
        standby.records.close()
    assert led["replica"]["left_out"] == {"SnapshotJob/classes": ["class-2"]} and led["page"]["matching"] == 0
    assert note not in " ".join(TAGS.sub("", led_page).split())
    assert note in " ".join(TAGS.sub("", followed).split())


async def test_a_restart_keeps_the_capture_lost_before_a_tasks_first_run(harness: Harness) -> None:
    """Walk 26b: the hall, busy, whose starts failed for its first minute, read "lost while active" for that
    minute; after a restart its timeline began at its first run ("no gap"): when the daemon first saw the
    task was not kept in the state."""
    write_specs(harness.specs, snapshot_job("audit", ["hall"]))
    harness.sim.publish("volcengine", "hall", user_id="alice")
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StartSnapshot"]))
    await harness.start()
    await harness.advance(60)
    harness.sim.faults.set(FaultConfig())
    await harness.advance(120)
    async with await client(harness) as http:
        before = (await http.get("/api/v1/status")).json()
    assert task_of(before, HALL)["status"] == "running" and room_of(before, "hall")["lost_seconds"] >= 60
    await harness.stop()
    await harness.start()
    async with await client(harness) as http:
        after = (await http.get("/api/v1/status")).json()
    assert room_of(after, "hall")["lost_seconds"] == room_of(before, "hall")["lost_seconds"]
    assert timelines(after) == timelines(before)


async def test_a_key_made_again_does_not_take_a_first_sight_an_older_capctl_left(harness: Harness) -> None:
    """Walk 27a-4: an older capctl's delete of a record left its `seen` row (when it was first seen); the same
    key made again took that old time as its first sight, and the room's session before the new task read
    "capture lost" on the page (with room callbacks). The leader's read drops such rows before it acts."""
    write_specs(harness.specs, snapshot_job("audit", ["hall"]))
    harness.sim.publish("volcengine", "hall", user_id="alice")
    await harness.start()
    await harness.advance(60)
    await harness.stop()
    # An older capctl forgets the task (`state rm`): the record and its runs go, the `seen` row stays.
    with sqlite3.connect(harness.state_path) as db:
        db.execute("DELETE FROM capctl_records WHERE key = ?", (HALL,))
        db.execute("DELETE FROM capctl_history WHERE kind = 'run' AND subject = ?", (HALL,))
        assert db.execute("SELECT count(*) FROM capctl_history WHERE kind = 'seen'").fetchone() == (1,)
    await harness.advance(600)
    await harness.start()  # the key is made again: a new task, started now
    await harness.advance(30)
    async with await client(harness) as http:
        status = (await http.get("/api/v1/status")).json()
    assert task_of(status, HALL)["status"] == "running"
    assert room_of(status, "hall")["lost_seconds"] < 5
    await harness.stop()  # the orphan is gone from the state, not only from this daemon's page
    await harness.start()
    async with await client(harness) as http:
        assert room_of((await http.get("/api/v1/status")).json(), "hall")["lost_seconds"] < 5


async def test_without_room_callbacks_a_first_sight_is_written_at_a_resync(harness: Harness) -> None:
    """Walk 27a-6: when tasks were first seen went to the state with a batch of room callbacks or at a clean
    stop; a daemon of named-room jobs that hears no room callback (polling) wrote none before its stop, so
    after a crash the next one drew its tasks from its own start. The leader's resync writes them now."""
    write_specs(harness.specs, snapshot_job("audit", ["hall"]))
    await harness.start()
    await harness.advance(40)  # past a resync (30 s, jittered); no room callback came
    with sqlite3.connect(harness.state_path) as db:
        seen = db.execute("SELECT subject FROM capctl_history WHERE kind = 'seen'").fetchall()
    assert seen == [(HALL,)]


async def test_a_term_begun_during_a_failing_look_gives_that_look_the_last_good_look(harness: Harness) -> None:
    """Walk 40b-2: the lease lost and regained while a look awaited the vendor (in-flight passes go on while the
    replica stands by): whether the term had seen the task was read before the call, in the old term, and the
    look's since was the regain, not the state's last good look (as after a restart or takeover, 38c-2)."""
    sim, armed = harness.sim_app, [False]

    async def regaining(scope: Any, receive: Any, send: Any) -> None:
        if armed[0] and b"GetSnapshotTask" in scope.get("query_string", b""):
            armed[0] = False  # what the controller's `_regained` does to the looks' memory, during this look
            assert harness.daemon is not None
            harness.daemon.runtimes.clear_unconfirmed()
            harness.daemon.reconciler.observe_first()
        await sim(scope, receive, send)

    harness.sim_app = regaining
    down_from = await lobby_unseen(harness)
    await harness.advance(120)  # the looks fail
    armed[0] = True
    await harness.advance(120)
    assert not armed[0]
    async with await client(harness) as http:
        down = (await http.get("/api/v1/status")).json()
    since = datetime.fromisoformat(task_of(down, LOBBY)["status_unknown_since"]).timestamp()
    assert down_from - 300 <= since <= down_from, since - down_from


async def test_an_edit_in_a_failed_updates_backoff_goes_out_at_once(harness: Harness) -> None:
    """Walk 44c-1: after 43B-2 a failed update waits for its backoff step (up to 5 min), and so did an edit of
    the task made meanwhile (the vendor back, or the edit fixing what failed): docs/daemon.md promises a changed
    task, and a changed Provider's failing tasks, are tried at once."""
    await lobby_unseen(harness)
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["GetSnapshotTask", "UpdateSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], interval=10))
    assert harness.daemon is not None and harness.daemon.reload()
    await harness.advance(600)
    assert harness.daemon.queue.backing_off(LOBBY)  # its step, up to 5 minutes, still ahead
    harness.sim.faults.set(FaultConfig())
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], interval=15))
    assert harness.daemon.reload()
    await harness.advance(2)
    (task,) = harness.running_sim_tasks()
    assert task.interval == 15 and harness.record(LOBBY).last_error is None, harness.record(LOBBY)


async def test_a_provider_fix_in_a_failed_updates_backoff_retries_it_at_once(harness: Harness) -> None:
    """Walk 44c-1: an update failing for a wrong key waited out its backoff step after the key was put right."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await harness.advance(1)
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], interval=10))
    providers = harness.specs / "providers.yaml"
    good = providers.read_text()
    providers.write_text(good.replace("default: capctl-sim-volc-secret", "default: not-the-secret"))
    assert harness.daemon is not None and harness.daemon.reload()
    await harness.advance(300)
    assert harness.daemon.queue.backing_off(LOBBY), harness.record(LOBBY)
    providers.write_text(good)
    assert harness.daemon.reload()
    await harness.advance(2)
    (task,) = harness.running_sim_tasks()
    assert task.interval == 10 and harness.record(LOBBY).last_error is None, harness.record(LOBBY)


async def widened_stage(harness: Harness) -> float:
    """`sel` widened to `*`: stage-1's task runs; its room's capture lost then, the same after a restart."""
    write_specs(harness.specs, selector_job("sel", "*"))
    assert harness.daemon is not None and harness.daemon.reload()
    await harness.advance(30)
    async with await client(harness) as http:
        before = (await http.get("/api/v1/status")).json()
    assert task_of(before, "SnapshotJob/sel/stage-1")["status"] == "running"
    await harness.stop()
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock))
    async with await client(harness) as http:
        after = (await http.get("/api/v1/status")).json()
    assert timelines(after) == timelines(before)
    lost: float = room_of(before, "stage-1")["lost_seconds"]
    return lost


async def test_a_selector_widened_to_an_active_room_counts_no_loss_from_before_the_edit(harness: Harness) -> None:
    """Walk 41C-4: `lobby-*` widened to `*` while stage-1 had been active 10 minutes drew those 10 minutes as
    capture lost for the job, which did not want the room then; after a restart, the same."""
    write_specs(harness.specs, selector_job("sel", "lobby-*"))
    harness.sim.publish("volcengine", "stage-1", user_id="alice")
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock))
    await harness.advance(600)
    assert await widened_stage(harness) < 30  # (almost) no capture lost


async def test_a_selector_narrowed_and_widened_again_counts_no_loss_while_it_left_the_room_out(
    harness: Harness,
) -> None:
    """Walk 48B-1: `lobby-*` widened to `*`, narrowed back (stage-1's task, idled out, pruned), widened again:
    stage-1, active again while the job left it out, drew that time as capture lost (its task kept its history
    from the first widening). `--max-prune 100`: the narrowing's prune goes through (held: walk 49B-1)."""
    write_specs(harness.specs, selector_job("sel", "lobby-*"))
    harness.sim.publish("volcengine", "stage-1", user_id="alice")
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock), max_prune=100.0)
    await narrowed_after_an_idle_out(harness, held=False)
    assert await widened_stage(harness) < 30  # (almost) no capture lost


async def test_a_deposed_leader_shows_none_of_its_old_terms_plans_or_looks(harness: Harness) -> None:
    """Walk 52b (two replicas, SIGSTOP then SIGCONT of the leader): the deposed one, a standby again, kept its old
    term's next observations, and its page said `now` of every running task, for good, beside the new leader's
    `in 20s`; and its last failed looks, `status unknown` for good, where no other standby says so. It shows
    what a standby that never led shows: the observation is the leader's."""
    await lobby_unseen(harness)
    await harness.advance(120)  # the looks fail
    async with await client(harness) as http:
        led = task_of((await http.get("/api/v1/status")).json(), LOBBY)
        assert led["next_observation"] is not None and led["status_unknown"] is not None
        assert harness.daemon is not None
        harness.daemon.lease.elector.resign()
        followed = (await http.get("/api/v1/status")).json()
        page = html.unescape((await http.get("/")).text)
    assert followed["replica"]["role"] == "standby" and followed["unknown"] == 0
    task = task_of(followed, LOBBY)
    assert (task["next_observation"], task["status_unknown"], task["status_unknown_since"]) == (None, None, None)
    assert "the leader's: a standby observes nothing" in page


async def leader_and_standby_pages(harness: Harness, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """`GET /api/v1/status` of the harness's daemon (leading), then of a standby started on its state (with
    `options`: the flags the leader was given, which every replica must share)."""
    standby = await harness.start_standby(**options)
    try:
        async with await client(harness) as http:
            led = (await http.get("/api/v1/status")).json()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=standby.asgi_app), base_url=DAEMON) as http:
            followed = (await http.get("/api/v1/status")).json()
    finally:
        await standby.stop()
        standby.records.close()
    return led, followed


async def narrowed_after_an_idle_out(harness: Harness, *, held: bool) -> None:
    """`sel` widened to `*` (stage-1's task runs), stage-1 empties (its task idles out, `held`: after the
    narrowing to `lobby-*`, before: its prune is held or goes), then active 5 minutes while left out."""
    for match in ("*", "lobby-*"):
        if match == "lobby-*" and not held:
            harness.sim.unpublish("volcengine", "stage-1", user_id="alice")
            await harness.advance(60)  # its task idles out
        write_specs(harness.specs, selector_job("sel", match))
        assert harness.daemon is not None and harness.daemon.reload()
        await harness.advance(60)
    if held:
        harness.sim.unpublish("volcengine", "stage-1", user_id="alice")
        await harness.advance(60)  # its task idles out
    harness.sim.publish("volcengine", "stage-1", user_id="alice")
    await harness.advance(300)  # active, left out


@pytest.mark.parametrize("prune", [True, False])
async def test_a_stopped_selector_task_a_narrowing_left_the_job_draws_one_loss_on_every_replica(
    harness: Harness, prune: bool
) -> None:
    """Walk 50B-1: stage-1's task idled out, then `sel` narrowed to `lobby-*`: its prune held by --max-prune
    (1 of 1 task), or not made (`--no-prune`), the task stays the job's and the room active after is capture
    lost. The leader drew that from its own `prune_held`, which a standby does not have: the standby's page,
    behind the same Service, drew no loss for the same room (and under --no-prune, neither did the leader)."""
    write_specs(harness.specs, selector_job("sel", "lobby-*"))
    harness.sim.publish("volcengine", "stage-1", user_id="alice")
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock), prune=prune)
    await narrowed_after_an_idle_out(harness, held=False)
    led, followed = await leader_and_standby_pages(harness)
    assert led["replica"]["prune_held"] == (["SnapshotJob/sel/stage-1"] if prune else [])
    assert followed["replica"]["role"] == "standby" and followed["replica"]["prune_held"] == []
    assert room_of(led, "stage-1")["lost_seconds"] >= 290
    assert followed["rooms"] == led["rooms"]


async def test_a_stopped_selector_task_under_no_prune_draws_its_loss_from_the_narrowing_at_once(
    harness: Harness,
) -> None:
    """Walk 54b: under --no-prune no prune comes, yet the page waited for one (53c: `--prune-grace` and a minute)
    before drawing the room active after the narrowing as lost: none for 90 s, then the loss since the edit,
    the page's past rewritten. Now from the edit on, on every replica run with the same flags."""
    write_specs(harness.specs, selector_job("sel", "*"))
    harness.sim.publish("volcengine", "stage-1", user_id="alice")
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock), prune=False)
    await harness.advance(30)
    harness.sim.unpublish("volcengine", "stage-1", user_id="alice")
    await harness.advance(60)  # its task idles out
    write_specs(harness.specs, selector_job("sel", "lobby-*"))
    assert harness.daemon is not None and harness.daemon.reload()
    harness.sim.publish("volcengine", "stage-1", user_id="alice")
    await harness.advance(20)
    led, followed = await leader_and_standby_pages(harness, prune=False)
    assert task_of(led, "SnapshotJob/sel/stage-1")["status"] == "stopped"
    assert 15 < room_of(led, "stage-1")["lost_seconds"] < 25
    assert followed["rooms"] == led["rooms"]


async def test_a_held_stopped_selector_task_waits_for_no_room_on_every_replica(harness: Harness) -> None:
    """Walk 52b (50b's left-alone): stage-1's task idled out, then `sel` narrowed to `lobby-*`, its prune held by
    --max-prune. The leader's row said its stop waits for a human; the standby's, lacking the leader's
    `prune_held`, said it starts when its room is selected again, which no selection does: both now read the
    globs in force from the state, and neither counts it as waiting for its room."""
    write_specs(harness.specs, selector_job("sel", "lobby-*"))
    harness.sim.publish("volcengine", "stage-1", user_id="alice")
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock))
    await narrowed_after_an_idle_out(harness, held=False)
    led, followed = await leader_and_standby_pages(harness)
    key = "SnapshotJob/sel/stage-1"
    assert led["replica"]["prune_held"] == [key] and task_of(led, key)["status"] == "stopped"
    assert [task_of(page, key)["waits_for_room"] for page in (led, followed)] == [False, False]
    assert followed["waiting_for_room"] == led["waiting_for_room"] == 0
    assert followed["needs_attention"] is led["needs_attention"] is True


async def test_a_selector_narrowing_held_by_max_prune_still_counts_the_loss_of_its_task(harness: Harness) -> None:
    """Walk 49B-1: a narrowing whose prune `--max-prune` holds leaves stage-1's task running, presumed wanted
    until a human confirms; it idled out and the room was active again: that is capture lost, on the page
    while the prune is held and after the selector is widened again (as a named-room task's would be)."""
    write_specs(harness.specs, selector_job("sel", "lobby-*"))
    harness.sim.publish("volcengine", "stage-1", user_id="alice")
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock))
    await narrowed_after_an_idle_out(harness, held=True)
    async with await client(harness) as http:
        held = (await http.get("/api/v1/status")).json()
    assert held["replica"]["prune_held"] == ["SnapshotJob/sel/stage-1"]
    assert room_of(held, "stage-1")["lost_seconds"] >= 290
    assert 290 <= await widened_stage(harness) < 330


@pytest.mark.parametrize("narrowed", [True, False])
async def test_a_stopped_selector_task_pruned_after_its_grace_draws_no_loss_after_the_narrowing(
    harness: Harness, narrowed: bool
) -> None:
    """Walk 53c: stage-1's task idled out; `sel` narrowed to `lobby-*` (or removed) as stage-1 came back: the
    daemon prunes the task after its 30 s grace, and the page drew the room active meanwhile as capture lost
    (growing during the grace, 30 s after), on every replica; `capctl apply --prune` of the same edit drew none."""
    write_specs(harness.specs, selector_job("sel", "*"))
    harness.sim.publish("volcengine", "stage-1", user_id="alice")
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock), max_prune=100.0)
    await harness.advance(30)
    harness.sim.unpublish("volcengine", "stage-1", user_id="alice")
    await harness.advance(60)  # its task idles out
    write_specs(harness.specs, *([selector_job("sel", "lobby-*")] if narrowed else []))
    assert harness.daemon is not None and harness.daemon.reload()
    harness.sim.publish("volcengine", "stage-1", user_id="alice")
    for wait, status in ((20, "stopped"), (60, "removed")):  # within the grace, then pruned
        await harness.advance(wait)
        led, followed = await leader_and_standby_pages(harness)
        assert task_of(led, "SnapshotJob/sel/stage-1")["status"] == status
        assert room_of(led, "stage-1")["lost_seconds"] < 5
        assert followed["rooms"] == led["rooms"]
