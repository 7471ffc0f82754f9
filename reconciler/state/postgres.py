"""The shared state store: PostgreSQL, for several daemon replicas (or CI jobs) on one state.

Same tables and semantics as SQLite (see `sql.py`), created if absent in the database the URL names (or
in the first schema of its `search_path`), except by read-only commands (`create=False`), for which a
database without them holds no state. Writers serialise on the serial row (`SELECT … FOR UPDATE`), so
compare-and-set holds across hosts. The lock is a lease row: taken only when free or expired, renewed by
its holder, and lapsing by itself when the holder dies. Lease times use the database server's clock, so
replicas with skewed clocks still agree. The password stays in the connection string: `url` and every
error message show the URL without it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime

import psycopg
import psycopg.conninfo

from reconciler.redact import is_url_secret_key, redact_url, scrub_text, unencoded_userinfo, url_secrets
from reconciler.secrets import Secret

from .base import LockHeld, StateError, StateUnreachable
from .sql import (
    HISTORY_TABLE,
    INBOX_TABLE,
    LOCK_NAME,
    TABLES,
    Cursor,
    HistoryQueries,
    LeadershipQueries,
    LockContext,
    Queries,
    RoomQueries,
    SqlStateStore,
    holder_identity,
    iso_utc,
)

__all__ = ["PostgresStateStore", "lease_limits"]

# Every statement has a time limit (issue 14): the server ends a statement, a lock wait or an idle
# transaction that takes longer, and TCP keepalives / TCP_USER_TIMEOUT drop a connection to a host that
# vanished. A URL that sets one of these itself (`?options=-c statement_timeout=...`) keeps its value.
SESSION_LIMITS = {
    "statement_timeout": "15s",
    "lock_timeout": "10s",
    "idle_in_transaction_session_timeout": "60s",
}
CONNECTION_LIMITS = {
    "keepalives": 1,
    "keepalives_idle": 10,  # seconds of silence before the first probe
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # milliseconds sent data may stay unacknowledged
}


# A cluster made by initdb under LANG=C has SQL_ASCII databases: psycopg then read text as bytes (a TypeError's
# traceback from every command, walk 16B-9); with the client encoding UTF8 the server stores the bytes as they
# come, as it does for UTF8. LATIN1, EUC_CN and the like cannot hold every room id: refused at connect, not
# at the first CJK room of an apply, after its vendor call.
_SERVER_ENCODINGS = frozenset({"UTF8", "SQL_ASCII"})

# Sent in every connection's `options`, beside the limits and the URL's search_path, and read back once
# connected: a pooler that drops `options` (PgBouncer's `ignore_startup_parameters = options`) left the
# session without them, so a state in a schema of its own looked absent and apply made a second, empty one,
# starting every task again (walk 48D-1). A custom setting any user may set; it changes nothing.
_OPTIONS_MARK = "capctl.options"
_THROUGH_POOLER = (
    "so capctl would read and write the state without its limits and in another schema than the URL names (a"
    " second, empty state, every task started again). Connect capctl to PostgreSQL itself, not through the"
    " pooler (each capctl process uses up to two connections): docs/state.md"
)
_OPTIONS_DROPPED = (
    "the server ignored this connection's options, which carry capctl's time limits and the URL's search_path:"
    " a pooler in front of PostgreSQL (PgBouncer's ignore_startup_parameters = options) drops them,"
    f" {_THROUGH_POOLER}"
)
_OPTIONS_REFUSED = (
    "a pooler in front of PostgreSQL (PgBouncer) refuses the options that carry capctl's time limits and the"
    " URL's search_path; told to ignore them (ignore_startup_parameters = options), it would drop them,"
    f" {_THROUGH_POOLER}"
)

# A server's answers at connect that only a change of its set-up (or the URL) ends: `capctl run` does not wait
# for them at start as for a server starting up (48D-1, 48D-3).
_NO_TLS = "server does not support SSL, but SSL was required"
# The server's refusals of a setting in the connection's options (the URL's options=, PGOPTIONS): an unknown
# name, a bad value (`invalid value for parameter "statement_timeout": "abc"`, out of range), one no session
# may set, `-c name` without a value, a word that is no option; only a corrected URL ends them (walk 49C-3).
_BAD_OPTIONS = ('parameter "', "requires a value", "invalid command-line argument for server process")
# The server's switches that take a value (PostgreSQL's process_postgres_switches): `-c name=value` and
# `--name=value` set a setting; the others' values are no setting's name.
_VALUED_SWITCHES = frozenset("BcCDdfhkNprStvW-")
_BAD_OPTIONS_HINT = " (a setting of the connection's options, from the URL's options= or PGOPTIONS: correct it there)"
_SET_UP_REFUSALS = ("unsupported startup parameter: options", _NO_TLS, *_BAD_OPTIONS)
# libpq's refusal of a URL parameter's value before it reaches any server (`invalid sslmode value: "bogus"`,
# `invalid integer value "x" for connection option "keepalives"`): "connection is bad" alone is no such thing,
# a Unix socket not there yet (a server starting) says it too (walk 49C-4).
_BAD_URL_VALUE = re.compile(r"^connection is bad: (?:connection to server .*? failed: )?invalid ")


def _set_up_refused(exc: psycopg.Error) -> bool:
    """Whether a connect failure is one only a change of the server's set-up or of the URL ends: `capctl run`
    does not wait for it (`--state-wait`). A URL libpq cannot parse (`invalid URI query parameter: "bogus"`) is a
    ProgrammingError."""
    text = str(exc)
    return (
        isinstance(exc, psycopg.ProgrammingError)
        or _BAD_URL_VALUE.match(text) is not None
        or any(refusal in text for refusal in _SET_UP_REFUSALS)
    )


# The lease (take, renew, release) has a connection of its own, as Kubernetes' controllers renew on a client of
# their own: a write waiting out `lock_timeout` on the store's connection (another session holding a row or
# table lock) held the store's mutex, so the renewal waited too and the leader lost its lead at the 10 s
# renew deadline (walk 14D-1). Each lease statement gives up within limits derived from the renew deadline
# (walk 15B-1), whatever the URL sets, so a renewal held up by a lock fails and is tried again in time.
MAX_LEASE_STATEMENT = 15.0  # the store's own statement_timeout (SESSION_LIMITS): a one-row update needs no more


def lease_limits(renew_deadline: float, retry_period: float) -> dict[str, str]:
    """The lease's statement_timeout and lock_timeout for a renew deadline and retry period (seconds).

    A renewal begins a retry period after the last one ended (client-go's model: tried every retry period
    until the deadline), so two tries of S seconds end within the deadline when 2 * (retry period + S) <=
    deadline: S = deadline / 2 - retry period, 3 s for the defaults (10 s, 2 s), at most 15 s. Timings too
    tight for two tries get one: S = 1 s, or half of the deadline less a retry period if that is shorter.
    A lock is given up at two thirds of S (2 s by default), so a locked lease row is named as such."""
    one_try = min(1.0, (renew_deadline - retry_period) / 2)
    statement = min(max(renew_deadline / 2 - retry_period, one_try), MAX_LEASE_STATEMENT)
    return {"statement_timeout": _pg_seconds(statement), "lock_timeout": _pg_seconds(statement * 2 / 3)}


def _pg_seconds(seconds: float) -> str:
    """A PostgreSQL duration setting: whole seconds as `3s`, others in milliseconds (`667ms`, at least 1)."""
    return f"{seconds:g}s" if seconds == int(seconds) else f"{max(round(seconds * 1000), 1)}ms"


# Tables a capctl that opens a state makes again where they are missing, and which does: `_migrate_leadership`
# (any lock), the room activity's first write of activity (a daemon's).
_MADE_AGAIN = {
    "capctl_lock": "an apply, or a replica restarted",
    "capctl_inbox": "an apply, or a replica restarted",
    "capctl_history": "an apply, or a replica restarted",
    "capctl_room_activity": "a replica restarted",
}

LEASE_LIMITS = lease_limits(10.0, 2.0)  # LeaderSettings' defaults, and the one-shot commands' lease: 3 s and 2 s

_SCHEMA_LOCK_KEY = 0x6361_7063_746C  # any fixed number ("capctl" in ASCII) for pg_advisory_xact_lock
_LOCK_TABLE = (
    "CREATE TABLE IF NOT EXISTS capctl_lock (name TEXT PRIMARY KEY, holder TEXT NOT NULL, token TEXT NOT NULL,"
    " since TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL, epoch BIGINT NOT NULL DEFAULT 0,"
    " lease_seconds DOUBLE PRECISION)"
)


def _where_absent(absent: str, statement: str) -> str:
    """`statement` run only where `absent` (an SQL condition) holds. PostgreSQL checks the schema's CREATE privilege
    even for `CREATE TABLE IF NOT EXISTS` of a table that is there, and after the first run the database user
    needs none (docs/state.md): run always, the leadership step refused every lock to such a user once a capctl
    added a column to a table that was there (walk 26a: `lease_seconds`)."""
    return f"DO $$ BEGIN IF {absent} THEN {statement}; END IF; END $$"


def _column_absent(column: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('capctl_lock') AND attname = '{column}'"
        " AND NOT attisdropped)"
    )


# The holder's own lease duration (a Kubernetes Lease's leaseDurationSeconds): how long before its expiry a
# lapsed holder last renewed. NULL in a row a capctl before it wrote.
_LEASE_SECONDS = "ALTER TABLE capctl_lock ADD COLUMN IF NOT EXISTS lease_seconds DOUBLE PRECISION"
_BASE_QUERIES = Queries.build(
    mark="%s",
    for_update=" FOR UPDATE",
    tables=f"SELECT t FROM unnest(ARRAY{list(TABLES)}) AS t WHERE to_regclass(t) IS NOT NULL",
    has_key="SELECT (to_regclass('capctl_fingerprint_key') IS NOT NULL)::int",
)


def _validate(url: str) -> None:  # the scheme is postgresql:// or postgres://: open_state picks this store by it
    try:
        redacted, parts = redact_url(url), urllib.parse.urlsplit(url)
    except ValueError as exc:  # `[::1` without its `]`: nothing of the URL can be shown safely
        raise StateError(
            f"the PostgreSQL state URL cannot be read ({exc}): write an IPv6 host in brackets, "
            "as in postgresql://user:pass@[::1]:5432/db"
        ) from None
    if unencoded_userinfo(url):  # libpq, too, ends the host at a `/` and the user info at an `@`: a port, a host
        raise StateError(
            f"state URL {redacted}: its user name or password holds a '/', '?', '#' or '@' (or its database name "
            "an '@'), which ends a URL's host part or user info: percent-encode them (/ as %2F, ? as %3F, # as %23, "
            "@ as %40)"
        )
    if secret := _password_runs_on(parts.query):
        raise StateError(
            # Not named: it may be the password's rest. A misspelt parameter looks the same (walk 32c).
            f"state URL {redacted.partition('?')[0]}: a part after its {secret}= parameter is no libpq "
            f"parameter: either the {secret} holds an '&' that is not percent-encoded (write & as %26), or a "
            f"parameter after {secret}= is misspelt"
        )
    if not all(_port_ok(port) for port in _host_ports(parts.netloc)):
        raise StateError(f"state URL {redacted}: the port must be a number from 0 to 65535")
    if not parts.hostname and "host=" not in parts.query:
        raise StateError(f"state URL {redacted}: name a host, as in postgresql://user:pass@host:5432/db")


def _host_ports(netloc: str) -> list[str]:
    """The port written after each host of a URL's host part ('' where none is). libpq takes several hosts,
    each with its own port (`db1:5432,db2:5432`, `[::1]:5432,db2`): urlsplit reads that as one host whose port is
    `5432,db2:5432`, so such a URL was refused as having no valid port."""
    return [host.rpartition("]")[2].partition(":")[2] for host in netloc.rpartition("@")[2].split(",")]


def _password_runs_on(query: str) -> str:
    """The name of a parameter holding a secret (`password=`, `sslpassword=`: `is_url_secret_key`) after which a
    part names no libpq parameter, or '': the secret held an unencoded `&` (`password=ab&cd==`), and libpq's
    refusal quoted its rest (`invalid URI query parameter: "cd"`), as did the URL shown, which hides the
    secret's own part only (walk 31B-3)."""
    keys = [urllib.parse.unquote_plus(part.partition("=")[0]) for part in query.split("&") if part]
    first = next((i for i, key in enumerate(keys) if is_url_secret_key(key)), None)
    if first is None:
        return ""
    known = {d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults()} | {"ssl"}  # libpq takes ssl=true too
    return keys[first] if any(key not in known for key in keys[first + 1 :]) else ""


