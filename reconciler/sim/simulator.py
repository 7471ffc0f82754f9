"""The simulator object behind the app (`app.state.sim`): world, limits, faults, log and callbacks together.

Vendor endpoints run every call through `call()`, which logs it, applies injected faults and turns the
vendor module's `Reply` into an HTTP answer. Tests in-process drive the world through the helpers here
(`publish`, `unpublish`, `advance`, `tasks`) instead of the HTTP control API. A loaded scenario's timeline
of publishes and unpublishes joins the world's event heap, so it plays in order with the world's own events.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack
from urllib.parse import parse_qsl

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from reconciler.clock import Clock, FakeClock
from reconciler.sim.callbacks import CallbackQueue
from reconciler.sim.config import VOLC, ZEGO, SimConfig
from reconciler.sim.coverage import RoomKey
from reconciler.sim.faults import Faults
from reconciler.sim.ratelimit import SlidingWindowLimiter, Throttle
from reconciler.sim.reqlog import RequestLog
from reconciler.sim.scenario import Scenario, timeline
from reconciler.sim.world import SimTask, World, out_of_band_problem, volc_stream_key

__all__ = [
    "CALLER_KEY",
    "MAX_ADVANCE",
    "CallerPrefix",
    "Reply",
    "SimError",
    "Simulator",
    "StreamArgs",
    "VendorStyle",
    "query_fields",
    "received_path",
    "received_query",
]
# ASGI scope keys set by `CallerPrefix` for a call made under /as/<name>/.
CALLER_KEY = "capctl.sim.caller"
RECEIVED_PATH_KEY = "capctl.sim.received_path"
# The most one `advance` moves a fake clock: enough for any test of idle timeouts, retention or max
# durations; Infinity or 1e300 would leave the clock where no timestamp can follow it.
MAX_ADVANCE = 365 * 86400.0


# Characters `request.url` escapes or drops when it rebuilds the path from the ASGI scope.
_URL_REWRITES = frozenset("?#\\\t\r\n")


def received_path(request: Request) -> str:
    """The path the client sent (and signed), /as/<name>/ prefix included: `request.url.path`, read from the
    scope when the URL would give it back unchanged (building the URL only for its path was 3 % of a busy
    simulator's CPU: bench/README.md, "A day in under 2 minutes")."""
    received = request.scope.get(RECEIVED_PATH_KEY)
    if received is not None:
        return str(received)
    path: str = request.scope["path"]
    if path.startswith("/") and not path.startswith("//") and _URL_REWRITES.isdisjoint(path):
        return path
    return request.url.path


# Characters that end the query (`#`) or that the URL parser drops, when `request.url` rebuilds it.
_QUERY_REWRITES = frozenset("#\t\r\n")


def received_query(request: Request) -> str:
    """The query the client sent (and signed): `request.url.query`, read from the scope when the URL would give it
    back unchanged (the URL is built for nothing else here: 1.6 % of a Volcengine polling run)."""
    query = request.scope["query_string"].decode()
    return query if _QUERY_REWRITES.isdisjoint(query) else request.url.query


def query_fields(request: Request) -> dict[str, str]:
    """`dict(request.query_params)` (a repeated name: its last value), parsed as Starlette parses it without
    building its multi-dict and copying it out: half of the 22 µs it took, 1.4 % of a Volcengine polling run."""
    return dict(parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True))


