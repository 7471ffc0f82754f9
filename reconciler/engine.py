"""Wiring for one plan or apply run: specs + state + providers, used by the CLI, the demo and the daemon.

This is where the pure core meets the edges: it loads, reads state, observes (budgeted), diffs, and hands
the plan to the executor. It holds no policy of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler import transitions
from reconciler.budget import BudgetRegistry
from reconciler.clock import Clock
from reconciler.execute import ApplyResult, ChangeResult, Executor, Interrupt, needs_observation, observe_all
from reconciler.model import (
    Action,
    Change,
    DesiredTask,
    Observed,
    ObservedState,
    ProviderConfig,
    RestartPolicy,
    TaskRecord,
    TaskStatus,
    job_of,
)
from reconciler.moves import load_rehomed
from reconciler.plan import (
    Plan,
    PlanError,
    PlanOptions,
    Selection,
    check_options,
    check_stoppable,
    diff,
)
from reconciler.providers import ProviderPool
from reconciler.retry import RetryHook, RetryPolicy
from reconciler.secrets import upgrade_hash
from reconciler.state.base import Snapshot, StateStore

if TYPE_CHECKING:
    import httpx

__all__ = [
    "apply_plan",
    "collect_tombstones",
    "housekeep",
    "make_plan",
    "persist_observations",
    "persist_restored",
    "provider_pool",
    "record_labels",
    "verify_saved_plan",
]

HTTP_TIMEOUT_SECONDS = 10.0


@contextlib.asynccontextmanager
async def provider_pool(
    configs: Mapping[str, Any], clock: Clock, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[ProviderPool]:
    import httpx  # imported here: commands that never call a vendor never pay for it

    from reconciler.httpclient import StatelessClient

    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    timeout = httpx.Timeout(HTTP_TIMEOUT_SECONDS, connect=5.0)
    async with StatelessClient(timeout=timeout, limits=limits, transport=transport) as http:
        pool = ProviderPool(configs, budgets=BudgetRegistry(clock), clock=clock, http=http)
        try:
            yield pool
        finally:
            await pool.aclose()


@dataclass(frozen=True, slots=True)
class PlanRun:
    plan: Plan
    snapshot: Snapshot
    observed: dict[str, Observed]

    def __repr__(self) -> str:  # asyncio.run reprs what it returns: never 10,000 observations
        return f"PlanRun({self.plan!r}, observed={len(self.observed)})"


async def make_plan(
    desired: Mapping[str, DesiredTask],
    store: StateStore,
    pool: ProviderPool | None,
    clock: Clock,
    *,
    options: PlanOptions,
    paths: Sequence[str],
    retry: RetryPolicy | None = None,
    on_observed: Callable[[str, Observed], None] | None = None,
    providers: Mapping[str, ProviderConfig] | None = None,
    on_retry: RetryHook | None = None,
) -> PlanRun:
    """Read state, observe the tasks that may be running (when `pool` is given), diff. The snapshot returned
    holds the records re-homed to the Provider documents the specs moved them to (`moves.rehome`)."""
    check_options(options, desired)
    snapshot, rehomed = load_rehomed(store, desired, providers or {}, options)
    observed: dict[str, Observed] = {}
    if options.refreshed and pool is not None:
        # Observe exactly what the plan covers: the whole set, unless --target or -l narrow it.
        wanted = Selection(options, {*desired, *snapshot.records})
        relevant = {k: r for k, r in snapshot.records.items() if (t := desired.get(k)) and wanted(k, t.labels)}

        def looked_at(record: TaskRecord) -> bool:  # and a start never confirmed, if an update may do
            return needs_observation(record) or transitions.confirmable(desired[record.key], record)

        observed = await observe_all(
            relevant, pool, clock, retry=retry, on_done=on_observed, on_retry=on_retry, wanted=looked_at
        )
    plan = diff(
        desired,
        snapshot.records,
        observed,
        options=options,
        state_serial=snapshot.serial,
        now=clock.now(),
        paths=paths,
        providers=providers,
        moved=rehomed.moved,
        submitted_as=rehomed.submitted_as,
    )
    return PlanRun(plan, snapshot, observed)


def persist_observations(
    store: StateStore,
    records: Mapping[str, TaskRecord],
    observed: Mapping[str, Observed],
    now: float,
    *,
    still_running_every: float | None = None,
) -> dict[str, TaskRecord]:
    """Before acting, record what the vendor reported (a stop, with its time and reason).

    With `still_running_every` (the daemon), a running task seen running with nothing else new is recorded
    only when its recorded `observed_at` is that many seconds old: the write would change nothing but that
    time. `plan`/`apply` record every observation."""
    updated = dict(records)
    changed: dict[str, TaskRecord] = {}
    for key, obs in observed.items():
        record = records.get(key)
        if record is None or obs.state is ObservedState.UNKNOWN:
            continue
        new = transitions.observed(record, obs, now)
        if new.status is TaskStatus.STOPPED and record.restart_policy is RestartPolicy.NEVER:
            new = new.evolve(status=TaskStatus.DONE)
        if new == record or (
            still_running_every is not None and transitions.still_running(record, new, now - still_running_every)
        ):
            continue
        updated[key] = changed[key] = new
    if changed:  # one commit, not one a task: ~0.1 ms each on SQLite, a round trip each on PostgreSQL
        store.put_many(changed.values())
    return updated


def record_labels(
    store: StateStore, records: Mapping[str, TaskRecord], desired: Mapping[str, DesiredTask]
) -> dict[str, TaskRecord]:
    """Give each record its job's current labels, room selector and restartPolicy, in one commit (none if
    nothing changed).

    A label or restartPolicy edit, or a job switched between named rooms and a selector of the same rooms,
    changes no vendor task, so no action would record it; `state list` (`-l`, its SELECTOR column) and the
    selection of a removed job's tasks (`-l` on a delete) read what the last apply or daemon pass recorded, and
    a run that ends is `done` or `stopped` by the recorded policy (`persist_observations`). A selector's task
    left to end keeps the policy it ran with: `stopped` when it ends, re-issued if its room is chosen again.
    """
    changed = [
        new
        for key, record in records.items()
        if (task := desired.get(key)) is not None
        and (
            new := record.evolve(
                labels=dict(task.labels),
                selector=task.selector,
                home=_home(record, task),
                restart_policy=record.restart_policy if task.ending else task.restart_policy,
            )
        )
        != record
    ]
    if changed:
        store.put_many(changed)
    return {**records, **{record.key: record for record in changed}}


def _home(record: TaskRecord, task: DesiredTask) -> str | None:
    """Where its task lives follows its Provider while that is declared (a record of an older capctl learns it;
    an endpoint edited in place is where capctl reaches the task from then on), so the Provider can be renamed
    later in one edit (`moves.rehome` reads the home of a Provider no longer declared from here). An appId
    edited in place does not move a running task to the new app: that home stays until the task starts again."""
    if record.provider != task.provider or not task.home:
        return record.home
    if record.home is None or record.home.partition(" at ")[0] == task.home.partition(" at ")[0]:
        return task.home
    return record.home


def persist_restored(
    store: StateStore, changes: Sequence[Change], records: Mapping[str, TaskRecord]
) -> dict[str, TaskRecord]:
    """A tombstoned thumbnail back in the specs unchanged, or an edit the vendor did not take reverted, needs no
    call (a no-op), only its record revived.
    Returns the revived records."""
    revived = {}
    for change in changes:
        record = records.get(change.key)
        if change.action is Action.NOOP and record is not None and transitions.revives(record):
            revived[change.key] = transitions.restored(record)
            store.put(revived[change.key])
    return revived


def collect_tombstones(
    store: StateStore, records: Mapping[str, TaskRecord], desired: Mapping[str, DesiredTask], now: float
) -> set[str]:
    """Forget tombstones older than their retention (transitions.TOMBSTONE_RETENTION); returns their keys."""
    expired = {k for k, r in records.items() if k not in desired and transitions.tombstone_expired(r, now)}
    for key in expired:
        store.delete(key)
    return expired


def housekeep(
    store: StateStore,
    plan: Plan,
    desired: Mapping[str, DesiredTask],
    records: Mapping[str, TaskRecord],
    observed: Mapping[str, Observed],
    now: float,
) -> dict[str, TaskRecord]:
    """What an apply does to the state besides the plan's changes (it holds the lock), also when it has none:
    record what the vendor reported (a restartPolicy Never task or one left to end at its room is a no-op,
    but its stop is news), record label and restartPolicy edits, revive restored thumbnails, forget expired tombstones.
    Returns the records as they now are."""
    # The policy first: a run of a job just made Never that the vendor ended is `done`, not `stopped`.
    updated = persist_observations(store, record_labels(store, records, desired), observed, now)
    updated.update(persist_restored(store, plan.changes, updated))
    for key in collect_tombstones(store, updated, desired, now):
        del updated[key]
    return updated


def verify_saved_plan(
    plan: Plan,
    desired: Mapping[str, DesiredTask],
    snapshot: Snapshot,
    providers: Collection[str] | None = None,
    *,
    hash_key: bytes | None = None,
    moved: Collection[str] = (),
) -> None:
    """A saved plan is applied only against the state and specs it was made from (and, given `providers`, only
    if every task it stops still has its Provider: one removed since the plan was made could not stop it).

    A plan made while the state had no fingerprint key (none yet, or one from before keyed hashes) holds bare
    content hashes: with `hash_key`, the state's key now, they are compared as this version computes them.
    `moved`: the keys `snapshot` re-homes now (`moves.load_rehomed`); a planned move of another is stale."""

    def same(planned: str | None, current: str) -> bool:
        return planned is not None and (planned if hash_key is None else upgrade_hash(hash_key, planned)) == current

    if snapshot.serial != plan.state_serial:
        raise PlanError(
            f"the state changed since this plan was made (serial {plan.state_serial} → "
            f"{snapshot.serial}): run `capctl plan` again"
        )
    stale = []
    for change in plan.actionable:
        task = desired.get(change.key)
        if change.action is Action.DELETE:
            record = snapshot.records.get(change.key)
            if task is not None or record is None or not same(change.before_hash, record.spec_hash):
                stale.append(change.key)
        elif (
            task is None
            or not same(change.after_hash, task.spec_hash)
            or (change.action is Action.MOVE and change.key not in moved)  # a Provider's endpoint or appId edited
        ):
            stale.append(change.key)
    if stale:
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        # A room-selector job's tasks also follow room activity, which moves with the specs untouched.
        selector_jobs = {view["job"] for view in plan.selectors}
        rooms = any(job_of(key) in selector_jobs for key in stale)
        what = "the specs, or the rooms their room selectors choose (room activity)," if rooms else "the specs"
        raise PlanError(f"{what} changed since this plan was made ({shown}): run `capctl plan` again")
    stops = (snapshot.records.get(c.key) for c in plan.actionable if c.action in (Action.DELETE, Action.REPLACE))
    check_stoppable((r for r in stops if r is not None), providers)


async def apply_plan(
    plan: Plan,
    desired: Mapping[str, DesiredTask],
    snapshot: Snapshot,
    observed: Mapping[str, Observed],
    store: StateStore,
    pool: ProviderPool,
    clock: Clock,
    *,
    parallelism: int | None,
    retry: RetryPolicy | None = None,
    on_done: Callable[[ChangeResult], None] | None = None,
    on_retry: RetryHook | None = None,
    interrupt: Interrupt | None = None,
) -> ApplyResult:
    now = clock.now()
    records = housekeep(store, plan, desired, snapshot.records, observed, now)
    executor = Executor(store, pool, clock, parallelism=parallelism, retry=retry, on_retry=on_retry)
    return await executor.apply(
        plan.changes, desired, records, on_done=on_done, interrupt=interrupt, requested=plan.options.replace
    )