# This user's search_path and name, and the schemas holding a capctl_meta table it cannot see for want of USAGE
# (none when the tables are visible): _hidden reads the path as PostgreSQL does.
_HIDDEN_STATE = (
    "SELECT current_setting('search_path'), current_user, coalesce(array_agg(n.nspname::text ORDER BY n.oid), '{}'),"
    # The server spells the names for the GRANT: its quote_ident knows its reserved words (`order`, `user`).
    " quote_ident(current_user), coalesce(array_agg(quote_ident(n.nspname) ORDER BY n.oid), '{}')"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relname = 'capctl_meta' AND to_regclass('capctl_meta') IS NULL"
    " AND NOT has_schema_privilege(n.oid, 'USAGE')"
)
# One element of a search_path setting: a quoted name ("" a quote in it) or a bare one, and its comma.
_PATH_ITEM = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^,]*?))\s*(?:,|\Z)')
_NAME_BYTES = 63  # the longest name PostgreSQL keeps (NAMEDATALEN - 1); a longer one is cut to it


def _search_path(setting: str, user: str) -> list[str]:
    """The schema names of a search_path setting as PostgreSQL reads them: a bare name folded to lower case
    (ASCII letters only), a quoted one as it is, `$user` the current user. Walk 37B-2: the setting's text was
    matched as written, so `options=-csearch_path=PUBLIC` (schema public) read a hidden state as no state."""
    names, pos = [], 0
    while pos < len(setting) and (item := _PATH_ITEM.match(setting, pos)) and item.end() > pos:
        quoted, bare = item.group(1), item.group(2)
        name = (
            quoted.replace('""', '"') if quoted is not None else "".join(c.lower() if c.isascii() else c for c in bare)
        )
        # Cut as PostgreSQL cuts an identifier (NAMEDATALEN - 1 bytes, whole characters; walk 38B-3).
        name = name.encode()[:_NAME_BYTES].decode(errors="ignore")
        names.append(user if name == "$user" else name)
        pos = item.end()
    return names


