"""`capctl docs`: the pages of docs/ shipped in the package, read as the messages and links point at them.

An installed capctl has no docs/ beside it: each pointer the code gives ("docs/spec-language.md, Limits") and
each link between the pages must be a `capctl docs` command that shows its page and section.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.manual import ManualError, completions, page, plain_links, topics
from tests.deploy.daemon_facts import ROOT

POINTER = re.compile(r'docs/([a-z-]+)\.md(?:,\s+"([^"]+)"|, ([A-Z][a-z]+)\b)?')


def test_every_page_and_section_the_code_points_at_is_one_capctl_docs_shows() -> None:
    """Messages, --help and comments say "docs/spec-language.md, Limits": an installed capctl has no docs/, so
    `capctl docs spec-language Limits` must show that page and section (its pages are the package's). The pages
    point the same way (`docs/daemon.md, "Re-issue policy"`), so theirs must resolve too (walk 35c: two named
    a bold item, "Rooms known empty", that no `capctl docs` section is). So do the comments of the examples, the
    deploy kit, the action and the Dockerfile a reader copies, and the docstrings of the tests and benchmarks
    (walk 58d: two named sections that had been renamed, "The host's clock steps")."""
    assert set(topics()) == {p.stem for p in (ROOT / "docs").glob("*.md")}
    pages = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("bench/*.md")]
    kit = [
        p
        for where in ("examples", "deploy", "action")
        for p in (ROOT / where).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    code = [*ROOT.glob("reconciler/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/*.py")]
    sources = [*code, *pages, *kit, ROOT / "action.yml", ROOT / "Dockerfile"]
    pointers = {m.groups() for p in sources for m in POINTER.finditer(p.read_text())}
    assert len(pointers) > 25
    unresolved = []
    for name, quoted, word in sorted(pointers, key=str):
        try:
            page(name, quoted or word)
        except ManualError as exc:
            unresolved.append(str(exc))
    assert unresolved == []


def test_capctl_docs_takes_a_page_and_a_section_as_messages_and_links_spell_them() -> None:
    assert page("docs/spec-language.md#limits").text.startswith("### Limits\n")
    assert page("spec-language.md", "limits").text == page("spec-language", "Limits").text
    # A `#` line in fenced code is a YAML comment, not a heading that would end the section.
    assert "# yaml-language-server: $schema=" in page("spec-language", "Editor set-up").text
    assert page("daemon", "Pruning").text.startswith("### Pruning and its safeguard\n")  # the one heading so begun
    with pytest.raises(ManualError, match="several sections starting 'How'; they: How it works; How long"):
        page("daemon", "How")
    with pytest.raises(
        ManualError, match=r"no topic 'daemon\.txt' \(did you mean 'daemon'\?\); the topics: architecture, "
    ):
        page("daemon.txt")
    # A misspelt name gets the nearest as the spec's errors do (walk 14b); a name near none, the list alone.
    with pytest.raises(ManualError, match=r"no topic 'statuspage' \(did you mean 'status-page'\?\); the topics: "):
        page("statuspage")
    with pytest.raises(ManualError, match=r"has no section 'Limitz' \(did you mean 'Limits'\?\); its sections: "):
        page("spec-language", "Limitz")
    assert completions("sp") == ["spec-language"]


def test_the_links_of_the_pages_and_the_readme_become_capctl_docs_commands_that_work() -> None:
    """Without a repository around them (the terminal, an index's page of the README), a link to a page of
    docs/ names the `capctl docs` command that shows it: each command named must show its page and section."""
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


def test_capctl_docs_lists_its_topics_and_prints_a_page_as_is_into_a_pipe() -> None:
    def docs(*args: str) -> str:
        command = [sys.executable, "-m", "reconciler", "docs", *args]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout

    listing = docs()
    assert listing.startswith("TOPICS (capctl docs TOPIC [SECTION] to read one):\n")
    assert [line.split()[0] for line in listing.splitlines()[1:] if line] == list(topics())
    assert docs("state", "Backups") == page("state", "Backups").text  # the markdown, not rich's rendering


def test_capctl_docs_on_a_terminal_goes_through_the_pager_and_says_when_there_is_none(tmp_path: Path) -> None:
    """On a terminal, the page formatted, through PAGER (run by the shell, as git does); a PAGER that is not
    there is an error saying so (it was exit 0 with nothing shown). Not pydoc's pager, which in the image
    (no less) first showed a blank `--More--(END)` screen."""

    def on_a_terminal(pager: str, **locale: str) -> subprocess.CompletedProcess[str]:
        main, terminal = pty.openpty()
        try:
            env = {**os.environ, "PAGER": pager, "NO_COLOR": "1", "COLUMNS": "100", **locale}
            command = [sys.executable, "-m", "reconciler", "docs", "state", "Backups"]
            return subprocess.run(command, stdout=terminal, stderr=subprocess.PIPE, text=True, env=env, timeout=60)
        finally:
            os.close(main)
            os.close(terminal)

    shown = tmp_path / "shown"
    assert on_a_terminal(f"cat > {shown}").returncode == 0
    page = shown.read_text()
    assert page.splitlines()[0].strip() == "Backups" and "• SQLite: copy the database" in page, page
    # Walk 16B-7: a C locale without Python's UTF-8 mode fed the pager strictly in ASCII: a traceback at `…`.
    assert on_a_terminal(f"cat > {shown}", LC_ALL="C", PYTHONUTF8="0").returncode == 0
    assert shown.read_bytes().isascii() and "Backups" in shown.read_text()
    missing = on_a_terminal("no-such-pager-here")
    assert missing.returncode == 1
    assert "Error: docs: the pager 'no-such-pager-here' (PAGER) was not found" in missing.stderr
