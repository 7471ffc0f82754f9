"""What keeps a replica that does not lead (any more) from changing anything (issue 16).

Two guards, one per kind of effect. State writes go through `LeaderStore`: reads come from the store,
writes through the current term's `FencedStore` (`elector.store()`), so a standby's write fails with
`NotLeader` and a superseded leader's with `Fenced`, nothing written. Mutating vendor calls go through
`GuardedProvider`, which marks the call as mutating; the HTTP client's request hook (`guard_request`)
then asks `may_act()` right before each request of it is sent, after any wait for a rate-budget slot,
so a leader paused or cut off from the database past its renew deadline sends nothing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar, cast

import httpx

from reconciler.budget import Priority
from reconciler.leader import LeaderElector, NotLeader
from reconciler.model import DesiredTask, Observed, RoomActivity, TaskRecord
from reconciler.providers.base import Provider, StartResult
from reconciler.state.base import HistorySpan, InboxEntry, Lock, StateError, StateStore
from reconciler.state.fenced import FenceableStore, ReadThrough

__all__ = ["GuardedProvider", "LeaderStore", "fenceable", "request_guard"]

T = TypeVar("T")

_MUTATING: contextvars.ContextVar[bool] = contextvars.ContextVar("capctl_mutating_call", default=False)


def fenceable(store: StateStore) -> FenceableStore:
    """The store, if its writes can be fenced and it keeps an inbox (both SQL stores); else StateError."""
    if not all(callable(getattr(store, name, None)) for name in ("inbox_put", "inbox_claim")):
        raise StateError(f"the state store {store.url} cannot be led by a daemon: it has no fencing or inbox")
    return cast(FenceableStore, store)


def _refuse(elector: LeaderElector) -> NotLeader:
    return NotLeader(f"{elector.holder} does not lead now: no vendor call that changes anything is made")


def request_guard(elector: LeaderElector) -> Callable[[httpx.Request], Awaitable[None]]:
    """An httpx request hook: a request of a mutating call is not sent unless `may_act()` holds now."""

    async def guard(_: httpx.Request) -> None:
        if _MUTATING.get() and not elector.may_act():
            raise _refuse(elector)

    return guard


class GuardedProvider:
    """A provider whose start, update and stop are refused (`NotLeader`) unless this replica may act,
    checked before the call and again before each of its HTTP requests (`request_guard`)."""

    def __init__(self, inner: Provider, elector: LeaderElector) -> None:
        self._inner = inner
        self._elector = elector
        self.name = inner.name
        self.family = inner.family

    async def _mutating(self, call: Callable[[], Awaitable[T]]) -> T:
        if not self._elector.may_act():
            raise _refuse(self._elector)
        token = _MUTATING.set(True)
        try:
            return await call()
        finally:
            _MUTATING.reset(token)

    async def start(
        self, task: DesiredTask, client_task_id: str | None, *, priority: Priority = Priority.CHANGE
    ) -> StartResult:
        return await self._mutating(lambda: self._inner.start(task, client_task_id, priority=priority))

    async def update(self, task: DesiredTask, record: TaskRecord) -> None:
        await self._mutating(lambda: self._inner.update(task, record))

    async def stop(self, record: TaskRecord) -> None:
        await self._mutating(lambda: self._inner.stop(record))

    async def observe(self, record: TaskRecord) -> Observed:
        return await self._inner.observe(record)

    async def room_streams(self, room: str) -> int:
        return await self._inner.room_streams(room)

    async def aclose(self) -> None:
        await self._inner.aclose()


class LeaderStore(ReadThrough):
    """The state as the daemon uses it: reads from the store, writes through the current term's fenced
    store (`NotLeader` on a standby), callbacks into the inbox from any replica."""

    def __init__(self, store: FenceableStore, elector: LeaderElector) -> None:
        super().__init__(store)
        self.elector = elector

    def put(self, record: TaskRecord, *, expected_serial: int | None = None) -> int:
        return self.elector.store().put(record, expected_serial=expected_serial)

    def put_many(self, records: Iterable[TaskRecord], *, expected_serial: int | None = None) -> int:
        return self.elector.store().put_many(records, expected_serial=expected_serial)

    def delete(self, key: str, *, expected_serial: int | None = None) -> int:
        return self.elector.store().delete(key, expected_serial=expected_serial)

    def inbox_put(self, entry: InboxEntry) -> bool:
        return self.store.inbox_put(entry)

    def inbox_claim(self, *, now: float) -> list[InboxEntry]:
        return self.elector.store().inbox_claim(now=now)

    def room_activity(self, accounts: Mapping[str, str]) -> list[RoomActivity]:
        return self.store.room_activity(accounts)

    def upgrade_rooms(self, accounts: Mapping[str, str]) -> tuple[int, list[str]] | None:
        return self.store.upgrade_rooms(accounts)

    def forget_rooms(self, quiet_before: float) -> int:
        return self.store.forget_rooms(quiet_before)

    def record_rooms(self, reports: Iterable[RoomActivity], spans: Iterable[HistorySpan] = ()) -> None:
        """The leader's batch through its term's fence (a deposed leader's retry must not reopen a `selector`
        row its successor closed); a replica that does not lead writes what it heard of rooms, unfenced as a
        callback is, but no `selector` span: the globs it loaded are not in force (48B-3)."""
        try:
            leader = self.elector.store()
        except NotLeader:
            self.store.record_rooms(reports, [s for s in spans if s.kind != "selector"])
        else:
            leader.record_rooms(reports, spans)

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> Lock:
        return self.store.lock(holder, lease_seconds=lease_seconds)

    def close(self) -> None:
        self.store.close()
