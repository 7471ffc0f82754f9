"""Pydantic models of the five document kinds, exactly as spec-format.md writes them.

Models are strict and closed (no coercion, unknown fields refused) and check what one document can check
on its own: types, enumerations, fixed ranges. Anything that depends on another document (which vendor
a job runs on, which storage it writes to) is checked in `checks.py`. Field names are camelCase in YAML
(`alias_generator`), snake_case in Python.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PlainValidator, Tag, WithJsonSchema
from pydantic.alias_generators import to_camel

from reconciler.spec.fields import Bool, CallbackUrl, Duration, Endpoint, Int, Name, SecretRef, Text, Width

__all__ = [
    "API_VERSION",
    "DOCUMENT_MODELS",
    "JOB_MODELS",
    "OUTPUT_OPTIONS",
    "ZEGO_CLOUDRECORD_ENDPOINT",
    "ZEGO_LEGACY_ENDPOINT",
    "Document",
    "JobDocument",
    "ProviderDocument",
    "RecordingJobSpec",
    "RoomSelector",
    "SnapshotJobSpec",
    "StorageConfig",
    "StorageDocument",
    "StreamSelector",
    "ThumbnailJobSpec",
    "VolcengineProvider",
]

VOLC_ENDPOINT: Final = "https://rtc.volcengineapi.com"
VOLC_REGION: Final = "cn-north-1"
ZEGO_RTC_ENDPOINT: Final = "https://rtc-api.zego.im"
ZEGO_CLOUDRECORD_ENDPOINT: Final = "https://cloudrecord-api.zego.im"
ZEGO_LEGACY_ENDPOINT: Final = "https://cloudrecord-sh.zego.im"
API_VERSION: Final = "capctl/v1"


class _Model(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        arbitrary_types_allowed=True,
    )


def _region(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("region must be an integer (volcengine region table) or a string (zego)")
    return value


Region = Annotated[
    int | str,
    PlainValidator(_region),
    WithJsonSchema(
        {
            "type": ["integer", "string"],
            "description": "volcengine: an integer ≥ 0 from its storage region table (default 0); "
            "zego: a region name such as oss-cn-shanghai",
        }
    ),
]
Rate = Annotated[float, Field(gt=0, le=100_000)]
Positive = Annotated[Int, Field(ge=1)]
Color = Annotated[Int, Field(ge=0, le=0xFFFFFFFF)]
RestartPolicyName = Literal["Always", "Never"]
RoomNames = Annotated[list[Text], Field(min_length=1)]


def _one_or_many(value: Any) -> Any:
    """`match: class-*` is short for `match: [class-*]`."""
    return [value] if isinstance(value, str) else value


_PATTERNS_SCHEMA: Final = {
    "anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "string", "minLength": 1}}],
    "description": "glob(s) on the room id: * any text, ? one character, [abc] one of",
}
Patterns = Annotated[list[Text], BeforeValidator(_one_or_many), WithJsonSchema(_PATTERNS_SCHEMA)]


class RoomSelector(_Model):
    """A room selector: every room whose id matches a `match` glob and no `exclude` glob, while it is active."""

    match: Annotated[Patterns, Field(min_length=1)]
    exclude: Patterns = []
    max_rooms: Positive | None = Field(
        None, description="cost cap: at most this many rooms captured at once; beyond it no new room is started"
    )


def _rooms_form(value: Any) -> str | None:
    return "selector" if isinstance(value, dict) else "names" if isinstance(value, list) else None


Rooms = Annotated[
    Annotated[RoomNames, Tag("names")] | Annotated[RoomSelector, Tag("selector")],
    Discriminator(
        _rooms_form,
        custom_error_type="rooms_type",  # `_type`: the message says what was given
        custom_error_message="expected a list of room names or a selector {match: PATTERN}",
    ),
]


class Metadata(_Model):
    name: Name
    labels: dict[str, str] = {}


# --- Provider ---------------------------------------------------------------------------------------


class VolcengineProvider(_Model):
    type: Literal["volcengine"]
    app_id: Text
    access_key: SecretRef
    secret_key: SecretRef
    endpoint: Endpoint = VOLC_ENDPOINT
    region: Text = Field(VOLC_REGION, description="the signing region: part of the request signature's scope")
    business_id: Text | None = Field(
        None, description="sent as BusinessId (start, update, stop); matches [a-zA-Z0-9_@-.]{1,128}"
    )
    callback_secret: SecretRef | None = None
    rate_limits: dict[str, Rate] = {}


class ZegoProvider(_Model):
    type: Literal["zego"]
    app_id: Annotated[Int, Field(ge=1, le=4_294_967_295)]
    server_secret: SecretRef
    rtc_endpoint: Endpoint = ZEGO_RTC_ENDPOINT
    cloudrecord_endpoint: Endpoint | None = None  # default depends on cloudrecordApi
    cloudrecord_api: Literal["current", "legacy"] = "current"
    access_token: SecretRef | None = None
    callback_secret: SecretRef | None = None
    rate_limits: dict[str, Rate] = {}


# --- Storage ----------------------------------------------------------------------------------------

StorageType = Literal[
    "tos", "vod", "veimagex", "s3", "oss", "obs", "cos", "kodo",
    "aliyun-vod", "tencent-vod", "gcs", "eos", "s3-compatible",
]  # fmt: skip


class StorageConfig(_Model):
    """One Storage document's spec. Which fields a type needs is checked per type in `checks.py`."""

    type: StorageType
    bucket: Text | None = None
    region: Region | None = None
    access_key: SecretRef | None = None
    secret_key: SecretRef | None = None
    account_id: Text | None = None
    service_id: Text | None = None
    space: Text | None = None
    storage_class: Literal["standard", "archive", "infrequent"] | None = None
    auto_set_file_extension: Bool | None = None
    endpoint: Endpoint | None = None
    title: Text | None = None  # zego aliyun-vod
    storage_location: Text | None = None  # zego aliyun-vod
    sub_app_id: Annotated[Int, Field(ge=0)] | None = None  # zego tencent-vod


