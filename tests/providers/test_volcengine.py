"""VolcengineSnapshotProvider against httpx.MockTransport: wire format, signatures, error mapping, budgets."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from volcengine.auth.SignerV4 import SignerV4
from volcengine.auth.SignParam import SignParam
from volcengine.Credentials import Credentials

from reconciler.budget import HEADROOM, BudgetRegistry, Priority
from reconciler.clock import FakeClock
from reconciler.model import (
    ApiFamily,
    DesiredTask,
    JobKind,
    ObservedState,
    ProviderConfig,
    TaskRecord,
    TaskStatus,
)
from reconciler.providers.base import ErrorKind, VendorError
from reconciler.providers.volcengine import (
    DEFAULT_RATE_LIMITS,
    VolcengineSnapshotProvider,
    classify_error,
    observed_from_snapshot_task,
)
from reconciler.secrets import Secret, SecretText

AK, SK = "AKLTexampleaccesskey000", "example-secret-key-000"
STORAGE_SK = "storage-secret-value-000"
START_SECONDS = 1_704_164_645.0  # 2024-01-02T03:04:05Z
Handler = Callable[[httpx.Request], httpx.Response]


def envelope(result: Any = "ok", *, error: tuple[str, str] | None = None, action: str = "X") -> dict[str, Any]:
    meta: dict[str, Any] = {"RequestId": "r-1", "Action": action, "Version": "2023-11-01", "Service": "rtc"}
    if error:
        meta["Error"] = {"Code": error[0], "Message": error[1]}
    return {"ResponseMetadata": meta} | ({} if error else {"Result": result})


class Vendor:
    """A scripted vendor: records every request and answers with the queued responses (default: ok)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: list[httpx.Response | Exception] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else httpx.Response(200, json=envelope())
        if isinstance(answer, Exception):
            raise answer
        return answer

    def reply(self, status: int = 200, **kwargs: Any) -> None:
        self.answers.append(httpx.Response(status, **kwargs))


class Harness:
    def __init__(self, endpoint: str = "https://rtc.volcengineapi.com", **config: Any) -> None:
        self.clock = FakeClock(START_SECONDS)
        self.budgets = BudgetRegistry(self.clock)
        self.vendor = Vendor()
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self.vendor))
        self.config = ProviderConfig(
            name="volc-test",
            type="volcengine",
            app_id="app1",
            source="specs/providers.yaml:1:1",
            endpoint=endpoint,
            access_key=Secret(AK),
            secret_key=Secret(SK),
            **config,
        )
        self.provider = VolcengineSnapshotProvider(self.config, budgets=self.budgets, clock=self.clock, http=self.http)

    def budget_stats(self, api: str) -> dict[int, int]:
        return self.budgets.all()[("volcengine:app1", api)].stats.by_priority


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Harness]]:
    """Harnesses whose http clients are closed after the test."""
    made: list[Harness] = []

    def factory(*args: Any, **kwargs: Any) -> Harness:
        made.append(Harness(*args, **kwargs))
        return made[-1]

    yield factory
    for harness in made:
        await harness.http.aclose()


@pytest.fixture
def h(make: Callable[..., Harness]) -> Harness:
    return make()


def request_body(business: bool = True) -> dict[str, Any]:
    return {
        "AppId": "app1",
        **({"BusinessId": "B123"} if business else {}),
        "RoomId": "lobby",
        "TaskId": "lobby-audit",
        "ImageConfig": {"Format": 0, "Interval": 5},
        "StorageConfig": {
            "Type": 2,
            "CustomConfig": {
                "Bucket": "b",
                "AccessKey": Secret("storage-ak"),
                "SecretKey": Secret(STORAGE_SK),
            },
        },
    }