def _hidden(rows: list[tuple[object, ...]]) -> str:
    """What _HIDDEN_STATE's row means ('' for none): where the tables are, and the grant that shows them."""
    if not rows:
        return ""
    setting, user, schemas, user_ident, idents = rows[0]
    path = _search_path(str(setting), str(user))
    spelled = dict(zip(schemas, idents, strict=True)) if isinstance(schemas, list) and isinstance(idents, list) else {}
    schema = next((name for name in path if name in spelled), None)
    if schema is None:
        return ""
    return (
        f"capctl's tables are in schema {schema}, on this user's search_path, but this user ({user}) may not use"
        f" that schema (no USAGE privilege), so they look absent: have the schema's owner grant it (GRANT USAGE ON"
        f" SCHEMA {spelled[schema]} TO {user_ident}), with SELECT, INSERT, UPDATE and DELETE on the capctl"
        " tables; or, for a state of this user's own, set a search_path without it: docs/state.md"
    )


def _port_ok(port: str) -> bool:
    return not port or (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535)


_C_SPACES = frozenset(" \t\n\v\f\r")


def _option_words(options: str) -> Iterator[str]:
    """The words of a connection's options as the server splits them (pg_split_opts): at whitespace not escaped
    by a backslash, the backslashes dropped. Whitespace is C's `isspace` (six ASCII characters), not Python's,
    which also splits at U+001F or a no-break space that the server keeps within a word (walk 52A-4)."""
    word: list[str] | None = None
    chars = iter(options)
    for char in chars:
        if char in _C_SPACES:
            if word is not None:
                yield "".join(word)
            word = None
            continue
        word = word if word is not None else []
        word.append(next(chars, "") if char == "\\" else char)
    if word is not None:
        yield "".join(word)


