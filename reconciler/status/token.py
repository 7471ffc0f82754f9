"""The status page's bearer token: read from a secret reference, checked in constant time.

`--status-token-ref env:NAME` or `file:PATH`, the two forms a spec's secret reference takes
(`{env: NAME}`, `{file: PATH}`), so the token itself is never on a command line (`ps` shows those) and a
Kubernetes Secret reaches it as an environment variable or a mounted file. It is read once, at start.

A token is sent in an HTTP header, which cannot carry a control character (h11 refuses CR, LF and NUL, and
lets others through to a server that may drop the request): such a token is refused when it is read, naming
the variable or file and the character's position (`unsendable`), never quoting the token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import unicodedata
from collections.abc import Mapping

from reconciler.spec.files import FileRefused, NotText, read_regular, utf8_text, without_newline

__all__ = ["MAX_TOKEN_BYTES", "read_token", "token_accepted", "unsendable"]

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
            value = without_newline(utf8_text(data))  # a file written by `echo`, or by Notepad (a leading mark)
        except NotText as exc:
            raise ValueError(f"--status-token-ref {ref}: {where} is {exc.reason}: save it as UTF-8") from None
    else:
        raise ValueError(f"--status-token-ref must be env:NAME or file:PATH, got {ref[:80]!r}")
    if not value.strip():
        raise ValueError(f"--status-token-ref {ref}: the token is empty")
    if (problem := unsendable(value)) is not None:
        raise ValueError(f"--status-token-ref {ref}: the token holds {problem}: set it without it")
    return value.strip()  # a header's value arrives without it (HTTP's optional whitespace), as sync_token's


def unsendable(value: str, *, ascii_only: bool = False) -> str | None:
    """What in `value` an HTTP header cannot carry, and where (its surrounding whitespace is dropped before
    use, so it is not looked at), or None. With `ascii_only` (a bearer header as httpx sends it) a character
    outside ASCII too. Never quotes the value: a control character is named by its code point only."""
    start = len(value) - len(value.lstrip())
    for at, char in enumerate(value.strip(), start + 1):
        if unicodedata.category(char) == "Cc":  # C0 (tab, CR, LF ...), DEL and C1
            return (
                f"a control character (U+{ord(char):04X}) at character {at} of {len(value)}, "
                "which an HTTP header cannot carry"
            )
        if ascii_only and not char.isascii():
            return f"a character outside ASCII at character {at} of {len(value)}, which an HTTP header cannot carry"
    return None


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
