"""The docs against the code: docs/operations.md quotes the errors users meet (each quoted piece must still be
in the code, so a reworded message cannot leave the troubleshooting table describing one nobody sees any
more), every option and failpoint is documented, every `capctl` command a page shows still parses, and the
spec documents the pages show validate as written."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
import typer.main
import yaml
from typer._click.core import Context
from typer._click.exceptions import ClickException, MissingParameter
from typer.exceptions import Exit

from reconciler import failpoints
from reconciler.cli import app
from reconciler.clock import FakeClock
from reconciler.sim import create_app as create_sim_app
from reconciler.spec import load_spec_set
from tests.deploy.daemon_facts import ROOT, http_paths, run_options
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
    [command] = re.findall(r'kubectl exec "\$pod" -c capctl -- python -c "([^"]+)"', guide)
    work.write("jobs.yaml", "apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {name: [broken\n")
    daemon, log = work.run_daemon()
    try:
        check = [sys.executable, "-c", command.replace("http://127.0.0.1:8080", log.url())]
        deadline = time.monotonic() + 60  # each check is a Python start: seconds on a loaded machine
        while True:  # the port answers from its bind; the spec load follows
            out = subprocess.run(check, capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            if "spec set" in out.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert out.stdout.startswith("503 no valid spec set in force: 1 error, first: "), out.stdout
        assert "specs/jobs.yaml:3:18: YAML syntax error" in out.stdout  # where the `[` opened
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


SYNOPSIS = re.compile(r"…|\.\.\.|\w\|\w|\\\||\[[A-Z.-]")  # `[PATH...]`, `bash|zsh`, `[--from URL]`: --help's
SHELL_END = re.compile(r"\s(?:#|\||&&|;|>|2>|<|&\s)|\)")  # a comment, a pipe, a redirection, `<(capctl …)`


def documented_command_lines() -> list[tuple[str, str, bool]]:
    """Each `capctl …` a reader may copy, with where it is and whether it is a whole line: the commands of the
    shell blocks of README.md, docs/*.md and the examples' READMEs (continuations joined, cut at a comment,
    pipe or redirection; in a console block the `$ ` lines; in a plain block the lines that start with a
    command or an option, prompt or not, not its output), and the code spans that name a command in the prose (they may
    leave its arguments out); synopses (`[PATH...]`, `…`, `bash|zsh`) are left to --help."""
    commands = set(every_command()) | {"state"}
    found = []
    for path in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md")), *sorted(ROOT.glob("examples/**/*.md"))]:
        text = path.read_text()
        where = path.relative_to(ROOT).as_posix()
        for language, block in shell_blocks(text):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                if language == "console":
                    line = line[2:] if line.startswith("$ ") else ""
                elif language == "":
                    line = line.removeprefix("$ ")
                    word = line.split()[1] if re.match(r"capctl \S", line) else ""
                    if word not in commands and not word.startswith("-"):
                        continue  # output: `capctl will perform the following actions:`
                start = re.search(r"(?:^|[\s(;|&/])capctl ", line)
                head = re.sub(r"^\((?:umask \d+; )?", "", line)  # `(umask 077; kubectl exec deploy/capctl …)`
                if start is not None and not head.startswith(("#", "docker ", "podman ", "kubectl ")):
                    found.append((where, SHELL_END.split(line[start.end() - 7 :] + " ")[0], True))
        for span in re.findall(r"`(capctl [^`]+)`", text):
            if not SYNOPSIS.search(span):
                found.append((where, SHELL_END.split(span + " ")[0], False))
    return found


def shell_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced blocks of a page that are shell (```sh, ```console, ```bash, or plain ```): language, text."""
    return [(language, block) for language, block in fenced_blocks(text) if language in ("sh", "console", "bash", "")]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block of a page: its language (what follows the opening ```), its text."""
    blocks: list[tuple[str, str]] = []
    opened: str | None = None  # the language of the block being read
    lines: list[str] = []
    for line in text.splitlines(keepends=True):
        fence = line.lstrip().startswith("```")  # a block in a list item is indented
        if fence and opened is None:
            opened, lines = line.strip()[3:], []
        elif fence and opened is not None:
            blocks.append((opened, "".join(lines)))
            opened = None
        else:
            lines.append(line)
    return blocks


def test_the_spec_documents_the_pages_show_validate_together_as_written(tmp_path: Path) -> None:
    """Walk 35c: a reader pastes a page's YAML example into a file. Each ```yaml block of README.md and docs/*.md
    that holds whole documents (a top-level `kind`; fragments such as `spec: {rooms: …}` are not) is written to
    a file as it is, and the files together are one valid set, as `capctl validate` (secrets by shape) reads it:
    an example that lost its `apiVersion`, or names a Provider or Storage no page shows, fails here. The spec
    language's envelope (`spec: {}`, "per kind, below") is the one document left out."""
    written = 0
    for path in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))]:
        for number, (language, block) in enumerate(fenced_blocks(path.read_text())):
            documents = [d for d in yaml.safe_load_all(block) if isinstance(d, dict)] if language == "yaml" else []
            if any("kind" in d for d in documents) and not any(d.get("spec") == {} for d in documents):
                (tmp_path / f"{path.stem}-{number}.yaml").write_text(block)
                written += 1
    assert written >= 5  # README's job, the three Providers, the selector job, the Storage
    spec_set = load_spec_set([tmp_path], env={}, resolve_secrets=False)
    assert "3 providers, 1 storage, 2 jobs" in spec_set.summary()