def desired(request: dict[str, Any] | None = None, **changes: Any) -> DesiredTask:
    fields: dict[str, Any] = {
        "key": "SnapshotJob/lobby-audit/lobby",
        "kind": JobKind.SNAPSHOT,
        "job": "lobby-audit",
        "target": "lobby",
        "provider": "volc-test",
        "family": ApiFamily.VOLC_SNAPSHOT,
        "request": request_body() if request is None else request,
        "spec_hash": "h1",
        "fixed_hash": "f1",
        "updatable": {"interval": 10},
        "source": "specs/jobs.yaml:3:1",
    }
    return DesiredTask(**(fields | changes))


def record(ref: dict[str, str] | None = None) -> TaskRecord:
    return TaskRecord(
        key="SnapshotJob/lobby-audit/lobby",
        provider="volc-test",
        family=ApiFamily.VOLC_SNAPSHOT,
        kind=JobKind.SNAPSHOT,
        target="lobby",
        spec_hash="h1",
        fixed_hash="f1",
        status=TaskStatus.RUNNING,
        vendor_task_id="lobby-audit",
        vendor_ref={"AppId": "app1", "BusinessId": "B123", "RoomId": "lobby", "TaskId": "lobby-audit"}
        if ref is None
        else ref,
    )


def sdk_authorization(request: httpx.Request) -> str:
    """Re-sign the captured request with the official SDK: what the real gateway would accept."""
    param = SignParam()
    param.set_method(request.method)
    param.set_host(request.headers["host"])
    param.set_path(request.url.path)
    param.set_query(OrderedDict(parse_qsl(request.url.query.decode(), keep_blank_values=True)))
    headers = OrderedDict({"Host": request.headers["host"]})
    if "content-type" in request.headers:
        headers["Content-Type"] = request.headers["content-type"]
    param.set_header_list(headers)
    param.set_body(request.content)
    param.set_date(datetime.fromtimestamp(START_SECONDS, UTC))
    return str(SignerV4.sign_only(param, Credentials(AK, SK, "rtc", "cn-north-1")).authorization)


def query_of(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))


# -- start ------------------------------------------------------------------------------------------------


async def test_start_sends_the_signed_revealed_request(h: Harness) -> None:
    result = await h.provider.start(desired(), None)
    (sent,) = h.vendor.requests
    assert sent.method == "POST"
    assert sent.url.scheme == "https" and sent.url.host == "rtc.volcengineapi.com" and sent.url.path == "/"
    assert query_of(sent) == {"Action": "StartSnapshot", "Version": "2023-11-01"}
    assert sent.headers["content-type"] == "application/json"
    body = json.loads(sent.content)
    assert body["StorageConfig"]["CustomConfig"]["SecretKey"] == STORAGE_SK  # revealed on the wire only
    assert body == json.loads(json.dumps(request_body(), default=lambda s: s.reveal()))
    assert sent.headers["x-date"] == "20240102T030405Z"
    assert sent.headers["x-content-sha256"] == hashlib.sha256(sent.content).hexdigest()
    assert sent.headers["authorization"] == sdk_authorization(sent)
    assert result.vendor_task_id == "lobby-audit"
    assert result.vendor_ref == {
        "AppId": "app1",
        "BusinessId": "B123",
        "RoomId": "lobby",
        "TaskId": "lobby-audit",
    }
    assert not result.already_running


async def test_start_without_business_id_leaves_it_out_of_the_ref(h: Harness) -> None:
    result = await h.provider.start(desired(request_body(business=False)), None)
    assert result.vendor_ref == {"AppId": "app1", "RoomId": "lobby", "TaskId": "lobby-audit"}


async def test_start_of_a_running_task_is_success_already_running(h: Harness) -> None:
    started = "The task has been started. Please do not call the startup task interface repeatedly"
    h.vendor.reply(json=envelope(started))
    result = await h.provider.start(desired(), None)
    assert result.already_running and result.vendor_task_id == "lobby-audit"


