"""JSON parsed with a nesting limit, for everything a client or a vendor sends (request bodies, callbacks).

100,000 `[` exhaust Python's recursion inside `json.loads`, which answered 500 with a traceback in the
log; and a document nested just under that limit parses but would break the next piece of code that
walks it. Pure, and without the HTTP stack, so the providers' callback parsers can use it.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_INT_DIGITS", "MAX_JSON_DEPTH", "bounded_int", "is_utf8", "load_json"]

MAX_JSON_DEPTH = 32  # a vendor callback nests 3 levels; a sync request 2
# An app id or a time has at most 20 digits; Python's own limit (4,300) answers with advice for programmers.
MAX_INT_DIGITS = 100
# An escape `\uD800`..`\uDFFF`: the only way a lone surrogate gets into a parsed string (bytes must be UTF-8).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class _Refused(ValueError):
    """Valid to Python's parser, not to JSON or to us: NaN and Infinity, an integer of absurd length."""


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON value")


def bounded_int(text: str) -> int:
    """`json.loads`'s `parse_int`: an integer of more than MAX_INT_DIGITS digits is refused (a ValueError)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"a number of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def load_json(data: bytes | str) -> Any:
    """`json.loads`, but nesting deeper than MAX_JSON_DEPTH is refused; ValueError says what is wrong."""
    try:
        value = json.loads(data, parse_constant=_constant, parse_int=bounded_int)
    except UnicodeDecodeError:
        raise ValueError("malformed JSON: the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except _Refused as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _brackets(data) > MAX_JSON_DEPTH and _nested_deeper(value, MAX_JSON_DEPTH):
        raise ValueError(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if _SURROGATE_ESCAPE.search(raw) and (lone := _lone_surrogate(value)):
        # No text holds one: every later encode of it (a signature's hash, a JSON answer, a state write) raised,
        # which answered an unauthenticated client 500 with a traceback per request.
        raise ValueError(f"malformed JSON: a string holds a lone surrogate (U+{ord(lone):04X}), which is no character")
    return value


def _brackets(data: bytes | str) -> int:
    """An upper bound of the nesting depth, cheap: a usual callback skips the walk below."""
    if isinstance(data, bytes):
        return data.count(b"[") + data.count(b"{")
    return data.count("[") + data.count("{")


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` deep; iterative, so the walk itself cannot recurse too deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in any key or string of a parsed document, or None; iterative, as the depth walk."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not is_utf8(item):
                return next(c for c in item if "\ud800" <= c <= "\udfff")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def is_utf8(text: str) -> bool:
    """Whether `text` can be sent or stored as UTF-8: not so with lone surrogates, which is how Python hands over
    command-line bytes that are not UTF-8 (`capctl state show $'\\xff'`); every driver and encoder then raises."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
