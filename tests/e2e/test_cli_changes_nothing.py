"""A command that fails or is declined changes nothing: no state is created where there was none, no file left.

Walk 13a: `apply` made its state (to hold the lock) before planning and asking, so a "no" at the prompt, an apply
without a terminal or a stale saved plan left a new empty state behind; `state init` wrote a state over a 1-byte
file, and a refused `state copy --to` (any command that writes) left a foreign SQLite database switched to WAL; an
empty PATH (an unset variable) was the working directory, and an empty `--to` the default state.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reconciler import cli

SPECS = Path(__file__).resolve().parents[2] / "specs"  # the quickstart's: a plan without a state calls no vendor
CLOSED = "http://127.0.0.1:9"  # discard: nothing listens; no case gets as far as connecting
ENV = {
    "NO_COLOR": "1",
    "COLUMNS": "200",
    "CAPCTL_STATE": None,
    "CAPCTL_MAX_ATTEMPTS": "1",
    **{f"CAPCTL_{name}_ENDPOINT": f"{CLOSED}/{name.lower()}" for name in ("VOLC", "ZEGO_RTC", "ZEGO_CLOUDRECORD")},
}


def _stale_plan(root: Path) -> None:
    """A plan saved without a state, then a job renamed: its tasks are no longer what the plan starts."""
    result = CliRunner().invoke(cli.app, ["plan", "specs", "--out", "stale.json"], env=ENV)
    assert result.exit_code == 0, result.output
    jobs = root / "specs" / "jobs.yaml"
    jobs.write_text(jobs.read_text().replace("lobby-audit", "lobby-check"))


def _one_byte(root: Path) -> None:
    (root / "notes.txt").write_bytes(b"x")  # SQLite reads a file shorter than its header as an empty database


def _foreign_database(root: Path) -> None:
    """Another program's SQLite database, in rollback-journal mode, and a state to copy."""
    with sqlite3.connect(root / "other.db") as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    db.close()
    assert CliRunner().invoke(cli.app, ["state", "init", "--state", "sqlite:///src.db"], env=ENV).exit_code == 0
    (root / "src.db.lock").touch()  # the lock's file, which every command that locks leaves in place


def _foreign_database_and_one_byte(root: Path) -> None:
    _foreign_database(root)
    _one_byte(root)


def _scenario(root: Path) -> None:
    """Two seconds of one room: played, its report then failed to be written, as a traceback."""
    scenario = (SPECS.parent / "examples" / "scenarios" / "compressed.yaml").read_text()
    (root / "scenario.yaml").write_text(
        scenario.replace("duration: 180", "duration: 2").replace("rooms: 16", "rooms: 1")
    )


PREPARE = {
    "apply-stale-plan": _stale_plan,
    "init-one-byte": _one_byte,
    "copy-to-one-byte": _foreign_database_and_one_byte,
    "copy-to-foreign-db": _foreign_database,
    "copy-to-empty": _foreign_database,
    "sim-coverage-out-dir": _scenario,
}


