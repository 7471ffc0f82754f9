"""Field types shared by the spec models: durations, names, endpoints, secrets, reference-friendly scalars.

Models are strict (`"5"` is not an integer), but a value read from `{env: ...}` or `{file: ...}` is always
text. Such values arrive as `RefStr`, and the integer, boolean and duration types below accept a `RefStr`
of the right shape; a literal string in the YAML is still refused.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Final

from pydantic import (
    BeforeValidator,
    Field,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)

from reconciler.jsonlimits import bounded_int
from reconciler.secrets import Secret, SecretText
from reconciler.spec.errors import quote, quote_input

__all__ = [
    "CALLBACK_URL_HINT",
    "CALLBACK_URL_PATTERN",
    "DURATION_FORMS",
    "DURATION_SCHEMA_MARKER",
    "ENDPOINT_HINT",
    "ENDPOINT_PATTERN",
    "LITERAL_ONLY",
    "LITERAL_SCHEMA_MARKER",
    "NAME_PATTERN",
    "PRINTABLE_PATTERN",
    "ROOM_ID_BYTES",
    "SECRET_SCHEMA_MARKER",
    "VOLC_ID_PATTERN",
    "VOLC_ID_RE",
    "Bool",
    "CallbackUrl",
    "ColourInt",
    "Duration",
    "Endpoint",
    "Int",
    "Name",
    "Number",
    "Printable",
    "RefStr",
    "SecretRef",
    "Text",
    "Width",
    "callback_url_problem",
    "parse_duration",
    "printable",
    "room_id_problem",
    "volc_task_id",
]

NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
VOLC_ID_PATTERN: Final = r"^[a-zA-Z0-9_@\-\.]{1,128}$"
VOLC_ID_RE: Final = re.compile(VOLC_ID_PATTERN)
# A room id is at most 128 bytes at either vendor (Volcengine's Id rule; ZEGO's roomID limit).
ROOM_ID_BYTES: Final = 128
# A vendor endpoint gets capctl's own query appended; a callback URL is only POSTed to, so it may carry one.
ENDPOINT_PATTERN: Final = r"^https?://[^\s?#]+$"
CALLBACK_URL_PATTERN: Final = r"^https?://[^\s#]+$"
ENDPOINT_HINT: Final = (
    "is not an http:// or https:// URL without spaces, query or fragment (https://host[:port][/path])"
)
CALLBACK_URL_HINT: Final = (
    "is not an http:// or https:// URL without spaces or fragment (https://host[:port][/path][?query])"
)
_DURATION_RE: Final = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", re.ASCII)
_INT_RE: Final = re.compile(r"^-?\d+$", re.ASCII)
_NUMBER_RE: Final = re.compile(r"^-?\d+(\.\d+)?$", re.ASCII)
_HEX_RE: Final = re.compile(r"^0x[0-9a-f]{1,100}$", re.ASCII | re.IGNORECASE)
DURATION_FORMS: Final = "a whole number of seconds or a string like 5s, 3m, 1h30m, 1h2m3s"


def room_id_problem(room: str, vendor: str) -> str | None:
    """What makes `room` an id no room of `vendor` can have, or None. One rule for the rooms a spec names and
    the rooms callbacks name (`providers.callbacks.room_text`): a named room whose callbacks were refused would
    lose its room activity and its tasks' end callbacks. Volcengine ids follow its Id rule; ZEGO's are printable
    text (no control, bidirectional or invisible character: no look-alike `lobby`) of at most 128 bytes."""
    if vendor == "volcengine" and not VOLC_ID_RE.fullmatch(room):
        return "is no Volcengine room id ([a-zA-Z0-9_@-.]{1,128})"
    if not room.isprintable():
        bad = next(c for c in room if not c.isprintable())
        return f"holds an unprintable character (U+{ord(bad):04X}), which no room id has"
    if len(room.encode()) > ROOM_ID_BYTES:
        return f"is longer than the {ROOM_ID_BYTES} bytes a room id may be"
    return None


def volc_task_id(job: str, task_id: str | None) -> str:
    """The Volcengine TaskId of a job's tasks: `spec.taskId`, else the job's name, for every room.

    The vendor names a task by (AppId, RoomId, TaskId), so one id per job gives each (job, room) its own
    task and a second StartSnapshot of it is answered "already started": restarts never start a room twice.
    Named rooms and selected rooms get the same id, so turning a room list into a selector keeps its tasks."""
    return task_id or job


class RefStr(str):
    """Text that came out of a value reference; typed fields may convert it."""

    __slots__ = ()


_FROM_REF: Final = (RefStr, SecretText)  # a reference's text, shown or not


def _keep_secret_text(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate as text but keep a `SecretText` as it is (pydantic would hand back a plain `str`)."""
    checked = handler(value)
    return value if isinstance(value, SecretText) else checked


