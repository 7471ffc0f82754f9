"""The command line's contract with CI and scripts: exit codes, read-only commands, selectors, completion.

Everything runs the real `capctl` in a subprocess (as a CI job or a shell would), on real SQLite files;
plans are made with `--no-refresh` or without any recorded task, so no vendor is involved.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import typer.main
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from reconciler import cli
from reconciler.model import TaskStatus
from reconciler.state import open_state
from tests.e2e.conftest import Workdir
from tests.specdocs import STORAGE, providers, snapshot_job
from tests.state.helpers import make_record

# No vendor is called in this module: the providers point at a closed loopback port.
PROVIDERS = providers("http://127.0.0.1:9")


def capctl(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "CAPCTL_STATE"}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**base, "COLUMNS": "200", "NO_COLOR": "1", "CAPCTL_MAX_ATTEMPTS": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def write_specs(root: Path, *jobs: str) -> Path:
    specs = root / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    (specs / "providers.yaml").write_text(PROVIDERS)
    (specs / "storage.yaml").write_text(STORAGE)
    (specs / "jobs.yaml").write_text("---\n".join(textwrap.dedent(j).lstrip() for j in jobs))
    return specs


# --- 1: every error exits 1; 2 only ever means "changes" -----------------------------------------------

USAGE_ERRORS = [
    ((), "Usage:"),  # no command at all: the help, as an error
    (("plan", "--tagret", "SnapshotJob/x"), "Possible options: --state, --target"),
    (("plan", "--format"), "requires an argument"),
    (("apply", "--parallelism", "0"), "--parallelism"),
    (("apply", "--parallelism", "many"), "--parallelism"),
    (("bogus",), "No such command 'bogus'"),
    (("--bogus",), "No such option: --bogus"),
    # Walk 55b: Terraform's one dash (`-out=`, `-target=`) was `No such option: -o` alone.
    (("plan", "-out=plan.json"), "-o ('-out=plan.json': capctl's long options take two dashes: --out=plan.json)"),
    # Walk 56a: `-refresh=false` was told `--refresh=false` (a flag: refused in turn), `-no-refresh` nothing.
    (("plan", "-refresh=false"), "two dashes, and a flag takes no value: --no-refresh)"),
    (("plan", "-no-refresh"), "-n ('-no-refresh': capctl's long options take two dashes: --no-refresh)"),
    # Walk 56a: Terraform's `-lock=false` was `-l ock=false`, a label selector: a plan of nothing, exit 0.
    (("plan", "-lock=false"), "No such option: -lock ('-lock=false' is Terraform's: capctl has no such option"),
    # Walk 57b: and a selector on a label `ock` is told how it is written.
    (("state", "list", "-lock"), "to select on a label 'ock', write '-l ock' or '--selector ock')"),
    # Walk 57b: any long option with one dash where its first letter is a short option was read as that one with
    # a glued value: `-log-level=debug` a label selector (a plan of nothing, exit 0), `-output=json` a bad --output.
    (("plan", "-log-level=debug"), "would read it as '-l og-level=debug'; its long options take two dashes: --log-le"),
    (("state", "list", "-output=json"), "No such option: -output ('-output=json': capctl would read it as '-o utput"),
    (("state",), "Usage:"),
    (("state", "lst"), "Did you mean 'list'?"),
    (("state", "show"), "Missing argument"),
    (("state", "list", "--bogus"), "No such option: --bogus"),
    (("validate", "--detailed-exitcode"), "No such option"),
    (("run", "--resync"), "requires an argument"),
    (("completion",), "Missing argument"),
    (("completion", "tcsh"), "tcsh"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(a) or "no-args" for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_1_with_clicks_message(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    proc = capctl(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / ".capctl").exists()


def test_a_sub_commands_one_dash_hint_is_said_once(tmp_path: Path) -> None:
    # Walk 57b: `state rm`'s usage error passes through the `state` group's invoke and the root's, and each added
    # the hint: `No such option: -s ('-state=x': …: --state=x) ('-state=x': …: --state=x)`.
    proc = capctl("state", "rm", "-state=x", "SnapshotJob/a/b", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = " ".join((proc.stdout + proc.stderr).replace("\u2502", " ").split())
    assert "No such option: -s ('-state=x': capctl's long options take two dashes: --state=x)" in text, text
    assert text.count("two dashes") == 1, text


def test_a_short_option_s_value_after_an_equals_sign_is_read_as_kubectl_reads_it(tmp_path: Path) -> None:
    # Walk 58a: `-o=json`, `-s=running`, `-l=team=safety` (kubectl's spellings) were read with the `=` in the
    # value: `--output '=json': expected table, wide or json`, `--status =running`, a selector of an empty key.
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_state(url)
    store.put(make_record("SnapshotJob/audit/lobby", status=TaskStatus.RUNNING, labels={"team": "safety"}))
    store.put(make_record("SnapshotJob/hall/hall", status=TaskStatus.STOPPED, labels={"team": "media"}))
    store.close()
    apart = capctl("state", "list", "-o", "json", "-s", "running", "-l", "team=safety", "--state", url, cwd=tmp_path)
    equals = capctl("state", "list", "-o=json", "-s=running", "-l=team=safety", "--state", url, cwd=tmp_path)
    assert (equals.returncode, equals.stdout) == (0, apart.stdout), equals.stderr
    assert [t["key"] for t in json.loads(equals.stdout)["tasks"]] == ["SnapshotJob/audit/lobby"]
    # After `--` a word is an argument, as it was: here a key, which `-o=json` is not.
    after = capctl("state", "list", "--state", url, "--", "-o=json", cwd=tmp_path)
    assert after.returncode == 1 and "KEY '-o=json'" in after.stderr, after.stdout + after.stderr
    # Walk 59a: nor the value of the option before it: `--plan -l=x.json` is a file of that name, not `-lx.json`.
    for words in (("apply", "--plan", "-l=x.json"), ("apply", "--plan=-l=x.json")):
        named = capctl(*words, cwd=tmp_path)
        assert named.returncode == 1 and "Error: -l=x.json: no such plan file" in named.stderr, named.stderr


# capctl's own checks of values click takes as text: each names the option or argument at fault (walk 13d: none
# of these messages was run by any test).
VALUE_ERRORS = [
    (("state", "list", "-o", "xml"), "Error: --output 'xml': expected table, wide or json"),
    (("state", "list", "[a"), "Error: KEY '[a': expected kind/name/room (a task key), kind/name, or either with *"),
    (("state", "rm", "[a"), "Error: KEY '[a': expected kind/name/room (a task key), kind/name, or either with *"),
    (("plan", "--log-level", "loud"), "Error: --log-level 'loud': expected debug, info, warning or error"),
    (("run", "--resync", "0s"), "Error: --resync must be positive, got 0s"),
    (("run", "--read-timeout", "0"), "Error: --read-timeout must be positive, got 0s"),
    (("run", "--listen", "nohost"), "Error: --listen: expected HOST:PORT (e.g. 127.0.0.1:8080 or 0.0.0.0:8080; port"),
    # Walk 35b: these were accepted and failed at bind (`cannot listen on ::1: Name or service not known`).
    (("run", "--listen", "[::1"), "Error: --listen: an IPv6 address in brackets has no closing ']' (e.g. [::1]:8080)"),
    (("demo", "--daemon-listen", "::1:0"), "Error: --daemon-listen: an IPv6 address goes in brackets, before the port"),
    (
        ("sync", "--daemon", "ftp://x"),
        "Error: --daemon 'ftp://x': expected the daemon's URL, e.g. http://127.0.0.1:8080",
    ),
    (("sync", "lobby"), "Error: KEY 'lobby': expected kind/name/room (a task key), kind/name, or either with *"),
    (("wake", "SnapshotJob/a/b"), "Error: nothing to wake: no state at sqlite:///.capctl/state.db (resolved to "),
    (("docs", "nosuch"), "Error: docs: no topic 'nosuch'; the topics: architecture, daemon, "),
    (("state", "list", "--state", "sqlite:////dev/null"), "Error: sqlite:////dev/null is not a regular file\n"),
]


@pytest.mark.parametrize(("args", "message"), VALUE_ERRORS, ids=[" ".join(a) for a, _ in VALUE_ERRORS])
def test_a_bad_option_value_is_named_exits_1_and_creates_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    proc = capctl(*args, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.startswith(message), proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_new_user_without_specs_is_pointed_at_the_arguments_and_the_demo(tmp_path: Path) -> None:
    """The first `capctl plan` in an empty directory: the default ./specs is not there (walk 13d: untested)."""
    proc = capctl("plan", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "specs: no such file or directory",
        "1 error in 1 file: nothing was changed.",
        "./specs, the default spec path, is not here: give spec files or directories as arguments (`capctl demo` "
        "plays the quickstart specs capctl ships, and says where they are).",
    ]
    assert list(tmp_path.iterdir()) == []
    named = capctl("plan", "other", cwd=tmp_path)  # a path the user gave: no word about the default
    assert named.returncode == 1 and "default spec path" not in named.stderr


def _commands(group: TyperGroup, path: str = "capctl") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name, command in group.commands.items():
        found.append((f"{path} {name}", command))
        if isinstance(command, TyperGroup):
            found += _commands(command, f"{path} {name}")
    return found


def test_every_option_that_takes_a_value_says_what_in_help() -> None:
    """`--state URL`, `--resync DURATION`: a metavar, not typer's bare type label (`<str>`)."""
    bare = [
        f"{where} {param.opts[0]}"
        for where, command in _commands(cast(TyperGroup, typer.main.get_command(cli.app)))
        for param in command.params
        if isinstance(param, TyperOption) and not param.is_flag and param.metavar is None
    ]
    assert bare == []
    # typer adds "..." to an argument taking several values: a metavar saying it too reads "[PATH...]...".
    doubled = [
        f"{where} {param.metavar}"
        for where, command in _commands(cast(TyperGroup, typer.main.get_command(cli.app)))
        for param in command.params
        if param.metavar is not None and param.metavar.endswith("...")
    ]
    assert doubled == []


