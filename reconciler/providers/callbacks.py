"""What every vendor's webhook parser shares: the verified event it returns and how it refuses one.

Each vendor parses its own callbacks beside its provider (`volc_callbacks`, `zego_callbacks`): a callback
is parsed, matched to a Provider by its app id, checked against that Provider's callbackSecret with the
vendor's own signature scheme, and refused when its time is more than `MAX_SKEW` from the daemon's clock,
so a captured callback cannot be replayed later. The daemon's router (`daemon/router.py`) deduplicates
and routes the events; it never reads a vendor payload. What comes out is only a hint: the daemon
enqueues the keys it names and re-reads the truth itself. No secret, signature or raw body ever enters
an error message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.jsonlimits import load_json
from reconciler.model import ProviderConfig
from reconciler.secrets import Secret
from reconciler.spec.errors import quote
from reconciler.spec.fields import room_id_problem

__all__ = [
    "MAX_SKEW",
    "CallbackEvent",
    "CallbackParser",
    "CallbackRejected",
    "RunId",
    "Signing",
    "callback_secrets",
    "check_time",
    "event_time",
    "json_object",
    "of_app",
    "room_text",
    "text",
    "verified",
]

MAX_SKEW = 300.0  # seconds between a callback's own time and the daemon clock
_TIME_DIGITS = 20  # at most, in a time given as text: milliseconds have 13 until the year 2286

# How a callback names a task's current run; a record says the same through its family's `run_id`.
RunId = tuple[str, ...]


class CallbackRejected(Exception):
    """The callback is refused with HTTP `status`; `reason` is safe to send back and to log."""

    def __init__(self, status: int, reason: str, *, logged: bool = True, app_id: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.logged = logged  # False: the same refusal was already logged once; say it only once
        # The app of one of the spec set's Providers it claims to come from (`of_app`): its log line names it, so
        # an operator with several apps knows whose callback URL or secret is wrong. None before that is known.
        self.app_id = app_id


@contextmanager
def of_app(app_id: str) -> Iterator[None]:
    """A refusal raised within is of `app_id`, an app some Provider of the spec set declares (a bounded set of
    names: an app id a forger makes up is refused before, by `callback_secrets`, and is quoted in its reason)."""
    try:
        yield
    except CallbackRejected as exc:
        exc.app_id = app_id
        raise


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """What a verified callback tells the controller. Flags, because one event may say several things."""

    vendor: str
    app_id: str
    event: str
    dedupe_key: str
    at: float
    task_id: str | None = None
    room_id: str | None = None
    output: bool = False  # the run produced something (an image, an uploaded file)
    ended: bool = False  # the vendor says the run ended: look now
    rollover: bool = False  # it ended at its max duration
    room_active: bool = False  # someone joined / a stream appeared (also User*StreamStart): wake the room
    room_empty: bool = False  # the room has no stream: the task will idle out one idle timeout from now
    room_left: bool = False  # a user left / stopped a stream (UserLeaveRoom, User*StreamStop): may be empty now
    room_closed: bool = False  # the room's last stream went (Volcengine RoomDestroy, ZEGO room_close)
    user_id: str | None = None  # who joined or left
    end_reason: str | None = None  # why the run ended, when the vendor said so (zego_callbacks.callback_stop_reason)
    signed_pair: str | None = None  # ZEGO: app id and signature (what signs the timestamp and nonce, however cut)
    body_digest: str = ""  # ZEGO: sha256 of the body (signature aside), to tell a retry from a replay
    run_id: RunId | None = None  # the run it is about, as `Family.run_id` names a record's run
    # A user entered the room (ZEGO room_create, room_login): a stream is likely to follow. Wakes dormant
    # tasks as room_active does, so that a capture waits for the earliest of a room's callbacks (issue 17).
    room_entered: bool = False


# A vendor's parser: (body, the spec set's Provider documents, the daemon's now) -> a verified event.
CallbackParser = Callable[[bytes, Iterable[ProviderConfig], float], CallbackEvent]


@dataclass(frozen=True, slots=True)
class Signing:
    """Where a vendor's callback names its app, its signature and its time, and how the signature is checked."""

    vendor: str
    app_id: tuple[str, ...]  # the fields that may name the app, first found wins
    signature: str
    time: str
    verify: Callable[[Mapping[str, Any], Secret], bool]


