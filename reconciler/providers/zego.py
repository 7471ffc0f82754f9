"""The ZEGO providers: cloud recording (current Action API and legacy v1) and MediaThumbnails.

One class per API family, all three on the shared `ZegoClient` core (pacing, signing, envelope, error
mapping). What differs lives here: URLs, body shapes, where the task id is in an answer, the legacy access
token, and which codes mean "not found" for which call. Jpg snapshot jobs on ZEGO are cloud recordings
with `jpg` output, so they use the recording classes too.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from typing import Any, Unpack

from reconciler.budget import Priority
from reconciler.clock import Clock
from reconciler.model import ApiFamily, DesiredTask, Observed, ObservedState, ProviderConfig, TaskRecord
from reconciler.providers.base import ErrorKind, StartResult, VendorError, vendor_id_ok
from reconciler.providers.zego_client import (
    COMMON_CODES,
    DEFAULT_RATE_LIMITS,
    LEGACY_ENVELOPE,
    TASK_ENDED,
    TASK_NOT_FOUND,
    ClientDeps,
    ZegoClient,
    field,
    observed_from_status,
)
from reconciler.providers.zego_signing import access_token_request
from reconciler.redact import secret_leaves
from reconciler.secrets import Hidden, Secret, reveal_tree
from reconciler.spec.errors import quote

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "ROOM_GONE",
    "ROOM_LIST_CODES",
    "THUMBNAIL_CODES",
    "ZegoLegacyRecordProvider",
    "ZegoRecordProvider",
    "ZegoThumbnailProvider",
    "thumbnail_params",
]

STOP_NOT_FOUND = frozenset({TASK_NOT_FOUND, TASK_ENDED})
QUERY_NOT_FOUND = frozenset({TASK_NOT_FOUND})
TOKEN_MARGIN = 300.0  # seconds: an obtained legacy token is replaced 5 min before it expires

# MediaThumbnails business codes (seed pages 002/004), on top of the common ones, with the seed's advice.
THUMBNAIL_CODES: dict[int, tuple[ErrorKind, str]] = {
    **COMMON_CODES,
    2: (ErrorKind.TERMINAL, "input parameter error"),
    3: (ErrorKind.TERMINAL, "related permissions not activated: ask ZEGO technical support to activate them"),
    4: (ErrorKind.TERMINAL, "CDN type mismatch: check the entry's cdn and fileId"),
    5: (ErrorKind.TERMINAL, "configuration error: ask ZEGO technical support"),
    6: (ErrorKind.THROTTLED, "request too frequent"),
    7: (ErrorKind.AUTH, "authentication failed"),  # the auth hint names the credential to check
    1000: (ErrorKind.TERMINAL, "request failed (also a wrong FileId): check fileId, else ask ZEGO technical support"),
    41003: (ErrorKind.TERMINAL, "file does not exist: check the entry's fileId and the file's format"),
}

# DescribeSimpleStreamList is a room-signalling API: its page lists 154, ZEGO's RTC server return codes
# (docs/providers-zego.md, "Room listing") the QPS limits and "room does not exist" (an empty room is destroyed).
ROOM_LIST_CODES: dict[int, tuple[ErrorKind, str]] = {
    **COMMON_CODES,
    154: (ErrorKind.RETRYABLE, "failed to get the stream list"),
    206: (ErrorKind.THROTTLED, "app QPS over the limit"),
    207: (ErrorKind.THROTTLED, "room QPS over the limit"),
}
ROOM_GONE = frozenset({104, 5024, 50001})


def _require_text(value: Any, api: str, where: str, client: ZegoClient, *, task_id: bool = True) -> str:
    """The text an answer names at `where`. A task id (`task_id`) no task can have (an escape sequence, 10 kB)
    is no answer: it would be stored, printed and sent back in every status query. An access token is only
    required to be text: it is a secret, never quoted."""
    if isinstance(value, str) and value and (not task_id or vendor_id_ok(value)):
        return value
    what = f"{where} {quote(value)} is no task id" if task_id and isinstance(value, str) and value else f"no {where}"
    error = VendorError(ErrorKind.RETRYABLE, "bad-answer", f"unexpected answer from {api}: {what}", api=api)
    raise error.named(client.config.name, client.config.type)


class _ZegoProvider:
    """Constructor, naming and the parts every ZEGO family shares."""

    family: ApiFamily

    def __init__(self, config: ProviderConfig, **deps: Unpack[ClientDeps]) -> None:
        self.name = config.name
        self._app_id = config.app_id
        self._clock = deps["clock"]
        self._client = ZegoClient(config, **deps)
        self._setup(config)

    def _setup(self, config: ProviderConfig) -> None:
        """Per-family attributes (endpoint URLs, token cache), derived from the config once."""

    async def update(self, task: DesiredTask, record: TaskRecord) -> None:
        raise VendorError(
            ErrorKind.TERMINAL,
            "unsupported",
            f"{task.key}: {self.family} has no in-place update; the task must be replaced (stop + start)",
            api=str(self.family),
        )

    async def room_streams(self, room: str) -> int:
        """DescribeSimpleStreamList on the RTC endpoint (POLL priority): the streams published in the room; a room
        that does not exist (ZEGO destroys one when its last user leaves) has none."""
        try:
            answer = await self._client.call(
                "DescribeSimpleStreamList",
                Priority.POLL,
                "GET",
                self._client.config.rtc_endpoint.rstrip("/") + "/",
                params=[("RoomId", room)],
                codes=ROOM_LIST_CODES,
                not_found=ROOM_GONE,
            )
        except VendorError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return 0
            raise
        streams = field(answer.get("Data"), "StreamList")
        return len(streams) if isinstance(streams, list) else 0

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is injected and owned by the caller."""


