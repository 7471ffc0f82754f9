"""Property tests: whatever bytes or YAML trees arrive, the loader answers with a SpecSet or SpecErrors."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.spec import SpecErrors, load_spec_set
from tests.spec.conftest import BASE, SECRET_ENV

KEYS = [
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "spec",
    "provider",
    "rooms",
    "storage",
    "interval",
    "env",
    "file",
    "default",
    "type",
    "streams",
    "user",
    "mix",
    "options",
    "files",
    "cdn",
    "<<",
    "labels",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        ["capctl/v1", "SnapshotJob", "Provider", "Storage", "RecordingJob", "ThumbnailJob", "volc", "zego", "5s"]
    ),
)
TREES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), kids, max_size=5)
    ),
    max_leaves=30,
)
FUZZ = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _load(path: Path) -> None:
    try:
        load_spec_set([BASE, path], env=SECRET_ENV)
    except SpecErrors as exc:
        assert exc.errors and all(e.message for e in exc.errors)


@FUZZ
@given(docs=st.lists(TREES, min_size=1, max_size=3))
def test_random_trees_never_crash(tmp_path: Path, docs: list[object]) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    _load(path)


@FUZZ
@given(
    text=st.lists(st.sampled_from([*"{}[]:-,&*!|>'\"#%@` \n\tab05", "---\n", "env", "<<"]), max_size=80).map("".join)
)
def test_random_text_never_crashes(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    _load(path)


@FUZZ
@given(
    spec=st.dictionaries(
        st.sampled_from(
            ["provider", "rooms", "storage", "interval", "idleTimeout", "image", "streams", "taskId", "restartPolicy"]
        ),
        TREES,
        max_size=6,
    )
)
def test_random_job_specs_never_crash(tmp_path: Path, spec: dict[str, object]) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(
        yaml.safe_dump({"apiVersion": "capctl/v1", "kind": "SnapshotJob", "metadata": {"name": "j"}, "spec": spec})
    )
    _load(path)
