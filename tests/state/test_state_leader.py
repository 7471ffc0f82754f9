"""Leader election, epochs and fencing over the state's lock (issue 16), on real SQLite files and PostgreSQL.

The local side (renew deadline, `may_act()`) runs on a FakeClock; PostgreSQL counts leases on its own clock,
so the takeover tests use leases of a second or two and wait for them on real time.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from structlog.testing import capture_logs

from reconciler.clock import FakeClock
from reconciler.daemon.fencing import LeaderStore
from reconciler.leader import LeaderElector, LeaderEvent, LeaderSettings, LeaderSettingsError, NotLeader, StepDown
from reconciler.model import RoomActivity
from reconciler.state import LockHeld, SQLiteStateStore, StateError, open_state
from reconciler.state.base import Fenced, HistorySpan, InboxEntry, Lock, StateTooNew
from reconciler.state.fenced import FencedStore
from reconciler.state.postgres import PostgresStateStore
from reconciler.state.sql import SqlStateStore

from .helpers import make_record, start_worker
from .test_state_damage import raw_sql

Store = SQLiteStateStore | PostgresStateStore
# Short enough for a test to wait a lease out, long enough that a slow CI machine renews in time.
VOLC = "volcengine:app-1"
SHORT = LeaderSettings(lease_duration=1.5, renew_deadline=1.0, retry_period=0.2)


def open_sql(url: str) -> Store:
    store = open_state(url)
    assert isinstance(store, SQLiteStateStore | PostgresStateStore)
    return store


class Recorder:
    """An elector's `on_event`: the events it reported, in order."""

    def __init__(self) -> None:
        self.events: list[LeaderEvent] = []

    def __call__(self, event: LeaderEvent) -> None:
        self.events.append(event)


def elector(
    store: SqlStateStore, clock: FakeClock, settings: LeaderSettings | None = None
) -> tuple[LeaderElector, Recorder]:
    events = Recorder()
    return LeaderElector(store, "capctl run", clock=clock, settings=settings, on_event=events), events


@pytest.fixture
def stores(store_url: str) -> Iterator[tuple[Store, Store]]:
    """Two stores on one state, as two replicas have."""
    first, second = open_sql(store_url), open_sql(store_url)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def test_defaults_are_client_go_s() -> None:
    assert LeaderSettings() == LeaderSettings(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)
    assert LeaderSettings.parse(lease_duration="1m", renew_deadline="20", retry_period=None) == LeaderSettings(
        60.0, 20.0, 2.0
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"renew_deadline": "15s"}, r"--renew-deadline \(15 s\) must be below --lease-duration \(15 s\)"),
        ({"lease_duration": "5s"}, r"--renew-deadline \(10 s\) must be below --lease-duration \(5 s\)"),
        ({"retry_period": "10s"}, r"--retry-period \(10 s\) must be below --renew-deadline \(10 s\)"),
        ({"retry_period": "0s"}, r"--retry-period must be above 0 s, not 0 s"),
        ({"lease_duration": "soon"}, r"--lease-duration: invalid duration 'soon'"),
        ({"lease_duration": "²"}, r"--lease-duration: invalid duration '²'"),  # review 9b: float() refused it
    ],
)
def test_timings_that_cannot_work_are_refused_naming_the_flag(flags: dict[str, str], message: str) -> None:
    with pytest.raises(LeaderSettingsError, match=message):
        LeaderSettings.parse(**flags)


def test_two_electors_one_leads_the_other_stands_by(stores: tuple[Store, Store]) -> None:
    clock = FakeClock()
    a, a_events = elector(stores[0], clock)
    b, b_events = elector(stores[1], clock)
    assert a.tick() == 2.0 and a.is_leader and a.may_act()
    assert b.tick() <= 2.0 and not b.is_leader and not b.may_act()
    assert b.other_holder is not None and "(capctl run)" in b.other_holder
    assert a_events.events == [LeaderEvent(LeaderEvent.BECAME, a.epoch or 0)] and not b_events.events
    with pytest.raises(NotLeader):
        b.store()
    a.tick()  # renews
    assert a.may_act()
    a.resign()
    assert a_events.events[-1].reason is StepDown.RESIGNED
    b.tick()
    assert b.is_leader and b.epoch == (a_events.events[0].epoch + 1)


def test_the_epoch_rises_at_every_taking_even_after_a_release(store: Store) -> None:
    first = store.lock("capctl apply")
    first.release()
    second = store.lock("capctl run")
    assert second.epoch == first.epoch + 1
    second.release()


