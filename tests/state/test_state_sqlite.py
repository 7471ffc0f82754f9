"""What only the SQLite store promises: a private file, WAL, a schema check (speed: bench/state_store.py)."""

from __future__ import annotations

import fcntl
import os
import shlex
import signal
import sqlite3
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler.clock import FakeClock
from reconciler.state import LockHeld, SQLiteStateStore, StateDamaged, StateError

from .helpers import make_record, start_worker


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_private_to_their_owner(tmp_path: Path) -> None:
    db = tmp_path / "new" / "dir" / "state.db"
    old = os.umask(0)  # even a permissive umask must not widen the files
    try:
        store = SQLiteStateStore(db)
        store.put(make_record())
        store.lock("capctl apply").release()
    finally:
        os.umask(old)
    files = {p.name: mode(p) for p in db.parent.iterdir()}
    store.close()
    assert files["state.db"] == 0o600
    assert files["state.db.lock"] == 0o600
    assert files["state.db-wal"] == 0o600  # SQLite copies the database file's mode
    assert mode(db.parent) == 0o700


def test_new_files_opened_together_all_switch_to_wal(tmp_path: Path) -> None:
    # SQLite answers "database is locked" at once (no busy wait) to connections switching one new file
    # to WAL together; unretried, a few rounds in a hundred failed here.
    for round_ in range(150):
        db = tmp_path / f"r{round_}" / "state.db"
        with ThreadPoolExecutor(max_workers=6) as pool:
            stores = list(pool.map(SQLiteStateStore, [db] * 6))
        for opened in stores:
            opened.close()
        assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_wal_journal_is_on(tmp_path: Path) -> None:
    SQLiteStateStore(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_lock_since_comes_from_the_injected_clock(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path / "s.db", clock=FakeClock(start=1_795_000_000.0))
    with store.lock("capctl apply") as lock:
        assert lock.holder.endswith("(capctl apply) since 2026-11-18T11:06:40Z")
        # The holder is also written into the lock file, for other processes to read.
        assert "2026-11-18T11:06:40Z" in (tmp_path / "s.db.lock").read_text()
    assert (tmp_path / "s.db.lock").read_text() == ""  # released: no stale holder left behind
    store.close()


def test_a_holder_that_wrote_no_name_is_still_reported(tmp_path: Path) -> None:
    # Also a capctl from before issue 14, which locked only `<db>.lock`: during an upgrade it still excludes.
    store = SQLiteStateStore(tmp_path / "s.db")
    fd = os.open(tmp_path / "s.db.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(LockHeld, match=r"another process .*s\.db\.lock"):
            store.lock("capctl apply")
    finally:
        os.close(fd)
    store.lock("capctl apply").release()  # the refused attempt left the database file unlocked
    store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    SQLiteStateStore(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as raw:
        raw.execute("UPDATE capctl_meta SET schema_version = 99")
    with pytest.raises(StateError, match="schema version 99 was written by a newer capctl"):
        SQLiteStateStore(tmp_path / "s.db")


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello, this is not SQLite " * 100)
    with pytest.raises(StateError, match=r"sqlite:///.*notes\.txt looks damaged \(file is not a database\); restore"):
        SQLiteStateStore(tmp_path / "notes.txt")


@pytest.mark.parametrize(
    ("place", "said"),
    [
        ("a-file/state.db", "File exists ({top}/a-file is a file, not a directory: "),
        ("a-file/sub/state.db", "Not a directory ({top}/a-file is a file, not a directory: "),
        ("loop/state.db", "File exists ({top}/loop is a symbolic link that loops, not a directory: "),
        ("loop/sub/state.db", "Too many levels of symbolic links ({top}/loop is a symbolic link that loops, not "),
        # The link the path goes through, not the file it leads to (walk 43A-1: moving that file away was the advice)
        ("a-link/state.db", "File exists ({top}/a-link is a symbolic link to the file {top}/a-file, not a directory: "),
        ("a-link/sub/state.db", "Not a directory ({top}/a-link is a symbolic link to the file {top}/a-file, not a "),
    ],
)
def test_an_unwritable_place_is_named(tmp_path: Path, place: str, said: str) -> None:
    """Walk 42B-1: a file or a looping link where a directory of the state's path should be read only `File
    exists` or `Not a directory`, naming neither the file nor what to do."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "a-link").symlink_to("a-file")
    with pytest.raises(StateError) as refused:
        SQLiteStateStore(tmp_path / place)
    told = str(refused.value)
    assert f"{place}: cannot create the state file: {said.format(top=tmp_path)}" in told, told
    assert told.endswith("move it away, or keep the state elsewhere: CAPCTL_STATE or --state)"), told
    assert sorted(os.listdir(tmp_path)) == ["a-file", "a-link", "loop"]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: mounts a small tmpfs")
def test_a_full_file_system_is_named(tmp_path: Path) -> None:
    """Walk 42B-2: a new state on a full file system (here: out of inodes) read only `No space left on device`."""
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=2", "none", str(full)]).returncode:
        pytest.fail(f"root cannot mount a tmpfs on {full} here; run the tests where root can mount", pytrace=False)
    try:
        (full / "taken").mkdir()  # the last inode: the root directory holds the other
        with pytest.raises(StateError) as refused:
            SQLiteStateStore(full / "new" / "state.db")
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert (
        "new/state.db: cannot create the state file: No space left on device (the file system holding"
        f" {full} is full, or this user's quota there: free space (or files: inodes) there, or keep the state"
        " elsewhere: CAPCTL_STATE or --state)"
    ) in str(refused.value), str(refused.value)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: mounts a small tmpfs")
def test_a_state_whose_file_system_fills_up_is_named_and_never_left_torn(tmp_path: Path) -> None:
    """Walk 55D-3: a new state on a nearly full disk was linked torn (close() failed its checkpoint silently, the
    log was deleted): every command then said `looks damaged (database disk image is malformed); restore it
    from a backup`. An existing state on a full disk said only SQLite's `database or disk is full`."""
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "none", str(full)]).returncode:
        pytest.fail(f"root cannot mount a tmpfs on {full} here; run the tests where root can mount", pytrace=False)
    said = (
        f"database or disk is full (SQLITE_FULL: the file system holding {full} is full, or this user's quota"
        " there: free space there (the state's -wal file beside it needs room too"
    )
    try:
        with pytest.raises(StateError) as refused:  # the schema fits in its log, not in log and file at once
            SQLiteStateStore(full / "state.db")
        assert not isinstance(refused.value, StateDamaged) and said in str(refused.value), str(refused.value)
        assert os.listdir(full) == []  # nothing torn left behind
        subprocess.run(["mount", "-o", "remount,size=256k", str(full)], check=True)
        store = SQLiteStateStore(full / "state.db")
        try:
            with pytest.raises(StateError) as refused:
                for i in range(2000):  # each record some 1 KB: the file system fills within the loop
                    store.put(make_record(f"SnapshotJob/lobby-audit/room-{i:04d}", last_error="x" * 800))
        finally:
            store.close()
        told = str(refused.value)
        del refused  # its traceback holds the failed statement, and with it SQLite's files open: the mount busy
        assert said in told, told
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_a_corrupt_row_is_named_on_load(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path / "s.db")
    store.put(make_record("SnapshotJob/ok/room"))
    with sqlite3.connect(tmp_path / "s.db") as raw:
        raw.execute("INSERT INTO capctl_records VALUES ('SnapshotJob/bad/room', '{\"key\": 1')")
    with pytest.raises(StateError, match=r"s\.db: row 'SnapshotJob/bad/room': stored record is not valid JSON"):
        store.load()
    store.close()


def test_the_daemons_store_gives_a_busy_file_up_within_its_second(tmp_path: Path) -> None:
    """Walk 14D-2: the daemon calls its store on its event loop, so SQLite's 5 s busy wait (a `sqlite3` shell
    holding BEGIN EXCLUSIVE) stalled every timer there, and a vendor call in flight failed as a timeout."""
    import time

    from reconciler.daemon.main import LOCK_WAIT, open_daemon_state

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = open_daemon_state(url)
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        began = time.monotonic()
        with pytest.raises(StateError, match=r"s\.db: another process kept the database busy for over 1 s"):
            store.put(make_record())
        assert LOCK_WAIT <= time.monotonic() - began < 3.0  # not the one-shot commands' 5 s
    finally:
        blocker.rollback()
        blocker.close()
    assert store.put(make_record()) == 1
    store.close()


def test_a_writer_blocked_too_long_gets_a_clear_error(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path / "s.db", busy_timeout=0.05)
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StateError, match=r"kept the database busy for over 0\.05 s"):
            store.put(make_record())
    finally:
        blocker.rollback()
        blocker.close()
    assert store.put(make_record()) == 1
    store.close()


