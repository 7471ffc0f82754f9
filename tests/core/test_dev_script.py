"""`./dev`, the README's entry point: a missing or mistyped command is an error like any other (exit 1); the
suite it runs caches bytecode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEV = Path(__file__).resolve().parents[2] / "dev"


@pytest.mark.parametrize("args", [[], ["tset"]])
def test_a_missing_or_unknown_command_prints_the_usage_and_exits_1(args: list[str]) -> None:
    done = subprocess.run(["bash", str(DEV), *args], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1 and "usage: ./dev demo" in done.stderr


def test_the_suite_and_the_processes_it_starts_cache_bytecode() -> None:
    """This machine sets PYTHONDONTWRITEBYTECODE=1; tests/conftest.py turns it off for the suite, or every capctl
    child compiles the editable package's modules again (a fifth of the end-to-end tests' CPU)."""
    child = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys.flags.dont_write_bytecode)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert not sys.dont_write_bytecode and child.stdout == "0\n"