def _tree(root: Path) -> dict[str, bytes]:
    """Every file's bytes; those of the copy's source only by name: locking it records the holder and epoch."""
    return {
        str(p.relative_to(root)): b"" if p.name.startswith("src.db") else p.read_bytes() if p.is_file() else b"/"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        # No terminal to ask on: the plan is shown, then refused; the state was made before the question.
        (["apply", "specs"], "Error: apply needs confirmation: run it on a terminal, or pass --auto-approve"),
        (["apply", "--plan", "stale.json"], "changed since this plan was made"),
        # Not a state at any size: `state init` wrote one over a 1-byte file (2 bytes and more were refused).
        (["state", "init", "--state", "sqlite:///notes.txt"], "notes.txt) looks damaged (file is not a database)"),
        (
            ["state", "copy", "--from", "sqlite:///src.db", "--to", "sqlite:///notes.txt"],
            "notes.txt) looks damaged (file is not a database)",
        ),
        # Refused, but switched to WAL first: another program's database changed under it.
        (
            ["state", "copy", "--from", "sqlite:///src.db", "--to", "sqlite:///other.db"],
            "other.db) looks damaged (it has no capctl tables)",
        ),
        # An empty name is an unset variable: pathlib read "" as ".", so these took the working directory, and
        # `state copy --to ""` copied into the default state.
        (["validate", ""], "Error: PATH '': no file named (an unset variable?)"),
        (["apply", "specs", " ", "--auto-approve"], "Error: PATH ' ': no file named (an unset variable?)"),
        (["show", ""], "Error: PLAN '': no file named (an unset variable?)"),
        (["sim", "--scenario", ""], "Error: --scenario '': no file named (an unset variable?)"),
        (
            ["state", "copy", "--from", "sqlite:///src.db", "--to", ""],
            "Invalid value for '--to' (env var: 'CAPCTL_STATE_TO'): '' names no state",
        ),
        # Checked as a spec's callbackUrl: the simulator started with these, and every callback failed.
        (
            ["sim", "--listen", "127.0.0.1:0", "--volcengine-callback-url", "http://"],
            "Error: --volcengine-callback-url: 'http://' is not an http:// or https:// URL",
        ),
        (
            ["sim", "--listen", "127.0.0.1:0", "--zego-callback-url", "file:///x"],
            "Error: --zego-callback-url: 'file:///x' is not an http:// or https:// URL",
        ),
        # Found only when written, after the work: a refresh of every task, a whole scenario played (a traceback).
        (["plan", "specs", "--out", "nodir/p.json"], "Error: nodir/p.json: cannot write the plan (No such file or"),
        (
            ["sim", "--listen", "127.0.0.1:0", "--scenario", "scenario.yaml", "--coverage-out", "specs"],
            "Error: specs: cannot write the coverage report (Is a directory)",
        ),
    ],
    ids=[
        "apply-no-terminal",
        "apply-stale-plan",
        "init-one-byte",
        "copy-to-one-byte",
        "copy-to-foreign-db",
        "validate-empty",
        "apply-path-blank",
        "show-empty",
        "sim-scenario-empty",
        "copy-to-empty",
        "sim-volc-callback-no-host",
        "sim-zego-callback-file",
        "plan-out-missing-dir",
        "sim-coverage-out-dir",
    ],
)
@pytest.mark.timeout(60)  # without its check the simulator started and served until stopped
def test_a_refused_command_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, argv: list[str], error: str
) -> None:
    shutil.copytree(SPECS, tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    PREPARE.get(request.node.callspec.id, lambda _root: None)(tmp_path)
    before = _tree(tmp_path)
    result = CliRunner().invoke(cli.app, argv, env=ENV)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert error in result.output
    if request.node.callspec.id == "plan-out-missing-dir":
        assert "Plan: " not in result.output  # refused before the refresh, not after it
    assert _tree(tmp_path) == before  # no .capctl/, no state, no lock file, every byte as it was


def test_an_apply_with_nothing_to_do_makes_no_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Planned afresh or saved, an apply without changes has nothing to record: no state is made for it."""
    shutil.copytree(SPECS, tmp_path / "specs")
    (tmp_path / "specs" / "jobs.yaml").unlink()  # providers and storages only: no task
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["plan", "specs", "--out", "p.json"],
        ["apply", "specs", "--auto-approve"],
        ["apply", "--plan", "p.json"],
    ):
        result = CliRunner().invoke(cli.app, argv, env=ENV)
        assert result.exit_code == 0, result.output
    assert sorted(_tree(tmp_path)) == ["p.json", "specs", "specs/providers.yaml", "specs/storage.yaml"]


def test_a_state_created_while_apply_planned_is_not_applied_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Planned against no state, apply creates it only when confirmed: one another apply created (and perhaps
    started tasks in) meanwhile, while this one showed its plan, is left to it, not given duplicates."""
    from reconciler.state import open_state

    def another_apply_meanwhile(*_args: Any) -> None:  # in place of printing the plan
        store = open_state("sqlite:///.capctl/state.db")
        store.fingerprint_key()  # a new state stores its own key
        store.close()

    shutil.copytree(SPECS, tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("reconciler.cli.plans.show_plan", another_apply_meanwhile)
    result = CliRunner().invoke(cli.app, ["apply", "specs", "--auto-approve"], env=ENV)
    assert result.exit_code == 1, result.output
    assert "Error: another command created the state meanwhile; nothing was changed: run apply again" in result.output
    assert "Apply complete" not in result.output
