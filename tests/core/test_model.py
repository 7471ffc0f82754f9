"""TaskRecord.evolve: the daemon's hot path copy of a record, held to what dataclasses.replace does."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from reconciler.model import TaskRecord, TaskStatus
from tests.core.factories import desired, record_for

CHANGES: dict[str, Any] = {
    "status": TaskStatus.STOPPED,
    "observed_at": 12.5,
    "stop_reason": "idle timeout",
    "labels": {"team": "safety"},
    "vendor_task_id": None,
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_evolve_is_replace(name: str) -> None:
    original = record_for(desired("lobby"), TaskStatus.RUNNING)
    evolved = original.evolve(**{name: CHANGES[name]})
    assert evolved == dataclasses.replace(original, **{name: CHANGES[name]})
    assert getattr(evolved, name) == CHANGES[name]
    assert original.status is TaskStatus.RUNNING  # the original is untouched (frozen)


def test_evolve_without_changes_is_an_equal_copy() -> None:
    original = record_for(desired("lobby"))
    assert original.evolve() == original


def test_evolve_refuses_an_unknown_field() -> None:
    with pytest.raises(TypeError, match="stauts"):
        record_for(desired("lobby")).evolve(stauts=TaskStatus.DONE)


def test_every_field_is_carried_over() -> None:
    original = record_for(desired("lobby"), stop_reason="idle timeout", observed_at=3.0, labels={"a": "b"})
    copied = original.evolve()
    assert all(getattr(copied, f.name) == getattr(original, f.name) for f in dataclasses.fields(TaskRecord))
