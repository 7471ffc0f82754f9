"""Human views of a plan, rendered from its JSON form (the one saved format), like Terraform's jsonplan.

`render_text` writes a coloured rich view for terminals (plain when not a terminal or with --no-color);
`render_markdown` returns a view for pull-request comments. Unchanged tasks are counted, not listed.
`render_apply_result` is the outcome of an apply.

A reviewer must see what a change will do, not only that it happens: creates, re-issues and replacements
show the settings the vendor will get (read from the change's redacted `after` request, per API family), as
Terraform shows the attributes of a new resource. Changes of one job that are identical but for their room
(or file) print once, their rooms listed after them, so 500 rooms created alike stay a few lines.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Console, Group
from rich.text import Text

from reconciler.model import TaskStatus, job_of
from reconciler.plan import ChangeJSON, PlanJSON, fmt_seconds, fmt_time, parse_rfc3339
from reconciler.redact import escape_unprintable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reconciler.execute import ApplyResult
    from reconciler.model import TaskRecord

__all__ = ["render_apply_result", "render_markdown", "render_state_table", "render_text", "summary_line"]

SYMBOLS = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "replace": ("-/+", "magenta"),
    "reissue": ("↻", "cyan"),
    "delete": ("-", "red"),
    "move": ("→", "blue"),
    "no-op": ("=", "dim"),
}
UNOBSERVED = ("?", "yellow")  # a no-op only because its vendor status could not be read
SUMMARY_WORDS = (
    ("create", "to create"),
    ("update", "to update in place"),
    ("replace", "to replace"),
    ("reissue", "to re-issue"),
    ("delete", "to delete"),
    ("move", "to re-home"),  # said only when some are: most plans move nothing
    ("no-op", "unchanged"),
)
MD_ICONS = {"create": "➕", "update": "✏️", "replace": "🔁", "reissue": "↻", "delete": "➖", "move": "➡️", "no-op": ""}
# The markdown plan (a pull request's comment, cut at GitHub's limit) lists what stops captures first: a delete
# or a replace must never be what the cut hides. Everything else keeps the plan's order.
MD_FIRST = {"delete": 0, "replace": 1}


def summary_line(plan: PlanJSON) -> str:
    counts, waiting = plan["summary"], plan.get("edits_waiting", 0)
    # A task that could not be observed is a no-op left as is, whatever its spec: not known unchanged (its spec may
    # have changed, its run may have ended), so counted apart, as an edit waiting for its room is (walk 58e).
    unobserved = set(plan.get("unobserved", ()))
    unseen = sum(1 for c in plan["changes"] if c["action"] == "no-op" and c["key"] in unobserved)
    parts = [
        f"{counts.get(action, 0) - (waiting + unseen if action == 'no-op' else 0)} {words}"
        for action, words in SUMMARY_WORDS
        if action != "move" or counts.get(action)
    ]
    if waiting:  # no-ops, but not unchanged: their edit waits for the room (walk 17c)
        parts.append("1 edit waiting for its room" if waiting == 1 else f"{waiting} edits waiting for their rooms")
    if unobserved:
        parts.append(f"{len(unobserved)} not observed")
    return "Plan: " + ", ".join(parts) + "."


def _no_changes(plan: PlanJSON) -> str:
    """The headline of a plan with nothing to do now: the jobs match the state, unless an edit waits for its
    room (then they do not yet: the note says which and how to start it now)."""
    waiting = plan.get("edits_waiting", 0)
    if waiting:
        edits = (
            "1 spec edit waits for its empty room"
            if waiting == 1
            else f"{waiting} spec edits wait for their empty rooms"
        )
        return f"No changes now, but the specs do not match the state yet: {edits} (see the note)."
    # --no-refresh observed nothing: "and observed" contradicted its own note (vendor status was not checked).
    state = "recorded and observed" if plan["refreshed"] else "recorded"
    return f"No changes. The declared capture jobs match the {state} state."


def _pad(text: str, width: int) -> str:
    """`text` and spaces up to `width` terminal cells: a CJK character or an emoji in a room id takes two (as a
    terminal shows it), where `str.ljust` counts one and pushed the columns after it out of line."""
    return text + " " * (width - cell_len(text))


# --- rows: what each view lists ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One entry of a plan view: a change, or identical changes of one job (`members` are then their rooms)."""

    action: str  # as shown: "unknown" for a task whose vendor status could not be read
    label: str  # the task key, or `kind/name` for a group
    reason: str
    settings: tuple[str, ...]  # what a started task will be, fact by fact; () when the action starts nothing
    details: tuple[str, ...]
    members: tuple[str, ...] = ()  # rooms (or files) of a group
    member_word: str = "rooms"

    @property
    def count(self) -> str:
        return f" ({len(self.members)} {self.member_word})" if self.members else ""


