"""ZEGO signs a callback's timestamp and nonce, not its body (issue 14, point 16).

One captured signature therefore signs any body within the 300 s window. The daemon remembers each signed
pair with its body's digest: the vendor's retry (same pair, same body) is a 200 duplicate; the pair on
another body is refused with 409, logged once per pair, and changes nothing.
"""

from __future__ import annotations

from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from reconciler.daemon.router import ReplayGuard
from reconciler.model import TaskStatus
from reconciler.providers.callbacks import MAX_SKEW, CallbackEvent, CallbackRejected
from tests.daemon.conftest import Harness, write_specs
from tests.daemon.test_http import client, zego_body
from tests.specdocs import recording_job

CLASS = "RecordingJob/rec/class-1"


async def test_a_captured_signature_on_another_body_is_refused_and_changes_nothing(harness: Harness) -> None:
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=600))
    harness.sim.config.zego_callback_url = None  # only the callbacks this test sends
    await harness.start()
    await harness.advance(1)
    record = harness.record(CLASS)
    assert record.status is TaskStatus.RUNNING and record.vendor_task_id is not None and not record.productive
    captured = zego_body(harness, sequence=7, task_id=record.vendor_task_id, room_id="class-1")
    # The same timestamp, nonce and signature on a forged body: "upload finished" would mark the run productive.
    forged = captured | {"event_type": 1, "sequence": 8}
    async with await client(harness) as http:
        assert (await http.post("/callbacks/zego", json=captured)).json()["reason"] == "accepted"
        with capture_logs(processors=[merge_contextvars]) as logs:
            answers = [await http.post("/callbacks/zego", json=forged) for _ in range(3)]
        assert {a.status_code for a in answers} == {409}
        assert "replayed signature" in answers[0].json()["reason"]
        # The vendor's retry of the real callback, its keys in another order: still a duplicate, not a replay.
        retry = await http.post("/callbacks/zego", json=dict(reversed(list(captured.items()))))
        assert (retry.status_code, retry.json()["reason"]) == (200, "duplicate: already accepted")
    warnings = [e for e in logs if e["event"] == "callback rejected"]
    assert len(warnings) == 1 and warnings[0]["status"] == 409  # once per pair, not once per attempt
    assert not harness.record(CLASS).productive
    assert harness.record(CLASS).observed_at == record.observed_at
    assert harness.daemon is not None
    sample = harness.daemon.metrics.registry.get_sample_value
    assert sample("capctl_callbacks_total", {"vendor": "zego", "outcome": "rejected"}) == 3
    assert sample("capctl_callbacks_total", {"vendor": "zego", "outcome": "duplicate"}) == 1


async def test_a_captured_signature_recut_between_timestamp_and_nonce_is_the_same_pair(harness: Harness) -> None:
    """ZEGO signs the sorted concatenation of secret, timestamp and nonce. A nonce that sorts after the timestamp
    (`834567` after `1796…`) can give its first digits to the timestamp: `1796…834` (read as milliseconds,
    inside the window) and `567` concatenate to the same text, so the signature checks; as another pair, it
    was taken as a new callback, and one captured signature signed a second, forged body."""
    write_specs(harness.specs, recording_job("rec", ["class-1"], idle=600))
    harness.sim.config.zego_callback_url = None
    await harness.start()
    await harness.advance(1)
    record = harness.record(CLASS)
    assert record.vendor_task_id is not None and not record.productive
    captured = zego_body(harness, sequence=7, task_id=record.vendor_task_id, room_id="class-1", nonce="834567")
    recut = captured | {"timestamp": f"{captured['timestamp']}834", "nonce": "567", "event_type": 1, "sequence": 8}
    recased = captured | {"signature": captured["signature"].upper(), "event_type": 1, "sequence": 9}
    async with await client(harness) as http:
        assert (await http.post("/callbacks/zego", json=captured)).json()["reason"] == "accepted"
        for forged in (recut, recased):
            answer = await http.post("/callbacks/zego", json=forged)
            assert answer.status_code == 409
            # The reason names what is checked: the signature (this pair's timestamp and nonce were never seen).
            assert answer.json()["reason"].startswith("replayed signature: this signature already signed")
    assert not harness.record(CLASS).productive


def _event(pair: str, digest: str, at: float) -> CallbackEvent:
    return CallbackEvent("zego", "1", "event_type 4", f"k{pair}", at, signed_pair=pair, body_digest=digest)


def test_remembered_pairs_expire_with_the_time_window_and_are_capped() -> None:
    guard = ReplayGuard(size=3)
    now = 1_750_000_000.0
    assert guard.first_time(_event("a", "x", now), now)
    assert not guard.first_time(_event("a", "x", now), now + 1)  # the vendor's retry
    try:
        guard.first_time(_event("a", "y", now), now + 1)
    except CallbackRejected as exc:
        assert exc.status == 409 and exc.logged
    else:
        raise AssertionError("a replay on another body was accepted")
    # A re-cut of its signature reads a time up to 1 s later (`…000834` ms): 300.5 s on, it still passes the
    # time check, so the pair is still known (it was forgotten at 300 s: the re-cut forgery was accepted).
    try:
        guard.first_time(_event("a", "recut", now + 0.834), now + MAX_SKEW + 0.5)
    except CallbackRejected as exc:
        assert exc.status == 409
    else:
        raise AssertionError("a re-cut replay in the window's last second was accepted")
    # Once the pair's time (and a re-cut's) is out of the window it would be refused as stale: it is forgotten.
    later = now + MAX_SKEW + 2
    assert guard.first_time(_event("b", "x", later), later)
    assert len(guard) == 1
    for name in "cde":
        guard.first_time(_event(name, "x", later), later)
    assert len(guard) == 3  # the cap: the oldest pair ("b") went first
    assert guard.first_time(_event("b", "other", later), later)


def test_a_pair_only_verified_for_the_inbox_is_not_taken_for_the_retry_of_one_acted_on() -> None:
    """Walk 60f-3: a standby verifies a callback (`acted=False`) and may fail to store it (503): the vendor's retry
    reaching that replica once it leads is the first time the callback is acted on, not a duplicate."""
    guard = ReplayGuard()
    now = 1_750_000_000.0
    assert guard.first_time(_event("a", "x", now), now, acted=False)  # verified, refused 503
    assert guard.first_time(_event("a", "x", now), now + 1, acted=False)  # the retry, refused again
    assert guard.first_time(_event("a", "x", now), now + 5)  # the retry once it leads: acted on
    assert not guard.first_time(_event("a", "x", now), now + 6)  # a retry of that one: a duplicate
    try:
        guard.first_time(_event("a", "forged", now), now + 6, acted=False)
    except CallbackRejected as exc:
        assert exc.status == 409  # a verified pair on another body is still a replay
    else:
        raise AssertionError("a replay on another body was accepted")
