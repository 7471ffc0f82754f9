"""Issue 13, point 21: what an apply loaded before its first change is out of the cyclic collector's reach (and
what a plan or a validate loaded: the collector's later passes and the one at exit no longer walk it).

The spec set, the state's records and the plan live until the process exits. Left in the collector's
generations, every full pass during the apply walks them (up to 0.1 s on a loaded machine: a stall of the
loop that paces the vendor calls, and slots lost to it), and so does the interpreter's last pass at exit.
Runs the real CLI in this process (its heap is what is checked) against the simulator on loopback.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from reconciler import engine
from reconciler.cli import app
from tests.e2e.conftest import Workdir
from tests.specdocs import snapshot_job


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Gives the test process its heap back: what the CLI froze returns to the collector."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_an_apply_freezes_what_it_loaded_before_its_first_change(
    work: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "vip-1"]))
    for name, value in work.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(work.root)
    frozen_when_executing: list[int] = []
    execute = engine.apply_plan

    async def watched(*args: Any, **kwargs: Any) -> Any:
        frozen_when_executing.append(gc.get_freeze_count())
        return await execute(*args, **kwargs)

    monkeypatch.setattr(engine, "apply_plan", watched)
    before = gc.get_freeze_count()
    result = CliRunner().invoke(app, ["apply", "--auto-approve", str(work.specs)])
    assert result.exit_code == 0, result.output
    assert "Apply complete: 2 created" in result.output
    [frozen] = frozen_when_executing
    assert frozen > before
    assert len(work.sim.tasks("volcengine", state="running")) == 2


@pytest.mark.usefixtures("unfrozen")
@pytest.mark.parametrize("command", [["validate"], ["plan", "--no-refresh"]], ids=["validate", "plan"])
def test_a_plan_or_a_validate_freezes_what_it_loaded(
    work: Workdir, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "vip-1"]))
    for name, value in work.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(work.root)
    before = gc.get_freeze_count()
    result = CliRunner().invoke(app, [*command, str(work.specs)])
    assert result.exit_code == 0, result.output
    assert gc.get_freeze_count() > before


@pytest.mark.usefixtures("unfrozen")
def test_a_plan_freezes_the_records_before_its_diff(work: Workdir, monkeypatch: pytest.MonkeyPatch) -> None:
    """The diff allocates right after the state's records are decoded: unfrozen, its first young pass walked all."""
    from reconciler import moves, plan

    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "vip-1"]))
    for name, value in work.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(work.root)
    counts: dict[str, int] = {}
    load, diff = moves.load_rehomed, plan.diff

    def loaded(*args: Any, **kwargs: Any) -> Any:
        result = load(*args, **kwargs)
        counts["loaded"] = gc.get_freeze_count()
        return result

    def diffed(*args: Any, **kwargs: Any) -> Any:
        counts["diff"] = gc.get_freeze_count()
        return diff(*args, **kwargs)

    monkeypatch.setattr(moves, "load_rehomed", loaded)
    monkeypatch.setattr(plan, "diff", diffed)
    result = CliRunner().invoke(app, ["plan", "--no-refresh", str(work.specs)])
    assert result.exit_code == 0, result.output
    assert counts["diff"] > counts["loaded"]
