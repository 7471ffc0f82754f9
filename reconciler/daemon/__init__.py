"""`capctl run`: the daemon that keeps every declared capture job running.

Public API: `run_daemon` (the blocking process entry point the CLI calls) and `Daemon` (the async core
tests drive with a FakeClock and in-process transports).
"""

from reconciler.daemon.controller import Daemon, Readiness
from reconciler.daemon.main import run_daemon

__all__ = ["Daemon", "Readiness", "run_daemon"]
