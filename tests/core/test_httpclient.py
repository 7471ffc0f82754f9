"""`StatelessClient`: a cookie an answer sets is never sent back, where a stock httpx client would send it; an
answer is read whole within a deadline and a size limit, over a real socket; the certificate authorities are
loaded by the first TLS connection, not by the client's start."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import time
from http.cookiejar import Cookie
from pathlib import Path

import certifi
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from reconciler.budget import BudgetRegistry
from reconciler.clock import FakeClock
from reconciler.httpclient import (
    AnswerTooLarge,
    AnswerTooSlow,
    RefusingJar,
    StatelessClient,
    trust_on_first_use,
    trust_settings_problem,
)
from reconciler.model import ProviderConfig
from reconciler.providers.base import ErrorKind, VendorError
from reconciler.providers.volcengine import VolcengineSnapshotProvider
from reconciler.secrets import Secret


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


class Gateway:
    """A hostile HTTP/1.1 server on a loopback socket: its answer trickles (a byte every 0.05 s, for ever) or
    floods (64 KiB chunks, for ever), as a broken gateway before a vendor can."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/volc/"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if self.mode in ("bomb", "gzip"):  # bomb: 4 MiB of gzip-compressed spaces, about 4 KB as sent
            body = gzip.compress(b" " * (4 << 20) if self.mode == "bomb" else b'{"Result": "ok"}')
            head = b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%s\r\n%s" % (head, body))
            await writer.drain()
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"{" if self.mode == "trickle" else b" " * 65536
        try:
            while True:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                self.sent += len(chunk)
                await asyncio.sleep(0.05 if self.mode == "trickle" else 0)
        except (ConnectionError, OSError):
            writer.close()


async def test_an_answer_that_trickles_in_fails_at_the_deadline_though_each_read_is_in_time() -> None:
    async with Gateway("trickle") as url, StatelessClient(timeout=5, answer_deadline=0.5) as client:
        started = time.monotonic()
        with pytest.raises(AnswerTooSlow, match=r"no complete answer within 0.5 s"):
            await asyncio.wait_for(client.get(url), 10)  # without the deadline: 10 s here, for ever in capctl
        assert 0.5 <= time.monotonic() - started < 3


async def test_an_answer_past_the_limit_is_not_read_further() -> None:
    gateway = Gateway("flood")
    async with gateway as url, StatelessClient(timeout=5, answer_limit=1 << 20) as client:
        with pytest.raises(AnswerTooLarge, match=r"larger than 1048576 bytes"):
            await asyncio.wait_for(client.get(url), 10)
    assert gateway.sent < 8 << 20  # the client stopped reading: the server's writes backed up and stopped


async def test_a_compressed_answer_is_bounded_once_decoded() -> None:
    async with Gateway("bomb") as url, StatelessClient(timeout=5, answer_limit=1 << 20) as client:
        with pytest.raises(AnswerTooLarge, match=r"larger than 1048576 bytes"):
            await asyncio.wait_for(client.get(url), 10)


async def test_a_compressed_answer_within_the_bounds_is_an_ordinary_answer_of_its_decoded_body() -> None:
    """The decoded body was put in httpx's private `Response._content`, under the headers of the body as sent
    (`Content-Encoding: gzip`, the compressed length): now a new Response of the decoded body, read whole."""
    async with Gateway("gzip") as url, StatelessClient(timeout=5, answer_limit=1 << 20) as client:
        answer = await asyncio.wait_for(client.get(url), 10)
    assert (answer.status_code, answer.json(), answer.reason_phrase) == (200, {"Result": "ok"}, "OK")
    assert answer.is_closed and answer.request.url == url
    assert "content-encoding" not in answer.headers and answer.headers["content-type"] == "application/json"
    assert answer.headers["content-length"] == str(len(answer.content))


