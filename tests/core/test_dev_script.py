"""`./dev`, the README's entry point: a missing or mistyped command is an error like any other (exit 1)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

DEV = Path(__file__).resolve().parents[2] / "dev"


@pytest.mark.parametrize("args", [[], ["tset"]])
def test_a_missing_or_unknown_command_prints_the_usage_and_exits_1(args: list[str]) -> None:
    done = subprocess.run(["bash", str(DEV), *args], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1 and "usage: ./dev demo" in done.stderr
