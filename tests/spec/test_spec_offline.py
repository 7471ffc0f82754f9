"""Validation without secrets: secret references are checked for their shape, never read; other
references are still read, because their values are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec import SpecErrors, load_spec_set
from reconciler.spec.refs import UnreadSecret
from tests.spec.conftest import job

PROVIDERS = """\
apiVersion: capctl/v1
kind: Provider
metadata: {name: volc}
spec:
  type: volcengine
  appId: {env: VOLC_APP, default: app1}
  accessKey: {env: VOLC_AK}
  secretKey: {file: secrets/volc-sk.txt}
---
apiVersion: capctl/v1
kind: Provider
metadata: {name: zego}
spec: {type: zego, appId: {env: ZEGO_APP}, serverSecret: {env: ZEGO_SECRET, default: dev-secret}}
---
apiVersion: capctl/v1
kind: Storage
metadata: {name: s3}
spec: {type: s3, bucket: b, region: us-east-1, accessKey: {env: S3_AK}, secretKey: {env: S3_SK}}
---
apiVersion: capctl/v1
kind: Storage
metadata: {name: tos}
spec: {type: tos, bucket: b, accountId: "1"}
"""
JOBS = job(body="provider: volc\nrooms: [lobby]\nstorage: tos") + "---\n"
JOBS += job("RecordingJob", "rec", "provider: zego\nrooms: [class-1]\nstorage: s3")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "specs.yaml"
    path.write_text(text)
    return path


def _errors(path: Path, env: dict[str, str], *, resolve_secrets: bool) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        load_spec_set([path], env=env, resolve_secrets=resolve_secrets)
    return [str(e) for e in info.value.errors]


def test_secret_references_are_not_read(tmp_path: Path) -> None:
    path = _write(tmp_path, PROVIDERS + "---\n" + JOBS)
    # No secret variable is set and secrets/volc-sk.txt does not exist; an empty S3_SK is not even looked at.
    spec_set = load_spec_set([path], env={"ZEGO_APP": "42", "S3_SK": ""}, resolve_secrets=False)
    assert sorted(spec_set.tasks) == ["RecordingJob/rec/class-1", "SnapshotJob/j/lobby"]
    volc, zego = spec_set.providers["volc"], spec_set.providers["zego"]
    assert isinstance(volc.access_key, UnreadSecret) and isinstance(volc.secret_key, UnreadSecret)
    assert isinstance(zego.server_secret, UnreadSecret)  # even with a default: nothing of it is read
    assert volc.app_id == "app1" and zego.app_id == "42"  # other references are resolved
    with pytest.raises(RuntimeError, match="no value"):
        volc.access_key.reveal()  # a set loaded this way can never sign a vendor call


def test_resolving_secrets_reports_what_is_missing(tmp_path: Path) -> None:
    path = _write(tmp_path, PROVIDERS + "---\n" + JOBS)
    found = _errors(path, {"ZEGO_APP": "42", "S3_SK": ""}, resolve_secrets=True)
    assert found == [
        f"{path}:7:14: spec.accessKey: environment variable VOLC_AK is not set and the reference has no default",
        f"{path}:8:14: spec.secretKey: cannot read referenced file 'secrets/volc-sk.txt' (looked for at "
        f"'{path.parent / 'secrets/volc-sk.txt'}': a path is relative to its spec file): No such file or directory",
        f"{path}:18:59: spec.accessKey: environment variable S3_AK is not set and the reference has no default",
        f"{path}:18:84: spec.secretKey: the secret resolved to an empty value: environment variable S3_SK is set "
        "but empty",
    ]
    assert load_spec_set([path], env={"ZEGO_APP": "42"}, resolve_secrets=False).tasks  # the same set, offline


def test_a_referenced_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, PROVIDERS)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "volc-sk.txt").write_bytes(b"\xffkey\n")  # a binary key file named by mistake
    found = _errors(path, {"ZEGO_APP": "42", "VOLC_AK": "ak", "S3_AK": "ak", "S3_SK": "sk"}, resolve_secrets=True)
    assert found == [
        f"{path}:8:14: spec.secretKey: referenced file 'secrets/volc-sk.txt' is not valid UTF-8 text (byte 0xFF: "
        "Latin-1, GBK or another encoding?): save it as UTF-8"
    ]


@pytest.mark.parametrize(
    ("secret", "fragment"),
    [
        ("k3y-literal-value", "spec.accessKey: secret fields must be references"),
        ("{env: 1BAD}", "spec.accessKey: invalid environment variable name '1BAD'"),
        ("{env: AK, defualt: x}", "spec.accessKey: unknown key 'defualt' in a reference (did you mean 'default'?)"),
        # A misspelt `env`/`file` key made no reference: it was called a literal secret (walk 27b).
        ("{enV: AK}", "spec.accessKey: unknown key 'enV' in a reference (did you mean 'env'?)"),
        ("{fiel: x, default: y}", "spec.accessKey: unknown key 'fiel' in a reference (did you mean 'file'?)"),
        # `{default: V}` alone: no key to call misspelt, and validate ended in a StopIteration traceback (walk 28b).
        ("{default: x}", "spec.accessKey: a reference needs `env: NAME` beside its `default`"),
        ("{Env: AK, Default: x}", "spec.accessKey: unknown key 'Env' in a reference (did you mean 'env'?)"),
        ("{env: AK, file: x}", "spec.accessKey: a reference has either `env` or `file`, not both"),
        ("{env: AK, default: [a]}", "spec.accessKey: a reference default must be a scalar"),
        # A reference to a reference: the inner mapping was shown as a Python dict (walk 53b).
        ("{env: {env: AK}}", "spec.accessKey: a reference cannot hold another reference (in its `env`)"),
        (
            "{env: AK, default: {file: x}}",
            "spec.accessKey: a reference cannot hold another reference (in its `default`)",
        ),
        ("{file: ''}", "spec.accessKey: `file` needs a path (relative to this spec file)"),
    ],
)
def test_secret_reference_shape_is_checked_offline(tmp_path: Path, secret: str, fragment: str) -> None:
    text = PROVIDERS.replace("{env: VOLC_AK}", secret)
    found = _errors(_write(tmp_path, text), {"ZEGO_APP": "42"}, resolve_secrets=False)
    assert len(found) == 1 and fragment in found[0] and ":7:" in found[0], found
    assert "k3y-literal-value" not in found[0]


def test_non_secret_references_are_read_and_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, PROVIDERS)
    (unset,) = _errors(path, {}, resolve_secrets=False)
    assert unset == (
        f"{path}:13:27: spec.appId: environment variable ZEGO_APP is not set and the reference has no default "
        "(only secret fields are checked without their values)"
    )
    (wrong,) = _errors(path, {"ZEGO_APP": "abc"}, resolve_secrets=False)
    assert wrong.startswith(f"{path}:13:27: spec.appId: Input should be a valid integer")


def test_a_misspelt_reference_key_elsewhere_is_named_not_called_a_mapping(tmp_path: Path) -> None:
    """`{ENV: NAME}` in a text, number or duration field said "Input should be a valid string, got a mapping"
    or "invalid duration {'ENV': …}" (walk 27b); a mapping of other keys keeps the type error."""
    # `storage: {default: tos}`: the variable left out, a StopIteration traceback, not an error (walk 28b)
    body = "provider: volc\nrooms: [lobby]\nstorage: {default: tos}\ninterval: {Env: IV}\nimage: {width: {ENV: W}}"
    text = PROVIDERS.replace("{env: ZEGO_APP}", "{evn: ZEGO_APP}") + "---\n" + job(body=body) + "  taskId: {name: x}\n"
    path = _write(tmp_path, text)
    assert _errors(path, {}, resolve_secrets=False) == [
        f"{path}:13:27: spec.appId: unknown key 'evn' in a reference (did you mean 'env'?)",
        f"{path}:31:12: spec.storage: a reference needs `env: NAME` beside its `default` (`{{env: NAME, default: V}}`)",
        f"{path}:32:13: spec.interval: unknown key 'Env' in a reference (did you mean 'env'?)",
        f"{path}:33:18: spec.image.width: unknown key 'ENV' in a reference (did you mean 'env'?)",
        f"{path}:34:11: spec.taskId: Input should be a valid string, got a mapping",
    ]


def test_a_glob_among_named_volcengine_rooms_says_how_to_select_rooms(tmp_path: Path) -> None:
    """`rooms: [live-*]` meant every live room: the RoomId rule alone did not say how to ask for that (walk 27b)."""
    path = _write(tmp_path, PROVIDERS + "---\n" + job(body="provider: volc\nrooms: [live-*, 'a b']\nstorage: tos"))
    assert _errors(path, {"ZEGO_APP": "42"}, resolve_secrets=False) == [
        f"{path}:30:11: spec.rooms[0]: room 'live-*' must match [a-zA-Z0-9_@-.]{{1,128}} (volcengine RoomId rule); "
        "to select the rooms a glob matches: rooms: {match: 'live-*'}",
        f"{path}:30:19: spec.rooms[1]: room 'a b' must match [a-zA-Z0-9_@-.]{{1,128}} (volcengine RoomId rule)",
    ]


def test_loading_the_quickstart_specs_imports_no_http_client() -> None:
    """`validate` and `plan --no-refresh` load specs whose endpoints are plain URLs: checking them must not
    import httpx (with what it pulls in, ~50 ms of every such command)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; from reconciler.spec import load_spec_set; load_spec_set(['specs']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'httpx'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_referenced_kind_keeps_its_secret_fields_secret(tmp_path: Path) -> None:
    """Walk 53b: validate reads a reference in `kind` (docs), but the secret fields were looked up by the literal
    kind only: a Provider with `kind: {env: K, default: Provider}` had its `{env: S}` secret read offline (unset:
    an error) and, read, called a literal ("secret fields must be references"), so no such Provider loaded."""
    zego = PROVIDERS.split("---\n")[1].replace("kind: Provider", "kind: {env: KIND_53B, default: Provider}")
    path = _write(tmp_path, zego)
    offline = load_spec_set([path], env={"ZEGO_APP": "42"}, resolve_secrets=False).providers["zego"]
    assert isinstance(offline.server_secret, UnreadSecret)
    read = load_spec_set([path], env={"ZEGO_APP": "42", "ZEGO_SECRET": "s3cret"}, resolve_secrets=True)
    secret = read.providers["zego"].server_secret
    assert secret is not None and secret.reveal() == "s3cret"
    literal = _write(tmp_path, zego.replace("{env: ZEGO_SECRET, default: dev-secret}", "lit3ral"))
    (error,) = _errors(literal, {"ZEGO_APP": "42"}, resolve_secrets=False)
    assert (
        error.endswith(
            "spec.serverSecret: secret fields must be references such as {env: NAME} or {file: PATH}"
            " so the value never lands in git"
        )
        and "lit3ral" not in error
    )


@pytest.mark.parametrize("kind", ["Provder", "{env: KIND_54A, default: provider}", "{env: KIND_54A}"])
def test_a_document_of_unknown_kind_reads_no_secret_offline(tmp_path: Path, kind: str) -> None:
    """Walk 54a: a Provider whose kind was misspelt (or a referenced kind unset) was read as a kind without
    secrets: validate read its `{file: …}` secret (a missing one an error) and demanded its `{env: …}` one, "only
    secret fields are checked without their values" beside it. Its errors are its kind's, a referenced kind
    named as written (no secret: it was a fingerprint, with no did-you-mean)."""
    text = PROVIDERS.split("---\n")[0].replace("kind: Provider", f"kind: {kind}")
    found = [e.split(": ", 1)[1] for e in _errors(_write(tmp_path, text), {}, resolve_secrets=False)]
    unknown = "unknown kind {}; expected one of Provider, Storage, SnapshotJob, RecordingJob, ThumbnailJob"
    if kind == "{env: KIND_54A}":
        assert found == [
            "kind: environment variable KIND_54A is not set and the reference has no default"
            " (only secret fields are checked without their values)"
        ]
    else:
        written = "'Provder'" if kind == "Provder" else "'provider'"
        assert found == ["kind: " + unknown.format(written) + " (did you mean 'Provider'?)"]


@pytest.mark.parametrize(
    ("field", "ref", "error"),
    [
        ("kind", "{env: U54A}", "kind: environment variable U54A is not set and the reference has no default"),
        ("kind", "{env: U54A, default: ~}", "kind: needs a value, and its reference gives none: U54A is not set and"),
        ("type", "{env: U54A}", "spec.type: environment variable U54A is not set and the reference has no default"),
        ("type", "{file: gone-54a.txt}", "spec.type: cannot read referenced file 'gone-54a.txt'"),
        ("type", "{env: U54A, default: ~}", "spec.type: needs a value, and its reference gives none: U54A is not"),
    ],
)
def test_a_kind_or_type_whose_reference_gives_nothing_is_one_error_at_it(
    tmp_path: Path, field: str, ref: str, error: str
) -> None:
    """Walk 54a: an unset `kind` or Provider `type` reference was two errors at one place, the second naming
    "<unresolved reference>" as the kind or type written (walks 48c, 53b left it); with `default: ~`, a kind
    was "missing" (at the document) and a type "unknown type 'None'"."""
    text = PROVIDERS.split("---\n")[0].replace(
        f"{field}: {'Provider' if field == 'kind' else 'volcengine'}", f"{field}: {ref}"
    )
    (found,) = _errors(_write(tmp_path, text), {}, resolve_secrets=False)
    line = 2 if field == "kind" else 5
    assert found.startswith(f"{tmp_path / 'specs.yaml'}:{line}:{text.splitlines()[line - 1].index('{') + 1}: {error}")