async def test_an_answer_within_the_bounds_is_read_whole() -> None:
    app = CookieSetter()
    async with StatelessClient(transport=httpx.ASGITransport(app=app), answer_limit=2) as client:
        assert (await client.get("http://vendor.test/")).content == b"{}"


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("trickle", "no complete answer from http://127.0.0.1:{port} within 0.5 s (its bytes kept trickling in)"),
        (
            "flood",
            "the answer from http://127.0.0.1:{port} is larger than the limit of 1,048,576 bytes: not read further",
        ),
    ],
)
async def test_a_provider_reads_a_hostile_answer_as_a_lost_one(mode: str, message: str) -> None:
    async with Gateway(mode) as url, StatelessClient(answer_deadline=0.5, answer_limit=1 << 20) as http:
        config = ProviderConfig(
            name="volc-prod", type="volcengine", app_id="app", endpoint=url,
            access_key=Secret("AKTEST"), secret_key=Secret("hunter2"),
        )  # fmt: skip
        provider = VolcengineSnapshotProvider(config, budgets=BudgetRegistry(FakeClock()), clock=FakeClock(), http=http)
        with pytest.raises(VendorError) as info:
            await provider.room_streams("lobby")
    port = httpx.URL(url).port
    assert info.value.kind is ErrorKind.RETRYABLE
    assert str(info.value) == f"volc-prod (volcengine): GetRoomOnlineUsers: {message.format(port=port)}"


def _authorities(client: StatelessClient) -> int:
    context = client._transport._pool._ssl_context  # type: ignore[attr-defined]  # httpx's default transport
    assert isinstance(context, ssl.SSLContext)
    return int(context.cert_store_stats()["x509_ca"])


def test_the_context_verifies_as_httpx_default_one() -> None:
    """The same settings as httpx's context for `verify=True`, and once loaded, the same authorities."""
    ours, httpx_own = trust_on_first_use(), httpx.create_ssl_context()
    settings = ("verify_mode", "check_hostname", "verify_flags", "options", "minimum_version", "protocol")
    assert [getattr(ours, name) for name in settings] == [getattr(httpx_own, name) for name in settings]
    assert ours.cert_store_stats()["x509_ca"] == 0
    assert ours.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="vendor.test") is not None
    assert ours.get_ca_certs() == httpx_own.get_ca_certs() != []


async def test_the_authorities_are_loaded_by_the_first_tls_connection_only(tmp_path: Path) -> None:
    """Parsing the bundle is 40–60 ms of every plan's and apply's start (bench/README.md, "The CLI's start"):
    a plain-http endpoint never needs it. A TLS one still verifies: a gateway that cannot prove itself fails."""

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    no_tls = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with Gateway("gzip") as url, StatelessClient(timeout=5) as client:
        assert _authorities(client) == 0
        assert (await client.get(url)).json() == {"Result": "ok"}
        assert _authorities(client) == 0
        with pytest.raises(httpx.ConnectError):  # it hangs up on the TLS handshake
            await client.get(f"https://127.0.0.1:{no_tls.sockets[0].getsockname()[1]}/volc/")
        assert _authorities(client) > 0
    no_tls.close()
    with pytest.MonkeyPatch.context() as env:  # a file named in the environment that is not there: at once
        env.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
        with pytest.raises(ValueError, match=r"SSL_CERT_FILE names '.*none\.pem', which is no file"):
            StatelessClient()


def test_a_bundle_that_holds_no_certificate_is_refused_before_any_call(tmp_path: Path) -> None:
    """The authorities are parsed by the first TLS connection: a file that holds no PEM certificate (a DER `.crt`,
    a key, an empty file) made every vendor call fail as `TLS handshake failed`, retried as a network fault (the
    daemon forever), and the variable was named nowhere (walk 11A-1). It is refused at once, as a missing one is."""
    pem = Path(certifi.where()).read_text()
    first = pem[pem.index("-----BEGIN CERTIFICATE-----") : pem.index("-----END CERTIFICATE-----") + 25]
    der = ssl.PEM_cert_to_DER_cert(first)
    for name, body in (("ca.der", der), ("empty.pem", b""), ("key.pem", b"-----BEGIN PRIVATE KEY-----\nMC4=\n")):
        (tmp_path / name).write_bytes(body)
        problem = trust_settings_problem({"SSL_CERT_FILE": str(tmp_path / name)})
        assert problem is not None and f"SSL_CERT_FILE names '{tmp_path / name}', which holds no PEM" in problem
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SSL_CERT_FILE", str(tmp_path / name))
            with pytest.raises(ValueError, match="which holds no PEM certificate"):
                StatelessClient()
    (tmp_path / "ca.pem").write_text(pem)
    assert trust_settings_problem({"SSL_CERT_FILE": str(tmp_path / "ca.pem")}) is None
    assert trust_settings_problem({"SSL_CERT_FILE": certifi.where()}) is None