def test_a_taking_says_how_long_the_previous_holder_has_been_silent(store_url: str, tmp_path: Path) -> None:
    """Walk 21D-1: a new term learns from the store how long no holder lived (callbacks had no listener):
    nothing on a new state; since the release; for a holder that died, since its last renew (PostgreSQL: the
    lapsed lease's expiry less a lease; SQLite: the `.lock` file's time, set at every renew)."""
    clock = FakeClock(start=1_750_000_000.0)
    pg = store_url.startswith("postgresql")
    store = open_sql(store_url) if pg else SQLiteStateStore(tmp_path / "s.db", clock=clock)
    try:
        first = store.lock("capctl run", lease_seconds=60)
        assert first.silent_for is None
        clock.advance(10)
        first.renew()
        clock.advance(5)
        first.release()
        clock.advance(40)
        second = store.lock("capctl run", lease_seconds=60)
        assert second.silent_for is not None
        if pg:  # the server's clock: released just now
            assert second.silent_for < 5
            with psycopg.connect(store_url, autocommit=True) as conn:  # as if it died 90 s ago, lease unreleased
                conn.execute("UPDATE capctl_lock SET token = 'dead', expires_at = now() - interval '30 seconds'")
            assert 89 < store.lock("capctl run", lease_seconds=60).silent_for < 95  # type: ignore[operator]
        else:
            assert second.silent_for == 40
            clock.advance(7)
            second.renew()
            assert os.stat(tmp_path / "s.db.lock").st_mtime == clock.now()  # a holder dying now: silent since
            second.release()
    finally:
        store.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_lapsed_holder_is_silent_since_its_last_renew_by_its_own_lease_duration(store_url: str) -> None:
    """Walk 25B-1: the lapsed lease's last renew was its expiry less the TAKER's lease duration: a replica of
    `--lease-duration 15s` dead 45 s ago read as 90 s to a taker of 60 s, and as 0 s the other way round. The
    row records its holder's duration; a row written by a capctl before that column still reads (the taker's
    duration) and gets the column."""
    store = open_sql(store_url)
    try:
        store.lock("capctl run", lease_seconds=15)  # its last renew 45 s ago: lapsed 30 s ago
        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute("UPDATE capctl_lock SET expires_at = now() - interval '30 seconds'")
        assert 44 < store.lock("capctl run", lease_seconds=60).silent_for < 50  # type: ignore[operator]
        with psycopg.connect(store_url, autocommit=True) as conn:  # the same row as an older capctl left it
            conn.execute("ALTER TABLE capctl_lock DROP COLUMN lease_seconds")
            conn.execute("UPDATE capctl_lock SET token = 'dead', expires_at = now() - interval '30 seconds'")
    finally:
        store.close()
    upgraded = open_sql(store_url)
    try:
        assert 89 < upgraded.lock("capctl run", lease_seconds=60).silent_for < 95  # type: ignore[operator]
        with psycopg.connect(store_url, autocommit=True) as conn:
            assert conn.execute("SELECT lease_seconds FROM capctl_lock").fetchall() == [(60.0,)]
    finally:
        upgraded.close()


# How capctl before the lease_seconds column (9c5d451, wave 24) took the lease: the column is left as it was.
_TAKEN_BY_AN_OLDER_CAPCTL = (
    "INSERT INTO capctl_lock AS l (name, holder, token, since, expires_at, epoch)"
    " VALUES ('apply', 'older capctl run', 'old', now(), now() + %s * interval '1 second', 1)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token,"
    " since = excluded.since, expires_at = excluded.expires_at, epoch = l.epoch + 1 WHERE l.expires_at <= now()"
)


def test_a_lease_an_older_capctl_took_after_a_release_is_not_read_with_the_released_holders_duration(
    pg_url: str,
) -> None:
    """Walk 26c: a rolling update (or rollback) between versions with different `--lease-duration`s: a current
    replica of 5 s released the lease, a capctl from before the column took it for 60 s and died. The row still
    said 5 s, so its last renew read as 2 s before its expiry, not 60 s: a silence of ~62 s read as ~7 s, under
    the callback retry window, and rooms known empty got no repair start. Released, the row holds no duration."""
    store = open_sql(pg_url)
    try:
        store.lock("capctl run", lease_seconds=5).release()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(_TAKEN_BY_AN_OLDER_CAPCTL, (60,))  # then it died: lapsed 2 s ago
            conn.execute("UPDATE capctl_lock SET expires_at = now() - interval '2 seconds'")
        assert 60 < store.lock("capctl run", lease_seconds=60).silent_for < 70  # type: ignore[operator]
    finally:
        store.close()


