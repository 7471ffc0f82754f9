"""Starting `capctl sim` and `capctl run` processes on port 0 and learning the port each one got.

Asking the kernel for a free port and passing it on races every other process on the machine (two test
workers can be handed the same one); a server bound to port 0 cannot collide, and it says where it is:
the simulator prints `capctl sim listening on URL`, the daemon logs `{"event": "listening", "url": URL}`.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
from collections.abc import Callable
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


def _await_url(
    proc: subprocess.Popen[str],
    stream: IO[str],
    parse: Callable[[str], str | None],
    seen: list[str],
    timeout: float,
    *,
    drain: bool,
) -> str:
    """Read `stream` line by line (kept in `seen`) until `parse` finds the URL; fail if the process exits.
    With `drain`, keep reading to the end so that the process never blocks on a full pipe."""
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        waiting = True
        for line in stream:
            if not waiting:
                continue
            seen.append(line)
            url = parse(line)
            if url is not None:
                found.put(url)
                waiting = False
                if not drain:
                    return
        if waiting:
            found.put(None)  # end of output: the process exited

    threading.Thread(target=read, daemon=True).start()
    try:
        url = found.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no address after {timeout} s; output so far:\n{''.join(seen)}") from None
    if url is None:
        proc.wait(timeout=10)
        raise AssertionError(f"exited with {proc.returncode} before listening:\n{''.join(seen)}")
    return url


def sim_url(proc: subprocess.Popen[str], *, timeout: float = 20) -> str:
    """The base URL of a `capctl sim --listen 127.0.0.1:0` started with stdout=PIPE (stderr=STDOUT, so a
    failure to start shows why), text=True. Its output is drained from then on."""
    assert proc.stdout is not None
    return _await_url(proc, proc.stdout, _sim_url, [], timeout, drain=True)


def daemon_url(proc: subprocess.Popen[str], seen: list[str], *, timeout: float = 20) -> str:
    """The base URL of a `capctl run --listen 127.0.0.1:0` started with stderr=PIPE, text=True; the log
    lines read on the way are appended to `seen` (read the rest with communicate())."""
    assert proc.stderr is not None
    return _await_url(proc, proc.stderr, _daemon_url, seen, timeout, drain=False)
