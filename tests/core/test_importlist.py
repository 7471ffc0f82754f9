"""`reconciler.importlist`: the list `capctl state import --from FILE` reads, line by line."""

from __future__ import annotations

from reconciler.importlist import parse_import_list


def test_fields_comments_and_blank_lines_as_a_shell_loop_or_an_editor_writes_them() -> None:
    text = (
        "\ufeff# adopted 2024-11\r\n"
        "SnapshotJob/a/lobby\tlobby-audit\r\n"
        "\n"
        "   RecordingJob/r/class-1   509ff7e35eb9d048   # ZEGO\n"
        "ThumbnailJob/t/1397757897438985100 5285890781763144364#not-a-comment\n"
    )
    lines, problems = parse_import_list("l.txt", text.removeprefix("\ufeff"))
    assert problems == []
    assert [(line.where, line.key, line.vendor_id) for line in lines] == [
        ("l.txt:2", "SnapshotJob/a/lobby", "lobby-audit"),
        ("l.txt:4", "RecordingJob/r/class-1", "509ff7e35eb9d048"),
        ("l.txt:5", "ThumbnailJob/t/1397757897438985100", "5285890781763144364#not-a-comment"),
    ]


def test_each_malformed_line_is_named_and_quoted_back_cut_short() -> None:
    text = "SnapshotJob/a/lobby,lobby-audit\nSnapshotJob/a/hall h\nSnapshotJob/a/hall h2\n" + "x " * 500 + "\n"
    lines, problems = parse_import_list("-", text)
    assert [line.key for line in lines] == ["SnapshotJob/a/hall"]
    assert problems[0] == (
        1,
        "-:1: expected KEY VENDOR_TASK_ID, found 1 field(s): 'SnapshotJob/a/lobby,lobby-audit' "
        "(fields are separated by spaces or tabs, not commas)",
    )
    assert problems[1] == (3, "-:3: SnapshotJob/a/hall is listed already on line 2")
    number, said = problems[2]
    assert number == 4 and "found 500 field(s)" in said and said.endswith("…'") and len(said) < 300
