"""The ZEGO providers on the wire: request formats, answers, error mapping, budgets, legacy tokens.

Every test runs against an `httpx.MockTransport` that records requests and plays scripted answers; the
rate budgets run on a `FakeClock` that the `drive` helper advances whenever every task is waiting on it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from reconciler.budget import BudgetRegistry, BudgetStats, Priority
from reconciler.clock import FakeClock
from reconciler.daemon.metrics import VendorFailure, error_reason
from reconciler.model import (
    ApiFamily,
    DesiredTask,
    JobKind,
    ObservedState,
    ProviderConfig,
    TaskRecord,
)
from reconciler.providers.base import ErrorKind, VendorError
from reconciler.providers.zego import (
    DEFAULT_RATE_LIMITS,
    THUMBNAIL_CODES,
    ZegoLegacyRecordProvider,
    ZegoRecordProvider,
    ZegoThumbnailProvider,
    thumbnail_params,
)
from reconciler.providers.zego_signing import signature
from reconciler.secrets import Secret, SecretText

T = TypeVar("T")
SERVER_SECRET = "0123456789abcdef0123456789abcdef"
STORAGE_SECRET = "storage-secret-value"
NONCE = "a1b2c3d4e5f60718"
START = 1_700_000_000.0
Answer = dict[str, Any] | httpx.Response | Exception
ProviderClass = type[ZegoRecordProvider] | type[ZegoLegacyRecordProvider] | type[ZegoThumbnailProvider]


class Vendor:
    """A scripted vendor: answers are served in order per path (the last one repeats)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.answers: dict[str, list[Answer]] = {}
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def script(self, path: str, *answers: Answer) -> None:
        self.answers[path] = list(answers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(self.clock.monotonic())
        queue = self.answers[request.url.path]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def query(request: httpx.Request) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(str(request.url)).query, keep_blank_values=True)


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


async def drive(clock: FakeClock, awaitable: Awaitable[T]) -> T:
    """Run `awaitable`, advancing the fake clock each time everything is asleep on it."""
    task = asyncio.ensure_future(awaitable)
    while not task.done():
        for _ in range(20):
            await asyncio.sleep(0)
        wakeup = clock.next_wakeup()
        if not task.done() and wakeup is not None:
            clock.set(wakeup)
    return task.result()


class Rig:
    """One provider on a fake vendor, clock and budget registry."""

    def __init__(self, cls: ProviderClass, **config: Any) -> None:
        self.clock = FakeClock(START)
        self.vendor = Vendor(self.clock)
        self.budgets = BudgetRegistry(self.clock)
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self.vendor.handle))
        fields: dict[str, Any] = {
            "name": "zego-prod",
            "type": "zego",
            "app_id": "1234567890",
            "source": "specs/providers.yaml:3:1",
            "server_secret": Secret(SERVER_SECRET),
            "rtc_endpoint": "https://rtc.test",
            "cloudrecord_endpoint": "https://rec.test/base/",
        }
        fields.update(config)
        self.config = ProviderConfig(**fields)
        self.provider = cls(
            self.config,
            budgets=self.budgets,
            clock=self.clock,
            http=self.http,
            random_bytes=lambda n: bytes.fromhex(NONCE),
        )

    def run(self, call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return drive(self.clock, call())

    def stats(self, api: str) -> BudgetStats:
        return self.budgets.get(self.config.account, api, DEFAULT_RATE_LIMITS[api]).stats


def recording_task(family: ApiFamily, request: dict[str, Any]) -> DesiredTask:
    return DesiredTask(
        key="RecordingJob/class-rec/class-101",
        kind=JobKind.RECORDING,
        job="class-rec",
        target="class-101",
        provider="zego-prod",
        family=family,
        request=request,
        spec_hash="h",
        fixed_hash="f",
        idle_timeout=60,
        max_duration=3600,
    )


def record(family: ApiFamily, task_id: str | None = "TASK0123456789AB", max_duration: int = 3600) -> TaskRecord:
    return TaskRecord(
        key="RecordingJob/class-rec/class-101",
        provider="zego-prod",
        family=family,
        kind=JobKind.RECORDING,
        target="class-101",
        spec_hash="h",
        fixed_hash="f",
        vendor_task_id=task_id,
        max_duration=max_duration,
    )


CURRENT_REQUEST = {
    "RoomId": "class-101",
    "RecordInputParams": {"RecordMode": 1, "StreamType": 3, "MaxIdleTime": 60},
    "RecordOutputParams": {"OutputFileFormat": "mp4", "OutputFolder": "record/"},
    "StorageParams": {"Vendor": 2, "Bucket": "b", "AccessKeyId": "ak", "AccessKeySecret": Secret(STORAGE_SECRET)},
}
OK = {"Code": 0, "Message": "success", "RequestId": "r"}


def expected_signature_query(action: str) -> list[tuple[str, str]]:
    ts = int(START)
    return [
        ("Action", action),
        ("AppId", "1234567890"),
        ("SignatureNonce", NONCE),
        ("Timestamp", str(ts)),
        ("SignatureVersion", "2.0"),
        ("Signature", signature(1234567890, NONCE, SERVER_SECRET, ts)),
    ]


# --- construction ---------------------------------------------------------------------------------


# Fullwidth or Arabic-Indic digits pass str.isdecimal(), and int() reads them as another app's number.
@pytest.mark.parametrize("app_id", ["abc", "0", "4294967296", "-1", "", "１２３４５６７８９０", "٣"])
def test_a_bad_app_id_is_refused_naming_the_provider(app_id: str) -> None:
    with pytest.raises(ValueError, match=r"zego-prod \(specs/providers.yaml:3:1\): appId"):
        Rig(ZegoRecordProvider, app_id=app_id)


def test_the_server_secret_is_required() -> None:
    with pytest.raises(ValueError, match="serverSecret is required"):
        Rig(ZegoThumbnailProvider, server_secret=None)


@pytest.mark.parametrize(
    ("cls", "family"),
    [
        (ZegoRecordProvider, ApiFamily.ZEGO_RECORD),
        (ZegoLegacyRecordProvider, ApiFamily.ZEGO_RECORD_LEGACY),
        (ZegoThumbnailProvider, ApiFamily.ZEGO_THUMBNAIL),
    ],
)
async def test_name_family_and_no_update(cls: ProviderClass, family: ApiFamily) -> None:
    rig = Rig(cls)
    assert rig.provider.name == "zego-prod" and rig.provider.family is family
    with pytest.raises(VendorError) as err:
        await rig.provider.update(recording_task(family, {}), record(family))
    assert err.value.kind is ErrorKind.TERMINAL and "no in-place update" in err.value.message
    assert rig.vendor.requests == []
    await rig.provider.aclose()


# --- current Action API ---------------------------------------------------------------------------


async def test_start_record_wire_format() -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {**OK, "Data": {"TaskId": "TASK0123456789AB"}})
    task = recording_task(ApiFamily.ZEGO_RECORD, CURRENT_REQUEST)
    result = await rig.run(lambda: rig.provider.start(task, "intent-1", priority=Priority.REISSUE))

    assert result.vendor_task_id == "TASK0123456789AB"
    assert result.vendor_ref == {"TaskId": "TASK0123456789AB", "RoomId": "class-101", "AppId": "1234567890"}
    (request,) = rig.vendor.requests
    assert request.method == "POST" and request.url.host == "rec.test" and request.url.path == "/base/"
    assert query(request) == expected_signature_query("StartRecord")
    assert request.headers["content-type"] == "application/json"
    sent = body(request)
    assert sent["RecordInputParams"] == {
        "RecordMode": 1,
        "StreamType": 3,
        "MaxIdleTime": 60,
        "ClientTaskId": "intent-1",
    }
    assert sent["StorageParams"]["AccessKeySecret"] == STORAGE_SECRET
    assert "ClientTaskId" not in CURRENT_REQUEST["RecordInputParams"]  # the spec's request is not mutated
    assert rig.stats("StartRecord").by_priority == {Priority.REISSUE: 1}


