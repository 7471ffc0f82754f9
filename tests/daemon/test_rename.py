"""A job renamed with its Volcengine `taskId` kept, in the daemon: two task keys name one vendor task (RoomId +
TaskId). The new key's start waits for the old key's prune, whose stop goes first, as `capctl apply` orders
them; a stop never ends a task a key of the specs holds. ZEGO renames start a recording of their own."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from reconciler.daemon.controller import PRUNE_GRACE, Daemon
from reconciler.model import TaskRecord, TaskStatus
from reconciler.sim.config import BUILTIN_VOLC_APP
from reconciler.sim.faults import FaultConfig
from reconciler.state.sqlite import SQLiteStateStore
from reconciler.transitions import start_unconfirmed
from tests.daemon.conftest import SIM, Harness, write_specs
from tests.daemon.test_http import client
from tests.daemon.test_prune import metrics
from tests.specdocs import recording_job, selector_job, snapshot_job, thumbnail_job

ROOMS = ["r1", "r2"]
OTHERS = ["o1", "o2", "o3"]  # so that the rename's two removed tasks stay within --max-prune's 50 %


def pinned(name: str, rooms: list[str] = ROOMS) -> str:
    return snapshot_job(name, rooms).replace("spec:\n", "spec:\n  taskId: pinned\n")


def sim_calls(harness: Harness, api: str, room: str) -> list[float]:
    return [e.time for e in harness.sim.log.entries() if e.api == api and e.body.get("RoomId") == room]


async def start_renamed(harness: Harness, *more: str, **options: Any) -> None:
    """`old` (taskId pinned) and `other` running with streams (and the `more` specs), then `old` renamed to
    `new`."""
    for room in ROOMS + OTHERS:
        harness.sim.publish("volcengine", room, user_id="u")
    write_specs(harness.specs, pinned("old"), snapshot_job("other", OTHERS), *more)
    daemon = await harness.start(**options)
    await harness.advance(1)
    assert all(harness.record(f"SnapshotJob/old/{r}").status is TaskStatus.RUNNING for r in ROOMS)
    write_specs(harness.specs, pinned("new"), snapshot_job("other", OTHERS), *more)
    assert daemon.reload()


async def test_a_renamed_job_keeps_capturing_its_rooms_and_no_stop_ends_the_new_keys_task(harness: Harness) -> None:
    with capture_logs() as logs:
        await start_renamed(harness)
        await harness.advance(PRUNE_GRACE / 2)
    waits = [e["reason"] for e in logs if e["event"] == "decision" and e["action"] == "wait"]
    assert waits == [
        f"its vendor task (RoomId + TaskId) is still SnapshotJob/old/{r}'s, which is pruned first" for r in ROOMS
    ]
    # Within the grace the old key still holds the task, and it runs: the new key waits, nothing is stopped.
    assert harness.calls("StopSnapshot") == 0 and harness.calls("StartSnapshot") == 5
    assert harness.daemon is not None and harness.daemon.records.get("SnapshotJob/new/r1") is None
    await harness.advance(PRUNE_GRACE + 120)  # the prune, then two minutes of looks and resyncs
    assert harness.calls("StopSnapshot") == 2 and harness.calls("StartSnapshot") == 7
    for room in ROOMS:
        (stop,), (_, start) = sim_calls(harness, "StopSnapshot", room), sim_calls(harness, "StartSnapshot", room)
        assert stop <= start  # the old key's stop came first, the new key's start after it
        old, new = harness.record(f"SnapshotJob/old/{room}"), harness.record(f"SnapshotJob/new/{room}")
        # What `capctl apply` leaves (tests/e2e/test_cli_volcengine.py): a tombstone, and a run of the new key.
        assert (old.status, old.stop_reason) == (TaskStatus.REMOVED, "removed from specs")
        assert (new.status, new.vendor_task_id, new.reissue_count, new.last_error) == (
            TaskStatus.RUNNING,
            "pinned",
            0,
            None,
        )
    assert sorted(t.room_id for t in harness.running_sim_tasks("volcengine")) == sorted(ROOMS + OTHERS)


async def test_after_a_restart_a_renamed_jobs_callbacks_reach_its_new_key_not_the_old_tombstone(
    harness: Harness,
) -> None:
    """The old key's tombstone names the same vendor task (RoomId + TaskId) as the new key's run. Read back in
    key order (`old` after `new`), it took the callbacks' index: every image callback of the run went to the
    tombstone, the running task heard none (its productive mark, idle and image-silence hints) until the
    tombstone was collected (walk 28a)."""
    await start_renamed(harness)
    await harness.advance(PRUNE_GRACE + 120)
    await harness.stop()
    daemon = await harness.start()
    await harness.advance(1)
    for room in ROOMS:
        new = harness.record(f"SnapshotJob/new/{room}")
        run = ("volcengine", new.vendor_ref["AppId"], room, new.vendor_task_id or "")
        routed = daemon.records.by_vendor_id(run)
        assert routed is not None and routed.key == new.key, routed


async def test_a_rename_held_by_max_prune_keeps_the_old_task_running_until_a_human_confirms(harness: Harness) -> None:
    with capture_logs() as logs:
        await start_renamed(harness, max_prune=0)  # every prune waits for a human
        await harness.advance(PRUNE_GRACE + 300)  # ten resyncs
    assert sum(e["event"] == "decision" and e["action"] == "wait" for e in logs) == 2  # said once per key
    assert harness.calls("StopSnapshot") == 0 and harness.calls("StartSnapshot") == 5
    assert all(harness.record(f"SnapshotJob/old/{r}").status is TaskStatus.RUNNING for r in ROOMS)
    assert len(harness.running_sim_tasks("volcengine")) == 5  # the old key's task captures meanwhile
    await harness.stop()
    await harness.start(max_prune=100)  # the human confirms
    await harness.advance(PRUNE_GRACE + 60)
    assert harness.calls("StopSnapshot") == 2 and harness.calls("StartSnapshot") == 7
    assert all(harness.record(f"SnapshotJob/new/{r}").status is TaskStatus.RUNNING for r in ROOMS)
    assert all(harness.record(f"SnapshotJob/old/{r}").status is TaskStatus.REMOVED for r in ROOMS)


async def test_a_held_renames_old_run_ended_by_the_vendor_frees_the_new_key_at_once(harness: Harness) -> None:
    """Walk 44A-1: the old key's prune held for a human, the vendor ended its run (nothing then holds the task),
    and the daemon restarted. The new key's first pass waited (the old record still said running) and the old
    key's look, which saw the end, woke nothing: the rooms went uncaptured until the next resync."""
    await start_renamed(harness, max_prune=0)
    await harness.advance(5)
    for room in ROOMS:
        harness.sim.stop_task("volcengine", "pinned", room_id=room, reason="UnknownStopReason")
    await harness.stop()
    await harness.start(max_prune=0)
    await harness.advance(2)
    for room in ROOMS:
        assert harness.record(f"SnapshotJob/old/{room}").status is TaskStatus.STOPPED
        assert harness.record(f"SnapshotJob/new/{room}").status is TaskStatus.RUNNING
    assert harness.calls("StopSnapshot") == 0 and harness.calls("StartSnapshot") == 7
    assert len(harness.running_sim_tasks("volcengine")) == 5
    await harness.stop()
    await harness.start(max_prune=100)  # the human confirms: the old keys, ended, are retired without a stop
    await harness.advance(PRUNE_GRACE + 5)
    assert harness.calls("StopSnapshot") == 0 and len(harness.running_sim_tasks("volcengine")) == 5
    assert all(harness.record(f"SnapshotJob/old/{r}").status is TaskStatus.REMOVED for r in ROOMS)


