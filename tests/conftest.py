"""Shared test set-up: the repository root on sys.path (tests import `tests.*` helpers), and hypothesis.

Hypothesis runs without its per-example deadline: on a shared 2-core CI machine a stalled example says
nothing about the code, and speed is measured by bench/, not by tests. A failure prints the blob that
replays it (`@reproduce_failure`).
"""

from hypothesis import settings

settings.register_profile("capctl", deadline=None, print_blob=True)
settings.load_profile("capctl")
