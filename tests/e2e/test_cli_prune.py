"""Deletions and dormancy through the real CLI: tombstones, a removed provider, `capctl wake`, failed
updates and deletes recorded on their task."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from reconciler.model import TaskStatus
from reconciler.state import open_state
from tests.e2e.conftest import Workdir
from tests.servers import ServerOutput
from tests.specdocs import recording_job, snapshot_job, thumbnail_job

LOBBY, HALL = "SnapshotJob/audit/lobby", "SnapshotJob/extra/hall"


def state(work: Workdir) -> dict[str, dict[str, Any]]:
    return {t["key"]: t for t in json.loads(work.capctl("state", "list", "-o", "json").stdout)["tasks"]}


def running(work: Workdir) -> list[str]:
    return sorted(t["roomId"] for t in work.sim.tasks("volcengine", state="running"))


def test_a_pruned_task_leaves_a_tombstone_and_its_restored_spec_resumes_it(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    more = work.write("more.yaml", snapshot_job("extra", ["hall"], idle="20s"))
    work.apply()
    work.sim.advance(21)  # nobody in the hall: it idles out, and is re-issued
    work.apply()
    assert state(work)[HALL]["reissue_count"] == 1
    more.unlink()
    # Walk 8c: --no-prune beside a saved plan that prunes was ignored, and the hall was stopped.
    work.capctl("plan", "--out", "saved.json")
    refused = work.capctl("apply", "--plan", "saved.json", "--no-prune", expect=1).stderr
    assert "--prune/--no-prune cannot be combined with --plan" in refused and running(work) == ["hall", "lobby"]
    assert "removed from specs" in work.apply().stdout
    tomb = state(work)[HALL]
    assert tomb["status"] == "removed" and tomb["reissue_count"] == 1 and tomb["stop_reason"] == "removed from specs"
    assert running(work) == ["lobby"]
    listed = work.capctl("state", "list").stdout
    assert "2 tasks, 1 of them removed" in listed and any(
        line.startswith(HALL) and " removed " in line for line in listed.splitlines()
    )
    again = work.capctl("plan", "--detailed-exitcode").stdout  # a tombstone is never a delete again
    assert "No changes" in again
    work.write("more.yaml", snapshot_job("extra", ["hall"], idle="20s"))
    plan = work.capctl("plan").stdout
    assert "+ SnapshotJob/extra/hall" in plan and "restored to the specs (removed at" in plan
    assert "history kept (1 re-issue)" in plan
    work.apply()
    back = state(work)[HALL]
    assert back["status"] == "running" and back["reissue_count"] == 1 and back["removed_at"] is None
    assert running(work) == ["hall", "lobby"]
    more.unlink()
    work.apply()
    forgot = work.capctl("state", "rm", HALL).stdout
    assert "Forgot the tombstone of SnapshotJob/extra/hall" in forgot and HALL not in state(work)


def test_removing_a_provider_that_still_runs_tasks_fails_the_plan_and_saves_nothing(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    work.apply()
    (work.specs / "jobs.yaml").unlink()
    work.capctl("plan", "--out", "saved.json")  # made while the Provider was still there
    providers = (work.specs / "providers.yaml").read_text()
    (work.specs / "providers.yaml").write_text(providers.split("---\n", 1)[1])  # without Provider volc
    refused = work.capctl("apply", "--plan", "saved.json", expect=1)
    assert "provider 'volc' was removed from the specs" in refused.stderr
    plan = work.capctl("plan", "--out", "plan.json", expect=1)
    assert "provider 'volc' was removed from the specs but still runs 1 task(s): SnapshotJob/audit/lobby" in (
        plan.stderr
    )
    assert "Keep the Provider document until its tasks are deleted" in plan.stderr and "capctl state rm" in plan.stderr
    assert not (work.root / "plan.json").exists()
    assert work.capctl("plan", "--no-refresh", expect=1).returncode == 1
    applied = work.apply(expect=1)
    assert "provider 'volc' was removed" in applied.stderr and "Traceback" not in applied.stderr
    assert running(work) == ["lobby"] and state(work)[LOBBY]["status"] == "running"
    kept = work.capctl("plan", "--no-prune").stdout  # keeping the tasks of a removed provider is fine
    assert "kept running (--no-prune)" in kept


def test_providers_renamed_in_one_edit_move_their_tasks_without_a_vendor_call(work: Workdir) -> None:
    """Same type, appId and endpoints: each job's tasks are one `move` line; the saved plan's apply calls no
    vendor and re-homes the records. Another appId is another account: refused until the old one stays."""
    work.write("jobs.yaml", "---\n".join([snapshot_job("audit", ["lobby"]), recording_job("rec", ["c1", "c2"])]))
    work.write("thumbs.yaml", thumbnail_job())
    work.apply()
    old = (work.specs / "providers.yaml").read_text()
    renamed = old.replace("{name: volc}", "{name: volc-main}").replace("{name: zego}", "{name: zego-main}")
    (work.specs / "providers.yaml").write_text(renamed)
    for name in ("jobs.yaml", "thumbs.yaml"):
        path = work.specs / name
        path.write_text(
            path.read_text()
            .replace("provider: volc\n", "provider: volc-main\n")
            .replace("provider: zego\n", "provider: zego-main\n")
        )
    plan = work.capctl("plan", "--out", "saved.json", "--detailed-exitcode", expect=2).stdout
    heads = [line.split()[:3] for line in plan.splitlines() if line.startswith("    → ")]
    assert heads == [["→", LOBBY, "move"], ["→", "RecordingJob/rec", "(2"], ["→", "ThumbnailJob/thumbs", "(2"]]
    assert "move      provider volc → volc-main, same account (volcengine:capctl-sim-volc at " in plan
    assert "0 to replace" in plan and "5 to re-home" in plan
    shown = json.loads(work.capctl("show", "saved.json", "--format", "json").stdout)
    assert {c["action"] for c in shown["changes"]} == {"move"} and shown["summary"]["move"] == 5
    assert work.capctl("show", "saved.json", "--format", "markdown").stdout.count("| move |") == 3
    calls, serial = len(work.sim.requests()), shown["state_serial"]
    applied = work.capctl("apply", "--plan", "saved.json").stdout
    assert "5 re-homed, 0 failed" in applied and len(work.sim.requests()) == calls
    listed = json.loads(work.capctl("state", "list", "-o", "json").stdout)
    assert listed["serial"] == serial + 1  # every record re-homed in one commit
    assert {t["provider"] for t in state(work).values()} == {"volc-main", "zego-main"}
    assert "No changes" in work.capctl("plan").stdout and running(work) == ["lobby"]
    other = renamed.replace("{name: volc-main}", "{name: volc-other}").replace("capctl-sim-volc", "other-app")
    (work.specs / "providers.yaml").write_text(other)
    jobs = work.specs / "jobs.yaml"
    jobs.write_text(jobs.read_text().replace("provider: volc-main\n", "provider: volc-other\n"))
    refused = work.capctl("plan", expect=1)  # apply refuses alike: test_removing_a_provider_that_still_runs_…
    assert f"provider 'volc-main' was removed from the specs but still runs 1 task(s): {LOBBY}" in refused.stderr
    assert "to move jobs to a Provider of another account, declare the new one beside it" in refused.stderr
    assert "Traceback" not in refused.stderr and running(work) == ["lobby"]


def make_dormant(work: Workdir, *, room_empty: bool = False) -> None:
    """As the daemon leaves an empty room's task: its run idled out, dormant until its next slot (`room_empty`:
    because room callbacks said its room is empty)."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"], idle="20s"))
    work.apply()
    work.sim.advance(21)
    store = open_state(f"sqlite:///{work.state}")
    record = store.load().records[LOBBY]
    # The daemon counts the run that just idled out (the 4th) only when it starts the task again.
    dormant = record.evolve(status=TaskStatus.DORMANT, unproductive_runs=3, next_attempt_at=4_000_000_000.0)
    store.put(dormant.evolve(room_empty=room_empty))
    store.close()


