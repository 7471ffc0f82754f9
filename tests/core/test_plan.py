"""Table tests of the pure diff: every action, its reason, selectors, prune, and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from reconciler import transitions
from reconciler.model import (
    Action,
    ApiFamily,
    Change,
    DesiredTask,
    JobKind,
    Observed,
    ObservedState,
    ProviderConfig,
    RestartPolicy,
    TaskRecord,
    TaskStatus,
)
from reconciler.plan import (
    PlanError,
    PlanOptions,
    diff,
    field_changes,
    fmt_time,
    near_key_hint,
    plan_from_json,
    plan_to_json,
    selector_matches,
)
from reconciler.render import render_apply_result, render_markdown, render_text, summary_line
from tests.core.factories import desired, record_for

NOW = 1_800_000_000.0


def one(
    task: DesiredTask,
    record: TaskRecord | None = None,
    obs: Observed | None = None,
    *,
    refreshed: bool = True,
    replace: tuple[str, ...] = (),
) -> Change:
    records = {record.key: record} if record else {}
    observed = {task.key: obs} if obs else {}
    options = PlanOptions(refreshed=refreshed, replace=replace)
    plan = diff({task.key: task}, records, observed, options=options, state_serial=3, now=NOW)
    [change] = plan.changes
    return change


def test_new_task_is_created() -> None:
    change = one(desired())
    assert (change.action, change.reason) == (Action.CREATE, "new task: not in state")
    assert change.after is not None and change.before is None
    assert change.after["ImageConfig"]["Interval"] == 5


def test_running_and_unchanged_is_noop() -> None:
    task = desired()
    assert one(task, record_for(task), Observed(ObservedState.RUNNING)).action is Action.NOOP
    assert one(task, record_for(task)).reason == "running (as recorded)"


def test_interval_change_updates_in_place_with_reason() -> None:
    old, new = desired(interval=5), desired(interval=10)
    change = one(new, record_for(old))
    assert change.action is Action.UPDATE
    assert change.reason == "spec changed: the vendor updates it in place"
    assert change.details == ("interval 5s → 10s",)
    assert change.before_hash == old.spec_hash and change.after_hash == new.spec_hash


def test_other_change_replaces_with_field_details() -> None:
    old, new = desired(bucket="a"), desired(bucket="b")
    change = one(new, record_for(old))
    assert change.action is Action.REPLACE
    assert "StorageConfig.TosConfig.Bucket: a → b" in change.details


def test_a_job_moved_to_another_vendor_says_so_instead_of_listing_every_request_field() -> None:
    """A SnapshotJob moved from Volcengine to ZEGO listed 13 fields `X: … → (unset)` and "… and 10 more"."""
    import dataclasses

    old = desired()
    new = dataclasses.replace(
        old, provider="zego", family=ApiFamily.ZEGO_RECORD, request={"RoomId": "lobby"}, spec_hash="z", fixed_hash="z"
    )
    change = one(new, record_for(old))
    assert change.action is Action.REPLACE
    assert change.details == ("provider: volc (volcengine-snapshot) → zego (zego-record)",)


def test_interval_change_on_stopped_task_replaces() -> None:
    """The stop reason a re-issue would show is kept (walk 8c: an edit hid the vendor's stop)."""
    old, new = desired(interval=5), desired(interval=10)
    change = one(new, record_for(old, TaskStatus.STOPPED, stop_reason="IdleTimeOut", stopped_at=NOW - 60))
    assert change.action is Action.REPLACE
    assert change.reason == "spec changed: not running (IdleTimeOut at 2027-01-15 07:59:00Z), start anew"
    failed = one(new, record_for(old, TaskStatus.FAILED, last_error="InvalidParameter"))
    assert failed.reason == "spec changed: not running, start anew"


@pytest.mark.parametrize("family", [ApiFamily.VOLC_SNAPSHOT, ApiFamily.ZEGO_RECORD, ApiFamily.ZEGO_RECORD_LEGACY])
def test_a_spec_fixed_after_its_only_start_was_refused_is_a_create(family: ApiFamily) -> None:
    """Nothing ever ran (walk 21c's wording, walk 22a): planned and counted as a create, not `replace … not
    running, start anew`; a refused re-issue (a run was) and a start that may run stay replaces."""
    import dataclasses

    old, new = (dataclasses.replace(desired(interval=i), family=family) for i in (5, 10))
    refused = record_for(
        old, TaskStatus.FAILED, vendor_task_id=None, client_task_id=None, start_refused=True, last_error="AppId: x"
    )
    change = one(new, refused)
    assert (change.action, change.reason) == (
        Action.CREATE,
        "previous start failed: AppId: x; spec changed since: started with it",
    )
    assert change.details == ("ImageConfig.Interval: 5 → 10",)
    assert one(new, refused.evolve(reissuing=True)).action is Action.REPLACE
    lost = refused.evolve(start_refused=False, client_task_id="c1")  # answers lost: it may run, stopped first
    assert one(new, lost).reason.startswith("spec changed since a start that failed: ")


@pytest.mark.parametrize(
    ("restart", "status"),
    [
        (RestartPolicy.ALWAYS, TaskStatus.DORMANT),
        (RestartPolicy.ALWAYS, TaskStatus.STOPPED),
        (RestartPolicy.NEVER, TaskStatus.DONE),  # walk 17B-5: a run that ended under Never is `done`, reason kept
    ],
)
def test_a_changed_spec_of_a_recorded_stop_keeps_the_recorded_reason_over_the_status_querys(
    restart: RestartPolicy, status: TaskStatus
) -> None:
    """Walk 16D-6: the callback's `idle timeout (ZEGO quit_reason 3)` read as the query's `ended (ZEGO status 4)`."""
    old = desired(family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING, restart=restart)
    new = dataclasses.replace(old, spec_hash="sha256:new", fixed_hash="sha256:new")
    reason = "idle timeout (ZEGO quit_reason 3)"
    record = record_for(old, status, stop_reason=reason, stopped_at=NOW - 60)
    change = one(new, record, Observed(ObservedState.STOPPED, reason="ended (ZEGO status 4)", ended_at=NOW - 59))
    assert change.action is Action.REPLACE
    assert change.reason == f"spec changed: not running ({reason} at 2027-01-15 07:59:00Z), start anew"


@pytest.mark.parametrize("state", [ObservedState.STOPPED, ObservedState.FAILED, ObservedState.NOT_FOUND])
def test_interval_change_on_a_task_the_refresh_sees_ended_replaces(state: ObservedState) -> None:
    """Recorded running, but the vendor says it ended: UpdateSnapshot would answer ErrorActiveTaskNotFound."""
    old, new = desired(interval=5), desired(interval=10)
    change = one(new, record_for(old), Observed(state, reason="idle timeout (Volcengine IdleTimeOut)"))
    assert change.action is Action.REPLACE and change.reason.startswith("spec changed: not running (")
    if state is ObservedState.STOPPED:
        assert change.reason == "spec changed: not running (idle timeout (Volcengine IdleTimeOut)), start anew"


def test_vendor_idle_stop_is_reissued_with_reason_and_time() -> None:
    """The time on the daemon's clock, as the record will keep it: the vendor's is 5 min ahead here."""
    task = desired()
    reason = "idle timeout (Volcengine IdleTimeOut)"
    obs = Observed(ObservedState.STOPPED, reason=reason, started_at=NOW + 100, ended_at=NOW + 287)
    change = one(task, record_for(task, started_at=NOW - 200), obs)
    assert change.action is Action.REISSUE
    assert change.reason == "vendor stopped it: idle timeout (Volcengine IdleTimeOut) at 2027-01-15 07:59:47Z"
    no_start = Observed(ObservedState.STOPPED, reason=reason, ended_at=1_800_000_487.0)
    assert one(task, record_for(task), no_start).reason == "vendor stopped it: idle timeout (Volcengine IdleTimeOut)"


def test_rollover_reason() -> None:
    task = desired(family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING)
    obs = Observed(ObservedState.STOPPED, reason="max duration (ZEGO quit_reason 4)", rollover=True)
    assert one(task, record_for(task), obs).reason == "vendor stopped it (rollover): max duration (ZEGO quit_reason 4)"


def test_not_found_is_reissued() -> None:
    task = desired()
    change = one(task, record_for(task), Observed(ObservedState.NOT_FOUND))
    assert (
        change.action is Action.REISSUE
        and "vendor stopped it: not found at the vendor (stopped, or older" in change.reason
    )


def test_unknown_observation_changes_nothing() -> None:
    task = desired()
    change = one(task, record_for(task), Observed(ObservedState.UNKNOWN, detail="timeout"))
    assert change.action is Action.NOOP and "could not observe" in change.reason


def test_restart_policy_never_is_not_reissued() -> None:
    task = desired(restart=RestartPolicy.NEVER)
    change = one(task, record_for(task), Observed(ObservedState.STOPPED, reason="IdleTimeOut"))
    assert change.action is Action.NOOP and "restartPolicy Never" in change.reason


def test_a_run_ended_under_never_is_reissued_once_the_job_is_always() -> None:
    task = desired()  # restartPolicy Always; the record: the run of its Never days, ended
    rec = record_for(task, TaskStatus.DONE, stop_reason="IdleTimeOut", stopped_at=NOW)
    assert one(desired(restart=RestartPolicy.NEVER), rec, refreshed=False).action is Action.NOOP
    change = one(task, rec, refreshed=False)
    assert change.action is Action.REISSUE
    assert change.reason.endswith(
        "IdleTimeOut at 2027-01-15 08:00:00Z; ended under restartPolicy Never, the job is Always now"
    )


def test_recorded_stop_is_reissued_without_refresh() -> None:
    task = desired()
    rec = record_for(task, TaskStatus.STOPPED, stop_reason="IdleTimeOut", stopped_at=NOW)
    change = one(task, rec, refreshed=False)
    assert change.action is Action.REISSUE and "IdleTimeOut" in change.reason


def test_dormant_is_left_alone_and_says_when_it_wakes() -> None:
    task = desired()
    rec = record_for(task, TaskStatus.DORMANT, unproductive_runs=4, next_attempt_at=NOW + 600)
    change = one(task, rec, refreshed=False)
    assert change.action is Action.NOOP and "dormant after 5 idle runs" in change.reason  # the 5th just ended


def test_dormant_counts_the_run_that_just_idled_out_or_names_the_emptied_room() -> None:
    """The record counts an idle run only when the task starts again; the daemon makes a task dormant after
    its first idle-out in a room known empty (walk C, finding 2: it read "dormant after 0 idle runs")."""
    task = desired()
    idle = record_for(task, TaskStatus.DORMANT, started_at=NOW - 60, stopped_at=NOW - 30, next_attempt_at=NOW + 600)
    assert "dormant after 1 idle run;" in one(task, idle, refreshed=False).reason
    productive = idle.evolve(productive=True)
    assert "dormant after its room emptied;" in one(task, productive, refreshed=False).reason
    # Walk 25e: an idle run in a room the callbacks said is empty: the room is why, not the count (the status
    # page said "dormant (empty room)", the plan "dormant after 1 idle run").
    known_empty = idle.evolve(room_empty=True)
    assert "dormant after its room emptied; wakes on room activity" in one(task, known_empty, refreshed=False).reason


def test_a_task_waiting_after_vendor_faults_says_so() -> None:
    """`capctl wake` names what a task waited after: faults are not idle runs (nor an emptied room)."""
    from reconciler.plan import waited_after

    task = desired()
    faulted = record_for(task, TaskStatus.STOPPED, stop_reason="network lost (ZEGO quit_reason 6)", fault_runs=1)
    waiting = faulted.evolve(started_at=NOW - 60, stopped_at=NOW - 58, next_attempt_at=NOW + 5)
    assert waited_after(waiting) == "2 vendor faults in a row"
    assert waited_after(waiting.evolve(status=TaskStatus.DORMANT)) == "its room emptied"
    # (not "3 idle runs": the idle-outs before the fault did not make it dormant)
    assert waited_after(waiting.evolve(status=TaskStatus.DORMANT, unproductive_runs=3)) == "its room emptied"


def test_an_edit_of_a_task_dormant_in_its_empty_room_waits_for_the_room_and_one_after_idle_runs_starts() -> None:
    """Walk 16D-5: an edit merged at night replaced every dormant task, started into its empty room. Dormant
    because callbacks said its room is empty (`room_empty`), the edit waits for the room's activity; dormant
    after idle runs seen by polling only (nothing says the room is empty), the edit may be the fix: a replace."""
    old, task = desired(bucket="audit"), desired(bucket="audit-2")
    bucket = "StorageConfig.TosConfig.Bucket: audit → audit-2"
    slept = record_for(old, TaskStatus.DORMANT, stop_reason="IdleTimeOut", productive=True, next_attempt_at=NOW + 600)
    empty = slept.evolve(room_empty=True)
    stopped = Observed(ObservedState.STOPPED, reason="IdleTimeOut", ended_at=NOW - 900)
    for seen in (stopped, None):
        change = one(task, empty, seen, refreshed=seen is not None)
        assert change.action is Action.NOOP and change.details == (bucket,), change
        assert change.reason.startswith("spec changed: dormant after its room emptied; starts with the new settings")
        assert f"on room activity or at {fmt_time(NOW + 600)}" in change.reason
        assert f"capctl wake {task.key}" in change.reason
    plan = diff({task.key: task}, {task.key: empty}, {}, options=PlanOptions(refreshed=False), state_serial=1, now=NOW)
    assert plan.notes[0] == (
        f"1 dormant task(s) whose spec changed ({task.key}: {bucket}) left alone: {task.key}: {plan.changes[0].reason}."
    ), plan.notes
    assert one(task, empty, replace=(task.key,)).action is Action.REPLACE  # on purpose
    assert one(task, empty, Observed(ObservedState.RUNNING)).action is Action.REPLACE  # running: just a replace
    assert one(task, slept, stopped).action is Action.REPLACE  # polling only
    assert one(task, empty.evolve(provider="volc-2")).action is Action.REPLACE  # another Provider: another room
    assert one(old, empty).reason.startswith("dormant after its room emptied; wakes on room activity")


def test_a_task_waiting_when_its_job_is_made_never_is_said_to_wait_for_nothing() -> None:
    """Walk 31a-3: a dormant or backing-off task whose job is then made restartPolicy Never (no hash change)
    was planned `dormant after …; wakes on room activity or at T` and `capctl wake` said `Woke`, though nothing
    starts it: it is `dormant; restartPolicy Never`, as a stopped one is. An edit made with the switch still
    waits for its empty room (docs/spec-language.md: an edit starts it once more)."""
    from reconciler.waking import plan_wake

    old, never = desired(), desired(restart=RestartPolicy.NEVER)
    assert old.spec_hash == never.spec_hash
    slept = record_for(old, TaskStatus.DORMANT, next_attempt_at=NOW + 600).evolve(room_empty=True)
    assert one(never, slept, refreshed=False).reason == "dormant; restartPolicy Never"
    edited = desired(bucket="audit-2", restart=RestartPolicy.NEVER)
    assert one(edited, slept, refreshed=False).reason.startswith("spec changed: dormant after its room emptied;")
    # As the daemon leaves it (`Reconciler._drop_slot`), or an apply records the policy: nothing to wake.
    left = slept.evolve(status=TaskStatus.STOPPED, restart_policy=RestartPolicy.NEVER, unproductive_runs=2)
    wake = plan_wake([old.key], [old.key], {old.key: left}.get)
    assert (wake.woken, wake.lines) == (
        [],
        [
            f"{old.key} is stopped: nothing to wake; restartPolicy Never: nothing re-issues it (an edit of its "
            "job, or apply --replace, starts it once more)."
        ],
    )


def test_no_headline_says_the_jobs_match_while_an_edit_waits_for_its_room() -> None:
    """Walk 17c: "No changes. The declared capture jobs match the recorded and observed state." and "1 unchanged"
    above the note on an edit waiting for its empty room; the spec does not match the record yet. Text, markdown
    and JSON say it alike; an unedited dormant task still matches (its spec is the record's)."""
    from rich.console import Console

    old, task = desired(bucket="audit"), desired(bucket="audit-2")
    empty = record_for(old, TaskStatus.DORMANT, next_attempt_at=NOW + 600).evolve(room_empty=True)
    for spec, waiting in ((task, 1), (old, 0)):
        plan = plan_to_json(
            diff({spec.key: spec}, {old.key: empty}, {}, options=PlanOptions(), state_serial=1, now=NOW)
        )
        console = Console(record=True, width=200)
        render_text(plan, console)
        text, markdown = console.export_text(), render_markdown(plan)
        assert plan["edits_waiting"] == waiting and plan["summary"]["no-op"] == 1, plan
        if waiting:
            headline = (
                "No changes now, but the specs do not match the state yet: 1 spec edit waits for its empty room "
                "(see the note)."
            )
            assert text.startswith(headline + "\n") and "match the recorded" not in text, text
            assert headline in markdown and "No changes.\n" not in markdown, markdown
            assert summary_line(plan).endswith(", 0 unchanged, 1 edit waiting for its room.")
        else:
            assert text.startswith("No changes. The declared capture jobs match the recorded and observed state.")
            assert summary_line(plan).endswith(", 1 unchanged.") and "waiting" not in summary_line(plan)
        assert f"**{summary_line(plan)}**" in markdown and summary_line(plan) in text


@pytest.mark.parametrize("state", [ObservedState.STOPPED, ObservedState.NOT_FOUND])
def test_dormant_stays_dormant_when_refresh_sees_it_stopped(state: ObservedState) -> None:
    from reconciler.transitions import observed

    task = desired()
    rec = record_for(task, TaskStatus.DORMANT, unproductive_runs=3, next_attempt_at=NOW + 600)
    obs = Observed(state, reason="IdleTimeOut", ended_at=NOW - 900)
    change = one(task, rec, obs)
    assert change.action is Action.NOOP and "dormant after 4 idle runs" in change.reason
    assert f"capctl wake {task.key}" in change.reason
    plan = diff({task.key: task}, {task.key: rec}, {task.key: obs}, options=PlanOptions(), state_serial=1, now=NOW)
    assert plan.notes == (f"1 dormant task(s) left alone: {task.key}: {change.reason}.",)
    assert observed(rec, obs, NOW).status is TaskStatus.DORMANT  # apply persists the observation: still dormant
    assert one(task, rec, obs, replace=(task.key,)).action is Action.REPLACE
    assert one(task, rec, Observed(ObservedState.RUNNING)).reason == "running"


def test_a_dormant_task_seen_running_forgets_its_slot_and_is_decided_afresh_when_it_stops_again() -> None:
    """A dormant record a refresh sees running (a vendor status lagging the idle-out callback, the same
    Volcengine TaskId started elsewhere) runs: its old slot and empty room no longer hold (walk 18e). Kept,
    the run's next end was taken for a wait: plan and the daemon honoured that stale slot instead of deciding."""
    from reconciler.daemon import policy
    from reconciler.transitions import observed

    task = desired()
    slept = dict(started_at=NOW - 4000, stopped_at=NOW - 3980, unproductive_runs=3, next_attempt_at=NOW + 3000)
    rec = record_for(task, TaskStatus.DORMANT, room_empty=True, **slept)
    running = observed(rec, Observed(ObservedState.RUNNING), NOW - 600)
    assert running.status is TaskStatus.RUNNING
    assert running.next_attempt_at is None and not running.room_empty
    ended = Observed(ObservedState.STOPPED, reason="idle timeout (Volcengine IdleTimeOut)")
    stopped = observed(running, ended, NOW)
    assert stopped.status is TaskStatus.STOPPED and stopped.next_attempt_at is None
    assert one(task, stopped, refreshed=False).action is Action.REISSUE  # not "backing off" to the old slot
    decision = policy.reissue_decision(stopped, NOW)
    assert decision.delay < 3000 and not decision.dormant


def test_a_task_seen_running_again_starts_its_run_then_and_forgets_the_last_stop() -> None:
    """A dormant (or backing-off) record seen running kept the old run's start and stop reason (walk 19c): the
    next end was measured from the old start, so a run that idled out looked hours long, productive, and reset
    the idle count. Its start is the vendor's (never after now), else when it was seen; a running record keeps
    the start it has."""
    from reconciler.transitions import observed, was_productive

    task = desired()  # idle timeout 180 s
    old = dict(started_at=NOW - 4000, stopped_at=NOW - 3980, stop_reason="idle timeout (Volcengine IdleTimeOut)")
    for status in (TaskStatus.DORMANT, TaskStatus.STOPPED):
        rec = record_for(task, status, unproductive_runs=3, next_attempt_at=NOW + 3000, **old)
        running = observed(rec, Observed(ObservedState.RUNNING, started_at=NOW - 185), NOW - 100)
        assert (running.status, running.started_at, running.stopped_at, running.stop_reason) == (
            TaskStatus.RUNNING,
            NOW - 185,
            None,
            None,
        )
        ended = observed(running, Observed(ObservedState.STOPPED, reason="ended"), NOW)  # no vendor times
        assert ended.stopped_at == NOW and not was_productive(ended)  # 185 s: one idle timeout, not 4,000 s
        seen = observed(rec, Observed(ObservedState.RUNNING), NOW - 100)  # no start time: when it was seen
        assert (seen.started_at, seen.stop_reason) == (NOW - 100, None)
        ahead = observed(rec, Observed(ObservedState.RUNNING, started_at=NOW + 60), NOW)  # vendor clock ahead
        assert ahead.started_at == NOW
    runs = record_for(task, TaskStatus.RUNNING, started_at=NOW - 4000)
    assert observed(runs, Observed(ObservedState.RUNNING, started_at=NOW - 185), NOW).started_at == NOW - 4000


def test_a_task_backing_off_is_left_to_its_slot_as_a_dormant_one_is() -> None:
    """The daemon backs off a task that idled out (walk 10G-8): a PR's plan or an hourly drift check against
    its state reported that wait as a re-issue ("changes to apply", exit 2) though nothing changed, and apply
    would re-issue into the empty room the backoff spares. Until its slot it is left alone, and said so."""
    from reconciler.transitions import observed, woken

    task = desired()
    rec = record_for(
        task,
        TaskStatus.STOPPED,
        stop_reason="idle timeout (Volcengine IdleTimeOut)",
        started_at=NOW - 300,
        stopped_at=NOW - 120,
        unproductive_runs=1,
        next_attempt_at=NOW + 60,
    )
    obs = Observed(ObservedState.STOPPED, reason="idle timeout (Volcengine IdleTimeOut)", ended_at=NOW - 120)
    for seen in (obs, None):  # refreshed, or from the record alone
        change = one(task, rec, seen, refreshed=seen is not None)
        assert change.action is Action.NOOP
        assert change.reason == (
            "backing off after 2 idle runs; the daemon re-issues it at 2027-01-15 08:01:00Z "
            f"(`capctl wake {task.key}`, with --daemon URL while a daemon runs, or --replace starts it now)"
        )
    plan = diff({task.key: task}, {task.key: rec}, {task.key: obs}, options=PlanOptions(), state_serial=1, now=NOW)
    assert plan.changes[0].action is Action.NOOP
    assert plan.notes == (f"1 backing-off task(s) left alone: {task.key}: {plan.changes[0].reason}.",)
    assert observed(rec, obs, NOW).next_attempt_at == NOW + 60  # apply persists the observation: still waiting
    # What overrides or ends the wait: --replace, `capctl wake`, the slot passing, a changed spec, a run seen
    assert one(task, rec, obs, replace=(task.key,)).action is Action.REPLACE
    awake = woken(rec)
    assert awake is not None and one(task, awake, obs).action is Action.REISSUE
    assert one(task, rec.evolve(next_attempt_at=NOW), obs).action is Action.REISSUE
    assert one(desired(interval=10), rec, obs).action is not Action.NOOP
    assert one(task, rec, Observed(ObservedState.RUNNING)).reason == "running"
    assert diff({task.key: task}, {task.key: rec}, {}, options=PlanOptions(), state_serial=1, now=NOW + 61).notes == ()
    # restartPolicy Never is never re-issued at all: no wait to speak of
    never = desired(restart=RestartPolicy.NEVER)
    assert "restartPolicy Never" in one(never, rec.evolve(spec_hash=never.spec_hash), obs).reason


def test_wake_clears_dormancy_and_backoff_so_the_task_is_reissued() -> None:
    from reconciler.transitions import woken

    task = desired()
    rec = record_for(task, TaskStatus.DORMANT, unproductive_runs=4, next_attempt_at=NOW + 600)
    awake = woken(rec)
    assert awake is not None
    assert (awake.status, awake.next_attempt_at, awake.unproductive_runs) == (TaskStatus.STOPPED, None, 0)
    assert one(task, awake, refreshed=False).action is Action.REISSUE
    assert woken(record_for(task)) is None and woken(record_for(task, TaskStatus.STOPPED)) is None


def test_a_wake_of_many_whole_keys_looks_each_up_instead_of_comparing_it_with_every_key() -> None:
    """Walk 20A-1: the daemon answers `wake --daemon` on its loop, and compared each KEY with every task key:
    2,000 keys at 10,000 tasks were 20 million comparisons, about 10 s with the loop (its lease) stopped."""
    import time

    from reconciler.waking import MAX_NAMED, plan_wake

    known = [f"SnapshotJob/job-{j}/room-{r}" for j in range(100) for r in range(100)]
    asleep = record_for(desired(), TaskStatus.DORMANT, next_attempt_at=NOW + 600)
    began = time.perf_counter()
    wake = plan_wake(known[::5], known, lambda key: asleep.evolve(key=key))
    typos = plan_wake([f"SnapshotJob/job-x{i}/room-{i}" for i in range(2_000)], known, lambda key: None)
    assert time.perf_counter() - began < 2.0
    assert [r.key for r in wake.woken] == known[::5] and not wake.unknown
    assert len(typos.unknown) == 2_000 and typos.problem.count("'SnapshotJob/job-x") == MAX_NAMED, typos.problem
    assert ", …" in typos.problem and "(did you mean SnapshotJob/job-0/room-0?)" in typos.problem
    globs = plan_wake(["SnapshotJob/job-1", "SnapshotJob/job-2*/room-1"], known, lambda key: asleep.evolve(key=key))
    assert len(globs.woken) == 100 + 11  # a kind/name and a glob are still compared with every key


def test_a_refusal_of_many_keys_near_no_task_looks_for_the_nearest_a_few_times_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Walk 30c: a sync or wake 404 of 20 KEYs near no task looked for a nearest task 20 times, each a scan of
    every key (0.8 s on the daemon's loop at 20,000 keys); the first few KEYs are looked for, still hinted."""
    from reconciler import waking

    looks: list[str] = []

    def counted(selector: str, keys: Iterable[str]) -> str:
        looks.append(selector)
        return near_key_hint(selector, keys)

    monkeypatch.setattr(waking, "near_key_hint", counted)
    known = [f"SnapshotJob/job-{j}/room-{r}" for j in range(10) for r in range(10)]
    far = [f"RecordingJob/zz{i}/q" for i in range(25)]
    assert "(did you mean" not in waking.plan_wake(far, known, lambda key: None).problem
    assert len(looks) == waking.MAX_HINTED < waking.MAX_NAMED
    looks.clear()
    near = waking.plan_wake([*far[:2], "SnapshotJob/job-1/room-x1"], known, lambda key: None).problem
    assert "(did you mean SnapshotJob/job-1/room-1?)" in near and len(looks) == 3


def test_a_wake_of_a_selector_task_that_ended_with_its_room_says_what_starts_it() -> None:
    """Walk 27b: `capctl wake SnapshotJob/live/live-1` of a selector task whose room emptied said only "is
    stopped: nothing to wake", with no slot in `state list`: stuck? Its room, selected again, starts it."""
    from reconciler.waking import plan_wake

    ended = record_for(desired(), TaskStatus.STOPPED, selector="room-*")
    slotted = ended.evolve(next_attempt_at=NOW + 60)  # backing off: woken, not explained
    named = record_for(desired(), TaskStatus.STOPPED)
    records = {"SnapshotJob/sel/room-1": ended, "SnapshotJob/hall/h1": named}
    wake = plan_wake(list(records), list(records), records.get)
    assert wake.lines == [
        "SnapshotJob/sel/room-1 is stopped: nothing to wake; it ended with its room, and starts again when its "
        "room-selector job selects the room again (active, within maxRooms).",
        "SnapshotJob/hall/h1 is stopped: nothing to wake.",
    ]
    assert [r.key for r in plan_wake(["K"], ["K"], {"K": slotted.evolve(key="K")}.get).woken] == ["K"]


def test_failed_start_is_retried() -> None:
    task = desired()
    change = one(task, record_for(task, TaskStatus.FAILED, last_error="InvalidParameter: bad"))
    assert change.action is Action.CREATE and "InvalidParameter: bad" in change.reason


def test_interrupted_start_resumes_with_client_task_id() -> None:
    task = desired(family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING)
    rec = record_for(task, TaskStatus.PENDING, vendor_task_id=None, client_task_id="capctl-abc")
    change = one(task, rec)
    assert change.action is Action.CREATE and "ClientTaskId" in change.reason


def test_replace_requested() -> None:
    task = desired()
    change = one(task, record_for(task), replace=(task.key,))
    assert (change.action, change.reason, change.details) == (Action.REPLACE, "replace requested", ())
    # Walk 8c: a spec edit of the same task was not shown, though the new spec is what starts.
    edited = one(desired(idle=240), record_for(task), replace=(task.key,))
    assert (edited.reason, edited.details) == ("replace requested", ("MaxIdleTime: 180 → 240",))


def test_a_zego_cloudrecord_endpoint_edited_in_place_says_on_each_start_what_may_run_on_unseen() -> None:
    """The Provider's cloudrecordEndpoint edited in place to another environment: each recording it started is
    "not found" there and planned as a re-issue, which leaves the old one running unseen; the row said only
    `not found at the vendor`. Said on each row that starts (re-issue, replace, a start taken up again), as the
    Volcengine appId edit's; a row seen running at the new endpoint (a proxy) is unchanged."""
    old, new = "https://cloudrecord-api.zego.im", "https://cloudrecord-test.zego.im"
    homes = [
        ProviderConfig(name="volc", type="zego", app_id="1", cloudrecord_endpoint=url).home(ApiFamily.ZEGO_RECORD)
        for url in (old, new)
    ]
    task = dataclasses.replace(desired(family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING), home=homes[1])
    ran = record_for(task, home=homes[0])
    note = (
        f"its Provider's cloudrecordEndpoint changed from {old} to {new}: if that is another ZEGO environment, the "
        f"recording started at {old} is not stopped and runs on unseen until its idle timeout or maximum duration "
        "(put the old endpoint back to keep it in view)"
    )
    gone = one(task, ran, Observed(ObservedState.NOT_FOUND))
    assert gone.action is Action.REISSUE and gone.reason.endswith(f"(stopped, or older than its query window); {note}")
    replaced = one(task, ran, Observed(ObservedState.NOT_FOUND), replace=(task.key,))
    assert (replaced.action, replaced.reason) == (Action.REPLACE, f"replace requested; {note}")
    cut_short = record_for(task, TaskStatus.PENDING, vendor_task_id=None, client_task_id="capctl-abc", home=homes[0])
    assert one(task, cut_short).reason.endswith(note)
    # Walk 18H-1: a start refused (the old endpoint a mistyped path answering 404) or a recorded stop leaves
    # nothing running there; the row said a recording "runs on unseen" after fixing the endpoint's typo.
    refused = record_for(task, TaskStatus.FAILED, vendor_task_id=None, last_error="HTTP 404", home=homes[0])
    assert one(task, refused).reason == "previous start failed: HTTP 404"
    ended = record_for(task, TaskStatus.STOPPED, stop_reason="idle timeout (ZEGO quit_reason 3)", home=homes[0])
    assert note not in one(task, ended).reason
    assert one(task, ran, Observed(ObservedState.RUNNING)).reason == "running"
    assert one(task, record_for(task, home=homes[1]), Observed(ObservedState.NOT_FOUND)).reason.endswith("window)")


def test_replace_unknown_key_is_an_error() -> None:
    with pytest.raises(PlanError, match="no task with key"):
        diff({}, {}, {}, options=PlanOptions(replace=("SnapshotJob/x/y",)), state_serial=0, now=NOW)


def test_thumbnail_submitted_once_and_again_when_changed() -> None:
    task = desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL)
    assert one(task, record_for(task, TaskStatus.DONE)).action is Action.NOOP
    changed = desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL, bucket="other")
    assert one(changed, record_for(task, TaskStatus.DONE)).action is Action.REPLACE