def test_help_shows_no_python_type_and_a_plain_usage_line() -> None:
    """typer's rich help printed `--auto-approve <bool>`, as if the flag took a value (and `--help <bool>`),
    `PATH <list[Path]>` and `PLAN <str>` beside arguments, and `capctl show [OPTIONS] {PLAN}`."""
    root = cast(TyperGroup, typer.main.get_command(cli.app))
    runner = CliRunner()
    for where, _ in [("capctl", root), *_commands(root)]:
        result = runner.invoke(cli.app, [*where.split()[1:], "--help"], env={"NO_COLOR": "1", "COLUMNS": "200"})
        assert result.exit_code == 0, where
        assert "--help" in result.output, where
        assert re.findall(r"<(?:bool|str|int|float|Path|list\[\w+\])>", result.output) == [], where
        assert "{" not in result.output.split("Usage:")[1].splitlines()[0], where
    for where, line in (
        ("capctl show", "capctl show [OPTIONS] PLAN"),
        ("capctl plan", "capctl plan [OPTIONS] [PATH]..."),
        ("capctl state list", "capctl state list [OPTIONS] [KEY]..."),
    ):
        output = runner.invoke(cli.app, [*where.split()[1:], "--help"], env={"COLUMNS": "200"}).output
        assert output.split("Usage: ")[1].splitlines()[0].rstrip() == line


