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
- **rate-limited logs**: an accept that fails for lack of descriptors, and the cap being reached, are
  logged once per `LOG_INTERVAL` with the number of repeats held back (`Throttle`), never per attempt.
"""

from __future__ import annotations

import asyncio
import errno
import math
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from reconciler.clock import Clock

log = structlog.get_logger("capctl.daemon")

READ_TIMEOUT = 10.0  # seconds for a whole request; a vendor callback takes milliseconds
DEFAULT_MAX_CONNECTIONS = 1024
MIN_MAX_CONNECTIONS = 16
FD_RESERVE = 128  # descriptors left for the state store, the spec watcher and the vendor connections
LOG_INTERVAL = 60.0  # seconds between two log lines about the same resource problem
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


class Throttle:
    """Lets one event through per `interval` seconds and counts those it held back meanwhile."""

    def __init__(self, clock: Clock, interval: float = LOG_INTERVAL) -> None:
        self._clock = clock
        self._interval = interval
        self._next = -math.inf
        self._held = 0

    def allow(self) -> int | None:
        """None: hold this one back. Else let it through: the number held back since the last one."""
        now = self._clock.monotonic()
        if now < self._next:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next = now + self._interval
        return held


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


def install_accept_error_log(loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
    """Log an accept that failed for lack of a resource once per LOG_INTERVAL, without a traceback; every
    other event-loop error goes to the default handler as before."""
    throttle = Throttle(clock)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES and "accept" in context.get("message", "")):
            loop.default_exception_handler(context)
            return
        held = throttle.allow()
        if held is not None:
            log.error(
                "cannot accept connections: out of a system resource (retried every second); "
                "raise the file-descriptor limit (ulimit -n) or lower --max-connections",
                error=exc.strerror,
                descriptor_limit=descriptor_limit(),
                repeats_held_back=held,
            )

    loop.set_exception_handler(handle)