def test_a_thumbnail_whose_submission_failed_is_submitted_again_saying_why() -> None:
    task = desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL)
    failed = record_for(task, TaskStatus.FAILED, last_error="MediaThumbnails: 1000: request failed")
    change = one(task, failed)
    assert (change.action, change.reason) == (
        Action.CREATE,
        "previous submission failed: MediaThumbnails: 1000: request failed",
    )


def stopped_rec(task: DesiredTask) -> TaskRecord:
    return record_for(task, TaskStatus.STOPPED).evolve(key="SnapshotJob/j/s", target="s")


def test_prune_and_no_prune() -> None:
    gone = desired(room="old")
    rec = record_for(gone)
    plan = diff({}, {gone.key: rec}, {}, options=PlanOptions(), state_serial=1, now=NOW)
    assert [(c.action, c.reason) for c in plan.changes] == [(Action.DELETE, "removed from specs")]
    kept = diff({}, {gone.key: rec}, {}, options=PlanOptions(prune=False), state_serial=1, now=NOW)
    assert kept.changes == () and "kept running (--no-prune)" in kept.notes[0]
    thumb = desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL, room="f")
    done = {gone.key: rec, thumb.key: record_for(thumb, TaskStatus.DONE), "SnapshotJob/j/s": stopped_rec(gone)}
    kept = diff({}, done, {}, options=PlanOptions(prune=False), state_serial=1, now=NOW)
    assert kept.notes == ("1 task(s) removed from the specs are kept running (--no-prune).",)  # not the finished ones
    stopped = record_for(gone, TaskStatus.STOPPED)
    plan = diff({}, {gone.key: stopped}, {}, options=PlanOptions(), state_serial=1, now=NOW)
    assert "kept as a tombstone" in plan.changes[0].reason


