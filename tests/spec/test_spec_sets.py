"""The shipped spec sets validate, the summary line, the JSON Schema, and secrets never leak."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]  # no type stubs
import pytest
import yaml

from reconciler.redact import redact_tree
from reconciler.spec import SpecErrors, json_schema, load_spec_set
from tests.spec.conftest import BASE, SECRET_ENV, ErrorsOf, Loader, job

ROOT = Path(__file__).parents[2]
EXAMPLE_ENV = {
    **{
        k: f"example-{k.lower()}"
        for k in (
            "VOLC_ACCESS_KEY",
            "VOLC_SECRET_KEY",
            "VOLC_CALLBACK_SECRET",
            "ZEGO_SERVER_SECRET",
            "ZEGO_CALLBACK_SECRET",
            "OSS_ACCESS_KEY",
            "OSS_SECRET_KEY",
        )
    },
    "VOLC_APP_ID": "661e0000543cf",
    "ZEGO_APP_ID": "1234567890",
}


def test_quickstart_validates_with_no_environment() -> None:
    spec_set = load_spec_set([ROOT / "specs"], env={})
    assert (
        spec_set.summary() == "3 files, 7 documents: 2 providers, 2 storages, 3 jobs → 5 tasks (volcengine 2, zego 3)"
    )
    assert list(spec_set.tasks) == [
        "SnapshotJob/lobby-audit/lobby",
        "SnapshotJob/lobby-audit/vip-1",
        "RecordingJob/class-rec/class-101",
        "ThumbnailJob/replay-thumbs/1397757897438985100",
        "ThumbnailJob/replay-thumbs//record/replays/2024-11-13.mp4",
    ]
    volc, zego = spec_set.providers["volc-sim"], spec_set.providers["zego-sim"]
    assert volc.access_key is not None and zego.server_secret is not None
    assert (volc.endpoint, volc.app_id, volc.access_key.reveal()) == (
        "http://127.0.0.1:8750/volc",
        "capctl-sim-volc",
        "AKCAPCTLSIM0000000001",
    )
    assert (zego.app_id, zego.server_secret.reveal()) == ("1234567890", "0123456789abcdef0123456789abcdef")
    lobby = spec_set.tasks["SnapshotJob/lobby-audit/lobby"]
    assert (lobby.idle_timeout, lobby.updatable) == (20, {"interval": 5})
    for file in (ROOT / "specs").glob("*.yaml"):
        assert file.read_text().startswith("# yaml-language-server: $schema=../capctl.schema.json\n")


def test_quickstart_takes_real_values_from_the_environment() -> None:
    spec_set = load_spec_set([ROOT / "specs"], env={"CAPCTL_ZEGO_APP_ID": "99", "VOLC_SECRET_KEY": "real"})
    assert spec_set.providers["zego-sim"].app_id == "99"
    secret_key = spec_set.providers["volc-sim"].secret_key
    assert secret_key is not None and secret_key.reveal() == "real"


def test_examples_validate_with_their_environment() -> None:
    spec_set = load_spec_set([ROOT / "examples" / "specs"], env=EXAMPLE_ENV)
    assert (
        spec_set.summary()
        == "5 files, 9 documents: 2 providers, 2 storages, 5 jobs → 8 tasks (volcengine 3, zego 5) + 1 room selector"
    )


def test_examples_without_environment_report_every_missing_variable() -> None:
    """...and the variables the examples' own comments tell a reader to set (`# Required environment: A, B.`,
    which may go on over the next comment line) are exactly those: following them validates the set."""
    with pytest.raises(SpecErrors) as info:
        load_spec_set([ROOT / "examples" / "specs"], env={})
    missing = {e.message.split()[3] for e in info.value.errors}  # "spec.x: environment variable X ..."
    assert missing == set(EXAMPLE_ENV)
    told = set()
    for file in (ROOT / "examples" / "specs").rglob("*.yaml"):
        comments = " ".join(line.lstrip("# ") for line in file.read_text().splitlines() if line.startswith("#"))
        if "Required environment:" in comments:
            told |= set(re.findall(r"[A-Z][A-Z0-9_]+", comments.split("Required environment:")[1].split(".")[0]))
    assert told == missing


def test_summary_singular(load: Loader) -> None:
    text = job(body="provider: volc\nrooms: [lobby]\nstorage: tos")
    assert load(text).summary() == "2 files, 8 documents: 3 providers, 4 storages, 1 job → 1 task (volcengine 1)"


def test_json_schema_shape() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    kinds = [schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]["properties"]["kind"]["const"] for ref in schema["oneOf"]]
    assert kinds == ["Provider", "Storage", "SnapshotJob", "RecordingJob", "ThumbnailJob"]
    volc = schema["$defs"]["VolcengineProvider"]["properties"]
    assert volc["accessKey"]["$ref"] == "#/$defs/Reference"  # secrets: references only
    assert {"$ref": "#/$defs/Reference"} in volc["appId"]["anyOf"]  # other scalars: literal or reference
    assert schema["$defs"]["SnapshotJobSpec"]["additionalProperties"] is False
    json.dumps(schema)  # serialisable


# Keywords that add no constraint: beside a `$ref` they mean the same in every draft.
_ANNOTATIONS = {"$ref", "title", "description", "default", "examples", "deprecated"}
# Keywords new in 2019-09/2020-12 (or changed from draft-07): a draft-07 validator would skip or misread them.
_AFTER_DRAFT_7 = {
    "prefixItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "dependentRequired",
    "dependentSchemas",
    "$dynamicRef",
    "$dynamicAnchor",
    "$anchor",
    "$recursiveRef",
    "minContains",
    "maxContains",
    "dependencies",
    "definitions",
}


def test_the_schema_means_the_same_under_draft_07() -> None:
    """Walk 48c: the schema says draft 2020-12. yaml-language-server (VS Code's YAML extension) reads 2020-12
    since 1.20.0; before that it checked every schema against the draft-07 meta-schema and validated it as
    draft-07, where a `$ref`'s sibling constraints are ignored. So the schema is valid under both meta-schemas,
    and uses no keyword whose meaning differs (no constraint beside a `$ref`, nothing new after draft-07):
    an editor of either age reads the same rules. `$defs` is only reached by JSON pointer, which both read."""
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft7Validator.check_schema(schema)
    found: list[str] = []

    def walk(node: object, path: str, names: bool = False) -> None:  # names: keys are names, not keywords
        if isinstance(node, dict):
            if not names and "$ref" in node and set(node) - _ANNOTATIONS:
                found.append(f"{path}: $ref beside {sorted(set(node) - _ANNOTATIONS)}")
            found.extend(f"{path}/{key}" for key in node if not names and key in _AFTER_DRAFT_7)
            for key, value in node.items():
                walk(value, f"{path}/{key}", not names and key in ("properties", "$defs", "patternProperties"))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema, "")
    assert not found, found


def test_the_shipped_specs_pass_the_schema() -> None:
    """What validate takes in the quickstart, the examples and the tests' base set, an editor takes too: the
    schema says more of validate's rules since walk 47d, none of which may flag a valid file."""
    validator = jsonschema.Draft202012Validator(json_schema())
    files = [*(ROOT / "specs").rglob("*.yaml"), *(ROOT / "examples" / "specs").rglob("*.yaml"), BASE]
    flagged = [
        f"{file.name}: {error.message[:120]}"
        for file in files
        for doc in yaml.safe_load_all(file.read_text())
        if doc is not None
        for error in validator.iter_errors(doc)
    ]
    assert len(files) >= 7 and not flagged, flagged


SECRETS = [SECRET_ENV["AK"], SECRET_ENV["SK"], "file-secret-value-123"]


def test_secret_values_never_appear_anywhere(tmp_path: Path, load: Loader, errors_of: ErrorsOf) -> None:
    (tmp_path / "token.txt").write_text(SECRETS[2] + "\n")
    good = (
        "apiVersion: capctl/v1\nkind: Provider\nmetadata: {name: zl}\nspec: {type: zego, appId: 9, "
        "serverSecret: {env: SK}, cloudrecordApi: legacy, accessToken: {file: token.txt}, callbackSecret: "
        "{env: AK}}\n---\n" + job("RecordingJob", body="provider: zego\nrooms: [a]\nstorage: s3")
    )
    spec_set = load(good)
    texts = [
        spec_set.summary(),
        repr(spec_set),
        json.dumps(json_schema()),
        *(repr(t) for t in spec_set.tasks.values()),
        *(str(t) for t in spec_set.tasks.values()),
        *(json.dumps(redact_tree(t.request)) for t in spec_set.tasks.values()),
        *(repr(p) for p in spec_set.providers.values()),
        *(repr(s) for s in spec_set.storages.values()),
    ]
    # errors produced with the same secrets in play: broken fields next to resolved secret fields
    bad = good.replace("appId: 9", "appId: '9'").replace("rooms: [a]", "rooms: [a]\nintervall: 1")
    texts += errors_of(bad)
    texts += errors_of(good.replace("accessToken: {file: token.txt}", "accessToken: " + SECRETS[2]))
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
