"""The daemon's HTTP side under hostile input, as issue 14 probed it: `capctl run` on loopback, raw sockets.

Raw sockets, because an HTTP client would send a whole body, wait politely, or retry; these send what an
attacker sends: a Content-Length of 100 MB and no body, a chunked body past the limit, `[` × 100,000,
headers that never end, connections that say nothing, and more connections than there are descriptors.
Every wait is bounded; the limits are small (`--read-timeout 2s`, `--max-connections 8`) so each case
takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import time
from collections.abc import Iterator

import httpx

from reconciler.daemon.bodies import MAX_JSON_DEPTH
from reconciler.daemon.http import MAX_CALLBACK_BYTES
from tests.e2e.conftest import Workdir
from tests.servers import ServerOutput

WAIT = 30.0  # seconds: the longest any answer or close is waited for (on a loaded machine)


@contextlib.contextmanager
def daemon(work: Workdir, *args: str, nofile: int | None = None) -> Iterator[tuple[str, ServerOutput]]:
    """`capctl run --listen 127.0.0.1:0 ARGS` (with RLIMIT_NOFILE `nofile`); its address and its log."""

    def limit_descriptors() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    proc, log = work.run_daemon(*args, preexec_fn=limit_descriptors)
    try:
        yield log.url(), log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the response on `sock` (read until the server closes or the body is in)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes `sock` within WAIT (anything it still sends first is read and dropped)."""
    sock.settimeout(WAIT)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def post(path: str, headers: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{headers}\r\n".encode()


def test_bodies_are_refused_at_the_limit_and_deep_json_is_a_400(work: Workdir) -> None:
    with daemon(work) as (url, log):
        # A declared 100 MB is refused before a byte of it is sent (before: the daemon waited to read it all).
        # The refusal names the route's body (walk 20E-2: a wake body was refused as a "sync body").
        for path, what in (("/callbacks/zego", "callback"), ("/api/v1/sync", "sync"), ("/api/v1/wake", "wake")):
            with contextlib.closing(connect(url)) as sock:
                sock.sendall(post(path, "Content-Length: 104857600\r\n"))
                status, headers, body = answer(sock)
                assert status == 413 and headers["connection"] == "close"
                reason = f"{what} body too large: Content-Length 104857600 is over the limit of 1048576 bytes"
                assert json.loads(body)["reason"] == reason
                assert closed_by_server(sock)
        # A chunked body is read up to the limit, then refused (before: read to its end, then measured).
        with contextlib.closing(connect(url)) as sock:
            sock.sendall(post("/callbacks/volcengine", "Transfer-Encoding: chunked\r\n"))
            chunk = 65536
            for _ in range(MAX_CALLBACK_BYTES // chunk):
                sock.sendall(b"%x\r\n%s\r\n" % (chunk, b" " * chunk))
            sock.sendall(b"1\r\n \r\n")  # one byte over; the body never ends
            status, _, body = answer(sock)
            assert status == 413 and "more than the limit of 1048576 bytes" in json.loads(body)["reason"]
        # `[` x 100,000 (before: 500 and a traceback) and a document just past the nesting limit.
        for deep in (b"[" * 100_000, b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)):
            for path in ("/callbacks/zego", "/callbacks/volcengine", "/api/v1/sync", "/api/v1/wake"):
                with contextlib.closing(connect(url)) as sock:
                    sock.sendall(post(path, f"Content-Length: {len(deep)}\r\n") + deep)
                    status, _, body = answer(sock)
                    assert (status, json.loads(body)["reason"]) == (400, "malformed JSON: nested deeper than 32 levels")
        assert httpx.get(f"{url}/healthz", timeout=WAIT).status_code == 200
    text = log.text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text


def test_slow_and_idle_connections_are_closed_and_healthz_still_answers(work: Workdir) -> None:
    with daemon(work, "--read-timeout", "2s", "--max-connections", "8") as (url, log):
        idle = connect(url)  # says nothing at all
        started = time.monotonic()
        assert closed_by_server(idle)
        assert time.monotonic() - started >= 1.5  # by the read timeout, not at once
        trickle = connect(url)  # whole headers, then a body a byte at a time
        trickle.sendall(post("/callbacks/zego", "Content-Length: 100\r\n"))
        with contextlib.suppress(OSError):  # on a slow machine the timeout may close it mid-trickle
            for _ in range(3):
                trickle.sendall(b" ")
                time.sleep(0.5)
        assert closed_by_server(trickle)
        # 30 slowloris connections: headers that never end, beyond the cap of 8.
        slow = [connect(url) for _ in range(30)]
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: capctl\r\nX-Slow: ")
        for _ in range(5):  # while they trickle on, a probe is answered at once
            probe = httpx.get(f"{url}/healthz", timeout=WAIT)
            assert probe.status_code == 200 and probe.text == "ok\n"
        assert all(closed_by_server(sock) for sock in slow)  # each by the cap or, at the latest, the read timeout
        for sock in [idle, trickle, *slow]:
            sock.close()
    text = log.text()
    assert text.count("connection limit reached") == 1  # 20+ evictions, one line (once a minute)
    assert "Traceback" not in text


def test_running_out_of_descriptors_is_logged_once_not_per_accept(work: Workdir) -> None:
    with daemon(work, "--max-connections", "500", nofile=48) as (url, log):
        held = [connect(url) for _ in range(100)]  # the kernel queues them; accepts fail past 48 descriptors
        time.sleep(3)  # three accept retries
        for sock in held:
            sock.close()
        deadline = time.monotonic() + WAIT
        while True:  # the retry accepts again once descriptors are free
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the daemon did not accept again"
                time.sleep(0.2)
    text = log.text()
    assert "--max-connections is above the file-descriptor limit" in text
    assert text.count("cannot accept connections: out of a system resource") == 1
    assert "Traceback" not in text and "socket.accept() out of system resource" not in text, text
