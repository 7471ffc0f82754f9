"""What the daemon knows about one task key between two reconciles, as one immutable value per key.

The record in the state store is the truth about a task; `KeyRuntime` is only the daemon's memory of
*when to look* and *what callbacks hinted*. It is changed only by the pure transition functions below, so
what a callback, an observation or an action does to it can be read (and tested) in one place.

What a restart keeps: nothing of this. What comes back from the state store: every task whose record
says it may run is observed before anything is done (`observe_now`); the next observation, the
probe window and the backoff wait are recomputed from the record (`started_at`, `observed_at`,
`next_attempt_at`, `unproductive_runs`). What is lost: callback hints (a rollover or end reason, room
activity, a room reported empty), so a restart may re-issue one run after a short backoff instead of at
once, and may name a stop by the polled status rather than the callback's reason; and until the first room
callback after a restart no room is known empty (the reconciler learns again which apps send them), so the
backoff applies meanwhile. The retry backoff of a failing key lives
in the work queue (`queue.WorkQueue`) and restarts from zero too (a failed start's record says when it is
tried again, for `capctl state list`, but the queue decides).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from reconciler.daemon import policy

__all__ = [
    "EMPTY",
    "KeyRuntime",
    "RuntimeMap",
    "acted",
    "end_hinted",
    "forgotten",
    "hinted_look",
    "looked",
    "looking",
    "observe_first",
    "planned",
    "probing",
    "room_active",
    "room_emptied",
    "stepped",
    "unconfirmed",
]


@dataclass(frozen=True, slots=True)
class KeyRuntime:
    next_observe: float | None = None  # wall time the running task is next observed (None: not planned)
    looked_at: float | None = None  # wall time it was last observed (or tried)
    observe_now: bool = False  # restart, sync or callback: observe before acting
    rollover_hint: str | None = None  # the vendor task id a callback said hit its max duration
    end_reason: tuple[str, str] | None = None  # (vendor task id, why a callback said it ended)
    room_activity: float | None = None  # time of the last room-activity callback for its room
    room_emptied: float | None = None  # time a callback last said its room emptied (last user left, no stream)
    waiting_since: float | None = None  # first room activity while no run captured it: capture_gap's start
    probe_until: float | None = None  # end of the short-interval looks around its expected stop
    unconfirmed: str | None = None  # the status `capctl_tasks` counts instead of the record's
    look_error: str | None = None  # why the last look at the vendor failed (unconfirmed "unknown")
    unknown_since: float | None = None  # wall time of the first of the failed looks in a row (with look_error)


EMPTY = KeyRuntime()


def observe_first(rt: KeyRuntime) -> KeyRuntime:
    """Look at the vendor before deciding (start, lease regained, sync, a callback saying the run ended)."""
    return replace(rt, observe_now=True)


def end_hinted(rt: KeyRuntime, run: str, *, rollover: bool, reason: str | None) -> KeyRuntime:
    """A callback said run `run` ended (at its max duration when `rollover`, for `reason`): look now."""
    return replace(
        rt,
        observe_now=True,
        rollover_hint=run if rollover else rt.rollover_hint,
        end_reason=(run, reason) if reason else rt.end_reason,
    )


def hinted_look(rt: KeyRuntime, hint: float, last: float, period: float) -> KeyRuntime:
    """A callback says the next look can wait until `hint`, held to one sweep `period` after `last`."""
    return replace(rt, next_observe=policy.hinted_look(hint, last, period))


def probing(rt: KeyRuntime, stop: float) -> KeyRuntime:
    """The room emptied: the run stops at `stop`; look every PROBE_INTERVAL until the margin after it."""
    return replace(rt, probe_until=stop + policy.DEADLINE_MARGIN)


def room_active(rt: KeyRuntime, now: float, *, uncaptured: bool = False) -> KeyRuntime:
    """Someone joined or a stream appeared at `now`; `uncaptured`: no run of the key may be capturing it,
    so the wait until one starts begins (kept from the first such callback)."""
    waiting = rt.waiting_since if rt.waiting_since is not None or not uncaptured else now
    return replace(rt, room_activity=now, waiting_since=waiting)


def room_emptied(rt: KeyRuntime, now: float) -> KeyRuntime:
    return replace(rt, room_emptied=now)


def looking(rt: KeyRuntime) -> KeyRuntime:
    """An observation is under way: a callback arriving meanwhile may ask for another one."""
    return replace(rt, observe_now=False)


def looked(rt: KeyRuntime, now: float, swept: float, *, running: bool) -> KeyRuntime:
    """Observed at `now`; `swept` is the regular next look (one jittered sweep period on). While probing
    a run expected to stop, a running one is looked at every PROBE_INTERVAL from just after the stop (a
    look held to --resync may come before it: the regular sweep until then)."""
    if rt.probe_until is not None and now < rt.probe_until and running:
        probe_from = rt.probe_until - policy.DEADLINE_MARGIN + policy.PROBE_DELAY
        due = now + policy.PROBE_INTERVAL if now >= probe_from else min(swept, probe_from)
        return replace(rt, looked_at=now, next_observe=due)
    # A run seen running captures the room: any wait for a start is over (no gap to count).
    waiting = None if running else rt.waiting_since
    return replace(rt, looked_at=now, next_observe=swept, probe_until=None, waiting_since=waiting)


def planned(rt: KeyRuntime, due: float) -> KeyRuntime:
    return replace(rt, next_observe=due)


def unconfirmed(
    rt: KeyRuntime, status: str | None, look_error: str | None = None, now: float | None = None
) -> KeyRuntime:
    """`look_error`: the look failed at `now`; the first of the failures in a row says since when it is unknown."""
    since = None if look_error is None else rt.unknown_since if rt.unknown_since is not None else now
    return replace(rt, unconfirmed=status, look_error=look_error, unknown_since=since)


def acted(rt: KeyRuntime) -> KeyRuntime:
    """After an action the run is new: its first look is at its own deadline, its start is its last
    observation, and every hint about the old run is gone. Room activity stays: it is about the room."""
    return KeyRuntime(room_activity=rt.room_activity, room_emptied=rt.room_emptied)


def stepped(rt: KeyRuntime, step: float) -> KeyRuntime:
    """The wall clock stepped by `step` seconds: the daemon's own schedule (the next look, the probe window) and
    the durations it measures (since the last look, the capture gap) keep their length. Room activity stays as
    read: it is weighed against the records' start times, written on the wall clock as it was."""

    def moved(t: float | None) -> float | None:
        return None if t is None else t + step

    return replace(
        rt,
        next_observe=moved(rt.next_observe),
        looked_at=moved(rt.looked_at),
        probe_until=moved(rt.probe_until),
        waiting_since=moved(rt.waiting_since),
        unknown_since=moved(rt.unknown_since),
    )


