"""Request bodies read and parsed under limits, for every route that takes one (callbacks, sync).

The callback routes face the internet, so what a client sends must not decide how much the daemon holds:
a body is refused by its Content-Length before a byte of it is read, and a chunked body is read only up
to the limit (eight 100 MB bodies once took the daemon to 1.05 GB, because bodies were read whole and
measured afterwards). JSON is parsed with a nesting limit: 100,000 `[` exhausts Python's recursion inside
`json.loads`, which answered 500 with a traceback in the log; and a document nested just under that limit
parses but would break the next piece of code that walks it.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from reconciler.jsonlimits import MAX_JSON_DEPTH, load_json

__all__ = ["MAX_JSON_DEPTH", "BodyRefused", "load_json", "read_body"]


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
