"""A key whose reconcile fails waits for its backoff step (5 s, 10 s, 20 s, … 5 min), whatever the resync.

Before, the resync timer queued failing keys like any other: a start whose own retries outlasted --resync was
queued while its worker held it and ran again the moment it failed, and every failing key was retried at each
resync, so a failing vendor was called back to back while the log said `retry_in: 40.0`, `80.0`, ….
"""

from __future__ import annotations

import io
import json
import re
from datetime import datetime

import httpx

from reconciler import logs
from reconciler.daemon import Daemon
from reconciler.render import render_state_table
from reconciler.sim.faults import FaultConfig
from tests.daemon.conftest import DAEMON, Harness, write_specs
from tests.specdocs import snapshot_job

LOBBY = "SnapshotJob/audit/lobby"


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def failing_start(harness: Harness, resync: float = 30.0) -> Daemon:
    """The lobby runs, every StartSnapshot fails from now on, and the vendor stops the run: the daemon re-issues it."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    daemon = await harness.start(resync=resync)
    await harness.advance(1)
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StartSnapshot"]))
    harness.sim.stop_task(
        "volcengine", harness.record(LOBBY).vendor_task_id or "", room_id="lobby", reason="UnknownStopReason"
    )
    daemon.sync([LOBBY])
    return daemon


async def test_a_failing_start_waits_for_its_backoff_steps_not_the_resync(harness: Harness) -> None:
    logged = io.StringIO()
    logs.configure("info", json_logs=True, stream=logged)
    await failing_start(harness, resync=10.0)
    await harness.advance(150)
    failed = [
        event
        for event in map(json.loads, logged.getvalue().splitlines())
        if event["event"] == "reconcile failed; retrying with backoff"
    ]
    # Each round is 6 tries over ~15 s, then waits 5, 10, 20, 40 s: 5 rounds in 150 s (before: 10, one per resync).
    assert [e["retry_in"] for e in failed] == [5.0, 10.0, 20.0, 40.0, 80.0][: len(failed)]
    assert 4 <= len(failed) <= 5, [e["retry_in"] for e in failed]
    harness.sim.faults.set(FaultConfig())
    await harness.advance(90)  # the next step starts it
    assert harness.record(LOBBY).status.value == "running"


async def test_a_start_tried_again_after_a_failure_shows_its_last_error_meanwhile(harness: Harness) -> None:
    """`capctl state list` and the status page showed `pending` and no error for most of each round of retries."""
    daemon = await failing_start(harness)
    await harness.advance(20)  # the first round failed (~15 s); the second one is under way or waiting
    seen = set()
    for _ in range(30):
        record = harness.record(LOBBY)
        seen.add(record.status.value)
        assert record.last_error is not None and "InternalError" in record.last_error, record
        await harness.advance(1)
    assert seen == {"pending", "failed"}
    while harness.record(LOBBY).status.value != "failed":  # a round of tries ends: 20 s or more to the next one
        await harness.advance(1)
    harness.sim.faults.set(FaultConfig())
    daemon.sync([LOBBY])  # the vendor is back: `capctl sync` tries it now, not at its next backoff step
    await harness.advance(1)
    assert harness.record(LOBBY).status.value == "running" and harness.record(LOBBY).last_error is None


async def test_the_status_page_shows_when_a_failed_task_is_tried_again(harness: Harness) -> None:
    """Its next attempt was blank: the retry lives in the work queue, not in the record."""
    daemon = await failing_start(harness)
    for _ in range(30):  # until the first round of tries has failed
        await harness.advance(1)
        if harness.record(LOBBY).status.value == "failed":
            break
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=daemon.asgi_app), base_url=DAEMON) as http:
        status = (await http.get("/api/v1/status")).json()
    (task,) = (t for j in status["jobs"] for g in j["groups"] for t in g["tasks"])
    assert task["status"] == "failed" and task["next_attempt"] is not None
    assert 0 < timestamp(task["next_attempt"]) - harness.clock.now() <= 6  # the first backoff step, 5 s


async def test_state_list_shows_when_a_failed_task_is_tried_again(harness: Harness) -> None:
    """Its NEXT ATTEMPT was `-`: the daemon's backoff lived only in its work queue. The failure's one write
    says it now (5 s, then 10 s, ... as the queue waits), and the next try's intent clears it."""
    await failing_start(harness)
    steps: list[tuple[float, float]] = []
    while len(steps) < 2:
        record = harness.record(LOBBY)
        if record.status.value == "failed" and (not steps or record.observed_at != steps[-1][0]):
            assert record.next_attempt_at is not None and record.observed_at is not None, record
            steps.append((record.observed_at, record.next_attempt_at - record.observed_at))
            row = render_state_table([record], 0, now=harness.clock.now()).splitlines()[-1]
            assert re.split(" {3,}", row)[3] == ("in 5s" if len(steps) == 1 else "in 10s"), row  # NEXT ATTEMPT
        elif record.status.value == "pending":
            assert record.next_attempt_at is None, record
        await harness.advance(1)
    assert [round(delay) for _, delay in steps] == [5, 10]


async def test_each_throttling_answer_counts_once_in_the_throttled_metric_and_the_start_goes_through(
    harness: Harness,
) -> None:
    """What the CapctlVendorThrottled alert reads (deploy/observability): every 'too many requests' answer,
    by API, while the retry after it succeeds; no other test made the vendor throttle the daemon."""
    harness.sim.faults.set(FaultConfig(throttle_next=2, apis=["StartSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    daemon = await harness.start()
    await harness.advance(10)
    assert harness.record(LOBBY).status.value == "running"
    sample = daemon.metrics.registry.get_sample_value
    assert sample("capctl_vendor_throttled_total", {"api": "StartSnapshot"}) == 2
    assert sample("capctl_vendor_calls_total", {"api": "StartSnapshot", "outcome": "throttled"}) == 2
    assert sample("capctl_vendor_calls_total", {"api": "StartSnapshot", "outcome": "ok"}) == 1
    assert harness.calls("StartSnapshot") == 3


async def test_a_call_throttled_past_the_limit_gives_up_after_31_tries_then_backs_off(harness: Harness) -> None:
    """README: throttling answers are retried up to 30 times. The 31st answer ends the call (the budget has
    slowed down all along); the key then waits its backoff step, and the next try gets through."""
    harness.sim.faults.set(FaultConfig(throttle_next=31, apis=["StartSnapshot"]))
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    logged = io.StringIO()
    logs.configure("info", json_logs=True, stream=logged)
    daemon = await harness.start()
    await harness.advance(900)
    failed = [
        e
        for e in map(json.loads, logged.getvalue().splitlines())
        if e["event"] == "reconcile failed; retrying with backoff"
    ]
    assert len(failed) == 1 and failed[0]["error"].endswith("after 31 tries") and failed[0]["retry_in"] == 5.0
    sample = daemon.metrics.registry.get_sample_value
    assert sample("capctl_vendor_throttled_total", {"api": "StartSnapshot"}) == 31
    assert (sample("capctl_vendor_calls_total", {"api": "StartSnapshot", "outcome": "ok"}) or 0) >= 1  # then it ran