def test_tombstones_are_never_deleted_again_and_a_restored_spec_resumes() -> None:
    from reconciler.transitions import removed

    gone = desired(room="old")
    tomb = removed(record_for(gone, reissue_count=3, unproductive_runs=2), NOW)
    assert (tomb.status, tomb.stop_reason, tomb.stopped_at, tomb.removed_at) == (
        TaskStatus.REMOVED,
        "removed from specs",
        NOW,
        NOW,
    )
    assert tomb.vendor_task_id == "vt-old" and tomb.unproductive_runs == 2  # the history stays
    plan = diff({}, {gone.key: tomb}, {}, options=PlanOptions(), state_serial=1, now=NOW)
    assert plan.changes == () and plan.notes == ()
    change = one(gone, tomb)
    assert (
        change.action is Action.CREATE and "restored to the specs" in change.reason and "3 re-issues" in change.reason
    )


def test_a_restored_thumbnail_with_the_same_content_is_not_submitted_again() -> None:
    from reconciler.transitions import removed

    task = desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL)
    tomb = removed(record_for(task, TaskStatus.DONE), NOW)
    assert tomb.stop_reason is None  # nothing was stopped: a thumbnail is one-shot
    same = one(task, tomb)
    assert same.action is Action.NOOP and "not again" in same.reason
    changed = desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL, bucket="other")
    assert one(changed, tomb).action is Action.CREATE
    never_submitted = removed(record_for(task, TaskStatus.FAILED, vendor_task_id=None), NOW)
    assert one(task, never_submitted).action is Action.CREATE


