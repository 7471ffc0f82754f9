"""A model-based test of plan and apply: random spec edits, vendor events and commands, checked after each step.

Example tests check chosen cases; this one lets hypothesis choose sequences of them (jobs of both vendors
added, removed, renamed with their `taskId` kept, rooms moved, a Provider added and removed, ZEGO recordings
on both APIs, ThumbnailJobs; tasks idling out or stopped behind capctl's back; throttling and lost answers;
plan, saved plans, `--target`, `-l`, `--replace`, `wake`, `state rm`, an apply killed at a failpoint) and
checks capctl's promise after each: a plan changes nothing, an apply does what the plan just before it showed,
and after a full apply the vendor runs exactly the declared tasks, each known to the state once. The CLI runs
in this process (typer's runner: the real command code, without a Python start per command); the vendor is a
real `capctl sim` over loopback HTTP, the state a real SQLite file.

"Runs the declared tasks" includes their settings (idle timeout, interval, maximum duration as the vendor
reports them). What the docs say waits is allowed to: a declared task that does not run is dormant, failed, or
stopped with a next attempt. Decided here: a saved plan is checked against the specs for the changes it makes
(an edit of a job it leaves unchanged does not make it stale); a ZEGO recording or a Volcengine run that `state rm`
forgot runs on unknown to capctl unless a start of a declared key takes it up again (docs: `state rm` stops nothing).

The simulator runs on a fake clock that starts at the real time, and vendor signatures must be within 10
minutes of it: one example moves it at most `ADVANCE_BUDGET`, and a new simulator is started once it runs
`MAX_DRIFT` ahead. CI runs 15 examples of 12 steps; `MODEL_EXAMPLES` and `MODEL_STEPS` search longer. Cases it
found are kept as plain regression tests: tests/e2e/test_cli_zego.py (a fake-clock simulator throttling for
ever) and tests/e2e/test_cli_volcengine.py (a forgotten run keeping old settings).
"""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from typer.testing import CliRunner, Result

from reconciler import failpoints
from reconciler.cli import app
from reconciler.plan import plan_from_json, plan_to_json
from tests.e2e.conftest import CANARY_AK, CANARY_SK, SIM_SECRETS, Sim
from tests.servers import sim_output
from tests.specdocs import STORAGE, providers

VOLC_ROOMS = ("r1", "r2", "r3", "r4")
ZEGO_ROOMS = ("z1", "z2", "z3")
TENCENT_FILE, HUAWEI_FILE = "1397757897438985100", "/record/a.mp4"  # a ThumbnailJob's "rooms": its files
THUMB_FILES = (TENCENT_FILE, HUAWEI_FILE)
NAMES = ("a", "b", "c", "d")
MAX_DRIFT = 150.0  # seconds the simulator's clock may run ahead of real time before it is replaced
ADVANCE_BUDGET = 400.0  # seconds one example may move it: ZEGO signatures allow 10 minutes of skew
# Where an apply may be killed (docs/failure-modes.md), by the planned action that passes there.
START_POINTS = ("start.before-call", "start.after-call", "start.after-commit")
STOP_POINTS = ("stop.after-call", "stop.after-commit")
KILL_POINTS = {
    "create": START_POINTS,
    "reissue": START_POINTS,
    "replace": (*STOP_POINTS, *START_POINTS, "find.after-call"),
    "delete": (*STOP_POINTS, "find.after-call"),
    "update": ("update.after-call",),
}
RESTARTED = "the vendor already ran it, with settings capctl had not recorded: stopped and started again"
MUTATING = {"StartSnapshot", "StopSnapshot", "UpdateSnapshot", "StartRecord", "StopRecord", "MediaThumbnails"}

EXTRA_STORAGE = """\
---
apiVersion: capctl/v1
kind: Storage
metadata: {name: tos2}
spec: {type: tos, accountId: "2100000000", region: 0, bucket: other}
---
apiVersion: capctl/v1
kind: Storage
metadata: {name: s3b}
spec:
  type: s3
  region: us-east-1
  bucket: recs-b
  accessKey: {env: S3_AK, default: AKS3}
  secretKey: {env: S3_SK, default: s3-secret}
"""


