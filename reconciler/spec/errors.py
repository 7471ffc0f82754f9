"""Spec errors that always say where: every problem found while loading is one `SpecError`.

The loader never stops at the first problem; it collects them in an `ErrorSink` and raises one
`SpecErrors` with all of them, sorted by file, line and column, so a user fixes a spec set in one pass.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from reconciler.redact import shown
from reconciler.secrets import Secret, SecretText

__all__ = [
    "ErrorSink",
    "SpecError",
    "SpecErrors",
    "did_you_mean",
    "did_you_mean_field",
    "dotted",
    "quote",
    "quote_input",
    "shorten",
]

# How much of a value an error message quotes: enough to recognise it, never a whole environment variable.
QUOTE_CHARS: Final = 40


@dataclass(frozen=True, order=True)
class SpecError:
    """One problem at `file:line:col` (1-based). line 0 means the whole file (then `str` is `file: message`)."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class SpecErrors(Exception):
    """Every error found in a spec set, sorted by file, line, column."""

    # The files the set's `{file: …}` references named, read or not (`SpecSet.referenced_files`): one that
    # appears or changes may make the set valid.
    referenced_files: tuple[str, ...] = ()

    def __init__(self, errors: Iterable[SpecError]) -> None:
        self.errors: list[SpecError] = sorted(set(errors))
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


@dataclass
class ErrorSink:
    """Collects errors during one load; `add` takes a position triple so call sites stay short."""

    errors: list[SpecError] = field(default_factory=list)
    # The text a YAML error left unread (from the start of the document it broke to the end of its file): a
    # reference to a name written there is not reported missing, as its document's own error says what to fix.
    unread: list[str] = field(default_factory=list)

    def add(self, where: tuple[str, int, int], message: str) -> None:
        self.errors.append(SpecError(where[0], where[1], where[2], message))

    def withdraw(self, error: SpecError) -> None:
        """Take back an error added, once a later finding explains it better."""
        self.errors.remove(error)

    def __bool__(self) -> bool:
        return bool(self.errors)


def dotted(path: Iterable[str | int]) -> str:
    """`spec.streams[2].user` for the path ("spec", "streams", 2, "user"). A key the user wrote (an unknown
    field, a label, a rateLimits API) is shortened as a quoted value is: a 10,000-character key is no name."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{_key(part)}" if out else _key(str(part)))
    return out


def _key(key: str) -> str:
    """A key as a message shows it: shortened, and escaped when it holds a character that would act on the
    reader's terminal (`spec.x\x1b[2J`), as `quote` escapes a value."""
    return shorten(key if key.isprintable() else key.encode("unicode_escape").decode("ascii"))


def quote(value: object) -> str:
    """A value as an error message may show it: `repr` of at most `QUOTE_CHARS` characters with an ellipsis
    and the full length, and for a secret or a hidden reference value only its fingerprint (no part of it)."""
    if isinstance(value, Secret | SecretText):
        return shown(value)
    if value is None or isinstance(value, bool):  # as the YAML said it (`yes` and `~` read as these too)
        return "null" if value is None else str(value).lower()
    if not isinstance(value, str):
        return shorten(repr(value))
    if len(value) <= QUOTE_CHARS:
        return repr(value)
    return f"{value[:QUOTE_CHARS]!r}… ({len(value)} characters)"


def quote_input(value: object) -> str:
    """`quote(value)` for the value a field was given: a hidden reference's text says what its fingerprint
    stands for (`format: {env: F}` with F=gif said "sha256:53b1… is not allowed", as if written so; walk 53b)."""
    return f"{shown(value)} (the referenced text)" if isinstance(value, SecretText) else quote(value)


def shorten(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text`, or its first `limit` characters, an ellipsis and the full length: what a client sent is
    quoted in an answer or a log line at a bounded size."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for a near miss, else an empty string."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def did_you_mean_field(word: str, fields: Iterable[str]) -> str:
    """The hint for a field name: the one field whose last camelCase words it is (`folder` is `outputFolder`,
    `timeout` is `idleTimeout`, whatever the case), else a near miss. Letters alone would offer `mode` for
    `folder`, the word a plan prints for `outputFolder` (walk 41c). A field but for its case is that field:
    `Whiteboard` is `whiteboard`, not `hasWhiteboard` (walk 42B-4)."""
    names = list(fields)
    ends = [n for n in names if n.lower() == word.lower()] or [n for n in names if _ends_with_words(n, word)]
    return f" (did you mean '{ends[0]}'?)" if len(ends) == 1 else did_you_mean(word, names)


def _ends_with_words(name: str, word: str) -> bool:
    """Whether `word` is `name`'s last camelCase words, not all of them: `Folder` in `outputFolder`."""
    cut = len(name) - len(word)
    return 0 < cut < len(name) and name[cut].isupper() and name[cut:].lower() == word.lower()
