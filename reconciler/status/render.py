"""A `StatusSnapshot` as the HTML page (Jinja2, autoescaped) and as its JSON twin: pure functions.

Jinja2 escapes every value by default, so a room id or a vendor error containing markup is shown as text.
The page needs no script, no stylesheet file and nothing from the internet: the CSS is inline and the
timelines are inline SVG, each with a text summary beside it for screen readers and narrow screens.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup

from reconciler import transitions
from reconciler.plan import rfc3339
from reconciler.status.model import (
    CaptureLine,
    Interval,
    JobView,
    RoomTimeline,
    StatusQuery,
    StatusSnapshot,
    TaskView,
)

__all__ = ["JSON_FORMAT_VERSION", "duration", "page_url", "render_html", "to_json"]

JSON_FORMAT_VERSION = 1
MAX_JOB_CHOICES = 1000  # job names offered by the filter box; any other name can still be typed

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("reconciler.status", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,  # a misspelt field is an error in the tests, not an empty cell
)


def render_html(snapshot: StatusSnapshot) -> str:
    now = snapshot.generated_at
    return _ENV.get_template("status.html").render(
        s=snapshot,
        now=now,
        ts=_clock_time,
        ago=lambda t: _ago(now, t),
        until=lambda t: _until(now, t),
        dur=duration,
        url=lambda **changes: page_url(snapshot.query, **changes),
        bars=_bars,
        capture_bars=_capture_bars,
        ticks=_ticks(snapshot),
        may_run=transitions.MAY_RUN,
        job_choices=snapshot.job_names[:MAX_JOB_CHOICES],
        line_summary=_line_summary,
        status_label=_status_label,
        named=_named,
        named_key=_named_key,
        default=StatusQuery(),
    )


def _named(name: str) -> Markup:
    """A room id as the page shows it: isolated (`<bdi>`), so that a right-to-left override in it cannot
    reverse what follows it on the line (its escapes, its vendor account), then how it is told apart from
    one it may pass for: ` (l\\u043ebby)` after a `lоbby` whose `о` is Cyrillic (ASCII letters mixed with
    others), after a fullwidth `ｌｏｂｂｙ` (NFKC makes it another name), or after a name holding an invisible
    format character (a bidi override, a zero-width space); nothing after plain ASCII, or a name in one
    script (`班级101`). ZEGO room ids are named by whoever joins."""
    shown = Markup("<bdi>%s</bdi>") % name
    if name.isascii():
        return shown
    mixed = any(c.isascii() and c.isalpha() for c in name)
    invisible = any(unicodedata.category(c) == "Cf" for c in name)
    if not mixed and not invisible and unicodedata.normalize("NFKC", name) == name:
        return shown
    return shown + f" ({name.encode('ascii', 'backslashreplace').decode('ascii')})"


def _named_key(key: str) -> Markup:
    """A task key with its room (or file) shown as `_named` shows it: a held `lоbby` is not `lobby` (walk 60c-7)."""
    kind, name, target = key.split("/", 2)
    return Markup("%s/%s/") % (kind, name) + _named(target)


def page_url(query: StatusQuery, **changes: Any) -> str:
    """`?…` for this query with some parameters changed (defaults left out, so links stay short)."""
    params = {
        "job": query.job,
        "status": query.status,
        "room": query.room,
        "per_page": query.per_page if query.per_page != StatusQuery().per_page else None,
        "decisions": query.decisions if query.decisions != StatusQuery().decisions else None,
        "page": query.page if query.page != 1 else None,
    }
    if "job" in changes or "status" in changes or "room" in changes:
        params["page"] = None  # a new filter starts at its first page
    params.update(changes)
    kept = {k: v for k, v in params.items() if v is not None}
    return "?" + urlencode(kept) if kept else "?"


def duration(seconds: float) -> str:
    """`45s`, `12m`, `3h 05m`, `2d 4h`: short, for tables."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _clock_time(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _ago(now: float, ts: float | None) -> str:
    return "" if ts is None else f"{duration(now - ts)} ago"


