"""Seeded room traffic for the simulator: a scenario file turned into a timeline of publishes and unpublishes.

A scenario (YAML, docs/simulator.md "Scenarios") says how many rooms there are and how people use them:
sessions per room per day weighted towards peak hours (or back-to-back sessions separated by explicit gaps),
session lengths, users and streams per session, brief drop-outs with reconnects, and how unreliable the
vendors' callbacks are. `timeline()` is pure and deterministic: one seed gives the same actions in the same
order on every run, so a coverage figure can be reproduced and two policies compared on the same traffic.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reconciler.sim.config import VOLC
from reconciler.spec.files import FileRefused, read_regular

__all__ = [
    "DAY",
    "MAX_SCENARIO_BYTES",
    "Action",
    "CallbackChaos",
    "Dropouts",
    "M",
    "Scenario",
    "ScenarioError",
    "Span",
    "load_scenario",
    "parse_chaos",
    "parse_scenario",
    "timeline",
]

DAY = 86_400.0
MAX_SCENARIO_BYTES = 4 * 1024 * 1024  # as one spec file: a scenario is a few rules, its traffic is generated
M = TypeVar("M", bound=BaseModel)


class ScenarioError(ValueError):
    """The scenario file or body is wrong; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Span(_Strict):
    """A uniform distribution between `min` and `max` (seconds, or a count where the field says so)."""

    min: float = Field(ge=0)
    max: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.max < self.min:
            raise ValueError(f"max ({self.max:g}) is below min ({self.min:g})")
        return self

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.min, self.max)

    def draw_int(self, rng: random.Random) -> int:
        return rng.randint(math.ceil(self.min), math.floor(self.max))


class Dropouts(_Strict):
    """Each user of a session drops out once with `probability`, all their streams for `length` seconds."""

    probability: float = Field(default=0.0, ge=0, le=1)
    length: Span = Span(min=1, max=5)


class CallbackChaos(_Strict):
    """How unreliable the vendors' callbacks are (every callback the simulator sends, rates 0..1).

    `loss`: never delivered, not even retried. `duplicate`: delivered twice (same body). `delay`: extra
    seconds before the first attempt. `reorder`: this share gets up to `reorder_window` more seconds, so
    it arrives after callbacks that happened later."""

    loss: float = Field(default=0.0, ge=0, le=1)
    duplicate: float = Field(default=0.0, ge=0, le=1)
    delay: Span = Span(min=0, max=0)
    reorder: float = Field(default=0.0, ge=0, le=1)
    reorder_window: float = Field(default=10.0, ge=0)


class Scenario(_Strict):
    seed: int = 0
    vendor: Literal["volcengine", "zego"] = "volcengine"
    app_id: str | None = None  # default: the simulator's built-in app of that vendor
    duration: float = Field(gt=0, description="seconds of traffic")
    rooms: int = Field(ge=1, le=100_000)
    room_prefix: str = Field(default="room-", pattern=r"^[a-zA-Z0-9_@\-\.]{0,100}$")
    # Arrivals: with `gap`, sessions follow each other separated by a gap drawn from it; otherwise gaps are
    # exponential with `sessions_per_day` per room, `peak_weight` times denser inside `peak_hours`.
    sessions_per_day: float = Field(default=24.0, gt=0)
    peak_hours: list[tuple[int, int]] = Field(default_factory=list)
    peak_weight: float = Field(default=1.0, ge=0)
    start_hour: float = Field(default=0.0, ge=0, lt=24)  # the hour of the day the scenario starts at
    gap: Span | None = None
    first_session_within: float | None = Field(default=None, ge=0)  # a room's first session starts in [0, this)
    session_length: Span
    users: Span = Span(min=1, max=1)
    streams_per_user: Span = Span(min=1, max=1)
    join_spread: float = Field(default=0.0, ge=0)  # later users join within this many seconds of the first
    dropouts: Dropouts = Dropouts()
    callbacks: CallbackChaos = CallbackChaos()
    # Jobs meant to cover every room (Volcengine TaskId; ZEGO "zego" for recordings): the coverage report
    # then shows a room where such a job never ran as one "never started" gap instead of leaving it out.
    jobs: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        for start, end in self.peak_hours:
            if not (0 <= start < end <= 24):
                raise ValueError(f"peak_hours: [{start}, {end}] must satisfy 0 <= start < end <= 24")
        if self.users.min < 1:
            raise ValueError("users: min must be at least 1")
        if self.streams_per_user.min < 1:
            raise ValueError("streams_per_user: min must be at least 1")
        if self.vendor == VOLC and self.streams_per_user.max > 2:
            raise ValueError("streams_per_user: volcengine users publish at most 2 streams (camera, screen)")
        return self

    def room_id(self, index: int) -> str:
        return f"{self.room_prefix}{index:04d}"


