"""The daemon's HTTP side: vendor callbacks, health and readiness probes, Prometheus metrics, the
operators' `POST /api/v1/sync` and `POST /api/v1/wake` (what `capctl sync` and `capctl wake --daemon`
call) and the read-only status page.

A thin ASGI layer: it reads bodies and writes answers; verification and acting live in the controller
(`Daemon.handle_callback`, `Daemon.sync`), so the same logic is reached in-process by tests and over a
socket in production.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from reconciler.daemon.bodies import BodyRefused, load_json, read_body
from reconciler.daemon.metrics import CONTENT_TYPE
from reconciler.daemon.status import snapshot_provider
from reconciler.headers import NoSniffApp
from reconciler.listen import named_locally, not_named_locally
from reconciler.plan import walks
from reconciler.status import status_routes
from reconciler.status.token import unsendable

__all__ = [
    "MAX_CALLBACK_BYTES",
    "MAX_SYNC_BYTES",
    "MAX_WALKS",
    "SYNC_PATH",
    "SYNC_TOKEN_ENV",
    "WAKE_PATH",
    "create_app",
    "cross_site",
    "daemon_sync_token",
    "healthz",
    "parse_sync_body",
    "refused",
    "sync_authorized",
    "sync_token",
]

if TYPE_CHECKING:
    from reconciler.daemon.controller import Daemon

MAX_CALLBACK_BYTES = 1 << 20  # a vendor callback is a few hundred bytes; refuse anything absurd
MAX_SYNC_BYTES = 1 << 20  # about 10,000 keys; to sync more, sync every key (an empty body)
# Jobs and globs per sync or wake: each walks every task on the daemon's loop, where 40,000 of them in one body
# held it for minutes at 10,000 tasks (walk 55c-1); a whole key is looked up.
MAX_WALKS = 32
SYNC_PATH = "/api/v1/sync"
SYNC_TOKEN_ENV = "CAPCTL_SYNC_TOKEN"  # set for the daemon: sync and wake need it; set for the CLI: it is sent
WAKE_PATH = "/api/v1/wake"  # `capctl wake --daemon`, under the same token as sync
MAX_WAKE_LINES = 200  # what a wake says of its KEYs: a glob's woken tasks are listed one by one


def sync_token(env: Mapping[str, str]) -> str | None:
    """`CAPCTL_SYNC_TOKEN` as the daemon requires it and `capctl sync` sends it: without surrounding whitespace
    (a Secret made `--from-file` of an `echo`ed file ends in a newline, which a header cannot carry and a
    stripped bearer token never matched), None when unset or blank. ValueError for a token no bearer header
    can carry (a control character, a character outside ASCII), saying where, never quoting it."""
    value = env.get(SYNC_TOKEN_ENV, "")
    if (problem := unsendable(value, ascii_only=True)) is not None:
        raise ValueError(f"{SYNC_TOKEN_ENV} holds {problem}: set the token without it")
    return value.strip() or None


def daemon_sync_token(env: Mapping[str, str]) -> str | None:
    """The token the daemon's sync route requires (`sync_token`); ValueError also when the variable is set but
    blank (an empty Secret): the route would be open, so it is refused as an empty `--status-token-ref` is."""
    token = sync_token(env)
    if SYNC_TOKEN_ENV in env and token is None:
        raise ValueError(
            f"{SYNC_TOKEN_ENV} is set but empty, which would leave POST {SYNC_PATH} and {WAKE_PATH} open: set the "
            "token, or unset the variable to leave the routes open on purpose"
        )
    return token


def sync_authorized(expected: str | None, authorization: str | None) -> bool:
    """No token configured: open (a cluster-internal port). Else `Authorization: Bearer <token>`, compared in
    constant time."""
    if expected is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def cross_site(headers: Mapping[str, str]) -> bool:
    """Whether a browser sent this request from another site's page. A page may POST to any address its
    browser reaches (a daemon on 127.0.0.1, or one behind `kubectl port-forward`) without asking: a
    text/plain body needs no CORS preflight, and sync and wake read any body as JSON. Browsers say where a
    request comes from (`Sec-Fetch-Site`, `Origin`); capctl sync and wake, curl and scripts send neither."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    return origin is not None and urlsplit(origin).netloc.lower() != headers.get("host", "").lower()


def parse_sync_body(body: bytes) -> list[str] | None:
    """The keys of a sync request, or None for every key (an empty body or `{}`); ValueError says what is wrong."""
    if not body.strip():
        return None
    data: Any = load_json(body)
    if not isinstance(data, dict) or set(data) - {"keys"}:
        raise ValueError('expected {"keys": ["KIND/name/target", ...]}, or an empty body for every task')
    keys = data.get("keys")
    if keys is None:
        return None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError('"keys" must be a non-empty list of task keys (omit it to sync every task)')
    if (walking := len(set(filter(walks, keys)))) > MAX_WALKS:
        raise ValueError(
            f"at most {MAX_WALKS} jobs or globs in one request (each is compared with every task); got {walking}:"
            " one glob selects many (SnapshotJob/*, SnapshotJob/classes/room-1*), whole task keys are not limited"
        )
    return keys