def _option_names(options: str) -> set[str]:
    """The names of the settings a connection's options set (`-c name=value`, `-cname=value`, `--name=value`,
    switches grouped as getopt reads them), as the server reads a name: any case, '-' for '_'
    (`--lock-timeout=5s`). Read as the server's words, not as text: a value with an escaped space,
    `-c application_name=a\\ --lock_timeout=1s`, sets no lock_timeout (walk 51B-1), and a name within another
    (`deadlock_timeout`) is not it (walk 50C-2)."""
    names: set[str] = set()
    words = _option_words(options)
    for word in words:
        if not word.startswith("-") or word == "-":
            continue
        for at, switch in enumerate(word[1:], start=1):
            if switch not in _VALUED_SWITCHES:
                continue
            value = word[at + 1 :] or next(words, "")
            if switch in "c-" and "=" in value:
                names.add(value.split("=", 1)[0].lower().replace("-", "_"))
            break
    return names


def _settings_taken(conn: psycopg.Connection[tuple[object, ...]], options: str) -> bool:
    """Whether `conn`'s server takes every setting `options` make, each tried in a transaction undone; False
    when it cannot tell (a word that is no `-c`/`--` setting, a setting only a connect may make)."""
    settings: list[tuple[str, str]] = []
    words = list(_option_words(options))
    while words:
        word = words.pop(0)
        value = (words.pop(0) if words else "") if word == "-c" else word[2:]
        if not word.startswith(("-c", "--")) or "=" not in value:
            return False
        name, _, setting = value.partition("=")
        settings.append((name.replace("-", "_"), setting))
    try:
        with conn.transaction(force_rollback=True):
            for name, setting in settings:
                conn.execute("SELECT set_config(%s, %s, true)", (name, setting))
    except psycopg.Error:
        return False
    return True


