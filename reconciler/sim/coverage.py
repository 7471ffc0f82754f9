"""Ground truth: what was there to capture, what was captured, where the gaps were and what it cost.

The world tells this ledger every change of a room's published streams and every task run (start and
end, with the vendor's end reason); the simulator tells it every vendor call and the room it concerns.
`report()` then answers, per room and per job: stream-seconds present (the integral of the number of
published streams), stream-seconds captured (those while a run of the job was running on the room), every
gap (a stretch with streams and no run) with its cause, and the vendor calls per API, per room-hour and
per *empty* room-hour. It is computed from the record, never sampled, so hand-made traffic has an exact
expected answer. Nothing here does I/O.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reconciler.sim.config import VOLC

__all__ = [
    "IDLED_OUT",
    "NEVER_STARTED",
    "QUIT_IDLE",
    "QUIT_MAX_RECORD",
    "ROLLOVER",
    "STOPPED",
    "VENDOR_ERROR",
    "Coverage",
    "RoomKey",
    "end_cause",
    "job_of",
    "percentile",
    "summary_lines",
]

if TYPE_CHECKING:  # the world imports this module; tasks only pass through here
    from reconciler.sim.world import SimTask

RoomKey = tuple[str, str, str]  # (vendor, app id, room id)

# ZEGO quit reasons (vendor-apis.md), as the world sets them.
QUIT_IDLE, QUIT_MAX_RECORD = 3, 4
# Gap causes: what the last run of the job before the gap did (or that there was none).
NEVER_STARTED = "never started"
IDLED_OUT = "idled out, not yet re-issued"
ROLLOVER = "rollover"
STOPPED = "stopped by the API"
VENDOR_ERROR = "vendor error"


def job_of(task: SimTask) -> str:
    """The job a run belongs to: the Volcengine TaskId (capctl uses the job name); ZEGO tasks carry no job
    name (a new ClientTaskId per run), so a room's recordings count as one job named after the family."""
    return task.task_id if task.family == VOLC else task.family


def end_cause(task: SimTask) -> str:
    if task.family == VOLC:
        return {"IdleTimeOut": IDLED_OUT, "StopByAPI": STOPPED}.get(task.stop_reason, VENDOR_ERROR)
    if task.quit_reason is None:
        return STOPPED
    return {QUIT_IDLE: IDLED_OUT, QUIT_MAX_RECORD: ROLLOVER}.get(task.quit_reason, VENDOR_ERROR)


@dataclass
class _Room:
    since: float
    times: list[float] = field(default_factory=list)  # change times, ascending
    counts: list[int] = field(default_factory=list)  # published streams from times[i] on
    runs: list[SimTask] = field(default_factory=list)
    calls: list[tuple[float, str]] = field(default_factory=list)

    def count_at(self, at: float) -> int:
        i = bisect.bisect_right(self.times, at) - 1
        return self.counts[i] if i >= 0 else 0

    def segments(self, now: float) -> list[tuple[float, float, int]]:
        """(start, end, streams) pieces from `since` to `now`."""
        points = [self.since, *self.times, now]
        counts = [0, *self.counts]
        return [(points[i], points[i + 1], counts[i]) for i in range(len(counts)) if points[i + 1] > points[i]]


def _union(runs: list[SimTask], now: float) -> list[tuple[float, float]]:
    spans = sorted((r.start_time, min(now, r.end_time if r.end_time is not None else now)) for r in runs)
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return merged


def _covered(start: float, end: float, union: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in union if a < end and b > start)


