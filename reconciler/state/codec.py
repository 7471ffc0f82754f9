"""TaskRecord <-> compact JSON: the one row format both state stores write.

Stores keep a record as one JSON object so a newer capctl can add fields without a schema migration:
fields equal to their default are left out (smaller rows, faster loads), a missing field takes its
default when read, and a field this version does not know is ignored. Enums are stored by value.
Decoding runs once per record on every `load()`, so it is kept to a handful of dict operations.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shlex
from collections.abc import Container, Iterable
from typing import Any

from reconciler.clock import is_time
from reconciler.gcpause import gc_paused
from reconciler.model import ApiFamily, JobKind, RestartPolicy, TaskRecord, TaskStatus
from reconciler.redact import escape_unprintable

from .base import StateError

__all__ = ["CodecError", "RowDamaged", "decode", "decode_rows", "encode", "forget_command", "shell_word", "text_key"]


class CodecError(StateError):
    """A stored record could not be encoded or decoded (names the record key, never a value)."""


def forget_command(key: str) -> str:
    """The command that forgets the row `key`: damaged, it stops every command that reads it, and the
    operator needs a way out without SQL (`state rm` of that exact key reads no record)."""
    return f"capctl state rm {shell_word(key)}"


def shell_word(key: str) -> str:
    """`key` as one bash word that gives it back, never a raw control on the terminal."""
    if key.isprintable():
        return shlex.quote(key)
    # A key edited to hold a control character: bash's $'...' spells it, and the terminal never gets it raw;
    # a byte that is not UTF-8 (`text_key`'s surrogate escape) as \xff, which bash passes on as that byte.
    quoted = key.replace("\\", "\\\\").replace("'", "\\'")
    spelled = "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in quoted)
    return f"$'{escape_unprintable(spelled)}'"


def text_key(key: object) -> str:
    """A stored key as text: SQLite keeps what a hand edit or another tool wrote (a BLOB, text not in UTF-8),
    its bytes that are not UTF-8 as the surrogate escapes command-line bytes get (`state rm $'\\xff'` names it)."""
    return key if isinstance(key, str) else bytes(key).decode("utf-8", "surrogateescape")  # type: ignore[call-overload]


class RowDamaged(CodecError):
    """The record row `key` holds what capctl never writes; `where` (the state's URL) once a store raised it.
    `repair`: the way out, when `state rm KEY` is none (a row of no key that names no key of its own)."""

    def __init__(self, key: str, detail: str, *, where: str = "", repair: str | None = None) -> None:
        self.key, self.detail, self.where, self.repair = key, detail, where, repair
        repair = repair or (
            "restore the state from a backup, correct that row by hand, or forget it with "
            f"`{forget_command(key)}` (docs/failure-modes.md)"
        )
        row = f"row {key!r}" if key else "a row with no key (NULL)"
        super().__init__(f"{where}: " * bool(where) + f"{row}: {detail}; {repair}")

    def at(self, where: str) -> RowDamaged:
        """The same damage, named in the state `where`."""
        return RowDamaged(self.key, self.detail, where=where, repair=self.repair)


# SQLite's TEXT PRIMARY KEY allows a NULL key (`UPDATE … SET key = NULL`); its store names such a row by the key
# its record holds, as long as no other row has that key (then `state rm` of that key finds it).
_NULL_BY_HAND = (
    "restore the state from a backup, or delete that row by hand (sqlite3 FILE "
    '"DELETE FROM capctl_records WHERE key IS NULL") (docs/failure-modes.md)'
)


def _null_keyed(body: str | bytes, keys: Container[str]) -> RowDamaged:
    """The damage of a record row whose key is NULL; `keys`: the other rows'."""
    try:
        named = json.loads(body).get("key")
    except (ValueError, TypeError, AttributeError):  # not JSON, not UTF-8, not an object
        named = None
    if not isinstance(named, str):
        return RowDamaged("", "its body names no key either", repair=_NULL_BY_HAND)
    if named in keys:
        detail = f"its key is NULL and its record names {named!r}, which another row holds"
        return RowDamaged(named, detail, repair=_NULL_BY_HAND)
    return RowDamaged(named, "its key is NULL (SQL NULL: the row's key column was emptied); its record names it")


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


_FIELDS: tuple[tuple[str, Any], ...] = tuple((f.name, _default_of(f)) for f in dataclasses.fields(TaskRecord))
_NAMES = frozenset(name for name, _ in _FIELDS)
_REQUIRED = frozenset(name for name, default in _FIELDS if default is dataclasses.MISSING)


def _by_value(kind: type[enum.Enum]) -> dict[Any, Any]:
    # A dict lookup is several times faster than calling the enum class, and this runs per record.
    return {member.value: member for member in kind}


_ENUMS: tuple[tuple[str, dict[Any, Any]], ...] = (
    ("family", _by_value(ApiFamily)),
    ("kind", _by_value(JobKind)),
    ("status", _by_value(TaskStatus)),
    ("restart_policy", _by_value(RestartPolicy)),
)


_TEXT, _NUMBER, _NONE = frozenset({str}), frozenset({int, float}), frozenset({type(None)})
# The JSON types each field may hold once its enum is looked up: a row edited by hand (`"reissue_count":
# "many"`) is refused when read, not a TypeError in the middle of an apply.
_TYPES: dict[str, frozenset[type]] = {
    **dict.fromkeys(("key", "provider", "target", "spec_hash", "fixed_hash"), _TEXT),
    **dict.fromkeys(
        ("vendor_task_id", "client_task_id", "stop_reason", "last_error", "selector", "home"), _TEXT | _NONE
    ),
    **dict.fromkeys(
        ("started_at", "observed_at", "stopped_at", "next_attempt_at", "removed_at", "updated_at"), _NUMBER | _NONE
    ),
    **dict.fromkeys(("reissue_count", "unproductive_runs", "fault_runs"), frozenset({int})),
    **dict.fromkeys(("idle_timeout", "max_duration"), frozenset({int, type(None)})),
    **dict.fromkeys(("updatable", "vendor_ref", "request", "labels"), frozenset({dict})),
    "accepted": frozenset({dict, type(None)}),
    **dict.fromkeys(
        ("productive", "update_unconfirmed", "reissuing", "replacing", "room_empty", "start_refused"), frozenset({bool})
    ),
    **{name: frozenset({kind}) for name, kind in (("family", ApiFamily), ("kind", JobKind))},
    **{name: frozenset({kind}) for name, kind in (("status", TaskStatus), ("restart_policy", RestartPolicy))},
}
assert _TYPES.keys() == _NAMES, "every TaskRecord field needs its stored types"
# Times are unix seconds a clock gave: JSON from a hand edit or an odd backup may hold NaN, Infinity or 1e308,
# which no clock gives, which every time shown (`state list`, `state show`) failed to format, and which the
# daemon compared as never due (a `next_attempt_at` of NaN: a task never tried again, silently). Years 1..9999.
_TIMES = frozenset(("started_at", "observed_at", "stopped_at", "next_attempt_at", "removed_at", "updated_at"))


# One encoder for every record: `json.dumps` with options builds a new one per call (a daemon writes a
# record per observation that changed it, per action and per decision to wait).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(record: TaskRecord) -> str:
    """Compact JSON of `record`, without the fields that hold their default value."""
    # Required fields have no default (MISSING equals no value), so they are always written.
    data = {name: value for name, default in _FIELDS if (value := getattr(record, name)) != default}
    for name in _TIMES:  # what `decode` refuses is never written: one such row stops every later load
        if (value := data.get(name)) is not None and not is_time(value):
            raise CodecError(f"record {record.key!r} cannot be stored: its {name} is no time ({value!r})")
    try:
        return _ENCODER.encode(data)
    except (TypeError, ValueError) as exc:
        # TypeError also stops a Secret (or any other object) from ever reaching the store.
        raise CodecError(f"record {record.key!r} cannot be stored as JSON: {exc}") from None


def decode(text: str | bytes) -> TaskRecord:
    """The record stored as `text`; raises `CodecError` naming what is wrong with it."""
    # Fast path for rows this version wrote itself (a load decodes every row); anything unusual
    # (unknown fields, missing ones, bad values) is handled, or explained, by the checked path.
    try:
        data = json.loads(text)
        for name, members in _ENUMS:
            if name in data:
                data[name] = members[data[name]]
        if _mistyped(data) is not None:
            raise TypeError("a field of the wrong type")
        return TaskRecord(**data)
    except (ValueError, TypeError, KeyError, AttributeError):  # AttributeError: not a JSON object
        return _decode_checked(text)


def _mistyped(data: dict[str, Any]) -> str | None:
    """The first field whose value is of a type the record never stores there, if any."""
    for name, value in data.items():  # a loop: a generator costs a load of 100k rows ~0.04 s more
        if type(value) not in _TYPES[name]:
            return name
    for name in _TIMES:  # six lookups, not one more test per field
        if (value := data.get(name)) is not None and not is_time(value):
            return name
    # A thumbnail's accepted submission becomes its record's fields again (`transitions.restored`).
    if (accepted := data.get("accepted")) is not None and _mistyped_accepted(accepted):
        return "accepted"
    return None


def _mistyped_accepted(accepted: dict[str, Any]) -> bool:
    return any(
        name not in _TYPES
        or type(value) not in _TYPES[name]
        or (name in _TIMES and value is not None and not is_time(value))
        for name, value in accepted.items()
    )


def _decode_checked(text: str | bytes) -> TaskRecord:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CodecError(f"stored record is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CodecError(f"stored record is a JSON {type(data).__name__}, not an object")
    data = {name: value for name, value in data.items() if name in _NAMES}  # newer fields: ignored
    if missing := _REQUIRED - data.keys():
        raise CodecError(f"stored record {data.get('key')!r} lacks field(s) {', '.join(sorted(missing))}")
    for name, members in _ENUMS:
        if name in data:
            try:
                data[name] = members[data[name]]
            except (KeyError, TypeError):
                raise CodecError(f"stored record {data['key']!r} has unknown {name} {data[name]!r}") from None
    if (wrong := _mistyped(data)) is not None:
        value = data[wrong]
        if wrong == "accepted" and type(value) is dict:
            what = "an accepted submission with an unknown or mistyped field"
            raise CodecError(f"stored record {data['key']!r} has {what}")
        if wrong in _TIMES and type(value) in _NUMBER:
            raise CodecError(f"stored record {data['key']!r} has a {wrong} that is no time ({value!r})")
        raise CodecError(f"stored record {data['key']!r} has a {wrong} of the wrong type ({type(value).__name__})")
    try:
        return TaskRecord(**data)
    except TypeError as exc:
        raise CodecError(f"stored record {data['key']!r} does not fit a task record: {exc}") from None


def decode_rows(rows: Iterable[tuple[str | None, str | bytes]]) -> dict[str, TaskRecord]:
    """Decode `(key, body)` rows into records by key; `CodecError` names the row's key."""
    # Building 100,000 records triggers many pointless cyclic-GC passes (records hold no cycles);
    # pausing the collector keeps a large load about a third faster.
    with gc_paused():
        records: dict[str, TaskRecord] = {}
        null_keyed: str | bytes | None = None
        for key, body in rows:
            if key is None:  # named once the other rows' keys are known (it may name one of them)
                null_keyed = body
                continue
            if not isinstance(key, str):  # SQLite keeps what another tool wrote: no key capctl writes or compares
                raise RowDamaged(text_key(key), "its key is stored as bytes (a BLOB, or text not in UTF-8), not text")
            try:
                record = decode(body)
            except CodecError as exc:
                raise RowDamaged(key, str(exc)) from None
            if record.key != key:  # a row copied or renamed by hand: written back under its own key, it was a
                # second record of that task (or an AssertionError in an apply), and its row's task was lost
                raise RowDamaged(key, f"holds the record of {record.key!r}")
            records[key] = record
        if null_keyed is not None:
            raise _null_keyed(null_keyed, records)
        return records
