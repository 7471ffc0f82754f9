"""The ZEGO providers against the in-process simulator (independent signing checks, real task lifecycles).

Provider and simulator share one `FakeClock`, so signatures carry the simulator's time and idle timeouts
or max durations are reached by `sim.advance()` instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from reconciler.budget import BudgetRegistry
from reconciler.clock import FakeClock
from reconciler.model import ApiFamily, DesiredTask, JobKind, ObservedState, ProviderConfig, TaskRecord
from reconciler.providers.base import ErrorKind, StartResult, VendorError
from reconciler.providers.zego import ZegoLegacyRecordProvider, ZegoRecordProvider, ZegoThumbnailProvider
from reconciler.secrets import Secret
from reconciler.sim import Simulator, create_app
from reconciler.sim.faults import FaultConfig

T = TypeVar("T")
SIM_SECRET = "0123456789abcdef0123456789abcdef"
ROOM = "class-101"
ZEGO = "zego"


@dataclass
class SimRig:
    clock: FakeClock
    sim: Simulator
    http: httpx.AsyncClient
    budgets: BudgetRegistry

    def config(self, **changes: Any) -> ProviderConfig:
        fields: dict[str, Any] = {
            "name": "zego-sim",
            "type": "zego",
            "app_id": "1234567890",
            "server_secret": Secret(SIM_SECRET),
            "rtc_endpoint": "http://sim/zego/rtc",
            "cloudrecord_endpoint": "http://sim/zego/cloudrecord",
        }
        fields.update(changes)
        return ProviderConfig(**fields)

    def current(self, **changes: Any) -> ZegoRecordProvider:
        return ZegoRecordProvider(self.config(**changes), budgets=self.budgets, clock=self.clock, http=self.http)

    def legacy(self, **changes: Any) -> ZegoLegacyRecordProvider:
        config = self.config(cloudrecord_endpoint="http://sim/zego/legacy", cloudrecord_api="legacy", **changes)
        return ZegoLegacyRecordProvider(config, budgets=self.budgets, clock=self.clock, http=self.http)

    def thumbnails(self) -> ZegoThumbnailProvider:
        return ZegoThumbnailProvider(self.config(), budgets=self.budgets, clock=self.clock, http=self.http)

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await a provider call, moving the shared clock when only the rate budgets are waiting."""
        task = asyncio.ensure_future(awaitable)
        while not task.done():
            for _ in range(50):
                await asyncio.sleep(0)
            wakeup = self.clock.next_wakeup()
            if not task.done() and wakeup is not None:
                self.clock.set(wakeup)
        return task.result()


