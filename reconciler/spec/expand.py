"""Expansion: checked jobs → `DesiredTask`s carrying the exact vendor request each task implies.

One task per room (per file for thumbnails). Requests are built once per job and specialised per room,
so a large spec set expands in one cheap pass. Secret leaves stay `Secret` objects; hashes see them only
through their digest. Requests are shared between tasks of a job where they do not differ: treat them as
read-only.

A task's `spec_hash` and `fixed_hash` are `hmac:` + HMAC-SHA256, under the state's fingerprint key, of its
content hash (`sha256:` + SHA-256 of the canonical request, secrets by their SHA-256). Keyed, because the
hashes are in plans and in the state and the rest of the request is not secret: with a plain hash anyone
could confirm a guessed secret. Keyed over the content hash (not over the request), because a record or a
saved plan made before the state had a key holds that content hash: `secrets.upgrade_hash` turns it into
what this version computes, so an upgrade does not make every task look changed. Without a key (a state
that has none yet) the hashes are the bare content hashes, as such records hold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from reconciler.model import ApiFamily, DesiredTask, JobKind, ProviderConfig, RestartPolicy, task_key
from reconciler.secrets import Secret, keyed_hash
from reconciler.spec.checks import CheckedJob
from reconciler.spec.documents import Loaded
from reconciler.spec.fields import volc_task_id
from reconciler.spec.models import (
    OUTPUT_OPTIONS,
    ZEGO_CLOUDRECORD_ENDPOINT,
    ZEGO_LEGACY_ENDPOINT,
    ProviderDocument,
    RecordingJobSpec,
    RoomSelector,
    SnapshotJobSpec,
    StorageConfig,
    StorageDocument,
    StreamSelector,
    ThumbnailJobSpec,
    VolcengineProvider,
)
from reconciler.spec.selectors import describe

__all__ = [
    "VOLC_CUSTOM_VENDOR",
    "ZEGO_STREAM_TYPE",
    "ZEGO_VENDOR",
    "content_hash",
    "expand",
    "hashes_under",
    "provider_config",
]

# Spec names → vendor codes in requests (public: the plan view, render.py, maps the codes back).
VOLC_CUSTOM_VENDOR: Final = {"s3": 0, "oss": 1, "obs": 2, "cos": 3, "kodo": 4}
_VOLC_STORAGE_CLASS: Final = {"standard": 1, "archive": 2, "infrequent": 3}
ZEGO_VENDOR: Final = {
    "s3": 1,
    "oss": 2,
    "cos": 3,
    "kodo": 4,
    "aliyun-vod": 5,
    "tencent-vod": 6,
    "obs": 7,
    "gcs": 8,
    "eos": 9,
    "s3-compatible": 10,
}
ZEGO_STREAM_TYPE: Final = {"audio": 1, "video": 2, "audio-video": 3, "separate": 4}
# The current API's names where they are not seed 003's in PascalCase (`end_point` → `EndPoint`): vendor-apis.md
# names Vendor and Bucket; ZEGO's StartRecord page and StorageParams FAQ (docs/providers-zego.md) the VOD objects,
# whose keys are named per object (tencentyun_vod_params' access_key_id is SecretId, StorageParams' AccessKeyId).
_PASCAL_SPECIAL: Final = {
    "storage_provider": "Vendor",
    "bucket_name": "Bucket",
    "aliyun_vod_params": "AlibabaCloudVodParams",
    "tencentyun_vod_params": "TencentCloudVodParams",
}
_PASCAL_MEMBERS: Final = {
    "aliyun_vod_params": {"access_key": "AccessKeyId", "secret_key": "AccessKeySecret"},
    "tencentyun_vod_params": {"access_key_id": "SecretId", "access_key_secret": "SecretKey"},
}
ZEGO_SNAPSHOT_MAX_RECORD_TIME: Final = 86400
_PLACEHOLDER: Final = "\x00capctl-target\x00"


def provider_config(doc: Loaded) -> ProviderConfig:
    """The resolved `ProviderConfig` of a Provider document (defaults applied, secrets as `Secret`)."""
    assert isinstance(doc.model, ProviderDocument)
    spec = doc.model.spec
    common: dict[str, Any] = {
        "name": doc.name,
        "type": spec.type,
        "source": doc.raw.source,
        "callback_secret": spec.callback_secret,
        "rate_limits": dict(spec.rate_limits),
    }
    if isinstance(spec, VolcengineProvider):
        return ProviderConfig(
            app_id=spec.app_id,
            endpoint=spec.endpoint,
            region=spec.region,
            business_id=spec.business_id,
            access_key=spec.access_key,
            secret_key=spec.secret_key,
            **common,
        )
    default_endpoint = ZEGO_LEGACY_ENDPOINT if spec.cloudrecord_api == "legacy" else ZEGO_CLOUDRECORD_ENDPOINT
    return ProviderConfig(
        app_id=str(spec.app_id),
        server_secret=spec.server_secret,
        rtc_endpoint=spec.rtc_endpoint,
        cloudrecord_endpoint=spec.cloudrecord_endpoint or default_endpoint,
        cloudrecord_api=spec.cloudrecord_api,
        access_token=spec.access_token,
        **common,
    )


def _secret_json(value: Any) -> str:
    if isinstance(value, Secret):
        return "secret:" + value.digest
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_encode_string: Final = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) does to a str


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_secret_json)


def content_hash(provider: str, family: ApiFamily, request: object) -> str:
    """`sha256:` + hex sha256 of the canonical JSON of provider, family and request (secrets by digest)."""
    text = _canonical({"provider": provider, "family": family.value, "request": request})
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _keyed(key: bytes | None, content: str) -> str:
    return content if key is None else keyed_hash(key, content)


def hashes_under(task: DesiredTask, provider: str, key: bytes | None) -> tuple[str, str]:
    """`task`'s (spec_hash, fixed_hash) had its job named Provider `provider`: equal to a record's, the record
    holds this very task under another Provider document (`reconciler/moves.py`). As `_volc_tasks` builds
    them: a Volcengine task's fixed hash leaves out the interval, the only field updated in place."""
    spec_hash = _keyed(key, content_hash(provider, task.family, task.request))
    if task.family is not ApiFamily.VOLC_SNAPSHOT:
        return spec_hash, spec_hash
    image = {name: value for name, value in task.request["ImageConfig"].items() if name != "Interval"}
    return spec_hash, _keyed(key, content_hash(provider, task.family, {**task.request, "ImageConfig": image}))


