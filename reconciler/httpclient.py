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

Every answer is also read whole within bounds, for a vendor's gateway (or a proxy before it) may be hostile or
broken: httpx's timeout is per read, so an answer whose bytes trickle in never times out, and it reads any
length into memory. `send` reads at most `answer_limit` bytes, as sent and once decompressed (8 MiB: a room
listing of 10,000 users is about 1.5 MB) and gives the whole exchange `answer_deadline` seconds (30); past
either the call fails as an `httpx.RequestError` the callers already treat as an answer lost
(`AnswerTooLarge`, `AnswerTooSlow`).

The certificate authorities that verify a vendor's TLS certificate (certifi's bundle, or `SSL_CERT_FILE` /
`SSL_CERT_DIR`, as httpx reads them) are loaded when the first TLS connection is made, not when the client is:
parsing the bundle is 40–60 ms of CPU, which every plan and apply paid at its start, and which the simulator's
plain-http endpoints (the demo, the tests, the benchmarks) never need (bench/README.md, "The CLI's start").

tests/core/test_httpclient.py proves that a cookie set by an answer is not sent back, the two bounds over
a real socket, and that the authorities are loaded once, by the first TLS connection.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Mapping
from http.cookiejar import Cookie, CookieJar
from typing import Any

import httpx

__all__ = [
    "ANSWER_DEADLINE",
    "ANSWER_LIMIT",
    "AnswerTooLarge",
    "AnswerTooSlow",
    "RefusingJar",
    "StatelessClient",
    "trust_on_first_use",
    "trust_settings_problem",
]

ANSWER_LIMIT = 8 << 20  # bytes of one answer's body, as sent and once decompressed
ANSWER_DEADLINE = 30.0  # seconds from sending a request to the last byte of its answer


class AnswerTooLarge(httpx.RequestError):
    """An answer's body ran past the limit: the rest is not read, the connection is dropped."""

    def __init__(self, limit: int, *, request: httpx.Request) -> None:
        super().__init__(f"the answer is larger than {limit} bytes", request=request)
        self.limit = limit


class AnswerTooSlow(httpx.ReadTimeout):
    """An answer not complete within the deadline, though each of its reads came in time."""

    def __init__(self, deadline: float, *, request: httpx.Request) -> None:
        super().__init__(f"no complete answer within {deadline:g} s", request=request)
        self.deadline = deadline


class _Bounded(httpx.AsyncByteStream):
    """An answer's byte stream that stops with `AnswerTooLarge` once more than `limit` bytes came."""

    def __init__(self, stream: httpx.AsyncByteStream, limit: int, request: httpx.Request) -> None:
        self._stream, self._limit, self._request = stream, limit, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = 0
        async for chunk in self._stream:
            read += len(chunk)
            if read > self._limit:
                raise AnswerTooLarge(self._limit, request=self._request)
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


# Headers that describe the body as sent (its coding, its length, its framing), not the decoded one kept.
_AS_SENT = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


async def _read_within(response: httpx.Response, limit: int) -> httpx.Response:
    """The answer read whole and decoded (gzip, deflate, br), as a read `httpx.Response` of the decoded body
    (httpx's public constructor; `aread` would decode without a bound): its decoded size is bounded too, for a
    small compressed answer can expand without bound (a gzip bomb)."""
    parts: list[bytes] = []
    read = 0
    async for part in response.aiter_bytes():
        read += len(part)
        if read > limit:
            raise AnswerTooLarge(limit, request=response.request)
        parts.append(part)
    answer = httpx.Response(
        response.status_code,
        headers=[(name, value) for name, value in response.headers.raw if name.lower() not in _AS_SENT],
        content=b"".join(parts),  # read at once; its Content-Length is the decoded length
        request=response.request,
        extensions=response.extensions,  # the HTTP version and reason phrase
        history=response.history,
        default_encoding=response.default_encoding,
    )
    # (`elapsed` is not carried over: nothing reads it, and an answer a transport gave already read, as
    # httpx.MockTransport's, never gets one.)
    answer.next_request = response.next_request
    return answer


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


class _TrustOnFirstUse(ssl.SSLContext):
    """httpx's context for `verify=True` (`ssl.create_default_context` of the same file or directory), its
    certificate authorities loaded by the first connection that wraps a socket in TLS, once."""

    _cafile: str | None
    _capath: str | None
    _loaded: bool
    _lock: threading.Lock

    def _trust(self) -> None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self.load_verify_locations(cafile=self._cafile, capath=self._capath)
                    self._loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # httpx's sync clients
        self._trust()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # asyncio's and anyio's TLS
        self._trust()
        return super().wrap_bio(*args, **kwargs)


def trust_settings_problem(env: Mapping[str, str]) -> str | None:
    """What is wrong with the certificate authorities the environment names (SSL_CERT_FILE, else SSL_CERT_DIR,
    as httpx reads them), or with the file SSLKEYLOGFILE names, said before any vendor is called; None when
    nothing is."""
    return _authorities_problem(env) or _keylog_problem(env)


