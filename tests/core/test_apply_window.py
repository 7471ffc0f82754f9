"""The executor's in-flight window (Little's law), its stop and cancel paths, and retry progress lines.

The executor runs on a real SQLite state; the provider is a fake whose starts wait until the test lets
them finish, so "in flight" is a state the test controls, never a matter of timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.budget import HOLDUP, Holdup, RateBudget
from reconciler.clock import FakeClock
from reconciler.execute import (
    GIVE_UP_AFTER,
    INITIAL_WINDOW,
    MAX_WINDOW,
    MIN_WINDOW,
    ApplyResult,
    Executor,
    Interrupt,
    WindowSizer,
)
from reconciler.model import Action, ApiFamily, Change, DesiredTask, TaskRecord, TaskStatus
from reconciler.providers.base import ErrorKind, StartResult, VendorError
from reconciler.retry import RetryPolicy, RetryReport
from reconciler.state import open_state
from reconciler.state.base import StateStore
from reconciler.transitions import replace_cut_short, start_unconfirmed
from tests.core.factories import desired, record_for


def holdup(budget: str, rate: float, waited: float = 0.0) -> Holdup:
    return Holdup(waited=waited, budget=budget, rate=rate)


def test_the_window_is_rate_times_time_per_change_times_the_margin() -> None:
    sizer = WindowSizer(MAX_WINDOW)
    assert sizer.size == INITIAL_WINDOW  # nothing seen yet
    sizer.observe(holdup("volc/StartSnapshot", 144.0, waited=0.5), 0.55)  # 50 ms besides waiting for slots
    assert sizer.size == 15  # ceil(144 × 0.05 × 2)
    sizer.observe(holdup("zego/StartRecord", 48.0), 0.1)  # a second budget in the same apply adds its share
    assert sizer.size == 15 + 10


def test_the_window_stays_within_its_floor_and_the_cap() -> None:
    fast, slow = WindowSizer(MAX_WINDOW), WindowSizer(10)
    fast.observe(holdup("b", 144.0), 0.001)
    slow.observe(holdup("b", 144.0), 2.0)
    assert (fast.size, slow.size) == (MIN_WINDOW, 10)
    assert WindowSizer(1).size == 1  # --parallelism 1 stays sequential


def test_work_without_a_vendor_call_teaches_nothing() -> None:
    sizer = WindowSizer(MAX_WINDOW)
    sizer.observe(Holdup(), 5.0)
    assert sizer.size == INITIAL_WINDOW


async def test_a_budget_tells_the_holdup_of_the_current_task_what_it_cost() -> None:
    clock = FakeClock()
    budget = RateBudget("volc/StartSnapshot", 100.0, clock, headroom=1.0)
    seen = Holdup()
    HOLDUP.set(seen)
    await budget.take()
    assert (seen.budget, seen.rate) == ("volc/StartSnapshot", 100.0)


class GatedProvider:
    """Starts that stay in flight until `release()`; records what was started."""

    name = "volc"
    family = ApiFamily.VOLC_SNAPSHOT

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.started: list[str] = []

    async def start(self, task: DesiredTask, client_task_id: str | None, **_: object) -> StartResult:
        self.in_flight += 1
        await self.gate.wait()
        self.in_flight -= 1
        self.started.append(task.key)
        return StartResult(vendor_task_id=task.target, vendor_ref={"TaskId": task.target})

    async def until_in_flight(self, count: int) -> None:
        while self.in_flight < count:
            await asyncio.sleep(0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    yield opened
    opened.close()


def creates(count: int) -> tuple[tuple[Change, ...], dict[str, DesiredTask]]:
    tasks = {t.key: t for t in (desired(f"r{i}") for i in range(count))}
    changes = tuple(Change(k, Action.CREATE, "new", "volc", ApiFamily.VOLC_SNAPSHOT) for k in tasks)
    return changes, tasks


def executor(store: StateStore, provider: GatedProvider) -> Executor:
    return Executor(store, lambda _n, _f: provider, FakeClock(), parallelism=2)  # type: ignore[arg-type,return-value]


async def test_a_first_interrupt_starts_nothing_new_and_lets_the_changes_in_flight_finish(store: StateStore) -> None:
    changes, tasks = creates(10)
    provider, interrupt = GatedProvider(), Interrupt()
    run = asyncio.create_task(executor(store, provider).apply(changes, tasks, {}, interrupt=interrupt))
    await provider.until_in_flight(2)
    assert interrupt.press() == 1
    provider.gate.set()
    result = await run
    assert (len(result.results), result.not_started, result.interrupted) == (2, 8, True)
    assert all(r.ok for r in result.results) and len(provider.started) == 2
    assert result.summary() == (
        "Apply interrupted: 2 created, 0 updated, 0 replaced, 0 re-issued, 0 deleted, 0 failed, "
        "0 cut short in flight, 8 not started."
    )
    records = store.load().records
    assert sorted(records) == sorted(provider.started) and all(r.status is TaskStatus.RUNNING for r in records.values())


async def test_a_second_interrupt_cuts_the_changes_in_flight_short_and_still_reports(store: StateStore) -> None:
    changes, tasks = creates(10)
    provider, interrupt = GatedProvider(), Interrupt()
    run = asyncio.create_task(executor(store, provider).apply(changes, tasks, {}, interrupt=interrupt))
    await provider.until_in_flight(2)
    interrupt.press()
    assert interrupt.press() == 2
    result: ApplyResult = await run
    assert (len(result.cut_short), result.not_started, result.failed) == (2, 8, ())
    assert result.summary().endswith("0 failed, 2 cut short in flight, 8 not started.")
    records: dict[str, TaskRecord] = store.load().records
    assert {r.key for r in result.cut_short} == set(records)  # their intent was committed before the call
    assert all(r.status is TaskStatus.PENDING for r in records.values())


async def test_a_cancel_from_outside_cancels_the_changes_in_flight_and_propagates(store: StateStore) -> None:
    changes, tasks = creates(4)
    provider = GatedProvider()
    run = asyncio.create_task(executor(store, provider).apply(changes, tasks, {}))
    await provider.until_in_flight(2)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    provider.gate.set()
    await asyncio.sleep(0)
    assert provider.started == []  # cancelled, not left running behind the caller's back


async def test_an_apply_that_runs_to_its_end_is_not_interrupted(store: StateStore) -> None:
    changes, tasks = creates(5)
    provider = GatedProvider()
    provider.gate.set()
    result = await executor(store, provider).apply(changes, tasks, {})
    assert not result.interrupted and result.summary().startswith("Apply complete: 5 created")
    assert [r.key for r in result.results] == list(tasks)  # in plan order


def test_retry_progress_is_one_line_per_provider_then_one_every_few_seconds() -> None:
    clock = FakeClock()
    lines: list[str] = []
    report = RetryReport(lines.append, clock, RetryPolicy(max_attempts=6), every=5.0)
    down = VendorError(ErrorKind.RETRYABLE, "", "cannot connect to http://h:9 (connection refused)", api="X")
    down.named("volc-prod", "volcengine")
    for _ in range(2000):
        report(down, 1, 1.2)
    other = VendorError(ErrorKind.RETRYABLE, "HTTP 503", "vendor server error", api="StartRecord").named("zego", "zego")
    report(other, 2, 0.5)
    assert lines == [
        "volc-prod: X: cannot connect to http://h:9 (connection refused); retrying (attempt 2/6, next in 1.2 s)",
        "zego: StartRecord: HTTP 503: vendor server error; retrying (attempt 3/6, next in 0.5 s)",
    ]
    clock.advance(5.0)
    report(down, 3, 2.0)
    assert lines[-1].endswith("retrying (attempt 4/6, next in 2.0 s); 1999 other retries since the last line")


class DeadProvider:
    """A vendor that never answers starts or stops (`silent`), or answers some with a terminal error."""

    name = "volc"
    family = ApiFamily.VOLC_SNAPSHOT

    def __init__(self, answer_every: int = 0) -> None:
        self.calls = 0
        self.answer_every = answer_every

    def _fail(self) -> None:
        self.calls += 1
        if self.answer_every and self.calls % self.answer_every == 0:
            raise VendorError(ErrorKind.TERMINAL, "InvalidParameter", "bad room", api="StartSnapshot")
        down = VendorError(ErrorKind.RETRYABLE, "", "cannot connect to http://h:9 (connection refused)", api="X")
        raise down.named("volc", "volcengine")

    async def start(self, task: DesiredTask, client_task_id: str | None, **_: object) -> StartResult:
        self._fail()
        raise AssertionError("unreachable")

    async def stop(self, record: TaskRecord) -> None:
        self._fail()


def sequential(store: StateStore, provider: DeadProvider) -> Executor:
    return Executor(
        store,
        lambda _n, _f: provider,  # type: ignore[arg-type,return-value]
        FakeClock(),
        parallelism=1,
        retry=RetryPolicy(max_attempts=1),
    )


async def test_after_five_changes_in_a_row_got_no_answer_the_rest_of_the_provider_is_not_attempted(
    store: StateStore,
) -> None:
    changes, tasks = creates(8)
    running = record_for(desired("old", job="gone"))
    store.put(running)
    delete = Change(running.key, Action.DELETE, "removed", "volc", ApiFamily.VOLC_SNAPSHOT)
    provider = DeadProvider()
    result = await sequential(store, provider).apply((*changes, delete), tasks, {running.key: running})
    assert provider.calls == GIVE_UP_AFTER
    skipped = "not attempted: volc (volcengine) did not answer: X: cannot connect to http://h:9 (connection refused)"
    assert [r.error for r in result.results[GIVE_UP_AFTER:]] == [skipped] * 4
    assert result.summary().endswith("9 failed (4 of them not attempted).")
    records = store.load().records
    assert [records[k].status for k in tasks] == [TaskStatus.FAILED] * 8  # each new task has its record
    # A start never sent runs nothing: its spec fixed, it is a create, with no stop (no ZEGO find-start) first.
    unsent = [records[r.key] for r in result.results if r.not_attempted and r.key in tasks]
    assert len(unsent) == 3 and not any(map(start_unconfirmed, unsent))
    assert all(map(start_unconfirmed, (records[r.key] for r in result.results[:GIVE_UP_AFTER])))  # these may run
    assert records[running.key].status is TaskStatus.RUNNING  # its stop was not attempted: it still runs
    assert records[running.key].last_error == skipped


async def test_a_replace_cut_short_left_out_stays_that_replace(store: StateStore) -> None:
    """A `--replace` of a lost Volcengine start, cut short after its stop (no vendor id, no error: walk 50a),
    then left out of an apply whose provider stopped answering: its "not attempted" error made it a failed start,
    which the daemon held in its backoff (an Always job), not started at once as that replace (walk 51B-2)."""
    changes, tasks = creates(GIVE_UP_AFTER)
    task = desired("cut")
    cut = record_for(task, TaskStatus.STOPPED, vendor_task_id=None, stop_reason="replaced", start_refused=True)
    assert replace_cut_short(cut)
    store.put(cut)
    replace = Change(cut.key, Action.REPLACE, "cut short", "volc", ApiFamily.VOLC_SNAPSHOT)
    result = await sequential(store, DeadProvider()).apply(
        (*changes, replace), {**tasks, task.key: task}, {cut.key: cut}
    )
    assert result.results[-1].not_attempted
    assert store.load().records[cut.key] == cut  # still that replace: the next apply or the daemon starts it


async def test_the_next_apply_tries_the_provider_again(store: StateStore) -> None:
    changes, tasks = creates(8)
    provider = DeadProvider()
    run = sequential(store, provider)  # the daemon keeps one executor and applies one change at a time
    await run.apply(changes, tasks, {})
    records = store.load().records
    result = await run.apply(changes[-1:], tasks, records)
    assert provider.calls == GIVE_UP_AFTER + 1 and not result.results[0].not_attempted


async def test_an_answer_in_between_keeps_the_provider_tried(store: StateStore) -> None:
    changes, tasks = creates(12)
    provider = DeadProvider(answer_every=GIVE_UP_AFTER)  # a terminal answer breaks each row of no-answers
    result = await sequential(store, provider).apply(changes, tasks, {})
    assert provider.calls == 12 and not any(r.not_attempted for r in result.results)
