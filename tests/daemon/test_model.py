"""A model-based test of the daemon against the simulator: hypothesis drives random sequences of spec edits
(jobs added, removed, changed, renamed with their `taskId` kept, a selector's pattern changed, a recording moved
between ZEGO's two APIs, thumbnails, a file deleted and restored, a broken file, Providers renamed), room traffic,
vendor-side ends, callbacks on and off, clock jumps and restarts, and after each step checks what docs/daemon.md
promises against the simulator's own view (its control API) and the state:

- no leak: every running vendor task is held by a record of the state that is not a tombstone;
- no lost task: every declared task has a record, and a record waiting to be re-issued has its slot ahead;
- removed ones are stopped once their grace has passed (unless the prune is held back for a human);
- no stop hits a task a key of the specs holds (a key whose spec changed may be replaced);
- a running record's run is running at the vendor, or ended within one sweep period;
- a room with a stream, announced by a callback, is captured within seconds (a Volcengine run a fault ended
  there is seen when its images stop, well before the next sweep).

Example tests pin what each feature does; this one looks for what their combinations miss. Every sequence
it shrank to a failure is kept below as a plain regression test, so CI replays it whatever hypothesis draws.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from reconciler.clock import FakeClock
from reconciler.daemon.controller import PRUNE_GRACE
from reconciler.daemon.policy import (
    DEADLINE_MARGIN,
    FAULT_RETRY_CAP,
    IMAGE_SILENCE_INTERVALS,
    REISSUE_BACKOFF_CAP,
    fault_delay,
)
from reconciler.leader import LeaderSettings
from reconciler.model import TaskRecord, TaskStatus
from reconciler.spec.models import RoomSelector
from reconciler.spec.selectors import covers
from reconciler.state import StateStore, open_state
from reconciler.state.sql import SqlStateStore
from reconciler.state.sqlite import SQLiteStateStore
from reconciler.status.history import History
from reconciler.transitions import PRODUCTIVE_MARGIN, start_unconfirmed, volc_task_held
from tests.daemon.conftest import SIM, Harness
from tests.specdocs import STORAGE, providers, recording_job, selector_job, snapshot_job, thumbnail_job
from tests.state.helpers import PG_ENV, with_search_path

RESYNC = 30.0
NAMED_ROOMS = ("r1", "r2", "r3")
SELECTOR_ROOMS = ("c-1", "c-2")
ZEGO_ROOMS = ("z1", "z2")
PATTERNS = ("c-*", "c-1", "*-2")
USERS = ("u1", "u2")
FILES = ("jobs.yaml", "extra.yaml")
# Seconds a worker may take past a due time in these checks (the fake clock jumps in steps of its own).
SLACK = 2.0
# The longest a stop goes unseen: one sweep period (--resync + 10 % jitter) after the last look, plus slack.
UNSEEN = RESYNC * 1.1 + SLACK
# Image callbacks come in batches this far apart (the harness's `image_every` of short steps).
IMAGE_BATCH = 5.0
# Out-of-band stops this close together may end runs too short to be productive: their retry waits grow.
FAULT_SERIES = 30 + PRODUCTIVE_MARGIN + FAULT_RETRY_CAP + UNSEEN


@dataclass(frozen=True)
class Job:
    """One job document of the model's spec set."""

    # "snap" (Volcengine, named rooms), "rec" (ZEGO recording), "sel" (Volcengine room selector), "thumb" (ZEGO
    # MediaThumbnails of two files, a Tencent one and a Huawei one every `interval` seconds: one-shot tasks)
    kind: str
    name: str
    rooms: tuple[str, ...] = ()
    pattern: str = ""
    idle: int = 20
    task_id: str | None = None  # a pinned Volcengine taskId, kept through renames
    max_duration: int = 300
    interval: int = 5  # updated in place (UpdateSnapshot), never a replace
    file: str = "jobs.yaml"
    provider: str = "zego"  # a recording's: "zego" (the current API) or "zego-legacy" (the v1 API)

    def doc(self) -> str:
        if self.kind == "snap":
            text = snapshot_job(self.name, list(self.rooms), idle=self.idle, interval=self.interval)
            return text.replace("spec:\n", f"spec:\n  taskId: {self.task_id}\n") if self.task_id else text
        if self.kind == "rec":
            return recording_job(
                self.name, list(self.rooms), provider=self.provider, idle=self.idle, max_duration=self.max_duration
            )
        if self.kind == "thumb":
            return thumbnail_job(self.name, huawei_interval=self.interval)
        return selector_job(self.name, self.pattern)

    def tasks(self) -> dict[str, str]:
        """Task key -> room, for the rooms this job names or its pattern covers (active or not); a
        ThumbnailJob's files in place of rooms."""
        if self.kind == "thumb":
            return {f"ThumbnailJob/{self.name}/{f}": f for f in ("1397757897438985100", "/record/a.mp4")}
        if self.kind == "sel":
            return {f"SnapshotJob/{self.name}/{r}": r for r in SELECTOR_ROOMS if covers_room(self.pattern, r)}
        kind = "SnapshotJob" if self.kind == "snap" else "RecordingJob"
        return {f"{kind}/{self.name}/{r}": r for r in self.rooms}


def covers_room(pattern: str, room: str) -> bool:
    return covers(RoomSelector(match=[pattern]), room)