@dataclass(frozen=True, order=True)
class Action:
    """One change at `at` seconds after the scenario starts. `seq` keeps equal times in generation order."""

    at: float
    seq: int
    room_id: str
    user_id: str
    stream: str  # Volcengine: "0"/"1" (camera/screen); ZEGO: the stream id
    publish: bool


def load_scenario(path: Path) -> Scenario:
    try:  # a regular file of a scenario's size only: a FIFO waited forever, /dev/zero filled memory (walk 12b)
        raw = yaml.safe_load(read_regular(path, MAX_SCENARIO_BYTES).decode("utf-8"))
    except FileRefused as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML ({exc})") from exc
    except (ValueError, LookupError) as exc:  # PyYAML's constructors: `!!int` on nothing, `!!bool maybe`
        raise ScenarioError(f"{path}: not valid YAML (a tagged value it cannot build: {exc!r})") from None
    except RecursionError:  # thousands of `[` (walk 16E-10)
        raise ScenarioError(f"{path}: not valid YAML (nested too deeply)") from None
    return parse_scenario(raw, source=str(path))


def parse_scenario(raw: Any, *, source: str = "scenario") -> Scenario:
    return _parse(Scenario, raw, source)


def parse_chaos(raw: Any, *, source: str = "callbacks") -> CallbackChaos:
    """The `callbacks` part alone (`PUT /_sim/callbacks/chaos`)."""
    return _parse(CallbackChaos, raw, source)


def _parse(model: type[M], raw: Any, source: str) -> M:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: must be a mapping of {model.__name__} fields")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise ScenarioError(f"{source}: {problems}") from None


def _weight(s: Scenario, t: float) -> float:
    hour = ((t + s.start_hour * 3600) % DAY) / 3600
    return s.peak_weight if any(a <= hour < b for a, b in s.peak_hours) else 1.0


def _gap(s: Scenario, rng: random.Random, t: float) -> float:
    if s.gap is not None:
        return s.gap.draw(rng)
    # Rate per second at this hour, normalised so a day averages sessions_per_day.
    peak_share = sum(b - a for a, b in s.peak_hours) / 24
    mean_weight = peak_share * s.peak_weight + (1 - peak_share)
    rate = s.sessions_per_day / DAY * _weight(s, t) / (mean_weight or 1.0)
    return rng.expovariate(rate) if rate > 0 else math.inf


def timeline(s: Scenario) -> list[Action]:
    """Every publish and unpublish of the scenario, in time order; the same list for the same scenario."""
    out: list[tuple[float, int, str, str, str, bool]] = []
    seq = 0
    for index in range(s.rooms):
        rng = random.Random(f"{s.seed}:{index}")  # per room: adding rooms does not reshuffle the others
        room = s.room_id(index)
        first = s.first_session_within
        t = rng.uniform(0, first) if first is not None else _gap(s, rng, 0.0)
        session = 0
        while t < s.duration:
            length = s.session_length.draw(rng)
            end = min(t + length, s.duration)
            for u in range(s.users.draw_int(rng)):
                user = f"{room}-s{session}-u{u}"
                join = t if u == 0 else min(t + rng.uniform(0, s.join_spread), end)
                streams = [
                    str(k) if s.vendor == VOLC else f"{user}-v{k}" for k in range(s.streams_per_user.draw_int(rng))
                ]
                spans = [(join, end)]
                if rng.random() < s.dropouts.probability and end - join > 0:
                    drop = rng.uniform(join, end)
                    back = min(drop + s.dropouts.length.draw(rng), end)
                    spans = [(join, drop), (back, end)] if back < end else [(join, drop)]
                for start, stop in spans:
                    if stop <= start:
                        continue
                    for stream in streams:
                        out.append((start, seq, room, user, stream, True))
                        out.append((stop, seq + 1, room, user, stream, False))
                        seq += 2
            session += 1
            t = end + _gap(s, rng, end)
    # Unpublishes before publishes at the same instant, so a reconnect at the end of a drop-out is seen.
    out.sort(key=lambda a: (a[0], a[5], a[1]))
    return [Action(at, i, room, user, stream, pub) for i, (at, _, room, user, stream, pub) in enumerate(out)]