@pytest.mark.parametrize("result", ["", None, "failed"])
async def test_a_start_answered_without_ok_is_not_confirmed(h: Harness, result: object) -> None:
    """Seed 001: `Result` is "ok" only on success and empty on failure; an answer without it starts nothing
    capctl may count on, and a retry is safe (a running TaskId is answered "already started")."""
    h.vendor.reply(json=envelope(result))
    with pytest.raises(VendorError) as info:
        await h.provider.start(desired(), None)
    assert (info.value.kind, info.value.code) == (ErrorKind.RETRYABLE, "capctl.StartNotConfirmed")
    assert info.value.provider == "volc-test" and 'instead of "ok"' in str(info.value)


async def test_start_uses_the_priority_given(h: Harness) -> None:
    await h.provider.start(desired(), "ignored-client-id", priority=Priority.REISSUE)
    assert h.budget_stats("StartSnapshot") == {Priority.REISSUE: 1}


async def test_start_refuses_a_request_without_ids_before_calling(h: Harness) -> None:
    request = {k: v for k, v in request_body().items() if k != "TaskId"}
    with pytest.raises(VendorError) as info:
        await h.provider.start(desired(request), None)
    assert info.value.kind is ErrorKind.TERMINAL
    assert "TaskId" in info.value.message and "specs/jobs.yaml:3:1" in info.value.message
    assert h.vendor.requests == []


# -- update / stop ----------------------------------------------------------------------------------------


async def test_update_sends_only_the_interval(h: Harness) -> None:
    await h.provider.update(desired(), record())
    (sent,) = h.vendor.requests
    assert sent.method == "POST" and query_of(sent) == {"Action": "UpdateSnapshot", "Version": "2023-11-01"}
    assert list(json.loads(sent.content).items()) == [
        ("AppId", "app1"),
        ("BusinessId", "B123"),
        ("RoomId", "lobby"),
        ("TaskId", "lobby-audit"),
        ("ImageConfig", {"Interval": 10}),
    ]
    assert sent.headers["authorization"] == sdk_authorization(sent)
    assert h.budget_stats("UpdateSnapshot") == {Priority.CHANGE: 1}


async def test_update_without_an_interval_is_terminal(h: Harness) -> None:
    with pytest.raises(VendorError) as info:
        await h.provider.update(desired(updatable={}), record())
    assert info.value.kind is ErrorKind.TERMINAL and h.vendor.requests == []


async def test_stop_sends_the_ids_from_the_record(h: Harness) -> None:
    await h.provider.stop(record({"AppId": "app1", "RoomId": "lobby", "TaskId": "lobby-audit"}))
    (sent,) = h.vendor.requests
    assert query_of(sent) == {"Action": "StopSnapshot", "Version": "2023-11-01"}
    assert json.loads(sent.content) == {"AppId": "app1", "RoomId": "lobby", "TaskId": "lobby-audit"}
    assert sent.headers["authorization"] == sdk_authorization(sent)
    assert h.budget_stats("StopSnapshot") == {Priority.CHANGE: 1}


async def test_stop_of_an_unknown_task_is_not_found(h: Harness) -> None:
    h.vendor.reply(400, json=envelope(error=("InvalidParameter.ErrorActiveTaskNotFound", "no such task")))
    with pytest.raises(VendorError) as info:
        await h.provider.stop(record())
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.api == "StopSnapshot"


async def test_stop_without_recorded_ids_is_not_found_without_a_call(h: Harness) -> None:
    with pytest.raises(VendorError) as info:
        await h.provider.stop(record({}))
    assert info.value.kind is ErrorKind.NOT_FOUND and h.vendor.requests == []


# -- observe ----------------------------------------------------------------------------------------------


def snapshot_task(status: int, end_ms: int = 0, reason: str = "") -> dict[str, Any]:
    return {
        "SnapshotTask": {
            "StartTime": 1_704_164_000_500,
            "EndTime": end_ms,
            "Status": status,
            "StopReason": reason,
        }
    }


