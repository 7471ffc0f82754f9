"""Ground truth on hand-made traffic whose coverage is known exactly, on the simulator's fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.sim.coverage import IDLED_OUT, NEVER_STARTED, ROLLOVER, VENDOR_ERROR
from tests.sim.conftest import START, VOLC_APP, SimClient, record_body, scenario_body, snapshot_body


async def at(client: SimClient, t: float) -> None:
    """Move the fake clock to START + t."""
    await client.sim.advance(START + t - client.clock.now())


async def report(client: SimClient) -> dict[str, Any]:
    answer = await client.http.get("/_sim/coverage")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def gaps(room: dict[str, Any], job: str) -> list[tuple[float, float, str]]:
    row = next(j for j in room["jobs"] if j["job"] == job)
    return [(g["start"] - START, g["end"] - START, g["cause"]) for g in row["gaps"]]


async def test_volcengine_stream_seconds_gaps_and_calls_per_empty_room_hour(client: SimClient) -> None:
    sim = client.sim
    await at(client, 5)
    sim.publish("volcengine", "r1", user_id="alice")  # one stream from 5 s
    await at(client, 8)
    assert (await client.volc("StartSnapshot", snapshot_body("snap", "r1", MaxIdleTime=10))).status_code == 200
    await at(client, 12)
    sim.publish("volcengine", "r1", user_id="alice", stream_type=1)  # two streams from 12 s
    await at(client, 20)
    sim.unpublish("volcengine", "r1", user_id="alice")
    sim.unpublish("volcengine", "r1", user_id="alice", stream_type=1)  # empty from 20 s: idles out at 30 s
    for t in (25, 35):
        await at(client, t)
        await client.volc("GetSnapshotTask", {"AppId": VOLC_APP, "RoomId": "r1", "TaskId": "snap"})
    await at(client, 40)
    sim.publish("volcengine", "r1", user_id="bob")  # back, but nobody re-issues the task
    await at(client, 45)
    await client.volc("GetSnapshotTask", {"AppId": VOLC_APP, "RoomId": "r1", "TaskId": "snap"})
    await at(client, 50)
    sim.unpublish("volcengine", "r1", user_id="bob")
    await at(client, 60)

    got = await report(client)
    (room,) = got["rooms"]
    assert room["roomId"] == "r1" and room["streamSecondsPresent"] == 7 + 2 * 8 + 10
    assert room["roomSeconds"] == 55 and room["emptySeconds"] == 20 + 10
    (job,) = room["jobs"]
    assert job["job"] == "snap" and job["runs"] == 1
    assert job["streamSecondsCaptured"] == 4 + 2 * 8
    assert job["coverage"] == pytest.approx(20 / 33)
    assert gaps(room, "snap") == [(5, 8, NEVER_STARTED), (40, 50, IDLED_OUT)]
    assert room["calls"] == 4 and room["callsWhileEmpty"] == 2
    calls = got["calls"]
    assert calls["byApi"] == {"GetSnapshotTask": 3, "StartSnapshot": 1}
    assert calls["whileEmptyByApi"] == {"GetSnapshotTask": 2}
    assert calls["perEmptyRoomHour"] == pytest.approx(2 / (30 / 3600))
    assert calls["perRoomHour"] == pytest.approx(4 / (55 / 3600))
    # Once the room has been empty 4 s: [24, 40) with the looks at 25 and 35 s, and [54, 60) with none; after
    # 10 s only [30, 40) counts (the stretch from 50 s is not longer than that).
    ledger = sim.world.coverage
    assert ledger.settled_empty_calls(4, START + 60) == pytest.approx((2, 22 / 3600))
    assert ledger.settled_empty_calls(10, START + 60) == pytest.approx((1, 10 / 3600))
    (total,) = got["jobs"]
    assert total == {
        "job": "snap",
        "vendor": "volcengine",
        "rooms": 1,
        "streamSecondsPresent": 33,
        "streamSecondsCaptured": 20,
        "coverage": pytest.approx(20 / 33),
        "gaps": 2,
        "gapSecondsMax": 10,
        "gapsByCause": {
            IDLED_OUT: {"count": 1, "p99Seconds": 10, "maxSeconds": 10},
            NEVER_STARTED: {"count": 1, "p99Seconds": 3, "maxSeconds": 3},
        },
        "roomFills": 2,  # at 5 s (captured 3 s later) and at 40 s (not captured for all of its 10 s)
        "timeToCaptureP50Seconds": 3,
        "timeToCaptureP99Seconds": 10,
    }


async def test_zego_rollover_and_vendor_error_gaps(client: SimClient) -> None:
    sim = client.sim
    sim.publish("zego", "z1", stream_id="teacher", user_id="t")
    first = await client.zego("StartRecord", record_body("z1", MaxRecordTime=300, MaxIdleTime=30))
    assert first.json()["Code"] == 0
    await at(client, 302)  # the recording ended at 300 s (max record time); re-issued 2 s later
    second = await client.zego("StartRecord", record_body("z1", MaxRecordTime=300, MaxIdleTime=30))
    await at(client, 350)
    sim.stop_task("zego", second.json()["Data"]["TaskId"], reason=1001)  # the vendor ends it
    await at(client, 360)
    await client.zego("StartRecord", record_body("z1", MaxRecordTime=300, MaxIdleTime=30))
    await at(client, 400)
    sim.unpublish("zego", "z1", stream_id="teacher")

    (room,) = (await report(client))["rooms"]
    assert room["streamSecondsPresent"] == 400
    assert gaps(room, "zego") == [(300, 302, ROLLOVER), (350, 360, VENDOR_ERROR)]
    (job,) = room["jobs"]
    assert job["runs"] == 3 and job["streamSecondsCaptured"] == 400 - 2 - 10


async def test_a_job_expected_everywhere_shows_rooms_it_never_covered(client: SimClient) -> None:
    body = scenario_body(duration=100, rooms=2, first_session_within=0, gap={"min": 1000, "max": 1000}, jobs=["snap"])
    body["session_length"] = {"min": 10, "max": 10}
    assert (await client.http.post("/_sim/scenario", json=body)).status_code == 200
    assert (await client.volc("StartSnapshot", snapshot_body("snap", "room-0001"))).status_code == 200
    await at(client, 100)
    got = await report(client)
    by_room = {r["roomId"]: r for r in got["rooms"]}
    assert gaps(by_room["room-0000"], "snap") == [(0, 10, NEVER_STARTED)]
    assert gaps(by_room["room-0001"], "snap") == []
    assert by_room["room-0000"]["roomSeconds"] == 100 and by_room["room-0000"]["emptySeconds"] == 90
    (job,) = got["jobs"]
    assert job["rooms"] == 2 and job["coverage"] == 0.5
