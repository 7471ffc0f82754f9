"""Persisted task state: pick a store from a URL (`open_state`) and use it through `StateStore`.

`sqlite:///relative/path.db` (relative to the working directory), `sqlite:////abs/path.db`, or
`postgresql://user:pass@host:5432/db` (also `postgres://`). PostgreSQL support (psycopg) is imported only
when such a URL is opened, so commands on the SQLite default stay quick to start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from reconciler.redact import redact_url

from . import base
from .base import *  # noqa: F403  (the store interface and its errors are the package's)
from .base import StateError
from .sql import SqlStateStore
from .sqlite import SQLiteStateStore

DEFAULT_STATE_URL = "sqlite:///.capctl/state.db"
STATE_ENV = "CAPCTL_STATE"
# Spelled out in every message about a wrong URL: `sqlite:///path/to/state.db` read as an absolute path put a
# walker's state under ./path/to (walk 14b).
_URL_FORMS = (
    "sqlite:////absolute/path/state.db (four slashes), sqlite:///relative/path/state.db (three: relative to the "
    "working directory) or postgresql://user@host:5432/db"
)

__all__ = ["DEFAULT_STATE_URL", "STATE_ENV", "SQLiteStateStore", "open_state", "sqlite_path"]
__all__ += base.__all__


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite:///…` URL (three slashes then a relative path, four for an absolute one)."""
    path = url.removeprefix("sqlite:///")
    # Shown as a PostgreSQL URL is: `sqlite://capctl:hunter2@db/capctl` (a PostgreSQL URL with the wrong scheme)
    # and `sqlite:///s.db?password=…` were printed whole (walk 50C-3); options and fragment are never shown.
    shown = f"state URL {_redacted(url.partition('?')[0].partition('#')[0])!r}"
    if path == url:
        raise StateError(f"{shown}: a sqlite URL has no host; write {_URL_FORMS}")
    if not path or path.endswith("/"):
        raise StateError(f"{shown}: name a database file, as in sqlite:///.capctl/state.db")
    if "?" in path or "#" in path:
        raise StateError(f"{shown}: sqlite URLs take no options ('?' or '#')")
    return path


def _redacted(url: str) -> str:
    """`redact_url(url)`, or only its scheme where the URL cannot be read (`[::1` without its `]`)."""
    try:
        return redact_url(url)
    except ValueError:
        return f"{url.partition(':')[0]}://…"


def open_state(
    url: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    create: bool = True,
    init: bool = False,
    connect_timeout: int = 10,
    lock_wait: float | None = None,
    lease_timing: tuple[float, float] | None = None,
) -> SqlStateStore:
    """Open the store at `url`, else `$CAPCTL_STATE`, else `sqlite:///.capctl/state.db`.

    With `create=False` (commands that only read) nothing is created, no file, directory or table: a store
    that does not exist yet raises `StateMissing`, which names where it looked. A store that exists but is
    not a whole state raises `StateDamaged`; `init=True` (`capctl state init`) starts a new state in an
    empty SQLite file or one without capctl tables instead. `connect_timeout`: seconds (PostgreSQL);
    `lock_wait`: seconds a statement waits for a lock another session holds (SQLite's busy file, PostgreSQL's
    `lock_timeout` unless the URL sets it); None: 5 s on SQLite, 10 s on PostgreSQL. `lease_timing`: the
    renew deadline and retry period (seconds) PostgreSQL's lease statements must fit (`lease_limits`).
    """
    environ = os.environ if env is None else env
    # Surrounding space dropped: a Secret made from a file (`kubectl create secret --from-file`, `echo URL > f`)
    # ends with a line break, which libpq kept in the database name (`database "capctl\n" does not exist`, shown
    # on two lines while the URL shown, read by urlsplit, had none; walk 31B-4).
    url = (url or environ.get(STATE_ENV) or DEFAULT_STATE_URL).strip()
    scheme = url.partition(":")[0].lower()
    if "://" not in url:  # a bare path (`state.db`); not echoed either, it might be a mistyped URL with a password
        raise StateError(f"the state location is a URL, not a path: {_URL_FORMS}")
    if scheme == "sqlite":
        return SQLiteStateStore(
            sqlite_path(url), create=create, init=init, busy_timeout=5.0 if lock_wait is None else lock_wait
        )
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStateStore

        return PostgresStateStore(
            url, create=create or init, connect_timeout=connect_timeout, lock_wait=lock_wait, lease_timing=lease_timing
        )
    # Only the scheme is echoed: the rest of an unknown URL might carry a password.
    raise StateError(f"state URL with scheme {scheme!r} is not supported: use {_URL_FORMS}")
