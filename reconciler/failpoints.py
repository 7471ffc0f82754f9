"""Named crash points for crash-safety tests (like etcd's gofail), inert unless switched on.

`CAPCTL_FAILPOINTS=start.after-call` makes the process die at that point exactly as `kill -9` would
(os._exit, no cleanup, no flush), so tests can prove an interrupted apply loses and duplicates nothing.
"""

from __future__ import annotations

import os
from functools import cache

__all__ = ["hit"]

EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL


@cache
def _active() -> frozenset[str]:
    return frozenset(p.strip() for p in os.environ.get("CAPCTL_FAILPOINTS", "").split(",") if p.strip())


def hit(name: str) -> None:
    if name in _active():
        os._exit(EXIT_CODE)
