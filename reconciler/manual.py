"""`capctl docs [TOPIC] [SECTION]`: the pages of docs/ read in the terminal, from any installed capctl.

capctl's messages and --help point at docs/NAME.md ("see docs/spec-language.md, Limits"). A checkout has that
directory; a wheel or the image does not, so the same pages ship inside the package: reconciler/docs is a link
to the repository's docs/ (one copy in git), whose files the build copies into the sdist and the wheel. The
reader takes a topic the way the messages spell it (`docs/spec-language.md`, `spec-language.md` or
`spec-language`) and a section by its heading or its anchor, so a message's pointer can be typed as it reads;
the pages' links to each other become the `capctl docs` commands that show them.

setup.py loads this module by its path (at build time capctl is not installed) for the README's links.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

__all__ = ["ManualError", "Page", "completions", "page", "plain_links", "topics"]

HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
# A code span (left as it is: `[a-z]([-a-z0-9]*)` is no link), or a link or image: [text](target).
LINK_OR_CODE = re.compile(r"(`+)[^`\n]*?\1|(!?)\[([^\]\n]*)\]\(([^)\s]+)\)")
# A link to a page of docs/, from README.md (docs/state.md) or from another page (state.md, ../docs/state.md).
PAGE_LINK = re.compile(r"(?:(?:\.\./)?docs/)?([a-z0-9-]+)\.md(?:#(.+))?")


class ManualError(Exception):
    pass


@dataclass(frozen=True)
class Page:
    topic: str
    text: str  # Markdown: the whole page, or one section of it down to the next heading of its level or above


def _pages() -> dict[str, Traversable]:
    folder = files("reconciler") / "docs"
    return {entry.name.removesuffix(".md"): entry for entry in folder.iterdir() if entry.name.endswith(".md")}


def topics() -> dict[str, str]:
    """Every topic and its page's title, in name order."""
    return {name: _title(entry.read_text(encoding="utf-8")) for name, entry in sorted(_pages().items())}


def completions(incomplete: str) -> list[str]:
    """The topics a shell's <Tab> offers for `capctl docs`."""
    return [name for name in topics() if name.startswith(incomplete)]


def plain_links(markdown: str) -> str:
    """The Markdown with its links relative to the repository made text, for where there is no repository
    around it: the terminal, an index's page of the README (setup.py). A link to a page of docs/ names the
    command that shows it, `(capctl docs state backups)`; a picture is left out; links with a scheme stay."""

    def plain(found: re.Match[str]) -> str:
        code, image, text, target = found.groups()
        if code or re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            return found.group(0)
        if image:
            return ""
        if page := PAGE_LINK.fullmatch(target):
            return f"{text} (`capctl docs {' '.join(filter(None, page.groups()))}`)"
        return text

    lines, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if FENCE.match(line):
            fenced = not fenced
        lines.append(line if fenced or FENCE.match(line) else LINK_OR_CODE.sub(plain, line))
    return "".join(lines)


def _title(text: str) -> str:
    for line in text.splitlines():
        if found := HEADING.match(line):
            return found.group(2)
    return ""


def _slug(text: str) -> str:
    """A heading's anchor as GitHub makes it, so a link's `#fragment` names its section too."""
    text = re.sub(r"[^\w\- ]", "", text.strip().lower().lstrip("#"))
    return text.replace(" ", "-")


def page(topic: str, section: str | None = None) -> Page:
    name, _, fragment = topic.partition("#")  # docs/state.md#backups, as the README links it
    name = name.removeprefix("docs/").removesuffix(".md")
    pages = _pages()
    if name not in pages:
        from reconciler.spec.errors import did_you_mean  # here: setup.py loads this module with no capctl installed

        hint = did_you_mean(name, pages)
        listed = ", ".join(sorted(pages))
        raise ManualError(f"no topic {topic!r}{hint}; the topics: {listed} (`capctl docs` lists them)")
    text = pages[name].read_text(encoding="utf-8")
    wanted = section or fragment
    return Page(name, plain_links(_section(text, name, wanted) if wanted else text))


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line number, level, text) of each heading outside fenced code, where `#` starts a comment instead."""
    found, fenced = [], False
    for number, line in enumerate(lines):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (heading := HEADING.match(line)):
            found.append((number, len(heading.group(1)), heading.group(2)))
    return found


def _section(text: str, name: str, wanted: str) -> str:
    """The section whose heading is `wanted` (or its anchor), else the one heading that starts with it:
    "Pruning" is "Pruning and its safeguard" when no other heading starts so."""
    lines = text.splitlines()
    headings = _headings(lines)
    exact = [i for i, (_, _, title) in enumerate(headings) if _slug(title) == _slug(wanted)]
    starting = [i for i, (_, _, title) in enumerate(headings) if _slug(title).startswith(_slug(wanted))]
    if not (found := exact or starting) or len(found) > 1:
        candidates = [headings[i][2] for i in found] or [title for _, level, title in headings if level > 1]
        sections = "; ".join(candidates)
        what = "several sections starting" if found else "no section"
        from reconciler.spec.errors import did_you_mean

        hint = "" if found else did_you_mean(wanted, candidates)
        they = "they" if found else "its sections"
        raise ManualError(f"docs/{name}.md has {what} {wanted!r}{hint}; {they}: {sections}")
    start, level, _ = headings[found[0]]
    end = next((n for n, lvl, _ in headings[found[0] + 1 :] if lvl <= level), len(lines))
    return "\n".join(lines[start:end]).rstrip() + "\n"