class _RecordingProvider(_ZegoProvider, abc.ABC):
    """Stop and observe from a record, shared by both recording generations."""

    _stop_api: str
    _query_api: str
    # The status answer's names of (status, begin ms, end ms, quit reason, room): each generation spells them
    # its way.
    _status_fields: tuple[str, str, str, str, str]

    @abc.abstractmethod
    async def _stop_task(self, task_id: str) -> None: ...

    @abc.abstractmethod
    async def _describe(self, task_id: str) -> Any:
        """The status answer's data object of one task; raises VendorError(NOT_FOUND) for unknown tasks."""

    async def stop(self, record: TaskRecord) -> None:
        await self._stop_task(self._task_id(record, self._stop_api))

    async def observe(self, record: TaskRecord) -> Observed:
        try:
            data = await self._describe(self._task_id(record, self._query_api))
        except VendorError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return Observed(ObservedState.NOT_FOUND, detail=exc.message)
            raise
        status, begin_ms, end_ms, quit_reason, room = (field(data, name) for name in self._status_fields)
        observed = observed_from_status(status, begin_ms, end_ms, record.max_duration, quit_reason)
        return dataclasses.replace(observed, room=room) if isinstance(room, str) else observed

    def _ref(self, task_id: str, room: str) -> dict[str, str]:
        """What a record keeps of a recording: its id, its room, and the app that started it (a ZEGO task id
        means something only to the app whose signature reaches it)."""
        return {"TaskId": task_id, "RoomId": room, "AppId": self._app_id}

    def _task_id(self, record: TaskRecord, api: str) -> str:
        task_id = record.vendor_task_id or record.vendor_ref.get("TaskId")
        if not task_id:
            raise VendorError(ErrorKind.NOT_FOUND, "no-task-id", f"{record.key}: no vendor task id recorded", api=api)
        app = record.vendor_ref.get("AppId", self._app_id)  # records made before capctl kept it: not known
        if app != self._app_id:
            # Asked through another app, ZEGO answers "no such task": the recording would be counted stopped
            # (and started again) while it runs on in the app that started it.
            raise VendorError(
                ErrorKind.TERMINAL,
                "ProviderAppChanged",
                f"Provider {self.name!r} now names app {self._app_id}, but this recording was started "
                f"in app {app}, which alone can observe or stop it: put that appId (and its serverSecret) back, "
                "declare the new app as a Provider of its own beside it, move the jobs to it and apply, then "
                "remove the old one (docs/providers-zego.md)",
                api=api,
            )
        return task_id