# --- Jobs -------------------------------------------------------------------------------------------


class StreamSelector(_Model):
    user: Text | None = Field(None, description="volcengine UserId; matches [a-zA-Z0-9_@-.]{1,128}")
    type: Literal["camera", "screen"] | None = Field(
        None, description="volcengine StreamType: camera (0, the default) or screen (1)"
    )
    index: Annotated[Int, Field(ge=0)] | None = Field(
        None, description="volcengine StreamList Index (optional); unique within the job's streams"
    )
    stream: Text | None = Field(None, description="zego stream id")


class ImageConfig(_Model):
    format: Literal["jpeg", "png"] = Field("jpeg", description="volcengine ImageConfig.Format: jpeg (0) or png (1)")
    width: Width = Field(0, description="volcengine ImageConfig.Width in pixels; 0 = the stream's own width")
    height: Width = Field(0, description="volcengine ImageConfig.Height in pixels; 0 = the stream's own height")


class SnapshotJobSpec(_Model):
    provider: Name
    rooms: Rooms
    streams: list[StreamSelector] = Field(
        [],
        description="the streams to snapshot; empty = every stream in the room. volcengine: {user, type, index}, "
        "at most 17; zego: {stream}",
    )
    interval: Duration | None = Field(
        None,  # per vendor
        description="seconds between two snapshots: volcengine 1..600 s, default 2s (changed in place); "
        "zego 5..3600 s, default 10s",
    )
    image: ImageConfig = ImageConfig()
    storage: Name
    idle_timeout: Duration | None = Field(
        None,  # per vendor
        description="the vendor stops the task after this long without a stream: volcengine MaxIdleTime "
        "1..86400 s, default 180s; zego max_idle_time 5..4294967295 s (without any stream in the room), default 30s",
    )
    restart_policy: RestartPolicyName = "Always"
    task_id: Text | None = Field(
        None,
        description="volcengine only: the TaskId of the job's tasks, default metadata.name; "
        "matches [a-zA-Z0-9_@-.]{1,128}",
    )


class MixInput(_Model):
    stream_id: Text | None = None
    view_type: Positive | None = None
    top: Width
    left: Width
    bottom: Width
    right: Width
    layer: Int
    fill_mode: Positive | None = None
    background_image: Text | None = None


class MixVideo(_Model):
    width: Annotated[Int, Field(ge=1, le=1920)]
    height: Annotated[Int, Field(ge=1, le=1920)]
    fps: Annotated[Int, Field(ge=5, le=30)]
    bitrate: Positive


class MixAudio(_Model):
    bitrate: Positive | None = None


