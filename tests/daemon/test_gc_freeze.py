"""Walk 32b: the records a term read and the spec set taken are frozen (`gc.freeze`), out of the cyclic
collector's reach: a full pass walked them on the loop, 2.5-3.2 s at 100,000 tasks (bench/loop_hold.py). Frozen
objects are still freed by reference counting when the next read replaces them, so what is frozen stays one
read's worth over repeated takeovers and reloads (a leak would grow by a read each time)."""

from __future__ import annotations

import gc

import pytest

from reconciler import gcpause
from tests.daemon.conftest import Harness, write_specs
from tests.specdocs import snapshot_job

JOBS, ROOMS = 5, 10


def jobs(idle: int) -> list[str]:
    return [snapshot_job(f"job-{j}", [f"room-{j}-{r}" for r in range(ROOMS)], idle=idle) for j in range(JOBS)]


async def test_a_terms_read_and_each_spec_set_are_frozen_and_what_is_frozen_stays_bounded(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_specs(harness.specs, *jobs(86400))
    daemon = await harness.start()
    while daemon.reconciler.status_counts().get("running", 0) < JOBS * ROOMS:
        await harness.advance(10)
    held: list[list[int]] = []  # what the cache held at each freeze (ids: a reference would keep it alive)
    freeze = gcpause.freeze_heap

    def spy() -> None:
        held.append([id(r) for r in daemon.records.values()])
        freeze()

    monkeypatch.setattr(gcpause, "freeze_heap", spy)
    gc.unfreeze()
    gc.collect()  # the session's garbage so far: only what the freezes below keep is counted at the end
    epoch = daemon.lease.elector.epoch
    assert epoch is not None
    frozen = []
    for n in range(20):
        before = {id(r) for r in daemon.records.values()}
        await daemon.lease._take_over(epoch)
        read = [id(r) for r in daemon.records.values()]
        assert len(held) == 2 * n + 1 and len(read) == JOBS * ROOMS
        # Frozen once the records just read were in the cache (new objects, not those before).
        assert held[-1] == read and not before & set(read)
        write_specs(harness.specs, *jobs(86400 - n % 2))
        assert daemon.specs.reload() and len(held) == 2 * n + 2
        await harness.advance(10)
        frozen.append(gc.get_freeze_count())
    assert frozen[0] > JOBS * ROOMS * 20  # the records and the set, with the rest of the heap
    # Over 20 reads it grows only as the process's live heap does (the simulator's log of calls, ~600 a round).
    assert max(frozen) < frozen[0] + 20 * 1_000, frozen
    # What was frozen and then replaced was freed (by reference counting): given back to the collector after it
    # collected what it could reach, none of it is garbage (measured: 0; a list of the records in a cycle, made
    # before each takeover, leaves 152 here).
    gc.collect()
    gc.unfreeze()
    assert gc.collect() < 50
