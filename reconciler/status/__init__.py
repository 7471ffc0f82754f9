"""The daemon's read-only status page (issue 20): what runs, what stopped, where capture was lost.

`model` is the value a page shows (`StatusSnapshot`) and the question a request asks (`StatusQuery`);
`history` keeps the last 24 h of runs and room activity; `build` turns what the daemon knows into a
snapshot; `render` turns a snapshot into HTML and JSON; `routes` serves them. Everything but `routes` is
pure or in-memory, so the page is tested on hand-built snapshots and benchmarked without a daemon.
"""

from reconciler.status.build import StatusInputs, build_snapshot
from reconciler.status.history import History
from reconciler.status.model import Replica, StatusQuery, StatusSnapshot
from reconciler.status.routes import API_PATH, PAGE_PATH, status_routes

__all__ = [
    "API_PATH",
    "PAGE_PATH",
    "History",
    "Replica",
    "StatusInputs",
    "StatusQuery",
    "StatusSnapshot",
    "build_snapshot",
    "status_routes",
]