def _uncovered(start: float, end: float, union: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out, cursor = [], start
    for a, b in union:
        if b <= cursor or a >= end:
            continue
        if a > cursor:
            out.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < end:
        out.append((cursor, end))
    return out


class Coverage:
    def __init__(self, since: float) -> None:
        self.reset(since)

    def settled_empty_calls(self, settle: float, now: float) -> tuple[int, float]:
        """(vendor calls, room-hours) over the stretches where a room had been empty for `settle` seconds or
        more: what a room costs once the daemon has had time to see it empty (a dormant room's cost, issue
        17), without the calls around each session's end and start."""
        calls, seconds = 0, 0.0
        for room in self._rooms.values():
            for start, end, streams in room.segments(now):
                if streams or end - start <= settle:
                    continue
                seconds += end - start - settle
                calls += sum(1 for at, _ in room.calls if start + settle <= at < end)
        return calls, seconds / 3600

    def reset(self, since: float) -> None:
        self.since = since
        self._rooms: dict[RoomKey, _Room] = {}
        self.expected_jobs: dict[str, list[str]] = {}  # vendor -> jobs that should cover every room
        self._calls: list[tuple[float, str]] = []

    def _room(self, key: RoomKey, at: float) -> _Room:
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = _Room(since=at)
        return room

    # --- what the world and the simulator report --------------------------------------------------------

    def room_seen(self, key: RoomKey, at: float) -> None:
        self._room(key, at)

    def streams(self, key: RoomKey, count: int, at: float) -> None:
        room = self._room(key, at)
        if room.times and room.times[-1] == at:
            room.counts[-1] = count
        else:
            room.times.append(at)
            room.counts.append(count)

    def run(self, task: SimTask) -> None:
        self._room((task.vendor, task.app_id, task.room_id), task.start_time).runs.append(task)

    def call(self, api: str, key: RoomKey | None, at: float) -> None:
        self._calls.append((at, api))
        if key is not None:
            self._room(key, at).calls.append((at, api))

    # --- the answer -------------------------------------------------------------------------------------

    def _gaps(self, room: _Room, runs: list[SimTask], now: float) -> list[dict[str, Any]]:
        union = _union(runs, now)
        pieces: list[tuple[float, float]] = []
        for start, end, count in room.segments(now):
            if count == 0:
                continue
            for a, b in _uncovered(start, end, union):
                if pieces and pieces[-1][1] == a:
                    pieces[-1] = (pieces[-1][0], b)
                else:
                    pieces.append((a, b))
        ended = sorted((r for r in runs if r.end_time is not None), key=lambda r: r.end_time or 0.0)
        gaps = []
        for a, b in pieces:
            before = [r for r in ended if (r.end_time or 0.0) <= a]
            cause = end_cause(before[-1]) if before else NEVER_STARTED
            gaps.append({"start": a, "end": b, "seconds": b - a, "cause": cause})
        return gaps

    def report(self, now: float) -> dict[str, Any]:
        rooms_out: list[dict[str, Any]] = []
        jobs: dict[str, dict[str, Any]] = {}
        room_seconds = empty_seconds = 0.0
        calls_total = calls_empty = 0
        calls_empty_by_api: Counter[str] = Counter()
        present_total = 0.0
        for (vendor, app_id, room_id), room in sorted(self._rooms.items()):
            segments = room.segments(now)
            present = sum((b - a) * c for a, b, c in segments)
            empty = sum(b - a for a, b, c in segments if c == 0)
            room_seconds += sum(b - a for a, b, _ in segments)
            empty_seconds += empty
            present_total += present
            calls = [(at, api) for at, api in room.calls if at <= now]
            empty_calls = [api for at, api in calls if room.count_at(at) == 0]
            calls_total += len(calls)
            calls_empty += len(empty_calls)
            calls_empty_by_api.update(empty_calls)
            by_job: dict[str, list[SimTask]] = {j: [] for j in self.expected_jobs.get(vendor, [])}
            for run in room.runs:
                by_job.setdefault(job_of(run), []).append(run)
            job_rows = []
            for job, runs in sorted(by_job.items()):
                union = _union(runs, now)
                captured = sum(_covered(a, b, union) * c for a, b, c in segments if c)
                gaps = self._gaps(room, runs, now)
                job_rows.append(
                    {
                        "job": job,
                        "runs": len(runs),
                        "streamSecondsCaptured": captured,
                        "coverage": _ratio(captured, present),
                        "gaps": gaps,
                    }
                )
                total = jobs.setdefault(
                    job,
                    {
                        "job": job,
                        "vendor": vendor,
                        "rooms": 0,
                        "present": 0.0,
                        "captured": 0.0,
                        "gaps": [],
                        "delays": [],
                    },
                )
                total["rooms"] += 1
                total["present"] += present
                total["captured"] += captured
                total["gaps"].extend(gaps)
                # Time to capture: from each moment the room fills (0 -> some streams) to a run covering it.
                gap_at = {g["start"]: g["seconds"] for g in gaps}
                total["delays"].extend(gap_at.get(start, 0.0) for start in _fills(segments))
            rooms_out.append(
                {
                    "vendor": vendor,
                    "appId": app_id,
                    "roomId": room_id,
                    "streamSecondsPresent": present,
                    "roomSeconds": sum(b - a for a, b, _ in segments),
                    "emptySeconds": empty,
                    "calls": len(calls),
                    "callsWhileEmpty": len(empty_calls),
                    "jobs": job_rows,
                }
            )
        return {
            "since": self.since,
            "now": now,
            "streamSecondsPresent": present_total,
            "rooms": rooms_out,
            "jobs": [
                {
                    "job": j["job"],
                    "vendor": j["vendor"],
                    "rooms": j["rooms"],
                    "streamSecondsPresent": j["present"],
                    "streamSecondsCaptured": j["captured"],
                    "coverage": _ratio(j["captured"], j["present"]),
                    "gaps": len(j["gaps"]),
                    "gapSecondsMax": max((g["seconds"] for g in j["gaps"]), default=0.0),
                    "gapsByCause": {
                        cause: {
                            "count": len(lengths),
                            "p99Seconds": percentile(lengths, 99),
                            "maxSeconds": max(lengths),
                        }
                        for cause, lengths in sorted(_by_cause(j["gaps"]).items())
                    },
                    "roomFills": len(j["delays"]),
                    "timeToCaptureP50Seconds": percentile(j["delays"], 50),
                    "timeToCaptureP99Seconds": percentile(j["delays"], 99),
                }
                for j in sorted(jobs.values(), key=lambda j: (j["vendor"], j["job"]))
            ],
            "calls": {
                "byApi": dict(sorted(Counter(api for at, api in self._calls if at <= now).items())),
                "whileEmptyByApi": dict(sorted(calls_empty_by_api.items())),
                "roomHours": room_seconds / 3600,
                "emptyRoomHours": empty_seconds / 3600,
                "perRoomHour": _ratio(calls_total, room_seconds / 3600),
                "perEmptyRoomHour": _ratio(calls_empty, empty_seconds / 3600),
            },
        }


def _fills(segments: list[tuple[float, float, int]]) -> list[float]:
    """Start times of the stretches with streams that follow a stretch without (or the start)."""
    fills, before = [], 0
    for start, _, count in segments:
        if count and not before:
            fills.append(start)
        before = count
    return fills


def _by_cause(gaps: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for gap in gaps:
        out.setdefault(gap["cause"], []).append(gap["seconds"])
    return out


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (None for no values): p99 of 100 values is the 99th smallest."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The end-of-scenario text: one line per job, then the calls."""
    lines = [f"coverage over {report['now'] - report['since']:.0f} s, {len(report['rooms'])} rooms:"]
    for j in report["jobs"]:
        cov = "n/a" if j["coverage"] is None else f"{100 * j['coverage']:.2f} %"
        lines.append(
            f"  {j['vendor']} job {j['job']}: {cov} of {j['streamSecondsPresent']:.0f} stream-seconds captured"
            f" in {j['rooms']} rooms; {j['gaps']} gaps, longest {j['gapSecondsMax']:.1f} s"
        )
        if causes := j["gapsByCause"]:
            lines.append(
                "    gaps by cause: "
                + "; ".join(f"{cause} {c['count']} (longest {c['maxSeconds']:.1f} s)" for cause, c in causes.items())
            )
    calls = report["calls"]
    per_empty = calls["perEmptyRoomHour"]
    by_api = ", ".join(f"{k} {v}" for k, v in calls["byApi"].items()) or "none"
    lines.append(
        f"  vendor calls: {sum(calls['byApi'].values())} ({by_api});"
        f" {calls['roomHours']:.2f} room-hours, {calls['emptyRoomHours']:.2f} empty;"
        f" per empty room-hour: {'n/a' if per_empty is None else f'{per_empty:.1f}'}"
    )
    return lines
