"""The default state store: one SQLite file next to the specs, readable by its owner only.

A new file is built whole (mode 0600, tables, WAL) under a temporary name and linked into place, so a file
that exists but is empty or has no capctl tables is never a half-made new state: it is damage (`StateDamaged`),
like a corrupt one. SQLite gives the -wal/-shm files the file's mode. WAL journaling with synchronous=NORMAL
makes every commit durable against a crash of the process (what "a crash mid-apply loses nothing already
committed" needs) at well under a millisecond per commit; only an OS crash or power loss can drop the last
few commits. The apply lock is an OS lock (`flock`) on the database file itself, so deleting a file cannot
admit a second writer, and it disappears with the process that held it, however that process ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import pwd
import re
import shlex
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from reconciler.clock import Clock, SystemClock
from reconciler.jsonlimits import is_utf8

from .base import LockHeld, StateDamaged, StateError, StateMissing
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

__all__ = ["SQLiteStateStore"]


_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
_BESIDE = ("-wal", "-shm", ".lock")  # the files capctl and SQLite make beside a state file
# A directory descriptor for *at() calls only: O_PATH needs no read permission on it, as the lock's open by path.
_DIRECTORY = os.O_DIRECTORY | os.O_CLOEXEC | getattr(os, "O_PATH", os.O_RDONLY)


class SQLiteStateStore(SqlStateStore):
    """State in one SQLite file. Safe to share between threads (calls are serialised) and processes."""

    queries = Queries.build(
        mark="?",
        for_update="",
        tables=f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN {TABLES}",
        has_key="SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'capctl_fingerprint_key'",
    )
    room_queries = RoomQueries.build(
        mark="?", exists="SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'capctl_room_activity'"
    )

    # A key is looked up as text, as the same bytes stored as a BLOB, and as text that is not UTF-8 (bytes a
    # hand edit or another tool left: SQLite keeps them in a TEXT column, and compares a BLOB with no text).
    # A row whose key is NULL (its TEXT PRIMARY KEY allows it) goes by the key its record names, while no other
    # row has that key: the codec names it as damage so, and `state rm` of that key forgets it.
    _NAMED = (
        "CASE WHEN json_valid(body) THEN CASE WHEN json_type(body, '$.key') = 'text' THEN json_extract(body, '$.key')"
        " END END"
    )
    _ANY_FORM = (
        "(key IN (?1, CAST(?1 AS TEXT), CAST(?1 AS BLOB)) OR key IS NULL AND "
        f"{_NAMED} = ?1 AND NOT EXISTS (SELECT 1 FROM capctl_records WHERE key = ?1))"
    )
    queries = dataclasses.replace(
        queries,
        record=f"SELECT key, body FROM capctl_records WHERE {_ANY_FORM}",
        delete=f"DELETE FROM capctl_records WHERE {_ANY_FORM}",
    )

    def keys(self) -> list[str]:
        """Every task key, sorted, a row of a NULL key by the key its record names (`state rm` of it finds it)."""
        keys = super().keys()
        with self._cursor(write=False) as cur:  # (by the key's index: NULL keys are few, if any)
            rows = self._record_text(cur, f"SELECT {self._NAMED} FROM capctl_records WHERE key IS NULL")
            named = [k for (k,) in rows if isinstance(k, str)]
        return sorted({*keys, *named}) if named else keys

    def stored_form(self, key: str) -> object | None:
        """Bytes from argv that are not UTF-8 (`state rm $'SnapshotJob/a/\\xff'`) as those bytes (`codec.text_key`)."""
        try:
            return key if is_utf8(key) else key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no byte gives
            return None

    def _record_text(self, cur: Cursor, sql: str, params: Sequence[object] = ()) -> list[Any]:
        try:
            return super()._record_text(cur, sql, params)
        except sqlite3.OperationalError as exc:
            if "Could not decode to UTF-8" not in str(exc):
                raise
        # A hand edit in a terminal that is not UTF-8 (`é` typed in Latin-1): each such text read as its bytes,
        # which the codec names as damage of that row, so that `state rm` of it can forget it.
        db = self._db
        assert db is not None  # (inside `_cursor`)
        db.text_factory = _text_or_bytes
        try:
            return super()._record_text(cur, sql, params)
        finally:
            db.text_factory = str

    # The flock says who holds the lock; this table keeps its epoch, raised at every taking, for fencing.
    leadership = LeadershipQueries(
        missing="SELECT 3 - count(*) FROM sqlite_master WHERE type = 'table'"
        " AND name IN ('capctl_lock', 'capctl_inbox', 'capctl_history')",
        migrate=(
            "CREATE TABLE IF NOT EXISTS capctl_lock (name TEXT PRIMARY KEY, epoch INTEGER NOT NULL)",
            INBOX_TABLE,
            HISTORY_TABLE,
        ),
        fence="SELECT epoch, NULL, (SELECT schema_version FROM capctl_meta WHERE id = 1) FROM capctl_lock"
        " WHERE name = ?",
        inbox_exists="SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'capctl_inbox'",
    ).marked("?")
    history_queries = HistoryQueries(
        exists="SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'capctl_history'"
    ).marked("?")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        busy_timeout: float = 5.0,
        create: bool = True,
        init: bool = False,
    ):
        """With `create=False` nothing is created: no directory, file or table (read-only commands); a
        missing file raises `StateMissing`, naming the path as given and resolved. A file that exists but is
        not a whole state (0 bytes, no or some capctl tables, corrupt) raises `StateDamaged` unless `init`
        (`capctl state init`) asks for a new state in an empty file or one without capctl tables.
        `created` tells whether this open made a new state."""
        self.path = _normal(Path(path).absolute())
        self.url = f"sqlite:///{self.path}"
        real = _real(self.path)  # beside the file a linked path leads to, with -wal and -shm (walk 36B-7)
        self.lock_path = real.with_name(real.name + ".lock")
        self.writable = create
        self._clock = clock or SystemClock()
        self._busy_timeout = busy_timeout
        self._mutex = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._file: _DbFile | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the connection opened
        # The directory (a descriptor: it follows the directory if moved) and name SQLite opened the file by: the
        # -wal and -shm it writes for as long as the connection lasts are there
        self._home: tuple[int, str] | None = None
        # The (st_dev, st_ino) of that -wal and -shm: the files go on serving wherever their names are (42A-2)
        self._log: tuple[tuple[int, int], tuple[int, int]] | None = None
        where = self.url if Path(path).is_absolute() else f"sqlite:///{path} (resolved to {self.path})"
        hint = f" (or run `capctl state init --state {where.partition(' ')[0]}` to start a new state in it)"
        self.created = False
        try:
            if not self.path.exists():
                if not (create or init):
                    raise StateMissing(where)
                self.created = self._create_new()
            elif not self.path.is_file():
                raise StateError(f"{where} is not a regular file")
            elif self.path.stat().st_size == 0 and not init:
                raise StateDamaged(where, "the file is 0 bytes", remedy=hint)
            self._file = _DbFile.open(self.path)
            self._one_name(where)
            # SQLite reads a file shorter than its header (1 byte, say) as an empty database: `state init` wrote
            # a state over it (walk 13a). Whatever does not begin as SQLite's files do is no state, at any size.
            if os.pread(self._file.fd, len(_SQLITE_HEADER), 0) not in (b"", _SQLITE_HEADER):
                raise StateDamaged(where, "file is not a database")
            with self._translate_errors(where):
                # mode=rw: a file that vanished meanwhile is an error, never silently created.
                self._db = self._connect(self.path, mode="rw")
                self._identity = _identity(self.path)  # after SQLite opened it for writing (an overlayfs copy-up)
                opened = _real(self.path)
                self._home = (os.open(opened.parent, _DIRECTORY), opened.name)
            try:
                self.created |= self._open_schema(create=init, where=where)
            except StateMissing:
                raise StateDamaged(where, "it has no capctl tables", remedy=hint) from None
            # Once it is known to be a state: switching first made a refused foreign database WAL (walk 13a).
            # A read-only open leaves the file as it is (capctl's own files are WAL).
            if create or init:
                with self._translate_errors(where):
                    self._use_wal(self._db)
                    # A file switched from rollback journaling just now has no log until a read opens it: noted
                    # as none, it was never checked (walk 44B-2)
                    self._db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            self._log = _log_files(self._home)  # made by the reads above; kept while the connection lasts
        except OSError as exc:  # e.g. a symlink loop or an unreadable directory: named, never a traceback
            self.close()
            # A state a first `sudo capctl apply` made is root's, 0600: its service user is told whose (36B-6).
            ids = f"{os.geteuid()}:{os.getegid()}"
            # Its files by name, never a glob: whoever may write the directory could add `state.db-x` as a link to
            # any file for root to give away (walk 38B-4); a linked state's files are its target's.
            real = _real(self.path)
            names = [real.name] + [n for n in (real.name + end for end in _BESIDE) if os.path.lexists(real.parent / n)]
            mine = _pinned_chown(real.parent, names, ids)
            told = _foreign(exc, self.path, mine and f"give it (and its -wal, -shm and .lock) to this user: {mine}")
            told = told or _closed_directory(exc, real, ids)
            if (create or init) and not _is_directory(real.parent):  # not even known whether a state is there
                told = told or _uncreatable(exc, real.parent, self.path.parent)  # walk 42B-3
            raise StateError(f"{where}: cannot open the state file: {exc.strerror}{told}") from None
        except BaseException:
            self.close()
            raise

    def _connect(self, path: Path, *, mode: str) -> sqlite3.Connection:
        # SQLite refuses a -wal or -shm that is a symbolic link, not a hard link: it wrote its index into the file
        # a planted -shm shares and, run as root, gave it (or a -wal's) to the state's owner (walk 38B-2).
        real = _real(path)
        for suffix in ("-wal", "-shm"):
            beside = real.with_name(real.name + suffix)
            try:
                found = beside.lstat()
            except OSError:  # none (SQLite makes it), or one SQLite's own open names
                continue
            if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
                names, others = "", ""
                if found.st_nlink > 1:  # a `cp -al` of the state's directory makes them too (walk 39A-2)
                    names = f" ({found.st_nlink} names)"
                    others = (
                        f"; {_find_names(beside)}"
                        " (a hard-link copy of a live state, `cp -al`, shares the files SQLite writes in place: it is"
                        " no copy; docs/state.md, Backups)"
                    )
                raise StateError(
                    f"{self.url}: the file {beside} is a link or not a plain file{names}: capctl lets"
                    " SQLite write only files of its own beside the state, never where a link leads; see who put it"
                    f" there, and remove the name that is not the state's own (SQLite makes its files again){others}"
                )
        db = sqlite3.connect(
            f"file:{urllib.parse.quote(str(path))}?mode={mode}",
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=True,
        )
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _one_name(self, where: str) -> None:
        """Refuse a state file with a second name (walk 41B-2): SQLite keeps a -wal and -shm beside the name it opens
        a file by, so what is written through one name is not seen through the other, and that log, replayed
        later, puts older pages over newer ones. Before SQLite opens it: even a read writes its log. The name to keep
        is the one a -wal is beside, which is not always the one capctl is given (walk 42A-1: a file linked alone
        after a crash; the commits in that -wal were lost with the name removed)."""
        assert self._file is not None
        names, real = os.fstat(self._file.fd).st_nlink, _real(self.path)
        if names < 2 or (names == 2 and _being_linked(real, self._file.key)):
            return
        names = os.fstat(self._file.fd).st_nlink  # that temporary name unlinked between the two looks
        if names < 2:
            return
        raise StateError(
            f"{where}: the state file {real} has {names} names (hard links): SQLite keeps a -wal and -shm beside the"
            " name it opens the file by, so what is written through one is not seen through another, and a log"
            " replayed later puts older pages over newer ones; nothing is read or written; with every capctl on it"
            f" stopped, {_find_names(real)}; keep the one with a non-empty -wal file beside it if one has (commits"
            " not yet in the file are there: removing that name loses them; if several have, docs/state.md, Backups),"
            " else the one capctl is given; remove the others and give capctl the name kept (a hard-link copy,"
            " `cp -al`, is no copy)"
        )

    def _use_wal(self, db: sqlite3.Connection) -> None:
        mode = self._switch_to_wal(db)
        if mode != "wal":
            raise StateError(f"{self.url}: SQLite refused WAL journaling (journal mode is {mode})")

    def _create_new(self) -> bool:
        """Build a new state under a temporary name, then link it into place: a new file appears whole.

        A crash mid-creation thus leaves no empty or table-less file behind, so such a file is always
        damage. Returns False when another process linked its own new state first (that one is used)."""
        # A dangling symlink is created where it points (as opening it with O_CREAT would), on that disk.
        target = Path(os.path.realpath(self.path))
        wal = target.with_name(target.name + "-wal")
        if wal.exists() and not target.exists():  # in this order: a new state's file is linked before its log
            # SQLite would replay this log into the new file: pages of another database, a corrupt or mixed
            # state. It is left when the file was moved or deleted while a capctl had it open (or after a crash).
            raise StateError(
                f"{self.url}: there is no state file but its write-ahead log {wal} is there: the state file was"
                " moved or deleted, maybe while a capctl had it open; put it back, or stop every capctl on it and"
                f" move {wal.name} and {target.name}-shm away to start a new state"
            )
        temp = target.with_name(f".{target.name}.new-{os.getpid()}-{threading.get_ident()}")
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            with self._translate_errors(f"{self.url} (new file {temp.name})"):
                self._db = self._connect(temp, mode="rw")
                self._use_wal(self._db)
                self._open_schema(create=True, where=self.url)
                # Checkpointed here, not by close(): a close whose checkpoint fails (a full disk) says nothing and
                # leaves the log, which the `finally` below deletes: the file linked was a torn state that every
                # command then called damaged (walk 55D-3). A failure here raises, and nothing is linked.
                try:
                    if self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
                        raise sqlite3.OperationalError("the new state's log could not be written into its file")
                finally:
                    self._db.close()  # the last connection: its (now empty) WAL is removed
                    self._db = None
            try:
                os.link(temp, target)  # fails if the path exists meanwhile, unlike a rename
            except FileExistsError:
                return False
            return True
        except OSError as exc:
            told = _uncreatable(exc, target.parent, self.path.parent)
            raise StateError(f"{self.url}: cannot create the state file: {exc.strerror}{told}") from None
        finally:
            for leftover in (temp, temp.with_name(temp.name + "-wal"), temp.with_name(temp.name + "-shm")):
                with contextlib.suppress(OSError):  # never made (no directory), or already gone
                    leftover.unlink()

    def _switch_to_wal(self, db: sqlite3.Connection) -> str:
        """Set WAL journaling, retrying while another connection holds the lock, up to the busy timeout.

        SQLite answers SQLITE_BUSY at once, without waiting in its busy handler, when two connections
        switch a new file to WAL together (waiting could deadlock), so replicas starting at the same
        moment would fail here without the retry.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                return str(db.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)

    @contextmanager
    def _translate_errors(self, where: str | None = None) -> Iterator[None]:
        """sqlite3 errors → `StateError` naming the file; a corrupt or foreign file → `StateDamaged`."""
        where = where or self.url
        try:
            yield
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise StateError(
                    f"{where}: another process kept the database busy for over {self._busy_timeout:g} s"
                ) from None
            raise StateError(f"{where}: {_described(exc, self.path)}") from None
        except sqlite3.DatabaseError as exc:
            # The low byte is the primary code: SQLITE_CORRUPT_INDEX and the like are corruption too.
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise StateDamaged(where, str(exc)) from None
            raise StateError(f"{where}: {exc}") from None
        except sqlite3.Error as exc:
            raise StateError(f"{where}: {exc}") from None

    @contextmanager
    def _cursor(self, *, write: bool) -> Iterator[Cursor]:
        with self._mutex, self._translate_errors():
            if self._db is None:
                raise StateError(f"{self.url}: the store is closed")
            if write:
                self._check_in_place()
            cur = self._db.cursor()
            # IMMEDIATE takes the write lock up front, so the serial read for compare-and-set cannot go stale.
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield cur
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    def _check_in_place(self) -> None:
        """Raise `StateError` unless the path still names the file this store opened.

        A state file moved, deleted or replaced under a running capctl stays open and writable: what it wrote
        then would be lost (or land in a file nobody reads), and a second capctl at the path would not meet
        its lock. So every write transaction, taking the lock and renewing it look first (one stat; one more of
        the name in the directory opened: a link re-pointed to the file moved alone leaves its -wal, 41B-1)."""
        try:
            now = _identity(self.path)
        except OSError:
            now = None
        if self._identity is None:
            return  # not opened at the path yet (a new state being built under its temporary name)
        if now == self._identity:
            if self._home is not None and _names(self._home, self._identity):
                if self._log is None or _log_files(self._home) == self._log:
                    return
                # Removed or replaced by name: SQLite writes on into its own, which a capctl opening now (making
                # its own) does not read: two states, one lost at the last close (walk 43A-2).
                raise StateError(self._log_replaced())
            if self._home is None or self._moved_with_log():
                return
            # Moved or renamed alone (the link re-pointed): the log SQLite writes stayed behind (walk 41B-1).
            raise StateError(self._away_from_log(_real(self.path)))
        if now is None:
            raise StateError(
                f"{self.url}: the state file is gone from that path (moved or deleted while capctl had it open):"
                " nothing more is written to it; put it back there and capctl goes on"
            )
        raise StateError(
            f"{self.url}: another file is at that path now (the state file was replaced while capctl had it"
            " open): nothing more is written to the one capctl opened; put it back there and capctl goes on,"
            " or stop capctl and see docs/state.md, Restoring a backup"
        )

    def _log_replaced(self) -> str:
        assert self._home is not None
        return (
            f"{self.url}: the -wal and -shm files SQLite opened beside {self._home[1]} were removed or replaced while"
            " capctl had the state open: what capctl writes goes to its log, which no capctl opening the state now"
            " reads (it makes a log of its own); nothing is written; stop capctl and start it again (closing, it"
            " writes its log into the file), and never remove or move those files while a capctl runs"
            " (docs/state.md, Moving it)"
        )

    def _moved_with_log(self) -> bool:
        """Whether the file was moved (a link re-pointed) together with the very -wal and -shm SQLite has open:
        then a capctl opening it where it is now shares every file this one writes, as before the move; the store
        follows it there (walk 42A-2: 41B-1's refusal stopped a daemon whose state's files were all moved)."""
        with self._mutex:
            if self._home is None or self._log is None:
                return False
            real = _real(self.path)
            try:
                directory = os.open(real.parent, _DIRECTORY)
            except OSError:
                return False
            there = (directory, real.name)
            assert self._identity is not None
            if not _names(there, self._identity) or _log_files(there) != self._log:
                os.close(directory)
                return False
            os.close(self._home[0])
            self._home = there
            return True

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> FileLock:
        """Take `flock` on the database file itself, and on `<db>.lock` (`lease_seconds` is unused: the OS
        frees both when the process ends).

        The lock on the database file cannot be lost by deleting a file; the one on `<db>.lock` keeps
        capctl versions that locked only that file excluded, and the file records who holds the lock. Its
        modification time is set at each renew and at the release (`silent_for`: how long no holder lived)."""
        if self._file is None:
            raise StateError(f"{self.url}: the store is closed")
        self._check_in_place()
        # Where the path leads now, as a restart would find it: a state directory moved with the link re-pointed
        # left the daemon standing by for good (walk 39A-3); the directory must still hold the file opened.
        real = _real(self.path)
        self.lock_path = real.with_name(real.name + ".lock")
        directory = self._lock_directory()
        try:
            fd, existed = self._open_lock_file(directory, self._file.fd)
        finally:
            os.close(directory)
        try:
            self._file.acquire(lambda: _describe_holder(os.pread(fd, 4096, 0), self.lock_path))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as capctl before issue 14 locks it
            except BaseException:
                self._file.release()
                raise
        except OSError as exc:
            current = os.pread(fd, 4096, 0)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockHeld(_describe_holder(current, self.lock_path)) from None
            raise StateError(f"{self.url}: cannot take the state lock: {exc.strerror}") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            epoch = self._next_epoch()
        except BaseException:
            os.close(fd)
            self._file.release()
            raise
        now = self._clock.now()
        last_sign = os.fstat(fd).st_mtime
        info = {"holder": holder_identity(holder), "since": iso_utc(now)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        description = f"{info['holder']} since {info['since']}"
        self._file.holder = description
        lock = FileLock(fd, self._file, description, epoch, self._check_in_place, self._clock.now)
        lock.silent_for = max(now - last_sign, 0.0) if existed else None
        lock.previous_sign = last_sign if existed else None
        lock._alive()
        return lock

    def _lock_directory(self) -> int:
        """A descriptor of the directory the lock file goes in, checked to hold the state file this store opened.

        The lock's path is where the state's path leads at each lock (beside a linked state file's target, 36B-7;
        again at each lock, 39A-3). Whoever
        owns that directory could move it, state file and all, point the link at its new place and leave a link
        to another directory at the old one: root then made the lock file there and gave it to the state's owner
        (walk 38B-1). The check and the lock file's open go through this one descriptor, so nothing can be
        swapped between them."""
        assert self._file is not None
        parent = self.lock_path.parent
        moved = (
            f"{self.url}: the state file is no longer in {parent} (its directory was moved or replaced while capctl"
            " had it open): nothing is written there; try again (the daemon does every retry period)"
        )
        try:
            directory = os.open(parent, _DIRECTORY)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise StateError(moved) from None
            raise StateError(f"{self.url}: cannot open the lock file {self.lock_path}: {exc.strerror}") from None
        try:
            held = os.stat(self.lock_path.name.removesuffix(".lock"), dir_fd=directory, follow_symlinks=False)
            here = (held.st_dev, held.st_ino) == self._file.key
        except OSError:
            here = False
        if not here:
            os.close(directory)
            raise StateError(moved)
        # Only beside the log SQLite writes (walk 41B-1): a moved directory takes it along; a second name of the
        # file elsewhere has none of it.
        if self._home is not None:
            home, there = os.fstat(self._home[0]), os.fstat(directory)
            if (home.st_dev, home.st_ino, self._home[1]) != (there.st_dev, there.st_ino, self.lock_path.stem):
                os.close(directory)
                raise StateError(self._away_from_log(self.lock_path.with_suffix("")))
        return directory

    def _away_from_log(self, now_at: Path) -> str:
        assert self._home is not None
        return (
            f"{self.url}: the state file was moved to {now_at} while capctl had it open, away from the -wal and -shm"
            f" files SQLite keeps beside its name {self._home[1]} where capctl opened it: what capctl writes goes to"
            " that log, which no capctl opening the state where it is now reads (nor the commits already in it);"
            " nothing is written; put it back and capctl goes on (move a state only with every capctl on it stopped:"
            " docs/state.md, Moving it)"
        )

    def _open_lock_file(self, directory: int, state_fd: int) -> tuple[int, bool]:
        """The lock file, opened in `directory` (made if missing), and whether it was there before."""
        # Never through a link, and only a file of its own (walk 37B-1): a link or a hard link planted as the
        # lock file by whoever may write the state's directory made root truncate the file it leads to and, by
        # the fchown below, give it to the state's owner (/etc/shadow to the service user).
        not_own = (
            f"{self.url}: the lock file {self.lock_path} is a link or not a plain file: capctl writes only a lock"
            " file of its own, never where a link leads; remove it (capctl makes it again) and see who put it there"
        )
        name = self.lock_path.name
        try:
            existed = _exists(name, directory)  # a new file records no previous holder
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=directory)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StateError(not_own) from None
            state = os.fstat(state_fd)
            back = _pinned_chown(self.lock_path.parent, [name], f"{state.st_uid}:{state.st_gid}")
            back = back and f"give it to the state file's owner: {back}"
            raise StateError(
                f"{self.url}: cannot open the lock file {self.lock_path}: {exc.strerror}"
                f"{_foreign(exc, self.lock_path, back)}"
            ) from None
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_nlink != 1:
            os.close(fd)
            raise StateError(not_own)
        if os.geteuid() == 0 and opened.st_uid == 0:
            # As SQLite gives its -wal and -shm files: a lock file root has (`sudo capctl apply`) on a state
            # another user owns goes to that user, whose capctl could not open it otherwise (its daemon stood by).
            # Whether this open made it or an older capctl did (walk 36B-4): judged by its owner, not by a
            # look before the open that another process's create or delete can make stale.
            state = os.fstat(state_fd)
            with contextlib.suppress(OSError):
                os.fchown(fd, state.st_uid, state.st_gid)
        return fd, existed

    def _next_epoch(self) -> int:
        """Raise the lock's epoch for a new holder (who holds the flock), and return it. A damaged file is
        found first (a quick check of every page), so that taking the lock of a damaged state writes nothing."""
        with self._cursor(write=False) as cur:
            cur.execute("PRAGMA quick_check(1)", ())
            problems = [str(row[0]) for row in cur.fetchall()]
        if problems != ["ok"]:
            raise StateDamaged(self.url, "database disk image is malformed")  # as SQLite words it on a read
        self._migrate_leadership()
        with self._cursor(write=True) as cur:
            cur.execute(
                "INSERT INTO capctl_lock (name, epoch) VALUES (?, 1)"
                " ON CONFLICT (name) DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
                (LOCK_NAME,),
            )
            epoch: int = cur.fetchall()[0][0]
        return epoch

    def close(self) -> None:
        with self._mutex:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._home is not None:
                os.close(self._home[0])
                self._home = None
            if self._file is not None:  # after the connection: see `_DbFile`
                self._file.close()
                self._file = None