def test_every_capctl_command_the_docs_show_parses_with_the_current_cli() -> None:
    """A reader copies `capctl state list -s dormant` from a page: each command line shown must still be one
    capctl takes (its command, options and their values, as click parses them, without running anything), so
    an option renamed or removed cannot leave a page showing a command that fails with a usage error."""
    lines = documented_command_lines()
    assert len(lines) > 200
    group = cast(Any, typer.main.get_command(app))
    refused = []
    for where, line, whole in lines:
        try:
            parse_command_line(group, "capctl", shlex.split(line)[1:], None)
        except Exit:
            continue  # --help, --version
        except MissingParameter:
            if whole:
                refused.append(f"{where}: {line!r}: a required argument is missing")
        except (ClickException, ValueError) as exc:
            refused.append(f"{where}: {line!r}: {exc}")
    assert refused == []


def parse_command_line(command: Any, name: str, args: list[str], parent: Context | None) -> None:
    """Parse `args` as click would before running `command`: the options of a group (flags only, as capctl's
    and `state`'s are) up to its first word, the subcommand that word names, and so on down."""
    if not hasattr(command, "commands"):
        command.make_context(name, args, parent=parent)
        return
    first = next((n for n, arg in enumerate(args) if not arg.startswith("-")), len(args))
    # No option before the word: a bare context (click's make_context would take the empty list for --help).
    context = command.make_context(name, args[:first], parent=parent) if first else Context(command, parent, name)
    if first < len(args):
        sub_name, sub, rest = command.resolve_command(context, args[first:])
        parse_command_line(sub, sub_name, rest, context)


def run_in_a_coroutine(code: str, where: str) -> None:
    """Run a page's example, written as a test's body (it awaits at its top level), in a coroutine."""
    namespace: dict[str, Any] = {"__name__": "__doc_example__"}
    exec(compile("async def example():\n" + textwrap.indent(code, "    "), where, "exec"), namespace)
    asyncio.run(namespace["example"]())


def test_the_async_core_example_of_daemon_md_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/daemon.md "For tests: the async core" is a test's body: run in a coroutine, beside the quickstart
    specs, it starts the daemon against the in-process simulator, reloads and stops it (its names imported)."""
    text = (ROOT / "docs" / "daemon.md").read_text()
    code = text[text.index("## For tests: the async core") :].split("```python\n")[1].split("```")[0]
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    run_in_a_coroutine(code, "docs/daemon.md")
    assert (tmp_path / "test-state.db").exists()


def test_the_in_process_example_of_simulator_md_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Walk 35c: docs/simulator.md "From Python, in-process" runs as written in a coroutine: alice's join reaches
    the callback URL it gives, as signed Volcengine room callbacks, and it prints the task list (empty: its
    `...` step is where a provider would start one). Its callbacks are caught here, not sent to 127.0.0.1:8080,
    where a developer's own `capctl run` may listen."""
    import reconciler.sim

    sent: list[tuple[str, dict[str, Any]]] = []

    class Caught:
        async def post(self, url: str, body: bytes) -> int:
            sent.append((url, json.loads(body)))
            return 200

        async def aclose(self) -> None:
            pass

    real = reconciler.sim.create_app
    monkeypatch.setattr(
        reconciler.sim, "create_app", lambda config, clock: real(replace(config, callback_sender=Caught()), clock)
    )
    text = (ROOT / "docs" / "simulator.md").read_text()
    code = text[text.index("From Python, in-process") :].split("```python\n")[1].split("```")[0]
    run_in_a_coroutine(code, "docs/simulator.md")
    assert capsys.readouterr().out == "[]\n"
    events = {body["EventType"] for url, body in sent if url == "http://127.0.0.1:8080/callbacks/volcengine"}
    assert {"UserJoinRoom", "UserVideoStreamStart"} <= events


def test_the_simulators_control_api_block_shows_every_route_and_no_other() -> None:
    """docs/simulator.md's "Control API" block is the reference of `/_sim/`: a `curl … $S/PATH` line per route
    the simulator serves, and none for a route it does not."""
    text = (ROOT / "docs" / "simulator.md").read_text()
    block = text[text.index("## Control API") :].split("```sh\n")[1].split("```")[0]
    documented = {f"/_sim/{path}" for path in re.findall(r"\$S/([a-z/-]+)", block)}
    served = {path for route in create_sim_app(clock=FakeClock()).routes if (path := getattr(route, "path", ""))}
    assert documented == {path for path in served if path.startswith("/_sim/")}


