"""Room and stream callbacks: the vendors' events, verified by capctl's own callback checks, sent unreliably
on request, and calls told apart by caller prefix."""

from __future__ import annotations

import json
from typing import Any

from reconciler.model import ProviderConfig
from reconciler.providers.volc_callbacks import parse_volcengine
from reconciler.providers.zego_callbacks import parse_zego
from reconciler.secrets import Secret
from reconciler.sim.config import BUILTIN_VOLC_APP, BUILTIN_ZEGO_APP
from tests.sim.conftest import START, Receiver, SimClient, scenario_body, sdk_sign, snapshot_body

VOLC_PROVIDER = ProviderConfig(
    name="volc",
    type="volcengine",
    app_id=BUILTIN_VOLC_APP.app_id,
    callback_secret=Secret(BUILTIN_VOLC_APP.callback_secret),
)
ZEGO_PROVIDER = ProviderConfig(
    name="zego",
    type="zego",
    app_id=str(BUILTIN_ZEGO_APP.app_id),
    callback_secret=Secret(BUILTIN_ZEGO_APP.callback_secret),
)
ZEGO_ROOM_EVENTS = ["room_create", "room_login", "stream_create", "stream_close", "room_logout", "room_close"]


def scenario(**fields: Any) -> dict[str, Any]:
    return scenario_body(seed=11, vendor="zego", duration=600, session_length={"min": 20, "max": 60}, **fields)


async def test_volcengine_room_and_stream_events_pass_capctl_verification(
    cb_client: SimClient, receiver: Receiver
) -> None:
    sim = cb_client.sim
    sim.publish("volcengine", "lobby", user_id="alice")  # her main stream: joins, video and audio start
    sim.publish("volcengine", "lobby", user_id="alice", stream_type=1)  # a screen: no event
    await sim.advance(1.5)
    sim.publish("volcengine", "lobby", user_id="bob")
    sim.unpublish("volcengine", "lobby", user_id="alice", stream_type=1)
    sim.unpublish("volcengine", "lobby", user_id="alice")  # her last stream: stops, then she leaves
    sim.unpublish("volcengine", "lobby", user_id="bob")  # the room's last: stops, leave, destroy
    await sim.deliver_due()
    events = [parse_volcengine(r["raw"], [VOLC_PROVIDER], START) for r in receiver.received]
    starts, stops = ["UserVideoStreamStart", "UserAudioStreamStart"], ["UserVideoStreamStop", "UserAudioStreamStop"]
    assert [(e.event, e.user_id) for e in events] == [
        *[(e, "alice") for e in ["UserJoinRoom", *starts]],
        *[(e, "bob") for e in ["UserJoinRoom", *starts]],
        *[(e, "alice") for e in [*stops, "UserLeaveRoom"]],
        *[(e, "bob") for e in [*stops, "UserLeaveRoom"]],
        ("RoomDestroy", None),
    ]
    assert all(e.room_id == "lobby" for e in events)
    assert [e.room_active for e in events] == [True] * 6 + [False] * 7
    assert [e.room_left for e in events] == [False] * 6 + [True] * 6 + [False]
    assert events[-1].room_closed and not any(e.room_closed for e in events[:-1])
    data = [json.loads(r["body"]["EventData"]) for r in receiver.received]
    ms = int(START * 1000)
    assert data[0] == {"RoomId": "lobby", "UserId": "alice", "Timestamp": ms}
    assert data[3] == data[5] == {"RoomId": "lobby", "UserId": "bob", "Timestamp": ms + 1500}
    assert data[-1] == {"RoomId": "lobby"}


async def test_zego_room_and_stream_events_pass_capctl_verification(cb_client: SimClient, receiver: Receiver) -> None:
    sim = cb_client.sim
    sim.publish("zego", "class-1", stream_id="cam", user_id="teacher")
    sim.publish("zego", "class-1", stream_id="screen", user_id="teacher")
    sim.unpublish("zego", "class-1", stream_id="cam")
    sim.unpublish("zego", "class-1", stream_id="screen")
    await sim.deliver_due()
    bodies = [r["body"] for r in receiver.received]
    assert [b["event"] for b in bodies] == [
        "room_create",
        "room_login",
        "stream_create",
        "stream_create",
        "stream_close",
        "stream_close",
        "room_logout",
        "room_close",
    ]
    events = [parse_zego(r["raw"], [ZEGO_PROVIDER], START) for r in receiver.received]
    assert all(e.room_id == "class-1" and e.app_id == str(BUILTIN_ZEGO_APP.app_id) for e in events)
    assert [e.room_active for e in events] == [False, False, True, True, False, False, False, False]
    create, login, stream, *_, logout, close = bodies
    assert create["appid"] == BUILTIN_ZEGO_APP.app_id and login["appid"] == str(BUILTIN_ZEGO_APP.app_id)
    assert create["room_session_id"] == close["room_session_id"] == int(login["room_seq"])
    assert create["room_create_time"] == str(int(START * 1000)) and close["close_reason"] == 0
    assert login["user_account"] == logout["user_account"] == "teacher"
    assert stream["stream_id"] == stream["stream_alias"] == "cam" and stream["stream_seq"] == "1"
    assert bodies[5]["type"] == "0" and bodies[5]["stream_seq"] == "4"