class CallerPrefix:
    """Routes `/as/<name>/rest` like `/rest` and remembers `<name>` as the caller: replicas of a daemon
    pointed at different prefixes of one simulator can be told apart in the request log."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/as/"):
            name, sep, rest = path[len("/as/") :].partition("/")
            if name and sep:
                scope = {**scope, "path": "/" + rest, "raw_path": ("/" + rest).encode()}
                scope[CALLER_KEY], scope[RECEIVED_PATH_KEY] = name, path
        await self.app(scope, receive, send)


@dataclass
class _Playing:
    scenario: Scenario
    start: float
    actions: int
    reported: bool = False  # the end-of-scenario summary was printed

    @property
    def end(self) -> float:
        return self.start + self.scenario.duration


@dataclass
class Reply:
    """A vendor answer: HTTP status, JSON body, and the vendor code for the request log."""

    status: int
    body: dict[str, Any]
    code: str = ""
    throttled: bool = False


@dataclass(frozen=True)
class VendorStyle:
    """How a vendor family answers the failures the simulator injects."""

    vendor: str
    internal_error: Callable[[str], Reply]
    throttled: Callable[[str], Reply]


class SimError(ValueError):
    """A control-API or helper call was wrong; the message says which field."""


class _DroppedResponse(Response):
    """Starts an answer and never finishes it: the client sees the connection closed mid-response."""

    def __init__(self, in_process: bool) -> None:
        super().__init__(status_code=200)
        self._in_process = in_process

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        if self._in_process:
            raise httpx.RemoteProtocolError("simulated dropped connection")
        # Under uvicorn, returning with the body incomplete makes the server close the connection.


class StreamArgs(TypedDict, total=False):
    """Which stream `publish` / `unpublish` mean: a Volcengine user's (`user_id`, `stream_type` 0 camera or 1
    screen) or a ZEGO `stream_id`, in `app_id` (default: the vendor's first app)."""

    user_id: str | None
    stream_type: int
    stream_id: str | None
    app_id: str | None


class Simulator:
    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        rng = random.Random(config.seed)
        self.rng = rng
        self.callbacks = CallbackQueue(config, clock, rng)
        self.world = World(clock, self.callbacks, rng)
        self.limiter = SlidingWindowLimiter()
        self.log = RequestLog(config.request_log_size)
        self.faults = Faults()
        self.legacy_tokens: dict[str, tuple[str, float]] = {}  # access token -> (app id, expiry)
        self.missing_files: set[str] = set()
        self.in_process = True  # serve() clears it: faults then act on real sockets
        self._ids = itertools.count(1)
        self.playing: _Playing | None = None

    # --- helpers for vendor modules -------------------------------------------------------------------

    def request_id(self) -> str:
        return f"sim{int(self.clock.now())}{next(self._ids):08d}"

    def allow(self, vendor: str, app_id: str, api: str) -> bool:
        limit = self.config.rate_limit(vendor, api)
        return self.limiter.try_acquire(vendor, app_id, api, limit, self.clock.now(), window_at=self._window_time())

    def _window_time(self) -> float:
        """Where the rate limits' 1-second window is. A vendor counts requests per real second: on a fake clock
        served over sockets (`capctl sim --fake-clock`), whose time moves only when told, the window also moves
        with real time, or a client paced at the limit would stay throttled until the next advance. In-process
        (tests), the fake clock alone moves it, so a test decides exactly which call is throttled."""
        now = self.clock.now()
        if isinstance(self.clock, FakeClock) and not self.in_process:
            return now + time.monotonic()
        return now

    async def call(
        self,
        request: Request,
        *,
        style: VendorStyle,
        api: str,
        query: dict[str, Any],
        body: Any,
        process: Callable[[], Reply],
    ) -> Response:
        """Log the call, apply faults, run `process` (auth, limits, validation, action), answer."""
        entry = self.log.add(
            time=self.clock.now(),
            vendor=style.vendor,
            api=api,
            method=request.method,
            path=received_path(request),
            query=query,
            body=body,
        )
        entry.caller = request.scope.get(CALLER_KEY)
        self.world.coverage.call(api, self._room_of(style.vendor, query, body), entry.time)
        decision = self.faults.decide(api)
        entry.fault = decision.failure
        if decision.delay_ms:
            await asyncio.sleep(decision.delay_ms / 1000)  # latency is real time, even on a fake clock
        if decision.failure in ("timeout", "drop") and not decision.after:
            return await self._lose_answer(decision.failure)
        if decision.failure == "throttle":
            app = str(query.get("AppId") or (body.get("AppId") if isinstance(body, dict) else "") or "")
            self.limiter.record(Throttle(self.clock.now(), style.vendor, app, api, forced=True))
            reply = style.throttled(self.request_id())
        elif decision.failure == "error":
            reply = style.internal_error(self.request_id())
        else:
            reply = process()
        entry.status, entry.code, entry.throttled = reply.status, reply.code, reply.throttled
        if decision.after and decision.failure is not None:
            return await self._lose_answer(decision.failure)
        return JSONResponse(reply.body, status_code=reply.status)

    def _room_of(self, vendor: str, query: dict[str, Any], body: Any) -> RoomKey | None:
        """The room a vendor call concerns, for the calls-per-room-hour figures (None: no single room)."""
        fields = {**query, **(body if isinstance(body, dict) else {})}
        if vendor == VOLC:
            app, room = fields.get("AppId"), fields.get("RoomId")
            return (VOLC, str(app), str(room)) if app and room else None
        task_id = fields.get("TaskId") or fields.get("task_id")
        task = self.world.zego_tasks.get(str(task_id)) if task_id else None
        if task is not None:
            return (ZEGO, task.app_id, task.room_id)
        app, room = fields.get("AppId") or fields.get("app_id"), fields.get("RoomId") or fields.get("room_id")
        return (ZEGO, str(app), str(room)) if app and room else None

    async def _lose_answer(self, failure: str) -> Response:
        if failure == "timeout":
            if self.in_process:
                raise httpx.ReadTimeout("simulated timeout: the vendor did not answer")
            await asyncio.sleep(self.faults.config.hang_seconds)
        return _DroppedResponse(self.in_process)

    # --- the world, for tests and the control API -----------------------------------------------------

    def default_app(self, vendor: str) -> str:
        if vendor == VOLC:
            return self.config.volcengine_apps[0].app_id
        if vendor == ZEGO:
            return str(self.config.zego_apps[0].app_id)
        raise SimError(f"vendor: must be '{VOLC}' or '{ZEGO}', got {vendor!r}")

    def _stream(self, vendor: str, stream: StreamArgs) -> tuple[str, str, str]:
        """(app id, stream key, user) of a stream named the way its vendor names one."""
        user_id, stream_id = stream.get("user_id"), stream.get("stream_id")
        if vendor == VOLC:
            if not user_id:
                raise SimError("userId: required for volcengine streams")
            stream_type = stream.get("stream_type", 0)
            if stream_type not in (0, 1):
                raise SimError("streamType: must be 0 (camera) or 1 (screen)")
            key, user = volc_stream_key(user_id, stream_type), user_id
        elif not stream_id:
            raise SimError("streamId: required for zego streams")
        else:
            key, user = stream_id, user_id or stream_id
        return stream.get("app_id") or self.default_app(vendor), key, user

    def create_room(self, vendor: str, room_id: str, app_id: str | None = None) -> None:
        self.world.room(vendor, app_id or self.default_app(vendor), room_id)

    def publish(self, vendor: str, room_id: str, **stream: Unpack[StreamArgs]) -> bool:
        app_id, key, user = self._stream(vendor, stream)
        return self.world.publish(vendor, app_id, room_id, key, user)

    def unpublish(self, vendor: str, room_id: str, **stream: Unpack[StreamArgs]) -> bool:
        app_id, key, _ = self._stream(vendor, stream)
        return self.world.unpublish(vendor, app_id, room_id, key)

    def tasks(self, vendor: str | None = None) -> list[SimTask]:
        return [t for t in self.world.all_tasks() if vendor is None or t.vendor == vendor]

    def find_task(self, vendor: str, task_id: str, room_id: str | None = None, app_id: str | None = None) -> SimTask:
        app = app_id or self.default_app(vendor)
        if vendor == VOLC:
            if room_id is None:
                raise SimError("roomId: required to find a volcengine task")
            task = self.world.volc_task(app, room_id, task_id)
        else:
            task = self.world.zego_task(app, task_id)
        if task is None:
            raise SimError(f"taskId: no {vendor} task {task_id!r}")
        return task

    def stop_task(
        self,
        vendor: str,
        task_id: str,
        *,
        room_id: str | None = None,
        app_id: str | None = None,
        reason: str | int | None = None,
    ) -> SimTask:
        """Stop a running task out of band, as if the vendor ended it."""
        task = self.find_task(vendor, task_id, room_id, app_id)
        if not task.running:
            raise SimError(f"taskId: {task_id!r} has already ended")
        problem = out_of_band_problem(task.family, reason)
        if problem is not None:
            raise SimError(f"reason: {problem}")
        self.world.stop_out_of_band(task, reason)
        return task

    # --- scenarios ------------------------------------------------------------------------------------

    def load_scenario(self, scenario: Scenario) -> dict[str, Any]:
        """Start playing `scenario` now: its rooms exist from now on, its traffic follows its timeline."""
        app_id = scenario.app_id or self.default_app(scenario.vendor)
        if (scenario.vendor == VOLC and self.config.volc_app(app_id) is None) or (
            scenario.vendor == ZEGO
            and (not (app_id.isascii() and app_id.isdigit()) or self.config.zego_app(int(app_id)) is None)
        ):
            raise SimError(f"app_id: no {scenario.vendor} app {app_id!r} in this simulator")
        if self.playing is not None and not self.scenario_finished():
            raise SimError("scenario: one is still playing (POST /_sim/reset first)")
        self.world.catch_up()
        actions = timeline(scenario)
        self.playing = _Playing(scenario, self.clock.now(), len(actions))
        for index in range(scenario.rooms):
            self.world.room(scenario.vendor, app_id, scenario.room_id(index))
        self.world.traffic_played = 0
        self.world.schedule_traffic(scenario.vendor, app_id, self.playing.start, actions)
        self.world.coverage.expected_jobs[scenario.vendor] = list(scenario.jobs)
        self.callbacks.set_chaos(scenario.callbacks, seed=scenario.seed)
        return self.scenario_status()

    def scenario_status(self) -> dict[str, Any]:
        p = self.playing
        if p is None:
            return {"scenario": None}
        return {
            "scenario": p.scenario.model_dump(),
            "start": p.start,
            "end": p.end,
            "actions": p.actions,
            "played": self.world.traffic_played,
            "finished": self.scenario_finished(),
        }

    def scenario_finished(self) -> bool:
        p = self.playing
        return p is not None and self.world.traffic_played >= p.actions and self.clock.now() >= p.end

    def coverage(self, until: float | None = None) -> dict[str, Any]:
        """The ground-truth report from the last reset to now (or to `until`, e.g. a scenario's end)."""
        self.world.catch_up()
        now = self.clock.now()
        return self.world.coverage.report(now if until is None else min(now, until))

    @property
    def throttled(self) -> list[Throttle]:
        return list(self.limiter.throttled)

    async def deliver_due(self) -> int:
        """Process due world events and send every callback due now; returns the attempts made."""
        if self.config.volcengine_callback_url is not None:
            self.world.settle_images()
        else:
            self.world.catch_up()
        return await self.callbacks.deliver_due()

    async def advance(self, seconds: float) -> None:
        """Move a fake clock forward, stepping through every due event and callback retry on the way."""
        if not isinstance(self.clock, FakeClock):
            raise SimError("advance: the simulator is not running on a fake clock")
        if not 0 <= seconds <= MAX_ADVANCE:  # NaN too: it would never reach its target
            raise SimError(f"advance: seconds must be from 0 to {MAX_ADVANCE:.0f} (a year), got {seconds:g}")
        target = self.clock.now() + seconds
        while True:
            dues = [d for d in (self.world.next_due(), self.callbacks.next_due()) if d is not None]
            step = min(dues, default=None)
            if step is None or step > target:
                break
            self.clock.set(step)
            self.world.catch_up()
            await self.callbacks.deliver_due()
        self.clock.set(target)
        await self.deliver_due()

    def reset(self) -> None:
        self.playing = None
        self.world.reset()
        self.callbacks.reset()
        self.limiter.reset()
        self.log.clear()
        self.faults = Faults()
        self.legacy_tokens.clear()
        self.missing_files.clear()
