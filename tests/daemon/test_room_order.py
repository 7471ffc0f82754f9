"""Room callbacks ordered by the vendor's event time (issues 17/18, time to capture): a late callback of an
earlier moment must not undo a newer one, and every signal that people entered wakes the room's capture.

The daemon is driven with hand-made callbacks (the simulator's own are switched off; its world still
holds the streams, so the runs behave as the vendor's would)."""

from __future__ import annotations

from typing import Any

from reconciler.daemon.roomorder import RoomOrder, supersedes
from reconciler.model import TaskStatus
from reconciler.providers.zego_signing import callback_signature
from tests.daemon.conftest import Harness, write_specs
from tests.daemon.test_http import ZEGO_SECRET, client, volc_body
from tests.daemon.test_prune import metrics
from tests.daemon.test_room_policy import dormant_recording, sample
from tests.specdocs import recording_job, snapshot_job

LOBBY = "SnapshotJob/audit/lobby"
CLASS = "RecordingJob/rec/class-1"


def test_a_signal_is_news_unless_a_contrary_newer_one_is_known() -> None:
    assert supersedes(10.0, True, 11.0, False)  # a leave after the join
    assert not supersedes(10.0, True, 9.0, False)  # a late leave of before the join: stale
    assert not supersedes(10.0, False, 9.0, True)  # a late entry of before the close: stale
    assert supersedes(10.0, False, 10.0, True) and not supersedes(10.0, True, 10.0, False)  # a tie: entry wins


def test_the_room_order_keeps_the_newest_entry_and_close_per_room() -> None:
    order = RoomOrder(window=600.0)
    assert order.news("r", 100.0, opening=True)
    assert not order.news("r", 99.0, opening=False)  # a leave older than the join
    assert order.news("r", 101.0, opening=False)  # a user left: older entries stay news (others may be in)
    assert order.news("r", 100.5, opening=True)
    assert order.news("r", 105.0, opening=False, closes_room=True)
    assert not order.news("r", 104.0, opening=True)  # a retried room_create older than the close
    assert order.news("other", 104.0, opening=True)  # rooms are apart
    assert order.news("r", 106.0, opening=True)
    assert len(order) == 2
    order.news("late", 2000.0, opening=True)  # 600 s later: the others are forgotten (their callbacks are stale)
    assert len(order) == 1


def quiet(harness: Harness) -> None:
    """The simulator's world keeps playing, but the daemon hears only the test's callbacks."""
    harness.sim.config.volcengine_callback_url = None
    harness.sim.config.zego_callback_url = None


async def post(harness: Harness, vendor: str, *bodies: dict[str, Any]) -> None:
    async with await client(harness) as http:
        for body in bodies:
            answer = await http.post(f"/callbacks/{vendor}", json=body)
            assert answer.status_code == 200, answer.text


def volc(harness: Harness, event: str, event_id: str, *, user: str, ago: float = 0.0) -> dict[str, Any]:
    """A signed Volcengine user or stream callback that happened `ago` seconds before now."""
    return volc_body(harness, event_id=event_id, skew=-ago, event_type=event, data={"RoomId": "lobby", "UserId": user})


def zego_room(harness: Harness, event: str, *, nonce: str, ago: float = 0.0, room: str = "class-1") -> dict[str, Any]:
    """A signed ZEGO room callback that happened `ago` seconds before now (its `timestamp`, in seconds)."""
    timestamp = int(harness.clock.now() - ago)
    return {
        "event": event,
        "appid": "1234567890",
        "room_id": room,
        "user_account": "pupil",
        "timestamp": timestamp,
        "nonce": nonce,
        "signature": callback_signature(ZEGO_SECRET, str(timestamp), nonce),
    }


