"""The code rules the team keeps (ruff lint, ruff format, mypy --strict), checked with every test run.

They run in the suite, not only in a separate lint step, so `.ci/run` (the README's test command) fails
on a rule broken anywhere in the tree, and a contributor running the tests sees it before review does.
mypy's reach comes from pyproject.toml, so a second test checks that it reaches every Python file (the
tests and benchmarks too): a file outside it would be skipped without a word.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
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


def test_mypy_checks_every_python_file_in_the_tree() -> None:
    roots = [REPO / name for name in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]["files"]]
    python_files = [
        path.relative_to(REPO)
        for top in REPO.iterdir()
        # skip what .gitignore keeps out: the venv and caches (hidden), egg-info, build output
        if top.is_dir() and not top.name.startswith(".") and not top.name.endswith(".egg-info") and top.name != "build"
        for path in top.rglob("*.py")
    ]
    assert any(path.parts[0] == "tests" for path in python_files)  # the walk found the tree
    unchecked = [str(path) for path in python_files if not any((REPO / path).is_relative_to(root) for root in roots)]
    assert not unchecked, f"mypy (pyproject.toml [tool.mypy] files) does not check: {unchecked}"