async def test_start_record_requires_the_idempotency_key() -> None:
    rig = Rig(ZegoRecordProvider)
    with pytest.raises(ValueError, match="client_task_id"):
        await rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD, CURRENT_REQUEST), None)
    assert rig.vendor.requests == []


async def test_stop_record_wire_format_and_priority() -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", OK)
    await rig.run(lambda: rig.provider.stop(record(ApiFamily.ZEGO_RECORD)))
    (request,) = rig.vendor.requests
    assert query(request) == expected_signature_query("StopRecord")
    assert body(request) == {"TaskId": "TASK0123456789AB"}
    assert rig.stats("StopRecord").by_priority == {Priority.CHANGE: 1}


@pytest.mark.parametrize("code", [300001000, 300001001])
async def test_stop_record_of_an_unknown_or_ended_task_is_not_found(code: int) -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {"Code": code, "Message": "gone"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.stop(record(ApiFamily.ZEGO_RECORD)))
    assert err.value.kind is ErrorKind.NOT_FOUND and err.value.code == str(code)


async def test_a_record_without_task_id_is_not_found_without_a_call() -> None:
    rig = Rig(ZegoRecordProvider)
    with pytest.raises(VendorError) as err:
        await rig.provider.stop(record(ApiFamily.ZEGO_RECORD, task_id=None))
    assert err.value.kind is ErrorKind.NOT_FOUND
    observed = await rig.provider.observe(record(ApiFamily.ZEGO_RECORD, task_id=None))
    assert observed.state is ObservedState.NOT_FOUND
    assert rig.vendor.requests == []


@pytest.mark.parametrize(
    ("status", "state", "reason"),
    [
        (1, ObservedState.RUNNING, None),
        (2, ObservedState.RUNNING, None),
        (5, ObservedState.RUNNING, None),
        (3, ObservedState.STOPPED, "ended (ZEGO status 3)"),
        (4, ObservedState.STOPPED, "ended (ZEGO status 4)"),
        (9, ObservedState.UNKNOWN, None),
    ],
)
async def test_describe_record_status_maps_statuses(status: int, state: ObservedState, reason: str | None) -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {**OK, "Data": {"Status": status, "RoomId": "class-101"}})
    observed = await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD)))
    assert (observed.state, observed.reason, observed.rollover) == (state, reason, False)
    assert f"status {status}" in (observed.detail or "")
    (request,) = rig.vendor.requests
    assert query(request) == expected_signature_query("DescribeRecordStatus")
    assert body(request) == {"TaskId": "TASK0123456789AB"}
    assert rig.stats("DescribeRecordStatus").by_priority == {Priority.POLL: 1}