def second_volc_provider(base: str) -> str:
    """`volc-b`: another Provider document on the same Volcengine app (one app at the vendor)."""
    return f"""\
apiVersion: capctl/v1
kind: Provider
metadata: {{name: volc-b}}
spec:
  type: volcengine
  appId: capctl-sim-volc
  accessKey: {{env: VOLC_AK, default: AKCAPCTLSIM0000000001}}
  secretKey: {{env: VOLC_SK, default: capctl-sim-volc-secret}}
  endpoint: {base}/volc
"""


@dataclass(frozen=True)
class Job:
    """One job of the model: `volc` a Volcengine SnapshotJob, `rec` a ZEGO RecordingJob, `thumb` a ZEGO
    ThumbnailJob (its `rooms` are its files, `interval` the Huawei file's)."""

    kind: str
    provider: str
    rooms: tuple[str, ...]
    interval: int = 5
    idle: int = 20
    storage: str = "tos"
    labels: tuple[tuple[str, str], ...] = ()
    task_id: str | None = None
    max_duration: int = 86400

    def yaml(self, name: str) -> str:
        labels = ", ".join(f"{k}: {v}" for k, v in self.labels)
        head = f"apiVersion: capctl/v1\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n"
        rooms = ", ".join(self.rooms)
        if self.kind == "thumb":
            files = {
                TENCENT_FILE: f'    - {{cdn: tencent, fileId: "{TENCENT_FILE}", definition: 10, offsets: [1s, 2s]}}\n',
                HUAWEI_FILE: f"    - {{cdn: huawei, fileId: {HUAWEI_FILE}, interval: {self.interval}s}}\n",
            }
            listed = "".join(files[f] for f in self.rooms)
            return f"{head}kind: ThumbnailJob\nspec:\n  provider: {self.provider}\n  files:\n{listed}"
        if self.kind == "volc":
            task_id = f"\n  taskId: {self.task_id}" if self.task_id else ""
            return (
                f"{head}kind: SnapshotJob\nspec:\n  provider: {self.provider}\n  rooms: [{rooms}]\n"
                f"  interval: {self.interval}s\n  storage: {self.storage}\n  idleTimeout: {self.idle}s{task_id}\n"
            )
        return (
            f"{head}kind: RecordingJob\nspec:\n  provider: {self.provider}\n  rooms: [{rooms}]\n  mode: single\n"
            f"  storage: {self.storage}\n  outputFolder: record/\n  idleTimeout: {self.idle}s\n"
            f"  maxDuration: {self.max_duration}s\n"
        )

    def kind_name(self) -> str:
        return {"volc": "SnapshotJob", "rec": "RecordingJob", "thumb": "ThumbnailJob"}[self.kind]


