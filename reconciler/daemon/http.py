"""The daemon's HTTP side: vendor callbacks, health and readiness probes, Prometheus metrics.

A thin ASGI layer: it reads bodies and writes answers; verification and acting live in the controller
(`Daemon.handle_callback`), so the same logic is reached in-process by tests and over a socket in production.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from reconciler.daemon.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from reconciler.daemon.controller import Daemon

MAX_CALLBACK_BYTES = 1 << 20  # a vendor callback is a few hundred bytes; refuse anything absurd


def create_app(daemon: Daemon) -> Starlette:
    async def callback(request: Request) -> Response:
        vendor = request.path_params["vendor"]
        body = await request.body()
        if len(body) > MAX_CALLBACK_BYTES:
            return JSONResponse({"ok": False, "reason": "callback body too large"}, status_code=413)
        status, reason = daemon.handle_callback(vendor, body)
        return JSONResponse({"ok": status == 200, "reason": reason}, status_code=status)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        state = daemon.readiness()
        return PlainTextResponse(state.reason + "\n", status_code=200 if state.ready else 503)

    async def metrics(_: Request) -> Response:
        return Response(daemon.metrics.render(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/callbacks/{vendor}", callback, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
