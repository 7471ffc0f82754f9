"""VolcengineSnapshotProvider against the in-process simulator: real signatures, real task lifecycle.

The simulator is written independently of the provider, so these tests catch a bug the two could not share.
Both run on one FakeClock; every call first moves it one second so each rate budget has a free slot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from reconciler import model, transitions
from reconciler.budget import BudgetRegistry
from reconciler.clock import FakeClock
from reconciler.execute import Executor
from reconciler.model import ApiFamily, DesiredTask, JobKind, ObservedState, ProviderConfig, TaskRecord, TaskStatus
from reconciler.providers.base import ErrorKind, StartResult, VendorError
from reconciler.providers.volcengine import VolcengineSnapshotProvider
from reconciler.redact import redact_tree
from reconciler.retry import RetryPolicy
from reconciler.secrets import Secret
from reconciler.sim import create_app
from reconciler.sim.faults import FaultConfig
from reconciler.sim.simulator import Simulator
from reconciler.state import LockTakenOver, open_state
from tests.providers.test_zego import drive
from tests.state.conftest import pg_url  # noqa: F401  (the suite's PostgreSQL)

T = TypeVar("T")
APP = "capctl-sim-volc"
CONFIG = ProviderConfig(
    name="volc-sim",
    type="volcengine",
    app_id=APP,
    endpoint="http://127.0.0.1:8750/volc",
    access_key=Secret("AKCAPCTLSIM0000000001"),
    secret_key=Secret("capctl-sim-volc-secret"),
)


class Sim:
    def __init__(self, http: httpx.AsyncClient, clock: FakeClock, sim: Simulator) -> None:
        self.http, self.clock, self.sim = http, clock, sim
        self.budgets = BudgetRegistry(clock)
        self.provider = self.make(CONFIG)

    def make(self, config: ProviderConfig, clock: FakeClock | None = None) -> VolcengineSnapshotProvider:
        return VolcengineSnapshotProvider(config, budgets=self.budgets, clock=clock or self.clock, http=self.http)

    async def do(self, call: Awaitable[T]) -> T:
        self.clock.advance(1)
        return await call


@pytest.fixture
async def env() -> AsyncIterator[Sim]:
    clock = FakeClock()
    app = create_app(clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        yield Sim(http, clock, app.state.sim)


def task(room: str = "lobby", *, interval: int = 5, **extra: Any) -> DesiredTask:
    request = {
        "AppId": APP,
        "RoomId": room,
        "TaskId": "lobby-audit",
        "MaxIdleTime": 60,
        "ImageConfig": {"Format": 0, "Width": 800, "Height": 800, "Interval": interval},
        "StorageConfig": {
            "Type": 2,
            "CustomConfig": {"Vendor": 0, "Region": 0, "Bucket": "audit", "AccessKey": Secret("s3-ak"),
                             "SecretKey": Secret("s3-sk")},
        },
        **extra,
    }  # fmt: skip
    return DesiredTask(
        key=f"SnapshotJob/lobby-audit/{room}",
        kind=JobKind.SNAPSHOT,
        job="lobby-audit",
        target=room,
        provider="volc-sim",
        family=ApiFamily.VOLC_SNAPSHOT,
        request=request,
        spec_hash="h",
        fixed_hash="f",
        updatable={"interval": interval},
    )


def record_of(started: StartResult, room: str = "lobby") -> TaskRecord:
    return TaskRecord(
        key=f"SnapshotJob/lobby-audit/{room}",
        provider="volc-sim",
        family=ApiFamily.VOLC_SNAPSHOT,
        kind=JobKind.SNAPSHOT,
        target=room,
        spec_hash="h",
        fixed_hash="f",
        status=TaskStatus.RUNNING,
        vendor_task_id=started.vendor_task_id,
        vendor_ref=started.vendor_ref,
    )


async def test_full_lifecycle(env: Sim) -> None:
    started = await env.do(env.provider.start(task(BusinessId="B1"), None))
    assert started.vendor_ref == {"AppId": APP, "BusinessId": "B1", "RoomId": "lobby", "TaskId": "lobby-audit"}
    assert not started.already_running
    (sim_task,) = env.sim.tasks("volcengine")
    assert sim_task.business_id == "B1" and sim_task.interval == 5

    again = await env.do(env.provider.start(task(BusinessId="B1"), None))
    assert again.already_running and len(env.sim.tasks("volcengine")) == 1

    record = record_of(started)
    observed = await env.do(env.provider.observe(record))
    assert observed.state is ObservedState.RUNNING and observed.started_at == pytest.approx(sim_task.start_time)

    await env.do(env.provider.update(task(interval=30), record))
    assert env.sim.tasks("volcengine")[0].interval == 30

    await env.do(env.provider.stop(record))
    observed = await env.do(env.provider.observe(record))
    assert (observed.state, observed.reason) == (ObservedState.STOPPED, "stopped out of band (Volcengine StopByAPI)")
    assert observed.ended_at is not None

    with pytest.raises(VendorError) as info:
        await env.do(env.provider.stop(record))
    assert info.value.kind is ErrorKind.NOT_FOUND


async def test_an_empty_room_idles_out_and_is_seen_as_stopped(env: Sim) -> None:
    record = record_of(await env.do(env.provider.start(task("empty-room"), None)), "empty-room")
    await env.sim.advance(61)
    observed = await env.do(env.provider.observe(record))
    assert (observed.state, observed.reason) == (ObservedState.STOPPED, "idle timeout (Volcengine IdleTimeOut)")
    assert observed.ended_at is not None and observed.started_at is not None
    assert observed.ended_at - observed.started_at == pytest.approx(60)


async def test_an_unknown_task_is_not_found(env: Sim) -> None:
    ref = {"AppId": APP, "RoomId": "nowhere", "TaskId": "never-started"}
    record = record_of(StartResult("never-started", ref), "nowhere")
    assert (await env.do(env.provider.observe(record))).state is ObservedState.NOT_FOUND


async def test_a_bad_request_is_terminal(env: Sim) -> None:
    with pytest.raises(VendorError) as info:
        await env.do(env.provider.start(task(interval=0), None))
    assert info.value.kind is ErrorKind.TERMINAL and info.value.code.startswith("InvalidParameter")


async def test_a_wrong_secret_key_is_an_auth_error(env: Sim) -> None:
    provider = env.make(dataclasses.replace(CONFIG, secret_key=Secret("wrong")))
    with pytest.raises(VendorError) as info:
        await env.do(provider.start(task(), None))
    assert (info.value.kind, info.value.code) == (ErrorKind.AUTH, "SignatureDoesNotMatch")
    assert "wrong" not in str(info.value)


async def test_a_skewed_clock_is_reported_as_such(env: Sim) -> None:
    provider = env.make(CONFIG, clock=FakeClock(env.clock.now() + 3600))
    with pytest.raises(VendorError) as info:
        await env.do(provider.observe(record_of(StartResult("t", {"AppId": APP, "RoomId": "r", "TaskId": "t"}))))
    assert (info.value.kind, info.value.code) == (ErrorKind.AUTH, "InvalidTimestamp")
    assert "clock" in info.value.message


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (FaultConfig(throttle_next=1), ErrorKind.THROTTLED),
        (FaultConfig(error_rate=1.0), ErrorKind.RETRYABLE),
        (FaultConfig(timeout_rate=1.0), ErrorKind.RETRYABLE),
        (FaultConfig(drop_rate=1.0), ErrorKind.RETRYABLE),
    ],
    ids=["throttle", "error", "timeout", "drop"],
)
async def test_simulated_faults_map_to_their_kinds(env: Sim, fault: FaultConfig, kind: ErrorKind) -> None:
    env.sim.faults.set(fault)
    with pytest.raises(VendorError) as info:
        await env.do(env.provider.start(task(), None))
    assert info.value.kind is kind
    if kind is ErrorKind.THROTTLED:
        assert env.budgets.all()[(CONFIG.account, "StartSnapshot")].stats.throttled == 1


async def test_a_reissue_answered_already_running_is_the_same_run(env: Sim, tmp_path: Path) -> None:
    """Past 72 h GetSnapshotTask knows no task that runs on (vendor-apis.md), so it is seen "not found" and
    re-issued; the vendor answers "already started": the same run goes on, not a new one. No re-issue is
    counted and its start time is kept, or a 24/7 room would count one re-issue per look, each a short
    "unproductive" run that backs off into dormancy while the vendor task runs."""
    store = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    executor = Executor(store, lambda name, family: env.provider, env.clock)
    env.sim.publish("volcengine", "lobby", user_id="alice")
    desired = task()
    await env.do(executor.start(desired, None, reissue=False))
    first = store.load().records[desired.key]
    env.clock.advance(72 * 3600)
    observed = await env.do(env.provider.observe(first))
    assert observed.state is ObservedState.NOT_FOUND
    seen = transitions.observed(first, observed, env.clock.now())
    store.put(seen)
    note = await env.do(executor.start(desired, seen, reissue=True))
    again = store.load().records[desired.key]
    assert note == "the vendor reports it was already running"
    assert again.status is TaskStatus.RUNNING and again.stop_reason is None
    assert (again.reissue_count, again.unproductive_runs, again.started_at) == (0, 0, first.started_at)
    assert [t.running for t in env.sim.tasks()] == [True]


async def test_an_update_of_a_start_never_confirmed_confirms_it(env: Sim, tmp_path: Path) -> None:
    """`apply --plan` (no refresh) of an interval change planned as an update of a start whose answer was lost:
    the vendor's answer says it runs, so the record is running with its vendor id, not left `failed` with the
    new spec (the next plan then started it again)."""
    store = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    executor = Executor(store, lambda name, family: env.provider, env.clock)
    old, new = task(), dataclasses.replace(task(interval=10), spec_hash="h2")
    await env.do(env.provider.start(old, None))  # its answer lost:
    lost = transitions.failed(transitions.intent(old, None, env.clock.now(), reissue=False), "lost", env.clock.now())
    change = model.Change(key=old.key, action=model.Action.UPDATE, reason="", provider=old.provider, family=old.family)
    result = await env.do(executor.apply((change,), {new.key: new}, {lost.key: lost}))
    assert result.results[0].ok, result.results
    record = store.load().records[new.key]
    assert (record.status, record.vendor_task_id, record.spec_hash) == (TaskStatus.RUNNING, "lobby-audit", "h2")
    assert [(t.running, t.interval) for t in env.sim.tasks()] == [(True, 10)]


@pytest.mark.parametrize("action", [model.Action.DELETE, model.Action.REPLACE])
async def test_a_command_whose_lock_was_taken_over_stops_nothing_at_the_vendor(
    env: Sim,
    pg_url: str,  # noqa: F811
    action: model.Action,
) -> None:
    """Walk 25d (after 22C-1): a command's state writes are fenced by its lock's epoch, but a delete (prune) and a
    replace's stop call the vendor before they write anything: an apply paused past its lease (at its prompt)
    whose lock a `capctl run` replica took stopped the replica's captures when it resumed, and only then was
    refused. The lock is checked before such a call, as each start's and update's intent write checks it."""
    import psycopg

    from reconciler.cli import common

    store = open_state(pg_url)
    try:
        executor = Executor(store, lambda name, family: env.provider, env.clock)
        rooms = ("hall", "lobby")
        for room in rooms:
            await env.do(executor.start(task(room), None, reissue=False))
        records = store.load().records

        async def apply(room: str) -> None:
            edited = dataclasses.replace(task(room, interval=10), spec_hash="h2", fixed_hash="f2")
            wanted = {} if action is model.Action.DELETE else {edited.key: edited}
            change = model.Change(key=edited.key, action=action, reason="", provider="volc-sim", family=edited.family)
            await env.do(executor.apply((change,), wanted, records))

        with common.locked(store, "capctl apply"):
            await apply("hall")  # its own lock: done (stopped; a replace started again)
            with psycopg.connect(pg_url, autocommit=True) as conn:  # its lease lapsed (paused): a replica took it
                conn.execute("UPDATE capctl_lock SET token = 'x', holder = 'pid 1 on elsewhere', epoch = epoch + 1")
            with pytest.raises(LockTakenOver, match=r"taken over \(pid 1 on elsewhere\)"):
                await apply("lobby")
        seen = {t.room_id: (t.running, t.interval) for t in env.sim.tasks()}
        assert seen["hall"] == ((False, 5) if action is model.Action.DELETE else (True, 10))
        assert seen["lobby"] == (True, 5)  # the replica's capture goes on
        lobby = task("lobby").key
        assert store.load().records[lobby] == records[lobby]
    finally:
        store.close()


@pytest.mark.parametrize("runs", [True, False], ids=["its-start-runs", "nothing-runs"])
async def test_a_requested_replace_that_stopped_a_lost_start_first_is_refused_as_nothing_running(
    env: Sim, tmp_path: Path, runs: bool
) -> None:
    """`apply --replace` of a replace whose start's answers were lost: what that start may run is stopped first
    (stopped, or answered not found), then the new start is refused. Nothing of it runs: `start_refused`. Read
    off the record after the stop, the refusal was taken for a retry of the lost start ("may run"), so a removal
    stopped a run that was not there; after walk 48A-1's reading of a stopped start never confirmed, even when
    the stop had ended it (walk 48a)."""
    store = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    executor = Executor(store, lambda name, family: env.provider, env.clock)
    old = task()
    if runs:
        await env.do(env.provider.start(old, None))  # its answers lost
    now = env.clock.now()
    lost = transitions.failed(transitions.intent(old, None, now, reissue=False, replace=True), "lost", now)
    refused = task(interval=0)  # same spec hash ("h"): the vendor refuses its request
    change = model.Change(key=old.key, action=model.Action.REPLACE, reason="", provider=old.provider, family=old.family)
    result = await env.do(executor.apply((change,), {old.key: refused}, {lost.key: lost}, requested={old.key}))
    assert not result.results[0].ok and "InvalidParameter" in str(result.results[0].error)
    record = store.load().records[old.key]
    assert record.status is TaskStatus.FAILED and record.start_refused
    assert not transitions.start_unconfirmed(record) and not transitions.stoppable(record)
    assert [t.running for t in env.sim.tasks()] == ([False] if runs else [])


class _Crash(BaseException):
    """The process dying at a failpoint (os._exit in a real run): what it committed is all that is left."""


async def test_a_lost_start_a_replace_stopped_before_a_crash_is_refused_as_nothing_running(
    env: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`apply --replace` of a replace whose start's answers were lost stops that start's run by its RoomId +
    TaskId, and the process dies before its start's intent (stop.after-commit). The next plain apply takes
    the replace up with its start alone (walk 48A-1), which the vendor refuses: nothing runs. The stopped
    record read as a lost start left to its room, so the refusal kept "may run" (state list, the status page,
    a removal's StopSnapshot, `--max-prune`'s count): 48a's Left alone, turned so by 48A-1 (walk 49a)."""
    store = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    executor = Executor(store, lambda name, family: env.provider, env.clock)
    old = task()
    await env.do(env.provider.start(old, None))  # its answers lost
    now = env.clock.now()
    lost = transitions.failed(transitions.intent(old, None, now, reissue=False, replace=True), "lost", now)
    change = model.Change(key=old.key, action=model.Action.REPLACE, reason="", provider=old.provider, family=old.family)

    def hit(point: str) -> None:
        if point == "stop.after-commit":
            raise _Crash(point)

    monkeypatch.setattr("reconciler.execute.failpoints.hit", hit)
    with pytest.raises(_Crash):
        await env.do(executor.apply((change,), {old.key: old}, {lost.key: lost}, requested={old.key}))
    monkeypatch.undo()
    left = store.load().records[old.key]
    assert left.status is TaskStatus.STOPPED and left.vendor_task_id is None
    assert [t.running for t in env.sim.tasks()] == [False]
    assert transitions.replace_resumed(old, left)  # its start alone: no second stop
    # The replace it is, whatever the job's policy or backoff: the lost start's error is of a start stopped (50a).
    assert transitions.replace_cut_short(left) and left.last_error is None
    assert not transitions.start_unconfirmed(left) and not transitions.stoppable(left)

    refused = task(interval=0)  # same spec hash ("h"): the vendor refuses its request
    result = await env.do(executor.apply((change,), {old.key: refused}, {old.key: left}))
    assert not result.results[0].ok and "InvalidParameter" in str(result.results[0].error)
    record = store.load().records[old.key]
    assert record.status is TaskStatus.FAILED and record.start_refused
    assert not transitions.failed_may_run(record) and not transitions.stoppable(record)
    store.close()


