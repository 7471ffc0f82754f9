"""`capctl run` before its daemon runs: waiting for a state store whose server does not answer yet, and what
the HTTP side answers meanwhile.

A replica started while its PostgreSQL was down (a cluster coming up, a database failing over, a pod
rescheduled during an outage) exited 1 at once. In Kubernetes that is a CrashLoopBackOff whose delays grow to
5 minutes, so the pod came back up to 5 minutes after the database did. Now it waits, as controllers do:
each failed connection is logged (the URL without its password), counted
(`capctl_state_store_connect_failures_total`, with `capctl_state_store_reachable 0`) and tried again after
a backoff (1 s, doubling, at most `MAX_RETRY_DELAY`). Meanwhile `/healthz` answers 200 (the process is alive:
the kubelet must not restart it), `/readyz` and the status page 503 with the reason, and every other route
503. `--state-wait` bounds the wait (default: none; 0 fails at once, as before). Only a server that cannot
be reached is waited for: a bad URL, a damaged state or a refused permission does not mend by waiting, and
exits 1 at once. The one-shot commands (plan, apply, state) never wait.

`Front` is the ASGI app uvicorn serves from the start: it answers as above until the daemon has started
(the state and the specs read), then hands every request to the daemon's own app. Its `/metrics` is collected
on the daemon's loop, as the daemon's own is: the daemon registers its scrape-time gauges (tasks, rooms) when
it is built, before its app is served, and they read records the loop changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import threading
from collections.abc import Callable
from typing import TypeVar

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from reconciler.clock import Clock
from reconciler.daemon.http import healthz
from reconciler.daemon.metrics import CONTENT_TYPE, Metrics
from reconciler.daemon.tasks import Background, first_of
from reconciler.headers import NoSniffApp
from reconciler.state.base import StateUnreachable

__all__ = ["FOREVER", "MAX_RETRY_DELAY", "Front", "open_when_reachable", "retry_delay"]

log = structlog.get_logger("capctl.daemon")

T = TypeVar("T")

FOREVER = math.inf  # --state-wait's default: wait as long as it takes
MAX_RETRY_DELAY = 30.0  # seconds between two attempts at most: a database back is found within 30 s


def retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, 4, … at most MAX_RETRY_DELAY)."""
    return min(2.0 ** min(attempt - 1, 16), MAX_RETRY_DELAY)


class Front:
    """The ASGI app served from the moment the port is bound; `serve(app)` hands every request to `app`.

    `reason` is what /readyz says until then (set by the daemon's thread, read by the HTTP thread: a str is
    replaced whole). Built on the daemon's loop, where its scrapes are collected."""

    def __init__(self, metrics: Metrics) -> None:
        self.reason = "not ready (starting)"
        self.loop = Background()
        self.loop.bind()
        self._app: ASGIApp = _starting_app(self, metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    def serve(self, app: ASGIApp) -> None:
        self._app = app


def _starting_app(front: Front, metrics: Metrics) -> ASGIApp:
    async def not_ready(_: Request) -> Response:
        return PlainTextResponse(front.reason + "\n", status_code=503)

    async def metrics_page(_: Request) -> Response:
        # A scrape taken just before the daemon's app is served may still be collecting when its workers start.
        return Response(await front.loop.call(metrics.render), media_type=CONTENT_TYPE)

    async def unavailable(_: Request) -> Response:
        # A vendor retries a callback answered 503; `capctl sync` shows the reason.
        return JSONResponse({"ok": False, "reason": front.reason}, status_code=503)

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return NoSniffApp(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", not_ready, methods=["GET"]),
            Route("/", not_ready, methods=["GET"]),  # the status page, opened in a browser: words, not JSON
            Route("/metrics", metrics_page, methods=["GET"]),
            Route("/{path:path}", unavailable, methods=methods),
        ]
    )


async def open_when_reachable(
    open_store: Callable[[], T],
    *,
    url: str,
    wait: float,
    clock: Clock,
    stopping: asyncio.Event,
    front: Front,
    metrics: Metrics,
) -> T | None:
    """`open_store()` (in a thread: a connection may take its timeout), tried again while it raises
    `StateUnreachable`, for at most `wait` seconds; each failure is logged with `url`, where the probes answer
    meanwhile. None when `stopping` is set meanwhile (SIGTERM: a clean stop, at once, even while a connection
    to a silent host is under way); StateUnreachable once `wait` has passed; any other error at once."""
    started, attempt = clock.monotonic(), 0
    front.reason = "not ready (starting: connecting to the state store)"
    while True:
        attempt += 1
        opening = _in_thread(open_store)
        await first_of(opening, stopping.wait())
        if opening.cancelled():
            return None
        try:
            return opening.result()
        except StateUnreachable as exc:
            metrics.state_store_connect_failures.inc()
            waited = clock.monotonic() - started
            if waited >= wait:
                if wait > 0:
                    raise StateUnreachable(
                        f"{exc}; gave up after {waited:.0f} s (--state-wait)", where=exc.where
                    ) from None
                raise
            delay = min(retry_delay(attempt), wait - waited)
            front.reason = f"not ready (waiting for the state store: attempt {attempt} failed): {exc}"
            log.warning(
                "state store unreachable; waiting for it",
                url=url,
                state=exc.where,  # never its password
                error=str(exc),
                attempt=attempt,
                retry_in=round(delay, 1),
                waited=round(waited, 1),
            )
            if await _stopped_within(stopping, clock, delay):
                return None


def _in_thread(call: Callable[[], T]) -> asyncio.Future[T]:
    """`call()` on a daemon thread of its own, its outcome in the future returned. Not the loop's executor: the
    process waits for those threads at exit, and a connection to a host that does not answer takes its whole
    timeout (10 s). A store opened after the future was cancelled is left to the process's exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():  # cancelled: the daemon is stopping
            outcome()

    def run() -> None:
        try:
            result = call()
        except Exception as exc:
            done = functools.partial(future.set_exception, exc)
        else:
            done = functools.partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is exiting
            loop.call_soon_threadsafe(settle, done)

    threading.Thread(target=run, name="capctl-state-open", daemon=True).start()
    return future


async def _stopped_within(stopping: asyncio.Event, clock: Clock, seconds: float) -> bool:
    """Wait `seconds` on `clock`, or until `stopping` is set; whether it was."""
    await first_of(clock.sleep(seconds), stopping.wait())
    return stopping.is_set()
