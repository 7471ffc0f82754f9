"""Watching the spec paths: any file change (new, edited, renamed, deleted) triggers one debounced reload.

The reload itself decides whether the new set is valid; this module only says "something changed".
A path that is a symlink (git-sync swaps `current` atomically) or that does not exist yet is watched
through its parent directory, so the swap itself is seen. A path *inside* such a link (`/specs/current/specs`)
is watched where the link pointed when the watch began, so the swap of the link above it makes no event
there: where each path leads is checked every second, and a change reloads and watches the new place.

Files that `{file: …}` references read (a mounted Kubernetes Secret) are checked every second too, by where
they lead and their inode, size and mtime: a Secret update swaps the mount's `..data` link, and an edit in
place changes the file, so a rotated key is read within a second or two instead of at the next restart (or,
silently, at whatever spec change came next). They may live anywhere (`/var/run/secrets/...`): their
directories are not watched, a few `stat` calls a second are enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog
import watchfiles

# Private path, on purpose: watchfiles exports this error nowhere public (its docs show `_rust_notify` as the
# interface to its Rust code), and its public base, RuntimeError, would take capctl's own errors for a watch
# that cannot be set up. tests/daemon/test_specs.py fails if a watchfiles release moves it or stops raising it.
from watchfiles._rust_notify import WatchfilesRustInternalError

__all__ = ["DEBOUNCE_MS", "TreeState", "tree_state", "watch_roots", "watch_specs"]

log = structlog.get_logger("capctl.daemon.watch")

DEBOUNCE_MS = 500
LINK_CHECK_MS = 1000  # how often where the paths lead is compared (a few lstat calls)


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


TreeState = tuple[tuple[str, ...], frozenset[tuple[str, int, int, int]]]


def tree_state(paths: Sequence[str]) -> TreeState:
    """Where `paths` lead and every file under them (path, inode, size, mtime): taken before the specs are first
    read, and again once the watch runs, so that a file written between the two is not missed (walk 60c-8)."""
    files: set[tuple[str, int, int, int]] = set()
    for given in paths:
        found = [given]
        if os.path.isdir(given):
            found = []
            for root, dirs, names in os.walk(given):
                dirs[:] = [d for d in dirs if not d.startswith(".")]  # as the loader: a checkout's .git is no spec
                found += [os.path.join(root, n) for n in names]
        for file in found:
            with contextlib.suppress(OSError):
                st = os.stat(file)
                files.add((file, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(os.path.realpath(p) for p in paths), frozenset(files)


def _file_states(files: Sequence[str]) -> dict[str, tuple[str, int, int, int] | None]:
    """Where each file leads and its inode, size and mtime (None: it cannot be read now)."""
    states: dict[str, tuple[str, int, int, int] | None] = {}
    for file in files:
        try:
            st = os.stat(file)
        except OSError:
            states[file] = None
        else:
            states[file] = (os.path.realpath(file), st.st_ino, st.st_size, st.st_mtime_ns)
    return states


async def watch_specs(
    paths: Sequence[str],
    on_change: Callable[[], Awaitable[object]],
    *,
    stop: asyncio.Event,
    debounce_ms: int = DEBOUNCE_MS,
    referenced: Callable[[], Sequence[str]] = tuple,
    read: TreeState | None = None,
) -> None:
    """Await `on_change()` after each debounced batch of file changes under `paths`, when a symlink on the
    way to one of them points elsewhere, or when a file of `referenced()` (those the specs' references name)
    changes, appears or goes, until `stop` is set. `read`: `tree_state(paths)` taken before the caller read
    the specs; once the watch runs, a change since then (before any event could say so) reloads too."""
    seen = _file_states(referenced())
    failing: str | None = None  # why the last watch could not be set up (said once), None while one runs

    async def started() -> None:
        nonlocal failing, read
        if read is not None:
            before, read = read, None
            if tree_state(paths) != before:
                log.info("spec files changed before the watch began")
                await on_change()
        if failing is not None:
            failing = None
            log.info("watching the spec files again")
            await on_change()  # whatever changed while nothing watched

    while not stop.is_set():
        roots, leads_to = watch_roots(paths), [os.path.realpath(p) for p in paths]
        try:
            seen = await _watch(paths, roots, leads_to, seen, on_change, stop, debounce_ms, referenced, started)
        except (OSError, WatchfilesRustInternalError) as exc:  # the latter: the inotify set-up failed
            # Out of descriptors (a flood of connections) the watch's inotify, its thread's wake-up and the
            # modules it loads on first use cannot be had: said once, tried again every check, never given up
            # (before: the watch task ended silently, and no spec change was seen until a restart).
            if failing is None:
                log.error(
                    "cannot watch the spec files; trying again every second (SIGHUP re-reads them)",
                    roots=roots,
                    error=str(exc),
                )
            failing = str(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LINK_CHECK_MS / 1000)


async def _watch(
    paths: Sequence[str],
    roots: list[str],
    leads_to: list[str],
    seen: dict[str, tuple[str, int, int, int] | None],
    on_change: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    debounce_ms: int,
    referenced: Callable[[], Sequence[str]],
    started: Callable[[], Awaitable[None]],
) -> dict[str, tuple[str, int, int, int] | None]:
    """One watch of `roots`, until `stop` or until the paths lead elsewhere; the referenced files' states.
    `started()` is awaited once the watch runs (its first check, within LINK_CHECK_MS)."""
    log.info("watching specs", roots=roots, debounce_ms=debounce_ms)
    async for changes in watchfiles.awatch(
        *roots,
        debounce=debounce_ms,
        step=min(50, debounce_ms),
        stop_event=stop,
        recursive=True,
        rust_timeout=LINK_CHECK_MS,
        yield_on_timeout=True,
    ):
        await started()
        moved = [os.path.realpath(p) for p in paths] != leads_to
        # By name: a reload from elsewhere (SIGHUP) may have changed the list; a file new to it is only
        # noted, as that load read it.
        now = _file_states(referenced())
        rotated = [f for f, state in now.items() if seen.get(f, state) != state]
        if changes:
            log.info("spec files changed", files=sorted({p for _, p in changes})[:20], count=len(changes))
        elif moved:
            log.info("spec paths lead elsewhere", paths=list(paths))
        elif rotated:
            log.info("referenced files changed", files=rotated[:20], count=len(rotated))
        if changes or moved or rotated:
            await on_change()
            now = _file_states(referenced())  # the files of the set now in force, as that load read them
        seen = now
        if moved:
            break  # the roots were resolved through the old link: watch where it leads now
    return seen
