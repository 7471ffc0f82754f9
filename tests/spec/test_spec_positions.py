"""Every location the loader reports in multi-document files: a document is where its content starts
(its first key, after `---` and comments), and fields, list items and duplicates are at their own place."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec import SpecErrors, load_spec_set
from reconciler.spec.errors import ErrorSink
from reconciler.spec.yamlpos import load_documents
from tests.spec.conftest import BASE, SECRET_ENV

# Line numbers are part of the test: keep the layout.
MULTI = """\
# jobs of the lobby team
---
# the lobby: two rooms

apiVersion: capctl/v1
kind: SnapshotJob
metadata: {name: lobby}
spec:
  provider: volc
  rooms: [lobby, hall]
  storage: tos
---
apiVersion: capctl/v1
kind: SnapshotJob
metadata: {name: hall}
spec:
  provider: volc
  rooms:
    - east
    - lobby
  storage: tos
--- {apiVersion: capctl/v1, kind: SnapshotJob, metadata: {name: flow}, spec: {provider: volc, rooms: [f], storage: tos}}
...
---
    # indented content
    apiVersion: capctl/v1
    kind: SnapshotJob
    metadata: {name: deep}
    spec: {provider: volc, rooms: [d], storage: tos}
"""


def _path(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "multi.yaml"
    path.write_text(text)
    return path


def _errors(path: Path) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        load_spec_set([BASE, path], env=SECRET_ENV)
    return [str(e) for e in info.value.errors]


def test_a_document_is_where_its_first_key_is(tmp_path: Path) -> None:
    path = _path(tmp_path, MULTI)
    docs = load_documents(str(path), path.read_bytes(), ErrorSink())
    assert [(d.line, d.col) for d in docs] == [(5, 1), (13, 1), (22, 5), (26, 5)]


def test_tasks_and_relations_name_the_document_line(tmp_path: Path) -> None:
    path = _path(tmp_path, MULTI.replace("    - lobby", "    - lobby2"))
    tasks = load_spec_set([BASE, path], env=SECRET_ENV).tasks
    sources = {key.split("/")[1]: task.source for key, task in tasks.items()}
    assert sources == {
        n: f"{path}:{p}" for n, p in [("lobby", "5:1"), ("hall", "13:1"), ("flow", "22:5"), ("deep", "26:5")]
    }


def test_duplicates_list_items_and_fields_in_later_documents(tmp_path: Path) -> None:
    text = MULTI.replace("metadata: {name: flow}", "metadata: {name: lobby}").replace(
        "    spec: {provider: volc, rooms: [d], storage: tos}",
        "    spec: {provider: volc, rooms: [d], storage: tos, intervall: 5}\n    kind: Provider",
    )
    path = _path(tmp_path, text)
    assert _errors(path) == [
        f"{path}:20:7: spec.rooms[1]: room 'lobby' on provider 'volc' is already captured by "
        f"SnapshotJob 'lobby' ({path}:5:1); a room can belong to one SnapshotJob per provider",
        f"{path}:22:65: duplicate SnapshotJob name 'lobby' (first defined at {path}:5:1)",
        f"{path}:29:54: unknown field 'spec.intervall' (did you mean 'interval'?)",
        f"{path}:30:5: duplicate key 'kind' (first at line 27)",
    ]


def test_document_level_errors_point_at_the_content(tmp_path: Path) -> None:
    text = "---\n# a list, not a mapping\n- a\n- b\n---\n\n# no kind\napiVersion: capctl/v1\nmetadata: {name: x}\n"
    path = _path(tmp_path, text)
    assert _errors(path) == [
        f"{path}:3:1: a document must be a mapping with apiVersion, kind, metadata and spec, got a list",
        f"{path}:8:1: missing required field 'kind' (one of Provider, Storage, SnapshotJob, RecordingJob, "
        "ThumbnailJob)",
    ]
