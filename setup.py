"""The one field of the package's metadata that pyproject.toml cannot state: the long description.

It is README.md, whose links are relative to the repository (docs/state.md, Dockerfile, #deploying). An index
shows it on a page of its own, where a relative link leads nowhere and no project URL is published to make it
absolute; so each such link becomes its text, and a link to a docs/ page also names `capctl docs PAGE`, which
shows that page from the package. Links with a scheme stay links.
"""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import setup

LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\s]+)\)")
DOCS_PAGE = re.compile(r"docs/([a-z0-9-]+)\.md(?:#.*)?")


def _plain(link: re.Match[str]) -> str:
    image, text, target = link.groups()
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
        return link.group(0)
    if image:  # a picture of the repository's: there is none to show
        return ""
    page = DOCS_PAGE.fullmatch(target)
    return f"{text} (`capctl docs {page.group(1)}`)" if page else text


def long_description(readme: str) -> str:
    return LINK.sub(_plain, readme)


setup(
    long_description=long_description(Path(__file__).with_name("README.md").read_text(encoding="utf-8")),
    long_description_content_type="text/markdown",
)
