"""Headers on every answer of capctl's two HTTP servers, the daemon and the simulator, whatever the route.

`X-Content-Type-Options: nosniff`: a browser pointed at a probe, the metrics, a callback's or the sync API's
JSON, a 404 or an error must take the body for what its Content-Type says, never sniff HTML out of it. Only
the status page said so before. Starlette runs the middleware an app adds inside its own error handler, so a
500 would go out without the header: `NoSniffApp` wraps the whole stack instead. A route that sets the header
itself (the status page) keeps its own, not a second one.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["NOSNIFF", "NoSniffApp"]

NOSNIFF = (b"x-content-type-options", b"nosniff")


class NoSniffApp(Starlette):
    """A Starlette app whose every HTTP answer, errors included, carries `X-Content-Type-Options: nosniff`."""

    def build_middleware_stack(self) -> ASGIApp:
        return _nosniff(super().build_middleware_stack())


def _nosniff(app: ASGIApp) -> ASGIApp:
    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if all(name.lower() != NOSNIFF[0] for name, _ in headers):
                    message = {**message, "headers": [*headers, NOSNIFF]}
            await send(message)

        await app(scope, receive, send_with_header)

    return answer