# ZEGO's DescribeRecordStatus example (ZEGOCLOUD/docs_all describe-record-status.yaml): no TaskId, RecordFiles.
DOCUMENTED_STATUS = {
    "RoomId": "xxxx",
    "RecordMode": 2,
    "StreamType": 3,
    "RecordBeginTimestamp": 1601221452099,
    "RecordEndTimestamp": 1601221508795,
    "Status": 3,
    "RecordFiles": [
        {
            "UserId": "my_out",
            "UserName": "my_out",
            "StreamId": "my_out",
            "FileId": "X3CgNeE4I1qAAABN_xxxx_my_out_VA_20200927154419775.mp4",
            "VideoId": "820e50e52e0a490caf44eec8aec527a7",
            "OutputFileFormat": "mp4",
            "FileSize": 432643544,
            "Duration": 33874,
            "ResolutionWidth": 1920,
            "ResolutionHeight": 1080,
            "MediaTrackType": 3,
            "BeginTimestamp": 1601221459830,
            "Status": 3,
            "FileUrl": "https://xxxx.com/record/X3CgNeE4I1qAAABN_xxxx_my_out_VA_20200927154419775.mp4",
        }
    ],
}


@pytest.mark.parametrize(
    ("data", "state", "times"),
    [
        (DOCUMENTED_STATUS, ObservedState.STOPPED, (1601221452.099, 1601221508.795)),
        (
            {**DOCUMENTED_STATUS, "RecordFiles": [], "Extra": {"x": None}},
            ObservedState.STOPPED,
            (1601221452.099, 1601221508.795),
        ),
        ({"Status": 2, "RecordBeginTimestamp": None, "RecordEndTimestamp": None}, ObservedState.RUNNING, (None, None)),
        ({"Status": 2, "RecordBeginTimestamp": "1601221452099"}, ObservedState.RUNNING, (None, None)),
        ({"Status": "2"}, ObservedState.UNKNOWN, (None, None)),  # a string is no documented status
        ({"Status": True}, ObservedState.UNKNOWN, (None, None)),  # nor a boolean (True == 1 in Python)
        ({"Status": None}, ObservedState.UNKNOWN, (None, None)),
        (None, ObservedState.UNKNOWN, (None, None)),
        ([], ObservedState.UNKNOWN, (None, None)),
    ],
)
async def test_unusual_status_answers_have_a_clear_outcome(
    data: Any, state: ObservedState, times: tuple[float | None, float | None]
) -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {**OK, "Data": data})
    observed = await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD)))
    assert (observed.state, (observed.started_at, observed.ended_at)) == (state, times)


async def test_a_status_of_the_wrong_shape_is_quoted_at_a_bounded_size() -> None:
    """An unknown status's detail is printed in plans, logs and the status page: not the vendor's raw text."""
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {**OK, "Data": {"Status": "\x1b[2J\n" + "x" * 50_000}})
    observed = await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD)))
    detail = observed.detail or ""
    assert detail.startswith("unknown status '\\x1b[2J\\nx") and len(detail) < 200 and detail.isprintable()


@pytest.mark.parametrize(
    ("quit_reason", "rollover", "reason"),
    [(3, False, "idle timeout (ZEGO quit_reason 3)"), (4, True, "max duration (ZEGO quit_reason 4)")],
)
async def test_a_quit_reason_in_the_status_answer_names_the_cause(
    quit_reason: int, rollover: bool, reason: str
) -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {**OK, "Data": {"Status": 4, "QuitReason": quit_reason}})
    observed = await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD)))
    assert (observed.state, observed.reason, observed.rollover) == (ObservedState.STOPPED, reason, rollover)


@pytest.mark.parametrize(
    ("ran", "rollover", "reason"),
    [
        (3598, True, "max duration (ZEGO status 3)"),
        (3600, True, "max duration (ZEGO status 3)"),
        (3597, False, "ended (ZEGO status 3)"),
    ],
)
async def test_an_end_at_max_duration_is_a_rollover(ran: int, rollover: bool, reason: str) -> None:
    rig = Rig(ZegoRecordProvider)
    begin = 1_699_990_000_000
    data = {"Status": 3, "RecordBeginTimestamp": begin, "RecordEndTimestamp": begin + ran * 1000}
    rig.vendor.script("/base/", {**OK, "Data": data})
    observed = await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD, max_duration=3600)))
    assert observed.state is ObservedState.STOPPED
    assert (observed.rollover, observed.reason) == (rollover, reason)
    assert observed.started_at == begin / 1000 and observed.ended_at == begin / 1000 + ran


async def test_a_running_task_reports_its_start_time_and_no_end() -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script(
        "/base/", {**OK, "Data": {"Status": 2, "RecordBeginTimestamp": 1_699_990_000_500, "RecordEndTimestamp": 0}}
    )
    observed = await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD)))
    assert (observed.started_at, observed.ended_at) == (1_699_990_000.5, None)


async def test_describe_of_an_unknown_task_returns_not_found() -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {"Code": 300001000, "Message": "task not exist"})
    observed = await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD)))
    assert observed.state is ObservedState.NOT_FOUND


async def test_observe_raises_other_failures() -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", httpx.Response(502))
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD)))
    assert err.value.kind is ErrorKind.RETRYABLE


