"""Transport failures (no answer at all) as errors that name where the call went, and nothing more."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys

import httpcore._synchronization
import httpx
import pytest

from reconciler.budget import BudgetRegistry
from reconciler.clock import FakeClock
from reconciler.providers import ProviderPool
from reconciler.providers.base import ErrorKind
from reconciler.providers.transport import endpoint_origin, transport_error


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://rtc.volcengineapi.com", "https://rtc.volcengineapi.com:443"),
        ("http://127.0.0.1:8750/volc/?Action=StartSnapshot&Version=2023", "http://127.0.0.1:8750"),
        ("https://user:hunter2@rtc.example/path?token=hunter2", "https://rtc.example:443"),  # never user info/query
        ("http://[::1]:9/x", "http://[::1]:9"),
    ],
)
def test_the_origin_is_scheme_host_and_port_only(url: str, origin: str) -> None:
    assert endpoint_origin(url) == origin


async def test_a_closed_loopback_port_reads_connection_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more
    url = f"http://u:hunter2@127.0.0.1:{port}/volc/?Signature=hunter2"
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError) as info:
            await http.get(url)
    error = transport_error(info.value, url, api="StartSnapshot").named("volc-prod", "volcengine")
    assert error.kind is ErrorKind.RETRYABLE
    assert (
        str(error)
        == f"volc-prod (volcengine): StartSnapshot: cannot connect to http://127.0.0.1:{port} (connection refused)"
    )
    assert str(error.after_tries(6)).endswith("(connection refused) after 6 tries")
    assert "hunter2" not in str(error)


async def test_an_https_endpoint_that_speaks_plain_http_reads_tls_handshake_failed() -> None:
    """`endpoint: https://...` on a port that answers in plain HTTP (a simulator, a gateway's http port)."""

    async def plain_http(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain_http, "127.0.0.1", 0)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/volc/"
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            with pytest.raises(httpx.ConnectError) as info:
                await http.get(url)
    finally:
        server.close()
    error = transport_error(info.value, url, api="StartSnapshot")
    assert error.kind is ErrorKind.RETRYABLE
    assert str(error).endswith(f"cannot connect to {url.removesuffix('/volc/')} (TLS handshake failed)")


async def test_no_connection_free_in_time_was_never_sent() -> None:
    """Every connection of the client busy with a request that hangs: the next one waits for a connection
    (httpx's pool timeout) and fails without writing a byte, so it cannot have acted (a start so failed at
    every try is a refusal, not a start that may run)."""
    held = asyncio.Event()
    release = asyncio.Event()

    async def hang(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.set()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/volc/"
    limits = httpx.Limits(max_connections=1)
    try:
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30, pool=0.05)) as http:
            first = asyncio.ensure_future(http.get(url))
            await held.wait()
            with pytest.raises(httpx.PoolTimeout) as info:
                await http.get(url)
            release.set()
            with pytest.raises(httpx.RemoteProtocolError):
                await first
    finally:
        release.set()
        server.close()
    error = transport_error(info.value, url, api="StartSnapshot")
    assert error.kind is ErrorKind.RETRYABLE and error.unanswered and not error.may_have_acted
    assert str(error) == (
        f"StartSnapshot: no free connection to {url.removesuffix('/volc/')} in time "
        "(every one of the client's connections was busy)"
    )


def test_a_tunnel_the_proxy_refused_was_never_sent() -> None:
    error = transport_error(httpx.ProxyError("502 Bad Gateway"), "https://rtc.example/x", api="StartSnapshot")
    assert not error.may_have_acted and "502" not in str(error)
    assert str(error) == (
        "StartSnapshot: cannot connect to https://rtc.example:443 through the proxy (the proxy refused the tunnel)"
    )


def test_the_exception_text_is_never_quoted() -> None:
    error = transport_error(httpx.ReadError("secret-in-text"), "https://rtc.example", api="GetSnapshotTask")
    assert "secret-in-text" not in str(error) and "ReadError" in str(error)


def test_a_provider_pool_records_that_sniffio_is_missing_so_httpcore_stops_searching_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The dev environment has sniffio (through selenium's trio); a user's install has not: hide it as there.
    monkeypatch.delitem(sys.modules, "sniffio", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "-packages" not in p])
    importlib.invalidate_caches()
    async_library = httpcore._synchronization.current_async_library
    assert async_library() == "asyncio"
    assert "sniffio" not in sys.modules  # each request's `import sniffio` searched sys.path again
    ProviderPool({}, budgets=BudgetRegistry(FakeClock()), clock=FakeClock(), http=httpx.AsyncClient())
    assert sys.modules["sniffio"] is None and async_library() == "asyncio"  # now it fails at once


def test_a_provider_pool_leaves_an_installed_sniffio_alone() -> None:
    import sniffio

    ProviderPool({}, budgets=BudgetRegistry(FakeClock()), clock=FakeClock(), http=httpx.AsyncClient())
    assert sys.modules["sniffio"] is sniffio
