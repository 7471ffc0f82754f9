"""What the status page shows, as one immutable value, and the question a request asks of it.

The page (HTML) and its JSON twin are both rendered from a `StatusSnapshot`, so they cannot disagree, and
tests build snapshots by hand instead of running a daemon. A snapshot is one page's worth: the filters and
the pagination of `StatusQuery` are applied when it is built, so a request at 10,000 tasks renders only the
tasks it shows. Times are unix seconds (UTC); the renderers format them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.model import JobKind, TaskStatus
from reconciler.spec.errors import did_you_mean, quote, shorten

__all__ = [
    "DEFAULT_DECISIONS",
    "DEFAULT_PER_PAGE",
    "MAX_DECISIONS",
    "MAX_PER_PAGE",
    "SETTLED",
    "STATUS_ORDER",
    "TIMELINE_SECONDS",
    "CaptureLine",
    "Decision",
    "Gap",
    "Interval",
    "JobView",
    "PageInfo",
    "QueryError",
    "Reissue",
    "Replica",
    "RoomTimeline",
    "StatusGroup",
    "StatusQuery",
    "StatusSnapshot",
    "TaskView",
]

DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 500
DEFAULT_DECISIONS = 50  # recent decisions shown; the ring buffer (reconciler/logs.py) keeps more
MAX_DECISIONS = 500
# Longer filters match no task: refused, so a 60 kB `?job=` is not echoed back into the page (walk 30E-10).
MAX_JOB_CHARS = 76  # `Kind/name`: ThumbnailJob, '/' and a name of at most 63 characters
MAX_ROOM_CHARS = 1024  # a room id is at most 128 bytes; a thumbnail's file id (an OBS object name) 1,024
TIMELINE_SECONDS = 24 * 3600.0
# The order status groups are shown in: what needs a look first, what runs as it should last.
STATUS_ORDER: tuple[str, ...] = tuple(
    s.value
    for s in (
        TaskStatus.FAILED,
        TaskStatus.STOPPED,
        TaskStatus.DORMANT,
        TaskStatus.PENDING,
        TaskStatus.RUNNING,
        TaskStatus.DONE,
        TaskStatus.REMOVED,
    )
)
# Statuses that need no look: running, one-shot done, or a tombstone of a job removed from the specs.
SETTLED = frozenset({TaskStatus.RUNNING.value, TaskStatus.DONE.value, TaskStatus.REMOVED.value})


class QueryError(ValueError):
    """A query parameter the page cannot use; the message names the parameter and what it accepts."""


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """Filters and pagination of one request: `?job=KIND/NAME&status=S&room=R&page=N&per_page=M&decisions=K`.

    `job` is a job's `Kind/name`, or a bare name that matches it in every kind; `status` is a task status; `room`
    a room id (a thumbnail's file id), exact: "was room R captured?" without paging through every job's tasks."""

    job: str | None = None
    status: str | None = None
    room: str | None = None
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    decisions: int = DEFAULT_DECISIONS

    @classmethod
    def parse(cls, given: Mapping[str, str] | Iterable[tuple[str, str]]) -> StatusQuery:
        """`given`: the request's parameters as its (name, value) pairs, or a mapping. A name given twice
        (`?room=a&room=b`) is refused: one of the two would be dropped without a word, and the page would
        answer for one room as if for both."""
        params: dict[str, str] = {}
        for name, value in given.items() if isinstance(given, Mapping) else given:
            if name in params:
                raise QueryError(f"{name[:40]!r} is given more than once: one value per parameter (one room, one job)")
            params[name] = value
        unknown = sorted(set(params) - {"job", "status", "room", "page", "per_page", "decisions"})
        if unknown:
            raise QueryError(
                f"unknown query parameter {unknown[0]!r} (known: job, status, room, page, per_page, decisions)"
            )
        status = params.get("status") or None
        if status is not None and status not in STATUS_ORDER:
            raise QueryError(f"status must be one of {', '.join(STATUS_ORDER)}; got {status[:40]!r}")
        job, room = (params.get("job") or "").strip() or None, (params.get("room") or "").strip() or None
        for name, value, most, what in (
            ("job", job, MAX_JOB_CHARS, "a job's Kind/name"),
            ("room", room, MAX_ROOM_CHARS, "a room id or a thumbnail's file id"),
        ):
            if value is not None and len(value) > most:
                raise QueryError(f"{name} must be {what}, at most {most} characters; got {quote(value)}")
        if job is not None:
            _check_job(job)
        return cls(
            job=job,
            status=status,
            room=room,
            page=_int_param(params, "page", 1, 1, 1_000_000),
            per_page=_int_param(params, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE),
            decisions=_int_param(params, "decisions", DEFAULT_DECISIONS, 0, MAX_DECISIONS),
        )

    def matches_job(self, job: str) -> bool:
        """`job` is `Kind/name`."""
        if self.job is None:
            return True
        return job == self.job or job.split("/", 1)[1] == self.job

    def matches_key(self, key: str) -> bool:
        """The `job` and `room` filters on a task key (`Kind/name/room`); `status` is the record's."""
        kind, name, target = key.split("/", 2)
        return (self.room is None or target == self.room) and self.matches_job(f"{kind}/{name}")

    @property
    def filtered(self) -> bool:
        """Some tasks may be left out: the page says "matching" and offers to clear the filters."""
        return self.job is not None or self.status is not None or self.room is not None


_WHOLE = re.compile(r"-?[0-9]+")
_KINDS = tuple(kind.value for kind in JobKind)


def _check_job(job: str) -> None:
    """A `job` no job can have is refused, not answered "No task matches." as if the job had no task: another
    kind (`snapshotjob/…`), or a task key copied from `capctl state list` (walk 60c-5)."""
    if "/" not in job:
        return
    kind, name = job.split("/", 1)
    if kind not in _KINDS:
        kinds = ", ".join(_KINDS)
        raise QueryError(
            f"job must be a job's Kind/name (kinds: {kinds}) or a bare name; got {quote(job)}"
            + did_you_mean(kind, _KINDS)
        )
    if "/" in name:
        name, room = name.split("/", 1)
        raise QueryError(
            f"job must be a job's Kind/name or a bare name; got {quote(job)}, a task key: its job is"
            f" job={kind}/{name}, its room room={room}"
        )


def _int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    # Digits as written in a URL: `int` also takes `1_0`, ` 5`, `+5` and other scripts' digits (`１`, `١`).
    if _WHOLE.fullmatch(text) is None:
        raise QueryError(f"{name} must be a whole number from {low} to {high}; got {text[:40]!r}")
    try:
        value = int(text)
    except ValueError:  # over 4,300 digits (Python's limit on converting text): no page number either
        value = high + 1
    if not low <= value <= high:
        raise QueryError(f"{name} must be from {low} to {high}; got {shorten(text)}")
    return value


@dataclass(frozen=True, slots=True)
class Reissue:
    """A run the vendor ended and capctl started again: when the new run started, and why the old one ended."""

    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class TaskView:
    key: str
    job: str  # Kind/name
    target: str  # room id, or file id for thumbnails
    provider: str
    status: str
    vendor_task_id: str | None
    running_since: float | None  # the current run's start, while it runs
    stopped_at: float | None
    stop_reason: str | None
    reissue_count: int  # over the task's life, from the state
    reissues: tuple[Reissue, ...]  # the ones within the timeline window that this daemon saw, newest first
    last_error: str | None
    status_unknown: str | None  # why the last look at the vendor failed: the record's status is not confirmed
    next_observation: float | None  # when the daemon next asks the vendor about it
    next_attempt: float | None  # a dormant or backing-off task: when it is started again at the latest
    # Removed from the specs, its stop held back by --max-prune (`Replica.prune_held`): nothing is attempted for
    # it until a human acts, so a pending one cut short by the removal shows why it waits, not a bare "—".
    prune_held: bool = False
    # A thumbnail's one call: a one-shot task has no run and nothing stops it, so this is its only time.
    submitted_at: float | None = None
    # A room-selector task stopped with no slot: it starts when its room is selected again (active, within
    # maxRooms), not at a time; a bare "—" read as "nothing will ever start it" (walk 25e).
    waits_for_room: bool = False
    # A failed start that may run all the same (`transitions.failed_may_run`): its error alone read as a start
    # refused outright, where nothing runs (walk 47B-3).
    start_may_run: bool = False
    # The first of the failed looks in a row (with `status_unknown`): since when the daemon cannot see the task.
    status_unknown_since: float | None = None


@dataclass(frozen=True, slots=True)
class StatusGroup:
    status: str
    count: int  # every task of the job with this status
    tasks: tuple[TaskView, ...]  # those on this page


@dataclass(frozen=True, slots=True)
class JobView:
    job: str  # Kind/name
    counts: tuple[tuple[str, int], ...]  # (status, tasks) in STATUS_ORDER, only statuses present
    groups: tuple[StatusGroup, ...]  # groups with tasks on this page, in STATUS_ORDER

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)


