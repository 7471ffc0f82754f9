"""Which room callback is news: callbacks arrive late and out of order, so each is judged by the vendor's
own event time against the newest contrary signal of its room.

People entering a room (a join, a ZEGO room_create or room_login, a stream starting) and leaving it (a
leave, a stream stopping, the room closing, ZEGO's "room has no stream") are told by callbacks that race
each other: the default scenario delivers 5 % of them up to 10 s late, and ZEGO retries a room callback for
up to a minute. A late callback of an earlier moment must not undo a newer one:

- an emptying older than the newest entry is stale: someone came after it, the room is not empty;
- an entry older than the newest room close is stale: a retried room_create must not wake a task in a room
  that has closed since. A user leaving does not make older entries stale (others may still be there).

Times are the vendor's (the callback's own time), compared only with times of that vendor's callbacks about
the same room, never with the daemon's clock, so a skewed vendor clock cannot make a callback stale. At the
same instant the entry wins: an entry wrongly believed costs a start and a look, an emptying wrongly
believed costs a capture.

`supersedes` is the one rule. The router keeps a `RoomOrder` for the hints it gives named-room jobs
(`router.py`); the room book of the selector jobs (`roomjobs.RoomBook`) applies the same rule to its reports.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from reconciler.providers.callbacks import MAX_SKEW

__all__ = ["RoomOrder", "supersedes"]

NEVER = float("-inf")


def supersedes(known_at: float, known_open: bool, at: float, opening: bool) -> bool:
    """Whether a room signal (`opening`: people entered; else the room emptied) at vendor time `at` is news
    after a known contrary one (`known_open`, at `known_at`): it is not older, and at the same instant only an
    entry wins."""
    return at > known_at or (at == known_at and opening and not known_open)


@dataclass(slots=True)
class _Seen:
    opened: float = NEVER  # vendor time of the newest entry
    closed: float = NEVER  # vendor time of the newest room close (not of a user leaving)

    @property
    def newest(self) -> float:
        return max(self.opened, self.closed)


class RoomOrder:
    """The newest entry and room close seen per room. Memory is bounded by time: a room's times are forgotten
    once `window` (two MAX_SKEW: no callback that old passes the time check) older than a callback's."""

    def __init__(self, window: float = 2 * MAX_SKEW) -> None:
        self._rooms: OrderedDict[Hashable, _Seen] = OrderedDict()  # least recently changed first
        self._window = window

    def __len__(self) -> int:
        return len(self._rooms)

    def news(self, room: Hashable, at: float, *, opening: bool, closes_room: bool = False) -> bool:
        """Whether a signal about `room` at vendor time `at` is news (see `supersedes`), remembered when it is.
        `opening`: people entered; else the room (may have) emptied, and `closes_room` says it closed (no one
        left at all), which makes older entries stale too."""
        self._forget_before(at - self._window)
        seen = self._rooms.get(room) or _Seen()
        if opening:
            fresh = supersedes(seen.closed, False, at, True)
            if fresh:
                seen.opened = max(seen.opened, at)
        else:
            fresh = supersedes(seen.opened, True, at, False)
            if fresh and closes_room:
                seen.closed = max(seen.closed, at)
        if fresh:
            self._rooms[room] = seen
            self._rooms.move_to_end(room)
        return fresh

    def _forget_before(self, horizon: float) -> None:
        # Lazy, from the least recently changed: vendor times of one vendor move forward together.
        while self._rooms and next(iter(self._rooms.values())).newest < horizon:
            self._rooms.popitem(last=False)