async def test_a_held_rename_beside_a_selector_job_says_its_wait_once_per_key(harness: Harness) -> None:
    """A selector job's room callbacks put its set in force again (with its rooms' tasks); the wait was said
    again at each of them, about once per resync, where it is said once per key while the wait lasts."""
    harness.sim.publish("volcengine", "class-1", user_id="t")
    with capture_logs() as logs:
        await start_renamed(harness, selector_job("classes", "class-*"), max_prune=0)
        for _ in range(10):  # rooms come and go: each callback batch puts the set in force again
            harness.sim.publish("volcengine", "class-2", user_id="t")
            await harness.advance(30)
            harness.sim.unpublish("volcengine", "class-2", user_id="t")
            await harness.advance(30)
    waits = [e for e in logs if e["event"] == "decision" and e["action"] == "wait" and e["log_level"] == "info"]
    assert len(waits) == 2, waits
    assert harness.calls("StopSnapshot") == 0


async def test_without_prune_the_new_key_takes_the_running_task_and_it_is_never_stopped(harness: Harness) -> None:
    await start_renamed(harness, prune=False)
    await harness.advance(PRUNE_GRACE + 120)
    assert harness.calls("StopSnapshot") == 0
    assert all(harness.record(f"SnapshotJob/new/{r}").status is TaskStatus.RUNNING for r in ROOMS)
    assert len(harness.running_sim_tasks("volcengine")) == 5


