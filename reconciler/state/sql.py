"""What the SQLite and PostgreSQL stores share: the serial bookkeeping, compare-and-set and schema check.

Both stores keep the same two tables (a one-row `capctl_meta` with `schema_version` and `serial`, and
`capctl_records` with one JSON row per task key) and differ only in SQL dialect, connection handling and
locking. Every write runs as: lock the serial row, compare it with `expected_serial`, change records, move
the serial, commit; a failure anywhere rolls the whole transaction back, so a crash loses nothing already
committed and never leaves a half-applied change. Subclasses provide the dialect (`Queries`) and a
`_cursor()` context manager that runs one transaction and turns driver errors into `StateError`.
Issue 16 adds, as a migration step of its own (`LeadershipQueries`): the lock's epoch, checked inside a
leader's writes (`fence=`), and the callback inbox.
"""

from __future__ import annotations

import json
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

from reconciler import failpoints, logs
from reconciler.clock import is_time
from reconciler.jsonlimits import is_utf8
from reconciler.model import RoomActivity, TaskRecord
from reconciler.secrets import (
    KEY_BYTES,
    KEYED_HASH_PREFIX,
    drop_unkeyed_fingerprints,
    new_fingerprint_key,
    upgrade_hash,
)

from . import codec
from .base import (
    Fenced,
    HistorySpan,
    InboxEntry,
    LockTakenOver,
    SerialMismatch,
    Snapshot,
    StateDamaged,
    StateError,
    StateMissing,
    StateTooNew,
    began_of,
    run_of,
)

__all__ = [
    "HISTORY_TABLE",
    "INBOX_KEEP_SECONDS",
    "INBOX_TABLE",
    "LOCK_NAME",
    "TABLES",
    "Cursor",
    "HistoryQueries",
    "LeadershipQueries",
    "LockContext",
    "Queries",
    "RoomQueries",
    "SqlStateStore",
    "StateCopy",
    "holder_identity",
    "iso_utc",
]

log = logs.lazy_logger("capctl.state")  # structlog imported by the first line written (a read-only plan none)
# A record's body with a keyed spec hash, as `codec.encode` writes it (compact JSON), for a LIKE pattern.
KEYED_BODY = f'%"spec_hash":"{KEYED_HASH_PREFIX}%'

# 2: room activity keyed by vendor account (`RoomQueries`); a capctl that knows only 1 refuses such a state.
SCHEMA_VERSION = 2
# The tables a state has from its first commit on: some without the others is damage, never a new state.
TABLES = ("capctl_meta", "capctl_records")
INBOX_KEEP_SECONDS = 3600.0  # how long the inbox remembers a callback (vendors retry within minutes)
LOCK_NAME = "apply"  # the one lock (row) of a state: `apply`, `state rm` and the daemon's leadership share it
# Keys an inbox payload may not have: the router stores what it parsed, never what signs a callback.
_SECRET_WORDS = ("signature", "secret", "password", "token")


