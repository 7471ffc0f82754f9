"""Rate limits, fault injection, the request log's redaction, the control API and scale."""

from __future__ import annotations

import time

import httpx
import pytest

from reconciler.sim import SimConfig, create_app
from reconciler.sim.config import VOLC, ZEGO
from reconciler.sim.ratelimit import SlidingWindowLimiter
from tests.sim.conftest import VOLC_APP, SimClient, record_body, snapshot_body


def test_sliding_window_counts_any_one_second() -> None:
    limiter = SlidingWindowLimiter()
    times = [i * 0.005 for i in range(400)]  # 200 requests/s for 2 s against a limit of 150/s
    accepted = [t for t in times if limiter.try_acquire("v", "a", "X", 150, t)]
    for start in times:
        assert len([t for t in accepted if start <= t < start + 1.0 - 1e-9]) <= 150
    assert 295 <= len(accepted) <= 300  # a token bucket with a burst of 150 would have let all 400 through
    assert limiter.throttled_total == 400 - len(accepted)


@pytest.mark.parametrize("config", [SimConfig(seed=1, rate_limits={(VOLC, "GetSnapshotTask"): 3})])
async def test_volc_throttled_as_vendor(client: SimClient) -> None:
    query = {"AppId": VOLC_APP, "RoomId": "r1", "TaskId": "x"}
    statuses = [(await client.volc("GetSnapshotTask", query)).status_code for _ in range(5)]
    assert statuses == [400, 400, 400, 429, 429]
    r = await client.volc("GetSnapshotTask", query)
    assert r.json()["ResponseMetadata"]["Error"]["Code"] == "FlowLimitExceeded.QPSOverLimit"
    await client.sim.advance(1)
    assert (await client.volc("GetSnapshotTask", query)).status_code == 400
    assert [t.api for t in client.sim.throttled] == ["GetSnapshotTask"] * 3


async def test_zego_describe_limit_is_10(client: SimClient) -> None:
    codes = [(await client.zego("DescribeRecordStatus", {"TaskId": "x"})).json()["Code"] for _ in range(11)]
    assert codes == [300001000] * 10 + [300000003]


async def test_faults_error_throttle_and_scope(client: SimClient) -> None:
    http = client.http
    r = await http.put("/_sim/faults", json={"errorRate": 1.0, "apis": ["StartSnapshot"]})
    assert r.status_code == 200
    r = await client.volc("StartSnapshot", snapshot_body())
    assert r.status_code == 500 and client.sim.tasks() == []
    assert (await client.zego("StartRecord", record_body())).json()["Code"] == 0  # not in `apis`
    await http.put("/_sim/faults", json={"throttleNext": 2})
    assert (await client.volc("StartSnapshot", snapshot_body())).status_code == 429
    assert (await client.zego("StartRecord", record_body())).json()["Code"] == 300000003
    assert (await client.volc("StartSnapshot", snapshot_body())).status_code == 200
    body = (await http.get("/_sim/throttled")).json()
    assert body["total"] == 2 and body["notForced"] == 0
    r = await http.put("/_sim/faults", json={"errorRate": 2})
    assert r.status_code == 400 and "errorRate" in r.json()["error"]


