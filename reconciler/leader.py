"""Leader election over the state's lock, for several `capctl run` replicas on one state (issue 16).

The model is client-go's leader election, with one thing it lacks: a leader trusts its lease only on its own
monotonic clock. Every replica tries to take the lock every retry period (sooner when the holder's lease is
about to lapse); the one that holds it leads and renews it every retry period. Each taking raises the
lock's epoch, and the leader writes through a `FencedStore` of its epoch, so a deposed leader's writes fail.
`may_act()`, asked before every mutating vendor call, is true only while the last successful renew began
less than the renew deadline ago: the lease (counted by the database from the renew, which began later)
lasts longer than that, so a leader stops acting before any other replica can take over, even if it was
paused (GC, VM freeze, SIGSTOP) and its row in the database still says it holds the lock.

The elector does one attempt per `tick()` (blocking store calls: a daemon runs it off its event loop) and
reports `became leader` / `lost leadership` through `on_event`, for the daemon to log and count.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.clock import Clock
from reconciler.spec.fields import parse_duration
from reconciler.state.base import Fenced, Lock, LockHeld, StateError, StateTooNew
from reconciler.state.fenced import FenceableStore, FencedStore

__all__ = [
    "MAX_LEADER_SECONDS",
    "LeaderElector",
    "LeaderEvent",
    "LeaderSettings",
    "LeaderSettingsError",
    "NotLeader",
    "StepDown",
]

# A standby that saw the lease lapse in N seconds tries again just after: the server's clock decides, and
# this covers the time the request takes to reach it.
_AFTER_EXPIRY = 0.05


# A lease longer than a day would leave the replicas without a leader for that long after one dies; far longer
# ones (`--lease-duration 99999999999h`) failed every lock on PostgreSQL, whose timestamps end in year 294276.
MAX_LEADER_SECONDS = 86_400.0


class LeaderSettingsError(ValueError):
    """Leader election timings that cannot work; the message names the CLI flag."""


@dataclass(frozen=True, slots=True)
class LeaderSettings:
    """Seconds, as client-go's defaults: the lease lasts 15 s from a renew, a leader stops acting 10 s after
    its last successful renew began, and every replica tries (to take or renew) every 2 s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        for flag, value in (
            ("--lease-duration", self.lease_duration),
            ("--renew-deadline", self.renew_deadline),
            ("--retry-period", self.retry_period),
        ):
            if not value > 0:
                raise LeaderSettingsError(f"{flag} must be above 0 s, not {value:g} s")
            if value > MAX_LEADER_SECONDS:  # PostgreSQL's `now() + interval` overflowed: "interval out of range"
                raise LeaderSettingsError(f"{flag} must be at most 1 day ({MAX_LEADER_SECONDS:g} s), not {value:g} s")
        if self.renew_deadline >= self.lease_duration:
            raise LeaderSettingsError(
                f"--renew-deadline ({self.renew_deadline:g} s) must be below --lease-duration"
                f" ({self.lease_duration:g} s): a leader must stop acting before its lease can pass to another replica"
            )
        if self.retry_period >= self.renew_deadline:
            raise LeaderSettingsError(
                f"--retry-period ({self.retry_period:g} s) must be below --renew-deadline"
                f" ({self.renew_deadline:g} s): a leader must get to renew before its deadline passes"
            )

    @classmethod
    def parse(
        cls, *, lease_duration: str | None = None, renew_deadline: str | None = None, retry_period: str | None = None
    ) -> LeaderSettings:
        """From the flags' text (`15s`, `1m`, `15`; None keeps the default), or `LeaderSettingsError`."""
        given = {}
        for flag, text in (
            ("lease_duration", lease_duration),
            ("renew_deadline", renew_deadline),
            ("retry_period", retry_period),
        ):
            if text is None:
                continue
            try:
                given[flag] = float(text) if text.isascii() and text.isdigit() else float(parse_duration(text))
            except ValueError as exc:
                raise LeaderSettingsError(f"--{flag.replace('_', '-')}: {exc}") from None
        return cls(**given)


class StepDown(enum.StrEnum):
    """Why a leader stopped leading (the `reason` of `lost leadership`)."""

    LOST = "lost to another holder"
    DEADLINE = "renew deadline passed"
    SUPERSEDED = "epoch superseded"
    UNREACHABLE = "database unreachable"
    RESIGNED = "shutting down"
    OUTDATED = "state schema newer than this capctl"  # a newer capctl raised it: this one never leads again


@dataclass(frozen=True, slots=True)
class LeaderEvent:
    """`became leader` (with the new epoch) or `lost leadership` (the epoch that ended, and why)."""

    event: str
    epoch: int
    reason: StepDown | None = None
    detail: str = ""  # the other holder, or the store's error

    BECAME = "became leader"
    LOST = "lost leadership"


class NotLeader(StateError):
    """A leader's store asked of a replica that does not lead (now)."""