def _described(exc: sqlite3.Error, path: Path) -> str:
    """SQLite's message; for an I/O error (its bare `disk I/O error`), which one and what usually causes it; for a
    full file system (`database or disk is full`), which one; for
    a write refused by the file's or directory's permissions or a read-only mount (its bare `attempt to write a
    readonly database`, or `unable to open database file`), which one and what to do."""
    code, name = getattr(exc, "sqlite_errorcode", 0), getattr(exc, "sqlite_errorname", "")
    real = _real(path)  # walk 36B-1: the link's own directory was named
    led = "" if real == path else f" (where {path} leads)"
    if code & 0xFF == sqlite3.SQLITE_IOERR:
        return (
            f"{exc} ({name or 'SQLITE_IOERR'}: the system refused a read or write of the database, its -wal or -shm"
            " file: a full disk, a file size limit (ulimit -f), a failing disk)"
        )
    if code & 0xFF == sqlite3.SQLITE_FULL:  # capctl sets no max_page_count: the file system (walk 55D-3)
        return (
            f"{exc} (SQLITE_FULL: the file system holding {real.parent}{led} is full, or this user's quota there:"
            " free space there (the state's -wal file beside it needs room too, up to a few times the state's"
            " size), or keep the state elsewhere)"
        )
    if code & 0xFF in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN) and _read_only_mount(real.parent):
        # A WAL database on a read-only mount (a volume `readOnly: true`) opens for no one: only `unable to open`.
        return (
            f"{exc} ({name}: the file system holding {real.parent}{led} is mounted read-only: capctl writes its state"
            " there, and SQLite the state's -wal and -shm files even to read it; mount it read-write, or keep the"
            " state elsewhere)"
        )
    if code & 0xFF != sqlite3.SQLITE_READONLY or name == "SQLITE_READONLY_DBMOVED":
        return str(exc)
    # Root writes whatever the mode bits say, so these reach a capctl run as another user (a container's uid).
    if name == "SQLITE_READONLY_DIRECTORY":
        return (
            f"{exc} ({name}: capctl, running as uid {os.geteuid()}, cannot write the directory {real.parent}{led}:"
            " SQLite makes the state's -wal and -shm files there, even to read it; give this user write access to"
            " that directory, or run capctl as its owner)"
        )
    # Which of the three: an -shm left read-only (made while the state file was, which SQLite gives the file's
    # mode) outlives a chmod of the state file back to writable, and its name is the whole fix.
    files = [p for p in (real, *(real.with_name(real.name + end) for end in ("-wal", "-shm"))) if _unwritable(p)]
    named = ", ".join(map(str, files)) if files else f"the state file {real} or its -wal or -shm file"
    return (
        f"{exc} ({name or 'SQLITE_READONLY'}: capctl, running as uid {os.geteuid()}, cannot write {named}{led}; give"
        " this user write access, or run capctl as the owner)"
    )