def _keylog_problem(env: Mapping[str, str]) -> str | None:
    """The TLS context opens SSLKEYLOGFILE (to append) as it is made: one that cannot be written (a name too long,
    a directory, a missing directory, a FIFO nobody reads) was an OSError traceback from every command (walk 12b).
    Opened here as the context would, not blocking, and created (private: it holds session keys) if missing."""
    if not (keylog := env.get("SSLKEYLOGFILE")) or sys.flags.ignore_environment:
        return None
    try:
        os.close(os.open(keylog, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        return (
            f"SSLKEYLOGFILE names {keylog!r}, which cannot be written ({exc.strerror}): point it at a file to "
            "append TLS session keys to, or unset it"
        )
    return None


def _authorities_problem(env: Mapping[str, str]) -> str | None:
    for name, exists in (("SSL_CERT_FILE", os.path.isfile), ("SSL_CERT_DIR", os.path.isdir)):
        if value := env.get(name):
            what: str | None = "is no file" if name == "SSL_CERT_FILE" else "is no directory"
            if exists(value):
                what = _no_certificate(value) if name == "SSL_CERT_FILE" else None
            if what is None:
                return None
            return f"{name} names {value!r}, which {what}" + (
                ": point it at the certificate authorities to trust (a PEM bundle, or a directory of them), "
                "or unset it to trust certifi's"
            )
    return None


def _no_certificate(path: str) -> str | None:
    """Why a bundle file cannot be loaded, or None. Only looked at, not parsed (the first TLS connection parses
    it): one that holds no PEM certificate (a DER `.crt`, a key, an empty file) would otherwise fail every
    vendor call as a TLS handshake, retried as a network fault, the variable named nowhere."""
    try:
        with open(path, "rb") as file:
            body = file.read()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if b"-----BEGIN CERTIFICATE-----" in body or b"-----BEGIN TRUSTED CERTIFICATE-----" in body:
        return None
    return "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"


def trust_on_first_use(*, trust_env: bool = True) -> ssl.SSLContext:
    """What httpx makes of `verify=True`, but loaded on first use. A file or directory named in the
    environment that is not there fails here (ValueError, `trust_settings_problem`), as httpx fails when the
    client is made."""
    import certifi

    if trust_env and (problem := trust_settings_problem(os.environ)):
        raise ValueError(problem)
    context = _TrustOnFirstUse(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    # The flags this Python's default context adds (3.13: VERIFY_X509_STRICT and _PARTIAL_CHAIN), from one that
    # loads no authorities (it verifies no peer).
    context.verify_flags = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).verify_flags
    context._cafile, context._capath = certifi.where(), None
    if trust_env and os.environ.get("SSL_CERT_FILE"):
        context._cafile = os.environ["SSL_CERT_FILE"]
    elif trust_env and os.environ.get("SSL_CERT_DIR"):
        context._cafile, context._capath = None, os.environ["SSL_CERT_DIR"]
    context._loaded, context._lock = False, threading.Lock()
    if (keylog := os.environ.get("SSLKEYLOGFILE")) and not sys.flags.ignore_environment:
        context.keylog_filename = keylog  # as ssl.create_default_context does
    return context


class StatelessClient(httpx.AsyncClient):
    """`httpx.AsyncClient` without cookies: none stored, none sent (`cookies=` is not taken). Unless `verify` is
    given, the certificate authorities are loaded by the first TLS connection (`trust_on_first_use`)."""

    def __init__(
        self, *, answer_limit: int = ANSWER_LIMIT, answer_deadline: float = ANSWER_DEADLINE, **options: Any
    ) -> None:
        if "cookies" in options:
            raise TypeError("StatelessClient sends no cookies: do not pass cookies=")
        if "verify" not in options:
            options["verify"] = trust_on_first_use(trust_env=options.get("trust_env", True))
        super().__init__(cookies=RefusingJar(), **options)
        self._no_cookies = _NoCookies()
        self._answer_limit = answer_limit
        self._answer_deadline = answer_deadline

    async def send(self, request: httpx.Request, *, stream: bool = False, **options: Any) -> httpx.Response:
        """Send, and read the whole answer within the limit and the deadline (never a stream left open)."""
        if stream:
            raise TypeError("StatelessClient reads every answer whole, within bounds: do not pass stream=True")
        try:
            async with asyncio.timeout(self._answer_deadline):
                response = await super().send(request, stream=True, **options)
                try:
                    answer = response.stream
                    assert isinstance(answer, httpx.AsyncByteStream)  # an AsyncClient's answers are async streams
                    response.stream = _Bounded(answer, self._answer_limit, request)
                    response = await _read_within(response, self._answer_limit)
                except BaseException:
                    await response.aclose()
                    raise
        except TimeoutError:
            raise AnswerTooSlow(self._answer_deadline, request=request) from None
        return response

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("StatelessClient sends no cookies")
