"""docs/operations.md quotes the errors users meet: each quoted piece must still be in the code, so a reworded
message cannot leave the troubleshooting table describing one nobody sees any more."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import failpoints
from tests.deploy.daemon_facts import ROOT, run_options

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


POINTER = re.compile(r'docs/([a-z-]+)\.md(?:,\s+"([^"]+)"|, ([A-Z][a-z]+)\b)?')


def test_every_page_and_section_the_code_points_at_is_one_capctl_docs_shows() -> None:
    """Messages, --help and comments say "docs/spec-language.md, Limits": an installed capctl has no docs/, so
    `capctl docs spec-language Limits` must show that page and section (its pages are the package's)."""
    from reconciler.manual import ManualError, page, topics

    assert set(topics()) == {p.stem for p in (ROOT / "docs").glob("*.md")}
    pointers = {m.groups() for p in ROOT.glob("reconciler/**/*.py") for m in POINTER.finditer(p.read_text())}
    assert len(pointers) > 15
    unresolved = []
    for name, quoted, word in sorted(pointers, key=str):
        try:
            page(name, quoted or word)
        except ManualError as exc:
            unresolved.append(str(exc))
    assert unresolved == []


def test_capctl_docs_takes_a_page_and_a_section_as_messages_and_links_spell_them() -> None:
    from reconciler.manual import ManualError, completions, page

    assert page("docs/spec-language.md#limits").text.startswith("### Limits\n")
    assert page("spec-language.md", "limits").text == page("spec-language", "Limits").text
    # A `#` line in fenced code is a YAML comment, not a heading that would end the section.
    assert "# yaml-language-server: $schema=" in page("spec-language", "Editor set-up").text
    assert page("daemon", "Pruning").text.startswith("### Pruning and its safeguard\n")  # the one heading so begun
    with pytest.raises(ManualError, match="several sections starting 'How'; they: How it works; How long"):
        page("daemon", "How")
    with pytest.raises(ManualError, match=r"no topic 'daemon\.txt'; the topics: architecture, daemon, "):
        page("daemon.txt")
    assert completions("sp") == ["spec-language"]


def test_the_links_of_the_pages_and_the_readme_become_capctl_docs_commands_that_work() -> None:
    """Without a repository around them (the terminal, an index's page of the README), a link to a page of
    docs/ names the `capctl docs` command that shows it: each command named must show its page and section."""
    from reconciler.manual import page, plain_links, topics

    tombstones = page("state", "Tombstones").text
    assert (
        "[daemon.md](" not in tombstones and "daemon.md (`capctl docs daemon pruning-and-its-safeguard`)" in tombstones
    )
    assert "# [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63" in page("spec-language").text  # code, not a link
    texts = [page(name).text for name in topics()] + [plain_links((ROOT / "README.md").read_text())]
    commands = {found for text in texts for found in re.findall(r"\(`capctl docs ([a-z0-9-]+)(?: (\S+))?`\)", text)}
    assert len(commands) > 30
    for name, section in sorted(commands):
        page(name, section or None)  # raises ManualError, naming the page and its sections, on a broken link


def test_capctl_docs_on_a_terminal_goes_through_the_pager_and_says_when_there_is_none(tmp_path: Path) -> None:
    """On a terminal, the page formatted, through PAGER (run by the shell, as git does); a PAGER that is not
    there is an error saying so (it was exit 0 with nothing shown). Not pydoc's pager, which in the image
    (no less) first showed a blank `--More--(END)` screen."""

    def on_a_terminal(pager: str) -> subprocess.CompletedProcess[str]:
        main, terminal = pty.openpty()
        try:
            env = {**os.environ, "PAGER": pager, "NO_COLOR": "1", "COLUMNS": "100"}
            command = [sys.executable, "-m", "reconciler", "docs", "state", "Backups"]
            return subprocess.run(command, stdout=terminal, stderr=subprocess.PIPE, text=True, env=env, timeout=60)
        finally:
            os.close(main)
            os.close(terminal)

    shown = tmp_path / "shown"
    assert on_a_terminal(f"cat > {shown}").returncode == 0
    page = shown.read_text()
    assert page.splitlines()[0].strip() == "Backups" and "• SQLite: copy the database" in page, page
    missing = on_a_terminal("no-such-pager-here")
    assert missing.returncode == 1
    assert "Error: docs: the pager 'no-such-pager-here' (PAGER) was not found" in missing.stderr