def _foreign(exc: OSError, path: Path, remedy: str) -> str:
    """For a file this user may not open because another user's: whose it is and how to give it back."""
    if not remedy:
        return ""
    try:
        owner = path.stat().st_uid
    except OSError:
        return ""
    if exc.errno not in (errno.EACCES, errno.EPERM) or owner == os.geteuid():
        return ""
    return _made_by(f"the file belongs to uid {owner}", remedy)


def _closed_directory(exc: OSError, real: Path, ids: str) -> str:
    """For a state whose directory this user may not enter, another user's: a first `sudo capctl apply` makes a
    missing one root's, 0700, and the service user read only `Permission denied` (walk 39A-1)."""
    directory = real.parent
    try:
        found = directory.stat()
    except OSError:
        return ""
    owner = found.st_uid
    if exc.errno not in (errno.EACCES, errno.EPERM) or owner == os.geteuid() or os.access(directory, os.X_OK):
        return ""
    # Only one as capctl makes it (0700), never its owner's home (/root is 0700 too): not a directory to give away.
    if stat.S_IMODE(found.st_mode) != 0o700 or directory == _home(owner):
        return ""
    # The directory last: until then nobody else can put a link among its files.
    remedy = _pinned_chown(directory, [real.name + end for end in ("", *_BESIDE)], ids, and_directory=True)
    if not remedy:
        return ""
    remedy = (
        f"if it holds the state's files and nothing else, give it and them to this user (the line checks): {remedy}"
    )
    return _made_by(f"the directory {directory} belongs to uid {owner} and this user may not enter it", remedy)