async def test_injected_errors_wear_each_vendors_envelope(client: SimClient) -> None:
    """vendor-apis.md: a Volcengine failure is non-200 with `ResponseMetadata.Error{Code, Message}` and no `Result`;
    every ZEGO business answer is HTTP 200 with its code in the body, injected ones too."""
    await client.http.put("/_sim/faults", json={"errorRate": 1.0})
    r = await client.volc("StartSnapshot", snapshot_body())
    meta = r.json()["ResponseMetadata"]
    assert r.status_code == 500 and list(r.json()) == ["ResponseMetadata"]
    assert sorted(meta) == ["Action", "Error", "Region", "RequestId", "Service", "Version"]
    assert (meta["Action"], meta["Service"], meta["Error"]["Code"]) == ("StartSnapshot", "rtc", "InternalError.Unknown")
    r = await client.zego("StartRecord", record_body())
    assert r.status_code == 200 and sorted(r.json()) == ["Code", "Message", "RequestId"]
    assert r.json()["Code"] == 300010000
    r = await client.thumbs([("Vendor", "Huawei"), ("FileId", "/a.mp4"), ("Type", "SampleSnapshot"), ("Interval", "2")])
    assert (r.status_code, r.json()["Code"]) == (200, 1000)
    r = await client.http.post("/zego/legacy/stop", json={"app_id": 1, "access_token": "t", "task_id": "x"})
    assert (r.status_code, r.json()) == (200, {"code": 300010000, "message": "system error"})
    assert client.sim.tasks() == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"hangSeconds": Infinity}', "faults.hangSeconds: must be a number of seconds from 0 to 3600"),
        ('{"hangSeconds": "30"}', "faults.hangSeconds: must be a number of seconds from 0 to 3600"),
        ('{"seed": [1]}', "faults.seed: must be an integer"),
        ('{"seed": "x"}', "faults.seed: must be an integer"),
        ('{"phase": "during"}', "faults.phase: must be 'before' or 'after'"),
        ('{"apis": "StartSnapshot"}', "faults.apis: must be a list of API names"),
        (  # a typo scoped the faults to no call: a fault test passed without any fault
            '{"errorRate": 1, "apis": ["StartSnapshot", "StopSnapshots"]}',
            "faults.apis: 'StopSnapshots' is no API of the simulator (known: DescribeRecordStatus, "
            "DescribeSimpleStreamList, GetRoomOnlineUsers, GetSnapshotTask, MediaThumbnails, StartRecord, "
            "StartSnapshot, StopRecord, StopSnapshot, UpdateSnapshot, access_token, query, start, stop)",
        ),
    ],
)
async def test_a_fault_setting_out_of_range_is_refused_and_the_faults_stay(
    client: SimClient, body: str, error: str
) -> None:
    """hangSeconds and seed were taken as given: Infinity answered 500 and left GET /_sim/faults a 500 until a
    reset; a string made a timed-out request on a real socket answer 500 instead of hanging."""
    assert (await client.http.put("/_sim/faults", json={"errorRate": 0.5})).status_code == 200
    answer = await client.http.put("/_sim/faults", content=body)
    assert (answer.status_code, answer.json()) == (400, {"error": error})
    now = await client.http.get("/_sim/faults")
    assert now.status_code == 200 and now.json()["faults"]["errorRate"] == 0.5


async def test_timeout_and_drop_before_and_after(client: SimClient) -> None:
    await client.http.put("/_sim/faults", json={"timeoutRate": 1.0})
    with pytest.raises(httpx.TimeoutException):
        await client.volc("StartSnapshot", snapshot_body())
    assert client.sim.tasks() == []
    await client.http.put("/_sim/faults", json={"dropRate": 1.0, "phase": "after"})
    with pytest.raises(httpx.RemoteProtocolError):
        await client.volc("StartSnapshot", snapshot_body())
    assert len(client.sim.tasks()) == 1  # the answer was lost, the start took effect
    await client.http.delete("/_sim/faults")
    assert (await client.volc("StartSnapshot", snapshot_body())).status_code == 200


async def test_fixed_latency_is_real_time(client: SimClient) -> None:
    await client.http.put("/_sim/faults", json={"latencyMs": 50})
    began = time.perf_counter()
    await client.volc("GetSnapshotTask", {"AppId": VOLC_APP, "RoomId": "r", "TaskId": "t"})
    assert time.perf_counter() - began >= 0.05


async def test_request_log_redacts_credentials(client: SimClient) -> None:
    await client.zego("StartRecord", record_body())
    storage = snapshot_body(
        StorageConfig={"Type": 2, "CustomConfig": {"Bucket": "b", "AccessKey": "AK-LEAK", "SecretKey": "SK-LEAK"}}
    )
    await client.volc("StartSnapshot", storage)
    text = (await client.http.get("/_sim/requests")).text
    for secret in ("AKID-SECRET-VALUE", "SK-SECRET-VALUE", "AK-LEAK", "SK-LEAK"):
        assert secret not in text
    entries = (await client.http.get("/_sim/requests?limit=2")).json()["requests"]
    assert entries[0]["query"]["Signature"].startswith("sha256:")
    assert entries[1]["body"]["StorageConfig"]["CustomConfig"]["Bucket"] == "b"
    assert [e["api"] for e in entries] == ["StartRecord", "StartSnapshot"]
    # Not a count ("²" passes str.isdigit(), int() refused it: HTTP 500): every entry, as with no limit.
    assert len((await client.http.get("/_sim/requests?limit=²")).json()["requests"]) == 2