def test_a_dangling_symlink_is_created_where_it_points_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "state.db").symlink_to(tmp_path / "disk" / "real.db")
    store = SQLiteStateStore(tmp_path / "state.db")
    assert store.created and store.put(make_record()) == 1
    store.close()
    assert sorted(os.listdir(tmp_path / "disk")) == ["real.db"]  # built as .real.db.new-…, linked, removed


def test_a_symlink_loop_is_named(tmp_path: Path) -> None:
    (tmp_path / "state.db").symlink_to(tmp_path / "state.db")
    with pytest.raises(StateError, match=r"state\.db: cannot open the state file: Too many levels of symbolic links"):
        SQLiteStateStore(tmp_path / "state.db")


def test_a_state_file_moved_away_or_replaced_refuses_writes_until_it_is_back(tmp_path: Path) -> None:
    """Before (walk 13C-1), a store whose file was moved or deleted kept writing into it: those writes were
    lost, and the lock no longer excluded a capctl at the path, which made a new state there."""
    db, away = tmp_path / "state.db", tmp_path / "away.db"
    store = SQLiteStateStore(db)
    store.put(make_record("SnapshotJob/a/r"))
    lock = store.lock("capctl run")
    db.rename(away)
    with pytest.raises(StateError, match=r"state\.db: the state file is gone from that path \(moved or deleted"):
        store.put(make_record("SnapshotJob/b/r"))
    with pytest.raises(StateError, match="gone from that path"):
        lock.renew()  # the daemon's leader stands by at its renew deadline
    SQLiteStateStore(tmp_path / "other.db").close()
    (tmp_path / "other.db").rename(db)  # a backup restored by hand while capctl runs
    with pytest.raises(StateError, match="another file is at that path now"):
        store.put(make_record("SnapshotJob/b/r"))
    db.rename(tmp_path / "other.db")
    away.rename(db)  # put back: capctl goes on
    lock.renew()
    assert store.put(make_record("SnapshotJob/b/r")) == 2
    lock.release()
    db.rename(away)
    with pytest.raises(StateError, match="gone from that path"):
        store.lock("capctl run")
    away.rename(db)
    store.close()
    assert set(SQLiteStateStore(db).load().records) == {"SnapshotJob/a/r", "SnapshotJob/b/r"}