def _pinned_chown(directory: Path, names: list[str], ids: str, *, and_directory: bool = False) -> str:
    """The line root pastes to give `names` in `directory` (and the directory) to `ids`, or '' when the
    directory cannot be looked at. Safe whatever the refused user does meanwhile to paths they may write
    (walk 40A-2): a parent of theirs let them put a link to /etc at the directory's name, and a chown by
    absolute path gave away /etc/shadow. So the line enters the directory once (`cd -P`), goes on only if that
    is the directory itself (`pwd -P`: no link on the way) with the owner and mode capctl saw (not one the user
    made meanwhile), and then names only what is in it; `-h` (walk 38B-4): a link there is changed itself.
    Quoted (walk 37B-3), `--` (a name may begin with `-`), in a subshell (root's shell stays where it was)."""
    try:
        found = os.stat(directory)
    except OSError:
        return ""
    where = shlex.quote(str(directory))
    seen = f"{found.st_uid}:{stat.S_IMODE(found.st_mode):o}"  # as GNU `stat -c %u:%a` prints them
    given = f"chown -h {ids} -- {' '.join(map(shlex.quote, names))}"
    if and_directory:  # braces: a missing -wal makes chown exit 1 after doing the rest; the directory still goes
        # Only one capctl made: it holds the state file and nothing else but its files. A 0700 directory of
        # root's that this user may not enter may be a system one (/var/lib/private, walk 40A-3), never given.
        literal = [re.sub(r"([*?[\\])", r"\\\1", name) for name in names]  # `find -name` reads a pattern
        others = " ".join(f"! -name {shlex.quote(name)}" for name in literal)
        given = (
            f'[ -f {shlex.quote(names[0])} ] && [ -z "$(find . -mindepth 1 -maxdepth 1 {others})" ]'
            f" && {{ {given}; chown -h {ids} .; }}"
        )
    return f'(cd -P -- {where} && [ "$(pwd -P)" = {where} ] && [ "$(stat -c %u:%a .)" = {seen} ] && {given})'


