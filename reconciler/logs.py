"""Logging set-up: structlog to stderr, one JSON object per line when stderr is not a terminal.

Every line is flushed as written. Secrets cannot leak through a log line: a `Secret` renders as its
fingerprint, and every line's fields go through `redact.redact_named`, which shows the value of any key that
names a credential as its fingerprint too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from reconciler.redact import redact_named

__all__ = ["configure"]


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    redacted: dict[str, Any] = redact_named(dict(event))
    return redacted


class _FlushingFile:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def flush(self) -> None:
        self._stream.flush()


def configure(level: str = "warning", *, json_logs: bool | None = None, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    if json_logs is None:
        json_logs = not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=_FlushingFile(out)),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
