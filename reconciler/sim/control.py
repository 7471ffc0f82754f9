"""The /_sim/ control API: drive rooms and streams, inspect tasks and logs, inject faults, move time.

It is for out-of-process use (the demo, benchmarks, e2e tests against `capctl sim`); in-process tests can
call the same operations on `app.state.sim`. Bad input answers 400 `{"error": "<field>: <problem>"}`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reconciler.clock import FakeClock
from reconciler.sim.clocks import ScaledClock
from reconciler.sim.faults import FaultConfig, FaultConfigError
from reconciler.sim.scenario import ScenarioError, parse_chaos, parse_scenario
from reconciler.sim.simulator import SimError, Simulator, StreamArgs

__all__ = ["routes"]

T = TypeVar("T")
Handler = Callable[[Simulator, Request, dict[str, Any]], Awaitable[Any]]


def _field(body: dict[str, Any], name: str, kind: type[T], *, required: bool = True) -> T | None:
    value = body.get(name)
    if value is None:
        if required:
            raise SimError(f"{name}: is required")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SimError(f"{name}: must be {kind.__name__}")
    return value


def _app_id(body: dict[str, Any]) -> str | None:
    value = body.get("appId")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SimError("appId: must be a string or integer")
    return str(value)


def _stream_args(body: dict[str, Any]) -> StreamArgs:
    return StreamArgs(
        user_id=_field(body, "userId", str, required=False),
        stream_type=_field(body, "streamType", int, required=False) or 0,
        stream_id=_field(body, "streamId", str, required=False),
        app_id=_app_id(body),
    )


def _endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        sim: Simulator = request.app.state.sim
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):  # [[[… 100,000 deep: RecursionError
            return JSONResponse({"error": "body: not valid JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body: must be a JSON object"}, status_code=400)
        try:
            result = await handler(sim, request, body)
        except (SimError, FaultConfigError, ScenarioError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(result)

    return run


async def get_config(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    return sim.config.public_view()


async def rooms(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    if request.method == "POST":
        vendor = _field(body, "vendor", str)
        room_id = _field(body, "roomId", str)
        assert vendor is not None and room_id is not None
        sim.create_room(vendor, room_id, _app_id(body))
    sim.world.catch_up()
    return {"rooms": [r.as_json() for r in sim.world.rooms.values()]}


async def publish(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    vendor, room_id = _field(body, "vendor", str), _field(body, "roomId", str)
    assert vendor is not None and room_id is not None
    changed = sim.publish(vendor, room_id, **_stream_args(body))
    return {"changed": changed}


async def unpublish(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    vendor, room_id = _field(body, "vendor", str), _field(body, "roomId", str)
    assert vendor is not None and room_id is not None
    changed = sim.unpublish(vendor, room_id, **_stream_args(body))
    return {"changed": changed}


async def tasks(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    vendor, state = request.query_params.get("vendor"), request.query_params.get("state")
    items = [t.as_json() for t in sim.tasks(vendor)]
    return {"tasks": [t for t in items if state is None or t["state"] == state]}


async def stop_task(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    vendor, task_id = _field(body, "vendor", str), _field(body, "taskId", str)
    assert vendor is not None and task_id is not None
    reason = body.get("reason")
    if reason is not None and (isinstance(reason, bool) or not isinstance(reason, str | int)):
        raise SimError("reason: must be a Volcengine StopReason string or a ZEGO quit_reason integer")
    task = sim.stop_task(
        vendor, task_id, room_id=_field(body, "roomId", str, required=False), app_id=_app_id(body), reason=reason
    )
    return {"task": task.as_json()}


async def requests_log(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    limit, caller = request.query_params.get("limit", ""), request.query_params.get("caller")
    entries = [e for e in sim.log.entries() if caller is None or e.caller == caller]
    if limit.isascii() and limit.isdigit() and int(limit):
        entries = entries[-int(limit) :]
    return {"requests": [e.as_json() for e in entries]}


async def throttled(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    return {
        "total": sim.limiter.throttled_total,
        "notForced": sum(1 for t in sim.limiter.throttled if not t.forced),
        "throttled": [t.as_json() for t in sim.limiter.throttled],
    }


async def callbacks(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    return {**sim.callbacks.counts(), "deliveries": list(sim.callbacks.log)}


async def chaos(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    if request.method == "PUT":
        seed = body.pop("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SimError("seed: must be an integer")
        sim.callbacks.set_chaos(parse_chaos(body, source="body"), seed=seed)
    return {"chaos": sim.callbacks.chaos.model_dump(), **sim.callbacks.counts()}


async def scenario(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    if request.method == "POST":
        return sim.load_scenario(parse_scenario(body, source="body"))
    return sim.scenario_status()


async def coverage(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    return sim.coverage()


async def deliver(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    return {"attempts": await sim.deliver_due()}


async def faults(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    if request.method in ("PUT", "POST"):
        sim.faults.set(FaultConfig.from_json(body))
    elif request.method == "DELETE":
        sim.faults.set(FaultConfig())
    return {"faults": sim.faults.config.as_json()}


async def reset(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    sim.reset()
    return {"reset": True}


async def clock(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    if request.method == "POST":
        if "advance" in body:
            seconds = body["advance"]
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise SimError("advance: must be a number of seconds")
            await sim.advance(float(seconds))
        elif "speed" in body:
            speed = body["speed"]
            if not isinstance(sim.clock, ScaledClock):
                raise SimError("speed: the simulator runs on a fake clock; use advance")
            if isinstance(speed, bool) or not isinstance(speed, int | float):
                raise SimError("speed: must be a number")
            try:
                sim.clock.set_speed(float(speed))
            except ValueError as exc:  # out of range (Infinity, NaN): the clock is left as it was
                raise SimError(f"speed: {exc}") from None
        else:
            raise SimError("body: give 'advance' (seconds) or 'speed' (factor)")
    kind = "fake" if isinstance(sim.clock, FakeClock) else "scaled"
    speed_now = sim.clock.speed if isinstance(sim.clock, ScaledClock) else None
    return {"now": sim.clock.now(), "kind": kind, "speed": speed_now}


async def missing_files(sim: Simulator, request: Request, body: dict[str, Any]) -> Any:
    """POST registers files as missing (MediaThumbnails answers 1000); DELETE says they are uploaded now (all of
    them without `fileIds`), so a submission retried after the upload goes through, as at ZEGO."""
    if request.method == "DELETE" and "fileIds" not in body:
        sim.missing_files.clear()
    elif request.method != "GET":
        ids = body.get("fileIds")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise SimError("fileIds: must be a list of strings")
        (sim.missing_files.update if request.method == "POST" else sim.missing_files.difference_update)(ids)
    return {"fileIds": sorted(sim.missing_files)}


def routes() -> list[Route]:
    table: list[tuple[str, Handler, list[str]]] = [
        ("/config", get_config, ["GET"]),
        ("/rooms", rooms, ["GET", "POST"]),
        ("/publish", publish, ["POST"]),
        ("/unpublish", unpublish, ["POST"]),
        ("/tasks", tasks, ["GET"]),
        ("/tasks/stop", stop_task, ["POST"]),
        ("/requests", requests_log, ["GET"]),
        ("/throttled", throttled, ["GET"]),
        ("/callbacks", callbacks, ["GET"]),
        ("/callbacks/deliver", deliver, ["POST"]),
        ("/callbacks/chaos", chaos, ["GET", "PUT"]),
        ("/faults", faults, ["GET", "PUT", "POST", "DELETE"]),
        ("/reset", reset, ["POST"]),
        ("/clock", clock, ["GET", "POST"]),
        ("/missing-files", missing_files, ["GET", "POST", "DELETE"]),
        ("/scenario", scenario, ["GET", "POST"]),
        ("/coverage", coverage, ["GET"]),
    ]
    return [Route(f"/_sim{path}", _endpoint(handler), methods=methods) for path, handler, methods in table]
