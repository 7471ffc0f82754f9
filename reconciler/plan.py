"""The diff: desired tasks × recorded state × observed vendor status → a Plan. Pure.

No network, no clock reads, no globals: `now` is passed in. The JSON form built here is the one
versioned, saved format; text and markdown views are rendered from it (render.py).
Each change carries a reason a human understands; the reason explains the action, it never decides it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NotRequired, TypedDict

from reconciler import stopreasons, transitions
from reconciler.gcpause import gc_paused
from reconciler.model import (
    Action,
    ApiFamily,
    Change,
    DesiredTask,
    JobKind,
    Observed,
    ObservedState,
    RestartPolicy,
    TaskRecord,
    TaskStatus,
    job_of,
)
from reconciler.redact import escape_unprintable, redact_tree

__all__ = [
    "ChangeJSON",
    "Plan",
    "PlanError",
    "PlanJSON",
    "PlanOptions",
    "Selection",
    "check_options",
    "check_selector",
    "check_stoppable",
    "diff",
    "field_changes",
    "fmt_seconds",
    "fmt_time",
    "key_selector",
    "keys_matching",
    "label_matcher",
    "labels_known",
    "literal_hint",
    "near_key_hint",
    "parse_rfc3339",
    "plan_from_json",
    "plan_to_json",
    "rfc3339",
    "selector_matches",
    "selector_room_hint",
    "waited_after",
    "walks",
]

# 2: `created_at` is an RFC 3339 UTC time ("2026-12-05T18:04:00Z"), no longer epoch seconds. Version-1 files
# (epoch seconds) are still read: a saved plan lives minutes, but one may be made by an older capctl in CI.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
ACTION_ORDER = (
    Action.CREATE,
    Action.UPDATE,
    Action.REPLACE,
    Action.REISSUE,
    Action.DELETE,
    Action.MOVE,
    Action.NOOP,
)
MAX_DETAIL_LINES = 12


class ChangeJSON(TypedDict):
    """One change in the JSON form of a plan (`changes[i]`)."""

    key: str
    action: str  # an `Action` value
    reason: str
    provider: str
    family: str  # an `ApiFamily` value
    before_hash: str | None
    after_hash: str | None
    details: list[str]
    before: dict[str, Any] | None  # redacted request recorded in state
    after: dict[str, Any] | None  # redacted request the specs imply


class PlanJSON(TypedDict):
    """The JSON form of a plan: what `plan --format json` prints, a saved plan file holds, and views render."""

    format_version: int
    state_serial: int
    created_at: str  # RFC 3339 UTC
    refreshed: bool
    prune: bool
    targets: list[str]
    replace: list[str]
    labels: list[str]
    partial: bool
    paths: list[str]
    summary: dict[str, int]  # by `Action` value
    # How many of the no-ops are spec edits waiting for their room (`Plan.edits_waiting`); absent before them.
    edits_waiting: NotRequired[int]
    notes: list[str]
    unobserved: list[str]
    changes: list[ChangeJSON]
    selectors: NotRequired[list[dict[str, Any]]]  # room-selector jobs (`rooms.selector_view`); absent before them


class PlanError(Exception):
    """A plan cannot be made or read (bad selector, unreadable or incompatible plan file)."""


@dataclass(frozen=True, slots=True)
class PlanOptions:
    prune: bool = True
    refreshed: bool = True
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # label selectors (`-l`): every one must hold


@dataclass(frozen=True, slots=True)
class Plan:
    state_serial: int
    created_at: float
    options: PlanOptions
    paths: tuple[str, ...]
    changes: tuple[Change, ...]
    notes: tuple[str, ...] = ()
    unobserved: tuple[str, ...] = ()  # tasks whose vendor status could not be read: left as is, plan incomplete
    format_version: int = FORMAT_VERSION
    selectors: tuple[dict[str, Any], ...] = ()  # one JSON view per room-selector job (`rooms.selector_view`)

    def __repr__(self) -> str:
        # Short on purpose: asyncio formats the result of the task it ran (CPython 3.11's signal-handler
        # restore in asyncio.run reprs it), and 10,000 changes took most of a second to print.
        counts = ", ".join(f"{a.value} {n}" for a, n in self.counts().items() if n)
        return f"Plan(state_serial={self.state_serial}, changes={len(self.changes)} ({counts or 'none'}))"

    @property
    def partial(self) -> bool:
        """Narrowed by --target or -l (`--replace` alone plans the whole set, as Terraform's -replace)."""
        return bool(self.options.targets or self.options.labels)

    def edits_waiting(self) -> int:
        """The no-ops whose spec changed: edits of tasks dormant in a room known empty, which wait for the room
        (`_waiting`). Not in sync, so no headline may say the jobs match (walk 17c). A task that could not be
        observed is left as is whatever its spec: not one of them; nor a thumbnail, which never waits for a room
        (its no-op under another hash is an edit not taken reverted to the submission taken: `reverted`)."""
        unseen = set(self.unobserved)
        return sum(
            1
            for c in self.changes
            if c.action is Action.NOOP
            and c.before_hash != c.after_hash
            and c.after_hash
            and c.key not in unseen
            and c.family is not ApiFamily.ZEGO_THUMBNAIL
        )

    def counts(self) -> dict[Action, int]:
        counts = dict.fromkeys(ACTION_ORDER, 0)
        for change in self.changes:
            counts[change.action] += 1
        return counts

    @property
    def actionable(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action is not Action.NOOP)

    @property
    def has_changes(self) -> bool:
        return any(c.action is not Action.NOOP for c in self.changes)


# --- selectors -------------------------------------------------------------------------------------


def _glob_matches(pattern: str, text: str) -> bool:
    """Whether `text` is `pattern` with each `*` standing for any text ("/" included: file ids contain it); `?`
    and `[` are literal in keys. Each literal piece is found leftmost, in one pass: the regex this was made
    backtracked exponentially in the stars (`SnapshotJob/************z` held the daemon's loop for minutes on
    one key), and any client that reaches sync or wake, or a shell's `state list`, chooses the glob."""
    first, *rest = pattern.split("*")
    if not rest:
        return text == pattern
    last = rest.pop()
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    at, end = len(first), len(text) - len(last)
    for piece in rest:
        if (found := text.find(piece, at, end)) < 0:
            return False
        at = found + len(piece)
    return True


def literal_hint(selector: str) -> str:
    """What to add when a task-key glob matched nothing and holds `?` or `[`: wildcards in a room selector's
    globs, themselves in task keys (`_glob_matches`), so `SnapshotJob/classes/class-?` silently matched nothing."""
    if "?" in selector or "[" in selector:
        return " (in task keys only * is a wildcard: ? and [ stand for themselves, unlike in room selectors)"
    return ""


def near_key_hint(selector: str, keys: Iterable[str]) -> str:
    """What to add when a task-key selector matched none of `keys`: the `?`/`[` hint, else the nearest job of
    its kind by name (`SnapshotJob/lobby` → `SnapshotJob/lobby-audit`), or, its job known, the nearest room.
    Names are compared, not whole keys: their shared `Kind/` made every job of a kind look near (walk 14b)."""
    if hint := literal_hint(selector):
        return hint
    kind, _, rest = selector.partition("/")
    name, slash, room = rest.partition("/")
    if "*" in name:
        return ""
    keys = list(keys)
    names = {k.split("/", 2)[1] for k in keys if k.startswith(f"{kind}/")}
    if name in names:
        if not slash or "*" in room:
            return ""
        rooms = [k.split("/", 2)[2] for k in keys if k.startswith(f"{kind}/{name}/")]
        near = difflib.get_close_matches(room, rooms, n=1, cutoff=0.6)
        # A room from a state an older capctl wrote may hold an escape sequence: escaped, as `state list` shows it.
        return f" (did you mean {kind}/{name}/{escape_unprintable(near[0])}?)" if near else ""
    near = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
    return f" (did you mean {kind}/{near[0]}{slash}{room}?)" if near else ""


def selector_room_hint(key: str, keys: Iterable[str], record_of: Callable[[str], TaskRecord | None]) -> str:
    """Why a room-selector job's room has no task, where a room's "did you mean" alone would send the on-call
    to another room when this one's name is right: the job does not capture it now (walk 25e; `state show`,
    and `wake`, walk 26d-9). `keys` are the state's, `record_of` reads one of them."""
    if key.count("/") < 2 or "*" in key:
        return ""
    job = job_of(key)
    sibling = next((k for k in keys if job_of(k) == job), None)
    record = record_of(sibling) if sibling is not None else None
    if record is None or record.selector is None:
        return ""
    return (
        f"; {job} picks its rooms with a selector ({record.selector}) and has no task for this room now: a room"
        " it does not cover, one no callback said active, one left out past the job's maxRooms, or another job's"
        " (the status page lists the rooms left out; the daemon logs `room selector at maxRooms` and `room"
        " selector clash`: docs/daemon.md, Room-selector jobs)"
    )


def labels_known(label_sets: Iterable[Mapping[str, str]], where: str) -> str:
    """` (labels WHERE: k=v, …)`, the labels there are, for a `-l` that matched nothing: a typo (`tier=gld`)
    shows itself (walk 14b; plan's note too, walk 27b); "" when there are none."""
    known = sorted({f"{k}={v}" for labels in label_sets for k, v in labels.items()})
    return f" (labels {where}: {', '.join(known[:20])}{', …' if len(known) > 20 else ''})" if known else ""


def selector_matches(selector: str, key: str) -> bool:
    """`kind/name/target` or `kind/name`, where `*` in the name or target part matches any text.

    Terraform's -target, for task keys: `SnapshotJob/lobby-audit/lobby`, `SnapshotJob/lobby-audit`,
    `SnapshotJob/*` (every job of a kind), `SnapshotJob/lobby-*/vip-*`. The kind is always spelled out.
    """
    if selector == key:
        return True
    parts = selector.split("/", 2)
    fields = key.split("/", 2)  # kind and name never contain "/"; file ids may
    if len(parts) < 2 or len(fields) < 3 or parts[0] != fields[0]:
        return False
    if not _glob_matches(parts[1], fields[1]):
        return False
    return len(parts) == 2 or _glob_matches(parts[2], fields[2])


def keys_matching(selectors: Iterable[str], keys: Collection[str]) -> dict[str, list[str]]:
    """Each of `selectors` (once each) with the `keys` it matches (`selector_matches`), in their order. A whole
    task key (no `*`, three parts) matches itself alone, so it is looked up, not compared with every key: a
    `wake --daemon` of 1,000 keys at 10,000 tasks made 10 million comparisons, seconds on the daemon's loop.
    So does one of the `keys` that holds `*` (`key_selector`). `keys` given as a set (the daemon's sync) is
    looked in as it is, not copied at each request."""
    present = keys if isinstance(keys, set | frozenset) else set(keys)
    longest: list[int] = []  # the longest key's length, measured at the first walk

    def matches(selector: str) -> list[str]:
        if selector in present or not walks(selector):
            return [selector] if selector in present else []
        # A glob's characters but `*` are all in any key it matches: one longer than every key matches none,
        # and a run of `*` is one `*`. So a walk costs what the keys cost, whatever the glob's size: a 900 kB
        # glob sent to sync walked 10,000 keys for two minutes on the daemon's loop (walk 55c-1).
        longest[:] = longest or [max(map(len, keys), default=0)]
        if len(selector) - selector.count("*") > longest[0]:
            return []
        glob = _STARS.sub("*", selector)
        return [key for key in keys if selector_matches(glob, key)]

    return {selector: matches(selector) for selector in dict.fromkeys(selectors)}


def walks(selector: str) -> bool:
    """Whether `keys_matching` compares `selector` with every key (a job, or a glob) rather than looking it up
    (a whole task key): what the daemon's sync and wake bound per request (`daemon.http.MAX_WALKS`)."""
    return "*" in selector or selector.count("/") < 2


def key_selector(selectors: Collection[str], keys: Collection[str]) -> Callable[[str], bool]:
    """Whether a key is one `selectors` select, among the `keys` known: one of them given whole selects that
    task alone, even when it holds `*` (a file id `rec/*.mp4`, a room id): copied from `state list` into `state
    rm`, it forgot every task it matched as a glob (walk 43d-3). Any other selector is a glob, as before."""
    exact = {selector for selector in selectors if selector in keys}
    globs = [selector for selector in selectors if selector not in exact]
    return lambda key: key in exact or any(selector_matches(selector, key) for selector in globs)


def check_selector(selector: str, option: str = "--target") -> None:
    parts = selector.split("/", 2)
    if len(parts) < 2 or not all(parts) or parts[0] not in {k.value for k in JobKind}:
        kinds = ", ".join(k.value for k in JobKind)
        raise PlanError(
            f"{option} {selector!r}: expected kind/name/room (a task key), kind/name, or either with * in the "
            f"name or room part (SnapshotJob/*, SnapshotJob/lobby-*/vip-*); kind is one of {kinds}"
        )


def label_matcher(selectors: Iterable[str]) -> Callable[[Mapping[str, str]], bool]:
    """A test of a task's labels against kubectl-style selectors: all of them must hold.

    Each selector is a comma list of requirements, all of which must hold: `key=value` (also `key==value`),
    `key!=value` (true when the label is absent, as in kubectl), `key` (the label is set), `!key` (it is not).
    Raises `PlanError` naming a malformed selector.
    """
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for selector in selectors:
        for requirement in selector.split(","):
            tests.append(_requirement(requirement.strip(), selector))
    return lambda labels: all(test(labels) for test in tests)


# A key as the specs allow it (any printable text: `团队`, `צוות`; kubectl's ASCII-only grammar refused labels a
# spec had, walk 16B-4), without what the selector syntax itself uses.
_LABEL_KEY = re.compile(r"[^\s=!,]+")
_STARS = re.compile(r"\*{2,}")


def _requirement(text: str, selector: str) -> Callable[[Mapping[str, str]], bool]:
    key, op, value = text, "", ""
    for candidate in ("!=", "==", "="):
        if candidate in text:
            key, _, value = text.partition(candidate)
            op = candidate
            break
    key, value = key.strip(), value.strip()
    negated = not op and key.startswith("!")
    key = key.removeprefix("!").strip() if negated else key
    if not (_LABEL_KEY.fullmatch(key) and key.isprintable()) or any(c in value for c in "=!, "):
        # A spec may hold such a label (`team: a b`, for other tooling): say which part -l cannot take.
        # (Not for kubectl's set-based `team in (a,b)`, which capctl does not take at all.)
        part = "(" not in text and next((p for p in (key, value) if p and not _LABEL_KEY.fullmatch(p)), None)
        why = f" ({part!r}: -l takes no key or value holding a space, '=', '!' or ',')" if part else ""
        raise PlanError(
            f"-l {selector!r}: expected key=value, key!=value, key or !key (comma-separated, all must hold){why}"
        )
    if op == "!=":
        return lambda labels: labels.get(key) != value
    if op:
        return lambda labels: labels.get(key) == value
    if negated:
        return lambda labels: key not in labels
    return lambda labels: key in labels


class Selection:
    """Which tasks a plan covers: every task, unless --target or -l narrow it; --replace keys always."""

    def __init__(self, options: PlanOptions, known: Collection[str] = ()) -> None:
        """`known`: the task keys there are (the specs' and the state's), so a target that is one of them
        selects that task alone (`key_selector`)."""
        self._targets = options.targets
        self._targeted = key_selector(options.targets, known)
        self._replace = frozenset(options.replace)
        self._labels = label_matcher(options.labels)
        self._narrowed = bool(options.targets or options.labels)

    def __call__(self, key: str, labels: Mapping[str, str]) -> bool:
        if not self._narrowed or key in self._replace:
            return True
        if self._targets and not self._targeted(key):
            return False
        return self._labels(labels)


def check_options(options: PlanOptions, desired: Mapping[str, DesiredTask]) -> None:
    """Reject bad selectors and unknown --replace keys before anything is observed or decided."""
    for selector in options.targets:
        check_selector(selector)
    label_matcher(options.labels)
    unknown = [k for k in options.replace if k not in desired]
    if unknown:
        raise PlanError(f"--replace: no task with key {', '.join(sorted(unknown))} in the specs")


# --- formatting helpers (pure) ---------------------------------------------------------------------


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def rfc3339(ts: float) -> str:
    """Unix seconds as an RFC 3339 UTC time, to the second: `2026-12-05T18:04:00Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_rfc3339(text: object) -> float:
    """An RFC 3339 time with its offset (`Z` or `±hh:mm`) as unix seconds; ValueError otherwise."""
    try:
        parsed = datetime.fromisoformat(text) if isinstance(text, str) and "T" in text else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(f"created_at {text!r} is not an RFC 3339 time with its offset, e.g. 2026-12-05T18:04:00Z")
    return parsed.timestamp()


def fmt_seconds(seconds: int) -> str:
    parts = []
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs or not parts:
        parts.append(f"{secs}s")
    return "".join(parts)


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def field_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Human lines for what differs between two redacted requests: `Path: old → new`."""
    flat_before, flat_after = _flatten(before or {}), _flatten(after or {})
    lines = []
    for path in sorted(flat_before.keys() | flat_after.keys()):
        old, new = flat_before.get(path, "(unset)"), flat_after.get(path, "(unset)")
        if old != new:
            lines.append(f"{path}: {_show(old)} → {_show(new)}")
    if len(lines) > MAX_DETAIL_LINES:
        lines = [*lines[:MAX_DETAIL_LINES], f"… and {len(lines) - MAX_DETAIL_LINES} more"]
    return tuple(lines)


def _show(value: object) -> str:
    return value if isinstance(value, str) else repr(value)


def _updatable_details(before: Mapping[str, int], after: Mapping[str, int]) -> tuple[str, ...]:
    lines = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old != new:
            lines.append(
                f"{name} {fmt_seconds(old) if old is not None else '(unset)'} → "
                f"{fmt_seconds(new) if new is not None else '(unset)'}"
            )
    return tuple(lines)


def _mark_forcing(details: tuple[str, ...], updatable: Mapping[str, int]) -> tuple[str, ...]:
    """A replace that also changes a field the vendor updates in place (a Volcengine interval) marks the
    fields that force it, as Terraform does: alone, the interval would have been an update."""
    names = {name.lower() for name in updatable}

    def in_place(line: str) -> bool:
        return line.split(": ", 1)[0].rsplit(".", 1)[-1].lower() in names

    if not any(in_place(line) for line in details):
        return details  # every line forces it, as the reason says
    return tuple(
        line if in_place(line) or line.startswith("… and ") else f"{line} (forces the replace)" for line in details
    )


# --- the diff --------------------------------------------------------------------------------------


def _change(
    action: Action,
    reason: str,
    task: DesiredTask | None,
    record: TaskRecord | None,
    details: tuple[str, ...] = (),
    after: dict[str, Any] | None = None,
) -> Change:
    ref = task if task is not None else record
    assert ref is not None
    return Change(
        key=ref.key,
        action=action,
        reason=reason,
        provider=ref.provider,
        family=ref.family,
        before_hash=record.spec_hash if record else None,
        after_hash=task.spec_hash if task else None,
        details=details,
        before=record.request if record and record.request else None,
        after=after,
    )


def stop_description(obs: Observed, record: TaskRecord, now: float) -> str:
    """Why and when the vendor stopped it, in the stop-reason vocabulary (the providers' `Observed.reason`);
    when on the daemon's clock, as the record will say it (`transitions.laid_end`), not the vendor's."""
    what = obs.reason or obs.detail or obs.state.value
    if obs.state is ObservedState.NOT_FOUND:
        return f"{stopreasons.NOT_FOUND} (stopped, or older than its query window)"
    ended = transitions.laid_end(record, obs, now)
    return what if ended is None else f"{what} at {fmt_time(ended)}"


# A thumbnail edit not taken: refused (failed), or sent and its answer lost (pending: ZEGO may have made those
# thumbnails too, which capctl cannot tell nor undo). Either way the entry edited back needs no new submission.
_UNTAKEN = "{} submission was refused or its answer lost"


def _diff_one(
    task: DesiredTask,
    record: TaskRecord | None,
    obs: Observed | None,
    replace_requested: bool,
    after: dict[str, Any] | None,
    now: float,
) -> Change:
    if record is None:
        return _change(Action.CREATE, "new task: not in state", task, None, after=after)
    if replace_requested:  # what else changed is shown too: it is started with the new spec
        changed = field_changes(record.request, after) if record.spec_hash != task.spec_hash else ()
        return _change(Action.REPLACE, _requested(task, record), task, record, changed, after)
    if transitions.reverted(task, record):
        reason = f"back to the entry ZEGO took before ({_UNTAKEN.format('its later')}): not submitted again"
        return _change(Action.NOOP, reason, task, record, after=after)
    if record.status is TaskStatus.REMOVED:
        return _diff_restored(task, record, after)
    # The daemon chose to leave a dormant or backing-off task alone; only --replace or `capctl wake` overrides
    # that on purpose (a changed spec is a replace, as for any stopped task, unless it waits for its room's
    # activity: `transitions.waits_for_room`; a task seen running is just running).
    if _left_waiting(task, record, now) and not _seen_running(obs):
        return _waiting(task, record, after)
    if obs is not None and obs.state is ObservedState.UNKNOWN:
        # Its status could not be read: left as is, whatever changed (the plan lists it so and is incomplete).
        return _change(
            Action.NOOP, f"could not observe it ({obs.detail or 'error'}); left as is", task, record, after=after
        )
    if record.status is TaskStatus.PENDING and not record.vendor_task_id and record.spec_hash == task.spec_hash:
        what = "the start of a replace (its old run stopped)" if record.replacing else "an earlier start"
        reason = f"{what} was not confirmed (interrupted): {_resumed(record)}"
        return _change(_start_again(record), reason, task, record, after=after)
    if record.spec_hash != task.spec_hash:
        return _diff_changed(task, record, obs, after, now)
    if task.family is ApiFamily.ZEGO_THUMBNAIL:
        if record.status is TaskStatus.FAILED:
            return _change(
                Action.CREATE, f"previous submission failed: {record.last_error or 'error'}", task, record, after=after
            )
        return _change(Action.NOOP, "submitted; unchanged since", task, record, after=after)
    return _diff_same(task, record, obs, after, now)


def _moved(change: Change, old: str, task: DesiredTask, new: str) -> Change:
    """A change of a task whose record was re-homed from Provider `old` to `new` (same vendor account; the
    task's, or for a task moved to another vendor API a declared one of the old run's home)."""
    if change.action is Action.NOOP:  # one reason for every task of the job: the text view shows it in one line
        reason = f"provider {old} → {new}, same account ({task.home}): record re-homed, no vendor call"
        return dataclasses.replace(change, action=Action.MOVE, reason=reason)
    line = f"provider: {old} → {new} (same account: re-homed)"
    return dataclasses.replace(change, details=(line, *change.details))


def _start_again(record: TaskRecord) -> Action:
    """A start tried again (cut short, or failed) is what it was: a re-issue of a run that ended, a replace's
    start (its old run stopped: `transitions.replace_resumed`), or a create."""
    if record.reissuing:
        return Action.REISSUE
    return Action.REPLACE if record.replacing else Action.CREATE


def _resumed(record: TaskRecord) -> str:
    """How a start cut short (a crash, a second Ctrl-C) is taken up again, and what it may leave behind."""
    if record.client_task_id:
        return "resuming with its recorded ClientTaskId"
    if record.family is ApiFamily.ZEGO_THUMBNAIL:
        return "submitting it again (if the first submission reached ZEGO, its thumbnails are made twice)"
    if record.family is ApiFamily.ZEGO_RECORD_LEGACY:
        return (
            "starting it again (the legacy API cannot find the first recording; if it runs, it ends by itself at "
            "its idle timeout or its maximum duration)"
        )
    return "starting it again (by the same RoomId + TaskId: a run that did start goes on)"


def waited_after(record: TaskRecord) -> str:
    """What a dormant or backing-off task waits after, as `dormant after …` and `capctl wake` say it."""
    runs, faults = transitions.run_counts(record)
    if faults and record.status is not TaskStatus.DORMANT:
        return f"{faults} vendor fault{'' if faults == 1 else 's'} in a row"
    # Room callbacks said its room is empty (`room_empty`): why it is dormant after one idle run, and what wakes
    # it; "1 idle run" read as the backoff of a room nobody reports on (walk 25e).
    if runs == 0 or faults or (record.status is TaskStatus.DORMANT and record.room_empty):
        return "its room emptied"
    return f"{runs} idle run{'' if runs == 1 else 's'}"


def _seen_running(obs: Observed | None) -> bool:
    return obs is not None and obs.state is ObservedState.RUNNING


def _left_waiting(task: DesiredTask, record: TaskRecord, now: float) -> bool:
    """Whether the daemon chose to leave the task waiting, which a plan respects as the daemon does: dormant,
    or stopped and backing off (idle runs, vendor faults) until a re-issue slot still ahead. A PR's plan or an
    hourly drift check would otherwise report the daemon's own backoff as changes, and apply would re-issue
    into the empty room the backoff spares."""
    if record.spec_hash != task.spec_hash:
        # A changed spec is a replace, as for any stopped task, unless its room is known empty: then the edit
        # waits, as the task does, for the room's activity (it would capture nothing until then).
        return transitions.waits_for_room(task, record)
    if record.status is TaskStatus.DORMANT:
        # A job made restartPolicy Never since: nothing re-issues it, its slot included (walk 31a-3).
        return task.restart_policy is RestartPolicy.ALWAYS
    return (
        record.status is TaskStatus.STOPPED
        and task.restart_policy is RestartPolicy.ALWAYS
        and record.next_attempt_at is not None
        and record.next_attempt_at > now
    )


# How `capctl wake` reaches a running daemon (offline it needs the lock the daemon holds): one wording for the
# single task's reason and the note on several (walk 19a).
_WAKE_VIA_DAEMON = "with --daemon URL while a daemon runs"


def _waiting(task: DesiredTask, record: TaskRecord, after: dict[str, Any] | None) -> Change:
    slot = f"at {fmt_time(record.next_attempt_at)}" if record.next_attempt_at else "when the daemon next decides"
    edited = record.spec_hash != task.spec_hash  # what changed is shown, and when it is started with it
    wakes = "starts with the new settings" if edited else "wakes"
    how = (
        f"dormant after {waited_after(record)}; {wakes} on room activity or {slot}"
        if record.status is TaskStatus.DORMANT
        else f"backing off after {waited_after(record)}; the daemon re-issues it {slot}"
    )
    details: tuple[str, ...] = ()
    if edited:
        how = f"spec changed: {how}"
        details = field_changes(record.request, after) or ("spec changed (content hash differs)",)
    reason = f"{how} (`capctl wake {task.key}`, {_WAKE_VIA_DAEMON}, or --replace starts it now)"
    return _change(Action.NOOP, reason, task, record, details, after)


def _diff_restored(task: DesiredTask, record: TaskRecord, after: dict[str, Any] | None) -> Change:
    """Back in the specs after it was pruned: its tombstone keeps its history, so it resumes, not restarts."""
    when = f"removed at {fmt_time(record.removed_at)}"
    if task.family is ApiFamily.ZEGO_THUMBNAIL:
        if record.spec_hash == task.spec_hash and record.vendor_task_id:
            reason = f"restored to the specs ({when}); submitted before with the same content, not again"
            return _change(Action.NOOP, reason, task, record, after=after)
        details = field_changes(record.request, after)
        return _change(Action.CREATE, f"restored to the specs ({when}): submitted again", task, record, details, after)
    if record.spec_hash != task.spec_hash and transitions.findable_start(task, record):
        # Its removal left a start never confirmed, which may run: a start of the new spec would run beside it.
        reason = f"restored to the specs ({when}), changed; its last start was never confirmed: "
        return _change(
            Action.REPLACE,
            reason + _unconfirmed_stop(task, record),
            task,
            record,
            field_changes(record.request, after),
            after,
        )
    reissues = f"{record.reissue_count} re-issue{'' if record.reissue_count == 1 else 's'}"
    reason = f"restored to the specs ({when}): started again, its history kept ({reissues})"
    return _change(Action.CREATE, reason, task, record, field_changes(record.request, after), after)


def _diff_changed(
    task: DesiredTask, record: TaskRecord, obs: Observed | None, after: dict[str, Any] | None, now: float
) -> Change:
    if task.family is ApiFamily.ZEGO_THUMBNAIL:
        return _change(
            Action.REPLACE,
            "file entry changed: it is submitted again",
            task,
            record,
            field_changes(record.request, after),
            after,
        )
    # A task the refresh saw ended is not live, whatever its record says: an update would be refused
    # (Volcengine ErrorActiveTaskNotFound), and the task is started anew with the new spec.
    ended = obs is not None and obs.state in (ObservedState.STOPPED, ObservedState.FAILED, ObservedState.NOT_FOUND)
    # A start never confirmed that the vendor says runs (`transitions.confirmable`): it is that start's run.
    seen = obs is not None and obs.state is ObservedState.RUNNING and transitions.confirmable(task, record)
    live = (record.status in (TaskStatus.RUNNING, TaskStatus.PENDING) or seen) and not ended
    # A renamed Provider (or a job moved to another) changes no request field, only the account it goes to.
    moved = (f"provider: {record.provider} → {task.provider}",) if record.provider != task.provider else ()
    details = (*moved, *field_changes(record.request, after)) or ("spec changed (content hash differs)",)
    if record.family is not task.family:
        # Another vendor API (a SnapshotJob moved between Volcengine and ZEGO): no request field carries over,
        # so listing them all says nothing the settings line does not; the move itself is the change.
        details = (f"provider: {record.provider} ({record.family.value}) → {task.provider} ({task.family.value})",)
    if transitions.start_unconfirmed(record) and not seen:
        # Its last start, of the old spec, may run: resuming it would keep the old spec running under the new
        # hash (Volcengine answers "already started"), or leave it running unnamed (ZEGO).
        # A failed start may have been refused outright (the vendor said why): "never confirmed" is the crash's.
        how = "was never confirmed" if record.status is TaskStatus.PENDING else "failed"
        reason = f"spec changed since a start that {how}: {_unconfirmed_stop(task, record)}"
        if record.spec_hash == transitions.UNKNOWN_SETTINGS:  # (`Executor.start`: its stop did not go through)
            reason = f"the vendor runs it with settings capctl never recorded: {_unconfirmed_stop(task, record)}"
            details = ("settings at the vendor unknown",)
        return _change(Action.REPLACE, reason, task, record, details, after)
    refused = record.status is TaskStatus.FAILED and not transitions.start_unconfirmed(record)
    if refused and record.vendor_task_id is None and _start_again(record) is Action.CREATE:
        # Its only start failed and nothing of it may run (the vendor refused it: `start_unconfirmed` is False):
        # nothing ever ran to be replaced, so it is created, with the new settings (as Terraform plans a
        # resource whose creation failed). A refused re-issue or replace's start stays a replace: a run was.
        reason = f"previous start failed: {record.last_error or 'error'}; spec changed since: started with it"
        return _change(Action.CREATE, reason, task, record, details, after)
    if live and record.fixed_hash == task.fixed_hash and task.updatable and record.updatable != task.updatable:
        # The changed values are the details; the reason says why it is an update (each fact printed once).
        details = _updatable_details(record.updatable, task.updatable)
        return _change(Action.UPDATE, "spec changed: the vendor updates it in place", task, record, details, after)
    if live and task.updatable:
        details = _mark_forcing(details, task.updatable)
    # Not running: why, as a re-issue says it (the reviewer would lose the vendor's stop behind the edit).
    why = None
    # A stop already recorded keeps its words: a callback's cause, which ZEGO's status query cannot give (a run
    # that ended under restartPolicy Never is `done`, its reason kept).
    recorded = record.status in (TaskStatus.STOPPED, TaskStatus.DORMANT, TaskStatus.DONE) and record.stop_reason
    if ended and obs is not None and not recorded:
        why = stop_description(obs, record, now)
    elif record.stop_reason:
        why = record.stop_reason + (f" at {fmt_time(record.stopped_at)}" if record.stopped_at else "")
    how = "the vendor cannot change it in place" if live else f"not running{f' ({why})' if why else ''}, start anew"
    reason = (_app_moved(task, record) if live else None) or f"spec changed: {how}"
    return _change(Action.REPLACE, reason, task, record, details, after)


def _app_moved(task: DesiredTask, record: TaskRecord) -> str | None:
    """A Volcengine task whose Provider's appId was edited in place: what its replace does (the keys are the
    account's, so its stop reaches the app it runs in; docs/providers-volcengine.md)."""
    if not (record.family is task.family is ApiFamily.VOLC_SNAPSHOT):
        return None
    old, new = record.vendor_ids.get("AppId"), task.request.get("AppId")
    if old == new:
        return None
    return f"its Provider's appId changed: stopped in app {old}, where it runs, then started in app {new}"


def _endpoint_moved(change: Change, task: DesiredTask, record: TaskRecord | None) -> Change:
    """A ZEGO recording whose Provider's cloudrecordEndpoint was edited in place (the record's home names the
    old one): a start there may leave the recording started at the old endpoint running unseen, which its row
    says (docs/providers-zego.md); what is done does not change. (The first apply or daemon pass records the
    new endpoint as its home: a plan made after that no longer knows the old one.)"""
    starts = change.action in (Action.CREATE, Action.REPLACE, Action.REISSUE)
    recording = task.family in (ApiFamily.ZEGO_RECORD, ApiFamily.ZEGO_RECORD_LEGACY)
    if not starts or not recording or record is None or record.family is not task.family or not record.home:
        return change
    # Only a run that may be going at the old endpoint is left behind: a start the vendor refused (or that never
    # reached it: a 404 from a mistyped endpoint) began none, and a recorded stop ended its run there.
    if record.status is not TaskStatus.RUNNING and not transitions.start_unconfirmed(record):
        return change
    account, _, old = record.home.partition(" at ")
    now_account, _, new = task.home.partition(" at ")
    if record.provider != task.provider or account != now_account or old == new:
        return change
    note = (
        f"its Provider's cloudrecordEndpoint changed from {old} to {new}: if that is another ZEGO environment, "
        f"the recording started at {old} is not stopped and runs on unseen until its idle timeout or maximum "
        "duration (put the old endpoint back to keep it in view)"
    )
    return dataclasses.replace(change, reason=f"{change.reason}; {note}")


def _diff_same(
    task: DesiredTask, record: TaskRecord, obs: Observed | None, after: dict[str, Any] | None, now: float
) -> Change:
    seen_ended = obs is not None and obs.state is not ObservedState.RUNNING
    if record.update_unconfirmed and record.status is TaskStatus.RUNNING and not seen_ended:
        # Even back at the values it had before (the spec reverted): the vendor may hold the unconfirmed ones.
        details = tuple(f"{name} {fmt_seconds(value)}" for name, value in sorted(task.updatable.items()))
        reason = "an earlier update was not confirmed (interrupted): the vendor may hold either value; sending it again"
        return _change(Action.UPDATE, reason, task, record, details, after)
    if obs is not None and obs.state is ObservedState.RUNNING:
        return _change(Action.NOOP, "running", task, record, after=after)
    if obs is not None:  # the vendor reports it stopped, failed, or not found
        why = stop_description(obs, record, now)
        if task.restart_policy is RestartPolicy.NEVER:
            return _change(Action.NOOP, f"vendor stopped it: {why}; restartPolicy Never", task, record, after=after)
        # The stop reason already names the cause ("max duration (ZEGO quit_reason 4)"): say it once.
        prefix = "vendor stopped it (rollover)" if obs.rollover else "vendor stopped it"
        return _change(Action.REISSUE, f"{prefix}: {why}", task, record, after=after)
    return _diff_recorded(task, record, after)


# Why a leaving selector task with no run waits (`rooms.leaving`): the job is Always, its `Never` is the room's.
_LEFT_TO_ITS_ROOM = (
    "left to its room, which its room selector no longer chooses: it starts when the room is selected again"
)

# A `--replace` killed after its stop (`transitions.replace_cut_short`).
_CUT_SHORT = "a replace was cut short after its stop (interrupted): its old run stopped"


def _failed_before(record: TaskRecord) -> str:
    """A failed start, and whether it may run all the same (`transitions.failed_may_run`), as `state list` and
    the status page say it: the plan's error alone read as a start refused, nothing running (walk 50D-2)."""
    may_run = f"; {transitions.MAY_RUN}" if transitions.failed_may_run(record) else ""
    return f"previous start failed: {record.last_error or 'error'}{may_run}"


def _diff_recorded(task: DesiredTask, record: TaskRecord, after: dict[str, Any] | None) -> Change:
    """No fresh observation: decide from what the state recorded."""
    status = record.status
    if status is TaskStatus.RUNNING:
        return _change(Action.NOOP, "running (as recorded)", task, record, after=after)
    if task.ending and (status is TaskStatus.FAILED or transitions.failed_start_left(record)):
        # Its room closed since its start failed: left to its room, as the daemon does (walk 43B-1); started,
        # it captured the empty room until it idled out (walk 45b-1).
        reason = f"{_failed_before(record)}; {_LEFT_TO_ITS_ROOM}"
        return _change(Action.NOOP, reason, task, record, after=after)
    if transitions.replace_cut_short(record):  # capctl stopped it: no re-issue counted, whatever the policy
        if task.ending:  # nor is a replace started into a room its selector leaves (walk 50a)
            return _change(Action.NOOP, f"{_CUT_SHORT}; {_LEFT_TO_ITS_ROOM}", task, record, after=after)
        return _change(Action.REPLACE, f"{_CUT_SHORT}, started anew", task, record, after=after)
    # One left to its room (its room selected again) too: no run ended, started as what its failed start was
    # (walk 44c-3), whatever the policy, as a failed start is (walk 50a: Never left it stopped for good).
    if status is TaskStatus.FAILED or transitions.failed_start_left(record):
        resume = "; resuming it with its recorded ClientTaskId" if transitions.resumable_start(task, record) else ""
        reason = f"{_failed_before(record)}{resume}"
        return _change(_start_again(record), reason, task, record, after=after)
    if task.restart_policy is RestartPolicy.NEVER:
        return _change(Action.NOOP, f"{status.value}; restartPolicy Never", task, record, after=after)
    reason = record.stop_reason or "stopped"
    when = f" at {fmt_time(record.stopped_at)}" if record.stopped_at else ""
    # A recording's `done` is a run ended under restartPolicy Never (thumbnails never come here): a job made
    # Always since is re-issued as any stopped task of an Always job.
    now_always = "; ended under restartPolicy Never, the job is Always now" if status is TaskStatus.DONE else ""
    return _change(Action.REISSUE, f"vendor stopped it: {reason}{when}{now_always}", task, record, after=after)


def _requested(task: DesiredTask, record: TaskRecord) -> str:
    """Why a --replace key is replaced, and what may run of a start never confirmed (a replace cut short after
    its stop too: the executor stops what that start may have begun before it starts anew)."""
    if record.family is ApiFamily.ZEGO_THUMBNAIL or not transitions.start_unconfirmed(record):
        return "replace requested"
    what = "the start of a replace (its old run stopped)" if record.replacing else "its last start"
    how = "was never confirmed" if record.status is TaskStatus.PENDING else "failed"
    return f"replace requested; {what} {how}: {_unconfirmed_stop(task, record)}"


def _unconfirmed_stop(task: DesiredTask, record: TaskRecord) -> str:
    """What a replace does first about a run whose start was never confirmed (`transitions.start_unconfirmed`)."""
    if record.family is ApiFamily.VOLC_SNAPSHOT:
        return "stopped by the RoomId + TaskId it was started with (if it runs), then started anew"
    if transitions.findable_start(task, record):
        return f"{transitions.FOUND_BY_START}, then started anew"
    return (
        "started anew; that start cannot be found (legacy API, or another Provider): if it runs, it ends by itself "
        "at its idle timeout or its maximum duration"
    )


def _delete_reason(record: TaskRecord, held_by: str | None, started_by: str | None) -> str:
    if held_by is not None:
        return f"removed from specs: its vendor task (RoomId + TaskId) is {held_by}'s now, so it is not stopped"
    if started_by is not None:  # a job renamed with its taskId kept: the executor orders the stop first
        return (
            f"removed from specs: stopped first, then {started_by} starts the same vendor task (RoomId + TaskId) "
            "again: a short gap in capture"
        )
    if transitions.lost_start(record):
        return f"removed from specs: its last start was never confirmed: {transitions.FOUND_BY_START}"
    if transitions.stoppable(record):
        return "removed from specs"
    left = transitions.unfound_start(record)
    if left is None:
        return "removed from specs: nothing to stop at the vendor, its record is kept as a tombstone"
    return f"removed from specs: {left}"


def _replaced(keys: Collection[str], desired: Mapping[str, DesiredTask]) -> str:
    """What --replace does to `keys`: a thumbnail is submitted again (MediaThumbnails cannot be stopped: its
    first submission's thumbnails are made too), a capture stopped and started (walk 60a-5)."""
    thumbnails = sum(desired[k].family is ApiFamily.ZEGO_THUMBNAIL for k in keys if k in desired)
    if thumbnails == len(keys):
        return "submitted again (a thumbnail submission cannot be stopped)"
    return "stopped and started again" + (", thumbnails submitted again" if thumbnails else "")


def _submitted_as(changes: list[Change], submitted_as: Mapping[str, TaskRecord]) -> dict[str, TaskRecord]:
    """Of the thumbnail keys that take a submission made under another key (`moves.Rehomed.submitted_as`), those
    this plan leaves a no-op: not submitted again, recorded `done` under their own key with its ZEGO task id
    (walk 58b). Not one --replace submits again, nor one back in the specs on its own tombstone (walk 60a-2)."""
    return {c.key: before for c in changes if c.action is Action.NOOP and (before := submitted_as.get(c.key))}


def _said_submitted_as(changes: list[Change], submitted_as: Mapping[str, TaskRecord]) -> list[Change]:
    told = []
    for change in changes:
        if (before := submitted_as.get(change.key)) is not None:
            removed = f", removed at {fmt_time(before.removed_at)}" if before.status is TaskStatus.REMOVED else ""
            reason = (
                f"submitted before as {before.key} (ZEGO task {before.vendor_task_id}{removed}) with the same file"
                " and settings: not again, recorded done under this key (no vendor call)"
            )
            change = dataclasses.replace(change, reason=reason)
        told.append(change)
    return told


def _taking_over(
    changes: list[Change], desired: Mapping[str, DesiredTask], records: Mapping[str, TaskRecord]
) -> list[Change]:
    """`changes`, each create whose Volcengine task a record this plan does not stop may be running (a renamed
    job's old key kept: `--no-prune`, `--target`, `-l`) saying what apply does with that run: takes it over as
    it runs, or, not known to run with these settings, stops it and starts it again (`transitions.runs_as_sent`),
    a gap the reviewer is told of, as of a delete stopped first (walk 54C-2)."""
    if not any(c.action is Action.CREATE and c.family is ApiFamily.VOLC_SNAPSHOT for c in changes):
        return changes  # (the records not read: a plan of no start is made at every daemon pass)
    held = transitions.volc_holding(records, but={c.key for c in changes if c.action is Action.DELETE})
    if not held:
        return changes
    told = []
    for change in changes:
        task = desired.get(change.key) if change.action is Action.CREATE else None
        name = transitions.volc_task_name(task.family, task.request) if task is not None else None
        holders = held.get(name, []) if task is not None and name is not None else []
        # (A start of its own record that may run, planned again: that record tells what it runs.)
        if task is not None and holders and all(r.key != change.key for r in holders):
            last = max(holders, key=lambda r: r.started_at or 0.0).key
            if transitions.runs_as_sent(holders, change.key, change.after or redact_tree(task.request)):
                how = "started with this very request: taken over as it runs"
            else:
                how = "not known to run with these settings: stopped and started again with them (a short gap)"
            reason = f"{change.reason}; its vendor task (RoomId + TaskId) may run as {last}'s, {how}"
            change = dataclasses.replace(change, reason=reason)
        told.append(change)
    return told


def diff(
    desired: Mapping[str, DesiredTask],
    records: Mapping[str, TaskRecord],
    observed: Mapping[str, Observed],
    *,
    options: PlanOptions,
    state_serial: int,
    now: float,
    paths: Iterable[str] = (),
    providers: Collection[str] | None = None,
    redacted: dict[int, Any] | None = None,
    moved: Mapping[str, str] | None = None,
    submitted_as: Mapping[str, TaskRecord] | None = None,
) -> Plan:
    """`providers`: the Provider documents of the specs; when given, a delete that needs a provider no
    longer declared is a PlanError (its credentials are never stored, so the stop could not be made).
    `moved`: the keys whose `records` were re-homed to another Provider of the same account (`moves.rehome`),
    with the Provider each one named: what would be a no-op for them is a move of the record.
    `submitted_as`: the thumbnail keys whose `records` are a submission taken from another key (`moves.rehome`,
    `transitions.taken_over`), with that key's record: their no-op says so (`submitted before as KEY`).
    `redacted`: the memo of redacted requests (`redact_tree`), when it should outlive this call (the daemon
    diffs one key at a time and keeps one per spec set); by default, one for this call."""
    check_options(options, desired)
    replace = set(options.replace)
    wanted = Selection(options, {*desired, *records})

    changes: list[Change] = []
    if redacted is None:
        redacted = {}  # tasks of one job share request subtrees: redact each one once
    with gc_paused():
        for key, task in desired.items():
            if wanted(key, task.labels):
                after = redact_tree(task.request, redacted)
                obs = observed.get(key)
                record = records.get(key)
                change = _endpoint_moved(_diff_one(task, record, obs, key in replace, after, now), task, record)
                # One that could not be observed is left as is, its record too (the plan is incomplete).
                unknown = obs is not None and obs.state is ObservedState.UNKNOWN
                old = moved.get(key) if moved and not unknown else None
                changes.append(_moved(change, old, task, records[key].provider) if old is not None else change)
    kept = 0
    deleted: list[TaskRecord] = []
    holders: dict[tuple[str, str, str], str] | None = None  # of kept keys' vendor tasks, at the first delete
    starting: dict[tuple[str, str, str], str] = {}  # the Volcengine tasks this plan starts, with their key
    for key, record in records.items():
        if key in desired or not wanted(key, record.labels) or record.status is TaskStatus.REMOVED:
            continue  # a tombstone was pruned already: never a delete again
        if not options.prune:
            kept += transitions.stoppable(record)  # a finished thumbnail or a stopped run is not kept running
            continue
        if holders is None:
            holders = transitions.volc_holders(records, desired)
            starting = {
                name: c.key
                for c in changes
                if c.action in (Action.CREATE, Action.REPLACE, Action.REISSUE)
                and (name := transitions.volc_task_name(desired[c.key].family, desired[c.key].request))
            }
        held_by = transitions.handed_over_to(record, holders)
        started_by = starting.get(name) if (name := transitions.volc_task_held(record)) else None
        # Its Provider removed, it is stopped through another of the same account (`moves.rehome`).
        via = (f"provider: {moved[key]} → {record.provider} (same account)",) if moved and key in moved else ()
        changes.append(_change(Action.DELETE, _delete_reason(record, held_by, started_by), None, record, via))
        if held_by is None:  # one handed over is retired without a stop: its Provider may be gone (walk 45A-3)
            deleted.append(record)
    changes = _taking_over(changes, desired, records)
    taken = _submitted_as(changes, submitted_as) if submitted_as else {}
    changes = _said_submitted_as(changes, taken) if taken else changes
    # A replace stops the old run through the provider recorded with it, which a rename may have taken away; so
    # does any task moved to another Provider, even one left as is because that old provider could not observe it.
    stopped_through = {
        c.key: records[c.key]
        for c in changes
        if c.key in records
        and (c.action is Action.REPLACE or (c.key in desired and _leaves_its_provider(records[c.key], desired[c.key])))
    }
    check_stoppable([*deleted, *stopped_through.values()], providers)

    notes = []
    if options.targets or options.labels:
        notes.append("This plan is partial (--target / -l): other tasks may still differ.")
    if options.replace:  # as Terraform's -replace: the rest of the set is planned too, so not partial
        notes.append(f"--replace {', '.join(options.replace)}: {_replaced(options.replace, desired)} on purpose.")
    if options.labels and not changes:
        among = " of those --target selects" if options.targets else ""
        there = labels_known([*(t.labels for t in desired.values()), *(r.labels for r in records.values())], "there")
        notes.append(f"-l {' '.join(options.labels)} matches no task{among}{there}.")
    for selector in options.targets:
        if not any(selector_matches(selector, k) for k in (*desired, *records)):
            notes.append(f"--target {selector} matches no task{near_key_hint(selector, (*desired, *records))}.")
    if kept:
        notes.append(f"{kept} task(s) removed from the specs are kept running (--no-prune).")
    # A task started again records its policy with its start: the note is of those left as they are.
    unchanged = {c.key: desired[c.key] for c in changes if c.action is Action.NOOP and c.key in desired}
    for what, edited in (
        ("Labels", _edited(desired, records, wanted, _label_edits)),
        ("restartPolicy", _edited(unchanged, records, wanted, _policy_edit)),
    ):
        if edited:
            (job, edits), others = next(iter(edited.items())), len(edited) - 1
            why = "; `-l` selects by them" if what == "Labels" else ""
            notes.append(
                f"{what} of {len(edited)} job(s) changed, recorded by apply (no vendor call{why}): "
                f"{job}: {edits}" + (f" (and {others} more)" if others else "") + "."
            )
    # A thumbnail put back as it was submitted is a no-op the views do not list, yet apply writes its record.
    back = [r for c in changes if c.action is Action.NOOP and (r := records.get(c.key)) and transitions.revives(r)]
    restored = [r for r in back if r.status is TaskStatus.REMOVED and r.key not in taken]
    if reverted := [r for r in back if r.status is not TaskStatus.REMOVED]:  # its accepted submission
        more = f" (and {len(reverted) - 1} more)" if len(reverted) > 1 else ""
        untaken = _UNTAKEN.format("the edit's")
        notes.append(
            f"{len(reverted)} thumbnail task(s) edited back to the entry ZEGO took before ({untaken}),"
            f" so not submitted again; apply records them as done (no vendor call): {reverted[0].key}"
            f"{more}."
        )
    if restored:
        more = f" (and {len(restored) - 1} more)" if len(restored) > 1 else ""
        notes.append(
            f"{len(restored)} thumbnail task(s) restored to the specs as they were submitted before, so not submitted"
            f" again; apply records them as done (no vendor call): {restored[0].key}"
            f" (removed at {fmt_time(restored[0].removed_at)}){more}."
        )
    if taken:
        (first, before), also = next(iter(taken.items())), len(taken) - 1
        notes.append(
            f"{len(taken)} thumbnail task(s) whose file and settings ZEGO took under a key no longer declared"
            f" (a ThumbnailJob renamed, an entry moved to another job), so not submitted again; apply records them"
            f" as done with that ZEGO task (no vendor call): {first} (as {before.key})"
            + (f" (and {also} more)" if also else "")
            + "."
        )
    # Edited ones in a note of their own: a reviewer sees the edit waits, not only that tasks sleep.
    for status, spec_edit in ((TaskStatus.DORMANT, True), (TaskStatus.DORMANT, False), (TaskStatus.STOPPED, False)):
        waiting = [
            c
            for c in changes
            if c.action is Action.NOOP
            and c.key in desired
            and (r := records.get(c.key))
            and r.status is status
            and (c.before_hash != c.after_hash) is spec_edit
            and _left_waiting(desired[c.key], r, now)
            and not _seen_running(observed.get(c.key))
        ]
        if waiting:  # no-ops are not listed in the text view: say that they wait, and how to start them
            what = f"{'dormant' if status is TaskStatus.DORMANT else 'backing-off'} task(s)"
            if spec_edit:
                what += f" whose spec changed ({waiting[0].key}: {'; '.join(waiting[0].details)})"
            more = ""
            if len(waiting) > 1:  # which they are, and how to wake them in one go (`wake` takes globs)
                jobs = {job_of(c.key) for c in waiting}
                more = (
                    f" (and {len(waiting) - 1} more of {next(iter(jobs))}: `capctl wake '{next(iter(jobs))}/*'`, "
                    f"{_WAKE_VIA_DAEMON}, wakes them all)"
                    if len(jobs) == 1
                    else f" (and {len(waiting) - 1} more: `capctl state list --status {status.value}` lists them)"
                )
            notes.append(f"{len(waiting)} {what} left alone: {waiting[0].key}: {waiting[0].reason}{more}.")
    if not options.refreshed:
        notes.append("Planned from recorded state only (--no-refresh): vendor status was not checked.")
    # Left as is because their status could not be read: a task the plan acts on all the same (`--replace`, a
    # delete) is not, or the plan said "No changes … Left as is" of a replace that apply then ran (walk 59b).
    unobserved = tuple(
        c.key
        for c in changes
        if c.action is Action.NOOP and (obs := observed.get(c.key)) is not None and obs.state is ObservedState.UNKNOWN
    )
    if unobserved:
        first = observed[unobserved[0]].detail or "error"
        more = f" (and {len(unobserved) - 1} more)" if len(unobserved) > 1 else ""
        notes.append(
            f"{len(unobserved)} task(s) could not be observed and are left as is, so this plan is incomplete: "
            f"{unobserved[0]}: {first}{more}."
        )
    return Plan(
        state_serial=state_serial,
        created_at=now,
        options=options,
        paths=tuple(paths),
        changes=tuple(changes),
        notes=tuple(notes),
        unobserved=unobserved,
    )


def _edited(
    desired: Mapping[str, DesiredTask],
    records: Mapping[str, TaskRecord],
    wanted: Selection,
    edit: Callable[[TaskRecord, DesiredTask], str],
) -> dict[str, str]:
    """Jobs whose labels (or restartPolicy) differ from the ones their tasks were last applied with, as `edit`
    tells them: `job: team safety → ops`. Such an edit changes no vendor task, so no change shows it; the
    reviewer still sees it in a note."""
    edits: dict[str, str] = {}
    for key, task in desired.items():
        job = job_of(key)
        record = records.get(key)
        if job in edits or record is None or record.status is TaskStatus.REMOVED or not (said := edit(record, task)):
            continue
        if wanted(key, task.labels) or wanted(key, record.labels):
            edits[job] = said
    return edits


def _label_edits(record: TaskRecord, task: DesiredTask) -> str:
    before, after = record.labels, task.labels
    return ", ".join(
        f"{name} {before.get(name, '(unset)')} → {after.get(name, '(unset)')}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    )


def _policy_edit(record: TaskRecord, task: DesiredTask) -> str:
    # A selector's task left to end is Never by how it is handled, not by an edit (`engine.record_labels`).
    if task.ending or record.restart_policy is task.restart_policy:
        return ""
    return f"{record.restart_policy.value} → {task.restart_policy.value}"


def _leaves_its_provider(record: TaskRecord, task: DesiredTask) -> bool:
    """The task goes to another Provider, or its Provider to another API (a ZEGO `cloudrecordApi` edited)."""
    return record.provider != task.provider or record.family is not task.family


def check_stoppable(deleted: Iterable[TaskRecord], providers: Collection[str] | None) -> None:
    """A PlanError when a task to delete or replace still runs but the Provider recorded with it is no longer
    declared, or (given the documents: a Mapping to `ProviderConfig`) no longer declares the API it was started
    on (None: not checked)."""
    if providers is None:
        return
    orphans: dict[str, list[str]] = {}  # provider no longer in the specs -> running tasks only it can stop
    switched: dict[str, list[str]] = {}  # provider now on the other ZEGO API -> recordings of the first one
    apis: dict[str, str] = {}  # that provider's API now
    for record in deleted:
        if not transitions.stoppable(record):
            continue
        if record.provider not in providers:
            orphans.setdefault(record.provider, []).append(record.key)
        elif isinstance(providers, Mapping) and not (config := providers[record.provider]).serves(record.family):
            switched.setdefault(record.provider, []).append(record.key)
            apis[record.provider] = config.cloudrecord_api
    if orphans:
        raise PlanError(_orphaned_message(orphans))
    if switched:
        raise PlanError(_switched_message(switched, apis))


def _shown(keys: list[str]) -> str:
    return ", ".join(sorted(keys)[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _switched_message(switched: Mapping[str, list[str]], apis: Mapping[str, str]) -> str:
    parts = []
    for provider, keys in sorted(switched.items()):
        now = apis[provider]
        before = "current" if now == "legacy" else "legacy"
        parts.append(
            f"provider {provider!r} now declares cloudrecordApi {now}, but {len(keys)} recording(s) it started on "
            f"the {before} API still run: {_shown(keys)}"
        )
    return (
        "; ".join(parts) + ". capctl stops a recording through the API and endpoint it was started on, which the "
        "document no longer names. Put its cloudrecordApi (and cloudrecordEndpoint) back, declare the other API "
        "as a Provider of its own beside it, move the jobs to that one and apply (each recording is stopped "
        "through the old and started through the new), then remove the old one; or forget them with "
        "`capctl state rm KEY` (their recordings keep running)."
    )


def _orphaned_message(orphans: Mapping[str, list[str]]) -> str:
    parts = []
    for provider, keys in sorted(orphans.items()):
        parts.append(
            f"provider {provider!r} was removed from the specs but still runs {len(keys)} task(s): {_shown(keys)}"
        )
    return (
        "; ".join(parts) + ". capctl needs the provider's credentials to stop them (they are never stored). "
        "Keep the Provider document until its tasks are deleted or moved (apply, then remove it; to move jobs "
        "to a Provider of another account, declare the new one beside it, apply, then remove the old one; tasks "
        "started by an older capctl learn their account at the next apply while their Provider is declared, "
        "and then move to one of the same type, appId and endpoint without a stop), "
        "or forget them with `capctl state rm KEY` (their vendor tasks keep running), or, for jobs removed from "
        "the specs, use --no-prune."
    )


# --- JSON (the one saved format) ---------------------------------------------------------------------


def plan_to_json(plan: Plan) -> PlanJSON:
    with gc_paused():  # one dict per change, no cycles: collector passes here found nothing
        return _plan_json(plan)


def _plan_json(plan: Plan) -> PlanJSON:
    counts = plan.counts()
    return {
        "format_version": plan.format_version,
        "state_serial": plan.state_serial,
        "created_at": rfc3339(plan.created_at),
        "refreshed": plan.options.refreshed,
        "prune": plan.options.prune,
        "targets": list(plan.options.targets),
        "replace": list(plan.options.replace),
        "labels": list(plan.options.labels),
        "partial": plan.partial,
        "paths": list(plan.paths),
        "summary": {a.value: counts[a] for a in ACTION_ORDER},
        "edits_waiting": plan.edits_waiting(),
        "notes": list(plan.notes),
        "unobserved": list(plan.unobserved),
        "selectors": list(plan.selectors),
        "changes": [
            {
                "key": c.key,
                "action": c.action.value,
                "reason": c.reason,
                "provider": c.provider,
                "family": c.family.value,
                "before_hash": c.before_hash,
                "after_hash": c.after_hash,
                "details": list(c.details),
                "before": c.before,
                "after": c.after,
            }
            for c in plan.changes
        ],
    }


def plan_from_json(data: object, *, source: str = "plan") -> Plan:
    if not isinstance(data, dict):
        raise PlanError(f"{source}: not a capctl plan (expected a JSON object)")
    if "format_version" not in data:  # any JSON object: say what is missing, not "format_version None"
        raise PlanError(f"{source}: not a capctl plan (no format_version); save one with `capctl plan --out FILE`")
    version = data["format_version"]
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise PlanError(
            f"{source}: plan format_version {version!r} is not supported "
            f"(this capctl reads versions {', '.join(map(str, READABLE_VERSIONS))}); make the plan again"
        )
    from reconciler.planread import read_plan_json

    return read_plan_json(data, version, source)