async def test_zego_room_callbacks_retry_after_2_4_8_16_32_seconds(cb_client: SimClient, receiver: Receiver) -> None:
    receiver.statuses = [500] * 100  # room_create, room_login and stream_create all fail throughout
    cb_client.sim.publish("zego", "class-1", stream_id="cam", user_id="teacher")
    await cb_client.sim.advance(100)
    creates = [
        r for r in (await cb_client.http.get("/_sim/callbacks")).json()["deliveries"] if r["event"] == "room_create"
    ]
    assert [r["time"] - START for r in creates] == [0, 2, 6, 14, 30, 62]
    assert [r["attempt"] for r in creates] == [1, 2, 3, 4, 5, 6]


async def test_a_scenario_sends_every_room_event_and_a_lossy_one_loses_the_same_ones(
    cb_client: SimClient, receiver: Receiver
) -> None:
    async def play(body: dict[str, Any]) -> list[tuple[str, str, str, int]]:
        """What arrived: event, room, user and time from the scenario's start (ids are per run)."""
        cb_client.sim.reset()
        receiver.received.clear()
        start = int(cb_client.clock.now())
        assert (await cb_client.http.post("/_sim/scenario", json=body)).status_code == 200
        await cb_client.sim.advance(700)
        return [
            (b["event"], b["room_id"], b.get("user_account") or b.get("user_id") or "", b["timestamp"] - start)
            for b in (r["body"] for r in receiver.received)
        ]

    clean = await play(scenario())
    assert {event for event, *_ in clean} == set(ZEGO_ROOM_EVENTS)
    assert clean == await play(scenario()), "the same seed gives the same traffic"
    lossy = await play(scenario(callbacks={"loss": 0.3}))
    counts = (await cb_client.http.get("/_sim/callbacks")).json()
    assert counts["lost"] + len(lossy) == len(clean) and 0.15 * len(clean) < counts["lost"] < 0.45 * len(clean)
    assert lossy == await play(scenario(callbacks={"loss": 0.3})), "the same seed loses the same callbacks"


async def test_duplicated_delayed_and_reordered_callbacks(cb_client: SimClient, receiver: Receiver) -> None:
    sim = cb_client.sim
    body = scenario(callbacks={"duplicate": 1.0, "delay": {"min": 1, "max": 2}})
    assert (await cb_client.http.post("/_sim/scenario", json=body)).status_code == 200
    await sim.advance(700)
    deliveries = (await cb_client.http.get("/_sim/callbacks")).json()["deliveries"]
    sent = [json.dumps(d["body"], sort_keys=True) for d in deliveries]
    assert len(sent) == 2 * len(set(sent)), "every callback arrives twice"
    assert all(1 <= d["time"] - d["body"]["timestamp"] <= 3 for d in deliveries)  # timestamp is whole seconds

    sim.reset()
    assert (await cb_client.http.post("/_sim/scenario", json=scenario(callbacks={"reorder": 0.5}))).status_code == 200
    await sim.advance(700)
    stamps = [d["body"]["timestamp"] for d in (await cb_client.http.get("/_sim/callbacks")).json()["deliveries"]]
    assert stamps != sorted(stamps), "some callbacks overtook later ones"


async def test_calls_under_a_caller_prefix_route_like_the_root_and_name_their_caller(client: SimClient) -> None:
    path = "/as/replica-2/volc/"
    query = {"Action": "StartSnapshot", "Version": "2023-11-01"}
    raw = json.dumps(snapshot_body()).encode()
    headers = sdk_sign(method="POST", path=path, query=query, body=raw, host="sim.test", when=client.clock.now())
    answer = await client.http.post(path, params=query, content=raw, headers=headers)
    assert answer.status_code == 200, answer.text  # the signature covers the path as sent, prefix included
    await client.volc("GetSnapshotTask", {"AppId": BUILTIN_VOLC_APP.app_id, "RoomId": "r1", "TaskId": "t1"})
    log = (await client.http.get("/_sim/requests")).json()["requests"]
    assert [(e["api"], e["caller"], e["path"]) for e in log] == [
        ("StartSnapshot", "replica-2", path),
        ("GetSnapshotTask", None, "/volc/"),
    ]
    mine = (await client.http.get("/_sim/requests", params={"caller": "replica-2"})).json()["requests"]
    assert [e["api"] for e in mine] == ["StartSnapshot"]
    assert (await client.http.get("/as/replica-2/_sim/tasks")).json()["tasks"][0]["taskId"] == "t1"


async def test_callback_chaos_without_a_scenario(cb_client: SimClient, receiver: Receiver) -> None:
    answer = await cb_client.http.put("/_sim/callbacks/chaos", json={"loss": 1.0, "seed": 3})
    assert answer.status_code == 200 and answer.json()["chaos"]["loss"] == 1.0
    cb_client.sim.publish("volcengine", "lobby", user_id="alice")  # her join, video and audio start
    await cb_client.sim.deliver_due()
    assert receiver.received == []
    assert (await cb_client.http.get("/_sim/callbacks/chaos")).json()["lost"] == 3
    bad = await cb_client.http.put("/_sim/callbacks/chaos", json={"loss": 2})
    assert bad.status_code == 400 and bad.json()["error"].startswith("body: loss: Input should be less than")
    assert (await cb_client.http.get("/_sim/callbacks/chaos")).json()["chaos"]["loss"] == 1.0
