"""`StatelessClient`: a cookie an answer sets is never sent back, where a stock httpx client would send it."""

from __future__ import annotations

from http.cookiejar import Cookie

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from reconciler.httpclient import RefusingJar, StatelessClient


class CookieSetter:
    """An ASGI app that sets a cookie on every answer and records the Cookie header of every request."""

    def __init__(self) -> None:
        self.cookies_sent: list[str | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        self.cookies_sent.append(headers[b"cookie"].decode() if b"cookie" in headers else None)
        await receive()
        set_cookie = (b"set-cookie", b"session=account-a; Path=/")
        await send({"type": "http.response.start", "status": 200, "headers": [set_cookie]})
        await send({"type": "http.response.body", "body": b"{}"})


async def _three_calls(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        response = await client.post("http://vendor.test/api?Action=X", json={"n": 1})
        assert response.headers["set-cookie"].startswith("session=")


async def test_a_cookie_an_answer_sets_is_not_sent_back() -> None:
    app = CookieSetter()
    async with StatelessClient(transport=httpx.ASGITransport(app=app)) as client:
        await _three_calls(client)
        assert not client.cookies
    assert app.cookies_sent == [None, None, None]


async def test_a_stock_client_would_send_it_back() -> None:
    """The control: the app above does make httpx keep and send its cookie."""
    app = CookieSetter()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        await _three_calls(client)
    assert app.cookies_sent == [None, "session=account-a", "session=account-a"]


async def test_no_cookie_can_be_given_to_it() -> None:
    with pytest.raises(TypeError, match="no cookies"):
        StatelessClient(cookies={"a": "b"})
    async with StatelessClient() as client:
        with pytest.raises(TypeError, match="no cookies"):
            client.cookies = {"a": "b"}


def test_the_jar_refuses_every_cookie() -> None:
    jar = RefusingJar()
    cookie = Cookie(0, "a", "b", None, False, "x.test", True, False, "/", True, False, None, False, None, None, {})
    jar.set_cookie(cookie)
    assert list(jar) == []
