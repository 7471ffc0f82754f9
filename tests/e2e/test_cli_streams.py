"""The command line behind a pipe whose reader leaves early, on a narrow terminal, on one without UTF-8.

Each case runs the real `capctl` in a subprocess, as a shell pipeline would: `capctl plan | head -3` closes
capctl's stdout while it writes; `PYTHONIOENCODING=ascii` is a terminal without UTF-8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Workdir
from tests.e2e.test_cli_contract import write_specs
from tests.specdocs import recording_job, snapshot_job

ROOMS = [f"r{i}" for i in range(6)]


def with_reader_gone(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """`capctl ARGS | true`: the reader closes the pipe before capctl writes a byte. Exit code and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def test_a_plan_whose_reader_left_exits_with_its_own_code_and_says_nothing(tmp_path: Path) -> None:
    write_specs(tmp_path, *(snapshot_job(f"job-{j}", [f"{j}-{r}" for r in ROOMS]) for j in range(3)))
    env = {**os.environ, "CAPCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}", "NO_COLOR": "1"}
    ascii_terminal = {**env, "PYTHONIOENCODING": "ascii"}  # click writes past an ASCII stream unless kept from it
    for args, code, where in (
        (["plan", "--detailed-exitcode"], 2, env),
        (["plan"], 0, env),
        (["--help"], 0, env),
        (["validate"], 0, ascii_terminal),
        (["schema"], 0, ascii_terminal),
    ):
        returncode, stderr = with_reader_gone(args, tmp_path, where)
        assert returncode == code, (args, stderr)
        assert "Traceback" not in stderr and "Broken pipe" not in stderr


def test_an_apply_whose_reader_left_applies_every_change(work: Workdir) -> None:
    """Before, the plan's print raised and the apply ended there, exit 1, with nothing said and nothing done."""
    work.write("jobs.yaml", snapshot_job("audit", ROOMS))
    returncode, stderr = with_reader_gone(["apply", "--auto-approve"], work.root, work.env)
    assert returncode == 0, stderr
    assert sorted(t["roomId"] for t in work.sim.tasks("volcengine", state="running")) == ROOMS
    assert "Plan: 0 to create" in work.capctl("plan").stdout


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_terminal_without_utf8_gets_the_glyphs_in_ascii(tmp_path: Path, encoding: str) -> None:
    write_specs(tmp_path, snapshot_job("audit", ["lobby"]))
    env = {**os.environ, "CAPCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}", "PYTHONIOENCODING": encoding}
    said = {}
    for command, *options in (["validate"], ["plan", "--no-color"]):
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler", command, *options],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert b"Traceback" not in proc.stderr
        said[command] = proc.stdout.decode(encoding)  # in that encoding: click wrote UTF-8 on an ASCII one
    assert "1 job -> 1 task" in said["validate"]
    assert "provider volc" in said["plan"] and "interval 5s" in said["plan"]  # `·` between: latin-1 has it, ascii `-`


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_json_to_a_stream_without_utf8_is_ascii_json_with_every_character_kept(tmp_path: Path, encoding: str) -> None:
    """The glyph spelling for text broke JSON (`"\\U0001f389party"` is no JSON escape: `jq` refused the plan) and
    changed its strings (`→` as `->`); latin-1 wrote `é` as one byte, which no JSON reader takes (JSON is UTF-8)."""
    rooms = ["\U0001f389party", "caf\u00e9", "\u6559\u5ba4", "a\u2192b"]
    write_specs(tmp_path, recording_job("class", [f'"{r}"' for r in rooms]))
    env = {**os.environ, "CAPCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}", "PYTHONIOENCODING": encoding}
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", "--no-refresh", "--format", "json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.isascii()
    keys = {c["key"] for c in json.loads(proc.stdout)["changes"]}
    assert keys == {f"RecordingJob/class/{r}" for r in rooms}


def test_keys_typed_under_a_c_locale_without_python_utf8_mode_are_read_as_utf8(tmp_path: Path) -> None:
    """Walk 16B-10: with `LC_ALL=C PYTHONUTF8=0` Python reads argv as ASCII: `--target`, `-l` and KEY arguments
    came as `\\udce6\\udc95…` and matched nothing (`sync`: "not UTF-8 text")."""
    write_specs(tmp_path, recording_job("class", ["教室", "lobby"]).replace("metadata: {name: class}", LABELLED))
    env = {**os.environ, "CAPCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}", "LC_ALL": "C", "PYTHONUTF8": "0"}
    narrowed = ["--target", "RecordingJob/class/教*", "-l", "团队=安全"]
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", "--no-refresh", "--format", "json", *narrowed],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert [c["key"] for c in json.loads(proc.stdout)["changes"]] == ["RecordingJob/class/教室"]


LABELLED = "metadata: {name: class, labels: {团队: 安全}}"


def test_a_narrow_terminal_keeps_the_command_to_run_on_one_line(tmp_path: Path) -> None:
    """COLUMNS=40: `Apply it with: capctl apply --plan PATH` was broken across lines, mid-path."""
    write_specs(tmp_path, snapshot_job("audit", ["lobby"]))
    out = tmp_path / "plans" / "a-directory-name-longer-than-the-terminal-is-wide" / "plan.json"
    out.parent.mkdir(parents=True)
    env = {**os.environ, "CAPCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}", "COLUMNS": "40", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", "--no-refresh", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Apply it with: capctl apply --plan {out}\n" in proc.stderr
