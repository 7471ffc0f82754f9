"""A term's read of the state runs in a thread (walk 31d): what the loop may do meanwhile (walk 32a)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.clock import FakeClock
from reconciler.daemon.fencing import fenceable
from reconciler.daemon.lease import Lease
from reconciler.daemon.metrics import Metrics
from reconciler.leader import LeaderSettings
from reconciler.state.base import StateStore
from reconciler.state.postgres import PostgresStateStore
from reconciler.state.sqlite import SQLiteStateStore
from tests.state.conftest import pg_url  # noqa: F401  (on PostgreSQL too)


def _lease(
    store: StateStore,
    clock: FakeClock,
    fetch: Callable[[], None],
    *,
    refresh: Callable[[], object] = lambda: None,
    regained: Callable[[], None] = lambda: None,
) -> Lease:
    """A replica's lease on `store`, its ticks and reads in threads (as `capctl run`'s), the state read by `fetch`."""
    return Lease(
        fenceable(store),
        "replica-a",
        LeaderSettings(),
        clock,
        Metrics(),
        refresh=refresh,
        fetch=fetch,
        regained=regained,
        may_lead=lambda: True,
    )


def _renewed(lease: Lease) -> bool:
    """The lease renewed at the clock's time and waits for the next renewal (its sleep is on the clock)."""
    clock, elector = lease.clock, lease.elector
    assert isinstance(clock, FakeClock)
    return elector._renewed_at == clock.monotonic() and (clock.next_wakeup() or 0.0) > clock.now()


def _held_takeover_read() -> tuple[threading.Event, threading.Event, list[str], Callable[[], None]]:
    """(release, fetching, calls, fetch): `fetch` notes each read in `calls`; the takeover's (the first is the
    start's) sets `fetching` and waits for `release`."""
    release, fetching = threading.Event(), threading.Event()
    calls: list[str] = []

    def fetch() -> None:
        calls.append("fetch")
        if len(calls) > 1:
            fetching.set()
            release.wait(10)

    return release, fetching, calls, fetch


