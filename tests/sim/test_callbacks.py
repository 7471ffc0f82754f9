"""Callbacks: signed as the vendors sign them, delivered on the sim clock, retried by the vendors' rules."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tests.sim.conftest import START, Receiver, SimClient, record_body, snapshot_body


def volc_signature_ok(body: dict[str, Any], secret: str) -> bool:
    nonce = body.get("Nonce", body.get("Noce"))
    values = [
        body["EventType"],
        body["EventData"],
        body["EventTime"],
        body["EventId"],
        body["AppId"],
        body["Version"],
        nonce,
        secret,
    ]
    return bool(hashlib.sha256("".join(sorted(values)).encode()).hexdigest() == body["Signature"])


async def test_volc_room_events_and_images(cb_client: SimClient, receiver: Receiver) -> None:
    sim = cb_client.sim
    await cb_client.volc("StartSnapshot", snapshot_body(ImageConfig={"Interval": 5}))
    sim.publish("volcengine", "r1", user_id="alice")
    await sim.advance(20)
    sim.unpublish("volcengine", "r1", user_id="alice")
    await sim.deliver_due()
    kinds = receiver.events("EventType")
    assert kinds[0] == "UserJoinRoom" and kinds[-2:] == ["UserLeaveRoom", "RoomDestroy"]
    images = [
        json.loads(r["body"]["EventData"])
        for r in receiver.received
        if r["body"]["EventType"] == "SnapshotRealTimeData"
    ]
    assert len(images) == 4
    assert [i["Timestamp"] for i in images] == [int((START + t) * 1000) for t in (0, 5, 10, 15)]
    assert images[0]["UserId"] == "alice" and images[0]["TaskId"] == "t1"
    assert all(volc_signature_ok(r["body"], "capctl-sim-volc-callback") for r in receiver.received)
    assert all(r["url"].endswith("/callbacks/volcengine") for r in receiver.received)


@pytest.mark.parametrize(
    ("max_idle", "events"),
    [
        # "Triggered within 30 seconds after the number of streams in the room becomes zero": with the default
        # MaxIdleTime (30 s) too, at the idle end and before it; reminders "until ... the task times out", none at it.
        (None, [(30, 4), (30, 2)]),
        (60, [(30, 4), (60, 2)]),
        (20, [(20, 2)]),  # ended before 30 s: when "within 30 s" the event would come is not said
    ],
)
async def test_zego_zero_streams_event_with_the_idle_end(
    cb_client: SimClient, receiver: Receiver, max_idle: int | None, events: list[tuple[int, int]]
) -> None:
    body = record_body()
    if max_idle is not None:
        body["RecordInputParams"]["MaxIdleTime"] = max_idle
    await cb_client.zego("StartRecord", body)
    await cb_client.sim.advance(100)
    bodies = [x["body"] for x in receiver.received]
    assert [(int(b["timestamp"]) - int(START), b["event_type"]) for b in bodies] == events


async def test_zego_events_signed_and_idle_quit_reason(cb_client: SimClient, receiver: Receiver) -> None:
    sim = cb_client.sim
    r = await cb_client.zego("StartRecord", record_body(MaxIdleTime=90))
    task_id = r.json()["Data"]["TaskId"]
    await sim.advance(90)
    bodies = [x["body"] for x in receiver.received]
    assert [b["event_type"] for b in bodies] == [4, 4, 2]  # zero streams at 30 s and 60 s, then the end
    assert bodies[-1]["detail"] == {"quit_reason": 3} and bodies[-1]["task_id"] == task_id
    # ZEGO's recording-status callback page: `timestamp` and `nonce` are strings, `sequence` counts from 0.
    assert [b["sequence"] for b in bodies] == [0, 1, 2]
    for b in bodies:
        assert isinstance(b["timestamp"], str) and isinstance(b["nonce"], str)
        expected = hashlib.sha1("".join(sorted(["capctl-sim-zego-callback", b["timestamp"], b["nonce"]])).encode())
        assert expected.hexdigest() == b["signature"]
    task2 = (await cb_client.zego("StartRecord", record_body())).json()["Data"]["TaskId"]
    await cb_client.zego("StopRecord", {"TaskId": task2})
    await sim.deliver_due()
    assert receiver.received[-1]["body"]["event_type"] == 5
    assert {r["url"] for r in receiver.received} == {"http://daemon.test/callbacks/zego"}
    # Seed 003 callback_url: a task's own URL takes its events, instead of the one configured for the service.
    body = record_body()
    body["RecordOutputParams"]["CallbackUrl"] = "http://hooks.test/zego"
    task3 = (await cb_client.zego("StartRecord", body)).json()["Data"]["TaskId"]
    await cb_client.zego("StopRecord", {"TaskId": task3})
    await sim.deliver_due()
    assert (receiver.received[-1]["url"], receiver.received[-1]["body"]["task_id"]) == ("http://hooks.test/zego", task3)


async def test_retries_are_paced_by_sim_clock(cb_client: SimClient, receiver: Receiver) -> None:
    sim = cb_client.sim
    receiver.statuses = [500, 503, 500]
    sim.publish("volcengine", "r1", user_id="bob", stream_type=1)  # one UserJoinRoom (a screen), failing thrice
    await sim.deliver_due()
    assert len(receiver.received) == 1
    await sim.advance(4.9)
    assert len(receiver.received) == 1
    await sim.advance(0.1)
    assert len(receiver.received) == 2
    await sim.advance(60)
    assert len(receiver.received) == 3  # first try + 2 retries, then it gives up
    assert [d["attempt"] for d in sim.callbacks.log] == [1, 2, 3]


async def test_thumbnail_result_callback(cb_client: SimClient, receiver: Receiver) -> None:
    params = [
        ("Vendor", "Tencent"),
        ("FileId", "42"),
        ("Definition", "10"),
        ("ExtTimeOffsetSet[]", "1.5"),
        ("Type", "SnapshotByTimeOffset"),
    ]
    receiver.statuses = [500] * 5  # failing: ZEGO's page retries 5 times, 2, 4, 8, 16 and 32 s apart
    r = await cb_client.thumbs(params)
    await cb_client.sim.advance(2)
    (body,) = [x["body"] for x in receiver.received]
    assert body["event"] == "snapshot" and body["vendor"] == "tencent"
    assert body["task_id"] == r.json()["Data"]["Tencent"]["TaskId"]
    assert json.loads(body["snapshot_pic_list"])[0]["offset"] == 1500
    # The page's types: appid, timestamp and nonce are strings; field_id names the Tencent source file.
    assert (body["appid"], body["field_id"], body["timestamp"]) == ("1234567890", "42", str(int(START) + 2))
    assert isinstance(body["nonce"], str)
    for gap in (2, 4, 8, 16, 32):
        await cb_client.sim.advance(gap - 0.1)
        before = len(receiver.received)
        await cb_client.sim.advance(0.1)
        assert len(receiver.received) == before + 1
    await cb_client.sim.advance(600)
    assert len(receiver.received) == 6 and receiver.received[-1]["body"] == body
