"""Issue 18 end to end with real processes: `capctl sim` plays a room-traffic scenario and sends its room
callbacks to a `capctl run` daemon, whose room-selector job starts each matching room as it becomes active;
the simulator's own coverage report (ground truth) says which rooms were captured, and how often started."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

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
    sim_proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "reconciler", "sim", "--listen", "127.0.0.1:0"),
            *("--volcengine-callback-url", f"http://127.0.0.1:{port}/callbacks/volcengine"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    work = Workdir(tmp_path, Sim(sim_output(sim_proc).url()))
    work.write("providers.yaml", providers(work.sim.base, callbacks=True))
    work.write("storage.yaml", STORAGE)
    work.write("jobs.yaml", selector_job("classes", "class-*", exclude="class-0002"))
    daemon = work.spawn("run", "--listen", f"127.0.0.1:{port}", "--resync", "5s", stdout=subprocess.DEVNULL)
    log = daemon_output(daemon)
    try:
        log.url()  # it listens once its specs are loaded and it leads: ready for the first callback
        # The traffic starts only now: started with `--scenario`, the simulator played it from its own start,
        # and a daemon slow to start on a loaded machine missed the first room's 15 s session.
        work.sim.post("/scenario", yaml.safe_load(SCENARIO))
        began = time.monotonic()
        while not work.sim.get("/scenario")["finished"]:
            assert time.monotonic() - began < 120, "the 25 s scenario did not end"
            time.sleep(0.5)
        coverage = work.sim.get("/coverage")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        sim_proc.kill()
        sim_proc.wait()
    assert daemon.returncode == 0, log.text()
    runs = {
        room["roomId"]: [(j["runs"], j["streamSecondsCaptured"]) for j in room["jobs"] if j["job"] == "classes"]
        for room in coverage["rooms"]
    }
    (started_0,), (started_1,), (excluded,) = runs["class-0000"], runs["class-0001"], runs["class-0002"]
    assert started_0[0] == 1 and started_0[1] > 0  # started once, as its first stream appeared
    assert started_1[0] == 1 and started_1[1] > 0
    assert excluded[0] == 0  # excluded: never started
    listed = work.capctl("state", "list").stdout
    assert "SnapshotJob/classes/class-0000" in listed and "SnapshotJob/classes/class-0002" not in listed
    assert '"event": "room activity: selector tasks changed"' in log.text()


def test_a_volcengine_stream_start_starts_a_selected_room_whose_join_was_lost(tmp_path: Path) -> None:
    """A user's join, video start and audio start are three callbacks: with the join lost, the first stream
    start to arrive starts the room (the room-listing resync, 60 s here, would be the only repair else)."""
    port = free_port()
    sim_proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "reconciler", "sim", "--listen", "127.0.0.1:0"),
            *("--volcengine-callback-url", f"http://127.0.0.1:{port}/callbacks/volcengine"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    work = Workdir(tmp_path, Sim(sim_output(sim_proc).url()))
    work.write("providers.yaml", providers(work.sim.base, callbacks=True))
    work.write("jobs.yaml", selector_job("classes", "class-*"))
    daemon = work.spawn("run", "--listen", f"127.0.0.1:{port}", "--resync", "60s", stdout=subprocess.DEVNULL)
    log = daemon_output(daemon)
    try:
        log.url()
        # Half the callbacks lost; with this seed the first of the three (the join) is one of them.
        assert work.sim.http.put("/callbacks/chaos", json={"loss": 0.5, "seed": 4}).status_code == 200
        work.sim.publish("volcengine", "class-1", userId="alice", streamType=0)
        published = time.monotonic()
        while not (tasks := work.sim.tasks("volcengine")) and time.monotonic() - published < 60:
            time.sleep(0.2)
        delivered = {d["body"]["EventType"] for d in work.sim.get("/callbacks")["deliveries"] if d["ok"]}
        assert delivered == {"UserVideoStreamStart", "UserAudioStreamStart"}, delivered  # the join was lost
        assert [(t["roomId"], t["state"]) for t in tasks] == [("class-1", "running")]  # before any listing
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        sim_proc.kill()
        sim_proc.wait()
    assert daemon.returncode == 0, log.text()
    assert '"event": "room activity: selector tasks changed"' in log.text()