def test_sync_and_wake_help_name_the_daemons_bound_on_jobs_and_globs() -> None:
    """The daemon refuses more than MAX_WALKS jobs or globs in one sync or wake (walk 55c-1); only docs/daemon.md
    said so, not the commands' help (walk 56b)."""
    from reconciler.daemon.http import MAX_WALKS

    for command in ("sync", "wake"):
        output = CliRunner().invoke(cli.app, [command, "--help"], env={"NO_COLOR": "1", "COLUMNS": "200"}).output
        assert f"at most {MAX_WALKS} jobs or globs in one call" in " ".join(output.lower().split()), command


def _wrapped_early(lines: list[str], width: int) -> list[str]:
    """Lines of one wrapped paragraph that end where the next line's first word would still have fit."""
    return [
        line
        for line, after in itertools.pairwise(lines)
        if after.strip() and len(line.rstrip()) + 1 + len(after.split()[0]) <= width
    ]


def _helps(columns: int) -> Iterator[tuple[str, Any, str]]:
    """(`capctl …`, its command, its `--help` at `columns`) for the root and every command."""
    root = cast(TyperGroup, typer.main.get_command(cli.app))
    runner = CliRunner()
    for where, command in [("capctl", root), *_commands(root)]:
        env = {"NO_COLOR": "1", "COLUMNS": str(columns)}
        yield where, command, runner.invoke(cli.app, [*where.split()[1:], "--help"], env=env).output


@pytest.mark.parametrize("columns", [60, 160])
def test_help_text_reflows_to_the_terminal_width(columns: int) -> None:
    """Docstrings are wrapped at 110 in the source; typer kept those breaks in later paragraphs and in the
    command list, so `capctl --help`'s run entry broke after 'they serve callbacks into' at any width."""
    early: list[tuple[str, str]] = []
    for where, _, output in _helps(columns):
        # The text between the usage line and the first panel (or, in click's plain help where rich's table would
        # cut names, its first section): paragraphs a column or two in, `columns - 2` wide.
        body = re.split(r"╭|\n(?:Arguments|Options):", output.split("Usage:")[1])[0].splitlines()[1:]
        paragraph: list[str] = []
        for line in [*body, ""]:
            if line.strip():
                paragraph.append(line[1:])
                continue
            early += [(where, found) for found in _wrapped_early(paragraph, columns - 2)]
            paragraph = []
        # The command list: `│ name   description │`, continuation rows blank in the name column.
        commands = output.split("─ Commands ")[1].split("╰")[0].splitlines()[1:] if "─ Commands " in output else []
        start = len(commands[0]) - len(commands[0][2:].split(maxsplit=1)[1]) if commands else 0
        entry: list[str] = []
        for row in [*commands, "│ end"]:
            if row[2:start].strip() and entry:
                early += [(where, found) for found in _wrapped_early(entry, columns - 2 - start)]
                entry = []
            entry.append(row[start:-2])
    assert early == []


@pytest.mark.parametrize("columns", [60, 75, 80, 100])
def test_help_cuts_no_option_name_and_no_word(columns: int) -> None:
    """rich's option table cut what did not fit with an ellipsis: `--detailed-e…` and `--auto-app…` at 60
    columns, `--status-token-r…` and `sqlite:///.capctl/state…` at 80. Too narrow for it, the help is click's
    plain one, each option's names whole on its line, and no line broken inside a word."""
    cut: list[tuple[str, str]] = []
    for where, command, output in _helps(columns):
        assert output.strip() and "Traceback" not in output, where
        cut += [(where, line) for line in output.splitlines() if "…" in line.replace("postgresql://…", "")]
        # click's plain help wrapped after a hyphen inside a word: `--max-` / `prune`, `re-` / `issues`
        cut += [(where, line) for line in output.splitlines() if re.search(r"\w-[ │]*$", line)]
        options = [p for p in getattr(command, "params", []) if isinstance(p, TyperOption)]
        assert [o for p in options for o in p.opts if o not in output] == [], where
    assert cut == []
    plain = CliRunner().invoke(cli.app, ["plan", "--help"], env={"NO_COLOR": "1", "COLUMNS": "60"}).output
    assert "  --detailed-exitcode       Exit 0 = no changes, 2 =" in plain