async def alice_leaves_the_lobby(harness: Harness, entry: str) -> float:
    """The lobby's snapshot runs for 30 s while alice publishes (announced by an `entry` callback), then she
    stops publishing; the time she did. Only the test's callbacks reach the daemon."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, interval=5))
    quiet(harness)
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await post(harness, "volcengine", volc(harness, entry, "e1", user="alice"))
    await harness.advance(30)
    harness.sim.unpublish("volcengine", "lobby", user_id="alice")
    return harness.clock.now()


async def test_a_late_leave_of_before_a_rejoin_does_not_empty_the_room(harness: Harness) -> None:
    # alice drops out for 2 s; her leave reaches the daemon 5 s late, after her rejoin: the room is not empty.
    await alice_leaves_the_lobby(harness, "UserJoinRoom")
    await harness.advance(2)
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await post(harness, "volcengine", volc(harness, "UserJoinRoom", "j2", user="alice"))
    await harness.advance(3)
    looks = harness.calls("GetSnapshotTask")
    await post(harness, "volcengine", volc(harness, "UserLeaveRoom", "l1", user="alice", ago=5))
    text = await metrics(harness)
    assert sample(text, 'capctl_rooms_active{job_name="SnapshotJob/audit"}') == 1
    await harness.advance(27)  # past the idle deadline the leave would have set: no probing of a live room
    assert harness.calls("GetSnapshotTask") - looks <= 1  # the regular look only (probing: 5 or more)
    assert harness.record(LOBBY).status is TaskStatus.RUNNING and len(harness.running_sim_tasks()) == 1


async def test_the_first_of_a_users_stops_and_leave_sets_the_probes(harness: Harness) -> None:
    # alice stops her stream and leaves; her leave arrives 8 s after her stream stop. The vendor's idle clock
    # started with the stop: the run is looked at just after its idle deadline, not 8 s later.
    left = await alice_leaves_the_lobby(harness, "UserVideoStreamStart")
    await post(harness, "volcengine", volc(harness, "UserVideoStreamStop", "s2", user="alice"))
    await harness.advance(8)
    await post(harness, "volcengine", volc(harness, "UserLeaveRoom", "l1", user="alice", ago=8))
    await harness.advance(30)
    record = harness.record(LOBBY)
    assert record.status is not TaskStatus.RUNNING and record.observed_at is not None
    assert record.observed_at - (left + 20) < 1.0  # seen stopped within a second of its idle stop


async def test_a_stream_start_wakes_a_dormant_task_when_the_join_is_lost(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=20, interval=5))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await harness.advance(30)
    harness.sim.unpublish("volcengine", "lobby", user_id="alice")
    await harness.advance(120)
    assert harness.record(LOBBY).status is TaskStatus.DORMANT  # the room callbacks said it emptied
    quiet(harness)  # bob's UserJoinRoom is lost; his video stream's start arrives
    harness.sim.publish("volcengine", "lobby", user_id="bob")
    back = harness.clock.now()
    await post(harness, "volcengine", volc(harness, "UserVideoStreamStart", "s9", user="bob"))
    await harness.advance(2)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.RUNNING and record.started_at is not None and record.started_at - back < 1


async def test_a_retried_room_create_older_than_the_room_close_wakes_nothing(harness: Harness) -> None:
    # ZEGO retries a room callback for up to a minute: a room_create that failed at first can reach the
    # daemon after the room closed again. It must not start a recording in the empty room.
    await dormant_recording(harness)
    quiet(harness)
    harness.sim.publish("zego", "class-1", stream_id="guest")  # a short visit: in and out within 2 s
    await harness.advance(2)
    harness.sim.unpublish("zego", "class-1", stream_id="guest")
    await post(harness, "zego", zego_room(harness, "room_close", nonce="1"))
    await harness.advance(20)
    starts = harness.calls("StartRecord")
    await post(harness, "zego", zego_room(harness, "room_create", nonce="2", ago=22))  # the retry, 20 s on
    await harness.advance(5)
    assert harness.calls("StartRecord") == starts and harness.record(CLASS).status is TaskStatus.DORMANT
    await post(harness, "zego", zego_room(harness, "room_login", nonce="3"))  # a newer entry still wakes it
    await harness.advance(2)
    assert harness.calls("StartRecord") == starts + 1


async def test_a_selector_room_starts_on_a_zego_room_login_before_its_stream(harness: Harness) -> None:
    # room_create and room_login come with a user entering; a selector job starts the room on the first
    # of them. A user who never publishes costs one start and the looks until the listing says so.
    write_specs(harness.specs, recording_job("rec", ["class-1"]).replace("[class-1]", '{match: "class-*"}'))
    quiet(harness)
    await harness.start()
    await harness.advance(5)
    entered = harness.clock.now()
    await post(harness, "zego", zego_room(harness, "room_login", nonce="1"))
    await harness.advance(1)
    record = harness.record(CLASS)
    assert record.status is TaskStatus.RUNNING and record.started_at is not None
    assert record.started_at - entered < 0.5  # within the selector's batching delay (0.2 s)
    await harness.advance(3600)  # nobody publishes: it idles out, the listing finds the room empty
    assert harness.calls("StartRecord") == 1 and harness.running_sim_tasks() == []
    assert harness.record(CLASS).status is TaskStatus.STOPPED
