"""The malformed-spec corpus: every file fails with the expected message at the exact line and column,
and abusive inputs (huge files, deep nesting) fail cleanly and fast."""

from __future__ import annotations

import codecs
import errno
import os
from pathlib import Path

import pytest

from reconciler.spec import SpecErrors, load_spec_set
from tests.spec.conftest import BASE, HERE, SECRET_ENV, job

JOB_BODY = "provider: volc\nrooms: [lobby-bom]\nstorage: tos"

CORPUS = HERE / "corpus"
ALONE = {"only_comments", "not_a_mapping", "deep_nesting", "alias_bomb"}  # loaded without base.yaml

# corpus file → (line, col, message fragment) of an error it must produce
EXPECTED: dict[str, tuple[int, int, str]] = {
    "alias_bomb": (6, 36, "document too large: more than 1000000 values (after alias expansion)"),
    "bad_api_version": (1, 13, "apiVersion: 'capctl/v2' is not allowed; expected 'capctl/v1'"),
    "bad_duration_float": (8, 16, "spec.idleTimeout: invalid duration 2.5: use a whole number of seconds"),
    "bad_duration_units": (8, 13, "spec.interval: invalid duration '5 sec': use a whole number of"),
    "bad_name_uppercase": (3, 18, "metadata.name: 'Lobby-Audit' does not match lowercase letters, digits"),
    "bad_room_volcengine": (6, 11, "spec.rooms[0]: room 'lobby#1' must match [a-zA-Z0-9_@-.]{1,128}"),
    # a room id the daemon's callbacks refuse (walk 11A-2): its callbacks would be answered 400
    "bad_room_zego_invisible": (6, 18, r"spec.rooms[1]: room 'lob\u200bby' holds an unprintable character (U+200B)"),
    "bad_room_zego_long": (6, 18, "spec.rooms[1]: room 'rrrrrrrr"),
    "bad_task_id": (8, 11, "spec.taskId: must match [a-zA-Z0-9_@-.]{1,128} (volcengine TaskId"),
    # walk 13d: the YAML shapes a spec refuses (no test wrote them); a tag as the spec spells it, not PyYAML's URI
    "bad_complex_key": (8, 5, "a mapping key must be a scalar"),
    "bad_alias_key": (8, 3, "a mapping key must be a scalar"),  # an alias to a list, used as a key
    "bad_int_tag": (8, 13, "'five' is not a valid int"),
    "bad_merge_scalar": (8, 7, "a merge key (<<) needs a mapping or a list of mappings"),
    "bad_tag_binary": (8, 13, "unsupported tag '!!binary': only standard YAML tags (str, int, float, bool, null)"),
    "bad_tag_mapping": (8, 11, "unsupported tag '!!set': only standard YAML tags are allowed"),
    "bad_region_bool": (4, 54, "spec.region: region must be an integer (volcengine region table) or a string (zego)"),
    "missing_provider_type": (4, 7, "missing required field 'spec.type' (one of 'volcengine', 'zego')"),
    "bad_yaml_tab_indent": (6, 1, "YAML syntax error: while scanning a plain scalar; found a tab"),
    "bad_yaml_tab_first_key": (5, 1, "cannot start any token (a tab: YAML indents with spaces only)"),
    "bad_yaml_control_character": (
        6,
        16,
        "the character U+001B is not allowed in YAML, nor in spec text: remove it",
    ),
    # walk 16B-2: libyaml gives the position in UTF-8 bytes; taken for characters it pointed past the line
    "bad_yaml_control_character_after_cjk": (6, 26, "the character U+001B is not allowed in YAML, nor in spec text"),
    # walk 12A-1: a first spec written from the docs said only "missing required field 'apiVersion'"
    "missing_api_version": (1, 1, "field 'apiVersion': start the document with `apiVersion: capctl/v1`"),
    # walk 12A-2: one space too many before a key; PyYAML's words alone do not say it is the indentation
    "bad_yaml_over_indent": (8, 11, "not allowed in this context (is this line indented deeper than the key above it?"),
    "bad_yaml_unclosed_flow": (7, 10, "YAML syntax error: while parsing a flow sequence; did not find"),
    "custom_tag": (8, 13, "unsupported tag '!duration': only standard YAML tags (str, int,"),
    "dangling_provider": (5, 13, "spec.provider: no Provider named 'volc-prod' (did you mean 'volc'?)"),
    "deep_nesting": (1, 70, "nesting deeper than 64 levels"),
    "duplicate_key": (8, 3, "duplicate key 'rooms' (first at line 6)"),
    "duplicate_names": (11, 18, "duplicate SnapshotJob name 'j' (first defined at"),
    "duplicate_room_in_job": (6, 23, "spec.rooms[2]: room 'lobby' is listed twice (first at rooms[0])"),
    "duplicate_stream_index": (10, 24, "spec.streams[1].index: index 1 is already used by streams[0]"),
    "enum_typo": (8, 18, "spec.restartPolicy: 'always' is not allowed; expected 'Always' or"),
    "idle_range_volcengine": (8, 16, "spec.idleTimeout: 90000s is out of range for volcengine MaxIdleTime"),
    "interval_range_volcengine": (8, 13, "spec.interval: 601s is out of range for volcengine Interval (1..600 s)"),
    "interval_range_zego": (8, 13, "spec.interval: 4s is out of range for zego snapshot_interval (5..3600"),
    "legacy_s3_compatible": (7, 12, "spec.storage: the legacy ZEGO recording API has no storage endpoint,"),
    "legacy_gcs": (7, 12, "spec.storage: the legacy ZEGO recording API writes to storage_provider 1..7 (s3, oss,"),
    "literal_secret": (7, 14, "spec.accessKey: secret fields must be references such as {env: NAME}"),
    "max_duration_range": (8, 16, "spec.maxDuration: 240s is out of range for zego max_record_time"),
    "missing_file_ref": (7, 17, "cannot read referenced file 'no-such-secret.txt' (looked for at"),
    "missing_kind": (1, 1, "missing required field 'kind' (one of Provider, Storage, SnapshotJob,"),
    "mix_canvas_too_large": (11, 27, "spec.mix.mixOutputVideoConfig: width × height must not exceed 1920 ×"),
    "mix_fps_range": (11, 60, "spec.mix.mixOutputVideoConfig.fps: must be at most 30, got 31"),
    "mixed_without_mix": (4, 1, "spec: mode mixed needs 'mix' (mix_config)"),
    "name_too_long": (3, 18, "metadata.name: String should have at most 63 characters"),
    "negative_duration": (8, 13, "spec.interval: invalid duration -5: a duration cannot be negative;"),
    "not_a_mapping": (1, 1, "a document must be a mapping with apiVersion, kind, metadata and"),
    "only_comments": (0, 0, "no documents (every spec file is empty)"),
    "png_on_zego": (8, 10, "spec.image: zego snapshots are jpg at the source size: png, width and"),
    "provider_type_typo": (5, 9, "spec.type: unknown type 'volcengin'; expected one of 'volcengine',"),
    "recording_on_volcengine": (5, 13, "spec.provider: a RecordingJob needs a zego provider; Provider 'volc'"),
    "reference_key_typo": (6, 21, "unknown key 'defualt' in a reference (did you mean 'default'?)"),
    "room_claimed_twice": (14, 11, "spec.rooms[0]: room 'lobby' on provider 'volc' is already captured by"),
    "rooms_not_a_list": (
        6,
        10,
        "spec.rooms: expected a list of room names or a selector {match: PATTERN}, got a string",
    ),
    "storage_missing_field": (4, 1, "spec: storage type vod needs 'space'"),
    "storage_vendor_mismatch": (7, 12, "spec.storage: volcengine cannot write to storage type gcs (Storage"),
    "string_for_int": (9, 12, "spec.image.width: Input should be a valid integer, got a string"),
    "thumbnail_duplicate_file": (8, 7, "spec.files[1]: fileId '/a.mp4' is listed twice (first at files[0])"),
    "thumbnail_missing_definition": (7, 7, "spec.files[0]: cdn tencent needs 'definition' (a snapshot template id)"),
    "too_many_streams": (9, 5, "spec.streams: volcengine takes at most 17 streams, got 18"),
    "unknown_alias": (8, 13, "unknown alias *every (an anchor must be defined before it is used; a glob that"),
    "unknown_field_typo": (8, 3, "unknown field 'spec.intervall' (did you mean 'interval'?)"),
    # walk 12A-8: no near miss to suggest (a SnapshotJob's field on a RecordingJob): where its fields are listed
    "unknown_field_no_near_miss": (8, 3, "unknown field 'spec.interval' (`capctl explain RecordingJob.spec` lists"),
    "unknown_kind_typo": (2, 7, "kind: unknown kind 'SnapshotJobs'; expected one of Provider, Storage,"),
    "unknown_nested_field": (8, 25, "unknown field 'spec.image.widht' (did you mean 'width'?)"),
    "unset_env": (7, 17, "environment variable CAPCTL_CORPUS_UNSET is not set and the reference"),
    "user_stream_on_zego": (8, 13, "spec.streams[0]: zego selects streams by `stream` (stream id) only;"),
    "wrong_kind_reference": (5, 13, "spec.provider: 'tos' is Storage 'tos' ("),
}


