"""Shared test set-up: the repository root on sys.path (tests import `tests.*` helpers), hypothesis, and Ctrl-C.

Hypothesis runs without its per-example deadline: on a shared 2-core CI machine a stalled example says
nothing about the code, and speed is measured by bench/, not by tests. A failure prints the blob that
replays it (`@reproduce_failure`).

A suite started in the background of a script (`./dev test … &`, nohup) inherits SIGINT ignored, and so would
every capctl it starts (an ignored signal stays ignored across exec, and capctl keeps it so, for nohup): a
test that presses Ctrl-C on one would wait for nothing. Here SIGINT is Ctrl-C, whatever started the suite.
"""

import signal

from hypothesis import settings

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

settings.register_profile("capctl", deadline=None, print_blob=True)
settings.load_profile("capctl")
