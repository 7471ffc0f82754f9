"""The row format: compact, exact, tolerant of other versions, and closed to secrets."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.model import ApiFamily, JobKind, RestartPolicy, TaskRecord, TaskStatus
from reconciler.secrets import Secret
from reconciler.state.codec import CodecError, decode, decode_rows, encode

from .helpers import make_record


def test_defaults_are_left_out_and_output_is_compact() -> None:
    text = encode(make_record("SnapshotJob/j/room", status=TaskStatus.RUNNING))
    assert json.loads(text) == {
        "key": "SnapshotJob/j/room",
        "provider": "volc",
        "family": "volcengine-snapshot",
        "kind": "SnapshotJob",
        "target": "room",
        "spec_hash": "hmac:spec",
        "fixed_hash": "hmac:fixed",
        "status": "running",
    }
    assert ", " not in text and ": " not in text


def test_unknown_fields_from_a_newer_version_are_ignored() -> None:
    data = json.loads(encode(make_record()))
    data["field_from_the_future"] = {"x": 1}
    assert decode(json.dumps(data)) == make_record()


def test_missing_optional_fields_take_their_defaults() -> None:
    minimal = {
        "key": "RecordingJob/j/r",
        "provider": "zego",
        "family": "zego-record",
        "kind": "RecordingJob",
        "target": "r",
        "spec_hash": "h",
        "fixed_hash": "f",
    }
    record = decode(json.dumps(minimal))
    assert record.status is TaskStatus.PENDING and record.restart_policy is RestartPolicy.ALWAYS
    assert record.vendor_ref == {} and record.request == {} and record.reissue_count == 0
    assert record.labels == {}  # rows written before labels were recorded


def test_labels_are_stored_and_left_out_when_empty() -> None:
    labelled = make_record(labels={"team": "safety"})
    assert '"labels":{"team":"safety"}' in encode(labelled) and decode(encode(labelled)) == labelled
    assert "labels" not in encode(make_record())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "is a JSON list, not an object"),
        ('{"key": "K/n/r", "provider": "p"}', "'K/n/r' lacks field\\(s\\) family, fixed_hash, kind, spec_hash, target"),
        (
            '{"key":"k","provider":"p","family":"nope","kind":"SnapshotJob","target":"t","spec_hash":"h","fixed_hash":"f"}',
            "'k' has unknown family 'nope'",
        ),
        (
            '{"key":"k","provider":"p","family":"zego-record","kind":"SnapshotJob","target":"t","spec_hash":"h",'
            '"fixed_hash":"f","status":["running"]}',
            "has unknown status \\['running'\\]",
        ),
        (  # edited by hand: was a TypeError traceback in the middle of an apply (reissue_count + 1)
            '{"key":"k","provider":"p","family":"zego-record","kind":"SnapshotJob","target":"t","spec_hash":"h",'
            '"fixed_hash":"f","reissue_count":"many"}',
            "'k' has a reissue_count of the wrong type \\(str\\)",
        ),
        (
            '{"key":"k","provider":"p","family":"zego-record","kind":"SnapshotJob","target":"t","spec_hash":"h",'
            '"fixed_hash":"f","started_at":"yesterday","labels":[]}',
            "'k' has a started_at of the wrong type \\(str\\)",
        ),
        (  # a thumbnail's accepted submission is restored into the record's fields: checked as they are
            '{"key":"k","provider":"p","family":"zego-thumbnail","kind":"ThumbnailJob","target":"t","spec_hash":"h",'
            '"fixed_hash":"f","accepted":{"started_at":"yesterday"}}',
            "'k' has an accepted submission with an unknown or mistyped field",
        ),
    ],
)
def test_unreadable_rows_are_explained(text: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(text)


def test_decode_rows_names_the_bad_row() -> None:
    rows = [("SnapshotJob/b/c", encode(make_record("SnapshotJob/b/c"))), ("x/y/z", "{")]
    with pytest.raises(
        CodecError,
        match=r"^row 'x/y/z': .*; restore the state from a backup, correct that row by hand, "
        r"or forget it with `capctl state rm x/y/z`",
    ):
        decode_rows(rows)
    odd = [("SnapshotJob/b/it's", "{")]  # the command as a shell takes it
    with pytest.raises(CodecError, match=r"""forget it with `capctl state rm 'SnapshotJob/b/it'"'"'s'`"""):
        decode_rows(odd)


# Walk 16E-3: JSON reads NaN, Infinity and 1e308 as floats; no clock gives them. Such a time failed every
# command that shows it (`state list`, `state show`: OverflowError, ValueError) and the daemon compared a
# NaN `next_attempt_at` as never due.
@pytest.mark.parametrize(
    "field", ["started_at", "observed_at", "stopped_at", "next_attempt_at", "removed_at", "updated_at"]
)
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e308", "-1e300", "253402300800"])
def test_a_time_no_clock_gives_is_refused_naming_the_field(field: str, value: str) -> None:
    text = encode(make_record("SnapshotJob/b/c", next_attempt_at=5.0)).replace("}", f', "{field}": {value}}}')
    with pytest.raises(CodecError, match=rf"'SnapshotJob/b/c' has a {field} that is no time \("):
        decode(text)
    assert decode(text.replace(value, "253402300799")).key == "SnapshotJob/b/c"  # the last second of 9999 is one


# Walk 16E-3: a row whose body names another task (copied or renamed by hand) was loaded under its row's key;
# an apply then failed on an AssertionError, or wrote it back beside the task it names.
def test_a_row_holding_another_tasks_record_is_refused_naming_both() -> None:
    rows = [("SnapshotJob/b/c", encode(make_record("SnapshotJob/b/d")))]
    with pytest.raises(CodecError, match=r"^row 'SnapshotJob/b/c': holds the record of 'SnapshotJob/b/d'; restore"):
        decode_rows(rows)


def test_a_secret_can_never_be_stored() -> None:
    record = make_record(request={"SecretKey": Secret("do-not-store-me")})
    with pytest.raises(CodecError, match="SnapshotJob/lobby-audit/lobby' cannot be stored as JSON") as caught:
        encode(record)
    assert "do-not-store-me" not in str(caught.value)


# Walk 18E-2: a time `decode` refuses (1e14: a vendor's start past year 9999) was written, and every later load
# of the state failed on that row; it is refused when written, the state left readable.
@pytest.mark.parametrize("field", ["started_at", "next_attempt_at"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e14, -1e14])
def test_a_time_decode_refuses_is_never_stored(field: str, value: float) -> None:
    with pytest.raises(CodecError, match=rf"'SnapshotJob/b/c' cannot be stored: its {field} is no time"):
        encode(make_record("SnapshotJob/b/c", **{field: value}))


text_values = st.text(max_size=12)
optional_time = st.none() | st.floats(min_value=0, max_value=4e9, allow_nan=False)
optional_int = st.none() | st.integers(min_value=0, max_value=10**9)
json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text_values
json_tree = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text_values, inner, max_size=3),
    max_leaves=8,
)
RECORD_FIELDS: dict[str, st.SearchStrategy[Any]] = dict(
    key=text_values,
    provider=text_values,
    family=st.sampled_from(ApiFamily),
    kind=st.sampled_from(JobKind),
    target=text_values,
    spec_hash=text_values,
    fixed_hash=text_values,
    updatable=st.dictionaries(text_values, st.integers(), max_size=3),
    status=st.sampled_from(TaskStatus),
    vendor_task_id=st.none() | text_values,
    client_task_id=st.none() | text_values,
    vendor_ref=st.dictionaries(text_values, text_values, max_size=3),
    stop_reason=st.none() | text_values,
    started_at=optional_time,
    observed_at=optional_time,
    stopped_at=optional_time,
    reissue_count=st.integers(min_value=0, max_value=10**6),
    unproductive_runs=st.integers(min_value=0, max_value=10**6),
    fault_runs=st.integers(min_value=0, max_value=10**6),
    next_attempt_at=optional_time,
    last_error=st.none() | text_values,
    removed_at=optional_time,
    idle_timeout=optional_int,
    max_duration=optional_int,
    restart_policy=st.sampled_from(RestartPolicy),
    productive=st.booleans(),
    update_unconfirmed=st.booleans(),
    updated_at=optional_time,
    reissuing=st.booleans(),
    replacing=st.booleans(),
    room_empty=st.booleans(),
    start_refused=st.booleans(),
    request=st.dictionaries(text_values, json_tree, max_size=4),
    labels=st.dictionaries(text_values, text_values, max_size=3),
    selector=st.none() | text_values,
    home=st.none() | text_values,
    accepted=st.none()
    | st.fixed_dictionaries(
        {},
        optional={
            "spec_hash": text_values,
            "request": st.dictionaries(text_values, json_tree, max_size=4),
            "vendor_task_id": st.none() | text_values,
            "started_at": optional_time,
        },
    ),
)
TYPED_FIELDS = ("family", "kind", "status", "restart_policy", "started_at", "reissue_count")


def test_a_tombstone_round_trips() -> None:
    tomb = TaskRecord(
        key="ThumbnailJob/t/f.mp4",
        provider="zego",
        family=ApiFamily.ZEGO_THUMBNAIL,
        kind=JobKind.THUMBNAIL,
        target="f.mp4",
        spec_hash="h",
        fixed_hash="h",
        status=TaskStatus.REMOVED,
        vendor_task_id="v1",
        removed_at=1_750_000_000.5,
    )
    assert '"status":"removed"' in encode(tomb) and decode(encode(tomb)) == tomb


def test_the_strategy_covers_every_field() -> None:
    # A TaskRecord field added later must be added to RECORD_FIELDS, or this fails.
    assert set(RECORD_FIELDS) == {f.name for f in dataclasses.fields(TaskRecord)}


@given(st.builds(TaskRecord, **RECORD_FIELDS))
def test_any_record_round_trips_exactly(record: TaskRecord) -> None:
    decoded = decode(encode(record))
    assert decoded == record
    assert all(type(getattr(decoded, name)) is type(getattr(record, name)) for name in TYPED_FIELDS)


@pytest.mark.parametrize(
    "key",
    ["SnapshotJob/b/c", "SnapshotJob/b/it's", "SnapshotJob/b/x\x1b[31m\\'\u202e\U0001f600 y", "SnapshotJob/b/\udcff"],
)
def test_the_forget_command_a_damaged_row_names_is_its_key_to_bash_and_never_a_raw_control(key: str) -> None:
    import subprocess

    from reconciler.state.codec import forget_command

    command = forget_command(key)
    assert command.isprintable() and command.startswith("capctl state rm "), command
    argument = command.removeprefix("capctl state rm ")
    echoed = subprocess.run(["bash", "-c", f"printf %s {argument}"], capture_output=True, check=True).stdout
    assert echoed == key.encode("utf-8", "surrogateescape")  # a BLOB key's byte that is not UTF-8 (walk 20A-2)