class _TargetHasher:
    """`content_hash` for requests that differ only in their room: the JSON is encoded once per job with
    a placeholder and the room spliced in, which gives the same text as encoding each request."""

    _MARK: Final = _canonical(_PLACEHOLDER)

    def __init__(self, provider: str, family: ApiFamily, template: Any) -> None:
        self._provider, self._family = provider, family
        self._text = _canonical({"provider": provider, "family": family.value, "request": template})
        self._spliceable = self._text.count(self._MARK) == 1

    def __call__(self, target: str, request: Any) -> str:
        if not self._spliceable:  # the placeholder text occurs in user data: encode in full
            return content_hash(self._provider, self._family, request)
        text = self._text.replace(self._MARK, _encode_string(target))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _pascal(value: Any, members: Mapping[str, str] | None = None) -> Any:
    """The seed's snake_case body in the current Action API's PascalCase (keys only); `members`: the current
    names of the keys of the object being converted, where they are its own."""
    if isinstance(value, dict):
        return {
            (members or {}).get(k) or _PASCAL_SPECIAL.get(k) or "".join(p.capitalize() for p in k.split("_")): _pascal(
                v, _PASCAL_MEMBERS.get(k)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_pascal(v) for v in value]
    return value


# --- volcengine -------------------------------------------------------------------------------------


def _volc_storage(spec: StorageConfig, region: int) -> dict[str, Any]:
    if spec.type == "tos":
        return {"Type": 0, "TosConfig": {"AccountId": spec.account_id, "Region": region, "Bucket": spec.bucket}}
    if spec.type == "vod":
        return {
            "Type": 1,
            "VodConfig": {
                "AccountId": spec.account_id,
                "Region": region,
                "Space": spec.space,
                "StorageClass": _VOLC_STORAGE_CLASS[spec.storage_class or "standard"],
                "AutoSetFileExtension": bool(spec.auto_set_file_extension),
            },
        }
    if spec.type == "veimagex":
        return {
            "Type": 3,
            "VeImageXConfig": {"AccountId": spec.account_id, "Region": region, "ServiceId": spec.service_id},
        }
    return {
        "Type": 2,
        "CustomConfig": {
            "Vendor": VOLC_CUSTOM_VENDOR[spec.type],
            "Region": region,
            "Bucket": spec.bucket,
            "AccessKey": spec.access_key,
            "SecretKey": spec.secret_key,
        },
    }


def _volc_streams(streams: list[StreamSelector]) -> dict[str, Any]:
    items = []
    for s in streams:
        item: dict[str, Any] = {"UserId": s.user, "StreamType": 1 if s.type == "screen" else 0}
        if s.index is not None:
            item["Index"] = s.index
        items.append(item)
    return {"StreamList": items}


def _volc_tasks(
    c: CheckedJob,
    spec: SnapshotJobSpec,
    provider: VolcengineProvider,
    key: bytes | None,
    rooms: Sequence[str],
    config: ProviderConfig,
) -> list[DesiredTask]:
    assert c.storage is not None and isinstance(c.storage.model, StorageDocument)
    assert c.interval is not None
    task_id = volc_task_id(c.job.name, spec.task_id)
    head: dict[str, Any] = {"AppId": provider.app_id}
    if provider.business_id is not None:
        head["BusinessId"] = provider.business_id
    tail: dict[str, Any] = {}
    if spec.streams:
        tail["TargetStreams"] = _volc_streams(spec.streams)
    tail["MaxIdleTime"] = c.idle_timeout
    image = {"Format": 1 if spec.image.format == "png" else 0, "Width": spec.image.width, "Height": spec.image.height}
    tail["StorageConfig"] = _volc_storage(c.storage.model.spec, c.volc_region)
    full_image = {**image, "Interval": c.interval}
    family, name = ApiFamily.VOLC_SNAPSHOT, c.provider.name
    ids = {"RoomId": _PLACEHOLDER, "TaskId": task_id}
    spec_hash = _TargetHasher(name, family, {**head, **ids, **tail, "ImageConfig": full_image})
    fixed_hash = _TargetHasher(name, family, {**head, **ids, **tail, "ImageConfig": image})
    home = config.home(family)
    tasks = []
    for room in rooms:
        fixed = {**head, "RoomId": room, "TaskId": task_id, **tail, "ImageConfig": image}
        request = {**fixed, "ImageConfig": full_image}
        tasks.append(
            _task(
                c,
                room,
                family,
                request,
                _keyed(key, spec_hash(room, request)),
                _keyed(key, fixed_hash(room, fixed)),
                updatable={"interval": c.interval},
                home=home,
            )
        )
    return tasks


# --- zego cloud recording ---------------------------------------------------------------------------


def _zego_storage(spec: StorageConfig) -> dict[str, Any]:
    params: dict[str, Any] = {"storage_provider": ZEGO_VENDOR[spec.type]}
    if spec.type == "aliyun-vod":
        params["aliyun_vod_params"] = {
            "region": spec.region,
            "access_key": spec.access_key,
            "secret_key": spec.secret_key,
            "title": spec.title,
            "storage_location": spec.storage_location,
        }
        return params
    if spec.type == "tencent-vod":
        vod = {"access_key_id": spec.access_key, "access_key_secret": spec.secret_key, "region": spec.region}
        if spec.sub_app_id is not None:
            vod["sub_app_id"] = spec.sub_app_id
        params["tencentyun_vod_params"] = vod
        return params
    if spec.region is not None:
        params["region"] = spec.region
    params.update(bucket_name=spec.bucket, access_key_id=spec.access_key, access_key_secret=spec.secret_key)
    if spec.endpoint is not None:
        params["end_point"] = spec.endpoint
    return params


def _zego_tasks(
    c: CheckedJob,
    spec: SnapshotJobSpec | RecordingJobSpec,
    key: bytes | None,
    rooms: Sequence[str],
    config: ProviderConfig,
) -> list[DesiredTask]:
    legacy = config.cloudrecord_api == "legacy"
    assert c.storage is not None and isinstance(c.storage.model, StorageDocument)
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    if isinstance(spec, SnapshotJobSpec):
        max_duration = ZEGO_SNAPSHOT_MAX_RECORD_TIME
        inputs = {"record_mode": 1, "stream_type": 2}
        outputs = {"output_file_format": "jpg", "snapshot_interval": c.interval}
    else:
        max_duration = spec.max_duration
        inputs = {"record_mode": 2 if spec.mode == "mixed" else 1, "stream_type": ZEGO_STREAM_TYPE[spec.media]}
        outputs = {"output_file_format": spec.format}
    if spec.output_folder is not None:
        outputs["output_folder"] = spec.output_folder
    if spec.streams:
        inputs["record_stream_list"] = [{"stream_id": s.stream} for s in spec.streams]
    inputs.update(max_idle_time=c.idle_timeout, max_record_time=max_duration)
    if isinstance(spec, RecordingJobSpec):
        for name, value in spec.options.model_dump(exclude_none=True).items():
            (outputs if name in OUTPUT_OPTIONS else inputs)[name] = value
        if spec.mix is not None:
            inputs["mix_config"] = spec.mix.model_dump(exclude_none=True)
    body = {
        "record_input_params": inputs,
        "record_output_params": outputs,
        "storage_params": _zego_storage(c.storage.model.spec),
    }
    family = ApiFamily.ZEGO_RECORD_LEGACY if legacy else ApiFamily.ZEGO_RECORD
    if legacy:
        rest, room_key = body, "room_id"
    else:
        rest, room_key = _pascal(body), "RoomId"
    hasher = _TargetHasher(c.provider.name, family, {room_key: _PLACEHOLDER, **rest})
    home = config.home(family)
    tasks = []
    for room in rooms:
        request = {room_key: room, **rest}
        digest = _keyed(key, hasher(room, request))
        tasks.append(_task(c, room, family, request, digest, digest, max_duration=max_duration, home=home))
    return tasks


# --- zego thumbnails --------------------------------------------------------------------------------


def _thumbnail_tasks(
    c: CheckedJob, spec: ThumbnailJobSpec, key: bytes | None, config: ProviderConfig
) -> list[DesiredTask]:
    home = config.home(ApiFamily.ZEGO_THUMBNAIL)
    tasks = []
    for item in spec.files:
        request: dict[str, Any] = {
            "Vendor": "Tencent" if item.cdn == "tencent" else "Huawei",
            "FileId": item.file_id,
            "Type": "SnapshotByTimeOffset" if item.offsets else "SampleSnapshot",
        }
        if item.definition is not None:
            request["Definition"] = item.definition
        if item.offsets:
            request["ExtTimeOffsetSet"] = list(item.offsets)
        if item.interval is not None:
            request["Interval"] = item.interval
        digest = _keyed(key, content_hash(c.provider.name, ApiFamily.ZEGO_THUMBNAIL, request))
        tasks.append(_task(c, item.file_id, ApiFamily.ZEGO_THUMBNAIL, request, digest, digest, home=home))
    return tasks


def _task(
    c: CheckedJob,
    target: str,
    family: ApiFamily,
    request: dict[str, Any],
    spec_hash: str,
    fixed_hash: str,
    *,
    updatable: dict[str, int] | None = None,
    max_duration: int | None = None,
    home: str,
) -> DesiredTask:
    kind = JobKind(c.job.kind)
    policy = getattr(c.job.model.spec, "restart_policy", "Always")
    rooms = getattr(c.job.model.spec, "rooms", None)
    return DesiredTask(
        key=task_key(kind.value, c.job.name, target),
        kind=kind,
        job=c.job.name,
        target=target,
        provider=c.provider.name,
        family=family,
        request=request,
        spec_hash=spec_hash,
        fixed_hash=fixed_hash,
        updatable=updatable or {},
        idle_timeout=c.idle_timeout,
        max_duration=max_duration,
        restart_policy=RestartPolicy(policy),
        source=c.job.raw.source,
        labels=dict(c.job.model.metadata.labels),
        selector=describe(rooms) if isinstance(rooms, RoomSelector) else None,
        home=home,
    )


def expand(c: CheckedJob, key: bytes | None = None, rooms: Sequence[str] | None = None) -> list[DesiredTask]:
    """The tasks one checked job implies, in room (or file) order; hashes keyed with `key` (the state's).

    `rooms`: the rooms to expand a room job for (a selector job's chosen active rooms, `reconciler/rooms.py`);
    by default its named rooms, none for a selector job (which rooms it covers is known only at run time)."""
    spec = c.job.model.spec
    assert isinstance(c.provider.model, ProviderDocument)
    provider = c.provider.model.spec
    config = provider_config(c.provider)
    if isinstance(spec, ThumbnailJobSpec):
        return _thumbnail_tasks(c, spec, key, config)
    assert isinstance(spec, SnapshotJobSpec | RecordingJobSpec)
    if rooms is None:
        rooms = spec.rooms if isinstance(spec.rooms, list) else ()
    if isinstance(provider, VolcengineProvider):
        assert isinstance(spec, SnapshotJobSpec)
        return _volc_tasks(c, spec, provider, key, rooms, config)
    return _zego_tasks(c, spec, key, rooms, config)