async def test_a_task_another_key_already_holds_is_retired_without_a_stop(harness: Harness) -> None:
    """Both keys' records hold the task (the new one took it while the old one was kept, e.g. under
    --no-prune): pruning the old key must not stop the task the new key runs."""
    await start_renamed(harness, prune=False)
    await harness.advance(5)
    await harness.stop()
    daemon = await harness.start()  # pruning again
    await harness.advance(1)
    for room in ROOMS:  # both live, `old` read back last: the callbacks are the new key's, which took the run over
        new = harness.record(f"SnapshotJob/new/{room}")
        routed = daemon.records.by_vendor_id(("volcengine", new.vendor_ref["AppId"], room, new.vendor_task_id or ""))
        assert routed is not None and routed.key == new.key, routed
    with capture_logs() as logs:
        await harness.advance(PRUNE_GRACE + 120)
    deletes = [e["reason"] for e in logs if e["event"] == "decision" and e["action"] == "delete"]
    assert deletes == [
        f"removed from specs: its vendor task (RoomId + TaskId) is SnapshotJob/new/{r}'s now, so it is not stopped"
        for r in ROOMS
    ]
    assert harness.calls("StopSnapshot") == 0
    for room in ROOMS:
        old, new = harness.record(f"SnapshotJob/old/{room}"), harness.record(f"SnapshotJob/new/{room}")
        assert old.status is TaskStatus.REMOVED and old.stop_reason == "handed over to SnapshotJob/new/" + room
        assert new.status is TaskStatus.RUNNING and new.reissue_count == 0
        run = ("volcengine", new.vendor_ref["AppId"], room, new.vendor_task_id or "")
        routed = daemon.records.by_vendor_id(run)
        assert routed is not None and routed.key == new.key, routed
    assert len(harness.running_sim_tasks("volcengine")) == 5


async def test_a_renamed_zego_recording_starts_its_own_and_the_old_one_is_stopped(harness: Harness) -> None:
    """ZEGO names a recording by the TaskId it returns, and the ClientTaskId differs per key: two recordings."""
    for provider in ["zego", "zego-legacy"]:
        harness.sim.publish("zego", f"{provider}-room", stream_id="teacher")
    jobs = [recording_job(f"{p}-old", [f"{p}-room"], provider=p) for p in ["zego", "zego-legacy"]]
    write_specs(harness.specs, *jobs, snapshot_job("other", OTHERS))
    daemon = await harness.start()
    await harness.advance(1)
    old = {p: harness.record(f"RecordingJob/{p}-old/{p}-room").vendor_task_id for p in ["zego", "zego-legacy"]}
    write_specs(harness.specs, *(j.replace("-old}", "-new}") for j in jobs), snapshot_job("other", OTHERS))
    assert daemon.reload()
    await harness.advance(PRUNE_GRACE + 120)
    for p in ["zego", "zego-legacy"]:
        new = harness.record(f"RecordingJob/{p}-new/{p}-room")
        assert new.status is TaskStatus.RUNNING and new.vendor_task_id not in (None, old[p])
        assert harness.record(f"RecordingJob/{p}-old/{p}-room").status is TaskStatus.REMOVED
    running = {t.task_id for t in harness.running_sim_tasks("zego")}
    assert running == {harness.record(f"RecordingJob/{p}-new/{p}-room").vendor_task_id for p in ["zego", "zego-legacy"]}


async def test_a_job_renamed_with_its_provider_is_stopped_through_the_new_provider_of_its_account(
    harness: Harness,
) -> None:
    """The Provider renamed with the job (same appId, the old document removed): the old key is pruned through
    the new document, which reaches the same account, then the new key starts, as any rename keeping its taskId.
    (Before, the old key could not be stopped at all: `cannot prune`.)"""
    harness.sim.publish("volcengine", "r1", user_id="u")
    for room in OTHERS:
        harness.sim.publish("zego", room, stream_id="teacher")
    others = recording_job("rec", OTHERS)
    write_specs(harness.specs, pinned("old", ["r1"]), others)
    daemon = await harness.start()
    await harness.advance(1)
    providers = harness.specs / "providers.yaml"
    providers.write_text(providers.read_text().replace("{name: volc}", "{name: volc-new}"))
    (harness.specs / "jobs.yaml").write_text(
        pinned("new", ["r1"]).replace("provider: volc", "provider: volc-new") + "---\n" + others
    )
    with capture_logs() as logs:
        assert daemon.reload()
        await harness.advance(PRUNE_GRACE + 120)
    assert not [e for e in logs if e["event"] == "cannot prune"]
    assert harness.calls("StopSnapshot") == 1
    old = harness.record("SnapshotJob/old/r1")
    assert (old.status, old.provider) == (TaskStatus.REMOVED, "volc-new")
    assert harness.record("SnapshotJob/new/r1").status is TaskStatus.RUNNING
    assert [t.room_id for t in harness.running_sim_tasks("volcengine")] == ["r1"]