GROUP_MIN = 3  # identical changes of one job printed as one group; fewer are listed one by one (greppable keys)


def plan_rows(plan: PlanJSON, *, show_unchanged: bool = False) -> list[Row]:
    """The changes to show, identical changes of one job grouped, in the order of their first appearance."""
    unobserved = set(plan.get("unobserved", ()))
    groups: dict[tuple[Any, ...], list[ChangeJSON]] = {}
    # The tasks of a job share their request's subtrees: each is read once.
    said_of: dict[tuple[Any, ...], tuple[str, ...]] = {}
    for c in plan["changes"]:
        key = c["key"]
        if c["action"] == "no-op" and not show_unchanged and key not in unobserved:
            continue
        action = "unknown" if key in unobserved else c["action"]
        parts = key.split("/", 2)
        job = (parts[0], parts[1]) if len(parts) == 3 else (key, "")  # not a task key (a hand-edited file)
        shape = _settings_shape(c)
        if (said := said_of.get(shape)) is None:
            said = said_of[shape] = settings_of(c)
        groups.setdefault((action, job, c["reason"], tuple(c["details"]), said), []).append(c)
    rows = []
    for (action, (kind, name), reason, details, settings), members in groups.items():
        # A job's moves are one line however few: each says the same, and it is no vendor call to grep for.
        if len(members) < (2 if action == "move" else GROUP_MIN) or not name:
            rows += [Row(action, m["key"], reason, settings, details) for m in members]
            continue
        word = "files" if members[0]["family"] == "zego-thumbnail" else "rooms"
        targets = tuple(m["key"].split("/", 2)[2] for m in members)
        rows.append(Row(action, f"{kind}/{name}", reason, settings, details, targets, word))
    return rows


# --- settings: what a started task will be, per API family -------------------------------------------

_STARTS = frozenset({"create", "reissue", "replace"})
_TARGETS = frozenset({"RoomId", "room_id", "FileId"})  # what differs between the tasks of one job


def _settings_shape(change: ChangeJSON) -> tuple[Any, ...]:
    """What `settings_of` reads, cheaply: equal for two tasks of one job, which then share one summary."""
    after = change.get("after")
    if not isinstance(after, dict):
        return (change["action"], id(change))
    fields = ((k, _identity(v)) for k, v in after.items() if k not in _TARGETS)
    return (change["action"], change["family"], change["provider"], *fields)


def _identity(value: object) -> object:
    """A request subtree by identity (shared between a job's tasks, alive as long as the plan), a leaf by value."""
    return id(value) if isinstance(value, dict | list) else value


def settings_of(change: ChangeJSON) -> tuple[str, ...]:
    """(`provider p`, `interval 5s`, …) for an action that starts a task, read from its redacted request: the
    views join them with ` · `, the text view wrapping between two facts."""
    after = change.get("after")
    if change["action"] not in _STARTS or not isinstance(after, dict):
        return ()
    summarise = _SUMMARIES.get(change["family"])
    return (f"provider {change['provider']}", *(summarise(after) if summarise else ()))


def _get(tree: object, *names: str) -> Any:
    """The first of `names` in `tree` (PascalCase for ZEGO's current API, snake_case for the legacy one);
    None when absent or when `tree` is not an object (a plan file is user input: nothing is assumed)."""
    if not isinstance(tree, dict):
        return None
    for name in names:
        if name in tree:
            return tree[name]
    return None


def _duration(value: object) -> str:
    return fmt_seconds(value) if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _volc_snapshot(after: dict[str, Any]) -> list[str]:
    """The TaskId is left out: it is the job's name unless the spec sets one, and then the diff shows it."""
    image = _get(after, "ImageConfig")
    parts = []
    if _get(image, "Interval") is not None:
        parts.append(f"interval {_duration(image['Interval'])}")
    width, height = _get(image, "Width") or 0, _get(image, "Height") or 0
    size = f"{width}×{height}" if width or height else "(source size)"
    parts.append(f"image {'png' if _get(image, 'Format') == 1 else 'jpeg'} {size}")
    streams = _get(_get(after, "TargetStreams"), "StreamList")
    if isinstance(streams, list) and streams:
        parts.append("streams " + ", ".join(_volc_stream(s) for s in streams))
    parts.append(f"storage {_volc_storage(_get(after, 'StorageConfig'))}")
    if _get(after, "MaxIdleTime") is not None:
        parts.append(f"idle timeout {_duration(after['MaxIdleTime'])}")
    return parts