async def test_observe_is_a_signed_get_with_the_ids_in_the_query(h: Harness) -> None:
    h.vendor.reply(json=envelope(snapshot_task(2)))
    observed = await h.provider.observe(record())
    (sent,) = h.vendor.requests
    assert sent.method == "GET" and sent.content == b"" and "content-type" not in sent.headers
    assert query_of(sent) == {
        "Action": "GetSnapshotTask",
        "Version": "2023-11-01",
        "AppId": "app1",
        "RoomId": "lobby",
        "TaskId": "lobby-audit",
    }
    assert sent.headers["x-content-sha256"] == hashlib.sha256(b"").hexdigest()
    assert sent.headers["authorization"] == sdk_authorization(sent)
    assert observed.state is ObservedState.RUNNING
    assert observed.started_at == 1_704_164_000.5 and observed.ended_at is None
    assert h.budget_stats("GetSnapshotTask") == {Priority.POLL: 1}


@pytest.mark.parametrize(
    ("status", "end_ms", "reason", "state", "shown_reason"),
    [
        (0, 0, "", ObservedState.UNKNOWN, None),
        (1, 0, "", ObservedState.RUNNING, None),
        (2, 0, "", ObservedState.RUNNING, None),
        (3, 1_704_164_180_000, "IdleTimeOut", ObservedState.STOPPED, "idle timeout (Volcengine IdleTimeOut)"),
        (3, 1_704_164_180_000, "", ObservedState.STOPPED, "ended (Volcengine status 3)"),
        (4, 1_704_164_001_000, "StartTaskFailed", ObservedState.FAILED, "start failed (Volcengine StartTaskFailed)"),
        (7, 0, "", ObservedState.UNKNOWN, None),
    ],
)
def test_snapshot_task_status_mapping(
    status: int, end_ms: int, reason: str, state: ObservedState, shown_reason: str | None
) -> None:
    observed = observed_from_snapshot_task(snapshot_task(status, end_ms, reason)["SnapshotTask"])
    assert observed.state is state
    assert observed.reason == shown_reason
    assert observed.ended_at == (end_ms / 1000 if end_ms else None)
    assert observed.detail == f"status {status}"


@pytest.mark.parametrize("status", ["2", True, None, 2.0])
def test_a_status_that_is_not_an_integer_is_unknown(status: object) -> None:
    """JSON true is no status, though Python reads it as 1 (not started: running)."""
    observed = observed_from_snapshot_task({"Status": status, "StartTime": True, "EndTime": "1700000000000"})
    assert (observed.state, observed.started_at, observed.ended_at) == (ObservedState.UNKNOWN, None, None)


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ("\x1b[2J" + "x" * 50_000, "status '\\x1b[2Jx"),  # an escape sequence, 50 kB: escaped and cut
        ({"Code": ["x" * 50_000]}, "status {'Code': ['x"),  # an object where the number belongs
    ],
)
def test_a_status_of_the_wrong_shape_is_quoted_at_a_bounded_size(status: object, shown: str) -> None:
    """The detail of an unknown status is printed in plans, logs and the status page: not the vendor's raw text."""
    detail = observed_from_snapshot_task({"Status": status}).detail or ""
    assert detail.startswith(shown) and len(detail) < 200 and detail.isprintable()


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(400, json=envelope(error=("InvalidParameter.ErrorActiveTaskNotFound", "gone"))),
        httpx.Response(200, json=envelope({})),
        httpx.Response(200, json=envelope({"SnapshotTask": None})),
    ],
    ids=["error-code", "empty-result", "null-task"],
)
async def test_observe_returns_not_found_instead_of_raising(h: Harness, answer: httpx.Response) -> None:
    h.vendor.answers.append(answer)
    assert (await h.provider.observe(record())).state is ObservedState.NOT_FOUND


