"""Every independent error of a spec set in one run: a broken or missing document does not hide the
errors of the documents that refer to it, and checks that need it are skipped rather than reported twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec import SpecErrors, load_spec_set
from tests.spec.conftest import BASE, SECRET_ENV, job

BROKEN_PROVIDER = """\
apiVersion: capctl/v1
kind: Provider
metadata: {name: cam}
spec:
  type: volcengine
  appId: app1
  accessKey: {env: AK}
  secretKey: {env: SK}
  endpoint: ftp://not-http
---
apiVersion: capctl/v1
kind: SnapshotJob
metadata: {name: lobby}
spec:
  provider: cam
  rooms: [lobby, hall, lobby]
  interval: 900s
  storage: tos
"""
OTHER_FILE = job(name="other", body="provider: volc\nrooms: [x]\nstorage: tos\nintervall: 5s")


def _errors(*paths: Path) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        load_spec_set([BASE, *paths], env=SECRET_ENV)
    return [str(e) for e in info.value.errors]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_broken_provider_hides_nothing(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.yaml", BROKEN_PROVIDER)
    b = _write(tmp_path, "b.yaml", OTHER_FILE)
    assert _errors(a, b) == [
        f"{a}:9:13: spec.endpoint: 'ftp://not-http' is not an http:// or https:// URL without spaces, query or "
        "fragment (https://host[:port][/path])",
        f"{a}:16:24: spec.rooms[2]: room 'lobby' is listed twice (first at rooms[0])",
        f"{a}:17:13: spec.interval: 900s is out of range for volcengine Interval (1..600 s)",
        f"{b}:8:3: unknown field 'spec.intervall' (did you mean 'interval'?)",
    ]


def test_missing_provider_and_storage_keep_the_checks_that_do_not_need_them(tmp_path: Path) -> None:
    text = job("RecordingJob", "rec", "provider: nope\nrooms: [a, a]\nstorage: none\nmaxDuration: 60s\nformat: mp3")
    path = _write(tmp_path, "rec.yaml", text)
    assert _errors(path) == [
        f"{path}:5:13: spec.provider: no Provider named 'nope'",
        f"{path}:6:14: spec.rooms[1]: room 'a' is listed twice (first at rooms[0])",
        f"{path}:7:12: spec.storage: no Storage named 'none'",
        f"{path}:8:16: spec.maxDuration: 60s is out of range for zego max_record_time (300..86400 s)",
        f"{path}:9:11: spec.format: mp3 needs media: audio",
    ]


def test_room_claims_are_checked_on_a_broken_provider(tmp_path: Path) -> None:
    text = BROKEN_PROVIDER.replace("rooms: [lobby, hall, lobby]\n  interval: 900s", "rooms: [lobby]") + "---\n"
    text += job(name="again", body="provider: cam\nrooms: [lobby]\nstorage: tos")
    path = _write(tmp_path, "a.yaml", text)
    found = _errors(path)
    assert len(found) == 2 and "spec.endpoint" in found[0], found
    assert found[1].startswith(f"{path}:24:11: spec.rooms[0]: room 'lobby' on provider 'cam' is already captured")


def test_unknown_vendor_checks_only_what_no_vendor_accepts(tmp_path: Path) -> None:
    text = BROKEN_PROVIDER.replace("type: volcengine", "type: volcengin").replace("  endpoint: ftp://not-http\n", "")
    path = _write(tmp_path, "a.yaml", text.replace("interval: 900s", "interval: 2h"))
    assert _errors(path)[1:] == [
        f"{path}:15:24: spec.rooms[2]: room 'lobby' is listed twice (first at rooms[0])",
        f"{path}:16:13: spec.interval: 7200s is out of range for every vendor "
        "(volcengine Interval 1..600 s, zego snapshot_interval 5..3600 s)",
    ]
    path = _write(tmp_path, "a.yaml", text)  # 900 s is fine on zego: it waits until the vendor is known
    assert len(_errors(path)) == 2


def test_wrong_vendor_of_a_broken_provider_is_reported_once(tmp_path: Path) -> None:
    text = BROKEN_PROVIDER.replace("SnapshotJob", "RecordingJob").replace("interval: 900s", "idleTimeout: 1s")
    path = _write(tmp_path, "a.yaml", text.replace("storage: tos", "storage: gcs"))
    found = _errors(path)
    assert found[1:] == [
        f"{path}:15:13: spec.provider: a RecordingJob needs a zego provider; Provider 'cam' ({path}:1:1) is volcengine",
        f"{path}:16:24: spec.rooms[2]: room 'lobby' is listed twice (first at rooms[0])",
        f"{path}:17:16: spec.idleTimeout: 1s is out of range for zego max_idle_time (5..4294967295 s)",
    ]  # and no storage error: which storage fits depends on the vendor, which is wrong


def test_duplicate_names_are_reported_when_a_document_is_invalid(tmp_path: Path) -> None:
    text = BROKEN_PROVIDER.split("---\n")[0] + "---\n" + BROKEN_PROVIDER.split("---\n")[0].replace("ftp", "https")
    path = _write(tmp_path, "a.yaml", text)
    found = _errors(path)
    assert found[1] == f"{path}:13:18: duplicate Provider name 'cam' (first defined at {path}:1:1)", found


def test_an_unknown_field_hides_nothing_else_in_its_document(tmp_path: Path) -> None:
    text = BROKEN_PROVIDER.replace("  endpoint: ftp://not-http", "  rateLimits: {StartSnapshots: 5}\n  regoin: x")
    path = _write(tmp_path, "a.yaml", text.replace("storage: tos", "storage: tos\n  image: {widht: 5}"))
    assert _errors(path) == [
        f"{path}:9:16: spec.rateLimits: unknown API 'StartSnapshots' for volcengine (did you mean "
        "'StartSnapshot'?); known: StartSnapshot, UpdateSnapshot, StopSnapshot, GetSnapshotTask,"
        " GetRoomOnlineUsers",
        f"{path}:10:3: unknown field 'spec.regoin' (did you mean 'region'?)",
        f"{path}:17:24: spec.rooms[2]: room 'lobby' is listed twice (first at rooms[0])",
        f"{path}:18:13: spec.interval: 900s is out of range for volcengine Interval (1..600 s)",
        f"{path}:20:11: unknown field 'spec.image.widht' (did you mean 'width'?)",
    ]


def test_a_job_with_a_duplicate_name_is_still_checked(tmp_path: Path) -> None:
    """A copied job keeps its name by mistake: its own errors show with the duplicate, not after the rename."""
    path = _write(
        tmp_path,
        "a.yaml",
        job(name="dup", body="provider: volc\nrooms: [a]\nstorage: tos")
        + "---\n"
        + job(name="dup", body="provider: volc\nrooms: [c, c]\nstorage: tso\ninterval: 0"),
    )
    errors = [e.split(": ", 1)[1] for e in _errors(path)]
    assert errors == [
        f"duplicate SnapshotJob name 'dup' (first defined at {path}:1:1)",
        "spec.rooms[1]: room 'c' is listed twice (first at rooms[0])",
        "spec.storage: no Storage named 'tso' (did you mean 'tos'?)",
        "spec.interval: 0s is out of range for volcengine Interval (1..600 s)",
    ], errors


def test_a_type_error_hides_no_range_check_of_the_other_fields(tmp_path: Path) -> None:
    """Issue 13: `interval: 0s` beside a `storage` of the wrong type was reported only once `storage` was fixed.
    The broken fields are reported once, and nothing is made up from the placeholder that stands in for them."""
    path = _write(
        tmp_path,
        "a.yaml",
        job(name="a", body="provider: volc\nrooms: [r1]\ninterval: 0s\nstorage: [tos]")
        + "---\n"
        + job(name="b", body="provider: [volc]\nrooms: [on, 'a b']\nidleTimeout: 0s")  # and no storage
        + "---\n"
        + job(name="c", body="provider: volc\nrooms: {match: 'a b*'}\ninterval: 700s\nstorage: tos\ntaskId: {x: 1}"),
    )
    assert _errors(path) == [
        f"{path}:7:13: spec.interval: 0s is out of range for volcengine Interval (1..600 s)",
        f"{path}:8:12: spec.storage: Input should be a valid string, got a list",
        f"{path}:13:1: missing required field 'spec.storage'",
        f"{path}:14:13: spec.provider: Input should be a valid string, got a list",
        f"{path}:15:11: spec.rooms[0]: Input should be a valid string, got a boolean (YAML reads yes, no, on, "
        "off, true and false as booleans: quote it)",
        f"{path}:16:16: spec.idleTimeout: 0s is out of range for every vendor (volcengine MaxIdleTime 1..86400 s, "
        "zego max_idle_time 5..4294967295 s)",
        f"{path}:23:18: spec.rooms.match[0]: pattern 'a b*' can never match a volcengine room id: room ids match "
        "[a-zA-Z0-9_@-.]{1,128} (globs add * ? [ ] !)",
        f"{path}:24:13: spec.interval: 700s is out of range for volcengine Interval (1..600 s)",
        f"{path}:26:11: spec.taskId: Input should be a valid string, got a mapping",
    ]


def test_a_partly_valid_recording_provider_and_storage_are_checked_without_their_broken_fields(
    tmp_path: Path,
) -> None:
    """A recording's fields weighed against each other are not checked against a broken one's default (`mode`
    defaulting to single would make `mix` "only for mode: mixed"); a Provider's and a Storage's own checks run
    beside a type error, and a job naming them is not told they do not exist."""
    path = _write(
        tmp_path,
        "a.yaml",
        job(
            kind="RecordingJob",
            name="rec",
            body="""\
            provider: zego
            rooms: [r1]
            mode: 5
            mix: {mixOutputStreamId: out, mixOutputVideoConfig: {width: 640, height: 360, fps: 15, bitrate: 1}}
            storage: s3
            maxDuration: 10s""",
        )
        + "---\napiVersion: capctl/v1\nkind: Provider\nmetadata: {name: z2}\n"
        + "spec: {type: zego, appId: 44, serverSecret: {env: SK}, rtcEndpoint: 5, accessToken: {env: AK}}\n"
        + "---\napiVersion: capctl/v1\nkind: Storage\nmetadata: {name: s4}\n"
        + "spec: {type: s3, bucket: [b], space: x, accessKey: {env: AK}, secretKey: {env: SK}}\n"
        + job(kind="RecordingJob", name="rec2", body="provider: z2\nrooms: [r2]\nstorage: s4").replace(
            "apiVersion", "---\napiVersion", 1
        ),
    )
    errors = [e.removeprefix(f"{path}:") for e in _errors(path)]
    assert errors == [
        "7:9: spec.mode: 5 is not allowed; expected 'single' or 'mixed'",
        "10:16: spec.maxDuration: 10s is out of range for zego max_record_time (300..86400 s)",
        "15:69: spec.rtcEndpoint: Input should be a valid string, got an integer (quote it to make it text)",
        "15:85: spec.accessToken: only used with cloudrecordApi: legacy",
        "20:26: spec.bucket: Input should be a valid string, got a list",
        "20:31: spec.space: does not apply to storage type s3",
    ], errors


def test_a_broken_thumbnail_entry_hides_no_rule_of_the_other_entries(tmp_path: Path) -> None:
    body = """\
    provider: zego
    files:
      - {cdn: huawei, fileId: /x, interval: 0}
      - {cdn: tencent, fileId: "2", definition: 1, offsets: [0s, -1]}
      - {cdn: huawei, fileId: /x, interval: 2s}
      - {cdn: tencent, fileId: "3"}
      - {cdn: huawei, fileId: "", interval: 2s, definition: 1}
    """
    a = _write(tmp_path, "a.yaml", job("ThumbnailJob", "thumbs", body))
    errors = _errors(a)
    assert errors[0] == f"{a}:7:43: spec.files[0].interval: must be at least 1s"
    assert errors[1].startswith(f"{a}:8:64: spec.files[1].offsets[1]: invalid duration -1")
    assert errors[2:] == [
        f"{a}:9:7: spec.files[2]: fileId '/x' is listed twice (first at files[0])",
        f"{a}:10:7: spec.files[3]: cdn tencent needs 'definition' (a snapshot template id)",
        f"{a}:11:29: spec.files[4].fileId: needs at least 1 character, got 0",
    ]


@pytest.mark.parametrize("files", ["[{cdn: Tencent, fileId: a, definition: 1}]", "[]"])
def test_a_thumbnail_job_with_no_valid_entry_still_has_its_provider_checked(tmp_path: Path, files: str) -> None:
    """Walk 8c: with every entry broken the job could not be modelled at all, so its unknown provider showed
    only in the next round, once the entries were fixed."""
    a = _write(tmp_path, "a.yaml", job("ThumbnailJob", "thumbs", f"provider: zgo\nfiles: {files}"))
    errors = _errors(a)
    assert f"{a}:5:13: spec.provider: no Provider named 'zgo' (did you mean 'zego'?)" in errors, errors
    assert len(errors) == 2, errors


def test_a_reference_in_an_unknown_field_reports_only_the_field(tmp_path: Path) -> None:
    """Walk 16c: `intervall: {env: UNSET}` said only that UNSET was not set (the unknown field's error has the failed
    reference as its input, and those were skipped); a misspelt key is the problem, its variable is not. A known
    field's unset variable beside it is still reported."""
    body = "provider: volc\nrooms: [x]\nstorage: tos\nintervall: {env: UNSET_16C}\nimage: {widht: {file: gone.txt}}"
    body += "\nidleTimeout: {env: ALSO_UNSET_16C}"
    path = _write(tmp_path, "a.yaml", job(name="typo", body=body))
    assert _errors(path) == [
        f"{path}:8:3: unknown field 'spec.intervall' (did you mean 'interval'?)",
        f"{path}:9:11: unknown field 'spec.image.widht' (did you mean 'width'?)",
        f"{path}:10:16: spec.idleTimeout: environment variable ALSO_UNSET_16C is not set and the reference has no"
        " default",
    ]


