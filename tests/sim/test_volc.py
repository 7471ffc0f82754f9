"""Volcengine snapshot calls: SDK-signed requests, gateway errors, strict bodies and the task lifecycle."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.sim.conftest import VOLC_APP, SimClient, sdk_sign, snapshot_body


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["ResponseMetadata"]["Error"]["Code"]
    return code


async def test_start_signed_by_official_sdk_is_accepted(client: SimClient) -> None:
    r = await client.volc("StartSnapshot", snapshot_body())
    assert r.status_code == 200, r.text
    assert r.json()["Result"] == "ok"
    meta = r.json()["ResponseMetadata"]
    assert meta["Action"] == "StartSnapshot" and meta["Service"] == "rtc" and "Error" not in meta


@pytest.mark.parametrize("path", ["/volc", "/volc/"])
async def test_both_prefix_forms_work_without_redirect(client: SimClient, path: str) -> None:
    r = await client.volc("StartSnapshot", snapshot_body(), path=path)
    assert r.status_code == 200, r.text


async def test_wrong_secret_is_signature_mismatch(client: SimClient) -> None:
    r = await client.volc("StartSnapshot", snapshot_body(), sk="not-the-secret")
    assert (r.status_code, error_code(r)) == (401, "SignatureDoesNotMatch")


async def test_unknown_access_key(client: SimClient) -> None:
    r = await client.volc("StartSnapshot", snapshot_body(), ak="AKUNKNOWN")
    assert (r.status_code, error_code(r)) == (401, "InvalidAccessKey")


async def test_tampered_body_is_signature_mismatch(client: SimClient) -> None:
    r0 = await client.volc("StartSnapshot", snapshot_body())
    assert r0.status_code == 200
    request = r0.request
    r = await client.http.post(
        str(request.url), content=request.content.replace(b'"t1"', b'"t2"'), headers=request.headers
    )
    assert (r.status_code, error_code(r)) == (401, "SignatureDoesNotMatch")


async def test_missing_authorization(client: SimClient) -> None:
    r = await client.http.post("/volc/?Action=StartSnapshot&Version=2023-11-01", json=snapshot_body())
    assert (r.status_code, error_code(r)) == (401, "MissingSignature")


@pytest.mark.parametrize(
    ("spoil", "status", "code"),
    [
        ({"Authorization": "HMAC-SHA256 garbage"}, 401, "MissingSignature"),
        ({"X-Date": "2023-01-01"}, 403, "InvalidTimestamp"),
        ({"X-Content-Sha256": "0" * 64}, 401, "SignatureDoesNotMatch"),  # the body is not the one signed
    ],
)
async def test_the_gateway_refuses_a_spoilt_signature_with_the_vendors_code(
    client: SimClient, spoil: dict[str, str], status: int, code: str
) -> None:
    query, raw = {"Action": "StartSnapshot", "Version": "2023-11-01"}, json.dumps(snapshot_body()).encode()
    headers = sdk_sign(method="POST", path="/volc/", query=query, body=raw, host="sim.test", when=client.clock.now())
    r = await client.http.post("/volc/", params=query, content=raw, headers=headers | spoil)
    assert (r.status_code, error_code(r)) == (status, code) and client.sim.tasks() == []


async def test_a_request_signed_for_another_region_does_not_match(client: SimClient) -> None:
    r = await client.volc("StartSnapshot", snapshot_body(), region="ap-singapore-1")
    assert (r.status_code, error_code(r)) == (401, "SignatureDoesNotMatch")


async def test_a_signed_request_with_the_wrong_method_or_no_json_is_an_invalid_parameter(client: SimClient) -> None:
    query = {"Action": "StartSnapshot", "Version": "2023-11-01"}
    for method, raw, message in (
        ("GET", b"", "StartSnapshot must be called with POST"),
        ("POST", b"{nope", "the body is not valid JSON"),
    ):
        headers = sdk_sign(
            method=method, path="/volc/", query=query, body=raw, host="sim.test", when=client.clock.now()
        )
        r = await client.http.request(method, "/volc/", params=query, content=raw, headers=headers)
        assert (r.status_code, error_code(r)) == (400, "InvalidParameter")
        assert r.json()["ResponseMetadata"]["Error"]["Message"] == message


@pytest.mark.parametrize(("skew", "ok"), [(14 * 60, True), (-14 * 60, True), (16 * 60, False), (-16 * 60, False)])
async def test_clock_skew_window(client: SimClient, skew: int, ok: bool) -> None:
    r = await client.volc("StartSnapshot", snapshot_body(), when=client.clock.now() + skew)
    if ok:
        assert r.status_code == 200
    else:
        assert (r.status_code, error_code(r)) == (403, "InvalidTimestamp")


async def test_unknown_action_or_version(client: SimClient) -> None:
    r = await client.volc("StartRecording", snapshot_body())
    assert (r.status_code, error_code(r)) == (404, "InvalidActionOrVersion")


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda b: b.update(MaxIdleTime="5"), "MaxIdleTime: must be an integer"),
        (lambda b: b.update(MaxIdleTime=0), "MaxIdleTime: must be >= 1"),
        (lambda b: b.update(MaxIdleTime=True), "MaxIdleTime: must be an integer"),
        (lambda b: b.update(ImageConfig={"Interval": 601}), "ImageConfig.Interval: must be <= 600"),
        (lambda b: b.update(ImageConfig={"Width": 1921}), "ImageConfig.Width"),
        (lambda b: b.update(ImageConfig={"Format": 2}), "ImageConfig.Format"),
        (lambda b: b.update(TaskId="bad task!"), "TaskId: must match"),
        (lambda b: b.update(AppId="app 1"), "AppId: must match"),  # seed 001: "TaskId 及以上 Id 字段"
        (lambda b: b.pop("StorageConfig"), "StorageConfig: is required"),
        (lambda b: b.update(StorageConfig={"Type": 3}), "StorageConfig.VeImageXConfig: is required"),
        (lambda b: b.update(StorageConfig={"Type": 0, "TosConfig": {"Bucket": "b"}}), "TosConfig.AccountId"),
        (lambda b: b.update(Extra=1), "Extra: unknown field"),
        (
            lambda b: b.update(TargetStreams={"StreamList": [{"UserId": f"u{i}"} for i in range(18)]}),
            "at most 17",
        ),
        (
            lambda b: b.update(
                TargetStreams={"StreamList": [{"UserId": "a", "Index": 1}, {"UserId": "b", "Index": 1}]}
            ),
            "duplicate Index",
        ),
    ],
)
async def test_body_validation(client: SimClient, mutate: Callable[[dict[str, Any]], object], where: str) -> None:
    body = snapshot_body()
    mutate(body)
    r = await client.volc("StartSnapshot", body)
    assert r.status_code == 400
    assert error_code(r) == "InvalidParameter"
    assert where in r.json()["ResponseMetadata"]["Error"]["Message"]
    assert client.sim.tasks() == []


async def test_illegal_room_id_code(client: SimClient) -> None:
    r = await client.volc("StartSnapshot", snapshot_body(room="room with spaces"))
    assert error_code(r) == "InvalidParameter.IllegalRoomID"


async def test_seventeen_streams_and_storage_types_are_accepted(client: SimClient) -> None:
    streams = {"StreamList": [{"UserId": f"u{i}", "StreamType": i % 2} for i in range(17)]}
    storages = [
        {"Type": 1, "VodConfig": {"AccountId": "1", "Space": "s", "StorageClass": 2, "AutoSetFileExtension": True}},
        {"Type": 2, "CustomConfig": {"Vendor": 4, "Bucket": "b", "AccessKey": "a", "SecretKey": "s"}},
        {"Type": 3, "VeImageXConfig": {"AccountId": "1", "ServiceId": "svc"}},
    ]
    for i, storage in enumerate(storages):
        r = await client.volc("StartSnapshot", snapshot_body(f"t{i}", TargetStreams=streams, StorageConfig=storage))
        assert r.status_code == 200, r.text


async def test_same_task_id_while_running_is_already_started(client: SimClient) -> None:
    await client.volc("StartSnapshot", snapshot_body())
    r = await client.volc("StartSnapshot", snapshot_body())
    assert r.status_code == 200
    assert r.json()["Result"].startswith("The task has been started. Please do not call")
    assert len(client.sim.tasks()) == 1


async def test_idle_timeout_in_empty_room_exactly_max_idle(client: SimClient) -> None:
    await client.volc("StartSnapshot", snapshot_body(MaxIdleTime=60))
    await client.sim.advance(59)
    task = (await get(client))["SnapshotTask"]
    assert (task["Status"], task["EndTime"], task["StopReason"]) == (2, 0, "")
    await client.sim.advance(1)
    task = (await get(client))["SnapshotTask"]
    assert task["Status"] == 3 and task["StopReason"] == "IdleTimeOut"
    assert task["EndTime"] - task["StartTime"] == 60_000


async def get(client: SimClient, task_id: str = "t1", room: str = "r1") -> dict[str, Any]:
    r = await client.volc("GetSnapshotTask", {"AppId": VOLC_APP, "RoomId": room, "TaskId": task_id})
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["Result"]
    return result


async def test_streams_keep_task_alive_and_images_are_counted(client: SimClient) -> None:
    sim = client.sim
    await client.volc("StartSnapshot", snapshot_body(MaxIdleTime=30, ImageConfig={"Interval": 5}))
    await sim.advance(10)
    sim.publish("volcengine", "r1", user_id="alice")
    await sim.advance(3600)
    (task,) = sim.tasks()
    assert task.running and task.images == 720
    sim.unpublish("volcengine", "r1", user_id="alice")
    await sim.advance(29)
    assert task.running
    await sim.advance(1)
    assert not task.running and task.stop_reason == "IdleTimeOut"
    assert task.end_time == task.start_time + 10 + 3600 + 30
    assert task.images == 720


async def test_target_streams_only_count_named_streams(client: SimClient) -> None:
    sim = client.sim
    body = snapshot_body(MaxIdleTime=20, TargetStreams={"StreamList": [{"UserId": "alice", "StreamType": 1}]})
    await client.volc("StartSnapshot", body)
    sim.publish("volcengine", "r1", user_id="alice")  # camera, not the screen stream named
    sim.publish("volcengine", "r1", user_id="bob", stream_type=1)
    await sim.advance(20)
    assert (await get(client))["SnapshotTask"]["StopReason"] == "IdleTimeOut"


async def test_stop_and_stop_unknown(client: SimClient) -> None:
    await client.volc("StartSnapshot", snapshot_body())
    stop = {"AppId": VOLC_APP, "RoomId": "r1", "TaskId": "t1"}
    r = await client.volc("StopSnapshot", stop)
    assert r.status_code == 200 and r.json()["Result"] == "ok"
    assert (await get(client))["SnapshotTask"]["StopReason"] == "StopByAPI"
    r = await client.volc("StopSnapshot", stop)
    assert (r.status_code, error_code(r)) == (400, "InvalidParameter.ErrorActiveTaskNotFound")
    r = await client.volc("StartSnapshot", snapshot_body())
    assert r.json()["Result"] == "ok"  # an ended TaskId starts a new run


async def test_update_changes_only_interval(client: SimClient) -> None:
    sim = client.sim
    await client.volc("StartSnapshot", snapshot_body(ImageConfig={"Interval": 10, "Width": 800}))
    sim.publish("volcengine", "r1", user_id="alice")
    await sim.advance(100)
    update: dict[str, Any] = {
        "AppId": VOLC_APP,
        "RoomId": "r1",
        "TaskId": "t1",
        "ImageConfig": {"Interval": 2, "Width": 800},
    }
    r = await client.volc("UpdateSnapshot", update)
    assert r.status_code == 200, r.text
    await sim.advance(100)
    (task,) = sim.tasks()
    assert task.interval == 2 and task.images == 10 + 50
    update["ImageConfig"] = {"Width": 640}
    r = await client.volc("UpdateSnapshot", update)
    assert r.status_code == 400 and "only ImageConfig.Interval" in r.text
    update["MaxIdleTime"] = 5
    r = await client.volc("UpdateSnapshot", update)
    assert "MaxIdleTime: unknown field" in r.text
    r = await client.volc("UpdateSnapshot", {**update, "TaskId": "nope", "ImageConfig": {}})
    assert r.status_code == 400


async def test_get_unknown_and_after_72h(client: SimClient) -> None:
    r = await client.volc("GetSnapshotTask", {"AppId": VOLC_APP, "RoomId": "r1", "TaskId": "zz"})
    assert (r.status_code, error_code(r)) == (400, "InvalidParameter.ErrorActiveTaskNotFound")
    await client.volc("StartSnapshot", snapshot_body())
    await client.sim.advance(72 * 3600 + 1)
    r = await client.volc("GetSnapshotTask", {"AppId": VOLC_APP, "RoomId": "r1", "TaskId": "t1"})
    assert r.status_code == 400


async def test_app_of_another_account_is_refused(client: SimClient) -> None:
    r = await client.volc("StopSnapshot", {"AppId": "other-app", "RoomId": "r1", "TaskId": "t1"})
    assert r.status_code == 400 and "not an app of this account" in r.text


async def test_a_task_running_beyond_72h_is_still_stopped_and_updated(client: SimClient) -> None:
    """The 72 h window is GetSnapshotTask's (vendor-apis.md): StopSnapshot's not-found is for a task that is
    unknown or stopped, and a task that has run for four days is neither."""
    client.sim.publish("volcengine", "r1", user_id="alice")
    await client.volc("StartSnapshot", snapshot_body())
    await client.sim.advance(72 * 3600 + 1)
    ids = {"AppId": VOLC_APP, "RoomId": "r1", "TaskId": "t1"}
    r = await client.volc("GetSnapshotTask", ids)
    assert (r.status_code, error_code(r)) == (400, "InvalidParameter.ErrorActiveTaskNotFound")
    r = await client.volc("UpdateSnapshot", {**ids, "ImageConfig": {"Interval": 3}})
    assert r.status_code == 200, r.text
    r = await client.volc("StopSnapshot", ids)
    assert r.status_code == 200, r.text
    (task,) = client.sim.tasks()
    assert not task.running and task.stop_reason == "StopByAPI"