@pytest.mark.parametrize(
    "fault, unconfirmed, stamped",
    [
        (None, False, True),
        ("refused", False, False),
        (FaultConfig(drop_rate=1.0, phase="after", apis=["UpdateSnapshot"]), True, True),
    ],
    ids=["confirmed", "refused", "answer lost"],
)
async def test_an_update_records_when_it_may_have_set_the_run_s_settings(
    env: Sim, tmp_path: Path, fault: FaultConfig | str | None, unconfirmed: bool, stamped: bool
) -> None:
    """`updated_at` orders the keys holding one run (`transitions.runs_as_sent`, walk 55E-1): a confirmed update
    and one whose answer was lost may have set the run's settings then; one the vendor refused set nothing, and
    stamped, a key whose record is stale (another key took its run over since) read as holding the run's."""
    store = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    refused = env.make(dataclasses.replace(CONFIG, secret_key=Secret("wrong")))  # SignatureDoesNotMatch: answered
    executor = Executor(store, lambda name, family: env.provider, env.clock, retry=RetryPolicy(max_attempts=1))
    old, new = task(), dataclasses.replace(task(interval=10), spec_hash="h2")
    await env.do(executor.start(old, None, reissue=False))
    if isinstance(fault, FaultConfig):
        env.sim.faults.set(fault)
    elif fault == "refused":
        executor = Executor(store, lambda name, family: refused, env.clock, retry=RetryPolicy(max_attempts=1))
    change = model.Change(key=old.key, action=model.Action.UPDATE, reason="", provider=old.provider, family=old.family)
    sent_at = env.clock.now() + 1  # `env.do` steps the clock first
    await env.do(executor.apply((change,), {new.key: new}, store.load().records))
    record = store.load().records[new.key]
    assert (record.update_unconfirmed, record.updated_at) == (unconfirmed, sent_at if stamped else None)


