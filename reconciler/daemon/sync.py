"""Which keys a `capctl sync` request (POST /api/v1/sync) and the resync timer queue. Pure.

It only chooses keys: the daemon queues them and looks at the vendor first, the workers still decide (a
backing-off or dormant task keeps waiting), vendor calls stay within the budgets, and a key already
queued is queued once, so repeating the request costs nothing more. Any unknown key: nothing is queued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from reconciler.model import TaskRecord, TaskStatus
from reconciler.plan import whole_keys_hint
from reconciler.spec import SpecSet
from reconciler.spec.errors import did_you_mean, shorten

__all__ = ["known_keys", "resync_keys", "sync_keys"]

MAX_LISTED = 20  # unknown keys named in one answer
MAX_KEY_CHARS = 300  # of each: a task key is a kind, a job name and a room id (at most 128 + 63 + 12)


def sync_keys(keys: Sequence[str] | None, known: set[str]) -> tuple[int, str, list[str]]:
    """(HTTP status, reason, the keys to queue) for `keys` (None: every key) among the `known` ones (the
    spec set's and the state's: a removed job's tasks are pruned by a sync)."""
    if keys is None:
        wanted = sorted(known)
    else:
        wanted = list(dict.fromkeys(keys))
        unknown = [k for k in wanted if k not in known]
        if unknown:
            listed = ", ".join(shorten(k, MAX_KEY_CHARS) for k in unknown[:MAX_LISTED])
            listed += ", …" if len(unknown) > MAX_LISTED else ""
            hint = next((h for k in unknown if (h := whole_keys_hint("sync", shorten(k, MAX_KEY_CHARS)))), "")
            if not hint:
                # Hints only among the first key's own job: a cheap request must not cost a scan of every key.
                job = unknown[0].rpartition("/")[0] + "/"
                hint = did_you_mean(unknown[0], (k for k in known if k.startswith(job)))
            return 404, f"unknown task key(s), in neither the spec set nor the state: {listed}{hint}", []
    return 200, f"queued {len(wanted)} task key(s)", wanted


def known_keys(recorded: Iterable[str], spec: SpecSet | None) -> set[str]:
    """Every key in the spec set in force or in the state (a removed job's tasks are pruned by a pass)."""
    return set(recorded) | (set(spec.tasks) if spec else set())


def resync_keys(known: Iterable[str], record_of: Callable[[str], TaskRecord | None], now: float) -> list[str]:
    """The keys the resync timer queues: every known key but those waiting for a re-issue slot still ahead
    (backing off or dormant). Their worker is already due at that slot, and what could move it (a room
    callback, a spec change, `capctl sync`) queues them itself; reconciling them at every resync only decided
    "still waiting" again (three quarters of the daemon's passes over a simulated day). Once the slot has
    passed they are queued as any key, so a slot the queue lost is still kept within one resync."""
    return sorted(key for key in known if not _waiting(record_of(key), now))


def _waiting(record: TaskRecord | None, now: float) -> bool:
    return (
        record is not None
        and record.status in (TaskStatus.STOPPED, TaskStatus.DORMANT)
        and record.next_attempt_at is not None
        and record.next_attempt_at > now
    )
