"""A tiny strict validator for vendor request bodies: field by field, no coercion, errors name the path.

The vendors are strict (`"5"` is not an integer, `true` is not `1`), so the simulator is too. Schemas are
plain data (`Obj`, `Arr`, `Val`) so one builder can emit both the ZEGO PascalCase and snake_case schemas.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Arr", "BodyError", "Obj", "Schema", "Val", "validate"]


class BodyError(Exception):
    """A field is missing, mistyped or out of range; `path` is the dotted location (e.g. `ImageConfig.Interval`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


@dataclass(frozen=True)
class Val:
    """A scalar: `kind` is "int", "str", "bool" or "number" (int or float, never bool)."""

    kind: str
    required: bool = False
    min: int | None = None
    max: int | None = None
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class Arr:
    item: Schema
    required: bool = False
    max_items: int | None = None


@dataclass(frozen=True)
class Obj:
    fields: Mapping[str, Schema]
    required: bool = False
    # Cross-field rules, run after the fields: (object, path) -> None, raising BodyError.
    checks: tuple[Callable[[dict[str, Any], str], None], ...] = field(default=())


Schema = Val | Arr | Obj

_TYPE_NAMES = {"int": "an integer", "str": "a string", "bool": "a boolean", "number": "a number"}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_scalar(value: Any, schema: Val, path: str) -> None:
    is_bool = isinstance(value, bool)
    ok = {
        "int": isinstance(value, int) and not is_bool,
        "number": isinstance(value, int | float) and not is_bool,
        "str": isinstance(value, str),
        "bool": is_bool,
    }[schema.kind]
    if not ok:
        raise BodyError(path, f"must be {_TYPE_NAMES[schema.kind]}, got {type(value).__name__}")
    if schema.choices is not None and value not in schema.choices:
        raise BodyError(path, f"must be one of {', '.join(map(str, schema.choices))}")
    if schema.min is not None and value < schema.min:
        raise BodyError(path, f"must be >= {schema.min}")
    if schema.max is not None and value > schema.max:
        raise BodyError(path, f"must be <= {schema.max}")
    if schema.pattern is not None and not re.fullmatch(schema.pattern, value):
        raise BodyError(path, f"must match {schema.pattern}")


def validate(value: Any, schema: Schema, path: str = "") -> None:
    """Raise BodyError at the first field that breaks `schema`; unknown object keys are errors."""
    if isinstance(schema, Val):
        _check_scalar(value, schema, path)
        return
    if isinstance(schema, Arr):
        if not isinstance(value, list):
            raise BodyError(path, "must be an array")
        if schema.max_items is not None and len(value) > schema.max_items:
            raise BodyError(path, f"at most {schema.max_items} items allowed, got {len(value)}")
        for i, item in enumerate(value):
            validate(item, schema.item, f"{path}[{i}]")
        return
    if not isinstance(value, dict):
        raise BodyError(path, "must be an object")
    for key in value:
        if key not in schema.fields:
            raise BodyError(_join(path, key), "unknown field")
    for key, sub in schema.fields.items():
        if key in value:
            validate(value[key], sub, _join(path, key))
        elif sub.required:
            raise BodyError(_join(path, key), "is required")
    for check in schema.checks:
        check(value, path)