# --- error mapping (shared core) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "meaning"),
    [
        (100000004, ErrorKind.AUTH, "signature expired"),
        (100000005, ErrorKind.AUTH, "signature invalid"),
        (300000002, ErrorKind.TERMINAL, "service not enabled for this AppId: ask ZEGO to enable it"),
        (300000003, ErrorKind.THROTTLED, "rate limited"),
        (300000004, ErrorKind.TERMINAL, "invalid parameter"),
        (300000006, ErrorKind.RETRYABLE, "too many concurrent tasks"),
        (300010000, ErrorKind.RETRYABLE, "system error"),
        (300001000, ErrorKind.TERMINAL, "task does not exist"),  # not "not found" for a start
        (123, ErrorKind.TERMINAL, "vendor error"),
    ],
)
async def test_vendor_codes_map_to_error_kinds(code: int, kind: ErrorKind, meaning: str) -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {"Code": code, "Message": "vendor says no"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD, CURRENT_REQUEST), "i"))
    assert err.value.kind is kind and err.value.code == str(code) and err.value.api == "StartRecord"
    assert meaning in err.value.message and "vendor says no" in err.value.message
    assert rig.stats("StartRecord").throttled == (1 if kind is ErrorKind.THROTTLED else 0)


async def test_an_expired_signature_points_at_the_clock_not_the_secret() -> None:
    """Walk 14b: a daemon whose clock was stepped 2 h ahead (faketime) was told `check serverSecret`; ZEGO
    answers a wrong secret with 100000005, and 100000004 when the signature's Timestamp is out of its window."""
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {"Code": 100000004, "Message": "signature expired"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD, CURRENT_REQUEST), "i"))
    assert err.value.kind is ErrorKind.AUTH
    assert "check this machine's clock (NTP)" in err.value.message and "serverSecret" not in err.value.message


async def test_auth_errors_name_the_credential_never_its_value() -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {"Code": 100000005, "Message": f"bad sig for {SERVER_SECRET} / {STORAGE_SECRET}"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD, CURRENT_REQUEST), "i"))
    text = str(err.value)
    assert "check serverSecret of provider zego-prod (specs/providers.yaml:3:1)" in text
    assert SERVER_SECRET not in text and STORAGE_SECRET not in text
    assert Secret(SERVER_SECRET).fingerprint in text and Secret(STORAGE_SECRET).fingerprint in text


async def test_echoed_hidden_reference_values_are_scrubbed_from_messages() -> None:
    folder = SecretText("folder-from-an-env-var/")  # read from a reference into a field that is not shown
    request = {**CURRENT_REQUEST, "RecordOutputParams": {"OutputFolder": folder}}
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {"Code": 2, "Message": f"bad folder {folder.reveal()}"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD, request), "i"))
    assert "folder-from-an-env-var" not in str(err.value) and folder.fingerprint in str(err.value)


async def test_long_vendor_messages_are_truncated() -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {"Code": 300000004, "Message": "x" * 5000})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD, CURRENT_REQUEST), "i"))
    assert len(err.value.message) < 300


@pytest.mark.parametrize(
    ("answer", "kind", "text"),
    [
        (httpx.Response(500), ErrorKind.RETRYABLE, "server error"),
        (httpx.Response(503, json={"Code": 0}), ErrorKind.RETRYABLE, "server error"),
        (httpx.Response(429), ErrorKind.THROTTLED, "too many requests"),
        (httpx.ReadTimeout("slow"), ErrorKind.RETRYABLE, "no answer from https://rec.test:443 in time (ReadTimeout)"),
        (httpx.ConnectError("refused"), ErrorKind.RETRYABLE, "cannot connect to https://rec.test:443"),
        (httpx.RemoteProtocolError("dropped"), ErrorKind.RETRYABLE, "connection to https://rec.test:443 lost"),
        (
            httpx.Response(200, text="<html>oops</html>"),
            ErrorKind.RETRYABLE,
            "unexpected answer from StartRecord: not JSON",
        ),
        (httpx.Response(200, json=[1]), ErrorKind.RETRYABLE, "a JSON array, not an object"),
        (httpx.Response(200, text="null"), ErrorKind.RETRYABLE, "a JSON null, not an object"),
        (httpx.Response(200, text="[" * 100_000 + "]" * 100_000), ErrorKind.RETRYABLE, "nested deeper than 32 levels"),
        (httpx.Response(200, json={"Message": "x"}), ErrorKind.RETRYABLE, "no integer 'Code'"),
        (httpx.Response(200, json={"Code": "0"}), ErrorKind.RETRYABLE, "no integer 'Code'"),
        (httpx.Response(200, json=OK), ErrorKind.RETRYABLE, "no Data.TaskId"),
        # A task id no task can have is no answer: it would be stored, printed and sent back in every query.
        (
            httpx.Response(200, json={**OK, "Data": {"TaskId": "\x1b[2J" + "x" * 10_000}}),
            ErrorKind.RETRYABLE,
            "unexpected answer from StartRecord: Data.TaskId '\\x1b[2Jxxx",
        ),
        (httpx.Response(404, text="not here"), ErrorKind.TERMINAL, "check cloudrecordEndpoint of provider zego-prod"),
    ],
)
async def test_transport_and_answer_failures(answer: Answer, kind: ErrorKind, text: str) -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", answer)
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD, CURRENT_REQUEST), "i"))
    assert err.value.kind is kind and text in str(err.value)
    assert str(err.value).startswith("zego-prod (zego): StartRecord: ")
    assert "oops" not in str(err.value)  # bodies never enter messages
    assert rig.stats("StartRecord").throttled == (1 if kind is ErrorKind.THROTTLED else 0)


