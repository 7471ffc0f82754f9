"""Reading a saved plan back: every field of the JSON checked for its type before anything uses it.

A saved plan is a file people open: one edited by hand (`"prune": "false"`, a key given as a number, a
selector's `seen_at` retyped) was read loosely (`bool("false")` is true, `tuple("abc")` three targets) or
broke `show` and `apply --plan` with a traceback deep in rendering. Here the file's shape is that of
`plan_to_json` (fields added later are optional, unknown ones ignored, as a format version allows): a wrong
type is an error naming the field (`changes[3].key: expected a string, found 5`), and nothing is read from a
plan that fails. Plain checks rather than a pydantic model: a plan of 100,000 changes is read in the time its
JSON takes to parse, not ten times that. A plan is not signed: what `apply --plan` trusts it for is checked
against the state and the specs (`engine.verify_saved_plan`), not against the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from reconciler.clock import is_time
from reconciler.model import Action, ApiFamily, Change
from reconciler.plan import Plan, PlanError, PlanOptions, parse_rfc3339

__all__ = ["read_plan_json"]

Check = tuple[Callable[[Any], bool], str]  # the test a value passes, and what it should be (for the error)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_time(value: Any) -> bool:
    try:
        return is_time(parse_rfc3339(value))  # (years 1..9999 in UTC: shown, and written again, as it is read)
    except ValueError:
        return False


def _is_epoch(value: Any) -> bool:
    """A version-1 `created_at`: NaN, Infinity (which Python's JSON reads) or 1e308 failed `show` on formatting."""
    return isinstance(value, int | float) and not isinstance(value, bool) and is_time(value)


def _is_texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


TEXT: Final[Check] = (lambda v: isinstance(v, str), "a string")
TASK_KEY: Final[Check] = (  # the target may hold `/`, the kind and the job never do (`model.job_of`)
    lambda v: isinstance(v, str) and v.count("/") >= 2 and "" not in v.split("/", 2)[:2],
    "a task key, Kind/job/target",
)
TEXT_OR_NULL: Final[Check] = (lambda v: v is None or isinstance(v, str), "a string or null")
FLAG: Final[Check] = (lambda v: isinstance(v, bool), "true or false")
COUNT: Final[Check] = (_is_count, "a whole number, 0 or more")
COUNT_OR_NULL: Final[Check] = (lambda v: v is None or _is_count(v), "a whole number, 0 or more, or null")
TIME: Final[Check] = (_is_time, "an RFC 3339 time with its offset, e.g. 2026-12-05T18:04:00Z")
TIME_OR_NULL: Final[Check] = (lambda v: v is None or _is_time(v), f"{TIME[1]}, or null")
EPOCH: Final[Check] = (_is_epoch, "epoch seconds of a year 1 to 9999")
TEXTS: Final[Check] = (_is_texts, "a list of strings")
OBJECT_OR_NULL: Final[Check] = (lambda v: v is None or isinstance(v, dict), "an object or null")
ACTIONS: Final = frozenset(a.value for a in Action)
FAMILIES: Final = frozenset(f.value for f in ApiFamily)
ACTION: Final[Check] = (lambda v: isinstance(v, str) and v in ACTIONS, "one of " + ", ".join(Action))
FAMILY: Final[Check] = (lambda v: isinstance(v, str) and v in FAMILIES, "one of " + ", ".join(ApiFamily))
COUNTS: Final[Check] = (
    lambda v: isinstance(v, dict) and all(_is_count(n) for n in v.values()),
    "an object of whole numbers",
)
CLAIMED: Final[Check] = (
    lambda v: (
        isinstance(v, list)
        and all(isinstance(c, dict) and isinstance(c.get("room"), str) and isinstance(c.get("by"), str) for c in v)
    ),
    'a list of {"room": …, "by": …} strings',
)

REQUIRED: Final = object()
# field → (check, the value when absent, or REQUIRED). Defaults: fields added within a format version.
PLAN_FIELDS: Final[dict[str, tuple[Check, Any]]] = {
    "state_serial": (COUNT, REQUIRED),
    "refreshed": (FLAG, REQUIRED),
    "prune": (FLAG, REQUIRED),
    "targets": (TEXTS, REQUIRED),
    "replace": (TEXTS, REQUIRED),
    "labels": (TEXTS, []),  # absent in plans saved before label selectors
    "paths": (TEXTS, REQUIRED),
    "notes": (TEXTS, []),
    "unobserved": (TEXTS, []),
    "selectors": ((lambda v: isinstance(v, list), "a list"), []),  # absent before room selectors
    "changes": ((lambda v: isinstance(v, list), "a list"), REQUIRED),
}
CHANGE_FIELDS: Final[dict[str, tuple[Check, Any]]] = {
    "key": (TASK_KEY, REQUIRED),
    "action": (ACTION, REQUIRED),
    "reason": (TEXT, REQUIRED),
    "provider": (TEXT, REQUIRED),
    "family": (FAMILY, REQUIRED),
    "before_hash": (TEXT_OR_NULL, REQUIRED),
    "after_hash": (TEXT_OR_NULL, REQUIRED),
    "details": (TEXTS, REQUIRED),
    "before": (OBJECT_OR_NULL, None),
    "after": (OBJECT_OR_NULL, None),
}
SELECTOR_FIELDS: Final[dict[str, tuple[Check, Any]]] = {
    "job": (TEXT, REQUIRED),
    "provider": (TEXT, REQUIRED),
    "rooms": (TEXT, REQUIRED),
    "max_rooms": (COUNT_OR_NULL, REQUIRED),
    "seen_at": (TIME_OR_NULL, REQUIRED),
    **{name: (TEXTS, REQUIRED) for name in ("active", "running", "start", "left_out", "ending")},
    "claimed": (CLAIMED, REQUIRED),
    "counts": (COUNTS, REQUIRED),
}


class _Malformed(Exception):
    pass


def _fields(data: Any, fields: Mapping[str, tuple[Check, Any]], where: str) -> dict[str, Any]:
    """`data`'s values of `fields`, each checked; absent optional ones as their default."""
    if not isinstance(data, dict):
        raise _Malformed(f"{where or 'the plan'}: expected an object, found {_found(data)}")
    out = {}
    for name, ((test, wanted), default) in fields.items():
        value = data.get(name, REQUIRED)
        if value is REQUIRED:
            if default is REQUIRED:
                raise _Malformed(f"{_at(where, name)}: missing (expected {wanted})")
            value = default
        elif not test(value):
            raise _Malformed(f"{_at(where, name)}: expected {wanted}, found {_found(value)}")
        out[name] = value
    return out


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _found(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:39]}… ({type(value).__name__})"