def test_a_lock_file_of_another_owner_is_still_taken_renewed_and_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 22A-5: setting a file's time needs its owner. Another user sharing the state (a group-writable
    `.lock`) got a PermissionError out of `lock()` (apply, state copy, the daemon) since the time was set."""
    clock = FakeClock(start=1_750_000_000.0)
    store = SQLiteStateStore(tmp_path / "s.db", clock=clock)
    real = os.utime

    def not_owner(fd: int, times: tuple[float, float] | None = None) -> None:
        if times is not None:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        real(fd)

    monkeypatch.setattr(os, "utime", not_owner)
    try:
        lock = store.lock("capctl apply")
        lock.renew()
        lock.release()
        assert store.lock("capctl apply").silent_for is not None  # the kernel's time was set instead
    finally:
        store.close()


def test_may_act_ends_at_the_renew_deadline_though_the_lock_is_still_held(stores: tuple[Store, Store]) -> None:
    clock = FakeClock()
    a, events = elector(stores[0], clock)
    a.tick()
    epoch = a.epoch
    clock.advance(9.9)
    assert a.may_act()
    clock.advance(0.1)  # paused: no renew for the whole renew deadline
    assert not a.may_act() and not a.is_leader
    assert events.events[-1] == LeaderEvent(LeaderEvent.LOST, epoch or 0, StepDown.DEADLINE, events.events[-1].detail)
    # The store still says the lock is held (the lease runs 15 s, or the flock is not released yet)...
    with pytest.raises(LockHeld):
        stores[1].lock("capctl apply")
    assert a.tick() == 2.0  # ...until the next tick gives it up, and leaves a retry period to the others
    stores[1].lock("capctl apply").release()  # who could take it now
    a.tick()
    assert a.is_leader and a.epoch == (epoch or 0) + 2


def test_a_renew_that_began_after_the_deadline_does_not_extend_the_term(store: Store) -> None:
    clock = FakeClock()
    a, events = elector(store, clock)
    a.tick()
    clock.advance(12.0)  # SIGSTOP'd: nothing ran, not even may_act()
    a.tick()
    assert not a.is_leader and events.events[-1].reason is StepDown.DEADLINE


def superseded(stores: tuple[Store, Store]) -> tuple[FencedStore, LeaderElector]:
    """The first replica's store of a term that ended, and the elector of the second, which leads now."""
    clock = FakeClock()
    a, _ = elector(stores[0], clock)
    b, _ = elector(stores[1], clock)
    a.tick()
    old = a.store()
    old.put(make_record(reissue_count=1))
    a.resign()
    b.tick()
    return old, b


def test_a_superseded_epoch_writes_nothing(stores: tuple[Store, Store]) -> None:
    old, b = superseded(stores)
    serial = stores[1].serial()
    with pytest.raises(Fenced, match=rf"leadership epoch {old.epoch} was superseded \(the current epoch is "):
        old.put(make_record("SnapshotJob/other/room"))
    with pytest.raises(Fenced):
        old.delete(make_record().key)
    snapshot = stores[1].load()
    assert snapshot.serial == serial and set(snapshot.records) == {make_record().key}
    b.store().put(make_record(reissue_count=2))  # the current term writes
    assert stores[0].load().records[make_record().key].reissue_count == 2
    stores[0].put(make_record(reissue_count=3))  # the plain store (`capctl apply`) is not fenced


def test_a_leader_writes_nothing_once_a_newer_capctl_raised_the_schema(
    store_url: str, stores: tuple[Store, Store]
) -> None:
    """Walk 58c: a newer capctl beside this one (a rolling update's first new pod, standing by) raises the schema
    while this one leads. The schema was checked when the state was read (opened, taken over), never at a
    write: the leader went on starting, re-issuing and recording into a state it no longer knows. Its next
    fenced write is refused, nothing of it written, and the term ends (`StepDown.OUTDATED`)."""
    clock = FakeClock()
    a, events = elector(stores[0], clock)
    a.tick()
    leader = a.store()
    leader.put(make_record(reissue_count=1))
    raw_sql(store_url, "UPDATE capctl_meta SET schema_version = 3")
    serial = raw_sql(store_url, "SELECT serial FROM capctl_meta")
    newer = r"state schema version 3 was written by a newer capctl \(this one knows version 2\); upgrade capctl"
    with pytest.raises(StateTooNew, match=newer):
        leader.put(make_record(reissue_count=2))
    assert not a.is_leader and events.events[-1].reason is StepDown.OUTDATED
    with pytest.raises(StateTooNew, match=newer):
        leader.delete(make_record().key)
    with pytest.raises(StateTooNew, match=newer):
        leader.record_rooms([RoomActivity(VOLC, "class-1", True, 60.0, "callback")])
    assert raw_sql(store_url, "SELECT serial FROM capctl_meta") == serial
    [(body,)] = raw_sql(store_url, "SELECT body FROM capctl_records")
    assert '"reissue_count":1' in str(body)
    assert raw_sql(store_url, "SELECT count(*) FROM capctl_room_activity") == [(0,)]


def test_an_elector_that_gave_the_lead_up_for_a_newer_schema_never_takes_the_lock_again(
    store_url: str, stores: tuple[Store, Store]
) -> None:
    """Walk 60b: the daemon decides whether to try the lock before its tick runs in a thread; a write of the term
    (the inbox's claim, in another thread) that met the newer schema in between gave the lead up, and the tick
    then took the lock again (`became leader`, epoch + 1), read the state, refused it and gave it up a second
    time, holding the lock the newer replica needed meanwhile. The elector itself no longer takes it."""
    clock = FakeClock()
    a, events = elector(stores[0], clock)
    a.tick()
    leader = a.store()
    raw_sql(store_url, "UPDATE capctl_meta SET schema_version = 3")
    with pytest.raises(StateTooNew):
        leader.put(make_record())
    [(epoch,)] = raw_sql(store_url, "SELECT epoch FROM capctl_lock")
    clock.advance(5)
    a.tick()  # the tick the daemon began as a standby that may lead
    assert not a.is_leader and [e.event for e in events.events] == [LeaderEvent.BECAME, LeaderEvent.LOST]
    assert raw_sql(store_url, "SELECT epoch FROM capctl_lock") == [(epoch,)]