async def test_an_update_after_the_clock_stepped_back_is_later_than_the_takeover_before(
    env: Sim, tmp_path: Path
) -> None:
    """Walk 57A-1: `b` took `a`'s run over, then the wall clock stepped back, then `a` (renamed back) updated
    it in place: its `updated_at` must still come after `b`'s start, or a third key would take the run over
    with `b`'s stale settings (`transitions.runs_as_sent`)."""
    store = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    executor = Executor(store, lambda name, family: env.provider, env.clock, retry=RetryPolicy(max_attempts=1))
    old, new = task(), dataclasses.replace(task(interval=10), spec_hash="h2")
    await env.do(executor.start(old, None, reissue=False))
    a = store.load().records[old.key]
    b = dataclasses.replace(a, key="SnapshotJob/renamed/lobby", started_at=env.clock.now() + 3600)  # before the step
    store.put(b)
    change = model.Change(key=old.key, action=model.Action.UPDATE, reason="", provider=old.provider, family=old.family)
    await env.do(executor.apply((change,), {new.key: new}, store.load().records))
    a = store.load().records[new.key]
    assert not a.update_unconfirmed and a.updated_at is not None and a.updated_at > b.started_at  # type: ignore[operator]
    assert transitions.runs_as_sent([a, b], "SnapshotJob/third/lobby", redact_tree(new.request))
    assert not transitions.runs_as_sent([a, b], "SnapshotJob/third/lobby", redact_tree(old.request))
    store.close()


