"""The simulated world: apps, rooms, users, streams and the capture tasks that watch them.

Time is evaluated lazily: nothing ticks. A task keeps the time it went idle and the time of its next image;
deadlines (idle timeout, max record time, ZEGO "room has zero streams" reminders, thumbnail results) sit in
one heap and are processed in time order by `catch_up()`, which every request calls first. Image counts
are computed arithmetically, so advancing a fake clock by hours over 10,000 tasks stays cheap.
The world does no I/O: events leave through an `EventSink` (the callback queue).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler.clock import Clock
from reconciler.sim.config import VOLC, ZEGO, ZEGO_LEGACY
from reconciler.sim.coverage import QUIT_IDLE, QUIT_MAX_RECORD, Coverage
from reconciler.sim.scenario import Action

__all__ = ["ZEGO_ENDED_ABNORMALLY", "Room", "SimTask", "StopOutcome", "World", "out_of_band_problem", "volc_stream_key"]

RETENTION_SECONDS = 72 * 3600  # GetSnapshotTask / DescribeRecordStatus answer for tasks of the last 3 days
ZERO_STREAM_PERIOD = 30.0  # ZEGO event_type 4: within 30 s of the room emptying, then every 30 s
THUMBNAIL_DELAY = 2.0  # seconds from a MediaThumbnails request to its result callback
HUAWEI_SAMPLE_COUNT = 5  # the simulator's recorded files are 5 samples long

# Volcengine's main stream type; its publishing is announced by User{Video,Audio}StreamStart (docs/simulator.md).
VOLC_MAIN_STREAM = 0
VOLC_STREAM_STARTS = ("UserVideoStreamStart", "UserAudioStreamStart")
VOLC_STREAM_STOPS = ("UserVideoStreamStop", "UserAudioStreamStop")

# Vendor status numbers (vendor-apis.md).
VOLC_RUNNING, VOLC_ENDED = 2, 3
ZEGO_RECORDING, ZEGO_ENDED, ZEGO_ENDED_ABNORMALLY = 2, 3, 4
QUIT_INTERNAL = 1001
# What a vendor says of a run it ended (vendor-apis.md): Volcengine's StopReason values, ZEGO's quit_reason
# 1..6 and 1001 and up (internal). An out-of-band stop takes only these, so no answer says what the vendor never does.
VOLC_STOP_REASONS = ("IdleTimeOut", "StopByAPI", "StartTaskFailed", "UserDisconnect", "UnknownStopReason")
ZEGO_QUIT_REASONS = "1..6 or 1001 and up"
# ZEGO cloud-recording callback event types.
EVENT_ABNORMAL_END, EVENT_ZERO_STREAMS, EVENT_NORMAL_EXIT = 2, 4, 5


class EventSink(Protocol):
    """Where the world's observable events go (the callback queue in the app; a list in unit tests)."""

    def wants_images(self, vendor: str) -> bool: ...

    def volc_event(self, app_id: str, event_type: str, data: dict[str, Any], at: float) -> None: ...

    def zego_record_event(self, task: SimTask, event_type: int, detail: dict[str, Any], at: float) -> None: ...

    def zego_thumbnail(
        self, app_id: str, task_id: str, vendor: str, pics: list[dict[str, Any]], at: float, file_id: str = ""
    ) -> None: ...

    def zego_room_event(self, app_id: str, event: str, fields: dict[str, Any], at: float) -> None: ...


def out_of_band_problem(family: str, reason: str | int | None) -> str | None:
    """Why `reason` cannot end a task of `family` out of band (None: it can; no reason is the vendor's default)."""
    if reason is None:
        return None
    if family == VOLC:
        if reason in VOLC_STOP_REASONS and isinstance(reason, str):
            return None
        return f"a Volcengine StopReason is one of {', '.join(VOLC_STOP_REASONS)}, got {reason!r}"
    if isinstance(reason, int) and not isinstance(reason, bool) and (1 <= reason <= 6 or reason >= QUIT_INTERNAL):
        return None
    return f"a ZEGO quit_reason is an integer {ZEGO_QUIT_REASONS}, got {reason!r}"


