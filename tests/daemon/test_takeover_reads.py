"""A term's read of the state runs in a thread (walk 31d): what the loop may do meanwhile (walk 32a)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from reconciler.clock import FakeClock
from reconciler.daemon.fencing import fenceable
from reconciler.daemon.lease import Lease
from reconciler.daemon.metrics import Metrics
from reconciler.leader import LeaderSettings
from reconciler.state.sqlite import SQLiteStateStore


async def test_a_first_valid_spec_set_and_a_lease_tick_take_one_term_over_once(tmp_path: Path) -> None:
    """A replica started without a valid spec set leads on its first valid one (`lead_now`) while its lease's
    timer goes on (`keep`): both attempts found the new term not taken over, and both read the state in a
    thread. The later-finishing read was adopted after the term acted on the first, and lost the commits made
    in between (a start the store records, the cache forgot: started again)."""
    clock = FakeClock()
    store = SQLiteStateStore(tmp_path / "state.db", create=True, clock=clock)
    release, fetching = threading.Event(), threading.Event()
    calls: list[str] = []

    def fetch() -> None:
        calls.append("fetch")
        if len(calls) > 1:  # the takeover's read (the first is the start's) takes a while
            fetching.set()
            release.wait(10)

    lease = Lease(
        fenceable(store),
        "replica-a",
        LeaderSettings(),
        clock,
        Metrics(),
        refresh=lambda: calls.append("refresh"),
        fetch=fetch,
        regained=lambda: calls.append("regained"),
        may_lead=lambda: True,
    )
    try:
        await lease.take(lead=False)  # no valid spec set at start: stands by, held back
        assert calls == ["fetch", "refresh"] and not lease.elector.is_leader
        first = asyncio.create_task(lease.lead_now())
        assert await asyncio.to_thread(fetching.wait, 10)
        second = asyncio.create_task(lease._attempt(True))  # `keep`'s next tick, meanwhile
        await asyncio.wait({second}, timeout=1)
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert calls == ["fetch", "refresh", "fetch", "refresh", "regained"]
        assert lease.acting()
    finally:
        release.set()
        lease.release()
        store.close()
