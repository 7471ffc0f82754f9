"""The status page of a running daemon (in-process simulator, fake clock): what it shows as tasks idle out
and are re-issued, rooms fill and empty, specs break; its token and --no-status-page."""

from __future__ import annotations

from typing import Any

from reconciler.sim.faults import FaultConfig
from tests.daemon.conftest import Harness, write_specs
from tests.daemon.test_http import client, volc_body
from tests.specdocs import snapshot_job

LOBBY = "SnapshotJob/audit/lobby"
HALL = "SnapshotJob/audit/hall"
IDLE = "idle timeout (Volcengine IdleTimeOut)"


def task_of(status: dict[str, Any], key: str) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [t for j in status["jobs"] for g in j["groups"] for t in g["tasks"]]
    (task,) = (t for t in tasks if t["key"] == key)
    return task


def room_of(status: dict[str, Any], room: str) -> dict[str, Any]:
    rooms: list[dict[str, Any]] = status["rooms"]
    (found,) = (r for r in rooms if r["room"] == room)
    return found


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


async def test_during_a_vendor_outage_the_page_does_not_say_every_task_is_running(harness: Harness) -> None:
    """Every status query fails (the vendor is down, or stopped the task meanwhile): the records still say
    running, `capctl_tasks{status="unknown"}` says otherwise, and the page said "Every task is running."."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby", "hall"], idle=600))
    await harness.start(resync=10.0)
    await harness.advance(1)
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["GetSnapshotTask"]))
    await harness.advance(30)
    async with await client(harness) as http:
        during = (await http.get("/api/v1/status")).json()
        page = (await http.get("/")).text
        assert during["all_running"] is False and during["unknown"] == 2 and during["totals"] == {"running": 2}
        assert "its last status query failed" in (task_of(during, LOBBY)["last_error"] or "")
        assert "Every task is running." not in page and "The status of 2 task(s) recorded running is unknown" in page
        harness.sim.faults.set(FaultConfig())
        await harness.advance(30)
        after = (await http.get("/api/v1/status")).json()
        assert after["all_running"] is True and after["unknown"] == 0 and task_of(after, LOBBY)["last_error"] is None