def volc_stream_key(user_id: str, stream_type: int) -> str:
    return f"{user_id}/{stream_type}"


def volc_stream_events(stream_key: str, *, published: bool) -> tuple[str, ...]:
    """The Volcengine stream callbacks of a stream being published or unpublished: a main stream (StreamType 0,
    camera and microphone) announces its video and its audio; a screen stream (1) nothing, as no source
    corroborates the names of its events."""
    if not stream_key.endswith(f"/{VOLC_MAIN_STREAM}"):
        return ()
    return VOLC_STREAM_STARTS if published else VOLC_STREAM_STOPS


def key_of(room: Room) -> tuple[str, str, str]:
    return (room.vendor, room.app_id, room.room_id)


@dataclass(eq=False)
class SimTask:
    """One run of a vendor task. `family` is VOLC, ZEGO (Action API) or ZEGO_LEGACY."""

    family: str
    app_id: str
    room_id: str
    task_id: str
    targets: frozenset[str] | None  # stream keys; None = every stream in the room
    max_idle: float
    max_record: float | None
    interval: int | None  # seconds between images; None for recordings that take none
    start_time: float
    status: int
    business_id: str = ""
    client_task_id: str | None = None
    end_time: float | None = None
    stop_reason: str = ""  # Volcengine StopReason
    quit_reason: int | None = None  # ZEGO detail.quit_reason
    images: int = 0
    next_image: float | None = None
    active: int = 0  # relevant streams published right now
    idle_since: float | None = None
    gen: int = 0  # bumped whenever scheduled idle events become stale
    last_stream: str = ""
    callback_url: str | None = None  # ZEGO callback_url: this task's events go there, not to the app's URL
    settings: dict[str, Any] = field(default_factory=dict)  # start-time settings an update may not change
    # ZEGO: each stream published while the recording ran -> (its user, when it was first recorded): its files.
    recorded: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.end_time is None

    @property
    def vendor(self) -> str:
        return VOLC if self.family == VOLC else ZEGO

    def relevant(self, stream_key: str) -> bool:
        return self.targets is None or stream_key in self.targets

    def as_json(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "api": "legacy" if self.family == ZEGO_LEGACY else "current" if self.family == ZEGO else "snapshot",
            "appId": self.app_id,
            "roomId": self.room_id,
            "taskId": self.task_id,
            "clientTaskId": self.client_task_id,
            "state": "running" if self.running else "ended",
            "status": self.status,
            "stopReason": self.stop_reason,
            "quitReason": self.quit_reason,
            "startTime": self.start_time,
            "endTime": self.end_time,
            "interval": self.interval,
            "maxIdleTime": self.max_idle,
            "maxRecordTime": self.max_record,
            "images": self.images,
            "activeStreams": self.active,
            "idleSince": self.idle_since,
        }


@dataclass(eq=False)
class Room:
    vendor: str
    app_id: str
    room_id: str
    streams: dict[str, str] = field(default_factory=dict)  # stream key -> user id
    tasks: set[SimTask] = field(default_factory=set)  # running tasks only
    session_id: int = 0  # ZEGO room_session_id / room_seq: new each time the room is created again
    stream_seq: int = 0  # ZEGO stream_seq: +1 per change of the room's stream list
    # ZEGO: each published stream's DescribeSimpleStreamList CreateTime (s) and StreamNumberId (per room, from 1).
    listed: dict[str, tuple[float, int]] = field(default_factory=dict)
    numbered: int = 0

    def users(self) -> set[str]:
        return set(self.streams.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "appId": self.app_id,
            "roomId": self.room_id,
            "streams": [{"stream": k, "userId": u} for k, u in sorted(self.streams.items())],
            "users": sorted(self.users()),
            "runningTasks": sorted(t.task_id for t in self.tasks),
        }