async def test_control_api_rooms_tasks_stop_clock_reset(client: SimClient) -> None:
    http = client.http
    config = (await http.get("/_sim/config")).json()
    assert config["volcengine"]["accessKey"] == "AKCAPCTLSIM0000000001"
    assert config["zego"]["appId"] == 1234567890 and config["zego"]["legacyPathPrefix"] == "/zego/legacy"
    assert (await http.post("/_sim/rooms", json={"vendor": "volcengine", "roomId": "r1"})).status_code == 200
    await client.volc("StartSnapshot", snapshot_body(MaxIdleTime=100))
    r = await http.post("/_sim/publish", json={"vendor": "volcengine", "roomId": "r1", "userId": "alice"})
    assert r.json() == {"changed": True}
    rooms = (await http.get("/_sim/rooms")).json()["rooms"]
    assert rooms[0]["users"] == ["alice"] and rooms[0]["runningTasks"] == ["t1"]
    r = await http.post("/_sim/clock", json={"advance": 10})
    assert r.json()["kind"] == "fake"
    tasks = (await http.get("/_sim/tasks?state=running")).json()["tasks"]
    assert tasks[0]["images"] == 5 and tasks[0]["activeStreams"] == 1
    # Only what the vendor says of a run it ended (vendor-apis.md): "ops" was answered as a StopReason.
    for reason in ("ops", "", 6):
        stop = {"vendor": "volcengine", "taskId": "t1", "roomId": "r1", "reason": reason}
        r = await http.post("/_sim/tasks/stop", json=stop)
        assert r.status_code == 400 and r.json()["error"].startswith("reason: a Volcengine StopReason is one of Idle")
    r = await http.post("/_sim/tasks/stop", json={"vendor": "volcengine", "taskId": "t1", "roomId": "r1"})
    assert r.json()["task"]["stopReason"] == "UnknownStopReason"
    r = await http.post("/_sim/tasks/stop", json={"vendor": "volcengine", "taskId": "t1", "roomId": "r1"})
    assert r.status_code == 400 and "already ended" in r.json()["error"]
    zid = (await client.zego("StartRecord", record_body())).json()["Data"]["TaskId"]
    for reason in (0, 7, 1000, "StopByAPI"):
        r = await http.post("/_sim/tasks/stop", json={"vendor": "zego", "taskId": zid, "reason": reason})
        assert r.status_code == 400 and "a ZEGO quit_reason is an integer 1..6 or 1001 and up" in r.json()["error"]
    r = await http.post("/_sim/tasks/stop", json={"vendor": "zego", "taskId": zid, "reason": 6})
    assert (r.json()["task"]["status"], r.json()["task"]["quitReason"]) == (4, 6)
    assert (await http.post("/_sim/publish", json={"vendor": "zego", "roomId": "z"})).status_code == 400
    assert (await http.post("/_sim/clock", json={"speed": 2})).status_code == 400  # fake clock
    await http.post("/_sim/reset")
    assert (await http.get("/_sim/tasks")).json()["tasks"] == []


async def test_ten_thousand_tasks_advance_six_hours() -> None:
    from reconciler.clock import FakeClock

    clock = FakeClock()
    app = create_app(SimConfig(seed=3), clock)
    sim = app.state.sim
    for i in range(10_000):
        vendor = VOLC if i % 2 else ZEGO
        if i % 4 < 2:
            sim.publish(vendor, f"room{i}", user_id="u", stream_id="s")
        if vendor == VOLC:
            sim.world.start_volc(
                VOLC_APP, f"room{i}", "t", business_id="", targets=None, max_idle=180, interval=2, settings={}
            )
        else:
            sim.world.start_zego("1234567890", f"room{i}", legacy=False, max_idle=30, max_record=3600, interval=10)
    await sim.advance(6 * 3600)
    tasks = sim.tasks()
    assert sim.world.running_count == 2_500  # volcengine tasks with a stream never stop
    assert sum(t.images for t in tasks) == 2_500 * (6 * 3600 // 2) + 2_500 * 360


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/volc/?Action=StartSnapshot&Version=2023-11-01", 401),  # read for the request log, then unsigned
        ("/zego/cloudrecord/?Action=StartRecord", 200),  # ZEGO answers errors with 200 and a Code
        ("/zego/legacy/start", 200),
        ("/_sim/faults", 400),
    ],
)
async def test_a_body_nested_100000_deep_is_an_answer_not_a_crash(client: SimClient, path: str, status: int) -> None:
    """json.loads raises RecursionError (not a ValueError) on it: the simulator answered 500 with a traceback."""
    deep = b"[" * 100_000 + b"]" * 100_000
    answer = await client.http.request("PUT" if path.startswith("/_sim") else "POST", path, content=deep)
    assert answer.status_code == status
    assert "Internal Server Error" not in answer.text