def _until(now: float, ts: float | None) -> str:
    if ts is None:
        return ""
    return "now" if ts <= now else f"in {duration(ts - now)}"


def _bars(window: Interval, *layers: tuple[str, Iterable[Interval]]) -> Markup:
    """One timeline bar as inline SVG: each (class, spans) layer drawn on a 0–1000 scale of the window.

    Built here rather than in the template: a page holds thousands of rectangles, and a template loop per
    rectangle was most of the page's time. Only numbers and class names go in. The bar is hidden from screen
    readers: the text printed under it says the same."""
    scale = 1000.0 / max(window.seconds, 1.0)
    rects = "".join(
        f'<rect class="{css}" x="{(span.start - window.start) * scale:.1f}" {_THIN if css == "c-gap" else _FULL} '
        f'width="{max(span.seconds * scale, 0.5):.1f}"/>'
        for css, spans in layers
        for span in spans
    )
    return Markup(f'<svg viewBox="0 0 1000 10" preserveAspectRatio="none" aria-hidden="true">{rects}</svg>')


def _capture_bars(line: CaptureLine, window: Interval) -> Markup:
    lost = [g for g in line.gaps if g.room_active]
    idle = [g for g in line.gaps if not g.room_active]
    return _bars(window, ("c-run", line.runs), ("c-gap", idle), ("c-lost", lost))


TICK_STEPS = (60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600)
# Shape says what colour says, for those who cannot tell the colours apart: capture is a full bar, a gap a
# thin line, capture lost while the room was active a full bar hatched (the page's `#hatch` pattern).
_FULL = 'y="0" height="10"'
_THIN = 'y="3.5" height="3"'