def test_an_unknown_field_that_is_the_last_word_of_a_field_is_offered_that_field(tmp_path: Path) -> None:
    """Walk 41c: `folder: rec/` on a RecordingJob (the plan prints `folder rec/`) was offered `mode`, a near miss
    by its letters; the field whose last camelCase word it is, whatever its case, is the one meant. A word
    that ends two fields, or none, keeps the near miss by letters."""
    body = "provider: zego\nrooms: [x]\nstorage: s3\nfolder: rec/\nFolder: rec/\nduration: 1h\nintervall: 5s"
    path = _write(tmp_path, "a.yaml", job(kind="RecordingJob", name="rec", body=body))
    assert _errors(path) == [
        f"{path}:8:3: unknown field 'spec.folder' (did you mean 'outputFolder'?)",
        f"{path}:9:3: unknown field 'spec.Folder' (did you mean 'outputFolder'?)",
        f"{path}:10:3: unknown field 'spec.duration' (did you mean 'maxDuration'?)",
        f"{path}:11:3: unknown field 'spec.intervall' (`capctl explain RecordingJob.spec` lists its fields)",
    ]


def test_a_field_name_in_another_case_or_a_fields_first_words_keeps_its_own_hint(tmp_path: Path) -> None:
    """Walk 42B-4: the last-words rule (41c) offered `hasWhiteboard` for `Whiteboard`, the field `whiteboard` in
    another case: a word that is a field but for its case is that field. (A provider's `secret` stays `secretKey`:
    `serverSecret` and `callbackSecret` both end in it.)"""
    provider = BROKEN_PROVIDER.split("---")[0].replace("endpoint: ftp://not-http", "secret: {env: SK}")
    body = "provider: zego\nrooms: [x]\nstorage: s3\noptions: {Whiteboard: {whiteboardId: w}}"
    path = _write(tmp_path, "a.yaml", provider + "---\n" + job(kind="RecordingJob", name="rec", body=body))
    assert _errors(path) == [
        f"{path}:9:3: unknown field 'spec.secret' (did you mean 'secretKey'?)",
        f"{path}:18:13: unknown field 'spec.options.Whiteboard' (did you mean 'whiteboard'?)",
    ]


