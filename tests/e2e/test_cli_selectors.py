"""Issue 18 end to end: room-selector jobs through the CLI against the simulator, with room activity in the
state as the daemon records it (`StateStore.record_rooms`): plan views, apply, the cap, ended rooms, state
list, and restarts that start nothing twice."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from typing import Any

from reconciler.model import RoomActivity, TaskStatus
from reconciler.state import SQLiteStateStore
from tests.e2e.conftest import Workdir
from tests.specdocs import VOLC_ACCOUNT, ZEGO_ACCOUNT, providers, snapshot_job

SELECTOR = """\
apiVersion: capctl/v1
kind: SnapshotJob
metadata: {name: classes}
spec:
  provider: volc
  rooms: {match: "class-*", exclude: "class-test-*", maxRooms: 2}
  interval: 5s
  storage: tos
  idleTimeout: 20s
"""
RECORDING = """\
apiVersion: capctl/v1
kind: RecordingJob
metadata: {name: shows}
spec:
  provider: zego
  rooms: {match: [show-*]}
  storage: s3
  outputFolder: record/
"""


def rooms(work: Workdir, provider: str, **active: bool) -> None:
    """Record room activity of `provider`'s vendor account in the test's state, as the daemon does from
    callbacks and its resync."""
    account = {"volc": VOLC_ACCOUNT, "zego": ZEGO_ACCOUNT}[provider]
    store = SQLiteStateStore(work.state)
    try:
        store.record_rooms(RoomActivity(account, room, up, time.time(), "callback") for room, up in active.items())
    finally:
        store.close()


def plan_json(work: Workdir) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(work.capctl("plan", "--format", "json").stdout)
    return data


def test_selector_job_plans_and_applies_the_active_matching_rooms_within_its_cap(work: Workdir) -> None:
    work.write("jobs.yaml", SELECTOR + "---\n" + snapshot_job("named", ["lobby"]))
    work.capctl("state", "init")
    before = work.capctl("plan").stdout
    assert (
        "Room selector SnapshotJob/classes (rooms: class-* except class-test-*): no room activity known yet" in before
    )
    assert "Plan: 1 to create" in before  # only the named room
    rooms(work, "volc", **{"class-1": True, "class-2": True, "class-3": True, "class-test-1": True, "other": True})
    [view] = plan_json(work)["selectors"]
    assert view["counts"] == {"active": 3, "running": 0, "start": 2, "left_out": 1, "ending": 0, "claimed": 0}
    assert (view["start"], view["left_out"], view["max_rooms"]) == (["class-1", "class-2"], ["class-3"], 2)
    text = work.capctl("plan").stdout
    assert (
        "3 active · 0 running · 2 to start · 1 left out (maxRooms 2)" in text
        and "left out (maxRooms 2): class-3" in text
    )
    # Times read as everywhere else in a text plan (a reason's `at 2026-12-06 05:02:29Z`), not RFC 3339.
    assert re.search(r"room activity as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(\d+s before this plan\)", text)
    markdown = work.capctl("plan", "--format", "markdown").stdout
    assert "| `SnapshotJob/classes` | `class-* except class-test-*` | 3 active" in markdown
    narrowed = work.capctl("plan", "--target", "SnapshotJob/named").stdout  # the selector job is not targeted
    assert "Plan: 1 to create" in narrowed and "Room selector" not in narrowed

    work.capctl("plan", "--out", "plan.json")
    shown = work.capctl("show", "plan.json").stdout  # a saved plan carries the selector views
    assert "Room selector SnapshotJob/classes (rooms: class-* except class-test-*): 3 active" in shown
    assert "Apply complete: 3 created" in work.capctl("apply", "--plan", "plan.json", "--auto-approve").stdout
    running = sorted((t["roomId"], t["taskId"]) for t in work.sim.tasks("volcengine", state="running"))
    assert running == [
        ("class-1", "classes"),
        ("class-2", "classes"),
        ("lobby", "named"),
    ]  # nothing that does not match
    table = work.capctl("state", "list", "-o", "wide").stdout.splitlines()
    assert table[1].split()[:4] == ["KEY", "JOB", "ROOM", "SELECTOR"]
    row = next(line for line in table if line.startswith("SnapshotJob/classes/class-1"))
    assert row.split()[1:4] == ["SnapshotJob/classes", "class-1", "class-*"]
    tasks = {t["key"]: t for t in json.loads(work.capctl("state", "list", "-o", "json").stdout)["tasks"]}
    assert tasks["SnapshotJob/classes/class-2"]["selector"] == "class-* except class-test-*"
    assert tasks["SnapshotJob/named/lobby"]["selector"] is None

    # Applied again (a restart): nothing is started twice.
    assert work.capctl("plan", "--detailed-exitcode").returncode == 0
    work.apply()
    assert len(work.sim.requests("StartSnapshot")) == 3


def test_an_ended_room_is_left_to_end_and_the_cap_admits_another(work: Workdir) -> None:
    work.write("jobs.yaml", SELECTOR)
    work.capctl("state", "init")
    rooms(work, "volc", **{"class-1": True, "class-2": True, "class-3": True})
    work.apply()
    rooms(work, "volc", **{"class-1": False})
    plan = work.capctl("plan").stdout
    assert "- SnapshotJob" not in plan and "delete" not in plan.split("Plan:")[0].split("Note:")[0]
    assert "left to end at the vendor, not stopped: SnapshotJob/classes/class-1" in plan
    assert "+ SnapshotJob/classes/class-3" in plan and "left to end: class-1" in plan
    forced = work.capctl("plan", "--replace", "SnapshotJob/classes/class-2").stdout  # a selected room's key
    assert "-/+ SnapshotJob/classes/class-2" in forced
    unknown = work.capctl("plan", "--replace", "SnapshotJob/classes/class-9", expect=1).stderr
    assert (
        "--replace: no task with key SnapshotJob/classes/class-9 in the specs: room 'class-9' is not known active:"
        " SnapshotJob/classes starts it when a room callback says it is"
    ) in unknown  # walk 55b: why, as the plan knows it
    work.apply()
    assert not work.sim.requests("StopSnapshot")
    started = sorted(r["body"]["RoomId"] for r in work.sim.requests("StartSnapshot"))
    assert started == ["class-1", "class-2", "class-3"]
    # Its Provider renamed (same account, the old document gone): the job's tasks move, one line, none started
    # or stopped; the room left to end is still left to end.
    providers = work.specs / "providers.yaml"
    providers.write_text(providers.read_text().replace("{name: volc}", "{name: volc-x}"))
    work.write("jobs.yaml", SELECTOR.replace("provider: volc\n", "provider: volc-x\n"))
    moved = work.capctl("plan").stdout
    assert "→ SnapshotJob/classes (3 rooms)  move      provider volc → volc-x, same account" in moved
    assert "left to end at the vendor, not stopped: SnapshotJob/classes/class-1" in moved
    assert "3 re-homed" in work.apply().stdout
    assert len(work.sim.requests("StartSnapshot")) == 3 and not work.sim.requests("StopSnapshot")
    # Once the vendor was seen to end it (the daemon records that), it is no longer "left to end" (walk H5).
    store = SQLiteStateStore(work.state)
    try:
        store.put(store.load().records["SnapshotJob/classes/class-1"].evolve(status=TaskStatus.STOPPED))
    finally:
        store.close()
    assert "left to end" not in work.capctl("plan").stdout


def test_a_crash_mid_start_of_a_selected_zego_room_never_records_twice(work: Workdir) -> None:
    work.write("jobs.yaml", RECORDING)
    work.capctl("state", "init")
    rooms(work, "zego", **{"show-1": True, "talk-1": True})
    work.capctl("apply", "--auto-approve", env={"CAPCTL_FAILPOINTS": "start.after-call"}, expect=137)
    work.apply()  # the restarted apply resumes the start under the same ClientTaskId
    assert len(work.sim.tasks("zego")) == 1
    [task] = work.sim.tasks("zego", state="running")
    assert task["roomId"] == "show-1"
    record = {t["key"]: t for t in json.loads(work.capctl("state", "list", "-o", "json").stdout)["tasks"]}
    assert record["RecordingJob/shows/show-1"]["client_task_id"] == task["clientTaskId"]


def test_a_job_switched_to_named_rooms_is_listed_without_its_old_selector(work: Workdir) -> None:
    """The same keys and requests (no vendor call), but `state list` no longer names the old selector."""
    work.write("jobs.yaml", SELECTOR)
    work.capctl("state", "init")
    rooms(work, "volc", **{"class-1": True})
    work.apply()
    work.write("jobs.yaml", snapshot_job("classes", ["class-1"]))
    assert work.apply().stdout.startswith("No changes.")
    [task] = json.loads(work.capctl("state", "list", "-o", "json").stdout)["tasks"]
    assert task["selector"] is None and len(work.sim.requests("StartSnapshot")) == 1
    assert work.capctl("state", "list").stdout.splitlines()[1].split()[:2] == ["KEY", "STATUS"]


def test_a_selector_whose_provider_has_no_callback_secret_is_named_in_validate_and_the_plan(work: Workdir) -> None:
    """Without a callbackSecret the daemon rejects the vendor's room callbacks (401), learns no room activity
    and the job starts nothing: the plan says so and what to do (walk C finding 10), and `validate` warns,
    where a spec is written (it said only `Valid:`, walk 27b)."""
    work.write("jobs.yaml", SELECTOR)
    note = (
        "Room selector SnapshotJob/classes starts nothing: Provider 'volc' has no callbackSecret, so "
        "`capctl run` cannot verify the vendor's room callbacks"
    )
    assert f"Note: {note}" in work.capctl("plan").stdout
    validated = work.capctl("validate")
    assert validated.stdout.startswith("Valid: ")
    assert "warning: " in validated.stderr and f"jobs.yaml:5:13: {note}" in validated.stderr
    work.write("providers.yaml", providers(work.sim.base, callbacks=True))
    assert "callbackSecret" not in work.capctl("plan").stdout
    assert "callbackSecret" not in work.capctl("validate").stderr


def test_validate_and_plan_warn_of_a_selector_of_every_room_without_max_rooms(work: Workdir) -> None:
    """Anyone who can create a room in the vendor app would start a capture there: legal, so a warning."""
    work.write(
        "jobs.yaml", SELECTOR.replace('{match: "class-*", exclude: "class-test-*", maxRooms: 2}', '{match: "*"}')
    )
    warning = "jobs.yaml:6:18: SnapshotJob 'classes': spec.rooms.match '*' selects every room and no maxRooms caps it"
    validated = work.capctl("validate")
    assert validated.stdout.startswith("Valid: ") and "warning: " in validated.stderr
    assert warning in validated.stderr
    assert warning in work.capctl("plan").stdout
    (note,) = [n for n in json.loads(work.capctl("plan", "--format", "json").stdout)["notes"] if "every room" in n]
    assert warning in note  # JSON carries it as the other notes (23a)


def test_a_room_two_selectors_cover_is_claimed_by_the_first_not_named(work: Workdir) -> None:
    """`b` lists class-2 as claimed by `a`, a selector: the plan said "named by", as if `a` named it."""
    first = SELECTOR.replace("name: classes", "name: a-sel").replace(", maxRooms: 2", "")
    second = SELECTOR.replace("name: classes", "name: b-sel").replace(
        '{match: "class-*", exclude: "class-test-*"', '{match: "class-2"'
    )
    work.write("jobs.yaml", first + "---\n" + second.replace(", maxRooms: 2", ""))
    work.capctl("state", "init")
    rooms(work, "volc", **{"class-2": True})
    plan = work.capctl("plan").stdout
    assert "class-2: claimed by SnapshotJob/a-sel" in plan and "named by" not in plan


def test_a_saved_plan_whose_room_closed_since_is_refused_naming_room_activity(work: Workdir) -> None:
    """Refused as stale, as documented; it said "the specs changed" when no spec was touched (walk C 14)."""
    work.write("jobs.yaml", SELECTOR)
    work.capctl("state", "init")
    rooms(work, "volc", **{"class-1": True})
    work.capctl("plan", "--out", "plan.json")
    rooms(work, "volc", **{"class-1": False})
    refused = work.capctl("apply", "--plan", "plan.json", expect=1).stderr
    assert (
        "the specs, or the rooms their room selectors choose (room activity), changed since this plan was made "
        "(SnapshotJob/classes/class-1)" in refused
    )
    assert not work.sim.requests("StartSnapshot")


def test_a_job_switched_to_a_selector_stops_the_rooms_it_no_longer_covers_and_observes_the_others(
    work: Workdir,
) -> None:
    """Named rooms → a selector, with no room activity known (no daemon): a room the selector covers is left to
    end and observed until it does (its stop reaches `state list`); a room it does not cover is no longer
    declared and is stopped, as `capctl run` does too (tests/daemon/test_room_jobs.py)."""
    work.write("jobs.yaml", snapshot_job("classes", ["class-1", "lobby"]))
    work.capctl("state", "init")
    work.apply()
    work.write("jobs.yaml", SELECTOR)
    rooms(work, "volc", **{"class-1": False, "lobby": True})
    plan = work.capctl("plan").stdout
    assert "- SnapshotJob/classes/lobby" in plan and "0 to re-issue, 1 to delete, 1 unchanged" in plan
    # The selector's own line counts the rooms it covers: lobby, stopped as the plan's delete, is neither one
    # of its running rooms nor "left to end" (it was both, walk 8f F1).
    assert "0 active · 1 running · 0 to start" in plan and re.search(r"left to end: class-1$", plan, re.M)
    assert "its job's room selector (class-* except class-test-* on provider 'volc') does not cover this room" in plan
    assert "left to end at the vendor, not stopped: SnapshotJob/classes/class-1" in plan
    assert "0 re-issued, 1 deleted, 0 failed" in work.apply().stdout
    [stop] = work.sim.requests("StopSnapshot")
    assert stop["body"]["RoomId"] == "lobby"
    status = {t["key"]: t["status"] for t in json.loads(work.capctl("state", "list", "-o", "json").stdout)["tasks"]}
    assert status == {"SnapshotJob/classes/class-1": "running", "SnapshotJob/classes/lobby": "removed"}

    work.write("jobs.yaml", SELECTOR.replace("interval: 5s", "interval: 7s"))  # left to end: not updated
    assert work.capctl("plan", "--detailed-exitcode").returncode == 0

    work.sim.advance(25)  # past its idleTimeout (20s): the vendor ends it
    plan = work.capctl("plan", "--detailed-exitcode").stdout  # observed: nothing to do, nothing left to end
    assert "left to end" not in plan
    assert work.apply().stdout.startswith("No changes.")
    [task] = json.loads(work.capctl("state", "list", "SnapshotJob/classes/class-1", "-o", "json").stdout)["tasks"]
    assert (task["status"], task["selector"]) == ("stopped", "class-* except class-test-*")
    assert len(work.sim.requests("StartSnapshot")) == 2 and len(work.sim.requests("StopSnapshot")) == 1


def test_plan_reads_the_rooms_of_a_state_from_before_schema_2_without_upgrading_it(work: Workdir) -> None:
    """capctl before schema 2 kept room activity by Provider name: `plan` (read-only) reads it through the
    specs' names, and leaves the upgrade to `capctl run`."""
    work.write("jobs.yaml", SELECTOR)
    work.capctl("state", "init")
    with sqlite3.connect(work.state) as db:
        db.execute("INSERT INTO capctl_room_activity VALUES ('volc', 'class-1', 1, ?, 'callback')", (time.time(),))
        db.execute("UPDATE capctl_meta SET schema_version = 1")
    [view] = plan_json(work)["selectors"]
    assert (view["active"], view["start"]) == (["class-1"], ["class-1"])
    with sqlite3.connect(work.state) as db:
        assert db.execute("SELECT schema_version FROM capctl_meta").fetchall() == [(1,)]