def test_state_list_help_names_every_status_it_accepts() -> None:
    from reconciler.model import TaskStatus

    commands = dict(_commands(cast(TyperGroup, typer.main.get_command(cli.app))))
    [status] = [p for p in commands["capctl state list"].params if p.name == "status"]
    assert isinstance(status, TyperOption) and status.help is not None
    assert [s.value for s in TaskStatus if s.value not in status.help] == []  # `removed` was missing


def test_help_and_version_exit_0(tmp_path: Path) -> None:
    assert capctl("--help", cwd=tmp_path).returncode == 0
    assert capctl("state", "list", "--help", cwd=tmp_path).returncode == 0
    assert capctl("--version", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("points", ["start.afer-call", "start.after-call:paws", "stop.after-call, findafter-call"])
def test_a_misspelt_failpoint_is_an_error_not_a_test_without_a_crash(tmp_path: Path, points: str) -> None:
    """A typo in CAPCTL_FAILPOINTS switched nothing on: the apply ran through and a crash test passed untested."""
    result = CliRunner().invoke(cli.app, ["plan", str(tmp_path)], env={"CAPCTL_FAILPOINTS": points, "NO_COLOR": "1"})
    assert result.exit_code == 1
    assert "CAPCTL_FAILPOINTS:" in result.output and "is no failpoint" in result.output
    assert "start.after-call, start.after-commit" in result.output  # the names it takes
    known = CliRunner().invoke(cli.app, ["plan", str(tmp_path)], env={"CAPCTL_FAILPOINTS": " start.after-call:pause"})
    assert "CAPCTL_FAILPOINTS" not in known.output


def test_run_help_names_every_environment_variable_the_daemon_reads() -> None:
    """The daemon's docs table lists CAPCTL_SYNC_TOKEN with the flags; --help did not mention it."""
    result = CliRunner().invoke(cli.app, ["run", "--help"], env={"NO_COLOR": "1", "COLUMNS": "2000"})
    text = " ".join(result.output.replace("│", " ").split())
    assert "CAPCTL_SYNC_TOKEN" in text and "POST /api/v1/sync" in text
    # A selector room starts on entry, before a stream (docs/daemon.md); --help said "a stream appeared" (walk 8f).
    assert "start a room's task as a callback says someone entered it (a join, a stream)" in text


def test_state_list_says_a_question_mark_is_no_wildcard_when_a_key_matches_nothing(tmp_path: Path) -> None:
    state = f"sqlite:///{tmp_path / 'state.db'}"
    result = CliRunner().invoke(cli.app, ["state", "list", "SnapshotJob/cams/c?", "--state", state])
    assert result.exit_code == 0 and "KEY SnapshotJob/cams/c? matches no task (in task keys only * is a wildcard" in (
        result.stderr
    )


def test_detailed_exitcode_2_means_changes_and_nothing_else(tmp_path: Path) -> None:
    write_specs(tmp_path, snapshot_job("audit", ["lobby"]))
    state = {"CAPCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}"}
    assert capctl("plan", "--detailed-exitcode", "--no-refresh", cwd=tmp_path, env=state).returncode == 2
    typo = capctl("plan", "--detailed-exitcode", "--tagret", "SnapshotJob/audit", cwd=tmp_path, env=state)
    assert typo.returncode == 1
    (tmp_path / "specs" / "jobs.yaml").write_text("kind: SnapshotJob\n  bad: [indent\n")
    assert capctl("plan", "--detailed-exitcode", "--no-refresh", cwd=tmp_path, env=state).returncode == 1


def test_a_missing_certificate_bundle_in_the_environment_is_an_error_not_a_traceback(work: Workdir) -> None:
    """SSL_CERT_FILE / SSL_CERT_DIR naming nothing (a bundle path from another machine's image): every command that
    calls a vendor printed a FileNotFoundError traceback (walk 10D-4). Now: exit 1, what is wrong, nothing done."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    work.apply()
    serial = json.loads(work.capctl("state", "list", "-o", "json").stdout)["serial"]
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "hall"]))
    for name, value, what in (
        ("SSL_CERT_FILE", "/nonexistent/ca.pem", "file"),
        ("SSL_CERT_DIR", "/nonexistent", "directory"),
    ):
        for command in (("plan",), ("apply", "--auto-approve"), ("run", "--listen", "127.0.0.1:0")):
            # (the machine may set the other: httpx reads SSL_CERT_FILE first, SSL_CERT_DIR only without it)
            proc = work.capctl(*command, expect=1, env={"SSL_CERT_FILE": "", "SSL_CERT_DIR": "", name: value})
            assert f"{name} names '{value}', which is no {what}" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(work.capctl("state", "list", "-o", "json").stdout)["serial"] == serial  # nothing done
    # --no-refresh calls no vendor: the setting does not matter to it
    work.capctl("plan", "--no-refresh", expect=0, env={"SSL_CERT_FILE": "/nonexistent/ca.pem"})


# --- 5: a command that only reads never creates a state ------------------------------------------------


def test_read_only_commands_create_no_state_and_say_where_they_looked(tmp_path: Path) -> None:
    specs = write_specs(tmp_path / "repo", snapshot_job("audit", ["lobby"]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    looked = f"No state at sqlite:///.capctl/state.db (resolved to {elsewhere / '.capctl' / 'state.db'})"

    plan = capctl("plan", str(specs), "--detailed-exitcode", cwd=elsewhere)
    assert plan.returncode == 2, plan.stderr  # legitimate for a brand-new setup: everything is a create
    assert f"{looked}: planning as if nothing was created yet." in plan.stderr
    assert "Plan: 1 to create" in plan.stdout
    listed = capctl("state", "list", cwd=elsewhere)
    assert listed.returncode == 0 and f"{looked}: no task is recorded" in listed.stderr
    assert '"tasks": []' in capctl("state", "list", "-o", "json", cwd=elsewhere).stdout
    for command in (("state", "show", "SnapshotJob/audit/lobby"), ("state", "rm", "SnapshotJob/audit/lobby")):
        proc = capctl(*command, cwd=elsewhere)
        assert proc.returncode == 1 and "no state at sqlite:///.capctl/state.db (resolved to" in proc.stderr
    assert os.listdir(elsewhere) == []


def test_an_apply_refused_for_its_vendor_settings_creates_no_state(tmp_path: Path) -> None:
    """Bad specs leave no state behind; a bad CAPCTL_MAX_ATTEMPTS or SSL_CERT_FILE left an empty one: they were
    checked once the state was made, just before the first vendor call (walk 11A-4)."""
    write_specs(tmp_path, snapshot_job("audit", ["lobby"]))
    for env in ({"CAPCTL_MAX_ATTEMPTS": "x"}, {"SSL_CERT_FILE": str(tmp_path / "none.pem")}):
        proc = capctl("apply", "--auto-approve", cwd=tmp_path, env=env)
        assert proc.returncode == 1 and "Error: " in proc.stderr, proc.stderr
        assert not (tmp_path / ".capctl").exists()


def test_a_plan_saved_without_state_applies_to_the_new_state(tmp_path: Path) -> None:
    write_specs(tmp_path, snapshot_job("audit", ["lobby"], restart="Never"))
    plan = capctl("plan", "--no-refresh", "--out", "plan.json", cwd=tmp_path)
    assert plan.returncode == 0 and not (tmp_path / ".capctl").exists()
    # apply creates the state; the saved plan (serial 0) matches it, and the vendor refusal is an apply error
    applied = capctl("apply", "--plan", "plan.json", cwd=tmp_path)
    assert (tmp_path / ".capctl" / "state.db").is_file()
    assert "the state changed since this plan was made" not in applied.stderr
    # said, with the path resolved: `sqlite:///tmp/x.db` made ./tmp/x.db without a word (walk 14b)
    assert f"Started a new state at sqlite:///{tmp_path / '.capctl' / 'state.db'}." in applied.stderr


def test_a_plan_that_cannot_be_saved_says_why_and_leaves_no_file_behind(tmp_path: Path) -> None:
    write_specs(tmp_path, snapshot_job("audit", ["lobby"]))
    (tmp_path / "plan.json").mkdir()  # in the way of the file
    proc = capctl("plan", "--no-refresh", "--out", "plan.json", cwd=tmp_path)
    assert proc.returncode == 1 and "Error: plan.json: cannot write the plan (Is a directory)" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "specs"]  # its temporary file was left


def test_commands_on_one_task_read_that_task_alone(tmp_path: Path) -> None:
    """`state show`, `state rm` and `wake` decoded every record (5 s at 50,000 tasks): one that cannot be
    decoded stopped them all, whichever task they named."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_state(url)
    store.put_many([make_record(f"SnapshotJob/audit/{room}") for room in ("lobby", "hall", "broken")])
    store.close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE capctl_records SET body = 'not json' WHERE key = 'SnapshotJob/audit/broken'")
    db.close()
    for command in (("state", "show", "SnapshotJob/audit/lobby"), ("wake", "SnapshotJob/audit/lobby")):
        proc = capctl(*command, "--state", url, cwd=tmp_path)
        assert proc.returncode == 0 and "SnapshotJob/audit/lobby" in proc.stdout, proc.stderr
    assert capctl("state", "rm", "SnapshotJob/audit/hall", "--state", url, cwd=tmp_path).returncode == 0
    assert (
        "SnapshotJob/audit/broken"
        in capctl("state", "show", "SnapshotJob/audit/broken", "--state", url, cwd=tmp_path).stderr
    )


def test_state_json_gives_times_in_rfc_3339_as_a_plan_does(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_state(url)
    store.put(make_record("SnapshotJob/audit/lobby", started_at=1796537859.32, stopped_at=None))
    store.close()
    shown = json.loads(capctl("state", "show", "SnapshotJob/audit/lobby", "--state", url, cwd=tmp_path).stdout)
    (listed,) = json.loads(capctl("state", "list", "-o", "json", "--state", url, cwd=tmp_path).stdout)["tasks"]
    for record in (shown, listed):
        assert record["started_at"] == "2026-12-06T06:17:39Z" and record["stopped_at"] is None
    # --format, as plan and show spell it, is -o's other name
    assert (
        capctl("state", "list", "--format", "json", "--state", url, cwd=tmp_path).stdout
        == json.dumps({"serial": 1, "tasks": [listed]}, indent=2) + "\n"
    )


# --- 19 and 20: what a plan covers, against the simulator ---------------------------------------------


def labelled_job(name: str, rooms: list[str], team: str) -> str:
    return snapshot_job(name, rooms).replace(
        f"metadata: {{name: {name}}}", f"metadata: {{name: {name}, labels: {{team: {team}}}}}"
    )


def keys(listing: str) -> list[str]:
    return [line.split()[0] for line in listing.splitlines()[2:] if line.strip()]


def test_replace_plans_and_observes_the_whole_set(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "vip-1"]))
    work.apply()
    observed_before = len(work.sim.requests("GetSnapshotTask"))
    plan = work.capctl("plan", "--replace", "SnapshotJob/audit/lobby", "--format", "json").stdout
    data = json.loads(plan)
    assert {c["key"]: c["action"] for c in data["changes"]} == {
        "SnapshotJob/audit/lobby": "replace",
        "SnapshotJob/audit/vip-1": "no-op",
    }
    assert data["partial"] is False and not any("partial" in n for n in data["notes"])
    assert len(work.sim.requests("GetSnapshotTask")) - observed_before == 2  # both refreshed, not only the key
    targeted = work.capctl("plan", "--target", "SnapshotJob/*/vip-*", "--replace", "SnapshotJob/audit/vip-1").stdout
    assert "-/+ SnapshotJob/audit/vip-1" in targeted and "This plan is partial" in targeted


