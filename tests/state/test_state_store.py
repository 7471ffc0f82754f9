"""The StateStore contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from reconciler.model import ApiFamily, JobKind, RestartPolicy, TaskRecord, TaskStatus
from reconciler.state import SerialMismatch, StateError, StateStore, open_state

from .helpers import make_record, start_worker


def every_field_set() -> TaskRecord:
    """A record in which no field holds its default, so a round trip exercises every one."""
    return TaskRecord(
        key="RecordingJob/town-hall/room/with/slashes",
        provider="zego-prod",
        family=ApiFamily.ZEGO_RECORD_LEGACY,
        kind=JobKind.RECORDING,
        target="room/with/slashes",
        spec_hash="hmac:0123456789ab",
        fixed_hash="hmac:ba9876543210",
        updatable={"interval": 10},
        status=TaskStatus.DORMANT,
        vendor_task_id="task-ü-1",
        client_task_id="intent-1",
        vendor_ref={"TaskId": "task-ü-1", "RoomId": "room/with/slashes"},
        stop_reason="IdleTimeOut",
        started_at=1764226800.125,
        observed_at=1764226830.5,
        stopped_at=1764227000.0,
        reissue_count=3,
        unproductive_runs=2,
        fault_runs=1,
        next_attempt_at=1764230000.75,
        last_error='quote " and newline \n kept',
        removed_at=1764231000.5,
        idle_timeout=180,
        max_duration=86400,
        restart_policy=RestartPolicy.NEVER,
        productive=True,
        update_unconfirmed=True,
        updated_at=1764226900.25,
        reissuing=True,
        replacing=True,
        room_empty=True,
        start_refused=True,
        accepted={"spec_hash": "s0", "vendor_task_id": "t0", "started_at": 1_699_999_000.0},
        request={"RoomId": "room", "Nested": [1, 2.5, None, True, {"Secret": "sha256:abcdefabcdef"}]},
        labels={"team": "safety", "app.kubernetes.io/name": "ü"},
        selector="class-* except class-test-*",
        home="zego:1234567890 at https://cloudrecord-sh.zego.im",
    )


def test_the_sample_record_leaves_no_field_at_its_default() -> None:
    # Guards the round-trip test below: a new TaskRecord field must be given a value there.
    record = every_field_set()
    defaults = {f.name: f.default for f in dataclasses.fields(TaskRecord) if f.default is not dataclasses.MISSING}
    factories = {
        f.name: f.default_factory()
        for f in dataclasses.fields(TaskRecord)
        if f.default_factory is not dataclasses.MISSING
    }
    at_default = [name for name, value in {**defaults, **factories}.items() if getattr(record, name) == value]
    assert at_default == []


def test_round_trip_keeps_every_field_and_type(store_url: str) -> None:
    record = every_field_set()
    with_defaults = make_record("SnapshotJob/plain/lobby")
    writer = open_state(store_url)
    writer.put(record)
    writer.put(with_defaults)
    writer.close()

    reader = open_state(store_url)  # a new connection: nothing comes from a cache
    loaded = reader.load().records
    reader.close()
    assert loaded == {record.key: record, with_defaults.key: with_defaults}
    got = loaded[record.key]
    assert type(got.status) is TaskStatus and type(got.family) is ApiFamily
    assert type(got.started_at) is float and type(got.stopped_at) is float
    assert type(got.reissue_count) is int and got.productive is True


def test_empty_store_has_serial_zero(store: StateStore) -> None:
    assert store.serial() == 0
    assert store.load().records == {}


def test_serial_moves_once_per_committed_change(store: StateStore) -> None:
    a, b = make_record("SnapshotJob/j/a"), make_record("SnapshotJob/j/b")
    assert store.put(a) == 1
    assert store.put(a.evolve(status=TaskStatus.RUNNING)) == 2
    assert store.put(b) == 3
    assert store.delete(a.key) == 4
    assert store.delete(a.key) == 4  # nothing to delete: nothing changed
    snapshot = store.load()
    assert snapshot.serial == store.serial() == 4
    assert snapshot.records == {b.key: b}


def test_put_many_is_one_change(store: StateStore) -> None:
    records = [make_record(f"SnapshotJob/bulk/room-{i}", reissue_count=i) for i in range(50)]
    assert store.put_many(records) == 1
    assert store.put_many([]) == 1
    assert store.put_many([records[0].evolve(status=TaskStatus.STOPPED)], expected_serial=1) == 2
    loaded = store.load().records
    assert len(loaded) == 50 and loaded[records[0].key].status is TaskStatus.STOPPED


def test_delete_many_is_one_change(store: StateStore) -> None:
    """`capctl state rm 'SnapshotJob/bulk/*'`: every match forgotten in one transaction, the serial moved once."""
    from reconciler.state.sql import SqlStateStore

    assert isinstance(store, SqlStateStore)
    records = [make_record(f"SnapshotJob/bulk/room-{i}") for i in range(3)]
    assert store.put_many(records) == 1
    assert store.delete_many([r.key for r in records[:2]] + ["SnapshotJob/bulk/none"]) == 2
    assert store.delete_many(["SnapshotJob/bulk/none"]) == 2  # nothing there: nothing changed
    assert store.load().records == {records[2].key: records[2]}


def test_compare_and_set_refuses_a_stale_serial(store: StateStore) -> None:
    first = make_record()
    serial = store.put(first, expected_serial=0)
    with pytest.raises(SerialMismatch) as caught:
        store.put(first.evolve(status=TaskStatus.FAILED), expected_serial=serial - 1)
    assert (caught.value.expected, caught.value.actual) == (serial - 1, serial)
    assert "state serial is 1, expected 0" in str(caught.value)
    with pytest.raises(SerialMismatch):
        store.delete(first.key, expected_serial=serial + 1)
    with pytest.raises(SerialMismatch):
        store.put_many([make_record("SnapshotJob/other/room")], expected_serial=7)
    # Nothing of the refused writes landed.
    assert store.load().records == {first.key: first}
    assert store.serial() == serial
    assert store.delete(first.key, expected_serial=serial) == serial + 1


def test_a_record_that_cannot_be_stored_changes_nothing(store: StateStore) -> None:
    good = make_record("SnapshotJob/ok/room")
    bad = make_record("SnapshotJob/bad/room", started_at=float("nan"))
    with pytest.raises(StateError, match="SnapshotJob/bad/room"):
        store.put_many([good, bad])
    assert store.load().records == {}
    assert store.serial() == 0


def test_many_records_load_in_one_snapshot(store: StateStore) -> None:
    records = [
        make_record(f"SnapshotJob/fleet/room-{i:05d}", status=TaskStatus.RUNNING, vendor_task_id=f"t-{i}")
        for i in range(5000)
    ]
    serial = store.put_many(records[:2500])
    serial = store.put_many(records[2500:], expected_serial=serial)
    snapshot = store.load()
    assert snapshot.serial == serial == 2
    assert snapshot.records == {r.key: r for r in records}


def test_records_load_in_key_order(store: StateStore) -> None:
    """A plan lists deletes in the records' order: it was the table's (`mod-8, mod-7, mod-21, …`, walk 8f)."""
    serial = store.put(make_record("SnapshotJob/j/mod-8"))
    serial = store.put(make_record("SnapshotJob/j/mod-7"), expected_serial=serial)
    store.put(make_record("SnapshotJob/j/mod-8", vendor_task_id="again"), expected_serial=serial)
    assert list(store.load().records) == ["SnapshotJob/j/mod-7", "SnapshotJob/j/mod-8"]


def test_a_closed_store_says_so(store_url: str) -> None:
    store = open_state(store_url)
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(StateError, match="closed"):
        store.load()


def test_two_processes_racing_never_lose_an_update(store_url: str) -> None:
    key = "SnapshotJob/race/room"
    store = open_state(store_url)
    store.put(make_record(key))
    workers = [start_worker("increment", store_url, key, "60") for _ in range(2)]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    snapshot = store.load()
    store.close()
    # 120 compare-and-set increments, each one commit: a lost update would show in either number.
    assert (snapshot.records[key].reissue_count, snapshot.serial) == (120, 1 + 120), outputs


def test_a_crash_loses_nothing_already_committed(store_url: str) -> None:
    worker = start_worker("put-then-die", store_url, "25")
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == -signal.SIGKILL, err
    store = open_state(store_url)
    snapshot = store.load()
    store.close()
    assert snapshot.serial == 25
    assert sorted(r.reissue_count for r in snapshot.records.values()) == list(range(25))


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_dropped_connection_fails_one_call_then_reconnects(store: StateStore, store_url: str) -> None:
    import psycopg

    from reconciler.state.postgres import PostgresStateStore

    assert isinstance(store, PostgresStateStore)
    store.put(make_record())
    backend = store._connection().info.backend_pid  # only this store's session: tests run in parallel
    with psycopg.connect(store_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    with pytest.raises(StateError, match=r"^postgresql://postgres@127\.0\.0\.1:\d+/"):
        store.load()
    assert store.load().serial == 1


def test_stores_opened_at_the_same_time_share_one_schema(store_url: str) -> None:
    # Replicas starting together must not race each other creating the tables.
    with ThreadPoolExecutor(max_workers=4) as pool:
        stores = list(pool.map(lambda _: open_state(store_url), range(4)))
    serials = [s.put(make_record(f"SnapshotJob/start/room-{i}")) for i, s in enumerate(stores)]
    assert serials == [1, 2, 3, 4]
    assert len(stores[0].load().records) == 4
    for opened in stores:
        opened.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_read_only_session_is_dropped_so_the_next_call_reaches_a_writable_server(
    store: StateStore, store_url: str
) -> None:
    """A failover demotes the primary (or `default_transaction_read_only` is set): the session refuses
    writes for as long as it lives. Before, the daemon kept that connection, so it never led again after
    the database was writable (walk 13C-2)."""
    from reconciler.state.postgres import PostgresStateStore

    assert isinstance(store, PostgresStateStore)
    store.put(make_record())
    store._connection().execute("SET default_transaction_read_only = on")  # as the session of a demoted primary
    with pytest.raises(StateError, match="read-only transaction") as caught:
        store.put(make_record("SnapshotJob/start/other"))
    # What to do, which the server's words do not say (walk 48D-2).
    assert "(this server takes no writes: a hot standby" in str(caught.value)
    assert "target_session_attrs=read-write" in str(caught.value)
    assert store.put(make_record("SnapshotJob/start/other")) == 2  # a new session: writable again


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_tables_dropped_under_an_open_state_are_named_with_the_way_out(store: StateStore, store_url: str) -> None:
    """Walk 20F-2: the server's `relation "capctl_meta" does not exist` left on-call to guess, and restarting
    the daemon, the usual first move, makes a new state that starts every task again."""
    import psycopg

    store.put(make_record())
    with psycopg.connect(store_url, autocommit=True) as admin:
        tables = admin.execute(
            "SELECT string_agg(tablename, ', ') FROM pg_tables"
            " WHERE schemaname = current_schema() AND tablename LIKE 'capctl%'"
        )
        admin.execute(f"DROP TABLE {tables.fetchone()[0]}")  # type: ignore[index]
    for call in (lambda: store.put(make_record("SnapshotJob/start/other")), lambda: store.lock("capctl run")):
        with pytest.raises(StateError) as failed:
            call()
        said = str(failed.value)
        assert 'relation "capctl_' in said and "capctl's tables are gone from this database" in said, said
        assert "restore the newest backup" in said and "starts every declared task again" in said


@pytest.mark.parametrize("table", ["capctl_lock", "capctl_room_activity"])
@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_one_table_dropped_beside_the_records_is_not_sent_to_a_whole_restore(
    store: StateStore, store_url: str, table: str
) -> None:
    """Walk 21A-3: `DROP TABLE capctl_lock` (a stale lock "cleared" by hand) was said as every table gone,
    "restore the newest backup": that undid every record written since it, when the next capctl to open the
    state makes the lock's table again. The room activity's table was made again by nothing: every write of
    room activity failed for good; now its first writer makes it, as for a state from before it."""
    import psycopg

    from reconciler.model import RoomActivity
    from reconciler.state.postgres import PostgresStateStore

    def use(on: StateStore) -> None:
        assert isinstance(on, PostgresStateStore)
        if table == "capctl_lock":
            on.lock("capctl run").release()
        else:
            on.record_rooms([RoomActivity("volcengine:app", "r1", True, 1.0, "callback")])

    store.put(make_record())
    use(store)
    with psycopg.connect(store_url, autocommit=True) as admin:
        admin.execute(f"DROP TABLE {table}")
    with pytest.raises(StateError) as failed:
        use(store)  # under an open state nothing is made again
    said = " ".join(str(failed.value).split())
    assert f'relation "{table}" does not exist' in said and f"({table} alone is gone from this database" in said
    assert "the task records are still there" in said and "restore the newest backup" not in said, said
    assert "a capctl that opens this state anew (" in said and "restarted) makes it again" in said, said
    again = open_state(store_url)
    try:
        use(again)  # made again, the records kept
        assert again.record(make_record().key) is not None
    finally:
        again.close()
