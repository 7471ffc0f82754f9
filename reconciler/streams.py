"""stdout and stderr as scripts and odd terminals meet them: a reader that leaves early, a narrow encoding.

`capctl plan | head -3`: the reader closes the pipe while capctl still writes. A CI script tests capctl's
exit code (0, 2 for changes with --detailed-exitcode, 1 for an error; GitHub Actions runs bash with
pipefail), so a closed pipe must change neither that code nor what an apply does: what is left to print
is dropped, and the command finishes as it would have. (click's own handling exits 1 on the spot.) The same
for a terminal that hangs up (EIO): an apply stopped by SIGHUP still finishes its changes in flight. Any other
failure to write (a full or failing disk under `> file`) drops the rest too, so the command still finishes what
it does, but it is no success: `cli.main` says it in one line and exits 1 (`output_failure`).

`PYTHONIOENCODING=ascii` or a latin-1 terminal cannot encode the glyphs of plans and summaries (→ · ↻ …):
they are spelled in ASCII, any other character escaped (`\\u5927`), instead of a UnicodeEncodeError. JSON
to such a stream is all ASCII (`\\u` escapes, as `json.dumps` makes them): the spelling above would change
its strings (`→` as `->`) or break it (`\\U0001f389` is no JSON escape), and JSON is UTF-8 (RFC 8259), so
a latin-1 `é` would be mojibake to every reader of the file.

JSON documents of 50,000 tasks (`state list -o json`, a plan) are written as they are encoded (`write_json`):
`json.dumps(indent=2)` held every piece of the text at once, 760 MB for a 80 MB listing.
"""

from __future__ import annotations

import codecs
import errno
import io
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

__all__ = ["GLYPH_ERRORS", "install", "json_dumps_for", "output_failure", "terminal_bytes", "write_json"]

GLYPH_ERRORS = "capctl-glyphs"  # the codec error handler that spells glyphs in ASCII

_ASCII = {
    "→": "->",
    "…": "...",
    "×": "x",
    "≤": "<=",
    "≥": ">=",
    "·": "-",
    "÷": "/",
    "µ": "u",
    "↻": "^",
    "—": "-",
    "–": "-",
    "±": "+/-",
    "✗": "x",
    "✓": "v",
    "│": "|",
    "▶": ">",
    "•": "*",  # rich's Markdown bullets: `capctl docs` on such a terminal had `\u2022` at each
}


def _spell(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start : error.end]
    return "".join(_ASCII.get(c) or c.encode("ascii", "backslashreplace").decode() for c in text), error.end


# Why stdout or stderr could not be written (a full disk, a failing one), once that happened: `output_failure`.
_failed: list[str] = []


def terminal_bytes(text: str, stream: TextIO) -> bytes:
    """`text` as `stream` would write it, glyphs spelled as above: for a pager between capctl and the terminal
    (`capctl docs`), which `subprocess` fed in the locale's encoding, strict (a traceback under `LC_ALL=C
    PYTHONUTF8=0`)."""
    codecs.register_error(GLYPH_ERRORS, _spell)
    return text.encode(getattr(stream, "encoding", None) or "utf-8", GLYPH_ERRORS)


def output_failure() -> str | None:
    """Why the output is incomplete (its stream failed as no reader leaving makes it fail), or None. The
    command went on (an apply's changes are not cut short by its log's disk); `cli.main` then exits 1."""
    return _failed[0] if _failed else None


