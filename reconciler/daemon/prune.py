"""The prune guard: which tasks removed from the specs the daemon stops, and when.

The safeguard Argo CD and Flux have: a spec change that would prune more than `max_prune` % of the tasks
in the state (tombstones and thumbnails aside) prunes none of them and waits for a human; a task
missing from the specs is stopped only once it has stayed missing for `prune_grace` (a spec file rewritten in
place is briefly missing documents); a task whose Provider is gone too is reported once, not retried
(docs/daemon.md, "Pruning and its safeguard"). The `capctl_prune_blocked` gauges say how many are held back and why.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from reconciler import transitions
from reconciler.clock import Clock
from reconciler.daemon import policy
from reconciler.daemon.metrics import Metrics
from reconciler.model import ApiFamily, TaskRecord, TaskStatus
from reconciler.spec import SpecSet

__all__ = ["MAX_LOGGED", "PRUNE_GRACE", "PruneGuard"]

log = structlog.get_logger("capctl.daemon")

MAX_LOGGED = 20  # keys listed in one log line; the count says how many there were
# Seconds a task must stay missing from the spec set before it is pruned: a spec file rewritten in place
# (not atomically) is briefly missing documents, and stopping a recording for that was worse than waiting.
PRUNE_GRACE = 30.0


class PruneGuard:
    def __init__(self, clock: Clock, metrics: Metrics, *, prune: bool, max_prune: float, grace: float) -> None:
        if not 0 <= max_prune <= 100:
            raise ValueError(f"max_prune must be a percentage from 0 to 100, got {max_prune}")
        if grace < 0:
            raise ValueError(f"prune_grace must not be negative, got {grace}")
        self.clock = clock
        self.metrics = metrics
        self.prune = prune
        self.max_prune = max_prune
        self.grace = grace
        self._blocked: set[str] = set()  # removed from the specs, held back by --max-prune
        # Removed from the specs at (monotonic: the grace is a wait of this process, which a wall clock stepped by
        # NTP must neither cut short nor stretch): pruned once the grace has passed.
        self._absent_since: dict[str, float] = {}
        self._pending: set[str] = set()  # removed, within the grace period
        self._unstoppable: set[str] = set()  # removed, but their provider too: reported once, not retried

    def check(self, spec: SpecSet, records: list[TaskRecord]) -> set[str]:
        """Decided per spec change, over every task then missing from the specs. Returns the keys held back
        until now and still missing: their prune may go (after what is left of their grace)."""
        self._unstoppable &= {r.key for r in records} - set(spec.tasks)
        live = [r for r in records if r.status is not TaskStatus.REMOVED]
        missing = {r.key for r in live if r.key not in spec.tasks} if self.prune else set()
        # A thumbnail's prune calls nothing and loses nothing: restored, a submitted one is not submitted again
        # (one whose later edit was refused too: `accepted`, restored as taken), and one whose submission failed
        # is tried again as it would have been. Weighed, a thumbnail job's cleanup waited for a human (a renamed
        # job with a file not uploaded yet, walk 59e), and its files diluted a bad merge's share.
        weighed = [r.key for r in live if r.family is not ApiFamily.ZEGO_THUMBNAIL]
        # Weighed on the running tasks too: a selector job's stopped rooms of the last day must not dilute a
        # removal of most of what captures now.
        running = [r.key for r in live if transitions.stoppable(r)]
        stopping = sum(1 for key in running if key in missing)
        removing = sum(1 for key in weighed if key in missing)
        too_many = policy.prune_blocked(removing, len(weighed), self.max_prune) or policy.prune_blocked(
            stopping, len(running), self.max_prune
        )
        blocked = missing if too_many else set()
        self._start_grace(missing, blocked, {r.key for r in live if r.family is ApiFamily.ZEGO_THUMBNAIL})
        if blocked and blocked != self._blocked:
            # The counts weighed, so that the line shows why (with `of=len(live)`, done thumbnails made a held
            # 1 of 1 read "1 of 3"); thumbnails removed with them are held too, and said apart. `held`:
            # all of them, the keys `first` lists and the max-prune gauge counts (6 tasks beside 8 keys misread).
            along = {"thumbnails": len(blocked) - removing} if len(blocked) > removing else {}
            log.warning(
                "prune blocked: too many tasks removed at once; waiting for a human",
                tasks=removing,
                of=len(weighed),
                **along,
                running=stopping,
                of_running=len(running),
                max_prune=self.max_prune,
                held=len(blocked),
                first=sorted(blocked)[:MAX_LOGGED],
                to_confirm="stop the daemon and run `capctl apply`, or restart it with --max-prune 100",
            )
        elif self._blocked and not blocked:
            log.info("prune no longer blocked", tasks=len(missing))
        released = (self._blocked - blocked) & missing
        self._blocked = blocked
        self._export()
        return released

    def _start_grace(self, missing: set[str], blocked: set[str], thumbnails: set[str]) -> None:
        """Remember since when each task has been missing; say once which tasks will be pruned after the
        grace period, and which came back in time. Thumbnails are said apart: a submission cannot be stopped,
        its prune only makes its record a tombstone (walk 60a: "are stopped" for them misled)."""
        now = self.clock.monotonic()
        before = self._absent_since
        self._absent_since = {key: before.get(key, now) for key in missing}
        came_back = self._pending - missing
        self._pending = {k for k in missing - blocked if now < self._absent_since[k] + self.grace}
        new = self._pending - before.keys()
        if captures := sorted(new - thumbnails):
            log.info(
                "prune pending: tasks removed from the specs are stopped after the grace period unless they return",
                tasks=len(captures),
                grace=self.grace,
                first=captures[:MAX_LOGGED],
            )
        if submitted := sorted(new & thumbnails):
            log.info(
                "prune pending: thumbnail tasks removed from the specs are recorded removed after the grace period "
                "unless they return (nothing to stop: a submission cannot be stopped; back in the specs, one ZEGO "
                "took is not submitted again)",
                tasks=len(submitted),
                grace=self.grace,
                first=submitted[:MAX_LOGGED],
            )
        if came_back:
            log.info("prune cancelled: tasks are back in the specs", tasks=len(came_back))

    def wait(self, key: str) -> float | None:
        """Seconds until the removed task `key` may be stopped (0: now), or None: never without a change."""
        if not self.prune or key in self._blocked:
            return None
        now = self.clock.monotonic()
        wait = self._absent_since.setdefault(key, now) + self.grace - now
        if wait > 0:
            return wait  # looked at again when the grace period ends; a reload that restores it cancels this
        if key in self._pending:
            self._pending.discard(key)
            self._export()
        return 0.0

    def held(self) -> tuple[str, ...]:
        """The keys held back by --max-prune, waiting for a human (the status page shows them)."""
        return tuple(sorted(self._blocked))

    def holds(self, key: str) -> bool:
        """`key` is held back by --max-prune: it keeps running and is observed, not stopped."""
        return key in self._blocked

    def removing(self) -> Iterable[str]:
        """The keys missing from the specs that are to be stopped: within the grace, or held back for a human
        (not those whose Provider is gone: nothing stops them)."""
        return self._absent_since.keys() - self._unstoppable

    def unstoppable(self, key: str) -> bool:
        """Its Provider is gone too: True the first time (to report it), False after."""
        if key in self._unstoppable:
            return False
        self._unstoppable.add(key)
        self._export()
        return True

    def stopped(self, key: str) -> None:
        self._absent_since.pop(key, None)
        self.reachable(key)  # its provider came back and the stop went through

    def reachable(self, key: str) -> None:
        """A declared Provider reaches it again (its own put back): no longer counted `provider-missing`, and
        a later loss is reported anew. A held prune's mark outlived the Provider's return (walk 47B-2)."""
        if key in self._unstoppable:
            self._unstoppable.discard(key)
            self._export()

    def _export(self) -> None:
        self.metrics.prune_blocked.labels(reason="max-prune").set(len(self._blocked))
        self.metrics.prune_blocked.labels(reason="grace").set(len(self._pending))
        self.metrics.prune_blocked.labels(reason="provider-missing").set(len(self._unstoppable))