async def test_a_configured_rate_limit_overrides_the_documented_one() -> None:
    rig = Rig(ZegoRecordProvider, rate_limits={"DescribeRecordStatus": 2})
    rig.vendor.script("/base/", {**OK, "Data": {"Status": 2}})
    await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD)))
    budget = rig.budgets.all()[(rig.config.account, "DescribeRecordStatus")]
    assert budget.rate == 2 and budget.stats.granted == 1


async def test_calls_are_paced_by_the_budget() -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/base/", {**OK, "Data": {"Status": 2}})

    async def four_polls() -> None:
        await asyncio.gather(*(rig.provider.observe(record(ApiFamily.ZEGO_RECORD)) for _ in range(4)))

    await rig.run(four_polls)
    gaps = [b - a for a, b in zip(rig.vendor.times, rig.vendor.times[1:], strict=False)]
    assert len(gaps) == 3 and all(gap >= 1 / 10 for gap in gaps)  # DescribeRecordStatus: 10/s


# --- legacy v1 API ---------------------------------------------------------------------------------

LEGACY_REQUEST = {
    "room_id": "class-101",
    "record_input_params": {"record_mode": 1, "stream_type": 3, "max_idle_time": 60},
    "storage_params": {"storage_provider": 2, "access_key_secret": Secret(STORAGE_SECRET)},
}


def token_answer(token: str, expires_in: int = 7200) -> dict[str, Any]:
    return {"code": 0, "message": "ok", "data": {"access_token": token, "expires_in": expires_in}}


async def test_legacy_start_obtains_a_token_then_starts() -> None:
    rig = Rig(ZegoLegacyRecordProvider)
    long_token = "tok-1" + "a" * 300  # an access token is not held to a task id's 128 characters
    rig.vendor.script("/base/access_token", token_answer(long_token))
    rig.vendor.script("/base/start", {"code": 0, "message": "succeed", "task_id": "LEGACY0123456789"})
    task = recording_task(ApiFamily.ZEGO_RECORD_LEGACY, LEGACY_REQUEST)
    result = await rig.run(lambda: rig.provider.start(task, "ignored-intent"))

    assert result.vendor_task_id == "LEGACY0123456789"
    assert result.vendor_ref == {"TaskId": "LEGACY0123456789", "RoomId": "class-101", "AppId": "1234567890"}
    token_request, start_request = rig.vendor.requests
    assert token_request.method == "POST" and token_request.url.path == "/base/access_token"
    assert query(token_request) == []
    sent = body(token_request)
    assert (sent["app_id"], sent["seq"], sent["version"]) == (1234567890, 1, 1)
    token = json.loads(base64.b64decode(sent["token"]))
    assert token["nonce"] == NONCE and token["expired"] == int(START) + 3600
    assert start_request.url.path == "/base/start" and query(start_request) == []
    assert body(start_request) == {
        "app_id": 1234567890,
        "access_token": long_token,
        "room_id": "class-101",
        "record_input_params": {"record_mode": 1, "stream_type": 3, "max_idle_time": 60},
        "storage_params": {"storage_provider": 2, "access_key_secret": STORAGE_SECRET},
    }
    assert rig.stats("access_token").granted == 1 and rig.stats("start").granted == 1


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (httpx.ReadTimeout("slow"), ErrorKind.TERMINAL),
        (httpx.RemoteProtocolError("dropped"), ErrorKind.TERMINAL),
        (httpx.Response(500), ErrorKind.TERMINAL),
        (httpx.Response(200, text="<html>oops</html>"), ErrorKind.TERMINAL),
        (httpx.ConnectError("refused"), ErrorKind.RETRYABLE),  # never sent: safe to try again
        (httpx.PoolTimeout("busy"), ErrorKind.RETRYABLE),  # no connection was free: never sent either
        (httpx.ProxyError("502 Bad Gateway"), ErrorKind.RETRYABLE),  # the proxy refused the tunnel: nor this
        (httpx.Response(200, json={"code": 300010000, "message": "system error"}), ErrorKind.RETRYABLE),
        (httpx.Response(429), ErrorKind.THROTTLED),
    ],
)
async def test_a_legacy_start_that_may_have_started_is_not_retryable(answer: Answer, kind: ErrorKind) -> None:
    """No idempotency key: a start the vendor may have acted on without saying so must not be tried again."""
    rig = Rig(ZegoLegacyRecordProvider)
    rig.vendor.script("/base/access_token", token_answer("tok-1"))
    rig.vendor.script("/base/start", answer)
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD_LEGACY, LEGACY_REQUEST), None))
    assert err.value.kind is kind
    assert ("not retried at once: the vendor may have started a recording" in str(err.value)) is (
        kind is ErrorKind.TERMINAL
    )
    # Lost or unexplained, it is no answer: it counts towards giving up on the provider, and the daemon's
    # metric says the vendor is unavailable, not that it refused (`CapctlReconcileErrors` would name the secret).
    assert err.value.unanswered is (kind is not ErrorKind.THROTTLED)
    assert error_reason(err.value, VendorFailure(), state_write=False) == "vendor-unavailable"