class Cursor(Protocol):
    """The DB-API cursor surface both drivers (sqlite3, psycopg) offer."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, sql: Any, params: Any, /) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Queries:
    """The statements of one SQL dialect; `build` writes them from the few points where dialects differ."""

    create: tuple[str, ...]
    tables: str  # one row per table of `TABLES` that exists (its name)
    init_meta: str
    read_meta: str
    serial: str
    serial_for_update: str
    bump: str
    load: str
    keys: str
    record: str
    upsert: str
    delete: str
    has_key: str  # one row, one column: 1 when the fingerprint key table exists (a store from before it may lack it)
    create_key: str
    read_key: str
    init_key: str
    keyed_record: str  # a row when some record holds a keyed hash (given `KEYED_BODY`)
    bare_record: str  # a row when some record holds a bare content hash (likewise)
    set_serial: str
    version_for_update: str  # the schema version, its row locked: one upgrade at a time
    set_version: str

    @classmethod
    def build(cls, *, mark: str, for_update: str, tables: str, has_key: str) -> Queries:
        """`mark` is the parameter placeholder, `for_update` the clause that row-locks the serial,
        `tables` the catalogue query that names which of `TABLES` exist, `has_key` the one that tells whether
        the fingerprint key table exists."""
        meta = "capctl_meta"
        # The key of fingerprints and task hashes (`secrets.py`): a table of its own, so a store made before it
        # needs no column added (a writer adds the table); the key is made by the first writer that needs it.
        create_key = (
            "CREATE TABLE IF NOT EXISTS capctl_fingerprint_key (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " key_hex TEXT NOT NULL)"
        )
        return cls(
            tables=tables,
            has_key=has_key,
            create=(
                f"CREATE TABLE IF NOT EXISTS {meta} (id INTEGER PRIMARY KEY CHECK (id = 1),"
                " schema_version INTEGER NOT NULL, serial BIGINT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS capctl_records (key TEXT PRIMARY KEY, body TEXT NOT NULL)",
                create_key,
            ),
            create_key=create_key,
            read_key="SELECT key_hex FROM capctl_fingerprint_key WHERE id = 1",
            keyed_record=f"SELECT 1 FROM capctl_records WHERE body LIKE {mark} LIMIT 1",
            bare_record=f"SELECT 1 FROM capctl_records WHERE body NOT LIKE {mark} LIMIT 1",
            init_key=f"INSERT INTO capctl_fingerprint_key (id, key_hex) VALUES (1, {mark}) ON CONFLICT (id) DO NOTHING",
            init_meta=f"INSERT INTO {meta} (id, schema_version, serial) VALUES (1, {mark}, 0)"
            " ON CONFLICT (id) DO NOTHING",
            read_meta=f"SELECT schema_version, serial FROM {meta} WHERE id = 1",
            serial=f"SELECT serial FROM {meta} WHERE id = 1",
            serial_for_update=f"SELECT serial FROM {meta} WHERE id = 1{for_update}",
            bump=f"UPDATE {meta} SET serial = serial + 1 WHERE id = 1 RETURNING serial",
            # One query returns the serial and every record from the same snapshot of the database.
            # In key order: a plan lists its deletes (and groups their rooms) in the records' order, which was
            # the table's (insertion on SQLite, where an update leaves a row on PostgreSQL): unsorted, churning.
            load=f"SELECT m.schema_version, m.serial, r.key, r.body FROM {meta} m LEFT JOIN capctl_records r ON 1 = 1"
            " WHERE m.id = 1"
            " ORDER BY r.key",
            keys="SELECT key FROM capctl_records ORDER BY key",
            record=f"SELECT key, body FROM capctl_records WHERE key = {mark}",
            upsert=f"INSERT INTO capctl_records (key, body) VALUES ({mark}, {mark})"
            " ON CONFLICT (key) DO UPDATE SET body = excluded.body",
            delete=f"DELETE FROM capctl_records WHERE key = {mark}",
            set_serial=f"UPDATE {meta} SET serial = {mark} WHERE id = 1",
            version_for_update=f"SELECT schema_version FROM {meta} WHERE id = 1{for_update}",
            set_version=f"UPDATE {meta} SET schema_version = {mark} WHERE id = 1",
        )


# Verified vendor callbacks, kept until the leader consumes them and then until purged (issue 16).
INBOX_TABLE = (
    "CREATE TABLE IF NOT EXISTS capctl_inbox (vendor TEXT NOT NULL, dedupe_key TEXT NOT NULL,"
    " payload TEXT NOT NULL, digest TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL,"
    " consumed_at DOUBLE PRECISION, PRIMARY KEY (vendor, dedupe_key))"
)


# The status page's timeline history (`HistorySpan`): task runs and room activity of the last 24 h, so that a
# restarted daemon, or a new leader, draws what the one before it saw. Added with the leadership step's tables.
HISTORY_TABLE = (
    "CREATE TABLE IF NOT EXISTS capctl_history (kind TEXT NOT NULL, subject TEXT NOT NULL, room TEXT NOT NULL,"
    " start_at DOUBLE PRECISION NOT NULL, end_at DOUBLE PRECISION, reason TEXT,"
    " PRIMARY KEY (kind, subject, room, start_at))"
)


@dataclass(frozen=True, slots=True)
class HistoryQueries:
    """The history table's statements (same SQL in both dialects but for `exists` and the placeholder)."""

    exists: str  # one row, one column: 1 when the table exists (a read-only open of an older state lacks it)
    # A span as it is now; one that ended keeps its end (the first one recorded), as the page drew it. But for
    # the leader's `selector` spans, its memory is the truth: a job back in the specs with the clock stepped
    # back before its removal's zero-length span reopens that span (walk 50B-2).
    put: str = (
        "INSERT INTO capctl_history (kind, subject, room, start_at, end_at, reason)"
        " VALUES ({m}, {m}, {m}, {m}, {m}, {m}) ON CONFLICT (kind, subject, room, start_at)"
        " DO UPDATE SET end_at = excluded.end_at, reason = excluded.reason"
        " WHERE capctl_history.end_at IS NULL OR capctl_history.kind = 'selector'"
    )
    # When a task was first seen, kept only while its record is (one statement: a record deleted meanwhile,
    # by another replica or a forgotten tombstone, leaves no row a key made again would take as its own).
    seen: str = (
        "INSERT INTO capctl_history (kind, subject, room, start_at) SELECT 'seen', {m}, '', {m}"
        " WHERE EXISTS (SELECT 1 FROM capctl_records WHERE key = {m})"
        " ON CONFLICT (kind, subject, room, start_at) DO NOTHING"
    )
    forget: str = "DELETE FROM capctl_history WHERE kind IN ('run', 'seen', 'began') AND subject = {m}"
    # `seen` and `began` rows whose record is gone: an older capctl's delete left them (its forget took `run`
    # rows only, or not `began` ones).
    orphans: str = (
        "DELETE FROM capctl_history WHERE kind IN ('seen', 'began')"
        " AND NOT EXISTS (SELECT 1 FROM capctl_records WHERE capctl_records.key = capctl_history.subject)"
    )
    read: str = (
        "SELECT kind, subject, room, start_at, end_at, reason FROM capctl_history"
        " ORDER BY kind, subject, room, start_at"
    )
    # Bounded in age (ended before the window) and in size (the newest {m} spans of each task or room). A run
    # left open, whose record never showed its end (replaced, re-issued), ended where the next one began. A
    # `began` span ends as it starts: it goes with its run (`pruned_began`), not by its own age (walk 44B-1: a
    # run longer than the window kept its row without it, and read back as a re-issue after a restart).
    prune_old: str = (
        "DELETE FROM capctl_history WHERE (end_at < {m} AND kind <> 'began') OR (end_at IS NULL AND kind = 'run'"
        " AND EXISTS (SELECT 1"
        " FROM capctl_history later WHERE later.kind = 'run' AND later.subject = capctl_history.subject"
        " AND later.start_at > capctl_history.start_at AND later.start_at < {m}))"
    )
    prune_many: str = (
        "DELETE FROM capctl_history WHERE (kind, subject, room, start_at) IN (SELECT kind, subject, room, start_at"
        " FROM (SELECT kind, subject, room, start_at, row_number() OVER (PARTITION BY kind, subject, room"
        " ORDER BY start_at DESC) AS n FROM capctl_history) ranked WHERE n > {m})"
    )
    pruned_began: str = (
        "DELETE FROM capctl_history WHERE kind = 'began' AND NOT EXISTS (SELECT 1 FROM capctl_history run"
        " WHERE run.kind = 'run' AND run.subject = capctl_history.subject AND run.room = ''"
        " AND run.start_at = capctl_history.start_at)"
    )

    def marked(self, mark: str) -> HistoryQueries:
        """These statements with `mark` as the parameter placeholder."""
        return HistoryQueries(
            exists=self.exists,
            put=self.put.format(m=mark),
            seen=self.seen.format(m=mark),
            forget=self.forget.format(m=mark),
            orphans=self.orphans,
            read=self.read,
            prune_old=self.prune_old.format(m=mark),
            prune_many=self.prune_many.format(m=mark),
            pruned_began=self.pruned_began,
        )


def _span_row(span: HistorySpan) -> tuple[Any, ...]:
    return (span.kind, span.subject, span.room, span.start, span.end, span.reason)


@dataclass(frozen=True, slots=True)
class LeadershipQueries:
    """Issue 16's statements: the epoch kept with the lock, and the callback inbox (same SQL in both dialects
    except where noted). A migration step of its own: a state from before it gets the epoch column (or
    table) and the inbox table the first time a lock or the inbox is used, whatever else migrates."""

    missing: str  # one row, one column: non-zero when a table or column of this step is absent
    migrate: tuple[str, ...]
    # The current epoch, its holder and the schema version; PostgreSQL row-locks the lock row, so a takeover waits
    # until the write commits.
    fence: str
    inbox_exists: str  # one row, one column: 1 when the inbox table exists
    inbox_put: str = (
        "INSERT INTO capctl_inbox (vendor, dedupe_key, payload, digest, received_at) VALUES ({m}, {m}, {m}, {m}, {m})"
        " ON CONFLICT (vendor, dedupe_key) DO NOTHING"
    )
    # The oldest unconsumed entries, marked consumed in the same statement (consumed rows stay until purged,
    # so a vendor's retry of a callback already handled is still recognised as a duplicate).
    inbox_claim: str = (
        "UPDATE capctl_inbox SET consumed_at = {m} WHERE (vendor, dedupe_key) IN (SELECT vendor, dedupe_key"
        " FROM capctl_inbox WHERE consumed_at IS NULL ORDER BY received_at LIMIT {m})"
        " RETURNING vendor, dedupe_key, payload, digest, received_at"
    )
    # Run by each claim: consumed entries once they are too old to meet a retry, and unconsumed ones no
    # leader took in that time (a new leader observes every task anyway), so the inbox stays bounded.
    inbox_purge: str = "DELETE FROM capctl_inbox WHERE COALESCE(consumed_at, received_at) < {m}"
    # A row when a claim would take or purge anything: most claims (every retry period) find neither, and
    # this read spares them the write transaction.
    inbox_due: str = "SELECT 1 FROM capctl_inbox WHERE consumed_at IS NULL OR consumed_at < {m} LIMIT 1"
    # Every entry as stored, and one put back as it was (`capctl state copy`).
    inbox_read: str = (
        "SELECT vendor, dedupe_key, payload, digest, received_at, consumed_at FROM capctl_inbox ORDER BY received_at"
    )
    inbox_copy: str = (
        "INSERT INTO capctl_inbox (vendor, dedupe_key, payload, digest, received_at, consumed_at)"
        " VALUES ({m}, {m}, {m}, {m}, {m}, {m})"
    )

    def marked(self, mark: str) -> LeadershipQueries:
        """These statements with `mark` as the parameter placeholder."""
        return LeadershipQueries(
            missing=self.missing,
            migrate=self.migrate,
            fence=self.fence,
            inbox_exists=self.inbox_exists,
            inbox_put=self.inbox_put.format(m=mark),
            inbox_claim=self.inbox_claim.format(m=mark),
            inbox_purge=self.inbox_purge.format(m=mark),
            inbox_due=self.inbox_due.format(m=mark),
            inbox_read=self.inbox_read,
            inbox_copy=self.inbox_copy.format(m=mark),
        )


