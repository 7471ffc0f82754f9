"""What `capctl wake` changes and says, offline (under the state lock) and in the daemon (POST /api/v1/wake).

One piece of code for both: a running daemon holds the state lock, so without a wake of its own, bringing
one room's capture back meant stopping the watch of every room (walk 18H-7). Pure: it reads records and
returns the records to write and the lines to print; the caller writes them (the CLI under the lock, the
leader through its fenced store).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from reconciler import transitions
from reconciler.model import TaskRecord
from reconciler.plan import fmt_time, keys_matching, near_key_hint, selector_room_hint, waited_after
from reconciler.redact import escape_unprintable
from reconciler.spec.errors import shorten

__all__ = ["MAX_HINTED", "MAX_NAMED", "Wake", "no_task_problem", "plan_wake"]

MAX_NAMED = 20  # unknown KEYs a refusal names
# ... and looks for the nearest task of: each look scans every key, on the daemon's loop for sync and wake (20
# looks at 20,000 keys held the loop 0.8 s, walk 30c); one hint is given, for the first KEY near a task.
MAX_HINTED = 3
MAX_KEY_CHARS = 300  # of each KEY named: a task key is a kind, a job name and a room id (at most 128 + 63 + 12)
# What starts a selector task that ended with its room (`transitions.left_to_its_room`), as the status page says.
_SELECTED_AGAIN = (
    "; it ended with its room, and starts again when its room-selector job selects the room again (active, "
    "within maxRooms)"
)

# What starts a stopped task of a job made restartPolicy Never (`transitions.never_reissued`), as `plan` says it.
_NEVER = "; restartPolicy Never: nothing re-issues it (an edit of its job, or apply --replace, starts it once more)"


@dataclass
class Wake:
    """`unknown` set: nothing is woken (`problem` says which KEYs matched nothing, with the nearest)."""

    woken: list[TaskRecord] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    problem: str = ""


def plan_wake(patterns: Sequence[str], known: Iterable[str], record_of: Callable[[str], TaskRecord | None]) -> Wake:
    """Which of the `known` keys each KEY (a task key or a glob) wakes, and what to say of each."""
    known = list(known)
    matched = keys_matching(patterns, known)
    # Unlike `state rm`, every KEY must match: a glob that matches nothing is a typo that wakes nothing.
    if unknown := [k for k, hits in matched.items() if not hits]:
        return Wake(unknown=unknown, problem=no_task_problem(unknown, known, record_of, "the state", "; nothing woken"))
    records = {k: r for hits in matched.values() for k in hits if (r := record_of(k)) is not None}
    result, seen = Wake(), set()
    for pattern, hits in matched.items():
        left: Counter[str] = Counter()  # matched by a glob, not waiting: counted, not listed one by one
        for key in hits:
            # A key named outright is said of itself, under its own KEY, even when a glob matches it too.
            if key in seen or (key in matched and key != pattern) or (record := records.get(key)) is None:
                continue
            seen.add(key)
            named = escape_unprintable(key)  # one from a state an older capctl wrote may hold an escape sequence
            if (new := transitions.woken(record)) is not None:
                result.woken.append(new)
                slot = f", next slot {fmt_time(record.next_attempt_at)}" if record.next_attempt_at else ""
                result.lines.append(f"Woke {named} (was {record.status.value} after {waited_after(record)}{slot}).")
            elif pattern == key:
                # A selector task that ended with its room read as stuck: say what starts it (walk 27b).
                why = _SELECTED_AGAIN if transitions.left_to_its_room(record) else ""
                why = _NEVER if transitions.never_reissued(record) else why
                result.lines.append(f"{named} is {record.status.value}: nothing to wake{why}.")
            else:
                left[record.status.value] += 1
        if left:
            counts = ", ".join(f"{n} {status}" for status, n in sorted(left.items()))
            n = sum(left.values())
            result.lines.append(f"{pattern}: left {n} task{'' if n == 1 else 's'} not waiting ({counts}).")
    return result


def no_task_problem(
    unknown: Sequence[str],
    known: Collection[str],
    record_of: Callable[[str], TaskRecord | None],
    where: str,
    then: str,
    see: str = "`capctl state list`",
) -> str:
    """The refusal of KEYs (task keys or globs) that match none of the `known` keys (those `where` names, listed
    by `see`), for wake and sync alike: the first few, cut to a key's length, then `then`, then the nearest key."""
    named = ", ".join(repr(shorten(k, MAX_KEY_CHARS)) for k in unknown[:MAX_NAMED])
    named += ", …" if len(unknown) > MAX_NAMED else ""
    hint = next((h for k in unknown[:MAX_HINTED] if (h := near_key_hint(shorten(k, MAX_KEY_CHARS), known))), "")
    # A selector job's room with no task: not a typo to correct to another room (walk 26d-9).
    hint += selector_room_hint(unknown[0], known, record_of) if len(unknown) == 1 else ""
    return f"no task {named} in {where} (see {see}){then}{hint}"