class RacingLock:
    """A store whose `lock` first runs `before` (another thread's write, landing as the lock is being taken)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.before: Callable[[], object] = lambda: None

    def lock(self, holder: str, *, lease_seconds: float = 60.0) -> Lock:
        self.before()
        return self.store.lock(holder, lease_seconds=lease_seconds)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def test_a_lock_taken_as_a_write_meets_a_newer_schema_is_given_back_at_once(
    store_url: str, stores: tuple[Store, Store]
) -> None:
    """Walk 60b, the same race one step later: the write of the last term meets the newer schema while the tick
    takes the lock. The lock is given back at once, no term begun."""
    racing = RacingLock(stores[0])
    a, events = elector(racing, FakeClock())  # type: ignore[arg-type]
    a.tick()
    old_term = a.store()
    a.resign()
    raw_sql(store_url, "UPDATE capctl_meta SET schema_version = 3")

    def last_terms_write() -> None:
        with pytest.raises(StateTooNew):
            old_term.put(make_record())

    racing.before = last_terms_write
    a.tick()
    assert not a.is_leader and [e.event for e in events.events] == [LeaderEvent.BECAME, LeaderEvent.LOST]
    stores[1].lock("capctl run on new").release()  # free: not held by the old replica


def test_a_replica_that_does_not_lead_writes_nothing_once_a_newer_capctl_raised_the_schema(
    store_url: str, stores: tuple[Store, Store]
) -> None:
    """Walk 60b (after 58C-1): the writes no epoch fences checked no schema. A replica of this capctl standing
    by (or one that gave the lead up for the newer schema) stored callbacks into the inbox (the vendor answered
    200, so never retried them with a newer replica), its room activity and the page's history, and pruned, all
    into a state it no longer knows. Each is refused now, in its transaction: nothing written."""
    standby = LeaderStore(stores[0], elector(stores[0], FakeClock())[0])  # the daemon's view, not leading
    standby.record_rooms(  # before the raise: written, and each write below would change some of it
        [RoomActivity(VOLC, "class-1", True, 60.0, "callback"), RoomActivity(VOLC, "class-3", False, 50.0, "callback")],
        [
            HistorySpan("room", VOLC, "class-3", 40.0, 50.0),
            HistorySpan("seen", "SnapshotJob/gone/room", "", 40.0, None),
        ],
    )
    raw_sql(store_url, "UPDATE capctl_meta SET schema_version = 3")
    tables = ("capctl_inbox", "capctl_room_activity", "capctl_history")
    before = [raw_sql(store_url, f"SELECT * FROM {table}") for table in tables]
    newer = r"state schema version 3 was written by a newer capctl \(this one knows version 2\); upgrade capctl"
    writes: dict[str, Callable[[], object]] = {
        "inbox_put": lambda: standby.inbox_put(inbox_entry("volc:app:1")),
        "record_rooms": lambda: standby.record_rooms(
            [RoomActivity(VOLC, "class-2", True, 70.0, "callback")], [HistorySpan("room", VOLC, "class-2", 70.0, None)]
        ),
        "forget_rooms": lambda: standby.forget_rooms(1e12),
        "prune_history": lambda: stores[0].prune_history(1e12, 0),
        "prune_orphans": lambda: stores[0].prune_orphans(),
    }
    for name, write in writes.items():
        with pytest.raises(StateTooNew, match=newer):
            write()
            pytest.fail(f"{name} wrote")
    assert [raw_sql(store_url, f"SELECT * FROM {table}") for table in tables] == before


JOB = "SnapshotJob/classes"
GLOBS = "room selector class-*"  # (the store keeps a span's reason as given)


def selector_rows(store: Store) -> list[tuple[float, float | None]]:
    return [(s.start, s.end) for s in store.history() if s.kind == "selector" and s.subject == JOB]


def test_a_superseded_epoch_records_no_room_activity_nor_reopens_a_selector_row(stores: tuple[Store, Store]) -> None:
    """51a: room activity and the page's history (`record_rooms`) were not fenced: a deposed leader retrying a
    failed batch wrote its open `selector` span over the row its successor had closed (rewritable since 50b)."""
    old, b = superseded(stores)
    b.store().record_rooms([], [HistorySpan("selector", JOB, "", 10.0, 50.0, GLOBS)])  # the new leader closed it
    stale = [HistorySpan("selector", JOB, "", 10.0, None, GLOBS), HistorySpan("room", VOLC, "class-1", 40.0, None)]
    with pytest.raises(Fenced, match=rf"leadership epoch {old.epoch} was superseded"):
        old.record_rooms([RoomActivity(VOLC, "class-1", True, 60.0, "callback")], stale)
    assert selector_rows(stores[0]) == [(10.0, 50.0)]
    assert stores[0].room_activity({}) == []
    assert [s for s in stores[0].history() if s.kind == "room"] == []
    b.store().record_rooms([RoomActivity(VOLC, "class-1", True, 60.0, "callback")])  # the current term writes
    assert [r.room for r in stores[1].room_activity({})] == ["class-1"]


def test_a_replica_that_does_not_lead_records_rooms_but_no_selector_span(stores: tuple[Store, Store]) -> None:
    """The daemon's view (`LeaderStore`): the leader's batch is fenced; one that no longer leads (it stepped
    down: deposed, or its renewals failed) still writes what it heard of rooms, but no `selector` span, which
    would be its own globs, not those in force."""
    clock = FakeClock()
    a, _ = elector(stores[0], clock)
    view = LeaderStore(stores[0], a)
    a.tick()
    view.record_rooms([], [HistorySpan("selector", JOB, "", 10.0, 50.0, GLOBS)])
    a.resign()
    view.record_rooms(
        [RoomActivity(VOLC, "class-1", True, 60.0, "callback")],
        [HistorySpan("selector", JOB, "", 10.0, None, GLOBS), HistorySpan("room", VOLC, "class-1", 40.0, None)],
    )
    assert selector_rows(stores[1]) == [(10.0, 50.0)]
    assert [r.room for r in stores[1].room_activity({})] == ["class-1"]
    assert [(s.room, s.start) for s in stores[1].history() if s.kind == "room"] == [("class-1", 40.0)]


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_takeover_after_the_lease_lapsed_raises_the_epoch_and_fences_the_old_leader(
    stores: tuple[Store, Store],
) -> None:
    clock = FakeClock()
    a, a_events = elector(stores[0], clock, SHORT)
    b, b_events = elector(stores[1], clock, SHORT)
    a.tick()
    old = a.store()
    assert 0 < b.tick() <= SHORT.retry_period  # held: b retries soon
    taken = wait_until(lambda: b.tick() is not None and b.is_leader, seconds=10.0)
    assert taken and b.epoch == (old.epoch + 1)
    # a did not run meanwhile (on its clock no time passed): it would still act, but its writes are fenced
    assert a.may_act()
    with pytest.raises(Fenced):
        old.put(make_record())
    assert not a.is_leader and a_events.events[-1].reason is StepDown.SUPERSEDED
    assert stores[1].load().records == {}
    assert b_events.events == [LeaderEvent(LeaderEvent.BECAME, old.epoch + 1)]


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_leader_whose_lease_was_taken_learns_it_at_its_next_renew(stores: tuple[Store, Store]) -> None:
    clock = FakeClock()
    a, events = elector(stores[0], clock, SHORT)
    a.tick()
    time.sleep(SHORT.lease_duration + 0.2)
    stores[1].lock("capctl apply")  # took over the lapsed lease
    a.tick()
    assert not a.is_leader and events.events[-1].reason is StepDown.LOST
    assert "(capctl apply)" in events.events[-1].detail


def wait_until(condition: object, seconds: float) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


class Proxy:
    """A TCP relay on a loopback port to PostgreSQL that can be cut (an outage) and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.links: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            if not self.open.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.links += [client, upstream]
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, left: socket.socket, right: socket.socket) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(left, selectors.EVENT_READ, (left, right))
            sel.register(right, selectors.EVENT_READ, (right, left))
            try:
                while True:
                    for key, _ in sel.select():
                        source, sink = key.data
                        data = source.recv(65536)
                        if not data:
                            return
                        sink.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        self.open.clear()
        for link in self.links:
            link.close()
        self.links.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_an_unreachable_database_steps_the_leader_down_at_the_deadline(store_url: str) -> None:
    import psycopg.conninfo

    given = psycopg.conninfo.conninfo_to_dict(store_url)
    proxy = Proxy((str(given["host"]), int(str(given["port"]))))
    relayed = store_url.replace(f":{given['port']}/", f":{proxy.port}/")
    store = PostgresStateStore(relayed, connect_timeout=2)
    try:
        clock = FakeClock()
        a, events = elector(store, clock, SHORT)
        a.tick()
        proxy.cut()
        a.tick()  # the connection dropped...
        a.tick()  # ...and no new one: failures, but within the deadline: still leading
        assert a.is_leader and a.may_act() and a.last_error and "cannot connect" in a.last_error
        assert "127.0.0.1" in a.last_error and "password" not in a.last_error
        clock.advance(SHORT.renew_deadline)
        a.tick()
        assert not a.is_leader
        assert events.events[-1].reason is StepDown.UNREACHABLE and "cannot connect" in events.events[-1].detail
        proxy.restore()
        assert wait_until(lambda: a.tick() is not None and a.is_leader, seconds=10.0)  # its old lease lapsed
        assert events.events[-1] == LeaderEvent(LeaderEvent.BECAME, events.events[0].epoch + 1)
    finally:
        store.close()
        proxy.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_may_act_says_why_when_the_renewals_failed(store_url: str) -> None:
    store = open_sql(store_url)
    clock = FakeClock()
    a, events = elector(store, clock)
    a.tick()
    store.close()  # every later call fails, as with a database gone
    a.tick()
    assert a.may_act()  # within the deadline
    clock.advance(10.0)
    assert not a.may_act()
    assert events.events[-1].reason is StepDown.UNREACHABLE and "the store is closed" in events.events[-1].detail


