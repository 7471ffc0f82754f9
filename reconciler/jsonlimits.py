"""JSON parsed with a nesting limit, for everything a client or a vendor sends (request bodies, callbacks).

100,000 `[` exhaust Python's recursion inside `json.loads`, which answered 500 with a traceback in the
log; and a document nested just under that limit parses but would break the next piece of code that
walks it. Pure, and without the HTTP stack, so the providers' callback parsers can use it.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any

__all__ = ["MAX_INT_DIGITS", "MAX_JSON_DEPTH", "bounded_int", "is_utf8", "load_json"]

MAX_JSON_DEPTH = 32  # a vendor callback nests 3 levels; a sync request 2
# An app id or a time has at most 20 digits; Python's own limit (4,300) answers with advice for programmers.
MAX_INT_DIGITS = 100

# The checks below run over the bytes with C-speed regular expressions and translations, never a Python loop
# over the parsed values: the callback routes face the internet and a body is parsed on the daemon's loop, and
# a walk of a 1 MiB body of 300,000 `{}` (or a parse_int call for each of 500,000 numbers) held it for a second.
# Only a body holding an integer of more than MAX_INT_DIGITS digits (outside its strings) has each integer parsed
# through bounded_int. A first look for a run of that many digits reads the digits as `1`, the rest as `0`, and
# finds `1` x 101 (a regex `\d{101}` took 100 steps per byte of a body of 100-digit runs: 0.15 s per MiB); then
# 101 digits in a string no longer make every number cost a Python call.
_DIGITS = bytes(0x31 if c in b"0123456789" else 0x30 for c in range(256))
_LONG_RUN = b"1" * (MAX_INT_DIGITS + 1)
# As json.loads reads a number: an integer part not followed by a fraction or an exponent (those make a float).
_LONG_INT = re.compile(rb"(?<![0-9.eE+-])-?[0-9]{%d,}(?![0-9]|\.[0-9]|[eE][-+]?[0-9])" % (MAX_INT_DIGITS + 1))
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string: its brackets are no nesting
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEPS = bytes(1 if c in b"[{" else 255 if c in b"]}" else 0 for c in range(256))  # as signed bytes: +1, -1
# An escape `\uD800`..`\uDFFF` not in a high-low pair: the only way a lone surrogate enters a parsed string
# (the bytes must be UTF-8). Searched with each escaped backslash `\\` masked (`_ESCAPED_BACKSLASH`), so that
# every `\u` left is an escape: else the text `\\uD800` before a lone `\uDC00` looked like its pair.
_HIGH, _LOW = rb"\\u[dD][89abAB][0-9a-fA-F]{2}", rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_LONE_SURROGATE = re.compile(rb"%s(?!%s)|(?<!%s)%s" % (_HIGH, _LOW, _HIGH, _LOW))
_ESCAPED_BACKSLASH, _MASK = b"\\\\", b"__"  # same length: no escape moves next to another


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
    """`json.loads`, but nesting deeper than MAX_JSON_DEPTH, an integer of more than MAX_INT_DIGITS digits and a
    lone surrogate are refused; ValueError says what is wrong."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        # UTF-8 only (RFC 8259), a leading mark aside: json.loads reads UTF-16 and UTF-32 bytes too, whose
        # escapes and brackets the checks below, which read the bytes, would not see.
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
        value = json.loads(text, parse_constant=_constant, parse_int=bounded_int if _long_int(raw) else None)
    except UnicodeDecodeError:
        raise ValueError("malformed JSON: the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except _Refused as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(raw) > MAX_JSON_DEPTH:
        raise ValueError(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    if b"\\u" in raw and _LONE_SURROGATE.search(raw.replace(_ESCAPED_BACKSLASH, _MASK)):
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError as exc:
            # No text holds one: every later encode of it (a signature's hash, a JSON answer, a state write)
            # raised, which answered an unauthenticated client 500 with a traceback per request.
            lone = ord(exc.object[exc.start])
            raise ValueError(
                f"malformed JSON: a string holds a lone surrogate (U+{lone:04X}), which is no character"
            ) from None
    return value


def _long_int(raw: bytes) -> bool:
    """Whether `raw` may hold an integer of more than MAX_INT_DIGITS digits. Exact for valid JSON; for text that
    is not, json.loads fails before or at the first integer this misses, within the prefix where strings align."""
    return _LONG_RUN in raw.translate(_DIGITS) and _LONG_INT.search(_STRING.sub(b"", raw)) is not None


def _depth(raw: bytes) -> int:
    """How deep the containers of a parsed (so valid) document nest: the highest running sum of its brackets
    outside strings, +1 for each opening one and -1 for each closing one."""
    steps = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS).translate(_STEPS)
    return max(accumulate(array("b", steps)), default=0)


def is_utf8(text: str) -> bool:
    """Whether `text` can be sent or stored as UTF-8: not so with lone surrogates, which is how Python hands over
    command-line bytes that are not UTF-8 (`capctl state show $'\\xff'`); every driver and encoder then raises."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
