"""Starting `capctl sim` and `capctl run` processes on port 0 and learning the port each one got.

Asking the kernel for a free port and passing it on races every other process on the machine (two test
workers can be handed the same one); a server bound to port 0 cannot collide, and it says where it is:
the simulator prints `capctl sim listening on URL`, the daemon logs `{"event": "listening", "url": URL}`.
The output is read on a thread from start to end, so the process never blocks on a full pipe and no line
is lost to a second reader.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

SIM_READY = re.compile(r"^capctl sim listening on (http://\S+) ")


def _sim_url(line: str) -> str | None:
    found = SIM_READY.match(line)
    return found.group(1) if found else None


def _daemon_url(line: str) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    url = entry.get("url") if isinstance(entry, dict) and entry.get("event") == "listening" else None
    return url if isinstance(url, str) else None


class ServerOutput:
    """Every line `stream` gives until it closes, and the URL `parse` finds in one of them."""

    def __init__(self, proc: subprocess.Popen[str], stream: IO[str] | None, parse: Callable[[str], str | None]):
        assert stream is not None, "start the process with that stream piped (text=True)"
        self.proc = proc
        self.lines: list[str] = []
        self._parse = parse
        self._url: str | None = None
        self._found = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)
            if self._url is None and (url := self._parse(line)) is not None:
                self._url = url
                self._found.set()
        self._found.set()  # end of output: the process exited (or closed the stream)

    def url(self, timeout: float = 90) -> str:
        """The URL the server reported; fails with its output so far if it exited or took too long.

        `timeout` is for a server that hangs (one that exits ends the wait at once): a start takes 1-2 s on an
        idle machine, and a daemon at load 30 had not said it listens 20 s after it started."""
        if not self._found.wait(timeout):
            raise AssertionError(f"no address after {timeout} s; output so far:\n{''.join(self.lines)}")
        if self._url is None:
            self.proc.wait(timeout=10)
            raise AssertionError(f"exited with {self.proc.returncode} before listening:\n{''.join(self.lines)}")
        return self._url

    def text(self, timeout: float = 30) -> str:
        """All of the output, once the stream has closed (call it after the process ended)."""
        self._reader.join(timeout)
        assert not self._reader.is_alive(), "the output did not end"
        return "".join(self.lines)


def sim_output(proc: subprocess.Popen[str]) -> ServerOutput:
    """For `capctl sim --listen 127.0.0.1:0` started with stdout=PIPE, stderr=STDOUT, text=True."""
    return ServerOutput(proc, proc.stdout, _sim_url)


def daemon_output(proc: subprocess.Popen[str]) -> ServerOutput:
    """For `capctl run --listen 127.0.0.1:0` started with stderr=PIPE (its JSON log), text=True."""
    return ServerOutput(proc, proc.stderr, _daemon_url)


def children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc: their stat's 4th field)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found
