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


# Walk 16E: what the hand fuzzing of mutated valid sets does (300,000 sets), bounded: a valid job file edited
# the way files get damaged. Every outcome is a set or errors at a position (line 0 only for a whole file).
_VALID_JOBS = job(body="provider: volc\nrooms: [lobby, vip-1]\nstorage: tos\ninterval: 5s\nidleTimeout: 20s\n") + (
    "---\n" + job("ThumbnailJob", "t", "provider: zego\nfiles:\n  - {cdn: tencent, fileId: '17', offsets: [1s, 2s]}\n")
)
_SNIPPETS = [
    *(".inf", ".nan", "0x10", "0o17", "1_000", "yes", "no", "~", "2024-01-01", "1e309", "9" * 40, "-0", "12:30"),
    *("&a ", "*a", "<<: *a\n", "!!int", "!!bool maybe", "!!float ''", "!!str", "!!binary aGk=", "!!set {a}"),
    *("? [a]\n: b\n", "{", "[", "'", '"', "\\u0000", "\t", "---\n", "...\n", "|\n  x\n", "%YAML 1.1\n---\n", "#"),
]
_EDIT = st.tuples(st.sampled_from(["flip", "cut", "insert", "replace", "repeat"]), st.integers(0, 10**6), st.integers())


def _edited(text: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(text)
    for op, at, n in edits:
        i = at % (len(data) or 1)
        snippet = _SNIPPETS[n % len(_SNIPPETS)].encode()
        if op == "flip" and data:
            data[i] ^= 1 << (n % 8)
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = snippet
        elif op == "replace" and (colon := data.find(b": ", i)) >= 0:  # a value after a key
            end = data.find(b"\n", colon)
            data[colon + 2 : len(data) if end < 0 else end] = snippet
        elif op == "repeat":  # a line written twice: a duplicate key or document part
            start, end = data.rfind(b"\n", 0, i) + 1, data.find(b"\n", i)
            data[start:start] = data[start : len(data) if end < 0 else end + 1]
    return bytes(data)


@settings(
    max_examples=120, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=st.lists(_EDIT, min_size=1, max_size=4))
def test_a_valid_set_edited_the_way_files_get_damaged_loads_or_says_where(
    tmp_path: Path, edits: list[tuple[str, int, int]]
) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_bytes(_edited(_VALID_JOBS.encode(), edits))
    try:
        load_spec_set([BASE, path], env=SECRET_ENV)
    except SpecErrors as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.message and error.file in (str(path), str(BASE)), error
            assert error.line > 0 or error.file == str(path), error  # line 0: the whole file (not UTF-8, empty)