async def test_providers_renamed_while_the_daemon_runs_move_their_tasks_without_a_stop(harness: Harness) -> None:
    """Same account: each task's record is re-homed (`decision` action move), no start or stop; the status page
    names the new Provider. A second rename with an interval edit is an update in place, no replace."""
    for room in ROOMS:
        harness.sim.publish("volcengine", room, user_id="u")
    harness.sim.publish("zego", "c1", stream_id="teacher")
    write_specs(harness.specs, snapshot_job("audit", ROOMS), recording_job("rec", ["c1"]), thumbnail_job())
    daemon = await harness.start()
    await harness.advance(1)
    acting = ("Start", "Stop", "Update", "MediaThumbnails")

    def acted() -> list[str]:
        return [e.api for e in harness.sim.log.entries() if e.api.startswith(acting)]

    before = acted()
    assert len(before) == 5
    providers = harness.specs / "providers.yaml"
    providers.write_text(
        providers.read_text().replace("{name: volc}", "{name: volc-main}").replace("{name: zego}", "{name: zego-main}")
    )
    jobs = harness.specs / "jobs.yaml"
    text = jobs.read_text().replace("provider: volc\n", "provider: volc-main\n")
    jobs.write_text(text.replace("provider: zego\n", "provider: zego-main\n"))
    with capture_logs() as logs:
        assert daemon.reload()
        await harness.advance(60)
    assert sorted(e["action"] for e in logs if e["event"] == "decision") == ["move"] * 5
    assert acted() == before
    records = [harness.record(k) for k in harness.daemon.records.load().records] if harness.daemon else []
    assert {r.provider for r in records} == {"volc-main", "zego-main"}
    assert all(r.status in (TaskStatus.RUNNING, TaskStatus.DONE) for r in records)
    async with await client(harness) as http:
        status = (await http.get("/api/v1/status")).json()
    shown = {t["key"]: t["provider"] for j in status["jobs"] for g in j["groups"] for t in g["tasks"]}
    assert shown["SnapshotJob/audit/r1"] == "volc-main" and shown["RecordingJob/rec/c1"] == "zego-main"
    providers.write_text(providers.read_text().replace("{name: volc-main}", "{name: volc-x}"))
    jobs.write_text(
        snapshot_job("audit", ROOMS, interval=10).replace("provider: volc\n", "provider: volc-x\n")
        + "---\n"
        + "---\n".join(jobs.read_text().split("---\n")[1:])
    )
    with capture_logs() as logs:
        assert daemon.reload()
        await harness.advance(60)
    assert sorted(e["action"] for e in logs if e["event"] == "decision") == ["update", "update"]
    assert acted() == [*before, "UpdateSnapshot", "UpdateSnapshot"]
    for room in ROOMS:
        record = harness.record(f"SnapshotJob/audit/{room}")
        assert (record.provider, record.updatable, record.status) == ("volc-x", {"interval": 10}, TaskStatus.RUNNING)


async def test_a_replace_in_flight_when_its_job_is_renamed_never_stops_the_new_keys_run(harness: Harness) -> None:
    """`--no-prune`. Every StopSnapshot answer lost, after it took effect: `old`'s idle timeout changed, so its
    replace kept retrying its stop. `old` was then renamed to `new` (taskId kept): `new` started the vendor task
    again, and the old key's next retry, decided for a job no longer declared, ended `new`'s run. The reload
    cuts the old key's change short: no call of it goes out once its key left the specs."""
    harness.sim.publish("volcengine", "r1", user_id="u")
    write_specs(harness.specs, pinned("old", ["r1"]))
    daemon = await harness.start(prune=False)
    await harness.advance(1)
    harness.sim.faults.set(FaultConfig(timeout_rate=1.0, phase="after", apis=["StopSnapshot"]))
    write_specs(harness.specs, pinned("old", ["r1"]).replace("idleTimeout: 20s", "idleTimeout: 40s"))
    assert daemon.reload()
    await harness.advance(1)
    stops = sim_calls(harness, "StopSnapshot", "r1")
    assert stops, "the replace's stop went out"
    write_specs(harness.specs, pinned("new", ["r1"]).replace("idleTimeout: 20s", "idleTimeout: 40s"))
    renamed_at = harness.clock.now()
    with capture_logs() as logs:
        assert daemon.reload()
        await harness.advance(120)
    assert sim_calls(harness, "StopSnapshot", "r1") == stops
    assert [(e["event"], e["action"]) for e in logs if e["event"] in ("decision", "cut short")] == [
        ("cut short", "replace"),
        ("decision", "create"),
    ]
    [run] = harness.running_sim_tasks("volcengine")
    assert run.start_time >= renamed_at and harness.record("SnapshotJob/new/r1").status is TaskStatus.RUNNING