class SimProcess:
    """`capctl sim --fake-clock` on loopback, replaced when its clock has run too far ahead of real time."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.sim: Sim | None = None

    def fresh(self) -> Sim:
        if self.sim is not None and self.sim.get("/clock")["now"] - time.time() < MAX_DRIFT:
            self.sim.post("/reset")
            return self.sim
        self.close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "sim", "--fake-clock", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.sim = Sim(sim_output(self.proc).url())
        return self.sim

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
            self.sim = None


@pytest.fixture(scope="module")
def sim_process() -> Iterator[SimProcess]:
    process = SimProcess()
    yield process
    process.close()


def vendor_room(entry: dict[str, Any]) -> tuple[str, str] | None:
    """The (vendor, room) a logged vendor call concerns, when its request names the room."""
    body = entry.get("body")
    room = (body if isinstance(body, dict) else {}).get("RoomId") or (entry.get("query") or {}).get("RoomId")
    return (entry["vendor"], room) if room else None


def wait_child(pid: int, *, timeout: float) -> int:
    """The exit code of a forked child; one still running after `timeout` is killed and fails the test (a fork
    of a process with threads, as a pytest-xdist worker has, could in theory deadlock: never hang CI on it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked apply did not end within {timeout} s")


class PlanApplyMachine(RuleBasedStateMachine):
    process: SimProcess

    def __init__(self) -> None:
        super().__init__()
        self.sim = self.process.fresh()
        self.root = Path(tempfile.mkdtemp(prefix="model-", dir=self.tmp))
        self.specs = self.root / "specs"
        (self.specs / "jobs").mkdir(parents=True)
        self.state = self.root / "state.db"
        self.env = {
            "CAPCTL_STATE": f"sqlite:///{self.state}",
            "CAPCTL_MAX_ATTEMPTS": "2",
            "S3_AK": CANARY_AK,
            "S3_SK": CANARY_SK,
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        (self.specs / "providers.yaml").write_text(providers(self.sim.base))
        (self.specs / "storage.yaml").write_text(STORAGE + EXTRA_STORAGE)
        self.jobs: dict[str, Job] = {}
        self.provider_b = False
        self.zego_orphans: set[str] = set()  # ZEGO recordings `state rm` made capctl forget: they run on, unknown
        # Volcengine runs (RoomId, TaskId) `state rm` made capctl forget: they run on, unknown, unless a declared
        # key starts the same task again ("the vendor tasks, if any, keep running", `state rm` says).
        self.volc_orphans: set[tuple[str, str]] = set()
        self.faulty = False  # a fault is switched on for the next apply
        self.advanced = 0.0
        self.log: list[str] = []

    tmp: str = ""

    # --- the CLI -----------------------------------------------------------------------------------------

    def invoke(self, *args: str) -> Result:
        result = CliRunner().invoke(app, list(args), env=self.env)
        gc.unfreeze()  # what plan or apply froze goes back to the collector (the CLI process would exit here)
        return result

    def capctl(self, *args: str) -> tuple[int, str]:
        result = self.invoke(*args)
        self.log.append(f"$ capctl {' '.join(args)} -> {result.exit_code}\n{result.output}")
        assert result.exit_code in (0, 1), result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    def stdout(self, *args: str) -> str:
        """What a read-only command prints on stdout (its notes go to stderr)."""
        result = CliRunner().invoke(app, list(args), env=self.env)
        assert result.exit_code == 0, result.output
        return result.stdout

    def records(self) -> dict[str, dict[str, Any]]:
        return {r["key"]: r for r in json.loads(self.stdout("state", "list", "-o", "json"))["tasks"]}

    def serial(self) -> int:
        return int(json.loads(self.stdout("state", "list", "-o", "json"))["serial"])

    def write_specs(self) -> None:
        for path in (self.specs / "jobs").glob("*.yaml"):
            path.unlink()
        for name, job in self.jobs.items():
            (self.specs / "jobs" / f"{name}.yaml").write_text(job.yaml(name))
        extra = self.specs / "provider-b.yaml"
        if self.provider_b:
            extra.write_text(second_volc_provider(self.sim.base))
        elif extra.exists():
            extra.unlink()

    def advance(self, seconds: float) -> bool:
        """Moves the simulator's clock, within the budget that keeps signatures valid."""
        if self.advanced + seconds > ADVANCE_BUDGET:
            return False
        self.advanced += seconds
        self.sim.advance(seconds)
        return True

    def mutating_calls(self) -> list[dict[str, Any]]:
        return [e for e in self.sim.requests() if e.get("api") in MUTATING]

    # --- declared tasks ----------------------------------------------------------------------------------

    def declared(self) -> dict[str, tuple[str, Job]]:
        return {
            f"{job.kind_name()}/{name}/{room}": (room, job) for name, job in self.jobs.items() for room in job.rooms
        }

    def free_rooms(self, kind: str) -> list[str]:
        taken = {r for j in self.jobs.values() if j.kind == kind for r in j.rooms}
        return [r for r in {"volc": VOLC_ROOMS, "rec": ZEGO_ROOMS, "thumb": THUMB_FILES}[kind] if r not in taken]

    def volc_task_ids(self) -> set[str]:
        return {job.task_id or name for name, job in self.jobs.items() if job.kind == "volc"}

    # --- spec edits --------------------------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES), kind=st.sampled_from(["volc", "rec", "thumb"]), data=st.data())
    def add_job(self, name: str, kind: str, data: st.DataObject) -> None:
        free = self.free_rooms(kind)
        if name in self.jobs or not free or (kind == "volc" and name in self.volc_task_ids()):
            return
        rooms = data.draw(st.lists(st.sampled_from(free), min_size=1, max_size=2, unique=True))
        if kind == "volc":
            provider = data.draw(st.sampled_from(["volc", "volc-b"] if self.provider_b else ["volc"]))
            self.jobs[name] = Job("volc", provider, tuple(rooms))
        elif kind == "thumb":
            self.jobs[name] = Job("thumb", "zego", tuple(rooms), interval=2)
        else:
            provider = data.draw(st.sampled_from(["zego", "zego-legacy"]))
            self.jobs[name] = Job("rec", provider, tuple(rooms), idle=30, storage="s3")
        self.write_specs()

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def remove_job(self, data: st.DataObject) -> None:
        del self.jobs[data.draw(st.sampled_from(sorted(self.jobs)))]
        self.write_specs()

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def change_job(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.jobs)))
        job = self.jobs[name]
        what = data.draw(
            st.sampled_from(["interval", "idle", "storage", "labels", "drop-room", "add-room", "max", "provider"])
        )
        if what == "interval" and job.kind != "rec":
            job = replace(job, interval=data.draw(st.sampled_from([2, 5, 10])))
        elif job.kind == "thumb" and what not in ("labels", "drop-room", "add-room"):
            pass  # a ThumbnailJob has no idle timeout, storage, maximum duration; one provider
        elif what == "idle":
            job = replace(job, idle=data.draw(st.sampled_from([20, 40] if job.kind == "volc" else [30, 60])))
        elif what == "storage":
            swap = {"tos": "tos2", "tos2": "tos", "s3": "s3b", "s3b": "s3"}
            job = replace(job, storage=swap[job.storage])
        elif what == "labels":
            job = replace(job, labels=data.draw(st.sampled_from([(), (("team", "x"),), (("team", "y"),)])))
        elif what == "max" and job.kind == "rec":
            job = replace(job, max_duration=300 if job.max_duration != 300 else 86400)
        elif what == "provider" and job.kind == "rec":
            job = replace(job, provider="zego" if job.provider == "zego-legacy" else "zego-legacy")
        elif what == "drop-room" and len(job.rooms) > 1:
            job = replace(job, rooms=job.rooms[1:])
        elif what == "add-room" and self.free_rooms(job.kind):
            job = replace(job, rooms=(*job.rooms, data.draw(st.sampled_from(self.free_rooms(job.kind)))))
        self.jobs[name] = job
        self.write_specs()

    @precondition(lambda self: any(j.kind == "volc" for j in self.jobs.values()))
    @rule(data=st.data())
    def rename_keeping_task_id(self, data: st.DataObject) -> None:
        old = data.draw(st.sampled_from(sorted(n for n, j in self.jobs.items() if j.kind == "volc")))
        new = data.draw(st.sampled_from(NAMES))
        if new in self.jobs:
            return
        job = self.jobs.pop(old)
        self.jobs[new] = replace(job, task_id=job.task_id or old)
        self.write_specs()

    @rule(data=st.data())
    def move_room(self, data: st.DataObject) -> None:
        pairs = [
            (a, b)
            for a, ja in self.jobs.items()
            for b, jb in self.jobs.items()
            if a != b and ja.kind == jb.kind and len(ja.rooms) > 1
        ]
        if not pairs:
            return
        src, dst = data.draw(st.sampled_from(pairs))
        room = self.jobs[src].rooms[0]
        self.jobs[src] = replace(self.jobs[src], rooms=self.jobs[src].rooms[1:])
        self.jobs[dst] = replace(self.jobs[dst], rooms=(*self.jobs[dst].rooms, room))
        self.write_specs()

    @rule(data=st.data())
    def toggle_provider_b(self, data: st.DataObject) -> None:
        """Adds `volc-b`, moves a job to it or back, or removes it (with its jobs, or with them kept, or moved
        to `volc` in the same edit: the same account, so their tasks move without a stop)."""
        if not self.provider_b:
            self.provider_b = True
        else:
            on_b = sorted(n for n, j in self.jobs.items() if j.provider == "volc-b")
            choice = data.draw(st.sampled_from(["remove", "remove-with-jobs", "move", "fold"]))
            if choice == "move" and any(j.kind == "volc" for j in self.jobs.values()):
                name = data.draw(st.sampled_from(sorted(n for n, j in self.jobs.items() if j.kind == "volc")))
                job = self.jobs[name]
                self.jobs[name] = replace(job, provider="volc" if job.provider == "volc-b" else "volc-b")
            elif choice == "fold":
                for name in on_b:
                    self.jobs[name] = replace(self.jobs[name], provider="volc")
                self.provider_b = False
            elif choice == "remove-with-jobs" or not on_b:
                for name in on_b:
                    del self.jobs[name]
                self.provider_b = False
            else:
                # Jobs keep naming volc-b: an invalid set; put the provider back at once so the model stays valid.
                self.provider_b = False
                self.write_specs()
                self.expect_invalid()
                self.provider_b = True
        self.write_specs()

    def expect_invalid(self) -> None:
        """An invalid spec set: plan and apply fail, call no vendor API and write nothing."""
        before_calls, before_serial = len(self.sim.requests()), self.serial()
        for args in (("plan", str(self.specs)), ("apply", "--auto-approve", str(self.specs))):
            code, out = self.capctl(*args)
            assert code == 1, out
            assert "nothing was changed" in out, out
        assert len(self.sim.requests()) == before_calls
        assert self.serial() == before_serial

    @rule(bad=st.sampled_from(["interval: 0s", "rooms: [r1, r1]", "storage: nowhere", 'interval: "5"']))
    def invalid_edit(self, bad: str) -> None:
        """A job document with one wrong field, beside the valid ones."""
        key = bad.split(":", 1)[0]
        text = re.sub(rf"^  {key}: .*$", f"  {bad}", Job("volc", "volc", ("r9",)).yaml("zz-bad"), flags=re.M)
        path = self.specs / "jobs" / "zz-bad.yaml"
        path.write_text(text)
        self.expect_invalid()
        path.unlink()

    # --- vendor-side events ------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([21, 31, 61, 301]))
    def time_passes(self, seconds: int) -> None:
        """Nobody publishes in these rooms: tasks whose idle timeout has passed end at the vendor."""
        self.advance(seconds)

    @rule(data=st.data())
    def stopped_behind_our_back(self, data: st.DataObject) -> None:
        running = [t for t in self.sim.tasks(state="running")]
        if not running:
            return
        task = data.draw(st.sampled_from(running))
        body: dict[str, Any] = {"vendor": task["vendor"], "taskId": task["taskId"]}
        if task["vendor"] == "volcengine":
            body["roomId"] = task["roomId"]
        self.sim.post("/tasks/stop", body)

    @rule(
        fault=st.sampled_from(
            [
                {"throttleNext": 2},
                {"dropRate": 1.0, "phase": "after", "apis": ["StartSnapshot"], "seed": 1},
                {"dropRate": 1.0, "phase": "after", "apis": ["StartRecord"], "seed": 1},
                {"errorRate": 1.0, "apis": ["StopSnapshot", "StopRecord"], "seed": 1},
            ]
        )
    )
    def fault_for_next_apply(self, fault: dict[str, Any]) -> None:
        self.sim.faults(**fault)
        self.faulty = True

    # --- commands ----------------------------------------------------------------------------------------

    @rule(args=st.sampled_from([(), ("--no-refresh",), ("--detailed-exitcode",)]))
    def plan_is_read_only(self, args: tuple[str, ...]) -> None:
        before_calls, before_serial = len(self.mutating_calls()), self.serial()
        before_records = self.records()
        result = self.invoke("plan", *args, str(self.specs))
        assert result.exit_code in ((0, 1, 2) if args else (0, 1)), result.output
        assert len(self.mutating_calls()) == before_calls
        assert self.serial() == before_serial
        assert self.records() == before_records

    def planned(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.invoke("plan", "--format", "json", *args, str(self.specs))
        self.log.append(f"$ capctl plan --format json {' '.join(args)} -> {result.exit_code}\n{result.stderr}")
        assert result.exit_code in (0, 1), result.output
        if result.exit_code != 0:
            return result.exit_code, {}
        plan = json.loads(result.stdout)
        # Every plan capctl writes reads back as itself (walk 18e: the field-by-field reader of saved plans, over
        # plans of every action and kind the model reaches, --target / -l / --replace included).
        assert plan_to_json(plan_from_json(plan)) == plan
        return 0, plan

    def check_calls_match(self, plan: dict[str, Any], calls: list[dict[str, Any]], out: str) -> None:
        """The vendor calls an apply made touch exactly the rooms its plan changes, in the planned way. Decided
        (docs/providers-volcengine.md): a Volcengine start answered "already started" by a run no record
        accounts for (`state rm` forgot it) is stopped and started again with the declared settings, which no
        plan can foresee (it observes recorded tasks only); apply says so for that task."""
        starts: set[tuple[str, str]] = set()
        stops: set[tuple[str, str]] = set()
        updates: set[tuple[str, str]] = set()
        for change in plan["changes"]:
            action = change["action"]
            if action == "no-op":
                continue
            vendor = "volcengine" if change["family"] == "volcengine-snapshot" else "zego"
            room = change["key"].split("/", 2)[2]  # (a thumbnail's file id: `/record/a.mp4` too)
            if action in ("create", "replace", "reissue"):
                starts.add((vendor, room))
            if action in ("delete", "replace"):
                stops.add((vendor, room))
            if action == "update":
                updates.add((vendor, room))
        for entry in calls:
            where = vendor_room(entry)
            api = entry["api"]
            if api in ("StartSnapshot", "StartRecord"):
                assert where in starts, f"{api} {where} not planned: {plan['changes']}"
            elif api == "UpdateSnapshot":
                assert where in updates, f"{api} {where} not planned: {plan['changes']}"
            elif api == "StopSnapshot":
                restarted = where in starts and any(
                    RESTARTED in line and f"/{where[1]} " in line for line in out.splitlines()
                )
                assert where in stops or restarted, f"{api} {where} not planned: {plan['changes']}\n{out}"
            elif api == "MediaThumbnails":
                file_id = (entry.get("body") or {}).get("FileId") or (entry.get("query") or {}).get("FileId")
                assert ("zego", file_id) in starts, f"{api} {file_id} not planned: {plan['changes']}"

    @rule(saved=st.booleans(), between=st.sampled_from(["nothing", "time", "edit"]))
    def apply(self, saved: bool, between: str) -> None:
        """Plan (JSON), then apply: the saved plan, or directly. What it calls is what the plan showed."""
        faulty, self.faulty = self.faulty, False
        plan_code, plan = self.planned()
        if plan_code != 0:  # a refused plan (a provider still owning tasks): apply refuses too, changes nothing
            before = len(self.mutating_calls())
            code, out = self.capctl("apply", "--auto-approve", str(self.specs))
            assert code == 1, out
            assert len(self.mutating_calls()) == before
            self.sim.faults()
            return
        before = len(self.sim.requests())
        if saved:
            out_path = self.root / "plan.json"
            code, out = self.capctl("plan", "--out", str(out_path), str(self.specs))
            assert code == 0, out
            text = out_path.read_text()
            for secret in (CANARY_AK, CANARY_SK, *SIM_SECRETS):
                assert secret not in text
            plan = json.loads(text)
            assert plan_to_json(plan_from_json(plan)) == plan
            stale = False
            if between == "time" and not self.advance(31):
                between = "nothing"
            elif between == "edit" and self.jobs:
                name = sorted(self.jobs)[0]
                job = self.jobs[name]
                self.jobs[name] = replace(job, idle=job.idle + 1, interval=job.interval + (job.kind == "thumb"))
                self.write_specs()
                # A saved plan is checked against the specs for the changes it makes (what was reviewed is
                # what runs): an edit of a job it leaves unchanged does not make it stale. (A ThumbnailJob's
                # Tencent file has no interval: its document is not edited at all.)
                edited = self.jobs[name].yaml(name) != job.yaml(name)
                stale = edited and any(
                    c["key"].split("/")[1] == name and c["action"] != "no-op" for c in plan["changes"]
                )
            before = len(self.sim.requests())
            code, out = self.capctl("apply", "--auto-approve", "--plan", str(out_path))
            if stale:
                assert code == 1 and "changed since this plan was made" in out, out
                assert len(self.sim.requests()) == before
                self.sim.faults()
                return
        else:
            code, out = self.capctl("apply", "--auto-approve", str(self.specs))
        calls = [e for e in self.sim.requests()[before:] if e.get("api") in MUTATING and e.get("status") == 200]
        self.sim.faults()
        if between != "time" and not faulty:
            self.check_calls_match(plan, calls, out)
        if not faulty and between == "nothing":
            assert code == 0, out
        if code == 0 and between == "nothing":  # a saved plan does what it showed, not what happened since
            self.check_converged()

    @rule(data=st.data())
    def apply_narrowed(self, data: st.DataObject) -> None:
        """`--target`, `-l`, `--replace` or `--no-prune`: what the narrowed plan shows is what its apply does."""
        keys = sorted(self.declared())
        how = data.draw(st.sampled_from(["target", "label", "replace", "no-prune"]))
        if how == "no-prune":
            args: tuple[str, ...] = ("--no-prune",)
        elif how == "label":
            args = ("-l", data.draw(st.sampled_from(["team=x", "team!=x", "!team"])))
        elif not keys:
            return
        elif how == "target":
            key = data.draw(st.sampled_from(keys))
            args = ("--target", data.draw(st.sampled_from([key, key.rsplit("/", 1)[0]])))
        else:
            args = ("--replace", data.draw(st.sampled_from(keys)))
        self.sim.faults()
        code, plan = self.planned(*args)
        before = len(self.sim.requests())
        apply_code, out = self.capctl("apply", "--auto-approve", *args, str(self.specs))
        calls = [e for e in self.sim.requests()[before:] if e.get("api") in MUTATING and e.get("status") == 200]
        if code == 0:
            self.check_calls_match(plan, calls, out)
            assert apply_code == 0, out
        else:
            assert apply_code == 1, out
            assert calls == []

    @rule(data=st.data())
    def apply_killed(self, data: st.DataObject) -> None:
        """An apply killed (as `kill -9` would) at a failpoint one of its planned changes passes: in a forked
        child, which costs milliseconds where a new Python costs a second. The next apply resolves what it left."""
        # Drawn first, in fixed bounds: a draw whose range or presence follows the vendor's state (the plan)
        # is replayed by hypothesis as flaky.
        pick = data.draw(st.integers(0, 6))
        code, plan = self.planned()
        points = sorted({p for c in plan.get("changes", ()) for p in KILL_POINTS.get(c["action"], ())})
        if code != 0 or not points:
            return
        point = points[pick % len(points)]
        pid = os.fork()
        if pid == 0:  # the child: dies at `point` as CAPCTL_FAILPOINTS would make it, or exits as the apply ends
            code = 3
            try:

                def hit(name: str) -> None:
                    if name == point:
                        os._exit(137)

                failpoints.hit = hit  # (the real one read CAPCTL_FAILPOINTS once, in this process's first apply)
                code = CliRunner().invoke(app, ["apply", "--auto-approve", str(self.specs)], env=self.env).exit_code
            finally:
                os._exit(code)
        code = wait_child(pid, timeout=120.0)
        self.log.append(f"$ CAPCTL_FAILPOINTS={point} capctl apply --auto-approve -> {code}")
        assert code in (0, 1, 137), code
        if code == 137 and point == "start.after-call":
            # A legacy ZEGO start whose answer never reached the state cannot be found again (docs/failure-modes.md):
            # the next apply starts a second recording, and this one runs on, unknown, to its idle timeout.
            held = {r["vendor_task_id"] for r in self.records().values()}
            legacy = self.sim.tasks(vendor="zego", state="running")
            self.zego_orphans |= {t["taskId"] for t in legacy if t["api"] == "legacy" and t["taskId"] not in held}

    @rule(data=st.data())
    def state_rm(self, data: st.DataObject) -> None:
        records = self.records()
        if not records:
            return
        key = data.draw(st.sampled_from(sorted(records)))
        record = records[key]
        code, out = self.capctl("state", "rm", key)
        assert code == 0, out
        if record["vendor_task_id"] and record["status"] == "running":
            if record["family"] == "volcengine-snapshot":
                self.volc_orphans.add((record["vendor_ref"].get("RoomId", ""), record["vendor_task_id"]))
            else:
                self.zego_orphans.add(record["vendor_task_id"])

    @rule(data=st.data())
    def wake(self, data: st.DataObject) -> None:
        records = self.records()
        if not records:
            return
        code, out = self.capctl("wake", data.draw(st.sampled_from(sorted(records))))
        assert code == 0, out

    # --- invariants --------------------------------------------------------------------------------------

    @invariant()
    def no_secret_in_state(self) -> None:
        if self.state.exists():
            raw = self.state.read_bytes()
            for secret in (CANARY_AK, CANARY_SK, *SIM_SECRETS):
                assert secret.encode() not in raw

    def check_converged(self) -> None:
        """After a full apply that succeeded: the vendor runs exactly the declared tasks, each recorded once."""
        records = self.records()
        running = self.sim.tasks(state="running")
        declared = self.declared()
        by_vendor_id: dict[tuple[str, str], list[str]] = {}
        for key, record in records.items():
            if record["status"] in ("running", "pending") and record["vendor_task_id"]:
                ident = record["vendor_ref"].get("RoomId", "") if record["family"] == "volcengine-snapshot" else ""
                by_vendor_id.setdefault((ident, record["vendor_task_id"]), []).append(key)
        for task in running:
            ident = task["roomId"] if task["vendor"] == "volcengine" else ""
            holders = by_vendor_id.get((ident, task["taskId"]), [])
            if not holders and (task["taskId"] in self.zego_orphans or (ident, task["taskId"]) in self.volc_orphans):
                continue  # forgotten by `state rm`, and not taken up again (its start request differs now)
            assert len(holders) == 1, f"vendor task {task} has records {holders}:\n{records}"
            assert holders[0] in declared, f"vendor task {task} runs for {holders[0]}, which is not declared"
            job = declared[holders[0]][1]
            settings_now = (task["maxIdleTime"], task["interval"] if job.kind == "volc" else task["maxRecordTime"])
            wanted = (job.idle, job.interval if job.kind == "volc" else job.max_duration)
            assert settings_now == wanted, f"{holders[0]} runs with {settings_now}, declared {wanted}: {task}"
        running_ids = {(t["roomId"] if t["vendor"] == "volcengine" else "", t["taskId"]) for t in running}
        for key, (room, job) in declared.items():
            assert key in records, f"{key} is declared but not in the state"
            record = records[key]
            assert record["provider"] == job.provider, f"{key} recorded on {record['provider']}: {record}"
            if record["status"] == "running":
                ident = room if job.kind == "volc" else ""
                assert (ident, record["vendor_task_id"]) in running_ids, f"{key} recorded running, not at the vendor"
            elif job.kind == "thumb":  # one-shot: submitted (or given up on, said as failed)
                assert record["status"] in ("done", "failed"), record
            else:
                assert record["status"] in ("dormant", "stopped", "failed"), record
                if record["status"] == "stopped":
                    assert record["next_attempt_at"], f"{key} stopped, not re-issued, no backoff: {record}"
        # Converged: a plan now has nothing to do (and says so with its exit code).
        result = self.invoke("plan", "--detailed-exitcode", str(self.specs))
        assert result.exit_code == 0, result.output


def test_plan_and_apply_keep_the_vendor_and_the_state_in_step(sim_process: SimProcess, tmp_path: Path) -> None:
    PlanApplyMachine.process = sim_process
    PlanApplyMachine.tmp = str(tmp_path)
    run_state_machine_as_test(
        PlanApplyMachine,
        settings=settings(
            max_examples=int(os.environ.get("MODEL_EXAMPLES", "15")),
            stateful_step_count=int(os.environ.get("MODEL_STEPS", "12")),
        ),
    )