def _uncreatable(exc: OSError, directory: Path, given: Path) -> str:
    """For a new state refused by its directory (or the nearest of its parents that exists): a read-only mount,
    or another user's directory. A container's uid meets both: its state directory on a read-only root without a
    volume, or a bind-mounted host directory (`docker run -v` makes a missing one root's, 0755) or a volume that
    ignores fsGroup (walk 41D-1); the bare `Permission denied` named neither the directory nor the user.
    `directory` is where the path leads (links followed), `given` the same directory as capctl was given it."""
    place = directory
    while place != place.parent and not _is_directory(place):
        place = place.parent
    blocker = _in_the_way(given) if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.ELOOP) else None
    if blocker is not None:
        # Not a directory that is missing: one of the path's names is taken (walk 42B-1: `File exists` alone).
        return (
            f" ({blocker} is {_not_a_directory(blocker)}: the state's path goes through it; move it away, or keep"
            " the state elsewhere: CAPCTL_STATE or --state)"
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f" (the file system holding {place} is full, or this user's quota there: free space (or files: inodes)"
            " there, or keep the state elsewhere: CAPCTL_STATE or --state)"
        )
    refused = exc.errno in (errno.EACCES, errno.EPERM)
    if exc.errno == errno.EROFS or (refused and _read_only_mount(place)):
        return (
            f" (the file system holding {place} is mounted read-only: capctl writes its state there; mount a"
            " writable volume there, or keep the state elsewhere: CAPCTL_STATE or --state)"
        )
    if not refused or os.access(place, os.W_OK | os.X_OK):
        return ""
    try:
        found = place.stat()
    except OSError:
        return ""
    groups = ",".join(str(gid) for gid in sorted({os.getegid(), *os.getgroups()}))
    what, access = "write", ": give this user write access to it"
    if not os.access(place, os.X_OK):  # what is below it, missing or there (a state, even), cannot be told (43A-3)
        what = "enter"
        access = (
            ", so cannot tell what is below it: give this user search access (x) to it, and write access too if the"
            " directories below it are not there yet"
        )
    return (
        f" (capctl, running as uid {os.geteuid()} (groups {groups}), cannot {what} the directory {place} (owner uid"
        f" {found.st_uid}, group {found.st_gid}, mode {stat.S_IMODE(found.st_mode):04o}){access} (a container's"
        " volume: owned by the container's uid, or writable by a group it runs with,"
        " Kubernetes' fsGroup), or keep the state elsewhere: CAPCTL_STATE or --state)"
    )


