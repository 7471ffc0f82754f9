"""Reading the spec set in the daemon, and what a new one changes: pure helpers of `Daemon.reload`.

An invalid or vanished set never replaces the last valid one (the daemon logs it, /readyz and the
`capctl_spec_set_*` gauges say so); a valid one queues only the keys whose task changed, appeared or
disappeared, except the first, which queues every key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from reconciler.spec import SpecErrors, SpecSet, load_spec_set

__all__ = ["changed_keys", "error_summary", "read_specs"]


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
