"""The page and its JSON twin, rendered from hand-built snapshots: what they show, escaping, no outside asset."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser

from reconciler.model import TaskRecord, TaskStatus
from reconciler.status import StatusQuery, build_snapshot
from reconciler.status.model import Replica
from reconciler.status.render import JSON_FORMAT_VERSION, page_url, render_html, to_json
from tests.status.conftest import IDLE, LEADER, NOW, ZEGO, Told, inputs, record


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text, for checks that do not depend on formatting."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", "".join(_parse(html).text))


def test_the_page_answers_the_three_questions() -> None:
    key = "SnapshotJob/lobby-audit/lobby"
    told = Told()
    history = told.history
    run = told.start(record(key, vendor_task_id="snap-1"), NOW - 3000)
    told.room_active("lobby", NOW - 2500)
    latest = told.start(told.stop(run, NOW - 2000), NOW - 1400, vendor_task_id="snap-2", reissue_count=1)
    failed = record("RecordingJob/class-rec/class-101", TaskStatus.FAILED, last_error="StartRecord: 403 forbidden")
    snap = build_snapshot(
        inputs([latest, failed], history=history, next_observation={key: NOW + 25}), StatusQuery(), NOW
    )
    html = render_html(snap)
    text = _text(html)
    assert "Some tasks are not running." in text
    assert "leader holds the state lease" in text
    assert "sha256:0123456789abcdef, loaded 2027-01-15 07:50:00Z (10m ago)" in text
    assert "snap-2" in text and "2027-01-15 07:36:40Z" in text  # vendor task id, running since
    assert f"2027-01-15 07:36:40Z: {IDLE}" in text  # the re-issue with its reason
    assert "in 25s" in text  # next observation
    assert "StartRecord: 403 forbidden" in text
    assert "10m lost while active" in text  # 2000 → 1400 s before now, the room active throughout
    assert "capture lost while the room was active: 2027-01-15 07:26:40Z to 2027-01-15 07:36:40Z (10m)" in text
    # the timeline's bars: the lost stretch is drawn in the "lost" colour
    bars = [a.get("class") for t, a in _parse(html).tags if t == "rect"]
    assert bars.count("c-lost") == 1 and bars.count("c-act") == 1 and bars.count("c-run") == 2


def test_user_text_is_escaped_and_nothing_is_loaded_from_elsewhere() -> None:
    hostile = 'r"><script>alert(1)</script>'
    replica = Replica(
        "leader", "holds the state lease", None, None, None, "jobs.yaml:3:5: <img src=x onerror=alert(1)>", NOW - 5
    )
    rec = record(f"SnapshotJob/j/{hostile}", TaskStatus.FAILED, last_error="<b>bold</b>")
    html = render_html(build_snapshot(inputs([rec], replica=replica), StatusQuery(), NOW))
    html += render_html(build_snapshot(inputs([rec], replica=replica), StatusQuery(job="<i>"), NOW))
    tags = _parse(html).tags
    assert not [t for t, _ in tags if t in ("script", "img", "link", "iframe", "b", "i")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "The last spec change is invalid (since 2027-01-15 07:59:55Z)" in _text(html)
    assert "Nothing is reconciled until a valid set is loaded." in _text(html)
    urls = [v for _, attrs in tags for k, v in attrs.items() if k in ("href", "src", "action") and v]
    # relative, so that the page works under any path prefix a proxy strips (walk 61c-1): no `/…`
    assert urls and all(u.startswith(("?", "#", "./", "api/v1/status?")) for u in urls), urls
    assert "http://" not in html and "https://" not in html and "//" not in "".join(urls)


def test_the_page_is_navigable_and_labelled() -> None:
    records = [record(f"SnapshotJob/job/room-{i:03d}") for i in range(120)]
    html = render_html(build_snapshot(inputs(records), StatusQuery(status="running"), NOW))
    tags = _parse(html).tags
    assert tags[0] == ("html", {"lang": "en"})
    names = [t for t, _ in tags]
    for landmark in ("header", "main", "nav", "footer", "form", "table", "caption", "th"):
        assert landmark in names, landmark
    assert ("a", {"class": "skip", "href": "#tasks"}) in tags
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) in tags
    # the timeline bars are pictures of the text under them: hidden from screen readers, not left unexplained
    svgs = [a for t, a in tags if t == "svg" and "viewbox" in a]  # the bars (not the page's hatch pattern)
    assert svgs and all(a.get("aria-hidden") == "true" for a in svgs)
    assert html.count('<p class="summary-text">') >= len(svgs)
    assert "Tasks 1–100 of 120 matching · page 1 of 2" in _text(html)
    assert ("a", {"href": "?status=running&page=2", "rel": "next"}) in tags
    assert "script" not in names


def test_a_filter_matching_nothing_says_so_plainly() -> None:
    html = render_html(build_snapshot(inputs([record("SnapshotJob/hall/h1")]), StatusQuery(job="nope"), NOW))
    text = _text(html)
    assert "No task matches." in text and "No room on this page." in text
    assert "0–0" not in text and "thumbnail" not in text  # no task at all: neither a count nor a file to explain


def test_page_links_keep_the_filters_and_drop_defaults() -> None:
    query = StatusQuery(job="SnapshotJob/lobby", status="stopped", page=3, per_page=250)
    assert page_url(query, page=4) == "?job=SnapshotJob%2Flobby&status=stopped&per_page=250&page=4"
    assert page_url(query, status=None) == "?job=SnapshotJob%2Flobby&per_page=250"  # a new filter: page 1
    assert page_url(query, room="vip-1") == "?job=SnapshotJob%2Flobby&status=stopped&room=vip-1&per_page=250"
    assert page_url(StatusQuery()) == "?"


def test_the_filter_form_and_clear_filters_keep_per_page_and_decisions() -> None:
    """Walk 60c-2: on `?per_page=5&decisions=7&status=running` the form's Per page showed 50 (no option was 5, so
    the browser picked the first) and had no `decisions`: choosing a room sent `per_page=50` and dropped the
    decisions; "Clear filters" (`?`) dropped both, though every link keeps them."""
    records = [record(f"SnapshotJob/hall/h{i}") for i in range(7)]
    query = StatusQuery(status="running", per_page=5, decisions=7)
    tags = _parse(render_html(build_snapshot(inputs(records), query, NOW))).tags
    form = [(tag, attrs) for tag, attrs in tags if tag in ("option", "input") and "list" not in attrs]
    per_page = [attrs for tag, attrs in form if tag == "option" and "selected" in attrs]
    assert [a.get("value") for a in per_page] == ["running", "5"]  # the status, then the page size in force
    assert ("input", {"type": "hidden", "name": "decisions", "value": "7"}) in form
    assert ("a", {"href": "?per_page=5&decisions=7"}) in tags  # Clear filters
    plain = _parse(render_html(build_snapshot(inputs(records), StatusQuery(status="running"), NOW))).tags
    assert not [attrs for tag, attrs in plain if tag == "input" and attrs.get("name") == "decisions"]
    assert ("a", {"href": "?"}) in plain


def test_the_unfiltered_counts_link_to_their_tasks_whatever_the_room_filter() -> None:
    """Walk 60c-3: the counts at the top and the jobs needing a look are never filtered, yet their links kept
    `room`: on `?room=lobby`, "1 failed" led to "No task matches." (the failed task is another room's)."""
    failed = record("RecordingJob/class-rec/class-101", TaskStatus.FAILED, last_error="StartRecord: 403 forbidden")
    lobby = record("SnapshotJob/lobby-audit/lobby")
    query = StatusQuery(room="lobby", per_page=10)
    tags = _parse(render_html(build_snapshot(inputs([failed, lobby]), query, NOW))).tags
    links = [attrs.get("href") for tag, attrs in tags if tag == "a"]
    assert "?status=failed&per_page=10" in links  # the badge "1 failed"
    assert "?job=RecordingJob%2Fclass-rec&per_page=10" in links  # its job in the jobs that need a look
    assert "?job=SnapshotJob%2Flobby-audit&room=lobby&per_page=10" in links  # a shown task's job keeps its room


def test_no_decisions_asked_for_is_not_said_to_be_none_logged() -> None:
    """Walk 60c-4: `?decisions=0` (none shown, as asked) said "No decision logged yet." with decisions logged."""
    events = [{"timestamp": "2027-01-15T07:59:00Z", "level": "info", "event": "decision", "key": "SnapshotJob/a/b"}]
    text = _text(render_html(build_snapshot(inputs([], events=events), StatusQuery(decisions=0), NOW)))
    assert "No decision logged yet" not in text
    assert "None shown: decisions=0 asks for none." in text
    empty = _text(render_html(build_snapshot(inputs([]), StatusQuery(), NOW)))
    assert "No decision logged yet." in empty


def test_the_json_twin_has_the_same_facts() -> None:
    key = "SnapshotJob/lobby-audit/lobby"
    rec = record(key, TaskStatus.STOPPED, started_at=NOW - 100, stopped_at=NOW - 50, stop_reason=IDLE)
    events = [{"timestamp": "2027-01-15T07:59:00Z", "level": "info", "event": "decision", "key": key, "action": "x"}]
    data = to_json(build_snapshot(inputs([rec], events=events), StatusQuery(per_page=10), NOW))
    json.dumps(data)  # plain JSON all the way down
    assert data["format_version"] == JSON_FORMAT_VERSION
    assert data["generated_at"] == "2027-01-15T08:00:00Z"
    assert data["replica"] == {
        "role": "leader",
        "detail": LEADER.detail,
        "spec_digest": LEADER.spec_digest,
        "spec_loaded_at": "2027-01-15T07:50:00Z",
        "spec_summary": LEADER.spec_summary,
        "spec_error": None,
        "spec_error_since": None,
        "prune_held": [],
        "left_out": {},
    }
    assert data["all_running"] is False and data["totals"] == {"stopped": 1}
    assert data["page"] == {"number": 1, "pages": 1, "matching": 1}
    assert data["query"]["per_page"] == 10
    (task,) = data["jobs"][0]["groups"][0]["tasks"]
    assert task["stop_reason"] == IDLE and task["stopped_at"] == "2027-01-15T07:59:10Z"
    (room,) = data["rooms"]
    assert room["captures"][0]["runs"] == [
        {"start": "2027-01-15T07:58:20Z", "end": "2027-01-15T07:59:10Z", "seconds": 50.0}
    ]
    assert room["captures"][0]["gaps"][-1] | {} == {
        "start": "2027-01-15T07:59:10Z",
        "end": "2027-01-15T08:00:00Z",
        "seconds": 50.0,
        "room_active": False,
        "reason": IDLE,
    }
    assert data["decisions"] == [
        {"at": "2027-01-15T07:59:00Z", "level": "info", "event": "decision", "key": key, "fields": {"action": "x"}}
    ]


def test_a_standby_says_it_does_not_act_and_why() -> None:
    standby = Replica(
        role="standby",
        detail="does not act: another holder took the state lock: capctl run on http://10.0.0.7:8080",
        spec_digest=None,
        spec_loaded_at=None,
        spec_summary=None,
        spec_error="the specs have not been read yet",
        spec_error_since=None,
    )
    html = render_html(build_snapshot(inputs([], replica=standby), StatusQuery(), NOW))
    text = _text(html)
    assert "standby does not act: another holder took the state lock: capctl run on http://10.0.0.7:8080" in text
    assert "No task yet." in text and "Spec set none loaded yet" in text
    assert "Nothing is reconciled until a valid set is loaded." in text
    assert "0 tasks in 0 jobs" in text and "No task matches." in text
    assert to_json(build_snapshot(inputs([], replica=standby), StatusQuery(), NOW))["replica"]["role"] == "standby"


def test_a_room_that_may_pass_for_another_is_spelled_out() -> None:
    """A ZEGO room is named by whoever joins it: `lоbby` with a Cyrillic `о`, or a fullwidth `ｌｏｂｂｙ`, read
    as a second `lobby` on the page (its capture running, the real lobby's not). Their escapes follow them;
    an ASCII name, or one in a single other script, is shown as it is."""
    rooms = ["lobby", "l\u043ebby", "\uff4c\uff4f\uff42\uff42\uff59", "班级101"]
    told = Told()
    records = [record(f"RecordingJob/rec/{room}") for room in rooms]
    told.seed(records, NOW - 3600)
    for room in rooms:
        told.room_active(room, NOW - 600, account=ZEGO)
    text = _text(render_html(build_snapshot(inputs(records, history=told.history), StatusQuery(), NOW)))
    assert "lоbby (l\\u043ebby)" in text and "ｌｏｂｂｙ (\\uff4c\\uff4f\\uff42\\uff42\\uff59)" in text
    assert "Room lоbby (l\\u043ebby)" in text  # its timeline too
    assert "lobby (" not in text and "班级101 (" not in text


def test_a_room_id_cannot_reverse_or_hide_what_follows_it() -> None:
    """Walk 13e: a ZEGO room `\\u202eevil` (a right-to-left override) made its heading read
    `Room (livee202u\\) live 1:ogez`: the escapes and the vendor account after it, reversed. The id is isolated
    (`<bdi>`), and an invisible format character (the override, a zero-width space) gets it spelled out even
    in a name without ASCII letters, where `班级\\u200b101` passed for `班级101`."""
    rooms = ["\u202eevil", "班级\u200b101", "班级101"]
    told = Told()
    records = [record(f"RecordingJob/rec/{room}") for room in rooms]
    told.seed(records, NOW - 3600)
    for room in rooms:
        told.room_active(room, NOW - 600, account=ZEGO)
    html = render_html(build_snapshot(inputs(records, history=told.history), StatusQuery(), NOW))
    assert html.count("<bdi>\u202eevil</bdi> (\\u202eevil)") == 2  # its task row and its timeline
    assert html.count("<bdi>班级\u200b101</bdi> (\\u73ed\\u7ea7\\u200b101)") == 2
    assert html.count("<bdi>班级101</bdi><") == 2  # one script, nothing invisible: shown as it is


def test_active_rooms_past_a_selectors_max_rooms_are_named_at_the_top() -> None:
    """Walk 18H-2: a room past its selector job's maxRooms has no task, so the page said "Every task is running."
    and nothing else; only a recent decision named it. A box at the top names the job and its rooms."""
    replica = dataclasses.replace(LEADER, left_out=(("SnapshotJob/classes", ("class-4", "cl\u0430ss-5")),))
    running = record("SnapshotJob/classes/class-1", TaskStatus.RUNNING)
    snap = build_snapshot(inputs([running], replica=replica), StatusQuery(), NOW)
    text = _text(render_html(snap))
    assert "Active rooms not captured: past their job's maxRooms" in text
    assert "SnapshotJob/classes: class-4, cl\u0430ss-5 (cl\\u0430ss-5)" in text  # a look-alike shows its escape
    assert to_json(snap)["replica"]["left_out"] == {"SnapshotJob/classes": ["class-4", "cl\u0430ss-5"]}
    plain = _text(render_html(build_snapshot(inputs([running]), StatusQuery(), NOW)))
    assert "not captured" not in plain


def test_the_boxes_of_held_prunes_and_rooms_left_out_keep_one_line_each() -> None:
    """Walk 60c-1: the template's trim_blocks ate the line ends in both boxes: two room-selector jobs' rooms ran
    together (`RecordingJob/zsel: z-4SnapshotJob/class-snaps: class-3`), and "… and 2 more" stuck to the
    tenth held key as if part of it (`SnapshotJob/gone/room-9… and 2 more`)."""
    replica = dataclasses.replace(
        LEADER,
        prune_held=tuple(f"SnapshotJob/gone/room-{i}" for i in range(12)),
        max_prune=20.0,
        left_out=(("RecordingJob/zsel", ("z-4",)), ("SnapshotJob/classes", tuple(f"c-{i}" for i in range(12)))),
    )
    html = render_html(build_snapshot(inputs([], replica=replica), StatusQuery(), NOW))
    boxes = [re.sub(r"<[^>]+>", "", box) for box in re.findall(r"<pre>(.*?)</pre>", html, re.S)]
    held = [f"SnapshotJob/gone/room-{i}" for i in range(10)]
    assert boxes[0].split("\n") == [*held, "… and 2 more"]
    rooms = ", ".join(f"c-{i}" for i in range(10))
    assert boxes[1].split("\n") == ["RecordingJob/zsel: z-4", f"SnapshotJob/classes: {rooms} … and 2 more"]


def test_a_look_alike_room_in_a_held_key_or_a_decision_shows_its_escapes() -> None:
    """Walk 60c-7: the box of held prunes, where a human decides what to confirm, and the recent decisions printed
    a key's room as it is: a held `lоbby` (Cyrillic о) read as `lobby`, with no escapes as its task row has."""
    key = "RecordingJob/rec/l\u043ebby"
    replica = dataclasses.replace(LEADER, prune_held=(key,), max_prune=20.0)
    events = [{"timestamp": "2027-01-15T07:59:00Z", "level": "info", "event": "decision", "key": key}]
    html = render_html(build_snapshot(inputs([], replica=replica, events=events), StatusQuery(), NOW))
    shown = "RecordingJob/rec/<bdi>l\u043ebby</bdi> (l\\u043ebby)"
    assert html.count(shown) == 2  # the box and the decision


def test_a_task_whose_prune_is_held_says_why_nothing_is_next() -> None:
    """A start cut short by its job's removal while --max-prune holds the prune stayed `pending` with no error
    and a bare "—" as its next attempt: it read as stuck (walk 14b). It says what it waits for now."""
    held, other = "SnapshotJob/gone/room-1", "SnapshotJob/hall/h1"
    # Walk 27b: a running one read "Next observation: on a callback", but the daemon looks at no removed task.
    running = "SnapshotJob/gone/room-2"
    replica = dataclasses.replace(LEADER, prune_held=(held, running), max_prune=20.0)
    records = [record(held, TaskStatus.PENDING), record(other, TaskStatus.PENDING), record(running)]
    snap = build_snapshot(inputs(records, replica=replica), StatusQuery(), NOW)
    text = _text(render_html(snap))
    assert text.count("none: removed from the specs, its stop waits for a human (the prune above)") == 2
    assert "on a callback" not in text
    tasks = {t["key"]: t for job in to_json(snap)["jobs"] for g in job["groups"] for t in g["tasks"]}
    assert tasks[held]["prune_held"] is True and tasks[other]["prune_held"] is False


def test_a_standby_does_not_say_a_running_task_is_observed_on_a_callback_only() -> None:
    """Walk 52b: a standby observes nothing, so it knows no next observation: its page said `on a callback` of
    every running task (what the leader says of a task it looks at on callbacks alone), beside the leader's
    `in 10s` behind the same Service."""
    standby = dataclasses.replace(LEADER, role="standby", detail="does not act: the leader is …")
    running = record("SnapshotJob/hall/h1")
    text = _text(render_html(build_snapshot(inputs([running], replica=standby), StatusQuery(), NOW)))
    assert "the leader's: a standby observes nothing" in text and "on a callback" not in text
    text = _text(render_html(build_snapshot(inputs([running]), StatusQuery(), NOW)))
    assert "on a callback" in text


def test_a_selector_task_left_to_end_says_its_room_starts_it_again() -> None:
    """Walk 25e: room-0002 emptied, its selector task idled out: `stopped by the vendor`, next attempt "—",
    which read as "nothing will start it". It starts when its room is selected again; a named room's stopped
    task and a selector task with a slot keep their time or dash."""
    ended, slotted, named = "SnapshotJob/sel/room-0002", "SnapshotJob/sel/room-0004", "SnapshotJob/hall/h1"
    records = [
        record(ended, TaskStatus.STOPPED, selector="room-*", stopped_at=NOW - 60, stop_reason=IDLE),
        record(slotted, TaskStatus.STOPPED, selector="room-*", stopped_at=NOW - 60, next_attempt_at=NOW + 60),
        record(named, TaskStatus.STOPPED, stopped_at=NOW - 60, stop_reason=IDLE),
    ]
    snap = build_snapshot(inputs(records), StatusQuery(), NOW)
    assert _text(render_html(snap)).count("when its room is selected again (active, within maxRooms)") == 1
    tasks = {t["key"]: t for job in to_json(snap)["jobs"] for g in job["groups"] for t in g["tasks"]}
    assert [tasks[k]["waits_for_room"] for k in (ended, slotted, named)] == [True, False, False]


def test_tasks_waiting_for_their_rooms_are_no_trouble_yet_stay_in_sight() -> None:
    """Walk 41C-5 (25e, 30b): with a selector job the page nearly always headed "Some tasks are not running." in
    red and listed the job among those with tasks not running, for rooms that simply closed. A task left to its
    room is its job's normal life, as a paused resource is not a degraded one: the headline stays green and says
    how many wait, the job is not listed, the count stays in the totals; `all_running` keeps its meaning."""
    idled = {"selector": "room-*", "stopped_at": NOW - 60, "stop_reason": IDLE}
    ended = [record(f"SnapshotJob/sel/room-{i}", TaskStatus.STOPPED, **idled) for i in (1, 2)]
    running = [record("SnapshotJob/sel/room-3", selector="room-*"), record("SnapshotJob/hall/h1")]
    snap = build_snapshot(inputs([*ended, *running]), StatusQuery(), NOW)
    html = render_html(snap)
    text = _text(html)
    assert "Every task is running or waiting for its room: 2 tasks of room-selector jobs wait for their rooms" in text
    assert '<p class="verdict ok">' in html and "Some tasks are not running." not in text
    assert "2 stopped by the vendor (all waiting for their rooms)" in text
    assert "Jobs with tasks that are not running" not in text
    data = to_json(snap)
    assert (data["all_running"], data["needs_attention"], data["waiting_for_room"]) == (False, False, 2)
    assert data["totals"] == {"stopped": 2, "running": 2} and data["attention"] == []
    # A task that waits for a slot, or for a human's prune, or any other trouble, is red as before; the job
    # listed counts its waiting tasks with its stopped ones, and is ranked by its troubled ones only.
    failed = record("SnapshotJob/hall/h2", TaskStatus.FAILED, last_error="StartSnapshot: InvalidParameter")
    slotted = record("SnapshotJob/sel/room-4", TaskStatus.STOPPED, selector="room-*", next_attempt_at=NOW + 60)
    held = dataclasses.replace(LEADER, prune_held=(ended[0].key,), max_prune=20.0)
    for extra, replica in (([failed], LEADER), ([slotted], LEADER), ([], held)):
        snap = build_snapshot(inputs([*ended, *running, *extra], replica=replica), StatusQuery(), NOW)
        text = _text(render_html(snap))
        assert "Some tasks are not running." in text and to_json(snap)["needs_attention"] is True
        assert "Jobs with tasks that are not running (other than waiting for their rooms)" in text
    assert [(j.job, dict(j.counts)) for j in snap.attention] == [("SnapshotJob/sel", {"stopped": 2, "running": 1})]
    assert snap.waiting == 1  # the task held by the prune waits for a human, not for its room
    # A status unknown still says so, in red.
    unknown = dataclasses.replace(inputs([*ended, *running]), look_errors={running[1].key: "HTTP 503"})
    text = _text(render_html(build_snapshot(unknown, StatusQuery(), NOW)))
    assert "The status of 1 task is unknown" in text


def test_a_job_of_tombstones_only_is_counted_as_such() -> None:
    """Walk 41C-8: after its RecordingJob was removed the Overview read `5 tasks in 2 jobs` beside the spec
    set's `1 job`: the tombstones' job counted as a job, unsaid. It is said; a job with a task in force is not."""
    records = [
        record("RecordingJob/class-recs/class-101", TaskStatus.REMOVED, stop_reason="removed from specs"),
        record("RecordingJob/class-recs/class-102", TaskStatus.REMOVED, stop_reason="removed from specs"),
        record("SnapshotJob/class-snaps/class-101"),
        record("SnapshotJob/class-snaps/class-102", TaskStatus.REMOVED, stop_reason="removed from specs"),
    ]
    snap = build_snapshot(inputs(records), StatusQuery(), NOW)
    assert "4 tasks in 2 jobs, 1 of them with removed tasks only (tombstones):" in _text(render_html(snap))
    assert (to_json(snap)["jobs_total"], to_json(snap)["jobs_removed"]) == (2, 1)
    alone = build_snapshot(inputs(records[:2]), StatusQuery(), NOW)
    assert "2 tasks in 1 job, with removed tasks only (tombstones):" in _text(render_html(alone))
    live = _text(render_html(build_snapshot(inputs(records[2:]), StatusQuery(), NOW)))
    assert "2 tasks in 1 job:" in live and "tombstones" not in live


def test_a_submitted_thumbnail_shows_when_it_was_submitted() -> None:
    """20d-4: a done thumbnail's row read "Stopped: —" (nothing stops a one-shot task), and its JSON had no time
    at all: when it was submitted is what its team looks for."""
    thumb = record("ThumbnailJob/replay//record/a.mp4", TaskStatus.DONE, vendor_task_id="thumb-1", started_at=NOW - 90)
    snap = build_snapshot(inputs([thumb]), StatusQuery(), NOW)
    text = _text(render_html(snap))
    assert "Submitted" in text and "Stopped" not in text
    assert "2027-01-15 07:58:30Z" in text  # NOW - 90 s
    [task] = to_json(snap)["jobs"][0]["groups"][0]["tasks"]
    assert (task["submitted_at"], task["stopped_at"]) == ("2027-01-15T07:58:30Z", None)


def test_a_thumbnail_resubmitted_but_not_accepted_shows_no_submission_time() -> None:
    """21b: an edited entry whose new submission failed (or is pending) keeps the old submission's `started_at`
    while its record holds the new request and no vendor task: "Submitted 07:58" in its failed group said the
    refused submission went through. Only a submission the vendor took (a task id) has a time."""
    refused = record(
        "ThumbnailJob/replay//record/a.mp4",
        TaskStatus.FAILED,
        vendor_task_id=None,
        started_at=NOW - 90,
        last_error="MediaThumbnails: 1000: request failed",
    )
    snap = build_snapshot(inputs([refused]), StatusQuery(), NOW)
    assert "2027-01-15 07:58:30Z" not in _text(render_html(snap))
    [task] = to_json(snap)["jobs"][0]["groups"][0]["tasks"]
    assert task["submitted_at"] is None


def test_a_failed_start_that_may_run_says_so_unlike_one_refused_outright() -> None:
    """Walk 47B-3: a failed start whose answers were lost, or whose retry was refused (walk 46A-1), may run at
    the vendor; `state list` and the page showed its error alone, as for a start refused outright (nothing
    runs). Both add that it may run; the refused one, and a thumbnail's submission, do not."""
    from reconciler.render import render_state_table
    from reconciler.transitions import MAY_RUN

    error = "volc (volcengine): StartSnapshot: SignatureDoesNotMatch"
    may_run = record("SnapshotJob/hall/h1", TaskStatus.FAILED, last_error=error)
    refused = record("SnapshotJob/hall/h2", TaskStatus.FAILED, last_error=error, start_refused=True)
    thumb = record("ThumbnailJob/t/h3", TaskStatus.FAILED, last_error="MediaThumbnails: timeout")
    rows = render_state_table([may_run, refused, thumb], 1, now=NOW).splitlines()[-3:]
    assert [row.endswith(f"{error}; {MAY_RUN}") for row in rows] == [True, False, False], rows
    assert rows[1].endswith(error) and rows[2].endswith("MediaThumbnails: timeout"), rows
    snap = build_snapshot(inputs([may_run, refused, thumb]), StatusQuery(), NOW)
    tasks = {t["key"]: t for j in to_json(snap)["jobs"] for g in j["groups"] for t in g["tasks"]}
    assert [tasks[r.key]["start_may_run"] for r in (may_run, refused, thumb)] == [True, False, False]
    assert _text(render_html(snap)).count(MAY_RUN) == 1


def test_a_lost_start_left_to_its_room_says_it_may_run() -> None:
    """Walk 49a: a failed start whose answers were lost, left to its room once the room closed (walk 43B-1:
    `stopped`, no vendor id), may run as much as the failed one (walk 47a: its removal stops it, `--max-prune`
    counts it), yet `state list` and the page showed its error alone under `stopped`, as if nothing ran. One
    refused outright, then left so, does not say it."""
    from reconciler.render import render_state_table
    from reconciler.transitions import MAY_RUN

    error = "volc (volcengine): StartSnapshot: timed out"
    left = record("SnapshotJob/hall/h1", TaskStatus.STOPPED, last_error=error, selector="h*")
    refused = record("SnapshotJob/hall/h2", TaskStatus.STOPPED, last_error=error, selector="h*", start_refused=True)
    rows = render_state_table([left, refused], 1, now=NOW).splitlines()[-2:]
    assert rows[0].endswith(f"{error}; {MAY_RUN}") and rows[1].endswith(error), rows
    snap = build_snapshot(inputs([left, refused]), StatusQuery(), NOW)
    tasks = {t["key"]: t for j in to_json(snap)["jobs"] for g in j["groups"] for t in g["tasks"]}
    assert [tasks[r.key]["start_may_run"] for r in (left, refused)] == [True, False]
    assert [tasks[r.key]["waits_for_room"] for r in (left, refused)] == [True, True]
    assert _text(render_html(snap)).count(MAY_RUN) == 1


def test_a_lost_zego_start_left_to_its_room_says_it_may_run() -> None:
    """Walk 49D-2: a start whose answers were lost (ZEGO StartRecord, the recording running at the vendor), left
    to its room once the room closed (`stopped`, no vendor task), read `stopped` with its error alone, as a start
    refused outright: `state list` and the page say that it may run, as for the same start still `failed`. One
    refused outright, or a ZEGO one refused (no ClientTaskId kept), does not."""
    from reconciler.render import render_state_table
    from reconciler.transitions import MAY_RUN

    error = "zego-prod (zego): StartRecord: connection lost before an answer (RemoteProtocolError) after 6 tries"
    left = {"last_error": error, "selector": 'match "zsel-*"'}
    lost = record("RecordingJob/zsel/zsel-1", TaskStatus.STOPPED, client_task_id="capctl-1", **left)
    refused = record(
        "RecordingJob/zsel/zsel-2", TaskStatus.STOPPED, client_task_id="capctl-2", start_refused=True, **left
    )
    no_cid = record("RecordingJob/zsel/zsel-3", TaskStatus.STOPPED, **left)
    rows = render_state_table([lost, refused, no_cid], 1, now=NOW).splitlines()[-3:]
    assert [row.endswith(f"{error}; {MAY_RUN}") for row in rows] == [True, False, False], rows
    snap = build_snapshot(inputs([lost, refused, no_cid]), StatusQuery(), NOW)
    tasks = {t["key"]: t for j in to_json(snap)["jobs"] for g in j["groups"] for t in g["tasks"]}
    assert [tasks[r.key]["start_may_run"] for r in (lost, refused, no_cid)] == [True, False, False]
    assert all(tasks[r.key]["waits_for_room"] for r in (lost, refused, no_cid))
    assert _text(render_html(snap)).count(MAY_RUN) == 1


def test_a_room_timeline_does_not_call_a_start_that_may_run_capture_lost_alone() -> None:
    """Walk 50D-1: a start whose answers were lost (the snapshot running at the vendor) read, in its task row,
    `its start was never confirmed: it may run at the vendor`, while its room's timeline said only `0 runs;
    capture lost while the room was active: …`, as if nothing ran. The caption and the JSON twin say it is
    unconfirmed; a start refused outright, where nothing runs, keeps its capture lost alone."""
    error = "volc (volcengine): StartSnapshot: connection lost before an answer (RemoteProtocolError) after 6 tries"
    told = Told()
    lost = record("SnapshotJob/hall/h1", TaskStatus.FAILED, last_error=error)
    refused = record("SnapshotJob/hall/h2", TaskStatus.FAILED, last_error=error, start_refused=True)
    told.seed([lost, refused], NOW - 600)
    for room in ("h1", "h2"):
        told.room_active(room, NOW - 500)
    snap = build_snapshot(inputs([lost, refused], history=told.history), StatusQuery(), NOW)
    captures = {c["key"]: c for room in to_json(snap)["rooms"] for c in room["captures"]}
    assert [captures[r.key]["start_may_run"] for r in (lost, refused)] == [True, False]
    assert all(captures[r.key]["gaps"][-1]["room_active"] for r in (lost, refused))  # still drawn as none
    text = _text(render_html(snap))
    assert text.count("capture lost while the room was active") == 2
    assert text.count("its last start is unconfirmed: it may be capturing at the vendor, drawn as no capture") == 1


def test_state_list_wide_says_a_failed_start_may_run_as_the_default_view_does() -> None:
    """Walk 50D-3: `state list` said of a start whose answers were lost `…; its start was never confirmed: it may
    run at the vendor`, but `-o wide` (every column) gave its error alone, as a start refused outright."""
    from reconciler.render import render_state_table
    from reconciler.transitions import MAY_RUN

    error = "volc (volcengine): StartSnapshot: connection lost before an answer (RemoteProtocolError) after 6 tries"
    lost = record("SnapshotJob/hall/h1", TaskStatus.FAILED, last_error=error)
    refused = record("SnapshotJob/hall/h2", TaskStatus.FAILED, last_error=error, start_refused=True)
    for wide in (False, True):
        rows = render_state_table([lost, refused], 1, now=NOW, wide=wide).splitlines()[-2:]
        assert [row.endswith(f"{error}; {MAY_RUN}") for row in rows] == [True, False], (wide, rows)
        assert rows[1].endswith(error), rows


def test_done_thumbnails_are_not_said_to_be_running() -> None:
    """Walk 60a: with a ThumbnailJob's submissions `done` (one-shot: nothing runs at the vendor) the top said
    "Every task is running.", and did with thumbnails alone. It says the captures run and the one-shot tasks are
    done; `all_running` keeps its documented, literal meaning (nothing failed, stopped, dormant or pending)."""
    thumbs = [record(f"ThumbnailJob/t//record/{f}.mp4", TaskStatus.DONE) for f in ("a", "b")]
    lobby = record("SnapshotJob/audit/lobby")

    def top(records: list[TaskRecord]) -> tuple[str, str]:
        html = render_html(build_snapshot(inputs(records), StatusQuery(), NOW))
        title = re.search(r"<title>([^<]*)</title>", html)
        verdict = re.search(r'<p class="verdict ok">\s*(.*?)\s*</p>', html, re.S)
        assert title is not None and verdict is not None, html
        return title.group(1), verdict.group(1)

    done = "2 one-shot tasks are done (thumbnails submitted, or runs ended under restartPolicy Never)."
    assert top([lobby, *thumbs]) == ("all running or done · capctl status", "Every capture is running; " + done)
    assert top(thumbs) == ("all running or done · capctl status", "Nothing runs and nothing needs attention: " + done)
    assert top([lobby]) == ("all running · capctl status", "Every task is running.")
    assert top([record("SnapshotJob/gone/r", TaskStatus.REMOVED)])[1] == (
        "No task is in force: every one was removed from the specs (their tombstones remain)."
    )
    ended = record("SnapshotJob/sel/r1", TaskStatus.STOPPED, selector="r*", stopped_at=NOW - 60, stop_reason=IDLE)
    assert top([ended, thumbs[0]])[1] == (
        "Every capture is running or waiting for its room: 1 task of room-selector jobs waits for its room to be"
        " selected again. 1 one-shot task is done (thumbnails submitted, or runs ended under restartPolicy Never)."
    )
    assert to_json(build_snapshot(inputs(thumbs), StatusQuery(), NOW))["all_running"] is True