@contextmanager
def elect_process(url: str) -> Iterator[subprocess.Popen[str]]:
    # Real time in a busy CI machine: a deadline a starved leader still meets, a lease a test can wait out.
    settings = LeaderSettings(lease_duration=4.0, renew_deadline=3.0, retry_period=0.5)
    worker = start_worker(
        "elect", url, str(settings.lease_duration), str(settings.renew_deadline), str(settings.retry_period)
    )
    try:
        yield worker
    finally:
        worker.kill()
        worker.communicate(timeout=30)


def next_line(worker: subprocess.Popen[str]) -> str:
    assert worker.stdout is not None
    line = worker.stdout.readline()
    assert line, worker.stderr.read() if worker.stderr else "no output"
    return line.strip()


def test_a_standby_process_leads_when_the_leader_is_killed(store_url: str, tmp_path: Path) -> None:
    """SQLite: the second replica waits on the flock (same host); PostgreSQL: on the lease."""
    with elect_process(store_url) as first:
        first_line = next_line(first)
        assert first_line.startswith("became leader "), first_line
        epoch = int(first_line.split()[2])
        with elect_process(store_url) as second:
            assert next_line(second).startswith(f"standby pid {first.pid} ")
            if store_url.startswith("sqlite"):
                # `capctl state rm` still fails at once beside the standing-by replica, naming the leader
                from tests.e2e.test_cli_contract import capctl

                proc = capctl("state", "rm", "SnapshotJob/x/y", "--state", store_url, cwd=tmp_path)
                assert proc.returncode == 1 and f"pid {first.pid} on" in proc.stderr, proc.stderr
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
            assert next_line(second) == f"became leader {epoch + 1}"