def _volc_stream(stream: object) -> str:
    """`host`, `host (screen)`, `host (screen, index 1)`: the index too, or a changed one would read the same."""
    marks = ["screen"] if _get(stream, "StreamType") == 1 else []
    if (index := _get(stream, "Index")) is not None:
        marks.append(f"index {index}")
    user = _get(stream, "UserId")
    return f"{user} ({', '.join(marks)})" if marks else str(user)


def _volc_storage(storage: object) -> str:
    kind = _get(storage, "Type")
    if kind == 0:
        return f"tos {_get(_get(storage, 'TosConfig'), 'Bucket')}"
    if kind == 1:
        return f"vod space {_get(_get(storage, 'VodConfig'), 'Space')}"
    if kind == 3:
        return f"veimagex service {_get(_get(storage, 'VeImageXConfig'), 'ServiceId')}"
    custom = _get(storage, "CustomConfig")
    vendor = _get(custom, "Vendor")
    return f"{_vendor_names()[0].get(vendor, f'vendor {vendor}')} {_get(custom, 'Bucket')}"


def _zego_record(after: dict[str, Any]) -> list[str]:
    inputs = _get(after, "RecordInputParams", "record_input_params")
    outputs = _get(after, "RecordOutputParams", "record_output_params")
    file_format = _get(outputs, "OutputFileFormat", "output_file_format")
    parts = []
    if file_format == "jpg":  # a SnapshotJob on ZEGO: a recording whose output is jpg images
        parts.append(f"jpg every {_duration(_get(outputs, 'SnapshotInterval', 'snapshot_interval'))}")
    else:
        mode = _get(inputs, "RecordMode", "record_mode")
        media = _get(inputs, "StreamType", "stream_type")
        parts += [
            f"mode {_ZEGO_MODES.get(mode, mode)}",
            f"media {_vendor_names()[2].get(media, media)}",
            f"format {file_format}",
        ]
    folder = _get(outputs, "OutputFolder", "output_folder")
    if folder is not None:
        parts.append(f"folder {folder}")
    streams = _get(inputs, "RecordStreamList", "record_stream_list")
    if isinstance(streams, list) and streams:
        parts.append("streams " + ", ".join(str(_get(s, "StreamId", "stream_id")) for s in streams))
    storage = _get(after, "StorageParams", "storage_params")
    vendor = _get(storage, "Vendor", "storage_provider")
    bucket = _get(storage, "Bucket", "bucket_name")
    parts.append(f"storage {_vendor_names()[1].get(vendor, f'vendor {vendor}')}{f' {bucket}' if bucket else ''}")
    idle = _get(inputs, "MaxIdleTime", "max_idle_time")
    if idle is not None:
        parts.append(f"idle timeout {_duration(idle)}")
    longest = _get(inputs, "MaxRecordTime", "max_record_time")
    if longest is not None and file_format != "jpg":  # a jpg job's max time is capctl's rollover, not the user's
        parts.append(f"max duration {_duration(longest)}")
    return parts


def _zego_thumbnail(after: dict[str, Any]) -> list[str]:
    parts = [f"cdn {_get(after, 'Vendor')}"]
    if _get(after, "Interval") is not None:
        parts.append(f"every {_duration(after['Interval'])}")
    offsets = _get(after, "ExtTimeOffsetSet")
    if isinstance(offsets, list):
        parts.append("at " + ", ".join(_duration(o) for o in offsets))
    if _get(after, "Definition") is not None:
        parts.append(f"definition {after['Definition']}")
    return parts


