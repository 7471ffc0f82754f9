"""Crash safety at every point where a vendor call and a state commit meet, not only at starts.

Each test kills `capctl apply` or `capctl run` like `kill -9` at one failpoint (`CAPCTL_FAILPOINTS`, exit 137)
in the middle of a plan that creates, updates, replaces, deletes and re-issues on every API family at once, runs
it again, and checks the simulator's tasks against the state: each kept room has exactly one running task, the
recorded one, with the spec's values; a removed room has none; no ZEGO recording started twice; `state list`
says so. Subprocesses are slow: one simulator per module, few runs per case.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from typing import Any

import pytest
from typer.testing import CliRunner

from reconciler import cli
from tests.e2e.conftest import Sim, Workdir
from tests.servers import ServerOutput
from tests.specdocs import recording_job, snapshot_job, thumbnail_job

# Before: the tasks the plan then changes. After: update (interval), replace (idle timeout), delete, re-issue
# (a ZEGO run that idled out), create (one of each family).
BEFORE = {
    "upd.yaml": snapshot_job("upd", ["v-upd"], interval=5, idle=300),
    "rep.yaml": snapshot_job("rep", ["v-rep"], idle=300),
    "gone.yaml": snapshot_job("gone", ["v-gone"], idle=300),
    "zrep.yaml": recording_job("zrep", ["z-rep"], idle=300),
    "zgone.yaml": recording_job("zgone", ["z-gone"], idle=300),
    "zre.yaml": recording_job("zre", ["z-re"], idle=5),
    "lre.yaml": recording_job("lre", ["l-re"], provider="zego-legacy", idle=5),
}
AFTER = {
    "upd.yaml": snapshot_job("upd", ["v-upd"], interval=7, idle=300),
    "rep.yaml": snapshot_job("rep", ["v-rep"], idle=240),
    "zrep.yaml": recording_job("zrep", ["z-rep"], idle=240),
    "zre.yaml": recording_job("zre", ["z-re"], idle=5),
    "lre.yaml": recording_job("lre", ["l-re"], provider="zego-legacy", idle=5),
    "vnew.yaml": snapshot_job("vnew", ["v-new"], idle=300),
    "znew.yaml": recording_job("znew", ["z-new"], idle=300),
    "thumbs.yaml": thumbnail_job(tencent=False),
}
KEPT = {"v-upd": 7, "v-rep": 240, "v-new": 300, "z-rep": 240, "z-re": 5, "z-new": 300, "l-re": 5}  # value checked
REMOVED = ("v-gone", "z-gone")
# ZEGO recordings each room ever had by the end: one per run (a replace and a re-issue make a second run).
ZEGO_RUNS = {"z-rep": 2, "z-re": 2, "z-new": 1, "z-gone": 1}
# start.before-call leaves the state as start.after-call does, with less at the vendor; it and start.after-commit
# are killed in the one executor path every family's start takes by tests/e2e/test_cli_zego.py (each run here
# costs seconds).
POINTS = ("start.after-call", "stop.after-call", "stop.after-commit", "update.after-call")


def write(work: Workdir, files: dict[str, str]) -> None:
    for path in work.specs.glob("*.yaml"):
        if path.name not in ("providers.yaml", "storage.yaml", *files):
            path.unlink()
    for name, text in files.items():
        work.write(name, text)


def set_up(work: Workdir) -> None:
    """The tasks of BEFORE running, z-re's and l-re's ended (idle), AFTER's specs in place."""
    write(work, BEFORE)
    work.apply()
    work.sim.advance(10)  # past z-re's and l-re's idle timeout of 5 s, within everyone else's
    write(work, AFTER)


def crash(work: Workdir, point: str, *args: str) -> None:
    died = work.capctl(*args, env={"CAPCTL_FAILPOINTS": point}, expect=None)
    assert died.returncode == 137, f"{point} never reached: exit {died.returncode}\n{died.stdout}\n{died.stderr}"


def in_process(work: Workdir, *args: str) -> str:
    """`capctl ARGS SPECS` run in this process (no crash point on), its output; a subprocess costs a second."""
    done = CliRunner().invoke(cli.app, [*args, str(work.specs)], env=work.env)
    assert done.exit_code == 0, done.output
    return done.stdout


def state(work: Workdir) -> dict[str, dict[str, Any]]:
    """`capctl state list -o json` by room, run in this process (a subprocess costs a second a call)."""
    listed = CliRunner().invoke(
        cli.app, ["state", "list", "-o", "json"], env={"CAPCTL_STATE": work.env["CAPCTL_STATE"]}
    )
    assert listed.exit_code == 0, listed.output
    return {t["target"]: t for t in json.loads(listed.stdout)["tasks"]}


