"""`capctl explain KIND[.FIELD]` (read from the JSON Schema, as kubectl explain) and shell completion for zsh
and fish (bash is in test_cli_contract.py): the real CLI in a subprocess, as a user types it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.providers.family import VENDORS
from reconciler.spec import json_schema
from reconciler.spec.explain import ExplainError, completions, explain


def capctl(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The installed `capctl` script, which the completion scripts call (it names the _CAPCTL_COMPLETE variable).
    return subprocess.run(
        [str(Path(sys.executable).parent / "capctl"), *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_explain_a_field_prints_type_default_range_and_description(tmp_path: Path) -> None:
    width = capctl("explain", "SnapshotJob.spec.image.width", cwd=tmp_path)
    assert width.returncode == 0, width.stderr
    assert width.stdout.splitlines()[:6] == [
        "KIND:     SnapshotJob",
        "VERSION:  capctl/v1",
        "",
        "FIELD:    width <integer>",
        "DEFAULT:  0",
        "RANGE:    ≥ 0; ≤ 1920",
    ]
    interval = capctl("explain", "snapshotjob.spec.interval", cwd=tmp_path).stdout  # kinds in any case
    assert "FIELD:    interval <duration>" in interval and "RANGE:" not in interval  # not the pattern's "≥ 0"
    # Its default and range depend on the vendor: the description gives both (docs/spec-language.md).
    assert "volcengine 1..600 s, default 2s" in interval and "zego 5..3600 s, default 10s" in interval
    assert "A duration: a whole number of seconds or a string like 5s" in interval
    assert "May be a value reference" in interval
    max_duration = capctl("explain", "RecordingJob.spec.maxDuration", cwd=tmp_path).stdout
    assert "DEFAULT:  86400" in max_duration and "300..86400 s" in max_duration


def test_explain_a_kind_lists_its_fields_and_which_are_required(tmp_path: Path) -> None:
    spec = capctl("explain", "Provider.spec", cwd=tmp_path).stdout
    assert "FIELDS:" in spec
    assert '    type <"volcengine" | "zego">  -required-' in spec
    # A Provider's spec is a Volcengine or a ZEGO one: a field of one says so.
    assert "    serverSecret <reference>  -required- (ZegoProvider)" in spec
    assert "    region <string>  (VolcengineProvider)" in spec
    kinds = capctl("explain", cwd=tmp_path).stdout
    assert [line.strip() for line in kinds.splitlines()[1:] if line.strip()] == [
        "Provider",
        "Storage",
        "SnapshotJob",
        "RecordingJob",
        "ThumbnailJob",
    ]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        # A near miss is suggested, as the spec's own errors do (walk 14b); the list follows either way.
        ("Snapshot", "no kind 'Snapshot' (did you mean 'SnapshotJob'?); the kinds are Provider, Storage, SnapshotJob"),
        ("Bucket", "no kind 'Bucket'; the kinds are Provider, Storage, SnapshotJob"),
        (
            "SnapshotJob.spec.intervall",
            "SnapshotJob.spec has no field 'intervall' (did you mean 'interval'?); its fields: provider, rooms",
        ),
        ("SnapshotJob.spec.image.widht", "SnapshotJob.spec.image has no field 'widht' (did you mean 'width'?)"),
        # The plan prints `folder record/`: the field whose last word it is, not `mode` (walk 41c).
        ("RecordingJob.spec.folder", "RecordingJob.spec has no field 'folder' (did you mean 'outputFolder'?)"),
        ("SnapshotJob.spec.interval.unit", "SnapshotJob.spec.interval has no field 'unit'; its fields: none"),
    ],
)
def test_explain_an_unknown_kind_or_field_names_what_there_is(tmp_path: Path, path: str, message: str) -> None:
    proc = capctl("explain", path, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert message in proc.stderr


def test_volcengine_fields_say_the_vendor_rules_they_are_checked_by() -> None:
    """A type that is a JSON list of types reads as the others do; the Id rule and limits checked per vendor
    (checks.py) are said where the schema cannot say them."""
    schema = json_schema()
    region = explain(schema, "Storage.spec.region")
    assert "FIELD:    region <integer | string>" in region and "≥ 0" in region
    assert "[a-zA-Z0-9_@-.]{1,128}" in explain(schema, "SnapshotJob.spec.taskId")
    assert "at most 17" in explain(schema, "SnapshotJob.spec.streams")
    assert "UserId" in explain(schema, "SnapshotJob.spec.streams.user")
    assert "StreamList Index" in explain(schema, "SnapshotJob.spec.streams.index")
    # Both forms of `rooms`: it described only the selector (walk 8f).
    for kind in ("SnapshotJob", "RecordingJob"):
        assert "a list of room ids (one task each), or a selector" in explain(schema, f"{kind}.spec.rooms")


def test_secret_fields_say_what_they_are_not_only_that_they_are_references() -> None:
    """Walk 43d-2: every secret field's description was the one note, so `explain Provider.spec.accessToken`
    did not say that it is the legacy API's, nor what happens without it."""
    schema = json_schema()
    secrets = [
        "Provider.spec.accessKey",
        "Provider.spec.secretKey",
        "Provider.spec.serverSecret",
        "Provider.spec.accessToken",
        "Provider.spec.callbackSecret",
        "Storage.spec.accessKey",
        "Storage.spec.secretKey",
    ]
    for path in secrets:
        described = explain(schema, path).split("DESCRIPTION:\n")[1].strip()
        assert described.endswith(". Secret: must be a reference such as {env: NAME}"), (path, described)
    assert "cloudrecordApi legacy only" in explain(schema, "Provider.spec.accessToken")
    assert "without it they are refused" in explain(schema, "Provider.spec.callbackSecret")