class _Output(io.TextIOWrapper):
    """A standard stream that, once its reader is gone, sends the rest to /dev/null instead of raising."""

    # Whether it was a terminal when capctl started (`_wrapped`): one that hung up no longer says it is.
    terminal = False

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError as exc:
            self._reader_gone(exc)
            return len(text)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            self._reader_gone(exc)

    def _reader_gone(self, exc: OSError) -> None:
        """A closed pipe, or a terminal that hung up (its window closed, its ssh session dropped: SIGHUP, and
        then every write fails with EIO while an apply finishes its changes in flight): the bytes still
        buffered, and everything after them, go to /dev/null through the same descriptor. Anything else is
        kept for `output_failure`, EIO from a file too (a failing disk: `> backup.json` cut short must not exit
        0), and the rest dropped all the same (the command finishes what it does)."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.fileno())
        finally:
            os.close(devnull)
        if not (exc.errno == errno.EPIPE or (exc.errno == errno.EIO and self.terminal)):
            where = str(self.name).strip("<>")
            _failed.append(f"cannot write to {where}: {exc.strerror or exc}; the output is incomplete")


class _AsciiOutput(_Output):
    """An ASCII stream, which click takes for a misconfigured locale: it wrote UTF-8 to the stream's binary
    buffer instead (`typer.echo`), past the glyph spelling and the closed-pipe handling. Offered no buffer,
    click writes here as rich does."""

    @property
    def buffer(self) -> None:  # type: ignore[override]
        return None


def _wrapped(stream: io.TextIOWrapper) -> io.TextIOWrapper:
    errors = stream.errors
    codec = codecs.lookup(stream.encoding).name
    if codec != "utf-8":
        errors = GLYPH_ERRORS
    line_buffering, write_through = stream.line_buffering, stream.write_through
    encoding, terminal = stream.encoding, stream.isatty()
    wrapped = (_AsciiOutput if codec == "ascii" else _Output)(
        stream.detach(),
        encoding=encoding,
        errors=errors,
        line_buffering=line_buffering,
        write_through=write_through,
    )
    wrapped.terminal = terminal
    return wrapped


def install() -> None:
    """Make sys.stdout and sys.stderr survive a closed pipe and a narrow encoding (once, at startup)."""
    codecs.register_error(GLYPH_ERRORS, _spell)
    if isinstance(sys.stdout, io.TextIOWrapper) and not isinstance(sys.stdout, _Output):
        sys.stdout = _wrapped(sys.stdout)
    if isinstance(sys.stderr, io.TextIOWrapper) and not isinstance(sys.stderr, _Output):
        sys.stderr = _wrapped(sys.stderr)


# What `json.dumps(ensure_ascii=False)` leaves raw and a terminal must not get raw: DEL, C1 controls, a
# bidirectional override, a zero-width character (it escapes C0 controls itself; a newline here is layout).
_UNPRINTABLE_RE = re.compile(r"[^\x20-\x7e\n]")


def _readable(text: str) -> str:
    """JSON text made by `json.dumps(..., ensure_ascii=False)`, with each character `str.isprintable` refuses
    escaped (`\\u202e`): a CJK room id reads as itself (`\\u76f4\\u64ad` was unreadable), and nothing in a vendor's
    text can reorder or redraw the reader's terminal. Both spellings are the same JSON."""
    return _UNPRINTABLE_RE.sub(lambda m: m.group() if m.group().isprintable() else json.dumps(m.group())[1:-1], text)


def _encodes_utf8(out: TextIO) -> bool:
    encoding = getattr(out, "encoding", None)
    return encoding is None or codecs.lookup(encoding).name == "utf-8"


def json_dumps_for(out: TextIO) -> Callable[..., str]:
    """`json.dumps` as `out` takes it: readable text (as `_readable`) where it encodes UTF-8, else ASCII. For
    the daemon's JSON log lines: `kubectl logs | grep 教室-101` found nothing in `\\u6559\\u5ba4-101`."""
    if not _encodes_utf8(out):
        return json.dumps
    return lambda value, **options: _readable(json.dumps(value, ensure_ascii=False, **options))


def write_json(data: Mapping[str, Any], out: TextIO, *, text: Literal["utf-8", "readable"]) -> None:
    """`json.dumps(data, indent=2, ensure_ascii=False)` and a newline, the same text, written to `out` a top-level
    list item at a time: only one task (or change) is held as text at once. `text="utf-8"` (a file capctl reads
    back) writes every character as itself; `"readable"` (what a person may read: stdout) escapes those a
    terminal must not get raw (`_readable`). A stream that does not encode UTF-8 (`PYTHONIOENCODING=ascii`,
    latin-1) gets ASCII JSON, as the module says."""
    ascii_only = not _encodes_utf8(out)

    def dumped(value: Any, **options: Any) -> str:
        said = json.dumps(value, ensure_ascii=ascii_only, **options)
        return _readable(said) if text == "readable" and not ascii_only else said

    def encoded(value: Any, depth: int) -> str:
        return dumped(value, indent=2).replace("\n", "\n" + "  " * depth)

    out.write("{")
    for n, (key, value) in enumerate(data.items()):
        out.write(f"{',' if n else ''}\n  {dumped(key)}: ")
        if isinstance(value, list) and value:
            out.write("[")
            for m, item in enumerate(value):
                out.write(f"{',' if m else ''}\n    {encoded(item, 2)}")
            out.write("\n  ]")
        else:
            out.write(encoded(value, 1))
    out.write("\n}\n" if data else "}\n")