def _home(uid: int) -> Path | None:
    try:
        return Path(pwd.getpwuid(uid).pw_dir).resolve()
    except (KeyError, OSError):
        return None


def _made_by(what: str, remedy: str) -> str:
    return f" (capctl runs as uid {os.geteuid()}, {what}: a capctl run as that user made it; {remedy})"


def _real(path: Path) -> Path:
    """Where SQLite works for `path`: it follows a linked state file, and makes the -wal and -shm files beside
    the file the link leads to; so the directory and mount that matter, and capctl's `<db>.lock`, are there."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a loop: named when the file is opened
        return path


def _find_names(path: Path) -> str:
    return f"find its names with: find {_quoted([_mount_point(path)])} -xdev -samefile {_quoted([path])}"


def _being_linked(path: Path, key: tuple[int, int]) -> bool:
    """Whether the file's other name is the temporary one of a new state being linked into place (`_create_new`:
    another capctl, between its link and its unlink)."""
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            if entry.name.startswith(f".{path.name}.new-"):
                found = entry.stat(follow_symlinks=False)
                if (found.st_dev, found.st_ino) == key:
                    return True
    return False


def _mount_point(path: Path) -> Path:
    """The directory the file system holding `path` is mounted on (where `find -xdev` looks for its other names)."""
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _in_the_way(directory: Path) -> Path | None:
    """The first name along `directory`, as given, that is there but leads to no directory. A link is named, not
    the file it leads to: moving that file away was the advice, though the link is what is in the way (43A-1)."""
    for depth in range(1, len(directory.parts) + 1):
        name = Path(*directory.parts[:depth])
        if not os.path.lexists(name):
            return None  # missing from here on (made), or not to be known (a parent this user may not enter)
        if not _is_directory(name):
            return name
    return None


def _not_a_directory(name: Path) -> str:
    if not name.is_symlink():
        return "a file, not a directory" if name.is_file() else "not a directory"
    try:
        name.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link that loops, not a directory"
    led = Path(os.path.realpath(name))
    return f"a symbolic link to {'the file ' if led.is_file() else ''}{led}, not a directory"


def _is_directory(path: Path) -> bool:
    """Whether `path` is a directory, False where it cannot be known (a parent this user may not enter)."""
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return False


def _read_only_mount(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _unwritable(path: Path) -> bool:
    try:
        return path.exists() and not os.access(path, os.W_OK)
    except OSError:
        return False


def _quoted(paths: list[Path]) -> str:
    return " ".join(shlex.quote(str(path)) for path in paths)


def _exists(name: str, directory: int) -> bool:
    try:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _names(home: tuple[int, str], identity: tuple[int, int]) -> bool:
    """Whether the directory `home[0]` (a descriptor) still has the file `identity` by the name `home[1]`."""
    try:
        st = os.stat(home[1], dir_fd=home[0], follow_symlinks=False)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == identity


def _log_files(home: tuple[int, str] | None) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The (st_dev, st_ino) of the -wal and -shm beside the name `home[1]` in the directory `home[0]`, or None."""
    if home is None:
        return None
    try:
        found = [os.stat(home[1] + end, dir_fd=home[0], follow_symlinks=False) for end in ("-wal", "-shm")]
    except OSError:
        return None
    return (found[0].st_dev, found[0].st_ino), (found[1].st_dev, found[1].st_ino)