def check_converged(work: Workdir, sim: Sim, kept: dict[str, int] = KEPT) -> None:
    """Each kept room: one running task, the recorded one, with the spec's value; removed rooms: none."""
    records = state(work)
    running: dict[str, list[dict[str, Any]]] = {}
    for task in sim.tasks(state="running"):
        running.setdefault(task["roomId"], []).append(task)
    for room, value in kept.items():
        assert records[room]["status"] == "running", records[room]
        tasks = running.get(room, [])
        if room.startswith("l-"):  # legacy: a start cut short may leave one unnamed recording (documented)
            tasks = [t for t in tasks if t["taskId"] == records[room]["vendor_task_id"]]
        assert len(tasks) == 1, (room, tasks)
        [task] = tasks
        assert task["taskId"] == records[room]["vendor_task_id"], (room, task, records[room])
        assert task["interval" if room == "v-upd" else "maxIdleTime"] == value, (room, task)
    for room in REMOVED:
        assert running.get(room) is None, (room, running.get(room))
        assert records[room]["status"] == "removed", records[room]
    runs = Counter(t["roomId"] for t in sim.tasks("zego") if t["api"] == "current")
    assert {room: runs[room] for room in ZEGO_RUNS} == ZEGO_RUNS
    assert records["/record/a.mp4"]["status"] == "done"


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_anywhere_in_a_mixed_apply_is_resolved_by_the_next(work: Workdir, point: str) -> None:
    set_up(work)
    crash(work, point, "apply", "--auto-approve")
    kept = KEPT
    if point == "update.after-call":
        # The vendor took interval 7, the state never heard: reverted to 5, the spec matched the record, and no
        # plan ever sent 5 again (the vendor kept 7).
        work.write("upd.yaml", BEFORE["upd.yaml"])
        kept = {**KEPT, "v-upd": 5}
    work.apply()
    check_converged(work, work.sim, kept)


def test_a_spec_changed_after_an_unconfirmed_start_replaces_what_may_run(work: Workdir) -> None:
    """Killed after the vendor started it, the task's spec then edited: Volcengine answered the next start
    "already started" and the old interval ran on under the new spec's hash; ZEGO's recording of the old spec
    ran on unnamed beside a new one. ZEGO's is replaced: found by its ClientTaskId (killed once more after that,
    too) and stopped. Volcengine's, asked by its name and found running, is updated (it was stopped and started
    again)."""
    write(work, {"v.yaml": snapshot_job("v", ["v-1"], interval=5), "z.yaml": recording_job("z", ["z-1"], idle=30)})
    crash(work, "start.after-call", "apply", "--auto-approve", "--target", "SnapshotJob/v/v-1")
    crash(work, "start.after-call", "apply", "--auto-approve", "--target", "RecordingJob/z/z-1")
    write(work, {"v.yaml": snapshot_job("v", ["v-1"], interval=9), "z.yaml": recording_job("z", ["z-1"], idle=40)})
    crash(work, "find.after-call", "apply", "--auto-approve")
    assert "spec changed since a start that was never confirmed" in work.apply().stdout  # z-1's, found again
    records = state(work)
    [volc] = work.sim.tasks("volcengine", state="running")
    assert volc["interval"] == 9 and records["v-1"]["status"] == "running"
    # (Updated by the apply killed at ZEGO's find too, when its update went out first: then sent again.)
    assert len(work.sim.requests("StopSnapshot")) == 0 and len(work.sim.requests("UpdateSnapshot")) in (1, 2)
    [zego] = work.sim.tasks("zego", state="running")
    assert zego["maxIdleTime"] == 40 and zego["taskId"] == records["z-1"]["vendor_task_id"]
    assert len(work.sim.tasks("zego")) == 2  # the first recording, found and stopped, and the new one


def test_replace_of_a_replace_cut_short_stops_what_its_start_began_and_starts_again(work: Workdir) -> None:
    """A replace killed after its start reached the vendor (its stop done, its start never confirmed), then
    asked for again with `--replace`: the run that start began was taken up (Volcengine: "already started",
    ZEGO: its ClientTaskId) and went on; a restart needed a second --replace. As Terraform's -replace, one
    --replace stops whatever may run and starts it again, and the plan says so."""
    v, z = "SnapshotJob/v/v-1", "RecordingJob/z/z-1"
    write(work, {"v.yaml": snapshot_job("v", ["v-1"], idle=300), "z.yaml": recording_job("z", ["z-1"], idle=300)})
    in_process(work, "apply", "--auto-approve")
    write(work, {"v.yaml": snapshot_job("v", ["v-1"], idle=240), "z.yaml": recording_job("z", ["z-1"], idle=240)})
    crash(work, "start.after-call", "apply", "--auto-approve", "--target", v)
    crash(work, "start.after-call", "apply", "--auto-approve", "--target", z)
    out = in_process(work, "apply", "--auto-approve", "--replace", v, "--replace", z)
    assert (
        "replace requested; the start of a replace (its old run stopped) was never confirmed: stopped by the "
        "RoomId + TaskId it was started with (if it runs), then started anew" in out
    ), out
    assert "found by its recorded ClientTaskId (a StartRecord: ZEGO answers with that recording" in out, out
    assert "already running" not in out, out
    assert len(work.sim.requests("StopSnapshot")) == 2  # the first replace's, and this one's
    assert len(work.sim.tasks("zego")) == 3  # the first run, the one the cut-short start began, the new one
    records = state(work)
    for room in ("v-1", "z-1"):
        [run] = [t for t in work.sim.tasks(state="running") if t["roomId"] == room]
        assert (run["maxIdleTime"], run["taskId"]) == (240, records[room]["vendor_task_id"]), (run, records[room])
        assert records[room]["status"] == "running"


