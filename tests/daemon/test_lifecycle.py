"""Lifecycle: the state lock, restart resume (observe before acting), and a real process on signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from reconciler.daemon.lease import Lease
from reconciler.daemon.main import run_daemon
from reconciler.model import TaskStatus
from reconciler.state.base import LockHeld
from reconciler.state.sqlite import SQLiteStateStore
from tests.daemon.conftest import SIM, Harness, write_specs
from tests.servers import daemon_output, sim_output
from tests.specdocs import recording_job, snapshot_job, thumbnail_job

LOBBY, CLASS = "SnapshotJob/audit/lobby", "RecordingJob/rec/class-1"


async def test_the_daemon_holds_the_state_lock(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    other = SQLiteStateStore(harness.state_path)
    try:
        with pytest.raises(LockHeld, match="capctl run"):
            other.lock("capctl apply")
    finally:
        other.close()


async def test_restart_observes_before_acting_and_never_restarts_a_running_task(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]), recording_job("rec", ["class-1"]))
    harness.sim.publish("volcengine", "lobby", user_id="u")
    harness.sim.publish("zego", "class-1", stream_id="s")
    await harness.start()
    await harness.advance(5)
    zego_id = harness.record(CLASS).vendor_task_id
    await harness.stop()
    await harness.advance(60)  # nobody watching; the tasks keep running at the vendor
    starts = harness.calls("StartSnapshot") + harness.calls("StartRecord")
    await harness.start()
    await harness.advance(1)
    assert harness.calls("StartSnapshot") + harness.calls("StartRecord") == starts
    assert harness.calls("GetSnapshotTask") >= 1 and harness.calls("DescribeRecordStatus") >= 1
    assert harness.record(CLASS).vendor_task_id == zego_id
    assert len(harness.running_sim_tasks()) == 2


async def test_restart_resumes_an_interrupted_start_without_a_second_recording(harness: Harness) -> None:
    write_specs(harness.specs, recording_job("rec", ["class-1"]))
    harness.sim.publish("zego", "class-1", stream_id="s")
    daemon = await harness.start()
    await harness.advance(2)
    # Simulate a crash between the vendor's answer and the commit: the record is back to its intent.
    record = harness.record(CLASS)
    daemon.records.put(record.evolve(status=TaskStatus.PENDING, vendor_task_id=None))
    await harness.stop()
    await harness.start()
    await harness.advance(2)
    assert len(harness.running_sim_tasks("zego")) == 1
    assert harness.record(CLASS).vendor_task_id == record.vendor_task_id  # found through its ClientTaskId


async def test_a_restart_after_a_vendor_stop_reissues_once(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20))
    await harness.start()
    await harness.advance(1)
    await harness.stop()
    await harness.advance(40)  # idled out while no daemon ran
    await harness.start()
    await harness.advance(1)
    assert harness.record(LOBBY).reissue_count == 1
    assert len(harness.running_sim_tasks()) == 1


def wait_http(url: str, *, status: int = 200, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = httpx.get(url, timeout=1.0)
            if answer.status_code == status:
                return answer
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer {status} within {timeout} s")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_real_process_stops_gracefully_on_signals_and_reloads_on_sighup(tmp_path: Path, sig: int) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    sim = subprocess.Popen(
        [sys.executable, "-c", "from reconciler.sim.app import serve; serve('127.0.0.1:0')"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    daemon = None
    try:
        sim_base = sim_output(sim).url()
        specs = tmp_path / "specs"
        write_specs(specs, snapshot_job("audit", ["lobby"], idle=600))
        providers = (specs / "providers.yaml").read_text().replace(SIM, sim_base)
        (specs / "providers.yaml").write_text(providers)
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler.daemon",
                str(specs),
                "--listen",
                "127.0.0.1:0",
                "--state",
                f"sqlite:///{tmp_path / 'state.db'}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        log = daemon_output(daemon)
        wait_http(log.url() + "/readyz")
        base = f"{sim_base}/_sim/tasks"
        deadline = time.monotonic() + 60
        while not [t for t in httpx.get(base).json()["tasks"] if t["state"] == "running"]:
            assert time.monotonic() < deadline, "the daemon started no task"
            time.sleep(0.05)
        (specs / "jobs.yaml").write_text(snapshot_job("audit", ["lobby", "vip"], idle=600))
        daemon.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while len([t for t in httpx.get(base).json()["tasks"] if t["state"] == "running"]) < 2:
            assert time.monotonic() < deadline, "SIGHUP did not reload the specs"
            time.sleep(0.05)
        daemon.send_signal(sig)
        daemon.wait(timeout=15)
        stderr = log.text()
        assert daemon.returncode == 0, stderr[-2000:]
        assert '"event": "daemon stopped"' in stderr
        running = [t for t in httpx.get(base).json()["tasks"] if t["state"] == "running"]
        assert len(running) == 2  # stopping capctl never stops a capture
        assert "capctl-sim-volc-secret" not in stderr and "capctl-sim-volc-callback" not in stderr
    finally:
        for proc in (daemon, sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--resync", "0"], "--resync must be positive, got 0s"),  # `capctl run --resync 0`'s very words
        (["--read-timeout", "0"], "--read-timeout must be positive, got 0s"),
        (["--max-prune", "150"], "--max-prune must be a percentage from 0 to 100, got 150"),
        (["--listen", "nohost"], "--listen: expected HOST:PORT (e.g. 127.0.0.1:8080 or 0.0.0.0:8080; port 0 picks"),
    ],
)
def test_the_daemons_own_entry_point_refuses_a_bad_option_with_a_log_line(
    tmp_path: Path, args: list[str], error: str
) -> None:
    """`python -m reconciler.daemon` (docs/daemon.md, for debugging) skips the CLI's checks: run_daemon's own
    refuse the value, exit 1, and write one error event naming the option, before any state or socket."""
    command = [sys.executable, "-m", "reconciler.daemon", *args, "--state", f"sqlite:///{tmp_path / 'state.db'}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert '"event": "bad option"' in line and error in line
    assert list(tmp_path.iterdir()) == []


async def test_thumbnail_results_reaching_the_daemon_are_answered_and_change_nothing(harness: Harness) -> None:
    """docs/spec-language.md (ThumbnailJob): MediaThumbnails' result callback (`event: snapshot`), sent to the
    daemon's /callbacks/zego, is verified and answered 200 (no retries from ZEGO) and nothing of it is kept."""
    write_specs(harness.specs, thumbnail_job(tencent=False))
    await harness.start()
    await harness.advance(1)
    key = "ThumbnailJob/thumbs//record/a.mp4"
    submitted = harness.record(key)
    assert submitted.status is TaskStatus.DONE
    await harness.advance(10)  # the simulator sends the result 2 s after the submission
    [result] = [d for d in harness.sim.callbacks.log if d["event"] == "snapshot"]
    assert (result["status"], result["body"]["task_id"]) == (200, submitted.vendor_task_id)
    assert harness.record(key) == submitted and harness.calls("MediaThumbnails") == 1


