"""Each reconcile's log lines carry its key and its own reconcile id (bound by token in `Workers.process`)."""

from __future__ import annotations

from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from tests.daemon.conftest import Harness, write_specs
from tests.specdocs import snapshot_job


async def test_each_reconcile_logs_with_its_key_and_id(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby", "hall"], idle=20))
    with capture_logs(processors=[merge_contextvars]) as logs:
        await harness.start()
        await harness.advance(60)  # started, idled out (no stream), re-issued: several passes per key
    decisions = [e for e in logs if e["event"] == "decision"]
    assert {e["key"] for e in decisions} == {"SnapshotJob/audit/lobby", "SnapshotJob/audit/hall"}
    ids: dict[str, set[int]] = {e["key"]: set() for e in decisions}
    for e in decisions:
        ids[e["key"]].add(e["reconcile_id"])
    assert all(len(v) >= 2 for v in ids.values())  # a new id for each pass
    assert not set.intersection(*ids.values())  # never one pass's id on another key's line
