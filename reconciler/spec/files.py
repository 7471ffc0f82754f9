"""Reading a file the user named, without trusting what it is: at most a limit, and only a regular file.

A spec path can be a symlink to `/dev/zero` (endless), a FIFO (a read blocks until a writer comes) or a
device; `Path.read_bytes()` on those exhausted memory or froze the daemon (issue 14). So: `os.stat`
(following symlinks) must say "regular file" before the file is opened, the open is non-blocking so a
FIFO swapped in after the check cannot block it, `fstat` re-checks what was actually opened, and the read
stops at the limit plus one byte, however long the file claims or turns out to be.

Its text (`utf8_text`) is UTF-8 as editors save it: a leading byte order mark (Notepad's) is no part of it (in a
`{file: ...}` secret it was: every signature made with it failed), and a file in another encoding is named as
such (UTF-16 from PowerShell's `>`, GBK, Latin-1) instead of mis-read or reported as a bare "not UTF-8".
"""

from __future__ import annotations

import codecs
import os
import stat
from typing import Final

__all__ = ["FileRefused", "NotText", "read_regular", "size_text", "utf8_text", "without_newline"]

_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_CHUNK: Final = 1024 * 1024


# UTF-32's marks first: UTF-32 LE's starts as UTF-16 LE's does.
_WIDE_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


class NotText(ValueError):
    """Why bytes are not UTF-8 text (`reason`, to follow "is"), and the offset of the first byte at fault."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason, self.offset = reason, offset


def utf8_text(data: bytes) -> str:
    """`data` as UTF-8 text without a leading byte order mark; else `NotText` saying what it looks like."""
    for bom, name in _WIDE_BOMS:
        if data.startswith(bom):
            raise NotText(f"{name} text (it starts with a {name} byte order mark), not UTF-8", 0)
    head = data[:64]  # UTF-16 without a mark: most of the bytes at odd (LE) or even (BE) offsets are NUL
    if len(head) >= 4 and max(head[0::2].count(0), head[1::2].count(0)) * 4 > len(head):
        raise NotText("UTF-16 text (NUL bytes between its characters), not UTF-8", 0)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        guess = f"byte 0x{data[exc.start]:02X}: Latin-1, GBK or another encoding?"
        raise NotText(f"not valid UTF-8 text ({guess})", exc.start) from None


class FileRefused(Exception):
    """Why a file was not read: `not a regular file (a FIFO)`, `larger than the 4 MiB limit`, or the
    system's error (`No such file or directory`, with `os_error` set)."""

    def __init__(self, message: str, *, os_error: bool = False) -> None:
        super().__init__(message)
        self.os_error = os_error


def size_text(n: int) -> str:
    """`4 MiB`, `64 KiB` or `1000 bytes`: a limit as a person reads it."""
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"not a regular file ({kind})"


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of `path`, a regular file (after symlinks) of at most `limit` bytes; else `FileRefused`."""
    try:
        reason = _not_regular(os.stat(path).st_mode)
        if reason is not None:
            raise FileRefused(reason)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileRefused(exc.strerror or type(exc).__name__, os_error=True) from None
    try:
        reason = _not_regular(os.fstat(fd).st_mode)  # swapped between the stat and the open
        if reason is not None:
            raise FileRefused(reason)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, _CHUNK))):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise FileRefused(exc.strerror or type(exc).__name__, os_error=True) from None
    finally:
        os.close(fd)
    if left <= 0:
        raise FileRefused(f"larger than the {size_text(limit)} limit")
    return b"".join(chunks)


def without_newline(text: str) -> str:
    """`text` without one trailing line break (`\n` or `\r\n`): what `echo` (or `kubectl create secret
    --from-file` of such a file) adds to a secret, which no credential or token holds."""
    return text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