class LeaderElector:
    """Takes, renews and gives up the state's lock for one replica. Thread-safe: `may_act()` and `store()`
    may be called from any thread while another runs `tick()`."""

    def __init__(
        self,
        store: FenceableStore,
        holder: str,
        *,
        clock: Clock,
        settings: LeaderSettings | None = None,
        on_event: Callable[[LeaderEvent], None] | None = None,
    ) -> None:
        self.settings = settings or LeaderSettings()
        self.holder = holder
        self._store = store
        self._clock = clock
        self._on_event = on_event or (lambda event: None)
        self._mutex = threading.RLock()
        self._lock: Lock | None = None
        self._renewed_at = float("-inf")  # monotonic time the last successful renew (or taking) began
        self._to_release: Lock | None = None  # a lock given up by a step-down, released by the next tick
        self.epoch: int | None = None  # of the current term, or None while standing by
        self.other_holder: str | None = None  # who held the lock at the last failed attempt
        self.last_error: str | None = None  # why the last attempt could not reach the store, if it could not
        self.silent_for: float | None = None  # the lock's `silent_for` at the last taking
        # A term ended over a schema a newer capctl raised: this elector never takes the lock again, whatever
        # tick comes (one the daemon began before that step-down took it back, walk 60b).
        self._outdated = False

    @property
    def is_leader(self) -> bool:
        return self._lock is not None

    def may_act(self) -> bool:
        """True while leading and the last successful renew began less than the renew deadline ago, on this
        process's monotonic clock. Past the deadline the elector steps down (a new term needs a new taking)."""
        with self._mutex:
            if self._lock is None:
                return False
            if self._clock.monotonic() - self._renewed_at < self.settings.renew_deadline:
                return True
            if self.last_error is not None:  # the renewals since failed: say why
                self._step_down(StepDown.UNREACHABLE, self.last_error)
            else:
                self._step_down(StepDown.DEADLINE, "no successful renew within the renew deadline")
            return False

    def store(self) -> FencedStore:
        """The state as this term's leader writes it: every write fenced by the epoch."""
        with self._mutex:
            if self._lock is None or self.epoch is None:
                raise NotLeader(f"{self.holder} does not lead: it cannot write the state")
            return FencedStore(self._store, self.epoch, self._fenced)

    def tick(self) -> float:
        """One attempt: take the lock as a standby, renew it as the leader. Returns the seconds to wait
        before the next tick. A tick that gives up a lock after a step-down does only that: the other
        replicas get a retry period to take over before this one tries again."""
        if self._release_given_up():
            return self.settings.retry_period
        lock = self._lock
        return self._try_acquire() if lock is None else self._renew(lock)

    def resign(self, *, unheard_for: float | None = None, reason: StepDown = StepDown.RESIGNED) -> None:
        """Give leadership up now (shutting down, or `reason`): the lock is released for a standby to take;
        `unheard_for`: seconds this holder has answered no callbacks, which the release records
        (`Lock.unheard_since`)."""
        with self._mutex:
            self._outdated = self._outdated or reason is StepDown.OUTDATED
            if self._lock is not None:
                if unheard_for is not None:
                    self._lock.unheard_since(unheard_for)
                self._step_down(reason, "")
        self._release_given_up()

    def _try_acquire(self) -> float:
        retry = self.settings.retry_period
        if self._outdated:
            return retry
        began = self._clock.monotonic()
        try:
            lock = self._store.lock(self.holder, lease_seconds=self.settings.lease_duration)
        except LockHeld as exc:
            self.other_holder, self.last_error = exc.holder, None
            return retry if exc.expires_in is None else min(retry, exc.expires_in + _AFTER_EXPIRY)
        except StateError as exc:
            self.other_holder, self.last_error = None, str(exc)
            return retry
        with self._mutex:
            late = self._outdated  # a write of the last term met the newer schema as this one took the lock
            if not late:
                self._lock, self.epoch, self._renewed_at = lock, lock.epoch, began
                self.silent_for = lock.silent_for
                self.other_holder, self.last_error = None, None
        if late:
            with contextlib.suppress(StateError):
                lock.release()
            return retry
        self._on_event(LeaderEvent(LeaderEvent.BECAME, lock.epoch))
        return retry

    def _renew(self, lock: Lock) -> float:
        retry = self.settings.retry_period
        began = self._clock.monotonic()
        try:
            lock.renew()
        except LockHeld as exc:
            with self._mutex:
                if self._lock is lock:
                    self._step_down(StepDown.LOST, exc.holder)
            return retry
        except StateError as exc:
            self.last_error = str(exc)
            # Retried every retry period; `may_act()` turns false at the deadline whatever happens here.
            with self._mutex:
                if self._lock is lock and self._clock.monotonic() - self._renewed_at >= self.settings.renew_deadline:
                    self._step_down(StepDown.UNREACHABLE, str(exc))
            return retry
        self.last_error = None
        with self._mutex:
            if self._lock is lock:
                if began - self._renewed_at >= self.settings.renew_deadline:
                    # This process did not run (or its renewals hung) past the deadline: it stopped leading
                    # then, even though no one took the lease meanwhile.
                    self._step_down(StepDown.DEADLINE, "the renew began after the renew deadline")
                else:
                    self._renewed_at = began
        return retry

    def _fenced(self, exc: Fenced | StateTooNew) -> None:
        if isinstance(exc, StateTooNew):
            # A newer capctl raised the schema as this term led: it writes no more, and the lock goes at once to a
            # replica of that capctl (this one never leads again, so no tick of it would release the lock).
            with self._mutex:
                self._outdated = True
                self._step_down(StepDown.OUTDATED, str(exc))
            self._release_given_up()
            return
        with self._mutex:
            if self._lock is not None and self.epoch == exc.epoch:
                self._step_down(StepDown.SUPERSEDED, str(exc))

    def _step_down(self, reason: StepDown, detail: str) -> None:
        """Stop leading now (the caller holds the mutex); the lock is released by the next tick."""
        lock, epoch = self._lock, self.epoch
        if lock is None or epoch is None:
            return
        self._lock, self.epoch, self._to_release = None, None, lock
        self._on_event(LeaderEvent(LeaderEvent.LOST, epoch, reason, detail))

    def _release_given_up(self) -> bool:
        """Release the lock a step-down gave up, if any (whether there was one)."""
        with self._mutex:
            lock, self._to_release = self._to_release, None
        if lock is None:
            return False
        # Best effort: an unreachable database lets the lease lapse by itself.
        with contextlib.suppress(StateError):
            lock.release()
        return True