def _errors(*paths: Path) -> list[tuple[int, int, str]]:
    with pytest.raises(SpecErrors) as info:
        load_spec_set(list(paths), env=SECRET_ENV)
    return [(e.line, e.col, e.message) for e in info.value.errors]


def test_corpus_is_complete() -> None:
    assert sorted(p.stem for p in CORPUS.glob("*.yaml")) == sorted(EXPECTED)
    assert len(EXPECTED) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file(name: str) -> None:
    line, col, fragment = EXPECTED[name]
    path = CORPUS / f"{name}.yaml"
    found = _errors(path) if name in ALONE else _errors(BASE, path)
    assert any((ln, c) == (line, col) and fragment in m for ln, c, m in found), found


def test_a_value_with_one_choice_is_not_also_asked_did_you_mean() -> None:
    """Walk 18H-6: `apiVersion: capctl/v2` said "expected 'capctl/v1' (did you mean 'capctl/v1'?)"."""
    found = _errors(BASE, CORPUS / "bad_api_version.yaml")
    assert (1, 13, "apiVersion: 'capctl/v2' is not allowed; expected 'capctl/v1'") in found, found


def test_errors_name_the_file() -> None:
    with pytest.raises(SpecErrors) as info:
        load_spec_set([CORPUS / "unknown_field_typo.yaml", BASE], env=SECRET_ENV)
    assert str(info.value).startswith(f"{CORPUS / 'unknown_field_typo.yaml'}:8:3: unknown field")