def volc_app(harness: Harness, keys: str = "") -> str:
    """A second app in the simulator: of the same account, or (`keys`) of another with keys `AK<keys>`."""
    app = dataclasses.replace(BUILTIN_VOLC_APP, app_id="second-app")
    if keys:
        app = dataclasses.replace(app, access_key=f"AK{keys}", secret_key=f"{keys}-secret")
    harness.sim.config.volcengine_apps.append(app)
    return app.app_id


def running_apps(harness: Harness) -> list[tuple[str, str]]:
    return sorted((t.app_id, t.room_id) for t in harness.running_sim_tasks("volcengine"))


async def test_a_volcengine_appid_edited_in_place_moves_its_runs_to_the_new_app(harness: Harness) -> None:
    """The Provider's appId edited in place, the same account's keys: each task is replaced, its stop sent to
    the app its run is in (the record's AppId), its start to the new one; nothing runs on in the old app."""
    app = volc_app(harness)
    write_specs(harness.specs, snapshot_job("audit", ROOMS, idle=180))
    daemon = await harness.start()
    await harness.advance(1)
    providers = harness.specs / "providers.yaml"
    providers.write_text(providers.read_text().replace("appId: capctl-sim-volc", f"appId: {app}"))
    with capture_logs() as logs:
        assert daemon.reload()
        await harness.advance(60)
    reasons = {e["reason"] for e in logs if e["event"] == "decision"}
    assert reasons == {
        f"its Provider's appId changed: stopped in app capctl-sim-volc, where it runs, then started in app {app}"
    }
    stops = [e.body["AppId"] for e in harness.sim.log.entries() if e.api == "StopSnapshot" and e.body]
    assert stops == ["capctl-sim-volc"] * 2
    assert running_apps(harness) == [(app, room) for room in ROOMS]
    assert all(harness.record(f"SnapshotJob/audit/{r}").vendor_ref["AppId"] == app for r in ROOMS)


async def test_a_volcengine_app_of_another_account_edited_in_place_says_how_to_move_to_it(harness: Harness) -> None:
    """appId and keys edited in place to another account's app: those keys cannot stop the old app's run. The
    replace failed with the vendor's words alone; it now says what to do, and doing it moves the task."""
    app = volc_app(harness, keys="OTHER")
    write_specs(harness.specs, snapshot_job("audit", ["r1"], idle=180))
    daemon = await harness.start()
    await harness.advance(1)
    providers = harness.specs / "providers.yaml"
    old = providers.read_text()
    edited = old.replace("appId: capctl-sim-volc", f"appId: {app}").replace("AKCAPCTLSIM0000000001", "AKOTHER")
    edited = edited.replace("capctl-sim-volc-secret", "OTHER-secret")
    providers.write_text(edited)
    with capture_logs() as logs:
        assert daemon.reload()
        await harness.advance(10)
    [error, *_] = [e["error"] for e in logs if e["event"] == "reconcile failed; retrying with backoff"]
    assert f"this task was started in app capctl-sim-volc, and Provider 'volc' now names app {app}" in error
    assert running_apps(harness) == [("capctl-sim-volc", "r1")]  # still running, still recorded
    # As it says: the old Provider back, the new app a Provider of its own, the job moved to it.
    write_specs(harness.specs, snapshot_job("audit", ["r1"], idle=180).replace("provider: volc", "provider: volc-2"))
    providers.write_text(old + "---\n" + edited.split("---\n")[0].replace("{name: volc}", "{name: volc-2}"))
    with capture_logs() as logs:
        assert daemon.reload()
        await harness.advance(10)  # (a Provider change retries a failed key at once)
    assert [e["error"] for e in logs if e["event"] == "reconcile failed; retrying with backoff"] == []
    assert running_apps(harness) == [(app, "r1")]
    assert harness.record("SnapshotJob/audit/r1").provider == "volc-2"


