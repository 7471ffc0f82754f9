"""The status page's bearer token: read from a secret reference, checked in constant time.

`--status-token-ref env:NAME` or `file:PATH`, the two forms a spec's secret reference takes
(`{env: NAME}`, `{file: PATH}`), so the token itself is never on a command line (`ps` shows those) and a
Kubernetes Secret reaches it as an environment variable or a mounted file. It is read once, at start.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping

from reconciler.spec.files import FileRefused, read_regular, without_newline

__all__ = ["MAX_TOKEN_BYTES", "read_token", "token_accepted"]

MAX_TOKEN_BYTES = 4096
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_token(ref: str, env: Mapping[str, str]) -> str:
    """The token a reference names; ValueError says what is wrong (never quoting a value it read)."""
    scheme, _, where = ref.partition(":")
    if scheme == "env" and _ENV_NAME.match(where):
        found = env.get(where)
        if found is None:
            raise ValueError(f"--status-token-ref {ref}: environment variable {where} is not set")
        value = without_newline(found)  # a Secret made --from-file of an `echo`ed file: as a mounted file
    elif scheme == "file" and where:
        try:
            data = read_regular(where, MAX_TOKEN_BYTES)
        except FileRefused as exc:
            raise ValueError(f"--status-token-ref {ref}: cannot read {where}: {exc}") from None
        try:
            value = without_newline(data.decode("utf-8"))  # a file written by `echo`
        except UnicodeDecodeError:
            raise ValueError(f"--status-token-ref {ref}: {where} is not UTF-8 text") from None
    else:
        raise ValueError(f"--status-token-ref must be env:NAME or file:PATH, got {ref[:80]!r}")
    if not value.strip():
        raise ValueError(f"--status-token-ref {ref}: the token is empty")
    return value


def token_accepted(expected: str | None, authorization: str | None) -> bool:
    """No token configured: open. Else a Bearer token, or a Basic password, equal to it (constant time)."""
    if expected is None:
        return True
    scheme, _, credentials = (authorization or "").partition(" ")
    given = credentials.strip()
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