async def _until(done: Callable[[], bool], bound: float = 2.0) -> bool:
    """Wait (for a thread) until `done()`, at most `bound` seconds of wall time."""
    for _ in range(int(bound / 0.005)):
        if done():
            return True
        await asyncio.sleep(0.005)
    return done()


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

    lease = _lease(
        store, clock, fetch, refresh=lambda: calls.append("refresh"), regained=lambda: calls.append("regained")
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


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_leader_renews_its_lease_while_it_reads_the_state_for_its_term(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """At 100,000 tasks a term's read takes ~6 s in its thread and its adoption ~2 s on the loop (walk 31d); the
    lease was renewed only after them, a retry period later: past the 10 s renew deadline on a loaded node, the
    new leader stepped down as soon as it had read, and the next term read again (a failover loop). It renews
    every retry period while it reads, at start and at a takeover."""
    clock = FakeClock()
    store: StateStore = (
        SQLiteStateStore(tmp_path / "state.db", create=True, clock=clock)
        if kind == "sqlite"
        else PostgresStateStore(request.getfixturevalue("pg_url"), create=True)
    )
    release, fetching = threading.Event(), threading.Event()

    def fetch() -> None:
        fetching.set()
        release.wait(10)

    settings = LeaderSettings()
    lease = _lease(store, clock, fetch)
    elector = lease.elector
    try:
        taking = asyncio.create_task(lease.take(lead=True))
        assert await asyncio.to_thread(fetching.wait, 10) and elector.is_leader
        for _ in range(6):  # 12 s of reading, past the renew deadline
            clock.advance(settings.retry_period)
            await _until(lambda: _renewed(lease))
        release.set()
        await asyncio.wait_for(taking, 10)
        assert lease.acting() and elector.epoch is not None
    finally:
        release.set()
        lease.release()
        store.close()


async def test_the_lease_ticks_on_its_own_thread_whatever_waits_in_the_others(tmp_path: Path) -> None:
    """Callbacks a replica stores while a read holds the store, and a standby's page reads, each wait in a
    thread of the loop's default executor (a few per core): a burst of them left the lease's ticks queued
    behind them, the renewals too, past the renew deadline (walk 32a). The lease has a thread of its own."""
    clock = FakeClock()
    store = SQLiteStateStore(tmp_path / "state.db", create=True, clock=clock)
    release = threading.Event()
    settings = LeaderSettings()
    lease = _lease(store, clock, lambda: None)
    elector = lease.elector
    waiting = [asyncio.ensure_future(asyncio.to_thread(release.wait, 10)) for _ in range(40)]  # every thread
    try:
        taking = asyncio.create_task(lease.take(lead=True))
        assert await _until(lambda: elector.is_leader)
        for _ in range(6):  # the state's read waits for a thread meanwhile
            clock.advance(settings.retry_period)
            await _until(lambda: _renewed(lease))
        release.set()
        await asyncio.wait_for(taking, 10)
        assert lease.acting()
    finally:
        release.set()
        await asyncio.gather(*waiting)
        lease.release()
        store.close()


async def test_a_term_that_ends_while_its_state_is_read_is_not_acted_in(tmp_path: Path) -> None:
    """The lease renews while a term's state is read (walk 32a): a renewal that fails past the renew deadline
    ends the term meanwhile. The takeover then completed as if it held: `regained` ran and the leader gauges said
    1 on a replica that had just said it lost the lead."""
    clock = FakeClock()
    path = tmp_path / "state.db"
    store = SQLiteStateStore(path, create=True, clock=clock)
    release, fetching, calls, fetch = _held_takeover_read()
    lease = _lease(store, clock, fetch, regained=lambda: calls.append("regained"))
    elector = lease.elector
    try:
        await lease.take(lead=False)
        taking = asyncio.create_task(lease._attempt(True))  # a standby's tick takes the lock: a new term
        assert await asyncio.to_thread(fetching.wait, 10) and elector.is_leader
        path.rename(tmp_path / "moved.db")  # its renewals fail: the lock no longer guards the state's path
        for _ in range(6):
            clock.advance(LeaderSettings().retry_period)
            await _until(lambda: (clock.next_wakeup() or 0.0) > clock.now())  # ticked, sleeps again
        assert not elector.is_leader
        release.set()
        await asyncio.wait_for(taking, 10)
        assert not lease.acting() and lease.metrics.leader._value.get() == 0 and "regained" not in calls
    finally:
        release.set()
        lease.release()
        store.close()


async def test_a_replica_shutting_down_takes_no_term_over(tmp_path: Path) -> None:
    """SIGTERM while a new term's state is read (`stop`: `hold_only`, then the grace of in-flight work before
    the lease's task ends): the takeover went on and acted, `regained` queueing every key into a queue shut
    down and draining the inbox (its entries marked consumed, their keys dropped). A takeover cancelled with the
    reload that began it was begun again by the next renewal during the grace: a whole read on the way out."""
    clock = FakeClock()
    store = SQLiteStateStore(tmp_path / "state.db", create=True, clock=clock)
    release, fetching, calls, fetch = _held_takeover_read()
    lease = _lease(store, clock, fetch, regained=lambda: calls.append("regained"))
    try:
        await lease.take(lead=False)
        taking = asyncio.create_task(lease._attempt(True))  # a standby's tick takes the lock: a new term
        assert await asyncio.to_thread(fetching.wait, 10) and lease.elector.is_leader
        lease.hold_only()  # SIGTERM
        release.set()
        await asyncio.wait_for(taking, 10)
        assert not lease.acting() and lease.metrics.leader._value.get() == 0 and "regained" not in calls
        await asyncio.wait_for(lease._attempt(False), 10)  # a renewal during the grace: no read begun again
        assert calls == ["fetch", "fetch"] and lease.elector.is_leader and not lease.acting()
    finally:
        release.set()
        lease.release()
        store.close()


async def test_a_first_valid_spec_set_on_the_way_out_takes_no_lock(tmp_path: Path) -> None:
    """A replica started without a valid spec set, its first valid one read by a SIGHUP during the shutdown's
    grace (the handler stays until the process ends): `lead_now` took the lock (`hold_only` was not asked) and
    held it, acting on nothing, until `release`; read after `release`, it ticked on the lease's shut thread
    ("cannot schedule new futures after shutdown")."""
    clock = FakeClock()
    store = SQLiteStateStore(tmp_path / "state.db", create=True, clock=clock)
    release, _, calls, fetch = _held_takeover_read()
    lease = _lease(store, clock, fetch)
    try:
        await lease.take(lead=False)  # no valid spec set at start: stands by, held back
        lease.hold_only()  # SIGTERM
        await asyncio.wait_for(lease.lead_now(), 10)  # SIGHUP in the grace: the first valid set
        assert not lease.elector.is_leader and calls == ["fetch"]
        lease.release()
        await asyncio.wait_for(lease.lead_now(), 10)  # SIGHUP after `stop`, before the process ends
        assert not lease.elector.is_leader and calls == ["fetch"]
    finally:
        release.set()
        lease.release()
        store.close()