def test_labels_select_tasks_in_plan_apply_and_state_list(work: Workdir) -> None:
    work.write("audit.yaml", labelled_job("audit", ["lobby", "vip-1"], "safety"))
    work.write("hall.yaml", labelled_job("hall", ["hall"], "media"))
    first = work.apply("-l", "team=safety")
    assert "Apply complete: 2 created" in first.stdout
    assert sorted(t["roomId"] for t in work.sim.tasks("volcengine", state="running")) == ["lobby", "vip-1"]
    work.apply()
    assert keys(work.capctl("state", "list", "-l", "team=safety").stdout) == [
        "SnapshotJob/audit/lobby",
        "SnapshotJob/audit/vip-1",
    ]
    assert keys(work.capctl("state", "list", "-l", "team!=safety", "--status", "running").stdout) == [
        "SnapshotJob/hall/hall"
    ]
    assert keys(work.capctl("state", "list", "SnapshotJob/*/vip-*").stdout) == ["SnapshotJob/audit/vip-1"]
    assert keys(work.capctl("state", "list", "--status", "stopped,failed").stdout) == []
    bad = work.capctl("state", "list", "--status", "runing", expect=1)
    assert "--status runing: expected one of pending, running" in bad.stderr

    # A label edit alone changes no vendor task, yet the records learn it (state list -l, deletes).
    work.write("hall.yaml", labelled_job("hall", ["hall"], "ops"))
    assert work.apply().stdout.startswith("No changes.")
    assert keys(work.capctl("state", "list", "-l", "team=ops").stdout) == ["SnapshotJob/hall/hall"]

    # A removed job's tasks are selected by the labels they were applied with.
    (work.specs / "audit.yaml").unlink()
    assert work.capctl("plan", "-l", "team=ops", "--detailed-exitcode").returncode == 0
    plan = work.capctl("plan", "-l", "team=safety", "--detailed-exitcode", expect=2).stdout
    assert "- SnapshotJob/audit/lobby" in plan and "Plan: 0 to create, 0 to update in place, 0 to replace" in plan
    work.apply("-l", "team=safety")
    assert [t["roomId"] for t in work.sim.tasks("volcengine", state="running")] == ["hall"]


