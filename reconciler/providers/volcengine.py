"""The Volcengine RTC snapshot provider: StartSnapshot / UpdateSnapshot / StopSnapshot / GetSnapshotTask.

The only code that talks to Volcengine's OpenAPI. It signs each request (volc_signing), paces it through
the account's rate budget, and turns every answer into either a result or a `VendorError` of the right
kind. It never retries: the executor owns retries and backoff. Facts come from shared/vendor-apis.md
and the StartSnapshot seed pages.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from reconciler import stopreasons
from reconciler.budget import BudgetRegistry, Priority, RateBudget
from reconciler.clock import Clock
from reconciler.jsonlimits import load_json
from reconciler.model import ApiFamily, DesiredTask, Observed, ObservedState, ProviderConfig, TaskRecord
from reconciler.providers.base import ErrorKind, StartResult, VendorError, seconds_of_ms, status_text, vendor_int
from reconciler.providers.family import VOLCENGINE
from reconciler.providers.transport import transport_error
from reconciler.providers.volc_signing import sign_callback, sign_request, verify_callback
from reconciler.redact import scrub_text, secret_leaves
from reconciler.secrets import Hidden, Secret, reveal_tree
from reconciler.spec.errors import quote as quote_value
from reconciler.stopreasons import Phrase

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "STOP_REASONS",
    "VolcengineSnapshotProvider",
    "classify_error",
    "observed_from_snapshot_task",
    "sign_callback",
    "stop_reason_of",
    "verify_callback",
]

VERSION = "2023-11-01"
SERVICE = "rtc"
START, UPDATE, STOP, QUERY = "StartSnapshot", "UpdateSnapshot", "StopSnapshot", "GetSnapshotTask"
ROOMS = "GetRoomOnlineUsers"
# Documented per-second limits (`family.VOLCENGINE`); ProviderConfig.rate_limits overrides them.
DEFAULT_RATE_LIMITS: Mapping[str, float] = VOLCENGINE.rate_limits

NOT_FOUND_CODE = "InvalidParameter.ErrorActiveTaskNotFound"
# StartSnapshot with the TaskId of a running task succeeds and says so in Result.
ALREADY_STARTED = "The task has been started"
_CODE_LIMIT = 80  # an error code is a dotted word; one that echoes the request is cut (and scrubbed) like a message
_AUTH_HINTS = {
    "SignatureDoesNotMatch": "check the provider's secretKey",
    "MissingSignature": "check the provider's accessKey and secretKey",
    "InvalidAccessKey": "check the provider's accessKey",
    "InvalidTimestamp": "the request time was rejected: check this machine's clock (NTP)",
}
_STATES = {
    1: ObservedState.RUNNING,  # not started yet: the task exists and will run
    2: ObservedState.RUNNING,
    3: ObservedState.STOPPED,
    4: ObservedState.FAILED,
}
# GetSnapshotTask `StopReason` (vendor-apis.md) -> capctl's phrase (`stopreasons`).
STOP_REASONS: Mapping[str, str] = {
    "IdleTimeOut": Phrase.IDLE_TIMEOUT,
    "StopByAPI": Phrase.OUT_OF_BAND,  # capctl's own stops are never observed as a stop to re-issue
    "StartTaskFailed": Phrase.START_FAILED,
    "UserDisconnect": Phrase.USER_DISCONNECTED,
    "UnknownStopReason": Phrase.ENDED,
}


def classify_error(status: int, code: str) -> ErrorKind:
    """The kind of a Volcengine failure from its HTTP status and `ResponseMetadata.Error.Code`."""
    if status == 429 or code.startswith("FlowLimitExceeded"):
        return ErrorKind.THROTTLED
    if code == NOT_FOUND_CODE:
        return ErrorKind.NOT_FOUND
    if code in _AUTH_HINTS:
        return ErrorKind.AUTH
    if status >= 500 or code.startswith("InternalError") or code == "ServiceUnavailableTemp":
        return ErrorKind.RETRYABLE
    return ErrorKind.TERMINAL


def stop_reason_of(reason: str | None, status: object) -> str:
    """Why a snapshot task ended: its `StopReason`, or without one its `Status` (3 ended, 4 failed)."""
    if reason:  # the vendor's word, shown as its error codes are (one line, cut): printed in plans and listings
        shown = scrub_text(str(reason), (), limit=_CODE_LIMIT)
        return stopreasons.stop_reason(STOP_REASONS.get(str(reason), Phrase.ENDED), f"Volcengine {shown}")
    phrase = Phrase.FAILED if status == 4 else Phrase.ENDED
    return stopreasons.stop_reason(phrase, f"Volcengine status {status}")


def observed_from_snapshot_task(task: Mapping[str, Any]) -> Observed:
    """Map GetSnapshotTask's `Result.SnapshotTask` to `Observed` (status 0 or unknown → UNKNOWN)."""
    status = task.get("Status")
    code = vendor_int(status)  # JSON true is no status, though Python reads it as 1
    state = ObservedState.UNKNOWN if code is None else _STATES.get(code, ObservedState.UNKNOWN)
    ended = state in (ObservedState.STOPPED, ObservedState.FAILED)
    return Observed(
        state=state,
        reason=stop_reason_of(task.get("StopReason") or None, status) if ended else None,
        started_at=seconds_of_ms(task.get("StartTime")),
        ended_at=seconds_of_ms(task.get("EndTime")),
        detail=status_text(status),
    )