def test_restored_thumbnails_left_unsubmitted_are_named_in_a_note_as_apply_records_them() -> None:
    """20d-1: a thumbnail job's file put back unchanged is a no-op, which the text and markdown views do not
    list: the plan said only "No changes. The declared capture jobs match the recorded … state", yet apply
    turns each tombstone back into a `done` record. A note says so, as for the other no-ops apply records."""
    from reconciler.plan import fmt_time
    from reconciler.transitions import removed

    tasks = [desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL, room=f"f{i}") for i in range(3)]
    tombs = {t.key: removed(record_for(t, TaskStatus.DONE), NOW) for t in tasks}
    plan = diff({t.key: t for t in tasks}, tombs, {}, options=PlanOptions(), state_serial=1, now=NOW)
    assert {c.action for c in plan.changes} == {Action.NOOP}
    assert plan.notes == (
        f"3 thumbnail task(s) restored to the specs as they were submitted before, so not submitted again; "
        f"apply records them as done (no vendor call): {tasks[0].key} (removed at {fmt_time(NOW)}) (and 2 more).",
    )
    running = {t.key: record_for(t, TaskStatus.DONE) for t in tasks}  # never removed: nothing to record
    assert diff({t.key: t for t in tasks}, running, {}, options=PlanOptions(), state_serial=1, now=NOW).notes == ()


def test_a_thumbnail_edit_not_taken_reverted_is_its_accepted_submission_named_in_a_note() -> None:
    """20d-6: the entry edited back to what ZEGO took, after the edit's submission was refused, is a no-op."""
    from reconciler.transitions import failed, intent

    task = desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL)
    edit = desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL, bucket="other")
    refused = failed(intent(edit, record_for(task, TaskStatus.DONE), NOW, reissue=False, replace=True), "1000", NOW)
    assert refused.vendor_task_id is None and refused.spec_hash == edit.spec_hash
    back = one(task, refused)
    assert back.action is Action.NOOP and "not submitted again" in back.reason
    assert one(edit, refused).action is Action.CREATE  # the refused edit itself: tried again
    plan = diff({task.key: task}, {task.key: refused}, {}, options=PlanOptions(), state_serial=1, now=NOW)
    assert plan.notes == (
        "1 thumbnail task(s) edited back to the entry ZEGO took before (the edit's submission was refused or its"
        f" answer lost), so not submitted again; apply records them as done (no vendor call): {task.key}.",
    )
    # Not an edit waiting for its room (17c's headline): the specs match what ZEGO took.
    assert plan.edits_waiting() == 0 and "1 unchanged." in summary_line(plan_to_json(plan))


def test_a_thumbnail_edit_whose_answer_was_lost_reverted_is_not_said_to_be_refused() -> None:
    """24a: the edit's submission sent and its answer lost (pending) may have been taken by ZEGO: the no-op and
    the note said "was not taken", which only a refusal tells."""
    from reconciler.transitions import intent

    task = desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL)
    edit = desired(family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL, bucket="other")
    lost = intent(edit, record_for(task, TaskStatus.DONE), NOW, reissue=False, replace=True)
    assert lost.status is TaskStatus.PENDING and lost.vendor_task_id is None
    back = one(task, lost)
    assert back.action is Action.NOOP and "(its later submission was refused or its answer lost)" in back.reason
    (note,) = diff({task.key: task}, {task.key: lost}, {}, options=PlanOptions(), state_serial=1, now=NOW).notes
    assert "not taken" not in back.reason + note and "refused or its answer lost" in note


def test_tombstones_expire_after_their_retention() -> None:
    from reconciler.transitions import TOMBSTONE_RETENTION, removed, tombstone_expired

    tomb = removed(record_for(desired()), NOW)
    assert not tombstone_expired(tomb, NOW + TOMBSTONE_RETENTION - 1)
    assert tombstone_expired(tomb, NOW + TOMBSTONE_RETENTION)
    assert not tombstone_expired(record_for(desired(), TaskStatus.STOPPED, stopped_at=0.0), NOW * 2)


