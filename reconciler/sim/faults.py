"""Fault injection: what can go wrong between a client and a vendor, switched on through /_sim/faults.

Faults are decided per request from a seeded RNG, optionally only for named APIs. 500s, throttling bursts
and dropped connections/timeouts in the "before" phase reach no business logic; in the "after" phase the
request takes effect and only the answer is lost (what idempotency keys exist for).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any

from reconciler.sim.config import API_NAMES

__all__ = ["MAX_HANG_SECONDS", "FaultConfig", "FaultConfigError", "Faults"]

MAX_HANG_SECONDS = 3600  # far past any client timeout; more only holds connections open


class FaultConfigError(ValueError):
    pass


@dataclass
class FaultConfig:
    error_rate: float = 0.0  # probability of an HTTP 500 / InternalError
    timeout_rate: float = 0.0  # probability of no answer at all (client times out)
    drop_rate: float = 0.0  # probability of a connection dropped mid-answer
    slow_rate: float = 0.0  # probability of an extra `slow_ms` delay
    slow_ms: int = 0
    latency_ms: int = 0  # fixed delay added to every answer
    throttle_next: int = 0  # the next N matching requests are answered as throttled
    phase: str = "before"  # "after": timeouts/drops happen after the request took effect
    hang_seconds: float = 30.0  # how long a timed-out request hangs on a real server
    apis: list[str] | None = None  # limit faults to these API names (e.g. ["StartSnapshot", "start"])
    seed: int | None = None

    @classmethod
    def from_json(cls, data: object) -> FaultConfig:
        if not isinstance(data, dict):
            raise FaultConfigError("faults: body must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        camel = {_camel(name): name for name in known}
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = camel.get(key, key)
            if name not in known:
                raise FaultConfigError(f"faults.{key}: unknown field (known: {', '.join(sorted(camel))})")
            values[name] = value
        config = cls(**values)
        config._check()
        return config

    def _check(self) -> None:
        for name in ("error_rate", "timeout_rate", "drop_rate", "slow_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise FaultConfigError(f"faults.{_camel(name)}: must be a number in [0, 1]")
        for name in ("slow_ms", "latency_ms", "throttle_next"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise FaultConfigError(f"faults.{_camel(name)}: must be an integer >= 0")
        hang = self.hang_seconds  # a real server sleeps this long: Infinity would hold a connection for good
        if isinstance(hang, bool) or not isinstance(hang, int | float) or not 0 <= hang <= MAX_HANG_SECONDS:
            raise FaultConfigError(f"faults.hangSeconds: must be a number of seconds from 0 to {MAX_HANG_SECONDS}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise FaultConfigError("faults.seed: must be an integer")
        if self.phase not in ("before", "after"):
            raise FaultConfigError("faults.phase: must be 'before' or 'after'")
        if self.apis is not None and (
            not isinstance(self.apis, list) or not all(isinstance(a, str) for a in self.apis)
        ):
            raise FaultConfigError("faults.apis: must be a list of API names")
        # A misspelt name scoped the faults to no call at all: a fault test then passed without any fault.
        if unknown := [a for a in self.apis or () if a not in API_NAMES]:
            raise FaultConfigError(
                f"faults.apis: {', '.join(map(repr, unknown))} is no API of the simulator "
                f"(known: {', '.join(sorted(API_NAMES))})"
            )

    def as_json(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request. `failure` is one of None, "error", "timeout", "drop", "throttle"."""

    failure: str | None = None
    delay_ms: int = 0
    after: bool = False


class Faults:
    def __init__(self) -> None:
        self.config = FaultConfig()
        self._rng = random.Random()

    def set(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)

    def decide(self, api: str) -> FaultDecision:
        c = self.config
        if c.apis is not None and api not in c.apis:
            return FaultDecision()
        delay = c.latency_ms
        if c.slow_rate and self._rng.random() < c.slow_rate:
            delay += c.slow_ms
        failure: str | None = None
        if c.throttle_next > 0:
            c.throttle_next -= 1
            failure = "throttle"
        elif c.error_rate and self._rng.random() < c.error_rate:
            failure = "error"
        elif c.timeout_rate and self._rng.random() < c.timeout_rate:
            failure = "timeout"
        elif c.drop_rate and self._rng.random() < c.drop_rate:
            failure = "drop"
        after = c.phase == "after" and failure in ("timeout", "drop")
        return FaultDecision(failure, delay, after)