@dataclass(frozen=True, slots=True)
class Interval:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Gap(Interval):
    """A time within the window when the task was declared but no capture ran."""

    room_active: bool  # the room had someone in it meanwhile (capture was lost, not merely idle)
    reason: str | None  # why the run before it ended


@dataclass(frozen=True, slots=True)
class CaptureLine:
    key: str
    runs: tuple[Interval, ...]
    gaps: tuple[Gap, ...]
    known_since: float  # history before this time is unknown (daemon start, or the task's first run)
    # Its task's last start may run unconfirmed (`transitions.failed_may_run`): its bars draw no run there, which
    # alone read as capture lost for sure beside the task's `start_may_run` (walk 50D-1).
    start_may_run: bool = False


@dataclass(frozen=True, slots=True)
class RoomTimeline:
    room: str
    account: str  # the vendor account the room is of (`volcengine:APPID`): rooms of two apps may share an id
    window: Interval
    active: tuple[Interval, ...]  # when the room had activity (room callbacks); empty when none was reported
    activity_reported: bool  # a room callback was seen for this room in the window (else `active` says nothing)
    captures: tuple[CaptureLine, ...]

    @property
    def lost_seconds(self) -> float:
        """Seconds of the window when the room was active and some task of it captured nothing."""
        return sum(g.seconds for c in self.captures for g in c.gaps if g.room_active)