def forgotten(rt: KeyRuntime) -> KeyRuntime:
    """The task left the specs: nothing more to observe."""
    return replace(rt, next_observe=None, looked_at=None, unconfirmed=None, look_error=None, unknown_since=None)


class RuntimeMap:
    """key -> KeyRuntime. Each change applies a transition to the value current at that moment (no await
    in between), so a callback that arrives while a worker waits on the vendor is never overwritten."""

    def __init__(self) -> None:
        self._values: dict[str, KeyRuntime] = {}

    def get(self, key: str) -> KeyRuntime:
        return self._values.get(key, EMPTY)

    def set(self, key: str, value: KeyRuntime) -> KeyRuntime:
        if value == EMPTY:
            self._values.pop(key, None)  # most keys carry nothing: the map holds only those that do
        else:
            self._values[key] = value
        return value

    def snapshot(self) -> dict[str, KeyRuntime]:
        """A copy of every key that carries something (the room gauges read it)."""
        return dict(list(self._values.items()))

    def unconfirmed(self) -> dict[str, str]:
        """key -> the status the gauge counts instead of the record's (a copy)."""
        return {k: v.unconfirmed for k, v in list(self._values.items()) if v.unconfirmed is not None}

    def look_errors(self) -> dict[str, str]:
        """key -> why its last look at the vendor failed, for the tasks whose status is unknown now (a copy)."""
        return {k: v.look_error for k, v in list(self._values.items()) if v.look_error is not None}

    def unknown_since(self) -> dict[str, float]:
        """key -> when its looks at the vendor began to fail, for the tasks whose status is unknown now (a copy)."""
        return {k: v.unknown_since for k, v in list(self._values.items()) if v.unknown_since is not None}

    def step(self, seconds: float) -> None:
        """Every key's `stepped` (the wall clock stepped by `seconds`)."""
        for key, value in list(self._values.items()):
            self.set(key, stepped(value, seconds))

    def clear_unconfirmed(self) -> None:
        for key, value in list(self._values.items()):
            if value.unconfirmed is not None or value.look_error is not None:  # (a copy of each: 1 s at 100,000)
                self.set(key, unconfirmed(value, None))
