"""`capctl show`: a saved plan rendered again (for a PR comment from a CI artifact), and `--no-color`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Workdir
from tests.specdocs import snapshot_job

ESC = "\x1b["


def test_show_renders_a_saved_plan_as_plan_did(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "vip-1", "vip-2"]))
    text = work.capctl("plan", "--no-refresh", "--out", "plan.json").stdout
    markdown = work.capctl("plan", "--no-refresh", "--format", "markdown").stdout
    assert "+ SnapshotJob/audit (3 rooms)" in text and "provider volc · interval 5s" in text
    shown = work.capctl("show", "plan.json").stdout
    assert shown == text
    assert work.capctl("show", "plan.json", "--format", "markdown").stdout == markdown
    saved = json.loads((work.root / "plan.json").read_text())
    assert json.loads(work.capctl("show", "plan.json", "--format", "json").stdout) == saved
    assert saved["format_version"] == 2 and saved["created_at"].endswith("Z") and "T" in saved["created_at"]
    # show reads nothing else: no specs, no state (a CI job that only has the artifact)
    (work.specs / "jobs.yaml").unlink()
    assert not work.state.exists()  # plan created none
    assert work.capctl("show", "plan.json").stdout == text
    assert not work.state.exists()


def test_show_errors_name_the_file_and_the_problem(work: Workdir) -> None:
    missing = work.capctl("show", "nope.json", expect=1)
    assert "Error: nope.json: no such plan file" in missing.stderr and missing.stdout == ""
    (work.root / "bad.json").write_text('{"format_version": 2,\n  "changes": [}\n')
    assert "bad.json:2:15: not valid JSON" in work.capctl("show", "bad.json", expect=1).stderr
    (work.root / "other.json").write_text('{"name": "not a plan"}')
    other = work.capctl("show", "other.json", expect=1).stderr
    assert "other.json: not a capctl plan (no format_version)" in other and "None" not in other
    (work.root / "future.json").write_text('{"format_version": 3}')
    assert "make the plan again" in work.capctl("show", "future.json", expect=1).stderr
    (work.root / "odd.json").write_text('{"format_version": 2, "created_at": "2026-12-05T18:04:00Z"}')
    assert "odd.json: malformed plan" in work.capctl("show", "odd.json", expect=1).stderr
    work.capctl("plan", "--no-refresh", "--out", "plan.json")
    assert "--format 'yaml'" in work.capctl("show", "plan.json", "--format", "yaml", expect=1).stderr
    # Walk 16B-8: PowerShell's `plan --format json > x.json` is UTF-16 ("(UnicodeDecodeError)"), Set-Content's
    # UTF-8 has a mark ("Unexpected UTF-8 BOM (decode using utf-8-sig)"): the first named, the second read.
    saved = (work.root / "plan.json").read_text(encoding="utf-8")
    (work.root / "ps.json").write_text(saved, encoding="utf-16")
    utf16 = work.capctl("show", "ps.json", expect=1).stderr
    assert "ps.json: cannot read the plan file: it is UTF-16 text (it starts with a UTF-16 byte order mark)" in utf16
    (work.root / "bom.json").write_text(saved, encoding="utf-8-sig")
    assert "Plan: 0 to create" in work.capctl("show", "bom.json").stdout


def test_a_saved_plan_given_where_specs_go_says_how_to_apply_it(work: Workdir) -> None:
    """Walk 55b: `capctl apply plan.json` (Terraform's way) read the plan as a spec, and said only
    `apiVersion: expected 'capctl/v1'` and `missing required field 'kind'`."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    work.capctl("plan", "--no-refresh", "--out", "my plan.json")
    hint = (
        "my plan.json:1:1: a plan saved by `capctl plan --out`, not a spec: apply it with"
        " `capctl apply --plan 'my plan.json'`, print it with `capctl show 'my plan.json'`"
    )
    failed = work.capctl("apply", "my plan.json", expect=1)  # plan and validate read PATH with the same loader
    assert hint in failed.stderr and "apiVersion" not in failed.stderr and "kind" not in failed.stderr
    assert not work.state.exists()  # nothing applied, no state made


def test_no_color_flag_on_the_command_or_before_it(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    colour = {"FORCE_COLOR": "1", "NO_COLOR": ""}  # a terminal as rich sees it, and no NO_COLOR
    assert ESC in work.capctl("plan", "--no-refresh", env=colour).stdout
    plain = work.capctl("plan", "--no-refresh", "--no-color", env=colour).stdout
    assert ESC not in plain and "+ SnapshotJob/audit/lobby" in plain
    assert work.capctl("--no-color", "plan", "--no-refresh", env=colour).stdout == plain
    work.capctl("plan", "--no-refresh", "--out", "plan.json")
    assert ESC in work.capctl("show", "plan.json", env=colour).stdout
    assert work.capctl("show", "plan.json", "--no-color", env=colour).stdout == plain
    failed = work.capctl("show", "nope.json", "--no-color", env=colour, expect=1)
    assert ESC not in failed.stderr and "Error: nope.json" in failed.stderr
    assert "--no-color" in work.capctl("show", "--help").stdout
    # Walk 55b: typer's own usage errors and help (on a console of its own) kept their colours and styles.
    assert ESC in work.capctl("plan", "-o", "x", env=colour, expect=1).stderr
    for args, env in ((("plan", "-o", "x", "--no-color"), colour), (("--no-color", "plan", "-o", "x"), colour)):
        typo = work.capctl(*args, env=env, expect=1).stderr
        assert ESC not in typo and "No such option: -o" in typo
    wide = {**colour, "COLUMNS": "200"}  # rich's help, not click's plain one for a narrow terminal
    assert ESC in work.capctl("--help", env=wide).stdout
    assert ESC not in work.capctl("--help", env={**wide, "NO_COLOR": "1"}).stdout


def test_a_saved_plan_edited_to_hold_escape_sequences_shows_them_escaped(work: Workdir) -> None:
    """Walk 18E-7: `show` (and `apply --plan`'s listing) wrote a hand-edited plan's control characters to the
    terminal: `\\x1b[2J` cleared the reviewer's screen, `\\x1b[1A\\x1b[2K` could hide the line of a delete that
    `apply --plan` then runs. The plans capctl makes hold none (specs refuse them)."""
    change = {
        "key": "SnapshotJob/audit/lobby\x1b]0;title\x07",
        "action": "delete",
        "reason": "removed\x1b[1A\x1b[2K",
        "provider": "volc\x9b31m",  # (a C1 CSI: JSON writes it as itself)
        "family": "volcengine-snapshot",
        "before_hash": "hmac:a",
        "after_hash": None,
        "details": ["d\x1b[31m"],
        "before": {"RoomId": "lobby\x1b[5m"},
    }
    saved = {
        "format_version": 2,
        "state_serial": 1,
        "created_at": "2026-12-05T18:04:00Z",
        "refreshed": True,
        "prune": True,
        "targets": [],
        "replace": [],
        "paths": ["specs"],
        "notes": ["note\x1b[2J"],
        "changes": [change],
    }
    (work.root / "edited.json").write_text(json.dumps(saved))
    for fmt in ("text", "markdown"):
        shown = work.capctl("show", "edited.json", "--format", fmt).stdout
        assert not {"\x1b", "\x07", "\x9b"} & set(shown), shown
        assert "x1b[2J" in shown.replace("\\\\", "\\").replace("\\[", "[") and "audit/lobby" in shown


def _with_a_hostile_key(work: Workdir, **fields: str) -> str:
    """A state of audit/lobby applied, and beside it a copy of its record (with `fields`) whose key holds an
    escape sequence, as a state an older capctl wrote may (a room id a callback named before they were checked)."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    work.capctl("state", "init")
    work.apply()
    hostile = "SnapshotJob/audit/ev\x1b]0;title\x07\r\nil"
    with sqlite3.connect(work.state) as db:
        (body,) = db.execute("SELECT body FROM capctl_records").fetchone()
        record = {**json.loads(body), "key": hostile, "target": "ev\x1b]0;title\x07\r\nil", **fields}
        db.execute("INSERT INTO capctl_records VALUES (?, ?)", (hostile, json.dumps(record)))
    return hostile


def test_a_key_with_escape_sequences_in_the_state_is_shown_escaped(work: Workdir) -> None:
    """Walk 58e: a task key from a state an older capctl wrote (a room id a callback named before room ids were
    checked) went raw to the terminal in a fresh plan, `state list` and apply's lines: `\\x1b]0;…\\x07` retitled
    it, `\\r\\n` forged a row. Only a saved plan (18E-7) was escaped; each is now."""
    hostile = _with_a_hostile_key(work)
    raw = {"\x1b", "\x07", "\r"}
    for args in (("state", "list"), ("state", "list", "-o", "wide"), ("plan", "--no-refresh")):
        shown = work.capctl(*args).stdout
        assert not raw & set(shown) and "ev\\x1b]0;title\\x07" in shown, (args, shown)
    shown = work.capctl("plan", "--no-refresh", "--format", "markdown").stdout
    assert not raw & set(shown) and "x1b]0;title" in shown, shown
    applied = work.apply("--target", hostile).stdout  # (its stop ends lobby's run: it has lobby's vendor id)
    assert not raw & set(applied) and "ev\\x1b]0;title\\x07" in applied, applied


def test_a_key_with_escape_sequences_in_the_state_is_escaped_where_a_command_names_it(work: Workdir) -> None:
    """Walk 59b: after 58e, three more lines still wrote such a key raw: the "did you mean" of a KEY that
    matched nothing (state show/rm, wake, sync), `state rm`'s "Removed …" of a glob's match and `wake`'s
    "Woke …" (offline, and the daemon's answer, one piece of code)."""
    _with_a_hostile_key(work, status="dormant")
    raw, escaped = {"\x1b", "\x07", "\r"}, "SnapshotJob/audit/ev\\x1b]0;title\\x07\\r\\nil"
    for args in (("state", "show"), ("wake",)):
        said = work.capctl(*args, "SnapshotJob/audit/ev]0;titleil", expect=1).stderr
        assert not raw & set(said) and f"did you mean {escaped}?" in said, (args, said)
    woke = work.capctl("wake", "SnapshotJob/audit/ev*").stdout
    assert not raw & set(woke) and f"Woke {escaped} (was dormant" in woke, woke
    removed = work.capctl("state", "rm", "SnapshotJob/audit/ev*").stdout
    assert not raw & set(removed) and f"Removed {escaped} from the state" in removed, removed


def test_shell_completion_does_not_offer_a_key_with_escape_sequences(work: Workdir) -> None:
    """Walk 59b: completion offered such a key as it is stored: bash split it at its line break into two
    candidates (one a forged `il`) and printed the list, escape sequence and all, raw to the terminal."""
    _with_a_hostile_key(work)
    env = {"_CAPCTL_COMPLETE": "complete_bash", "COMP_WORDS": "capctl state show SnapshotJob/audit/", "COMP_CWORD": "3"}
    installed = str(Path(sys.executable).parent / "capctl")  # the script names the _CAPCTL_COMPLETE variable
    offered = subprocess.run(
        [installed], cwd=work.root, text=True, capture_output=True, env={**work.env, **env}, timeout=60, check=True
    ).stdout
    assert offered.splitlines() == ["SnapshotJob/audit/lobby"], offered