def _inbox_json(entry: InboxEntry) -> str:
    """The payload as plain JSON; a key that names a signature or secret is refused, nothing stored."""

    def check(value: object, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if any(word in str(key).lower() for word in _SECRET_WORDS):
                    raise StateError(
                        f"inbox entry {entry.dedupe_key!r}: {where}{key} looks like a signature or secret;"
                        " store what the callback says, never what signs it"
                    )
                check(item, f"{where}{key}.")
        elif isinstance(value, list):
            for item in value:
                check(item, where)

    check(entry.payload, "")
    try:
        return json.dumps(entry.payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StateError(f"inbox entry {entry.dedupe_key!r} cannot be stored as JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class RoomQueries:
    """Room activity (`reconciler/rooms.py`): one row per (vendor account, room), in a table of its own, made
    with a new state. A report older than the row it would replace is dropped (replicas may report out of
    order). Activity does not move the serial: it is knowledge about rooms, not a change of any task record.

    Schema 1 kept the rows per (Provider document name, room): a rename forgot them. Schema 2 keys them by the
    vendor account (`ProviderConfig.account`) in the same table and column (still named `provider`), so that
    `SqlStateStore.upgrade_rooms`, given the accounts of the Provider names (only the specs know them), only
    rewrites rows: one transaction, and no privilege a writer lacks (a table replaced needs its owner)."""

    exists: str  # one row, one column: 1 when the table exists
    serialise: tuple[str, ...]  # run first by a transaction that creates the table: writers creating it queue
    create: str
    upsert: str
    read: str
    forget: str
    # Rows by Provider name (`_by_name`: no `:`, the parameter NAMES): schema 1's, or an older capctl's since.
    any_name: str
    forget_names: str

    @classmethod
    def build(cls, *, mark: str, exists: str, serialise: tuple[str, ...] = ()) -> RoomQueries:
        """`serialise`: statements run first, so that writers creating the table together queue."""
        table = "capctl_room_activity"
        return cls(
            exists=exists,
            serialise=serialise,
            create=f"CREATE TABLE IF NOT EXISTS {table} (provider TEXT NOT NULL, room TEXT NOT NULL,"
            " active INTEGER NOT NULL, last_seen DOUBLE PRECISION NOT NULL, source TEXT NOT NULL,"
            " PRIMARY KEY (provider, room))",
            upsert=f"INSERT INTO {table} (provider, room, active, last_seen, source)"
            f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark}) ON CONFLICT (provider, room) DO UPDATE SET"
            " active = excluded.active, last_seen = excluded.last_seen, source = excluded.source"
            f" WHERE excluded.last_seen >= {table}.last_seen",
            read=f"SELECT provider, room, active, last_seen, source FROM {table} ORDER BY provider, room",
            forget=f"DELETE FROM {table} WHERE active = 0 AND last_seen < {mark}",
            any_name=f"SELECT 1 FROM {table} WHERE provider NOT LIKE {mark} LIMIT 1",
            forget_names=f"DELETE FROM {table} WHERE provider NOT LIKE {mark}",
        )


NAMES = "%:%"  # the LIKE pattern of keys by account; those NOT LIKE it are by Provider name (`_by_name`)


def _by_name(key: str) -> bool:
    """A row keyed by a Provider document name, as schema 1 kept them (or an older capctl still running wrote
    one since): a name cannot hold a `:`, a vendor account (`volcengine:APPID`) always does."""
    return ":" not in key


def _by_account(rows: Iterable[Sequence[Any]], accounts: Mapping[str, str]) -> list[tuple[Any, ...]]:
    """Rows (account or Provider name, room, ...) as rows by account: a name through `accounts`, left out when it
    does not know it; two rows of one account and room keep the newer report."""
    newest: dict[tuple[str, str], tuple[Any, ...]] = {}
    for key, room, active, seen, source in rows:
        if (account := accounts.get(key) if _by_name(key) else key) is None:
            continue
        kept = newest.get((account, room))
        if kept is None or seen > kept[3]:
            newest[(account, room)] = (account, room, active, seen, source)
    return [newest[k] for k in sorted(newest)]


@dataclass(frozen=True, slots=True)
class StateCopy:
    """Everything a state holds but its lock, as stored (`capctl state copy`): the serial, every record row
    (tombstones, backoffs and dormancy are fields of them), the fingerprint key (None for a state from
    before keys), room activity, the callback inbox and the status page's history. The lock and its epoch
    stay with each store: the destination's epoch keeps rising, so a leader of it from before the copy is
    fenced."""

    serial: int
    records: list[tuple[str, str]]  # (key, body): the stored JSON, checked by decoding, copied unchanged
    key_hex: str | None
    rooms: list[tuple[Any, ...]]
    inbox: list[tuple[Any, ...]]
    # The source's schema version, which the copy keeps: a backup from before an upgrade, copied back, is a
    # state the older capctl reads again (rolling back), and its rows by Provider name are keyed anew later.
    schema: int = SCHEMA_VERSION
    history: list[HistorySpan] = field(default_factory=list)

    def __repr__(self) -> str:  # may hold 100,000 rows: never print them
        return f"StateCopy(serial={self.serial}, records={len(self.records)}, rooms={len(self.rooms)})"


_COPY_CHUNK = 10_000  # records per progress report of a copy


def _create_absent(cur: Cursor, exists: str, statements: Iterable[str]) -> None:
    """Run `statements` (which create a table) only when the query `exists` says the table is absent: PostgreSQL
    checks the schema's CREATE privilege even for `CREATE TABLE IF NOT EXISTS` of a table that is there, and
    after the first run the database user needs none (docs/state.md)."""
    if not _rows(cur, exists)[0][0]:
        for statement in statements:
            cur.execute(statement, ())


def _rows(cur: Cursor, sql: str, params: Sequence[object] = ()) -> list[Any]:
    cur.execute(sql, params)
    return cur.fetchall()


def _keyed(records: dict[str, TaskRecord], key: bytes) -> dict[str, TaskRecord]:
    """The records that hold bare content hashes (written by a capctl from before keyed hashes), as this
    version writes them: hashes keyed (`upgrade_hash`), unkeyed fingerprints dropped from their requests."""
    return {
        k: r.evolve(
            spec_hash=upgrade_hash(key, r.spec_hash),
            fixed_hash=upgrade_hash(key, r.fixed_hash),
            request=drop_unkeyed_fingerprints(r.request),
        )
        for k, r in records.items()
        if not r.spec_hash.startswith(KEYED_HASH_PREFIX)
    }


class SqlStateStore(ABC):
    """The StateStore operations, written once over a dialect and a transaction-scoped cursor."""

    url: str
    queries: ClassVar[Queries]
    leadership: ClassVar[LeadershipQueries]
    _leadership_ready = False  # this store object ran (or found done) the leadership migration step
    _rooms_ready = False  # this store object found the room activity table, or made it
    room_queries: ClassVar[RoomQueries]
    history_queries: ClassVar[HistoryQueries]
    created = False  # this open made a new state (`capctl state init` says so)
    no_tables: ClassVar[str] = ""  # how `StateMissing` says there were no tables, when a store can be without
    writable: bool  # False for read-only opens: nothing is written, not even a fingerprint key
    snapshot_reads: ClassVar[tuple[str, ...]] = ()  # begins a transaction whose reads see one snapshot
    _fingerprint_key: bytes | None = None
    _runs_written: dict[str, HistorySpan] | None = None  # `_written_runs`
    # The epoch of the lock a command holds (`capctl apply`, `state rm` …: cli/common.py `locked`): every
    # write of this store object is then fenced by it, as a leader's are by `fence=` (walk 22C-1).
    command_epoch: int | None = None

    @abstractmethod
    def _cursor(self, *, write: bool) -> AbstractContextManager[Cursor]:
        """One transaction: commit on success, roll back on any exception, driver errors → StateError.
        With `write`, concurrent writers wait until it ends (SQLite BEGIN IMMEDIATE / a row lock)."""

    @abstractmethod
    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> LockContext:
        """Take the exclusive lock at once, raising its epoch, or raise `LockHeld` naming the holder."""

    @abstractmethod
    def close(self) -> None: ...

    def _open_schema(self, *, create: bool, where: str) -> bool:
        """Check the capctl tables and their meta row; with `create`, create them where none exist.

        Returns whether they were created. No capctl table at all is a new state: `StateMissing` without
        `create`. Some tables but not all, or a meta table without its row, is damage (`StateDamaged`), never
        repaired: re-creating a lost meta row would restart the serial at 0 and let a stale plan apply.
        """
        q = self.queries
        with self._cursor(write=create) as cur:
            found = {row[0] for row in _rows(cur, q.tables)}
            created = not found
            if created:
                if not create:
                    raise StateMissing(where + self.no_tables)
                # Every table at once (the lock, inbox and room-activity tables too, which a state from before
                # them gets from its first writer): after this first run the user may lack CREATE.
                for statement in (*q.create, *self.leadership.migrate, self.room_queries.create):
                    cur.execute(statement, ())
                cur.execute(q.init_meta, (SCHEMA_VERSION,))
            if missing := [t for t in TABLES if t not in found and not created]:
                raise StateDamaged(where, f"it has {', '.join(sorted(found))} but no {', '.join(missing)} table")
            meta = _rows(cur, q.read_meta)
        if not meta:
            raise StateDamaged(where, "the capctl_meta table has no row")
        self._check_version(_whole(self.url, meta[0][0], "schema_version"))
        _whole(self.url, meta[0][1], "serial")
        return created

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StateTooNew(
                f"{self.url}: state schema version {version} was written by a newer capctl "
                f"(this one knows version {SCHEMA_VERSION}); upgrade capctl"
            )

    def fingerprint_key(self, new: bytes | None = None) -> bytes | None:
        """The key of this state's fingerprints and task hashes. A writable store that has none yet (new, or
        made by a version before keyed fingerprints) stores `new` (or a fresh random key) and returns what
        it holds then (another writer may have stored its own first). A read-only open of such a store
        returns None: its records hold bare content hashes, which specs loaded without a key match."""
        if self._fingerprint_key is None:
            q = self.queries
            made = False
            with self._cursor(write=self.writable) as cur:
                self._check_key_kept(cur)
                if self.writable:
                    _create_absent(cur, q.has_key, (q.create_key,))  # a state from before keyed fingerprints
                    cur.execute(q.init_key, ((new or new_fingerprint_key()).hex(),))
                    made = cur.rowcount == 1
                rows = _rows(cur, q.read_key) if _rows(cur, q.has_key)[0][0] else []
                if rows and self.writable and made:
                    self._key_old_hashes(cur, _key_of(self.url, rows[0][0]))
            self._fingerprint_key = _key_of(self.url, rows[0][0]) if rows else None
        return self._fingerprint_key

    def reread_fingerprint_key(self) -> bytes | None:
        """`fingerprint_key()` as the store holds it now, not as this process first read it: a state replaced
        under a running daemon (`state copy --force` while no replica led) may come of another lineage."""
        self._fingerprint_key = None
        return self.fingerprint_key()

    def _check_key_kept(self, cur: Cursor) -> None:
        """No key, yet every record keyed by one: the key was lost (its table dropped or emptied by hand, a
        restore of the records alone). Made anew, it changed every task's hash, so a plan replaced every task:
        damage. Records with bare hashes are a state from before keys: its first writer keys them."""
        q = self.queries
        if _rows(cur, q.has_key)[0][0] and _rows(cur, q.read_key):
            return
        if _rows(cur, q.keyed_record, (KEYED_BODY,)) and not _rows(cur, q.bare_record, (KEYED_BODY,)):
            raise StateDamaged(
                self.url,
                "its records hold keyed task hashes, but the capctl_fingerprint_key table holds no key",
                remedy=" (a new key would plan every task as a replace)",
            )

    def _key_old_hashes(self, cur: Cursor, key: bytes) -> None:
        """Records written before the state had a key hold bare content hashes: key them (`_keyed`), in
        the transaction that stores the key, so the first plan after an upgrade shows no change, and drop
        the unkeyed fingerprints from their requests (a guess could be checked against them). The serial
        does not move: the records mean what they meant, and a plan saved before still applies."""
        records = codec.decode_rows((k, body) for k, body in _rows(cur, "SELECT key, body FROM capctl_records"))
        upgraded = _keyed(records, key).values()
        cur.executemany(self.queries.upsert, [(r.key, codec.encode(r)) for r in upgraded])
        # A capctl from before keyed hashes reads them as changed specs and would replace every task: it must
        # refuse the state from now on, and it refuses only a schema newer than its 1. Rows by Provider name
        # (none in a state from before keys in practice) wait for `capctl run`, which knows their accounts.
        rq = self.room_queries
        if not (_rows(cur, rq.exists)[0][0] and _rows(cur, rq.any_name, (NAMES,))):
            self._upgrade(cur, None)

    def _stored_key(self) -> bytes | None:
        """The state's key if it has one, never making one (reading a record must not write)."""
        if self._fingerprint_key is None:
            q = self.queries
            with self._cursor(write=False) as cur:
                rows = _rows(cur, q.read_key) if _rows(cur, q.has_key)[0][0] else []
            self._fingerprint_key = _key_of(self.url, rows[0][0]) if rows else None
        return self._fingerprint_key

    def load(self) -> Snapshot:
        with self._cursor(write=False) as cur:
            rows = self._record_text(cur, self.queries.load)
        if not rows:
            raise StateDamaged(self.url, "the capctl_meta table has no row")
        # Checked at each read, not only at open: a newer capctl beside this one (a rolling update) may raise the
        # schema while this one runs, and a daemon that takes the lead then must refuse, not misread, the state.
        self._check_version(_whole(self.url, rows[0][0], "schema_version"))
        return Snapshot(
            serial=_whole(self.url, rows[0][1], "serial"),
            # (The LEFT JOIN's row of a state of no records has no body; a row whose key is NULL is damage.)
            records=self._decode((key, body) for _, _, key, body in rows if body is not None),
        )

    def _decode(self, rows: Iterable[tuple[str | None, str | bytes]]) -> dict[str, TaskRecord]:
        try:
            records = codec.decode_rows(rows)
        except codec.RowDamaged as exc:
            raise exc.at(self.url) from None
        # A capctl from before keyed hashes still running beside this one (a rolling update) keeps writing
        # bare content hashes into a keyed state: read them keyed, or each task it touched looks changed.
        bare = any(not r.spec_hash.startswith(KEYED_HASH_PREFIX) for r in records.values())
        if bare and (key := self._stored_key()) is not None:
            return {**records, **_keyed(records, key)}
        return records

    # Shell completion and `state show` need a key list or one record: at 50,000 tasks, reading and decoding
    # every record (`load`) took 5 s on a loaded machine, the keys alone 0.1 s.
    def keys(self) -> list[str]:
        """Every task key, sorted, without reading a record."""
        with self._cursor(write=False) as cur:
            rows = self._record_text(cur, self.queries.keys)
        return [codec.text_key(key) for (key,) in rows if key is not None]

    def _record_text(self, cur: Cursor, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Rows of capctl_records (SQLite's store reads text that is not UTF-8 as bytes, for the codec to name)."""
        return _rows(cur, sql, params)

    def stored_form(self, key: str) -> object | None:
        """What to look `key` up with: its text, if it can be sent (bytes from argv that are not UTF-8,
        `state show $'\\xff'`, are no stored text, and the driver's encoding error was a traceback, walk 12b).
        SQLite's store looks such bytes up too: a hand edit or another tool may have stored them."""
        return key if is_utf8(key) else None

    def _record_rows(self, key: str) -> list[Any]:
        if (form := self.stored_form(key)) is None:
            return []
        with self._cursor(write=False) as cur:
            return self._record_text(cur, self.queries.record, (form,))

    def record(self, key: str) -> TaskRecord | None:
        """One task's record, without reading the others; None when there is none."""
        return self._decode(self._record_rows(key)).get(key)

    def raw_record(self, key: str) -> str | None:
        """The row `key` as stored, undecoded (a damaged row shown to the operator); None when there is none."""
        rows = self._record_rows(key)
        if not rows:
            return None
        body = rows[0][1]
        # A hand edit may leave a blob (SQLite): its bytes that are not UTF-8 shown as `\\xff`.
        return body if isinstance(body, str) else bytes(body).decode("utf-8", "backslashreplace")

    def serial(self) -> int:
        with self._cursor(write=False) as cur:
            return self._serial_of(cur, self.queries.serial)

    def _serial_of(self, cur: Cursor, sql: str) -> int:
        """The serial a query returns; its row missing (deleted under a running capctl) is damage."""
        rows = _rows(cur, sql)
        if not rows:
            raise StateDamaged(self.url, "the capctl_meta table has no row")
        return _whole(self.url, rows[0][0], "serial")

    def put(self, record: TaskRecord, *, expected_serial: int | None = None, fence: int | None = None) -> int:
        return self.put_many((record,), expected_serial=expected_serial, fence=fence)

    def put_many(
        self, records: Iterable[TaskRecord], *, expected_serial: int | None = None, fence: int | None = None
    ) -> int:
        """Insert or replace several records in one transaction that moves the serial once.

        An empty batch changes nothing and leaves the serial where it is. With `fence` (a leader's epoch),
        the transaction first checks that epoch is still the lock's: otherwise `Fenced`, nothing written."""
        records = list(records)
        rows = [(record.key, codec.encode(record)) for record in records]
        written = self._written_runs()
        changed = [
            (run, began_of(record))
            for record in records
            if (run := run_of(record)) is not None and written.get(run.subject) != run
        ]
        runs = [run for run, _ in changed]
        # How each run began, with it (`began_of`; written again with a later change of the run, it stays).
        spans = [*runs, *(began for _, began in changed if began is not None)]
        self._migrate_leadership()  # (the history table, in a state from before it)
        with self._cursor(write=True) as cur:
            if not rows:
                serial = self._check_serial(cur, expected_serial, fence)
                self._check_fence(cur, fence)
                return serial
            # The serial moves first: its row is locked (as `serial_for_update` would), and the serial it held
            # is the new one less one, so the compare-and-set needs no read of its own (one statement less
            # per write; a mismatch rolls the move back with the rest).
            serial = self._bump(cur)
            if expected_serial is not None and serial - 1 != expected_serial:
                self._check_fence(cur, fence)
                raise SerialMismatch(expected_serial, serial - 1)
            cur.executemany(self.queries.upsert, rows)
            # The runs these records describe, into the history in their transaction (`run_of`).
            cur.executemany(self.history_queries.put, [_span_row(span) for span in spans])
            self._check_fence(cur, fence)
        written.update((run.subject, run) for run in runs)
        return serial

    def _written_runs(self) -> dict[str, HistorySpan]:
        """The run this store object last committed for each key: most writes of a record (observed, pending, a
        start that failed) leave its run as it was, and it is not written again."""
        if self._runs_written is None:
            self._runs_written = {}
        return self._runs_written

    def delete(self, key: str, *, expected_serial: int | None = None, fence: int | None = None) -> int:
        """Remove one record; deleting a key that is not there changes nothing, not even the serial."""
        return self.delete_many((key,), expected_serial=expected_serial, fence=fence)

    def delete_many(self, keys: Iterable[str], *, expected_serial: int | None = None, fence: int | None = None) -> int:
        """Remove several records in one transaction that moves the serial once (not at all when none of the
        keys was there)."""
        self._migrate_leadership()
        with self._cursor(write=True) as cur:
            serial = self._check_serial(cur, expected_serial, fence)
            removed = 0
            for key in keys:
                if (form := self.stored_form(key)) is not None:
                    cur.execute(self.queries.delete, (form,))
                    removed += cur.rowcount
                if is_utf8(key):  # (a key only a BLOB row holds has no history)
                    cur.execute(self.history_queries.forget, (key,))
                self._written_runs().pop(key, None)
            serial = self._bump(cur) if removed > 0 else serial
            self._check_fence(cur, fence)
            return serial

    def record_rooms(
        self, reports: Iterable[RoomActivity], spans: Iterable[HistorySpan] = (), *, fence: int | None = None
    ) -> None:
        """Keep what was learned of these rooms (newer reports replace older ones), and the status page's
        `spans` of their activity (`HistorySpan`, kind "room"); one transaction. With `fence` (a leader's
        epoch) it is checked last, as a task write's: a deposed leader's retry would otherwise reopen a
        `selector` row its successor closed (`Fenced`, nothing written)."""
        if not self.writable:
            raise StateError(f"{self.url}: opened read-only, so it cannot record room activity")
        rows = [(r.account, r.room, int(r.active), r.last_seen, r.source) for r in reports]
        history: list[tuple[Any, ...]] = []
        seen: list[tuple[str, float, str]] = []  # (subject, start, the record's key: the same)
        for span in spans:
            if span.kind == "seen":
                seen.append((span.subject, span.start, span.subject))
            else:
                history.append(_span_row(span))
        if not rows and not history and not seen:
            return
        if history or seen or fence is not None:
            self._migrate_leadership()
        with self._cursor(write=True) as cur:
            if rows:
                self._upgrade(cur, None)  # a state of schema 1 without activity yet: nothing to key anew
                if not self._rooms_ready:  # dropped by hand: the table, as its first writer makes it (walk 21A-3)
                    rq = self.room_queries
                    _create_absent(cur, rq.exists, (*rq.serialise, rq.create))
                cur.executemany(self.room_queries.upsert, rows)
            cur.executemany(self.history_queries.put, history)
            cur.executemany(self.history_queries.seen, seen)
            self._check_fence(cur, fence)
        self._rooms_ready = self._rooms_ready or bool(rows)

    def history(self) -> list[HistorySpan]:
        """The status page's timeline history as kept (none in a state from before it)."""
        with self._cursor(write=False) as cur:
            return self._history(cur)

    def _history(self, cur: Cursor) -> list[HistorySpan]:
        hq = self.history_queries
        rows = _rows(cur, hq.read) if _rows(cur, hq.exists)[0][0] else []
        return [self._span(*row) for row in rows]

    def _span(
        self, kind: object, subject: object, room: object, start: object, end: object, why: object
    ) -> HistorySpan:
        """One timeline row as stored; a hand-edited one (`start_at = 'abc'`, NaN) stopped `capctl run` with a
        traceback: damage naming the row, which can go (the timeline only shows less)."""
        texts = isinstance(kind, str) and isinstance(subject, str) and isinstance(room, str)
        if texts and _is_time(start) and (end is None or _is_time(end)) and (why is None or isinstance(why, str)):
            return HistorySpan(kind, subject, room, float(start), None if end is None else float(end), why)  # type: ignore[arg-type]
        raise StateDamaged(
            self.url,
            f"the capctl_history row of {kind} {subject!r} {room!r} holds start_at {start!r}, end_at {end!r}",
            remedy="; or delete that row: the status page's timeline only shows less",
        )

    def prune_history(self, ended_before: float, keep: int) -> int:
        """Drop the spans that ended before `ended_before`, and all but the newest `keep` of each task or room;
        returns how many. Does not move the serial."""
        if not self.writable:
            raise StateError(f"{self.url}: opened read-only, so it cannot prune the history")
        self._migrate_leadership()
        hq = self.history_queries
        with self._cursor(write=True) as cur:
            cur.execute(hq.prune_old, (ended_before, ended_before))
            dropped = max(cur.rowcount, 0)
            cur.execute(hq.prune_many, (keep,))
            dropped += max(cur.rowcount, 0)
            cur.execute(hq.pruned_began)  # after the runs' own pruning: those it took
            dropped += max(cur.rowcount, 0)
            self._check_schema(cur)
            return dropped

    def prune_orphans(self) -> int:
        """Drop the `seen` and `began` rows of keys without a record (`HistoryQueries.orphans`); returns how
        many. Does not move the serial."""
        if not self.writable:
            raise StateError(f"{self.url}: opened read-only, so it cannot prune the history")
        self._migrate_leadership()
        with self._cursor(write=True) as cur:
            cur.execute(self.history_queries.orphans)
            dropped = max(cur.rowcount, 0)
            self._check_schema(cur)
            return dropped

    def forget_rooms(self, quiet_before: float) -> int:
        """Drop the rooms known inactive since before `quiet_before`; returns how many."""
        if not self.writable:
            raise StateError(f"{self.url}: opened read-only, so it cannot forget room activity")
        q = self.room_queries
        with self._cursor(write=True) as cur:
            if not _rows(cur, q.exists)[0][0]:
                return 0
            cur.execute(q.forget, (quiet_before,))
            forgotten = max(cur.rowcount, 0)
            self._check_schema(cur)
            return forgotten

    def room_activity(self, accounts: Mapping[str, str]) -> list[RoomActivity]:
        """Every room's last known activity, by account and room (none before the daemon recorded any).
        `accounts` (Provider name → account) reads the rows kept by Provider name (`_by_name`) not upgraded yet."""
        q = self.room_queries
        with self._cursor(write=False) as cur:
            rows = _by_account(_rows(cur, q.read), accounts) if _rows(cur, q.exists)[0][0] else []
        return [self._activity(*row) for row in rows]

    def _activity(self, account: str, room: object, active: object, seen: object, source: object) -> RoomActivity:
        """One row as stored. A hand edit or an odd restore (`active = 'x'`, `last_seen = 1e999`) stopped `capctl
        run` with a traceback, or kept a room seen forever: damage naming the row, which can go (re-learnt)."""
        if (
            isinstance(room, str)
            and active in (0, 1)
            and type(active) is int
            and _is_time(seen)
            and isinstance(source, str)
        ):
            return RoomActivity(account, room, active == 1, float(seen), source)  # type: ignore[arg-type]
        raise StateDamaged(
            self.url,
            f"the capctl_room_activity row of room {room!r} ({account}) holds active {active!r}, last_seen {seen!r}",
            remedy="; or delete that row: callbacks and the room listing learn it again",
        )

    def upgrade_rooms(self, accounts: Mapping[str, str]) -> tuple[int, list[str]] | None:
        """Upgrade a state of schema 1 to schema 2 in one transaction: its room activity keyed by vendor account
        instead of Provider name (`accounts`: Provider name → account, of the specs in force). From then on a
        capctl that knows only schema 1 refuses the state. Rows an older capctl still running wrote by name
        since (a rolling upgrade) are keyed anew the same way. None when there was nothing to do (or a
        read-only open); else the rooms keyed anew and the Provider names left out (not in `accounts`: their
        rows go, learned again from the next callback)."""
        if not self.writable:
            return None
        with self._cursor(write=False) as cur:
            if not self._upgrade_due(cur):
                return None
        try:
            with self._cursor(write=True) as cur:
                return self._upgrade(cur, accounts)
        except StateError as exc:
            raise StateError(
                f"upgrading the state to schema {SCHEMA_VERSION} (room activity by vendor account) failed, nothing "
                f"was changed: {exc}"
            ) from None

    def _upgrade(self, cur: Cursor, accounts: Mapping[str, str] | None) -> tuple[int, list[str]] | None:
        """`upgrade_rooms` in the transaction of `cur`. Without `accounts` (a writer that has no specs), a state
        that holds activity of schema 1 is refused, nothing written: only the specs know the accounts."""
        rq = self.room_queries
        if not self._upgrade_due(cur, names=accounts is not None):
            return None
        for statement in rq.serialise:
            cur.execute(statement, ())
        version = _rows(cur, self.queries.version_for_update)[0][0]
        if not self._upgrade_due(cur, names=accounts is not None):
            return None  # another writer upgraded it meanwhile
        rows = []
        if _rows(cur, rq.exists)[0][0]:
            rows = [row for row in _rows(cur, rq.read) if _by_name(row[0])]
            if rows and accounts is None:
                raise StateError(
                    f"{self.url}: its room activity is kept by Provider name (state schema 1); `capctl run` "
                    f"upgrades it to schema {SCHEMA_VERSION} when it starts"
                )
            cur.execute(rq.forget_names, (NAMES,))
        else:  # a state from before room activity: the table, as its first writer of activity always made it
            cur.execute(rq.create, ())
        kept = _by_account(rows, accounts or {})
        cur.executemany(rq.upsert, kept)  # beside rows by account: the newer report of a room wins
        if version < SCHEMA_VERSION:
            cur.execute(self.queries.set_version, (SCHEMA_VERSION,))
        failpoints.hit("state-upgrade.rooms-written")
        return len(kept), sorted({row[0] for row in rows} - set(accounts or {}))

    def _upgrade_due(self, cur: Cursor, *, names: bool = True) -> bool:
        """A state of schema 1, or (`names`) one holding rows by Provider name (an older capctl wrote them)."""
        if self._version(cur) < SCHEMA_VERSION:
            return True
        rq = self.room_queries
        return names and bool(_rows(cur, rq.exists)[0][0]) and bool(_rows(cur, rq.any_name, (NAMES,)))

    def _check_schema(self, cur: Cursor) -> None:
        """`StateTooNew` (the transaction rolled back, nothing written) if a newer capctl raised the schema since
        this store was opened: the check of a write no epoch fences (a standby's callback into the inbox, its
        room activity, a pruning). An outdated replica stored callbacks and room activity on into a state it no
        longer knows, and answered the vendor 200 for callbacks no newer replica may read (walk 60b)."""
        self._check_version(self._version(cur))

    def _version(self, cur: Cursor) -> int:
        rows = _rows(cur, self.queries.read_meta)
        if not rows:
            raise StateDamaged(self.url, "the capctl_meta table has no row")
        return _whole(self.url, rows[0][0], "schema_version")

    def _check_serial(self, cur: Cursor, expected: int | None, fence: int | None = None) -> int:
        """Lock the serial row and compare it; a mismatch of a deposed leader (`fence`) is `Fenced`."""
        serial = self._serial_of(cur, self.queries.serial_for_update)
        if expected is not None and serial != expected:
            self._check_fence(cur, fence)
            raise SerialMismatch(expected, serial)
        return serial

    def _bump(self, cur: Cursor) -> int:
        return self._serial_of(cur, self.queries.bump)

    def check_lock(self) -> None:
        """Raise `LockTakenOver` if the lock this command holds (`command_epoch`) was taken over (a lease,
        PostgreSQL's), or `StateTooNew` if a newer capctl raised the schema meanwhile; nothing otherwise, nor when
        no command holds it (the daemon: its guard is `may_act`). Asked before a vendor call no write of the
        command precedes: a delete's or a replace's stop (walk 25d)."""
        if self.command_epoch is not None:
            with self._cursor(write=False) as cur:
                self._check_fence(cur, None)

    def _check_fence(self, cur: Cursor, epoch: int | None) -> None:
        """Raise `Fenced` (rolling the transaction back) unless `epoch` (None: not fenced) is still the lock's
        epoch. (A fenced writer took the lock, which ran `_migrate_leadership` first.)

        A write checks last, just before it commits: PostgreSQL row-locks the lease row (a takeover waits for
        the commit), and so does the leader's renewal. Checked first, a write waiting for the serial row or a
        table (another writer, a DBA's ALTER) held the lease row for all that wait, and the renewal with it,
        up to `lock_timeout`: as long as the renew deadline, and the leader lost its lead (walk 14D-1).

        A fenced write also checks the schema, in the same statement (`StateTooNew`, nothing written): a newer
        capctl beside this one (a rolling update's first new pod, a standby) may raise it while this one leads
        or applies, and writing on as the older schema would misread the state as much as a read would (walk
        58c). With no lock row the write is fenced anyway. A write no epoch fences checks the schema alone (60b)."""
        command = epoch is None
        epoch = self.command_epoch if command else epoch
        if epoch is None:
            self._check_schema(cur)  # not fenced (a standby's room activity …): the schema alone (walk 60b)
            return
        rows = _rows(cur, self.leadership.fence, (LOCK_NAME,))
        if rows:
            self._check_version(_whole(self.url, rows[0][2], "schema_version"))
        current: int | None = rows[0][0] if rows else None
        if current != epoch:
            raise LockTakenOver(epoch, current, rows[0][1] if rows else None) if command else Fenced(epoch, current)

    def _migrate_leadership(self) -> None:
        """Add the epoch and the inbox to a state made before them: once per store object, its own step."""
        if self._leadership_ready:
            return
        with self._cursor(write=False) as cur:
            missing = _rows(cur, self.leadership.missing)[0][0]
        if missing:
            with self._cursor(write=True) as cur:
                for statement in self.leadership.migrate:
                    cur.execute(statement, ())
        self._leadership_ready = True

    def peek_fingerprint_key(self) -> bytes | None:
        """The key the store holds now, read without writing (a standby's look: a state of another lineage may
        have been copied in): None where it has none (its tables gone mid-restore), the key kept meanwhile, never
        unset (a `fingerprint_key()` of another thread would then make one)."""
        q = self.queries
        with self._cursor(write=False) as cur:
            rows = _rows(cur, q.read_key) if _rows(cur, q.has_key)[0][0] else []
        if not rows:
            return None
        self._fingerprint_key = key = _key_of(self.url, rows[0][0])
        return key

    def export(self) -> StateCopy:
        """Everything this state holds (`StateCopy`), read from one snapshot. Every record row is decoded
        first: a row this capctl cannot read is refused, naming it, and nothing is exported."""
        q, rq = self.queries, self.room_queries
        with self._cursor(write=False) as cur:
            for statement in self.snapshot_reads:
                cur.execute(statement, ())
            serial = self._serial_of(cur, q.serial)
            records = [(key, body) for key, body in _rows(cur, "SELECT key, body FROM capctl_records ORDER BY key")]
            # A lost or damaged key is refused here, not copied on as "not keyed yet" for the copy to refuse later.
            self._check_key_kept(cur)
            keys = _rows(cur, q.read_key) if _rows(cur, q.has_key)[0][0] else []
            key_hex = _key_of(self.url, keys[0][0]).hex() if keys else None
            schema = self._version(cur)
            rooms = _rows(cur, rq.read) if _rows(cur, rq.exists)[0][0] else []
            inbox = _rows(cur, self.leadership.inbox_read) if _rows(cur, self.leadership.inbox_exists)[0][0] else []
            history = self._history(cur)
        try:
            codec.decode_rows(records)
        except codec.RowDamaged as exc:
            raise exc.at(self.url) from None
        return StateCopy(serial, records, key_hex, rooms, inbox, schema, history)

    def import_copy(
        self, copy: StateCopy, *, replace: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Make this state hold `copy`, in one transaction: all of it, or on any error nothing. A state that
        holds records is refused unless `replace`. The serial becomes the copy's, or this state's plus one when
        that is higher: it never moves back, so a plan saved here before cannot apply. `progress(done, total)`
        follows the records. Returns the new serial."""
        if not self.writable:
            raise StateError(f"{self.url}: opened read-only, so it cannot take a copy")
        self._migrate_leadership()  # the inbox table, in a state from before it
        q = self.queries
        with self._cursor(write=True) as cur:
            serial = self._serial_of(cur, q.serial_for_update)
            held = _rows(cur, "SELECT count(*) FROM capctl_records")[0][0]
            if held and not replace:
                raise StateError(
                    f"{self.url} already holds a state ({held:,} task record(s), serial {serial}): nothing was copied."
                    " Copy into a new or empty state, or replace this one with --force (after a backup of it): a task"
                    " only its records hold (one a daemon started there) is forgotten, not stopped (`capctl state"
                    " list --state` of it shows them)"
                )
            _create_absent(cur, self.room_queries.exists, (*self.room_queries.serialise, self.room_queries.create))
            _create_absent(cur, q.has_key, (q.create_key,))
            tables = (
                "capctl_records",
                "capctl_room_activity",
                "capctl_inbox",
                "capctl_fingerprint_key",
                "capctl_history",
            )
            for table in tables:
                cur.execute(f"DELETE FROM {table}", ())
            if copy.key_hex is not None:  # none: the first writer keys the copied hashes, as after an upgrade
                cur.execute(q.init_key, (copy.key_hex,))
            for start in range(0, len(copy.records), _COPY_CHUNK):
                chunk = copy.records[start : start + _COPY_CHUNK]
                cur.executemany(q.upsert, chunk)
                if progress is not None:
                    progress(start + len(chunk), len(copy.records))
                failpoints.hit("state-copy.records-written")
            cur.executemany(self.room_queries.upsert, copy.rooms)
            cur.execute(q.set_version, (copy.schema,))  # its rooms' keys are those of its schema
            cur.executemany(self.leadership.inbox_copy, copy.inbox)
            cur.executemany(self.history_queries.put, [_span_row(span) for span in copy.history])
            new_serial = max(copy.serial, serial + 1)
            cur.execute(q.set_serial, (new_serial,))
            self._check_fence(cur, None)  # (a command's: `state copy` holds the lock)
        self._fingerprint_key = None  # read afresh: it is the copy's now
        self._runs_written = None  # and its history
        return new_serial

    def inbox_put(self, entry: InboxEntry) -> bool:
        """Store a verified callback durably (committed on return); False when its key is already there
        (a vendor's retry, consumed or not). Raises `StateError` when it cannot be stored: answer 5xx."""
        payload = _inbox_json(entry)
        self._migrate_leadership()
        with self._cursor(write=True) as cur:
            cur.execute(
                self.leadership.inbox_put, (entry.vendor, entry.dedupe_key, payload, entry.digest, entry.received_at)
            )
            stored = cur.rowcount > 0
            self._check_schema(cur)
            return stored

    def inbox_claim(
        self, *, now: float, limit: int = 500, keep: float = INBOX_KEEP_SECONDS, fence: int | None = None
    ) -> list[InboxEntry]:
        """The oldest `limit` entries not consumed yet, oldest first, marked consumed at `now` in the same
        transaction (fenced like any write of a leader: a deposed leader claims nothing). The same
        transaction forgets entries consumed more than `keep` seconds ago, or received that long ago and
        never consumed; until then a vendor's retry of a consumed one is still a duplicate. When there is
        nothing to take or forget (most claims), a read says so and nothing is written."""
        self._migrate_leadership()
        with self._cursor(write=False) as cur:
            self._check_fence(cur, fence)
            if not _rows(cur, self.leadership.inbox_due, (now - keep,)):
                return []
        with self._cursor(write=True) as cur:
            cur.execute(self.leadership.inbox_purge, (now - keep,))
            rows = _rows(cur, self.leadership.inbox_claim, (now, limit))
            self._check_fence(cur, fence)
        entries, dropped = [], []
        for vendor, key, payload, digest, received_at in rows:
            entry = _inbox_entry(vendor, key, payload, digest, received_at)
            if entry is None:
                dropped.append(key)
            else:
                entries.append(entry)
        if dropped:
            # One entry no capctl writes (edited by hand, an odd restore) failed the whole claim after the
            # batch was marked consumed: up to `limit` good callbacks lost with it. It is dropped alone, said.
            log.warning("dropped callback inbox entries capctl cannot read", state=self.url, dedupe_keys=dropped)
        return sorted(entries, key=lambda e: (e.received_at, e.vendor, e.dedupe_key))


def _is_time(value: object) -> bool:
    """A stored time as capctl writes it: a number a clock gives (not text, a bool, NaN or Infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and is_time(value)


def _inbox_entry(vendor: object, key: object, payload: object, digest: object, at: object) -> InboxEntry | None:
    """A claimed row as `inbox_put` writes it (a JSON object, a time), else None."""
    try:
        body = json.loads(payload) if isinstance(payload, str | bytes) else None
    except ValueError:
        body = None
    if not (isinstance(body, dict) and _is_time(at) and isinstance(vendor, str) and isinstance(key, str)):
        return None
    return InboxEntry(vendor, key, body, str(digest), float(at))  # type: ignore[arg-type]


def iso_utc(timestamp: float) -> str:
    """`2026-11-27T07:00:00Z`: the form every lock holder description uses."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def holder_identity(command: str) -> str:
    """`pid 1234 on host-a (capctl apply)`: who takes a lock, for the `LockHeld` message others see."""
    return f"pid {os.getpid()} on {socket.gethostname()} ({command})"


class LockContext(ABC):
    """A held lock that also works as `with store.lock("capctl apply"):` (released on leaving the block)."""

    holder: str
    epoch: int
    silent_for: float | None

    @abstractmethod
    def renew(self) -> None: ...

    @abstractmethod
    def release(self) -> None:
        """Give the lock up; releasing twice is harmless."""

    @abstractmethod
    def keep_silence(self) -> None:
        """This holder answers no callbacks: keep the previous holder's last sign of life as the record."""

    @abstractmethod
    def unheard_since(self, seconds_ago: float) -> None:
        """This holder answered no callbacks for `seconds_ago`: its release records its last sign that long ago."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _whole(url: str, value: object, what: str) -> int:
    """A capctl_meta number as stored. SQLite keeps a hand edit's text (`serial = 'x'`, which `serial + 1`
    turns into 1, so a stale saved plan could apply) and the version was compared as text: damage, not a
    number to go on from."""
    if type(value) is not int or value < 0:
        raise StateDamaged(url, f"the capctl_meta {what} is {value!r}, not a whole number")
    return value


def _key_of(url: str, stored: object) -> bytes:
    """The fingerprint key as stored: a hand-edited one (not hex, or not the 32 bytes capctl makes) keyed every
    task's hash anew, so a plan replaced every task; refused as damage instead."""
    try:
        key = bytes.fromhex(stored) if isinstance(stored, str) else b""
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise StateDamaged(url, f"the capctl_fingerprint_key table holds no {KEY_BYTES}-byte key in hex")
    return key
