"""A second process for the state tests: holds a lock until killed, or races another writer.

python -m tests.state.worker hold-lock URL COMMAND LEASE  # prints "locked <holder>", then waits
python -m tests.state.worker increment URL KEY N          # N compare-and-set increments of reissue_count
python -m tests.state.worker put-then-die URL N           # N commits, then SIGKILL on itself
python -m tests.state.worker elect URL LEASE DEADLINE RETRY  # a LeaderElector: prints its events until killed
python -m tests.state.worker upgrade URL ACCOUNTS         # upgrade_rooms(ACCOUNTS, JSON); prints its result
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from reconciler.clock import SystemClock
from reconciler.leader import LeaderElector, LeaderEvent, LeaderSettings
from reconciler.state import SerialMismatch, SQLiteStateStore, open_state
from reconciler.state.postgres import PostgresStateStore

from .helpers import make_record


def hold_lock(url: str, command: str, lease_seconds: float) -> None:
    store = open_state(url)
    lock = store.lock(command, lease_seconds=lease_seconds)
    print("locked", lock.holder, flush=True)
    threading.Event().wait()  # until the test kills this process


def increment(url: str, key: str, times: int) -> None:
    store = open_state(url)
    conflicts = 0
    for _ in range(times):
        while True:
            snapshot = store.load()
            current = snapshot.records[key]
            try:
                store.put(current.evolve(reissue_count=current.reissue_count + 1), expected_serial=snapshot.serial)
                break
            except SerialMismatch:
                conflicts += 1
    store.close()
    print("conflicts", conflicts, flush=True)


def put_then_die(url: str, count: int) -> None:
    store = open_state(url)
    for i in range(count):
        store.put(make_record(f"SnapshotJob/crash/room-{i}", reissue_count=i))
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit: as abrupt as a crash


def elect(url: str, settings: LeaderSettings) -> None:
    """Stand by or lead as a daemon replica would; `standby HOLDER` once, then each event as it happens."""
    store = open_state(url)
    assert isinstance(store, SQLiteStateStore | PostgresStateStore)

    def report(event: LeaderEvent) -> None:
        print(event.event, event.epoch, event.reason or "", flush=True)

    elector = LeaderElector(store, "capctl run", clock=SystemClock(), settings=settings, on_event=report)
    said_standby = False
    while True:
        wait = elector.tick()
        if elector.other_holder and not said_standby:
            print("standby", elector.other_holder, flush=True)
            said_standby = True
        time.sleep(wait)


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["hold-lock", url, command, lease]:
            hold_lock(url, command, float(lease))
        case ["increment", url, key, times]:
            increment(url, key, int(times))
        case ["put-then-die", url, count]:
            put_then_die(url, int(count))
        case ["elect", url, lease, deadline, retry]:
            elect(url, LeaderSettings(float(lease), float(deadline), float(retry)))
        case ["upgrade", url, accounts]:
            print(open_state(url).upgrade_rooms(json.loads(accounts)), flush=True)
        case _:
            sys.exit(__doc__)