@pytest.mark.parametrize("throttled", [0, 1], ids=["refused", "throttled-then-refused"])
async def test_an_appid_typo_fixed_after_its_start_was_refused_starts_the_task_without_a_stop(
    harness: Harness, throttled: int
) -> None:
    """A new user's first run with a mistyped appId: every start is refused (the app is not the account's), so
    nothing runs in it. With the appId fixed, the replace of such a start stopped it in the mistyped app first,
    which the account's keys cannot reach: refused, again and again, and the task never started (walk 21c).
    A throttled first try is an answer too (the vendor did nothing): the refusal after it is as sure (walk 22a;
    a first apply of many tasks is the likeliest to be throttled)."""
    harness.sim.faults.set(FaultConfig(throttle_next=throttled, apis=["StartSnapshot"]))
    harness.sim.publish("volcengine", "r1", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["r1"], idle=180))
    providers = harness.specs / "providers.yaml"
    right = providers.read_text()
    providers.write_text(right.replace("appId: capctl-sim-volc", "appId: capctl-sim-vloc"))
    daemon = await harness.start()
    await harness.advance(1)
    assert harness.record("SnapshotJob/audit/r1").status is TaskStatus.FAILED
    providers.write_text(right)
    with capture_logs() as logs:
        assert daemon.reload()
        await harness.advance(10)  # (a Provider change retries a failed key at once)
    assert [e["error"] for e in logs if e["event"] == "reconcile failed; retrying with backoff"] == []
    assert harness.calls("StopSnapshot") == 0
    assert running_apps(harness) == [("capctl-sim-volc", "r1")]


async def test_a_look_in_flight_when_its_job_is_renamed_decides_nothing_for_the_old_key(harness: Harness) -> None:
    """The old key's status query was in flight at the rename (taskId kept) and answered that the run had ended:
    the pass, decided for a job no longer declared, re-issued it (a start of the old key, stopped again by its
    prune before the new key could start). Now what it saw is recorded and nothing is decided for it."""
    answer = asyncio.Event()
    sim = harness.sim_app

    async def slow_looks(scope: Any, receive: Any, send: Any) -> None:
        if b"GetSnapshotTask" in scope.get("query_string", b""):
            await answer.wait()
        await sim(scope, receive, send)

    harness.sim_app = slow_looks
    harness.sim.publish("volcengine", "r1", user_id="u")
    write_specs(harness.specs, pinned("old", ["r1"]))
    daemon = await harness.start(max_prune=100)
    await harness.advance(1)
    harness.sim.stop_task("volcengine", "pinned", room_id="r1", reason="UnknownStopReason")
    await harness.advance(40)  # its look is due, and waits for its answer
    write_specs(harness.specs, pinned("new", ["r1"]))
    assert daemon.reload()
    answer.set()
    await harness.advance(PRUNE_GRACE + 30)
    assert len(sim_calls(harness, "StartSnapshot", "r1")) == 2  # the old key's first, the new key's
    assert harness.calls("StopSnapshot") == 0  # the prune found nothing to stop: the run had ended
    old, new = harness.record("SnapshotJob/old/r1"), harness.record("SnapshotJob/new/r1")
    assert (old.status, old.stop_reason) == (TaskStatus.REMOVED, "ended (Volcengine UnknownStopReason)")
    assert new.status is TaskStatus.RUNNING


