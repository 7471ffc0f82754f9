"""ZEGO server APIs: MediaThumbnails, cloud recording (current Action API) and the legacy v1 recording API.

Business errors are HTTP 200 with the code in the body (`Code` for the Action APIs, `code` for legacy), injected
ones too (vendor-apis.md: "HTTP 200 for every business answer"), each in the code its API documents.
Every Action call is checked with signature 2.0; legacy calls carry an access token obtained from
/access_token. Decisions vendor-apis.md leaves open are marked UNCONFIRMED where they are made.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from reconciler.sim.bodies import (
    ZEGO_LEGACY_ACCESS_TOKEN,
    ZEGO_LEGACY_START,
    ZEGO_LEGACY_TASK_BODY,
    ZEGO_START_RECORD,
    ZEGO_TASK_ID_BODY,
    pascal,
    snake,
)
from reconciler.sim.config import ZEGO, ZEGO_LEGACY, ZegoApp
from reconciler.sim.schema import BodyError, Obj, validate
from reconciler.sim.signing import (
    constant_time_equal,
    decode_legacy_token,
    zego_legacy_token_hash,
    zego_signature,
)
from reconciler.sim.simulator import Reply, Simulator, VendorStyle, query_fields, received_query
from reconciler.sim.world import Room, SimTask, StopOutcome
from reconciler.spec.fields import room_id_problem

__all__ = ["cloudrecord_endpoint", "legacy_endpoint", "rtc_endpoint"]

SIG_EXPIRED, SIG_INVALID = 100000004, 100000005
RATE_LIMITED, INVALID_PARAMETER = 300000003, 300000004
TASK_NOT_FOUND, TASK_ENDED, SYSTEM_ERROR = 300001000, 300001001, 300010000
# MediaThumbnails' own codes (seed 002/004).
THUMB_BAD_PARAM, THUMB_CDN_MISMATCH, THUMB_TOO_FREQUENT, THUMB_AUTH, THUMB_FAILED = 2, 4, 6, 7, 1000
# Room-signalling codes (DescribeSimpleStreamList's page and ZEGO's RTC server "全局返回码", docs_all
# core_products/real-time-voice-video/zh/server/api-reference/return-codes.mdx): list failed (retry), app QPS limit.
LIST_FAILED, APP_QPS_LIMITED = 154, 206
LEGACY_TOKEN_TTL = 7200
LEGACY_NONCE_LENGTH = 16  # vendor-apis.md: the token's `N` is "a 16-character random string"
_NONCE = re.compile(r"[0-9a-fA-F]{16}")
_DIGITS = re.compile(r"[0-9]+")
DEFAULT_MAX_IDLE, DEFAULT_MAX_RECORD, DEFAULT_SNAPSHOT_INTERVAL = 30, 86400, 10
DEFAULT_STREAM_TYPE = 3  # audio and video in one file (ZEGO's StartRecord page)


_THROTTLE_CODES = frozenset({RATE_LIMITED, THUMB_TOO_FREQUENT, APP_QPS_LIMITED})


def _current_reply(request_id: str, code: int, message: str, data: Any = None) -> Reply:
    body: dict[str, Any] = {"Code": code, "Message": message, "RequestId": request_id}
    if data is not None:
        body["Data"] = data
    return Reply(200, body, code=str(code), throttled=code in _THROTTLE_CODES)


def _legacy_reply(code: int, message: str, **extra: Any) -> Reply:
    return Reply(200, {"code": code, "message": message, **extra}, code=str(code), throttled=code == RATE_LIMITED)


def _current_style(throttle_code: int, error_code: int, error_message: str) -> VendorStyle:
    """Injected faults as the API answers them: HTTP 200 with its own throttling and failure codes."""
    return VendorStyle(
        ZEGO,
        internal_error=lambda rid: _current_reply(rid, error_code, error_message),
        throttled=lambda rid: _current_reply(rid, throttle_code, "simulated throttling burst"),
    )


CLOUDRECORD_STYLE = _current_style(RATE_LIMITED, SYSTEM_ERROR, "system error")
# MediaThumbnails documents no system error: its one failure code is 1000 "request failed" (seed 002/004).
THUMBNAILS_STYLE = _current_style(THUMB_TOO_FREQUENT, THUMB_FAILED, "request failed")
STREAM_LIST_STYLE = _current_style(APP_QPS_LIMITED, LIST_FAILED, "failed to get the list")
LEGACY_STYLE = VendorStyle(
    ZEGO_LEGACY,
    # No v1 table survives: the Action API's system error (vendor-apis.md), in the v1 envelope, HTTP 200.
    internal_error=lambda rid: _legacy_reply(SYSTEM_ERROR, "system error"),
    throttled=lambda rid: _legacy_reply(RATE_LIMITED, "simulated throttling burst"),
)


def _check_signature(sim: Simulator, query: dict[str, str]) -> ZegoApp | int:
    """The calling app, or SIG_INVALID / SIG_EXPIRED (an unknown AppId is an invalid signature).

    Seed 004: SignatureNonce is "A 16-character hexadecimal random string"; UNCONFIRMED which code another
    nonce gets: the simulator answers it as an invalid signature. A nonce used before is accepted: no seed
    says the vendor refuses one."""
    app_id, ts = query.get("AppId", ""), query.get("Timestamp", "")
    # ASCII digits only: str.isdigit() holds for "²" (int() refuses it) and "１２３" (int() reads 123).
    if not _DIGITS.fullmatch(app_id) or not _DIGITS.fullmatch(ts) or query.get("SignatureVersion") != "2.0":
        return SIG_INVALID
    if not _NONCE.fullmatch(query.get("SignatureNonce", "")):
        return SIG_INVALID
    app = sim.config.zego_app(int(app_id))
    if app is None:
        return SIG_INVALID
    expected = zego_signature(app_id, query.get("SignatureNonce", ""), app.server_secret, ts)
    if not constant_time_equal(expected, query.get("Signature", "")):
        return SIG_INVALID
    if abs(sim.clock.now() - int(ts)) > sim.config.zego_clock_skew:
        return SIG_EXPIRED
    return app


# --- MediaThumbnails -----------------------------------------------------------------------------------


async def rtc_endpoint(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    pairs = parse_qsl(received_query(request), keep_blank_values=True)
    query = dict(pairs)
    offsets = [v for k, v in pairs if k == "ExtTimeOffsetSet[]"]
    action = query.get("Action", "")
    return await sim.call(
        request,
        style=STREAM_LIST_STYLE if action == "DescribeSimpleStreamList" else THUMBNAILS_STYLE,
        api=action,
        query={**query, "ExtTimeOffsetSet[]": offsets} if offsets else query,  # the log shows every offset
        body=None,
        process=lambda: (
            _stream_list(sim, request, query)
            if action == "DescribeSimpleStreamList"
            else _thumbnails(sim, request, query, offsets)
        ),
    )


def _number(value: str) -> float | None:
    """A decimal number as ZEGO's gateway reads one; not Python's float() extras (nan, inf, 1_0, 1e3)."""
    return float(value) if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value) else None


def _thumbnails(sim: Simulator, request: Request, query: dict[str, str], offsets: list[str]) -> Reply:
    rid = sim.request_id()
    if request.method != "GET" or query.get("Action") != "MediaThumbnails":
        return _current_reply(rid, THUMB_BAD_PARAM, "Action: only MediaThumbnails (GET) is served here")
    app = _check_signature(sim, query)
    if isinstance(app, int):
        # Decision: MediaThumbnails answers authentication failures with its own code 7 (seed 002/004).
        reason = "signature expired" if app == SIG_EXPIRED else "signature invalid"
        return _current_reply(rid, THUMB_AUTH, f"authentication failed: {reason}")
    if not sim.allow(ZEGO, str(app.app_id), "MediaThumbnails"):
        return _current_reply(rid, THUMB_TOO_FREQUENT, "too many requests")
    problem = _thumbnail_problem(query, offsets)
    if problem is not None:
        return _current_reply(rid, THUMB_BAD_PARAM, problem)
    vendor, file_id = query["Vendor"], query["FileId"]
    # Decision: Tencent FileIDs are numeric, Huawei ObsObjects are paths; the other shape is a CDN mismatch.
    if file_id.isdigit() != (vendor == "Tencent"):
        return _current_reply(rid, THUMB_CDN_MISMATCH, f"FileId {file_id!r} is not a {vendor} file id")
    if file_id in sim.missing_files:
        return _current_reply(rid, THUMB_FAILED, "request failed")
    task_id = sim.world.submit_thumbnails(str(app.app_id), vendor, [float(o) for o in offsets], file_id)
    data = (
        {"Tencent": {"TaskId": task_id, "RequestId": rid}} if vendor == "Tencent" else {"Huawei": {"task_id": task_id}}
    )
    return _current_reply(rid, 0, "success", data)


def _stream_list(sim: Simulator, request: Request, query: dict[str, str]) -> Reply:
    """DescribeSimpleStreamList: the streams published in a room now, from the simulated world.
    Its per-room limit (1 call per 10 s) is not enforced; the per-app 50/s is."""
    rid = sim.request_id()
    if request.method != "GET":
        return _current_reply(rid, INVALID_PARAMETER, "DescribeSimpleStreamList must be called with GET")
    app = _check_signature(sim, query)
    if isinstance(app, int):
        return _current_reply(rid, app, "signature expired" if app == SIG_EXPIRED else "signature invalid")
    if not sim.allow(ZEGO, str(app.app_id), "DescribeSimpleStreamList"):
        return _current_reply(rid, APP_QPS_LIMITED, "app QPS over the limit")
    room_id = query.get("RoomId", "")
    if not room_id:
        return _current_reply(rid, INVALID_PARAMETER, "RoomId is required")
    if problem := room_id_problem(room_id, "zego"):  # as StartRecord's (`bodies.record_schema`; walk 58e)
        return _current_reply(rid, INVALID_PARAMETER, f"invalid parameter: RoomId: {problem}")
    room = sim.world.rooms.get((ZEGO, str(app.app_id), room_id))
    # In the order of publishing (a dict keeps it).
    listed = [] if room is None else [_listed_stream(room, s, user) for s, user in room.streams.items()]
    return _current_reply(rid, 0, "success", {"StreamList": listed})


def _listed_stream(room: Room, stream: str, user: str) -> dict[str, Any]:
    """One StreamList item: CreateTime in ms (the page's example: 1642045110123); StreamNumberId, "the stream's
    number in the room", our choice: counted per room from 1 in the order of publishing, never reused."""
    created, number = room.listed[stream]
    return {
        "StreamId": stream,
        "UserId": user,
        "UserName": user,
        "CreateTime": int(created * 1000),
        "StreamNumberId": number,
    }


def _thumbnail_problem(query: dict[str, str], offsets: list[str]) -> str | None:
    vendor, kind = query.get("Vendor"), query.get("Type")
    if vendor not in ("Tencent", "Huawei"):
        return "Vendor: must be Tencent or Huawei"
    if not query.get("FileId"):
        return "FileId: is required"
    if kind not in ("SnapshotByTimeOffset", "SampleSnapshot"):
        return "Type: must be SnapshotByTimeOffset or SampleSnapshot"
    for name in ("Definition", "Interval"):
        if name in query and _number(query[name]) is None:
            return f"{name}: must be a number"
    if any(_number(o) is None or float(o) < 0 for o in offsets):
        return "ExtTimeOffsetSet[]: every offset must be a number >= 0"
    if vendor == "Tencent" and "Definition" not in query:
        return "Definition: is required when Vendor is Tencent"
    if vendor == "Huawei" and not (_number(query.get("Interval", "")) or 0) > 0:
        return "Interval: a number > 0 is required when Vendor is Huawei"
    if kind == "SnapshotByTimeOffset" and not offsets:
        return "ExtTimeOffsetSet[]: is required when Type is SnapshotByTimeOffset"
    return None


# --- cloud recording, current Action API ----------------------------------------------------------------


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # [[[… 100,000 deep: RecursionError
        return raw.decode(errors="replace")


async def cloudrecord_endpoint(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    raw = await request.body()
    query = query_fields(request)
    action = query.get("Action", "")
    body = _parse_json(raw)
    return await sim.call(
        request,
        style=CLOUDRECORD_STYLE,
        api=action,
        query=query,
        body=body,
        process=lambda: _cloudrecord(sim, request, query, action, body),
    )


_CURRENT_ACTIONS: dict[str, Obj] = {
    "StartRecord": ZEGO_START_RECORD,
    "StopRecord": ZEGO_TASK_ID_BODY,
    "DescribeRecordStatus": ZEGO_TASK_ID_BODY,
}


def _cloudrecord(sim: Simulator, request: Request, query: dict[str, str], action: str, body: Any) -> Reply:
    rid = sim.request_id()
    app = _check_signature(sim, query)
    if isinstance(app, int):
        return _current_reply(rid, app, "signature expired" if app == SIG_EXPIRED else "signature invalid")
    if action not in _CURRENT_ACTIONS or request.method != "POST":
        return _current_reply(rid, INVALID_PARAMETER, f"Action: {action!r} is not a POST cloud-recording action")
    app_id = str(app.app_id)
    if not sim.allow(ZEGO, app_id, action):
        return _current_reply(rid, RATE_LIMITED, "too many requests")
    try:
        validate(body, _CURRENT_ACTIONS[action])
    except BodyError as exc:
        return _current_reply(rid, INVALID_PARAMETER, f"invalid parameter: {exc}")
    if action == "StartRecord":
        task_id = _start_record(sim, app_id, body, pascal, legacy=False)
        return _current_reply(rid, 0, "success", {"TaskId": task_id})
    if action == "StopRecord":
        code, message = _stop_record(sim, app_id, body["TaskId"])
        return _current_reply(rid, code, message)
    task = sim.world.zego_task(app_id, body["TaskId"])
    if task is None:
        return _current_reply(rid, TASK_NOT_FOUND, "task does not exist")
    return _current_reply(rid, 0, "success", _status_view(task, pascal, sim.clock.now()))


def _start_record(sim: Simulator, app_id: str, body: dict[str, Any], n: Callable[[str], str], *, legacy: bool) -> str:
    inputs = body[n("record_input_params")]
    outputs = body.get(n("record_output_params"), {})
    storage = body[n("storage_params")]
    file_format = outputs.get(n("output_file_format"), "mp4")
    jpg = file_format == "jpg"
    task_id, _ = sim.world.start_zego(
        app_id,
        body[n("room_id")],
        legacy=legacy,
        max_idle=inputs.get(n("max_idle_time"), DEFAULT_MAX_IDLE),
        max_record=inputs.get(n("max_record_time"), DEFAULT_MAX_RECORD),
        interval=outputs.get(n("snapshot_interval"), DEFAULT_SNAPSHOT_INTERVAL) if jpg else None,
        client_task_id=None if legacy else inputs.get("ClientTaskId"),
        # Seed 003: the task's callback_url, else the one configured for the service (--zego-callback-url).
        callback_url=outputs.get(n("callback_url")),
        # What the status answer reports of the task and its files (`_status_view`).
        settings={
            "record_mode": inputs[n("record_mode")],
            "stream_type": inputs.get(n("stream_type"), DEFAULT_STREAM_TYPE),
            "streams": [s[n("stream_id")] for s in inputs.get(n("record_stream_list"), [])],
            "mix_stream": inputs.get(n("mix_config"), {}).get(n("mix_output_stream_id")),
            "format": file_format,
            "folder": outputs.get(n("output_folder"), ""),
            "storage": storage[n("storage_provider")],
            "bucket": storage.get(n("bucket_name"), ""),
        },
    )
    return task_id


def _stop_record(sim: Simulator, app_id: str, task_id: str) -> tuple[int, str]:
    outcome = sim.world.stop_zego(app_id, task_id)
    if outcome == StopOutcome.UNKNOWN:
        return TASK_NOT_FOUND, "task does not exist"
    if outcome == StopOutcome.ENDED:
        return TASK_ENDED, "task already ended"
    return 0, "succeed"


def _status_view(task: SimTask, n: Callable[[str], str], now: float) -> dict[str, Any]:
    """A recording's status, with the fields ZEGO's DescribeRecordStatus page lists (ZEGOCLOUD/docs_all
    extended_services/cloud_recording/{en,zh}/server/describe-record-status.yaml): no TaskId, and no quit reason
    (only the end callback names the cause, `detail.quit_reason`). The legacy /query spelling is UNCONFIRMED:
    snake_case of the same names."""
    settings = {**_SETTING_DEFAULTS, **task.settings}
    view = {
        n("room_id"): task.room_id,
        n("record_mode"): settings["record_mode"],
        n("stream_type"): settings["stream_type"],
        n("record_begin_timestamp"): _ms(task.start_time),
        # UNCONFIRMED what a running task answers: 0, as GetSnapshotTask's EndTime (vendor-apis.md)
        n("record_end_timestamp"): 0 if task.end_time is None else _ms(task.end_time),
        n("status"): task.status,
    }
    files = _record_files(task, settings, n, now)
    if files:  # "not returned" for screenshots (jpg), nor when no stream was published during the recording
        view[n("record_files")] = files
    return view


# A task started by `World.start_zego` alone (tests, benchmarks): an mp4 recording of every stream.
_SETTING_DEFAULTS: dict[str, Any] = {
    "record_mode": 1,
    "stream_type": DEFAULT_STREAM_TYPE,
    "streams": [],
    "mix_stream": None,
    "format": "mp4",
    "folder": "",
    "storage": 1,
    "bucket": "",
}
_TRACKS = {1: (1,), 2: (2,), 3: (3,), 4: (1, 2)}  # StreamType -> the MediaTrackType of each file of a stream
_TRACK_TAGS = {1: "A", 2: "V", 3: "VA"}
_NO_FILE_URL = (4, 5)  # "FileUrl: not returned when the storage is Qiniu (4) or Aliyun VOD (5)"
_FILE_RECORDING, _FILE_UPLOADED = 1, 3


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _record_files(task: SimTask, settings: dict[str, Any], n: Callable[[str], str], now: float) -> list[dict[str, Any]]:
    """`RecordFiles` of a recording: one file per recorded stream (single-stream mode: the listed streams, else
    every one) or one of the mixed output (mixed mode), split into an audio and a video file for StreamType 4.
    The simulator stores nothing: FileSize is 0, resolutions and VOD video ids are left out."""
    if settings["format"] == "jpg" or not task.recorded:
        return []
    if settings["record_mode"] == 2:
        mix = settings["mix_stream"] or task.room_id
        sources = [(mix, mix, min(at for _, at in task.recorded.values()))]
    else:
        wanted = settings["streams"]
        sources = [(k, user, at) for k, (user, at) in task.recorded.items() if not wanted or k in wanted]
    end = task.end_time if task.end_time is not None else now
    files = []
    for stream, user, begin in sorted(sources, key=lambda s: (s[2], s[0])):
        for track in _TRACKS[settings["stream_type"]]:
            file_format = settings["format"]
            if track == 1 and settings["stream_type"] == 4 and file_format in ("mp4", "flv"):
                file_format = "aac"  # seed 003: with stream_type 4, mp4 and flv recordings give aac audio files
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(begin)) + f"{_ms(begin) % 1000:03d}"
            file_id = f"{task.task_id}_{task.room_id}_{stream}_{_TRACK_TAGS[track]}_{stamp}.{file_format}"
            entry: dict[str, Any] = {
                n("user_id"): user,
                n("user_name"): user,
                n("stream_id"): stream,
                n("file_id"): file_id,
                n("output_file_format"): file_format,
                n("file_size"): 0,
                n("duration"): max(0, _ms(end) - _ms(begin)),
                n("media_track_type"): track,
                n("begin_timestamp"): _ms(begin),
                n("status"): _FILE_RECORDING if task.running else _FILE_UPLOADED,
            }
            if settings["storage"] not in _NO_FILE_URL:
                entry[n("file_url")] = (
                    f"https://{settings['bucket'] or 'storage'}.sim.invalid/{settings['folder']}{file_id}"
                )
            files.append(entry)
    return files


# --- legacy v1 API --------------------------------------------------------------------------------------

_LEGACY_OPS = ("access_token", "start", "query", "stop")


async def legacy_endpoint(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    op = request.path_params["op"]
    if op not in _LEGACY_OPS or request.method != "POST":
        return PlainTextResponse("not found", status_code=404)
    body = _parse_json(await request.body())
    return await sim.call(
        request, style=LEGACY_STYLE, api=op, query={}, body=body, process=lambda: _legacy(sim, op, body)
    )


def _legacy(sim: Simulator, op: str, body: Any) -> Reply:
    app_id = body.get("app_id") if isinstance(body, dict) else None
    if type(app_id) is not int:
        return _legacy_reply(INVALID_PARAMETER, "invalid parameter: app_id: must be an integer")
    app = sim.config.zego_app(app_id)
    if app is None:
        return _legacy_reply(SIG_INVALID, "unknown app_id")
    if op == "access_token":
        return _legacy_access_token(sim, app, body)
    token = body.get("access_token")
    if not isinstance(token, str):
        return _legacy_reply(INVALID_PARAMETER, "invalid parameter: access_token: must be a string")
    known = sim.legacy_tokens.get(token)
    if known is None or known[0] != str(app_id):
        return _legacy_reply(SIG_INVALID, "access_token invalid")
    if known[1] <= sim.clock.now():
        return _legacy_reply(SIG_EXPIRED, "access_token expired")
    if not sim.allow(ZEGO_LEGACY, str(app_id), op):
        return _legacy_reply(RATE_LIMITED, "too many requests")
    try:
        validate(body, ZEGO_LEGACY_START if op == "start" else ZEGO_LEGACY_TASK_BODY)
    except BodyError as exc:
        return _legacy_reply(INVALID_PARAMETER, f"invalid parameter: {exc}")
    if op == "start":
        # The legacy start has no idempotency key: every call starts a new task.
        return _legacy_reply(0, "succeed", task_id=_start_record(sim, str(app_id), body, snake, legacy=True))
    if op == "stop":
        code, message = _stop_record(sim, str(app_id), body["task_id"])
        return _legacy_reply(code, message)
    task = sim.world.zego_task(str(app_id), body["task_id"])
    if task is None:
        return _legacy_reply(TASK_NOT_FOUND, "task does not exist")
    return _legacy_reply(0, "succeed", data=_status_view(task, snake, sim.clock.now()))


def _legacy_access_token(sim: Simulator, app: ZegoApp, body: dict[str, Any]) -> Reply:
    if not sim.allow(ZEGO_LEGACY, str(app.app_id), "access_token"):
        return _legacy_reply(RATE_LIMITED, "too many requests")
    try:
        validate(body, ZEGO_LEGACY_ACCESS_TOKEN)
    except BodyError as exc:
        return _legacy_reply(INVALID_PARAMETER, f"invalid parameter: {exc}")
    token = decode_legacy_token(body["token"])
    if token is None:
        return _legacy_reply(SIG_INVALID, "token is not base64 JSON {ver, hash, nonce, expired}")
    if len(token.nonce) != LEGACY_NONCE_LENGTH:  # UNCONFIRMED which code: answered as an invalid token
        return _legacy_reply(SIG_INVALID, f"token nonce must be a {LEGACY_NONCE_LENGTH}-character random string")
    expected = zego_legacy_token_hash(app.app_id, app.server_secret, token.nonce, token.expired)
    if not constant_time_equal(expected, token.hash):
        return _legacy_reply(SIG_INVALID, "token hash invalid")
    now = sim.clock.now()
    if token.expired <= now:
        return _legacy_reply(SIG_EXPIRED, "token expired")
    access_token = f"{sim.rng.getrandbits(128):032x}"
    sim.legacy_tokens[access_token] = (str(app.app_id), now + LEGACY_TOKEN_TTL)
    return _legacy_reply(0, "succeed", data={"access_token": access_token, "expires_in": LEGACY_TOKEN_TTL})