# The URLs nearly every spec holds (a plain host name, IPv4 or bracketed IPv6, a port, a plain path), which the
# HTTP client takes as they are: checked without importing it (httpx and what it pulls in cost `validate` and
# `plan --no-refresh` ~50 ms). Anything else is parsed by the client itself.
_PLAIN_URL_RE: Final = re.compile(
    r"https?://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])"
    r"(?::(?P<port>[0-9]{1,5}))?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?"
)


def _plain_url_is_usable(url: str) -> bool | None:
    """True or False for a URL `_PLAIN_URL_RE` describes in full; None: ask the client."""
    plain = _PLAIN_URL_RE.fullmatch(url)
    if plain is None:
        return None
    host, ipv6, port = plain.group("host", "ipv6", "port")
    if port is not None and not 0 < int(port) < 65536:
        return False
    try:
        if ipv6 is not None:
            ipaddress.IPv6Address(ipv6)
        elif re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+", host):  # what the client reads as IPv4
            ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _usable_url(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A URL the HTTP client can call: the pattern lets `http://[::1/`, `http://h:abc/` or `http://:80/` through,
    and they failed only at the first call, with a traceback, after the plan had recorded its intents."""
    checked = _keep_secret_text(value, handler)
    _check_usable(checked.reveal() if isinstance(checked, SecretText) else checked, checked)
    return checked


def callback_url_problem(url: str) -> str | None:
    """Why a vendor's callbacks cannot be posted to `url`, as a spec's callbackUrl is refused; None if they can.
    For URLs given elsewhere: the simulator's --*-callback-url and a recording's callback_url (walk 13a)."""
    if re.fullmatch(CALLBACK_URL_PATTERN, url) is None:
        return f"{quote(url)} {CALLBACK_URL_HINT}"
    try:
        _check_usable(url, url)
    except ValueError as exc:
        return str(exc)
    return None


def _check_usable(text: str, checked: Any) -> None:
    """ValueError unless the HTTP client can call `text`; `checked` is what messages quote (it may be hidden). The
    reasons are capctl's words: the client's own quote parts of a value that may be hidden."""
    usable = _plain_url_is_usable(text)
    if usable is None:
        import httpx  # only for URLs beyond the plain form

        try:
            url = httpx.URL(text)
            usable = url.port is None or 0 < url.port < 65536
            if usable and not url.host:
                raise ValueError(f"{quote(checked)} names no host")
        except httpx.InvalidURL:
            usable = False
    if not usable:
        raise ValueError(f"{quote(checked)} is not a usable URL: write its host, then a port from 1 to 65535 if any")


# Characters that act on a terminal or reorder the text around them (C0/C1 controls, DEL, bidirectional
# overrides): a room id, folder or stream id is printed in every plan, log and `state list` line, so one of
# these in a spec could clear a reviewer's screen or hide a line of its own plan. No vendor id holds them.
_UNPRINTABLE_RE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# The same for an editor (walk 47d): the schema's pattern, in escapes JSON Schema's regexes read as Python's do.
PRINTABLE_PATTERN: Final = r"^[^\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]*$"
_PRINTABLE_SCHEMA: Final[dict[str, Any]] = {"pattern": PRINTABLE_PATTERN}


def printable(value: Any) -> Any:
    """Text written in the specs holds no control character (a reference's value may: a file's newline)."""
    if isinstance(value, str) and not isinstance(value, _FROM_REF) and (bad := _UNPRINTABLE_RE.search(value)):
        raise ValueError(
            f"{quote(value)} holds a control character (U+{ord(bad.group()):04X}), which plans, logs and vendor "
            "ids cannot show: write printable text"
        )
    return value


def _ref_int(value: Any) -> Any:
    if isinstance(value, _FROM_REF) and _INT_RE.match(value):
        return bounded_int(value)  # 5,000 digits: "a number of 5000 digits (at most 100)", not Python's advice
    return value


def _ref_colour(value: Any) -> Any:
    """A colour from a reference converts as YAML reads it, `0xRRGGBB00` or decimal digits (walk 48c: the
    hex literal worked, the same text from `{env: BG}` was "a valid integer, got a string")."""
    if isinstance(value, _FROM_REF) and _HEX_RE.match(value):
        return int(value, 16)
    value = _ref_int(value)
    if isinstance(value, str):  # a literal string in the YAML too: say how a colour is written
        what, how = ("the referenced text", "") if isinstance(value, _FROM_REF) else (quote(value), " unquoted")
        raise ValueError(f"{what} is not a colour: write 0xRRGGBB00{how} (red, green, blue, then a last byte 00)")
    return value


def _ref_number(value: Any) -> Any:
    if isinstance(value, _FROM_REF) and _NUMBER_RE.match(value):
        return float(value)
    return value


def _ref_bool(value: Any) -> Any:
    if isinstance(value, _FROM_REF) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def parse_duration(value: Any) -> Any:
    """Seconds from `5s`, `3m`, `1h30m`, `1h2m3s` or a plain non-negative integer."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {quote(value)}: use {DURATION_FORMS}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid duration {value}: a duration cannot be negative; use {DURATION_FORMS}")
        return value
    if isinstance(value, str):
        if isinstance(value, _FROM_REF) and value.isascii() and value.isdigit():  # "²" passes isdigit(), not int()
            return bounded_int(value)
        match = _DURATION_RE.match(value)
        if value and match:
            hours, minutes, seconds = (bounded_int(g or "0") for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds
    raise ValueError(f"invalid duration {quote_input(value)}: use {DURATION_FORMS}")


DURATION_SCHEMA_MARKER: Final = "x-capctl-duration"  # `capctl explain` shows such a field as one type, `duration`
_DURATION_SCHEMA: Final = {
    DURATION_SCHEMA_MARKER: True,
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^(\d+h)?(\d+m)?(\d+s)?$", "minLength": 2},
    ],
    "description": "seconds: " + DURATION_FORMS,
}

