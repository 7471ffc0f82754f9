"""A CLI that starts fast (design.md, "Fast by construction"): each command imports only what it uses.

Runs the real `capctl` in a subprocess per command and reads the modules it had imported when it exited. What
a command must not import is what it never uses: an HTTP client, a web server or an event loop where no vendor
is called, the state package where no state is read, pydantic where nothing is validated. Each of these cost
15–100 ms of every such command (bench/README.md, "The CLI's start").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""

NO_VENDOR = ("asyncio", "httpx", "httpcore", "ssl", "starlette", "uvicorn", "structlog", "rich.traceback")


def _imported(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", RUN, str(out), *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["code"] in (None, 0), done.stdout + done.stderr
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