# --- 20: shell completion ------------------------------------------------------------------------------


def test_completion_scripts_for_each_shell(tmp_path: Path) -> None:
    bash = capctl("completion", "bash", cwd=tmp_path)
    assert bash.returncode == 0 and "complete -o default -F _capctl_completion capctl" in bash.stdout
    assert "_CAPCTL_COMPLETE=complete_bash" in bash.stdout
    assert "compdef _capctl_completion capctl" in capctl("completion", "zsh", cwd=tmp_path).stdout
    assert "complete --command capctl" in capctl("completion", "fish", cwd=tmp_path).stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_bash_script_completes_commands_options_and_task_keys(tmp_path: Path) -> None:
    script = tmp_path / "capctl.bash"
    script.write_text(capctl("completion", "bash", cwd=tmp_path).stdout)
    store = open_state(f"sqlite:///{tmp_path / '.capctl' / 'state.db'}")
    store.put_many([make_record("SnapshotJob/audit/lobby"), make_record("SnapshotJob/audit/vip-1")])
    store.close()

    def complete(*words: str) -> list[str]:
        # What bash does on <Tab>: the line up to the cursor in COMP_LINE / COMP_POINT, its words in COMP_WORDS
        # split at COMP_WORDBREAKS too (`sqlite:///x.db` is three words: `sqlite`, `:`, `///x.db`), COMP_CWORD,
        # then the function `complete -F` named.
        line = " ".join(words)
        split = [part for w in words for part in ([p for p in re.split(r"([:=])", w) if p] if w else [""])]
        proc = subprocess.run(
            [
                "bash",
                "--norc",
                "--noprofile",
                "-c",
                f"source {shlex.quote(str(script))}; COMP_WORDS=({' '.join(shlex.quote(w) for w in split)}); "
                f"COMP_CWORD={len(split) - 1}; COMP_LINE={shlex.quote(line)}; COMP_POINT={len(line)}; "
                f'_capctl_completion capctl; printf "%s\\n" "${{COMPREPLY[@]}}"',
            ],
            cwd=tmp_path,
            text=True,
            capture_output=True,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert complete("capctl", "sta") == ["state"]
    assert complete("capctl", "state", "l") == ["list"]
    assert "--target" in complete("capctl", "plan", "--ta")
    assert complete("capctl", "state", "show", "SnapshotJob/audit/v") == ["SnapshotJob/audit/vip-1"]
    assert complete("capctl", "completion", "") == ["bash", "zsh", "fish"]
    assert complete("capctl", "docs", "spec") == ["spec-language"]
    assert complete("capctl", "state", "list", "--status", "ru") == ["running"]
    assert complete("capctl", "state", "list", "--status", "r") == ["running", "removed"]
    # the options that take one of a few words complete them too (walk 5g: --format, -o and --log-level did not)
    assert complete("capctl", "show", "plan.json", "--format", "") == ["text", "json", "markdown"]
    assert complete("capctl", "state", "list", "-o", "j") == ["json"]
    assert complete("capctl", "apply", "--log-level", "w") == ["warning"]
    assert complete("capctl", "plan", "--replace", "SnapshotJob/audit/l") == ["SnapshotJob/audit/lobby"]
    assert complete("capctl", "state", "list", "SnapshotJob/audit/l") == ["SnapshotJob/audit/lobby"]
    # `state import` offers the keys ./specs declares that the state does not track yet.
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "jobs.yaml").write_text(
        providers("http://127.0.0.1:9")
        + "---\n"
        + STORAGE
        + "---\n"
        + snapshot_job("audit", ["lobby", "vip-1", "hall"])
    )
    assert complete("capctl", "state", "import", "SnapshotJob/audit/") == ["SnapshotJob/audit/hall"]
    other = open_state(f"sqlite:///{tmp_path / 'other.db'}")
    other.put_many([make_record("RecordingJob/rec/hall"), make_record("ThumbnailJob/thumbs/obs:a.mp4")])
    other.close()
    named = complete("capctl", "state", "show", "--state", f"sqlite:///{tmp_path / 'other.db'}", "R")
    assert named == ["RecordingJob/rec/hall"]  # the URL's `:` split it in three: capctl read the line instead
    # bash replaces only what follows a word's last `:`, so that is what it gets back.
    assert complete(
        "capctl", "state", "rm", f"--state=sqlite:///{tmp_path / 'other.db'}", "ThumbnailJob/thumbs/obs:"
    ) == ["a.mp4"]
    assert complete("capctl", "state", "show", "--state", "sqlite:///missing.db", "") == []
    assert not (tmp_path / "missing.db").exists()