@pytest.mark.parametrize("answer", [httpx.ReadTimeout("slow"), httpx.Response(502)])
async def test_a_legacy_start_whose_token_got_no_answer_sent_nothing(answer: Answer) -> None:
    """/access_token's answer lost: the /start it was for was never sent, so that start cannot run (walk 52A-3:
    it read as a start that may run), yet it is no answer from the provider (it counts towards giving it up)."""
    rig = Rig(ZegoLegacyRecordProvider)
    rig.vendor.script("/base/access_token", answer)
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD_LEGACY, LEGACY_REQUEST), None))
    assert err.value.kind is ErrorKind.RETRYABLE and err.value.api == "access_token"
    assert err.value.unanswered and not err.value.may_have_acted
    assert str(err.value).startswith("zego-prod (zego): access_token: ")
    assert rig.stats("start").granted == 0


async def test_a_lost_answer_to_a_legacy_query_or_stop_stays_retryable() -> None:
    rig = Rig(ZegoLegacyRecordProvider)
    rig.vendor.script("/base/access_token", token_answer("tok-1"))
    rig.vendor.script("/base/stop", httpx.ReadTimeout("slow"))
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.stop(record(ApiFamily.ZEGO_RECORD_LEGACY)))
    assert err.value.kind is ErrorKind.RETRYABLE


@pytest.mark.parametrize("step", [0.0, -3600.0, 3600.0])
async def test_legacy_token_is_cached_until_five_minutes_before_expiry(step: float) -> None:
    """Whatever the host's wall clock does meanwhile (`step`: NTP steps it): `expires_in` is a duration."""
    rig = Rig(ZegoLegacyRecordProvider)
    rig.vendor.script("/base/access_token", token_answer("tok-1"), token_answer("tok-2"))
    rig.vendor.script("/base/query", {"code": 0, "message": "ok", "data": {"status": 2}})
    rec = record(ApiFamily.ZEGO_RECORD_LEGACY)
    await rig.run(lambda: rig.provider.observe(rec))
    rig.clock.step(step)
    rig.clock.advance(7200 - 300 - 1)
    await rig.run(lambda: rig.provider.observe(rec))
    assert rig.vendor.paths() == ["/base/access_token", "/base/query", "/base/query"]
    rig.clock.advance(2)
    await rig.run(lambda: rig.provider.observe(rec))
    assert rig.vendor.paths()[3:] == ["/base/access_token", "/base/query"]
    assert body(rig.vendor.requests[3])["seq"] == 2
    assert body(rig.vendor.requests[4])["access_token"] == "tok-2"


async def test_concurrent_legacy_calls_share_one_token_fetch() -> None:
    rig = Rig(ZegoLegacyRecordProvider)
    rig.vendor.script("/base/access_token", token_answer("tok-1"))
    rig.vendor.script("/base/query", {"code": 0, "message": "ok", "data": {"status": 2}})

    async def three() -> None:
        await asyncio.gather(*(rig.provider.observe(record(ApiFamily.ZEGO_RECORD_LEGACY)) for _ in range(3)))

    await rig.run(three)
    assert rig.vendor.paths().count("/base/access_token") == 1


@pytest.mark.parametrize("code", [100000004, 100000005])
async def test_a_rejected_token_is_refreshed_and_the_call_retried_once(code: int) -> None:
    rig = Rig(ZegoLegacyRecordProvider)
    rig.vendor.script("/base/access_token", token_answer("tok-1"), token_answer("tok-2"))
    rig.vendor.script("/base/stop", {"code": code, "message": "expired"}, {"code": 0, "message": "ok"})
    await rig.run(lambda: rig.provider.stop(record(ApiFamily.ZEGO_RECORD_LEGACY)))
    assert rig.vendor.paths() == ["/base/access_token", "/base/stop", "/base/access_token", "/base/stop"]
    assert body(rig.vendor.requests[1])["access_token"] == "tok-1"
    assert body(rig.vendor.requests[3]) == {
        "app_id": 1234567890,
        "access_token": "tok-2",
        "task_id": "TASK0123456789AB",
    }


async def test_a_second_rejection_is_an_auth_error_without_the_token() -> None:
    rig = Rig(ZegoLegacyRecordProvider)
    rig.vendor.script("/base/access_token", token_answer("tok-1"), token_answer("tok-2"))
    rig.vendor.script("/base/start", {"code": 100000005, "message": "token tok-2 invalid"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD_LEGACY, LEGACY_REQUEST), None))
    assert err.value.kind is ErrorKind.AUTH and "check serverSecret of provider zego-prod" in err.value.message
    assert "tok-2" not in str(err.value)
    assert rig.vendor.paths().count("/base/start") == 2


async def test_a_given_access_token_is_used_as_is_and_never_refreshed() -> None:
    rig = Rig(ZegoLegacyRecordProvider, access_token=Secret("my-token"))
    rig.vendor.script("/base/query", {"code": 0, "message": "ok", "data": {"status": 3}})
    observed = await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD_LEGACY)))
    assert observed.state is ObservedState.STOPPED and observed.reason == "ended (ZEGO status 3)"
    assert body(rig.vendor.requests[0]) == {
        "app_id": 1234567890,
        "access_token": "my-token",
        "task_id": "TASK0123456789AB",
    }

    rig.vendor.script("/base/query", {"code": 100000004, "message": "my-token expired"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD_LEGACY)))
    assert err.value.kind is ErrorKind.AUTH and "check accessToken of provider zego-prod" in err.value.message
    assert "my-token" not in str(err.value)
    assert "/base/access_token" not in rig.vendor.paths()


