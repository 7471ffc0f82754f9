"""`--resync` bounds how long a running task goes unobserved, whatever callbacks say (issue 14, point 4).

The probe that found it: ZEGO `event_type 4` (room has no stream) callbacks kept arriving, each of which
pushed the next look to one idle timeout + 5 s later, while the end callback was refused (the vendor's
clock was skewed past the 300 s window): a recording stopped at the vendor went unseen for more than 80 s
with `--resync 5s`.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from reconciler.daemon import policy
from reconciler.daemon.controller import RESYNC_JITTER
from reconciler.model import TaskStatus
from reconciler.providers.zego_signing import callback_signature
from reconciler.sim.senders import CallbackSender, encode_body
from tests.daemon.conftest import Harness, write_specs
from tests.daemon.test_http import ZEGO_SECRET, client, zego_body
from tests.specdocs import recording_job, snapshot_job

CLASS = "RecordingJob/rec/class-1"
LOBBY = "SnapshotJob/audit/lobby"
RESYNC = 5.0
SKEW = 400.0  # beyond the daemon's 300 s window: the end callback is refused as stale


class SkewedEndCallbacks:
    """The simulator's callbacks, with every end event (event_type 2 or 5) signed by a vendor whose clock is
    `SKEW` seconds behind: re-signed as that vendor would, so only the time check can refuse it."""

    def __init__(self, inner: CallbackSender) -> None:
        self._inner = inner

    async def post(self, url: str, body: bytes) -> int:
        fields: dict[str, Any] = json.loads(body)
        if fields.get("event_type") in (2, 5):
            fields["timestamp"] = str(int(fields["timestamp"]) - int(SKEW))  # a string, as ZEGO sends it
            fields["signature"] = callback_signature(ZEGO_SECRET, fields["timestamp"], str(fields["nonce"]))
            body = encode_body(fields)
        return await self._inner.post(url, body)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_repeated_empty_room_callbacks_cannot_hold_off_observation_past_resync(harness: Harness) -> None:
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=60))
    assert harness.sim.config.callback_sender is not None
    harness.sim.config.callback_sender = SkewedEndCallbacks(harness.sim.config.callback_sender)
    await harness.start(resync=RESYNC)  # nobody publishes: the recording idles out 60 s after its start
    await harness.advance(1)
    record = harness.record(CLASS)
    assert record.status is TaskStatus.RUNNING and record.vendor_task_id is not None
    assert record.started_at is not None
    async with await client(harness) as http:
        for n in range(40):  # one event_type 4 every 3 s for 120 s, as the probe sent them
            body = zego_body(
                harness, sequence=1000 + n, nonce=f"n{n}", task_id=record.vendor_task_id, room_id="class-1"
            )
            assert (await http.post("/callbacks/zego", json=body)).status_code == 200
            await harness.advance(3)
    ends = [e for e in harness.sim.callbacks.log if e["event"] == "event_type 2"]
    assert ends and all(e["status"] == 401 for e in ends)  # the end callback was refused (and retried)
    [run] = [t for t in harness.sim.tasks("zego") if t.task_id == record.vendor_task_id]
    assert run.end_time == record.started_at + 60  # idled out
    after = harness.record(CLASS)
    assert after.reissue_count == 1 and after.started_at is not None
    # The stop is seen, and the task re-issued at once, at most one jittered sweep period (resync × 1.1)
    # after the vendor stopped it: the last look before the stop was at most that long before the next one.
    assert 0 <= after.started_at - run.end_time <= RESYNC * (1 + RESYNC_JITTER)
    # And it was looked at throughout, never more than one jittered period apart.
    looks = [e.time for e in harness.sim.log.entries() if e.api == "DescribeRecordStatus"]
    assert looks and looks[0] - record.started_at <= RESYNC * (1 + RESYNC_JITTER)
    assert max(b - a for a, b in itertools.pairwise(looks)) <= RESYNC * (1 + RESYNC_JITTER) + 1e-6


async def test_looks_held_to_resync_before_a_leave_deadline_do_not_start_the_per_second_probes(
    harness: Harness,
) -> None:
    # Volcengine: the last user leaving means the run idles out 20 s later; with --resync 5s the daemon looks
    # every ~5 s until then (the bound), and every second only from just after the idle deadline.
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, interval=5))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start(resync=RESYNC)
    await harness.advance(60)
    left_at, polls = harness.clock.now(), harness.calls("GetSnapshotTask")
    harness.sim.unpublish("volcengine", "lobby", user_id="alice")
    await harness.advance(40)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.DORMANT and record.observed_at is not None  # the room is known empty
    assert 20 <= record.observed_at - left_at <= 20 + policy.PROBE_DELAY + policy.PROBE_INTERVAL
    # 20 s / 5 s looks before the deadline, one or two probes after it, and none once dormant.
    looks_until_stopped = [
        e.time
        for e in harness.sim.log.entries()
        if e.api == "GetSnapshotTask" and left_at < e.time <= record.observed_at
    ]
    assert len(looks_until_stopped) <= 6, looks_until_stopped
    assert harness.calls("GetSnapshotTask") - polls == len(looks_until_stopped)