def test_ten_megabyte_file_is_refused_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("rooms:\n" + "  - room-0123456789abcdef\n" * (10 * 1024 * 1024 // 25))

    def parse(*_: object) -> None:
        raise AssertionError("an oversized file reached the YAML parser")

    monkeypatch.setattr("reconciler.spec.loader.load_documents", parse)
    found = _errors(big)
    assert found == [(0, 0, found[0][2])] and "larger than the 4 MiB limit for one spec file" in found[0][2]


def test_large_file_under_the_cap_loads(tmp_path: Path) -> None:
    docs = [
        f"apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {{name: j{i}}}\nspec:\n  provider: volc\n"
        f"  rooms: [{', '.join(f'r{i}-{j}-' + 'x' * 80 for j in range(10))}]\n  storage: tos\n"
        for i in range(3000)
    ]
    path = tmp_path / "many.yaml"
    path.write_text("---\n".join(docs))
    assert 2 * 1024 * 1024 < path.stat().st_size < 4 * 1024 * 1024
    spec_set = load_spec_set([BASE, path], env=SECRET_ENV)  # speed: bench/plan_norefresh.py
    assert len(spec_set.tasks) == 30_000


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10000 + "]" * 10000,
        "a:\n" + "".join(" " * i + "- \n" for i in range(1, 1000)),
        "{a: " * 5000 + "1" + "}" * 5000,
    ],
)
def test_deep_nesting_is_a_clean_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    (found,) = _errors(path)  # walk 47d: libyaml's "exceeded maximum nesting depth" said it twice, or alone
    assert found[0] >= 1 and found[2] == "nesting deeper than 64 levels", found