def test_no_new_state_is_made_over_the_write_ahead_log_of_a_moved_one(tmp_path: Path) -> None:
    """Its log left at the path (a capctl still has the moved file open), SQLite replayed it into the new
    file: pages of another database in a new state (walk 13C-1)."""
    db = tmp_path / "state.db"
    store = SQLiteStateStore(db)
    store.put(make_record())
    db.rename(tmp_path / "away.db")
    with pytest.raises(StateError, match=r"no state file but its write-ahead log .*state\.db-wal is there"):
        SQLiteStateStore(db)
    assert not db.exists()
    store.close()  # its log stays at the path (its commits are not in the moved file)
    (tmp_path / "away.db").rename(db)  # put back, file and log are one state again
    assert SQLiteStateStore(db).load().serial == 1


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_a_log_or_index_file_planted_as_a_hard_link_is_refused_and_what_it_leads_to_is_left_as_it_was(
    tmp_path: Path, suffix: str
) -> None:
    """Walk 38B-2: SQLite refuses a `-wal` or `-shm` that is a symbolic link, not a hard link: it wrote its index
    into the file a planted `-shm` shares, and run as root gave it (or a `-wal`'s) to the state's owner. Where
    `fs.protected_hardlinks` is 0, whoever may write the state's directory can link any file of that disk there."""
    SQLiteStateStore(tmp_path / "state.db").close()
    if os.geteuid() == 0:  # as `sudo capctl` on a service user's state (CI runs as root)
        os.chown(tmp_path / "state.db", 65534, 65534)
    victim = tmp_path / "victim"
    victim.write_text("root:secret\n")
    victim.chmod(0o600)
    os.link(victim, tmp_path / f"state.db{suffix}")
    refused = rf"the file .*state\.db{suffix} is a link or not a plain file \(2 names\): .*remove the name"
    with pytest.raises(StateError, match=refused) as caught:
        SQLiteStateStore(tmp_path / "state.db", create=False)
    # Walk 39A-2: where its other name is, and why a `cp -al` of a live state (the likely honest cause) is none.
    mount = tmp_path
    while not os.path.ismount(mount):
        mount = mount.parent
    assert (
        f"; find its names with: find {shlex.quote(str(mount))} -xdev -samefile"
        f" {shlex.quote(str(tmp_path / f'state.db{suffix}'))} (a hard-link copy of a live state, `cp -al`, shares"
        " the files SQLite writes in place: it is no copy; docs/state.md, Backups)"
    ) in str(caught.value)
    assert victim.read_text() == "root:secret\n" and victim.stat().st_uid == os.geteuid()
    (tmp_path / f"state.db{suffix}").unlink()
    SQLiteStateStore(tmp_path / "state.db", create=False).close()


