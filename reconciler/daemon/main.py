"""`capctl run` as a process: logs, state, the controller, uvicorn on --listen, and the signals.

Slow and idle clients are timed out and the number of connections is capped (daemon/connections.py).
SIGTERM / SIGINT stop taking work, let in-flight vendor calls finish (bounded), and exit 0; vendor tasks
keep running. SIGHUP re-reads the specs. uvicorn's own signal capture is switched off so that the daemon,
not the web server, decides the order of shutdown.

The HTTP server runs on a thread with an event loop of its own. The executor calls the state store
synchronously on the daemon's loop, so a hung database would freeze every coroutine on that loop,
probes included; on its own loop, /healthz always answers and /readyz says the store does not answer
(issue 14). Handlers that touch the daemon's state hand the work back to its loop (`on_daemon_loop`).
HTTP is served from the moment the port is bound, while the daemon waits for a state store that does not
answer yet and reads it (starting.py), so /healthz answers and /readyz says why it is not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog
import uvicorn

from reconciler import logs
from reconciler.clock import SystemClock
from reconciler.daemon.connections import (
    FD_RESERVE,
    READ_TIMEOUT,
    AcceptErrors,
    HttpLimits,
    SheddingListener,
    default_max_connections,
    descriptor_limit,
    guarded_protocol,
)
from reconciler.daemon.controller import PRUNE_GRACE, Daemon
from reconciler.daemon.http import SYNC_TOKEN_ENV, daemon_sync_token
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.parts import HTTP_SHUTDOWN_GRACE
from reconciler.daemon.policy import MAX_PRUNE_PERCENT
from reconciler.daemon.starting import FOREVER, Front, open_when_reachable
from reconciler.daemon.tasks import first_of
from reconciler.daemon.watch import DEBOUNCE_MS
from reconciler.leader import LeaderSettings
from reconciler.listen import advertised_url, bind, is_loopback, parse_listen, url_of
from reconciler.state import open_state
from reconciler.state.base import StateError, daemon_holder
from reconciler.state.sql import SqlStateStore

__all__ = ["EXIT_ERROR", "EXIT_OK", "LOCK_WAIT", "NEW_STATE_NOTE", "open_daemon_state", "run_daemon"]

log = structlog.get_logger("capctl.daemon")

# The executor calls the store on the daemon's loop, so a statement waiting for a lock another session holds
# (SQLite: a `sqlite3` shell's BEGIN EXCLUSIVE, a backup; PostgreSQL: a row or table lock) stalls every timer
# on that loop for as long. With the one-shot commands' waits, a vendor call in flight failed as a timeout
# though its answer had come (SQLite's 5 s, walk 14D-2), and PostgreSQL's 10 s lock_timeout kept the lease's
# next renewal from being scheduled until the renew deadline had passed (14D-1). A second is well inside the
# vendor calls' shortest timeout (connecting, 5 s), the probes' 3 s (`STUCK_AFTER`) and the renew deadline
# less a retry period; a write that gives up is retried with backoff, its intent written first.
LOCK_WAIT = 1.0


def open_daemon_state(url: str | None, leader: LeaderSettings | None = None) -> SqlStateStore:
    """The daemon's store: as every command's, but a statement waits at most LOCK_WAIT for another session's
    lock (a PostgreSQL URL's own `lock_timeout` wins), and the lease's statements give up in time for two
    renewals to fit in the renew deadline (`lease_limits`)."""
    leader = leader or LeaderSettings()
    return open_state(url, lock_wait=LOCK_WAIT, lease_timing=(leader.renew_deadline, leader.retry_period))


EXIT_OK, EXIT_ERROR = 0, 1

NEW_STATE_NOTE = (
    "no task is recorded: every declared task is started, as for a first install; if tasks run at the vendors "
    "already, the state was lost or CAPCTL_STATE names another place (docs/state.md, Backups)"
)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The daemon installs its own handlers (uvicorn's would re-raise the signal after shutdown)."""
        yield


def run_daemon(
    paths: list[str],
    *,
    listen: str = "127.0.0.1:8080",
    resync: float = 30.0,
    prune: bool = True,
    state_url: str | None = None,
    log_level: str | None = "info",
    max_prune: float = MAX_PRUNE_PERCENT,
    prune_grace: float = PRUNE_GRACE,
    read_timeout: float = READ_TIMEOUT,
    max_connections: int | None = None,
    status_page: bool = True,
    status_token: str | None = None,
    leader: LeaderSettings | None = None,
    state_wait: float = FOREVER,
    refuse: Callable[[str], None] | None = None,
) -> int:
    """Run the daemon until SIGTERM / SIGINT; returns the process exit code. `log_level=None` keeps the
    caller's logging set-up; `max_connections=None` derives the cap from the file-descriptor limit;
    `status_token` (read from `--status-token-ref`) protects the status page; `state_wait`: seconds to wait at
    start for a state store whose server does not answer (starting.py). An option out of range is refused
    before anything is opened, in the same words however the daemon is started: by `refuse(message)` when
    given (`capctl run`'s `Error:`, which exits), else as a `bad option` log line and EXIT_ERROR."""
    if log_level is not None:
        logs.configure(log_level)
    try:
        host, port = parse_listen(listen, example="127.0.0.1:8080 or 0.0.0.0:8080")
        for option, seconds, zero in (
            ("--resync", resync, False),
            ("--prune-grace", prune_grace, True),
            ("--read-timeout", read_timeout, False),
            ("--state-wait", state_wait, True),
        ):
            if seconds < 0 or (seconds == 0 and not zero):
                raise ValueError(f"{option} must {'not be negative' if zero else 'be positive'}, got {seconds:g}s")
        if not 0 <= max_prune <= 100:
            raise ValueError(f"--max-prune must be a percentage from 0 to 100, got {max_prune:g}")
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"--max-connections must be at least 1, got {max_connections}")
        token = daemon_sync_token(os.environ)
    except ValueError as exc:
        if refuse is not None:
            refuse(str(exc))
        log.error("bad option", error=str(exc))
        return EXIT_ERROR
    if status_page and status_token is None and not is_loopback(host):
        log.warning(
            "the status page is open to anyone who reaches --listen: protect it with --status-token-ref, "
            "or turn it off with --no-status-page",
            listen=listen,
        )
    if token is None and not is_loopback(host):
        log.warning(
            f"POST /api/v1/sync and /api/v1/wake are open to anyone who reaches --listen: anyone can make the daemon "
            f"call the vendors now; set {SYNC_TOKEN_ENV} (capctl sync and wake send it), and keep /api/ out of the "
            "ingress",
            listen=listen,
        )
    options = _Options(
        paths or ["specs"],
        resync,
        prune,
        state_url,
        max_prune,
        prune_grace,
        _http_limits(read_timeout, max_connections),
        status_page,
        status_token,
        token,
        leader or LeaderSettings(),
        state_wait,
        local_only=is_loopback(host),
    )
    return asyncio.run(_main(host, port, options))