def test_empty_directory_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "notes.txt").write_text("not a spec")
    assert [m for _, _, m in _errors(tmp_path)] == ["no documents (every spec file is empty)"]
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    assert "no spec files under" in _errors(empty_dir)[0][2]
    missing = tmp_path / "missing"
    with pytest.raises(SpecErrors) as info:
        load_spec_set([missing], env={})
    assert str(info.value) == f"{missing}: no such file or directory"
    # Walk 18H-10: `capctl plan spec` beside `specs/` gets the near name.
    (tmp_path / "specs").mkdir()
    with pytest.raises(SpecErrors) as info:
        load_spec_set([tmp_path / "spec"], env={})
    assert str(info.value) == f"{tmp_path / 'spec'}: no such file or directory (did you mean 'specs'?)"
    # Walk 31c: a dangling symbolic link names its missing target, not itself as a near name.
    (tmp_path / "q").symlink_to("gone.yaml")
    with pytest.raises(SpecErrors) as info:
        load_spec_set([tmp_path / "q"], env={})
    assert str(info.value) == f"{tmp_path / 'q'}: a symbolic link to 'gone.yaml', which does not exist"
    # Walk 35b: the same link found inside a spec directory names its target too (was `cannot read: No such
    # file or directory`); other files of the directory are still read and their errors listed with it.
    inside = tmp_path / "dir"
    inside.mkdir()
    (inside / "a.yaml").write_text("{{{")
    (inside / "b.yaml").symlink_to("gone.yaml")
    (inside / "loop.yaml").symlink_to("loop.yaml")  # not missing: a loop, in the system's words
    with pytest.raises(SpecErrors) as info:
        load_spec_set([inside], env={})
    found = [(Path(e.file).name, e.message) for e in info.value.errors]
    assert ("b.yaml", "a symbolic link to 'gone.yaml', which does not exist") in found
    assert "a.yaml" in [f for f, _ in found]
    assert ("loop.yaml", f"cannot read: {os.strerror(errno.ELOOP)}") in found
    # Walk 35a-4: one in a spec directory said `cannot read: No such file or directory`.
    (tmp_path / "specs" / "jobs.yaml").symlink_to("../gone/jobs.yaml")
    with pytest.raises(SpecErrors) as info:
        load_spec_set([tmp_path / "specs"], env={})
    link = tmp_path / "specs" / "jobs.yaml"
    assert str(info.value) == f"{link}: a symbolic link to '../gone/jobs.yaml', which does not exist"


def test_empty_file_contributes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("")
    (tmp_path / "b.yaml").write_text(BASE.read_text())
    assert load_spec_set([tmp_path], env=SECRET_ENV).documents == 7


def test_directory_walk_skips_hidden_and_sorts(tmp_path: Path) -> None:
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "broken.yaml").write_text("{{{")
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "b.yml").write_text(BASE.read_text())
    (tmp_path / "a.yaml").write_text("# empty\n")
    spec_set = load_spec_set([tmp_path], env=SECRET_ENV)
    assert spec_set.files == (str(tmp_path / "a.yaml"), str(tmp_path / "z" / "b.yml"))


def test_invalid_utf8_is_positioned(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"a: 1\nb: \xff\n")
    assert _errors(path) == [
        (2, 4, "not valid UTF-8 text (byte 0xFF: Latin-1, GBK or another encoding?): save the file as UTF-8")
    ]


SPEC = "apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {name: j}\nspec: {provider: volc, rooms: [%s]}\n"


@pytest.mark.parametrize(
    ("data", "where", "fragment"),
    [  # walk 16B-3: each was a bare "not valid UTF-8 text", UTF-16 without a mark a U+0000 at 1:2
        ((SPEC % "lobby").encode("utf-16"), (1, 1), "UTF-16 text (it starts with a UTF-16 byte order mark), not UTF-8"),
        ((SPEC % "lobby").encode("utf-16-le"), (1, 1), "UTF-16 text (NUL bytes between its characters), not UTF-8"),
        ((SPEC % "教室, café").encode("gbk"), (4, 32), "not valid UTF-8 text (byte 0xBD: Latin-1, GBK"),
        (
            "a: 教室\nb: [教室, café]\n".encode().replace(b"\xc3\xa9", b"\xe9"),
            (2, 12),
            "(byte 0xE9",
        ),  # column in characters
    ],
)
def test_a_file_in_another_encoding_is_named(
    tmp_path: Path, data: bytes, where: tuple[int, int], fragment: str
) -> None:
    path = tmp_path / "specs.yaml"
    path.write_bytes(data)
    [(line, col, message)] = _errors(path)
    assert (line, col) == where and fragment in message and message.endswith(": save the file as UTF-8"), message


def test_files_joined_with_cat_keep_each_ones_byte_order_mark_out_of_the_text(tmp_path: Path) -> None:
    """Walk 16B-6: `cat a.yaml b.yaml` where b.yaml was saved with a mark: "missing required field 'kind'" at a
    line that has it, the mark unseen in any editor. Each line-opening mark is dropped, as the file's first is."""
    path = tmp_path / "all.yaml"
    path.write_bytes(codecs.BOM_UTF8 + BASE.read_bytes() + b"---\n" + codecs.BOM_UTF8 + job(body=JOB_BODY).encode())
    assert "SnapshotJob/j/lobby-bom" in load_spec_set([path], env=SECRET_ENV).tasks
