"""Reading and writing saved plans (`capctl plan --out`, `capctl apply --plan`): the JSON form, atomically."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path

from reconciler.jsonlimits import bounded_int
from reconciler.plan import Plan, PlanError, plan_from_json, plan_to_json
from reconciler.spec.files import FileRefused, NotText, read_regular, utf8_text
from reconciler.streams import write_json

__all__ = ["MAX_PLAN_FILE_BYTES", "read_plan_file", "write_plan_file"]

# A plan of 250,000 tasks (the spec limit) is about 220 MB of JSON: room above it, and a bound on a file gone wrong.
MAX_PLAN_FILE_BYTES = 1024 * 1024 * 1024


def read_plan_file(path: str) -> Plan:
    try:  # a regular file only, and bounded: `show /dev/zero` read until memory ran out, `show FIFO` waited forever
        # JSON is UTF-8 (RFC 8259), as written; `plan --format json > plan.json` in PowerShell is UTF-16, named
        text = utf8_text(read_regular(path, MAX_PLAN_FILE_BYTES))  # (a UTF-8 mark, as Set-Content writes, dropped)
        data = json.loads(text, parse_int=bounded_int)
    except FileRefused as exc:
        if str(exc) == os.strerror(errno.ENOENT):
            raise PlanError(f"{path}: no such plan file") from None
        raise PlanError(f"{path}: cannot read the plan file: {exc}") from None
    except NotText as exc:
        raise PlanError(f"{path}: cannot read the plan file: it is {exc.reason}: save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except RecursionError:  # thousands of `[`: no plan nests so (walk 16E-9)
        raise PlanError(f"{path}: not a capctl plan (JSON nested too deeply)") from None
    except ValueError as exc:  # an integer of thousands of digits (`bounded_int`)
        raise PlanError(f"{path}: not a capctl plan ({exc})") from None
    return plan_from_json(data, source=path)


def write_plan_file(plan: Plan, path: str) -> None:
    """Atomic: a reader never sees half a plan."""
    target = Path(path)
    with contextlib.suppress(FileNotFoundError):  # os.replace would put the plan in place of a device's or FIFO's
        mode = target.stat().st_mode  # entry (for root, /dev/null itself: walk 12b); "/" and "." have no name beside
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise OSError(errno.EEXIST, "not a regular file", path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            write_json(plan_to_json(plan), out, text="utf-8")
        os.replace(tmp, target)
    except BaseException:  # a full disk, a directory in the way, Ctrl-C: no half-written file left beside it
        tmp.unlink(missing_ok=True)
        raise