def test_a_provider_a_yaml_error_left_unread_is_not_also_missing_for_its_jobs(tmp_path: Path) -> None:
    """Walk 30c: the YAML error alone, not a cascade of `no Provider named 'cam' (did you mean 'volc'?)` for each
    job naming it; a reference to a name written nowhere is still reported in the same run."""
    a = _write(tmp_path, "a.yaml", BROKEN_PROVIDER.replace("endpoint: ftp://not-http", "endpoint: [http://x"))
    b = _write(tmp_path, "b.yaml", job(name="other", body="provider: cam\nrooms: [x]\nstorage: tos"))
    c = _write(tmp_path, "c.yaml", job(name="typo", body="provider: kam\nrooms: [y]\nstorage: tos"))
    errors = _errors(a, b, c)
    assert errors[0].startswith(f"{a}:10:1: YAML syntax error: while parsing a flow sequence")
    assert errors[1:] == [f"{c}:5:13: spec.provider: no Provider named 'kam'"]
    # Named only as a job's provider in the unread text: defined nowhere, still reported.
    d = _write(tmp_path, "d.yaml", job(name="lost", body="provider: 'gone'\nrooms: [z]\nstorage: tos"))
    e = _write(tmp_path, "e.yaml", "[\n" + job(name="more", body="provider: gone\nrooms: [w]\nstorage: tos"))
    assert _errors(d, e)[0].startswith(f"{d}:5:13: spec.provider: no Provider named 'gone'")