class ZegoRecordProvider(_RecordingProvider):
    """Cloud recording, current Action API: StartRecord / StopRecord / DescribeRecordStatus."""

    family = ApiFamily.ZEGO_RECORD
    _stop_api = "StopRecord"
    _query_api = "DescribeRecordStatus"
    _status_fields = ("Status", "RecordBeginTimestamp", "RecordEndTimestamp", "QuitReason", "RoomId")

    def _setup(self, config: ProviderConfig) -> None:
        self._url = config.cloudrecord_endpoint.rstrip("/") + "/"

    async def start(
        self, task: DesiredTask, client_task_id: str | None, *, priority: Priority = Priority.CHANGE
    ) -> StartResult:
        """StartRecord with `RecordInputParams.ClientTaskId`, so a repeated start finds the first task."""
        if client_task_id is None:
            raise ValueError(f"{task.key}: StartRecord needs a client_task_id (the idempotency key)")
        body = reveal_tree(task.request)
        body.setdefault("RecordInputParams", {})["ClientTaskId"] = client_task_id
        answer = await self._client.call(
            "StartRecord", priority, "POST", self._url, body=body, secrets=secret_leaves(task.request)
        )
        task_id = _require_text(field(answer, "Data", "TaskId"), "StartRecord", "Data.TaskId", self._client)
        return StartResult(task_id, self._ref(task_id, task.target), already_running=None)

    async def _stop_task(self, task_id: str) -> None:
        await self._client.call(
            "StopRecord", Priority.CHANGE, "POST", self._url, body={"TaskId": task_id}, not_found=STOP_NOT_FOUND
        )

    async def _describe(self, task_id: str) -> Any:
        answer = await self._client.call(
            "DescribeRecordStatus",
            Priority.POLL,
            "POST",
            self._url,
            body={"TaskId": task_id},
            not_found=QUERY_NOT_FOUND,
        )
        return answer.get("Data")


class _AccessTokens:
    """Legacy access tokens obtained with the server secret, cached in memory until shortly before expiry.

    One fetch at a time (a lock), so a burst of calls after expiry asks for one token, not many. Tokens
    are held as `Secret`s: they never print, and they never reach the state store.
    """

    def __init__(self, client: ZegoClient, clock: Clock, url: str) -> None:
        self._client = client
        self._clock = clock
        self._url = url
        self._lock = asyncio.Lock()
        self._token: Secret | None = None
        self._fresh_until = 0.0
        self._seq = itertools.count(1)

    async def get(self, priority: Priority) -> Secret:
        async with self._lock:
            # Freshness on the monotonic clock: `expires_in` is a duration, and a wall clock stepped back an hour
            # kept a dead token (a rejected call each) or stepped forward threw a live one away.
            if self._token is not None and self._clock.monotonic() < self._fresh_until:
                return self._token
            body = access_token_request(
                self._client.app_id,
                self._client.server_secret,
                self._clock.now(),
                seq=next(self._seq),
                random_bytes=self._client.random_bytes,
            )
            answer = await self._client.call(
                "access_token",
                priority,
                "POST",
                self._url,
                signed=False,
                body=body,
                envelope=LEGACY_ENVELOPE,
                secrets=[Secret(body["token"])],  # signed with the server secret: exchanged for access tokens
            )
            token = _require_text(
                field(answer, "data", "access_token"), "access_token", "data.access_token", self._client, task_id=False
            )
            expires_in = field(answer, "data", "expires_in")
            if isinstance(expires_in, bool) or not isinstance(expires_in, int):
                raise VendorError(
                    ErrorKind.RETRYABLE,
                    "bad-answer",
                    "unexpected answer from access_token: no data.expires_in",
                    api="access_token",
                ).named(self._client.config.name, self._client.config.type)
            self._token = Secret(token)
            self._fresh_until = self._clock.monotonic() + expires_in - TOKEN_MARGIN
            return self._token

    def invalidate(self, token: Secret) -> None:
        """Forget `token` after the vendor rejected it, unless another call already replaced it."""
        if self._token == token:
            self._token = None


