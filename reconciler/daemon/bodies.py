"""Request bodies read and parsed under limits, for every route that takes one (callbacks, sync).

The callback routes face the internet, so what a client sends must not decide how much the daemon holds:
a body is refused by its Content-Length before a byte of it is read, and a chunked body is read only up
to the limit (eight 100 MB bodies once took the daemon to 1.05 GB, because bodies were read whole and
measured afterwards). JSON is parsed with a nesting limit: 100,000 `[` exhausts Python's recursion inside
`json.loads`, which answered 500 with a traceback in the log; and a document nested just under that limit
parses but would break the next piece of code that walks it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

MAX_JSON_DEPTH = 32  # a vendor callback nests 3 levels; a sync request 2


class BodyRefused(Exception):
    """The request is answered with HTTP `status`; `reason` is safe to send back (it quotes nothing sent)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The body, at most `limit` bytes of it: 413 by Content-Length before reading, or as soon as a chunked
    body passes the limit (the rest is never read: the answer closes the connection)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyRefused(413, f"{what} body too large: Content-Length {declared} is over the limit of {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BodyRefused(413, f"{what} body too large: more than the limit of {limit} bytes")
    except ClientDisconnect:  # the client left, or the read timeout closed it: nobody reads this answer
        raise BodyRefused(400, f"{what} body incomplete: the connection closed") from None
    return bytes(body)


def load_json(data: bytes | str) -> Any:
    """`json.loads`, but nesting deeper than MAX_JSON_DEPTH is refused; ValueError says what is wrong."""
    try:
        value = json.loads(data)
    except UnicodeDecodeError:
        raise ValueError("malformed JSON: the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ValueError(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _brackets(data) > MAX_JSON_DEPTH and _nested_deeper(value, MAX_JSON_DEPTH):
        raise ValueError(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
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