class PostgresStateStore(SqlStateStore):
    """State in PostgreSQL tables `capctl_meta`, `capctl_records` and `capctl_lock`."""

    no_tables = " (no capctl tables in that database)"
    snapshot_reads = ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",)

    queries = dataclasses.replace(
        _BASE_QUERIES,
        create=(
            # Replicas starting together queue here instead of racing to create the same tables.
            f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})",
            *_BASE_QUERIES.create,
            _LOCK_TABLE,
        ),
    )

    # The epoch lives in the lease row: a column added to lease tables made before issue 16; so does the holder's
    # lease duration, added to lease tables made before walk 25B-1.
    leadership = LeadershipQueries(
        missing="SELECT (to_regclass('capctl_inbox') IS NULL)::int + (to_regclass('capctl_history') IS NULL)::int"
        f" + ({_column_absent('epoch')})::int + ({_column_absent('lease_seconds')})::int",
        migrate=(
            f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})",
            _where_absent("to_regclass('capctl_lock') IS NULL", _LOCK_TABLE),
            _where_absent(
                _column_absent("epoch"),
                "ALTER TABLE capctl_lock ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0",
            ),
            _where_absent(_column_absent("lease_seconds"), _LEASE_SECONDS),
            _where_absent("to_regclass('capctl_inbox') IS NULL", INBOX_TABLE),
            _where_absent("to_regclass('capctl_history') IS NULL", HISTORY_TABLE),
        ),
        fence="SELECT epoch, holder, (SELECT schema_version FROM capctl_meta WHERE id = 1) FROM capctl_lock"
        " WHERE name = %s FOR SHARE",
        inbox_exists="SELECT (to_regclass('capctl_inbox') IS NOT NULL)::int",
    ).marked("%s")
    history_queries = HistoryQueries(exists="SELECT (to_regclass('capctl_history') IS NOT NULL)::int").marked("%s")
    room_queries = RoomQueries.build(
        mark="%s",
        exists="SELECT (to_regclass('capctl_room_activity') IS NOT NULL)::int",
        serialise=(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})",),
    )

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: int = 10,
        create: bool = True,
        lock_wait: float | None = None,
        lease_timing: tuple[float, float] | None = None,
    ) -> None:
        """With `create=False`, a database without the capctl tables raises `StateMissing` (and stays empty);
        with some of them but not all, `StateDamaged` either way. `lock_wait`: seconds of `lock_timeout`
        (unless the URL sets it) instead of SESSION_LIMITS'. `lease_timing`: the renew deadline and retry
        period (seconds) the lease's limits are derived from (`lease_limits`); None: LEASE_LIMITS."""
        _validate(url)
        self.url = redact_url(url)
        self._conninfo = Secret(url)  # a stray repr or log line shows a fingerprint, not the password
        self._passwords = url_secrets(url)
        self._connect_timeout = connect_timeout
        self._session_limits = dict(SESSION_LIMITS)
        if lock_wait is not None:
            self._session_limits["lock_timeout"] = _pg_seconds(lock_wait)
        self._lease_limits = LEASE_LIMITS if lease_timing is None else lease_limits(*lease_timing)
        self.writable = create
        self._mutex = threading.RLock()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._lease_mutex = threading.RLock()
        self._lease_conn: psycopg.Connection[tuple[object, ...]] | None = None  # opened by the first lock()
        self._closed = False
        try:
            # No capctl table at all is a new state (the database must exist and starts empty); a partial set
            # of them is damage.
            self.created = self._open_schema(create=create, where=self.url)
        except BaseException:
            self.close()
            raise

    def _open_schema(self, *, create: bool, where: str) -> bool:
        """As every store's, but a state in a schema of this user's search_path that it may not use is named.

        PostgreSQL skips such a schema when it resolves a name, so the tables look absent: `state list` said
        `No state` of a state with tasks, `plan` planned every task anew, and `apply` either failed with `no
        schema has been selected to create in` or, with a schema of its own first on the path ("$user"), made
        a second, empty state there and started every task again (walk 36B-5)."""
        with self._cursor(write=False) as cur:
            cur.execute(_HIDDEN_STATE, ())
            hidden = _hidden(cur.fetchall())
        if hidden:
            raise StateError(f"{where}: {hidden}")
        return super()._open_schema(create=create, where=where)

    def _scrub(self, exc: BaseException) -> str:
        """The first line of a driver error, with any spelling of the password shown as its fingerprint."""
        return scrub_text((str(exc).strip() or type(exc).__name__).splitlines()[0], self._passwords, limit=None)

    def _limit_hit(self, exc: psycopg.Error, conn: psycopg.Connection[tuple[object, ...]] | None = None) -> str:
        """Which server limit ended a call, and where it is set (the server's text names neither); or what a
        capctl table gone from under an open state means, which the server's `relation … does not exist`
        does not say (`conn`: where to look which are left); or ''."""
        text, session = str(exc), self._session_limits
        # USAGE revoked under an open state: its tables look dropped (restoring a backup would lose what was
        # written since), and a step that makes what is missing finds no schema to make it in (36B-5).
        # The table is read from the server's words in any language (`relation "capctl_lock"`, German
        # `Relation »capctl_lock«`): the English quote alone lost these hints under another lc_messages (50C-4).
        gone = re.search(r"\bcapctl_\w+", exc.diag.message_primary or "")
        looks_gone = isinstance(exc, psycopg.errors.UndefinedTable) and gone is not None
        if (looks_gone or isinstance(exc, psycopg.errors.InvalidSchemaName)) and (hidden := self._hidden(conn)):
            return f" ({hidden})"
        if looks_gone:
            if gone is not None and self._records_left(conn):
                # The lock's table alone dropped (a stale lock "cleared" by hand): restoring the whole state, as
                # said below, lost every record written since the backup (walk 21A-3).
                table = gone.group(0)
                if (who := _MADE_AGAIN.get(table)) is not None:
                    return (
                        f" ({table} alone is gone from this database; the task records are still there: a capctl"
                        f" that opens this state anew ({who}) makes it again. Restore no backup for it: that would"
                        " undo what was recorded since)"
                    )
                return (
                    f" ({table} alone is gone from this database; the task records are still there: restore that"
                    f" table alone from the newest backup (`pg_restore --table={table}`), not the whole state,"
                    " which would undo what was recorded since)"
                )
            # Nothing re-creates them under an open state (that would restart the serial): say what to do, and
            # what a restart does, as on-call's first move.
            return (
                " (capctl's tables are gone from this database (or the schema its search_path names): dropped,"
                " or the database made again; restore the newest backup (docs/state.md, Restoring a backup): a"
                " capctl started on it as it is finds no state, makes a new one and starts every declared task"
                " again)"
            )
        if isinstance(exc, psycopg.errors.InsufficientPrivilege) and text.startswith("permission denied for "):
            # The server names the object, not what capctl needs of it nor who can grant it (walk 35D-3).
            if text.startswith("permission denied for schema "):
                return (
                    " (capctl makes its tables in that schema when apply or run first opens an empty state, or"
                    " after an upgrade that adds one: grant this user CREATE on it, or run that apply as a user who"
                    " has it; then this user needs no more than SELECT, INSERT, UPDATE and DELETE: docs/state.md)"
                )
            return (
                " (this user needs SELECT, INSERT, UPDATE and DELETE on every capctl table (capctl_*): have the"
                " tables' owner grant them, or use that user: docs/state.md)"
            )
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            # The server's words say what failed, not why a state store would be read-only nor what to do (48D-2).
            return (
                " (this server takes no writes: a hot standby (a replica, or a primary a failover demoted), or"
                " default_transaction_read_only set for the database or this user; point the URL at the primary"
                " (several hosts: ?target_session_attrs=read-write picks the writable one), or have the setting"
                " turned off; nothing was written)"
            )
        if _NO_TLS in text:
            return (
                " (the server at this address offers no TLS, which the URL's sslmode requires: have TLS turned on"
                " there (ssl = on), or use the address that offers it)"
            )
        if _SET_UP_REFUSALS[0] in text:
            return f" ({_OPTIONS_REFUSED})"
        if any(refusal in text for refusal in _BAD_OPTIONS):
            return _BAD_OPTIONS_HINT
        if "too many clients" in text or "remaining connection slots are reserved" in text:
            return " (the server's max_connections is reached: each capctl process uses up to two connections)"
        if "too many connections for role" in text:
            return " (the role's CONNECTION LIMIT is reached: each capctl process uses up to two connections)"
        if isinstance(exc, psycopg.errors.QueryCanceled) and "statement timeout" in text:
            return (
                " (the statement ran past the session's statement_timeout:"
                f" {session['statement_timeout']} unless the URL's options set it;"
                f" {self._lease_limits['statement_timeout']} for the lease's statements)"
            )
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return (
                " (another session held a lock this statement needed past lock_timeout:"
                f" {session['lock_timeout']} unless the URL's options set it;"
                f" {self._lease_limits['lock_timeout']} for the lease's statements)"
            )
        return ""

    def _hidden(self, conn: psycopg.Connection[tuple[object, ...]] | None) -> str:
        """`_hidden` of what `conn` finds ('' when it cannot tell)."""
        if conn is None or conn.closed or conn.broken:
            return ""
        try:
            return _hidden(conn.execute(_HIDDEN_STATE).fetchall())
        except psycopg.Error:
            return ""

    def _records_left(self, conn: psycopg.Connection[tuple[object, ...]] | None) -> bool:
        """Whether the state's own tables (the records and their serial) are still there, as far as `conn`
        can tell (no: not known)."""
        if conn is None or conn.closed or conn.broken:
            return False
        try:
            return len(conn.execute(self.queries.tables).fetchall()) == len(TABLES)
        except psycopg.Error:
            return False

    def _limits(self, *, lease: bool = False, theirs: bool = True) -> dict[str, str | int]:
        """Connection options the URL does not set itself: timeouts, keepalives, application_name; the lease's
        connection has its lease limits whatever the URL sets (the server takes the last `-c` of a name).
        `theirs=False`: without the options the URL's options= or PGOPTIONS give."""
        given = psycopg.conninfo.conninfo_to_dict(self._conninfo.reveal())
        # libpq reads PGOPTIONS for a URL without options=, but not once options are given, as they always are
        # here: its search_path was lost and a state there looked absent (a second, empty state; walk 49C-2).
        options = str(given["options"] if "options" in given else os.environ.get("PGOPTIONS", ""))
        options = options if theirs else ""
        # The names the options set, as the server reads them (any case): a name within another
        # (`deadlock_timeout`) is not `lock_timeout`, which went unset: a write waited out the statement_timeout
        # on a lock, not capctl's lock wait (walk 50C-2).
        theirs_set = _option_names(options)
        added = " ".join(f"-c {k}={v}" for k, v in self._session_limits.items() if k not in theirs_set)
        if lease:
            added = " ".join((added, *(f"-c {name}={value}" for name, value in self._lease_limits.items())))
        limits: dict[str, str | int] = {k: v for k, v in CONNECTION_LIMITS.items() if k not in given}
        limits["options"] = f"{options} {added} -c {_OPTIONS_MARK}=on".strip()
        limits["client_encoding"] = "UTF8"  # the state's text is UTF-8, whatever the server's or the URL's default
        # The lease's session is told apart in pg_stat_activity: `capctl lease`, `replica-a lease`.
        name = str(given.get("application_name") or "capctl")
        limits["application_name"] = f"{name} lease" if lease else name
        return limits

    def _connection(self, *, lease: bool = False) -> psycopg.Connection[tuple[object, ...]]:
        """The store's connection (or the lease's), connected afresh if it is not open."""
        if self._closed:
            raise StateError(f"{self.url}: the store is closed")
        conn = self._lease_conn if lease else self._conn
        if conn is None or conn.closed or conn.broken:
            try:
                conninfo = psycopg.conninfo.make_conninfo(self._conninfo.reveal(), **self._limits(lease=lease))
                conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=self._connect_timeout)
            except psycopg.Error as exc:
                cannot = f"cannot connect to the PostgreSQL state store {self.url}: {self._scrub(exc)}"
                if _set_up_refused(exc):  # never waited for (`--state-wait`)
                    raise StateError(f"{cannot}{self._limit_hit(exc)}") from None
                if self._options_refused(exc, lease=lease):  # the server's words: not in English
                    raise StateError(f"{cannot}{_BAD_OPTIONS_HINT}") from None
                raise StateUnreachable(f"{cannot}{self._limit_hit(exc)}", where=self.url) from None
            if (encoding := conn.info.parameter_status("server_encoding")) not in _SERVER_ENCODINGS:
                conn.close()
                raise StateError(
                    f"{self.url}: the database's encoding is {encoding!r}, which cannot hold every room id (教室-101)"
                    " a state records: use a UTF8 database (CREATE DATABASE capctl ENCODING 'UTF8' TEMPLATE"
                    " template0)"
                )
            if not self._options_applied(conn):
                conn.close()
                raise StateError(f"{self.url}: {_OPTIONS_DROPPED}")
            if lease:
                self._lease_conn = conn
            else:
                self._conn = conn
        return conn

    def _options_refused(self, exc: psycopg.Error, *, lease: bool) -> bool:
        """Whether the server refuses the options the URL or PGOPTIONS give, however it words that: in the
        language of its lc_messages, which `_BAD_OPTIONS` does not read, and with no SQLSTATE at connect. A
        connection without them is let in while one with them, tried again, is refused in the same words:
        `capctl run` waited forever for what only a corrected URL ends (walk 50C-1). A server out of reach fails
        both (a second try costs nothing to a closed port; a connect timeout is not tried again); one that just
        came up, or is full, answers the second try otherwise."""
        full, own = self._limits(lease=lease), self._limits(lease=lease, theirs=False)
        if isinstance(exc, psycopg.errors.ConnectionTimeout) or full["options"] == own["options"]:
            return False

        def refusal(limits: dict[str, str | int], *, check: str | None = None) -> str | None:
            """The server's refusal of a connection with `limits`, None when it lets it in; `check`: options
            whose settings it is then asked to take ("taken": it takes them all)."""
            try:
                conninfo = psycopg.conninfo.make_conninfo(self._conninfo.reveal(), **limits)
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=self._connect_timeout) as conn:
                    return "taken" if check is not None and _settings_taken(conn, check) else None
            except psycopg.Error as again:
                return str(again)

        # Let in without them, the server is asked whether it takes the settings they make: a full server (too
        # many clients, a role's connection limit) refused both tries in the same words when a slot freed just
        # for the probe, and `capctl run` exited blaming options it takes (walk 51B-3).
        return refusal(own, check=str(full["options"])) is None and refusal(full) == str(exc)

    def _options_applied(self, conn: psycopg.Connection[tuple[object, ...]]) -> bool:
        """Whether the session has the options sent when connecting (a pooler may have dropped them)."""
        try:
            row = conn.execute(f"SELECT current_setting('{_OPTIONS_MARK}', true)").fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StateUnreachable(
                f"cannot connect to the PostgreSQL state store {self.url}: {self._scrub(exc)}", where=self.url
            ) from None
        return row is not None and row[0] == "on"

    @contextmanager
    def _cursor(self, *, write: bool, lease: bool = False) -> Iterator[Cursor]:
        # `write` needs nothing extra here: the serial row lock (FOR UPDATE) serialises writers.
        with self._lease_mutex if lease else self._mutex:
            conn = self._connection(lease=lease)
            try:
                with ExitStack() as stack:  # the transaction ends (commits) inside this `try`
                    try:
                        stack.enter_context(conn.transaction())  # BEGIN: the first word an idle connection sends
                    except psycopg.OperationalError:
                        # The lease's idle connection was cut (a server restart, pg_terminate_backend, a proxy's
                        # idle limit): nothing ran yet, so it is tried at once on a new connection instead of
                        # costing a retry period of the renew deadline. Not a lock or statement timeout: those
                        # come after BEGIN, and the store's own calls keep one try each.
                        if not (lease and conn.broken):
                            raise
                        conn = self._connection(lease=lease)
                        stack.enter_context(conn.transaction())
                    with conn.cursor() as cur:
                        yield cur
            except psycopg.Error as exc:
                # A broken connection is replaced on the next call; this one reports the failure. So is one
                # to a server that refuses writes (a primary demoted by a failover, a database made read-only):
                # the session keeps the read-only default it started with, and a new connection may reach the
                # new primary (DNS, a proxy, `target_session_attrs=read-write`) or the restored setting.
                if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
                    conn.close()
                raise StateError(f"{self.url}: {self._scrub(exc)}{self._limit_hit(exc, conn)}") from None

    def _migrate_leadership(self) -> None:
        """As every store's, but a privilege the upgrade needs and the user lacks says what to do: a user that
        owns none of the tables (a DBA made them and granted it SELECT/INSERT/UPDATE/DELETE) read only `must be
        owner of table capctl_lock`, from every apply and every replica's /readyz, after an upgrade (walk 27a)."""
        try:
            super()._migrate_leadership()
        except StateError as exc:
            if not isinstance(exc.__context__, psycopg.errors.InsufficientPrivilege):
                raise
            raise StateError(
                f"{exc}. This capctl adds to a state made by an older one what it lacks ({self._lacking()}), once:"
                " run it (`capctl apply`) as the user that owns the capctl tables, with CREATE on the schema where"
                " a table is missing; then this user needs no more than SELECT/INSERT/UPDATE/DELETE (docs/state.md)"
            ) from None

    def _lacking(self) -> str:
        """What the leadership step would add, by name (best effort: the error above is the news)."""
        named = [f"table {t}" for t in ("capctl_lock", "capctl_inbox", "capctl_history")]
        named += [f"column capctl_lock.{c}" for c in ("epoch", "lease_seconds")]
        checks = [f"to_regclass('{t}') IS NULL" for t in ("capctl_lock", "capctl_inbox", "capctl_history")]
        checks += [_column_absent(c) for c in ("epoch", "lease_seconds")]
        try:
            with self._cursor(write=False) as cur:
                cur.execute("SELECT " + ", ".join(checks), ())
                row = cur.fetchall()[0]
        except StateError:
            row = ()
        absent = [name for name, missing in zip(named, row, strict=False) if missing]
        return ", ".join(absent) or "a table or column"

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> Lease:
        """Take the lease if it is free or expired; it lapses `lease_seconds` after the last renew().

        Each taking raises the lease's epoch by one, in the same statement (`Lease.epoch`), and reads how long
        the row says its previous holder has been silent (`Lease.silent_for`, on the server's clock): since its
        release, or since its last renew (a lapsed lease's expiry less its holder's lease duration, as the row
        records it; a row written by a capctl before that column: less a lease as long as this one)."""
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds}")
        self._migrate_leadership()
        identity, token = holder_identity(holder), secrets.token_hex(16)
        for _ in range(3):  # the current holder may release between our two statements: look again
            with self._cursor(write=True, lease=True) as cur:
                cur.execute(
                    "WITH prev AS (SELECT EXTRACT(EPOCH FROM now() - CASE WHEN token = '' THEN expires_at"
                    " ELSE expires_at - COALESCE(lease_seconds, %s) * interval '1 second' END)::float8 AS silent"
                    " FROM capctl_lock WHERE name = %s)"
                    " INSERT INTO capctl_lock AS l (name, holder, token, since, expires_at, epoch, lease_seconds)"
                    " VALUES (%s, %s, %s, now(), now() + %s * interval '1 second', 1, %s)"
                    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token,"
                    " since = excluded.since, expires_at = excluded.expires_at, epoch = l.epoch + 1,"
                    " lease_seconds = excluded.lease_seconds"
                    " WHERE l.expires_at <= now() RETURNING since, epoch, (SELECT silent FROM prev)",
                    (lease_seconds, LOCK_NAME, LOCK_NAME, identity, token, lease_seconds, lease_seconds),
                )
                taken = cur.fetchall()
            if taken:
                since, epoch, silent = taken[0]
                lease = Lease(self, token, f"{identity} since {_iso(since)}", lease_seconds, epoch)
                lease.silent_for = None if silent is None else max(float(silent), 0.0)
                return lease
            if current := self._current_holder():
                raise LockHeld(current[0], expires_in=current[1])
        raise StateError(f"{self.url}: the lease changed hands repeatedly; try again")

    def _current_holder(self) -> tuple[str, float] | None:
        """Who holds the lease (as `LockHeld` shows it) and the seconds until it lapses, by the server."""
        with self._cursor(write=False, lease=True) as cur:
            cur.execute(
                "SELECT holder, since, expires_at, GREATEST(EXTRACT(EPOCH FROM expires_at - now()), 0)::float8"
                " FROM capctl_lock WHERE name = %s",
                (LOCK_NAME,),
            )
            rows = cur.fetchall()
        if not rows:
            return None
        holder, since, expires_at, left = rows[0]
        return f"{holder} since {_iso(since)} (lease expires {_iso(expires_at)})", float(left)

    def close(self) -> None:
        with self._mutex, self._lease_mutex:
            self._closed = True
            for conn in (self._conn, self._lease_conn):
                if conn is not None:
                    conn.close()
            self._conn = self._lease_conn = None


