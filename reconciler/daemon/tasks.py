"""The daemon's event loop and its own tasks besides the workers: timers, the spec watcher, reloads.

`capctl run` serves HTTP on a thread of its own, so that probes answer while the daemon's loop waits on a
hung state store; whatever touches the daemon's state (callbacks, sync, the status page) is handed back
to the daemon's loop by `call`. Tasks are kept so that stopping cancels them and waits for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["Background", "first_of"]

T = TypeVar("T")


async def first_of(*waits: Awaitable[Any]) -> None:
    """Wait until one of `waits` ends (a pause, a signal, the HTTP server's end); the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class Background:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def bind(self) -> None:
        """The running loop is the daemon's (called by `start`)."""
        self._loop = asyncio.get_running_loop()

    async def call(self, call: Callable[..., T], *args: object) -> T:
        """Run `call(*args)` on the daemon's loop. In-process (tests, one loop) it is a plain call."""

        async def run() -> T:
            return call(*args)

        return await self.run(run)

    async def run(self, work: Callable[..., Coroutine[Any, Any, T]], *args: object) -> T:
        """Await `work(*args)` on the daemon's loop (in-process: here)."""
        loop = self._loop
        if loop is None or loop is asyncio.get_running_loop():
            return await work(*args)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work(*args), loop))

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks = [t for t in self._tasks if not t.done()]  # earlier reloads: a long-lived daemon gets many
        self._tasks.append(asyncio.get_running_loop().create_task(work, name=name))

    def cancel(self, *, keep: str | None = None) -> None:
        """Cancel every task, or every one but the task named `keep`."""
        for task in self._tasks:
            if task.get_name() != keep:
                task.cancel()

    async def join(self) -> None:
        """Wait for the cancelled tasks to end."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
