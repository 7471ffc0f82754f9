"""Issue 16 end to end: several `capctl run` replicas on one PostgreSQL state, as real processes.

Each replica calls the simulator under its own caller prefix (`/as/<name>/`, through the endpoint
reference the providers read), so `GET /_sim/requests?caller=NAME` tells whose calls they were. Short
leader-election timings (`--lease-duration 6s --renew-deadline 4s --retry-period 1s`) keep the waits short;
the defaults' timing is measured by bench/failover.py. Every wait is on the event itself (a /readyz answer, a
task at the simulator, a log line), bounded generously for a loaded machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from reconciler.state import open_state
from tests.e2e.conftest import Workdir
from tests.servers import ServerOutput
from tests.specdocs import providers, recording_job, snapshot_job
from tests.state.conftest import pg_url  # noqa: F401  (the replicas share the suite's PostgreSQL)

# A renew deadline of 4 s leaves room for a busy test machine (a starved leader would step down).
PRODUCTIVE = 7.5  # seconds of real time a run with idleTimeout 5s lasts to be productive (5 s + the 2 s margin)
TIMINGS = ("--lease-duration", "6s", "--renew-deadline", "4s", "--retry-period", "1s")
MUTATING = ("StartSnapshot", "UpdateSnapshot", "StopSnapshot")
ROOMS = [f"r{i}" for i in range(4)]


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[str]
    log: ServerOutput
    http: httpx.Client

    def ready(self) -> tuple[int, str]:
        try:
            answer = self.http.get("/readyz")
        except httpx.TransportError:
            return 0, ""
        return answer.status_code, answer.text

    def leads(self) -> bool:
        return self.ready()[1].startswith("ready (leader")

    def events(self, name: str) -> list[dict[str, object]]:
        found = []
        for line in list(self.log.lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == name:
                found.append(entry)
        return found


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def replicas(work: Workdir, pg_url: str) -> Iterator[Callable[..., Replica]]:  # noqa: F811
    """Start replicas on the PostgreSQL state; each calls the simulator as its own caller."""
    work.env["CAPCTL_STATE"] = pg_url
    work.write("providers.yaml", providers(work.sim.base).replace(f"{work.sim.base}/volc", "{env: VOLC_ENDPOINT}"))
    started: list[Replica] = []

    def start(name: str, *args: str, specs: Path | None = None, env: dict[str, str] | None = None) -> Replica:
        env = {"VOLC_ENDPOINT": f"{work.sim.base}/as/{name}/volc", **(env or {})}
        paths = [str(specs)] if specs is not None else []
        proc, log = work.run_daemon(*paths, "--resync", "1s", *TIMINGS, *args, env=env)
        replica = Replica(name, proc, log, httpx.Client(base_url=log.url(), timeout=5))
        started.append(replica)
        wait_for(f"{name} to be ready", lambda: replica.ready()[0] == 200)
        return replica

    yield start
    for replica in started:
        if replica.proc.poll() is None:
            replica.proc.send_signal(signal.SIGCONT)
            replica.proc.send_signal(signal.SIGTERM)
            replica.proc.wait(timeout=30)
        replica.http.close()


def mutating_calls(work: Workdir, caller: str) -> list[dict[str, object]]:
    return [e for e in work.sim.get("/requests", caller=caller, limit=10000)["requests"] if e.get("api") in MUTATING]


def starts_by_room(work: Workdir) -> Counter[str]:
    return Counter(str(t["roomId"]) for t in work.sim.tasks("volcengine", state="running"))


def streamed_then_left(work: Workdir, rooms: list[str], seconds: float) -> None:
    """Someone streams in each room for `seconds` of vendor time, then leaves: each run idles out one idle
    timeout later, a productive run (longer than its idle timeout), which the daemon re-issues at once.
    The daemon reads a run's length from the vendor's StartTime and EndTime, never longer than it has seen
    it run on its own clock (docs/daemon.md, "Two clocks"): the fake clock jumps, so the caller keeps each
    run going for its idle timeout + 2 s of real time as well (`PRODUCTIVE`); else unproductive runs back off."""
    for room in rooms:
        work.sim.publish("volcengine", room, userId="host")
    behind = time.time() - float(work.sim.get("/clock")["now"])
    work.sim.advance(max(0.0, behind) + seconds)
    for room in rooms:
        work.sim.unpublish("volcengine", room, userId="host")


def test_replicas_killed_in_turn_each_standby_takes_over_and_reissues_once(
    work: Workdir, replicas: Callable[..., Replica]
) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ROOMS, idle="5s"))
    first = replicas("a")
    wait_for("a to lead", first.leads)
    wait_for("the tasks to run", lambda: starts_by_room(work) == Counter(ROOMS))
    running_since = time.monotonic()
    standbys = [replicas("b"), replicas("c")]
    for standby in standbys:
        status, text = standby.ready()
        assert status == 200 and "standby: the leader is" in text and "capctl run on" in text
        assert "capctl_leader 0.0" in standby.http.get("/metrics").text
    assert "capctl_leader 1.0" in first.http.get("/metrics").text
    leader, epoch = first, 1
    for _ in range(2):
        streamed_then_left(work, ROOMS, 30)  # productive runs: each is re-issued at once (two idle ones back off)
        time.sleep(max(0.0, running_since + PRODUCTIVE - time.monotonic()))
        leader.proc.kill()  # kill -9: no resign, the lease lapses by itself
        leader.proc.wait(timeout=10)
        work.sim.advance(21)  # meanwhile every task idles out at the vendor (everyone left)
        wait_for("a standby to lead", lambda: any(r.leads() for r in standbys))
        leader = next(r for r in standbys if r.leads())
        standbys.remove(leader)
        became = leader.events("became leader")[-1]["epoch"]
        assert isinstance(became, int) and became > epoch  # a new term, with a higher epoch
        epoch = became
        try:
            wait_for("the re-issues", lambda: starts_by_room(work) == Counter(ROOMS))
        except AssertionError:
            raise AssertionError("".join(list(leader.log.lines)[-60:])) from None
        running_since = time.monotonic()
        time.sleep(2)  # a few more resyncs: nothing is started twice
        assert starts_by_room(work) == Counter(ROOMS)
        starts = [e for e in mutating_calls(work, leader.name) if e["api"] == "StartSnapshot"]
        assert len(starts) == len(ROOMS)  # each idled-out task re-issued once, by the new leader
        for other in standbys:
            assert mutating_calls(work, other.name) == []  # a standby changes nothing
    metrics = leader.http.get("/metrics").text
    assert f"capctl_leader_epoch {epoch}.0" in metrics and "capctl_leader 1.0" in metrics
    assert "capctl_leadership_changes_total 0.0" not in metrics
    # apply and state rm still fail at once, naming the holder.
    env = {"VOLC_ENDPOINT": f"{work.sim.base}/volc"}
    for command in (("apply", "--auto-approve"), ("state", "rm", "SnapshotJob/audit/r0")):
        refused = " ".join(work.capctl(*command, env=env, expect=1).stderr.split())
        assert "holds the state lock" in refused and "capctl run on" in refused


def test_a_leader_paused_past_its_lease_makes_no_call_after_it_resumes(
    work: Workdir, replicas: Callable[..., Replica]
) -> None:
    """SIGSTOP the leader; the standby, whose newer spec set removed a job, takes over and stops that job's
    task; SIGCONT: the old leader (still holding the older set) stands by and calls nothing."""
    work.write("jobs.yaml", snapshot_job("keep", ["k1"], idle="180s"))
    work.write("gone.yaml", snapshot_job("gone", ["g1"], idle="180s"))
    newer = work.root / "specs-newer"
    shutil.copytree(work.specs, newer)
    (newer / "gone.yaml").unlink()
    old = replicas("old", "--max-prune", "100", "--prune-grace", "0s")
    wait_for("old to lead", old.leads)
    wait_for("both tasks to run", lambda: starts_by_room(work) == Counter(["k1", "g1"]))
    new = replicas("new", "--max-prune", "100", "--prune-grace", "0s", specs=newer)
    assert "standby" in new.ready()[1]
    old.proc.send_signal(signal.SIGSTOP)
    paused_calls = len(mutating_calls(work, "old"))
    wait_for("new to lead", new.leads)
    wait_for("the removed job's task to stop", lambda: starts_by_room(work) == Counter(["k1"]))
    digest = new.events("spec set loaded")[-1]["digest"]
    assert new.events("took over: state read again; acting")[-1]["spec_digest"] == digest
    old.proc.send_signal(signal.SIGCONT)
    wait_for("old to step down", lambda: bool(old.events("lost leadership")))
    lost = old.events("lost leadership")[-1]
    assert lost["reason"] in ("renew deadline passed", "lost to another holder"), lost
    time.sleep(3)  # several of its resyncs and retry periods
    assert len(mutating_calls(work, "old")) == paused_calls  # not one call after it resumed
    assert starts_by_room(work) == Counter(["k1"])  # the removed job stays stopped
    assert "standby" in old.ready()[1]


def test_a_leader_killed_between_a_start_and_its_commit_leaves_the_new_leader_one_recording(
    work: Workdir, replicas: Callable[..., Replica]
) -> None:
    """The leader's ZEGO start reached the vendor and it died before recording the answer: the standby that takes
    over resumes the intent under its ClientTaskId, and ZEGO answers with the same recording."""
    work.write("jobs.yaml", recording_job("rec", ["class-1"], idle="180s"))
    first = replicas("a", env={"CAPCTL_FAILPOINTS": "start.after-call:pause"})
    wait_for("a's start to reach ZEGO", lambda: len(work.sim.tasks("zego", state="running")) == 1)
    second = replicas("b")
    first.proc.kill()  # as kill -9 at that point
    first.proc.wait(timeout=10)
    wait_for("b to lead", second.leads)
    store = open_state(work.env["CAPCTL_STATE"])
    try:

        def recorded() -> str | None:
            return store.load().records["RecordingJob/rec/class-1"].vendor_task_id

        wait_for("b to record it", lambda: recorded() is not None)
        [task] = work.sim.tasks("zego")  # one recording ever
        assert recorded() == task["taskId"] and task["state"] == "running"
    finally:
        store.close()


def test_run_refuses_leader_timings_that_cannot_work(work: Workdir) -> None:
    bad = work.capctl("run", "--lease-duration", "10s", "--renew-deadline", "10s", expect=1).stderr
    assert "--renew-deadline (10 s) must be below --lease-duration (10 s)" in " ".join(bad.split())
    assert "--retry-period" in work.capctl("run", "--retry-period", "soon", expect=1).stderr


def test_a_second_daemon_on_one_sqlite_file_waits_as_a_standby(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"], idle="180s"))
    first, first_log = work.run_daemon(*TIMINGS)
    second, second_log = work.run_daemon(*TIMINGS)
    try:
        with httpx.Client(base_url=first_log.url(), timeout=5) as a, httpx.Client(base_url=second_log.url()) as b:
            wait_for("a leader", lambda: "leader" in a.get("/readyz").text or "leader" in b.get("/readyz").text)
            texts = sorted([a.get("/readyz").text, b.get("/readyz").text])
            assert texts[0].startswith("ready (leader, epoch") and texts[1].startswith("ready (standby")
            leader, standby = (first, second) if "leader," in a.get("/readyz").text else (second, first)
            standby_http = b if standby is second else a
            leader.send_signal(signal.SIGTERM)  # resigns: the standby leads within a retry period
            leader.wait(timeout=30)
            wait_for("the standby to lead", lambda: standby_http.get("/readyz").text.startswith("ready (leader"))
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)


class OwnPostgres:
    """A PostgreSQL cluster of this test's own, started as .ci/postgres.sh starts the suite's, so that
    the test can stop it (an outage) and start it again on the same port."""

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
        if not found:
            pytest.skip("PostgreSQL is not installed (.ci/postgres.sh installs it)")
        self.bin = found[-1].parent
        # Not under pytest's tmp_path: its parents are private to this user, and the server runs as postgres.
        self.dir = Path(tempfile.mkdtemp(prefix="capctl-pg-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._owner([str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust"])

    def _owner(self, command: list[str]) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run(prefix + command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        log = str(self.dir / "server.log")
        self._owner([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-l", log, "-o", options, "-w", "start"])

    def stop(self) -> None:
        self._owner([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    try:
        pg.start()
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop()
        shutil.rmtree(pg.dir, ignore_errors=True)


def test_postgres_down_for_30s_no_replica_acts_then_one_leads_again(
    work: Workdir, replicas: Callable[..., Replica], own_pg: OwnPostgres
) -> None:
    work.env["CAPCTL_STATE"] = own_pg.url
    work.write("jobs.yaml", snapshot_job("audit", ROOMS, idle="5s"))
    first = replicas("a")
    wait_for("a to lead", first.leads)
    wait_for("the tasks to run", lambda: starts_by_room(work) == Counter(ROOMS))
    second = replicas("b")
    calls = {r.name: len(mutating_calls(work, r.name)) for r in (first, second)}
    own_pg.stop()
    work.sim.advance(21)  # every task idles out at the vendor while no replica can write the state
    wait_for("both to say the store is unreachable", lambda: all(r.ready()[0] == 503 for r in (first, second)))
    # The first failure may be the open connection dying ("server closed the connection"), later ones refusals.
    assert "not ready" in first.ready()[1] and "the state store" in first.ready()[1]
    wait_for("the leader to step down", lambda: bool(first.events("lost leadership")))
    assert first.ready()[1].startswith("not ready (standby: the state store cannot be reached")
    lost = first.events("lost leadership")
    assert lost and lost[-1]["reason"] in ("database unreachable", "renew deadline passed"), lost
    time.sleep(30 - 5)  # down for 30 s in all
    assert {r.name: len(mutating_calls(work, r.name)) for r in (first, second)} == calls  # no one acted
    own_pg.start()
    # Its /readyz may say so a moment before its log line is read: wait for both, in a new term.
    wait_for(
        "a replica to lead again, at epoch 2 or later",
        lambda: any(
            r.leads() and any(int(str(e["epoch"])) >= 2 for e in r.events("became leader")) for r in (first, second)
        ),
    )
    wait_for("the re-issues", lambda: starts_by_room(work) == Counter(ROOMS))
    time.sleep(2)
    assert starts_by_room(work) == Counter(ROOMS)  # each started once: no double act
    reissued = sum(len(mutating_calls(work, r.name)) - calls[r.name] for r in (first, second))
    assert reissued == len(ROOMS)
