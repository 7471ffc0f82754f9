"""Secret values that cannot be printed, logged, serialised or stored by accident.

A resolved secret reference becomes a `Secret`. Its `repr`, `str` and JSON form are the fingerprint
`sha256:` + 12 hex chars, so a reviewer sees that a key changed without seeing the key. Only a provider,
at the moment it signs or builds a request body, calls `reveal()`.
"""

from __future__ import annotations

import hashlib
from typing import Any


class Secret:
    __slots__ = ("_digest", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._digest = hashlib.sha256(value.encode()).hexdigest()

    def reveal(self) -> str:
        return self._value

    @property
    def fingerprint(self) -> str:
        return f"sha256:{self._digest[:12]}"

    @property
    def digest(self) -> str:
        """Full sha256 of the value: enters content hashes, never shown."""
        return self._digest

    def __repr__(self) -> str:
        return self.fingerprint

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return self.fingerprint

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._digest == self._digest

    def __hash__(self) -> int:
        return hash(self._digest)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def reveal_tree(value: Any) -> Any:
    """Copy of a JSON-like tree with every `Secret` leaf replaced by its value (for the wire only)."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, dict):
        return {k: reveal_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal_tree(v) for v in value]
    return value


_SCALARS = (str, int, float, type(None))  # bool is an int; `Secret` is none of these


def redact_tree(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """Copy of a JSON-like tree with every `Secret` leaf replaced by its fingerprint (for plans, logs).

    With `memo` (a dict owned by the caller for one pass over many trees), a container shared by several
    trees is redacted once and its copy reused: the memo keeps each source alive, so ids stay unique.
    """
    if isinstance(value, Secret):
        return value.fingerprint
    if not isinstance(value, dict | list):
        return value
    if memo is not None and (hit := memo.get(id(value))) is not None:
        return hit[1]
    # Scalar children are kept as they are without a call: most of a request's leaves are plain values.
    if isinstance(value, dict):
        copy: Any = {k: v if isinstance(v, _SCALARS) else redact_tree(v, memo) for k, v in value.items()}
    else:
        copy = [v if isinstance(v, _SCALARS) else redact_tree(v, memo) for v in value]
    if memo is not None:
        memo[id(value)] = (value, copy)
    return copy
