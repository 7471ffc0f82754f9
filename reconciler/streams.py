"""stdout and stderr as scripts and odd terminals meet them: a reader that leaves early, a narrow encoding.

`capctl plan | head -3`: the reader closes the pipe while capctl still writes. A CI script tests capctl's
exit code (0, 2 for changes with --detailed-exitcode, 1 for an error; GitHub Actions runs bash with
pipefail), so a closed pipe must change neither that code nor what an apply does: what is left to print
is dropped, and the command finishes as it would have. (click's own handling exits 1 on the spot.)

`PYTHONIOENCODING=ascii` or a latin-1 terminal cannot encode the glyphs of plans and summaries (→ · ↻ …):
they are spelled in ASCII, any other character escaped (`\\u5927`), instead of a UnicodeEncodeError.
"""

from __future__ import annotations

import codecs
import io
import os
import sys

__all__ = ["GLYPH_ERRORS", "install"]

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
}


def _spell(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start : error.end]
    return "".join(_ASCII.get(c) or c.encode("ascii", "backslashreplace").decode() for c in text), error.end


class _Output(io.TextIOWrapper):
    """A standard stream that, once its reader is gone, sends the rest to /dev/null instead of raising."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            super().flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        # The bytes still buffered, and everything after them, go to /dev/null through the same descriptor.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.fileno())
        finally:
            os.close(devnull)


def _wrapped(stream: io.TextIOWrapper) -> io.TextIOWrapper:
    errors = stream.errors
    if codecs.lookup(stream.encoding).name != "utf-8":
        errors = GLYPH_ERRORS
    line_buffering, write_through = stream.line_buffering, stream.write_through
    encoding = stream.encoding
    return _Output(
        stream.detach(),
        encoding=encoding,
        errors=errors,
        line_buffering=line_buffering,
        write_through=write_through,
    )


def install() -> None:
    """Make sys.stdout and sys.stderr survive a closed pipe and a narrow encoding (once, at startup)."""
    codecs.register_error(GLYPH_ERRORS, _spell)
    if isinstance(sys.stdout, io.TextIOWrapper) and not isinstance(sys.stdout, _Output):
        sys.stdout = _wrapped(sys.stdout)
    if isinstance(sys.stderr, io.TextIOWrapper) and not isinstance(sys.stderr, _Output):
        sys.stderr = _wrapped(sys.stderr)
