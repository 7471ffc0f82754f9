"""The simulator's request log: a bounded ring buffer of what clients sent, with every credential redacted.

Tests read it to assert what a provider sent; since logs get pasted into bug reports, secrets, tokens and
signatures are replaced by their fingerprint (`redact.redact_named`, under the run key) before they are
stored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from reconciler.redact import redact_named

__all__ = ["RequestLog"]


@dataclass
class LogEntry:
    seq: int
    time: float
    vendor: str
    api: str
    method: str
    path: str
    query: dict[str, Any]
    body: Any
    status: int = 0
    code: str = ""
    throttled: bool = False
    fault: str | None = None
    caller: str | None = None  # <name> of a call made under /as/<name>/
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "vendor": self.vendor,
            "api": self.api,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "body": self.body,
            "status": self.status,
            "code": self.code,
            "throttled": self.throttled,
            "fault": self.fault,
            "caller": self.caller,
        }


class RequestLog:
    def __init__(self, size: int) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=size)
        self._seq = 0

    def add(
        self, *, time: float, vendor: str, api: str, method: str, path: str, query: dict[str, Any], body: Any
    ) -> LogEntry:
        """Store a redacted entry; the caller fills in status/code once the answer is known."""
        self._seq += 1
        entry = LogEntry(self._seq, time, vendor, api, method, path, redact_named(query), redact_named(body))
        self._entries.append(entry)
        return entry

    def entries(self, limit: int | None = None) -> list[LogEntry]:
        items = list(self._entries)
        return items[-limit:] if limit else items

    def clear(self) -> None:
        self._entries.clear()
