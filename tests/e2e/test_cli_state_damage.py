"""Issue 14, points 9 and 10: every command meets a damaged state with one `Error:` line and exit 1.

A damaged state is never read as empty nor repaired: the file is left byte for byte as it was, so the
operator can restore a backup or move it away. No vendor is called (the providers point at a closed port).
"""

from __future__ import annotations

import functools
import os
import random
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.state import open_state
from tests.e2e.test_cli_contract import capctl, write_specs
from tests.specdocs import snapshot_job
from tests.state.helpers import make_record

KEY = "SnapshotJob/audit/room-1"
COMMANDS = (
    ("plan", "--no-refresh"),
    ("apply", "--auto-approve"),
    ("state", "list"),
    ("state", "show", KEY),
    ("state", "rm", KEY),
    ("wake", KEY),
    ("run", "--listen", "127.0.0.1:0"),
)


def whole_state(path: Path) -> None:
    store = open_state(f"sqlite:///{path}")
    store.put_many(make_record(f"SnapshotJob/audit/room-{i}") for i in range(300))
    store.close()  # the last connection: the WAL is folded into the file


def overwrite_middle_pages(path: Path) -> None:
    whole_state(path)
    data = bytearray(path.read_bytes())
    data[8192:-4096] = random.Random(14).randbytes(len(data) - 8192 - 4096)
    path.write_bytes(bytes(data))