def _normal(path: Path) -> Path:
    """`path` without `.` and `..` (`sqlite:///../x.db` was named `/work/st/../x.db` in every message), where
    that is the same directory: a `..` after a link leads beside the link's target, so the path stays as given."""
    normal = Path(os.path.normpath(path))
    return normal if os.path.realpath(normal.parent) == os.path.realpath(path.parent) else path


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _text_or_bytes(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _describe_holder(content: bytes, lock_path: Path) -> str:
    try:
        info = json.loads(content)
        return f"{info['holder']} since {info['since']}"
    except (ValueError, TypeError, KeyError):
        # The holder has locked the file but not yet written its name (or an old file is in the way).
        return f"another process (holder not recorded in {lock_path})"


class _DbFile:
    """The one descriptor per process on a database file that capctl flocks, shared by its stores.

    Closing any descriptor of a file drops every POSIX (fcntl) lock the process holds on that file,
    SQLite's own included: so it is opened once per file and closed only when the last store of this process
    on that file closes, after its SQLite connection. flock on it does not conflict with SQLite's fcntl
    locks (a separate lock family on Linux). Locks taken in this process are told apart by `holder`,
    since they share the descriptor and flock would let a second one through.
    """

    _open: ClassVar[dict[tuple[int, int], _DbFile]] = {}
    _registry: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, key: tuple[int, int], fd: int) -> None:
        self.key, self.fd, self.refs = key, fd, 1
        self.holder: str | None = None  # the lock held by this process, if any

    @classmethod
    def open(cls, path: Path) -> _DbFile:
        with cls._registry:
            st = path.stat()
            shared = cls._open.get((st.st_dev, st.st_ino))
            if shared is not None:
                shared.refs += 1
                return shared
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
            cls._open[(st.st_dev, st.st_ino)] = shared = cls((st.st_dev, st.st_ino), fd)
            return shared

    def acquire(self, describe: Callable[[], str]) -> None:
        """flock the file, or raise `LockHeld` (this process: its holder; another one: `describe()`)."""
        with self._registry:
            if self.holder is not None:
                raise LockHeld(self.holder)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise LockHeld(describe()) from None
                raise
            self.holder = "this process (taking the lock)"

    def release(self) -> None:
        with self._registry:
            if self.holder is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                self.holder = None

    def retain(self) -> None:
        """One more user of the descriptor: a held lock keeps it open even if its store is closed first."""
        with self._registry:
            self.refs += 1

    def close(self) -> None:
        with self._registry:
            self.refs -= 1
            if self.refs == 0:
                del self._open[self.key]
                os.close(self.fd)