def test_the_daemons_routes_table_lists_every_route_and_no_other() -> None:
    """docs/daemon.md "Routes" has a row for each path `capctl run` serves (each vendor's callback path for
    `/callbacks/{vendor}`), and none for a path it does not."""
    text = (ROOT / "docs" / "daemon.md").read_text()
    table = text[text.index("## Routes") :].split("\n\n")[1]
    documented = set(re.findall(r"`(?:GET|POST) (/[^`]*)`", table))
    vendors = {path.removeprefix("/callbacks/") for path in documented if path.startswith("/callbacks/")}
    assert vendors == {"volcengine", "zego"}
    assert {re.sub(r"^/callbacks/.*", "/callbacks/{vendor}", path) for path in documented} == http_paths()


def test_every_option_a_synopsis_names_is_one_its_command_has() -> None:
    """The synopses the pages give (`capctl plan [PATH...] [--target SEL] [-l/--selector LABELS]`, README's
    command table), which the parse above leaves out, name only options their command has: a removed or renamed
    option cannot stay in them. The `state` row names several subcommands (`… \\| show KEY \\| rm KEY...`)."""
    commands = every_command()
    longest_first = sorted(commands, key=len, reverse=True)
    named, unknown = 0, []
    for path in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))]:
        for span in re.findall(r"`capctl ([^`]+)`", path.read_text()):
            if not SYNOPSIS.search(span):
                continue
            for part in re.split(r"\s\\\|\s(?=(?:show|rm|import|init|copy|list)\b)", span):
                part = part if part.startswith("state ") or part == span else f"state {part}"
                command = next((c for c in longest_first if part == c or part.startswith(f"{c} ")), None)
                if command is None:
                    continue
                options = {o for param in commands[command].params for o in (*param.opts, *param.secondary_opts)}
                for option in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", part[len(command) :]):
                    named += 1
                    if option not in options:
                        unknown.append(f"{path.name}: `capctl {span}`: {option}")
    assert named > 40
    assert unknown == []


def test_the_python_example_of_spec_language_md_prints_what_its_comment_says(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/spec-language.md's "From Python" example, run in a checkout, prints the quickstart set's summary
    that its last comment gives."""
    code = (ROOT / "docs" / "spec-language.md").read_text().split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(ROOT)
    exec(compile(code, "docs/spec-language.md", "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out == code.rstrip().rsplit("# ", 1)[1] + "\n"


def test_the_daemon_flags_table_gives_each_options_default() -> None:
    """docs/daemon.md "Flags": a default written as a literal (`30s`, `50`) is the option's default in the code."""
    text = (ROOT / "docs" / "daemon.md").read_text()
    table = text[text.index("## Flags") : text.index("## How it works")]
    options = run_options()
    compared = []
    for row in table.splitlines():
        if not row.startswith("| `--"):
            continue
        flag, default = row.split(" | ")[:2]
        literal = re.fullmatch(r"`([^`]+)`", default)
        param = options[re.findall(r"--[a-z-]+", flag)[0]]
        if literal and param.default is not None:
            value = param.default
            compared.append((literal[1], f"{value:g}" if isinstance(value, float) else str(value)))
    assert len(compared) >= 10
    assert [documented for documented, _ in compared] == [in_code for _, in_code in compared]


MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


@functools.cache
def github_anchors(page: Path) -> set[str]:
    """The anchors GitHub makes of a page's headings: lower case, punctuation but `-` and `_` dropped, each
    space a `-` (headings inside fenced code are none)."""
    anchors, fenced = set(), False
    for line in page.read_text().splitlines():
        fenced ^= line.startswith("```")
        if not fenced and (heading := re.match(r"#+ (.+)", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def test_every_relative_link_and_anchor_of_the_pages_leads_somewhere() -> None:
    """A link to a file of the repository or to a section (`operations.md#install`, `#deploying`,
    `../README.md#plans`) must find it: `capctl docs` checks the links to docs/ pages it ships, not those to
    the README, bench/README.md, examples/ or a page's own sections, which a renamed heading breaks silently."""
    pages = [ROOT / "README.md", ROOT / "bench" / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("examples/**/*.md")]
    broken, checked = [], 0
    for page in pages:
        prose = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
        for link in MARKDOWN_LINK.findall(prose):
            if re.match(r"[a-z]+:", link):
                continue  # https:, mailto:
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            checked += 1
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}: no such file")
            elif anchor and (target.suffix != ".md" or anchor not in github_anchors(target)):
                broken.append(f"{page.relative_to(ROOT)}: {link}: no such section")
    assert checked > 150
    assert broken == []


def test_the_pull_request_guide_names_every_input_and_output_of_the_action() -> None:
    """operations.md, "Plans in pull requests", is where a reader learns the action: an input added to
    action.yml (walk 20E: five of six were named only there) must be named on the page too."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("## Plans in pull requests") : text.index("## Dashboard and alerts")]
    named = [*action["inputs"], *action["outputs"]]
    assert len(named) >= 8
    assert [name for name in named if f"`{name}`" not in section] == []
