"""A command that fails or is declined changes nothing: no state is created where there was none, no file left.

Walk 13a: `apply` made its state (to hold the lock) before planning and asking, so a "no" at the prompt, an apply
without a terminal or a stale saved plan left a new empty state behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


PREPARE = {"apply-stale-plan": _stale_plan}


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        # No terminal to ask on: the plan is shown, then refused; the state was made before the question.
        (["apply", "specs"], "Error: apply needs confirmation: run it on a terminal, or pass --auto-approve"),
        (["apply", "--plan", "stale.json"], "changed since this plan was made"),
    ],
    ids=["apply-no-terminal", "apply-stale-plan"],
)
def test_a_refused_command_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, argv: list[str], error: str
) -> None:
    shutil.copytree(SPECS, tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    PREPARE.get(request.node.callspec.id, lambda _root: None)(tmp_path)
    before = sorted(os.walk(tmp_path))
    result = CliRunner().invoke(cli.app, argv, env=ENV)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert error in result.output
    assert sorted(os.walk(tmp_path)) == before  # no .capctl/, no state, no lock file