def denying(sim: Any, action: bytes) -> Any:
    """The simulator, but a Volcengine `action` is refused (403 AccessDenied: a policy not allowing it)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if action not in scope.get("query_string", b""):
            await sim(scope, receive, send)
            return
        body = b'{"ResponseMetadata": {"Error": {"Code": "AccessDenied", "Message": "not allowed"}}}'
        await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


async def restarted_denying(
    harness: Harness, action: bytes, edit: Callable[[SQLiteStateStore, str], object]
) -> TaskRecord:
    """`SnapshotJob/audit/r1` started, its record edited while the daemon is down, then the daemon started again
    against a simulator refusing `action`: the record it leaves."""
    harness.sim.publish("volcengine", "r1", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["r1"], idle=180))
    await harness.start()
    await harness.advance(1)
    await harness.stop()
    store = SQLiteStateStore(harness.state_path, clock=harness.clock)
    edit(store, "SnapshotJob/audit/r1")
    store.close()
    harness.sim_app = denying(harness.sim_app, action)
    await harness.start()
    await harness.advance(1)
    return harness.record("SnapshotJob/audit/r1")


async def test_a_refused_stop_of_a_run_found_by_a_start_does_not_mark_the_start_refused(harness: Harness) -> None:
    """A start answered "already started" by a run no record names (`state rm` forgot it) stops that run first;
    a refusal of that stop (a policy allowing StartSnapshot, not StopSnapshot) was taken for a refusal of the
    start: no ClientTaskId, `start_refused`, so nothing was said to run and a delete left the run going (22A-7)."""
    record = await restarted_denying(harness, b"StopSnapshot", lambda store, key: store.delete(key))  # `state rm`
    assert record.status is TaskStatus.FAILED and "StopSnapshot: AccessDenied" in (record.last_error or "")
    assert len(harness.running_sim_tasks("volcengine")) == 1
    assert not record.start_refused and start_unconfirmed(record)  # it runs, as far as anyone knows


async def test_a_forgotten_run_whose_stop_was_refused_is_replaced_once_its_stop_goes_through(harness: Harness) -> None:
    """As above, with the interval changed too: the failed record held the spec's hash, so the next start's
    "already started" read as a run of these settings, and the vendor kept the old interval (walk 53A-1)."""

    def forget_and_edit(store: SQLiteStateStore, key: str) -> None:
        store.delete(key)  # `state rm`
        write_specs(harness.specs, snapshot_job("audit", ["r1"], interval=10, idle=180))

    sim = harness.sim_app
    record = await restarted_denying(harness, b"StopSnapshot", forget_and_edit)
    assert record.status is TaskStatus.FAILED and "StopSnapshot: AccessDenied" in (record.last_error or "")
    await harness.stop()
    harness.sim_app = sim  # the policy fixed
    await harness.start()
    await harness.advance(60)
    [task] = harness.running_sim_tasks("volcengine")
    assert task.interval == 10
    assert harness.record("SnapshotJob/audit/r1").status is TaskStatus.RUNNING


async def test_a_refused_retry_of_an_unconfirmed_volcengine_start_still_says_it_may_run(harness: Harness) -> None:
    """Walk 46A-1: a Volcengine start whose answers were lost (it may run: the vendor names it by RoomId + TaskId),
    tried again and refused (a key rotated, a policy): the refusal was taken for "nothing runs" (`start_refused`),
    although the first start runs, so a prune or a handed-over key's retirement (walk 45A-3) left it going."""

    def answers_lost(store: SQLiteStateStore, key: str) -> None:
        lost = store.record(key)
        assert lost is not None
        store.put(lost.evolve(status=TaskStatus.FAILED, vendor_task_id=None, next_attempt_at=None, last_error="lost"))

    record = await restarted_denying(harness, b"StartSnapshot", answers_lost)
    assert record.status is TaskStatus.FAILED and "StartSnapshot: AccessDenied" in (record.last_error or "")
    assert len(harness.running_sim_tasks("volcengine")) == 1
    assert not record.start_refused and start_unconfirmed(record)  # the first start runs, as far as anyone knows


def rename_with_provider(harness: Harness, provider: tuple[str, str]) -> None:
    """`old` (room r1) renamed `new`, on the Provider `volc` renamed `volc-new` (`provider`: its new document);
    the other rooms are ZEGO recordings (so that the removed task stays within --max-prune 50)."""
    providers = harness.specs / "providers.yaml"
    providers.write_text(providers.read_text().replace("{name: volc}", "{name: volc-new}").replace(*provider))
    jobs = pinned("new", ["r1"]).replace("provider: volc", "provider: volc-new")
    (harness.specs / "jobs.yaml").write_text(jobs + "---\n" + recording_job("rec", OTHERS))


async def start_held_on_volc(harness: Harness) -> Daemon:
    harness.sim.publish("volcengine", "r1", user_id="u")
    for room in OTHERS:
        harness.sim.publish("zego", room, stream_id="teacher")
    write_specs(harness.specs, pinned("old", ["r1"]), recording_job("rec", OTHERS))
    daemon = await harness.start(max_prune=0)
    await harness.advance(1)
    return daemon


async def test_a_held_rename_whose_provider_was_renamed_too_frees_the_new_key_once_the_vendor_ends_it(
    harness: Harness,
) -> None:
    """Walk 45A-1: the Provider renamed with the job (same account and endpoint), the old key's prune held. Its
    look went through its recorded Provider, gone, so it was never looked at: the vendor's end of its run was
    not seen and the new key waited for a human, the room uncaptured. It is looked at through the new document."""
    daemon = await start_held_on_volc(harness)
    rename_with_provider(harness, ("", ""))
    assert daemon.reload()
    await harness.advance(5)
    assert harness.daemon is not None and harness.daemon.records.get("SnapshotJob/new/r1") is None
    harness.sim.stop_task("volcengine", "pinned", room_id="r1", reason="UnknownStopReason")
    await harness.stop()
    await harness.start(max_prune=0)
    await harness.advance(2)
    assert harness.record("SnapshotJob/old/r1").status is TaskStatus.STOPPED
    assert harness.record("SnapshotJob/new/r1").status is TaskStatus.RUNNING
    assert harness.calls("StopSnapshot") == 0 and len(harness.running_sim_tasks("volcengine")) == 1


