"""ZEGO: signature 2.0, the current recording API, the legacy v1 API and MediaThumbnails."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from reconciler.sim.signing import make_legacy_token
from tests.sim.conftest import START, ZEGO_APP, SimClient, record_body, zego_query

SECRET = "0123456789abcdef0123456789abcdef"


def code(r: httpx.Response) -> int:
    assert r.status_code == 200, r.text
    value: int = r.json()["Code"]
    return value


async def test_documented_signature_accepted_and_bad_rejected(client: SimClient) -> None:
    r = await client.zego("StartRecord", record_body())
    assert code(r) == 0 and len(r.json()["Data"]["TaskId"]) == 16
    assert code(await client.zego("StartRecord", record_body(), secret="f" * 32)) == 100000005
    assert code(await client.zego("StartRecord", record_body(), app_id=42)) == 100000005
    assert code(await client.zego("StartRecord", record_body(), when=client.clock.now() - 601)) == 100000004
    assert code(await client.zego("StartRecord", record_body(), when=client.clock.now() + 599)) == 0


@pytest.mark.parametrize("nonce", ["", "abc", "4fd24687296dd9f", "4fd24687296dd9f3a", "4fd24687296dd9g3"])
async def test_a_nonce_that_is_not_16_hex_characters_is_refused(client: SimClient, nonce: str) -> None:
    """Seed 004: SignatureNonce is "A 16-character hexadecimal random string", and the signature covers it."""
    query = {**zego_query("DescribeRecordStatus", client.clock.now()), "SignatureNonce": nonce}
    ts = query["Timestamp"]
    query["Signature"] = hashlib.md5(f"{ZEGO_APP}{nonce}{SECRET}{ts}".encode()).hexdigest()
    answer = await client.http.post("/zego/cloudrecord/", params=query, json={"TaskId": "0123456789abcdef"})
    assert code(answer) == 100000005


@pytest.mark.parametrize(
    ("field", "value"), [("AppId", "²"), ("AppId", "１２３４５６７８９０"), ("Timestamp", "²"), ("Timestamp", "１")]
)
async def test_an_app_id_or_timestamp_in_digits_other_than_ascii_is_an_invalid_signature(
    client: SimClient, field: str, value: str
) -> None:
    """AppId is a uint32, Timestamp an int64 (seed 004): "²" passes str.isdigit() and crashed int() (HTTP 500);
    "１２３…" (fullwidth) was read as the app 1234567890. Signed as sent, both are answered 100000005."""
    query = {**zego_query("DescribeRecordStatus", client.clock.now()), field: value}
    nonce, ts = query["SignatureNonce"], query["Timestamp"]
    query["Signature"] = hashlib.md5(f"{query['AppId']}{nonce}{SECRET}{ts}".encode()).hexdigest()
    answer = await client.http.post("/zego/cloudrecord/", params=query, json={"TaskId": "0123456789abcdef"})
    assert code(answer) == 100000005
    thumbnails = {**query, "Action": "MediaThumbnails", "Vendor": "Tencent", "FileId": "1", "Type": "SampleSnapshot"}
    assert code(await client.http.get("/zego/rtc/", params={**thumbnails, "Definition": "10"})) == 7


def mix(**region: int) -> dict[str, Any]:
    """A mix_config on a 1280 × 720 canvas with one region, its fields overridden by `region` (snake_case)."""
    item = {
        "Top": 0,
        "Left": 0,
        "Bottom": 720,
        "Right": 1280,
        "Layer": 1,
        **{"".join(part.capitalize() for part in k.split("_")): v for k, v in region.items()},
    }
    video = {"Width": 1280, "Height": 720, "Fps": 15, "Bitrate": 1_500_000}
    return {"MixOutputStreamId": "mix", "MixOutputVideoConfig": video, "MixInputList": [item]}


TENCENT_VOD = {"Vendor": 6, "TencentCloudVodParams": {"SecretId": "a", "SecretKey": "s", "Region": "r"}}
ALIYUN_VOD = {
    "Vendor": 5,
    "AlibabaCloudVodParams": {
        "Region": "cn-shanghai",
        "AccessKeyId": "a",
        "AccessKeySecret": "s",
        "Title": "t",
        "StorageLocation": "x.oss-cn-shanghai.aliyuncs.com",
    },
}


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda b: b["RecordInputParams"].update(MaxIdleTime=4), "RecordInputParams.MaxIdleTime: must be >= 5"),
        # ZEGO's StartRecord page: ≤ 86400 (seed 003's legacy /start: up to 4294967295, test_legacy_flow)
        (lambda b: b["RecordInputParams"].update(MaxIdleTime=86401), "MaxIdleTime: must be <= 86400"),
        (lambda b: b["RecordInputParams"].update(MaxRecordTime=299), "MaxRecordTime: must be >= 300"),
        (lambda b: b["RecordInputParams"].update(MaxIdleTime="30"), "must be an integer"),
        (lambda b: b["RecordInputParams"].update(FillBlank="true"), "FillBlank: must be a boolean"),
        (lambda b: b["RecordOutputParams"].update(SnapshotInterval=4), "SnapshotInterval: must be >= 5"),
        (lambda b: b["RecordOutputParams"].update(OutputFileFormat="avi"), "OutputFileFormat"),
        (lambda b: b["StorageParams"].pop("Bucket"), "StorageParams.Bucket: is required when Vendor = 2"),
        (lambda b: b["StorageParams"].update(Vendor=10), "StorageParams.EndPoint"),
        # ZEGO's StartRecord page: Region is required for Vendor 9 (EOS) and 10 too, not for 8 (GCS)
        (lambda b: b["StorageParams"].update(Vendor=9) or b["StorageParams"].pop("Region"), "StorageParams.Region"),
        (
            lambda b: (
                b["StorageParams"].update(Vendor=10, EndPoint="https://m.example") or b["StorageParams"].pop("Region")
            ),
            "StorageParams.Region: is required when Vendor = 10",
        ),
        (lambda b: b["RecordInputParams"].update(HasWhiteboard=True), "Whiteboard: is required"),
        (lambda b: b.pop("RoomId"), "RoomId: is required"),
        # What no ZEGO room is called (walk 58e: taken, a recording of a room that cannot exist): refused as a spec's
        (lambda b: b.update(RoomId="r" * 129), "RoomId: is longer than the 128 bytes a room id may be"),
        (lambda b: b.update(RoomId="教" * 43), "RoomId: is longer than the 128 bytes"),  # 129 bytes in UTF-8
        (lambda b: b.update(RoomId="ev\x1b[2Jil"), "RoomId: holds an unprintable character (U+001B)"),
        (
            lambda b: b["RecordInputParams"].update(MixConfig=mix(bottom=721)),
            "MixConfig.MixInputList[0]: Bottom/Right must not exceed the canvas height/width",
        ),
        (lambda b: b["RecordInputParams"].update(MixConfig=mix(right=1281)), "MixInputList[0]: Bottom/Right"),
        # ZEGO's StartRecord page: the value lists seed 003 lost, and MixMode 1 (custom layout) needs its regions
        (lambda b: b["RecordInputParams"].update(MixConfig={**mix(), "MixMode": 6}), "MixConfig.MixMode: must be one"),
        (lambda b: b["RecordInputParams"].update(MixConfig=mix(view_type=3)), "MixInputList[0].ViewType: must be"),
        (lambda b: b["RecordInputParams"].update(MixConfig=mix(fill_mode=3)), "MixInputList[0].FillMode: must be"),
        (
            lambda b: b["RecordInputParams"].update(MixConfig={**mix(), "MixMode": 1, "MixInputList": []}),
            "MixConfig.MixInputList: is required when MixMode = 1",
        ),
        (lambda b: b["RecordInputParams"].update(FillFrame={"FrameFillMode": 4}), "FillFrame.FrameFillMode: must be"),
        (
            lambda b: b["RecordInputParams"].update(
                MixConfig={**mix(view_type=2), "MixInputList": mix(view_type=2)["MixInputList"] * 2}
            ),
            "MixConfig.MixInputList[1].ViewType: only one region can show the whiteboard",
        ),
        (lambda b: b["RecordOutputParams"].update(OutputFileRule=2), "RecordOutputParams.OutputFileRule: must be"),
        (
            lambda b: b.update(StorageParams=ALIYUN_VOD, RecordOutputParams={"OutputFileFormat": "jpg"}),
            "OutputFileFormat: Vendor 5 (VOD) takes mp4 or flv files only",
        ),
        # Seed 003: StreamType 4 writes mp4/flv recordings' audio as aac files, which VOD does not take
        (
            lambda b: (
                b.update(StorageParams=TENCENT_VOD, RecordOutputParams={"OutputFileFormat": "mp4"})
                or b["RecordInputParams"].update(StreamType=4)
            ),
            "RecordInputParams.StreamType: 4 writes the audio as aac files, which Vendor 6 (VOD) does not take",
        ),
        # ZEGO's StartRecord page: Tencent VOD takes mp4, flv, jpg and mp3 (seed 003's legacy /start: mp4, flv)
        (
            lambda b: b.update(StorageParams=TENCENT_VOD, RecordOutputParams={"OutputFileFormat": "hls"}),
            "OutputFileFormat: Vendor 6 (VOD) takes mp4, flv, jpg or mp3 files only",
        ),
        (
            lambda b: b["RecordInputParams"].update(MixConfig={**mix(), "MixOutputBackgroundColor": 0x123456FF}),
            "MixConfig.MixOutputBackgroundColor: must be 0xRRGGBB00",
        ),
        (
            lambda b: b["RecordInputParams"].update(FillFrame={"FrameFillMode": 2, "FrameFillColor": 0xFF0000FF}),
            "FillFrame.FrameFillColor: must be 0xRRGGBB00",
        ),
        # Taken before, and then every callback of the task failed (walk 13a): refused as a spec's callbackUrl is.
        (
            lambda b: b["RecordOutputParams"].update(CallbackUrl="file:///x"),
            "RecordOutputParams.CallbackUrl: 'file:///x' is not an http:// or https:// URL",
        ),
        (lambda b: b["RecordOutputParams"].update(CallbackUrl="http://"), "CallbackUrl: 'http://' is not an http://"),
        (lambda b: b["RecordOutputParams"].update(CallbackUrl="http://h:0/"), "'http://h:0/' is not a usable URL"),
    ],
)
async def test_start_record_validation(
    client: SimClient, mutate: Callable[[dict[str, Any]], object], where: str
) -> None:
    body = record_body()
    mutate(body)
    r = await client.zego("StartRecord", body)
    assert code(r) == 300000004
    assert where in r.json()["Message"]


async def test_vod_storage_takes_the_current_apis_own_names(client: SimClient) -> None:
    """ZEGO's StartRecord page names the VOD objects AlibabaCloudVodParams {Region, AccessKeyId, AccessKeySecret,
    Title, StorageLocation} and TencentCloudVodParams {SecretId, SecretKey, Region, SubAppId}, not seed 003's
    legacy names in PascalCase: those are refused, as the vendor refuses a body without its required object."""
    mp4 = {**record_body(), "RecordOutputParams": {"OutputFileFormat": "mp4"}}
    for storage in (ALIYUN_VOD, TENCENT_VOD):
        assert code(await client.zego("StartRecord", {**mp4, "StorageParams": storage})) == 0
    # Tencent VOD takes the current API's jpg snapshots (record_body's output) and mp3 too (ZEGO's StartRecord page)
    assert code(await client.zego("StartRecord", {**record_body(), "StorageParams": TENCENT_VOD})) == 0
    keys = {"AccessKeyId": "a", "AccessKeySecret": "s", "Region": "r"}
    seed_names = [
        ({"Vendor": 6, "TencentyunVodParams": keys}, "TencentyunVodParams"),
        ({"Vendor": 6, "TencentCloudVodParams": keys}, "TencentCloudVodParams.AccessKeyId"),
        ({"Vendor": 5, "AliyunVodParams": {"AccessKey": "a"}}, "AliyunVodParams"),
    ]
    for storage, unknown in seed_names:
        r = await client.zego("StartRecord", {**mp4, "StorageParams": storage})
        assert code(r) == 300000004 and unknown in r.json()["Message"]


async def test_idle_end_status_4_quit_reason_3(client: SimClient) -> None:
    r = await client.zego("StartRecord", record_body(MaxIdleTime=30))
    task_id = r.json()["Data"]["TaskId"]
    await client.sim.advance(29)
    data = (await client.zego("DescribeRecordStatus", {"TaskId": task_id})).json()["Data"]
    assert data["Status"] == 2 and data["RecordEndTimestamp"] == 0 and "QuitReason" not in data
    await client.sim.advance(1)
    data = (await client.zego("DescribeRecordStatus", {"TaskId": task_id})).json()["Data"]
    # The fields ZEGO's page lists: no TaskId, and the quit reason is the callback's only (both were simulator
    # extras here); no RecordFiles for a jpg task, nor for one in whose room no stream was published.
    assert data == {
        "RoomId": "z1",
        "RecordMode": 1,
        "StreamType": 3,
        "RecordBeginTimestamp": int(START * 1000),
        "RecordEndTimestamp": int(START * 1000) + 30_000,
        "Status": 4,
    }
    assert client.sim.world.zego_tasks[task_id].quit_reason == 3
    assert data["RecordEndTimestamp"] - data["RecordBeginTimestamp"] == 30_000
    assert code(await client.zego("StopRecord", {"TaskId": task_id})) == 300001001
    assert code(await client.zego("StopRecord", {"TaskId": "0" * 16})) == 300001000
    assert code(await client.zego("DescribeRecordStatus", {"TaskId": "0" * 16})) == 300001000


async def test_record_files_of_single_stream_and_mixed_recordings(client: SimClient) -> None:
    """DescribeRecordStatus lists `RecordFiles` (ZEGO's page): one file per recorded stream, or one of the mixed
    output named by MixOutputStreamId; recording (1) while the task runs, uploaded (3) once it ended."""
    sim = client.sim
    sim.publish("zego", "z1", stream_id="s1", user_id="u1")
    mp4 = {"OutputFileFormat": "mp4", "OutputFolder": "rec/"}
    single = {**record_body(StreamType=4, RecordStreamList=[{"StreamId": "s1"}, {"StreamId": "s2"}])}
    single["RecordOutputParams"] = mp4
    mixed = record_body(RecordMode=2, StreamType=1, MixConfig=mix())
    mixed["RecordOutputParams"], mixed["StorageParams"]["Vendor"] = mp4, 4  # Qiniu: no FileUrl
    ids = [(await client.zego("StartRecord", body)).json()["Data"]["TaskId"] for body in (single, mixed)]
    await sim.advance(10)
    sim.publish("zego", "z1", stream_id="s2", user_id="u2")
    sim.publish("zego", "z1", stream_id="other", user_id="u3")  # not listed: not recorded by the first
    await sim.advance(5)
    files = (await client.zego("DescribeRecordStatus", {"TaskId": ids[0]})).json()["Data"]["RecordFiles"]
    begin = int(START * 1000)
    assert [(f["StreamId"], f["UserId"], f["MediaTrackType"], f["OutputFileFormat"]) for f in files] == [
        ("s1", "u1", 1, "aac"),  # StreamType 4: audio and video apart, mp4's audio in aac (seed 003)
        ("s1", "u1", 2, "mp4"),
        ("s2", "u2", 1, "aac"),
        ("s2", "u2", 2, "mp4"),
    ]
    assert [(f["BeginTimestamp"], f["Duration"], f["Status"]) for f in files] == [(begin, 15_000, 1)] * 2 + [
        (begin + 10_000, 5_000, 1)
    ] * 2
    assert files[1]["FileId"] == f"{ids[0]}_z1_s1_V_20231114221320000.mp4"
    assert files[1]["FileUrl"] == f"https://b.sim.invalid/rec/{files[1]['FileId']}"
    assert sorted(files[0]) == [
        "BeginTimestamp",
        "Duration",
        "FileId",
        "FileSize",
        "FileUrl",
        "MediaTrackType",
        "OutputFileFormat",
        "Status",
        "StreamId",
        "UserId",
        "UserName",
    ]
    assert code(await client.zego("StopRecord", {"TaskId": ids[1]})) == 0
    data = (await client.zego("DescribeRecordStatus", {"TaskId": ids[1]})).json()["Data"]
    assert (data["RecordMode"], data["StreamType"], data["Status"]) == (2, 1, 3)
    (file,) = data["RecordFiles"]
    assert (file["StreamId"], file["UserId"], file["MediaTrackType"], file["Status"]) == ("mix", "mix", 1, 3)
    assert "FileUrl" not in file and file["Duration"] == 15_000


async def test_max_record_time_ends_with_quit_reason_4_and_images(client: SimClient) -> None:
    sim = client.sim
    sim.publish("zego", "z1", stream_id="s1")
    r = await client.zego("StartRecord", record_body(MaxRecordTime=300))
    task_id = r.json()["Data"]["TaskId"]
    await sim.advance(400)
    data = (await client.zego("DescribeRecordStatus", {"TaskId": task_id})).json()["Data"]
    assert data["Status"] == 4 and "QuitReason" not in data and sim.world.zego_tasks[task_id].quit_reason == 4
    assert sim.world.zego_tasks[task_id].images == 300 // 5


async def test_stop_record(client: SimClient) -> None:
    task_id = (await client.zego("StartRecord", record_body())).json()["Data"]["TaskId"]
    assert code(await client.zego("StopRecord", {"TaskId": task_id})) == 0
    data = (await client.zego("DescribeRecordStatus", {"TaskId": task_id})).json()["Data"]
    assert data["Status"] == 3


async def test_client_task_id_idempotency(client: SimClient) -> None:
    body = record_body(ClientTaskId="job-1", MaxIdleTime=10)
    first = (await client.zego("StartRecord", body)).json()["Data"]["TaskId"]
    again = (await client.zego("StartRecord", body)).json()["Data"]["TaskId"]
    assert first == again and len(client.sim.tasks("zego")) == 1
    await client.sim.advance(10)
    third = (await client.zego("StartRecord", body)).json()["Data"]["TaskId"]
    assert third != first and len(client.sim.tasks("zego")) == 2


async def test_a_recording_idles_out_only_when_the_room_has_no_stream(client: SimClient) -> None:
    """Seed 003: max_idle_time applies "仅当房间内无流" (only when the room has no stream), whatever streams the
    recording lists: another stream in the room keeps it running."""
    sim = client.sim
    sim.publish("zego", "z1", stream_id="other")
    body = record_body(MaxIdleTime=10, RecordStreamList=[{"StreamId": "teacher"}])
    task_id = (await client.zego("StartRecord", body)).json()["Data"]["TaskId"]
    await sim.advance(100)  # its stream never came, the room was never empty
    assert sim.world.zego_tasks[task_id].running
    sim.unpublish("zego", "z1", stream_id="other")
    await sim.advance(9)
    assert sim.world.zego_tasks[task_id].running
    await sim.advance(1)
    assert sim.world.zego_tasks[task_id].quit_reason == 3


# --- legacy ---------------------------------------------------------------------------------------------


async def legacy_token(
    client: SimClient, *, expired: float | None = None, secret: str = SECRET, nonce: str = "0123456789abcdef"
) -> httpx.Response:
    exp = int(expired if expired is not None else client.clock.now() + 3600)
    token = make_legacy_token(ZEGO_APP, secret, nonce, exp)
    return await client.http.post(
        "/zego/legacy/access_token", json={"app_id": ZEGO_APP, "seq": 1, "token": token, "version": 1}
    )


def legacy_start_body(token: str) -> dict[str, Any]:
    return {
        "app_id": ZEGO_APP,
        "access_token": token,
        "room_id": "z1",
        "record_input_params": {"record_mode": 1, "stream_type": 3, "max_idle_time": 60},
        "record_output_params": {"output_file_format": "mp4", "output_folder": "record/"},
        "storage_params": {
            "storage_provider": 2,
            "region": "oss-x",
            "bucket_name": "b",
            "access_key_id": "k",
            "access_key_secret": "s",
        },
    }


async def test_legacy_flow(client: SimClient) -> None:
    r = await legacy_token(client)
    assert r.json()["code"] == 0 and r.json()["data"]["expires_in"] == 7200
    token = r.json()["data"]["access_token"]
    r = await client.http.post("/zego/legacy/start", json=legacy_start_body(token))
    assert r.json()["code"] == 0, r.text
    task_id = r.json()["task_id"]
    longest = legacy_start_body(token)
    longest["record_input_params"]["max_idle_time"] = 4294967295  # seed 003's maximum (current API: 86400)
    r2 = await client.http.post("/zego/legacy/start", json=longest)
    assert r2.json()["task_id"] != task_id  # no idempotency key in v1
    q = {"app_id": ZEGO_APP, "access_token": token, "task_id": task_id}
    assert (await client.http.post("/zego/legacy/query", json=q)).json()["data"]["status"] == 2
    await client.sim.advance(60)
    data = (await client.http.post("/zego/legacy/query", json=q)).json()["data"]
    # The Action API's fields in snake_case (UNCONFIRMED for v1): no task_id, no quit_reason; no stream, no file.
    assert (data["status"], data["record_mode"], data["stream_type"], data["room_id"]) == (4, 1, 3, "z1")
    assert data["record_end_timestamp"] - data["record_begin_timestamp"] == 60_000
    assert not {"task_id", "quit_reason", "record_files"} & set(data)
    assert (await client.http.post("/zego/legacy/stop", json=q)).json()["code"] == 300001001
    await client.sim.advance(7200)
    assert (await client.http.post("/zego/legacy/query", json=q)).json()["code"] == 100000004


async def test_legacy_query_lists_record_files_in_snake_case(client: SimClient) -> None:
    client.sim.publish("zego", "z1", stream_id="s1", user_id="u1")
    token = (await legacy_token(client)).json()["data"]["access_token"]
    task_id = (await client.http.post("/zego/legacy/start", json=legacy_start_body(token))).json()["task_id"]
    await client.sim.advance(5)
    q = {"app_id": ZEGO_APP, "access_token": token, "task_id": task_id}
    (file,) = (await client.http.post("/zego/legacy/query", json=q)).json()["data"]["record_files"]
    assert (file["stream_id"], file["user_id"], file["media_track_type"], file["duration"]) == ("s1", "u1", 3, 5000)
    assert file["file_url"] == f"https://b.sim.invalid/record/{file['file_id']}" and file["status"] == 1


async def test_legacy_auth_errors_and_validation(client: SimClient) -> None:
    assert (await legacy_token(client, secret="x" * 32)).json()["code"] == 100000005
    assert (await legacy_token(client, expired=client.clock.now() - 1)).json()["code"] == 100000004
    for nonce in ("", "0123456789abcde", "0123456789abcdef0"):  # vendor-apis.md: "a 16-character random string"
        assert (await legacy_token(client, nonce=nonce)).json()["code"] == 100000005
    body = legacy_start_body("unknown-token")
    assert (await client.http.post("/zego/legacy/start", json=body)).json()["code"] == 100000005
    token = (await legacy_token(client)).json()["data"]["access_token"]
    body = legacy_start_body(token)
    body["record_input_params"]["max_record_time"] = 100000
    r = await client.http.post("/zego/legacy/start", json=body)
    assert r.json()["code"] == 300000004 and "record_input_params.max_record_time" in r.json()["message"]
    body = legacy_start_body(token)
    body["storage_params"]["storage_provider"] = 10  # only the current API knows vendor 10
    assert (await client.http.post("/zego/legacy/start", json=body)).json()["code"] == 300000004
    body = {**legacy_start_body(token), "room_id": "r" * 129}  # (walk 58e) no room has that id
    r = await client.http.post("/zego/legacy/start", json=body)
    assert r.json()["code"] == 300000004 and "room_id: is longer than the 128 bytes" in r.json()["message"]
    stop = {"app_id": ZEGO_APP, "access_token": token, "task_id": "nope"}
    assert (await client.http.post("/zego/legacy/stop", json=stop)).json()["code"] == 300001000


# --- MediaThumbnails ------------------------------------------------------------------------------------


async def test_thumbnails_codes(client: SimClient) -> None:
    tencent = [
        ("Vendor", "Tencent"),
        ("FileId", "1397757897438985100"),
        ("Definition", "10"),
        ("ExtTimeOffsetSet[]", "1"),
        ("ExtTimeOffsetSet[]", "2"),
        ("Type", "SnapshotByTimeOffset"),
    ]
    r = await client.thumbs(tencent)
    assert code(r) == 0 and r.json()["Data"]["Tencent"]["TaskId"]
    huawei = [("Vendor", "Huawei"), ("FileId", "/record/a.mp4"), ("Interval", "2"), ("Type", "SampleSnapshot")]
    r = await client.thumbs(huawei)
    assert code(r) == 0 and r.json()["Data"]["Huawei"]["task_id"]
    assert code(await client.thumbs(huawei[:2] + huawei[3:])) == 2  # Huawei without Interval
    assert code(await client.thumbs([("Vendor", "Akamai"), *huawei[1:]])) == 2
    assert code(await client.thumbs([("Vendor", "Huawei"), ("FileId", "12345"), *huawei[2:]])) == 4
    assert code(await client.thumbs(huawei, secret="0" * 32)) == 7
    client.sim.missing_files.add("/record/a.mp4")
    assert code(await client.thumbs(huawei)) == 1000


async def test_a_missing_file_can_be_said_uploaded(client: SimClient) -> None:
    """Walk 58b: a file registered missing stayed so until a reset, which forgets every task: the daemon's retry of
    an entry whose file was not uploaded yet (spec-language.md) could not be seen going through."""
    huawei = [("Vendor", "Huawei"), ("FileId", "/record/a.mp4"), ("Interval", "2"), ("Type", "SampleSnapshot")]
    later = [("Vendor", "Huawei"), ("FileId", "/record/b.mp4"), ("Interval", "2"), ("Type", "SampleSnapshot")]
    both = {"fileIds": ["/record/a.mp4", "/record/b.mp4"]}
    assert (await client.http.post("/_sim/missing-files", json=both)).json() == both
    assert code(await client.thumbs(huawei)) == 1000
    uploaded = await client.http.request("DELETE", "/_sim/missing-files", json={"fileIds": ["/record/a.mp4"]})
    assert uploaded.json() == {"fileIds": ["/record/b.mp4"]}
    assert code(await client.thumbs(huawei)) == 0 and code(await client.thumbs(later)) == 1000
    assert (await client.http.delete("/_sim/missing-files")).json() == {"fileIds": []}
    assert code(await client.thumbs(later)) == 0
    refused = await client.http.request("DELETE", "/_sim/missing-files", json={"fileIds": "/record/a.mp4"})
    assert refused.status_code == 400 and refused.json() == {"error": "fileIds: must be a list of strings"}


@pytest.mark.parametrize("odd", ["nan", "inf", "1_0", "1e3", " 1", "0x10", ""])
async def test_thumbnail_numbers_are_decimal_numbers(client: SimClient, odd: str) -> None:
    """Python's float() takes nan, inf and 1_0: a nan or inf offset passed the checks and then failed inside the
    simulator (500, a traceback), 1_0 was read as 10. The gateway answers Code 2, naming the parameter."""
    tencent = [("Vendor", "Tencent"), ("FileId", "1397757897438985100"), ("Type", "SnapshotByTimeOffset")]
    for params, name in (
        (
            [*tencent, ("Definition", "10"), ("ExtTimeOffsetSet[]", "1"), ("ExtTimeOffsetSet[]", odd)],
            "ExtTimeOffsetSet[]",
        ),
        ([*tencent, ("Definition", odd), ("ExtTimeOffsetSet[]", "1")], "Definition"),
    ):
        r = await client.thumbs(params)
        assert (r.json()["Code"], r.json()["Message"].split(":")[0]) == (2, name)


async def test_stream_list_answers_create_time_and_a_stable_number(client: SimClient) -> None:
    """DescribeSimpleStreamList (ZEGO's page): `CreateTime` is when the stream was published (ms), `StreamNumberId`
    its number in the room (ours: from 1 in publishing order, kept while it lives, never reused)."""
    sim = client.sim

    async def listed() -> list[tuple[str, str, int, int]]:
        query = zego_query("DescribeSimpleStreamList", client.clock.now())
        r = await client.http.get("/zego/rtc/", params={**query, "RoomId": "z1"})
        items = r.json()["Data"]["StreamList"]
        return [(i["StreamId"], i["UserId"], i["CreateTime"] - int(START * 1000), i["StreamNumberId"]) for i in items]

    assert await listed() == []
    for room in ("r" * 129, "z\x1b[2J1"):  # (walk 58e) no room is called so: refused as StartRecord refuses it
        query = {**zego_query("DescribeSimpleStreamList", client.clock.now()), "RoomId": room}
        answer = (await client.http.get("/zego/rtc/", params=query)).json()
        assert answer["Code"] == 300000004 and answer["Message"].startswith("invalid parameter: RoomId: "), answer
    sim.publish("zego", "z1", stream_id="b", user_id="u1")
    await sim.advance(2)
    sim.publish("zego", "z1", stream_id="a", user_id="u2")
    assert await listed() == [("b", "u1", 0, 1), ("a", "u2", 2000, 2)]
    sim.unpublish("zego", "z1", stream_id="b")
    await sim.advance(1)
    sim.publish("zego", "z1", stream_id="b", user_id="u1")
    assert await listed() == [("a", "u2", 2000, 2), ("b", "u1", 3000, 3)]
