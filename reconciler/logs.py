"""Logging set-up: structlog to stderr, one JSON object per line when stderr is not a terminal.

Every line is flushed as written. Secrets cannot leak through a log line: a `Secret` renders as its
fingerprint, and every line's fields go through `redact.redact_named`, which shows the value of any key that
names a credential as its fingerprint too.

A JSON line holds text as itself (`教室-101`, grep finds it) on a UTF-8 stream, with what `str.isprintable`
refuses escaped (as `streams.write_json` does); on an ASCII or latin-1 one it is all ASCII JSON.

The last `RECENT_EVENTS` events (after redaction) are also kept in memory, for the daemon's status page
("recent decisions"): `recent_events()` reads them without parsing stderr back.

structlog is imported when the first line is written, not before: importing it imports rich's traceback and
pretty printers and asyncio's standard library glue, 120 M instructions (30–50 ms) of every plan's and apply's
start, which at the default level (warning) most never write a line with (bench/README.md, "The CLI's start").
One-shot commands `configure_on_first_event` and log through `lazy_logger`; the daemon, whose modules log
through structlog directly, configures at once.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import MutableMapping
from typing import Any, TextIO

from reconciler.clock import Clock, SystemClock, Throttle
from reconciler.redact import escape_unprintable, redact_named
from reconciler.streams import json_dumps_for

__all__ = [
    "RECENT_EVENTS",
    "RECENT_FIELD_CHARS",
    "LazyLogger",
    "RecentEvents",
    "configure",
    "configure_on_first_event",
    "discard_waiting_setup",
    "lazy_logger",
    "recent_events",
]

RECENT_EVENTS = 500  # events the status page can show; about 0.5 MB at most
RECENT_FIELD_CHARS = 1000  # a longer field is cut in the kept copy (the log line itself has it whole)


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    redacted: dict[str, Any] = redact_named(dict(event))
    return redacted


def _escaped(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The console's line with what a terminal must not get raw written as escapes (`\\x1b`), as JSON lines
    and plans write it: a task key from a state an older capctl wrote may hold an escape sequence (walk 58e). The
    traceback (`exception`) keeps its line breaks."""
    return {
        k: escape_unprintable(v) if isinstance(v, str) and k != "exception" and not v.isprintable() else v
        for k, v in event.items()
    }


class RecentEvents:
    """A bounded ring of the newest log events, each a flat copy of primitive values (no object is kept alive).

    A structlog processor placed after the scrubber, so what it keeps is what the log line shows. Events are
    logged from the daemon's loop and its HTTP thread alike, hence the lock."""

    def __init__(self, size: int = RECENT_EVENTS) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        kept = {k: _flat(v) for k, v in event.items() if k != "exc_info"}
        with self._lock:
            self._events.append(kept)
        return event

    def events(self) -> list[dict[str, Any]]:
        """Oldest first."""
        with self._lock:
            return list(self._events)