def test_rate_limits_name_every_api_that_is_budgeted() -> None:
    """Walk 8c: the zego room listing's key (DescribeSimpleStreamList) was missing from explain and the schema."""
    text = explain(json_schema(), "Provider.spec.rateLimits")
    assert [api for vendor in VENDORS.values() for api in vendor.rate_limits if api not in text] == []


def test_every_field_of_every_kind_can_be_explained() -> None:
    """Walk the whole schema through the completions (what <Tab> offers is what explain accepts). Each kind
    and field has a description: 111 of them had none (`SnapshotJob.spec.image`, every kind, `metadata`, the
    Storage fields, a RecordingJob's mix and options), where their siblings had one."""
    schema = json_schema()
    seen, todo, undescribed = 0, completions(schema, ""), []
    while todo:
        path = todo.pop()
        text = explain(schema, path)
        assert "<any>" not in text and "DESCRIPTION:" in text, path
        described = text.split("DESCRIPTION:\n")[1].split("\n\n")[0].splitlines()
        assert all(line.startswith("    ") for line in described), path  # walk 5g: `SnapshotJob`'s was not
        if "(none in the schema" in text:
            undescribed.append(path)
        todo += [p for p in completions(schema, path + ".") if p.count(".") <= 6]
        seen += 1
    assert seen > 100
    assert sorted(undescribed) == []
    with pytest.raises(ExplainError):
        explain(schema, "RecordingJob.spec.interval")  # a snapshot's field, not a recording's


def test_zsh_and_fish_completion_answer_through_their_scripts_protocol(tmp_path: Path) -> None:
    """What the zsh and fish scripts of `capctl completion` ask capctl on <Tab> (their variables), answered."""
    zsh = capctl(
        cwd=tmp_path, env={"_CAPCTL_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "capctl explain SnapshotJob.sp"}
    )
    assert zsh.returncode == 0 and "SnapshotJob.spec" in zsh.stdout
    fish = {"_CAPCTL_COMPLETE": "complete_fish", "_TYPER_COMPLETE_ARGS": "capctl sta"}
    answer = capctl(cwd=tmp_path, env={**fish, "_TYPER_COMPLETE_FISH_ACTION": "get-args"})
    assert answer.returncode == 0 and answer.stdout.split("\t")[0] == "state"
    script = capctl("completion", "fish", cwd=tmp_path).stdout
    assert "_CAPCTL_COMPLETE=complete_fish" in script and "_TYPER_COMPLETE_FISH_ACTION=get-args" in script
    assert "_CAPCTL_COMPLETE=complete_zsh" in capctl("completion", "zsh", cwd=tmp_path).stdout
