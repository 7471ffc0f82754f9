"""A CLI that starts fast (design.md, "Fast by construction"): each command imports only what it uses.

Runs the real `capctl` in a subprocess per command and reads the modules it had imported when it exited. What
a command must not import is what it never uses: an HTTP client, a web server or an event loop where no vendor
is called, the state package where no state is read, pydantic where nothing is validated, structlog (and rich's
traceback printer with it) where no log line is written. Each of these cost 15–100 ms of every such command
(bench/README.md, "The CLI's start").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Workdir
from tests.specdocs import snapshot_job

ROOT = Path(__file__).resolve().parents[2]

# Runs capctl as its console script does, then writes the names of the modules it imported to argv[1].
RUN = """
import json, runpy, sys
out, sys.argv = sys.argv[1], ["capctl", *sys.argv[2:]]
try:
    runpy.run_module("reconciler", run_name="__main__")
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(name for name, module in sys.modules.items() if module)}, f)
"""

NO_VENDOR = ("asyncio", "httpx", "httpcore", "ssl", "starlette", "uvicorn", "structlog", "rich.traceback")


def _imported(tmp_path: Path, *args: str, work: Workdir | None = None) -> set[str]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(out), *args],
        cwd=work.root if work else ROOT,
        env=work.env if work else None,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["code"] in (None, 0), done.stdout + done.stderr
    if work:
        work.outputs += [done.stdout, done.stderr]
    return set(result["modules"])


@pytest.mark.parametrize(
    ("args", "unused"),
    [
        # No vendor is called and no state read: the spec checks once loaded the providers' rate budgets (and with
        # them asyncio and ssl), and every command the state package for its error type.
        # A valid set is printed without rich (its text styles were imported for the error summary).
        (("validate", "specs"), (*NO_VENDOR, "reconciler.state", "sqlite3", "rich")),
        # Planned from the state alone: no vendor, so no event loop either (reconciler/clock.py).
        (("plan", "--no-refresh", "--state", "sqlite:///{tmp}/state.db", "specs"), NO_VENDOR),
        # Only `docs` reads the pages shipped with capctl (importlib.resources with them).
        (("--version",), ("reconciler.manual", "importlib.resources", "pydantic", "rich", *NO_VENDOR)),
        # Help validates nothing: typer coerced its absent --help flag through a pydantic adapter.
        (("plan", "--help"), ("pydantic", "reconciler.state", "reconciler.spec", *NO_VENDOR)),
    ],
    ids=["validate", "plan-no-refresh", "version", "plan-help"],
)
def test_a_command_imports_nothing_it_does_not_use(
    tmp_path: Path, args: tuple[str, ...], unused: tuple[str, ...]
) -> None:
    imported = _imported(tmp_path, *(arg.format(tmp=tmp_path) for arg in args))
    assert "reconciler.cli" in imported  # the run was the CLI's
    assert sorted(imported.intersection(unused)) == []


def test_a_plan_and_an_apply_that_write_no_log_line_import_no_logging_library(tmp_path: Path, work: Workdir) -> None:
    """structlog is imported by the first line the level lets through (reconciler/logs.py): at the default level
    a plan and an apply that go well write none. One that does is written as before."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "hall"]))
    for args in (("apply", "--auto-approve"), ("plan",)):
        imported = _imported(tmp_path, *args, work=work)
        assert "reconciler.execute" in imported and "httpx" in imported  # the vendor was called
        assert sorted(imported.intersection({"structlog", "rich.traceback"})) == []
        assert sorted(imported.intersection({"trio", "httpx._main", "click", "pygments"})) == []
    work.sim.faults(errorRate=1.0, apis=["StopSnapshot"], seed=1)
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))  # hall's task is stopped: that fails
    env = {"CAPCTL_MAX_ATTEMPTS": "1"}
    failed = work.capctl("apply", "--auto-approve", "--log-level", "info", expect=1, env=env)
    lines = [json.loads(line) for line in failed.stderr.splitlines() if line.startswith("{")]
    assert {"event": "change failed", "level": "info", "action": "delete"}.items() <= lines[0].items()
    assert "timestamp" in lines[0] and "InternalError" in lines[0]["error"]


def test_the_commands_annotations_are_evaluated_once_at_import() -> None:
    """typer evaluates string annotations twice on every run (23 ms of each command's start, 9 ms without)."""
    from reconciler.cli import app

    groups = [app, *(group.typer_instance for group in app.registered_groups if group.typer_instance)]
    callbacks = [c.callback for g in groups for c in g.registered_commands]
    callbacks += [g.registered_callback.callback for g in groups if g.registered_callback]
    strings = [
        f"{f.__name__}: {name}" for f in callbacks if f for name, a in f.__annotations__.items() if isinstance(a, str)
    ]
    assert len(callbacks) >= 20  # every command, the state ones and the group's options
    assert strings == []
