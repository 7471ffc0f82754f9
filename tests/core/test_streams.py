"""streams.py: JSON documents of many tasks are written as they are encoded (read as `json.dumps(indent=2)` wrote
them), and output whose reader is gone (a closed pipe, a terminal that hung up) is dropped, a disk's error is not."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Literal

import pytest

from reconciler.streams import terminal_bytes, write_json


class Discard(io.StringIO):
    """A stdout whose reader keeps nothing: what is held is what the writer holds."""

    def write(self, text: str) -> int:
        return len(text)


SHAPES: list[dict[str, Any]] = [
    {},
    {"serial": 0, "tasks": []},
    {"format_version": 2, "notes": ["a", "b"], "changes": [{"key": "SnapshotJob/a/大厅", "after": {"x": [1, {}]}}]},
    {"nested": {"list": [[], [1, 2]], "none": None}, "text": '→ \u0007 "q"'},
]


@pytest.mark.parametrize("text", ["utf-8", "readable"])
@pytest.mark.parametrize("data", SHAPES)
def test_the_text_is_what_json_dumps_writes(data: dict[str, Any], text: Literal["utf-8", "readable"]) -> None:
    out = io.StringIO()
    write_json(data, out, text=text)
    assert out.getvalue() == json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def test_the_mode_is_named_where_called() -> None:
    """One parameter naming the mode (there were two flags, `ensure_ascii` and `readable`, where callers used
    two modes: walk 16c). A plan file keeps a bidirectional override raw, as json.dumps writes it; stdout escapes
    it (it would reorder the reader's terminal); a CJK room id reads as itself in both."""
    data = {"key": "RecordingJob/shows/直播\u202eevil"}
    written = {}
    for text in ("utf-8", "readable"):
        out = io.StringIO()
        write_json(data, out, text=text)
        written[text] = out.getvalue()
        assert json.loads(written[text]) == data
    assert written["utf-8"] == '{\n  "key": "RecordingJob/shows/直播\u202eevil"\n}\n'
    assert written["readable"] == '{\n  "key": "RecordingJob/shows/直播\\u202eevil"\n}\n'


def test_one_task_at_a_time_is_held_as_text() -> None:
    """`state list -o json` at 50,000 tasks peaked at 760 MB: json.dumps(indent=2) held every piece at once."""
    task = {f"field_{i}": f"value-{i}" for i in range(30)}
    data = {"serial": 7, "tasks": [dict(task, key=f"SnapshotJob/job/room-{n}") for n in range(5000)]}
    size = len(json.dumps(data, indent=2))
    tracemalloc.start()
    try:
        write_json(data, Discard(), text="readable")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size / 20, (peak, size)


# A stdout whose every write fails with EIO, as a file on a failing disk (or a lost NFS server) does.
FAILING_DISK = """
import errno, io, sys
class Disk(io.FileIO):  # a real descriptor (a file's), whose writes fail
    def write(self, b): raise OSError(errno.EIO, "Input/output error")
sys.stdout = io.TextIOWrapper(io.BufferedWriter(Disk(sys.argv[1], "w")), encoding="utf-8")
from reconciler import streams
streams.install()
print("the whole backup")
sys.stdout.flush()
print(streams.output_failure(), file=sys.stderr)
"""


def test_an_io_error_writing_to_a_file_is_a_failure_not_taken_for_a_terminal_that_hung_up(tmp_path: Path) -> None:
    """EIO is how a terminal that hung up refuses writes (dropped, so an apply stopped by SIGHUP finishes). It is
    also a disk's error: `capctl state list -o json > backup.json` cut short must not exit 0 as if written."""
    done = subprocess.run(
        [sys.executable, "-c", FAILING_DISK, str(tmp_path / "backup.json")], capture_output=True, text=True, timeout=60
    )
    assert (
        done.stderr
        == "cannot write to " + str(tmp_path / "backup.json") + ": Input/output error; the output is incomplete\n"
    )


def test_a_command_whose_output_cannot_be_written_says_so_and_exits_1() -> None:
    """A full disk under `> file`: one line on stderr and exit 1, not a traceback (nor a silent 0)."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", "state", "list", "-o", "json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CAPCTL_STATE": "sqlite:////nonexistent/state.db"},
            timeout=60,
        )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.endswith("Error: cannot write to stdout: No space left on device; the output is incomplete\n")


HUNG_UP = """
import sys
from reconciler import streams
streams.install()
print("started", file=sys.stderr, flush=True)
sys.stdin.read()  # until the test has closed the terminal (a sleep here lost that race on a loaded machine)
print("the summary of an apply that finished" * 1000)
"""


def test_writes_to_a_terminal_that_hung_up_are_dropped() -> None:
    controller, terminal = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", HUNG_UP], stdin=subprocess.PIPE, stdout=terminal, stderr=subprocess.PIPE, text=True
    )
    os.close(terminal)
    assert proc.stderr is not None and proc.stderr.readline() == "started\n"
    os.close(controller)  # the terminal window closed: every later write to it fails with EIO
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_a_json_log_line_holds_a_cjk_room_as_text_where_the_stream_takes_it(encoding: str) -> None:
    """Walk 16B-5: the daemon's lines had `\\u6559\\u5ba4-101`: `kubectl logs | grep 教室-101` found nothing. Still
    escaped: what a terminal must not get raw (a bidi override); and all of it on a stream without UTF-8."""
    import structlog

    from reconciler import logs

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding=encoding, errors="strict", write_through=True)
    logs.configure("info", json_logs=True, stream=out)
    try:
        structlog.get_logger().info("decision", key="RecordingJob/rec/教室-101", reason="vendor text \u202e é")
    finally:
        structlog.reset_defaults()
    line = raw.getvalue()
    assert json.loads(line)["key"] == "RecordingJob/rec/教室-101"
    assert json.loads(line)["reason"] == "vendor text \u202e é"
    assert b"\\u202e" in line
    if encoding == "utf-8":
        assert "教室-101".encode() in line and "é".encode() in line
    else:
        assert line.isascii()


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_page_for_a_terminal_without_utf8_has_its_bullets_and_arrows_in_ascii(encoding: str) -> None:
    """`capctl docs` on such a terminal: rich's Markdown bullets were `\\u2022` on each line (walk 17B-3)."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    assert terminal_bytes(" • a → b 教", stream) == b" * a -> b \\u6559"