@pytest.mark.timeout(30)
async def test_a_start_after_the_clock_stepped_back_is_later_than_the_takeover_before(env: Sim, tmp_path: Path) -> None:
    """Walk 58A-2: `b` took `a`'s run over, then the wall clock stepped back, then a third key of other settings
    found the run ("already started") and stopped and started it again with its own: its record must say it
    set the run's settings after `b`, or a fourth key with `b`'s (stale) settings would take the run over as it
    runs (`transitions.runs_as_sent`)."""
    store = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    executor = Executor(store, lambda name, family: env.provider, env.clock, retry=RetryPolicy(max_attempts=1))
    old = task()
    new = dataclasses.replace(task(interval=10), key="SnapshotJob/third/lobby", job="third", spec_hash="h2")
    await env.do(executor.start(old, None, reissue=False))
    a = store.load().records[old.key]
    b = dataclasses.replace(a, key="SnapshotJob/renamed/lobby", started_at=env.clock.now() + 3600)  # before the step
    store.put(b)
    change = model.Change(key=new.key, action=model.Action.CREATE, reason="", provider=new.provider, family=new.family)
    result = await drive(env.clock, executor.apply((change,), {new.key: new}, store.load().records))
    assert result.results[0].ok and "stopped and started again" in str(result.results[0].note)
    assert [(t.running, t.interval) for t in env.sim.tasks("volcengine")][-1] == (True, 10)
    c = store.load().records[new.key]
    assert c.started_at is not None and b.started_at is not None and c.started_at < b.started_at  # the clock's
    assert transitions.settings_since(c) > b.started_at
    assert transitions.runs_as_sent([a, b, c], "SnapshotJob/fourth/lobby", redact_tree(new.request))
    assert not transitions.runs_as_sent([a, b, c], "SnapshotJob/fourth/lobby", redact_tree(old.request))
    store.close()