@dataclass(frozen=True)
class _Event:
    kind: str  # "idle" | "max" | "zero" | "thumb" | "play" (scenario traffic)
    task: SimTask | None = None
    gen: int = 0
    payload: dict[str, Any] | None = None


class StopOutcome:
    STOPPED = "stopped"
    UNKNOWN = "unknown"
    ENDED = "ended"


class World:
    def __init__(self, clock: Clock, sink: EventSink, rng: random.Random) -> None:
        self._clock = clock
        self._sink = sink
        self._rng = rng
        self.reset()

    def reset(self) -> None:
        self.rooms: dict[tuple[str, str, str], Room] = {}
        self.volc_tasks: dict[tuple[str, str, str], SimTask] = {}
        self.zego_tasks: dict[str, SimTask] = {}
        self._client_ids: dict[tuple[str, str], SimTask] = {}
        self._heap: list[tuple[float, int, _Event]] = []
        self._seq = itertools.count()
        self.running_count = 0
        self.traffic_played = 0
        self.coverage = Coverage(self.now())

    # --- time -----------------------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock.now()

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def catch_up(self) -> None:
        """Process every scheduled event due by now, each at its own due time."""
        now = self.now()
        while self._heap and self._heap[0][0] <= now:
            due, _, event = heapq.heappop(self._heap)
            self._handle(due, event)

    def settle_images(self) -> None:
        """Bring every running task's image count (and image callbacks) up to now."""
        self.catch_up()
        now = self.now()
        for room in self.rooms.values():
            for task in room.tasks:
                self._settle(task, now, room)

    def _schedule(self, due: float, event: _Event) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), event))

    def _handle(self, at: float, event: _Event) -> None:
        task = event.task
        if event.kind == "thumb":
            assert event.payload is not None
            self._sink.zego_thumbnail(at=at, **event.payload)
            return
        if event.kind == "play":
            assert event.payload is not None
            self._play(at, event.payload["room"], event.payload["action"])
            return
        if task is None or not task.running:
            return
        if event.kind == "max":
            self._end(task, at, stop_reason="", status=ZEGO_ENDED_ABNORMALLY, quit_reason=QUIT_MAX_RECORD)
        elif event.gen != task.gen or task.active:
            return
        elif event.kind == "idle":
            if task.family == VOLC:
                self._end(task, at, stop_reason="IdleTimeOut", status=VOLC_ENDED)
            else:
                self._end(task, at, stop_reason="", status=ZEGO_ENDED_ABNORMALLY, quit_reason=QUIT_IDLE)
        elif event.kind == "zero":
            self._sink.zego_record_event(task, EVENT_ZERO_STREAMS, {}, at)
            self._schedule_zero_reminder(task, at)

    # --- rooms and streams ----------------------------------------------------------------------------

    def room(self, vendor: str, app_id: str, room_id: str) -> Room:
        key = (vendor, app_id, room_id)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(vendor, app_id, room_id)
            self.coverage.room_seen(key, self.now())
        return room

    def publish(self, vendor: str, app_id: str, room_id: str, stream_key: str, user_id: str) -> bool:
        """Publish a stream (the user joins if it is their first); False if it was already published."""
        self.catch_up()
        return self._publish(self.room(vendor, app_id, room_id), stream_key, user_id, self.now())

    def _publish(self, room: Room, stream_key: str, user_id: str, now: float) -> bool:
        vendor = room.vendor
        if stream_key in room.streams:
            return False
        joined = user_id not in room.users()
        if not room.streams and vendor == ZEGO:
            room.session_id = self._rng.getrandbits(62)
            self._zego_room_event(room, "room_create", now, id_name=user_id)
        room.streams[stream_key] = user_id
        self.coverage.streams(key_of(room), len(room.streams), now)
        if vendor == VOLC:
            joins = ("UserJoinRoom",) if joined else ()
            self._volc_user_events(room, user_id, now, *joins, *volc_stream_events(stream_key, published=True))
        if vendor == ZEGO:
            room.numbered += 1
            room.listed[stream_key] = (now, room.numbered)
            if joined:
                self._zego_room_event(room, "room_login", now, user=user_id)
            self._zego_room_event(room, "stream_create", now, user=user_id, stream=stream_key)
        for task in room.tasks:
            if task.family != VOLC:
                task.recorded.setdefault(stream_key, (user_id, now))
            if task.relevant(stream_key):
                task.active += 1
                if task.active == 1:
                    self._wake(task, now)
        return True

    def unpublish(self, vendor: str, app_id: str, room_id: str, stream_key: str) -> bool:
        """Unpublish a stream (the user leaves with their last one); False if it was not published."""
        self.catch_up()
        room = self.rooms.get((vendor, app_id, room_id))
        return room is not None and self._unpublish(room, stream_key, self.now())

    def _unpublish(self, room: Room, stream_key: str, now: float) -> bool:
        vendor, app_id, room_id = key_of(room)
        if stream_key not in room.streams:
            return False
        user_id = room.streams.pop(stream_key)
        room.listed.pop(stream_key, None)
        self.coverage.streams(key_of(room), len(room.streams), now)
        for task in room.tasks:
            if task.relevant(stream_key):
                self._settle(task, now, room, leaving=stream_key)
                task.active -= 1
                if task.active == 0:
                    self._go_idle(task, now)
        left = user_id not in room.users()
        if vendor == VOLC:
            leaves = ("UserLeaveRoom",) if left else ()
            self._volc_user_events(room, user_id, now, *volc_stream_events(stream_key, published=False), *leaves)
            if left and not room.streams:
                self._sink.volc_event(app_id, "RoomDestroy", {"RoomId": room_id}, now)
        if vendor == ZEGO:
            self._zego_room_event(room, "stream_close", now, user=user_id, stream=stream_key)
            if left:
                self._zego_room_event(room, "room_logout", now, user=user_id)
            if not room.streams:
                self._zego_room_event(room, "room_close", now)
        return True

    def _volc_user_events(self, room: Room, user_id: str, at: float, *events: str) -> None:
        """Volcengine's user and stream callbacks, EventData `{RoomId, UserId, Timestamp (ms)}`."""
        data = {"RoomId": room.room_id, "UserId": user_id, "Timestamp": int(at * 1000)}
        for event in events:
            self._sink.volc_event(room.app_id, event, data, at)

    def _zego_room_event(
        self, room: Room, event: str, at: float, *, user: str = "", stream: str = "", id_name: str = ""
    ) -> None:
        """A ZEGO room or stream callback with the fields ZEGO's callback pages list (docs/simulator.md)."""
        ms = int(at * 1000)
        fields: dict[str, Any] = {"room_id": room.room_id}
        if event in ("room_create", "room_close"):
            fields["room_session_id"] = room.session_id
            if event == "room_create":
                fields.update(room_create_time=str(ms), id_name=id_name)
            else:
                fields.update(close_reason=0, room_close_time=str(ms))
        elif event in ("room_login", "room_logout"):
            fields.update(room_seq=str(room.session_id), user_account=user, user_nickname=user, session_id="0")
            if event == "room_login":
                fields.update(room_name=room.room_id, login_time=ms)
            else:
                fields.update(logout_time=ms, reason=0)
        else:
            room.stream_seq += 1
            fields.update(
                room_session_id=str(room.session_id),
                channel_id=room.room_id,
                user_id=user,
                user_name=user,
                stream_id=stream,
                stream_alias=stream,
                stream_sid=f"s-{room.session_id}-{stream}",
                stream_seq=str(room.stream_seq),
            )
            if event == "stream_create":
                fields.update(title="", create_time=str(int(at)), create_time_ms=str(ms), extra_info="")
            else:
                fields["type"] = "0"
        self._sink.zego_room_event(room.app_id, event, fields, at)

    def schedule_traffic(self, vendor: str, app_id: str, start: float, actions: list[Action]) -> None:
        """Queue a scenario's publishes and unpublishes with the world's own events, so each happens at its
        time in order with idle timeouts (on a fake clock exactly; on a real one when next caught up)."""
        for action in actions:
            room = self.room(vendor, app_id, action.room_id)
            self._schedule(start + action.at, _Event("play", payload={"room": room, "action": action}))

    def _play(self, at: float, room: Room, action: Action) -> None:
        self.traffic_played += 1
        key = volc_stream_key(action.user_id, int(action.stream)) if room.vendor == VOLC else action.stream
        if action.publish:
            self._publish(room, key, action.user_id, at)
        else:
            self._unpublish(room, key, at)

    def _wake(self, task: SimTask, now: float) -> None:
        task.gen += 1
        task.idle_since = None
        if task.interval is not None:
            task.next_image = now

    def _go_idle(self, task: SimTask, now: float) -> None:
        task.gen += 1
        task.idle_since = now
        task.next_image = None
        if task.family == ZEGO:  # scheduled first: due with the idle end, it is sent before it
            self._schedule_zero_reminder(task, now, first=True)
        self._schedule(now + task.max_idle, _Event("idle", task, task.gen))

    def _schedule_zero_reminder(self, task: SimTask, now: float, *, first: bool = False) -> None:
        """ZEGO event_type 4 "is triggered within 30 seconds after the number of streams in the room becomes zero",
        then every 30 s "until a stream is detected or the task times out" (recording-status-callback, docs_all):
        the first one also when the idle end falls at that instant (the default MaxIdleTime, 30 s), before it; no
        reminder at the end itself. When in the 30 s the first comes is not said: the simulator sends it at 30 s."""
        assert task.idle_since is not None
        due, end = now + ZERO_STREAM_PERIOD, task.idle_since + task.max_idle
        if due < end or (first and due == end):
            self._schedule(due, _Event("zero", task, task.gen))

    def _settle(self, task: SimTask, until: float, room: Room, leaving: str | None = None) -> None:
        """Count the images taken before `until` (images at next_image, next_image + interval, ...)."""
        if task.next_image is None or task.interval is None or until <= task.next_image:
            return
        n = math.ceil((until - task.next_image) / task.interval)
        if self._sink.wants_images(task.family):
            stream_key = leaving or self._image_stream(task, room)
            for k in range(n):
                self._emit_image(task, task.next_image + k * task.interval, stream_key)
        task.images += n
        task.next_image += n * task.interval

    def _image_stream(self, task: SimTask, room: Room) -> str:
        """The stream an image is attributed to: the first relevant one published (images count per task)."""
        keys = [k for k in room.streams if task.relevant(k)]
        return min(keys) if keys else task.last_stream

    def _emit_image(self, task: SimTask, at: float, stream_key: str) -> None:
        user_id, _, kind = stream_key.rpartition("/")
        stream_type = int(kind) if kind.isdigit() else 0
        ts = int(at * 1000)
        data = {
            "AppId": task.app_id,
            "BusinessId": task.business_id,
            "RoomId": task.room_id,
            "TaskId": task.task_id,
            "UserId": user_id,
            "StreamType": stream_type,
            "ObjectKey": f"{task.task_id}/{user_id}_{stream_type}_{ts}.jpg",
            "Timestamp": ts,
        }
        task.last_stream = stream_key
        self._sink.volc_event(task.app_id, "SnapshotRealTimeData", data, at)

    # --- task lifecycle -------------------------------------------------------------------------------

    def _register(self, task: SimTask) -> None:
        room = self.room(task.vendor, task.app_id, task.room_id)
        room.tasks.add(task)
        self.running_count += 1
        self.coverage.run(task)
        task.active = sum(1 for k in room.streams if task.relevant(k))
        if task.family != VOLC:
            task.recorded = {k: (user, task.start_time) for k, user in room.streams.items()}
        if task.active:
            self._wake(task, task.start_time)
        else:
            self._go_idle(task, task.start_time)
        if task.max_record is not None:
            self._schedule(task.start_time + task.max_record, _Event("max", task))

    def _end(self, task: SimTask, at: float, *, stop_reason: str, status: int, quit_reason: int | None = None) -> None:
        room = self.room(task.vendor, task.app_id, task.room_id)
        self._settle(task, at, room)
        task.end_time = at
        task.status = status
        task.stop_reason = stop_reason
        task.quit_reason = quit_reason
        task.next_image = None
        task.gen += 1
        room.tasks.discard(task)
        self.running_count -= 1
        if task.family != ZEGO:
            return  # no end events for Volcengine snapshots; legacy tasks: UNCONFIRMED, we send none
        if quit_reason is None:
            self._sink.zego_record_event(task, EVENT_NORMAL_EXIT, {}, at)
        else:
            self._sink.zego_record_event(task, EVENT_ABNORMAL_END, {"quit_reason": quit_reason}, at)

    def _recent(self, task: SimTask | None) -> SimTask | None:
        if task is None or task.start_time < self.now() - RETENTION_SECONDS:
            return None
        return task

    def _refresh(self, task: SimTask) -> None:
        if task.running:
            self._settle(task, self.now(), self.room(task.vendor, task.app_id, task.room_id))

    # --- Volcengine -----------------------------------------------------------------------------------

    def start_volc(
        self,
        app_id: str,
        room_id: str,
        task_id: str,
        *,
        business_id: str,
        targets: frozenset[str] | None,
        max_idle: int,
        interval: int,
        settings: dict[str, Any],
    ) -> bool:
        """Start a snapshot task; False when that TaskId is already running (the vendor's idempotency)."""
        self.catch_up()
        key = (app_id, room_id, task_id)
        existing = self.volc_tasks.get(key)
        if existing is not None and existing.running:
            return False
        task = SimTask(
            VOLC,
            app_id,
            room_id,
            task_id,
            targets,
            max_idle,
            None,
            interval,
            self.now(),
            VOLC_RUNNING,
            business_id=business_id,
            settings=settings,
        )
        self.volc_tasks[key] = task
        self._register(task)
        return True

    def volc_task(self, app_id: str, room_id: str, task_id: str) -> SimTask | None:
        """The task of that id, however long ago it started: Stop and Update act on a running task of any age
        (only GetSnapshotTask has a query window, `queried_volc_task`)."""
        self.catch_up()
        task = self.volc_tasks.get((app_id, room_id, task_id))
        if task is not None:
            self._refresh(task)
        return task

    def queried_volc_task(self, app_id: str, room_id: str, task_id: str) -> SimTask | None:
        """GetSnapshotTask's view: tasks started in the last 72 h only (vendor-apis.md)."""
        return self._recent(self.volc_task(app_id, room_id, task_id))

    def running_volc_task(self, app_id: str, room_id: str, task_id: str) -> SimTask | None:
        task = self.volc_task(app_id, room_id, task_id)
        return task if task is not None and task.running else None

    def update_interval(self, task: SimTask, interval: int) -> None:
        now = self.now()
        self._settle(task, now, self.room(task.vendor, task.app_id, task.room_id))
        old, task.interval = task.interval, interval
        if task.next_image is not None and old is not None:
            task.next_image = max(now, task.next_image - old + interval)

    def stop_volc(self, task: SimTask) -> None:
        self._end(task, self.now(), stop_reason="StopByAPI", status=VOLC_ENDED)

    # --- ZEGO -----------------------------------------------------------------------------------------

    def new_zego_task_id(self) -> str:
        while True:
            task_id = f"{self._rng.getrandbits(64):016x}"
            if task_id not in self.zego_tasks:
                return task_id

    def start_zego(
        self,
        app_id: str,
        room_id: str,
        *,
        legacy: bool,
        max_idle: int,
        max_record: int,
        interval: int | None,
        client_task_id: str | None = None,
        callback_url: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> tuple[str, bool]:
        """Start a recording; with a ClientTaskId of a running task, return that task and start nothing.

        It watches every stream of the room, whatever its `record_stream_list`: ZEGO's max_idle_time counts
        from the moment the room has no stream at all (seed 003: "房间内没有任何流、白板之后多长时间自动停止云录制",
        "该参数仅当房间内无流、无白板时生效"), and so does event_type 4 (room has zero streams)."""
        self.catch_up()
        if client_task_id is not None:
            existing = self._client_ids.get((app_id, client_task_id))
            if existing is not None and existing.running:
                return existing.task_id, False
        task = SimTask(
            ZEGO_LEGACY if legacy else ZEGO,
            app_id,
            room_id,
            self.new_zego_task_id(),
            None,
            max_idle,
            max_record,
            interval,
            self.now(),
            ZEGO_RECORDING,
            client_task_id=client_task_id,
            callback_url=callback_url,
            settings=settings or {},
        )
        self.zego_tasks[task.task_id] = task
        if client_task_id is not None:
            self._client_ids[(app_id, client_task_id)] = task
        self._register(task)
        return task.task_id, True

    def zego_task(self, app_id: str, task_id: str) -> SimTask | None:
        self.catch_up()
        task = self._recent(self.zego_tasks.get(task_id))
        if task is None or task.app_id != app_id:
            return None
        self._refresh(task)
        return task

    def stop_zego(self, app_id: str, task_id: str) -> str:
        task = self.zego_task(app_id, task_id)
        if task is None:
            return StopOutcome.UNKNOWN
        if not task.running:
            return StopOutcome.ENDED
        self._end(task, self.now(), stop_reason="", status=ZEGO_ENDED)
        return StopOutcome.STOPPED

    def submit_thumbnails(self, app_id: str, vendor: str, offsets: list[float], file_id: str = "") -> str:
        """Accept a MediaThumbnails request; its result callback is due THUMBNAIL_DELAY seconds later."""
        task_id = f"thumb-{self._rng.getrandbits(64):016x}"
        base = f"https://sim.invalid/thumbnails/{task_id}"
        if vendor == "Tencent":
            pics = [{"url": f"{base}/{i}.jpg", "offset": int(o * 1000)} for i, o in enumerate(offsets)]
        else:
            pics = [{"url": f"{base}/{i}.jpg"} for i in range(HUAWEI_SAMPLE_COUNT)]
        payload = {
            "app_id": app_id,
            "task_id": task_id,
            "vendor": "tencent" if vendor == "Tencent" else "hw",
            "pics": pics,
            "file_id": file_id,
        }
        self._schedule(self.now() + THUMBNAIL_DELAY, _Event("thumb", payload=payload))
        return task_id

    # --- out of band ----------------------------------------------------------------------------------

    def stop_out_of_band(self, task: SimTask, reason: str | int | None) -> None:
        """End a running task as if the vendor stopped it (Volcengine StopReason / ZEGO quit_reason)."""
        if task.family == VOLC:
            stop_reason = reason if isinstance(reason, str) else "UnknownStopReason"
            self._end(task, self.now(), stop_reason=stop_reason, status=VOLC_ENDED)
        else:
            quit_reason = reason if isinstance(reason, int) else QUIT_INTERNAL
            self._end(task, self.now(), stop_reason="", status=ZEGO_ENDED_ABNORMALLY, quit_reason=quit_reason)

    def all_tasks(self) -> list[SimTask]:
        self.settle_images()
        return [*self.volc_tasks.values(), *self.zego_tasks.values()]