def test_a_state_file_with_a_second_name_is_refused_by_either(tmp_path: Path) -> None:
    """Walk 41B-2: SQLite keeps a -wal and -shm beside the name it opens a file by. A state file linked into another
    directory (`ln`, `cp -al` of a stopped state) was opened by both names: what the holder by one wrote was not
    seen by the other, which took the lock at the same epoch, and its commits were lost when the first came back."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = tmp_path / "a" / "state.db"
    store = SQLiteStateStore(first)
    store.put(make_record("SnapshotJob/x/kept"))
    store.close()
    os.link(first, tmp_path / "b" / "state.db")
    mount = tmp_path
    while not os.path.ismount(mount):
        mount = mount.parent
    for name in (first, tmp_path / "b" / "state.db"):
        with pytest.raises(StateError, match=r"the state file .* has 2 names \(hard links\)") as caught:
            SQLiteStateStore(name, create=False)
        assert f"find {shlex.quote(str(mount))} -xdev -samefile {shlex.quote(str(name))}" in str(caught.value)
        assert not name.with_name("state.db-wal").exists() and not name.with_name("state.db.lock").exists()
    (tmp_path / "b" / "state.db").unlink()
    # A new state's own second name, for the moment it is linked into place (`_create_new`), is no other name.
    os.link(first, tmp_path / "a" / ".state.db.new-1-2")
    again = SQLiteStateStore(first, create=False)
    assert again.keys() == ["SnapshotJob/x/kept"]
    again.close()


def test_the_name_a_second_name_refusal_says_to_keep_is_the_one_with_the_commits(tmp_path: Path) -> None:
    """Walk 42A-1: after a crash the last commits are in the -wal beside the name the state was opened by. A file
    linked alone elsewhere (`ln`) and given to capctl by that name was refused with "remove every name but the one
    capctl is given": following it removed the name the -wal is beside, and those commits were lost."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "state.db", tmp_path / "b" / "state.db"
    worker = start_worker("put-then-die", f"sqlite:///{first}", "3")
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == -signal.SIGKILL, err
    assert first.with_name("state.db-wal").stat().st_size > 0  # the commits are in it, not yet in the file
    os.link(first, second)
    with pytest.raises(StateError, match="has 2 names") as caught:
        SQLiteStateStore(second, create=False)
    told = str(caught.value)
    # The advice as a user reads it: keep the name with a -wal beside it (here a/), remove the other.
    assert "keep the one with a non-empty -wal file beside it if one has" in told, told
    assert "remove every name but the one capctl is given" not in told, told
    second.unlink()
    kept = SQLiteStateStore(first, create=False)
    assert (len(kept.keys()), kept.load().serial) == (3, 3)
    kept.close()