def refused(exc: BodyRefused) -> Response:
    """The answer to a body not read to its end: the connection closes, so its unread rest is never read."""
    return JSONResponse({"ok": False, "reason": exc.reason}, status_code=exc.status, headers={"connection": "close"})


async def healthz(_: Request) -> Response:
    """Alive: it answers whatever the daemon is doing (waiting for its store, reading it, acting)."""
    return PlainTextResponse("ok\n")


def create_app(daemon: Daemon) -> Starlette:
    async def callback(request: Request) -> Response:
        vendor = request.path_params["vendor"]
        try:
            body = await read_body(request, MAX_CALLBACK_BYTES, "callback")
        except BodyRefused as exc:
            return refused(exc)
        status, reason = await daemon.background.run(daemon.handle_callback, vendor, body)
        return JSONResponse({"ok": status == 200, "reason": reason}, status_code=status)

    async def keys_of(request: Request, what: str) -> Response | list[str] | None:
        """The keys of an authorized sync or wake request (`what`, as its refusals name it), or the answer
        refusing it."""
        if cross_site(request.headers):
            reason = "a web page's cross-site request: sync and wake take requests from capctl, curl or scripts"
            return JSONResponse({"ok": False, "reason": reason}, status_code=403)
        host = request.headers.get("host", "")
        if daemon.local_only and daemon.sync_token is None and not named_locally(host):
            return JSONResponse({"ok": False, "reason": not_named_locally(host)}, status_code=403)
        if not sync_authorized(daemon.sync_token, request.headers.get("authorization")):
            reason = f"missing or wrong bearer token: set {SYNC_TOKEN_ENV} to the daemon's token"
            challenge = {"www-authenticate": 'Bearer realm="capctl sync"'}  # RFC 9110: a 401 names its scheme
            return JSONResponse({"ok": False, "reason": reason}, status_code=401, headers=challenge)
        try:
            body = await read_body(request, MAX_SYNC_BYTES, what)
        except BodyRefused as exc:
            return refused(exc)
        try:
            return parse_sync_body(body)
        except ValueError as exc:
            return JSONResponse({"ok": False, "reason": str(exc)}, status_code=400)

    async def sync(request: Request) -> Response:
        keys = await keys_of(request, "sync")
        if isinstance(keys, Response):
            return keys
        status, reason, queued, tombstones = await daemon.on_daemon_loop(daemon.sync, keys)
        # A count, not the keys: a small request never gets a large answer (every key can be 100,000).
        answer = {"ok": status == 200, "reason": reason, "queued": len(queued), "tombstones": tombstones}
        return JSONResponse(answer, status_code=status)

    async def wake(request: Request) -> Response:
        keys = await keys_of(request, "wake")
        if isinstance(keys, Response):
            return keys
        if keys is None:  # waking every task is a glob away ('SnapshotJob/*'), and said so
            reason = 'expected {"keys": ["KIND/name/target" or a glob, ...]}: name the tasks to wake'
            return JSONResponse({"ok": False, "reason": reason}, status_code=400)
        status, reason, lines = await daemon.on_daemon_loop(daemon.wake, keys)
        if len(lines) > MAX_WAKE_LINES:  # bounded, as sync's count is
            lines = [*lines[:MAX_WAKE_LINES], f"… and {len(lines) - MAX_WAKE_LINES} more"]
        return JSONResponse({"ok": status == 200, "reason": reason, "lines": lines}, status_code=status)

    async def readyz(_: Request) -> Response:
        await daemon.probe_store()  # in a thread, bounded: a hung store gives a 503, not a hung probe
        state = daemon.readiness()
        return PlainTextResponse(state.reason + "\n", status_code=200 if state.ready else 503)

    async def metrics(_: Request) -> Response:
        # On the daemon's loop: the scrape-time gauges walk records and rooms that the loop changes.
        return Response(await daemon.on_daemon_loop(daemon.metrics.render), media_type=CONTENT_TYPE)

    # GET / and GET /api/v1/status, read-only; --no-status-page and --status-token-ref are asked per request
    page = status_routes(
        snapshot_provider(daemon),
        enabled=lambda: daemon.status_page,
        token=lambda: daemon.status_token,
        local_only=lambda: daemon.local_only,
    )
    return NoSniffApp(
        routes=[
            Route("/callbacks/{vendor}", callback, methods=["POST"]),
            Route(SYNC_PATH, sync, methods=["POST"]),
            Route(WAKE_PATH, wake, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *page,
        ]
    )
