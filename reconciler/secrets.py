"""Secret values that cannot be printed, logged, serialised or stored by accident.

A resolved secret reference becomes a `Secret`. Its `repr`, `str` and JSON form are the fingerprint
`sha256:` + 12 hex chars (the contract's format), so a reviewer sees that a key changed without seeing the
key. Only a provider, at the moment it signs or builds a request body, calls `reveal()`.

Why keyed: a plain `sha256(secret)` prefix lets anyone holding a plan (the example workflow posts plans to
pull requests) confirm a guessed weak secret offline. The 12 hex chars are of an HMAC-SHA256 under a random key
kept in the state store (`fingerprint_key`), so fingerprints are stable within one state (a rotation shows
in plans) and useless for guessing without the state. Where no state is at hand (`capctl validate`, the
simulator's request log) a random key per process is used: fingerprints then differ from run to run.

A value read from a reference into an ordinary text field (not a known-harmless one such as an endpoint)
becomes a `SecretText`: it is sent to the vendor as the text it is, and shown as a fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets as _random
from collections.abc import Callable
from typing import Any, Final, TypeAlias

__all__ = [
    "KEYED_HASH_PREFIX",
    "KEY_BYTES",
    "RUN_KEY",
    "UNKEYED_FINGERPRINT_REMOVED",
    "Hidden",
    "Secret",
    "SecretText",
    "drop_unkeyed_fingerprints",
    "keyed_hash",
    "map_hidden",
    "new_fingerprint_key",
    "reveal_tree",
    "upgrade_hash",
]

FINGERPRINT_PREFIX: Final = "sha256:"  # the contract's format; the digest is keyed (HMAC-SHA256)
# The key used where no state gives one: fingerprints of one run are comparable, never across runs.
KEY_BYTES: Final = 32  # a state's fingerprint key (`capctl_fingerprint_key`), as capctl makes it
RUN_KEY: Final = _random.token_bytes(KEY_BYTES)


def new_fingerprint_key() -> bytes:
    """A fresh random key for a new state store."""
    return _random.token_bytes(KEY_BYTES)


def keyed_digest(key: bytes, text: str) -> str:
    """Hex HMAC-SHA256 of `text` under `key`."""
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def fingerprint(key: bytes, text: str) -> str:
    return FINGERPRINT_PREFIX + keyed_digest(key, text)[:12]


KEYED_HASH_PREFIX: Final = "hmac:"
CONTENT_HASH_PREFIX: Final = "sha256:"


def keyed_hash(key: bytes, content: str) -> str:
    """The hash a task carries and the state records: its content hash (`sha256:` ...) under the state's key."""
    return KEYED_HASH_PREFIX + keyed_digest(key, content)


def upgrade_hash(key: bytes, recorded: str) -> str:
    """A recorded task hash as this version computes it. A record written before hashes were keyed holds the
    bare content hash, which is keyed here (so an upgrade does not make every task look changed); a keyed
    hash is returned as it is."""
    return keyed_hash(key, recorded) if recorded.startswith(CONTENT_HASH_PREFIX) else recorded


_UNKEYED_FINGERPRINT: Final = re.compile(r"sha256:[0-9a-f]{12}")
UNKEYED_FINGERPRINT_REMOVED: Final = "(fingerprint from before keyed fingerprints, removed)"


def drop_unkeyed_fingerprints(value: Any) -> Any:
    """Copy of a recorded (redacted) request with every old unkeyed fingerprint replaced by a note: a plain
    `sha256` prefix of a secret lets a guess be confirmed, so an upgraded state keeps none."""
    if isinstance(value, str):
        return UNKEYED_FINGERPRINT_REMOVED if _UNKEYED_FINGERPRINT.fullmatch(value) else value
    if isinstance(value, dict):
        return {k: drop_unkeyed_fingerprints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [drop_unkeyed_fingerprints(v) for v in value]
    return value


class Secret:
    __slots__ = ("_digest", "_fingerprint", "_value")

    def __init__(self, value: str, key: bytes = RUN_KEY) -> None:
        self._value = value
        self._digest = hashlib.sha256(value.encode()).hexdigest()
        self._fingerprint = fingerprint(key, value)

    def reveal(self) -> str:
        return self._value

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def digest(self) -> str:
        """Full unkeyed sha256 of the value: enters content hashes only under the state's key (never shown)."""
        return self._digest

    def __repr__(self) -> str:
        return self._fingerprint

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return self._fingerprint

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._digest == self._digest

    def __hash__(self) -> int:
        return hash(self._digest)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


class SecretText(str):
    """Text read from a reference into a field that is not known to be harmless.

    It is a `str`, so models, request bodies and content hashes take it as the text it is (the vendor needs
    it); `str()`, `repr()`, formatting and redaction give its fingerprint, so a plan, a log line or an error
    message built from it shows no value.
    """

    fingerprint: str

    def __new__(cls, value: str, key: bytes = RUN_KEY) -> SecretText:
        self = super().__new__(cls, value)
        self.fingerprint = fingerprint(key, value)
        return self

    def reveal(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return self.fingerprint

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return self.fingerprint

    def __reduce__(self) -> Any:
        raise TypeError("a SecretText cannot be pickled")


Hidden: TypeAlias = Secret | SecretText  # a value shown only as its fingerprint

# Exact types kept as they are: `SecretText` is a str subclass, `Secret` none of these, bool is an int.
_PLAIN: Final = frozenset((str, int, float, bool, type(None)))


def map_hidden(value: Any, leaf: Callable[[Hidden], object], memo: dict[int, Any] | None = None) -> Any:
    """The one walk over a JSON-like tree for its `Secret` and `SecretText` leaves: a copy with each such leaf
    replaced by `leaf(it)`, everything else kept (`reveal_tree` for the wire, `redact.redact_tree` for display).

    With `memo` (a dict owned by the caller for one pass over many trees), a container shared by several
    trees is copied once and its copy reused: the memo keeps each source alive, so ids stay unique.
    """
    if isinstance(value, Secret | SecretText):
        return leaf(value)
    if not isinstance(value, dict | list):
        return value
    if memo is not None and (hit := memo.get(id(value))) is not None:
        return hit[1]
    # Plain scalar children are kept as they are without a call: most of a request's leaves are plain values.
    if isinstance(value, dict):
        copy: Any = {k: v if type(v) in _PLAIN else map_hidden(v, leaf, memo) for k, v in value.items()}
    else:
        copy = [v if type(v) in _PLAIN else map_hidden(v, leaf, memo) for v in value]
    if memo is not None:
        memo[id(value)] = (value, copy)
    return copy


def _reveal(value: Hidden) -> str:
    return value.reveal()


def reveal_tree(value: Any) -> Any:
    """Copy of a JSON-like tree with every `Secret` and `SecretText` leaf replaced by its plain text (for the
    wire only: a `SecretText` left in would be sent as its fingerprint wherever the wire calls `str()`)."""
    return map_hidden(value, _reveal)
