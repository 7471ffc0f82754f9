"""Issue 14, points 9 and 10: every command meets a damaged state with one `Error:` line and exit 1.

A damaged state is never read as empty nor repaired: the file is left byte for byte as it was, so the
operator can restore a backup or move it away. No vendor is called (the providers point at a closed port).
"""

from __future__ import annotations

import random
import sqlite3
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