def truncated(path: Path) -> None:
    whole_state(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def dropped_meta(path: Path) -> None:
    whole_state(path)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE capctl_meta")
    raw.close()


DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "random bytes": (lambda p: p.write_bytes(random.Random(9).randbytes(4096)), "file is not a database"),
    "a text file": (lambda p: p.write_text("not a database\n" * 50), "file is not a database"),
    "0 bytes": (lambda p: p.write_bytes(b""), "the file is 0 bytes"),
    "truncated": (truncated, "database disk image is malformed"),
    "corrupt pages": (overwrite_middle_pages, "database disk image is malformed"),
    "capctl_meta dropped": (dropped_meta, "it has capctl_records but no capctl_meta table"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_every_command_says_the_state_looks_damaged_and_changes_nothing(tmp_path: Path, damage: str) -> None:
    write_specs(tmp_path, snapshot_job("audit", ["room-1"]))
    state = tmp_path / "state.db"
    make, detail = DAMAGE[damage]
    make(state)
    before = state.read_bytes()
    for command in COMMANDS:
        proc = capctl(*command, "--state", f"sqlite:///{state}", cwd=tmp_path)
        shown = f"{command}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 1, shown
        assert "Traceback" not in proc.stderr, shown
        assert f"{state} looks damaged ({detail}); restore it from a backup, or move it away" in proc.stderr, shown
    assert state.read_bytes() == before  # nothing re-created, repaired or emptied


def test_state_init_starts_a_state_in_an_empty_file_and_nothing_else(tmp_path: Path) -> None:
    write_specs(tmp_path, snapshot_job("audit", ["room-1"]))
    state = tmp_path / "state.db"
    state.touch()
    refused = capctl("state", "list", "--state", "sqlite:///state.db", cwd=tmp_path)
    assert "or run `capctl state init --state sqlite:///state.db` to start a new state in it" in refused.stderr
    init = capctl("state", "init", "--state", "sqlite:///state.db", cwd=tmp_path)
    assert init.returncode == 0 and f"Started a new state at sqlite:///{state} (serial 0)." in init.stdout
    again = capctl("state", "init", "--state", "sqlite:///state.db", cwd=tmp_path)
    assert again.returncode == 0 and "A state already exists" in again.stdout and "nothing changed" in again.stdout
    listed = capctl("state", "list", "--state", "sqlite:///state.db", cwd=tmp_path)
    assert listed.returncode == 0 and "0 tasks (state serial 0)" in listed.stdout
    # a partial schema is damage that init does not paper over either
    dropped = tmp_path / "dropped.db"
    dropped_meta(dropped)
    before = dropped.read_bytes()
    proc = capctl("state", "init", "--state", "sqlite:///dropped.db", cwd=tmp_path)
    assert proc.returncode == 1 and "looks damaged (it has capctl_records but no capctl_meta table)" in proc.stderr
    assert dropped.read_bytes() == before


# Root writes whatever the mode bits say, so a test run as root runs capctl as `nobody` (setpriv, util-linux).
AS_ANOTHER_USER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.getuid() == 0 else []


@functools.cache
def _cannot_run_as_another_user(where: Path) -> str:
    """Why `nobody` cannot run this checkout's capctl with its state in `where` ('' when it can)."""
    proc = subprocess.run(
        [*AS_ANOTHER_USER, sys.executable, "-c", "import os, sys, reconciler; os.stat(sys.argv[1])", f"{where}/."],
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    return (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1] if proc.returncode else ""


def as_another_user(
    root: Path, state: Path, *args: str, user: list[str] = AS_ANOTHER_USER
) -> subprocess.CompletedProcess[str]:
    if user and (why := _cannot_run_as_another_user(root.parent)):
        # Fail as what it is (a checkout or TMPDIR under a 0700 directory such as /root), never skip: CI runs as root.
        pytest.fail(
            f"uid 65534 (through setpriv) cannot run {sys.executable} on this checkout or reach {root.parent}: {why};"
            " keep the checkout and TMPDIR where any user can read them (not under /root)",
            pytrace=False,
        )
    base = {k: v for k, v in os.environ.items() if k != "CAPCTL_STATE"}
    return subprocess.run(
        [*user, sys.executable, "-m", "reconciler", *args, "--state", f"sqlite:///{state}"],
        cwd=root,
        env={**base, "COLUMNS": "200", "NO_COLOR": "1", "CAPCTL_MAX_ATTEMPTS": "1", "PYTHONDONTWRITEBYTECODE": "1"},
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def pinned(directory: Path, chown: str, seen: str, *, and_directory: bool = False) -> str:
    """The remedy line root is given (walk 40A-2): in `directory` if it is the one capctl saw, names only there."""
    where = shlex.quote(str(directory.resolve()))
    given = f"chown -h {chown}"
    if and_directory:  # given only if it holds the state file and nothing else but its files (walk 40A-3)
        names = chown.split(" -- ")[1].split()
        others = " ".join(f"! -name {name}" for name in names)
        given = (
            f'[ -f {names[0]} ] && [ -z "$(find . -mindepth 1 -maxdepth 1 {others})" ]'
            f" && {{ {given}; chown -h {chown.split()[0]} .; }}"
        )
    return f'(cd -P -- {where} && [ "$(pwd -P)" = {where} ] && [ "$(stat -c %u:%a .)" = {seen} ] && {given})'


def refused_after_a_swap(directory: Path, remedy: str, names: list[str]) -> None:
    """Walk 40A-2: whoever may write the directory's parent swaps the directory for a link (to /etc, say) before
    root pastes the remedy: a chown by absolute path went through it (/etc/shadow to the service user). The
    line must do nothing there, and fail."""
    kept, victim = Path(f"{directory}-kept"), Path(f"{directory}-etc")
    victim.mkdir()
    for name in names:
        (victim / name).write_text("root:secret\n")
    directory.rename(kept)
    try:
        directory.symlink_to(victim)
        swapped = subprocess.run(["sh", "-c", remedy], capture_output=True, text=True, timeout=30)
        assert swapped.returncode != 0, swapped.stderr
        assert [(victim / name).stat().st_uid for name in names] == [0] * len(names) and victim.stat().st_uid == 0
    finally:
        directory.unlink(missing_ok=True)
        kept.rename(directory)
        shutil.rmtree(victim)


@pytest.mark.parametrize("read_only", ["the directory", "the file", "an -shm file", "the directory of a link"])
def test_a_state_this_user_cannot_write_says_which_file_or_directory_and_changes_nothing(read_only: str) -> None:
    """Walk 35D-1: SQLite said only `attempt to write a readonly database`, for a read-only state file and for a
    read-only directory alike (where even `state list` fails: the -wal and -shm files cannot be made), and for
    the -shm a read of a read-only state file left (SQLite gives it the file's mode) after a chmod back.
    Walk 36B-1: a state path that is a link named the link's directory; SQLite works where the link leads."""
    with tempfile.TemporaryDirectory(prefix="capctl-35d-") as temp:  # (not tmp_path: its parents are root's 0700)
        root = Path(temp).resolve()  # (a temporary directory under a linked /tmp would read as a link too)
        write_specs(root, snapshot_job("audit", ["room-1"]))
        state = root / "state" / "state.db"
        assert capctl("state", "init", "--state", f"sqlite:///{state}", cwd=root).returncode == 0
        given = state
        if read_only == "the directory of a link":
            given = root / "link" / "state.db"
            given.parent.mkdir()
            given.symlink_to(state)
            read_only = "the directory"
        if os.getuid() == 0:
            for path in (root, *root.rglob("*")):
                os.chown(path, 65534, 65534)
        (state if read_only != "the directory" else state.parent).chmod(0o555)
        listed = as_another_user(root, given, "state", "list")
        if read_only == "an -shm file":
            state.chmod(0o644)
        before = state.read_bytes()
        applied = as_another_user(root, given, "apply", "--auto-approve")
        uid = 65534 if os.getuid() == 0 else os.getuid()
        head = f"(SQLITE_READONLY: capctl, running as uid {uid}, cannot write"
        said = {
            "the directory": (
                f"(SQLITE_READONLY_DIRECTORY: capctl, running as uid {uid}, cannot write the directory {state.parent}"
                + ("" if given == state else f" (where {given} leads)")
                + ":"
                " SQLite makes the state's -wal and -shm files there, even to read it; give this user write access to"
                " that directory, or run capctl as its owner)"
            ),
            "the file": f"{head} {state}, {state}-wal, {state}-shm;",
            "an -shm file": f"{head} {state}-shm;",
        }[read_only]
        if read_only == "the directory":
            assert listed.returncode == 1 and said in " ".join(listed.stderr.split()), listed.stderr
        else:  # reading needs no write
            assert listed.returncode == 0 and "0 tasks (state serial 0)" in listed.stdout, listed.stderr
            said += " give this user write access, or run capctl as the owner)"
        assert applied.returncode == 1 and "attempt to write a readonly database " + said in " ".join(
            applied.stderr.split()
        ), applied.stderr
        assert "Traceback" not in applied.stderr + listed.stderr
        assert state.read_bytes() == before
        state.parent.chmod(0o755)  # (so that the directory can be removed)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: a lock file root made on a state another user owns")
def test_a_lock_file_root_makes_goes_to_the_state_owner_and_one_it_kept_is_named_with_the_remedy() -> None:
    """Walk 35D-2: after one `sudo capctl apply` on a state its service user owns, the `<db>.lock` root made
    (0600) kept that user's capctl from the lock for good: its daemon stood by, `cannot open the lock file …:
    Permission denied`. Root now gives the file to the state's owner, as SQLite does its -wal and -shm files."""
    # (a space in the directory: the remedy is quoted, walk 37B-3)
    with tempfile.TemporaryDirectory(prefix="capctl 35d-") as temp:  # (not tmp_path: its parents are root's 0700)
        root = Path(temp)
        state = root / "state.db"
        assert capctl("state", "init", "--state", f"sqlite:///{state}", cwd=root).returncode == 0
        for path in (root, state):
            os.chown(path, 65534, 65534)
        absent = "SnapshotJob/gone/room-1"  # `state rm` takes the lock first, then finds no such task
        by_root = as_another_user(root, state, "state", "rm", absent, user=[])
        assert "no task 'SnapshotJob/gone/room-1'" in by_root.stderr, by_root.stderr
        assert state.with_name("state.db.lock").stat().st_uid == 65534
        by_owner = as_another_user(root, state, "state", "rm", absent)
        assert "no task 'SnapshotJob/gone/room-1'" in by_owner.stderr, by_owner.stderr
        # one an older capctl left as root's is named, with whose it is and how to give it back
        os.chown(state.with_name("state.db.lock"), 0, 0)
        refused = as_another_user(root, state, "state", "rm", absent)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert (
            f"cannot open the lock file {state}.lock: Permission denied (capctl runs as uid 65534, the file belongs"
            " to uid 0: a capctl run as that user made it; give it to the state file's owner:"
            f" {pinned(root, '65534:65534 -- state.db.lock', '65534:700')})"
        ) in " ".join(refused.stderr.split()), refused.stderr
        # Walk 38B-4: the directory's owner swaps it for a link before root runs the remedy: chown followed it.
        said = " ".join(refused.stderr.split())
        refused_after_a_swap(root, said[said.index("(cd -P") : -1], ["state.db.lock"])  # walk 40A-2
        victim = Path(temp + "-victim")
        victim.write_text("root:secret\n")
        try:
            state.with_name("state.db.lock").unlink()
            state.with_name("state.db.lock").symlink_to(victim)
            subprocess.run(said[said.index("(cd -P") : -1], shell=True, check=True)  # the remedy, as printed
            assert victim.stat().st_uid == 0
        finally:
            victim.unlink()
            state.with_name("state.db.lock").unlink()
        # walk 36b: and the next `sudo capctl …` gives it back, as it would have a lock file it made
        as_another_user(root, state, "state", "rm", absent, user=[])
        assert state.with_name("state.db.lock").stat().st_uid == 65534


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: a state root made in a directory another user owns")
def test_a_state_root_made_is_named_as_roots_with_the_remedy_for_the_user_it_locks_out() -> None:
    """Walk 36B-6: a first `sudo capctl apply` in a service user's directory makes the state root's (0600); the
    service user's capctl then read only `cannot open the state file: Permission denied`."""
    # A directory with a space: the remedy is run as printed (walk 37B-3: it was not quoted, and the test ran
    # its own spelling of it)
    with tempfile.TemporaryDirectory(prefix="capctl 36b-") as temp:  # (not tmp_path: its parents are root's 0700)
        root = Path(temp).resolve()
        os.chown(root, 65534, 65534)
        state = root / "state.db"
        assert capctl("state", "init", "--state", f"sqlite:///{state}", cwd=root).returncode == 0  # as root
        refused = as_another_user(root, state, "state", "list")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        said = " ".join(refused.stderr.split())
        remedy = pinned(root, "65534:65534 -- state.db", "65534:700")  # the files there, by name (no .lock yet)
        assert (
            "cannot open the state file: Permission denied (capctl runs as uid 65534, the file belongs to uid 0: a"
            f" capctl run as that user made it; give it (and its -wal, -shm and .lock) to this user: {remedy})"
        ) in said, refused.stderr
        refused_after_a_swap(root, said[said.index("(cd -P") : -1], ["state.db"])  # walk 40A-2
        # Walk 38B-4: the directory's owner adds a link before root runs the remedy; a glob (`state.db*`) took it
        # in, and chown followed it: the file it leads to went to the service user.
        victim = Path(temp + "-victim")
        victim.write_text("root:secret\n")
        try:
            (root / "state.db-x").symlink_to(victim)
            os.lchown(root / "state.db-x", 65534, 65534)
            subprocess.run(said[said.index("(cd -P") : -1], shell=True, check=True)  # the remedy, as printed
            assert victim.stat().st_uid == 0
        finally:
            victim.unlink()
        assert as_another_user(root, state, "state", "list").returncode == 0


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: a state directory root made where another user owns")
def test_a_state_directory_root_made_is_named_as_roots_with_the_remedy_for_the_user_it_locks_out() -> None:
    """Walk 39A-1: a first `sudo capctl apply` makes a missing state directory too, root's and 0700; the service
    user's capctl then read only `cannot open the state file: Permission denied` (no owner, no remedy)."""
    with tempfile.TemporaryDirectory(prefix="capctl 39a-") as temp:  # (not tmp_path: its parents are root's 0700)
        top = Path(temp).resolve()
        os.chown(top, 65534, 65534)
        root = top / "new dir"
        state = root / "state.db"
        assert capctl("state", "init", "--state", f"sqlite:///{state}", cwd=top).returncode == 0  # as root
        refused = as_another_user(top, state, "state", "list")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        said = " ".join(refused.stderr.split())
        names = "state.db state.db-wal state.db-shm state.db.lock"
        assert (
            f"cannot open the state file: Permission denied (capctl runs as uid 65534, the directory {root} belongs"
            " to uid 0 and this user may not enter it: a capctl run as that user made it; if it holds the state's"
            " files and nothing else, give it and them to this user (the line checks):"
            f" {pinned(root, f'65534:65534 -- {names}', '0:700', and_directory=True)})"
        ) in said, refused.stderr
        remedy = said[said.index("(cd -P") : -1]  # as printed
        # Only a directory as capctl makes one (0700, not its owner's home such as /root) is given away.
        root.chmod(0o750)
        other = as_another_user(top, state, "state", "list")
        assert other.returncode == 1 and other.stderr.rstrip().endswith("Permission denied"), other.stderr
        root.chmod(0o700)
        refused_after_a_swap(root, remedy, ["state.db"])  # the user owns the parent (walk 40A-2)
        # nor in a directory of the user's own put there instead (whatever it holds)
        victim = top / "etc"
        victim.mkdir()
        (victim / "state.db").write_text("root:secret\n")
        root.rename(top / "kept")
        root.mkdir()
        os.chown(root, 65534, 65534)
        os.symlink(victim / "state.db", root / "state.db")
        theirs = subprocess.run(["sh", "-c", remedy], capture_output=True)
        assert theirs.returncode != 0 and os.lstat(root / "state.db").st_uid == 0
        assert (victim / "state.db").read_text() == "root:secret\n" and os.stat(victim / "state.db").st_uid == 0
        shutil.rmtree(root)
        (top / "kept").rename(root)
        # Walk 40A-3: a 0700 directory of root's, such as /var/lib/private, looks the same from outside; the line
        # gives one away only if it holds the state file and nothing else but its files.
        system = top / "private"
        system.mkdir(mode=0o700)
        (system / "keys").write_text("root:secret\n")
        offered = " ".join(as_another_user(top, system / "x.db", "state", "list").stderr.split())
        line = offered[offered.index("(cd -P") : -1]
        for holds in (["keys", "x.db"], ["x.db", "x.db-wal", "keys"], []):  # others, or no state file at all
            for name in holds:
                (system / name).touch()
            given = subprocess.run(["sh", "-c", line], capture_output=True)
            assert given.returncode != 0 and {p.stat().st_uid for p in (system, *system.iterdir())} == {0}
            shutil.rmtree(system)
            system.mkdir(mode=0o700)
        (root / "state.db-x").touch()  # not one of the state's files: the state's own directory is refused too
        assert subprocess.run(["sh", "-c", remedy], capture_output=True).returncode != 0 and root.stat().st_uid == 0
        (root / "state.db-x").unlink()
        done = subprocess.run(["sh", "-c", remedy], capture_output=True, text=True)
        assert done.returncode == 0 and "state.db-wal" in done.stderr  # (no -wal: chown says so, does the rest)
        assert root.stat().st_uid == state.stat().st_uid == 65534
        assert as_another_user(top, state, "state", "list").returncode == 0


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: a directory another user cannot write")
def test_a_new_state_in_another_users_directory_names_it_the_user_and_what_to_do() -> None:
    """Walk 41D-1: the image's uid with a bind-mounted host directory (`docker run -v` makes a missing one root's,
    0755) or a volume that ignores fsGroup read only `cannot create the state file: Permission denied`."""
    with tempfile.TemporaryDirectory(prefix="capctl 41d-") as temp:  # (not tmp_path: its parents are root's 0700)
        top = Path(temp).resolve()
        top.chmod(0o755)
        for state in (top / "state.db", top / "missing" / "state.db"):  # the nearest directory that exists
            proc = as_another_user(top, state, "state", "init")
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
            mode = f"{os.getuid()}, group {os.getgid()}, mode 0755"
            assert (
                f"cannot create the state file: Permission denied (capctl, running as uid 65534 (groups 65534), cannot"
                f" write the directory {top} (owner uid {mode}): give this user write access to it (a container's"
                " volume: owned by the container's uid, or writable by a group it runs with, Kubernetes' fsGroup), or"
                " keep the state elsewhere: CAPCTL_STATE or --state)"
            ) in " ".join(proc.stderr.split()), proc.stderr
        assert os.listdir(top) == []
        # One this user may not enter, above the state's missing directory: it cannot even tell whether a state
        # is there, and read only `cannot open the state file: Permission denied` (walk 42B-3).
        # Walk 43A-3: whether the directory below is missing or there (a state in it, even) cannot be told either,
        # so it is not "cannot write": write access alone would not let this user in, and may be more than needed.
        (top / "closed").mkdir(mode=0o700)
        (top / "closed" / "there").mkdir(mode=0o777)
        for below in ("missing", "there"):
            proc = as_another_user(top, top / "closed" / below / "state.db", "state", "init")
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
            assert (
                "cannot open the state file: Permission denied (capctl, running as uid 65534 (groups 65534), cannot"
                f" enter the directory {top / 'closed'} (owner uid {os.getuid()}, group {os.getgid()}, mode 0700), so"
                " cannot tell what is below it: give this user search access (x) to it, and write access too if the"
                " directories below it are not there yet ("
            ) in " ".join(proc.stderr.split()), proc.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: mounts a small tmpfs read-only")
def test_a_state_on_a_read_only_mount_says_so_and_what_to_do() -> None:
    """Walk 35D-4: a WAL state on a read-only mount (a volume mounted `readOnly: true`) opens for no command,
    and SQLite says only `unable to open database file`."""
    with tempfile.TemporaryDirectory(prefix="capctl-35d-") as temp:
        mount = Path(temp) / "mnt"
        mount.mkdir()
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(mount)], capture_output=True
        ).returncode:
            # root that cannot mount (a container without CAP_SYS_ADMIN): fail, as a skip in CI would hide it
            pytest.fail(f"root cannot mount a tmpfs on {mount} here; run the tests where root can mount", pytrace=False)
        try:
            state = mount / "state.db"
            assert capctl("state", "init", "--state", f"sqlite:///{state}", cwd=Path(temp)).returncode == 0
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            opened = (
                f"unable to open database file (SQLITE_CANTOPEN: the file system holding {mount} is mounted read-only:"
                " capctl writes its state there, and SQLite the state's -wal and -shm files even to read it; mount it"
                " read-write, or keep the state elsewhere)"
            )
            # A new state there: the image's state directory on its read-only root, no volume (walk 41D-1).
            created = (
                f"cannot create the state file: Read-only file system (the file system holding {mount} is mounted"
                " read-only: capctl writes its state there; mount a writable volume there, or keep the state"
                " elsewhere: CAPCTL_STATE or --state)"
            )
            for command, path, said in (
                (("state", "list"), state, opened),
                (("apply", "--auto-approve"), state, opened),
                (("state", "init"), mount / "new" / "state.db", created),
            ):
                proc = capctl(*command, "--state", f"sqlite:///{path}", cwd=Path(temp))
                assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
                assert said in " ".join(proc.stderr.split()), proc.stderr
        finally:
            subprocess.run(["umount", str(mount)], check=True)