def test_removing_a_provider_that_still_runs_tasks_is_a_plan_error_naming_both() -> None:
    gone, idle = desired(room="old"), desired(room="idle")
    records = {gone.key: record_for(gone), idle.key: record_for(idle, TaskStatus.STOPPED)}
    with pytest.raises(PlanError) as err:
        diff({}, records, {}, options=PlanOptions(), state_serial=1, now=NOW, providers={"other"})
    message = str(err.value)
    assert "provider 'volc' was removed from the specs but still runs 1 task(s): SnapshotJob/lobby-audit/old" in message
    assert "idle" not in message and "Keep the Provider document" in message and "capctl state rm" in message
    kept = diff({}, records, {}, options=PlanOptions(prune=False), state_serial=1, now=NOW, providers={"other"})
    assert kept.changes == ()
    stopped_only = {idle.key: records[idle.key]}  # nothing to stop: no provider needed
    plan = diff({}, stopped_only, {}, options=PlanOptions(), state_serial=1, now=NOW, providers=set())
    assert [c.action for c in plan.changes] == [Action.DELETE]
    assert diff({}, records, {}, options=PlanOptions(), state_serial=1, now=NOW, providers={"volc"}).changes


def test_a_zego_provider_switched_to_the_other_api_in_place_is_a_plan_error_while_its_recordings_run() -> None:
    """Editing `cloudrecordApi` (and the endpoint) of a Provider in place left its running recordings to be
    queried at the new endpoint with the old API: every plan incomplete (an HTTP 404 blamed on the endpoint),
    forever, and the recording never moved nor stopped."""
    import dataclasses

    from reconciler.model import ProviderConfig

    old = desired("class-1", family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING)
    new = dataclasses.replace(old, family=ApiFamily.ZEGO_RECORD_LEGACY, spec_hash="legacy", fixed_hash="legacy")
    legacy = {"volc": ProviderConfig(name="volc", type="zego", app_id="1", cloudrecord_api="legacy")}
    unknown = {old.key: Observed(ObservedState.UNKNOWN, detail="ProviderApiChanged")}
    records = {old.key: record_for(old)}
    with pytest.raises(PlanError, match=r"provider 'volc' now declares cloudrecordApi legacy, but 1 recording\(s\)"):
        diff({new.key: new}, records, unknown, options=PlanOptions(), state_serial=1, now=NOW, providers=legacy)
    current = {"volc": dataclasses.replace(legacy["volc"], cloudrecord_api="current")}
    assert current["volc"].serves(ApiFamily.ZEGO_RECORD) and not legacy["volc"].serves(ApiFamily.ZEGO_RECORD)
    stopped = {old.key: record_for(old, TaskStatus.STOPPED)}  # nothing runs: it simply starts on the new API
    plan = diff({new.key: new}, stopped, {}, options=PlanOptions(), state_serial=1, now=NOW, providers=legacy)
    assert [c.action for c in plan.changes] == [Action.REPLACE]


@pytest.mark.parametrize(
    ("selector", "key", "expected"),
    [
        ("SnapshotJob/a/r1", "SnapshotJob/a/r1", True),
        ("SnapshotJob/a", "SnapshotJob/a/r1", True),
        ("SnapshotJob/a", "SnapshotJob/ab/r1", False),
        ("SnapshotJob/a/r*", "SnapshotJob/a/r1", True),
        ("SnapshotJob/a/r*", "SnapshotJob/a/x1", False),
        ("ThumbnailJob/t/*.mp4", "ThumbnailJob/t/record/a.mp4", True),
        ("SnapshotJob/a/r1", "SnapshotJob/a/r10", False),
    ],
)
def test_selectors(selector: str, key: str, expected: bool) -> None:
    assert selector_matches(selector, key) is expected


def test_targets_narrow_the_plan_and_note_it() -> None:
    a, b = desired(room="a"), desired(room="b")
    plan = diff(
        {a.key: a, b.key: b},
        {},
        {},
        options=PlanOptions(targets=("SnapshotJob/lobby-audit/a",)),
        state_serial=0,
        now=NOW,
    )
    assert [c.key for c in plan.changes] == [a.key]
    assert plan.partial and "partial" in plan.notes[0]


@pytest.mark.parametrize("bad", ["lobby", "Nope/x", "*/x", "SnapshotJob/", "SnapshotJob/a/"])
def test_bad_selectors_are_errors(bad: str) -> None:
    with pytest.raises(PlanError, match="--target"):
        diff({}, {}, {}, options=PlanOptions(targets=(bad,)), state_serial=0, now=NOW)


def test_json_round_trip_and_views() -> None:
    old, new = desired(interval=5), desired(interval=10)
    plan = diff({new.key: new}, {old.key: record_for(old)}, {}, options=PlanOptions(), state_serial=7, now=NOW)
    data = plan_to_json(plan)
    again = plan_from_json(json.loads(json.dumps(data)))
    assert again == plan
    assert summary_line(data) == (
        "Plan: 0 to create, 1 to update in place, 0 to replace, 0 to re-issue, 0 to delete, 0 unchanged."
    )
    assert data["created_at"] == "2027-01-15T08:00:00Z"  # RFC 3339, format_version 2
    assert data["format_version"] == 2
    markdown = render_markdown(data)
    assert "| ✏️ | `SnapshotJob/lobby-audit/lobby` | update | spec changed: the vendor updates it in place |" in markdown
    from rich.console import Console

    console = Console(record=True, width=200)
    render_text(data, console)
    assert "~ SnapshotJob/lobby-audit/lobby  update    spec changed" in console.export_text()


def test_version_1_plans_with_epoch_seconds_are_still_read() -> None:
    task = desired()
    data = plan_to_json(diff({task.key: task}, {}, {}, options=PlanOptions(), state_serial=2, now=NOW))
    v1 = {**data, "format_version": 1, "created_at": NOW}
    assert plan_from_json(v1) == plan_from_json(data)
    assert plan_to_json(plan_from_json(v1))["created_at"] == "2027-01-15T08:00:00Z"


@pytest.mark.parametrize("created_at", [NOW, "2027-01-15 08:00:00", "2027-01-15T08:00:00", "yesterday"])
def test_version_2_plans_need_an_rfc3339_time(created_at: float | str) -> None:
    task = desired()
    data = plan_to_json(diff({task.key: task}, {}, {}, options=PlanOptions(), state_serial=2, now=NOW))
    with pytest.raises(PlanError, match=r"p\.json: malformed plan .*created_at"):
        plan_from_json({**data, "created_at": created_at}, source="p.json")


# Walk 18E-6: Python's JSON reads NaN and Infinity, and a version-1 `created_at` of NaN, Infinity, 1e308 or
# -1e20 passed the reader: `capctl show` then failed with an OverflowError / ValueError traceback. A version-2
# time past year 9999 in UTC was read, and written again as "10000-…", which no capctl reads.
@pytest.mark.parametrize(
    ("version", "created_at"),
    [(1, float("nan")), (1, float("inf")), (1, 1e308), (1, -1e20), (2, "9999-12-31T23:59:59-01:00")],
)
def test_a_created_at_no_clock_gives_is_refused(version: int, created_at: float | str) -> None:
    task = desired()
    data = plan_to_json(diff({task.key: task}, {}, {}, options=PlanOptions(), state_serial=2, now=NOW))
    with pytest.raises(PlanError, match=r"p\.json: malformed plan \(created_at: expected "):
        plan_from_json({**data, "format_version": version, "created_at": created_at}, source="p.json")
    assert plan_from_json({**data, "format_version": 1, "created_at": 0}).created_at == 0  # the epoch is a time


@pytest.mark.parametrize("data", [[], {"format_version": 99}, {"format_version": 1, "prune": True}])
def test_bad_plan_files_are_rejected(data: object) -> None:
    with pytest.raises(PlanError, match="plan"):
        plan_from_json(data, source="p.json")


def _saved(**selector: object) -> dict[str, Any]:
    """A saved plan's JSON: one update, and a room selector's view (with `selector` over its fields)."""
    old, new = desired(interval=5), desired(interval=10)
    plan = diff({new.key: new}, {old.key: record_for(old)}, {}, options=PlanOptions(), state_serial=7, now=NOW)
    data: dict[str, Any] = json.loads(json.dumps(plan_to_json(plan)))
    view: dict[str, object] = {"job": "SnapshotJob/sel", "provider": "volc", "rooms": "class-*", "max_rooms": None}
    view |= {"seen_at": "2027-01-15T08:00:00Z", "active": [], "running": [], "start": [], "left_out": []}
    data["selectors"] = [view | {"ending": [], "claimed": [{"room": "a", "by": "j"}], "counts": {}} | selector]
    return data


# Walk 16E-2: a plan edited by hand was read loosely (`bool("false")`, `tuple("abc")`) or broke show and
# apply with a traceback; now the first bad field is named and nothing is read.
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"prune": "false"}, "prune: expected true or false, found 'false'"),
        ({"targets": "SnapshotJob/*"}, "targets: expected a list of strings, found 'SnapshotJob/*'"),
        ({"labels": [1]}, "labels: expected a list of strings, found [1]"),
        ({"paths": [None]}, "paths: expected a list of strings"),
        ({"state_serial": "7"}, "state_serial: expected a whole number, 0 or more, found '7'"),
        ({"state_serial": 7.9}, "state_serial: expected a whole number"),
        ({"notes": [5]}, "notes: expected a list of strings"),
        ({"unobserved": [[1]]}, "unobserved: expected a list of strings"),
        ({"selectors": "x"}, "selectors: expected a list, found 'x'"),
        ({"selectors": [1]}, "selectors[0]: expected an object, found 1"),
        ({"changes": {}}, "changes: expected a list"),
        ({"changes": [None]}, "changes[0]: expected an object, found None"),
    ],
)
def test_a_plan_with_a_field_of_the_wrong_type_is_refused_naming_it(edit: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_from_json(_saved() | edit, source="p.json")
    assert str(info.value).startswith(f"p.json: malformed plan ({message}")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("key", 5, "changes[0].key: expected a task key, Kind/job/target, found 5"),
        ("key", [], "changes[0].key: expected a task key, Kind/job/target, found []"),
        ("key", "x", "changes[0].key: expected a task key, Kind/job/target, found 'x'"),  # was a ValueError
        ("key", "SnapshotJob//r", "changes[0].key: expected a task key"),
        ("action", ["update"], "changes[0].action: expected one of create, update, replace"),
        ("reason", {}, "changes[0].reason: expected a string"),
        ("provider", [], "changes[0].provider: expected a string"),
        ("family", "x", "changes[0].family: expected one of volcengine-snapshot"),
        ("after_hash", -1, "changes[0].after_hash: expected a string or null"),
        ("details", [1], "changes[0].details: expected a list of strings"),
        ("before", "x", "changes[0].before: expected an object or null"),
    ],
)
def test_a_change_with_a_field_of_the_wrong_type_is_refused_naming_it(field: str, value: object, message: str) -> None:
    data = _saved()
    data["changes"][0][field] = value
    with pytest.raises(PlanError, match=re.escape(f"p.json: malformed plan ({message}")):
        plan_from_json(data, source="p.json")


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"job": 1}, "selectors[0].job: expected a string, found 1"),
        ({"seen_at": "yesterday"}, "selectors[0].seen_at: expected an RFC 3339 time"),
        ({"max_rooms": -1}, "selectors[0].max_rooms: expected a whole number, 0 or more, or null"),
        ({"running": "lobby"}, "selectors[0].running: expected a list of strings"),
        ({"claimed": [{"room": "a"}]}, "selectors[0].claimed: expected a list of"),
        ({"counts": {"active": "2"}}, "selectors[0].counts: expected an object of whole numbers"),
    ],
)
def test_a_selector_view_of_the_wrong_shape_is_refused_naming_it(selector: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(f"p.json: malformed plan ({message}")):
        plan_from_json(_saved(**selector), source="p.json")


