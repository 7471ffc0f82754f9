"""Reading the spec set in the daemon, and what a new one changes: pure helpers of `Daemon.reload`.

An invalid or vanished set never replaces the last valid one (the daemon logs it, /readyz and the
`capctl_spec_set_*` gauges say so); a valid one queues only the keys whose task changed, appeared or
disappeared, except the first, which queues every key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import structlog

from reconciler.daemon.metrics import Metrics
from reconciler.spec import SpecErrors, SpecSet, load_spec_set
from reconciler.state.sql import iso_utc

__all__ = ["MAX_LOGGED_ERRORS", "SpecState", "changed_keys", "error_summary", "read_specs"]

log = structlog.get_logger("capctl.daemon")

MAX_LOGGED_ERRORS = 20  # spec errors listed in one log line; the count says how many there were


class SpecState:
    """The spec set in force and what the last load said (logs, the `capctl_spec_set_*` gauges, /readyz)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.current: SpecSet | None = None
        self.error: str | None = "the specs have not been read yet"
        self.invalid_since: float | None = None  # first failed load since the last good one

    def take(self, loaded: SpecSet | SpecErrors, now: float) -> bool:
        """Put `loaded` in force, or note why not (the last valid set stays)."""
        if isinstance(loaded, SpecErrors):
            count, self.error = error_summary(loaded)
            if self.invalid_since is None:
                self.invalid_since = now
            self.metrics.spec_load(errors=count, at=now)
            log.error(
                "spec set rejected; the last valid set stays in force"
                if self.current
                else "spec set rejected; waiting for a valid one",
                errors=[str(e) for e in loaded.errors[:MAX_LOGGED_ERRORS]],
                count=len(loaded.errors),
            )
            return False
        self.current, self.error, self.invalid_since = loaded, None, None
        self.metrics.spec_load(errors=0, at=now)
        return True

    def problem(self) -> tuple[bool, str] | None:
        """(ready, why) when the spec set is what /readyz should talk about, else None."""
        if self.current is None:
            return False, f"no valid spec set in force: {self.error}"
        if self.error is not None and self.invalid_since is not None:
            # Still ready (the last valid set runs), but a probe body is where an operator looks first.
            return True, f"ready; spec set invalid since {iso_utc(self.invalid_since)}: {self.error}"
        return None


def read_specs(paths: Sequence[str], fingerprint_key: bytes | None) -> SpecSet | SpecErrors:
    """The spec set, or the errors that reject it (returned, so that a worker thread can hand them over)."""
    try:
        return load_spec_set(paths, fingerprint_key=fingerprint_key)
    except SpecErrors as exc:
        return exc


def error_summary(exc: SpecErrors) -> tuple[int, str]:
    """(how many errors, the line /readyz shows)."""
    count = len(exc.errors) or 1
    return count, f"{count} error{'s' if count != 1 else ''}, first: {exc.errors[0]}" if exc.errors else str(exc)


def changed_keys(old: SpecSet | None, new: SpecSet, recorded: Iterable[str]) -> set[str]:
    """The keys a new spec set gives work: all of them (and every recorded one) the first time, then only
    those whose task was added, changed or removed."""
    if old is None:
        return set(new.tasks) | set(recorded)
    keys = {k for k, t in new.tasks.items() if (o := old.tasks.get(k)) is None or o.spec_hash != t.spec_hash}
    return keys | (set(old.tasks) - set(new.tasks))
