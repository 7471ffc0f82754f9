"""Which keys a `capctl sync` request (POST /api/v1/sync) and the resync timer queue. Pure.

It only chooses keys: the daemon queues them and looks at the vendor first, the workers still decide (a
backing-off or dormant task keeps waiting), vendor calls stay within the budgets, and a key already
queued is queued once, so repeating the request costs nothing more. Any KEY that matches nothing: nothing is
queued.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence

from reconciler.model import TaskRecord, TaskStatus
from reconciler.plan import keys_matching
from reconciler.spec import SpecSet
from reconciler.waking import no_task_problem

__all__ = ["known_keys", "resync_keys", "sync_keys"]


# `state list` has the recorded tasks only: a task of the specs not yet started is a create in `plan` (walk 30c).
_SEE = "`capctl state list`, or `capctl plan` for a task not recorded yet"


def sync_keys(
    keys: Sequence[str] | None,
    known: set[str],
    record_of: Callable[[str], TaskRecord | None],
    in_specs: Container[str],
) -> tuple[int, str, list[str], int]:
    """(HTTP status, reason, the keys to queue, how many tombstones were matched and left out) for `keys` (None:
    every key), task keys or globs as `wake` and `state list` take them, among the `known` ones (the spec set's
    and the state's: a removed job's tasks are pruned by a sync; a task desired but not yet recorded is synced by
    its job's name too). Every KEY must match, as for wake: a typo would sync nothing while saying it did. A
    whole key is looked up, a glob walks the keys once (`plan.keys_matching`). A tombstone (a pruned task not
    back `in_specs`) matches, but is not queued: there is nothing to reconcile, and "queued 25" for a job of 20
    rooms and 5 pruned ones said more would be looked at than was (walk 30c)."""
    if keys is None:
        matched = sorted(known)
    else:
        hits_of = keys_matching(keys, known)
        if unknown := [k for k, hits in hits_of.items() if not hits]:
            return 404, no_task_problem(unknown, known, record_of, "the spec set or the state", "", _SEE), [], 0
        matched = list(dict.fromkeys(key for hits in hits_of.values() for key in sorted(hits)))
    wanted = [key for key in matched if key in in_specs or not _tombstone(record_of(key))]
    left = len(matched) - len(wanted)
    return 200, f"queued {len(wanted)} task key(s)" + (f", not {left} tombstone(s)" if left else ""), wanted, left


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


def _tombstone(record: TaskRecord | None) -> bool:
    return record is not None and record.status is TaskStatus.REMOVED


def _waiting(record: TaskRecord | None, now: float) -> bool:
    return (
        record is not None
        and record.status in (TaskStatus.STOPPED, TaskStatus.DORMANT)
        and record.next_attempt_at is not None
        and record.next_attempt_at > now
    )
