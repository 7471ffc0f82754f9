"""docs/operations.md quotes the errors users meet: each quoted piece must still be in the code, so a reworded
message cannot leave the troubleshooting table describing one nobody sees any more."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import typer.main

from reconciler import failpoints
from reconciler.cli import app
from tests.deploy.daemon_facts import ROOT, run_options
from tests.e2e.conftest import Workdir

CODE_SPAN = re.compile(r"``\s?(.+?)\s?``|`([^`]+)`")


def troubleshooting_quotes() -> list[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text[text.index("## Troubleshooting") :]
    quotes = []
    for row in table.splitlines():
        if row.startswith("| ") and not row.startswith(("| you see", "|---")):
            first_cell = row.split(" | ")[0]
            quotes += [a or b for a, b in CODE_SPAN.findall(first_cell)]
    return quotes


def test_every_quoted_message_is_in_the_code() -> None:
    sources = "\n".join(p.read_text() for p in [*ROOT.glob("reconciler/**/*.py"), *ROOT.glob("action/*.py")])
    quotes = troubleshooting_quotes()
    assert len(quotes) > 15
    missing = []
    for quote in quotes:
        if quote.startswith(("capctl ", "capctl_")):
            continue  # a command or a metric the row names, not a message
        for piece in quote.split("…"):
            piece = piece.strip(" '\"():;,.")
            if len(piece) >= 8 and piece not in sources:
                missing.append(f"{piece!r} (from {quote!r})")
    assert missing == []


def test_the_daemon_flags_table_lists_every_option_of_capctl_run() -> None:
    """docs/daemon.md "Flags" is where `capctl run`'s options are described: each one (by any spelling) is
    a row there, and each row names an option the command has."""
    text = (ROOT / "docs" / "daemon.md").read_text()
    table = text[text.index("## Flags") : text.index("## How it works")]
    documented = {
        flag
        for row in table.splitlines()
        if row.startswith("| `")
        for flag in re.findall(r"--[a-z-]+", row.split(" | ")[0])
    }
    params = {id(p): p for p in run_options().values() if p.param_type_name == "option" and p.name != "help"}.values()
    missing = [p.opts[0] for p in params if not documented & {*p.opts, *p.secondary_opts}]
    unknown = documented - set(run_options())
    assert (missing, unknown) == ([], set())


def test_every_failpoint_is_documented_and_every_documented_one_exists() -> None:
    """docs/failure-modes.md's crash table (and README's CAPCTL_FAILPOINTS row) name each `failpoints.hit` point
    of the code, and no other: a point added without its row, or a row left after its point, fails here."""
    sources = "\n".join(p.read_text() for p in ROOT.glob("reconciler/**/*.py"))
    in_code = set(re.findall(r'failpoints\.hit\("([a-z.-]+)"\)', sources))
    text = (ROOT / "docs" / "failure-modes.md").read_text()
    table = text[text.index("## A process killed between") :].split("\n## ")[0]
    documented = {row.split(" | ")[0].strip("| `") for row in table.splitlines() if row.startswith("| `")}
    readme = next(line for line in (ROOT / "README.md").read_text().splitlines() if "`CAPCTL_FAILPOINTS`" in line)
    state_only = {"state-copy.records-written", "state-upgrade.rooms-written"}  # no vendor call near them
    assert in_code - state_only == documented
    assert in_code == failpoints.POINTS  # the names CAPCTL_FAILPOINTS takes (any other is refused)
    assert in_code <= set(re.findall(r"`([a-z]+[a-z-]*\.[a-z-]+)`", readme))


def every_command() -> dict[str, Any]:
    """Each command capctl has, by how it is typed (`plan`, `state copy`), to its click command."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: str) -> None:
        for name, sub in command.commands.items():
            if hasattr(sub, "commands"):
                walk(sub, f"{path}{name} ")
            else:
                found[f"{path}{name}"] = sub

    walk(cast(Any, typer.main.get_command(app)), "")
    return found


def test_every_long_option_of_every_command_is_documented() -> None:
    """Each option --help shows is named in README.md or docs/*.md (by one of its long spellings): an option
    added without a word of documentation, or only ever written by its short form (`-l`), fails here."""
    docs = "\n".join(p.read_text() for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")])
    named = set(re.findall(r"--[a-z][a-z-]*", docs))
    missing = [
        f"capctl {path} {param.opts[0]}"
        for path, command in every_command().items()
        for param in command.params
        if param.param_type_name == "option"
        and not named & {o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")}
    ]
    assert missing == []
    assert {"--selector", "--output"} <= named  # spelt out since walk 5g (README knew only -l and -o)


def test_the_readme_commands_table_names_every_command_and_no_other() -> None:
    """README's "Commands" table is what `capctl --help` lists: a row per command (the `state` row names its
    subcommands), none for a command that does not exist."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Commands") : text.index("`PATH` defaults to")]
    firsts = [row.split(" | ")[0] for row in table.splitlines() if row.startswith("| `capctl ")]
    documented = set()
    for first in firsts:
        command = re.match(r"\| `capctl (state [a-z]+|[a-z]+)", first)
        assert command is not None, first
        documented.add(command[1])
        if command[1] == "state list":  # `state list … \| show KEY \| rm KEY \| init`
            documented |= {f"state {name}" for name in re.findall(r"\\\| ([a-z]+)", first)}
    assert documented == set(every_command())


def test_the_install_guides_readiness_check_prints_why_a_pod_is_not_ready(work: Workdir) -> None:
    """Install step 4's one-liner, run in the pod, is what an operator reads a 503's reason in: `urlopen` raised
    `HTTP Error 503: Service Unavailable` and dropped the body that says why (here: the specs do not load)."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    [command] = re.findall(r'kubectl exec deploy/capctl -c capctl -- python -c "([^"]+)"', guide)
    work.write("jobs.yaml", "apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {name: [broken\n")
    daemon, log = work.run_daemon()
    try:
        check = [sys.executable, "-c", command.replace("http://127.0.0.1:8080", log.url())]
        deadline = time.monotonic() + 10
        while True:  # the port answers from its bind; the spec load follows
            out = subprocess.run(check, capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            if "spec set" in out.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert out.stdout.startswith("503 no valid spec set in force: 1 error, first: "), out.stdout
        assert "specs/jobs.yaml:4:1: YAML syntax error" in out.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def test_the_install_guides_credentials_secret_holds_every_variable_the_example_specs_need(tmp_path: Path) -> None:
    """Install step 2 creates `capctl-credentials` for examples/specs: it held two of their nine variables, and a
    pod missing one stays unready. Its listing command, run as the guide says, names exactly those nine."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    create = guide[guide.index("kubectl create secret generic capctl-credentials") :].split("\n   kubectl", 1)[0]
    in_secret = set(re.findall(r"--from-literal=([A-Z0-9_]+)=", create))
    [listing] = re.findall(r'^   (env -i "\$\(command -v capctl\)" .*)$', guide, re.M)
    (tmp_path / "specs").symlink_to(ROOT / "examples" / "specs")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    out = subprocess.run(["bash", "-c", listing], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    named = set(re.findall(r"environment variable ([A-Z0-9_]+) is not set", out.stdout + out.stderr))
    assert out.returncode == 1 and len(named) == 9, out.stdout + out.stderr
    assert in_secret == named