def test_a_plan_listing_one_task_twice_is_refused_and_a_whole_one_reads_back() -> None:
    data = _saved()
    assert plan_to_json(plan_from_json(data)) == data  # the view's fields, unknown ones too, kept for show
    data["changes"] = [*data["changes"], *data["changes"]]
    with pytest.raises(PlanError, match=r"changes\[1\]\.key: 'SnapshotJob/.*' is listed twice"):
        plan_from_json(data, source="p.json")
    assert plan_from_json(_saved(extra=1)).selectors[0]["extra"] == 1


def test_field_changes_lists_paths_and_truncates() -> None:
    before = {f"F{i}": i for i in range(20)}
    after = {f"F{i}": i + 1 for i in range(20)}
    lines = field_changes(before, after)
    assert lines[0] == "F0: 0 → 1" and lines[-1] == "… and 8 more"


def test_intent_resumes_an_unconfirmed_start_and_starts_a_new_run_otherwise() -> None:
    from reconciler.transitions import client_task_id, intent, removed

    task = desired(family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING)
    running = record_for(task, reissue_count=2)
    first = intent(task, running, NOW, reissue=True)  # a new run: new id, one more re-issue
    assert first.client_task_id == client_task_id(task, running) and first.reissue_count == 3
    # the answer never came back; the daemon retries it at its backoff's slot
    lost = first.evolve(status=TaskStatus.FAILED, last_error="dropped", next_attempt_at=NOW + 5)
    again = intent(task, lost, NOW + 5, reissue=False)
    assert (again.client_task_id, again.reissue_count, again.status) == (first.client_task_id, 3, TaskStatus.PENDING)
    # Walk 14b: the slot it was retried at stayed on the record, and `state list` showed the running task as `due`.
    assert transitions.started(again, "t-1", {}, NOW + 6).next_attempt_at is None
    assert "resuming it with its recorded ClientTaskId" in one(task, lost).reason
    changed = desired(family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING, bucket="other")
    assert intent(changed, lost, NOW, reissue=False).client_task_id != first.client_task_id
    restored = intent(task, removed(lost, NOW), NOW + 9, reissue=False)  # pruned, then its spec came back
    assert (restored.status, restored.removed_at, restored.client_task_id) == (
        TaskStatus.PENDING,
        None,
        first.client_task_id,
    )


def test_apply_errors_print_verbatim_even_with_brackets() -> None:
    from rich.console import Console

    from reconciler.execute import ApplyResult, ChangeResult

    error = "InvalidParameter: RoomId [/a-z/] must match [[a-zA-Z0-9_@-]]"  # rich markup would eat or reject it
    result = ApplyResult(
        (
            ChangeResult("SnapshotJob/audit/[lobby]", Action.CREATE, ok=False, error=error),
            ChangeResult("SnapshotJob/audit/hall", Action.CREATE, ok=True),
        )
    )
    console = Console(record=True, width=200)
    render_apply_result(result, console)
    assert console.export_text().splitlines() == [
        f"✗ SnapshotJob/audit/[lobby] (create): {error}",
        "Apply complete: 1 created, 0 updated, 0 replaced, 0 re-issued, 0 deleted, 1 failed.",
    ]


def test_apply_prints_what_a_change_found_at_the_vendor() -> None:
    """The executor's note on a start that met a run nobody recorded was dropped: an apply stopped and started
    again a task a team's script had started, and said only `1 created`."""
    from rich.console import Console

    from reconciler.execute import ApplyResult, ChangeResult

    note = "the vendor already ran it, with settings capctl had not recorded: stopped and started again"
    result = ApplyResult((ChangeResult("SnapshotJob/audit/lobby", Action.CREATE, ok=True, note=note),))
    console = Console(record=True, width=200)
    render_apply_result(result, console)
    assert console.export_text().splitlines() == [
        f"! SnapshotJob/audit/lobby (create): {note}",
        "Apply complete: 1 created, 0 updated, 0 replaced, 0 re-issued, 0 deleted, 0 failed.",
    ]


def test_unobserved_tasks_make_the_plan_incomplete_and_show_in_every_view() -> None:
    from rich.console import Console

    seen, unseen = desired(room="lobby"), desired(room="hall")
    records = {t.key: record_for(t) for t in (seen, unseen)}
    observed = {
        seen.key: Observed(ObservedState.STOPPED, reason="IdleTimeOut"),
        unseen.key: Observed(ObservedState.UNKNOWN, detail="GetSnapshotTask: timeout"),
    }
    plan = diff({t.key: t for t in (seen, unseen)}, records, observed, options=PlanOptions(), state_serial=3, now=NOW)
    assert plan.unobserved == (unseen.key,)
    assert plan.notes == (
        f"1 task(s) could not be observed and are left as is, so this plan is incomplete: "
        f"{unseen.key}: GetSnapshotTask: timeout.",
    )
    data = plan_to_json(plan)
    assert data["unobserved"] == [unseen.key]
    assert plan_from_json(json.loads(json.dumps(data))) == plan
    assert summary_line(data).endswith(", 1 to re-issue, 0 to delete, 0 unchanged, 1 not observed.")
    console = Console(record=True, width=200)
    render_text(data, console)
    text = console.export_text()
    assert text.startswith("capctl will perform the following actions:")
    assert f"? {unseen.key}   unknown   could not observe it (GetSnapshotTask: timeout); left as is" in text
    assert f"| ❓ | `{unseen.key}` | unknown |" in render_markdown(data)


def test_a_changed_task_that_could_not_be_observed_is_not_counted_unchanged() -> None:
    """An edited task whose status could not be read is left as is: the summary said `1 unchanged (1 not
    observed)` of a task whose spec had changed (walk 58e). It is counted apart, the others stay unchanged."""
    calm, edited = desired(room="lobby"), desired(room="hall")
    records = {calm.key: record_for(calm), edited.key: record_for(edited)}
    tasks = {calm.key: calm, edited.key: desired(room="hall", interval=30)}
    observed = {
        calm.key: Observed(ObservedState.RUNNING),
        edited.key: Observed(ObservedState.UNKNOWN, detail="GetSnapshotTask: timeout"),
    }
    data = plan_to_json(diff(tasks, records, observed, options=PlanOptions(), state_serial=3, now=NOW))
    assert data["summary"]["no-op"] == 2 and data["unobserved"] == [edited.key]
    assert summary_line(data).endswith(", 0 to delete, 1 unchanged, 1 not observed.")


def test_a_task_the_plan_replaces_or_deletes_is_not_called_left_as_is_when_it_could_not_be_observed() -> None:
    """Walk 59b: `--replace KEY` of a task whose status could not be read (and a removed task's delete) was
    listed as not observed: `No changes for the tasks that could be observed. Left as is: ? KEY unknown`, a
    summary counting it twice (`1 to replace, …, 1 not observed`) and an incomplete plan (exit 1), while apply
    replaced it all the same and then said it was left as is. Only a task left as is is unobserved."""
    from rich.console import Console

    kept, gone = desired(room="lobby"), desired(room="hall")
    records = {t.key: record_for(t) for t in (kept, gone)}
    unknown = Observed(ObservedState.UNKNOWN, detail="GetSnapshotTask: timeout")
    options = PlanOptions(replace=(kept.key,))
    plan = diff({kept.key: kept}, records, dict.fromkeys(records, unknown), options=options, state_serial=3, now=NOW)
    assert [c.action for c in plan.changes] == [Action.REPLACE, Action.DELETE] and plan.unobserved == ()
    assert not any("could not be observed" in note for note in plan.notes), plan.notes
    data = plan_to_json(plan)
    assert summary_line(data).endswith(", 1 to replace, 0 to re-issue, 1 to delete, 0 unchanged.")
    console = Console(record=True, width=200)
    render_text(data, console)
    text = console.export_text()
    assert "Left as is" not in text and "unknown" not in text and f"-/+ {kept.key}" in text, text


def test_a_plan_with_only_unobserved_tasks_does_not_claim_to_match() -> None:
    from rich.console import Console

    task = desired()
    observed = {task.key: Observed(ObservedState.UNKNOWN, detail="connection refused")}
    plan = diff(
        {task.key: task}, {task.key: record_for(task)}, observed, options=PlanOptions(), state_serial=3, now=NOW
    )
    console = Console(record=True, width=200)
    render_text(plan_to_json(plan), console)
    text = console.export_text()
    assert text.startswith("No changes for the tasks that could be observed. Left as is:")
    assert "match the recorded and observed state" not in text


