"""The simulator's request log: a bounded ring buffer of what clients sent, with every credential redacted.

Tests read it to assert what a provider sent; since logs get pasted into bug reports, secrets, tokens and
signatures are replaced by their fingerprint before they are stored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from reconciler.secrets import Secret

# Normalised key names (lowercase, no "_" or "-") whose values are credentials.
_SECRET_KEYS = frozenset({"accesskey", "accesskeyid", "ak", "sk", "authorization", "token", "password"})
_SECRET_PARTS = ("secret", "signature", "token")
_PUBLIC_KEYS = frozenset({"signatureversion", "signaturenonce"})


def is_secret_key(key: str) -> bool:
    norm = key.lower().replace("_", "").replace("-", "")
    if norm in _PUBLIC_KEYS:
        return False
    return norm in _SECRET_KEYS or any(part in norm for part in _SECRET_PARTS)


def redact(value: Any) -> Any:
    """Copy of a JSON-like tree with the value of every credential-named key replaced by its fingerprint."""
    if isinstance(value, dict):
        return {k: (_fingerprint(v) if is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _fingerprint(value: Any) -> Any:
    if isinstance(value, dict | list):
        return redact(value)
    return Secret(str(value)).fingerprint


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
        entry = LogEntry(self._seq, time, vendor, api, method, path, redact(query), redact(body))
        self._entries.append(entry)
        return entry

    def entries(self, limit: int | None = None) -> list[LogEntry]:
        items = list(self._entries)
        return items[-limit:] if limit else items

    def clear(self) -> None:
        self._entries.clear()
