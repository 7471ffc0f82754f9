"""The apply lock: exclusive, names its holder, and never outlives a dead holder for long.

SQLite's OS lock is freed the moment its process dies; PostgreSQL's lease when it expires, measured on
the database server's clock, so the lease tests wait (briefly) on real time: no FakeClock reaches there.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

import reconciler.state.sqlite as sqlite_module
from reconciler.model import TaskRecord, TaskStatus
from reconciler.state import LockHeld, SQLiteStateStore, StateError, StateStore, open_state, sqlite_path

from .helpers import make_record, start_worker

HOLDER = re.compile(r"pid (\d+) on (\S+) \((.+)\) since (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


def test_second_lock_conflicts_and_names_the_holder(store: StateStore) -> None:
    lock = store.lock("capctl apply")
    with pytest.raises(LockHeld) as caught:
        store.lock("capctl run")  # same process, same store: still refused
    match = HOLDER.match(caught.value.holder)
    assert match, caught.value.holder
    assert match.group(1, 2, 3) == (str(os.getpid()), socket.gethostname(), "capctl apply")
    assert str(caught.value).startswith("state is locked by pid ")
    assert lock.holder == match.group(0)
    lock.release()
    lock.release()  # releasing twice is harmless
    store.lock("capctl run").release()


def test_lock_is_a_context_manager(store: StateStore) -> None:
    with store.lock("capctl state rm") as held:
        held.renew()
        with pytest.raises(LockHeld):
            store.lock("capctl apply")
    store.lock("capctl apply").release()


def test_renew_after_release_is_an_error(store: StateStore) -> None:
    lock = store.lock("capctl apply")
    lock.release()
    with pytest.raises(StateError, match="released"):
        lock.renew()


def test_two_stores_on_the_same_state_share_one_lock(store_url: str) -> None:
    first, second = open_state(store_url), open_state(store_url)
    try:
        with first.lock("capctl apply"), pytest.raises(LockHeld, match=r"\(capctl apply\)"):
            second.lock("capctl run")
        second.lock("capctl run").release()
    finally:
        first.close()
        second.close()


@contextmanager
def lock_holder(store_url: str, lease_seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the lock until it is killed."""
    worker = start_worker("hold-lock", store_url, "capctl run", str(lease_seconds))
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line.startswith("locked pid "), (line, worker.stderr.read() if worker.stderr else "")
        yield worker
    finally:
        worker.kill()
        worker.communicate(timeout=30)


