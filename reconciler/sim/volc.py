"""Volcengine RTC OpenAPI (2023-11-01) snapshot calls: gateway checks, strict bodies, the vendor's envelope.

Order of checks, as a gateway would: Action/Version, signature, HTTP method, rate limit, body, business.
Errors are non-200 with `ResponseMetadata.Error{Code, Message}` and no `Result`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from reconciler.sim.bodies import VOLC_GET, VOLC_ROOM_USERS, VOLC_START, VOLC_STOP, VOLC_UPDATE
from reconciler.sim.config import VOLC, VOLC_SERVICE, VOLC_VERSION, VolcApp
from reconciler.sim.schema import BodyError, Obj, validate
from reconciler.sim.signing import (
    constant_time_equal,
    parse_volc_authorization,
    volc_is_signable_header,
    volc_signature,
)
from reconciler.sim.simulator import Reply, Simulator, VendorStyle, query_fields, received_path, received_query
from reconciler.sim.world import SimTask, volc_stream_key

__all__ = ["endpoint"]

ACTIONS: dict[str, tuple[str, Obj]] = {
    "StartSnapshot": ("POST", VOLC_START),
    "UpdateSnapshot": ("POST", VOLC_UPDATE),
    "StopSnapshot": ("POST", VOLC_STOP),
    "GetSnapshotTask": ("GET", VOLC_GET),
    "GetRoomOnlineUsers": ("GET", VOLC_ROOM_USERS),
}
ALREADY_STARTED = "The task has been started. Please do not call the startup task interface repeatedly"
NOT_FOUND = "InvalidParameter.ErrorActiveTaskNotFound"
DEFAULT_MAX_IDLE = 180
DEFAULT_INTERVAL = 2
_IMAGE_DEFAULTS = {"Format": 0, "Width": 0, "Height": 0}


class _Meta:
    """ResponseMetadata of one call."""

    def __init__(self, request_id: str, action: str, region: str) -> None:
        self.data = {
            "RequestId": request_id,
            "Action": action,
            "Version": VOLC_VERSION,
            "Service": VOLC_SERVICE,
            "Region": region,
        }

    def ok(self, result: Any) -> Reply:
        return Reply(200, {"ResponseMetadata": self.data, "Result": result})

    def error(self, status: int, code: str, message: str) -> Reply:
        meta = {**self.data, "Error": {"Code": code, "Message": message}}
        return Reply(status, {"ResponseMetadata": meta}, code=code, throttled=status == 429)


def _style(action: str, region: str) -> VendorStyle:
    return VendorStyle(
        VOLC,
        internal_error=lambda rid: _Meta(rid, action, region).error(
            500, "InternalError.Unknown", "simulated internal error"
        ),
        throttled=lambda rid: _Meta(rid, action, region).error(
            429, "FlowLimitExceeded.QPSOverLimit", "simulated throttling burst"
        ),
    )


async def endpoint(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    raw = await request.body()
    query = query_fields(request)
    action = query.get("Action", "")
    try:
        logged_body: Any = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # [[[… 100,000 deep: RecursionError
        logged_body = raw.decode(errors="replace")
    return await sim.call(
        request,
        style=_style(action, sim.config.volcengine_apps[0].region),
        api=action,
        query=query,
        body=logged_body,
        process=lambda: _process(sim, request, raw, query, action),
    )


def _process(sim: Simulator, request: Request, raw: bytes, query: dict[str, str], action: str) -> Reply:
    meta = _Meta(sim.request_id(), action, sim.config.volcengine_apps[0].region)
    if action not in ACTIONS or query.get("Version") != VOLC_VERSION:
        return meta.error(
            404, "InvalidActionOrVersion", f"Action {action!r} with Version {query.get('Version')!r} not found"
        )
    auth = _authenticate(sim, request, raw)
    if isinstance(auth, tuple):
        return meta.error(*auth)
    meta.data["Region"] = auth[0].region
    method, schema = ACTIONS[action]
    if request.method != method:
        return meta.error(400, "InvalidParameter", f"{action} must be called with {method}")
    if method == "GET":
        params: Any = {k: v for k, v in query.items() if k not in ("Action", "Version")}
    else:
        try:
            params = json.loads(raw)
        except (ValueError, RecursionError):  # [[[… 100,000 deep: RecursionError
            return meta.error(400, "InvalidParameter", "the body is not valid JSON")
    app_key = params.get("AppId") if isinstance(params, dict) else None
    rate_key = app_key if isinstance(app_key, str) else auth[0].app_id
    if not sim.allow(VOLC, rate_key, action):
        return meta.error(429, "FlowLimitExceeded.QPSOverLimit", f"{action} QPS over limit for app {rate_key}")
    try:
        validate(params, schema)
    except BodyError as exc:
        code = "InvalidParameter.IllegalRoomID" if exc.path == "RoomId" else "InvalidParameter"
        return meta.error(400, code, str(exc))
    if params["AppId"] not in {a.app_id for a in auth}:
        return meta.error(400, "InvalidParameter", f"AppId: {params['AppId']!r} is not an app of this account")
    handler = {
        "StartSnapshot": _start,
        "UpdateSnapshot": _update,
        "StopSnapshot": _stop,
        "GetSnapshotTask": _get,
        "GetRoomOnlineUsers": _room_users,
    }[action]
    return handler(sim, meta, params)


def _authenticate(sim: Simulator, request: Request, raw: bytes) -> list[VolcApp] | tuple[int, str, str]:
    """The apps of the signing key, or (status, code, message) of the gateway's refusal."""
    header = request.headers.get("authorization")
    if not header:
        return 401, "MissingSignature", "the Authorization header is missing"
    auth = parse_volc_authorization(header)
    if auth is None:
        return 401, "MissingSignature", "the Authorization header is malformed"
    apps = sim.config.volc_app_by_key(auth.access_key)
    if not apps:
        return 401, "InvalidAccessKey", "the access key is not valid"
    x_date = request.headers.get("x-date", "")
    signed_at = _parse_x_date(x_date)
    if signed_at is None:
        return 403, "InvalidTimestamp", "X-Date is missing or not YYYYMMDDTHHMMSSZ"
    if abs(sim.clock.now() - signed_at) > sim.config.volc_clock_skew:
        return 403, "InvalidTimestamp", "X-Date is too far from the server time"
    mismatch = 401, "SignatureDoesNotMatch", "the request signature does not match"
    app = apps[0]
    signed = {}
    for name in auth.signed_headers:
        value = request.headers.get(name)
        if value is None or not volc_is_signable_header(name):
            return mismatch
        signed[name] = value
    body_hash = request.headers.get("x-content-sha256")
    if body_hash is not None and body_hash != hashlib.sha256(raw).hexdigest():
        return mismatch
    if "x-date" not in signed or auth.date != x_date[:8] or auth.region != app.region or auth.service != VOLC_SERVICE:
        return mismatch
    expected = volc_signature(
        secret_key=app.secret_key,
        method=request.method,
        path=received_path(request),
        raw_query=received_query(request),
        headers=signed,
        body=raw,
        x_date=x_date,
        region=app.region,
        service=VOLC_SERVICE,
    )
    return apps if constant_time_equal(expected, auth.signature) else mismatch