def test_the_inbox_keeps_callbacks_until_the_leader_claims_them(stores: tuple[Store, Store]) -> None:
    standby, leader_store = stores
    first = inbox_entry("volc:app:1", at=100.0)
    assert standby.inbox_put(first)
    assert standby.inbox_put(inbox_entry("zego:app:7:1", vendor="zego", at=101.0))
    assert not leader_store.inbox_put(inbox_entry("volc:app:1", at=102.0))  # the vendor's retry: a duplicate
    clock = FakeClock()
    leader, _ = elector(leader_store, clock)
    leader.tick()
    claimed = leader.store().inbox_claim(now=200.0)
    assert [(e.vendor, e.dedupe_key, e.received_at) for e in claimed] == [
        ("volc", "volc:app:1", 100.0),
        ("zego", "zego:app:7:1", 101.0),
    ]
    assert claimed[0] == first  # as stored, payload and digest included
    assert leader.store().inbox_claim(now=201.0) == []  # consumed once
    assert not standby.inbox_put(first)  # consumed, still remembered: a late retry is not handled twice
    assert standby.inbox_put(inbox_entry("volc:app:late", at=150.0))  # no leader takes it for an hour
    assert leader.store().inbox_claim(now=200.0 + 3600.0) == []  # forgets what is an hour old...
    assert not standby.inbox_put(first)  # ...consumed at 200: kept until after 3800
    assert leader.store().inbox_claim(now=3800.5) == []
    assert standby.inbox_put(first)  # forgotten: a vendor retries for minutes, not an hour
    assert standby.inbox_put(inbox_entry("volc:app:late", at=3801.0))


def test_a_deposed_leader_claims_nothing_from_the_inbox(stores: tuple[Store, Store]) -> None:
    old, b = superseded(stores)
    stores[0].inbox_put(inbox_entry("volc:app:2"))
    with pytest.raises(Fenced):
        old.inbox_claim(now=1.0)
    assert [e.dedupe_key for e in b.store().inbox_claim(now=2.0)] == ["volc:app:2"]


@pytest.mark.parametrize("payload", [{"signature": "abc"}, {"data": {"CallbackSecret": "s"}}, {"n": float("nan")}])
def test_the_inbox_refuses_signatures_and_non_json(store: Store, payload: dict[str, object]) -> None:
    with pytest.raises(StateError, match=r"inbox entry 'volc:app:3'"):
        store.inbox_put(inbox_entry("volc:app:3", payload=payload))
    assert store.inbox_claim(now=1.0) == []


def inbox_entry(
    key: str, *, vendor: str = "volc", at: float = 1.0, payload: dict[str, object] | None = None
) -> InboxEntry:
    body = payload if payload is not None else {"event": "SnapshotResult", "task_id": key.rsplit(":", 1)[-1]}
    return InboxEntry(vendor, key, dict(body), "sha256:" + "0" * 64, at)


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_lease_table_from_before_epochs_is_migrated(store_url: str) -> None:
    import psycopg

    old = open_sql(store_url)
    old.lock("capctl apply").release()
    with psycopg.connect(store_url, autocommit=True) as conn:  # as a state made before issue 16
        conn.execute("ALTER TABLE capctl_lock DROP COLUMN epoch")
        conn.execute("DROP TABLE capctl_inbox")
    old.close()
    upgraded = open_state(store_url, create=False)  # `state rm` opens read-only, and locks
    try:
        lock = upgraded.lock("capctl state rm")
        assert lock.epoch == 1
        lock.release()
        assert isinstance(upgraded, PostgresStateStore) and upgraded.inbox_put(inbox_entry("volc:app:4"))
    finally:
        upgraded.close()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_an_sqlite_state_from_before_epochs_is_migrated(store_url: str) -> None:
    import sqlite3

    from reconciler.state import sqlite_path

    open_sql(store_url).close()
    with sqlite3.connect(sqlite_path(store_url)) as db:
        db.execute("DROP TABLE IF EXISTS capctl_lock")  # made by nothing before issue 16
        db.execute("DROP TABLE IF EXISTS capctl_inbox")
    store = open_sql(store_url)
    try:
        with store.lock("capctl apply") as lock:
            assert lock.epoch == 1
        assert store.inbox_put(inbox_entry("volc:app:5"))
    finally:
        store.close()


