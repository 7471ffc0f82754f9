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
"""

import gc
import os
import signal
import sys
from collections.abc import Iterator

import pytest
from hypothesis import settings

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