def test_plan_and_apply_leave_a_dormant_task_alone_until_it_is_woken(work: Workdir) -> None:
    make_dormant(work)
    starts = len(work.sim.requests("StartSnapshot"))
    plan = work.capctl("plan", "--detailed-exitcode").stdout  # with refresh: the vendor reports it stopped
    assert "No changes" in plan and f"Note: 1 dormant task(s) left alone: {LOBBY}: dormant after 4 idle runs" in plan
    shown = work.capctl("plan", "--format", "json").stdout
    [change] = json.loads(shown)["changes"]
    assert change["action"] == "no-op" and "dormant after 4 idle runs" in change["reason"]
    assert "wakes on room activity or at 2096-" in change["reason"] and f"capctl wake {LOBBY}" in change["reason"]
    work.apply()
    assert len(work.sim.requests("StartSnapshot")) == starts and state(work)[LOBBY]["status"] == "dormant"
    assert "no task 'SnapshotJob/audit/nope'" in work.capctl("wake", LOBBY, "SnapshotJob/audit/nope", expect=1).stderr
    assert state(work)[LOBBY]["status"] == "dormant"  # nothing woken when one key is wrong
    woke = work.capctl("wake", LOBBY).stdout
    assert f"Woke {LOBBY} (was dormant after 4 idle runs, next slot 2096-" in woke
    assert "the next `capctl apply`, or the daemon, starts them now" in woke
    assert "1 re-issued" in work.apply().stdout
    assert running(work) == ["lobby"] and state(work)[LOBBY]["unproductive_runs"] == 1  # counted afresh
    assert "is running: nothing to wake" in work.capctl("wake", LOBBY).stdout