class ZegoLegacyRecordProvider(_RecordingProvider):
    """Cloud recording, legacy v1 API (seed page 003): /access_token, /start, /query, /stop.

    No idempotency key exists, so `client_task_id` is ignored, and a start that may have reached the vendor
    without an answer is not retried (`ZegoClient.call(repeatable=False)`). A rejected obtained token
    (100000004/100000005) is refreshed and the call retried once.
    """

    family = ApiFamily.ZEGO_RECORD_LEGACY
    _stop_api = "stop"
    _query_api = "query"
    # UNCONFIRMED: the v1 query answer's field names; the Action API's in snake_case (vendor-apis.md).
    _status_fields = ("status", "record_begin_timestamp", "record_end_timestamp", "quit_reason", "room_id")

    def _setup(self, config: ProviderConfig) -> None:
        self._base = config.cloudrecord_endpoint.rstrip("/")
        self._given: Secret | None = config.access_token
        self._tokens = None if self._given else _AccessTokens(self._client, self._clock, self._base + "/access_token")

    async def start(
        self, task: DesiredTask, client_task_id: str | None, *, priority: Priority = Priority.CHANGE
    ) -> StartResult:
        answer = await self._call(
            "start", priority, reveal_tree(task.request), secrets=secret_leaves(task.request), repeatable=False
        )
        task_id = _require_text(answer.get("task_id"), "start", "task_id", self._client)
        return StartResult(task_id, self._ref(task_id, task.target))

    async def _stop_task(self, task_id: str) -> None:
        await self._call("stop", Priority.CHANGE, {"task_id": task_id}, not_found=STOP_NOT_FOUND)

    async def _describe(self, task_id: str) -> Any:
        answer = await self._call("query", Priority.POLL, {"task_id": task_id}, not_found=QUERY_NOT_FOUND)
        return answer.get("data")

    async def _call(
        self,
        api: str,
        priority: Priority,
        fields: Mapping[str, Any],
        *,
        not_found: frozenset[int] = frozenset(),
        secrets: Iterable[Hidden] = (),
        repeatable: bool = True,
    ) -> dict[str, Any]:
        token = await self._token(priority)
        send = (api, priority, fields, not_found, secrets, repeatable)
        try:
            return await self._send(token, *send)
        except VendorError as exc:
            if exc.kind is not ErrorKind.AUTH or self._tokens is None:
                raise
            self._tokens.invalidate(token)
        return await self._send(await self._token(priority), *send)

    async def _token(self, priority: Priority) -> Secret:
        if self._tokens is None:
            assert self._given is not None  # one of the two is always set
            return self._given
        try:
            return await self._tokens.get(priority)
        except VendorError as exc:
            # The call it was for was never sent: a start whose token's answer was lost started nothing.
            raise exc.before_sending() from None

    async def _send(
        self,
        token: Secret,
        api: str,
        priority: Priority,
        fields: Mapping[str, Any],
        not_found: frozenset[int],
        secrets: Iterable[Hidden],
        repeatable: bool,
    ) -> dict[str, Any]:
        body = {"app_id": self._client.app_id, "access_token": token.reveal(), **fields}
        return await self._client.call(
            api,
            priority,
            "POST",
            f"{self._base}/{api}",
            signed=False,
            body=body,
            envelope=LEGACY_ENVELOPE,
            not_found=not_found,
            credential="accessToken" if self._tokens is None else "serverSecret",
            secrets=[token, *secrets],
            repeatable=repeatable,
        )


def thumbnail_params(request: Mapping[str, Any]) -> list[tuple[str, str]]:
    """MediaThumbnails query parameters: a list becomes one repeated `Name[]` key per item."""
    params: list[tuple[str, str]] = []
    for key, value in request.items():
        if isinstance(value, list):
            name = key if key.endswith("[]") else f"{key}[]"
            params.extend((name, _query_value(item)) for item in value)
        else:
            params.append((key, _query_value(value)))
    return params


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class ZegoThumbnailProvider(_ZegoProvider):
    """MediaThumbnails: a one-shot submission; results arrive only by callback, and nothing can be stopped."""

    family = ApiFamily.ZEGO_THUMBNAIL

    def _setup(self, config: ProviderConfig) -> None:
        self._url = config.rtc_endpoint.rstrip("/") + "/"

    async def start(
        self, task: DesiredTask, client_task_id: str | None, *, priority: Priority = Priority.CHANGE
    ) -> StartResult:
        answer = await self._client.call(
            "MediaThumbnails",
            priority,
            "GET",
            self._url,
            params=thumbnail_params(reveal_tree(task.request)),
            codes=THUMBNAIL_CODES,
            secrets=secret_leaves(task.request),
        )
        data = answer.get("Data")
        # Seed 002 calls Tencent/Huawei arrays, its example and seed 004 objects: accept both.
        found = [_first(field(data, "Tencent")), _first(field(data, "Huawei"))]
        task_id = _require_text(
            field(found[0], "TaskId") or field(found[1], "task_id"),
            "MediaThumbnails",
            "Data.Tencent.TaskId or Data.Huawei.task_id",
            self._client,
        )
        return StartResult(task_id, {"TaskId": task_id, "FileId": task.target})

    async def stop(self, record: TaskRecord) -> None:
        """A submitted thumbnail task cannot be cancelled, and need not be: nothing to do."""

    async def observe(self, record: TaskRecord) -> Observed:
        """No status query exists for MediaThumbnails (results come by callback): never a call."""
        return Observed(ObservedState.UNKNOWN, detail="MediaThumbnails has no status query (one-shot)")


def _first(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value