@dataclass(frozen=True, slots=True)
class Decision:
    """One recent log event of the daemon, as logged (secrets already scrubbed by the log pipeline)."""

    at: str  # the log line's timestamp (ISO 8601 UTC)
    level: str
    event: str
    key: str | None
    fields: tuple[tuple[str, str], ...]  # the other fields, as text


@dataclass(frozen=True, slots=True)
class Replica:
    role: str  # "leader" (holds the state lease and acts) or "standby"
    detail: str  # why, in words
    spec_digest: str | None  # of the spec set in force; None before the first valid load
    spec_loaded_at: float | None
    spec_summary: str | None
    spec_error: str | None  # the last invalid spec set (the previous valid one stays in force)
    spec_error_since: float | None
    prune_held: tuple[str, ...] = ()  # removed from the specs, not stopped: more than --max-prune at once
    max_prune: float | None = None  # the daemon's --max-prune, in percent
    # Active rooms a room-selector job covers but does not capture (past its maxRooms): no task says so.
    left_out: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (job, rooms), by job
    # Room-selector jobs in force: a standby, which selects no room, says where their rooms left out are.
    room_selectors: int = 0


@dataclass(frozen=True, slots=True)
class PageInfo:
    number: int
    per_page: int
    matching: int  # tasks matching the filters
    pages: int

    @property
    def first(self) -> int:
        """1-based index of the first task on this page (0 when none)."""
        return 0 if self.matching == 0 else (self.number - 1) * self.per_page + 1

    @property
    def last(self) -> int:
        return min(self.matching, self.number * self.per_page)


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    generated_at: float
    replica: Replica
    totals: tuple[tuple[str, int], ...]  # every task by status (unfiltered), in STATUS_ORDER
    jobs_total: int  # every job with a record, its tombstones' too
    attention: tuple[JobView, ...]  # jobs with a task that is not running, most troubled first (bounded)
    attention_more: int  # troubled jobs left out of `attention`
    job_names: tuple[str, ...]  # every job, for the filter's choices
    query: StatusQuery
    page: PageInfo
    jobs: tuple[JobView, ...]  # the jobs with tasks on this page
    rooms: tuple[RoomTimeline, ...]  # rooms of the tasks on this page
    decisions: tuple[Decision, ...]  # newest first, filtered
    unknown: int = 0  # tasks whose last look at the vendor failed (unfiltered): their status is not confirmed
    # Room-selector tasks stopped with their room, started when it is selected again (unfiltered): counted as
    # stopped, shown, but no trouble, as a paused resource is not a degraded one in Argo CD's health.
    waiting: int = 0
    # Jobs whose every task is removed (tombstones): counted in `jobs_total`, not by the spec set's summary.
    jobs_removed: int = 0

    @property
    def settled(self) -> bool:
        """Every record says running, done or removed, or waits for its room (whether or not the vendor
        confirmed it)."""
        return sum(n for s, n in self.totals if s not in SETTLED) == self.waiting

    @property
    def needs_attention(self) -> bool:
        """A task is failed, pending, dormant, stopped other than waiting for its room, or of unknown status."""
        return not self.settled or bool(self.unknown)

    @property
    def running(self) -> int:
        """Tasks recorded running (unfiltered)."""
        return dict(self.totals).get(TaskStatus.RUNNING.value, 0)

    @property
    def done(self) -> int:
        """One-shot tasks done (unfiltered): thumbnails submitted, runs ended under restartPolicy Never. Not
        running captures: the top of the page says them apart (walk 60a)."""
        return dict(self.totals).get(TaskStatus.DONE.value, 0)

    @property
    def all_running(self) -> bool:
        """Literally: no task failed, stopped, dormant or pending, and none of unknown status."""
        return not self.needs_attention and not self.waiting