def test_an_edit_of_a_task_dormant_in_its_empty_room_waits_for_the_room_in_plan_and_apply(work: Workdir) -> None:
    """Walk 16D-5: an edit merged at night started every dormant task into its empty room. The plan shows the
    edit and that it waits for the room; apply calls nothing and records nothing; wake starts it with it."""
    make_dormant(work, room_empty=True)
    calls, hash_before = len(work.sim.requests()), state(work)[LOBBY]["spec_hash"]
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"], idle="20s", interval="10s"))
    plan = work.capctl("plan", "--detailed-exitcode").stdout
    assert "No changes" in plan and "1 dormant task(s) whose spec changed" in plan, plan
    assert "ImageConfig.Interval: 5 → 10" in plan and "starts with the new settings on room activity" in plan
    [change] = json.loads(work.capctl("plan", "--format", "json").stdout)["changes"]
    assert change["action"] == "no-op" and change["details"] == ["ImageConfig.Interval: 5 → 10"], change
    assert "starts with the new settings" in work.capctl("plan", "--format", "markdown").stdout
    work.apply()
    tasks = state(work)
    assert tasks[LOBBY]["status"] == "dormant" and tasks[LOBBY]["spec_hash"] == hash_before
    assert not [r for r in work.sim.requests()[calls:] if r["api"] in ("StartSnapshot", "UpdateSnapshot")]
    work.capctl("wake", LOBBY)
    assert "1 replaced" in work.apply().stdout  # woken on purpose: started with the edit
    assert running(work) == ["lobby"] and state(work)[LOBBY]["updatable"] == {"interval": 10}


def test_wake_says_when_the_daemon_holds_the_state(work: Workdir) -> None:
    make_dormant(work)
    store = open_state(f"sqlite:///{work.state}")
    with store.lock("capctl run"):
        refused = work.capctl("wake", LOBBY, expect=1)
    store.close()
    assert "capctl run" in refused.stderr and "holds the state lock" in refused.stderr
    assert state(work)[LOBBY]["status"] == "dormant"


