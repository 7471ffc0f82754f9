"""Watching the spec paths: any file change (new, edited, renamed, deleted) triggers one debounced reload.

The reload itself decides whether the new set is valid; this module only says "something changed".
A path that is a symlink (git-sync swaps `current` atomically) or that does not exist yet is watched
through its parent directory, so the swap itself is seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog
import watchfiles

__all__ = ["DEBOUNCE_MS", "watch_roots", "watch_specs"]

log = structlog.get_logger("capctl.daemon.watch")

DEBOUNCE_MS = 500


def watch_roots(paths: Sequence[str]) -> list[str]:
    """The directories to watch for `paths` (deduplicated; nearest existing ancestor for missing paths)."""
    roots: list[str] = []
    for given in paths:
        path = Path(given).absolute()
        if path.is_symlink() or not path.exists():
            path = path.parent
            while not path.exists():
                path = path.parent
        elif path.is_file():
            path = path.parent
        if str(path) not in roots:
            roots.append(str(path))
    return roots


async def watch_specs(
    paths: Sequence[str],
    on_change: Callable[[], Awaitable[object]],
    *,
    stop: asyncio.Event,
    debounce_ms: int = DEBOUNCE_MS,
) -> None:
    """Await `on_change()` after each debounced batch of file changes under `paths`, until `stop` is set."""
    roots = watch_roots(paths)
    log.info("watching specs", roots=roots, debounce_ms=debounce_ms)
    async for changes in watchfiles.awatch(
        *roots, debounce=debounce_ms, step=min(50, debounce_ms), stop_event=stop, recursive=True
    ):
        log.info("spec files changed", files=sorted({p for _, p in changes})[:20], count=len(changes))
        await on_change()