Int = Annotated[int, BeforeValidator(_ref_int)]
ColourInt = Annotated[int, BeforeValidator(_ref_colour)]
Bool = Annotated[bool, BeforeValidator(_ref_bool)]
Number = Annotated[float, BeforeValidator(_ref_number)]
Duration = Annotated[int, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]
Text = Annotated[
    str,
    BeforeValidator(printable),
    StringConstraints(min_length=1),
    Field(json_schema_extra=_PRINTABLE_SCHEMA),
    WrapValidator(_keep_secret_text),
]
# Text that may be empty (a label's value: kubectl's may be); printed as Text is, so it holds no control character.
Printable = Annotated[
    str, BeforeValidator(printable), Field(json_schema_extra=_PRINTABLE_SCHEMA), WrapValidator(_keep_secret_text)
]
Endpoint = Annotated[str, StringConstraints(pattern=ENDPOINT_PATTERN), WrapValidator(_usable_url)]
CallbackUrl = Annotated[str, StringConstraints(pattern=CALLBACK_URL_PATTERN), WrapValidator(_usable_url)]
Width = Annotated[int, BeforeValidator(_ref_int), Field(ge=0, le=1920)]
# A resolved secret reference. `schema.py` turns the marker into the Reference schema (literals are refused).
SECRET_SCHEMA_MARKER: Final = "x-capctl-secret"
SecretRef = Annotated[Secret, WithJsonSchema({SECRET_SCHEMA_MARKER: True})]
# A field that names a task (a job's name, a room, a glob, a file id, a TaskId): `refs.py` refuses a reference
# there, so `schema.py` offers none either (`Field(json_schema_extra=LITERAL_ONLY)`).
LITERAL_SCHEMA_MARKER: Final = "x-capctl-literal"
LITERAL_ONLY: Final[dict[str, Any]] = {LITERAL_SCHEMA_MARKER: True}