# As many URLs as the status queries of this many tasks (and the POST URL of each API): a daemon builds the
# same ones again and again, so a poll's URL is encoded and parsed once per task, not at every look.
_URLS_KEPT = 16384


@functools.lru_cache(maxsize=_URLS_KEPT)
def _parsed_url(base_url: str, params: tuple[tuple[str, str], ...]) -> tuple[str, httpx.URL]:
    """A call's URL as signed (text) and as sent, parsed once (httpx would parse the text twice a call):
    the same for every call of an API without a query (every POST) and every status query of a task."""
    url = base_url + "?" + urlencode(params, quote_via=quote, safe="-_.~")
    return url, httpx.URL(url)


def _required_secret(config: ProviderConfig, field: str, value: Any) -> Secret:
    if not isinstance(value, Secret):
        raise ValueError(f"provider {config.name} ({config.source or 'no source'}): {field} is required")
    return value


class VolcengineSnapshotProvider:
    """Periodic room snapshots on one Volcengine RTC app (one Provider document)."""

    family: ApiFamily = ApiFamily.VOLC_SNAPSHOT

    def __init__(
        self, config: ProviderConfig, *, budgets: BudgetRegistry, clock: Clock, http: httpx.AsyncClient
    ) -> None:
        if config.type != "volcengine":
            raise ValueError(f"provider {config.name}: type {config.type!r} is not volcengine")
        self.name = config.name
        self._config = config
        self._budgets = budgets
        self._clock = clock
        self._http = http
        self._access_key = _required_secret(config, "accessKey", config.access_key)
        self._secret_key = _required_secret(config, "secretKey", config.secret_key)
        self._base_url = config.endpoint.rstrip("/") + "/"

    async def start(
        self, task: DesiredTask, client_task_id: str | None, *, priority: Priority = Priority.CHANGE
    ) -> StartResult:
        """StartSnapshot with `task.request` as the body. Idempotent by TaskId, so `client_task_id` is
        unused; a running task with the same TaskId comes back with `already_running=True`."""
        ref = self._ref_from_request(task)
        result = await self._call(START, priority, body=task.request)
        already = isinstance(result, str) and ALREADY_STARTED in result
        if not already and result != "ok":
            # Seed 001: `Result` is "ok" only on success, empty on failure. Retrying is safe: a task that did
            # start is answered "already started".
            got = "no Result" if result in (None, "") else f"Result {quote_value(result)}"
            raise VendorError(
                ErrorKind.RETRYABLE,
                "capctl.StartNotConfirmed",
                f'{task.key}: answered without an error but with {got} instead of "ok"',
                api=START,
            ).named(self.name, self._config.type)
        return StartResult(vendor_task_id=ref["TaskId"], vendor_ref=ref, already_running=already)

    async def update(self, task: DesiredTask, record: TaskRecord) -> None:
        """UpdateSnapshot: only ImageConfig.Interval can change in place."""
        interval = task.updatable.get("interval")
        if interval is None:
            raise VendorError(
                ErrorKind.TERMINAL,
                "capctl.NothingToUpdate",
                f"{task.key}: only the interval can change in place; stop and start instead",
                api=UPDATE,
            )
        body = {**self._ref_from_record(record, UPDATE), "ImageConfig": {"Interval": interval}}
        await self._on_its_app(UPDATE, Priority.CHANGE, body=body)

    async def stop(self, record: TaskRecord) -> None:
        """StopSnapshot; an unknown or already stopped task raises VendorError(NOT_FOUND)."""
        await self._on_its_app(STOP, Priority.CHANGE, body=self._ref_from_record(record, STOP))

    async def observe(self, record: TaskRecord) -> Observed:
        """GetSnapshotTask (POLL priority). Unknown tasks (also those older than 72 h) are NOT_FOUND."""
        try:
            ref = self._ref_from_record(record, QUERY)
            query = {name: ref[name] for name in ("AppId", "RoomId", "TaskId")}
            result = await self._on_its_app(QUERY, Priority.POLL, query=query)
        except VendorError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return Observed(state=ObservedState.NOT_FOUND, detail=exc.code)
            raise
        snapshot_task = result.get("SnapshotTask") if isinstance(result, dict) else None
        if not isinstance(snapshot_task, dict) or not snapshot_task:
            return Observed(state=ObservedState.NOT_FOUND, detail="no SnapshotTask in the answer")
        return observed_from_snapshot_task(snapshot_task)

    async def room_streams(self, room: str) -> int:
        """GetRoomOnlineUsers (POLL priority): the visible users in the room; a room that does not exist has
        none. The vendor's page names the flag `RoomExists`, BytePlus's `RoomExist`: either is read."""
        result = await self._call(ROOMS, Priority.POLL, query={"AppId": self._config.app_id, "RoomId": room})
        if not isinstance(result, dict) or not (result.get("RoomExists") or result.get("RoomExist")):
            return 0
        users = result.get("VisibleUserList")
        return len(users) if isinstance(users, list) else 0

    async def aclose(self) -> None:
        """Nothing to release: the http client is injected and closed by whoever created it."""

    # -- helpers ---------------------------------------------------------------------------------------

    def _ref_from_request(self, task: DesiredTask) -> dict[str, str]:
        """The non-secret ids of a StartSnapshot body: what stop / update / observe need later."""
        request = task.request if isinstance(task.request, dict) else {}
        ref: dict[str, str] = {}
        for name in ("AppId", "BusinessId", "RoomId", "TaskId"):
            value = request.get(name)
            if isinstance(value, str) and value:
                ref[name] = value
            elif name != "BusinessId":
                raise VendorError(
                    ErrorKind.TERMINAL,
                    "capctl.InvalidRequest",
                    f"{task.key} ({task.source or 'no source'}): the StartSnapshot request lacks {name}",
                    api=START,
                )
        return ref

    def _ref_from_record(self, record: TaskRecord, api: str) -> dict[str, str]:
        """AppId, BusinessId (if any), RoomId, TaskId in the vendor's body order, from the record. A start
        never confirmed names its task by the ids it sent (`TaskRecord.vendor_ids`)."""
        ref = record.vendor_ids
        if not all(ref.get(name) for name in ("AppId", "RoomId", "TaskId")):
            raise VendorError(ErrorKind.NOT_FOUND, "capctl.NoTaskId", f"{record.key}: no task recorded", api=api)
        return {name: ref[name] for name in ("AppId", "BusinessId", "RoomId", "TaskId") if name in ref}

    async def _on_its_app(
        self, api: str, priority: Priority, *, body: Any = None, query: Mapping[str, str] | None = None
    ) -> Any:
        """A call about a recorded task, in the app it was started in (its `AppId`). When that is not the app the
        Provider names now (its `appId` edited in place), the call is made all the same: Volcengine's keys are
        the account's, and reach each of its apps. A refusal then says the likely cause and what to do."""
        app = (body if body is not None else query or {}).get("AppId")
        try:
            return await self._call(api, priority, body=body, query=query)
        except VendorError as exc:
            if app == self._config.app_id or exc.kind not in (ErrorKind.TERMINAL, ErrorKind.AUTH):
                raise
            raise exc.explained(
                f"this task was started in app {app}, and Provider {self.name!r} now names app "
                f"{self._config.app_id}: if its keys are not of {app}'s account, put that appId and its keys back, "
                "declare the new app as a Provider of its own beside it, move the jobs to it and apply, then "
                "remove the old one (docs/providers-volcengine.md)"
            ) from None

    def _budget(self, api: str) -> RateBudget:
        rate = self._config.rate_limits.get(api, DEFAULT_RATE_LIMITS[api])
        return self._budgets.get(self._config.account, api, rate)

    async def _call(
        self, api: str, priority: Priority, *, body: Any = None, query: Mapping[str, str] | None = None
    ) -> Any:
        """One signed, budgeted request; returns `Result` or raises VendorError. POST when there is a body."""
        await self._budget(api).take(priority)
        url, parsed = self._url(api, query)
        method = "GET" if body is None else "POST"
        content = (
            b"" if body is None else json.dumps(reveal_tree(body), ensure_ascii=False, separators=(",", ":")).encode()
        )
        headers = {} if body is None else {"Content-Type": "application/json"}
        headers |= sign_request(
            method,
            url,
            headers,
            content,
            access_key=self._access_key.reveal(),
            secret_key=self._secret_key.reveal(),
            region=self._config.region,
            service=SERVICE,
            now=datetime.fromtimestamp(self._clock.now(), UTC),
        )
        # The signature too: with its X-Date it is a credential for 15 minutes, should an answer quote it.
        signature = Secret(headers["Authorization"].rpartition("Signature=")[2])
        secrets = [self._access_key, self._secret_key, signature, *secret_leaves(body)]
        try:
            response = await self._http.request(method, parsed, content=content, headers=headers)
        except httpx.RequestError as exc:  # timeouts, refused / dropped connections, broken encodings
            raise transport_error(exc, self._base_url, api=api).named(self.name, self._config.type) from None
        try:
            return self._result(api, response, secrets)
        except VendorError as exc:
            raise exc.named(self.name, self._config.type) from None

    def _url(self, api: str, query: Mapping[str, str] | None) -> tuple[str, httpx.URL]:
        """The call's URL as signed (text) and as sent (`_parsed_url`)."""
        params = {"Action": api, "Version": VERSION, **(query or {})}
        return _parsed_url(self._base_url, tuple(params.items()))

    def _result(self, api: str, response: httpx.Response, secrets: Sequence[Hidden]) -> Any:
        status = response.status_code
        unread = None
        try:
            payload = load_json(response.content)  # nesting bounded: a proxy's 100,000 `[` is not a crash
        except ValueError as exc:
            # JSON-looking text refused by a limit (too deep, a lone surrogate, UTF-16) says which; a proxy's
            # HTML page is just "not JSON" (its text follows).
            limit = str(exc).removeprefix("malformed JSON")
            payload, unread = None, "not JSON" + (limit if limit.startswith(":") else "")
        meta = payload.get("ResponseMetadata") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or not isinstance(meta, dict):
            what = unread or "no ResponseMetadata"
            text = scrub_text(response.text.strip(), secrets)
            kind = ErrorKind.THROTTLED if status == 429 else ErrorKind.RETRYABLE
            self._note_throttled(api, kind)
            raise VendorError(
                kind,
                f"HTTP {status}",
                f"unexpected answer from {api} (HTTP {status}, {what}): {text}",
                api=api,
            )
        error = meta.get("Error")
        if error or status >= 400:
            error = error if isinstance(error, dict) else {}
            code = scrub_text(str(error.get("Code") or f"HTTP {status}"), secrets, limit=_CODE_LIMIT)
            message = scrub_text(str(error.get("Message") or "no message"), secrets)
            kind = classify_error(status, code)
            self._note_throttled(api, kind)
            if kind is ErrorKind.AUTH:
                source = f" ({self._config.source})" if self._config.source else ""
                message = f"credentials rejected for provider {self.name}{source}: {_AUTH_HINTS[code]} ({message})"
            raise VendorError(kind, code, message, api=api)
        return payload.get("Result")

    def _note_throttled(self, api: str, kind: ErrorKind) -> None:
        """A throttling answer slows this API's budget down for every caller of the account."""
        if kind is ErrorKind.THROTTLED:
            self._budget(api).throttled()
