"""What the daemon knows of its coverage, per job: rooms active and rooms captured (issue 17 point 5).

The simulator measures coverage from the outside (`sim/coverage.py`); this is the daemon's own view, from
the room callbacks it received and its records, so an operator can see it on a real vendor. A room is
*active* when the last room-activity callback (join, stream) came after the room was last reported empty
and after its last run idled out; it is *captured* when it is active and its task's record says running.
Without room callbacks nothing is known active: both gauges stay 0. Computed at scrape time (as
`capctl_tasks`), so the gauges never drift from the records and runtimes they describe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from reconciler.daemon import policy
from reconciler.daemon.runtime import KeyRuntime
from reconciler.model import ApiFamily, TaskRecord, TaskStatus, split_key

__all__ = ["RoomGauges", "room_active", "room_counts"]


def room_active(record: TaskRecord | None, rt: KeyRuntime) -> bool:
    """Room activity was reported, and nothing since says the room emptied (a callback, or a run that
    idled out: the vendor saw no stream for one idle timeout)."""
    if rt.room_activity is None:
        return False
    emptied = rt.room_emptied or 0.0
    if record is not None and record.stopped_at is not None and policy.idled_out(record):
        emptied = max(emptied, record.stopped_at)
    return rt.room_activity >= emptied


def room_counts(records: Iterable[TaskRecord], runtimes: Mapping[str, KeyRuntime]) -> dict[str, tuple[int, int]]:
    """`Kind/name` of each job that captures rooms and is still in force -> (rooms active, rooms active and
    captured). Not a ThumbnailJob (it captures no room: a 0 series each), nor a job whose every record is a
    tombstone (a 0 series for the 7 days of their retention, walk 60a)."""
    counts: dict[str, tuple[int, int]] = {}
    for record in records:
        if record.family is ApiFamily.ZEGO_THUMBNAIL or record.status is TaskStatus.REMOVED:
            continue
        kind, name, _ = split_key(record.key)
        job = f"{kind}/{name}"
        active, captured = counts.get(job, (0, 0))
        rt = runtimes.get(record.key)
        if rt is not None and room_active(record, rt):
            active += 1
            captured += record.status is TaskStatus.RUNNING
        counts[job] = (active, captured)
    return counts


class RoomGauges(Collector):
    """`capctl_rooms_active` and `capctl_rooms_captured` by job, read at scrape time. The label is `job_name`:
    Prometheus gives every scraped series a `job` label of its own (and would rename ours `exported_job`)."""

    def __init__(self, counts: Callable[[], Mapping[str, tuple[int, int]]]) -> None:
        self._counts = counts

    def collect(self) -> list[GaugeMetricFamily]:
        active = GaugeMetricFamily(
            "capctl_rooms_active",
            "Rooms of each job known active from room callbacks (a join or stream since the room last emptied)",
            labels=["job_name"],
        )
        captured = GaugeMetricFamily(
            "capctl_rooms_captured", "Rooms of each job known active whose task is running", labels=["job_name"]
        )
        for job, (n_active, n_captured) in sorted(self._counts().items()):
            active.add_metric([job], n_active)
            captured.add_metric([job], n_captured)
        return [active, captured]
