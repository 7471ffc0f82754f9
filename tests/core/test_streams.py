"""JSON documents of many tasks are written as they are encoded, and read as `json.dumps(indent=2)` wrote them."""

from __future__ import annotations

import io
import json
import tracemalloc
from typing import Any

import pytest

from reconciler.streams import write_json


class Discard(io.StringIO):
    """A stdout whose reader keeps nothing: what is held is what the writer holds."""

    def write(self, text: str) -> int:
        return len(text)


SHAPES: list[dict[str, Any]] = [
    {},
    {"serial": 0, "tasks": []},
    {"format_version": 2, "notes": ["a", "b"], "changes": [{"key": "SnapshotJob/a/大厅", "after": {"x": [1, {}]}}]},
    {"nested": {"list": [[], [1, 2]], "none": None}, "text": '→ \u0007 "q"'},
]


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("data", SHAPES)
def test_the_text_is_what_json_dumps_writes(data: dict[str, Any], ensure_ascii: bool) -> None:
    out = io.StringIO()
    write_json(data, out, ensure_ascii=ensure_ascii)
    assert out.getvalue() == json.dumps(data, indent=2, ensure_ascii=ensure_ascii) + "\n"


def test_one_task_at_a_time_is_held_as_text() -> None:
    """`state list -o json` at 50,000 tasks peaked at 760 MB: json.dumps(indent=2) held every piece at once."""
    task = {f"field_{i}": f"value-{i}" for i in range(30)}
    data = {"serial": 7, "tasks": [dict(task, key=f"SnapshotJob/job/room-{n}") for n in range(5000)]}
    size = len(json.dumps(data, indent=2))
    tracemalloc.start()
    try:
        write_json(data, Discard())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size / 20, (peak, size)