@dataclass
class World:
    """What the model knows, on the simulator's clock."""

    jobs: dict[str, Job] = field(default_factory=dict)  # the files as written
    broken: bool = False
    deleted: set[str] = field(default_factory=set)  # files deleted (their jobs kept here to restore)
    in_force: dict[str, Job] | None = None  # the set the daemon acts on: the last valid one it loaded
    removed_at: dict[str, float] = field(default_factory=dict)  # key -> when it left the set in force
    changed: set[str] = field(default_factory=set)  # keys whose spec changed in this step (or during trouble)
    last_job: dict[str, Job] = field(default_factory=dict)  # key -> its job when last in force
    users: dict[str, set[str]] = field(default_factory=dict)  # room -> users (Volcengine) / streams (ZEGO)
    announced: dict[str, float] = field(default_factory=dict)  # room -> when its activity was announced
    callbacks: bool = True
    stopped_behind: dict[str, float] = field(default_factory=dict)  # key -> last out-of-band stop
    stopped_run: dict[str, float] = field(default_factory=dict)  # key -> when the run that stop ended began
    restarted_at: float = float("-inf")  # the daemon's last start (a restart forgets when it planned each look)
    faults: dict[str, int] = field(default_factory=dict)  # key -> out-of-band stops in a row, no productive run between
    trouble_until: float = float("-inf")  # the vendor failing, then the failed keys' backoff (up to 5 min)
    losing_answers: bool = False
    # Legacy ZEGO recordings started while answers were lost: that API cannot find them again (no idempotency
    # key, docs/providers-zego.md), so they run on, held by nothing, to their idle timeout or maximum duration.
    legacy_orphans: set[str] = field(default_factory=set)
    # ClientTaskIds of ZEGO starts never confirmed whose job then moved to the other recording API: a start of
    # the new spec cannot find them (plan.py `_unconfirmed_stop`), so a recording they began ends by itself.
    unfindable: set[str] = field(default_factory=set)
    renamed: bool = False  # the Provider documents are `volc-r` and `zego-r`: the same accounts, other names


RENAMES = (("volc", "volc-r"), ("zego", "zego-r"))


def renamed(text: str) -> str:
    """Provider documents and the jobs naming them on the `-r` names (the accounts and endpoints unchanged)."""
    for old, new in RENAMES:
        text = text.replace(f"{{name: {old}}}", f"{{name: {new}}}").replace(f"provider: {old}\n", f"provider: {new}\n")
    return text


