"""Hostile command-line values end in a one-line error and exit 1, never a traceback, and write nothing.

Found by driving every command and option with odd values (walk 12b): names the OS refuses for what they are
(too long) and plan files named by a directory's own path fell through as Python exceptions, a plan file
named by a FIFO or a device replaced it, and one read from a FIFO or /dev/zero blocked or filled memory.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler import cli

SPECS = Path(__file__).resolve().parents[2] / "specs"  # the quickstart's, planned offline (--no-refresh)
STATE = "sqlite:///state.db"  # made by `state init` before each case
CLOSED = "http://127.0.0.1:9"  # discard: nothing listens; no case gets as far as connecting
LONG = "x" * 5000  # past every file system's 255-byte name: ENAMETOOLONG, which pathlib's is_dir() raises
ENDPOINTS = {  # the quickstart specs' vendors, at the closed port too, tried once
    "CAPCTL_MAX_ATTEMPTS": "1",
    "CAPCTL_STATE": None,
    **{f"CAPCTL_{name}_ENDPOINT": f"{CLOSED}/{name.lower()}" for name in ("VOLC", "ZEGO_RTC", "ZEGO_CLOUDRECORD")},
}
ENVIRONMENTS = {  # each case's own, beside those
    "sync-cert-file": {"SSL_CERT_FILE": "nowhere.pem"},
    "plan-keylog-dir": {"SSLKEYLOGFILE": "specs"},
    "sync-keylog-long": {"SSLKEYLOGFILE": LONG},
}


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["validate", LONG], f"{LONG}: file name too long"),
        (["validate", f"specs/{LONG}/x.yaml"], "file name too long"),
        (["plan", "specs", "--no-refresh", "--out", "/"], "Error: /: cannot write the plan (Is a directory)"),
        (["plan", "specs", "--no-refresh", "--out", "."], "Error: .: cannot write the plan (Is a directory)"),
        (["plan", "specs", "--no-refresh", "--out", "specs/.."], "cannot write the plan (Is a directory)"),
        # os.replace put the plan in the FIFO's place (as root, in place of /dev/null: every later `> /dev/null`
        # filled a file): a file that is there and is not a regular file is refused, and stays what it was.
        (["plan", "specs", "--no-refresh", "--out", "pipe"], "Error: pipe: cannot write the plan (not a regular file)"),
        # An empty name (`--plan "$PLAN"`, PLAN unset) was no --plan: apply planned afresh and applied that.
        (["apply", "--plan", "", "--auto-approve"], "Error: --plan '': no file named (an unset variable?)"),
        (["plan", "specs", "--no-refresh", "--out", " "], "Error: --out ' ': no file named (an unset variable?)"),
        # `--state "$STATE"` with STATE unset was the default state: apply started every task again in a new one.
        (["apply", "--auto-approve", "--state", ""], "'' names no state (an unset variable?)"),
        (["state", "copy", "--from", " ", "--to", "sqlite:///copy.db"], "' ' names no state (an unset variable?)"),
        # Refused before the daemon starts: on PostgreSQL every lock then failed, "interval out of range".
        (
            ["run", "--listen", "127.0.0.1:0", "--state", STATE, "--lease-duration", "99999999999h"],
            "Error: --lease-duration must be at most 1 day (86400 s), not 3.6e+14 s",
        ),
        # 5,000 digits: int() refused them in Python's words ("use sys.set_int_max_str_digits()").
        (["run", "--state", STATE, "--resync", "9" * 5000], "Error: --resync: a number of 5000 digits (at most 100)"),
        # Read as any file: a FIFO blocked `show` for good, /dev/zero filled memory until the process was killed.
        (["show", "pipe"], "Error: pipe: cannot read the plan file: not a regular file (a FIFO)"),
        (["apply", "--plan", "specs"], "Error: specs: cannot read the plan file: not a regular file (a directory)"),
        # The simulator's scenario file too (no server starts: the file is read first).
        (["sim", "--listen", "127.0.0.1:0", "--scenario", "pipe"], "Error: sim: pipe: cannot read: not a regular file"),
        (["sim", "--listen", "127.0.0.1:0", "--scenario", "binary"], "Error: sim: binary: not UTF-8 text (byte 0)"),
        # Bytes that are not UTF-8 reach Python as lone surrogates, which the state's driver and httpx's JSON
        # encoder refused with a traceback: such a key is in no state, and is not sent.
        (["state", "show", "\udcff", "--state", STATE], "Error: no task '\\udcff' in the state"),
        (["wake", "\udcff", "--state", STATE], "Error: KEY '\\udcff': expected kind/name/room (a task key)"),
        (["sync", "SnapshotJob/a/\udcff", "--daemon", CLOSED], "Error: KEY 'SnapshotJob/a/\\udcff': not UTF-8 text"),
        # sync made its client before looking at the certificate settings plan and apply check first.
        (["sync", "--daemon", CLOSED], "Error: SSL_CERT_FILE names 'nowhere.pem', which is no file"),
        # The TLS context opened SSLKEYLOGFILE as it was made: OSError's traceback from every command that calls out.
        (["plan", "specs"], "Error: SSLKEYLOGFILE names 'specs', which cannot be written (Is a directory)"),
        (["sync", "--daemon", CLOSED], f"Error: SSLKEYLOGFILE names '{LONG}', which cannot be written (File name too"),
    ],
    ids=[
        "validate-long-name",
        "validate-long-dir",
        "out-root",
        "out-dot",
        "out-dotdot",
        "out-fifo",
        "apply-plan-empty",
        "plan-out-empty",
        "apply-state-empty",
        "copy-from-empty",
        "run-lease-huge",
        "run-resync-digits",
        "show-fifo",
        "apply-plan-dir",
        "sim-scenario-fifo",
        "sim-scenario-binary",
        "state-show-not-utf8",
        "wake-not-utf8",
        "sync-not-utf8",
        "sync-cert-file",
        "plan-keylog-dir",
        "sync-keylog-long",
    ],
)
@pytest.mark.timeout(60)  # a FIFO read as a plan blocked for good: fail, not wait for the suite's timeout
def test_a_hostile_value_is_a_named_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, argv: list[str], error: str
) -> None:
    shutil.copytree(SPECS, tmp_path / "specs")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00rooms: 1\n")
    monkeypatch.chdir(tmp_path)
    env = {"NO_COLOR": "1", "COLUMNS": "200", **ENDPOINTS, **ENVIRONMENTS.get(request.node.callspec.id, {})}
    assert CliRunner().invoke(cli.app, ["state", "init", "--state", STATE], env=env).exit_code == 0
    (tmp_path / "state.db.lock").touch()  # the lock's file, which every command that locks leaves in place
    before = sorted(os.walk(tmp_path))
    result = CliRunner().invoke(cli.app, argv, env=env)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert error in result.output
    assert sorted(os.walk(tmp_path)) == before  # no state, no plan file, no temporary file left
    assert stat.S_ISFIFO((tmp_path / "pipe").stat().st_mode)


@pytest.mark.parametrize("command", ["sync", "wake"])
def test_a_daemon_that_takes_the_request_and_never_answers_is_not_called_unreachable(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 20A-3: a daemon whose loop or store is slow took the request and may act on it; the CLI said
    'cannot reach the daemon … Is `capctl run` serving there?', sending the operator after the URL."""
    import socket

    from reconciler.cli import daemon

    monkeypatch.setattr(daemon, "DAEMON_ANSWER_SECONDS", 0.3)
    with socket.create_server(("127.0.0.1", 0)) as server:  # accepts (the kernel's backlog) and never answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        result = CliRunner().invoke(cli.app, [command, "--daemon", url, "SnapshotJob/a/r1"], env={"COLUMNS": "300"})
    said = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "cannot reach" not in said, said
    assert f"the daemon at {url} took the request but gave no answer within 0.3 s" in said, said
    assert "it may still act on it" in said, said


