"""The one HTTP core shared by the three ZEGO API families.

Cloud recording (current and legacy) and MediaThumbnails differ in URLs, envelopes and a few codes, but
not in how a call is paced, sent and judged. This module does that part once: it takes the rate-budget
slot, signs (Signature 2.0), sends, parses the envelope and maps every failure to a `VendorError` of the
right kind. It also turns a recording status answer into an `Observed`, shared by both recording
generations. It never retries (the executor does) and never logs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict
from urllib.parse import quote, urlencode

import httpx

from reconciler import stopreasons
from reconciler.budget import BudgetRegistry, Priority, RateBudget
from reconciler.clock import Clock
from reconciler.jsonlimits import load_json
from reconciler.model import Observed, ObservedState, ProviderConfig
from reconciler.providers.base import ErrorKind, VendorError, seconds_of_ms, status_text, vendor_int
from reconciler.providers.family import ZEGO
from reconciler.providers.transport import transport_error
from reconciler.providers.zego_signing import RandomBytes, signature_params
from reconciler.redact import scrub_text, secret_leaves
from reconciler.secrets import Hidden, Secret
from reconciler.stopreasons import Phrase

__all__ = [
    "ACTION_ENVELOPE",
    "COMMON_CODES",
    "DEFAULT_RATE_LIMITS",
    "LEGACY_ENVELOPE",
    "QUIT_MAX_DURATION",
    "QUIT_REASONS",
    "RECORD_STATUS",
    "ROLLOVER_SLACK",
    "SIGNATURE_EXPIRED",
    "SIGNATURE_INVALID",
    "TASK_ENDED",
    "TASK_NOT_FOUND",
    "ClientDeps",
    "Envelope",
    "ZegoClient",
    "field",
    "observed_from_status",
    "parse_app_id",
    "quit_stop_reason",
    "recording_stop_reason",
]

# Documented limits per AppId (`family.ZEGO`), by the API name `rateLimits` overrides use.
DEFAULT_RATE_LIMITS: Mapping[str, float] = ZEGO.rate_limits

# Codes every ZEGO server API shares (vendor-apis.md); families add theirs on top.
SIGNATURE_EXPIRED = 100000004
SIGNATURE_INVALID = 100000005
TASK_NOT_FOUND = 300001000
TASK_ENDED = 300001001
COMMON_CODES: dict[int, tuple[ErrorKind, str]] = {
    SIGNATURE_EXPIRED: (ErrorKind.AUTH, "signature expired"),
    SIGNATURE_INVALID: (ErrorKind.AUTH, "signature invalid"),
    300000002: (ErrorKind.TERMINAL, "service not enabled for this AppId: ask ZEGO to enable it"),
    300000003: (ErrorKind.THROTTLED, "rate limited"),
    300000004: (ErrorKind.TERMINAL, "invalid parameter"),
    300000005: (ErrorKind.TERMINAL, "gateway check failed"),
    300000006: (ErrorKind.RETRYABLE, "too many concurrent tasks"),
    TASK_NOT_FOUND: (ErrorKind.TERMINAL, "task does not exist"),
    TASK_ENDED: (ErrorKind.TERMINAL, "task already ended"),
    300001004: (ErrorKind.TERMINAL, "task not paused"),
    300010000: (ErrorKind.RETRYABLE, "system error"),
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """Where an answer keeps its result code and message: `Code` (Action APIs) or `code` (legacy)."""

    code: str
    message: str


ACTION_ENVELOPE = Envelope("Code", "Message")
LEGACY_ENVELOPE = Envelope("code", "message")


def parse_app_id(config: ProviderConfig) -> int:
    """ZEGO AppIds are uint32 on the wire; the config carries decimal text."""
    text = config.app_id.strip()
    # ASCII digits only: str.isdecimal() holds for "１２３" too, which int() reads as 123 (another app).
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 2**32:
        raise ValueError(
            f"provider {config.name}{_where(config)}: appId must be a positive 32-bit integer, got {config.app_id!r}"
        )
    return int(text)


def _where(config: ProviderConfig) -> str:
    return f" ({config.source})" if config.source else ""


# The calls sent to `rtcEndpoint`; every other one goes to `cloudrecordEndpoint`. A zego Provider has both, so
# a wrong one is named by its field.
_RTC_APIS = frozenset({"MediaThumbnails", "DescribeSimpleStreamList"})


def _endpoint_field(api: str) -> str:
    return "rtcEndpoint" if api in _RTC_APIS else "cloudrecordEndpoint"


class ClientDeps(TypedDict):
    """What a `ZegoClient` is built with; each ZEGO provider takes the same and hands them on."""

    budgets: BudgetRegistry
    clock: Clock
    http: httpx.AsyncClient
    random_bytes: NotRequired[RandomBytes]


class ZegoClient:
    """Paced, signed, judged calls for one ZEGO Provider document."""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        budgets: BudgetRegistry,
        clock: Clock,
        http: httpx.AsyncClient,
        random_bytes: RandomBytes = os.urandom,
    ) -> None:
        if config.server_secret is None:
            raise ValueError(f"provider {config.name}{_where(config)}: serverSecret is required")
        self.config = config
        self._server_secret = config.server_secret
        self.app_id = parse_app_id(config)
        self.random_bytes = random_bytes
        self._budgets = budgets
        self._clock = clock
        self._http = http
        self._parsed: dict[str, httpx.URL] = {}  # each endpoint parsed once, not twice a call as text would be

    @property
    def server_secret(self) -> str:
        return self._server_secret.reveal()

    def auth_hint(self, credential: str) -> str:
        return f"check {credential} of provider {self.config.name}{_where(self.config)}"

    def budget(self, api: str) -> RateBudget:
        rate = self.config.rate_limits.get(api, DEFAULT_RATE_LIMITS[api])
        return self._budgets.get(self.config.account, api, rate)

    async def call(
        self,
        api: str,
        priority: Priority,
        method: str,
        url: str,
        *,
        signed: bool = True,
        params: Iterable[tuple[str, str]] = (),
        body: Any = None,
        envelope: Envelope = ACTION_ENVELOPE,
        codes: Mapping[int, tuple[ErrorKind, str]] = COMMON_CODES,
        not_found: frozenset[int] = frozenset(),
        credential: str = "serverSecret",
        secrets: Iterable[Hidden] = (),
        repeatable: bool = True,
    ) -> dict[str, Any]:
        """One request through the budget of `api`; returns the answer when its code is 0.

        `signed` calls are Action API calls: the query is `Action=api`, `params`, then the Signature 2.0
        parameters, made after the budget slot is granted so a long wait never sends a stale timestamp.
        Legacy calls carry their credentials in the body instead. `not_found` codes become NOT_FOUND for
        this call; an AUTH error names `credential` (never its value). A call that is not `repeatable` (each
        try may start something: the legacy /start) fails terminally when its request may have reached the
        vendor without an answer that says what happened, so the executor's retry cannot start a second one.
        """
        budget = self.budget(api)
        await budget.take(priority)
        query: list[tuple[str, Any]] = list(params)
        if signed:
            signature = signature_params(self.app_id, self.server_secret, self._clock.now(), self.random_bytes)
            query = [("Action", api), *query, *signature.items()]
            # A credential for ±10 minutes and an md5 preimage of the server secret, should an answer quote it.
            secrets = [*secrets, Secret(signature["Signature"])]
        name, kind = self.config.name, self.config.type
        try:
            parsed = self._parsed.get(url) or self._parsed.setdefault(url, httpx.URL(url))
            # The query encoded here, once: httpx's `params=` parses, merges and re-encodes it (a third of the
            # cost of a status query's request). Endpoints carry no query of their own (`spec.fields.Endpoint`);
            # every character but the unreserved ones is escaped.
            target = parsed.copy_with(query=urlencode(query, quote_via=quote, safe="").encode()) if query else parsed
            response = await self._http.request(method, target, json=body)
        except httpx.RequestError as exc:
            error = transport_error(exc, url, api=api)
            unconfirmed = error.may_have_acted and not repeatable  # (a failed connect sent nothing: retried)
            raise (_unconfirmed(error) if unconfirmed else error).named(name, kind) from None
        known_secrets = [self._server_secret, *secret_leaves(self.config.access_token), *secrets]
        try:
            return self._judge(api, budget, response, envelope, codes, not_found, credential, known_secrets)
        except VendorError as exc:
            # A vendor code is the vendor's word that it did not act; an HTTP 5xx or an unreadable answer is not.
            unanswered = exc.kind is ErrorKind.RETRYABLE and not exc.code.isdigit()
            raise (_unconfirmed(exc) if unanswered and not repeatable else exc).named(name, kind) from None

    def _judge(
        self,
        api: str,
        budget: RateBudget,
        response: httpx.Response,
        envelope: Envelope,
        codes: Mapping[int, tuple[ErrorKind, str]],
        not_found: frozenset[int],
        credential: str,
        secrets: list[Hidden],
    ) -> dict[str, Any]:
        status = response.status_code
        if status == 429:
            budget.throttled()
            raise VendorError(ErrorKind.THROTTLED, "HTTP 429", "too many requests", api=api)
        if status >= 500:
            raise VendorError(ErrorKind.RETRYABLE, f"HTTP {status}", "vendor server error", api=api)
        answer, problem = _parse(response, envelope)
        if answer is None:
            if status != 200:  # no ZEGO envelope and not 200: most likely a wrong endpoint
                raise VendorError(
                    ErrorKind.TERMINAL,
                    f"HTTP {status}",
                    f"unexpected answer from {api}: {problem}; check {_endpoint_field(api)} of provider "
                    f"{self.config.name}{_where(self.config)}",
                    api=api,
                )
            raise VendorError(ErrorKind.RETRYABLE, "bad-answer", f"unexpected answer from {api}: {problem}", api=api)
        code = answer[envelope.code]
        if code == 0:
            return answer
        vendor_message = scrub_text(str(answer.get(envelope.message, "")), secrets)  # messages echo parameters
        kind, meaning = codes.get(code, (ErrorKind.TERMINAL, "vendor error"))
        if code in not_found:
            kind = ErrorKind.NOT_FOUND
        # The vendor's words after capctl's, unless they add nothing ("request failed (request failed)").
        text = f"{meaning} ({vendor_message})" if vendor_message.lower() not in meaning.lower() else meaning
        if kind is ErrorKind.THROTTLED:
            budget.throttled()
        elif code == SIGNATURE_EXPIRED and credential == "serverSecret":
            # A signature (or a token capctl made with it) out of ZEGO's time window: a wrong secret gets
            # 100000005. A given legacy accessToken that expired is the token's fault: its hint names it.
            text = f"{text}: the request time was rejected: check this machine's clock (NTP)"
        elif kind is ErrorKind.AUTH:
            text = f"{text}: {self.auth_hint(credential)}"
        raise VendorError(kind, str(code), text, api=api)


def _unconfirmed(error: VendorError) -> VendorError:
    """`error` of a call that may have taken effect, as a failure not to retry (one more try could start a
    second recording), saying what may be left at the vendor."""
    return VendorError(
        ErrorKind.TERMINAL,
        error.code,
        f"{error.message}; not retried at once: the vendor may have started a recording that no answer named, "
        "and this API has no idempotency key (each try could start another); the next apply or daemon retry "
        "starts one again, and an unnamed one ends only at its idle timeout or maximum duration",
        api=error.api,
        unanswered=True,
    )


# JSON's own names for what an answer was instead of an object (not Python's: `NoneType`, `list`).
_JSON_TYPES: dict[type, str] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _parse(response: httpx.Response, envelope: Envelope) -> tuple[dict[str, Any] | None, str]:
    """The answer object if it is JSON with an integer code; otherwise why not (never the body itself)."""
    try:
        answer = load_json(response.content)  # nesting bounded: a proxy's 100,000 `[` is not a crash
    except ValueError as exc:
        return None, f"not JSON (HTTP {response.status_code}, {len(response.content)} bytes: {str(exc)[:80]})"
    if not isinstance(answer, dict):
        return None, f"a JSON {_JSON_TYPES.get(type(answer), 'value')}, not an object (HTTP {response.status_code})"
    code = answer.get(envelope.code)
    if isinstance(code, bool) or not isinstance(code, int):
        return None, f"no integer {envelope.code!r} field (HTTP {response.status_code})"
    return answer, ""


def field(tree: Any, *path: str) -> Any:
    """`tree[path[0]][path[1]]…`, or None when any step is missing or not an object."""
    for name in path:
        if not isinstance(tree, Mapping):
            return None
        tree = tree.get(name)
    return tree


RECORD_STATUS = {1: "initialising", 2: "recording", 3: "ended", 4: "ended abnormally", 5: "paused"}
ROLLOVER_SLACK = 2.0  # seconds: a run this close to its max duration ended because of it
# Cloud-recording `detail.quit_reason` of an abnormal end (callback event_type 2) -> capctl's phrase
# (`stopreasons`); 1001 and up are ZEGO's internal errors.
QUIT_REASONS: Mapping[int, str] = {
    1: Phrase.START_FAILED,
    2: Phrase.ROOM_LOGIN_FAILED,
    3: Phrase.IDLE_TIMEOUT,
    4: Phrase.MAX_DURATION,
    5: Phrase.ENGINE_FAILED,
    6: Phrase.NETWORK_LOST,
}
QUIT_MAX_DURATION = 4


def quit_stop_reason(quit_reason: int) -> str:
    """Why a recording ended, by its `quit_reason` (a callback's, or a status answer's `QuitReason`)."""
    phrase = QUIT_REASONS.get(quit_reason, Phrase.INTERNAL_ERROR)
    return stopreasons.stop_reason(phrase, f"ZEGO quit_reason {quit_reason}")


def recording_stop_reason(status: object, quit_reason: object = None, *, rollover: bool = False) -> str:
    """A ZEGO recording that ended: its `quit_reason` when known, else its status; a run as long as its max
    duration is a max-duration end whatever the status says."""
    code = stopreasons.vendor_code(quit_reason)
    if code is not None:
        return quit_stop_reason(code)
    phrase = Phrase.MAX_DURATION if rollover else Phrase.ENDED
    return stopreasons.stop_reason(phrase, f"ZEGO status {status}")


def observed_from_status(
    status: Any, begin_ms: Any, end_ms: Any, max_duration: int | None, quit_reason: Any = None
) -> Observed:
    """A recording status answer (both generations use the Action API's numbers) as an `Observed`. A
    `QuitReason` in the answer (not documented for DescribeRecordStatus, nor sent by the simulator) names the cause."""
    started, ended = seconds_of_ms(begin_ms), seconds_of_ms(end_ms)
    detail = status_text(status)
    status = vendor_int(status)  # JSON true is no status, though Python reads it as 1
    if status in (1, 2, 5):
        return Observed(ObservedState.RUNNING, started_at=started, detail=f"{detail} ({RECORD_STATUS[status]})")
    if status not in (3, 4):
        return Observed(ObservedState.UNKNOWN, detail=f"unknown {detail}")
    rollover = (
        max_duration is not None
        and started is not None
        and ended is not None
        and ended - started >= max_duration - ROLLOVER_SLACK
    ) or quit_reason == QUIT_MAX_DURATION
    reason = recording_stop_reason(status, quit_reason, rollover=rollover)
    return Observed(
        ObservedState.STOPPED,
        reason=reason,
        started_at=started,
        ended_at=ended,
        rollover=rollover,
        detail=f"{detail} ({RECORD_STATUS[status]})",
    )
