"""Property tests: whatever bytes or YAML trees arrive, the loader answers with a SpecSet or SpecErrors."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.spec import SpecErrors, load_spec_set
from reconciler.spec.fields import ENDPOINT_PATTERN
from tests.spec.conftest import BASE, SECRET_ENV, job

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


_URL_PARTS = st.sampled_from(["a", "Z", "0", "9", ".", "-", ":", "[", "]", "/", "%", "_", "~", "@", "f", "1", "5"])


@settings(max_examples=400, deadline=None)
@given(
    scheme=st.sampled_from(["http://", "https://"]),
    host=st.one_of(
        st.text(_URL_PARTS, min_size=0, max_size=14),
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    ),
    port=st.one_of(st.none(), st.integers(0, 99_999).map(str), st.text(_URL_PARTS, max_size=4)),
    path=st.text(_URL_PARTS, max_size=10),
)
def test_an_endpoint_is_usable_exactly_when_the_http_client_can_parse_it(
    scheme: str, host: str, port: str | None, path: str
) -> None:
    """`validate` checks the plain URLs of most specs without importing httpx (~50 ms): its verdict must be the
    client's own for every URL, plain or not (the client is asked for the others)."""
    from pydantic import TypeAdapter, ValidationError

    from reconciler.spec.fields import Endpoint

    url = scheme + host + (f":{port}" if port is not None else "") + (f"/{path}" if path else "")
    try:
        parsed = httpx.URL(url)
        client_takes = bool(parsed.host) and (parsed.port is None or 0 < parsed.port < 65536)
    except httpx.InvalidURL:
        client_takes = False
    if re.fullmatch(ENDPOINT_PATTERN, url) is None:
        return  # refused by the field's pattern first
    try:
        TypeAdapter(Endpoint).validate_python(url)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == client_takes, url


@pytest.mark.parametrize("scalar", ["!!int", "!!float ''", "!!bool maybe", "!!bool", "!!int '-'", "!!bool ''"])
def test_a_standard_tag_on_a_value_it_cannot_build_is_an_error_at_the_value(tmp_path: Path, scalar: str) -> None:
    """Walk 16E-1: PyYAML's constructors index (`!!int` on an empty value) and look up (`!!bool maybe`) as
    well as parse; each failure is the spec's error at the value, not a traceback."""
    path = tmp_path / "tag.yaml"
    path.write_text(job(body=f"provider: volc\nrooms: [lobby]\nstorage: tos\ninterval: {scalar}\n"))
    with pytest.raises(SpecErrors) as info:
        load_spec_set([BASE, path], env=SECRET_ENV)
    (error,) = info.value.errors
    assert (error.file, error.line, error.col) == (str(path), 8, 13)
    assert "is not a valid" in error.message
