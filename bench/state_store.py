"""Benchmark 5: the state stores on their own: one commit per action, and loading a large state.

An apply commits every action as it finishes and a daemon commits after every poll, so the cost of one
`put` bounds both; `plan` and every daemon start load the whole state first. Measures, for SQLite (and
PostgreSQL when a URL is given): the median and p99 of N single-record puts, one `put_many` of M records,
and the median of several full loads of M records. Targets: a put in about 1 ms, 100,000 records loaded
in about 1 s.

    .venv/bin/python bench/state_store.py [--puts 2000] [--records 100000] [--loads 3] [--postgres URL]

(`source .ci/postgres.sh` starts a throwaway PostgreSQL and sets CAPCTL_TEST_POSTGRES_URL, used by default.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from common import machine, median

from reconciler.model import ApiFamily, JobKind, TaskRecord, TaskStatus
from reconciler.state import StateStore, open_state


def record(i: int) -> TaskRecord:
    """A running snapshot task as an apply leaves it (request, vendor reference, updatable fields)."""
    room = f"room-{i:06d}"
    return TaskRecord(
        key=f"SnapshotJob/fleet/{room}",
        provider="volc",
        family=ApiFamily.VOLC_SNAPSHOT,
        kind=JobKind.SNAPSHOT,
        target=room,
        spec_hash="sha256:" + "a" * 64,
        fixed_hash="sha256:" + "b" * 64,
        status=TaskStatus.RUNNING,
        vendor_task_id=f"task-{i}",
        vendor_ref={"AppId": "capctl-sim-volc", "RoomId": room, "TaskId": f"task-{i}"},
        started_at=1_764_226_800.0 + i,
        observed_at=1_764_226_830.0 + i,
        idle_timeout=180,
        updatable={"interval": 5},
    )


def measure(store: StateStore, puts: int, records: int, loads: int) -> str:
    put_times = []
    for i in range(puts):
        started = time.perf_counter()
        store.put(record(records + i))
        put_times.append(time.perf_counter() - started)
    batch = [record(i) for i in range(records)]
    started = time.perf_counter()
    store.put_many(batch)
    put_many = time.perf_counter() - started
    load_times = []
    for _ in range(loads):
        started = time.perf_counter()
        snapshot = store.load()
        load_times.append(time.perf_counter() - started)
    assert len(snapshot.records) == records + puts, len(snapshot.records)
    p99 = statistics.quantiles(put_times, n=100)[98]
    return (
        f"put: median {median(put_times) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms ({puts} puts); "
        f"put_many {records}: {put_many:.2f} s; load {records + puts}: median {median(load_times):.2f} s "
        f"of {loads}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("CAPCTL_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    if args.puts < 2:
        parser.error("--puts must be at least 2 (for a p99)")
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        store = open_state(f"sqlite:///{tmp}/state.db")
        try:
            print("sqlite    ", measure(store, args.puts, args.records, args.loads))
        finally:
            store.close()
    if args.postgres:
        import psycopg

        schema = f"capctl_bench_{os.getpid()}"
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
            try:
                sep = "&" if "?" in args.postgres else "?"
                store = open_state(f"{args.postgres}{sep}options=-csearch_path%3D{schema}")
                try:
                    print("postgres  ", measure(store, args.puts, args.records, args.loads))
                finally:
                    store.close()
            finally:
                admin.execute(f"DROP SCHEMA {schema} CASCADE")
    else:
        print("postgres   skipped (no --postgres URL and CAPCTL_TEST_POSTGRES_URL is not set)")


if __name__ == "__main__":
    main()