@functools.cache
def _vendor_names() -> tuple[dict[Any, str], dict[Any, str], dict[Any, str]]:
    """Vendor codes → spec names (Volcengine custom storage, ZEGO storage, ZEGO media), from the very tables the
    requests were built with; imported on first use (the spec layer is heavy for `capctl show`)."""
    from reconciler.spec.expand import VOLC_CUSTOM_VENDOR, ZEGO_STREAM_TYPE, ZEGO_VENDOR

    def names(table: dict[str, int]) -> dict[Any, str]:
        return {code: name for name, code in table.items()}

    return names(VOLC_CUSTOM_VENDOR), names(ZEGO_VENDOR), names(ZEGO_STREAM_TYPE)


_ZEGO_MODES = {1: "single", 2: "mixed"}
_SUMMARIES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "volcengine-snapshot": _volc_snapshot,
    "zego-record": _zego_record,
    "zego-record-legacy": _zego_record,
    "zego-thumbnail": _zego_thumbnail,
}


# --- text --------------------------------------------------------------------------------------------

LABEL_COLUMN = 56  # cells of the task column at most: with the symbol and the action, 80 columns at most
MEMBER_LINE = 100  # columns of a wrapped list of rooms or settings, at most: fewer on a narrower terminal
INDENT = "        "


def _wrap(head: str, items: Sequence[str], mark: str, columns: int) -> list[str]:
    """`head` then `items` (each but the last followed by `mark`) greedily wrapped in `columns` terminal cells,
    later lines indented under the first (textwrap is far slower on 10,000 rooms): at 100 columns on an
    80-column terminal, the terminal broke each line again at column 80, flush left. An item is never broken
    (grep finds it whole): one longer than a line has a line of its own."""
    lines, line, empty = [], head, True
    last = len(items) - 1
    for i, item in enumerate(items):
        if i != last:
            item += mark
        if not empty and cell_len(line) + cell_len(item) > columns:
            lines.append(line.rstrip())
            line = INDENT + "  "
        line, empty = line + item + " ", False
    lines.append(line.rstrip())
    return lines


# --- room selectors ------------------------------------------------------------------------------------

# Where the activity comes from, so a daemon that runs and still knows none points at the vendor's callbacks.
NO_ACTIVITY = (
    "no room activity known yet (`capctl run` records it from the vendor's room callbacks, sent to its"
    " /callbacks/volcengine or /callbacks/zego): nothing to start"
)


def selector_facts(
    view: dict[str, Any], created_at: str, code: Callable[[str], str] = str, most: int | None = None
) -> tuple[str, list[tuple[str, list[str]]]]:
    """One selector job of a plan: its counts and how old the room knowledge is, then its rooms by fate, each
    a label and its rooms (the views join them with `, `, the text view wrapping them); each room id and job
    written by `code` (markdown: inline code, where an `@name` in a room id mentions no one). With `most`, each
    list names that many rooms at most, then how many more (the counts above, and the JSON, have them all)."""

    def named(rooms: Sequence[Any]) -> tuple[Sequence[Any], list[str]]:
        if most is None or len(rooms) <= most:
            return rooms, []
        return rooms[:most], [f"… and {len(rooms) - most:,} more"]

    if view["seen_at"] is None:
        return NO_ACTIVITY, []
    n = view["counts"]
    seen_at = parse_rfc3339(view["seen_at"])
    age = fmt_seconds(max(0, int(parse_rfc3339(created_at) - seen_at)))
    cap = f" (maxRooms {view['max_rooms']})" if view["max_rooms"] is not None else ""
    head = (
        f"{n['active']} active · {n['running']} running · {n['start']} to start · {n['left_out']} left out{cap}"
        f" · {n['claimed']} claimed; room activity as of {fmt_time(seen_at)} ({age} before this plan)"
    )
    details = []
    for name, what in (("start", "to start"), ("left_out", f"left out{cap}"), ("ending", "left to end")):
        if view[name]:
            rooms, more = named(view[name])
            details.append((f"{what}: ", [*map(code, rooms), *more]))
    # Claimed by a named job or another selector.
    claimed, more = named(view["claimed"])
    details += [(f"{code(c['room'])}: claimed by {code(c['by'])}", []) for c in claimed]
    details += [(f"{text} claimed", []) for text in more]
    return head, details