@pytest.fixture
async def rig() -> AsyncIterator[SimRig]:
    clock = FakeClock()
    app = create_app(clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        yield SimRig(clock, app.state.sim, http, BudgetRegistry(clock))


def recording(family: ApiFamily, request: dict[str, Any]) -> DesiredTask:
    return DesiredTask(
        key=f"RecordingJob/class-rec/{ROOM}",
        kind=JobKind.RECORDING,
        job="class-rec",
        target=ROOM,
        provider="zego-sim",
        family=family,
        request=request,
        spec_hash="h",
        fixed_hash="f",
        idle_timeout=30,
        max_duration=300,
    )


def record_of(task: DesiredTask, started: StartResult) -> TaskRecord:
    return TaskRecord(
        key=task.key,
        provider=task.provider,
        family=task.family,
        kind=task.kind,
        target=task.target,
        spec_hash=task.spec_hash,
        fixed_hash=task.fixed_hash,
        vendor_task_id=started.vendor_task_id,
        vendor_ref=started.vendor_ref,
        max_duration=task.max_duration,
    )


def current_request(max_idle: int = 30, max_record: int = 300) -> dict[str, Any]:
    return {
        "RoomId": ROOM,
        "RecordInputParams": {"RecordMode": 1, "StreamType": 3, "MaxIdleTime": max_idle, "MaxRecordTime": max_record},
        "RecordOutputParams": {"OutputFileFormat": "jpg", "SnapshotInterval": 5},
        "StorageParams": {
            "Vendor": 2,
            "Region": "oss-cn-shanghai",
            "Bucket": "audit",
            "AccessKeyId": "ak",
            "AccessKeySecret": Secret("sk"),
        },
    }


LEGACY_REQUEST = {
    "room_id": ROOM,
    "record_input_params": {"record_mode": 1, "stream_type": 3, "max_idle_time": 30, "max_record_time": 300},
    "storage_params": {
        "storage_provider": 2,
        "region": "oss-cn-shanghai",
        "bucket_name": "audit",
        "access_key_id": "ak",
        "access_key_secret": Secret("sk"),
    },
}


async def test_current_lifecycle_with_idempotent_start(rig: SimRig) -> None:
    rig.sim.publish(ZEGO, ROOM, stream_id="teacher")
    provider = rig.current()
    task = recording(ApiFamily.ZEGO_RECORD, current_request())
    started = await rig.run(provider.start(task, "intent-1"))
    again = await rig.run(provider.start(task, "intent-1"))
    assert again.vendor_task_id == started.vendor_task_id  # ClientTaskId: no second recording
    # ZEGO answers both alike: "not known" (the `started` line's null), not a false "no" (walk 16f).
    assert started.already_running is None and again.already_running is None
    assert len(rig.sim.tasks(ZEGO)) == 1

    rec = record_of(task, started)
    assert (await rig.run(provider.observe(rec))).state is ObservedState.RUNNING
    await rig.run(provider.stop(rec))
    observed = await rig.run(provider.observe(rec))
    assert observed.state is ObservedState.STOPPED and observed.reason == "ended (ZEGO status 3)"
    with pytest.raises(VendorError) as err:
        await rig.run(provider.stop(rec))
    assert err.value.kind is ErrorKind.NOT_FOUND


@pytest.mark.parametrize("legacy", [False, True])
async def test_a_recording_is_never_asked_for_through_another_app(legacy: bool) -> None:
    """A Provider's appId edited in place (a move to a new ZEGO app): asked through the new app, ZEGO answers
    "no such task", so the recording was counted stopped, started again in the new app, and ran on unseen in
    the old one. The record keeps its app; the other app's provider refuses it without a call."""
    from reconciler.sim import SimConfig
    from reconciler.sim.config import BUILTIN_ZEGO_APP, ZegoApp

    clock = FakeClock()
    app = create_app(SimConfig(zego_apps=[BUILTIN_ZEGO_APP, ZegoApp(2222, SIM_SECRET)]), clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        rig = SimRig(clock, app.state.sim, http, BudgetRegistry(clock))
        rig.sim.publish(ZEGO, ROOM, stream_id="teacher")
        family, request = (
            (ApiFamily.ZEGO_RECORD_LEGACY, LEGACY_REQUEST) if legacy else (ApiFamily.ZEGO_RECORD, current_request())
        )
        task = recording(family, request)
        started = await rig.run((rig.legacy() if legacy else rig.current()).start(task, "intent-1"))
        assert started.vendor_ref["AppId"] == "1234567890"
        moved = rig.legacy(app_id="2222") if legacy else rig.current(app_id="2222")
        calls = len(rig.sim.log.entries())
        for call in (moved.observe, moved.stop):
            with pytest.raises(VendorError) as err:
                await rig.run(call(record_of(task, started)))
            assert err.value.kind is ErrorKind.TERMINAL and "started in app 1234567890" in str(err.value)
        assert len(rig.sim.log.entries()) == calls and [t.status for t in rig.sim.tasks(ZEGO)] == [2]


async def test_current_idle_end_is_seen_by_polling(rig: SimRig) -> None:
    provider = rig.current()
    task = recording(ApiFamily.ZEGO_RECORD, current_request(max_idle=5))
    started = await rig.run(provider.start(task, "intent-1"))
    await rig.sim.advance(10)
    observed = await rig.run(provider.observe(record_of(task, started)))
    assert observed.state is ObservedState.STOPPED and not observed.rollover


async def test_current_end_at_max_duration_is_a_rollover(rig: SimRig) -> None:
    rig.sim.publish(ZEGO, ROOM, stream_id="teacher")
    provider = rig.current()
    task = recording(ApiFamily.ZEGO_RECORD, current_request(max_record=300))
    started = await rig.run(provider.start(task, "intent-1"))
    await rig.sim.advance(301)
    observed = await rig.run(provider.observe(record_of(task, started)))
    assert observed.state is ObservedState.STOPPED and observed.rollover


async def test_an_unknown_task_is_not_found(rig: SimRig) -> None:
    rec = record_of(recording(ApiFamily.ZEGO_RECORD, {}), StartResult("NOSUCHTASK000000", {}))
    assert (await rig.run(rig.current().observe(rec))).state is ObservedState.NOT_FOUND


async def test_a_wrong_server_secret_is_an_auth_error(rig: SimRig) -> None:
    provider = rig.current(server_secret=Secret("f" * 32))
    with pytest.raises(VendorError) as err:
        await rig.run(provider.start(recording(ApiFamily.ZEGO_RECORD, current_request()), "intent-1"))
    assert err.value.kind is ErrorKind.AUTH and "f" * 32 not in str(err.value)


async def test_a_wrong_server_secret_on_thumbnails_says_what_to_check(rig: SimRig) -> None:
    """MediaThumbnails answers its own code 7, which must read like every other rejected credential."""
    provider = ZegoThumbnailProvider(
        rig.config(server_secret=Secret("f" * 32)), budgets=rig.budgets, clock=rig.clock, http=rig.http
    )
    huawei = {"Vendor": "Huawei", "FileId": "/record/a.mp4", "Interval": 2, "Type": "SampleSnapshot"}
    with pytest.raises(VendorError) as err:
        await rig.run(provider.start(thumbnail(huawei), None))
    assert err.value.kind is ErrorKind.AUTH and err.value.code == "7"
    assert "check serverSecret of provider zego-sim" in str(err.value) and "f" * 32 not in str(err.value)


async def test_legacy_lifecycle_and_token_refresh(rig: SimRig) -> None:
    rig.sim.publish(ZEGO, ROOM, stream_id="teacher")
    provider = rig.legacy()
    task = recording(ApiFamily.ZEGO_RECORD_LEGACY, LEGACY_REQUEST)
    started = await rig.run(provider.start(task, None))
    rec = record_of(task, started)
    assert (await rig.run(provider.observe(rec))).state is ObservedState.RUNNING

    rig.sim.legacy_tokens.clear()  # the vendor forgets the token: the provider must obtain a new one
    assert (await rig.run(provider.observe(rec))).state is ObservedState.RUNNING
    await rig.run(provider.stop(rec))
    observed = await rig.run(provider.observe(rec))
    assert observed.state is ObservedState.STOPPED


async def test_legacy_with_an_unknown_given_token_is_an_auth_error(rig: SimRig) -> None:
    provider = rig.legacy(access_token=Secret("not-a-token"))
    with pytest.raises(VendorError) as err:
        await rig.run(provider.start(recording(ApiFamily.ZEGO_RECORD_LEGACY, LEGACY_REQUEST), None))
    assert err.value.kind is ErrorKind.AUTH and "accessToken" in err.value.message
    assert "not-a-token" not in str(err.value)


def thumbnail(request: dict[str, Any]) -> DesiredTask:
    return DesiredTask(
        key=f"ThumbnailJob/replay/{request['FileId']}",
        kind=JobKind.THUMBNAIL,
        job="replay",
        target=request["FileId"],
        provider="zego-sim",
        family=ApiFamily.ZEGO_THUMBNAIL,
        request=request,
        spec_hash="h",
        fixed_hash="h",
    )


async def test_thumbnails_for_both_cdns(rig: SimRig) -> None:
    provider = rig.thumbnails()
    tencent = {
        "Vendor": "Tencent",
        "FileId": "1397757897438985100",
        "Definition": 10,
        "ExtTimeOffsetSet": [1, 2],
        "Type": "SnapshotByTimeOffset",
    }
    huawei = {"Vendor": "Huawei", "FileId": "/record/a.mp4", "Interval": 2, "Type": "SampleSnapshot"}
    assert (await rig.run(provider.start(thumbnail(tencent), None))).vendor_task_id
    assert (await rig.run(provider.start(thumbnail(huawei), None))).vendor_task_id

    mismatch = {**huawei, "Vendor": "Tencent", "Definition": 10}
    with pytest.raises(VendorError) as err:
        await rig.run(provider.start(thumbnail(mismatch), None))
    assert err.value.kind is ErrorKind.TERMINAL and "CDN type mismatch" in err.value.message


# An injected failure is answered as each API documents one: HTTP 200 with its code, never an HTTP 500 (vendor-apis.md:
# "HTTP 200 for every business answer"), so the provider reads the vendor's word that nothing was done.
async def call_api(rig: SimRig, api: str) -> object:
    if api == "StartRecord":
        return await rig.current().start(recording(ApiFamily.ZEGO_RECORD, current_request()), "c1")
    if api == "start":
        return await rig.legacy().start(recording(ApiFamily.ZEGO_RECORD_LEGACY, LEGACY_REQUEST), None)
    if api == "MediaThumbnails":
        huawei = {"Vendor": "Huawei", "FileId": "/r/a.mp4", "Interval": 2, "Type": "SampleSnapshot"}
        return await rig.thumbnails().start(thumbnail(huawei), None)
    return await rig.current().room_streams(ROOM)


@pytest.mark.parametrize(
    ("api", "code", "kind"),
    [
        ("StartRecord", "300010000", ErrorKind.RETRYABLE),
        # The v1 start has no idempotency key: only a code (the vendor's word it did nothing) lets it be retried.
        ("start", "300010000", ErrorKind.RETRYABLE),
        ("MediaThumbnails", "1000", ErrorKind.TERMINAL),  # its one documented failure code: "request failed"
        ("DescribeSimpleStreamList", "154", ErrorKind.RETRYABLE),  # "failed to get the list", retry
    ],
)
async def test_injected_errors_are_the_documented_codes(rig: SimRig, api: str, code: str, kind: ErrorKind) -> None:
    rig.sim.faults.set(FaultConfig(error_rate=1.0, apis=[api]))
    with pytest.raises(VendorError) as err:
        await rig.run(call_api(rig, api))
    assert (err.value.kind, err.value.code, err.value.unanswered) == (kind, code, kind is ErrorKind.RETRYABLE)
    entry = [e for e in rig.sim.log.entries() if e.api == api][-1]
    assert (entry.status, entry.fault) == (200, "error") and rig.sim.tasks() == []


async def test_a_throttled_room_listing_slows_its_budget(rig: SimRig) -> None:
    rig.sim.faults.set(FaultConfig(throttle_next=1, apis=["DescribeSimpleStreamList"]))
    with pytest.raises(VendorError) as err:
        await rig.run(rig.current().room_streams(ROOM))
    assert (err.value.kind, err.value.code) == (ErrorKind.THROTTLED, "206")
    assert await rig.run(rig.current().room_streams(ROOM)) == 0


async def test_an_endpoint_answering_404_is_named_by_its_provider_field(rig: SimRig) -> None:
    """A zego Provider has two endpoints: the error says which one to check (walk 43d-1)."""
    legacy = ZegoLegacyRecordProvider(
        rig.config(cloudrecord_api="legacy"),  # still the current API's prefix: /access_token is not there
        budgets=rig.budgets,
        clock=rig.clock,
        http=rig.http,
    )
    with pytest.raises(VendorError) as err:
        await rig.run(legacy.start(recording(ApiFamily.ZEGO_RECORD_LEGACY, LEGACY_REQUEST), None))
    assert "HTTP 404" in str(err.value) and "check cloudrecordEndpoint of provider zego-sim" in str(err.value)
    thumbnails = ZegoThumbnailProvider(
        rig.config(rtc_endpoint="http://sim/zego/nowhere"), budgets=rig.budgets, clock=rig.clock, http=rig.http
    )
    huawei = {"Vendor": "Huawei", "FileId": "/record/a.mp4", "Interval": 2, "Type": "SampleSnapshot"}
    with pytest.raises(VendorError) as err:
        await rig.run(thumbnails.start(thumbnail(huawei), None))
    assert "HTTP 404" in str(err.value) and "check rtcEndpoint of provider zego-sim" in str(err.value)
