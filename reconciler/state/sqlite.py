"""The default state store: one SQLite file next to the specs, readable by its owner only.

The file is created with mode 0600 before SQLite opens it (SQLite gives its -wal/-shm files the same
mode). WAL journaling with synchronous=NORMAL makes every commit durable against a crash of the process
(what "a crash mid-apply loses nothing already committed" needs) at well under a millisecond per commit;
only an OS crash or power loss can drop the last few commits. The apply lock is an OS lock (`flock`) on
`<db>.lock`, so it disappears with the process that held it, however that process ended.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.clock import Clock, SystemClock

from .base import LockHeld, StateError, StateMissing
from .sql import Cursor, LockContext, Queries, SqlStateStore, holder_identity, iso_utc


class SQLiteStateStore(SqlStateStore):
    """State in one SQLite file. Safe to share between threads (calls are serialised) and processes."""

    queries = Queries.build(
        mark="?",
        for_update="",
        has_meta="SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'capctl_meta'",
        has_key="SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'capctl_fingerprint_key'",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        busy_timeout: float = 5.0,
        create: bool = True,
    ):
        """With `create=False` nothing is created: no directory, file or table (read-only commands);
        a missing or empty file raises `StateMissing`, naming the path as given and resolved."""
        self.path = Path(path).absolute()
        self.url = f"sqlite:///{self.path}"
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.writable = create
        self._clock = clock or SystemClock()
        self._busy_timeout = busy_timeout
        self._mutex = threading.RLock()
        where = self.url if Path(path).is_absolute() else f"sqlite:///{path} (resolved to {self.path})"
        if create:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as exc:
                raise StateError(f"{self.url}: cannot create the state file: {exc.strerror}") from None
        elif not self.path.is_file():
            raise StateMissing(where)
        self._db: sqlite3.Connection | None = None
        try:
            with self._translate_errors():
                # mode=rw: a file that vanished meanwhile is an error, never silently created.
                target = self.path if create else f"file:{urllib.parse.quote(str(self.path))}?mode=rw"
                self._db = sqlite3.connect(
                    target, timeout=busy_timeout, isolation_level=None, check_same_thread=False, uri=not create
                )
                if create:  # a read-only open leaves the file as it is (capctl's own files are WAL already)
                    mode = self._switch_to_wal(self._db)
                    if mode != "wal":
                        raise StateError(f"{self.url}: SQLite refused WAL journaling (journal mode is {mode})")
                self._db.execute("PRAGMA synchronous=NORMAL")
            if create:
                self._init_schema()
            else:
                self._find_schema(where)
        except BaseException:
            self.close()
            raise

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
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise StateError(
                    f"{self.url}: another process kept the database busy for over {self._busy_timeout:g} s"
                ) from exc
            raise StateError(f"{self.url}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StateError(f"{self.url}: {exc}") from exc

    @contextmanager
    def _cursor(self, *, write: bool) -> Iterator[Cursor]:
        with self._mutex, self._translate_errors():
            if self._db is None:
                raise StateError(f"{self.url}: the store is closed")
            cur = self._db.cursor()
            # IMMEDIATE takes the write lock up front, so the serial read for compare-and-set cannot go stale.
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield cur
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> FileLock:
        """Take `flock` on `<db>.lock` (`lease_seconds` is unused: the OS frees it when the process ends)."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"{self.url}: cannot open the lock file {self.lock_path}: {exc.strerror}") from None
        try:
            # Each lock() opens its own file description, so two locks in one process conflict too.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            current = os.pread(fd, 4096, 0)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockHeld(_describe_holder(current, self.lock_path)) from None
            raise StateError(f"{self.url}: cannot lock {self.lock_path}: {exc.strerror}") from None
        info = {"holder": holder_identity(holder), "since": iso_utc(self._clock.now())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return FileLock(fd, f"{info['holder']} since {info['since']}")

    def close(self) -> None:
        with self._mutex:
            if self._db is not None:
                self._db.close()
                self._db = None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _describe_holder(content: bytes, lock_path: Path) -> str:
    try:
        info = json.loads(content)
        return f"{info['holder']} since {info['since']}"
    except (ValueError, TypeError, KeyError):
        # The holder has locked the file but not yet written its name (or an old file is in the way).
        return f"another process (holder not recorded in {lock_path})"


class FileLock(LockContext):
    """A held `flock`; closing its file descriptor (or the process dying) releases it."""

    def __init__(self, fd: int, holder: str) -> None:
        self._fd: int | None = fd
        self.holder = holder

    def renew(self) -> None:
        """Nothing to extend: an OS lock lasts while the process holds it."""
        if self._fd is None:
            raise StateError("the state lock was already released")

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
