"""A pooler between capctl and PostgreSQL that drops or refuses the connection's `options` (walk 48D-1).

PgBouncer refuses the startup parameter `options` (`unsupported startup parameter: options`), or, told to
ignore it (`ignore_startup_parameters = options`), drops it: the session then lacked capctl's time limits and
the URL's search_path, so a state in a schema of its own looked absent and `apply` made a second, empty one
in the next schema, starting every task again. The proxy here does to the startup message what PgBouncer does
and passes everything else through to the test's real PostgreSQL. Also here: a server without the TLS the
URL requires, the other answer at connect that only a change of set-up ends.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import closing
from urllib.parse import urlsplit

import pytest

from reconciler.state import StateError, StateUnreachable, open_state

from .helpers import make_record

_SSL_REQUEST, _GSS_REQUEST = 80877103, 80877104


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with closing(src), closing(dst):
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass


# What a PostgreSQL whose lc_messages is German answers a bad setting in the options, with no SQLSTATE at connect.
_GERMAN = "ungültiger Wert für Parameter »statement_timeout«: »abc«".encode()


def _in_german(src: socket.socket, dst: socket.socket) -> None:
    """`_pipe` from the server, its errors about a missing relation worded as a German-speaking server's."""
    with closing(src), closing(dst):
        buffered = b""
        try:
            while chunk := src.recv(65536):
                buffered, out = buffered + chunk, b""
                while len(buffered) >= 5 and len(buffered) >= 1 + (size := struct.unpack("!I", buffered[1:5])[0]):
                    kind, body, buffered = buffered[:1], buffered[5 : 1 + size], buffered[1 + size :]
                    if kind == b"E":
                        body = body.replace(b'relation "', "Relation »".encode())
                        body = body.replace(b'" does not exist', "« existiert nicht".encode())
                    out += kind + struct.pack("!I", len(body) + 4) + body
                dst.sendall(out)
        except OSError:
            pass


def _serve(
    client: socket.socket,
    server: tuple[str, int],
    refuse: bool,
    german: list[bytes] | None = None,
    trigger: bytes = b"statement_timeout=abc",
) -> None:
    """One client: decline TLS, then drop (or refuse) `options` from its startup message, as PgBouncer does;
    `german`: pass them on, but refuse `statement_timeout=abc` in them as a German-speaking PostgreSQL does, in
    those words in turn (the last kept); `trigger`: what in the options is refused so."""
    try:
        while True:
            length, code = struct.unpack("!II", _read(client, 8))
            if code not in (_SSL_REQUEST, _GSS_REQUEST):
                break
            client.sendall(b"N")
        pairs = _read(client, length - 8).split(b"\0")
        params = dict(zip(pairs[0:-2:2], pairs[1:-2:2], strict=True))
        said = b"unsupported startup parameter: options" if refuse and b"options" in params else None
        if german is not None and trigger in params.get(b"options", b""):
            said = german.pop(0) if len(german) > 1 else german[0]
        if said is not None:
            fields = b"SFATAL\0C08P01\0M" + said + b"\0\0"
            client.sendall(b"E" + struct.pack("!I", len(fields) + 4) + fields)
            client.close()
            return
        if german is None:
            params.pop(b"options", None)
        body = struct.pack("!I", code) + b"".join(k + b"\0" + v + b"\0" for k, v in params.items()) + b"\0"
        upstream = socket.create_connection(server)
        upstream.sendall(struct.pack("!I", len(body) + 4) + body)
    except (OSError, ConnectionError):
        client.close()
        return
    threading.Thread(target=_pipe if german is None else _in_german, args=(upstream, client), daemon=True).start()
    _pipe(client, upstream)


def _pooler(
    pg_url: str, refuse: bool, german: list[bytes] | None = None, trigger: bytes = b"statement_timeout=abc"
) -> Iterator[str]:
    """`pg_url` through a proxy on a free loopback port."""
    parts = urlsplit(pg_url)
    server = (parts.hostname or "127.0.0.1", parts.port or 5432)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve, args=(client, server, refuse, german, trigger), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield parts._replace(
            netloc=parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{port}")
        ).geturl()
    finally:
        listener.close()


@pytest.fixture
def dropping(pg_url: str) -> Iterator[str]:
    yield from _pooler(pg_url, refuse=False)


@pytest.fixture
def refusing(pg_url: str) -> Iterator[str]:
    yield from _pooler(pg_url, refuse=True)


def test_a_pooler_that_drops_the_options_is_refused_not_read_as_another_schema(pg_url: str, dropping: str) -> None:
    state = open_state(pg_url)
    state.put(make_record())
    state.close()

    for create in (True, False):  # apply/run and plan alike
        with pytest.raises(StateError) as caught:
            open_state(dropping, create=create)
        message = str(caught.value)
        assert "the server ignored this connection's options" in message
        assert "ignore_startup_parameters = options" in message
        assert "Connect capctl to PostgreSQL itself" in message
        assert not isinstance(caught.value, StateUnreachable)  # a set-up to fix, never waited for

    state = open_state(pg_url)
    assert list(state.load().records) == [make_record().key]  # the state as it was
    state.close()