class MixConfig(_Model):
    mix_mode: Positive | None = None
    mix_input_list: list[MixInput] | None = None
    mix_output_stream_id: Text
    mix_output_video_config: MixVideo
    mix_output_audio_config: MixAudio | None = None
    mix_output_background_color: Color | None = None
    mix_output_background_image: Text | None = None
    mix_max_resolution_stream_id: Text | None = None
    mix_output_watermark_image: Text | None = None
    default_mix_stream_background_image: Text | None = None


class FillFrame(_Model):
    frame_fill_mode: Positive | None = None
    frame_fill_color: Color | None = None


class Whiteboard(_Model):
    horizontal_ratio: Positive
    vertical_ratio: Positive
    width: Positive | None = None
    height: Positive | None = None
    whiteboard_id: Text | None = None
    is_ppt_animation: Bool | None = None
    ppt_animation_fps: Annotated[Int, Field(ge=1, le=30)] | None = None


class RecordOptions(_Model):
    """Seed 003's remaining record_input_params / record_output_params fields, in camelCase."""

    fill_blank: Bool | None = None
    fill_frame: FillFrame | None = None
    record_mute_audio: Annotated[Int, Field(ge=1, le=2)] | None = None
    record_mute_audio_split_threshold: Int | None = None
    has_whiteboard: Bool | None = None
    whiteboard: list[Whiteboard] | None = None
    output_file_rule: Positive | None = None  # record_output_params
    callback_url: CallbackUrl | None = None  # record_output_params


OUTPUT_OPTIONS: Final = frozenset({"output_file_rule", "callback_url"})


class RecordingJobSpec(_Model):
    provider: Name
    rooms: Rooms
    mode: Literal["single", "mixed"] = "single"
    media: Literal["audio", "video", "audio-video", "separate"] = "audio-video"
    streams: list[StreamSelector] = []
    format: Literal["mp4", "flv", "hls", "mp3"] = "mp4"
    output_folder: Text | None = None
    storage: Name
    idle_timeout: Duration = Field(
        30,
        description="ZEGO max_idle_time: the recording stops after this long without any stream in the room; "
        "5..4294967295 s",
    )
    max_duration: Duration = Field(
        86400, description="ZEGO max_record_time: 300..86400 s; at the limit capctl starts the next recording"
    )
    mix: MixConfig | None = None
    options: RecordOptions = RecordOptions()
    restart_policy: RestartPolicyName = "Always"


class ThumbnailFile(_Model):
    cdn: Literal["tencent", "huawei"]
    file_id: Text
    interval: Duration | None = Field(None, description="huawei only, required there: seconds between thumbnails, ≥ 1s")
    definition: Annotated[Int, Field(ge=0)] | None = None  # tencent only, required there
    offsets: Annotated[list[Duration], Field(min_length=1)] | None = Field(
        None, description="times into the file to take thumbnails at (SnapshotByTimeOffset); without, SampleSnapshot"
    )


class ThumbnailJobSpec(_Model):
    provider: Name
    files: Annotated[list[ThumbnailFile], Field(min_length=1)]


# --- Documents --------------------------------------------------------------------------------------


class _Document(_Model):
    api_version: Literal["capctl/v1"]
    metadata: Metadata


class ProviderDocument(_Document):
    kind: Literal["Provider"]
    spec: Annotated[VolcengineProvider | ZegoProvider, Field(discriminator="type")]


class StorageDocument(_Document):
    kind: Literal["Storage"]
    spec: StorageConfig


class SnapshotJobDocument(_Document):
    kind: Literal["SnapshotJob"]
    spec: SnapshotJobSpec


class RecordingJobDocument(_Document):
    kind: Literal["RecordingJob"]
    spec: RecordingJobSpec


class ThumbnailJobDocument(_Document):
    kind: Literal["ThumbnailJob"]
    spec: ThumbnailJobSpec


JobDocument = SnapshotJobDocument | RecordingJobDocument | ThumbnailJobDocument
JOB_MODELS: Final = (SnapshotJobDocument, RecordingJobDocument, ThumbnailJobDocument)
Document = ProviderDocument | StorageDocument | JobDocument
DOCUMENT_MODELS: Final[dict[str, type[Document]]] = {
    "Provider": ProviderDocument,
    "Storage": StorageDocument,
    "SnapshotJob": SnapshotJobDocument,
    "RecordingJob": RecordingJobDocument,
    "ThumbnailJob": ThumbnailJobDocument,
}