def waiting_for_a_lock(admin: object, backend: int) -> bool:
    """Whether the session `backend` waits for a lock another session holds."""
    import psycopg

    assert isinstance(admin, psycopg.Connection)
    row = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone()
    return row is not None and row[0] == "Lock"


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_write_waiting_for_a_lock_does_not_hold_the_leaders_renewal_up(store_url: str) -> None:
    """Walk 14D-1: a leader's write waiting out `lock_timeout` (another session holds the serial row: an apply,
    a `state rm`, a DBA) held the store's one connection and, through the fence checked first, the lease row:
    the renewal waited as long, and a lock_timeout as long as the renew deadline cost the leader its lead."""
    import psycopg

    url = store_url.replace("options=", "options=-clock_timeout%3D4s%20")  # the write's wait, kept short here
    store = open_sql(url)
    assert isinstance(store, PostgresStateStore)
    try:
        lease = store.lock("capctl run", lease_seconds=15)
        backend = store._connection().info.backend_pid
        with psycopg.connect(store_url, autocommit=True) as admin, psycopg.connect(store_url) as other:
            other.execute("SELECT serial FROM capctl_meta FOR UPDATE")  # held until the rollback below
            outcome: list[object] = []
            writer = threading.Thread(target=lambda: outcome.append(store.put(make_record(), fence=lease.epoch)))
            writer.start()
            assert wait_until(lambda: waiting_for_a_lock(admin, backend), 3.0)
            began = time.monotonic()
            lease.renew()
            assert time.monotonic() - began < 1.5  # not the rest of the write's 4 s wait
            assert writer.is_alive()
            other.rollback()
            writer.join(5.0)
        assert outcome == [1]  # the write went through once the lock was let go
    finally:
        store.close()