class DaemonMachine(RuleBasedStateMachine):
    """One daemon (and its restarts) on one simulator and one SQLite state, per example."""

    leader: LeaderSettings | None = None  # the daemon's election timings; None: its defaults

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="capctl-model-"))
        self.clock = FakeClock(start=1_750_000_000.0)
        self.h = Harness(self.dir, self.clock)
        self.url = f"sqlite:///{self.h.state_path}"
        self.world = World()
        self.options: dict[str, Any] = {}
        self.grace = PRUNE_GRACE

    def store(self) -> StateStore:
        """The state at `self.url`: SQLite on the fake clock, or PostgreSQL (whose leases use its server's)."""
        if self.url.startswith("sqlite:"):
            return SQLiteStateStore(self.h.state_path, clock=self.clock)
        return open_state(self.url)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            if self.h.daemon is not None:
                self.run(self.h.stop())
            self.run(self.h.sim.callbacks.aclose())
            # A task still pending here is destroyed with the loop ("Task was destroyed but it is pending!"
            # after the run): a daemon stopped must leave none behind (walk 59d-1: a queue's late timer).
            assert not asyncio.all_tasks(self.loop), asyncio.all_tasks(self.loop)
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- the spec files ------------------------------------------------------------------------------------

    def write(self) -> None:
        specs = self.h.specs
        specs.mkdir(parents=True, exist_ok=True)
        on = renamed if self.world.renamed else str
        (specs / "providers.yaml").write_text(on(providers(SIM, callbacks=True)) + "---\n" + STORAGE)
        for name in FILES:
            path = specs / name
            docs = [on(j.doc()) for j in self.world.jobs.values() if j.file == name]
            if name in self.world.deleted:
                path.unlink(missing_ok=True)
            else:
                path.write_text("---\n".join(docs))
        broken = specs / "broken.yaml"
        if self.world.broken:
            broken.write_text("apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {name: [\n")
        else:
            broken.unlink(missing_ok=True)

    def written(self) -> dict[str, Job]:
        return {n: j for n, j in self.world.jobs.items() if j.file not in self.world.deleted}

    def reload(self) -> None:
        """Write the files and have the daemon read them (its watcher is off in tests), as the model expects."""
        self.write()
        assert self.h.daemon is not None
        valid = self.run(self.h.daemon.reload_async())
        assert valid == (not self.world.broken), "reload() said the wrong thing about the set's validity"
        if valid:
            self.put_in_force(self.written())

    def put_in_force(self, jobs: dict[str, Job] | None) -> None:
        before = set(self.desired())
        self.world.in_force = dict(jobs) if jobs is not None else None
        now = self.clock.now()
        after = set(self.desired())
        for key, job in self.desired().items():  # its last job in force, removed since or not
            # May be replaced (stopped and started anew); an interval change is an update, also when its start's
            # answer was lost (the vendor is asked first).
            if replace(self.world.last_job.get(key, job), interval=5).doc() != replace(job, interval=5).doc():
                self.world.changed.add(key)
            self.world.last_job[key] = job
        for key in before - after:
            self.world.removed_at.setdefault(key, now)
        for key in after:
            self.world.removed_at.pop(key, None)
        if self.world.in_force is not None:  # a restarted daemon counts the grace from its first valid set
            for key in self.records().keys() - after:
                self.world.removed_at.setdefault(key, now)

    def desired(self) -> dict[str, Job]:
        """Task key -> its job, for every task of the set in force (selector jobs: every covered room)."""
        if self.world.in_force is None:
            return {}
        return {key: job for job in self.world.in_force.values() for key in job.tasks()}

    # --- steps ---------------------------------------------------------------------------------------------

    @initialize(
        jobs=st.lists(
            st.sampled_from(["snap", "pinned", "rec", "sel", "legacy", "thumb"]), min_size=1, max_size=3, unique=True
        ),
        max_prune=st.sampled_from([100.0, 50.0, 0.0]),
        grace=st.sampled_from([PRUNE_GRACE, 0.0]),
        prune=st.booleans(),
    )
    def start(self, jobs: list[str], max_prune: float, grace: float = PRUNE_GRACE, prune: bool = True) -> None:
        self.options = {"resync": RESYNC, "max_prune": max_prune, "prune_grace": grace, "prune": prune}
        self.options |= {"leader": self.leader} if self.leader is not None else {}
        self.grace = grace
        rooms, zego_rooms = iter(NAMED_ROOMS), iter(ZEGO_ROOMS)
        for i, kind in enumerate(jobs):
            name = f"j{i}"
            if kind in ("snap", "pinned"):
                job = Job("snap", name, rooms=(next(rooms),), task_id=f"t{i}" if kind == "pinned" else None)
            elif kind in ("rec", "legacy"):
                provider = "zego-legacy" if kind == "legacy" else "zego"
                job = Job("rec", name, rooms=(next(zego_rooms),), idle=30, provider=provider)
            elif kind == "thumb":
                job = Job("thumb", name)
            else:
                job = Job("sel", name, pattern="c-*", file="extra.yaml")
            self.world.jobs[name] = job
        self.write()
        self.run(self.h.start(self.store(), **self.options))
        self.put_in_force(self.written())
        self.step(1.0)

    @rule(kind=st.sampled_from(["snap", "pinned", "rec", "sel", "legacy", "thumb"]), file=st.sampled_from(FILES))
    def add_job(self, kind: str, file: str) -> None:
        name = f"j{len(self.world.jobs) + len(self.world.removed_at)}x{int(self.clock.now()) % 1000}"
        taken = {r for j in self.world.jobs.values() for r in j.rooms}
        if kind in ("snap", "pinned"):
            free = [r for r in NAMED_ROOMS if r not in taken]
            if not free:
                return
            job = Job("snap", name, rooms=(free[0],), task_id=f"t-{name}" if kind == "pinned" else None, file=file)
        elif kind in ("rec", "legacy"):
            free = [r for r in ZEGO_ROOMS if r not in taken]
            if not free:
                return
            provider = "zego-legacy" if kind == "legacy" else "zego"
            job = Job("rec", name, rooms=(free[0],), idle=30, file=file, provider=provider)
        elif kind == "thumb":
            if any(j.kind == "thumb" for j in self.world.jobs.values()):
                return
            job = Job("thumb", name, file=file)
        else:
            if any(j.kind == "sel" for j in self.world.jobs.values()):
                return
            job = Job("sel", name, pattern="c-*", file=file)
        self.world.jobs[name] = job
        self.reload()
        self.step(1.0)

    @precondition(lambda self: bool(self.world.jobs))
    @rule(index=st.integers(0, 9))
    def remove_job(self, index: int) -> None:
        name = sorted(self.world.jobs)[index % len(self.world.jobs)]
        del self.world.jobs[name]
        self.reload()
        self.step(1.0)

    @precondition(lambda self: bool(self.world.jobs))
    @rule(index=st.integers(0, 9), what=st.sampled_from(["idle", "room", "pattern", "max", "interval", "provider"]))
    def change_job(self, index: int, what: str) -> None:
        name = sorted(self.world.jobs)[index % len(self.world.jobs)]
        job = self.world.jobs[name]
        if job.kind == "sel":
            others = [p for p in PATTERNS if p != job.pattern]
            job = replace(job, pattern=others[index % len(others)])
        elif what == "room":
            pool = NAMED_ROOMS if job.kind == "snap" else ZEGO_ROOMS
            taken = {r for j in self.world.jobs.values() for r in j.rooms}
            free = [r for r in pool if r not in taken]
            job = replace(job, rooms=tuple(sorted(job.rooms + tuple(free[:1])))) if free else job
        elif (what == "interval" and job.kind == "snap") or job.kind == "thumb":
            job = replace(job, interval=10 if job.interval == 5 else 5)
        elif what == "max" and job.kind == "rec":
            job = replace(job, max_duration=600 if job.max_duration == 300 else 300)
        elif what == "provider" and job.kind == "rec":  # moved to the other recording API (a new task)
            records = self.records()
            self.world.unfindable |= {
                r.client_task_id
                for k in job.tasks()
                if (r := records.get(k)) and r.client_task_id and start_unconfirmed(r)
            }
            job = replace(job, provider="zego" if job.provider == "zego-legacy" else "zego-legacy")
        else:
            job = replace(job, idle=30 if job.idle == 20 else 20)
        self.world.jobs[name] = job
        self.reload()
        self.step(1.0)

    @precondition(lambda self: any(j.kind != "sel" for j in self.world.jobs.values()))
    @rule(index=st.integers(0, 9))
    def rename_job(self, index: int) -> None:
        """A job renamed: a Volcengine one keeps its taskId (pinned, or the old name pinned now)."""
        names = sorted(n for n, j in self.world.jobs.items() if j.kind != "sel")
        old = names[index % len(names)]
        job = self.world.jobs.pop(old)
        new = f"{old}r"
        task_id = (job.task_id or old) if job.kind == "snap" else None
        self.world.jobs[new] = replace(job, name=new, task_id=task_id)
        self.reload()
        self.step(1.0)

    @rule()
    def rename_providers(self) -> None:
        """Both Provider documents renamed (or back) in one edit, the old ones gone: the same vendor accounts,
        so no key counts as changed and no task may be stopped (before, each was replaced)."""
        self.world.renamed = not self.world.renamed
        self.reload()
        self.step(1.0)

    @rule(file=st.sampled_from(FILES))
    def delete_or_restore_file(self, file: str) -> None:
        self.world.deleted ^= {file}
        self.reload()
        self.step(1.0)

    @rule()
    def break_or_fix(self) -> None:
        self.world.broken = not self.world.broken
        self.reload()
        self.step(1.0)

    @rule(room=st.sampled_from(NAMED_ROOMS + SELECTOR_ROOMS + ZEGO_ROOMS), user=st.sampled_from(USERS))
    def join_or_leave(self, room: str, user: str) -> None:
        users = self.world.users.setdefault(room, set())
        zego = room in ZEGO_ROOMS
        vendor = "zego" if zego else "volcengine"
        who: dict[str, str] = {"streamId": user} if zego else {"userId": user}
        leaving = user in users
        users ^= {user}
        self.sim_control("POST", "/unpublish" if leaving else "/publish", {"vendor": vendor, "roomId": room, **who})
        # Without a set in force (started on a broken one) the daemon cannot verify a callback: refused (401).
        if not leaving and len(users) == 1 and self.world.callbacks and self.world.in_force is not None:
            self.world.announced[room] = self.clock.now()
        elif not users:
            self.world.announced.pop(room, None)
        self.step(1.0)

    @rule(index=st.integers(0, 9), reason=st.sampled_from(["UnknownStopReason", "StartTaskFailed", 6, 1001]))
    def stop_behind_capctls_back(self, index: int, reason: str | int) -> None:
        running = self.sim_control("GET", "/tasks?state=running")["tasks"]
        if not running:
            return
        task = running[index % len(running)]
        body = {"vendor": task["vendor"], "roomId": task["roomId"], "taskId": task["taskId"]}
        body["reason"] = reason if (task["vendor"] == "zego") == isinstance(reason, int) else None
        self.sim_control("POST", "/tasks/stop", body)
        now = self.clock.now()
        for key in self.holders(task):
            # A run between two stops further apart than this lasted past its idle timeout: productive, a reset.
            in_a_row = now - self.world.stopped_behind.get(key, float("-inf")) < FAULT_SERIES
            self.world.faults[key] = self.world.faults.get(key, 0) + 1 if in_a_row else 1
            self.world.stopped_behind[key] = now
            self.world.stopped_run[key] = task["startTime"]
        self.step(1.0)

    @rule()
    def callbacks_on_or_off(self) -> None:
        on = not self.world.callbacks
        self.world.callbacks = on
        self.h.sim.config.volcengine_callback_url = "http://daemon.local/callbacks/volcengine" if on else None
        self.h.sim.config.zego_callback_url = "http://daemon.local/callbacks/zego" if on else None
        if not on:
            self.world.announced.clear()
        self.step(1.0)

    @rule(trouble=st.sampled_from(["errors", "lost answers", "none"]))
    def vendor_trouble(self, trouble: str) -> None:
        """Every vendor call fails (an internal error: Volcengine HTTP 500, ZEGO its system-error code), or takes
        effect but its answer is lost; or the vendor recovers."""
        if trouble == "none":
            self.sim_control("DELETE", "/faults")
            if self.world.trouble_until == float("inf"):
                self.world.trouble_until = self.clock.now() + REISSUE_BACKOFF_CAP + UNSEEN
        else:
            rates = {"errorRate": 1.0} if trouble == "errors" else {"timeoutRate": 1.0, "phase": "after"}
            self.sim_control("PUT", "/faults", rates)
            self.world.trouble_until = float("inf")
        self.world.losing_answers = trouble == "lost answers"
        self.step(1.0)

    @rule(seconds=st.sampled_from([5.0, 25.0, PRUNE_GRACE + 5, 65.0, 310.0, 3_700.0]))
    def advance(self, seconds: float) -> None:
        self.step(seconds, image_every=5.0 if seconds < 300 else 30.0)

    @rule(down=st.sampled_from([0.0, 0.0, 40.0]))
    def restart(self, down: float = 0.0) -> None:
        assert self.h.daemon is not None
        cache = self.h.daemon.records
        self.run(self.h.stop())  # (in-flight work finishes meanwhile)
        self.run(self.h.advance(down))  # callbacks meanwhile are answered 503: retried, then lost
        reader = self.store()
        try:  # the daemon's last view was the state's: nothing only in memory is lost with the process
            assert reader.load().records == {r.key: r for r in cache.values()}
            # Nor the status page's run history: a restarted daemon draws the runs the stopped one saw.
            assert isinstance(reader, SqlStateStore)
            kept = History(self.clock)
            kept.restore(reader.history())
            keys = cache.keys()
            runs = {key: kept.runs(key) for key in keys}
            assert runs == {key: cache.history.runs(key) for key in keys}, "the state's run history differs"
        finally:
            reader.close()
        self.write()
        self.run(self.h.start(self.store(), **self.options))
        self.world.restarted_at = self.clock.now()
        self.world.in_force, self.world.removed_at = None, {}
        # A daemon started on a broken set acts on nothing until it is fixed.
        self.put_in_force(None if self.world.broken else self.written())
        self.step(1.0)

    # --- looking --------------------------------------------------------------------------------------------

    def sim_control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async def call() -> Any:
            transport = httpx.ASGITransport(app=self.h.sim_app)
            async with httpx.AsyncClient(transport=transport, base_url=SIM) as http:
                answer = await http.request(method, f"/_sim{path}", json=body)
                assert answer.status_code == 200, answer.text
                return answer.json()

        return self.run(call())

    def records(self) -> dict[str, TaskRecord]:
        assert self.h.daemon is not None
        return {r.key: r for r in self.h.daemon.records.values()}

    def holders(self, task: dict[str, Any]) -> list[str]:
        """Keys whose record (not a tombstone) holds this running vendor task."""
        found = []
        for key, record in self.records().items():
            if record.status is TaskStatus.REMOVED:
                continue
            if task["vendor"] == "volcengine":
                held = volc_task_held(record)
                if held is not None and held[1:] == (task["roomId"], task["taskId"]):
                    found.append(key)
            elif task["taskId"] == record.vendor_task_id or (
                record.client_task_id is not None and task["clientTaskId"] == record.client_task_id
            ):  # (a start whose answer was lost is held by its intent, its ClientTaskId, until it is resolved)
                found.append(key)
        return found

    def step(self, seconds: float, *, image_every: float = 5.0) -> None:
        before = {(t["vendor"], t["roomId"], t["taskId"], t["startTime"]): self.holders(t) for t in self.running()}
        self.run(self.h.advance(seconds, image_every=image_every))
        self.check(before)
        if self.clock.now() >= self.world.trouble_until:  # a replace the vendor's trouble put off may land later
            self.world.changed.clear()

    def running(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = self.sim_control("GET", "/tasks?state=running")["tasks"]
        return tasks

    def check(self, before: dict[tuple[str, str, str, float], list[str]]) -> None:
        now = self.clock.now()
        records = self.records()
        desired = self.desired()
        every = self.sim_control("GET", "/tasks")["tasks"]
        # No stop hits a task a key of the specs holds (a key whose spec just changed may be replaced).
        for task in every:
            ident = (task["vendor"], task["roomId"], task["taskId"], task["startTime"])
            by_capctl = task["stopReason"] == "StopByAPI" or (task["vendor"] == "zego" and task["status"] == 3)
            if ident in before and task["state"] == "ended" and by_capctl:
                live = [k for k in before[ident] if k in desired and k not in self.world.changed]
                assert not live, f"capctl stopped {ident}, the task of {live}, keys of the set in force"
        calm = now >= self.world.trouble_until  # else failed calls are retried with backoff: no deadline holds
        # No leak: every running vendor task is held by a live record.
        for task in (t for t in every if t["state"] == "running"):
            holders = self.holders(task)
            if not holders and task["api"] == "legacy" and self.world.losing_answers:
                self.world.legacy_orphans.add(task["taskId"])
            if not holders and (task["taskId"] in self.world.legacy_orphans or self.given_up(task)):
                continue
            assert holders, f"running vendor task held by no record: {task}"
            # Removed ones are stopped once their grace has passed, unless held back for a human.
            if self.options["prune"] and self.world.in_force is not None and not self.pruning_blocked() and calm:
                overdue = [k for k in holders if now - self.world.removed_at.get(k, now) > self.grace + SLACK]
                assert len(overdue) < len(holders), f"{task} still runs for {overdue}, removed from the specs"
        if self.world.in_force is None or not calm:
            return
        running = {(t["roomId"], t["taskId"]): t for t in every if t["state"] == "running"}
        ended = {(t["roomId"], t["taskId"]): t for t in every if t["state"] == "ended"}
        for key, job in desired.items():
            room = key.rsplit("/", 1)[1]
            active = bool(self.world.users.get(room))
            since = self.world.announced.get(room)
            announced = active and since is not None and now - since > 5.0 and self.world.callbacks
            gone = key not in records or records[key].status is TaskStatus.REMOVED
            if job.kind == "sel" and gone and not announced:
                continue  # a room the selector job has not heard of (or inactive): nothing to start
            record = records.get(key)
            if record is None:
                # A renamed job's key waits for the old key's prune (within the grace, or held back).
                assert self.waits_for_rename(key, job), f"declared task {key} has no record"
                continue
            # (An intent whose call is still in flight, waiting on a rate-budget slot past the step's end, is not.)
            in_flight = self.h.daemon is not None and self.h.daemon.queue.retrying(key)
            assert record.status is not TaskStatus.PENDING or record.last_error or in_flight, f"half-written {record}"
            assert record.status is not TaskStatus.REMOVED, f"{key} is declared but its record is a tombstone"
            if job.kind == "thumb":  # submitted once, or given up on (said), or waiting to be tried again
                assert record.status in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.PENDING), record
                continue
            if record.status is TaskStatus.RUNNING:
                run = (room, record.vendor_task_id or "")
                end = ended.get(run)
                if run not in running:
                    assert end is not None, f"{key} is recorded running a task the vendor never had"
                    assert now - end["endTime"] <= UNSEEN, f"{key}'s run ended at {end['endTime']}, unseen since"
            elif record.status in (TaskStatus.STOPPED, TaskStatus.DORMANT) and (job.kind != "sel" or announced):
                # (A selector job's room gone quiet is left to end, never re-issued: restartPolicy Never.)
                assert record.next_attempt_at is not None, f"{key} waits for nothing: {record}"
                assert record.next_attempt_at >= now - SLACK, f"{key}'s slot at {record.next_attempt_at} passed"
            # A room with a stream, announced by a callback, is captured within seconds.
            # (A vendor fault is retried at once, then after a wait that grows with the faults in a row.)
            retry = fault_delay(self.world.faults.get(key, 0))
            if announced and self.world.stopped_behind.get(key, float("-inf")) < now - self.unseen(key, job) - retry:
                assert record.status is TaskStatus.RUNNING and (room, record.vendor_task_id) in running, (
                    f"{key}: room {room} active since {since}, announced, yet {record.status.value}"
                )

    def unseen(self, key: str, job: Job) -> float:
        """The longest the last out-of-band stop of `key`'s run may go unseen. A Volcengine snapshot run that
        had sent an image before it stopped, its room's stream announced and this daemon up, is looked at when
        its images stop (policy.image_silence_look): the next batch, then two intervals and the margin. Else
        at the next sweep."""
        stop = self.world.stopped_behind.get(key)
        if stop is None or job.kind not in ("snap", "sel"):
            return UNSEEN
        room = key.rsplit("/", 1)[1]
        record = self.records().get(key)
        interval = max(job.interval, int(record.updatable.get("interval", 0)) if record is not None else 0)
        began = max(
            self.world.stopped_run.get(key, stop), self.world.announced.get(room, stop), self.world.restarted_at
        )
        if began > stop - interval - IMAGE_BATCH - SLACK:
            return UNSEEN
        return IMAGE_BATCH + IMAGE_SILENCE_INTERVALS * interval + DEADLINE_MARGIN + SLACK

    def given_up(self, task: dict[str, Any]) -> bool:
        """A ZEGO recording of a key removed while its start was unconfirmed: found only by starting it again,
        it is left to end by itself at its idle timeout or maximum duration (plan.py's delete reason says so).
        So is one whose job moved to the other recording API meanwhile (`World.unfindable`)."""
        if task["clientTaskId"] in self.world.unfindable:
            return True
        return any(
            r.status is TaskStatus.REMOVED and r.vendor_task_id is None and r.client_task_id == task["clientTaskId"]
            for r in self.records().values()
            if r.client_task_id is not None
        )

    def pruning_blocked(self) -> bool:
        assert self.h.daemon is not None
        registry = self.h.daemon.metrics.registry
        return bool(registry.get_sample_value("capctl_prune_blocked", {"reason": "max-prune"}))

    def waits_for_rename(self, key: str, job: Job) -> bool:
        """The key's Volcengine task is still held by a key removed from the specs, not yet pruned."""
        if job.kind != "snap":
            return False
        room = key.rsplit("/", 1)[1]
        task_id = job.task_id or job.name
        now = self.clock.now()
        for other, record in self.records().items():
            held = volc_task_held(record)
            if other != key and held is not None and held[1:] == (room, task_id) and other not in self.desired():
                late = now - self.world.removed_at.get(other, now) > self.grace + SLACK
                if self.pruning_blocked() or not self.options["prune"] or not late:
                    return True
        return False


DaemonMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("MODEL_EXAMPLES", "40")),
    stateful_step_count=int(os.environ.get("MODEL_STEPS", "20")),
    suppress_health_check=[HealthCheck.too_slow],
)
TestDaemonModel = DaemonMachine.TestCase


class PostgresDaemonMachine(DaemonMachine):
    """The same model with the state in PostgreSQL, a new schema per example (the daemon's production store:
    its leases, its inbox and its writes take other paths than SQLite's)."""

    admin = ""
    # The lease renewed and the inbox claimed every 20 s of the fake clock, not 2 s: each is a round trip to the
    # server, and a step of 3,700 s made 3,700 of them. On a loaded machine each waits for a CPU, and the test
    # passed 300 s (pytest-timeout), reported as a FlakyFailure of whatever call it was in (walk 61a-4).
    leader = LeaderSettings(150.0, 100.0, 20.0)

    def __init__(self) -> None:
        super().__init__()
        self.schema = f"capctl_m_{secrets.token_hex(6)}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}")
        self.url = with_search_path(self.admin, self.schema)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {self.schema} CASCADE")


def use_postgresql() -> None:
    """Point `PostgresDaemonMachine` at the test PostgreSQL, or skip the test when none is given."""
    admin = os.environ.get(PG_ENV)
    if not admin:
        pytest.skip(f"{PG_ENV} is not set (run `source .ci/postgres.sh` first)")
    PostgresDaemonMachine.admin = admin


