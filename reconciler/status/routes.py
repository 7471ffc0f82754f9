"""`GET /` (the status page) and `GET /api/v1/status` (its JSON twin), for the daemon's HTTP listener.

The routes only read: they ask a snapshot provider (the daemon, in production; a hand-built snapshot in
tests) for one page and render it. With a token configured, both need it: `Authorization: Bearer <token>`
for scripts, or HTTP Basic with the token as the password (any user name) so that a browser can ask for it.
Every answer forbids caching and, through its Content-Security-Policy, loading anything from anywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from reconciler.listen import named_locally, not_named_locally
from reconciler.status.model import QueryError, StatusQuery, StatusSnapshot
from reconciler.status.render import render_html, to_json
from reconciler.status.token import token_accepted

__all__ = ["API_PATH", "HEADERS", "PAGE_PATH", "SnapshotProvider", "status_routes"]

PAGE_PATH = "/"
API_PATH = "/api/v1/status"
SnapshotProvider = Callable[[StatusQuery], Awaitable[StatusSnapshot]]

HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


@dataclass(frozen=True, slots=True)
class _Refused:
    status: int
    reason: str
    headers: dict[str, str]


def _served() -> bool:
    return True


def _no_token() -> str | None:
    return None


def _anywhere() -> bool:
    return False


def status_routes(
    provider: SnapshotProvider,
    *,
    enabled: Callable[[], bool] = _served,
    token: Callable[[], str | None] = _no_token,
    local_only: Callable[[], bool] = _anywhere,
) -> list[Route]:
    """The two routes. `enabled` (False: `--no-status-page`, answered 404) and `token` (None: open, for a
    loopback or cluster-internal listener) are asked at each request, so that the app can be built before
    anything is known about the daemon, as the deploy kit's tests build it to list the routes. `local_only`
    (True: --listen is loopback): without a token, only a request whose Host names this machine is answered
    (`listen.named_locally`), so that a web page rebound to 127.0.0.1 cannot read the page."""

    async def snapshot(request: Request) -> StatusSnapshot | _Refused:
        if not enabled():
            return _Refused(404, "the status page is turned off on this daemon (--no-status-page)", {})
        host = request.headers.get("host", "")
        if local_only() and token() is None and not named_locally(host):
            return _Refused(403, not_named_locally(host), {})
        if not token_accepted(token(), request.headers.get("authorization")):
            reason = (
                "the status page needs the daemon's status token: send it as `Authorization: Bearer TOKEN`, "
                "or as the password when the browser asks"
            )
            return _Refused(401, reason, {"www-authenticate": 'Basic realm="capctl status", charset="UTF-8"'})
        try:
            query = StatusQuery.parse(request.query_params.multi_items())
        except QueryError as exc:
            return _Refused(400, str(exc), {})
        return await provider(query)

    async def page(request: Request) -> Response:
        found = await snapshot(request)
        if isinstance(found, _Refused):
            return PlainTextResponse(found.reason + "\n", status_code=found.status, headers=HEADERS | found.headers)
        return HTMLResponse(render_html(found), headers=HEADERS)

    async def api(request: Request) -> Response:
        found = await snapshot(request)
        if isinstance(found, _Refused):
            body = {"ok": False, "reason": found.reason}
            return JSONResponse(body, status_code=found.status, headers=HEADERS | found.headers)
        return JSONResponse(to_json(found), headers=HEADERS)

    return [Route(PAGE_PATH, page, methods=["GET"]), Route(API_PATH, api, methods=["GET"])]