def renewal_on_a_locked_row(store_url: str, lease: Lock, why: str) -> float:
    """Seconds a renewal takes to fail (as `lock timeout (…WHY…`) while another session holds the lease row."""
    import psycopg

    with psycopg.connect(store_url) as other:
        other.execute("SELECT * FROM capctl_lock FOR UPDATE")
        began = time.monotonic()
        with pytest.raises(StateError, match=rf"lock timeout \(.*{why}"):
            lease.renew()
        return time.monotonic() - began


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_the_lease_gives_up_a_locked_row_within_2_s_whatever_the_url_sets(store_url: str) -> None:
    """A renewal held up by a lock on the lease row fails within LEASE_LIMITS and is tried again next retry
    period, so several tries fit in the renew deadline; the URL's own (longer) limits are the store's."""

    store = open_sql(store_url.replace("options=", "options=-clock_timeout%3D30s%20"))
    assert isinstance(store, PostgresStateStore)
    try:
        lease = store.lock("capctl run", lease_seconds=15)
        took = renewal_on_a_locked_row(store_url, lease, r"another session held a lock .*2s for the lease")
        assert took < 4.0
        lease.renew()  # the lock let go: the lease connection is usable again
        with store._cursor(write=False) as cur:
            cur.execute("SHOW lock_timeout")
            assert cur.fetchall()[0][0] == "30s"
        with store._cursor(write=False, lease=True) as cur:
            cur.execute("SHOW application_name")
            assert cur.fetchall()[0][0] == "capctl lease"  # told apart from the store's session
    finally:
        store.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_role_limited_to_one_connection_is_told_the_lease_needs_a_second(store_url: str) -> None:
    """The lease's own connection (14D-1) is a second one: a role's CONNECTION LIMIT 1 refuses it; the error
    names the store and the limit, and nothing is written."""
    import secrets

    import psycopg

    role = f"capctl_one_{secrets.token_hex(4)}"
    with psycopg.connect(store_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1 IN ROLE postgres")
    try:
        store = open_sql(store_url.replace("postgres@", f"{role}@"))
        try:
            with pytest.raises(
                StateError,
                match=r"^cannot connect to the PostgreSQL state store postgresql://capctl_one"
                r".*\(the role's CONNECTION LIMIT is reached: each capctl process uses up to two",
            ):
                store.lock("capctl apply")
            assert store.serial() == 0 and store.load().records == {}
        finally:
            store.close()
    finally:
        with psycopg.connect(store_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")  # the tables it made, in the test's own schema
            admin.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_the_daemons_writes_wait_a_second_for_a_lock_so_its_loop_gets_to_renew(store_url: str) -> None:
    """Walk 14D-1: the daemon writes on its event loop, which also schedules the lease's renewals: a write
    waiting out the commands' 10 s lock_timeout let the renew deadline pass with no renewal even tried."""
    import psycopg

    from reconciler.daemon.main import LOCK_WAIT, open_daemon_state

    store = open_daemon_state(store_url)
    assert isinstance(store, PostgresStateStore)
    try:
        with psycopg.connect(store_url) as other:
            other.execute("SELECT serial FROM capctl_meta FOR UPDATE")
            began = time.monotonic()
            with pytest.raises(StateError, match=r"lock timeout \(.*: 1s unless the URL's options set it"):
                store.put(make_record())
            assert LOCK_WAIT <= time.monotonic() - began < 3.0
        assert store.put(make_record()) == 1
    finally:
        store.close()
    own = open_daemon_state(store_url.replace("options=", "options=-clock_timeout%3D7s%20"))
    try:
        with own._cursor(write=False) as cur:
            cur.execute("SHOW lock_timeout")
            assert cur.fetchall()[0][0] == "7s"  # the URL's own wins
    finally:
        own.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_the_daemons_lease_limits_fit_two_tries_in_its_renew_deadline(store_url: str) -> None:
    """Walk 15B-1: the lease's limits follow `--renew-deadline`/`--retry-period` (two tries, each after a retry
    period, fit in the deadline): a 4 s deadline with 1 s retries gives a locked lease row up in 667 ms, not
    the 2 s that ate half the deadline; a long deadline is not held to 3 s; the defaults keep 3 s and 2 s."""

    from reconciler.daemon.main import open_daemon_state
    from reconciler.state.postgres import lease_limits

    assert lease_limits(10.0, 2.0) == {"statement_timeout": "3s", "lock_timeout": "2s"}
    assert lease_limits(4.0, 3.0) == {"statement_timeout": "500ms", "lock_timeout": "333ms"}  # one try fits

    def shown(store: PostgresStateStore) -> list[str]:
        with store._cursor(write=False, lease=True) as cur:
            cur.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
            return [str(value) for value in cur.fetchall()[0]]

    long = open_daemon_state(store_url, LeaderSettings(lease_duration=90, renew_deadline=60, retry_period=2))
    assert isinstance(long, PostgresStateStore)
    try:
        assert shown(long) == ["15s", "10s"]
    finally:
        long.close()
    store = open_daemon_state(store_url, LeaderSettings(lease_duration=6, renew_deadline=4, retry_period=1))
    assert isinstance(store, PostgresStateStore)
    try:
        assert shown(store) == ["1s", "667ms"]
        lease = store.lock("capctl run", lease_seconds=6)
        took = renewal_on_a_locked_row(store_url, lease, r"; 667ms for the lease's statements\)")
        assert took < 1.9  # 2 s before: one try and a retry period were past half the deadline
        lease.renew()
    finally:
        store.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_lease_whose_session_was_ended_renews_at_once_on_a_new_one(store_url: str) -> None:
    """Walk 15B-2: the lease's idle connection cut (a server restart, pg_terminate_backend) cost one failed
    renewal, a retry period of the deadline; it is now replaced at once. The store's own calls keep one try."""
    import psycopg

    store = open_sql(store_url)
    assert isinstance(store, PostgresStateStore)

    def lease_backend() -> int:
        with store._cursor(write=False, lease=True) as cur:
            cur.execute("SELECT pg_backend_pid(), current_setting('application_name')")
            pid, name = cur.fetchall()[0]
        assert name == "capctl lease"
        return int(pid)

    try:
        lease = store.lock("capctl run", lease_seconds=15)
        first = lease_backend()
        with psycopg.connect(store_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            gone = time.monotonic() + 10.0  # the backend exits by itself, soon after the signal
            while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (first,)).fetchall():
                assert time.monotonic() < gone
                time.sleep(0.01)
        lease.renew()  # no `terminating connection due to administrator command`
        assert lease_backend() != first
        assert store.serial() == 0  # the store's own connection was not touched
    finally:
        store.close()


# Walk 16E-6: one inbox row no capctl writes (its payload edited by hand) failed the whole claim after the
# batch was marked consumed: every good callback claimed with it was lost, said only as "could not claim".
@pytest.mark.parametrize("edit", ["payload = 'not json'", "payload = '[1]'", "received_at = 'Infinity'"])
def test_an_inbox_entry_capctl_cannot_read_is_dropped_alone(store: Store, store_url: str, edit: str) -> None:
    from tests.state.test_state_damage import raw_sql

    for key in ("volc:app:1", "volc:app:2", "volc:app:3"):
        assert store.inbox_put(inbox_entry(key, at=10.0))
    raw_sql(store_url, f"UPDATE capctl_inbox SET {edit} WHERE dedupe_key = 'volc:app:2'")
    with capture_logs() as logged:  # through the state's lazy logger (walk 18g: no structlog at a CLI's start)
        claimed = store.inbox_claim(now=20.0)
    assert [e.dedupe_key for e in claimed] == ["volc:app:1", "volc:app:3"]
    assert [(e["event"], e["dedupe_keys"]) for e in logged] == [
        ("dropped callback inbox entries capctl cannot read", ["volc:app:2"])
    ]
    assert store.inbox_claim(now=21.0) == []  # consumed with the batch: it stops no later claim