@pytest.mark.parametrize("then_stopped", [False, True], ids=["reload", "sigterm-too"])
def test_a_sighup_while_the_daemon_starts_reads_the_specs_again_once_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then_stopped: bool
) -> None:
    """Walk 37a-2: the start reads the specs, then takes the lock and reads the state (seconds at 100,000 tasks);
    a SIGHUP sent then with an edit (a config reloader as the pod starts) was answered `the specs are read once the
    daemon starts`, though they had been, and the watcher, which starts after, never saw the edit either. A SIGTERM
    after it stops the daemon as it starts, with no reload."""
    specs = tmp_path / "specs"

    def selecting(name: str) -> str:  # a room selector, no room active: no vendor call for the stop to wait for
        return snapshot_job(name, ["x"]).replace("rooms: [x]", f"rooms: {{match: '{name}-*'}}")

    write_specs(specs, selecting("live"))
    taken = Lease.take

    async def take(self: Lease, *, lead: bool) -> None:  # the specs were just read: edit them and send SIGHUP
        (specs / "jobs.yaml").write_text(selecting("live") + "---\n" + selecting("vip"))
        os.kill(os.getpid(), signal.SIGHUP)
        if then_stopped:
            os.kill(os.getpid(), signal.SIGTERM)
        await taken(self, lead=lead)

    monkeypatch.setattr(Lease, "take", take)

    def loaded(logs: list[MutableMapping[str, Any]]) -> list[Any]:
        return [line["summary"] for line in list(logs) if line["event"] == "spec set loaded"]

    def stop_once_reloaded(logs: list[MutableMapping[str, Any]]) -> None:  # SIGTERM once reloaded, or 5 s without it
        deadline = time.monotonic() + 5
        while len(loaded(logs)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    with capture_logs() as logs:
        stopper = threading.Thread(target=stop_once_reloaded, args=(logs,))
        if not then_stopped:  # (only while the daemon runs: after, SIGTERM's default action would end pytest)
            stopper.start()
        state = f"sqlite:///{tmp_path / 'state.db'}"
        code = run_daemon([str(specs)], listen="127.0.0.1:0", state_url=state, log_level=None)
        if not then_stopped:
            stopper.join()
    assert code == 0
    summaries = loaded(logs)  # 1 job, then 2
    if then_stopped:
        assert len(summaries) == 1 and not any("re-reading" in line["event"] for line in logs), logs
    else:
        assert len(summaries) == 2 and summaries[0] != summaries[1], summaries
