"""One document through its model: pick the model by `kind`, validate, turn pydantic errors into
positioned messages a person can act on (unknown field → "did you mean", enum typo → the close value).

A document whose only problems are unknown fields is still modelled without them, so that the checks
that need it (its relations, its vendor's ranges) run in the same pass: a typo does not hide the next
error. One whose `spec` fields fail validation (a type error, a bad value) is modelled too, *partially*:
without those fields, or with a placeholder where one is required, and with their names in
`Loaded.broken`, so that the checks of the fields that did validate (`interval: 0s` beside a `storage` of
the wrong type) run in the same pass; checks read no broken field (`checks.py`), and such a document is
never used by another document's checks nor expanded. The load fails anyway on the reported errors.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from reconciler.spec.errors import ErrorSink, did_you_mean, did_you_mean_field, dotted, quote, quote_input
from reconciler.spec.fields import (
    CALLBACK_URL_HINT,
    CALLBACK_URL_PATTERN,
    ENDPOINT_HINT,
    ENDPOINT_PATTERN,
    NAME_PATTERN,
    VOLC_ID_PATTERN,
)
from reconciler.spec.models import API_VERSION, DOCUMENT_MODELS, Document, ThumbnailFile, field_types
from reconciler.spec.refs import LITERAL_SECRET, Unresolved, is_reference, reference_typo
from reconciler.spec.yamlpos import Path, RawDocument

__all__ = ["Loaded", "validate_document"]


@dataclass(frozen=True, slots=True)
class Loaded:
    """A validated document and where it came from."""

    raw: RawDocument
    model: Document
    # `spec` fields (YAML names) that failed validation, already reported: the model holds no value of
    # theirs (a default, or a placeholder for a required one), so no check may read them.
    broken: frozenset[str] = frozenset()
    # Of a broken list field whose entries are checked one by one (`ENTRY_MODELS`): the entries that are
    # valid on their own, with their index, so their rules are reported in the same pass as the others' errors.
    entries: Mapping[str, tuple[tuple[int, BaseModel], ...]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def name(self) -> str:
        return self.model.metadata.name

    def at(self, path: Path) -> tuple[str, int, int]:
        return self.raw.at(path)

    def ref(self) -> str:
        """`Kind 'name' (file:line:col)`, for messages that name another document."""
        return f"{self.kind} '{self.name}' ({self.raw.source})"


_PATTERN_HINTS: Final = {
    NAME_PATTERN: "does not match lowercase letters, digits and '-', starting and ending with a letter or digit",
    VOLC_ID_PATTERN: "does not match letters, digits and _ @ - . (1..128 characters)",
    ENDPOINT_PATTERN: ENDPOINT_HINT,
    CALLBACK_URL_PATTERN: CALLBACK_URL_HINT,
}
_TYPE_NAMES: Final = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    dict: "a mapping",
    list: "a list",
    type(None): "null",
}


def _data_path(data: Any, loc: tuple[int | str, ...], *, missing: bool) -> Path:
    """The path in the document that a pydantic `loc` points at, minus union tags and validator labels.
    Only a missing field ends in a part that is not in the document (a tag such as `rooms`' `names` would)."""
    path: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            current = current[part]
        elif not missing or i < len(loc) - 1 or part == "[key]":
            continue
        path.append(part)
    return tuple(path)


def _field_names(model: type[BaseModel], path: Path) -> list[str]:
    """YAML field names accepted at `path` inside `model`, for "did you mean" hints."""
    return [
        f.alias or n
        for tp in field_types(model, path)
        if isinstance(tp, type) and issubclass(tp, BaseModel)
        for n, f in tp.model_fields.items()
    ]


# A room selector's fields, as a misplaced one is written where it belongs.
_SELECTOR_FIELDS: Final = {
    "match": "{match: 'class-*'}",
    "exclude": "{match: …, exclude: 'class-test-*'}",
    "maxRooms": "{match: …, maxRooms: 20}",
}


def _selector_field(word: Any) -> str | None:
    """The room selector's field `word` names whatever its case, `_` or `-` (`max_rooms`, `Exclude`), or None."""
    key = str(word).replace("_", "").replace("-", "").lower()
    return next((f for f in _SELECTOR_FIELDS if f.lower() == key), None)


def _selects_rooms(model: type[BaseModel], path: Path) -> bool:
    """Whether the mapping at `path` (a job's `spec`) has a `rooms` field that takes a room selector."""
    return path == ("spec",) and "rooms" in _field_names(model, path)


def _describe(value: Any) -> str:
    if isinstance(value, str):  # also a reference's text (RefStr, SecretText): no class name in a message
        return _TYPE_NAMES[str]
    return _TYPE_NAMES.get(type(value), type(value).__name__)


_BOUNDS: Final = {
    "greater_than_equal": ("ge", "at least"),
    "less_than_equal": ("le", "at most"),
    "greater_than": ("gt", "greater than"),
    "less_than": ("lt", "less than"),
}


# A value another kind of document takes, as typed in any case: where to write it instead (walk 16D-4: ZEGO's
# own API has jpg as a recording format, so a ZEGO user asks a RecordingJob for it, as `JPG` or `jpeg` too).
_JPG_ELSEWHERE: Final = (
    " (jpg images come from a SnapshotJob on a zego provider: its `interval` is the snapshot interval)"
)
_ELSEWHERE: Final = {("RecordingJob", "spec.format", word): _JPG_ELSEWHERE for word in ("jpg", "jpeg")}

# A quoted number or boolean (`width: "800"`): the value the field wants, written as text.
_UNQUOTED: Final = {
    "int_type": re.compile(r"-?\d+", re.ASCII),  # unquoted, "１２３" is text still: no hint
    "float_type": re.compile(r"-?\d+(\.\d+)?", re.ASCII),
    "bool_type": re.compile(r"true|false"),
}


def _kind_of(model: type[BaseModel]) -> str:
    return next((name for name, m in DOCUMENT_MODELS.items() if m is model), "")


def _message(err: Any, field: str, model: type[BaseModel], path: Path) -> str:
    kind: str = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden" and _selects_rooms(model, path[:-1]) and (name := _selector_field(path[-1])):
        # `spec.maxRooms` said `(did you mean 'rooms'?)`, and `spec.exclude` pointed at explain (walk 55b); so did
        # `spec.max_rooms` and `spec.maxrooms`, both a selector's field misspelled as well as misplaced (walk 56a).
        spelled = f"did you mean '{name}'? " if name != path[-1] else f"{name} is "
        return f"unknown field '{field}' ({spelled}a room selector's field: rooms: {_SELECTOR_FIELDS[name]})"
    if kind == "extra_forbidden":
        hint = did_you_mean_field(str(path[-1]), _field_names(model, path[:-1]))
        if not hint:  # no near miss (`interval` on a RecordingJob): say where the right names are (walk 12A-8)
            where = ".".join(
                [_kind_of(model), *(p for p in path[:-1] if isinstance(p, str))]
            )  # explain walks lists through
            hint = f" (`capctl explain {where}` lists its fields)"
        return f"unknown field '{field}'{hint}"
    if kind == "missing":
        if field == "apiVersion":  # the one field whose value is fixed: say it, as a wrong value's error does
            return f"missing required field 'apiVersion': start the document with `apiVersion: {API_VERSION}`"
        return f"missing required field '{field}'"
    if path[:2] == ("spec", "rooms") and len(path) == 3 and isinstance(value, dict) and _selects_rooms(model, path[:1]):
        # `rooms: [{match: class-*}]` (`- match: …` under rooms) said `Input should be a valid string, got a mapping`.
        return (
            f"{field}: a room selector is the value of spec.rooms, not an entry of a list: rooms: {{match: …}} (no '-')"
        )
    if typo := reference_typo(value):  # `{enV: NAME}` where text, a number or a duration goes
        return f"{field}: {typo}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        # One choice is already named by "expected": `capctl/v2` got "(did you mean 'capctl/v1'?)" after it.
        hint = did_you_mean(value, choices) if isinstance(value, str) and len(choices) > 1 else ""
        hint = _ELSEWHERE.get((_kind_of(model), field, value.lower()), hint) if isinstance(value, str) else hint
        return f"{field}: {quote_input(value)} is not allowed; expected {ctx.get('expected')}{hint}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = ctx.get("expected_tags", "'volcengine', 'zego'")
        choices = re.findall(r"'([^']*)'", tags)
        tag = ctx.get("tag")
        if tag is None:
            return f"missing required field '{field}.type' (one of {tags})"
        return f"{field}.type: unknown type {quote(tag)}; expected one of {tags}{did_you_mean(str(tag), choices)}"
    if kind == "is_instance_of":
        return f"{field}: {LITERAL_SECRET}"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return f"{field}: {quote_input(value)} {_PATTERN_HINTS.get(pattern, 'does not match the pattern ' + pattern)}"
    if kind == "too_short":  # pydantic says "List should have at least 1 item after validation, not 0"
        least = ctx.get("min_length")
        unit = ("character", "characters") if isinstance(value, str) else ("entry", "entries")  # '' is a Text too
        return f"{field}: needs at least {least} {unit[least != 1]}, got {ctx.get('actual_length')}"
    if kind in _BOUNDS:  # pydantic says "Input should be greater than or equal to 1"
        bound, word = _BOUNDS[kind]
        return f"{field}: must be {word} {ctx.get(bound)}, got {value}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind == "model_type":  # pydantic names the model's class: "… or instance of StreamSelector"
        msg = "Input should be a valid mapping"
    if kind.endswith("_type"):
        msg += f", got {_describe(value)}"
    if kind == "string_type" and isinstance(value, bool):  # `rooms: [on]`: YAML 1.1 reads it as true
        msg += " (YAML reads yes, no, on, off, true and false as booleans: quote it)"
    elif kind == "string_type" and isinstance(value, int | float):
        msg += " (quote it to make it text)"
    elif type(value) is str and (shape := _UNQUOTED.get(kind)) and shape.fullmatch(value):  # not a reference's
        msg += " (write it without quotes: quoted, it is text)"
    return f"{field}: {msg}"


def _without(data: Any, path: Path) -> Any:
    """A copy of `data` without the mapping key at `path`; only the containers on the way are copied."""
    head, rest = path[0], path[1:]
    if not rest:
        return {k: v for k, v in data.items() if k != head}
    if isinstance(data, dict):
        return {**data, head: _without(data[head], rest)}
    assert isinstance(head, int)
    return [_without(v, rest) if i == head else v for i, v in enumerate(data)]


def validate_document(raw: RawDocument, data: Any, errors: ErrorSink) -> Loaded | None:
    """The document's model, or None after reporting why it is not valid (see the module docstring for a
    document whose only problems are unknown fields: it is reported, and returned without them)."""
    if not isinstance(data, dict):
        errors.add(
            raw.where, f"a document must be a mapping with apiVersion, kind, metadata and spec, got {_describe(data)}"
        )
        return None
    kind = data.get("kind")
    model = DOCUMENT_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        if kind is None:
            unset = _unset_by_reference(raw.value, None, ("kind",))
            missing = "missing required field 'kind' (one of " + ", ".join(DOCUMENT_MODELS) + ")"
            errors.add(raw.at(("kind",)) if unset else raw.where, unset or missing)
        elif not isinstance(kind, Unresolved):  # its reference's error says why (it said "unknown kind" too)
            hint = did_you_mean(str(kind), DOCUMENT_MODELS)
            errors.add(
                raw.at(("kind",)),
                f"kind: unknown kind {quote(kind)}; expected one of {', '.join(DOCUMENT_MODELS)}{hint}",
            )
        if data.get("apiVersion") != API_VERSION:
            errors.add(raw.at(("apiVersion",)), f"apiVersion: expected {API_VERSION!r}")
        return None
    try:
        return Loaded(raw, model.model_validate(data))
    except ValidationError as exc:
        unknown: list[Path] = []
        problems = exc.errors(include_url=False)
        for err in problems:
            # The value at fault: a Provider spec's `type` where its union's tag is (an unresolved one was
            # "unknown type '<unresolved reference>'" beside its own error; walk 54a).
            tagged = err["type"] in ("union_tag_invalid", "union_tag_not_found") and isinstance(err.get("input"), dict)
            value = err["input"].get("type") if tagged else err.get("input")
            if err["type"] == "extra_forbidden":
                # A reference in an unknown field was never needed: the field is the problem, not its variable.
                for failed in _unresolved_in(err.get("input")):
                    errors.withdraw(failed.error)
            elif isinstance(value, Unresolved):
                continue
            path = _data_path(data, err["loc"], missing=err["type"] == "missing")
            at = (*path, "type") if tagged else path
            if err["type"] == "extra_forbidden":
                unknown.append(path)
            where = raw.key_at(path) if err["type"] == "extra_forbidden" else raw.at(at)
            if err["type"] == "missing":
                where = raw.key_at(path[:-1]) if path[:-1] else raw.where
            errors.add(where, _unset_by_reference(raw.value, value, at) or _message(err, dotted(path), model, path))
        broken = _broken_fields(data, problems)
        if broken is None:
            return None
        for path in unknown:
            data = _without(data, path)
        entries = _valid_entries(str(kind), data["spec"], broken)
        loaded = _partial(raw, model, data, broken, entries)
        return dataclasses.replace(loaded, entries=entries) if loaded is not None and entries else loaded


def _unset_by_reference(document: Any, value: Any, path: Path) -> str:
    """Why a value that is needed is null where its reference's `default: ~` left it unset (it said "Input should
    be a valid string, got null", the `~` nowhere in sight; walk 53b), else ""."""
    ref = document
    for part in path:
        ref = (
            ref.get(part)
            if isinstance(ref, dict)
            else ref[part]
            if isinstance(ref, list) and isinstance(part, int)
            else None
        )
    if value is not None or not is_reference(ref) or ref.get("default", "") is not None:
        return ""
    return f"{dotted(path)}: needs a value, and its reference gives none: {ref['env']} is not set and its default is ~"


def _unresolved_in(value: Any) -> Iterator[Unresolved]:
    """The failed references in `value`, however deep."""
    if isinstance(value, Unresolved):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _unresolved_in(item)


# List fields whose entries are modelled one by one when the list is broken (one bad entry would otherwise
# hide every other entry's rule errors until it is fixed): (kind, YAML field name) → the entry's model.
ENTRY_MODELS: Final[Mapping[tuple[str, str], type[BaseModel]]] = {("ThumbnailJob", "files"): ThumbnailFile}


def _valid_entries(kind: str, spec: Any, broken: frozenset[str]) -> dict[str, tuple[tuple[int, BaseModel], ...]]:
    entries: dict[str, tuple[tuple[int, BaseModel], ...]] = {}
    for (of, name), model in ENTRY_MODELS.items():
        items = spec.get(name) if of == kind and name in broken and isinstance(spec, dict) else None
        if isinstance(items, list):
            entries[name] = tuple((i, valid) for i, item in enumerate(items) if (valid := _entry(model, item)))
    return entries


def _entry(model: type[BaseModel], item: Any) -> BaseModel | None:
    try:
        return model.model_validate(item)
    except ValidationError:  # its errors were reported with the document's
        return None


# Values that pass a required field's validation when it is broken, tried in order (a name, room names, a
# thumbnail's files when none is valid): no check reads a broken field, they only let the rest of the
# document be modelled.
_PLACEHOLDERS: Final[tuple[Any, ...]] = (
    "placeholder",
    ["placeholder"],
    [{"cdn": "tencent", "fileId": "placeholder", "definition": 0}],
)


def _broken_fields(data: dict[str, Any], problems: list[Any]) -> frozenset[str] | None:
    """The `spec` fields with an error other than an unknown field; None when an error is elsewhere (kind,
    metadata, a `spec` that is not a mapping, a union's type tag): then nothing can be modelled."""
    spec = data.get("spec")
    broken = set()
    for err in problems:
        if err["type"] == "extra_forbidden":
            continue
        path = _data_path(data, err["loc"], missing=err["type"] == "missing")
        if not isinstance(spec, dict) or len(path) < 2 or path[0] != "spec":
            return None
        broken.add(str(path[1]))
    return frozenset(broken)


def _partial(
    raw: RawDocument,
    model: type[Document],
    data: dict[str, Any],
    broken: frozenset[str],
    entries: Mapping[str, tuple[tuple[int, BaseModel], ...]],
) -> Loaded | None:
    """The document modelled without its `broken` spec fields (see the module docstring), or None. A broken
    list with `entries` valid on their own holds those (a required one needs a value; checks read `entries`)."""
    spec = {k: v for k, v in data["spec"].items() if k not in broken}
    for name, valid in entries.items():
        if valid:
            spec[name] = [data["spec"][name][i] for i, _ in valid]
    for _ in range(len(broken) + 1):
        try:
            return Loaded(raw, model.model_validate({**data, "spec": spec}), broken)
        except ValidationError as exc:  # a broken field is required: a placeholder where one passes
            missing = {
                err["loc"][-1]
                for err in exc.errors(include_url=False)
                if err["type"] == "missing" and err["loc"][-1] in broken
            }
            if not missing or any(name in spec for name in missing):
                return None
            for name in missing:
                spec[name] = next((v for v in _PLACEHOLDERS if _passes(model, data, spec, name, v)), None)
            if None in (spec[name] for name in missing):
                return None
    return None


def _passes(model: type[Document], data: dict[str, Any], spec: dict[str, Any], name: Any, value: Any) -> bool:
    try:
        model.model_validate({**data, "spec": {**spec, name: value}})
    except ValidationError as exc:
        return not any(name in err["loc"] for err in exc.errors(include_url=False))
    return True
