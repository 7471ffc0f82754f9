"""Pydantic models of the five document kinds, exactly as spec-format.md writes them.

Models are strict and closed (no coercion, unknown fields refused) and check what one document can check
on its own: types, enumerations, fixed ranges. Anything that depends on another document (which vendor
a job runs on, which storage it writes to) is checked in `checks.py`. Field names are camelCase in YAML
(`alias_generator`), snake_case in Python.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from reconciler.spec.fields import (
    LITERAL_ONLY,
    VOLC_ID_PATTERN,
    Bool,
    CallbackUrl,
    ColourInt,
    Duration,
    Endpoint,
    Int,
    Name,
    Number,
    Printable,
    SecretRef,
    Text,
    Width,
    printable,
)

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
    "ThumbnailFile",
    "ThumbnailJobSpec",
    "VolcengineProvider",
    "ZegoProvider",
    "field_types",
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

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        """An optional field given as null (`streams:` with every entry commented out) is not set: it takes
        its default, as kubectl and Terraform read a null. A required field's null is still refused."""
        if not isinstance(data, dict):
            return data
        optional = {field.alias or name for name, field in cls.model_fields.items() if not field.is_required()}
        return {key: value for key, value in data.items() if value is not None or key not in optional}


def _region(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("region must be an integer (volcengine region table) or a string (zego)")
    return value


Region = Annotated[
    int | str,
    PlainValidator(_region),
    BeforeValidator(printable),  # a region name is shown in plans as any text
    WithJsonSchema(
        {
            "type": ["integer", "string"],
            "description": "volcengine: an integer ≥ 0 from its storage region table (default 0); "
            "zego: a region name such as oss-cn-shanghai",
        }
    ),
]
# At least one call every 100 s: a rate near 0 (1e-300 passed "> 0") made every call after the first wait
# forever, a plan or apply that hangs (walk 30E-9); NaN and inf are refused by the same bounds.
MIN_RATE: Final = 0.01
Rate = Annotated[Number, Field(ge=MIN_RATE, le=100_000)]
Positive = Annotated[Int, Field(ge=1)]


def _rrggbb00(value: int) -> int:
    # Seed 003 (mix_output_background_color, frame_fill_color): "第四个字节固定为 0,即 0xRRGGBB00".
    if value & 0xFF:
        raise ValueError(f"0x{value:08X} is not a colour: write 0xRRGGBB00 (red, green, blue, then a last byte 00)")
    return value


# multipleOf 256: the last byte 00, as `_rrggbb00` checks, for an editor too (walk 47d)
Color = Annotated[
    ColourInt, Field(ge=0, le=0xFFFFFFFF, json_schema_extra={"multipleOf": 256}), AfterValidator(_rrggbb00)
]
RestartPolicyName = Literal["Always", "Never"]
# uniqueItems: a room listed twice is an error (checks.py), which an editor can flag too (walk 47d)
RoomNames = Annotated[list[Text], Field(min_length=1, json_schema_extra={"uniqueItems": True})]


def _one_or_many(value: Any) -> Any:
    """`match: class-*` is short for `match: [class-*]`."""
    return [value] if isinstance(value, str) else value


def _patterns_schema(min_items: int) -> dict[str, Any]:
    """One glob or a list of them. The schema replaces the model's, so it states the list's rules itself: a
    glob listed twice is an error (checks.py), and `match: []` is (walk 47d: an editor took both)."""
    globs = {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True}
    return {
        **LITERAL_ONLY,
        "anyOf": [{"type": "string", "minLength": 1}, {**globs, **({"minItems": min_items} if min_items else {})}],
        "description": "glob(s) on the room id: * any text, ? one character, [abc] one of",
    }


Patterns = Annotated[list[Text], BeforeValidator(_one_or_many), WithJsonSchema(_patterns_schema(0))]


class RoomSelector(_Model):
    """A room selector: every room whose id matches a `match` glob and no `exclude` glob, while it is active."""

    match: Annotated[
        list[Text], BeforeValidator(_one_or_many), WithJsonSchema(_patterns_schema(1)), Field(min_length=1)
    ]
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
    """The document's name and labels."""

    name: Name = Field(
        description=(
            "the document's name, unique per kind: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters; jobs"
            " name their Provider and Storage by it, and it is part of every task key"
        ),
        json_schema_extra=LITERAL_ONLY,
    )
    labels: dict[Printable, Printable] = Field(
        {}, description="string → string, for label selectors (plan, apply, state list -l team=safety)"
    )


# --- Provider ---------------------------------------------------------------------------------------


# Said alike in both kinds of Provider: `capctl explain Provider.spec.X` shows the first alternative's.
_PROVIDER_TYPE: Final = "the vendor of this account: volcengine or zego; it decides which other fields apply"
_APP_ID: Final = (
    "volcengine: the AppId, a string matching [a-zA-Z0-9_@-.]{1,128}; zego: the AppID, an integer 1..4294967295 "
    "(a reference's digits are converted)"
)
_CALLBACK_SECRET: Final = (
    "verifies the signature of this app's callbacks to the daemon (POST /callbacks/volcengine or /callbacks/zego); "
    "without it they are refused, so the daemon hears of no room activity (a room-selector job starts nothing)"
)
_RATE_LIMITS: Final = (
    "requests per second per API, overriding the documented limits (values 0.01 to 100000); keys: volcengine "
    "StartSnapshot, UpdateSnapshot, StopSnapshot, GetSnapshotTask, GetRoomOnlineUsers; zego StartRecord, StopRecord, "
    "DescribeRecordStatus, MediaThumbnails, DescribeSimpleStreamList, and with cloudrecordApi legacy start, stop, "
    "query, access_token (instead of the first three)"
)


# Volcengine's Id rule, which validate checks in one document: for an editor too (walk 47d). On a field that may
# be unset or a reference, `pattern` binds its text only.
_VOLC_ID: Final[dict[str, Any]] = {"pattern": VOLC_ID_PATTERN}


class VolcengineProvider(_Model):
    """A Volcengine account."""

    type: Literal["volcengine"] = Field(description=_PROVIDER_TYPE)
    app_id: Text = Field(description=_APP_ID, json_schema_extra=_VOLC_ID)
    access_key: SecretRef = Field(description="the OpenAPI access key id (AccessKeyId) that signs every call")
    secret_key: SecretRef = Field(description="the OpenAPI secret access key that signs every call")
    endpoint: Endpoint = Field(VOLC_ENDPOINT, description="URL of the OpenAPI, default https://rtc.volcengineapi.com")
    region: Text = Field(VOLC_REGION, description="the signing region: part of the request signature's scope")
    business_id: Text | None = Field(
        None,
        description="sent as BusinessId (start, update, stop); matches [a-zA-Z0-9_@-.]{1,128}",
        json_schema_extra=_VOLC_ID,
    )
    callback_secret: SecretRef | None = Field(None, description=_CALLBACK_SECRET)
    rate_limits: dict[str, Rate] = Field(
        {},
        description=_RATE_LIMITS,
    )


class ZegoProvider(_Model):
    """A ZEGO account."""

    type: Literal["zego"] = Field(description=_PROVIDER_TYPE)
    app_id: Annotated[Int, Field(ge=1, le=4_294_967_295)] = Field(description=_APP_ID)
    server_secret: SecretRef = Field(
        description="the app's ServerSecret: signs every call (MediaThumbnails, the current API) and obtains the "
        "legacy API's access tokens"
    )
    rtc_endpoint: Endpoint = Field(
        ZEGO_RTC_ENDPOINT, description="URL of the RTC API (MediaThumbnails), default https://rtc-api.zego.im"
    )
    cloudrecord_endpoint: Endpoint | None = Field(
        None,
        description=(
            "URL of the cloud recording API; default https://cloudrecord-api.zego.im, with cloudrecordApi "
            "legacy https://cloudrecord-sh.zego.im"
        ),
    )
    cloudrecord_api: Literal["current", "legacy"] = Field(
        "current", description="current (the signed PascalCase API) or legacy (seed 003's /start with an access token)"
    )
    access_token: SecretRef | None = Field(
        None,
        description="cloudrecordApi legacy only: an access token you manage, used as is and never refreshed; "
        "without it capctl obtains one with serverSecret (POST /access_token) and keeps it in memory only",
    )
    callback_secret: SecretRef | None = Field(None, description=_CALLBACK_SECRET)
    rate_limits: dict[str, Rate] = Field(
        {},
        description=_RATE_LIMITS,
    )


# --- Storage ----------------------------------------------------------------------------------------

StorageType = Literal[
    "tos", "vod", "veimagex", "s3", "oss", "obs", "cos", "kodo",
    "aliyun-vod", "tencent-vod", "gcs", "eos", "s3-compatible",
]  # fmt: skip


class StorageConfig(_Model):
    """Where captures are written; which fields a type takes: docs/spec-language.md, Storage."""

    type: StorageType = Field(
        description=(
            "where captures go; volcengine: tos, vod, veimagex, s3, oss, obs, cos, kodo; zego: s3, oss, obs, "
            "cos, kodo, gcs, eos, s3-compatible, aliyun-vod, tencent-vod. Which other fields a type takes: "
            "docs/spec-language.md, Storage"
        )
    )
    bucket: Text | None = Field(None, description="the bucket name (tos and the object stores)")
    region: Region | None = None
    access_key: SecretRef | None = Field(
        None, description="the object store's or VOD's access key id (not volcengine tos, vod, veimagex)"
    )
    secret_key: SecretRef | None = Field(None, description="the secret of accessKey")
    account_id: Text | None = Field(
        None, description="volcengine tos, vod and veimagex: the account id (quote it: text, not a number)"
    )
    service_id: Text | None = Field(None, description="volcengine veimagex: the ImageX service id")
    space: Text | None = Field(None, description="volcengine vod: the VOD space name")
    storage_class: Literal["standard", "archive", "infrequent"] | None = Field(
        None, description="volcengine vod: standard, archive or infrequent (StorageClass 1/2/3), default standard"
    )
    auto_set_file_extension: Bool | None = Field(
        None, description="volcengine vod: add the file extension to the name, default false"
    )
    endpoint: Endpoint | None = Field(
        None, description="zego s3-compatible only, required there: the object store's URL"
    )
    title: Text | None = Field(None, description="zego aliyun-vod, required there: the video title (aliyun_vod_params)")
    storage_location: Text | None = Field(
        None, description="zego aliyun-vod, required there: the storage address (aliyun_vod_params)"
    )
    sub_app_id: Annotated[Int, Field(ge=0)] | None = Field(
        None, description="zego tencent-vod: the VOD sub-application id (tencentyun_vod_params.sub_app_id)"
    )


# --- Jobs -------------------------------------------------------------------------------------------


class StreamSelector(_Model):
    """One stream: volcengine {user, type, index}; zego {stream}."""

    user: Text | None = Field(
        None, description="volcengine UserId; matches [a-zA-Z0-9_@-.]{1,128}", json_schema_extra=_VOLC_ID
    )
    type: Literal["camera", "screen"] | None = Field(
        None, description="volcengine StreamType: camera (0, the default) or screen (1)"
    )
    index: Annotated[Int, Field(ge=0)] | None = Field(
        None, description="volcengine StreamList Index (optional); unique within the job's streams"
    )
    stream: Text | None = Field(None, description="zego stream id")


class ImageConfig(_Model):
    """Volcengine ImageConfig: the snapshots' format and size (png and sizes are Volcengine only)."""

    format: Literal["jpeg", "png"] = Field("jpeg", description="volcengine ImageConfig.Format: jpeg (0) or png (1)")
    width: Width = Field(0, description="volcengine ImageConfig.Width in pixels; 0 = the stream's own width")
    height: Width = Field(0, description="volcengine ImageConfig.Height in pixels; 0 = the stream's own height")


class SnapshotJobSpec(_Model):
    """A SnapshotJob's settings."""

    provider: Name = Field(description="the name of the Provider the tasks run on")
    rooms: Rooms = Field(
        description="the rooms: a list of room ids (one task each), or a selector {match, exclude, maxRooms}: every "
        "room whose id matches a match glob and no exclude glob, while it is active"
    )
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
    image: ImageConfig = ImageConfig()  # described by its model
    storage: Name = Field(description="the name of the Storage the snapshots are written to")
    output_folder: Text | None = Field(
        None, description="zego only: the folder in the storage the jpg files go to (output_folder), default its root"
    )
    idle_timeout: Duration | None = Field(
        None,  # per vendor
        description="the vendor stops the task after this long without a stream: volcengine MaxIdleTime "
        "1..86400 s, default 180s; zego 5..86400 s (legacy API: up to 4294967295 s; without any stream in the room), "
        "default 30s",
    )
    restart_policy: RestartPolicyName = Field(
        "Always", description="Always: a task the vendor stops is re-issued; Never: started once, never re-issued"
    )
    task_id: Text | None = Field(
        None,
        description="volcengine only: the TaskId of the job's tasks, default metadata.name; "
        "matches [a-zA-Z0-9_@-.]{1,128}",
        json_schema_extra={**LITERAL_ONLY, **_VOLC_ID},
    )


_ON_CANVAS: Final = " of the region on the canvas, 0..1920; top ≤ bottom ≤ canvas height, left ≤ right ≤ canvas width"


class MixInput(_Model):
    """One region of a custom layout."""

    stream_id: Text | None = Field(
        None, description="the stream shown in this region; without, streams fill regions in the order they joined"
    )
    view_type: Annotated[Int, Field(ge=1, le=2)] | None = Field(
        None, description="what the region shows: 1 the stream (vendor default), 2 the whiteboard"
    )
    top: Width = Field(description="y of the top-left corner" + _ON_CANVAS)
    left: Width = Field(description="x of the top-left corner" + _ON_CANVAS)
    bottom: Width = Field(description="y of the bottom-right corner" + _ON_CANVAS)
    right: Width = Field(description="x of the bottom-right corner" + _ON_CANVAS)
    layer: Int = Field(description="stacking order: where two regions overlap, the larger layer is shown on top")
    fill_mode: Annotated[Int, Field(ge=1, le=2)] | None = Field(
        None,
        description=(
            "when the stream's aspect ratio differs from the region's: 1 crop to fill (vendor default), 2 fit"
        ),
    )
    background_image: Text | None = Field(
        None, description="URL of an image shown when the region's stream is missing or interrupted; only with streamId"
    )


class MixVideo(_Model):
    """The mixed output's video."""

    width: Annotated[Int, Field(ge=1, le=1920)] = Field(
        description="output width in pixels, 1..1920; width × height ≤ 1920 × 1080"
    )
    height: Annotated[Int, Field(ge=1, le=1920)] = Field(
        description="output height in pixels, 1..1920; width × height ≤ 1920 × 1080"
    )
    fps: Annotated[Int, Field(ge=5, le=30)] = Field(description="output frame rate, 5..30")
    bitrate: Positive = Field(description="output video bitrate in bps (1.5 Mbps = 1500000)")


class MixAudio(_Model):
    """The mixed output's audio."""

    bitrate: Positive | None = Field(None, description="output audio bitrate in bps, vendor default 48000")


class MixConfig(_Model):
    """Mixed mode: seed 003's mix_config in camelCase."""

    mix_mode: Annotated[Int, Field(ge=1, le=5)] | None = Field(
        None,
        description=(
            "the layout: 1 custom (mixInputList), 2 grid (vendor default), 3 horizontal, 4 vertical, 5 floating; "
            "3, 4 and 5 show one stream large (mixMaxResolutionStreamId)"
        ),
    )
    mix_input_list: list[MixInput] | None = Field(
        None,
        description=(
            "a custom layout: one region per entry {streamId, viewType, top, left, bottom, right, layer, "
            "fillMode, backgroundImage}"
        ),
    )
    mix_output_stream_id: Text = Field(description="the id of the mixed output stream, part of the recorded file names")
    mix_output_video_config: MixVideo = Field(description="the output video: {width, height, fps, bitrate}")
    mix_output_audio_config: MixAudio | None = Field(None, description="the output audio: {bitrate}")
    mix_output_background_color: Color | None = Field(
        None, description="canvas background colour as 0xRRGGBB00, vendor default black"
    )
    mix_output_background_image: Text | None = Field(None, description="URL of the canvas background image")
    mix_max_resolution_stream_id: Text | None = Field(
        None, description="the stream shown large; only with mixMode 3, 4 or 5"
    )
    mix_output_watermark_image: Text | None = Field(None, description="URL of a watermark image")
    default_mix_stream_background_image: Text | None = Field(
        None,
        description="URL of an image shown where a stream is missing or interrupted; only with options.fillBlank: true",
    )


class FillFrame(_Model):
    """How the picture is filled while a camera is off (mixed mode)."""

    frame_fill_mode: Annotated[Int, Field(ge=1, le=3)] | None = Field(
        None,
        description=(
            "how the picture is filled while a camera is off and audio goes on: 1 the last frame (vendor "
            "default), 2 a colour (frameFillColor), 3 nothing"
        ),
    )
    frame_fill_color: Color | None = Field(
        None, description="the fill colour as 0xRRGGBB00, vendor default black; only with frameFillMode: 2"
    )


class Whiteboard(_Model):
    """One whiteboard to record."""

    horizontal_ratio: Positive = Field(description="the original whiteboard's aspect ratio: its width part, ≥ 1")
    vertical_ratio: Positive = Field(description="the original whiteboard's aspect ratio: its height part, ≥ 1")
    width: Positive | None = Field(None, description="output video width, vendor default 1280; mode single only")
    height: Positive | None = Field(None, description="output video height, vendor default 720; mode single only")
    whiteboard_id: Text | None = Field(None, description="the id of the whiteboard to record")
    is_ppt_animation: Bool | None = Field(
        None, description="record animated PPT (billed separately by ZEGO), vendor default false"
    )
    ppt_animation_fps: Annotated[Int, Field(ge=1, le=30)] | None = Field(
        None, description="frame rate of the animated PPT, 1..30, vendor default 15"
    )


class RecordOptions(_Model):
    """Seed 003's other record_input_params and record_output_params fields, in camelCase."""

    fill_blank: Bool | None = Field(
        None,
        description=(
            "fill an interrupted stream with blank frames instead of a gap (record_input_params), vendor default false"
        ),
    )
    fill_frame: FillFrame | None = Field(
        None,
        description="mixed mode only: how the picture is filled while a camera is off {frameFillMode, frameFillColor}",
    )
    record_mute_audio: Annotated[Int, Field(ge=1, le=2)] | None = Field(
        None,
        description=(
            "1 or 2: whether muted audio frames are recorded; only with mode single, media audio and format mp3"
        ),
    )
    record_mute_audio_split_threshold: Int | None = Field(
        None,
        description=(
            "seconds of silence that split the file (0: at any silence, negative: never); same conditions, "
            "and recordMuteAudio: 2"
        ),
    )
    has_whiteboard: Bool | None = Field(
        None, description="record a whiteboard too; needs whiteboard, not with media: audio"
    )
    whiteboard: list[Whiteboard] | None = Field(
        None,
        description="the whiteboard to record (one entry: ZEGO records one); needs hasWhiteboard: true",
        json_schema_extra={"maxItems": 1},  # checks.py says why a second is an error; an editor flags it too
    )
    output_file_rule: Annotated[Int, Field(ge=1, le=1)] | None = Field(
        None, description="the recorded files' naming rule (record_output_params): ZEGO has only 1, its default"
    )  # record_output_params
    callback_url: CallbackUrl | None = Field(
        None,
        description=(
            "an http(s) URL ZEGO posts this recording's events to instead of the app's callback URL "
            "(record_output_params): unset, or capctl's /callbacks/zego, or the daemon sees its end by polling only"
        ),
    )  # record_output_params


OUTPUT_OPTIONS: Final = frozenset({"output_file_rule", "callback_url"})


class RecordingJobSpec(_Model):
    """A RecordingJob's settings (ZEGO only)."""

    provider: Name = Field(description="the name of the zego Provider the recordings run on")
    rooms: Rooms = Field(
        description="the rooms: a list of room ids (one task each), or a selector {match, exclude, maxRooms}: every "
        "room whose id matches a match glob and no exclude glob, while it is active"
    )
    mode: Literal["single", "mixed"] = Field(
        "single",
        description=(
            "single (one file per stream, record_mode 1) or mixed (one mixed picture, record_mode 2; needs mix)"
        ),
    )
    media: Literal["audio", "video", "audio-video", "separate"] = Field(
        "audio-video",
        description=(
            "what is recorded (stream_type 1..4): audio, video, audio-video or separate (audio and video files "
            "apart, the audio as aac with mp4 and flv: not to VOD storage)"
        ),
    )
    streams: list[StreamSelector] = Field(
        [], description="the streams to record ({stream}, record_stream_list); empty = every stream in the room"
    )
    format: Literal["mp4", "flv", "hls", "mp3"] = Field(
        "mp4", description="the file format: mp4, flv, hls or mp3 (mp3 needs media: audio)"
    )
    output_folder: Text | None = Field(
        None, description="the folder in the storage the files go to (output_folder), default its root"
    )
    storage: Name = Field(description="the name of the Storage the recordings are written to")
    idle_timeout: Duration = Field(
        30,
        description="ZEGO max_idle_time: the recording stops after this long without any stream in the room; "
        "5..86400 s (legacy API: up to 4294967295 s)",
    )
    max_duration: Duration = Field(
        86400, description="ZEGO max_record_time: 300..86400 s; at the limit capctl starts the next recording"
    )
    mix: MixConfig | None = Field(
        None, description="mixed mode only, required there: seed 003's mix_config in camelCase"
    )
    options: RecordOptions = RecordOptions()
    restart_policy: RestartPolicyName = Field(
        "Always", description="Always: a recording the vendor stops is re-issued; Never: started once, never re-issued"
    )


class ThumbnailFile(_Model):
    """One stored video file to take thumbnails of."""

    cdn: Literal["tencent", "huawei"] = Field(
        description="where the file is: tencent (Vendor Tencent) or huawei (Vendor Huawei)"
    )
    file_id: Text = Field(
        description="the Tencent FileID or the Huawei ObsObject; once per job (it is part of the task key)",
        json_schema_extra=LITERAL_ONLY,
    )
    interval: Duration | None = Field(None, description="huawei only, required there: seconds between thumbnails, ≥ 1s")
    definition: Annotated[Int, Field(ge=0)] | None = Field(
        None, description="tencent only, required there: the snapshot template id"
    )  # tencent only, required there
    offsets: Annotated[list[Duration], Field(min_length=1)] | None = Field(
        None, description="times into the file to take thumbnails at (SnapshotByTimeOffset); without, SampleSnapshot"
    )


class ThumbnailJobSpec(_Model):
    """A ThumbnailJob's settings (ZEGO only)."""

    provider: Name = Field(description="the name of the zego Provider the thumbnails are taken with")
    files: Annotated[list[ThumbnailFile], Field(min_length=1)] = Field(description="one task per file")


# --- Documents --------------------------------------------------------------------------------------


class _Document(_Model):
    api_version: Literal["capctl/v1"] = Field(description="the version of the spec language: capctl/v1")
    metadata: Metadata = Field(description="the document's name and labels")


class ProviderDocument(_Document):
    """One vendor account (Volcengine or ZEGO) and its credentials; jobs name it by metadata.name."""

    kind: Literal["Provider"] = Field(description="the document kind: Provider")
    spec: Annotated[VolcengineProvider | ZegoProvider, Field(discriminator="type")] = Field(
        description="the account: its vendor (type), app id, credentials (references) and endpoints"
    )


class StorageDocument(_Document):
    """Where captures are written (a bucket, a VOD space); jobs name it by metadata.name."""

    kind: Literal["Storage"] = Field(description="the document kind: Storage")
    spec: StorageConfig = Field(description="the storage: its type and the fields that type takes")


class SnapshotJobDocument(_Document):
    """Rooms snapshotted every interval, kept running: one task per room (Volcengine StartSnapshot; ZEGO a
    cloud recording with jpg output)."""

    kind: Literal["SnapshotJob"] = Field(description="the document kind: SnapshotJob")
    spec: SnapshotJobSpec = Field(description="the job: provider, rooms, streams, interval, image, storage")


class RecordingJobDocument(_Document):
    """Rooms recorded by ZEGO cloud recording, kept running: one task per room."""

    kind: Literal["RecordingJob"] = Field(description="the document kind: RecordingJob")
    spec: RecordingJobSpec = Field(
        description="the job: provider, rooms, mode, media, format, storage, mix and options"
    )


class ThumbnailJobDocument(_Document):
    """Thumbnails of stored video files by ZEGO MediaThumbnails: one task per file."""

    kind: Literal["ThumbnailJob"] = Field(description="the document kind: ThumbnailJob")
    spec: ThumbnailJobSpec = Field(description="the job: provider and files")


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


def _unwrap(annotation: Any) -> list[Any]:
    """The types an annotation may hold (Optional, unions, Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def field_types(model: type[BaseModel], path: tuple[str | int, ...]) -> list[Any]:
    """The types a document of `model` may hold at `path` (YAML names; a list's or mapping's entries for an
    index or key): none where the model has no such field."""
    current: list[Any] = [model]
    for part in path:
        following: list[Any] = []
        for tp in current:
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                following += [t for f in tp.model_fields.values() if f.alias == part for t in _unwrap(f.annotation)]
            elif typing.get_origin(tp) in (list, dict):
                following += _unwrap(typing.get_args(tp)[-1])
        current = following
    return current