def test_replace_starts_a_dormant_task_on_purpose(work: Workdir) -> None:
    make_dormant(work)
    assert "1 replaced" in work.apply("--replace", LOBBY).stdout
    assert running(work) == ["lobby"]


def test_failed_updates_and_deletes_are_recorded_on_their_task_until_a_success(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    work.write("more.yaml", snapshot_job("extra", ["hall"]))
    work.apply()
    work.sim.faults(errorRate=1.0, apis=["UpdateSnapshot", "StopSnapshot"])
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"], interval="10s"))
    (work.specs / "more.yaml").unlink()
    out = work.apply(expect=1).stdout
    assert "2 failed" in out
    tasks = state(work)
    assert tasks[LOBBY]["status"] == "running" and tasks[LOBBY]["last_error"].startswith("update failed: ")
    assert tasks[HALL]["status"] == "running" and tasks[HALL]["last_error"].startswith("delete failed: ")
    listed = work.capctl("state", "list").stdout
    assert "update failed: " in listed and "delete failed: " in listed
    assert running(work) == ["hall", "lobby"]  # the failed stop left it running, as recorded
    work.sim.http.delete("/faults")
    work.apply()
    tasks = state(work)
    assert tasks[LOBBY]["last_error"] is None and tasks[LOBBY]["updatable"] == {"interval": 10}
    assert tasks[HALL]["status"] == "removed" and tasks[HALL]["last_error"] is None


def start_daemon(work: Workdir, *args: str) -> tuple[subprocess.Popen[str], ServerOutput, httpx.Client]:
    daemon, log = work.run_daemon("--resync", "1s", *args)
    return daemon, log, httpx.Client(base_url=log.url(), timeout=5)


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def events(log: ServerOutput, name: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in log.text().splitlines() if line.startswith("{")]
    return [e for e in entries if e.get("event") == name]


def at(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["timestamp"]).timestamp()


def stop_daemon(daemon: subprocess.Popen[str]) -> None:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)


def test_run_holds_back_a_large_prune_until_restarted_with_max_prune_100(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    more = work.write("more.yaml", snapshot_job("extra", ["r0", "r1", "r2"]))
    daemon, log, http = start_daemon(work)
    try:
        assert wait_for(lambda: len(running(work)) == 4)
        more.unlink()  # 3 of 4 tasks: above the default --max-prune 50
        blocked = 'capctl_prune_blocked{reason="max-prune"} 3.0'
        assert wait_for(lambda: blocked in http.get("/metrics").text)
        time.sleep(2)  # two resyncs: still nothing stopped
        assert len(running(work)) == 4 and not work.sim.requests("StopSnapshot")
    finally:
        stop_daemon(daemon)
    assert log.text().count("prune blocked: too many tasks removed at once") == 1
    daemon, log, http = start_daemon(work, "--max-prune", "100", "--prune-grace", "3s")  # the operator confirms
    try:
        assert wait_for(lambda: running(work) == ["lobby"])
        assert 'capctl_prune_blocked{reason="grace"} 0.0' in http.get("/metrics").text
    finally:
        stop_daemon(daemon)
    # Within the grace period nothing was stopped: by the daemon's own log, as the grace starts before it listens
    # (looking from here, at 'reason="grace"} 3.0' then at 4 tasks running, raced those 3 s on a loaded machine).
    pending = "prune pending: tasks removed from the specs are stopped after the grace period unless they return"
    [began] = events(log, pending)
    deletes = [e for e in events(log, "decision") if e["action"] == "delete"]
    assert len(deletes) == 3 and all(at(e) - at(began) >= 2.5 for e in deletes), (began, deletes)
    assert {k: t["status"] for k, t in state(work).items() if k.startswith("SnapshotJob/extra/")} == {
        f"SnapshotJob/extra/r{i}": "removed" for i in range(3)
    }
