"""The command line's contract with CI and scripts: exit codes, read-only commands, selectors, completion.

Everything runs the real `capctl` in a subprocess (as a CI job or a shell would), on real SQLite files;
plans are made with `--no-refresh` or without any recorded task, so no vendor is involved.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.specdocs import STORAGE, providers, snapshot_job

# No vendor is called in this module: the providers point at a closed loopback port.
PROVIDERS = providers("http://127.0.0.1:9")


def capctl(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "CAPCTL_STATE"}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**base, "COLUMNS": "200", "NO_COLOR": "1", "CAPCTL_MAX_ATTEMPTS": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def write_specs(root: Path, *jobs: str) -> Path:
    specs = root / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    (specs / "providers.yaml").write_text(PROVIDERS)
    (specs / "storage.yaml").write_text(STORAGE)
    (specs / "jobs.yaml").write_text("---\n".join(textwrap.dedent(j).lstrip() for j in jobs))
    return specs


# --- 1: every error exits 1; 2 only ever means "changes" -----------------------------------------------

USAGE_ERRORS = [
    ((), "Usage:"),  # no command at all: the help, as an error
    (("plan", "--tagret", "SnapshotJob/x"), "Possible options: --state, --target"),
    (("plan", "--format"), "requires an argument"),
    (("apply", "--parallelism", "0"), "--parallelism"),
    (("apply", "--parallelism", "many"), "--parallelism"),
    (("bogus",), "No such command 'bogus'"),
    (("state",), "Usage:"),
    (("state", "lst"), "Did you mean 'list'?"),
    (("state", "show"), "Missing argument"),
    (("state", "list", "--bogus"), "No such option: --bogus"),
    (("validate", "--detailed-exitcode"), "No such option"),
    (("run", "--resync"), "requires an argument"),
    (("completion",), "Missing argument"),
    (("completion", "tcsh"), "tcsh"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(a) or "no-args" for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_1_with_clicks_message(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    proc = capctl(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / ".capctl").exists()


def test_help_and_version_exit_0(tmp_path: Path) -> None:
    assert capctl("--help", cwd=tmp_path).returncode == 0
    assert capctl("state", "list", "--help", cwd=tmp_path).returncode == 0
    assert capctl("--version", cwd=tmp_path).returncode == 0


def test_detailed_exitcode_2_means_changes_and_nothing_else(tmp_path: Path) -> None:
    write_specs(tmp_path, snapshot_job("audit", ["lobby"]))
    state = {"CAPCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}"}
    assert capctl("plan", "--detailed-exitcode", "--no-refresh", cwd=tmp_path, env=state).returncode == 2
    typo = capctl("plan", "--detailed-exitcode", "--tagret", "SnapshotJob/audit", cwd=tmp_path, env=state)
    assert typo.returncode == 1
    (tmp_path / "specs" / "jobs.yaml").write_text("kind: SnapshotJob\n  bad: [indent\n")
    assert capctl("plan", "--detailed-exitcode", "--no-refresh", cwd=tmp_path, env=state).returncode == 1


# --- 5: a command that only reads never creates a state ------------------------------------------------


def test_read_only_commands_create_no_state_and_say_where_they_looked(tmp_path: Path) -> None:
    specs = write_specs(tmp_path / "repo", snapshot_job("audit", ["lobby"]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    looked = f"No state at sqlite:///.capctl/state.db (resolved to {elsewhere / '.capctl' / 'state.db'})"

    plan = capctl("plan", str(specs), "--detailed-exitcode", cwd=elsewhere)
    assert plan.returncode == 2, plan.stderr  # legitimate for a brand-new setup: everything is a create
    assert f"{looked}: planning as if nothing was created yet." in plan.stderr
    assert "Plan: 1 to create" in plan.stdout
    listed = capctl("state", "list", cwd=elsewhere)
    assert listed.returncode == 0 and f"{looked}: no task is recorded" in listed.stderr
    assert '"tasks": []' in capctl("state", "list", "-o", "json", cwd=elsewhere).stdout
    for command in (("state", "show", "SnapshotJob/audit/lobby"), ("state", "rm", "SnapshotJob/audit/lobby")):
        proc = capctl(*command, cwd=elsewhere)
        assert proc.returncode == 1 and "no state at sqlite:///.capctl/state.db (resolved to" in proc.stderr
    assert os.listdir(elsewhere) == []


def test_a_plan_saved_without_state_applies_to_the_new_state(tmp_path: Path) -> None:
    write_specs(tmp_path, snapshot_job("audit", ["lobby"], restart="Never"))
    plan = capctl("plan", "--no-refresh", "--out", "plan.json", cwd=tmp_path)
    assert plan.returncode == 0 and not (tmp_path / ".capctl").exists()
    # apply creates the state; the saved plan (serial 0) matches it, and the vendor refusal is an apply error
    applied = capctl("apply", "--plan", "plan.json", cwd=tmp_path)
    assert (tmp_path / ".capctl" / "state.db").is_file()
    assert "the state changed since this plan was made" not in applied.stderr