def test_a_name_a_yaml_error_left_unread_spares_only_references_of_its_own_kind(tmp_path: Path) -> None:
    """Walk 31a-2: a Storage left unread by a YAML error spared a job's `provider:` naming it too, a mistake of
    its own (a Provider is wanted), seen only once the YAML error was fixed; its `storage:` stays spared."""
    unread = "apiVersion: capctl/v1\nkind: Storage\nmetadata: {name: tos2}\nspec: {type: tos, bucket: [b\n"
    a = _write(tmp_path, "a.yaml", unread)
    b = _write(tmp_path, "b.yaml", job(name="mixed", body="provider: tos2\nrooms: [x]\nstorage: tos2"))
    assert _errors(a, b) == [
        f"{a}:4:27: YAML syntax error: while parsing a flow sequence that is not closed by the end of the file",
        f"{b}:5:13: spec.provider: no Provider named 'tos2'",
    ]


@pytest.mark.parametrize(
    ("tail", "where", "message"),
    [
        ("rooms: [x, y\n", "6:10", "while parsing a flow sequence that is not closed by the end of the file"),
        ("rooms: [x, y\n\n# last\n", "6:10", "while parsing a flow sequence that is not closed by the end of"),
        ("image: {width: 640", "6:10", "while parsing a flow mapping that is not closed by the end of the file"),
        ("rooms: ['x\n", "6:11", "while scanning a quoted scalar that is not closed by the end of the file"),
        ("rooms: [x,\n    y\nstorage: tos\n", "8:8", "did not find expected ',' or ']' (opened at 6:10)"),
        # Walk 35a-1: a `,` last, a comment after it: libyaml's context is the end of the file too.
        ("rooms: [x, {a: [b], # don't\n", "6:14", "while parsing a flow mapping that is not closed by the end of"),
    ],
)
def test_an_unclosed_bracket_or_quote_is_reported_where_it_opened(
    tmp_path: Path, tail: str, where: str, message: str
) -> None:
    """Walk 32d-2: `rooms: [x` on the last line was reported at the end of the file (`7:1`), a line with nothing
    to fix; the `[` that is never closed is. Closed too late, the error stays where libyaml gave up and names
    where the bracket opened."""
    head = "apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {name: j}\nspec:\n  provider: volc\n  "
    path = _write(tmp_path, "a.yaml", head + tail)
    [error] = _errors(path)
    assert error.startswith(f"{path}:{where}: YAML syntax error: "), error
    assert message in error, error