def _iso(moment: datetime) -> str:
    # psycopg returns timestamptz as an aware datetime: its timestamp() is exact.
    return iso_utc(moment.timestamp())


class Lease(LockContext):
    """A held lease row; `renew()` extends it from the server's now(), `release()` lets it lapse at once.

    Released, the row stays (expired, no token): its epoch must keep rising across holders."""

    def __init__(self, store: PostgresStateStore, token: str, holder: str, lease_seconds: float, epoch: int) -> None:
        self._store = store
        self._token: str | None = token
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.epoch = epoch
        self.silent_for: float | None = None
        self._quiet = False  # `keep_silence`: the release leaves the previous holder's last sign of life
        self._unheard_for: float | None = None  # `unheard_since`: the release's sign of life, seconds before now

    def keep_silence(self) -> None:
        """A command answers no callbacks: its release records the previous holder's last sign of life (this
        taking less `silent_for`), not its own (walk 25B-3: an apply while the daemon was stopped hid the
        silence before it)."""
        self._quiet = True

    def unheard_since(self, seconds_ago: float) -> None:
        self._unheard_for = max(seconds_ago, 0.0)

    def renew(self) -> None:
        """Extend the lease; raises LockHeld if another holder took it after it lapsed."""
        if self._token is None:
            raise StateError("the state lock was already released")
        with self._store._cursor(write=True, lease=True) as cur:
            cur.execute(
                "UPDATE capctl_lock SET expires_at = now() + %s * interval '1 second' WHERE name = %s AND token = %s",
                (self.lease_seconds, LOCK_NAME, self._token),
            )
            kept = cur.rowcount > 0
        if not kept:
            self._token = None
            try:
                current = self._store._current_holder()
            except StateError as exc:
                # It is not ours whoever holds it: said as such, or the next renew's "already released" was
                # taken for the store out of reach (a command's renewer then never warned, walk 21A-2).
                raise LockHeld(f"another holder (who, could not be read: {exc})") from None
            if current is None:
                raise LockHeld("no one now: our lease lapsed and was taken over")
            raise LockHeld(current[0], expires_in=current[1])

    def release(self) -> None:
        if self._token is not None:
            with self._store._cursor(write=True, lease=True) as cur:
                if self._quiet:
                    last = "since - %s * interval '1 second'"
                    args: tuple[object, ...] = (self.silent_for or 0.0, LOCK_NAME, self._token)
                elif self._unheard_for is not None:
                    last, args = "now() - %s * interval '1 second'", (self._unheard_for, LOCK_NAME, self._token)
                else:
                    last, args = "now()", (LOCK_NAME, self._token)
                # A released row is read by its expiry alone: its duration goes, or a capctl before that column
                # (a rollback, a rolling update) taking it would leave it standing as its own (walk 26c).
                cur.execute(
                    f"UPDATE capctl_lock SET token = '', expires_at = {last}, lease_seconds = NULL"
                    " WHERE name = %s AND token = %s",
                    args,
                )
            self._token = None