def test_a_pooler_that_refuses_the_options_is_named_with_what_to_do(refusing: str) -> None:
    with pytest.raises(StateError) as caught:
        open_state(refusing)
    assert not isinstance(caught.value, StateUnreachable)  # `run` does not wait for it: it never passes
    message = str(caught.value)
    assert "unsupported startup parameter: options (a pooler in front of PostgreSQL (PgBouncer)" in message
    assert "Connect capctl to PostgreSQL itself" in message


def test_tls_required_of_a_server_without_it_is_named_and_not_waited_for(pg_url: str) -> None:
    """The test's PostgreSQL has no TLS: `capctl run` waited forever (`--state-wait`) for what only a change of
    the server's set-up or of the URL ends (walk 48D-3)."""
    with pytest.raises(StateError) as caught:
        open_state(f"{pg_url}&sslmode=require")
    assert not isinstance(caught.value, StateUnreachable)
    assert "SSL was required (the server at this address offers no TLS" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ("-cstatement_timeout%3Dabc", 'invalid value for parameter "statement_timeout": "abc"'),
        ("-cno_such_setting%3D1", 'unrecognized configuration parameter "no_such_setting"'),
        ("-csearch_path", "-c search_path requires a value"),
        ("statement_timeout%3D1s", "invalid command-line argument for server process: statement_timeout=1s"),
    ],
)
def test_options_the_server_refuses_are_named_and_not_waited_for(pg_url: str, options: str, said: str) -> None:
    """A URL whose options the server refuses at connect: `capctl run` waited forever (`--state-wait`) for what
    only a corrected URL ends (walk 49C-3)."""
    with pytest.raises(StateError) as caught:
        open_state(f"{pg_url}%20{options}")
    assert not isinstance(caught.value, StateUnreachable)
    assert f"{said} (a setting of the connection's options, from the URL's options= or PGOPTIONS" in str(caught.value)


def test_options_a_server_refuses_in_another_language_are_not_waited_for(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose lc_messages is not English words its refusal of a bad setting in the options in that
    language, which 49C-3's English texts do not match: `capctl run` waited forever (walk 50C-1). The URL's
    options and PGOPTIONS alike; a server that refuses every connection (a missing database) stays waited for."""
    for german in _pooler(pg_url, refuse=False, german=[_GERMAN]):
        with pytest.raises(StateError) as caught:
            open_state(f"{german}%20-cstatement_timeout%3Dabc")
        assert not isinstance(caught.value, StateUnreachable)
        message = str(caught.value)
        assert f"{_GERMAN.decode()} (a setting of the connection's options, from the URL's options=" in message

        no_options = urlsplit(german)._replace(query="").geturl()
        monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=abc")
        with pytest.raises(StateError) as caught:
            open_state(no_options)
        assert not isinstance(caught.value, StateUnreachable)
        assert "or PGOPTIONS: correct it there" in str(caught.value)

        with pytest.raises(StateUnreachable):  # refused with and without the options: not theirs to end
            open_state(urlsplit(no_options)._replace(path="/no_such_database").geturl())

    # A server starting up at the first try (in other words than the retry's, which refuses the options): waited
    # for this once, as any server starting; the next try, refused in the same words twice, is not.
    starting = b"das Datenbanksystem startet"
    for german in _pooler(pg_url, refuse=False, german=[starting, _GERMAN]):
        with pytest.raises(StateUnreachable):
            open_state(f"{german}%20-cstatement_timeout%3Dabc")
        with pytest.raises(StateError) as caught:
            open_state(f"{german}%20-cstatement_timeout%3Dabc")
        assert not isinstance(caught.value, StateUnreachable)

    # A full server (too many clients) refusing the first try and the retry, a slot freed just for the probe
    # without the options in between: options it takes (work_mem=7MB) are not blamed; it is waited for (51B-3).
    full = "Verbindungsslots sind für Verbindungen mit Superuser-Status reserviert".encode()
    for german in _pooler(pg_url, refuse=False, german=[full, full, _GERMAN], trigger=b"work_mem=7MB"):
        with pytest.raises(StateUnreachable):
            open_state(f"{german}%20-cwork_mem%3D7MB")


def test_a_table_gone_is_named_whatever_the_language_of_the_server(pg_url: str) -> None:
    """The hints for a capctl table dropped under an open state (20F-2, 21A-3) read the server's English quote
    (`relation "capctl_lock"`): a German-speaking server's `Relation »capctl_lock« existiert nicht` had none,
    and on-call was left to guess whether to restore a backup, which undoes what was written since (50C-4)."""
    import psycopg

    for german in _pooler(pg_url, refuse=False, german=[_GERMAN]):
        store = open_state(german)
        try:
            store.put(make_record())
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("DROP TABLE capctl_lock")
            with pytest.raises(StateError) as failed:
                store.lock("capctl run")
        finally:
            store.close()
        said = " ".join(str(failed.value).split())
        assert "Relation »capctl_lock« existiert nicht (capctl_lock alone is gone from this database" in said, said