LONG = "a" * 1100
KEY_TOO_LONG = "YAML syntax error: a mapping key of 1,100 characters, over YAML's limit of 1,024: a key this long"


@pytest.mark.parametrize(
    ("tail", "where", "message"),
    [
        (f"{LONG}: 1\n", "6:3", KEY_TOO_LONG),  # libyaml: mapping values are not allowed in this context
        (f"rooms: [x]\n  {LONG}: 1\n", "7:3", KEY_TOO_LONG),  # libyaml: could not find expected ':'
        (f"image: {{width: 640, {LONG}: 1}}\n", "6:23", KEY_TOO_LONG),  # libyaml: did not find expected ',' or '}'
        (f"rooms:\n  - {LONG}: 1\n", "7:5", KEY_TOO_LONG),
        # A ': ' before it on the line: a value holding ': ', not a key; the indentation-or-quote hint stays.
        (
            f"storage: tos {LONG}: 1\n",
            "6:1116",
            "YAML syntax error: mapping values are not allowed in this context (is this line",
        ),
    ],
)
def test_a_key_over_yamls_limit_is_named_where_it_starts(tmp_path: Path, tail: str, where: str, message: str) -> None:
    """Walk 35b: a key of more than 1,024 characters got libyaml's words at its ':' (`mapping values are not
    allowed in this context (is this line indented deeper …)`), which say nothing of its length."""
    head = "apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {name: j}\nspec:\n  provider: volc\n  "
    path = _write(tmp_path, "a.yaml", head + tail)
    [error] = _errors(path)
    assert error.startswith(f"{path}:{where}: {message}"), error[:300]


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("rooms: [x]\n other: 1\n", "7:2: YAML syntax error: while parsing a block mapping; did not find expected key"),
        ("rooms: [x]\n  lonely\n", "7:3: YAML syntax error: while scanning a simple key; could not find expected ':'"),
    ],
)
def test_a_block_error_keeps_libyamls_words(tmp_path: Path, tail: str, expected: str) -> None:
    """Walk 35a-1: the unclosed-bracket rule (32d-2) took every context for an opening: a mis-indented key said
    `(opened at 1:1)`, where the document's mapping began, and a key without its `:` on the last line was 'a
    simple key that is not closed by the end of the file', libyaml's `could not find expected ':'` dropped. The
    key is named, with libyaml's words."""
    head = "apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {name: j}\nspec:\n  provider: volc\n  "
    path = _write(tmp_path, "a.yaml", head + tail)
    assert _errors(path) == [f"{path}:{expected}"]


@pytest.mark.parametrize("ref", ["{env: UNSET_48C}", "{env: UNSET_48C, default: ~}", "{file: gone-48c.txt}"])
def test_a_provider_type_that_does_not_resolve_is_an_error_not_a_crash(tmp_path: Path, ref: str) -> None:
    """Walk 48c: a Provider's `type: {env: PROVIDER_TYPE}` with the variable unset (or its file gone), used by a
    job, made `capctl validate` end in a traceback (`TypeError: unhashable type: 'dict'`): the job's vendor was
    looked up from the invalid Provider's raw `type`, still the reference mapping."""
    provider = (
        "apiVersion: capctl/v1\nkind: Provider\nmetadata: {name: v48}\n"
        f"spec: {{type: {ref}, appId: a1, accessKey: {{env: AK}}, secretKey: {{env: SK}}}}\n---\n"
    )
    path = _write(tmp_path, "a.yaml", provider + job(body="provider: v48\nrooms: [x]\nstorage: tos"))
    errors = _errors(path)
    assert any(e.startswith(f"{path}:4:") and "spec.type" in e for e in errors), errors