async def test_observe_without_recorded_ids_is_not_found_without_a_call(h: Harness) -> None:
    assert (await h.provider.observe(record({}))).state is ObservedState.NOT_FOUND
    assert h.vendor.requests == []


async def test_observe_raises_other_errors(h: Harness) -> None:
    h.vendor.reply(503, json=envelope(error=("ServiceUnavailableTemp", "busy")))
    with pytest.raises(VendorError) as info:
        await h.provider.observe(record())
    assert info.value.kind is ErrorKind.RETRYABLE


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "FlowLimitExceeded.QPSOverLimit", ErrorKind.THROTTLED),
        (200, "FlowLimitExceeded.Other", ErrorKind.THROTTLED),
        (429, "HTTP 429", ErrorKind.THROTTLED),
        (400, "InvalidParameter.ErrorActiveTaskNotFound", ErrorKind.NOT_FOUND),
        (500, "InternalError.Unknown", ErrorKind.RETRYABLE),
        (200, "InternalError.Timeout", ErrorKind.RETRYABLE),
        (503, "ServiceUnavailableTemp", ErrorKind.RETRYABLE),
        (502, "HTTP 502", ErrorKind.RETRYABLE),
        (401, "SignatureDoesNotMatch", ErrorKind.AUTH),
        (401, "MissingSignature", ErrorKind.AUTH),
        (401, "InvalidAccessKey", ErrorKind.AUTH),
        (403, "InvalidTimestamp", ErrorKind.AUTH),
        (400, "InvalidParameter", ErrorKind.TERMINAL),
        (400, "InvalidParameter.IllegalRoomID", ErrorKind.TERMINAL),
        (403, "AccessDenied.ServiceNotEnabled", ErrorKind.TERMINAL),
        (404, "InvalidActionOrVersion", ErrorKind.TERMINAL),
        (400, "SomethingNew", ErrorKind.TERMINAL),
    ],
)
def test_classify_error(status: int, code: str, kind: ErrorKind) -> None:
    assert classify_error(status, code) is kind


@pytest.mark.parametrize(("status", "code", "kind"), [
    (429, "FlowLimitExceeded.QPSOverLimit", ErrorKind.THROTTLED),
    (200, "InvalidParameter.IllegalRoomID", ErrorKind.TERMINAL),  # an Error on HTTP 200 still fails
    (500, "InternalError.Unknown", ErrorKind.RETRYABLE),
    (403, "AccessDenied.NoPermission", ErrorKind.TERMINAL),
])  # fmt: skip
async def test_vendor_errors_become_vendor_error(h: Harness, status: int, code: str, kind: ErrorKind) -> None:
    h.vendor.reply(status, json=envelope(error=(code, "vendor says no")))
    with pytest.raises(VendorError) as info:
        await h.provider.start(desired(), None)
    assert (info.value.kind, info.value.code, info.value.api) == (kind, code, "StartSnapshot")
    assert info.value.message == "vendor says no"


async def test_throttling_slows_the_budget_of_that_api(h: Harness) -> None:
    h.vendor.reply(429, json=envelope(error=("FlowLimitExceeded.QPSOverLimit", "slow down")))
    with pytest.raises(VendorError):
        await h.provider.stop(record())
    stop_budget = h.budgets.all()[("volcengine:app1", "StopSnapshot")]
    assert stop_budget.stats.throttled == 1 and stop_budget.effective_rate < 150