def start_daemon(work: Workdir, point: str | None = None) -> tuple[subprocess.Popen[str], ServerOutput]:
    return work.run_daemon("--resync", "1s", "--prune-grace", "0s", env={"CAPCTL_FAILPOINTS": point} if point else None)


def test_a_daemon_takes_up_a_killed_apply_and_is_killed_in_its_prune_then_resolves_both(work: Workdir) -> None:
    """The daemon adopts the intents of an apply killed in its first start, is killed in its own first stop
    (a prune or a replace's), and the next daemon resolves it all."""
    set_up(work)
    crash(work, "start.after-call", "apply", "--auto-approve", "--parallelism", "1")
    daemon, log = start_daemon(work, "stop.after-call")
    assert daemon.wait(timeout=60) == 137, log.text()
    daemon, log = start_daemon(work)
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                check_converged(work, work.sim)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert daemon.returncode == 0, log.text()


def test_a_start_the_vendor_refused_is_not_looked_for_when_its_spec_changes(work: Workdir) -> None:
    """A refused start (here a wrong serverSecret) started nothing: a later replace must not look for it by its
    ClientTaskId, which would start a recording only to stop it."""
    write(work, {"z.yaml": recording_job("z", ["z-1"], idle=30)})
    work.capctl("apply", "--auto-approve", env={"ZEGO_SECRET": "f" * 32}, expect=1)
    write(work, {"z.yaml": recording_job("z", ["z-1"], idle=40)})
    assert "never confirmed" not in work.apply().stdout
    [task] = work.sim.tasks("zego")
    assert task["maxIdleTime"] == 40 and task["state"] == "running"


def test_a_resumed_start_the_vendor_refused_still_finds_the_first_when_its_spec_changes(work: Workdir) -> None:
    """Killed after ZEGO started the recording, then resumed under its ClientTaskId by an apply ZEGO refused (a
    wrong serverSecret): the refusal says that try started nothing, not that the first did not. The ClientTaskId
    was dropped all the same, so the spec's next change started a second recording and left the first running
    unnamed (until its idle timeout); it is found by that id and stopped."""
    write(work, {"z.yaml": recording_job("z", ["z-1"], idle=30)})
    crash(work, "start.after-call", "apply", "--auto-approve")
    work.capctl("apply", "--auto-approve", env={"ZEGO_SECRET": "f" * 32}, expect=1)
    write(work, {"z.yaml": recording_job("z", ["z-1"], idle=40)})
    assert "spec changed since a start that" in work.apply().stdout
    [zego] = work.sim.tasks("zego", state="running")
    assert zego["maxIdleTime"] == 40 and zego["taskId"] == state(work)["z-1"]["vendor_task_id"]


def test_an_update_sent_again_and_refused_stays_unconfirmed(work: Workdir) -> None:
    """Killed after UpdateSnapshot took interval 7, the spec reverted to 5: the update of 5 goes out again. Refused
    (a wrong secretKey), it changed nothing, but the vendor may still hold 7: the mark stays, and the next apply
    sends 5 (it said "No changes" while the vendor ran 7)."""
    write(work, {"v.yaml": snapshot_job("v", ["v-1"], interval=5)})
    work.apply()
    write(work, {"v.yaml": snapshot_job("v", ["v-1"], interval=7)})
    crash(work, "update.after-call", "apply", "--auto-approve")
    write(work, {"v.yaml": snapshot_job("v", ["v-1"], interval=5)})
    refused = work.capctl("apply", "--auto-approve", "--no-refresh", env={"VOLC_SK": "wrong"}, expect=1)
    assert "UpdateSnapshot: SignatureDoesNotMatch" in refused.stdout
    assert "an earlier update was not confirmed" in work.apply().stdout
    [volc] = work.sim.tasks("volcengine", state="running")
    assert volc["interval"] == 5


def test_a_replace_of_a_lost_start_killed_after_its_stop_starts_under_restart_policy_never(work: Workdir) -> None:
    """A Never job's start cut short (never confirmed), then `apply --replace` killed after its stop: the stop
    ended what that start began (49A-1 marks it so), and the next apply left it `stopped; restartPolicy Never`:
    the replace asked for never started (walk 50a)."""
    key = "SnapshotJob/v/v-1"
    write(work, {"v.yaml": snapshot_job("v", ["v-1"], idle=300, restart="Never")})
    crash(work, "start.after-call", "apply", "--auto-approve")
    crash(work, "stop.after-commit", "apply", "--auto-approve", "--replace", key)
    assert work.sim.tasks(state="running") == []
    out = in_process(work, "apply", "--auto-approve")
    assert "a replace was cut short after its stop (interrupted): its old run stopped, started anew" in out, out
    [run] = work.sim.tasks(state="running")
    assert (state(work)["v-1"]["status"], run["taskId"]) == ("running", state(work)["v-1"]["vendor_task_id"])