def test_no_changes_without_refresh_claims_no_observation() -> None:
    """Walk 18H-5: `plan --no-refresh` began "match the recorded and observed state", above its own note that
    vendor status was not checked."""
    from rich.console import Console

    task = desired()
    for refreshed, said in ((True, "recorded and observed state."), (False, "recorded state.")):
        options = PlanOptions(refreshed=refreshed)
        plan = diff({task.key: task}, {task.key: record_for(task)}, {}, options=options, state_serial=3, now=NOW)
        console = Console(record=True, width=200)
        render_text(plan_to_json(plan), console)
        assert console.export_text().startswith(f"No changes. The declared capture jobs match the {said}\n")


@pytest.mark.parametrize(
    ("family", "cid", "resumed", "found"),
    [
        (ApiFamily.VOLC_SNAPSHOT, None, "by the same RoomId + TaskId", "stopped by the RoomId + TaskId"),
        (ApiFamily.ZEGO_RECORD, "capctl-1", "resuming with its recorded ClientTaskId", "found by its recorded"),
        (ApiFamily.ZEGO_RECORD_LEGACY, None, "the legacy API cannot find the first", "that start cannot be found"),
        (ApiFamily.ZEGO_THUMBNAIL, None, "its thumbnails are made twice", "it is submitted again"),
    ],
)
def test_a_start_cut_short_is_resumed_unchanged_and_replaced_once_its_spec_changed(
    family: ApiFamily, cid: str | None, resumed: str, found: str
) -> None:
    """A `pending` record (a crash between the call and its commit) of the same spec is resumed, the plan saying
    what that may leave behind; of a changed spec (even an interval alone, which a running task would take as an
    update) it is replaced: resuming it kept the old spec running (Volcengine) or running unnamed (ZEGO)."""
    task = desired(family=family)
    pending = record_for(task, TaskStatus.PENDING, vendor_task_id=None, client_task_id=cid)
    same = one(task, pending)
    assert same.action is Action.CREATE and resumed in same.reason
    changed = one(desired(family=family, interval=9), pending)
    assert changed.action is Action.REPLACE and found in changed.reason


def test_an_update_never_confirmed_is_sent_again_even_at_the_recorded_values() -> None:
    """Killed after UpdateSnapshot was sent, the spec then reverted: spec and record agree, but the vendor may
    hold the new interval. The update goes out again (unless the task is seen ended: then it is re-issued)."""
    task = desired(interval=5)
    sent = record_for(task, update_unconfirmed=True)
    change = one(task, sent, Observed(ObservedState.RUNNING))
    assert change.action is Action.UPDATE and change.details == ("interval 5s",)
    assert "an earlier update was not confirmed" in change.reason
    assert one(task, sent, refreshed=False).action is Action.UPDATE
    assert one(task, sent, Observed(ObservedState.STOPPED, reason="IdleTimeOut")).action is Action.REISSUE
    assert one(task, record_for(task), Observed(ObservedState.RUNNING)).action is Action.NOOP


def test_a_task_that_could_not_be_observed_is_left_as_is_whatever_changed() -> None:
    """README: a task whose status cannot be read is listed `? … unknown`, left as is. A changed spec (an update
    or a replace) and an update never confirmed were planned and carried out all the same, under that line."""
    task = desired(interval=5)
    unknown = Observed(ObservedState.UNKNOWN, detail="connection refused")
    for changed, record in (
        (desired(interval=9), record_for(task)),  # an update
        (desired(interval=5, bucket="other"), record_for(task)),  # a replace
        (task, record_for(task, update_unconfirmed=True)),
    ):
        change = one(changed, record, unknown)
        assert change.action is Action.NOOP and change.reason == "could not observe it (connection refused); left as is"


def test_a_spec_fixed_after_a_start_the_vendor_refused_does_not_say_the_start_was_never_confirmed() -> None:
    """A Volcengine start refused (a bucket the vendor does not know), the spec then fixed: the replace still
    stops by the RoomId + TaskId (a failed start may also be one whose answers were lost), but the reason does
    not call a start the vendor answered "never confirmed", which is a crash's word."""
    task = desired()
    refused = record_for(task, TaskStatus.FAILED, vendor_task_id=None, last_error="StartSnapshot: bucket not found")
    change = one(desired(bucket="fixed"), refused)
    assert change.action is Action.REPLACE and change.reason.startswith("spec changed since a start that failed: ")
    pending = record_for(task, TaskStatus.PENDING, vendor_task_id=None)
    assert "since a start that was never confirmed: " in one(desired(bucket="fixed"), pending).reason


@pytest.mark.parametrize("offset", [300.0, -300.0], ids=["vendor-ahead", "vendor-behind"])
def test_a_runs_times_are_kept_on_the_daemons_clock_whatever_the_vendors(offset: float) -> None:
    """docs/daemon.md "Two clocks": the stop is the recorded start plus the vendor's own StartTime-to-EndTime,
    never after it was seen ended (without a StartTime: when it was seen ended); a start time the daemon did
    not take is the vendor's, never after now."""
    task = desired("lobby")
    vendor_start = NOW - 100 + offset
    found = transitions.observed(
        record_for(task, TaskStatus.PENDING, started_at=None),
        Observed(ObservedState.RUNNING, started_at=vendor_start),
        NOW,
    )
    assert found.started_at == min(NOW, vendor_start)
    run = record_for(task, started_at=NOW - 100, idle_timeout=20.0)
    ended = Observed(ObservedState.STOPPED, reason="idle timeout", started_at=vendor_start, ended_at=vendor_start + 21)
    stopped = transitions.observed(run, ended, NOW)
    assert stopped.stopped_at == NOW - 79 and not transitions.was_productive(stopped)
    assert transitions.observed(run, Observed(ObservedState.STOPPED, ended_at=vendor_start + 21), NOW).stopped_at == NOW
    # A run taken up running (a start resumed after a crash: recorded as starting then) ends no later than seen.
    resumed = Observed(ObservedState.STOPPED, started_at=vendor_start - 7200, ended_at=vendor_start + 21)
    assert transitions.observed(run, resumed, NOW).stopped_at == NOW


def test_the_note_on_several_dormant_tasks_says_how_to_wake_them_in_one_go() -> None:
    """ "3 dormant task(s) left alone: <one key>: … (and 2 more)" named no other key: which, and how to wake
    them? `capctl wake` takes globs now (walk 13f): the note gives the job's, or the listing that names them."""
    tasks = {t.key: t for t in (desired(room) for room in ("r1", "r2", "r3"))}
    records = {
        k: record_for(t, TaskStatus.DORMANT, unproductive_runs=4, next_attempt_at=NOW + 600) for k, t in tasks.items()
    }
    plan = diff(tasks, records, {}, options=PlanOptions(refreshed=False), state_serial=1, now=NOW)
    (note, *_) = plan.notes
    assert note.endswith(
        "(and 2 more of SnapshotJob/lobby-audit: `capctl wake 'SnapshotJob/lobby-audit/*'`, with --daemon URL "
        "while a daemon runs, wakes them all)."
    ), note
    other = desired("r4", job="hall-audit")
    tasks[other.key], records[other.key] = other, record_for(other, TaskStatus.DORMANT, next_attempt_at=NOW + 600)
    plan = diff(tasks, records, {}, options=PlanOptions(refreshed=False), state_serial=1, now=NOW)
    assert plan.notes[0].endswith("(and 3 more: `capctl state list --status dormant` lists them)."), plan.notes


# Walk 16E-9: JSON Python's parser cannot take (200,000 `[`: RecursionError; 5,000 digits: Python's advice to
# programmers) was a traceback from `show` and `apply --plan`.
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 200_000 + "]" * 200_000, "not a capctl plan (JSON nested too deeply)"),
        ('{"format_version": 2, "state_serial": ' + "9" * 5000 + "}", "a number of 5000 digits (at most 100)"),
    ],
)
def test_a_plan_file_json_cannot_hold_is_refused_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    from reconciler.planfile import read_plan_file

    (tmp_path / "p.json").write_text(text)
    with pytest.raises(PlanError, match=re.escape(message)):
        read_plan_file(str(tmp_path / "p.json"))


def test_a_failed_reissue_start_left_to_its_room_is_counted_once() -> None:
    """Walk 44c-3: a start that failed, left `stopped` once its room closed (43B-1), starts again as what it was
    (here a re-issue, counted when first tried), not as a re-issue of a run the vendor stopped, counted again."""
    task = desired()
    ran = record_for(task, TaskStatus.STOPPED)
    tried = transitions.failed(transitions.intent(task, ran, NOW, reissue=True), "outage", NOW)
    left = tried.evolve(status=TaskStatus.STOPPED, next_attempt_at=None)
    assert left.reissue_count == ran.reissue_count + 1 and transitions.failed_start_left(left)
    change = one(task, left)
    assert change.action is Action.REISSUE and change.reason.startswith("previous start failed: outage"), change
    assert transitions.intent(task, left, NOW, reissue=True).reissue_count == left.reissue_count


def test_a_removed_task_handed_over_to_a_kept_key_needs_no_provider_to_be_retired() -> None:
    """Walk 45A-3: a renamed Volcengine job's new key (Provider `other`) holds the old key's task (RoomId +
    TaskId): the old key's delete stops nothing, so its Provider, removed too, is not needed: before, the plan
    failed (`was removed from the specs but still runs`), and the daemon's prune said `cannot prune` for good."""
    gone = desired(job="old")
    new = dataclasses.replace(desired(job="new"), provider="other", request={**gone.request})
    ref = {k: gone.request[k] for k in ("AppId", "RoomId", "TaskId")}
    records = {gone.key: record_for(gone, vendor_ref=ref), new.key: record_for(new, vendor_ref=ref)}
    plan = diff({new.key: new}, records, {}, options=PlanOptions(), state_serial=1, now=NOW, providers={"other"})
    (delete,) = [c for c in plan.changes if c.key == gone.key]
    assert delete.action is Action.DELETE and f"is {new.key}'s now, so it is not stopped" in delete.reason


