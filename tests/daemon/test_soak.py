"""A bounded soak: 1,000 tasks for two simulated hours while rooms come and go.

Nothing is lost (every declared task has a record and, unless it waits, a running vendor task), nothing is
duplicated (at most one running vendor task per key), and the vendor never throttles the daemon.
"""

from __future__ import annotations

import random
from collections import Counter

from reconciler.daemon import policy
from reconciler.model import TaskStatus
from tests.daemon.conftest import Harness, write_specs
from tests.specdocs import recording_job, snapshot_job

VOLC_ROOMS = [f"v{i}" for i in range(800)]
ZEGO_ROOMS = [f"z{i}" for i in range(200)]
STEPS = int(__import__("os").environ.get("SOAK_STEPS", "24"))


async def test_soak_thousand_tasks_two_hours(harness: Harness) -> None:
    rng = random.Random(3)
    write_specs(
        harness.specs,
        snapshot_job("snap", VOLC_ROOMS, idle=900, interval=600),
        recording_job("rec", ZEGO_ROOMS, idle=300, max_duration=3600),
    )
    live: set[str] = set()

    def churn(share: float) -> None:
        for room in rng.sample(VOLC_ROOMS + ZEGO_ROOMS, int(share * 1000)):
            vendor, user_id, stream_id = ("volcengine", "u", None) if room[0] == "v" else ("zego", None, "s")
            if room in live:
                harness.sim.unpublish(vendor, room, user_id=user_id, stream_id=stream_id)
                live.discard(room)
            else:
                harness.sim.publish(vendor, room, user_id=user_id, stream_id=stream_id)
                live.add(room)

    churn(0.5)
    await harness.start(resync=600.0)
    for _ in range(STEPS):  # 2 h in 5 min steps, a tenth of the rooms changing each time
        await harness.advance(300, image_every=300)
        churn(0.1)
    await harness.advance(300, image_every=300)

    daemon = harness.daemon
    assert daemon is not None and daemon.spec is not None
    assert harness.sim.limiter.throttled_total == 0
    records = {k: daemon.records.get(k) for k in daemon.spec.tasks}
    assert all(r is not None for r in records.values())  # no task lost
    running = harness.running_sim_tasks()
    per_room = Counter((t.vendor, t.room_id) for t in running)
    assert max(per_room.values()) == 1  # none duplicated
    recorded_ids = {r.vendor_task_id for r in records.values() if r is not None}
    assert {t.task_id if t.vendor == "zego" else "snap" for t in running} <= recorded_ids  # no orphan
    statuses = Counter(r.status for r in records.values() if r is not None)
    assert set(statuses) <= {TaskStatus.RUNNING, TaskStatus.STOPPED, TaskStatus.DORMANT}
    now = harness.clock.now()
    for room in live:
        record = records[f"SnapshotJob/snap/{room}" if room[0] == "v" else f"RecordingJob/rec/{room}"]
        assert record is not None
        if room[0] == "v":  # UserJoinRoom wakes a waiting snapshot task: a room with a stream has it running
            assert record.status is TaskStatus.RUNNING, record.key
        else:  # ZEGO sends no room callback here: a waiting recording tries again at its backoff slot
            waiting = record.next_attempt_at is not None and record.next_attempt_at <= now + policy.REISSUE_BACKOFF_CAP
            assert record.status is TaskStatus.RUNNING or waiting, record.key
