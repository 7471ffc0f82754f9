"""Named crash points for crash-safety tests (like etcd's gofail), inert unless switched on.

`CAPCTL_FAILPOINTS=start.after-call` makes the process die at that point exactly as `kill -9` would
(os._exit, no cleanup, no flush), so tests can prove an interrupted apply loses and duplicates nothing. The
points (docs/failure-modes.md lists them) sit wherever a vendor call and a state commit meet.
`NAME:pause` stops it there instead (for up to an hour) until a signal arrives, so a test can interrupt it at
that very point rather than racing the work to it. It sleeps in short slices: a signal that lands just before
a sleep starts interrupts no system call, and its handler would wait for that sleep to end (an hour).
"""

from __future__ import annotations

import os
import time
from functools import cache

__all__ = ["hit"]

EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL
PAUSE_SECONDS = 3600.0
PAUSE_SLICE = 0.1  # seconds: the longest a signal's handler waits to run in a pause


@cache
def _active() -> dict[str, str]:
    """Each point switched on, with its action: "pause", or "" (die)."""
    active: dict[str, str] = {}
    for point in filter(None, (p.strip() for p in os.environ.get("CAPCTL_FAILPOINTS", "").split(","))):
        name, _, action = point.partition(":")
        active[name] = action
    return active


def hit(name: str) -> None:
    action = _active().get(name)
    if action == "pause":
        deadline = time.monotonic() + PAUSE_SECONDS
        while time.monotonic() < deadline:  # a signal's handler (Ctrl-C: KeyboardInterrupt) ends it
            time.sleep(PAUSE_SLICE)
    elif action is not None:
        os._exit(EXIT_CODE)