def render_text(plan: PlanJSON, console: Console, *, show_unchanged: bool = False) -> None:
    rows = plan_rows(plan, show_unchanged=show_unchanged)
    columns = min(MEMBER_LINE, console.width)
    if not rows:
        console.print(_no_changes(plan), soft_wrap=True)
    else:
        if all(r.action in ("no-op", "unknown") for r in rows):
            console.print("No changes for the tasks that could be observed. Left as is:\n", soft_wrap=True)
        else:
            # Unwrapped as every other line: on a narrow terminal, the header alone was broken in two.
            console.print("capctl will perform the following actions:\n", soft_wrap=True)
        # Labels are padded to the widest of those up to LABEL_COLUMN: one long room id (ZEGO allows 128 bytes)
        # pushed every row's action past column 150; a longer label now pushes only its own row's.
        widths = [cell_len(r.label + r.count) for r in rows]
        width = max((w for w in widths if w <= LABEL_COLUMN), default=0)
        lines: list[tuple[tuple[str, str], ...]] = []  # (text, style) segments of each line
        for row in rows:
            symbol, style = UNOBSERVED if row.action == "unknown" else SYMBOLS[row.action]
            lines.append(
                (
                    ("  ", ""),
                    (f"{symbol:>3} ", f"bold {style}"),
                    (_pad(row.label + row.count, width), style),
                    (f"  {row.action:<8}", f"bold {style}"),
                    (f"  {row.reason}", ""),
                )
            )
            if row.settings:
                lines += [((text, ""),) for text in _wrap(INDENT, row.settings, " ·", columns)]
            for detail in row.details:  # `Path: old → new`, the new value under the old when both are long
                first, *then = detail.split(" → ")
                lines += [((text, "dim"),) for text in _wrap(INDENT, [first, *(f"→ {t}" for t in then)], "", columns)]
            if row.members:
                lines += [((text, "dim"),) for text in _wrap(f"{INDENT}{row.member_word}: ", row.members, ",", columns)]
        # rich renders ~0.1 ms per styled line (over a second for 10,000 creates): without colour the
        # styles would be dropped anyway, so the lines go out as one unstyled Text (same bytes, 10× faster).
        if console.color_system is None:
            console.print(Text("\n".join("".join(text for text, _ in line) for line in lines)), soft_wrap=True)
        else:
            console.print(Group(*(Text.assemble(*line) for line in lines)), soft_wrap=True)
        console.print()
    for view in plan.get("selectors", ()):
        head, details = selector_facts(view, plan["created_at"])
        # Its line is whole, as a change's (grep sees the counts); the rooms under it wrap, as a change's do.
        console.print(Text(f"Room selector {view['job']} (rooms: {view['rooms']}): {head}"), soft_wrap=True)
        for label, rooms in details:
            console.print(Text("\n".join(_wrap(f"{INDENT}{label}", rooms, ",", columns)), style="dim"), soft_wrap=True)
    if plan.get("selectors"):
        console.print()
    for note in plan["notes"]:
        console.print(Text(f"Note: {note}", style="yellow"), soft_wrap=True)
    console.print(Text(summary_line(plan), style="bold"), soft_wrap=True)


# --- markdown ----------------------------------------------------------------------------------------

MD_OPEN_ROWS = 50  # up to this many rows the list of what each change does is shown open; above, folded
MD_SELECTOR_ROOMS = 50  # rooms a selector's list names in markdown; the rest are counted (a PR comment is cut)
# GitHub (and GitLab) turn references in a comment's text into links and mentions after rendering it (their
# filters skip code, pre and links: docs.github.com, "Autolinked references and URLs"; a backslash escape is
# gone by then, so it cannot stop them). Each is put in a code span, where none is made: a vendor's "see #1" or "request
# 20261206205710abcdef" must not link an issue or a commit of the repository, nor `@team` notify anyone.
_REFERENCES = "|".join(
    (
        # A URL that GFM links as it is (its extended autolinks), up to its last character that is no
        # punctuation (a closing parenthesis is left out of it, as GFM leaves one); an email address alike.
        r"(?<!\w)(?:https?://|www\.)[^\s`\\<>]*[^\s`\\<>?!.,:*_~)&]",
        r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z0-9]+(?![\w-])",
        r"(?<!\w)@[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?",  # a user or a team (`@octocat`, `@org/team`)
        # An issue (#26, owner/repo#26, owner#26); on GitLab also a merge request (!26), a milestone (%26), a
        # snippet ($26), an epic (&26), a label (~26), each with a project's path or not.
        r"(?<![\w/])(?:[\w.-]+(?:/[\w.-]+)*)?[#!%$&~]\d+(?!\w)",
        r"(?<!\w)(?i:GH)-\d+(?!\w)",  # an issue too: GH-26
        # A commit: a word of 7 to 40 hex digits with a digit in it (`a5c3785`; a hyphenated id whole), or
        # `user@SHA`, `owner/repo@SHA`.
        r"(?<![\w@/.-])(?:[\w.-]+(?:/[\w.-]+)?@)?(?=[0-9a-fA-F-]*\d)(?=[0-9a-fA-F]{7})"
        r"[0-9a-fA-F]+(?:-[0-9a-fA-F]+)*(?![\w-])",
        r":(?:[\w+-]*[A-Za-z][\w+-]*|[+-]1):",  # an emoji shortcode (`:tada:`, `:+1:`); a time's `:30:` is none
    )
)
_VERBATIM_RE = re.compile(f"({_REFERENCES})")
# Markdown's own characters in text (a vendor's message, a folder): each backslash-escaped, so it shows as is.
_MD_SPECIAL_RE = re.compile(r"[\\`*_\[\]~|]")
# A code span as CommonMark reads one: a run of backticks up to the next run of as many.
_CODE_SPAN_RE = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.S)


