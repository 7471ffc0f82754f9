"""How a secret is shown anywhere: the one place to audit.

Every secret capctl shows (a plan, a recorded request, a log line, an error message, the simulator's request
log) is shown as its fingerprint, `sha256:` + 12 hex characters of an HMAC (`secrets.py`), never as its value
and never as a mask: a reviewer can tell that two values differ or that a key rotated, and nothing more.
This module holds the rules that decide where secrets are and how they become fingerprints:

- `redact_tree`: a JSON-like tree (a vendor request) with every `Secret` / `SecretText` leaf shown;
- `secret_leaves` + `scrub_text`: text from outside (a vendor's message, a driver's error) with any secret
  it echoes replaced by that secret's fingerprint, then put on one line and shortened;
- `is_secret_key` + `redact_named`: a tree whose credentials are plain text (what a client sent to the
  simulator, a log line's fields), found by the key that holds them;
- `redact_url` + `url_secrets`: a connection URL without its password, and the password as a `Secret`.

Which key a fingerprint uses: a `Secret` / `SecretText` made while loading specs carries the state's key
(or a per-run key where there is no state yet, `spec/loader.py`). A value that only turns up as plain text
(a log field, a request the simulator received, a state URL's password) is fingerprinted under the process's
run key (`secrets.RUN_KEY`): comparable within one run, never across runs and never with the state's.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any, Final

from reconciler.secrets import Hidden, Secret, SecretText, map_hidden

__all__ = [
    "MESSAGE_LIMIT",
    "escape_unprintable",
    "is_secret_key",
    "is_url_secret_key",
    "redact_named",
    "redact_tree",
    "redact_url",
    "scrub_text",
    "secret_leaves",
    "shown",
    "unencoded_userinfo",
    "url_secrets",
]

MESSAGE_LIMIT: Final = 200  # characters of outside text (a vendor message) kept in an error

# Normalised key names (lowercase, no "_" or "-") whose values are credentials, parts of names that make a
# key a credential, and the names that contain such a part but are public (signing parameters).
_SECRET_KEYS: Final = frozenset({"ak", "sk"})
_SECRET_PARTS: Final = ("secret", "signature", "token", "password", "accesskey", "authorization")
_PUBLIC_KEYS: Final = frozenset({"signatureversion", "signaturenonce", "signaturemethod"})


def shown(value: Hidden) -> str:
    """How a secret is shown: its fingerprint."""
    return value.fingerprint


def redact_tree(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """Copy of a JSON-like tree with every `Secret` and `SecretText` leaf shown as its fingerprint (for plans,
    logs, the state's recorded request). `memo`: see `secrets.map_hidden`."""
    return map_hidden(value, shown, memo)


def secret_leaves(tree: object) -> list[Hidden]:
    """Every `Secret` and `SecretText` in a tree (a request a vendor may echo back in a message)."""
    found: list[Hidden] = []

    def keep(leaf: Hidden) -> Hidden:
        found.append(leaf)
        return leaf

    map_hidden(tree, keep)
    return found


def scrub_text(text: str, secrets: Iterable[Hidden], *, limit: int | None = MESSAGE_LIMIT) -> str:
    """`text` with every value of `secrets` it contains replaced by that secret's fingerprint, then cut to
    `limit` characters (None: not cut). One pass, longest value first, so a value inside another (or inside
    a fingerprint already written) is never left half replaced."""
    fingerprints = {spelling: shown(s) for s in secrets if s.reveal() for spelling in _spellings(s.reveal())}
    if fingerprints:
        pattern = "|".join(re.escape(v) for v in sorted(fingerprints, key=len, reverse=True))
        text = re.sub(pattern, lambda found: fingerprints[found.group()], text)
    text = _one_line(text)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    """Outside text as plans, `state list`, `apply` and logs print it: its line breaks and tabs as single spaces,
    any other unprintable character (an escape sequence's ESC, a right-to-left override) written as its escape
    (`\\x1b`). A proxy's HTML error page or a vendor's message otherwise broke a listing's row in two, or
    restyled the reader's terminal."""
    if text.isprintable():
        return text
    return escape_unprintable(" ".join(text.split()))


def escape_unprintable(text: str) -> str:
    """`text` with each character a terminal must not get raw (a control, a bidirectional override, a
    zero-width character) written as its escape (`\\x1b`); printable text, CJK included, kept as it is."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _spellings(value: str) -> set[str]:
    """`value` as written, and as JSON writes it inside a string, once or twice (with and without `\\uXXXX`):
    a vendor that echoes the request body quotes its wire form (`"` as `\\"`, `é` as `\\u00e9`), and an answer
    that is not the expected JSON is quoted whole, escaping the vendor's own quote of it once more."""
    once = {value, *(json.dumps(value, ensure_ascii=ascii)[1:-1] for ascii in (True, False))}
    return once | {json.dumps(v, ensure_ascii=ascii)[1:-1] for v in once for ascii in (True, False)}


@functools.lru_cache(maxsize=1024)  # asked for every key of every request the simulator logs: a few names, again
def is_secret_key(key: str) -> bool:
    """Whether a field named `key` holds a credential (`AccessKeyId`, `X-Signature`, `server_secret`, ...)."""
    norm = key.lower().replace("_", "").replace("-", "")
    if norm in _PUBLIC_KEYS:
        return False
    return norm in _SECRET_KEYS or any(part in norm for part in _SECRET_PARTS)


def redact_named(value: Any) -> Any:
    """Copy of a JSON-like tree with every `Secret` / `SecretText` leaf, and the value of every key that names a
    credential, shown as a fingerprint (plain text under the run key)."""
    if isinstance(value, dict):
        return {k: _named(v) if isinstance(k, str) and is_secret_key(k) else redact_named(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_named(v) for v in value]
    return redact_tree(value)


def _named(value: object) -> object:
    if isinstance(value, dict | list):
        return redact_named(value)
    if isinstance(value, Secret | SecretText):
        return shown(value)
    return shown(Secret(str(value)))


def unencoded_userinfo(url: str) -> bool:
    """Whether `url`'s user info holds a `/`, `?`, `#` or `@` that is not percent-encoded (a password such as
    `openssl rand -base64` makes): a URL parser ends the host part at the first three, so the password is read as
    a port, a path or a query, and libpq ends the user info at the first `@`, so the password's rest is read as
    the host; no part of the URL can be told apart from the password."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc.count("@") > 1:
        return True
    # An `@` and then a `/`, `?` or `#` in the password (`p@ss:w/rd`): the host part ended at the second, so its
    # `@` looked like the user info's end and the password's rest was shown as host, port and path (walk 48D-4).
    # No database name nor libpq parameter name holds an `@`; a fragment means nothing to libpq.
    names = (segment.partition("=")[0] for segment in parts.query.split("&"))
    if "@" in parts.path or "@" in parts.fragment or any("@" in name for name in names):
        return True
    return "@" not in parts.netloc and "@" in url.partition("://")[2].partition("/")[0]


# libpq's parameters that hold a secret but whose names say no credential (a base64 SCRAM key is as good as the
# password); `sslpassword` and `oauth_client_secret` are found by `is_secret_key`, as is a misspelt `Password`.
_LIBPQ_SECRET_KEYS: Final = frozenset({"scram_client_key", "scram_server_key"})


def is_url_secret_key(name: str) -> bool:
    """Whether a URL's query parameter `name` (as written, percent-encoded) holds a secret: `password`, libpq's
    `sslpassword` (the client key's), `oauth_client_secret`, `scram_client_key`, or any name that says credential
    (walk 49c: only `password=` was left out, so `?sslpassword=` was shown in every message naming the URL)."""
    key = urllib.parse.unquote_plus(name)
    return is_secret_key(key) or key.lower() in _LIBPQ_SECRET_KEYS


def redact_url(url: str) -> str:
    """`url` without its password (in the user info or a query parameter holding a secret, `is_url_secret_key`):
    the URL names a state in messages and logs, so it is shown the same in every run. A user info with an
    unencoded `/`, `?`, `#` or `@` (`unencoded_userinfo`) is shown as `…`, up to the URL's last `@`."""
    if unencoded_userinfo(url):
        scheme, _, rest = url.partition("://")
        return redact_url(f"{scheme}://…@{rest.rpartition('@')[2]}")
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    netloc = f"{user}@{hostport}" if at and user else hostport
    # The other parameters as written: the URL is also shown to be used (`state copy`: "Point every capctl at
    # URL"), and a decoded `options=-csearch_path%3Dcapctl` is one libpq refuses.
    kept = (p for p in parts.query.split("&") if not is_url_secret_key(p.partition("=")[0]))
    query = "&".join(p for p in kept if p)
    shown = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if not netloc and url[: len(parts.scheme) + 3].lower() == f"{parts.scheme}://":
        # urlunsplit drops an empty host part's `//` for a scheme it does not know: `postgresql:///db?host=/run/…`
        # was shown as `postgresql:/db?…`, which `state copy` told users to point every capctl at, and no one takes
        shown = f"{parts.scheme}://{shown[len(parts.scheme) + 1 :]}"
    return shown


def url_secrets(url: str) -> list[Secret]:
    """Every spelling (as written, percent-decoded) of the password(s) and other secrets in `url`, for
    `scrub_text` over a driver's messages."""
    parts = urllib.parse.urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    raw = [userinfo.partition(":")[2]] if ":" in userinfo else []
    raw += [v for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if is_url_secret_key(k)]
    return [Secret(p) for p in sorted({p for value in raw for p in (value, urllib.parse.unquote(value)) if p})]
