"""The code rules the team keeps (ruff lint, ruff format, mypy --strict), checked with every test run.

They run in the suite, not only in a separate lint step, so `.ci/run` (the README's test command) fails
on a rule broken anywhere in the tree, and a contributor running the tests sees it before review does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "tool",
    [
        ["ruff", "check", "--no-cache", "."],
        ["ruff", "format", "--no-cache", "--check", "."],
        ["mypy"],  # packages and strictness come from pyproject.toml
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_the_tree_is_clean(tool: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", *tool], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(tool)} found problems:\n{done.stdout}{done.stderr}"