def test_a_holder_through_a_linked_path_is_named_to_one_by_the_real_path(tmp_path: Path) -> None:
    """Walk 36B-7: `<db>.lock` (which records the holder) was made beside the path as given, so a capctl on the
    state by a link and one by the file's own path excluded each other (the flock on the file itself) but the
    second read `holder not recorded in …`; and a link in a directory this user cannot write refused the lock.
    It is beside the file SQLite works on, as the -wal and -shm are."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").mkdir()
    SQLiteStateStore(tmp_path / "real" / "state.db").close()
    (tmp_path / "link" / "state.db").symlink_to("../real/state.db")
    with lock_holder(f"sqlite:///{tmp_path / 'link' / 'state.db'}", lease_seconds=60) as worker:
        store = SQLiteStateStore(tmp_path / "real" / "state.db")
        with pytest.raises(LockHeld, match=rf"^state is locked by pid {worker.pid} on .* \(capctl run\) since "):
            store.lock("capctl apply")
        store.close()
    assert sorted(os.listdir(tmp_path / "link")) == ["state.db"]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_os_lock_dies_with_its_process(store: StateStore, store_url: str) -> None:
    with lock_holder(store_url, lease_seconds=60) as worker:
        with pytest.raises(LockHeld, match=rf"^state is locked by pid {worker.pid} on .* \(capctl run\) since "):
            store.lock("capctl apply")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        store.lock("capctl apply").release()  # at once: the OS dropped the lock with the process


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_lease_of_a_killed_process_lapses_by_itself(store: StateStore, store_url: str) -> None:
    with lock_holder(store_url, lease_seconds=2.0) as worker:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        with pytest.raises(LockHeld, match=rf"pid {worker.pid} .*lease expires \d{{4}}-"):
            store.lock("capctl apply")
        assert take_within(store, seconds=10.0)


def take_within(store: StateStore, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            store.lock("capctl apply").release()
            return True
        except LockHeld:
            time.sleep(0.05)
    return False


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_lease_expires_unless_renewed(store: StateStore) -> None:
    # Leases long enough that a stalled CI machine still checks them while they are held.
    lapsing = store.lock("capctl run", lease_seconds=1.0)
    with pytest.raises(LockHeld):
        store.lock("capctl apply")
    time.sleep(1.2)
    taker = store.lock("capctl apply")
    with pytest.raises(LockHeld, match=r"\(capctl apply\)"):
        lapsing.renew()  # it was taken over: the old holder learns it lost the lock
    lapsing.release()  # must not delete the new holder's lease
    with pytest.raises(LockHeld):
        store.lock("capctl other")
    taker.release()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_renew_keeps_the_lease(store: StateStore) -> None:
    lease = store.lock("capctl run", lease_seconds=2.0)
    for _ in range(3):
        time.sleep(0.8)
        lease.renew()
    # 2.4 s after taking a 2 s lease it is still held, thanks to renew().
    with pytest.raises(LockHeld):
        store.lock("capctl apply")
    lease.release()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_lapsed_lease_nobody_took_can_be_renewed(store: StateStore) -> None:
    lease = store.lock("capctl run", lease_seconds=1.0)
    time.sleep(1.2)
    lease.renew()  # no one held it in between, so nothing happened behind our back
    with pytest.raises(LockHeld):
        store.lock("capctl apply")
    lease.release()


@pytest.mark.parametrize("plant", ["symlink", "hard link"])
def test_a_lock_file_planted_as_a_link_is_refused_and_what_it_leads_to_is_left_as_it_was(
    tmp_path: Path, plant: str
) -> None:
    """Walk 37B-1: whoever may write the state's directory (its service user) could plant `<db>.lock` as a link
    to another file: capctl truncated and wrote that file and, run as root on the service user's state, gave
    it to that user (36B-4's fchown): `/etc/shadow` to the service user. A lock file is only capctl's own."""
    (tmp_path / "st").mkdir()
    victim = tmp_path / "victim"
    victim.write_text("root:secret\n")
    victim.chmod(0o600)
    store = SQLiteStateStore(tmp_path / "st" / "state.db")
    if os.geteuid() == 0:  # as `sudo capctl` on a service user's state (CI runs as root)
        os.chown(tmp_path / "st" / "state.db", 65534, 65534)
    lock_file = tmp_path / "st" / "state.db.lock"
    if plant == "symlink":
        lock_file.symlink_to(victim)
    else:
        os.link(victim, lock_file)
    with pytest.raises(StateError, match=r"the lock file .*state\.db\.lock is a link or not a plain file: .*remove it"):
        store.lock("capctl apply")
    assert victim.read_text() == "root:secret\n" and victim.stat().st_uid == os.geteuid()
    lock_file.unlink()  # as the message says: capctl makes its own again
    store.lock("capctl apply").release()
    store.close()


def test_a_lock_file_is_made_only_in_the_directory_that_holds_the_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 38B-1: whoever owns a linked state file's directory could move that directory (state file and all),
    point the link at its new place and leave a link to another directory (here `etc`) at the old one: the lock's
    open went through the old path, and root made `<name>.lock` there and gave it to the state's owner.
    Walk 39A-3: the path is resolved again at each lock, as a restart would, so the lock goes where the state file
    is now and a daemon standing by takes it (it stood by for good); one swapped in between is still refused."""
    (tmp_path / "st").mkdir()
    (tmp_path / "svc").mkdir()
    (tmp_path / "etc").mkdir()
    SQLiteStateStore(tmp_path / "svc" / "d" / "state.db").close()
    (tmp_path / "st" / "state.db").symlink_to(tmp_path / "svc" / "d" / "state.db")
    store = SQLiteStateStore(tmp_path / "st" / "state.db")
    if os.geteuid() == 0:  # as `sudo capctl` on a service user's state (CI runs as root)
        os.chown(tmp_path / "svc" / "d" / "state.db", 65534, 65534)
    (tmp_path / "svc" / "d").rename(tmp_path / "svc" / "e")  # what the directory's owner does meanwhile
    (tmp_path / "st" / "state.db").unlink()
    (tmp_path / "st" / "state.db").symlink_to(tmp_path / "svc" / "e" / "state.db")
    (tmp_path / "svc" / "d").symlink_to(tmp_path / "etc")
    lock = store.lock("capctl run")
    store.put(make_record("SnapshotJob/x/moved"))  # and it writes on
    lock.release()
    assert (tmp_path / "svc" / "e" / "state.db.lock").is_file() and list((tmp_path / "etc").iterdir()) == []
    # The directory the path led to swapped between that look and the lock file's open: nothing is made there.
    monkeypatch.setattr(sqlite_module, "_real", lambda path: tmp_path / "svc" / "d" / "state.db")
    with pytest.raises(StateError, match=r"the state file is no longer in .*svc/d\b.*: nothing is written there"):
        store.lock("capctl apply")
    assert list((tmp_path / "etc").iterdir()) == []
    store.close()
    again = SQLiteStateStore(tmp_path / "st" / "state.db")
    assert again.keys() == ["SnapshotJob/x/moved"]
    again.close()


def _linked_state_with_a_commit(tmp_path: Path) -> tuple[Path, SQLiteStateStore]:
    """A state at a/state.db reached through the link `state.db`, one record committed; an empty b/ beside."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    link = tmp_path / "state.db"
    link.symlink_to(tmp_path / "a" / "state.db")
    store = SQLiteStateStore(link)
    with store.lock("capctl apply"):
        store.put(make_record("SnapshotJob/x/kept"))
    return link, store


@pytest.mark.parametrize("how", ["to another directory", "renamed in its directory", "a second name elsewhere"])
def test_a_lock_does_not_follow_a_state_file_taken_away_from_its_write_ahead_log(tmp_path: Path, how: str) -> None:
    """Walk 41B-1: SQLite keeps the -wal and -shm it opened beside the file's name at the open, for as long as the
    connection lasts. A lock that followed the file alone to its new place (walk 39A-3 follows a moved directory,
    whose log moves with it) wrote its commits into the log at the old place: a capctl opening the state where it
    is now saw none of them and, after the holder was killed, took the lock at an epoch already handed out."""
    link, store = _linked_state_with_a_commit(tmp_path)
    now_at = {
        "to another directory": tmp_path / "b" / "state.db",
        "renamed in its directory": tmp_path / "a" / "other.db",
        "a second name elsewhere": tmp_path / "b" / "state.db",
    }[how]
    (os.link if how == "a second name elsewhere" else os.rename)(tmp_path / "a" / "state.db", now_at)
    link.unlink()
    link.symlink_to(now_at)
    away = rf"the state file was moved to {re.escape(str(now_at))} while .* away from the -wal .* nothing is written"
    with pytest.raises(StateError, match=away):
        store.lock("capctl run")
    assert not now_at.with_name(now_at.name + ".lock").exists()
    if how != "a second name elsewhere":  # a write too (the file still beside its log at its other name: written)
        with pytest.raises(StateError, match=away):
            store.put(make_record("SnapshotJob/x/lost"))
    # Put back, it goes on: its commits are in the log it left (a restart would not have them: SQLite writes them
    # into the file only beside that log).
    (os.unlink(now_at) if how == "a second name elsewhere" else os.rename(now_at, tmp_path / "a" / "state.db"))
    link.unlink()
    link.symlink_to(tmp_path / "a" / "state.db")
    with store.lock("capctl run"):
        store.put(make_record("SnapshotJob/x/then"))
    store.close()
    again = SQLiteStateStore(link)
    assert again.keys() == ["SnapshotJob/x/kept", "SnapshotJob/x/then"]
    again.close()


def test_a_state_file_moved_with_its_write_ahead_log_is_followed(tmp_path: Path) -> None:
    """Walk 42A-2: a file moved (its link re-pointed) together with the very -wal and -shm SQLite has open shares
    every file with a capctl opening it at its new place, as 40A-1's moved directory does: 41B-1's refusal made a
    daemon stand by until restarted. Without the -shm (another index for the same log) it is still refused."""
    link, store = _linked_state_with_a_commit(tmp_path)
    for end in ("", "-wal"):  # first without its -shm: refused
        os.rename(tmp_path / "a" / f"state.db{end}", tmp_path / "b" / f"state.db{end}")
    link.unlink()
    link.symlink_to(tmp_path / "b" / "state.db")
    with pytest.raises(StateError, match="away from the -wal"):
        store.put(make_record("SnapshotJob/x/lost"))
    os.rename(tmp_path / "a" / "state.db-shm", tmp_path / "b" / "state.db-shm")
    with store.lock("capctl run") as lock:
        assert (store.lock_path, lock.epoch) == (tmp_path / "b" / "state.db.lock", 2)
        store.put(make_record("SnapshotJob/x/then"))
        other = SQLiteStateStore(link, create=False)  # at the new place: sees it at once (the same log)
        assert other.keys() == ["SnapshotJob/x/kept", "SnapshotJob/x/then"]
        other.close()
    store.close()
    again = SQLiteStateStore(link)
    assert again.keys() == ["SnapshotJob/x/kept", "SnapshotJob/x/then"]
    again.close()


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_write_ahead_log_removed_or_replaced_beside_an_open_state_is_refused(tmp_path: Path, journal: str) -> None:
    """Walk 43A-2: with its -wal and -shm removed (a "clean-up") or replaced (a -shm moved in over another capctl's)
    under it, a store wrote on into files no capctl opening the state reads: a second process saw none of its
    commits and wrote its own (two states, one lost). Refused at the next write; after a restart all is there.
    Also for a state found in rollback journal mode (`PRAGMA journal_mode=DELETE` by hand, to copy it as one
    file): switched to WAL at the open, it had no log yet when the store noted it, and was never checked (44B-2)."""
    if journal == "delete":
        SQLiteStateStore(tmp_path / "state.db").close()
        with closing(sqlite3.connect(tmp_path / "state.db")) as raw:
            assert raw.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    store = SQLiteStateStore(tmp_path / "state.db")
    store.put(make_record("SnapshotJob/x/kept"))
    for end in ("-wal", "-shm"):
        os.unlink(tmp_path / f"state.db{end}")
    gone = r"the -wal and -shm files SQLite opened beside .*state\.db were removed or replaced .* nothing is written"
    with pytest.raises(StateError, match=gone):
        store.put(make_record("SnapshotJob/x/lost"))
    with pytest.raises(StateError, match=gone):
        store.lock("capctl run")
    store.close()  # the last connection: its log, by its descriptor, goes into the file
    again = SQLiteStateStore(tmp_path / "state.db")
    assert again.keys() == ["SnapshotJob/x/kept"]
    again.put(make_record("SnapshotJob/x/then"))
    assert again.keys() == ["SnapshotJob/x/kept", "SnapshotJob/x/then"]
    again.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_lease_must_be_positive(store: StateStore) -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        store.lock("capctl apply", lease_seconds=0)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_deleting_the_lock_file_admits_no_second_writer(store: StateStore, store_url: str, tmp_path: Path) -> None:
    # Issue 14, point 11: the lock is on the database file itself; `<db>.lock` only says who holds it.
    lock_file = Path(sqlite_path(store_url) + ".lock")
    with lock_holder(store_url, lease_seconds=60) as worker:
        lock_file.unlink()
        with pytest.raises(LockHeld, match=r"another process \(holder not recorded in .*state\.db\.lock\)"):
            store.lock("capctl apply")
        lock_file.unlink()
        # a second process too: the CLI refuses `state rm` beside the (daemon-like) holder
        from tests.e2e.test_cli_contract import capctl

        proc = capctl("state", "rm", "SnapshotJob/x/y", "--state", store_url, cwd=tmp_path)
        assert proc.returncode == 1 and "another capctl holds the state lock" in proc.stderr, proc.stderr
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        store.lock("capctl apply").release()  # free once the holder is gone, lock file or not


def test_a_closed_store_keeps_the_other_stores_of_the_process_working(store_url: str) -> None:
    first, second = open_state(store_url), open_state(store_url)
    first.put(make_record())
    first.close()  # shares the descriptor of the file with `second`: closing it must not drop anything
    with second.lock("capctl apply"):
        assert second.put(make_record(reissue_count=1)) == 2
    second.close()


# SQLite only: a PostgreSQL lease is released through its store's own connection.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_lock_outlives_its_store_being_closed_first(store_url: str) -> None:
    """A daemon may close its store before it releases its lock (a failed start, a test): the release must
    still work, and the lock must be free afterwards."""
    first = open_state(store_url)
    lock = first.lock("first")
    first.close()
    lock.release()
    second = open_state(store_url)
    try:
        second.lock("second").release()
    finally:
        second.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_command_releases_its_lock_once_a_restarting_database_answers_again(store_url: str) -> None:
    """An apply whose PostgreSQL restarted meanwhile: its one release failed, and `apply again` was refused
    for up to 60 s by its own lapsed-to-be lock ('another capctl holds the state lock … (capctl apply)')
    (walk 13C-5). The release is tried again for a few seconds."""
    import threading

    import psycopg.conninfo

    from reconciler.cli.common import locked
    from reconciler.state.postgres import PostgresStateStore

    from .test_state_leader import Proxy

    given = psycopg.conninfo.conninfo_to_dict(store_url)
    proxy = Proxy((str(given["host"]), int(str(given["port"]))))
    store = PostgresStateStore(store_url.replace(f":{given['port']}/", f":{proxy.port}/"), connect_timeout=2)
    other = open_state(store_url)
    try:
        with locked(store, "capctl apply"):
            proxy.cut()  # the database restarts as the command ends
            threading.Timer(0.4, proxy.restore).start()
        other.lock("capctl apply").release()  # free at once, not in 60 s
    finally:
        other.close()
        store.close()
        proxy.close()


class _Unanswered:
    """A lock whose release fails as against a database that does not answer, each try costing `cost` s of
    `now` (a connect timeout waited out); `sleep` stands for `time.sleep` in the CLI's `locked`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cost: float, sleep: Callable[[float], None]) -> None:
        import types

        from reconciler.cli import common

        self.now, self.cost, self.tries, self.url = 0.0, cost, 0, "postgresql://db/capctl"
        monkeypatch.setattr(common, "time", types.SimpleNamespace(monotonic=lambda: self.now, sleep=sleep))

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> _Unanswered:
        return self

    def keep_silence(self) -> None:
        pass

    def release(self) -> None:
        self.tries += 1
        self.now += self.cost
        raise StateError("cannot connect to the PostgreSQL state store: timeout expired")


def test_a_release_that_waits_out_connect_timeouts_is_not_tried_past_its_bound(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database host that does not answer: each release waits out the connect timeout (10 s), and the six
    tries took 66 s, longer than the 60 s lease whose wait they were to spare (walk 14A-3). The retries are
    bounded in time (about 6 s) as well as in number."""
    from reconciler.cli.common import locked

    def sleep(seconds: float) -> None:
        store.now += seconds

    store = _Unanswered(monkeypatch, 10.0, sleep)  # libpq's connect_timeout
    with locked(store, "capctl apply"):  # type: ignore[arg-type]
        pass
    assert store.tries == 1 and store.now == 10.0
    assert "could not release the state lock" in capsys.readouterr().err


def test_ctrl_c_while_a_release_is_tried_again_ends_the_wait_not_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during the retries' silent seconds escaped as KeyboardInterrupt (click's 'Aborted!'), and the
    apply's report of what it had done and left was never printed (walk 14A-5)."""
    from reconciler.cli.common import locked

    def sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    store, ran = _Unanswered(monkeypatch, 0.0, sleep), False
    with locked(store, "capctl apply"):  # type: ignore[arg-type]
        ran = True
    assert ran and store.tries == 1 and "could not release the state lock" in capsys.readouterr().err


def test_a_command_renews_its_postgres_lease_while_it_holds_the_lock(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 20A-4: `locked` took a 60 s lease and never renewed it, so an apply or `state rm` waiting at its
    confirmation past it (or an apply of thousands of changes) wrote on after a daemon replica or another command
    had taken the lock over. Shortened here to 1 s; held 2.5 s, it is still this command's."""
    from reconciler.cli import common

    monkeypatch.setattr(common, "COMMAND_LEASE_SECONDS", 1.0)
    store, other = open_state(pg_url), open_state(pg_url)
    try:
        with common.locked(store, "capctl apply"):
            time.sleep(2.5)  # the lease is the database server's: real time
            with pytest.raises(LockHeld, match="capctl apply"):
                other.lock("capctl run").release()
        other.lock("capctl run").release()  # released at the end, as before
    finally:
        store.close()
        other.close()


@pytest.mark.parametrize(
    "holder", ["pid 1 on elsewhere (capctl run)", "another holder (who, could not be read: "], ids=["read", "unread"]
)
def test_a_command_whose_lease_was_taken_over_is_warned(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], holder: str
) -> None:
    """20A-4: the renewer that finds the lease in other hands says so (the command's writes are not fenced).
    21A-2: also when who holds it now cannot be read that moment: the lease was dropped as released, and each
    next renew's "already released" was taken for the store out of reach, silently, for the rest of the run."""
    import psycopg

    from reconciler.cli import common

    monkeypatch.setattr(common, "COMMAND_LEASE_SECONDS", 0.4)
    store = open_state(pg_url)
    if holder.startswith("another"):

        def unreadable() -> None:
            raise StateError(f"{store.url}: server closed the connection unexpectedly")

        monkeypatch.setattr(store, "_current_holder", unreadable)
    try:
        with common.locked(store, "capctl apply"):
            with psycopg.connect(pg_url, autocommit=True) as conn:  # as a replica that took a lapsed lease
                conn.execute("UPDATE capctl_lock SET token = 'theirs', holder = 'pid 1 on elsewhere (capctl run)'")
            said, deadline = "", time.monotonic() + 10  # the next renew (every 0.1 s) finds it: waited for, bounded
            while "Warning" not in said and time.monotonic() < deadline:
                time.sleep(0.05)
                said += capsys.readouterr().err
    finally:
        store.close()
    err = " ".join(said.split())
    assert f"Warning: the state lock lapsed and was taken over ({holder}" in err, err
    # Again once the holder is done: at once, its lock refuses the command (23a, as apply's error says).
    assert "stop it (Ctrl-C), and run it again once that one is done (or stopped)" in err, err
    assert "Traceback" not in err, err


def _take_over(pg_url: str) -> None:
    """What a replica does to a lease that lapsed while its command was paused: it takes the lock (a new epoch)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE capctl_lock SET token = 'theirs', holder = 'pid 1 on elsewhere (capctl run)', epoch = epoch + 1"
        )


def test_a_paused_command_whose_lease_was_taken_over_writes_nothing(pg_url: str) -> None:
    """Walk 22C-1: a command paused past its lease (SIGSTOP, a frozen VM) wrote when it resumed, before its
    renewer noticed, over what the new holder wrote: its writes are fenced by the lock's epoch, as a leader's."""
    from reconciler.cli import common
    from reconciler.secrets import new_fingerprint_key
    from reconciler.state import LockTakenOver

    store = open_state(pg_url)
    try:
        store.fingerprint_key(new_fingerprint_key())
        store.put(make_record("SnapshotJob/x/kept"))
        with common.locked(store, "capctl apply"):
            store.put(make_record("SnapshotJob/x/before"))  # its own epoch: written
            _take_over(pg_url)  # (the renewer, every 15 s, has not run: the command was paused)
            serial = store.serial()
            writes: tuple[Callable[[], object], ...] = (
                lambda: store.put(make_record("SnapshotJob/x/after")),
                lambda: store.delete("SnapshotJob/x/kept"),
                lambda: store.import_copy(store.export(), replace=True),  # `state copy`
            )
            for write in writes:
                with pytest.raises(LockTakenOver, match=r"taken over \(pid 1 on elsewhere \(capctl run\)\)"):
                    write()
        assert store.keys() == ["SnapshotJob/x/before", "SnapshotJob/x/kept"] and store.serial() == serial
        assert store.command_epoch is None  # released: the store is as before (no lock, no fence)
    finally:
        store.close()


@pytest.mark.parametrize("view", ["store", "record cache", "watched", "fenced view"])
def test_every_view_of_a_command_store_refuses_a_stop_once_its_lease_was_taken_over(pg_url: str, view: str) -> None:
    """Walk 26a (after 25d): the executor found the lock check by name (`getattr(store, "check_lock", …)`), so a
    store wrapper without it (RecordCache, WatchedStore, FencedStore had none) let a command's stop through after
    a takeover, silently. It is a method of every store now, passed through by every view."""
    import asyncio

    from reconciler.cli import common
    from reconciler.clock import FakeClock
    from reconciler.daemon.records import RecordCache
    from reconciler.daemon.storehealth import StoreHealth, WatchedStore
    from reconciler.execute import Executor
    from reconciler.state import LockTakenOver
    from reconciler.state.fenced import FencedStore
    from reconciler.state.sql import SqlStateStore

    stopped: list[str] = []

    class Vendor:
        async def stop(self, record: TaskRecord) -> None:
            stopped.append(record.key)

    store = open_state(pg_url)
    assert isinstance(store, SqlStateStore)
    views: dict[str, Callable[[], StateStore]] = {
        "store": lambda: store,
        "record cache": lambda: RecordCache(store),
        "watched": lambda: WatchedStore(store, StoreHealth(FakeClock())),
        "fenced view": lambda: FencedStore(store, epoch=0),  # (ReadThrough's: a daemon's term)
    }
    executor = Executor(views[view](), lambda _n, _f: Vendor(), FakeClock())  # type: ignore[arg-type,return-value]
    running = make_record(status=TaskStatus.RUNNING, vendor_task_id="t1")
    try:
        with common.locked(store, "capctl apply"):
            assert asyncio.run(executor._stop_remote(running))  # its own lock: stopped
            _take_over(pg_url)
            with pytest.raises(LockTakenOver, match=r"taken over \(pid 1 on elsewhere"):
                asyncio.run(executor._stop_remote(running))
        assert stopped == [running.key]
    finally:
        store.close()


def test_state_rm_whose_lease_was_taken_over_forgets_nothing(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """22C-1 from the command line: one clear error naming the new holder, nothing forgotten, no traceback."""
    from typer.testing import CliRunner

    from reconciler import cli, plan

    store = open_state(pg_url)
    store.put(make_record("SnapshotJob/x/y"))
    store.close()
    matching = plan.keys_matching

    def paused(*args: object) -> object:  # between taking the lock and writing, the lease lapsed and was taken
        _take_over(pg_url)
        return matching(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(plan, "keys_matching", paused)
    result = CliRunner().invoke(
        cli.app, ["state", "rm", "SnapshotJob/x/y", "--state", pg_url], env={"NO_COLOR": "1", "COLUMNS": "300"}
    )
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in said, said
    assert "the state lock was taken over (pid 1 on elsewhere (capctl run)) after this command's lease" in said
    store = open_state(pg_url)
    try:
        assert store.keys() == ["SnapshotJob/x/y"]
    finally:
        store.close()


def test_state_copy_whose_source_lock_was_taken_over_copies_nothing(
    pg_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 25d (after 22C-1): `state copy` fenced only the destination's writes; its source's lock taken over
    while it was paused (a standby replica left running takes it) went unseen, and the copy said "Point every
    capctl at the copy" while a daemon ran on the source: a daemon on each state starts each task twice."""
    from typer.testing import CliRunner

    from reconciler import cli
    from reconciler.secrets import new_fingerprint_key
    from reconciler.state.sql import SqlStateStore

    store = open_state(pg_url)
    store.fingerprint_key(new_fingerprint_key())
    store.put(make_record("SnapshotJob/x/y"))
    store.close()
    export = SqlStateStore.export

    def paused(self: SqlStateStore) -> object:  # as it read the source, its lease lapsed and was taken
        _take_over(pg_url)
        return export(self)

    monkeypatch.setattr(SqlStateStore, "export", paused)
    result = CliRunner().invoke(
        cli.app, ["state", "copy", "--from", pg_url, "--to", sqlite_url], env={"NO_COLOR": "1", "COLUMNS": "300"}
    )
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in said, said
    assert "the state lock was taken over (pid 1 on elsewhere (capctl run))" in said and "nothing was copied" in said
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
