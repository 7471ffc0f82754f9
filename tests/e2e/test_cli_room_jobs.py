"""Issue 18 end to end with real processes: `capctl sim --scenario` plays room traffic and sends its room
callbacks to a `capctl run` daemon, whose room-selector job starts each matching room as it becomes active;
the simulator's own coverage report (ground truth) says which rooms were captured, and how often started."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Sim, Workdir
from tests.servers import daemon_output, sim_output
from tests.specdocs import STORAGE, providers, selector_job

SCENARIO = """\
seed: 18
vendor: volcengine
duration: 25
rooms: 3
room_prefix: class-
first_session_within: 4
gap: {min: 1000, max: 1000}
session_length: {min: 15, max: 15}
jobs: [classes]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_selector_job_captures_each_matching_room_of_a_scenario_once(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    coverage = tmp_path / "coverage.json"
    sim_proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "reconciler", "sim", "--listen", "127.0.0.1:0"),
            *("--volcengine-callback-url", f"http://127.0.0.1:{port}/callbacks/volcengine"),
            *("--scenario", str(tmp_path / "scenario.yaml"), "--coverage-out", str(coverage)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sim_out = sim_output(sim_proc)
    work = Workdir(tmp_path, Sim(sim_out.url()))
    work.write("providers.yaml", providers(work.sim.base, callbacks=True))
    work.write("storage.yaml", STORAGE)
    work.write("jobs.yaml", selector_job("classes", "class-*", exclude="class-0002"))
    daemon = work.spawn("run", "--listen", f"127.0.0.1:{port}", "--resync", "5s", stdout=subprocess.DEVNULL)
    log = daemon_output(daemon)
    try:
        log.url()
        assert sim_proc.wait(timeout=90) == 0, sim_out.text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        if sim_proc.poll() is None:
            sim_proc.kill()
            sim_proc.wait()
    assert daemon.returncode == 0, log.text()
    runs = {
        room["roomId"]: [(j["runs"], j["streamSecondsCaptured"]) for j in room["jobs"] if j["job"] == "classes"]
        for room in json.loads(coverage.read_text())["rooms"]
    }
    (started_0,), (started_1,), (excluded,) = runs["class-0000"], runs["class-0001"], runs["class-0002"]
    assert started_0[0] == 1 and started_0[1] > 0  # started once, as its first stream appeared
    assert started_1[0] == 1 and started_1[1] > 0
    assert excluded[0] == 0  # excluded: never started
    listed = work.capctl("state", "list").stdout
    assert "SnapshotJob/classes/class-0000" in listed and "SnapshotJob/classes/class-0002" not in listed
    assert '"event": "room activity: selector tasks changed"' in log.text()
