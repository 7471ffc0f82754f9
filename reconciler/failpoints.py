"""Named crash points for crash-safety tests (like etcd's gofail), inert unless switched on.

`CAPCTL_FAILPOINTS=start.after-call` makes the process die at that point exactly as `kill -9` would
(os._exit, no cleanup, no flush), so tests can prove an interrupted apply loses and duplicates nothing. The
points (docs/failure-modes.md lists them) sit wherever a vendor call and a state commit meet.
`NAME:pause` stops it there instead (for up to an hour), so a test can kill it at that very point rather than
racing the work to it. Where the point runs on the main thread outside an event loop (`state copy`), a signal's
handler (Ctrl-C: KeyboardInterrupt) ends the pause: it sleeps in short slices, since a signal that lands just
before a sleep starts interrupts no system call, and its handler would wait for that sleep to end (an hour).
The executor's points run on the event loop of `apply` and `run`, whose signal handlers the pause holds off:
there only SIGKILL ends it.
"""

from __future__ import annotations

import os
import time
from functools import cache

__all__ = ["POINTS", "hit", "misspelt"]

EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL
PAUSE_SECONDS = 3600.0
PAUSE_SLICE = 0.1  # seconds: the longest a signal's handler waits to run in a pause
# Every point `hit` is called with (tests/deploy/test_docs.py checks the code names no other). A name not in
# it, or an action but `pause`, in CAPCTL_FAILPOINTS is refused (`misspelt`): a typo such as
# `start.afer-call` used to switch nothing on, and the "crash" test passed without any crash.
POINTS = frozenset(
    {
        "start.before-call",
        "start.after-call",
        "start.after-commit",
        "find.after-call",
        "stop.after-call",
        "stop.after-commit",
        "update.after-call",
        "state-copy.records-written",
        "state-upgrade.rooms-written",
    }
)


def _parse() -> dict[str, str]:
    """Each point switched on, with its action: "pause", or "" (die)."""
    active: dict[str, str] = {}
    for point in filter(None, (p.strip() for p in os.environ.get("CAPCTL_FAILPOINTS", "").split(","))):
        name, _, action = point.partition(":")
        active[name] = action
    return active


_active = cache(_parse)  # read once, at the first point reached


def misspelt() -> str | None:
    """What in CAPCTL_FAILPOINTS names no point or no action, said for an error; None when all is known."""
    unknown = [f"{n}:{a}" if a else n for n, a in _parse().items() if n not in POINTS or a not in ("", "pause")]
    if not unknown:
        return None
    return (
        f"CAPCTL_FAILPOINTS: {', '.join(unknown)} is no failpoint; use NAME or NAME:pause with NAME one of "
        f"{', '.join(sorted(POINTS))}"
    )


def hit(name: str) -> None:
    action = _active().get(name)
    if action == "pause":
        deadline = time.monotonic() + PAUSE_SECONDS
        while time.monotonic() < deadline:  # a signal's Python handler (Ctrl-C: KeyboardInterrupt) ends it
            time.sleep(PAUSE_SLICE)
    elif action is not None:
        os._exit(EXIT_CODE)
