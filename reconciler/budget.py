"""Rate budgets per (provider account, API): do what the vendor allows, no more.

A budget of N/s must never let more than N requests into any one-second window, so requests are paced
evenly (one slot every 1/N s) instead of drawn from a bucket that allows a burst. A small headroom keeps
network jitter from pushing two paced requests into the same vendor window. Waiters are served by
priority (new and changed jobs, then re-issues, then status polling), first come first served within one.
A throttling answer slows the rate by 30 % and pauses briefly, once per vendor window (answers to requests
already in flight are the same event); it recovers step by step.

A slot granted late is not lost if it is only timer-late: asyncio wakes a sleeper up to about a
millisecond after its deadline (epoll rounds timeouts up to whole milliseconds), which at 150/s
(6.9 ms slots) lost over a tenth of the budget. The schedule catches up on at most `MAX_LAG` of such
lateness: slots stay one interval apart in the schedule and each is granted within `MAX_LAG` of its
place, so any one-second window holds at most floor(N × headroom × (1 + MAX_LAG)) + 1 ≤ N grants, the
same bound as without catching up. Longer lateness (a busy loop) is given up, never repaid in a burst.
"""

from __future__ import annotations

import contextvars
import enum
import heapq
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler.clock import Clock

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "HEADROOM",
    "HOLDUP",
    "MAX_LAG",
    "THROTTLE_FACTOR",
    "THROTTLE_PAUSE",
    "THROTTLE_WINDOW",
    "BudgetRegistry",
    "BudgetStats",
    "Holdup",
    "Priority",
    "RateBudget",
]

HEADROOM = 0.96  # pace at 96 % of the documented limit: absorbs ~35 ms of arrival jitter at the vendor
MAX_LAG = 0.003  # seconds of a late wake-up the schedule catches up on (see the module docstring)
THROTTLE_WINDOW = 1.0  # vendors count per second: throttling answers within one window are one event
THROTTLE_FACTOR = 0.7  # rate multiplier per throttling event (recovers 5 % per granted slot)
THROTTLE_PAUSE = 0.25  # seconds without grants after a throttling event


class Priority(enum.IntEnum):
    CHANGE = 0  # create / update / replace / delete
    REISSUE = 1
    POLL = 2


@dataclass
class BudgetStats:
    granted: int = 0
    throttled: int = 0
    by_priority: dict[int, int] = field(default_factory=dict)


@dataclass
class Holdup:
    """What the budgets cost one unit of work (one change of an apply): the time its calls waited for
    slots, and the budget it last took a slot from (its name and effective rate). The executor sizes its
    in-flight window from the time the rest of the work took, so waiting here must not count."""

    waited: float = 0.0
    budget: str = ""
    rate: float = 0.0


# Set by whoever wants to know (the executor, per change); each asyncio task has its own.
HOLDUP: contextvars.ContextVar[Holdup | None] = contextvars.ContextVar("capctl_budget_holdup", default=None)


class RateBudget:
    """Evenly paced slots at `rate` per second, handed out by priority."""

    def __init__(self, name: str, rate: float, clock: Clock, *, headroom: float = HEADROOM) -> None:
        if rate <= 0:
            raise ValueError(f"rate budget {name}: rate must be positive, got {rate}")
        self.name = name
        self.rate = rate
        self._clock = clock
        self._headroom = headroom
        self._factor = 1.0  # < 1 after throttling answers
        self._throttle_until = float("-inf")  # end of the current throttling event's window
        self._next_slot = clock.monotonic()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._dispatcher: asyncio.Task[None] | None = None
        self.stats = BudgetStats()

    @property
    def interval(self) -> float:
        return 1.0 / (self.rate * self._headroom * self._factor)

    @property
    def effective_rate(self) -> float:
        return self.rate * self._headroom * self._factor

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def take(self, priority: Priority = Priority.CHANGE) -> None:
        """Wait for one slot."""
        import asyncio  # here, not at the top: the spec checks import this module, and `validate` needs no loop

        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._seq), fut))
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
        asked = self._clock.monotonic()
        try:
            await fut
        except asyncio.CancelledError:
            if not fut.done():
                fut.cancel()
            raise
        holdup = HOLDUP.get()
        if holdup is not None:
            holdup.waited += self._clock.monotonic() - asked
            holdup.budget, holdup.rate = self.name, self.effective_rate

    async def _dispatch(self) -> None:
        while self._waiters:
            now = self._clock.monotonic()
            if self._next_slot > now:
                await self._clock.sleep(self._next_slot - now)
                continue
            prio, _, fut = heapq.heappop(self._waiters)
            if fut.done():  # cancelled while waiting: the slot goes to the next one
                continue
            fut.set_result(None)
            self.stats.granted += 1
            self.stats.by_priority[prio] = self.stats.by_priority.get(prio, 0) + 1
            self._next_slot = max(self._next_slot, now - MAX_LAG) + self.interval
            if self._factor < 1.0:  # recover 5 % per granted slot after throttling
                self._factor = min(1.0, self._factor * 1.05)

    def throttled(self) -> None:
        """The vendor answered 'too many requests': slow down once per vendor window, like TCP per RTT.

        The other requests already in flight in that window may be throttled too; their answers are the
        same event and must not compound into a stall.
        """
        self.stats.throttled += 1
        now = self._clock.monotonic()
        if now < self._throttle_until:
            return
        self._throttle_until = now + THROTTLE_WINDOW
        self._factor = max(0.05, self._factor * THROTTLE_FACTOR)
        self._next_slot = max(self._next_slot, now) + THROTTLE_PAUSE


class BudgetRegistry:
    """One `RateBudget` per (account, API), shared by every provider of that account."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._budgets: dict[tuple[str, str], RateBudget] = {}

    def get(self, account: str, api: str, rate: float) -> RateBudget:
        key = (account, api)
        budget = self._budgets.get(key)
        if budget is None:
            budget = RateBudget(f"{account}/{api}", rate, self._clock)
            self._budgets[key] = budget
        return budget

    def all(self) -> dict[tuple[str, str], RateBudget]:
        return dict(self._budgets)