@dataclass(frozen=True, slots=True)
class _Options:
    """What the command line decided, handed from `run_daemon` down to the daemon and its HTTP side."""

    paths: list[str]
    resync: float
    prune: bool
    state_url: str | None
    max_prune: float
    prune_grace: float
    limits: HttpLimits
    status_page: bool
    status_token: str | None  # read from --status-token-ref at start; never logged
    sync_token: str | None  # CAPCTL_SYNC_TOKEN, read at start; never logged
    leader: LeaderSettings
    state_wait: float  # seconds; FOREVER by default
    local_only: bool = False  # --listen is loopback: token-less routes answer only requests named for this machine


def _http_limits(read_timeout: float, max_connections: int | None) -> HttpLimits:
    """The cap asked for, or one below the descriptor limit; a cap above it is kept but warned about."""
    nofile = descriptor_limit()
    if max_connections is None:
        return HttpLimits(read_timeout, default_max_connections(nofile))
    if nofile is not None and max_connections > nofile - FD_RESERVE:
        log.warning(
            "--max-connections is above the file-descriptor limit less a reserve: accepts may fail",
            max_connections=max_connections,
            descriptor_limit=nofile,
            reserve=FD_RESERVE,
        )
    return HttpLimits(read_timeout, max_connections)


async def _main(host: str, port: int, options: _Options) -> int:
    clock = SystemClock()
    errors = AcceptErrors(clock)
    try:
        sock = bind(host, port)  # before the state lock: a taken port fails at once, holding nothing
    except OSError as exc:
        log.error("cannot listen", error=exc.strerror)
        return EXIT_ERROR
    with SheddingListener.adopt(sock, errors) as listener:
        return await _serve(listener, options, clock=clock, errors=errors)


