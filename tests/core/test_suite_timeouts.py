"""The suite's own set-up (tests/conftest.py): a test stopped by pytest-timeout says so in its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import asyncio
import time


async def test_stopped_in_a_background_task():
    async def background():
        time.sleep(3)  # the alarm goes off here: the task ends, the test goes on

    task = asyncio.ensure_future(background())
    await asyncio.sleep(0.1)
    assert task.done() and task.exception() is None, "the background task died"
"""


def test_a_timeout_landing_in_a_background_task_is_reported_as_a_timeout(tmp_path: Path) -> None:
    """Walk 61a: pytest-timeout's exception ended a daemon's background task; the test failed later at an
    assertion of its own, and its report never said that it was stopped at 300 s."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport, pytest_timeout_set_timer\n"
    )
    (tmp_path / "test_probe.py").write_text(PROBE)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-o", "timeout=1"]
    args += ["-o", "asyncio_mode=auto", "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")]
    run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO)})
    assert "1 failed" in run.stdout, run.stdout + run.stderr
    assert "the background task died" in run.stdout  # the failure as the test saw it...
    assert "pytest-timeout stopped this test after 1 s" in run.stdout  # ...said to follow a timeout