def read_plan_json(data: dict[str, Any], version: int, source: str) -> Plan:
    """The `Plan` a saved file of `version` holds, or `PlanError` naming the file and the first bad field."""
    try:
        top = _fields(data, {**PLAN_FIELDS, "created_at": (EPOCH if version == 1 else TIME, REQUIRED)}, "")
        for i, view in enumerate(top["selectors"]):  # kept whole, unknown fields too, for `show --format json`
            _fields(view, SELECTOR_FIELDS, f"selectors[{i}]")
        changes = []
        seen: set[str] = set()
        for i, item in enumerate(top["changes"]):
            c = _fields(item, CHANGE_FIELDS, f"changes[{i}]")
            if c["key"] in seen:
                raise _Malformed(f"changes[{i}].key: {c['key']!r} is listed twice")
            seen.add(c["key"])
            changes.append(
                Change(
                    key=c["key"],
                    action=Action(c["action"]),
                    reason=c["reason"],
                    provider=c["provider"],
                    family=ApiFamily(c["family"]),
                    before_hash=c["before_hash"],
                    after_hash=c["after_hash"],
                    details=tuple(c["details"]),
                    before=c["before"],
                    after=c["after"],
                )
            )
    except _Malformed as exc:
        raise PlanError(f"{source}: malformed plan ({exc}); make the plan again") from None
    return Plan(
        state_serial=top["state_serial"],
        created_at=float(top["created_at"]) if version == 1 else parse_rfc3339(top["created_at"]),
        options=PlanOptions(
            prune=top["prune"],
            refreshed=top["refreshed"],
            targets=tuple(top["targets"]),
            replace=tuple(top["replace"]),
            labels=tuple(top["labels"]),
        ),
        paths=tuple(top["paths"]),
        changes=tuple(changes),
        notes=tuple(top["notes"]),
        unobserved=tuple(top["unobserved"]),
        selectors=tuple(top["selectors"]),
    )
