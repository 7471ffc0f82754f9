"""The HTTP client capctl calls stateless APIs with (the vendors', and the simulator's callbacks): no cookies.

The vendors' APIs are stateless, and one client serves every Provider document: a cookie that a gateway sets
for one account must never be sent with another's calls. httpx keeps cookies by default and has no option to
stop (encode/httpx#2992, still open; #1359, where its maintainers suggest a cookie jar that refuses every
cookie). Two parts:

- `cookies=RefusingJar()`, the maintainers' way: whatever httpx does with its jar, nothing is stored.
- `StatelessClient.cookies`, the client's public cookie store, is empty and looks at no answer. httpx reads
  that property on every request (to merge it) and every answer (to extract from it); the stock store wraps
  each answer and its request in urllib objects for the jar to read, even a refusing one: 30-40 µs a call,
  some 8 % of the daemon's CPU over the coverage benchmark (bench/README.md, "Coverage over a simulated day").

tests/core/test_httpclient.py proves that a cookie set by an answer is not sent back.
"""

from __future__ import annotations

from http.cookiejar import Cookie, CookieJar
from typing import Any

import httpx

__all__ = ["RefusingJar", "StatelessClient"]


class RefusingJar(CookieJar):
    """A cookie jar that takes no cookie, from an answer or from anyone."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Cookie) -> None:
        pass


class _NoCookies(httpx.Cookies):
    """An empty store that never reads an answer nor writes a request header."""

    def __init__(self) -> None:
        super().__init__(RefusingJar())

    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


class StatelessClient(httpx.AsyncClient):
    """`httpx.AsyncClient` without cookies: none stored, none sent (`cookies=` is not taken)."""

    def __init__(self, **options: Any) -> None:
        if "cookies" in options:
            raise TypeError("StatelessClient sends no cookies: do not pass cookies=")
        super().__init__(cookies=RefusingJar(), **options)
        self._no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("StatelessClient sends no cookies")