def _md_cell(text: str, in_table: bool = True) -> str:
    """One line; in a table cell, `|` escaped (or it splits the row; GFM takes the backslash out again, in code
    too). Elsewhere a backslash in code or a link would show, so it is left out."""
    return (text.replace("|", "\\|") if in_table else text).replace("\n", " ")


def _md_text(text: str, *, in_table: bool = True, code_spans: bool = True) -> str:
    """Text outside code, shown as it is. capctl's own reasons and notes put commands in code spans (`capctl
    wake KEY`), kept as GitHub would read them (`code_spans`); all else is written so that it cannot be markup.
    A room id or folder may hold `<` (ZEGO allows it), and `<!--` or `<details>` there would hide the rest of
    the comment from the reviewer, so HTML's characters are written as entities; markdown's (`*`, `_`, `[`, a
    stray backtick, `|`, ...) are backslash-escaped, or a vendor's message quoting a room "a`b" opened a code
    span that pushed an `@name` after it out of code. GitHub's references (an `@name`, a room id a vendor's
    message quotes; `#26`; a commit id; a URL; `:tada:`) are put in code, where GitHub makes none of them."""
    out, at = [], 0
    for span in _CODE_SPAN_RE.finditer(text) if code_spans else ():
        out += [_md_plain(text[at : span.start()], in_table), _md_cell(span.group(), in_table)]
        at = span.end()
    return "".join([*out, _md_plain(text[at:], in_table)])