async def test_http_429_without_an_envelope_is_throttled(h: Harness) -> None:
    h.vendor.reply(429, text="Too Many Requests")
    with pytest.raises(VendorError) as info:
        await h.provider.stop(record())
    assert info.value.kind is ErrorKind.THROTTLED
    assert h.budgets.all()[("volcengine:app1", "StopSnapshot")].stats.throttled == 1


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("SignatureDoesNotMatch", "secretKey"),
        ("InvalidAccessKey", "accessKey"),
        ("MissingSignature", "accessKey and secretKey"),
        ("InvalidTimestamp", "check this machine's clock"),
    ],
)
async def test_auth_errors_name_the_credential_not_its_value(h: Harness, code: str, hint: str) -> None:
    h.vendor.reply(401, json=envelope(error=(code, f"access key {AK} rejected")))
    with pytest.raises(VendorError) as info:
        await h.provider.stop(record())
    assert info.value.kind is ErrorKind.AUTH
    text = str(info.value)
    assert hint in text and "volc-test" in text and "specs/providers.yaml:1:1" in text
    assert AK not in text and Secret(AK).fingerprint in text


async def test_echoed_request_secrets_are_scrubbed_from_messages(h: Harness) -> None:
    h.vendor.reply(400, json=envelope(error=("InvalidParameter", f"bad SecretKey {STORAGE_SK}")))
    with pytest.raises(VendorError) as info:
        await h.provider.start(desired(), None)
    assert STORAGE_SK not in str(info.value) and Secret(STORAGE_SK).fingerprint in str(info.value)


async def test_echoed_hidden_reference_values_are_scrubbed_from_messages(h: Harness) -> None:
    task_id = SecretText("task-from-an-env-var")  # read from a reference into a field that is not shown
    h.vendor.reply(400, json=envelope(error=("InvalidParameter", f"bad TaskId {task_id.reveal()}")))
    with pytest.raises(VendorError) as info:
        await h.provider.start(desired({**request_body(), "TaskId": task_id}), None)
    assert "task-from-an-env-var" not in str(info.value) and task_id.fingerprint in str(info.value)


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        (httpx.Response(200, text="<html>proxy</html>"), "not JSON"),
        (httpx.Response(200, json={"Result": "ok"}), "no ResponseMetadata"),
        (httpx.Response(200, json=["ok"]), "no ResponseMetadata"),
        (httpx.Response(502, text="Bad Gateway"), "not JSON"),
        (httpx.Response(404, text="x" * 5000), "not JSON"),
        (httpx.Response(200, text="[" * 100_000 + "]" * 100_000), "not JSON: nested deeper than 32 levels"),
        # Valid JSON to a reader that takes anything, refused by load_json: the answer says why, not just "not JSON".
        (httpx.Response(200, text='{"ResponseMetadata": {}, "Result": "\\ud800"}'), "not JSON: a string holds a lone"),
        (httpx.Response(200, content='{"ResponseMetadata": {}}'.encode("utf-16")), "not JSON: the body is not UTF-8"),
    ],
)
async def test_unexpected_answers_are_retryable(h: Harness, answer: httpx.Response, what: str) -> None:
    h.vendor.answers.append(answer)
    with pytest.raises(VendorError) as info:
        await h.provider.stop(record())
    assert info.value.kind is ErrorKind.RETRYABLE
    assert info.value.message.startswith(f"unexpected answer from StopSnapshot (HTTP {answer.status_code}, {what}")
    assert len(info.value.message) < 300


async def test_an_error_status_without_an_error_code_fails(h: Harness) -> None:
    h.vendor.reply(500, json=envelope("ok"))
    with pytest.raises(VendorError) as info:
        await h.provider.stop(record())
    assert (info.value.kind, info.value.code) == (ErrorKind.RETRYABLE, "HTTP 500")


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (httpx.ConnectTimeout("timed out"), "cannot connect to https://rtc.volcengineapi.com:443 (timed out)"),
        (httpx.ReadTimeout("timed out"), "no answer from https://rtc.volcengineapi.com:443 in time (ReadTimeout)"),
        (httpx.ConnectError("refused"), "cannot connect to https://rtc.volcengineapi.com:443 (connection failed)"),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "connection to https://rtc.volcengineapi.com:443 lost before an answer (RemoteProtocolError)",
        ),
        (httpx.ReadError("reset"), "lost before an answer (ReadError)"),
    ],
)
async def test_transport_failures_are_retryable_and_name_the_provider_and_endpoint(
    h: Harness, exc: Exception, text: str
) -> None:
    h.vendor.answers.append(exc)
    with pytest.raises(VendorError) as info:
        await h.provider.observe(record())
    assert info.value.kind is ErrorKind.RETRYABLE and info.value.code == ""  # no answer, so no vendor code
    assert str(info.value).startswith("volc-test (volcengine): GetSnapshotTask: ") and text in str(info.value)
    assert (info.value.provider, info.value.provider_type) == ("volc-test", "volcengine")