def test_the_daemon_model_on_postgresql() -> None:
    use_postgresql()
    run_state_machine_as_test(
        PostgresDaemonMachine,
        settings=settings(
            max_examples=int(os.environ.get("MODEL_PG_EXAMPLES", "5")),
            stateful_step_count=int(os.environ.get("MODEL_STEPS", "20")),
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def replay(*steps: tuple[str, dict[str, Any]], machine_type: type[DaemonMachine] = DaemonMachine) -> None:
    """Run one shrunk sequence on a fresh machine, checking after every step as the stateful test does
    (`PostgresDaemonMachine`: skipped unless a PostgreSQL is given, as the stateful test on it is)."""
    if machine_type is PostgresDaemonMachine:
        use_postgresql()
    machine = machine_type()
    try:
        for name, args in steps:
            getattr(machine, name)(**args)
    finally:
        machine.teardown()


def test_a_restart_remembers_that_a_room_is_active() -> None:
    """The user joined after the run idled out unseen; the restart forgot the join (it lived in memory only), so
    the stopped run was backed off 120 s while the room had a user. The room book, kept in the state, says."""
    replay(
        ("start", {"jobs": ["snap"], "max_prune": 100.0}),
        ("advance", {"seconds": 65.0}),
        ("advance", {"seconds": 65.0}),
        ("join_or_leave", {"room": "r1", "user": "u1"}),
        ("restart", {}),
        ("advance", {"seconds": 5.0}),
        ("advance", {"seconds": 5.0}),
    )


def test_a_room_joined_while_its_job_was_out_of_the_specs_is_known_active_when_it_comes_back() -> None:
    """The join reached no key (its job's file was deleted, prune off); the job came back and its run, idled out
    meanwhile, went dormant for an hour in a room with a user. The room book had heard the join."""
    replay(
        ("start", {"jobs": ["snap", "sel", "rec"], "max_prune": 100.0, "grace": 0.0, "prune": False}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("advance", {"seconds": 65.0}),
        ("join_or_leave", {"room": "r1", "user": "u2"}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("advance", {"seconds": 35.0}),
    )


def test_a_prune_no_longer_held_back_goes_at_once() -> None:
    """Both jobs' file deleted (100 % > --max-prune 50: held back), then restored without j0 (50 %: released):
    j0's prune waited for the next resync, though --prune-grace 0 prunes at once."""
    replay(
        ("start", {"jobs": ["snap", "pinned"], "max_prune": 50.0, "grace": 0.0, "prune": True}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("remove_job", {"index": 0}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
    )


def test_a_replace_the_vendor_put_off_may_land_steps_later() -> None:
    """The job's idle timeout changed while every call failed; the replace's stop went out a step later, when
    answers were being lost. That stop is the replace the change asked for, not a stop of a held task: the model
    keeps such a key 'changed' until the vendor's trouble (and the failed keys' backoff) is over."""
    replay(
        ("start", {"jobs": ["snap"], "max_prune": 100.0, "grace": 30.0, "prune": False}),
        ("vendor_trouble", {"trouble": "errors"}),
        ("callbacks_on_or_off", {}),
        ("change_job", {"index": 0, "what": "idle"}),
        ("vendor_trouble", {"trouble": "lost answers"}),
    )


def test_a_recording_started_again_by_a_retried_start_of_a_removed_key_may_run_on() -> None:
    """Every answer lost: a create's StartRecord retries carry one ClientTaskId; its first recording was stopped
    behind capctl's back, so the last retry started a second one, whose answer was lost too. The job then left the
    specs: a delete of a start never confirmed is a tombstone (ZEGO finds the recording only by starting it
    again), and the recording ends by itself. The model accepts that recording as the delete's reason says."""
    replay(
        ("start", {"jobs": ["sel"], "max_prune": 100.0, "grace": 0.0, "prune": True}),
        ("vendor_trouble", {"trouble": "lost answers"}),
        ("add_job", {"file": "extra.yaml", "kind": "rec"}),
        ("callbacks_on_or_off", {}),
        ("rename_job", {"index": 5}),
        ("change_job", {"index": 9, "what": "idle"}),
        ("break_or_fix", {}),
        ("change_job", {"index": 4, "what": "idle"}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("callbacks_on_or_off", {}),
        ("add_job", {"file": "extra.yaml", "kind": "rec"}),
        ("remove_job", {"index": 8}),
        ("stop_behind_capctls_back", {"index": 8, "reason": 6}),
    )


def test_an_unconfirmed_recording_whose_job_moved_to_the_legacy_api_may_run_on() -> None:
    """Every answer lost: a recording's start never confirmed, then its job moved to ZEGO's legacy API. The
    replace cannot find that start (plan.py `_unconfirmed_stop` says so); its recording runs on, held by nothing,
    to its idle timeout. The model accepts it as the reason says (seed 63, 200 x 35; the same on main)."""
    replay(
        ("start", {"jobs": ["snap"], "max_prune": 100.0, "grace": 30.0, "prune": False}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("change_job", {"index": 0, "what": "idle"}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("remove_job", {"index": 1}),
        ("vendor_trouble", {"trouble": "lost answers"}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("callbacks_on_or_off", {}),
        ("add_job", {"file": "jobs.yaml", "kind": "rec"}),
        ("change_job", {"index": 5, "what": "provider"}),
        ("advance", {"seconds": 5.0}),
        ("restart", {"down": 0.0}),
    )


def test_a_prune_in_flight_never_stops_a_task_back_in_the_specs() -> None:
    """Every call failing, the jobs' file deleted (--prune-grace 0): j0's prune keeps retrying its stop; the file
    restored, then answers lost: the prune's retried stop (decided while j0 was removed) ended the run j0 holds
    again. The reload that restores j0 cuts its prune short (seed 62, 250 x 35)."""
    replay(
        ("start", {"jobs": ["snap"], "prune": True, "grace": 0.0, "max_prune": 100.0}),
        ("callbacks_on_or_off", {}),
        ("vendor_trouble", {"trouble": "errors"}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("vendor_trouble", {"trouble": "lost answers"}),
    )


def test_a_replace_in_flight_never_stops_the_task_a_rename_hands_to_a_new_key() -> None:
    """Every answer lost: j0's idle timeout changed, so its replace keeps retrying StopSnapshot; j0 is renamed
    meanwhile with its taskId kept, and the retried stop (decided for j0's old spec) ended the run j0r now held.
    The reload cuts j0's change short (the model counted the renamed key as changed to accept that stop)."""
    replay(
        ("start", {"jobs": ["snap"], "max_prune": 100.0, "grace": 30.0, "prune": False}),
        ("add_job", {"file": "jobs.yaml", "kind": "snap"}),
        ("add_job", {"file": "jobs.yaml", "kind": "snap"}),
        ("vendor_trouble", {"trouble": "lost answers"}),
        ("change_job", {"index": 0, "what": "idle"}),
        ("change_job", {"index": 8, "what": "idle"}),
        ("restart", {"down": 0.0}),
        ("rename_providers", {}),
        ("break_or_fix", {}),
        ("break_or_fix", {}),
        ("rename_providers", {}),
        ("rename_job", {"index": 0}),
        ("break_or_fix", {}),
    )


def test_two_vendor_faults_in_an_occupied_room_cost_seconds_not_a_minute() -> None:
    """A user in the room since before the run started; two ZEGO recordings ended by vendor faults (network
    lost, an internal error) a second apart were backed off 60 s as an empty room's idle-outs: nothing had
    been reported since the run began. A fault says nothing about the room: it is retried within 5 s."""
    replay(
        ("start", {"jobs": ["rec"], "max_prune": 100.0}),
        ("join_or_leave", {"room": "z1", "user": "u1"}),
        ("advance", {"seconds": 5.0}),
        ("stop_behind_capctls_back", {"index": 0, "reason": 6}),
        ("stop_behind_capctls_back", {"index": 0, "reason": 1001}),
        ("advance", {"seconds": 25.0}),
        ("advance", {"seconds": 25.0}),
    )


def test_a_snapshot_run_a_fault_ends_in_a_room_with_a_stream_is_seen_when_its_images_stop() -> None:
    """A user publishing in r1, the run sending images: a fault ends it (no task-stopped callback from
    Volcengine). The daemon looks when two intervals pass without an image, so it is started again within
    some 20 s, not at the next sweep (~33 s): the model holds such a run to that (`DaemonMachine.unseen`)."""
    replay(
        ("start", {"jobs": ["snap"], "max_prune": 100.0}),
        ("join_or_leave", {"room": "r1", "user": "u1"}),
        ("advance", {"seconds": 25.0}),
        ("advance", {"seconds": 5.0}),  # past the first sweep's look (at 30 s): the next is due at ~60 s
        ("stop_behind_capctls_back", {"index": 0, "reason": "UnknownStopReason"}),
        *[("advance", {"seconds": 5.0})] * 6,
    )


def test_a_room_joined_while_its_job_was_out_of_the_specs_is_recalled_after_a_provider_rename() -> None:
    """j0 backed off (two runs idled out), its file deleted, the Providers renamed meanwhile, a user joins r1, the
    file restored: j0's record still named the old Provider, gone from the set, so the room book's word on r1 was
    looked up under a name no account has, and j0 waited out its backoff (60 s) in an occupied room (seed 831)."""
    replay(
        ("start", {"jobs": ["snap"], "max_prune": 100.0, "grace": 30.0, "prune": True}),
        ("advance", {"seconds": 65.0}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("rename_providers", {}),
        ("join_or_leave", {"room": "r1", "user": "u1"}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("advance", {"seconds": 5.0}),
    )


def test_a_start_waiting_on_its_rate_budget_past_a_step_is_in_flight_not_half_written() -> None:
    """Three re-issues due at one instant (after Provider renames and restarts): the third start waits a few
    milliseconds of the fake clock for its rate-budget slot, past the step's end. Its record is `pending`
    without an error while a worker holds its key: in flight, which the model accepts (seed 831, 80 x 30)."""
    replay(
        ("start", {"jobs": ["snap", "pinned", "rec"], "grace": 30.0, "max_prune": 100.0}),
        ("restart", {"down": 40.0}),
        ("restart", {"down": 40.0}),
        ("rename_providers", {}),
        ("add_job", {"file": "jobs.yaml", "kind": "rec"}),
        ("add_job", {"file": "extra.yaml", "kind": "snap"}),
        ("delete_or_restore_file", {"file": "extra.yaml"}),
        ("restart", {"down": 0.0}),
        ("join_or_leave", {"room": "c-2", "user": "u1"}),
        ("restart", {"down": 40.0}),
        ("rename_providers", {}),
        ("join_or_leave", {"room": "z2", "user": "u2"}),
        ("stop_behind_capctls_back", {"index": 6, "reason": 1001}),
        ("add_job", {"file": "jobs.yaml", "kind": "thumb"}),
        ("rename_providers", {}),
        ("stop_behind_capctls_back", {"index": 6, "reason": "UnknownStopReason"}),
        ("restart", {"down": 0.0}),
        ("restart", {"down": 0.0}),
        ("delete_or_restore_file", {"file": "extra.yaml"}),
        ("rename_providers", {}),
    )


def test_a_thumbnail_back_in_the_specs_under_a_renamed_provider_is_revived() -> None:
    """--prune-grace 0: the jobs' file deleted while the set was broken, then fixed: the thumbnails' records are
    tombstones. The Providers renamed, the file restored: the restored thumbnails' no-op was a move (re-homed)
    and the move wrote them back as tombstones of declared tasks, until the next resync (seed 821, 800 x 40)."""
    replay(
        ("start", {"jobs": ["thumb", "snap", "pinned"], "prune": True, "max_prune": 100.0, "grace": 0.0}),
        ("break_or_fix", {}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
        ("break_or_fix", {}),
        ("rename_providers", {}),
        ("delete_or_restore_file", {"file": "jobs.yaml"}),
    )


def test_a_recording_moved_to_the_legacy_api_as_its_provider_is_renamed_is_replaced() -> None:
    """The Providers renamed (zego -> zego-r) and the recording job moved to the legacy API in one edit (made while
    the set was broken): its record named `zego`, gone, and another API is no move, so the replace could neither
    look at nor stop the old run (ProviderMissing, for ever): it idled out unseen and no legacy recording started.
    The old run is now stopped through `zego-r`, the same account (PostgreSQL variant, seed 863, 200 x 40)."""
    replay(
        ("start", {"jobs": ["snap"], "prune": False, "grace": 30.0, "max_prune": 100.0}),
        ("add_job", {"file": "jobs.yaml", "kind": "rec"}),
        ("delete_or_restore_file", {"file": "extra.yaml"}),
        ("vendor_trouble", {"trouble": "none"}),
        ("break_or_fix", {}),
        ("rename_providers", {}),
        ("change_job", {"index": 5, "what": "provider"}),
        ("restart", {"down": 0.0}),
        ("break_or_fix", {}),
        ("advance", {"seconds": 5.0}),
        ("callbacks_on_or_off", {}),
        ("break_or_fix", {}),
        ("break_or_fix", {}),
        ("break_or_fix", {}),
        ("break_or_fix", {}),
        ("break_or_fix", {}),
        ("break_or_fix", {}),
        ("break_or_fix", {}),
        ("callbacks_on_or_off", {}),
        ("break_or_fix", {}),
        ("callbacks_on_or_off", {}),
        ("restart", {"down": 40.0}),
    )


@pytest.mark.parametrize("machine_type", [DaemonMachine, PostgresDaemonMachine], ids=["sqlite", "postgresql"])
def test_a_recording_moved_to_the_legacy_api_after_a_restart_on_a_broken_set_with_renamed_providers_is_replaced(
    machine_type: type[DaemonMachine],
) -> None:
    """Walk 8G-6 (reported PostgreSQL only; it was 8G-5 on code without its fix: the run had imported
    /work/main's reconciler): three jobs; the set broken, the Providers renamed and a restart on the broken set,
    then the recording moved to the legacy API and the set fixed. The old run was never stopped (ProviderMissing)
    and idled out during a 40 s restart, unseen. Fails on both stores without dce4f7d (moves.rehome)."""
    replay(
        ("start", {"jobs": ["snap", "pinned", "rec"], "max_prune": 0.0, "grace": 30.0, "prune": False}),
        ("break_or_fix", {}),
        ("delete_or_restore_file", {"file": "extra.yaml"}),
        ("rename_providers", {}),
        ("restart", {"down": 0.0}),
        ("vendor_trouble", {"trouble": "none"}),
        ("change_job", {"index": 5, "what": "provider"}),
        *[("break_or_fix", {})] * 9,
        *[("callbacks_on_or_off", {})] * 3,
        ("advance", {"seconds": 5.0}),
        ("restart", {"down": 40.0}),
        machine_type=machine_type,
    )


@pytest.mark.parametrize("machine_type", [DaemonMachine, PostgresDaemonMachine], ids=["sqlite", "postgresql"])
def test_a_renamed_jobs_new_key_starts_once_the_vendor_ended_the_held_old_run(
    machine_type: type[DaemonMachine],
) -> None:
    """Walk 44A-1 (wave 43 saw it on PostgreSQL; it fails on both stores): j0 renamed with its taskId kept, its old
    key's prune held for a human (--max-prune 0), so j0r waits; the vendor ended the run, then a restart. j0r's
    first pass, before the old key's look saw the end, waited again, and that look woke nothing: j0r had no
    record (r1 uncaptured) until the next resync. The look that sees the held run end now wakes j0r."""
    replay(
        ("start", {"jobs": ["snap"], "max_prune": 0.0, "grace": 30.0, "prune": True}),
        ("rename_providers", {}),
        ("rename_job", {"index": 0}),
        ("stop_behind_capctls_back", {"index": 0, "reason": "UnknownStopReason"}),
        ("restart", {"down": 0.0}),
        machine_type=machine_type,
    )
