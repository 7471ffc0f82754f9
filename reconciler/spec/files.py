"""Reading a file the user named, without trusting what it is: at most a limit, and only a regular file.

A spec path can be a symlink to `/dev/zero` (endless), a FIFO (a read blocks until a writer comes) or a
device; `Path.read_bytes()` on those exhausted memory or froze the daemon (issue 14). So: `os.stat`
(following symlinks) must say "regular file" before the file is opened, the open is non-blocking so a
FIFO swapped in after the check cannot block it, `fstat` re-checks what was actually opened, and the read
stops at the limit plus one byte, however long the file claims or turns out to be.
"""

from __future__ import annotations

import os
import stat
from typing import Final

__all__ = ["FileRefused", "read_regular", "size_text", "without_newline"]

_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_CHUNK: Final = 1024 * 1024


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
