"""The spec set in force in the daemon: reading it, keeping the last valid one, what a new one changes.

An invalid or vanished set never replaces the last valid one (the daemon logs it, /readyz and the
`capctl_spec_set_*` gauges say so); a valid one queues only the keys whose task changed, appeared or
disappeared, except the first, which queues every key.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Iterable, Sequence

import structlog

from reconciler import gcpause
from reconciler.clock import Clock
from reconciler.daemon.metrics import Metrics
from reconciler.model import DesiredTask
from reconciler.spec import SpecError, SpecErrors, SpecSet, load_spec_set
from reconciler.spec.loader import file_at_fault
from reconciler.state.sql import iso_utc

__all__ = [
    "MAX_LOGGED_ERRORS",
    "SpecState",
    "changed_keys",
    "error_summary",
    "read_specs",
    "same_request",
    "task_looks",
]

log = structlog.get_logger("capctl.daemon")

MAX_LOGGED_ERRORS = 20  # spec errors listed in one log line; the count says how many there were


class SpecState:
    """The spec set in force and what the last load said (logs, the `capctl_spec_set_*` gauges, /readyz).
    A set put in force is handed to `taken(old, new)`, which tells the rest of the daemon."""

    def __init__(
        self,
        paths: Sequence[str],
        fingerprint_key: bytes | None,
        metrics: Metrics,
        clock: Clock,
        taken: Callable[[SpecSet | None, SpecSet], None],
    ) -> None:
        self.paths = list(paths)
        self.fingerprint_key = fingerprint_key  # the state's: specs are keyed with it, to compare with records
        # The key `current` was read with: another than the state's after a takeover found the state replaced
        # (`DaemonParts._read_afresh`) and the files did not load; compared under it, every task looks changed.
        self.keyed_with = fingerprint_key
        self.metrics = metrics
        self.clock = clock
        self._taken = taken
        self._lock = asyncio.Lock()
        # Reloads asked for, and how many of them the last completed read began after (with what it returned): a
        # burst of SIGHUPs (a reloader, with the watcher's own) read the files once per ask, one after another.
        self._asked, self._answered, self._answer = 0, 0, False
        self.current: SpecSet | None = None
        self.error: str | None = "the specs have not been read yet"
        # The last invalid set's errors (the first MAX_LOGGED_ERRORS): the status page lists them.
        self.errors: tuple[str, ...] = ()
        self.error_count = 0  # how many it had
        self.invalid_since: float | None = None  # first failed load since the last good one
        self.loaded_at: float | None = None  # when the set in force was loaded (the status page shows it)
        # Files whose change may matter (the watcher checks them): those the set in force read, and those the
        # last load named if it failed (a missing one that appears may make it valid).
        self.referenced: tuple[str, ...] = ()

    def reload(self) -> bool:
        return self.take(self.read(), self.fingerprint_key)

    def read(self) -> SpecSet | SpecErrors:
        """Read and validate the specs; nothing is put in force (`take` does)."""
        return read_specs(self.paths, self.fingerprint_key)

    async def reload_async(self) -> bool:
        """`reload()` with the reading and validating in a thread, so that a large spec set never stalls the
        event loop (probes, callbacks) while it loads; one at a time, so an older read never wins. Asks that wait
        while one reads are answered by one read after it (it reads what each of them would), not one each."""
        self._asked += 1
        ask = self._asked
        async with self._lock:
            if self._answered >= ask:  # a read that began after this ask has completed
                return self._answer
            covers, key = self._asked, self.fingerprint_key
            answer = self.take(await asyncio.to_thread(read_specs, self.paths, key), key)
            self._answered, self._answer = covers, answer
            return answer

    def take(self, loaded: SpecSet | SpecErrors, key: bytes | None) -> bool:
        """Put `loaded`, read with `key`, in force, or note why not (the last valid set stays). Read with a key the
        state no longer has (a takeover re-keyed the specs meanwhile), it is read again."""
        if key != self.fingerprint_key:
            key, loaded = self.fingerprint_key, self.read()
        now = self.clock.now()
        if isinstance(loaded, SpecErrors):
            in_force = self.current.referenced_files if self.current else ()
            self.referenced = tuple(dict.fromkeys(in_force + loaded.referenced_files))
            count, self.error = error_summary(loaded)
            self.errors, self.error_count = tuple(str(e) for e in loaded.errors[:MAX_LOGGED_ERRORS]), count
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
        old, self.current, self.error, self.invalid_since = self.current, loaded, None, None
        self.keyed_with = key
        self.errors, self.referenced = (), loaded.referenced_files
        self.loaded_at = now
        self.metrics.spec_load(errors=0, at=now)
        self._taken(old, loaded)
        gcpause.freeze_heap()  # the set (and its tasks) lives until the next one is taken
        return True

    def error_listing(self) -> str | None:
        """What the status page quotes: the count, then every error (up to MAX_LOGGED_ERRORS) one a line."""
        if self.error is None or not self.errors:
            return self.error
        count = self.error_count
        more = (
            f"\n… and {count - len(self.errors)} more (capctl validate lists them all)"
            if count > len(self.errors)
            else ""
        )
        return f"{count} error{'s' if count != 1 else ''}:\n" + "\n".join(self.errors) + more

    def problem(self) -> tuple[bool, str] | None:
        """(ready, why) when the spec set is what /readyz should talk about, else None."""
        if self.current is None:
            return False, f"no valid spec set in force: {self.error}"
        if self.error is not None and self.invalid_since is not None:
            # Still ready (the last valid set runs), but a probe body is where an operator looks first.
            return True, f"ready; spec set invalid since {iso_utc(self.invalid_since)}: {self.error}"
        return None


def read_specs(paths: Sequence[str], fingerprint_key: bytes | None) -> SpecSet | SpecErrors:
    """The spec set, or the errors that reject it (returned, so that a worker thread can hand them over).
    A fault of capctl's own loader rejects the set too, its traceback logged: raised from the reload's thread,
    a StopIteration never reaches the loop (asyncio cannot set it on a future: that reload, and every later one
    behind its lock, would wait forever), and any other exception would end the spec watcher (walk 28B-1)."""
    try:
        return load_spec_set(paths, fingerprint_key=fingerprint_key)
    except SpecErrors as exc:
        return exc
    except Exception as exc:  # a capctl bug: the last valid set stays in force, and the next edit is read again
        log.error(
            "the specs could not be read: a capctl bug, please report it",
            error_type=type(exc).__name__,
            traceback=_frames(exc),
        )
        why = f"capctl could not read the specs ({type(exc).__name__}): a capctl bug, its traceback is in the log"
        # The file it was reading, else every path: not the first one, which may be fine (walk 30c).
        return SpecErrors([SpecError(file_at_fault(exc) or ", ".join(paths) or ".", 0, 0, why)])


def _frames(exc: BaseException) -> str:
    """The traceback without any exception's text, which could quote a spec's value (a secret) that no log line
    holds: the frames of each exception of the chain, the first raised first, each under its type's name, so
    that a fault raised while handling another still names where the first was raised (walk 30a)."""
    chain: list[BaseException] = []
    at: BaseException | None = exc
    while at is not None and all(at is not seen for seen in chain):
        chain.append(at)
        at = at.__cause__ or (None if at.__suppress_context__ else at.__context__)
    return "\n".join(f"{type(e).__name__}:\n{''.join(traceback.format_tb(e.__traceback__))}" for e in reversed(chain))


def error_summary(exc: SpecErrors) -> tuple[int, str]:
    """(how many errors, the line /readyz shows)."""
    count = len(exc.errors) or 1
    return count, f"{count} error{'s' if count != 1 else ''}, first: {exc.errors[0]}" if exc.errors else str(exc)


def task_looks(t: DesiredTask) -> tuple[str, list[list[str]], str | None, str]:
    """What of a task the daemon acts on: a change gives its key work (`changed_keys`) and shows in the spec
    digest (a replica still on a job's old restartPolicy or labels showed the leader's digest: walk 54b)."""
    return (t.spec_hash, [list(item) for item in sorted(t.labels.items())], t.selector, t.restart_policy.value)


def same_request(old: SpecSet, new: SpecSet, key: str) -> bool:
    """`key` is in both sets with the same vendor request (its spec hash): what it sends did not change."""
    return (
        (a := old.tasks.get(key)) is not None and (b := new.tasks.get(key)) is not None and a.spec_hash == b.spec_hash
    )


def changed_keys(old: SpecSet | None, new: SpecSet, recorded: Iterable[str]) -> set[str]:
    """The keys a new spec set gives work: all of them (and every recorded one) the first time, then only
    those whose task was added, changed or removed, whose labels or selector changed (to be recorded), or
    whose restartPolicy changed (a run ended under Never is re-issued once the job is Always)."""
    if old is None:
        return set(new.tasks) | set(recorded)
    keys = {k for k, t in new.tasks.items() if (o := old.tasks.get(k)) is None or task_looks(o) != task_looks(t)}
    return keys | (set(old.tasks) - set(new.tasks))