def test_completion_gives_up_soon_on_a_database_that_does_not_answer(tmp_path: Path) -> None:
    """<Tab> holds the shell's prompt: a PostgreSQL state that accepts and never answers cost 10 s (walk C 9).
    Timed from the connection to its end, not from the start of a process whose imports a loaded machine
    slows (the whole run took 7.2 s once at load 20, though the connection lasted its 2 s)."""
    import socket
    import threading
    import time

    held: list[tuple[float, float]] = []  # (accepted, closed by capctl) of each connection

    def serve(silent: socket.socket) -> None:
        with contextlib.suppress(OSError):  # closed once capctl has ended
            while True:
                conn, _ = silent.accept()
                accepted = time.monotonic()
                with conn:
                    while conn.recv(1024):  # capctl's startup message, never answered
                        pass
                held.append((accepted, time.monotonic()))

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts the connection; nobody ever answers
        port = silent.getsockname()[1]
        server = threading.Thread(target=serve, args=(silent,), daemon=True)
        server.start()
        env = {
            "_CAPCTL_COMPLETE": "complete_zsh",
            "_TYPER_COMPLETE_ARGS": "capctl state show Snap",
            "CAPCTL_STATE": f"postgresql://capctl@127.0.0.1:{port}/capctl",
        }
        installed = str(Path(sys.executable).parent / "capctl")  # the script names the _CAPCTL_COMPLETE variable
        done = subprocess.run(
            [installed], cwd=tmp_path, text=True, capture_output=True, env={**os.environ, **env}, timeout=120
        )
        silent.shutdown(socket.SHUT_RDWR)
    server.join(30)
    assert done.returncode == 0 and "SnapshotJob" not in done.stdout
    assert held, "capctl never connected"
    took = held[-1][1] - held[0][0]
    assert took < 6, f"completion waited {took:.1f} s for the database"