async def test_a_rejected_server_secret_on_access_token_is_an_auth_error() -> None:
    rig = Rig(ZegoLegacyRecordProvider)
    rig.vendor.script("/base/access_token", {"code": 100000005, "message": "bad hash"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.stop(record(ApiFamily.ZEGO_RECORD_LEGACY)))
    assert err.value.kind is ErrorKind.AUTH and err.value.api == "access_token"
    assert rig.vendor.paths() == ["/base/access_token"]


@pytest.mark.parametrize(
    "answer",
    [
        {"code": 0, "message": "ok"},
        {"code": 0, "data": {"access_token": "t"}},
        {"code": 0, "data": {"access_token": "t", "expires_in": "7200"}},
    ],
)
async def test_a_malformed_token_answer_is_retryable(answer: dict[str, Any]) -> None:
    rig = Rig(ZegoLegacyRecordProvider)
    rig.vendor.script("/base/access_token", answer)
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.stop(record(ApiFamily.ZEGO_RECORD_LEGACY)))
    assert err.value.kind is ErrorKind.RETRYABLE and "unexpected answer from access_token" in err.value.message


async def test_legacy_query_reads_times_and_not_found() -> None:
    rig = Rig(ZegoLegacyRecordProvider, access_token=Secret("my-token"))
    begin = 1_699_990_000_000
    data = {"status": 4, "record_begin_timestamp": begin, "record_end_timestamp": begin + 3599_000}
    rig.vendor.script("/base/query", {"code": 0, "message": "ok", "data": data}, {"code": 300001000, "message": "no"})
    observed = await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD_LEGACY)))
    assert observed.rollover and observed.reason == "max duration (ZEGO status 4)"
    observed = await rig.run(lambda: rig.provider.observe(record(ApiFamily.ZEGO_RECORD_LEGACY)))
    assert observed.state is ObservedState.NOT_FOUND
    assert rig.stats("query").by_priority == {Priority.POLL: 2}


