"""Which keys the resync timer queues: every known key, but those waiting for a re-issue slot still ahead."""

from __future__ import annotations

from reconciler.daemon.sync import resync_keys
from reconciler.model import TaskRecord, TaskStatus
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
