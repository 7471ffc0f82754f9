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
        env={**base, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def write_specs(root: Path, *jobs: str) -> Path:
    specs = root / "specs"
    specs.mkdir(exist_ok=True)
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
