"""Which records' settings a renamed job's new key may take a running Volcengine task over with
(`transitions.runs_as_sent`): the record that started the run last, and every one whose start, update or
settings are not confirmed. An older record still holding the task kept settings the run may no longer have."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.model import TaskRecord, TaskStatus
from reconciler.redact import redact_tree
from reconciler.transitions import found_running, runs_as_sent
from tests.core.factories import desired, record_for

NEW = "SnapshotJob/c/r1"


def sent(interval: int) -> dict[str, Any]:
    """The request of a job of that interval, whatever its name: each has `taskId: pinned`."""
    return {**redact_tree(desired("r1", interval=interval).request), "TaskId": "pinned"}


def holder(job: str, interval: int, started_at: float | None, **changes: Any) -> TaskRecord:
    task = desired("r1", job=job, interval=interval)
    return record_for(task, request=sent(interval), started_at=started_at, **changes)


UNCONFIRMED = {"status": TaskStatus.FAILED, "vendor_task_id": None}

CASES = {
    "a rename alone": ([holder("a", 5, 10.0)], True),
    "renamed and edited": ([holder("a", 10, 10.0)], False),
    "the older holder's settings (walk 54C-1)": ([holder("a", 5, 10.0), holder("b", 10, 20.0)], False),
    "the last holder's settings": ([holder("a", 5, 10.0), holder("b", 5, 20.0)], True),
    "an older holder updated it since (walk 55E-1)": (
        [holder("a", 10, 10.0, updated_at=30.0), holder("b", 5, 20.0)],
        False,
    ),
    "an older holder updated it before": ([holder("a", 10, 10.0, updated_at=15.0), holder("b", 5, 20.0)], True),
    "the last holder updated it": ([holder("a", 10, 10.0), holder("b", 5, 20.0, updated_at=30.0)], True),
    "the last holder's update unconfirmed": ([holder("b", 5, 20.0, update_unconfirmed=True)], False),
    "a start unconfirmed since": ([holder("a", 5, 20.0), holder("b", 10, None, **UNCONFIRMED)], False),
    "a start of these settings unconfirmed": ([holder("a", 5, 20.0), holder("b", 5, 10.0, **UNCONFIRMED)], True),
    "settings unknown": ([found_running(holder("b", 5, 10.0, **UNCONFIRMED))], False),
    "its own key's run, last": ([holder("a", 5, 10.0), holder("c", 5, 20.0)], False),
    "nobody": ([], False),
}


@pytest.mark.parametrize("holders, expected", CASES.values(), ids=CASES.keys())
def test_a_run_is_taken_over_only_by_the_settings_it_is_known_to_run_with(
    holders: list[TaskRecord], expected: bool
) -> None:
    assert runs_as_sent(holders, NEW, sent(5)) is expected