async def _serve(sock: socket.socket, options: _Options, *, clock: SystemClock, errors: AcceptErrors) -> int:
    """Serve HTTP from the start (a `Front` answers until the daemon runs: starting.py), then open the store
    (waiting for its server), start the daemon and run it until SIGTERM / SIGINT."""
    metrics = Metrics()
    front = Front(metrics)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # Until the daemon runs, a SIGHUP (re-read the specs) is remembered and answered once it does: the start reads
    # them before the lock and the state (seconds at 100,000 tasks), and an edit sent with a SIGHUP meanwhile was
    # seen by nothing (the watcher starts after that read; walk 37a-2). One sent earlier costs one extra reload.
    early_hup = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, early_hup.set)
    config = uvicorn.Config(
        front,
        http=guarded_protocol(options.limits, clock),
        timeout_keep_alive=math.ceil(options.limits.read_timeout),  # the protocol's read timeout closes it first
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=HTTP_SHUTDOWN_GRACE,
    )
    server = _Server(config)
    served = asyncio.Event()  # set when the HTTP thread ends

    def serve() -> None:
        try:
            asyncio.run(_serve_http(server, sock, errors))
        finally:
            loop.call_soon_threadsafe(served.set)

    thread = threading.Thread(target=serve, name="capctl-http", daemon=True)
    thread.start()
    store: SqlStateStore | None = None
    try:
        started = await _start(sock, options, front, metrics, clock=clock, stopping=stopping)
        if isinstance(started, int):
            return started
        daemon, store = started
        front.serve(daemon.asgi_app)
        loop.add_signal_handler(signal.SIGHUP, daemon.reload_soon)
        if early_hup.is_set() and not stopping.is_set():  # a SIGTERM too: it stops at once, nothing to reload
            log.info("SIGHUP received while the daemon started: re-reading the specs")
            daemon.reload_soon()
        # Said once the daemon runs (scripts and tests wait for it); while it waits, each warning names the URL.
        log.info(
            "listening",
            url=url_of(sock),
            max_connections=options.limits.max_connections,
            read_timeout=options.limits.read_timeout,
        )
        try:
            return await _until_stopped(sock, served, stopping)
        finally:
            await daemon.stop()
    finally:
        server.should_exit = True
        await served.wait()
        await asyncio.to_thread(thread.join)
        if store is not None:
            store.close()


async def _start(
    sock: socket.socket,
    options: _Options,
    front: Front,
    metrics: Metrics,
    *,
    clock: SystemClock,
    stopping: asyncio.Event,
) -> tuple[Daemon, SqlStateStore] | int:
    """Open the store (waiting for its server) and start the daemon; an exit code when it does not start."""
    try:
        store = await open_when_reachable(
            lambda: open_daemon_state(options.state_url, options.leader),
            url=url_of(sock),
            wait=options.state_wait,
            clock=clock,
            stopping=stopping,
            front=front,
            metrics=metrics,
        )
    except StateError as exc:
        log.error("cannot open the state store", error=str(exc))
        return EXIT_ERROR
    if store is None:
        log.info("signal received while waiting for the state store: stopping")
        return EXIT_OK
    if store.created:  # as `apply` says it (walk 14b): a lost state, or a URL naming another place, starts every task
        log.warning("started a new state", state=store.url, note=NEW_STATE_NOTE)
    front.reason = "not ready (starting: reading the state and the specs)"
    try:  # the constructor reads the state too (room activity, the fingerprint key)
        daemon = Daemon(
            options.paths,
            store,
            clock,
            resync=options.resync,
            prune=options.prune,
            watch_debounce_ms=DEBOUNCE_MS,
            holder=daemon_holder(advertised_url(sock)),  # a locked-out apply is told where to send `capctl sync`
            sync_token=options.sync_token,
            max_prune=options.max_prune,
            prune_grace=options.prune_grace,
            status_page=options.status_page,
            status_token=options.status_token,
            local_only=options.local_only,
            leader=options.leader,
            metrics=metrics,
        )
        await daemon.start()  # leads, or stands by while another replica leads
    except StateError as exc:
        log.error("cannot read the state store", error=str(exc))
        store.close()
        return EXIT_ERROR
    return daemon, store


async def _until_stopped(sock: socket.socket, served: asyncio.Event, stopping: asyncio.Event) -> int:
    """Run until a signal (exit 0) or until the HTTP server ends by itself (exit 1)."""
    await first_of(served.wait(), stopping.wait())
    if not stopping.is_set():
        log.error("the HTTP server stopped; shutting down", url=url_of(sock))
        return EXIT_ERROR
    log.info("signal received: stopping (vendor tasks keep running)")
    return EXIT_OK


async def _serve_http(server: uvicorn.Server, sock: socket.socket, errors: AcceptErrors) -> None:
    """uvicorn on the HTTP thread's own event loop, which is where accepts fail and are reported."""
    errors.install(asyncio.get_running_loop())
    await server.serve(sockets=[sock])