def _flat(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return text if len(text) <= RECENT_FIELD_CHARS else text[: RECENT_FIELD_CHARS - 1] + "…"


_RECENT = RecentEvents()


def recent_events() -> list[dict[str, Any]]:
    """The newest log events since logging was last configured (at most `RECENT_EVENTS`), oldest first,
    secrets scrubbed."""
    return _RECENT.events()


class _FlushingFile:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def flush(self) -> None:
        self._stream.flush()


def _raised_where(record: logging.LogRecord) -> tuple[str, frozenset[str]]:
    """An error's exception type and the file:line of each frame of its traceback (the path that raised it);
    ('', ∅) for none. Every line, not only the innermost: two bugs meeting one library line (json's decoder,
    pydantic's validator) are two paths (walk 25d). A set, so a recursion's depth is no new path."""
    exc_type, _, tb = record.exc_info or (None, None, None)
    if exc_type is None:
        return "", frozenset()
    path = set()
    while tb is not None:
        path.add(f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}")
        tb = tb.tb_next
    return exc_type.__qualname__, frozenset(path)


class _FromLogging(logging.Handler):
    """What libraries log through `logging` (uvicorn's `Invalid HTTP request received.` for each malformed
    request, asyncio's errors), as a line like every other: without it Python's last-resort handler wrote the
    bare text, one unparsable line in a JSON log for every bad request anyone sends.

    Their warnings and errors are said once a minute per logger and message (with `repeats_held_back`), one
    with an exception per logger, exception type and the lines of its traceback instead: anyone who reaches the
    port can send malformed requests, and one line each let them decide the log's volume and push every
    decision out of the status page's recent events; an unhandled error in a request (uvicorn's `Exception in
    ASGI application`) would be one traceback per request. The first of each is said whole, traceback and all."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(logging.WARNING)  # libraries' info (httpx: every URL it calls) stays out
        self._clock = clock
        # by the message's template, or the path that raised its exception: as many as the code has
        self._said: dict[tuple[str, str, str, frozenset[str]], Throttle] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if not _written(record.levelno):
            return
        raised = _raised_where(record)
        # An error with its exception is that exception's: asyncio's `Task exception was never retrieved` comes
        # formatted (the task's name and id in it), so its text made each one new: said whole every time, and
        # kept as a key for the process's life (walk 23a).
        template = "" if raised[0] else record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        held = self._said.setdefault((record.name, template, *raised), Throttle(self._clock)).allow()
        if held is None:
            return
        repeats = {"repeats_held_back": held} if held else {}
        import structlog

        structlog.get_logger().log(
            record.levelno, record.getMessage(), logger=record.name, exc_info=record.exc_info, **repeats
        )


class LazyLogger:
    """A module's logger that imports structlog only for an event the configured level lets through (then it
    is structlog's logger, as `structlog.get_logger(name)`)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _log(self, method: str, level: int, event: str, fields: dict[str, Any]) -> None:
        if _written(level):
            import structlog

            getattr(structlog.get_logger(self._name), method)(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", logging.WARNING, event, fields)


def lazy_logger(name: str) -> LazyLogger:
    return LazyLogger(name)


# `configure`'s arguments, while they wait for the first event at or above their level (None: nothing waits).
_deferred: tuple[str, bool | None, TextIO | None] | None = None
_deferred_lock = threading.Lock()


def _written(level: int) -> bool:
    """Whether an event at `level` is written (structlog decides, once configured): the first one that is
    applies the deferred set-up."""
    global _deferred
    deferred = _deferred  # read once: another thread (a library logging) may apply it meanwhile
    if deferred is None:
        return True
    if level < logging.getLevelNamesMapping()[deferred[0].upper()]:
        return False
    with _deferred_lock:
        if _deferred is not None:
            _configure(*_deferred)
            _deferred = None
    return True


def configure_on_first_event(
    level: str = "warning", *, json_logs: bool | None = None, stream: TextIO | None = None, clock: Clock | None = None
) -> None:
    """`configure`, applied by the first event that the level lets through (none: structlog is never imported).
    For modules that log through `lazy_logger`, and libraries through `logging`."""
    global _deferred
    logging.getLevelNamesMapping()[level.upper()]  # a level that does not exist fails here, as configure's does
    _deferred = (level, json_logs, stream)
    _from_logging(clock)


def discard_waiting_setup() -> None:
    """Drops a `configure_on_first_event` set-up no event applied yet: a caller running commands one after
    another in one process (tests) must not have the next one's first warning replace its own configuration."""
    global _deferred
    _deferred = None


def configure(
    level: str = "warning", *, json_logs: bool | None = None, stream: TextIO | None = None, clock: Clock | None = None
) -> None:
    """Logging set up at once (the daemon, whose modules log through structlog directly). `clock`: the one
    libraries' repeated warnings are held back by (`_FromLogging`)."""
    discard_waiting_setup()
    _configure(level, json_logs, stream)
    _from_logging(clock)


def _from_logging(clock: Clock | None) -> None:
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _FromLogging)]
    root.addHandler(_FromLogging(clock or SystemClock()))


def _configure(level: str, json_logs: bool | None, stream: TextIO | None) -> None:
    import structlog

    global _RECENT
    _RECENT = RecentEvents()  # a new set-up (a daemon, a test) starts with no events of an earlier one
    out = stream or sys.stderr
    if json_logs is None:
        json_logs = not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=json_dumps_for(out))
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            _RECENT,
            structlog.processors.format_exc_info,
            *(() if json_logs else (_escaped,)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=_FlushingFile(out)),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