@pytest.mark.parametrize("word", ["-lock=false", "-log-level=debug"])
def test_completion_after_a_one_dash_long_option_still_offers_options(tmp_path: Path, word: str) -> None:
    # Walk 57b: their refusal (56A-2, 57B-3), raised as the command parses, ran under shell completion too: a
    # traceback where the options were to be offered.
    env = {"_CAPCTL_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": f"capctl plan {word} --ta"}
    base = {k: v for k, v in os.environ.items() if k != "CAPCTL_STATE"}
    installed = str(Path(sys.executable).parent / "capctl")  # the script names the _CAPCTL_COMPLETE variable
    done = subprocess.run([installed], cwd=tmp_path, text=True, capture_output=True, env={**base, **env}, timeout=60)
    assert done.returncode == 0 and "--target" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr


# --- 1: the shipped CI workflow fails on an error and passes on changes ---------------------------------

WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "ci" / "github-actions.yaml"


def workflow_step(job: str, name: str) -> str:
    import yaml

    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"][job]["steps"]
    [step] = [s for s in steps if s.get("name") == name]
    assert step["shell"] == "bash"
    return str(step["run"])


def run_step(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """As GitHub Actions runs a `shell: bash` step: bash --noprofile --norc -eo pipefail, capctl on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    base = {k: v for k, v in os.environ.items() if k != "CAPCTL_STATE"}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**base, "PATH": path, "NO_COLOR": "1", **env},
        timeout=120,
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_ci_plan_step_passes_on_changes_and_no_changes_and_fails_on_errors(tmp_path: Path) -> None:
    plan = workflow_step("plan", "Plan")
    env = {"CAPCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}"}
    write_specs(tmp_path, snapshot_job("audit", ["lobby"]))
    changes = run_step(plan, tmp_path, env)
    assert changes.returncode == 0, changes.stderr
    assert "SnapshotJob/audit/lobby" in (tmp_path / "plan.md").read_text()

    (tmp_path / "specs" / "jobs.yaml").write_text("")
    assert run_step(plan, tmp_path, env).returncode == 0  # no changes

    (tmp_path / "specs" / "jobs.yaml").write_text("kind: SnapshotJob\nmetadata: {name: audit}\nspec: {rooms: 5}\n")
    broken = run_step(plan, tmp_path, env)
    assert broken.returncode == 1 and "capctl plan failed (exit 1)" in broken.stdout

    bad_state = run_step(plan, tmp_path, {"CAPCTL_STATE": "mysql://db/capctl"})
    assert bad_state.returncode == 1


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_ci_plan_saves_the_json_plan_and_comments_the_markdown(tmp_path: Path) -> None:
    """A plan too long for a comment is cut by the same step: tests/deploy/test_ci.py runs that."""
    write_specs(tmp_path, snapshot_job("audit", ["lobby"]))
    env = {"CAPCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}"}
    assert run_step(workflow_step("plan", "Plan"), tmp_path, env).returncode == 0
    assert '"format_version"' in (tmp_path / "plan.json").read_text()
    prepare = workflow_step("plan", "Prepare the comment")
    assert run_step(prepare, tmp_path, env).returncode == 0
    assert (tmp_path / "comment.md").read_text() == (tmp_path / "plan.md").read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("job", ["plan", "apply"])
def test_the_ci_jobs_refuse_to_run_without_a_configured_state(tmp_path: Path, job: str) -> None:
    guard = workflow_step(job, "Check the state is configured")
    refused = run_step(guard, tmp_path, {"CAPCTL_STATE": ""})
    assert refused.returncode == 1 and "::error::CAPCTL_STATE is not set" in refused.stdout
    assert run_step(guard, tmp_path, {"CAPCTL_STATE": "postgresql://capctl@db/capctl"}).returncode == 0


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_ci_validate_job_needs_no_secret(tmp_path: Path) -> None:
    """A fork's pull request gets no secret and no repository variable (`vars.…` is empty): validate must pass
    on the example specs with what the workflow itself writes, and plan and apply wait for it. Walk 41D-2: the
    example read the app ids from `vars` (this test gave them values), so validate failed every fork's pull
    request (`spec.appId: needs at least 1 character, got 0`)."""
    import shutil as sh

    import yaml

    workflow = yaml.safe_load(WORKFLOW.read_text())
    # As GitHub gives them to a fork: every `secrets.…` or `vars.…` expression empty.
    plain = {k: re.sub(r"\$\{\{\s*(secrets|vars)\.\w+\s*\}\}", "", str(v)) for k, v in workflow["env"].items()}
    assert {k for k, v in plain.items() if v} == {"VOLC_APP_ID", "ZEGO_APP_ID"}
    assert all(workflow["jobs"][job]["needs"] == "validate" for job in ("plan", "apply"))
    sh.copytree(WORKFLOW.parents[1] / "specs", tmp_path / "specs")
    assert not any("secrets." in workflow["env"][k] for k in os.environ if k in workflow["env"])
    result = run_step(workflow_step("validate", "Validate"), tmp_path, plain)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Valid: ")
