"""Connection limits for the daemon's HTTP server: slow clients cannot hold it, nor fill the log.

uvicorn's HTTP/1.1 protocol (h11) only times out a keep-alive connection between requests: a client that
connects and sends nothing, or sends its headers or its body a byte at a time (a slowloris), holds a file
descriptor for ever. Probing found 4,000 such connections open at once, and under `ulimit -n 1024` 1,100 of
them made `/healthz` time out while asyncio logged every failed accept with a traceback (434 MB in a
minute: Python 3.11 retries the accept up to the listen backlog per wake-up, logging each).

So, here:
- a **read timeout**: a connection must deliver a whole request, headers and body, within `read_timeout`
  of connecting or of its previous answer, else it is closed (`GuardedProtocol`);
- a **connection cap**: beyond `max_connections`, a new connection closes the connection that has waited
  longest for request bytes (a slow client, never a request being answered), so a probe still gets in
  while slow clients hold the rest; by default the cap stays below the process's file-descriptor limit;
- **out of descriptors** all the same (a cap set above the limit): the waiting connection is closed
  rather than left to asyncio's retry storm (`SheddingListener`);
- **rate-limited logs**: an accept that fails for lack of descriptors, and the cap being reached, are
  logged once per `LOG_INTERVAL` with the number of repeats held back (`Throttle`), never per attempt.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from reconciler.clock import Clock, Throttle

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "FD_RESERVE",
    "MIN_MAX_CONNECTIONS",
    "READ_TIMEOUT",
    "AcceptErrors",
    "GuardedProtocol",
    "HttpLimits",
    "SheddingListener",
    "default_max_connections",
    "descriptor_limit",
    "guarded_protocol",
]

log = structlog.get_logger("capctl.daemon")

READ_TIMEOUT = 10.0  # seconds for a whole request; a vendor callback takes milliseconds
DEFAULT_MAX_CONNECTIONS = 1024
MIN_MAX_CONNECTIONS = 16
FD_RESERVE = 128  # descriptors left for the state store, the spec watcher and the vendor connections
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def descriptor_limit() -> int | None:
    """The soft RLIMIT_NOFILE of this process, None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def default_max_connections(nofile: int | None) -> int:
    """The cap that keeps accepts from running out of descriptors: the limit less FD_RESERVE, at most 1024."""
    if nofile is None:
        return DEFAULT_MAX_CONNECTIONS
    return max(MIN_MAX_CONNECTIONS, min(DEFAULT_MAX_CONNECTIONS, nofile - FD_RESERVE))


@dataclass(frozen=True, slots=True)
class HttpLimits:
    read_timeout: float = READ_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a whole-request read timeout and the connection cap (`guarded_protocol`)."""

    limits: ClassVar[HttpLimits]
    cap_reached: ClassVar[Throttle]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0
        self._armed_after: RequestResponseCycle | None = None  # the cycle before the awaited request

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and cycle is not self._armed_after and not cycle.more_body:
            self._disarm()  # the awaited request arrived whole

    def on_response_complete(self) -> None:
        self._arm()  # before the base class, which may parse a pipelined request at once
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self._armed_after = self.cycle
        self._waiting_since = self.loop.time()
        self._read_timer = self.loop.call_later(self.limits.read_timeout, self.transport.close)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _make_room(self) -> None:
        """Close the connection waiting longest for request bytes; when every other one is being answered,
        this new one."""
        waiting = [c for c in self.connections if isinstance(c, GuardedProtocol) and c._read_timer and c is not self]
        victim = min(waiting, key=lambda c: c._waiting_since) if waiting else self
        victim.transport.close()
        held = self.cap_reached.allow()
        if held is not None:
            log.warning(
                "connection limit reached: closing the connection that waited longest for its request",
                max_connections=self.limits.max_connections,
                repeats_held_back=held,
            )


def guarded_protocol(limits: HttpLimits, clock: Clock) -> type[GuardedProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, bound to these limits (uvicorn instantiates it)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits, "cap_reached": Throttle(clock)})


class AcceptErrors:
    """Accepts failing for lack of a resource (descriptors, memory): one log line per LOG_INTERVAL."""

    def __init__(self, clock: Clock) -> None:
        self._throttle = Throttle(clock)

    def report(self, exc: OSError) -> None:
        held = self._throttle.allow()
        if held is not None:
            log.error(
                "cannot accept connections: out of a system resource; new connections are closed at once "
                "until some close. Raise the file-descriptor limit (ulimit -n) or lower --max-connections",
                error=exc.strerror,
                descriptor_limit=descriptor_limit(),
                repeats_held_back=held,
            )

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Route asyncio's own accept-failure reports here (they come with a traceback each); every other
        event-loop error goes to the default handler as before."""

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES and "accept" in context.get("message", ""):
                self.report(exc)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handle)


class SheddingListener(socket.socket):
    """A listening socket whose `accept`, out of descriptors, closes the next waiting connection and says
    "nothing to accept" instead of failing.

    asyncio (3.11) answers a failed accept by retrying in a second, but keeps calling accept up to the
    listen backlog times in the same wake-up, scheduling one retry per failure: thousands of retries, each
    logged with a traceback, and more tracebacks at shutdown. Here a spare descriptor is given up for a
    moment to take the waiting connection off the queue and close it (the client sees the connection
    closed, as from a full server), so the queue drains and the event loop stays calm.
    """

    errors: AcceptErrors
    _spare: int | None

    @classmethod
    def adopt(cls, sock: socket.socket, errors: AcceptErrors) -> SheddingListener:
        listener = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        listener.errors = errors
        listener._spare = _open_spare()
        return listener

    def accept(self) -> tuple[socket.socket, Any]:
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            self.errors.report(exc)
            if not self._shed_one():
                raise  # no spare descriptor: asyncio's retry, reported through AcceptErrors.install
            raise BlockingIOError(errno.EAGAIN, "a waiting connection was closed: out of descriptors") from None

    def _shed_one(self) -> bool:
        if self._spare is None and (spare := _open_spare()) is not None:
            self._spare = spare
        if self._spare is None:
            return False
        os.close(self._spare)
        try:
            conn, _ = super().accept()
            conn.close()
        except OSError:
            pass  # the connection went away meanwhile
        self._spare = _open_spare()
        return True

    def close(self) -> None:
        spare, self._spare = getattr(self, "_spare", None), None
        if spare is not None:
            os.close(spare)
        super().close()


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None