def verified(
    body: bytes, providers: Iterable[ProviderConfig], now: float, signing: Signing
) -> tuple[dict[str, Any], str, float]:
    """The callback's JSON object, its app id and its time, once its signature (against the matching
    Providers' callbackSecrets) and its time (against `now`) are checked; else `CallbackRejected`."""
    data = json_object(body)
    app_id = next(filter(None, (text(data, field) for field in signing.app_id)), None)
    if app_id is None:
        raise CallbackRejected(400, f"malformed callback: {signing.app_id[0]} is missing")
    secrets = callback_secrets(providers, signing.vendor, app_id)
    with of_app(app_id):
        if data.get(signing.signature) is None:
            raise CallbackRejected(401, f"missing {signing.signature}")
        if not any(signing.verify(data, s) for s in secrets):
            raise CallbackRejected(401, "bad signature (check the Provider's callbackSecret)")
        at = event_time(data.get(signing.time), signing.time)
        check_time(at, now)
    return data, app_id, at


def json_object(body: bytes) -> dict[str, Any]:
    try:
        data = load_json(body)
    except ValueError as exc:
        raise CallbackRejected(400, str(exc)) from None
    if not isinstance(data, dict):
        raise CallbackRejected(400, f"malformed callback: expected a JSON object, got {type(data).__name__}")
    return data


def callback_secrets(providers: Iterable[ProviderConfig], vendor: str, app_id: str) -> list[Secret]:
    matching = [p for p in providers if p.type == vendor and p.app_id == app_id]
    secrets = [p.callback_secret for p in matching if isinstance(p.callback_secret, Secret)]
    if not secrets:
        what = "no Provider" if not matching else "no Provider with a callbackSecret"
        # The app id is the client's word, not yet verified: quoted at a bounded size (answer and log line).
        raise CallbackRejected(401, f"{what} for {vendor} app id {quote(app_id)}: cannot verify the callback")
    return secrets


def check_time(at: float, now: float) -> None:
    skew = at - now
    if abs(skew) > MAX_SKEW:
        side = "ahead of" if skew > 0 else "behind"
        raise CallbackRejected(
            401,
            f"stale callback: its time is {abs(skew):.0f} s {side} the daemon clock (at most {MAX_SKEW:.0f} s allowed)",
        )


def event_time(value: Any, field: str) -> float:
    """Unix seconds from ISO 8601 text, or from a number of seconds or milliseconds."""
    if value is None:
        raise CallbackRejected(400, f"malformed callback: {field} is missing")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, str):
        # Not "1²" (str.isdigit() holds, int() refuses), nor 400 digits (the division by 1000 overflowed a float,
        # 5,000 passed Python's int limit: 500 with a traceback): a time in milliseconds has 13.
        if value.isascii() and value.isdigit() and len(value) <= _TIME_DIGITS:
            return event_time(int(value), field)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise CallbackRejected(400, f"malformed callback: {field} {value[:40]!r} is not a time") from None
        if parsed.tzinfo is None:
            raise CallbackRejected(400, f"malformed callback: {field} {value[:40]!r} has no time zone")
        return parsed.timestamp()
    raise CallbackRejected(400, f"malformed callback: {field} is not a time")  # a bool, a list, an object


def room_text(data: Mapping[str, Any], field: str, vendor: str) -> str | None:
    """The room id a callback names, or None; `CallbackRejected` for one no room of the vendor can have
    (`spec.fields.room_id_problem`, the rule a spec's named rooms follow too). Anyone who joins a room names it,
    and a selector job turns the id into a task key printed in plans, `state list`, logs and the status page: a
    control character, a bidirectional override or an invisible character there (an escape sequence, a forged
    line, a look-alike `lobby`) or a 10 kB id goes no further."""
    room = text(data, field)
    if room is None or (problem := room_id_problem(room, vendor)) is None:
        return room
    raise CallbackRejected(400, f"malformed callback: {field} {quote(room)} {problem}")


def text(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
