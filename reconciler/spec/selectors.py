"""Room selectors (`rooms: {match: class-*}`): which room ids a selector covers, and what it can never match.

A selector covers a room when its id matches one `match` glob and no `exclude` glob. Globs are
`fnmatch`'s, case-sensitive (room ids are): `*` any text (also empty), `?` one character, `[abc]` / `[!abc]`
one of / none of. Whether a room is *active* is not known here: that is run-time knowledge kept in the state
(`reconciler/rooms.py` turns a selector job and the known active rooms into tasks).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Final

from reconciler.spec.models import RoomSelector

__all__ = ["covers", "describe", "every_room", "matches_any", "taken_back", "volc_pattern_problem"]

# What a Volcengine room id may hold (its RoomId rule), plus the glob's own characters.
_VOLC_GLOB_RE: Final = re.compile(r"^[a-zA-Z0-9_@\-\.\*\?\[\]!]{1,128}$")
_VOLC_ID_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_@-.")
_VOLC_RULE: Final = "room ids match [a-zA-Z0-9_@-.]{1,128}"


def matches_any(room: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(room, p) for p in patterns)


def covers(selector: RoomSelector, room: str) -> bool:
    """Whether `selector` covers the room id `room` (matched and not excluded)."""
    return matches_any(room, selector.match) and not matches_any(room, selector.exclude)


def every_room(selector: RoomSelector) -> int | None:
    """The index of a `match` glob by which `selector` covers a room whatever its id, or None: decided by what
    the globs match, not how they are spelled. A room id of a character no glob names (neither as itself nor in
    a set), longer than every glob, stands for a name picked by anyone: `*`, `?*`, `??*`, `[!t]*` match it
    (`??*` misses one-character ids only); `class-*` does not, nor `*` whose `exclude` (`*`, `?*`) takes it."""
    globs = (*selector.match, *selector.exclude)
    anyone = next((c for c in sorted(_VOLC_ID_CHARS) if not any(_names(g, c) for g in globs)), None)
    if anyone is None:
        return None  # every character a room id may hold is named: no id is picked without regard to the globs
    room = anyone * (max(map(len, globs)) + 1)
    if matches_any(room, selector.exclude):
        return None
    return next((i for i, g in enumerate(selector.match) if fnmatchcase(room, g)), None)


def taken_back(glob: str, exclude: Iterable[str]) -> str | None:
    """The `exclude` glob that takes back every room `glob` matches, so that it selects none (`match: class-*`
    with `exclude: class-*`, or `match` and `exclude` swapped: `class-test-*` under `exclude: class-*`), or None.
    Said only when certain: the same glob, one of `*` alone, or a literal prefix (suffix) then `*` (`*` then a
    literal) that `glob`'s own literal start (end) begins (ends) with; other pairs are not decided here."""
    head = _WILD.split(glob, 1)[0]  # the literal text before its first wildcard
    tail = re.split(r"[*?\[\]]", glob)[-1]  # and after its last (a set's `]` too)
    for e in exclude:
        if e == glob or not e.strip("*"):
            return e
        if len(_WILD.split(e.strip("*"))) > 1 or e.count("*") != 1:
            continue  # not a literal with one `*` at an end: not decided
        if (e.endswith("*") and head.startswith(e[:-1])) or (e.startswith("*") and tail.endswith(e[1:])):
            return e
    return None


_WILD: Final = re.compile(r"[*?\[]")


def _names(glob: str, c: str) -> bool:
    """Whether `glob` names the character `c`: as itself, or in a set (one holding it, or one `[!…]` leaving it
    out). Sets read as `fnmatch` reads them (a `[` no `]` closes stands for itself)."""
    i = 0
    while i < len(glob):
        start = i
        if glob[i] == "[":
            first = i + 1 + (glob[i + 1 : i + 2] == "!")
            end = glob.find("]", first + (glob[first : first + 1] == "]"))
            if end != -1:
                token = glob[start : end + 1]
                if fnmatchcase(c, token) != token.startswith("[!"):
                    return True
                i = end + 1
                continue
        if glob[i] == c:
            return True
        i += 1
    return False


def describe(selector: RoomSelector) -> str:
    """`class-* except class-test-*`: how plans and `state list` name a selector."""
    text = ", ".join(selector.match)
    if selector.exclude:
        text += " except " + ", ".join(selector.exclude)
    return text


def volc_pattern_problem(pattern: str) -> str | None:
    """Why a glob can never match a Volcengine room id, or None: a character no room id holds (`a b*`), also
    one that `fnmatch` takes as itself (a `[` no `]` closes, a `]` or `!` outside a set), or a set that holds
    no character a room id may (`[z-a]`). The glob is read as `fnmatch` reads it."""
    if not _VOLC_GLOB_RE.match(pattern):
        return f"can never match a volcengine room id: {_VOLC_RULE} (globs add * ? [ ] !)"
    i = 0
    while i < len(pattern):
        c, i = pattern[i], i + 1
        if c == "[":
            start = i + (pattern[i : i + 1] == "!")  # fnmatch: a leading `]` (after `!`) is one of the set
            end = pattern.find("]", start + (pattern[start : start + 1] == "]"))
            if end < 0:
                return (
                    f"can never match a volcengine room id: no ']' closes its '[' at character {i}, so the '[' "
                    f"stands for itself, and {_VOLC_RULE}"
                )
            if not any(fnmatchcase(ch, pattern[i - 1 : end + 1]) for ch in _VOLC_ID_CHARS):
                return (
                    f"can never match a volcengine room id: its set {pattern[i - 1 : end + 1]} holds none of the "
                    f"characters a room id may ({_VOLC_RULE})"
                )
            i = end + 1
        elif c in "]!":
            return (
                f"can never match a volcengine room id: a '{c}' outside a set [...] stands for itself, and {_VOLC_RULE}"
            )
    return None