class FileLock(LockContext):
    """A held flock on the database file and its `.lock` file; release (or the process dying) frees both."""

    def __init__(
        self,
        fd: int,
        db_file: _DbFile,
        holder: str,
        epoch: int,
        in_place: Callable[[], None],
        now: Callable[[], float],
    ) -> None:
        self._fd: int | None = fd
        self._in_place = in_place
        self._now = now
        self.silent_for: float | None = None
        self.previous_sign: float | None = None  # the `.lock` file's time at this taking (None: a new file)
        self._quiet = False  # `keep_silence`: the file keeps `previous_sign`
        self._unheard_for: float | None = None  # `unheard_since`: the file's time, seconds before now
        self._db_file = db_file
        db_file.retain()
        self.holder = holder
        self.epoch = epoch

    def renew(self) -> None:
        """Nothing to extend (an OS lock lasts while the process holds it), but a lock on a file moved away
        from the state's path no longer excludes anyone there: that fails, as a lapsed lease would."""
        if self._fd is None:
            raise StateError("the state lock was already released")
        self._in_place()
        self._alive()

    def keep_silence(self) -> None:
        """A command answers no callbacks: the file keeps the time of the previous holder's last sign of life
        (walk 25B-3: an apply while the daemon was stopped hid the silence before it)."""
        self._quiet = True
        self._alive()

    def unheard_since(self, seconds_ago: float) -> None:
        self._unheard_for = max(seconds_ago, 0.0)
        self._alive()

    def _alive(self) -> None:
        """The `.lock` file's modification time says when its holder was last alive (the next holder reads it)."""
        if self._fd is None:
            return
        moment = self.previous_sign if self._quiet and self.previous_sign is not None else self._now()
        if self._unheard_for is not None and not self._quiet:
            moment -= self._unheard_for
        # Best effort: a lost sign only makes the next holder's silence read longer (a few repair starts), while
        # a raise would refuse the lock or a renew. Setting a time needs the file's owner: another user sharing
        # the state (a group-writable `.lock`) sets the kernel's now, which needs only write access.
        with contextlib.suppress(OSError):
            try:
                os.utime(self._fd, (moment, moment))
            except PermissionError:
                os.utime(self._fd)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            self._alive()
            os.close(self._fd)
            self._fd = None
            self._db_file.release()
            self._db_file.close()
