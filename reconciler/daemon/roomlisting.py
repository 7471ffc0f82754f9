"""The room-listing resync: ask each vendor which rooms have a stream now, so that a lost callback is repaired.

Room activity comes first from callbacks (`roomjobs.RoomBook`); a callback the vendor never delivered
would otherwise leave a room captured after it closed, or never captured after it opened. Each resync
period the daemon asks the vendor about the rooms it cares for (`RoomBook.to_list`: those a selector
job covers, known active or heard of through any callback; quiet ones less often) through its
provider's `room_streams` (ZEGO DescribeSimpleStreamList, Volcengine GetRoomOnlineUsers:
docs/providers-*.md, "Room listing"); the answers are reports like a callback's, with source "resync".
Neither vendor lists an app's *active* rooms in one call, so a room whose every callback was lost stays
unknown until one arrives.

Small on purpose (`list_rooms`), so that other parts (the capture policy of named rooms) reuse it.
Calls go through the providers' rate budgets at POLL priority; ZEGO allows one listing per room per 10 s,
so a room is asked at most once per `MIN_INTERVAL`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from reconciler.clock import Clock, Throttles
from reconciler.daemon.metrics import shared_failure
from reconciler.model import RoomActivity
from reconciler.providers.base import Provider, VendorError

__all__ = ["MIN_INTERVAL", "RoomLister"]

log = structlog.get_logger("capctl.daemon")

MIN_INTERVAL = 10.0  # seconds between two listings of one room (ZEGO: 1 call per room per 10 s)


class RoomLister:
    """Lists rooms at their vendors, each room at most once per MIN_INTERVAL."""

    def __init__(self, provider: Callable[[str], Provider], clock: Clock) -> None:
        self._provider = provider  # vendor account -> the provider that answers its room listing
        self._clock = clock
        self._failed = Throttles(clock)
        self._listed: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        """Rooms listed within the last MIN_INTERVAL (those still paced)."""
        return len(self._listed)

    async def list_rooms(self, rooms: Iterable[tuple[str, str]]) -> list[RoomActivity]:
        """One report per (account, room) the vendor answered: active when it lists a stream (ZEGO) or a
        visible user (Volcengine). A failed call is logged and reports nothing: the room stays as known."""
        now = self._clock.now()
        # Only the last MIN_INTERVAL paces anything: older times go, else every room ever listed stays here.
        self._listed = {r: at for r, at in self._listed.items() if now - at < MIN_INTERVAL}
        due = sorted({r for r in rooms if r not in self._listed})
        for room in due:
            self._listed[room] = now
        answers = await asyncio.gather(*(self._one(account, room) for account, room in due))
        return [a for a in answers if a is not None]

    async def _one(self, account: str, room: str) -> RoomActivity | None:
        # The answer tells the room at some moment of the call: stamped with its first, the question's, so a
        # callback of a moment during the call (a close, an entry) is newer and is neither undone nor dropped.
        asked = self._clock.now()
        try:
            streams = await self._provider(account).room_streams(room)
        except VendorError as exc:
            if (fields := self._failed.allow(shared_failure(account, exc))) is not None:  # as `observation failed`
                log.warning("room listing failed", account=account, room=room, error=str(exc), **fields)
            return None
        return RoomActivity(account, room, streams > 0, asked, "resync")