async def test_a_held_rename_whose_provider_left_its_account_lets_the_new_key_take_the_task_over(
    harness: Harness,
) -> None:
    """Walk 45A-2: the old key's Provider removed and no declared one of its home (the new document reaches the
    same app at another endpoint), its prune held: nothing can look at or stop the old task, so the new key does
    not wait for a human (docs/daemon.md, "Pruning and its safeguard": when nothing will stop the old task): it
    takes the running task over."""
    daemon = await start_held_on_volc(harness)
    rename_with_provider(harness, (f"endpoint: {SIM}/volc", f"endpoint: {SIM.replace('sim', 'sim2')}/volc"))
    with capture_logs() as logs:
        assert daemon.reload()
        await harness.advance(5)
    assert harness.record("SnapshotJob/new/r1").status is TaskStatus.RUNNING
    assert harness.calls("StopSnapshot") == 0 and len(harness.running_sim_tasks("volcengine")) == 1
    errors = [e["error"] for e in logs if e["event"] == "cannot prune"]
    assert len(errors) == 1 and "provider 'volc' was removed" in errors[0] and "SnapshotJob/old/r1" in errors[0]
    assert 'capctl_prune_blocked{reason="provider-missing"} 1.0' in await metrics(harness)
    await harness.stop()
    await harness.start(max_prune=100)  # the human confirms: the old key is retired, its task the new key's
    await harness.advance(PRUNE_GRACE + 5)
    assert harness.calls("StopSnapshot") == 0 and len(harness.running_sim_tasks("volcengine")) == 1
    assert harness.record("SnapshotJob/old/r1").status is TaskStatus.REMOVED
    assert harness.record("SnapshotJob/new/r1").status is TaskStatus.RUNNING


async def test_a_held_prunes_provider_put_back_is_no_longer_counted_missing(harness: Harness) -> None:
    """Walk 47B-2: 45A-2's held prune, marked `provider-missing` (`cannot prune`), then its Provider put back by a
    spec edit: the key is looked at through it again, but the mark stayed until the prune went through or the
    daemon restarted (`capctl_prune_blocked{reason="provider-missing"}` 1, CapctlPruneHeld naming a Provider
    that is there), and a second removal of the Provider would not have been reported."""
    daemon = await start_held_on_volc(harness)
    volc = (harness.specs / "providers.yaml").read_text().split("---\n")[0]
    rename_with_provider(harness, (f"endpoint: {SIM}/volc", f"endpoint: {SIM.replace('sim', 'sim2')}/volc"))
    assert daemon.reload()
    await harness.advance(5)
    assert 'capctl_prune_blocked{reason="provider-missing"} 1.0' in await metrics(harness)
    providers = harness.specs / "providers.yaml"
    renamed = providers.read_text()
    providers.write_text(renamed + "---\n" + volc)  # `volc` back, beside `volc-new`
    with capture_logs() as logs:
        assert daemon.reload()
        await harness.advance(35)  # a resync
        assert 'capctl_prune_blocked{reason="provider-missing"} 0.0' in await metrics(harness)
        providers.write_text(renamed)
        assert daemon.reload()
        await harness.advance(35)
    assert sum(e["event"] == "cannot prune" for e in logs) == 1  # removed again: said again
    assert 'capctl_prune_blocked{reason="max-prune"} 1.0' in await metrics(harness)
    assert harness.calls("StopSnapshot") == 0 and len(harness.running_sim_tasks("volcengine")) == 1


async def test_a_renamed_back_jobs_update_is_recorded_after_the_takeover_before_a_clock_step_back(
    harness: Harness,
) -> None:
    """Walk 57A-1: `new` took `old`'s run over (recorded before the wall clock stepped back an hour); `old`,
    back in the specs with another interval, updates it in place: its `updated_at` comes after that takeover,
    or a key renamed from `new` would take the run over with `new`'s stale settings (`runs_as_sent`)."""
    await start_renamed(harness, prune=False)
    await harness.advance(5)
    assert harness.daemon is not None
    for room in ROOMS:
        new = harness.record(f"SnapshotJob/new/{room}")
        assert new.status is TaskStatus.RUNNING and new.started_at is not None
        harness.daemon.records.put(new.evolve(started_at=new.started_at + 3600))
    write_specs(harness.specs, pinned("old").replace("interval: 5s", "interval: 10s"), snapshot_job("other", OTHERS))
    assert harness.daemon.reload()
    await harness.advance(5)
    assert harness.calls("UpdateSnapshot") == 2
    for room in ROOMS:
        old, new = harness.record(f"SnapshotJob/old/{room}"), harness.record(f"SnapshotJob/new/{room}")
        assert old.request["ImageConfig"]["Interval"] == 10 and new.started_at is not None
        assert old.updated_at is not None and old.updated_at > new.started_at, (old.updated_at, new.started_at)