def _parse_x_date(value: str) -> float | None:
    """`YYYYMMDDTHHMMSSZ` as unix seconds (by hand: strptime does a locale lookup on every call)."""
    if len(value) != 16 or value[8] != "T" or value[15] != "Z" or not (value[:8] + value[9:15]).isdigit():
        return None
    try:
        y, mo, d = int(value[0:4]), int(value[4:6]), int(value[6:8])
        h, mi, sec = int(value[9:11]), int(value[11:13]), int(value[13:15])
        return datetime(y, mo, d, h, mi, sec, tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _start(sim: Simulator, meta: _Meta, body: dict[str, Any]) -> Reply:
    streams = body.get("TargetStreams", {}).get("StreamList", [])
    targets = frozenset(volc_stream_key(s["UserId"], s.get("StreamType", 0)) for s in streams) or None
    image = body.get("ImageConfig", {})
    created = sim.world.start_volc(
        body["AppId"],
        body["RoomId"],
        body["TaskId"],
        business_id=body.get("BusinessId", ""),
        targets=targets,
        max_idle=body.get("MaxIdleTime", DEFAULT_MAX_IDLE),
        interval=image.get("Interval", DEFAULT_INTERVAL),
        settings={k: image.get(k, d) for k, d in _IMAGE_DEFAULTS.items()},
    )
    return meta.ok("ok" if created else ALREADY_STARTED)


def _running(sim: Simulator, meta: _Meta, body: dict[str, Any]) -> SimTask | Reply:
    task = sim.world.running_volc_task(body["AppId"], body["RoomId"], body["TaskId"])
    if task is None:
        return meta.error(400, NOT_FOUND, f"no running task {body['TaskId']!r} in room {body['RoomId']!r}")
    return task


def _update(sim: Simulator, meta: _Meta, body: dict[str, Any]) -> Reply:
    task = _running(sim, meta, body)
    if isinstance(task, Reply):
        return task
    image = body.get("ImageConfig", {})
    for key in _IMAGE_DEFAULTS:
        if image.get(key, task.settings[key]) != task.settings[key]:
            return meta.error(400, "InvalidParameter", f"ImageConfig.{key}: only ImageConfig.Interval can be updated")
    if "Interval" in image:
        sim.world.update_interval(task, image["Interval"])
    return meta.ok("ok")


def _stop(sim: Simulator, meta: _Meta, body: dict[str, Any]) -> Reply:
    task = _running(sim, meta, body)
    if isinstance(task, Reply):
        return task
    sim.world.stop_volc(task)
    return meta.ok("ok")


def _get(sim: Simulator, meta: _Meta, query: dict[str, Any]) -> Reply:
    # Unknown (or older than 72 h): the simulator answers like Stop does, ErrorActiveTaskNotFound.
    task = sim.world.queried_volc_task(query["AppId"], query["RoomId"], query["TaskId"])
    if task is None:
        return meta.error(400, NOT_FOUND, f"no task {query['TaskId']!r} in room {query['RoomId']!r}")
    return meta.ok(
        {
            "SnapshotTask": {
                "TaskId": task.task_id,
                "StartTime": int(task.start_time * 1000),
                "EndTime": 0 if task.end_time is None else int(task.end_time * 1000),
                "Status": task.status,
                "StopReason": task.stop_reason,
            }
        }
    )


def _room_users(sim: Simulator, meta: _Meta, query: dict[str, Any]) -> Reply:
    """GetRoomOnlineUsers: the users publishing in the room now (a simulated user is in a room while they
    publish); a room without any is answered as one that does not exist."""
    room = sim.world.rooms.get((VOLC, query["AppId"], query["RoomId"]))
    users = sorted(room.users()) if room is not None else []
    if not users:
        return meta.ok({"RoomExists": False})
    return meta.ok(
        {
            "RoomExists": True,
            "TotalUser": len(users),
            "TotalInvisibleUser": 0,
            "VisibleUserList": users,
            "InvisibleUserList": [],
        }
    )