def _ticks(snapshot: StatusSnapshot) -> list[tuple[float, str]]:
    """Round times under the timeline bars (at most 6, `HH:MMZ`), as percentages of the window."""
    if not snapshot.rooms:
        return []
    window = snapshot.rooms[0].window
    step = next((s for s in TICK_STEPS if window.seconds / s <= 6), TICK_STEPS[-1])
    first = (int(window.start) // step + 1) * step
    return [
        ((t - window.start) * 100.0 / window.seconds, time.strftime("%H:%MZ", time.gmtime(t)))
        for t in range(first, int(window.end), step)
    ]


def _line_summary(line: CaptureLine) -> str:
    """The capture line in words: what a screen reader says instead of the bars."""
    lost = [g for g in line.gaps if g.room_active]
    idle = [g for g in line.gaps if not g.room_active]
    parts = [f"{len(line.runs)} run{'s' if len(line.runs) != 1 else ''}"]
    if lost:
        listed = ", ".join(f"{_clock_time(g.start)} to {_clock_time(g.end)} ({duration(g.seconds)})" for g in lost[:3])
        more = f" and {len(lost) - 3} more ({duration(sum(g.seconds for g in lost[3:]))})" if len(lost) > 3 else ""
        parts.append(f"capture lost while the room was active: {listed}{more}")
    if idle:
        parts.append(f"{len(idle)} gap{'s' if len(idle) != 1 else ''} ({duration(sum(g.seconds for g in idle))})")
    if not lost and not idle:
        parts.append("no gap")
    if line.start_may_run:  # drawn as no capture: it is not known to run, nor known not to
        parts.append("its last start is unconfirmed: it may be capturing at the vendor, drawn as no capture")
    return "; ".join(parts)


def _status_label(status: str) -> str:
    return {"stopped": "stopped by the vendor", "dormant": "dormant (empty room)"}.get(status, status)


# --- the JSON twin ---------------------------------------------------------------------------------------


def to_json(snapshot: StatusSnapshot) -> dict[str, Any]:
    """`GET /api/v1/status`: the same snapshot as data (times RFC 3339 UTC, durations in seconds)."""
    r = snapshot.replica
    return {
        "format_version": JSON_FORMAT_VERSION,
        "generated_at": rfc3339(snapshot.generated_at),
        "replica": {
            "role": r.role,
            "detail": r.detail,
            "spec_digest": r.spec_digest,
            "spec_loaded_at": _time(r.spec_loaded_at),
            "spec_summary": r.spec_summary,
            "spec_error": r.spec_error,
            "spec_error_since": _time(r.spec_error_since),
            "prune_held": list(r.prune_held),
            "left_out": {job: list(rooms) for job, rooms in r.left_out},
        },
        "all_running": snapshot.all_running,
        "unknown": snapshot.unknown,
        "needs_attention": snapshot.needs_attention,
        "waiting_for_room": snapshot.waiting,
        "totals": dict(snapshot.totals),
        "jobs_total": snapshot.jobs_total,
        "jobs_removed": snapshot.jobs_removed,
        "attention": [{"job": j.job, "counts": dict(j.counts)} for j in snapshot.attention],
        "attention_more": snapshot.attention_more,
        "query": {
            "job": snapshot.query.job,
            "status": snapshot.query.status,
            "room": snapshot.query.room,
            "page": snapshot.page.number,
            "per_page": snapshot.query.per_page,
            "decisions": snapshot.query.decisions,
        },
        "page": {"number": snapshot.page.number, "pages": snapshot.page.pages, "matching": snapshot.page.matching},
        "jobs": [_job_json(j) for j in snapshot.jobs],
        "rooms": [_room_json(room) for room in snapshot.rooms],
        "decisions": [
            {"at": d.at, "level": d.level, "event": d.event, "key": d.key, "fields": dict(d.fields)}
            for d in snapshot.decisions
        ],
    }


def _time(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


def _job_json(job: JobView) -> dict[str, Any]:
    return {
        "job": job.job,
        "counts": dict(job.counts),
        "groups": [
            {"status": g.status, "count": g.count, "tasks": [_task_json(t) for t in g.tasks]} for g in job.groups
        ],
    }


def _task_json(t: TaskView) -> dict[str, Any]:
    return {
        "key": t.key,
        "target": t.target,
        "provider": t.provider,
        "status": t.status,
        "vendor_task_id": t.vendor_task_id,
        "running_since": _time(t.running_since),
        "stopped_at": _time(t.stopped_at),
        "stop_reason": t.stop_reason,
        "reissue_count": t.reissue_count,
        "reissues": [{"at": rfc3339(x.at), "reason": x.reason} for x in t.reissues],
        "last_error": t.last_error,
        "status_unknown": t.status_unknown,
        "status_unknown_since": _time(t.status_unknown_since),
        "next_observation": _time(t.next_observation),
        "next_attempt": _time(t.next_attempt),
        "prune_held": t.prune_held,
        "submitted_at": _time(t.submitted_at),
        "waits_for_room": t.waits_for_room,
        "start_may_run": t.start_may_run,
    }


def _span_json(span: Interval) -> dict[str, Any]:
    return {"start": rfc3339(span.start), "end": rfc3339(span.end), "seconds": round(span.seconds, 3)}


def _room_json(room: RoomTimeline) -> dict[str, Any]:
    return {
        "room": room.room,
        "account": room.account,
        "window": _span_json(room.window),
        "activity_reported": room.activity_reported,
        "active": [_span_json(a) for a in room.active],
        "lost_seconds": round(room.lost_seconds, 3),
        "captures": [
            {
                "key": c.key,
                "known_since": rfc3339(c.known_since),
                "start_may_run": c.start_may_run,
                "runs": [_span_json(run) for run in c.runs],
                "gaps": [_span_json(g) | {"room_active": g.room_active, "reason": g.reason} for g in c.gaps],
            }
            for c in room.captures
        ],
    }