def _md_plain(text: str, in_table: bool) -> str:
    parts = _VERBATIM_RE.split(text.replace("\n", " "))  # odd indices: the references, shown in code as they are
    return "".join(
        _md_code(part, in_table=in_table)
        if i % 2
        else _MD_SPECIAL_RE.sub(r"\\\g<0>", part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        for i, part in enumerate(parts)
    )


def _md_code(text: str, *, in_table: bool = True) -> str:
    """Inline code that backticks in user text (a room id) cannot end early: its fence is one backtick longer
    than their longest run (a room "``<!--``" in a fence of two ended it, and `<!--` hid the rest of the
    comment). Only a table cell needs its `|` escaped: in a list item the backslash would show inside the code.
    CommonMark takes one space off each end of code that has one at both: a room " a " would show as "a", so
    such text is padded with one more, as text starting or ending with a backtick is."""
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    spaced = text[:1] == text[-1:] == " " and text.strip(" ")
    pad = " " if len(fence) > 1 or spaced else ""
    return f"{fence}{pad}{_md_cell(text, in_table)}{pad}{fence}"


def render_markdown(plan: PlanJSON) -> str:
    lines = ["### capctl plan", "", f"**{summary_line(plan)}**", ""]
    # One paragraph each: consecutive `>` lines are one paragraph, run together where a newline is a space (GitLab).
    if plan["notes"]:
        lines += ["\n>\n".join(f"> {_md_text(note, in_table=False)}" for note in plan["notes"]), ""]
    rows = sorted(plan_rows(plan), key=lambda r: MD_FIRST.get(r.action, len(MD_FIRST)))
    if not rows:
        lines.append(_md_text(_no_changes(plan), in_table=False) if plan.get("edits_waiting") else "No changes.")
    else:
        lines += ["| | Task | Action | Reason |", "|---|---|---|---|"]
        for r in rows:
            icon = "❓" if r.action == "unknown" else MD_ICONS[r.action]
            lines.append(f"| {icon} | {_md_code(r.label)}{r.count} | {r.action} | {_md_text(r.reason)} |")
    # After the changes: a selector of thousands of rooms left out (one table row, one line) put the deletes past
    # the 60,000 characters a comment is cut at, and the cut, at a line's end, took its whole row (walk 55b).
    if plan.get("selectors"):
        lines += ["", "| Room selector | Rooms | Now |", "|---|---|---|"]
        for view in plan["selectors"]:
            head, details = selector_facts(view, plan["created_at"], _md_code, MD_SELECTOR_ROOMS)
            now = "<br>".join((_md_text(head), *(label + ", ".join(rooms) for label, rooms in details)))
            lines.append(f"| {_md_code(view['job'])} | {_md_code(view['rooms'])} | {now} |")
    if not rows:
        return "\n".join(lines) + "\n"
    described = [r for r in rows if r.settings or r.details or r.members]
    if described:
        opened = " open" if len(rows) <= MD_OPEN_ROWS else ""
        lines += ["", f"<details{opened}><summary>What each change does</summary>", ""]
        for r in described:
            label = _md_code(r.label, in_table=False)
            lines.append(
                f"- {label}{r.count}"
                + (f": {_md_text(' · '.join(r.settings), in_table=False, code_spans=False)}" if r.settings else "")
            )
            lines += [f"  - {_md_code(d, in_table=False)}" for d in r.details]
            if r.members:
                lines.append(f"  - {r.member_word}: " + ", ".join(_md_code(m, in_table=False) for m in r.members))
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


# --- apply and state -----------------------------------------------------------------------------------


def render_apply_result(result: ApplyResult, console: Console) -> None:
    """Each failed action with its error, each change an interruption cut short, each done change with a
    note (a run the vendor already had: stopped and started again, or going on), then the summary line
    (after an interruption it also counts the changes never started). Vendor error text is printed as it
    came: rich Text, never markup, so brackets in it can neither vanish nor break the output."""
    for failure in result.failed:
        console.print(
            Text.assemble(
                (f"✗ {escape_unprintable(failure.key)}", "red"), f" ({failure.action.value}): {failure.error}"
            ),
            soft_wrap=True,
        )
    for done in result.results:
        if done.ok and done.note:
            console.print(
                Text.assemble((f"! {escape_unprintable(done.key)}", "yellow"), f" ({done.action.value}): {done.note}"),
                soft_wrap=True,
            )
    for cut in result.cut_short:
        console.print(
            Text.assemble((f"… {escape_unprintable(cut.key)}", "yellow"), f" ({cut.action.value}): {cut.error}"),
            soft_wrap=True,
        )
    console.print(Text(result.summary(), style="bold"), soft_wrap=True)


SELECTOR_COLUMNS = ("JOB", "ROOM", "SELECTOR")


STATE_COLUMNS = ("KEY", "STATUS", "VENDOR TASK", "RE-ISSUES", "STOP REASON", "OBSERVED", "NEXT ATTEMPT", "ERROR")
# `state list`'s default view, as `kubectl get` has one: what a task does and why, in a row that fits 80
# columns for common keys; `-o wide` has every column (the vendor id, the last look, a selector's columns).
NARROW_COLUMNS = ("KEY", "STATUS", "RE-ISSUES", "NEXT ATTEMPT", "REASON")
REASON_MIN = 10  # cells a cut REASON keeps, however narrow the terminal: less says nothing


def _in(seconds: float) -> str:
    """`in 29m12s`, `in 3h5m`, `in 2d4h`: the two largest units, as `kubectl get` writes an age; `due` once
    passed (the daemon, or the next apply, takes it up)."""
    if seconds <= 0:
        return "due"
    whole = int(-(-seconds // 1))  # up, so a wait is never shown shorter than it is
    units = [(whole // 86400, "d"), (whole % 86400 // 3600, "h"), (whole % 3600 // 60, "m"), (whole % 60, "s")]
    first = next(i for i, (n, _) in enumerate(units) if n or i == 3)
    return "in " + "".join(f"{n}{u}" for n, u in units[first : first + 2] if n)


def _cut(text: str, width: int) -> str:
    """`text` in at most `width` terminal cells, its end replaced by `…` when it is longer."""
    if cell_len(text) <= width:
        return text
    from rich.cells import set_cell_size

    return set_cell_size(text, width - 1).rstrip() + "…"


def render_state_table(
    records: Sequence[TaskRecord], serial: int, *, now: float, wide: bool = False, width: int | None = None
) -> str:
    """`capctl state list`: plain columns as `kubectl get` prints them, one line per task.

    The default view fits a terminal: five columns, its REASON (the error, else the stop reason) cut with `…`
    to the terminal's `width`, or on a line of its own under its task where fewer than `REASON_MIN` cells are
    left (a key, which names the task, is never cut). `width` None (a pipe) cuts nothing,
    so grep and awk see every cell whole. `wide` (`-o wide`) has every column, never cut."""
    from reconciler.transitions import MAY_RUN, TOMBSTONE_RETENTION, ended_by_removal, failed_may_run

    def reason(r: TaskRecord) -> str:
        # A tombstone whose run had ended before its removal read as a stopped task (`removed … idle timeout`):
        # its REASON says it was removed, then why that run had ended (walk 41C-6).
        if r.status is TaskStatus.REMOVED and not ended_by_removal(r.stop_reason):
            return "removed from specs" + (f" (its run had ended: {r.stop_reason})" if r.stop_reason else "")
        return error(r) or r.stop_reason or "-"

    def error(r: TaskRecord) -> str | None:
        # Not a start refused outright, where nothing runs (walk 47B-3); `-o wide`'s error column too (50D-3).
        return f"{r.last_error or 'start failed'}; {MAY_RUN}" if failed_may_run(r) else r.last_error

    if wide:
        # Tasks started by a room selector: their job, room and selector in columns of their own.
        selected = any(r.selector for r in records)
        head = (STATE_COLUMNS[0], *SELECTOR_COLUMNS, *STATE_COLUMNS[1:]) if selected else STATE_COLUMNS
        rows = [head] + [
            (
                r.key,
                *((job_of(r.key), r.target, r.selector or "-") if selected else ()),
                r.status.value,
                r.vendor_task_id or "-",
                str(r.reissue_count),
                r.stop_reason or "-",
                fmt_time(r.observed_at) if r.observed_at else "-",
                fmt_time(r.next_attempt_at) if r.next_attempt_at else "-",
                (error(r) or "-").replace("\n", " "),
            )
            for r in records
        ]
    else:
        rows = [NARROW_COLUMNS] + [
            (
                r.key,
                r.status.value,
                str(r.reissue_count),
                _in(r.next_attempt_at - now) if r.next_attempt_at else "-",
                reason(r).replace("\n", " "),
            )
            for r in records
        ]
    # A key from a state an older capctl wrote may hold an escape sequence (a room id a callback named before room
    # ids were checked): written as escapes, as a plan shows it (walk 58e).
    rows = [tuple(map(escape_unprintable, row)) for row in rows]
    widths = [max(cell_len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    if not wide:
        # As the plan's labels: padded to the widest key up to LABEL_COLUMN; a longer one (ZEGO allows room ids
        # of 128 bytes) pushes only its own row, not every row's columns past the terminal's edge.
        widths[0] = max((w for row in rows if (w := cell_len(row[0])) <= LABEL_COLUMN), default=0)
    lines = []
    for row in rows:
        cells = [_pad(cell, w) for cell, w in zip(row, widths, strict=False)]
        last = row[-1]
        room = None if width is None or wide else width - sum(map(cell_len, cells)) - 3 * len(cells)
        if room is None or room >= REASON_MIN:
            lines.append("   ".join([*cells, last if room is None else _cut(last, room)]))
        else:
            # Too narrow for a REASON that says anything (80 columns and a key of 34 cells): the reason goes
            # under its task, indented, rather than a row the terminal wraps (walk 14b); "-" says nothing.
            lines.append("   ".join(cells).rstrip())
            if last not in ("-", NARROW_COLUMNS[-1]):
                lines.append(_cut(f"    ↳ {last}", max(width or 0, REASON_MIN)))
    count = f"{len(records)} task{'' if len(records) == 1 else 's'}"
    # Tombstones are listed as any task (status `removed`), and counted apart: they run nothing.
    removed = sum(1 for r in records if r.status is TaskStatus.REMOVED)
    if removed:
        count += f", {removed} of them removed (tombstones, kept {TOMBSTONE_RETENTION / 86400:g} days)"
    return f"{count} (state serial {serial})\n" + "\n".join(lines)
