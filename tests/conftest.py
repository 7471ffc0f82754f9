"""Shared test set-up: the repository root on sys.path (tests import `tests.*` helpers), hypothesis, and Ctrl-C.

Hypothesis runs without its per-example deadline: on a shared 2-core CI machine a stalled example says
nothing about the code, and speed is measured by bench/, not by tests. A failure prints the blob that
replays it (`@reproduce_failure`).

A suite started in the background of a script (`./dev test … &`, nohup) inherits SIGINT ignored, and so would
every capctl it starts (an ignored signal stays ignored across exec, and capctl keeps it so, for nohup): a
test that presses Ctrl-C on one would wait for nothing. Here SIGINT is Ctrl-C, whatever started the suite.

Bytecode caching is on for the suite and every `capctl` it starts, whatever the environment says (this
machine's sets PYTHONDONTWRITEBYTECODE=1): the package is installed editable, so with it every one of the
suite's hundreds of CLI, simulator and daemon children compiled the modules it imports again (a fifth of the end-to-end
tests' CPU), where an installed capctl reads the compiled files pip wrote (bench/ runs its children so too).

A daemon started in the test process freezes its heap after each read (`gcpause.freeze_heap`), and so does an
in-process CLI command (`keep_until_exit`): after each test the heap goes back to the collector, or the cycles
frozen while alive would stay for the rest of the session.

An in-process CLI command sets logging up for its first line written (`logs.configure_on_first_event`); one that
wrote none left that set-up waiting in the worker's process, and the next test's first warning applied it,
replacing structlog's configuration, under `capture_logs()` too: the line went to stderr, not to the capture
(walk 59d-2: a test passing alone failed after another in the same `-n 2` worker). Each test starts with none.

A test that pytest-timeout stops says so in its report. Its exception is raised wherever the test's thread is:
in a daemon's background task it only ended that task (asyncio keeps it), and the test failed later at an
assertion; inside a hypothesis example it was replayed as a FlakyFailure (walk 61a: both read as defects).
"""

import gc
import os
import signal
import sys
from collections.abc import Generator, Iterator
from types import FrameType
from typing import Any

import pytest
from hypothesis import settings

TIMED_OUT = pytest.StashKey[float]()

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

settings.register_profile("capctl", deadline=None, print_blob=True)
settings.load_profile("capctl")


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _no_logging_set_up_waiting() -> None:
    from reconciler import logs

    logs.discard_waiting_setup()


@pytest.hookimpl(wrapper=True, optionalhook=True)  # pytest-timeout's hook
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> Generator[None, object, object]:
    """Note on the item when pytest-timeout's alarm (its signal method) goes off."""
    answer = yield
    handler = signal.getsignal(signal.SIGALRM) if hasattr(signal, "SIGALRM") else None
    if callable(handler):

        def noted(signum: int, frame: FrameType | None) -> None:
            item.stash[TIMED_OUT] = settings.timeout
            handler(signum, frame)

        signal.signal(signal.SIGALRM, noted)
    return answer


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed and (timeout := item.stash.get(TIMED_OUT, None)) is not None:
        report.longrepr = (
            f"pytest-timeout stopped this test after {timeout:g} s; what failed below may be where its exception"
            f" landed (a background task, a hypothesis example), not a defect:\n{report.longrepr}"
        )
    return report