@pytest.mark.parametrize(
    ("status", "changes", "kept"),
    [
        (None, {}, True),  # the kept key's record not written yet
        (TaskStatus.FAILED, {"vendor_task_id": None, "start_refused": True}, True),  # its start refused
        (TaskStatus.STOPPED, {}, True),
        (TaskStatus.RUNNING, {}, False),  # the kept key removed too
    ],
)
def test_a_removed_task_no_kept_record_holds_still_needs_its_provider(
    status: TaskStatus | None, changes: dict[str, Any], kept: bool
) -> None:
    """Walk 46a, on 45A-3: only a kept key's record that may run the task retires the old key without a stop;
    otherwise its stop needs the removed Provider, and the plan fails rather than leave the task untracked."""
    gone = desired(job="old")
    new = dataclasses.replace(desired(job="new"), provider="other", request={**gone.request})
    ref = {k: gone.request[k] for k in ("AppId", "RoomId", "TaskId")}
    records = {gone.key: record_for(gone, vendor_ref=ref)}
    if status is not None:
        records[new.key] = record_for(new, status, vendor_ref=ref, **changes)
    specs = {new.key: new} if kept else {}
    with pytest.raises(PlanError, match="provider 'volc' was removed from the specs but still runs 1 task"):
        diff(specs, records, {}, options=PlanOptions(), state_serial=1, now=NOW, providers={"other"})


def test_a_failed_start_in_a_room_left_is_not_started_offline() -> None:
    """Walk 45b-1: a selector task whose start failed, its room closed since (`rooms.leaving`: ending, Never).
    The daemon leaves it to its room (43B-1); `plan`/`apply` retried the failed start, whatever the policy,
    into the closed room (billed until it idled out). Both, and 44c-3's `stopped` one, say it waits for its room."""
    left = dataclasses.replace(desired(), restart_policy=RestartPolicy.NEVER, selector="lob*", ending=True)
    for status in (TaskStatus.FAILED, TaskStatus.STOPPED):
        rec = record_for(left, status, vendor_task_id=None, last_error="HTTP 503")
        change = one(left, rec, refreshed=False)
        assert change.action is Action.NOOP, (status, change)
        assert change.reason == (
            f"previous start failed: HTTP 503; {transitions.MAY_RUN}; left to its room, which its room selector "
            "no longer chooses: it starts when the room is selected again"
        ), change.reason


def test_a_failed_start_that_may_run_says_so_in_the_plan_unlike_one_refused() -> None:
    """Walk 50D-2: a start whose answers were lost read in `state list` and on the status page `its start was
    never confirmed: it may run at the vendor`, but in the plan (and the daemon's decision log) its error alone,
    as a start the vendor refused, where nothing runs: failed, left to its room, or that left one started again."""
    task = desired()
    ending = dataclasses.replace(task, selector="lob*", ending=True)
    lost = "volc: StartSnapshot: connection lost before an answer (RemoteProtocolError) after 6 tries"
    for status, spec in ((TaskStatus.FAILED, task), (TaskStatus.FAILED, ending), (TaskStatus.STOPPED, task)):
        for refused in (False, True):
            rec = record_for(spec, status, vendor_task_id=None, last_error=lost, start_refused=refused)
            reason = one(spec, rec, refreshed=False).reason
            assert reason.startswith(f"previous start failed: {lost}"), reason
            assert (transitions.MAY_RUN in reason) is not refused, (status, spec.ending, refused, reason)


@pytest.mark.parametrize("family", [ApiFamily.VOLC_SNAPSHOT, ApiFamily.ZEGO_RECORD])
def test_a_lost_start_left_to_its_room_is_stopped_when_removed(family: ApiFamily) -> None:
    """Walk 47a: a selector task's failed start, left to its room once the room closed (43B-1: `stopped`, no
    vendor id), may run when its answers were lost: its removal was a tombstone with "nothing to stop", and the
    run went on untracked to its idle timeout. It is stopped (ZEGO: found by a start under its ClientTaskId
    first); a start the vendor refused (`start_refused`) still has nothing to stop."""
    task = dataclasses.replace(desired(family=family), selector="lob*", ending=True)
    left = record_for(task, TaskStatus.STOPPED, vendor_task_id=None, client_task_id="c1", last_error="HTTP 503")
    refused = left.evolve(start_refused=True, client_task_id=None)
    stop = "removed from specs" if family is ApiFamily.VOLC_SNAPSHOT else "removed from specs: its last start was"
    for rec in (left, refused):
        plan = diff({}, {rec.key: rec}, {}, options=PlanOptions(), state_serial=3, now=NOW)
        [change] = plan.changes
        assert change.action is Action.DELETE and change.reason.startswith("removed from specs"), change.reason
        assert change.reason.startswith(stop) if rec is left else "nothing to stop" in change.reason, change.reason
        assert ("nothing to stop" in change.reason) is (rec is refused), change.reason
        assert transitions.stoppable(rec) is (rec is left)
    assert one(task, left, refreshed=False).action is Action.NOOP  # still left to its room (45b-1)
    # Its job edited, its room chosen again: what the lost start may run is stopped (ZEGO: found) before the
    # new start; "not running, start anew" left a ZEGO recording of the room running beside the new one.
    edited = dataclasses.replace(desired(family=family, interval=10), selector="lob*")
    change = one(edited, left, refreshed=False)
    assert change.action is Action.REPLACE and change.reason.startswith("spec changed since a start that failed: ")


def test_a_replace_of_an_unchanged_spec_killed_after_its_stop_is_started_as_a_replace_not_a_reissue() -> None:
    """`apply --replace KEY` (spec unchanged) killed at stop.after-commit leaves `stopped` (reason `replaced`, its
    vendor id kept). The next plan read it as a run the vendor stopped: `↻ reissue  vendor stopped it: replaced
    at …`, a re-issue counted and an unproductive run with it (the daemon's backoff then held it). capctl stopped
    it: what is left is the replace's start, as after a spec change (walk 49a)."""
    task = desired()
    rec = record_for(task, TaskStatus.STOPPED, stop_reason=transitions.REPLACED, stopped_at=NOW, vendor_task_id="v1")
    for refreshed in (True, False):
        change = one(task, rec, refreshed=refreshed)
        assert change.action is Action.REPLACE, change
        assert change.reason.startswith("a replace was cut short after its stop (interrupted)"), change.reason
    never = dataclasses.replace(task, restart_policy=RestartPolicy.NEVER)
    assert one(never, rec).action is Action.REPLACE  # asked for: not left stopped by the job's policy


def test_a_replace_cut_short_after_stopping_a_lost_start_or_in_a_closing_room() -> None:
    """Two forms 49a's check missed (walk 50a). A `--replace` that stopped a Volcengine start whose answers were
    lost (no vendor id; the stop marks it `start_refused`, its error gone) and was killed then: `stopped;
    restartPolicy Never` under Never (the replace asked for never started), a create or a re-issue held by the
    daemon's backoff under Always. A cut-short replace of a room-selector task whose room is closing was started
    into the empty room, which a failed start is not (walk 43B-1): it is left to its room."""
    task = desired()
    never = dataclasses.replace(task, restart_policy=RestartPolicy.NEVER)
    lost = record_for(
        task,
        TaskStatus.STOPPED,
        stop_reason=transitions.REPLACED,
        stopped_at=NOW,
        vendor_task_id=None,
        start_refused=True,
    )
    for job in (task, never):
        change = one(job, lost)
        assert change.action is Action.REPLACE and change.reason.startswith("a replace was cut short"), change
    # A replace's start refused, then left to its room (43B-1), keeps its error: a failed start, as before.
    refused = dataclasses.replace(lost, last_error="StartSnapshot: InvalidParameter", replacing=True)
    assert one(task, refused).reason == "previous start failed: StartSnapshot: InvalidParameter"
    closing = dataclasses.replace(task, selector="lob*", ending=True)
    for rec in (lost, dataclasses.replace(lost, vendor_task_id="v1", start_refused=False)):
        change = one(closing, rec)
        assert change.action is Action.NOOP and "left to its room" in change.reason, change


def test_a_failed_start_left_to_its_room_of_a_never_job_starts_when_its_room_is_selected_again() -> None:
    """A selector job with restartPolicy Never: a start that failed (never ran) in a room since closed is left
    to its room (43B-1: `stopped`, no vendor id), `left to its room, …: it starts when the room is selected
    again`. Selected again, the plan said `stopped; restartPolicy Never`: it never started, where a failed start
    of a room still open is retried whatever the policy (walk 50a)."""
    job = dataclasses.replace(desired(), restart_policy=RestartPolicy.NEVER, selector="lob*")
    left = record_for(job, TaskStatus.STOPPED, vendor_task_id=None, last_error="HTTP 503")
    assert "it starts when the room is selected again" in one(dataclasses.replace(job, ending=True), left).reason
    change = one(job, left, refreshed=False)
    # A 503 not marked refused may have run (walk 50D-2): the reason says so.
    reason = f"previous start failed: HTTP 503; {transitions.MAY_RUN}"
    assert (change.action, change.reason) == (Action.CREATE, reason), change


@pytest.mark.parametrize(
    ("interval", "prune", "said"),
    [
        (5, False, "may run as SnapshotJob/old/lobby's, started with this very request: taken over as it runs"),
        (10, False, "may run as SnapshotJob/old/lobby's, not known to run with these settings: stopped and started"),
        (10, True, None),  # the old key's delete is stopped first, and says so
    ],
)
def test_a_create_whose_vendor_task_a_kept_key_may_run_says_what_apply_does_with_that_run(
    interval: int, prune: bool, said: str | None
) -> None:
    """Walk 54C-2: a job renamed with its taskId kept, the old key kept (`--no-prune`): the create's start takes
    the old key's run over as it runs, or, renamed and edited at once, stops it and starts it again (a gap the
    plan said nothing of: `new task: not in state`)."""
    gone = desired(job="old")
    new = desired(job="new", interval=interval)
    new = dataclasses.replace(new, request={**new.request, "TaskId": "old"})
    ref = {k: gone.request[k] for k in ("AppId", "RoomId", "TaskId")}
    records = {gone.key: record_for(gone, vendor_ref=ref, started_at=NOW - 60)}
    plan = diff({new.key: new}, records, {}, options=PlanOptions(prune=prune), state_serial=1, now=NOW)
    (create,) = [c for c in plan.changes if c.key == new.key]
    assert create.reason.startswith("new task: not in state")
    assert (said in create.reason) if said else create.reason == "new task: not in state", create.reason
