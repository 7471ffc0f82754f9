"""Room selectors (`rooms: {match: class-*}`): which room ids a selector covers, and what it can never match.

A selector covers a room when its id matches one `match` glob and no `exclude` glob. Globs are
`fnmatch`'s, case-sensitive (room ids are): `*` any text (also empty), `?` one character, `[abc]` / `[!abc]`
one of / none of. Whether a room is *active* is not known here: that is run-time knowledge kept in the state
(`reconciler/rooms.py` turns a selector job and the known active rooms into tasks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Final

from reconciler.spec.models import RoomSelector

__all__ = ["covers", "describe", "matches_any", "volc_pattern_problem"]

# What a Volcengine room id may hold (its RoomId rule), plus the glob's own characters.
_VOLC_GLOB_RE: Final = re.compile(r"^[a-zA-Z0-9_@\-\.\*\?\[\]!]{1,128}$")


def matches_any(room: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(room, p) for p in patterns)


def covers(selector: RoomSelector, room: str) -> bool:
    """Whether `selector` covers the room id `room` (matched and not excluded)."""
    return matches_any(room, selector.match) and not matches_any(room, selector.exclude)


def describe(selector: RoomSelector) -> str:
    """`class-* except class-test-*`: how plans and `state list` name a selector."""
    text = ", ".join(selector.match)
    if selector.exclude:
        text += " except " + ", ".join(selector.exclude)
    return text


def volc_pattern_problem(pattern: str) -> str | None:
    """Why a glob can never match a Volcengine room id, or None."""
    if _VOLC_GLOB_RE.match(pattern):
        return None
    return "can never match a volcengine room id: room ids match [a-zA-Z0-9_@-.]{1,128} (globs add * ? [ ] !)"