@pytest.mark.parametrize(("command", "status"), [("sync", 404), ("wake", 200)])
def test_what_a_server_at_daemon_says_is_printed_escaped_on_one_line(command: str, status: int) -> None:
    """`--daemon` may name something else (a typo'd port, a proxy): its `reason` and `lines` reached the terminal
    raw, an escape sequence restyling it and a line break forging a line; a token it echoed was printed back."""
    import http.server
    import json
    import threading

    said = {"ok": status == 200, "reason": "\x1b[31mred\x1b[0m\nforged tok-5150\u202e", "lines": ["\x1b[2Jx\ny"]}

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            body = json.dumps(said).encode()
            head = f"HTTP/1.1 {status} As-Said\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            self.wfile.write(head.encode() + body)

        def log_message(self, *_: object) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Answer) as server:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        env = {"COLUMNS": "300", "CAPCTL_SYNC_TOKEN": "tok-5150"}
        result = CliRunner().invoke(cli.app, [command, "--daemon", url, "SnapshotJob/a/r1"], env=env)
        server.shutdown()
    printed = result.stdout + result.stderr
    assert result.exit_code == (0 if status == 200 else 1), printed
    assert "\\x1b[31mred\\x1b[0m forged sha256:" in printed and "\\u202e" in printed, printed
    assert "tok-5150" not in printed and "\x1b" not in printed and "\u202e" not in printed, printed
    if status == 200:
        assert "\\x1b[2Jx y\n" in result.stdout, result.stdout