async def test_vendor_answers_name_the_provider_too(h: Harness) -> None:
    h.vendor.reply(500, json=envelope("ok"))
    with pytest.raises(VendorError) as info:
        await h.provider.stop(record())
    assert str(info.value).startswith("volc-test (volcengine): StopSnapshot: HTTP 500: ")


# -- endpoint, budgets, configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8750/volc", "http://127.0.0.1:8750/volc/"])
async def test_endpoint_path_prefix_and_port(make: Callable[..., Harness], endpoint: str) -> None:
    h = make(endpoint)
    await h.provider.stop(record())
    (sent,) = h.vendor.requests
    assert str(sent.url).startswith("http://127.0.0.1:8750/volc/?Action=StopSnapshot")
    assert sent.headers["host"] == "127.0.0.1:8750"
    assert sent.headers["authorization"] == sdk_authorization(sent)


async def test_region_is_part_of_the_signature(make: Callable[..., Harness]) -> None:
    h = make(region="ap-singapore-1")
    await h.provider.stop(record())
    assert "/ap-singapore-1/rtc/request" in h.vendor.requests[0].headers["authorization"]


async def test_budgets_use_documented_limits_and_overrides(make: Callable[..., Harness]) -> None:
    h = make(rate_limits={"StartSnapshot": 20})
    await h.provider.start(desired(), None)
    await h.provider.observe(record())
    budgets = h.budgets.all()
    assert budgets[("volcengine:app1", "StartSnapshot")].rate == 20
    assert budgets[("volcengine:app1", "GetSnapshotTask")].rate == DEFAULT_RATE_LIMITS["GetSnapshotTask"] == 60
    assert DEFAULT_RATE_LIMITS == {"StartSnapshot": 150, "UpdateSnapshot": 150, "StopSnapshot": 150,
                                   "GetSnapshotTask": 60, "GetRoomOnlineUsers": 40}  # fmt: skip


async def test_calls_wait_for_their_budget_slot(h: Harness) -> None:
    first = asyncio.create_task(h.provider.observe(record()))
    second = asyncio.create_task(h.provider.observe(record()))
    for _ in range(10):
        await asyncio.sleep(0)
    assert first.done() and not second.done() and len(h.vendor.requests) == 1
    interval = h.budgets.all()[("volcengine:app1", "GetSnapshotTask")].interval
    assert interval == pytest.approx(1 / (60 * HEADROOM))
    h.clock.advance(interval * 0.9)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not second.done()
    h.clock.advance(interval * 0.2)  # past the slot
    await asyncio.wait_for(second, 10)
    assert len(h.vendor.requests) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"secret_key": None}, "volc-test (specs/providers.yaml:1:1): secretKey is required"),
        ({"access_key": "plain-text"}, "accessKey is required"),
        ({"type": "zego"}, "is not volcengine"),
    ],
)
def test_bad_configuration_is_refused(h: Harness, changes: dict[str, Any], message: str) -> None:
    config = dataclasses.replace(h.config, **changes)
    with pytest.raises(ValueError, match=re.escape(message)):
        VolcengineSnapshotProvider(config, budgets=h.budgets, clock=h.clock, http=h.http)


def test_name_and_family(h: Harness) -> None:
    assert h.provider.name == "volc-test" and h.provider.family is ApiFamily.VOLC_SNAPSHOT