@pytest.mark.parametrize("code", [300001000, 300001001])
async def test_legacy_stop_of_an_ended_task_is_not_found(code: int) -> None:
    rig = Rig(ZegoLegacyRecordProvider, access_token=Secret("my-token"))
    rig.vendor.script("/base/stop", {"code": code, "message": "ended"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.stop(record(ApiFamily.ZEGO_RECORD_LEGACY)))
    assert err.value.kind is ErrorKind.NOT_FOUND
    assert rig.stats("stop").by_priority == {Priority.CHANGE: 1}


async def test_legacy_throttling_slows_the_budget() -> None:
    rig = Rig(ZegoLegacyRecordProvider, access_token=Secret("my-token"))
    rig.vendor.script("/base/start", {"code": 300000003, "message": "slow down"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(recording_task(ApiFamily.ZEGO_RECORD_LEGACY, LEGACY_REQUEST), None))
    assert err.value.kind is ErrorKind.THROTTLED and rig.stats("start").throttled == 1


# --- MediaThumbnails ------------------------------------------------------------------------------


def thumbnail_task(request: dict[str, Any]) -> DesiredTask:
    return DesiredTask(
        key=f"ThumbnailJob/replay-thumbs/{request['FileId']}",
        kind=JobKind.THUMBNAIL,
        job="replay-thumbs",
        target=request["FileId"],
        provider="zego-prod",
        family=ApiFamily.ZEGO_THUMBNAIL,
        request=request,
        spec_hash="h",
        fixed_hash="h",
    )


TENCENT = {
    "Vendor": "Tencent",
    "FileId": "1397757897438985100",
    "Definition": 10,
    "ExtTimeOffsetSet": [1, 2.0, 2.5],
    "Type": "SnapshotByTimeOffset",
}


async def test_thumbnail_wire_format() -> None:
    rig = Rig(ZegoThumbnailProvider)
    rig.vendor.script("/", {**OK, "Data": {"Tencent": {"TaskId": "1500030200-procedurev2-x", "RequestId": "q"}}})
    result = await rig.run(lambda: rig.provider.start(thumbnail_task(TENCENT), None))
    assert result.vendor_task_id == "1500030200-procedurev2-x"
    assert result.vendor_ref == {"TaskId": "1500030200-procedurev2-x", "FileId": "1397757897438985100"}
    (request,) = rig.vendor.requests
    assert request.method == "GET" and str(request.url).startswith("https://rtc.test/?Action=MediaThumbnails&")
    signed = expected_signature_query("MediaThumbnails")
    assert query(request) == [
        signed[0],
        ("Vendor", "Tencent"),
        ("FileId", "1397757897438985100"),
        ("Definition", "10"),
        ("ExtTimeOffsetSet[]", "1"),
        ("ExtTimeOffsetSet[]", "2"),
        ("ExtTimeOffsetSet[]", "2.5"),
        ("Type", "SnapshotByTimeOffset"),
        *signed[1:],
    ]
    assert request.content == b""
    assert rig.stats("MediaThumbnails").by_priority == {Priority.CHANGE: 1}


@pytest.mark.parametrize(
    "data",
    [{"Huawei": {"task_id": "hw-1"}}, {"Huawei": [{"task_id": "hw-1"}]}],
)
async def test_thumbnail_huawei_answer_object_or_array(data: dict[str, Any]) -> None:
    rig = Rig(ZegoThumbnailProvider)
    rig.vendor.script("/", {**OK, "Data": data})
    huawei = {"Vendor": "Huawei", "FileId": "/record/a/2024-11-13.mp4", "Interval": 2, "Type": "SampleSnapshot"}
    result = await rig.run(lambda: rig.provider.start(thumbnail_task(huawei), None))
    assert result.vendor_task_id == "hw-1"
    assert ("FileId", "/record/a/2024-11-13.mp4") in query(rig.vendor.requests[0])


def test_thumbnail_params_keep_an_explicit_array_suffix_and_render_booleans() -> None:
    assert thumbnail_params({"ExtTimeOffsetSet[]": [3], "Flag": True}) == [
        ("ExtTimeOffsetSet[]", "3"),
        ("Flag", "true"),
    ]


@pytest.mark.parametrize(
    ("code", "kind", "meaning"),
    [
        (2, ErrorKind.TERMINAL, "input parameter error"),
        (3, ErrorKind.TERMINAL, "not activated: ask ZEGO technical support to activate them"),
        (4, ErrorKind.TERMINAL, "CDN type mismatch: check the entry's cdn and fileId"),
        (5, ErrorKind.TERMINAL, "configuration error: ask ZEGO technical support"),
        (6, ErrorKind.THROTTLED, "request too frequent"),
        (7, ErrorKind.AUTH, "check serverSecret of provider zego-prod"),
        (41003, ErrorKind.TERMINAL, "file does not exist: check the entry's fileId and the file's format"),
        (1000, ErrorKind.TERMINAL, "check fileId, else ask ZEGO technical support"),
        (100000005, ErrorKind.AUTH, "signature invalid"),
        (300000003, ErrorKind.THROTTLED, "rate limited"),
    ],
)
async def test_thumbnail_codes(code: int, kind: ErrorKind, meaning: str) -> None:
    rig = Rig(ZegoThumbnailProvider)
    rig.vendor.script("/", {"Code": code, "Message": "m"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(thumbnail_task(TENCENT), None))
    assert err.value.kind is kind and meaning in err.value.message and err.value.api == "MediaThumbnails"
    assert rig.stats("MediaThumbnails").throttled == (1 if kind is ErrorKind.THROTTLED else 0)


async def test_a_vendor_message_that_repeats_the_meaning_is_not_repeated() -> None:
    rig = Rig(ZegoThumbnailProvider)
    rig.vendor.script("/", {"Code": 1000, "Message": "Request failed"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.start(thumbnail_task(TENCENT), None))
    assert err.value.message == THUMBNAIL_CODES[1000][1]  # not "… (Request failed)"


async def test_thumbnail_stop_and_observe_make_no_call() -> None:
    rig = Rig(ZegoThumbnailProvider)
    rec = TaskRecord(
        key="ThumbnailJob/replay-thumbs/f",
        provider="zego-prod",
        family=ApiFamily.ZEGO_THUMBNAIL,
        kind=JobKind.THUMBNAIL,
        target="f",
        spec_hash="h",
        fixed_hash="h",
        vendor_task_id="t",
    )
    await rig.provider.stop(rec)
    observed = await rig.provider.observe(rec)
    assert observed.state is ObservedState.UNKNOWN
    assert rig.vendor.requests == []


@pytest.mark.parametrize("room", ["class 101", "a&b=c", "50%25+off", "教室/一", "x?y#z"])
async def test_query_values_reach_the_vendor_exactly(room: str) -> None:
    """The query is encoded by capctl (not httpx's `params=`): every reserved character is escaped, an
    existing `%xx` included, so the vendor reads back exactly the room id the spec names."""
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/", {**OK, "Data": {"StreamList": [{"StreamId": "s1"}]}})
    assert await rig.run(lambda: rig.provider.room_streams(room)) == 1
    (request,) = rig.vendor.requests
    assert ("RoomId", room) in query(request)
    assert query(request)[0] == ("Action", "DescribeSimpleStreamList")


# --- room listing (DescribeSimpleStreamList) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "streams"),
    [
        # ZEGO destroys a room when its last user leaves: "room does not exist" is a room without a stream.
        ({"Code": 50001, "Message": "room not exist"}, 0),
        ({"Code": 104, "Message": "room not exist"}, 0),
        ({"Code": 5024, "Message": "room not exist"}, 0),
        ({**OK, "Data": {"StreamList": []}}, 0),
        ({**OK, "Data": {"StreamList": None}}, 0),
        ({**OK, "Data": None}, 0),
        ({**OK, "Data": {"StreamList": [{"StreamId": "s1", "Extra": 1}], "Total": "1"}, "Unknown": {}}, 1),
    ],
)
async def test_room_listing_answers(answer: dict[str, Any], streams: int) -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/", answer)
    assert await rig.run(lambda: rig.provider.room_streams("class-101")) == streams


@pytest.mark.parametrize(
    ("code", "kind"),
    [(154, ErrorKind.RETRYABLE), (206, ErrorKind.THROTTLED), (207, ErrorKind.THROTTLED), (9, ErrorKind.TERMINAL)],
)
async def test_room_listing_codes(code: int, kind: ErrorKind) -> None:
    rig = Rig(ZegoRecordProvider)
    rig.vendor.script("/", {"Code": code, "Message": "no"})
    with pytest.raises(VendorError) as err:
        await rig.run(lambda: rig.provider.room_streams("class-101"))
    assert (err.value.kind, err.value.code, err.value.api) == (kind, str(code), "DescribeSimpleStreamList")
    stats = rig.budgets.get(rig.config.account, "DescribeSimpleStreamList", 50).stats
    assert stats.throttled == (1 if kind is ErrorKind.THROTTLED else 0)
