"""Which keys the resync timer queues (every known key, but those waiting for a re-issue slot still ahead), and
which a `capctl sync` queues."""

from __future__ import annotations

from pathlib import Path

from reconciler.daemon.sync import known_keys, resync_keys, sync_keys
from reconciler.model import TaskRecord, TaskStatus
from reconciler.spec import load_spec_set
from tests.daemon.conftest import write_specs
from tests.specdocs import snapshot_job
from tests.state.helpers import make_record

NOW = 1_000.0


def test_the_resync_leaves_out_only_tasks_waiting_for_a_slot_still_ahead() -> None:
    records: dict[str, TaskRecord] = {
        "SnapshotJob/j/running": make_record("SnapshotJob/j/running").evolve(status=TaskStatus.RUNNING),
        "SnapshotJob/j/dormant": make_record("SnapshotJob/j/dormant").evolve(
            status=TaskStatus.DORMANT, next_attempt_at=NOW + 3_600
        ),
        "SnapshotJob/j/backoff": make_record("SnapshotJob/j/backoff").evolve(
            status=TaskStatus.STOPPED, next_attempt_at=NOW + 60
        ),
        "SnapshotJob/j/due": make_record("SnapshotJob/j/due").evolve(status=TaskStatus.DORMANT, next_attempt_at=NOW),
        "SnapshotJob/j/stopped": make_record("SnapshotJob/j/stopped").evolve(status=TaskStatus.STOPPED),
    }
    known = [*records, "SnapshotJob/j/new"]  # in the specs, not yet in the state
    assert resync_keys(known, records.get, NOW) == [
        "SnapshotJob/j/due",  # its slot has come: queued as any key (a slot the queue lost is kept)
        "SnapshotJob/j/new",
        "SnapshotJob/j/running",
        "SnapshotJob/j/stopped",  # stopped with no slot: the pass decides
    ]


def test_sync_takes_a_job_or_a_glob_with_its_tasks_desired_but_not_yet_recorded(tmp_path: Path) -> None:
    write_specs(tmp_path, snapshot_job("audit", ["lobby", "hall"]))
    spec = load_spec_set([str(tmp_path)])
    recorded = make_record("SnapshotJob/audit/lobby")
    known = known_keys([recorded.key], spec)  # hall: in the specs, not yet in the state (walk 27b)
    records = {recorded.key: recorded}
    assert sync_keys(["SnapshotJob/audit"], known, records.get, spec.tasks) == (
        200,
        "queued 2 task key(s)",
        ["SnapshotJob/audit/hall", "SnapshotJob/audit/lobby"],
        0,
    )
    assert sync_keys(["SnapshotJob/audit/h*", "SnapshotJob/audit/hall"], known, records.get, spec.tasks)[2] == [
        "SnapshotJob/audit/hall"  # each key once
    ]
    status, reason, queued, _ = sync_keys(
        ["SnapshotJob/audit/hall", "SnapshotJob/other/*"], known, records.get, spec.tasks
    )
    assert (status, queued) == (404, [])
    assert reason == (
        "no task 'SnapshotJob/other/*' in the spec set or the state"
        " (see `capctl state list`, or `capctl plan` for a task not recorded yet)"
    )


def test_sync_matches_a_tombstone_but_neither_queues_nor_counts_it_as_queued(tmp_path: Path) -> None:
    """Walk 30c: `capctl sync 'SnapshotJob/*'` said "Queued 25" for 20 tasks and 5 pruned ones, whose pass does
    nothing; a tombstone back in the specs is being restored, so it is queued."""
    write_specs(tmp_path, snapshot_job("audit", ["lobby", "hall"]))
    spec = load_spec_set([str(tmp_path)])
    gone = make_record("SnapshotJob/old/lobby").evolve(status=TaskStatus.REMOVED, removed_at=NOW)
    back = make_record("SnapshotJob/audit/hall").evolve(status=TaskStatus.REMOVED, removed_at=NOW)
    records = {gone.key: gone, back.key: back}
    known = known_keys(records, spec)
    assert sync_keys(["SnapshotJob/*"], known, records.get, spec.tasks) == (
        200,
        "queued 2 task key(s), not 1 tombstone(s)",
        ["SnapshotJob/audit/hall", "SnapshotJob/audit/lobby"],
        1,
    )
    # Matched: not a typo (exit 0), but nothing queued; every key leaves it out too.
    assert sync_keys(["SnapshotJob/old"], known, records.get, spec.tasks)[::2] == (200, [])
    assert sync_keys(None, known, records.get, spec.tasks)[2:] == (
        ["SnapshotJob/audit/hall", "SnapshotJob/audit/lobby"],
        1,
    )
