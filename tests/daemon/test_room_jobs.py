"""Issue 18 in the daemon: room-selector jobs started as rooms become active (callbacks), left to end
when their room closes, capped by maxRooms, and a restart that starts nothing twice."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from reconciler.clock import FakeClock
from reconciler.daemon.roomjobs import QUIET_RELIST, ROOM_RETENTION
from reconciler.leader import LeaderSettings
from reconciler.model import RestartPolicy, RoomActivity, TaskStatus
from reconciler.sim.faults import FaultConfig
from reconciler.sim.scenario import CallbackChaos
from reconciler.state.base import HistorySpan, StateError
from reconciler.state.sqlite import SQLiteStateStore
from tests.daemon.conftest import Harness, VendorClock, settle, write_specs
from tests.daemon.test_http import client
from tests.specdocs import VOLC_ACCOUNT as VOLC
from tests.specdocs import ZEGO_ACCOUNT as ZEGO
from tests.specdocs import selector_job, snapshot_job


def classes(max_rooms: int | None = None) -> str:
    return selector_job("classes", "class-*", exclude="class-test-*", max_rooms=max_rooms)


def started(h: Harness) -> list[str]:
    """The rooms the simulator has snapshot tasks in (running or not), one entry per task started."""
    return sorted(t.room_id for t in h.sim.tasks("volcengine"))


async def test_a_room_is_captured_once_its_first_stream_is_published(harness: Harness) -> None:
    write_specs(harness.specs, classes())
    await harness.start()
    await harness.advance(5)
    assert started(harness) == []
    harness.sim.publish("volcengine", "class-1", user_id="t")
    harness.sim.publish("volcengine", "class-test-1", user_id="t")  # excluded
    harness.sim.publish("volcengine", "lobby", user_id="t")  # not matched
    first = harness.clock.now()
    await harness.advance(2)
    assert started(harness) == ["class-1"]
    record = harness.record("SnapshotJob/classes/class-1")
    assert record.status is TaskStatus.RUNNING and record.selector == "class-* except class-test-*"
    assert record.started_at is not None and record.started_at - first < 2.0
    assert harness.daemon is not None
    activity = {(a.account, a.room): a.active for a in harness.daemon.rooms.book.activity()}
    assert activity[(VOLC, "class-1")] and activity[(VOLC, "lobby")]


async def test_a_closed_room_is_left_to_end_at_the_vendor_and_started_again_when_active(harness: Harness) -> None:
    write_specs(harness.specs, classes())
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.start()
    await harness.advance(2)
    assert started(harness) == ["class-1"]
    with capture_logs() as logs:
        harness.sim.unpublish("volcengine", "class-1", user_id="t")  # UserLeaveRoom, RoomDestroy
        await harness.advance(120)
    # The one line saying its task is left to end names it.
    changed = [e for e in logs if e["event"] == "room activity: selector tasks changed"]
    assert [(e["keys"], e["first"]) for e in changed] == [(1, ["SnapshotJob/classes/class-1"])]
    assert harness.calls("StopSnapshot") == 0  # never stopped by capctl: it idled out at the vendor
    assert harness.running_sim_tasks() == []
    ended = harness.record("SnapshotJob/classes/class-1")
    # Left to end as Never, yet its record keeps its job's policy: `stopped`, not `done` (the job is Always).
    assert ended.status is TaskStatus.STOPPED and ended.restart_policy is RestartPolicy.ALWAYS
    assert started(harness) == ["class-1"]  # and not re-issued while the room is closed
    assert harness.daemon is not None
    leaving = harness.daemon.reconciler.spec.tasks["SnapshotJob/classes/class-1"]  # type: ignore[union-attr]
    assert leaving.restart_policy is RestartPolicy.NEVER
    harness.sim.publish("volcengine", "class-1", user_id="t2")
    await harness.advance(2)
    assert len(harness.running_sim_tasks()) == 1
    assert harness.record("SnapshotJob/classes/class-1").status is TaskStatus.RUNNING


async def test_max_rooms_starts_nothing_beyond_the_cap_warns_and_counts(harness: Harness) -> None:
    write_specs(harness.specs, classes(max_rooms=2))
    await harness.start()
    for room in ("class-1", "class-2", "class-3"):
        harness.sim.publish("volcengine", room, user_id="t")
    await harness.advance(2)
    assert started(harness) == ["class-1", "class-2"]
    assert harness.daemon is not None
    registry = harness.daemon.metrics.registry
    assert registry.get_sample_value("capctl_selector_rooms_left_out", {"job_name": "SnapshotJob/classes"}) == 1
    sample = registry.get_sample_value("capctl_selector_rooms", {"job_name": "SnapshotJob/classes", "state": "chosen"})
    assert sample == 2
    # The status page names the room left out (walk 18H-2: it said "Every task is running." and nothing else).
    async with await client(harness) as http:
        assert (await http.get("/api/v1/status")).json()["replica"]["left_out"] == {"SnapshotJob/classes": ["class-3"]}
        assert "SnapshotJob/classes: <bdi>class-3</bdi>" in (await http.get("/")).text
    # The rooms whose first stream made their tasks count as active and captured (walk 5g: 0 and 0, as the
    # activity reached no task of theirs), so CapctlCoverageBelowTarget sees selector jobs too.
    coverage = {"job_name": "SnapshotJob/classes"}
    assert registry.get_sample_value("capctl_rooms_active", coverage) == 2
    assert registry.get_sample_value("capctl_rooms_captured", coverage) == 2
    # Their first runs each ended a capture gap, from the selection to the start (walk 6d: none was counted).
    assert registry.get_sample_value("capctl_capture_gap_seconds_count") == 2
    assert 0 < (registry.get_sample_value("capctl_capture_gap_seconds_sum") or 0) < 2
    # No series has a `job` or `instance` label: Prometheus sets both itself and renames ours `exported_job`
    # (walk 5g: the two selector gauges had `job`, unlike capctl_rooms_active's `job_name`).
    labels = {name for family in registry.collect() for sample in family.samples for name in sample.labels}
    assert "job_name" in labels and not labels & {"job", "instance"}


async def test_a_lowered_max_rooms_leaves_running_rooms_to_end_not_left_out(harness: Harness) -> None:
    """Walk 52C-2: rooms past a lowered cap whose tasks run on were counted, logged and shown as left out
    ("room not captured", capctl_selector_rooms_left_out) while they were captured."""
    write_specs(harness.specs, classes(max_rooms=3))
    await harness.start()
    for room in ("class-1", "class-2", "class-3"):
        harness.sim.publish("volcengine", room, user_id="t")
    await harness.advance(2)
    assert harness.daemon is not None
    with capture_logs() as logs:
        write_specs(harness.specs, classes(max_rooms=1))
        assert harness.daemon.reload()
        await harness.advance(2)
    assert sorted(t.room_id for t in harness.running_sim_tasks("volcengine")) == ["class-1", "class-2", "class-3"]
    assert not [e for e in logs if e["event"] == "room selector at maxRooms: room not captured"]
    registry = harness.daemon.metrics.registry
    assert registry.get_sample_value("capctl_selector_rooms_left_out", {"job_name": "SnapshotJob/classes"}) == 0
    async with await client(harness) as http:
        assert (await http.get("/api/v1/status")).json()["replica"]["left_out"] == {}
    harness.sim.publish("volcengine", "class-4", user_id="t")  # a new room is left out, as before
    await harness.advance(2)
    assert registry.get_sample_value("capctl_selector_rooms_left_out", {"job_name": "SnapshotJob/classes"}) == 1
    assert started(harness) == ["class-1", "class-2", "class-3"]


# For a simulated day: a resync every 5 min and a lease renewed every 20 s. At 30 s and 2 s, the day's 2,880
# resyncs (a look at class-2's task, a listing of its room) and 43,200 lease renewals and inbox claims (a state
# transaction each) took 20 s of CPU alone, and past pytest-timeout's 300 s on a loaded machine (walk 61a-1).
A_DAY_CHEAPLY: dict[str, Any] = {"resync": 300.0, "leader": LeaderSettings(150.0, 100.0, 20.0)}


async def class_1_quiet_for_an_hour(harness: Harness, interval: int = 5, **options: Any) -> None:
    """The daemon on `classes()` (images every `interval` seconds), where class-1 had a stream for 2 s an hour
    ago. The harness's image batches come at that interval too (every 5 s, a simulated day took 17,280 steps)."""
    write_specs(harness.specs, classes().replace("interval: 5s", f"interval: {interval}s"))
    await harness.start(**options)
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.advance(2)
    harness.sim.unpublish("volcengine", "class-1", user_id="t")
    await harness.advance(3_600, image_every=interval)


async def test_a_room_quiet_for_a_day_is_forgotten_and_no_longer_listed(harness: Harness) -> None:
    await class_1_quiet_for_an_hour(harness, **A_DAY_CHEAPLY)
    listed = harness.calls("GetRoomOnlineUsers")
    assert listed > 0  # a quiet room is still listed now and then (a lost callback is repaired)
    await harness.advance(ROOM_RETENTION)
    assert harness.daemon is not None and not harness.daemon.rooms.book.activity()
    reader = SQLiteStateStore(harness.state_path)
    assert reader.room_activity({}) == []
    reader.close()
    before = harness.calls("GetRoomOnlineUsers")
    await harness.advance(3_600)
    assert harness.calls("GetRoomOnlineUsers") == before


async def test_a_restart_starts_nothing_twice(harness: Harness) -> None:
    write_specs(harness.specs, classes())
    harness.sim.publish("volcengine", "class-1", user_id="t")
    harness.sim.publish("volcengine", "class-2", user_id="t")
    await harness.start()
    await harness.advance(2)
    assert started(harness) == ["class-1", "class-2"]
    await harness.stop()
    await harness.advance(10)
    await harness.start()  # the activity and the records come back from the state
    await harness.advance(30)
    assert started(harness) == ["class-1", "class-2"]
    assert harness.calls("StartSnapshot") == 2
    assert len(harness.running_sim_tasks()) == 2


SHOWS = """\
apiVersion: capctl/v1
kind: RecordingJob
metadata: {name: shows}
spec:
  provider: zego
  rooms: {match: "show-*"}
  mode: single
  storage: s3
  outputFolder: record/
  idleTimeout: 30s
"""


def lose_callbacks(h: Harness, loss: float) -> None:
    h.sim.callbacks.set_chaos(CallbackChaos(loss=loss), seed=1)


async def test_the_room_listing_resync_repairs_lost_room_callbacks(harness: Harness) -> None:
    write_specs(harness.specs, SHOWS)
    await harness.start()
    harness.sim.publish("zego", "show-1", stream_id="s1", user_id="host")
    await harness.advance(2)
    assert len(harness.running_sim_tasks("zego")) == 1
    lose_callbacks(harness, 1.0)  # from now on the vendor's callbacks never arrive
    harness.sim.unpublish("zego", "show-1", stream_id="s1", user_id="host")  # room_close lost
    await harness.advance(40)  # one resync: DescribeSimpleStreamList says the room has no stream
    assert harness.calls("DescribeSimpleStreamList") >= 1
    assert harness.daemon is not None
    activity = {(a.account, a.room): (a.active, a.source) for a in harness.daemon.rooms.book.activity()}
    assert activity[(ZEGO, "show-1")] == (False, "resync")
    assert len(activity) == 1  # `zego` and `zego-legacy` are one vendor app: they share its rooms
    await harness.advance(60)  # the recording idles out at the vendor and is not re-issued
    assert harness.running_sim_tasks("zego") == []
    assert harness.calls("StopRecord") == 0 and harness.calls("StartRecord") == 1
    harness.sim.publish("zego", "show-1", stream_id="s2", user_id="host")  # stream_create lost too
    await harness.advance(QUIET_RELIST + 40)  # a quiet room is listed again within this: captured again
    assert len(harness.running_sim_tasks("zego")) == 1
    assert harness.calls("StartRecord") == 2


async def test_the_volcengine_listing_repairs_a_lost_join_and_a_lost_room_destroy(harness: Harness) -> None:
    write_specs(harness.specs, classes())
    await harness.start()
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.advance(2)
    lose_callbacks(harness, 1.0)
    harness.sim.unpublish("volcengine", "class-1", user_id="t")  # UserLeaveRoom and RoomDestroy lost
    # Until a resync sees the room empty, the task may be re-issued once more (the room looks active):
    await harness.advance(100)
    starts = harness.calls("StartSnapshot")
    await harness.advance(300)  # the room is known empty: nothing is started while it is
    assert harness.running_sim_tasks() == [] and harness.calls("StartSnapshot") == starts
    harness.sim.publish("volcengine", "class-1", user_id="t2")  # its UserJoinRoom is lost
    await harness.advance(QUIET_RELIST + 40)
    assert harness.calls("GetRoomOnlineUsers") >= 2
    assert len(harness.running_sim_tasks()) == 1 and harness.calls("StartSnapshot") == starts + 1


async def test_a_failover_to_a_standby_starts_each_room_once(harness: Harness) -> None:
    """The leader captured class-1 and goes; the standby takes the lead, reads the records and the room
    activity from the state, learns of class-2 from the callbacks it stored meanwhile, and starts only it."""
    write_specs(harness.specs, classes())
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.start(SQLiteStateStore(harness.state_path, clock=harness.clock))
    await harness.advance(2)
    standby = await harness.start_standby()
    try:
        await settle()
        await harness.stop()  # the leader goes; callbacks now reach the standby
        harness._daemon_app = standby.asgi_app
        harness.sim.publish("volcengine", "class-2", user_id="t")
        await harness.advance(60)
        assert standby.lease.acting()
        assert started(harness) == ["class-1", "class-2"]
        assert harness.calls("StartSnapshot") == 2
        assert {(a.room, a.active) for a in standby.rooms.book.activity() if a.account == VOLC} == {
            ("class-1", True),
            ("class-2", True),
        }
    finally:
        await standby.stop()
        standby.records.close()


async def test_a_label_edit_and_a_switch_to_named_rooms_reach_the_records(harness: Harness) -> None:
    """Neither changes a vendor task, yet `state list -l` and its SELECTOR column read the records: the daemon
    records the job's current labels and selector without a call (walk C, findings 7 and 8)."""
    labelled = classes().replace("metadata: {name: classes}", "metadata: {name: classes, labels: {team: edu}}")
    write_specs(harness.specs, labelled)
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.start()
    await harness.advance(2)
    key = "SnapshotJob/classes/class-1"
    assert harness.record(key).labels == {"team": "edu"} and harness.record(key).selector is not None
    named = labelled.replace('{match: "class-*", exclude: "class-test-*"}', "[class-1]").replace("edu", "school")
    write_specs(harness.specs, named)
    assert harness.daemon is not None and await harness.daemon.reload_async()
    await harness.advance(1)
    record = harness.record(key)
    assert record.labels == {"team": "school"} and record.selector is None
    assert SQLiteStateStore(harness.state_path).load().records[key].labels == {"team": "school"}
    assert harness.calls("StartSnapshot") == 1 and harness.calls("StopSnapshot") == 0


async def test_the_spec_digest_follows_the_files_not_the_rooms_a_selector_has(harness: Harness) -> None:
    """Replicas compare digests (`capctl_spec_set_info`, `spec set loaded`): the same files digested with the
    rooms a selector job had at that load showed another digest on the next load, and on a replica that had
    learned its rooms at another time. A change to the selector job's settings still shows, its globs and
    maxRooms too (walk 53c: a replica still on `class-*` showed the digest of one on `lobby-*`)."""
    write_specs(harness.specs, classes())
    daemon = await harness.start()
    first = daemon.spec_digest
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.advance(2)
    assert started(harness) == ["class-1"]
    await daemon.reload_async()  # the same files, read again
    assert daemon.spec_digest == first
    write_specs(harness.specs, classes().replace("interval: 5s", "interval: 10s"))
    await daemon.reload_async()
    assert daemon.spec_digest not in (first, None)
    seen = {first, daemon.spec_digest}
    for edited in (classes().replace("class-*", "lobby-*"), classes().replace("class-test-*", "x"), classes(3)):
        write_specs(harness.specs, edited)
        await daemon.reload_async()
        assert daemon.spec_digest not in seen
        seen.add(daemon.spec_digest)


async def test_a_selector_whose_provider_has_no_callback_secret_is_warned_about(harness: Harness) -> None:
    """Its room callbacks are refused (401), so it would start nothing, silently (walk C finding 10)."""
    write_specs(harness.specs, classes())
    providers = harness.specs / "providers.yaml"
    providers.write_text("\n".join(line for line in providers.read_text().splitlines() if "callbackSecret" not in line))
    with capture_logs() as logs:
        await harness.start()
    [warning] = [e for e in logs if e["event"] == "room selector cannot learn of its rooms"]
    assert warning["log_level"] == "warning" and warning["job"] == "SnapshotJob/classes"
    assert "Provider 'volc' has no callbackSecret" in warning["detail"]
    write_specs(harness.specs, classes())  # with the secret: nothing to say
    with capture_logs() as logs:
        assert harness.daemon is not None and await harness.daemon.reload_async()
    assert not [e for e in logs if e["event"] == "room selector cannot learn of its rooms"]
    assert not [e for e in logs if e["event"] == "spec warning"]
    write_specs(harness.specs, selector_job("classes", "*"))  # every room, no maxRooms: anyone's room costs
    with capture_logs() as logs:
        assert await harness.daemon.reload_async()
    [warning] = [e for e in logs if e["event"] == "spec warning"]
    assert warning["log_level"] == "warning" and "spec.rooms.match '*' selects every room" in warning["detail"]
    with capture_logs() as logs:  # rooms opening are no new load: said again, anyone's room added a line (23a)
        harness.sim.publish("volcengine", "class-1", user_id="t")
        await harness.advance(2)
    assert started(harness) == ["class-1"]
    assert not [e for e in logs if e["event"] in ("spec warning", "room selector cannot learn of its rooms")]


async def test_a_room_two_selectors_cover_is_logged_as_taken_by_the_other_job(harness: Harness) -> None:
    """The clash log said "the named-room job has the room" when the other job was a selector (walk C 12)."""
    write_specs(harness.specs, selector_job("a-sel", "class-*"), selector_job("b-sel", "class-2"))
    harness.sim.publish("volcengine", "class-2", user_id="t")
    with capture_logs() as logs:
        await harness.start()
        await harness.advance(2)
    [clash] = [e for e in logs if e["event"].startswith("room selector clash")]
    assert clash["event"] == "room selector clash: another job has the room"
    assert (clash["job"], clash["room"], clash["by"]) == ("SnapshotJob/b-sel", "class-2", "SnapshotJob/a-sel")
    assert started(harness) == ["class-2"]


async def test_the_loaded_set_is_summed_up_as_validate_counts_it(harness: Harness) -> None:
    """`spec set loaded` counted a selector's running rooms among the set's tasks (`→ 1 task … + 1 room
    selector`), where `capctl validate` and the status page say `→ 0 tasks + 1 room selector` (walk H6)."""
    write_specs(harness.specs, classes())
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.start()
    await harness.advance(2)
    assert started(harness) == ["class-1"]
    with capture_logs() as logs:
        assert harness.daemon is not None and await harness.daemon.reload_async()
    [loaded] = [e for e in logs if e["event"] == "spec set loaded"]
    assert harness.daemon.spec is not None and loaded["summary"] == harness.daemon.spec.summary()
    assert "→ 0 tasks + 1 room selector" in loaded["summary"]


async def test_a_switch_to_a_selector_prunes_the_rooms_it_does_not_cover_and_keeps_the_others(
    harness: Harness,
) -> None:
    """As `plan` and `apply` decide it (tests/e2e/test_cli_selectors.py): a room named before that the selector
    does not cover is no longer declared, and is stopped; one it covers stays the job's."""
    write_specs(harness.specs, snapshot_job("classes", ["class-1", "lobby"]))
    harness.sim.publish("volcengine", "class-1", user_id="t")
    harness.sim.publish("volcengine", "lobby", user_id="t")
    await harness.start(max_prune=100)
    await harness.advance(2)
    write_specs(harness.specs, classes())
    assert harness.daemon is not None and await harness.daemon.reload_async()
    with capture_logs() as logs:
        await harness.advance(40)  # past the prune grace (30 s)
    [decision] = [e for e in logs if e["event"] == "decision" and e["action"] == "delete"]
    assert decision["reason"] == (  # as `plan` says it; it was only "removed from specs"
        "its job's room selector (class-* except class-test-* on provider 'volc') does not cover this room"
    )
    assert harness.record("SnapshotJob/classes/lobby").status is TaskStatus.REMOVED
    assert harness.record("SnapshotJob/classes/class-1").status is TaskStatus.RUNNING
    assert [t.room_id for t in harness.running_sim_tasks()] == ["class-1"]
    assert harness.calls("StopSnapshot") == 1 and harness.calls("StartSnapshot") == 2


class FlakyRoomStore(SQLiteStateStore):
    """A state whose room-activity writes fail while `failing` is set (a locked SQLite file, PostgreSQL
    restarting): the task records are written as usual."""

    failing = False

    def record_rooms(
        self, reports: Iterable[RoomActivity], spans: Iterable[HistorySpan] = (), *, fence: int | None = None
    ) -> None:
        if self.failing:
            raise StateError("database is locked")
        super().record_rooms(reports, spans, fence=fence)

    def forget_rooms(self, quiet_before: float) -> int:
        if self.failing:
            raise StateError("database is locked")
        return super().forget_rooms(quiet_before)


async def test_a_state_error_in_the_room_listing_resync_does_not_end_the_resyncs(harness: Harness) -> None:
    """Before, one failed room-activity write during a resync ended the resync timer for the process's life:
    no polling safety net, no room listing, until a restart."""
    write_specs(harness.specs, classes())
    store = FlakyRoomStore(harness.state_path, clock=harness.clock)
    await harness.start(store)
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.advance(40)
    assert harness.calls("GetRoomOnlineUsers") == 1  # an active room is listed at every resync
    store.failing = True
    with capture_logs() as logs:
        await harness.advance(40)  # a resync, whose room-activity writes fail
    assert any(e["event"] == "room activity not written" for e in logs), logs
    store.failing = False
    listed = harness.calls("GetRoomOnlineUsers")
    await harness.advance(100)
    assert harness.calls("GetRoomOnlineUsers") >= listed + 2
    reader = SQLiteStateStore(harness.state_path)
    assert [(a.room, a.active) for a in reader.room_activity({})] == [("class-1", True)]  # written once it could be
    reader.close()


async def test_a_selector_task_is_forgotten_with_its_room_and_starts_as_new_when_it_returns(harness: Harness) -> None:
    """Before, every room a selector ever ran in kept its record for ever: in the state, in memory, in every
    resync's keys and on the status page, growing with the rooms ever made rather than those alive.
    Images every minute: class-2 runs for a day, and at 5 s its 17,280 image callbacks cost 15 s of CPU."""
    await class_1_quiet_for_an_hour(harness, interval=60, **A_DAY_CHEAPLY)
    key = "SnapshotJob/classes/class-1"
    assert harness.record(key).status is TaskStatus.STOPPED  # its room is still known: kept
    harness.sim.publish("volcengine", "class-2", user_id="t")  # active all along: listed at every resync
    daemon = harness.daemon
    assert daemon is not None and daemon.reconciler.spec is not None
    with capture_logs() as logs:
        await harness.advance(ROOM_RETENTION, image_every=60)
    assert any(e["event"] == "selector tasks forgotten with their rooms" and e["tasks"] == 1 for e in logs), logs
    starts = harness.calls("StartSnapshot")
    await harness.advance(900)  # resyncs: a key still in force without its record was started as a new task
    assert harness.calls("StartSnapshot") == starts
    assert daemon.records.get(key) is None and key not in daemon.reconciler.spec.tasks
    assert key not in daemon.runtimes.snapshot() and daemon.records.history.runs(key) == ()
    reader = SQLiteStateStore(harness.state_path)
    assert key not in reader.load().records
    reader.close()
    harness.sim.publish("volcengine", "class-1", user_id="t")  # back a day later: a new room's task
    await harness.advance(2)
    assert harness.record(key).status is TaskStatus.RUNNING
    assert harness.calls("StartSnapshot") == starts + 1


@pytest.mark.parametrize("offset", [290.0, -290.0], ids=["vendor-ahead", "vendor-behind"])
async def test_room_reports_of_a_skewed_vendor_clock_are_weighed_on_the_daemons(tmp_path: Path, offset: float) -> None:
    """The listing's reports are on the daemon's clock, callbacks on the vendor's (290 s off: still fresh):
    a listing must undo an older callback (ahead: it did not) and a newer callback a listing (behind: an
    entry within 290 s of it was ignored until the next listing, 5 min or more later)."""
    clock = FakeClock(start=1_750_000_000.0)
    harness = Harness(tmp_path, clock, vendor_clock=VendorClock(clock, offset, 1e-4 if offset > 0 else -1e-4))
    write_specs(harness.specs, SHOWS)
    try:
        await harness.start()
        harness.sim.publish("zego", "show-1", stream_id="s1", user_id="host")
        await harness.advance(2)
        assert len(harness.running_sim_tasks("zego")) == 1
        lose_callbacks(harness, 1.0)
        harness.sim.unpublish("zego", "show-1", stream_id="s1", user_id="host")  # room_close lost
        await harness.advance(40)  # one resync: the listing says the room has no stream
        assert harness.daemon is not None
        activity = {(a.account, a.room): (a.active, a.source) for a in harness.daemon.rooms.book.activity()}
        assert activity[(ZEGO, "show-1")] == (False, "resync")
        await harness.advance(60)  # idled out, not re-issued
        lose_callbacks(harness, 0.0)
        harness.sim.publish("zego", "show-1", stream_id="s2", user_id="host")  # its stream_create arrives
        await harness.advance(2)
        assert len(harness.running_sim_tasks("zego")) == 1
        assert harness.calls("StartRecord") == 2
    finally:
        if harness.daemon is not None:
            await harness.stop()
        await harness.sim.callbacks.aclose()


ZEGO_SELECTOR = """\
apiVersion: capctl/v1
kind: RecordingJob
metadata: {name: shows}
spec:
  provider: zego
  rooms: {match: "*"}
  storage: s3
  outputFolder: record/
"""


async def test_a_room_id_no_vendor_room_can_have_is_refused_where_it_enters(harness: Harness) -> None:
    """Anyone who joins a room names it, and a selector job makes the id a task key that plans, `state list`,
    logs and the status page print: an escape sequence or a newline (a forged line on a reviewer's terminal),
    a right-to-left override or a zero-width space (`lobby` twice, two rooms) or a 10 kB id was selected and
    started (walk 10a). Such a callback is refused with 400 naming it, and nothing of its room is kept."""
    write_specs(harness.specs, selector_job("all", "*"), ZEGO_SELECTOR)
    await harness.start()
    # (a NUL: PostgreSQL refuses it, and the room-activity batch holding it failed at every write after)
    hostile = ["lob\u200bby", "lobby\u202egpj.exe", 'x\n{"event": "forged"}\x1b[31m', "L" * 10_000, "a\x00b"]
    for i, room in enumerate(["lobby", "<b>@team", *hostile]):  # ZEGO room ids may hold < > @ (its charset)
        harness.sim.publish("zego", room, user_id=f"u{i}", stream_id=f"s{i}")
    for i, room in enumerate(["lobby", "<b>", *hostile]):  # Volcengine's Id rule holds no < >
        harness.sim.publish("volcengine", room, user_id=f"u{i}")
    with capture_logs() as logs:
        await harness.advance(3)
    assert harness.daemon is not None
    assert sorted(harness.daemon.records.keys()) == [
        "RecordingJob/shows/<b>@team",
        "RecordingJob/shows/lobby",
        "SnapshotJob/all/lobby",
    ]
    rooms = {(a.account, a.room) for a in harness.daemon.rooms.book.activity()}
    assert rooms == {(ZEGO, "<b>@team"), (ZEGO, "lobby"), (VOLC, "lobby")}
    reader = SQLiteStateStore(harness.state_path)
    assert {(a.account, a.room) for a in reader.room_activity({})} == rooms
    assert {(s.subject, s.room) for s in reader.history() if s.kind == "room"} == rooms
    reader.close()
    refused = [d for d in harness.sim.callbacks.log if d["status"] == 400]
    assert {d["body"]["room_id"] for d in refused if d["vendor"] == "zego"} == set(hostile)
    assert len([d for d in refused if d["vendor"] == "volcengine"]) >= 6  # "<b>" and the five
    reasons = [e["reason"] for e in logs if e["event"] == "callback rejected"]
    named = ("malformed callback: room_id '", "malformed callback: RoomId '")
    assert reasons and all(r.startswith(named) for r in reasons)
    assert all(r.isprintable() and len(r) < 200 for r in reasons), reasons  # quoted escaped, at a bounded size


async def dormant_in_a_closed_room(harness: Harness, *, slot: float) -> str:
    """class-1's selector task, its room closed and the daemon stopped, recorded dormant with a re-issue slot
    `slot` seconds ahead (its run idled out while its room was still chosen); returns its key."""
    write_specs(harness.specs, classes())
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.start()
    await harness.advance(2)
    harness.sim.unpublish("volcengine", "class-1", user_id="t")
    await harness.advance(120)
    key = "SnapshotJob/classes/class-1"
    ended = harness.record(key)
    assert ended.status is TaskStatus.STOPPED and ended.next_attempt_at is None
    await harness.stop()
    store = SQLiteStateStore(harness.state_path, clock=harness.clock)
    store.put(ended.evolve(status=TaskStatus.DORMANT, next_attempt_at=harness.clock.now() + slot, room_empty=True))
    store.close()
    return key


@pytest.mark.timeout(60)  # without the fix the passes never let the fake clock settle
async def test_a_selector_task_waiting_with_a_slot_in_a_closed_room_is_not_reconciled_in_a_loop(
    harness: Harness,
) -> None:
    """Walk 30b-1: a selector task whose room had closed held a dormant record with a re-issue slot (its job
    removed and restored while the room emptied); once that slot passed, or `capctl wake --daemon` made it due
    now, each pass decided nothing to start and queued the key again at once: ~5,000 passes a second, the loop
    too busy to renew the lease (`lost leadership` every 12 s). The stale slot is dropped: left to its room."""
    key = await dormant_in_a_closed_room(harness, slot=60)
    daemon = await harness.start(sync_token="tok")
    passes = daemon.metrics.registry.get_sample_value
    await harness.advance(90)  # past its slot
    async with await client(harness) as http:
        woken = await http.post("/api/v1/wake", json={"keys": [key]}, headers={"authorization": "Bearer tok"})
        assert woken.status_code == 200, woken.json()
        before = passes("capctl_reconcile_duration_seconds_count") or 0
        await harness.advance(5)
    assert (passes("capctl_reconcile_duration_seconds_count") or 0) - before < 10
    left = harness.record(key)
    assert left.status is TaskStatus.STOPPED and left.next_attempt_at is None  # left to its room, no slot
    assert started(harness) == ["class-1"] and daemon.lease.acting()
    harness.sim.publish("volcengine", "class-1", user_id="t2")  # selected again: started at once
    await harness.advance(2)
    assert harness.record(key).status is TaskStatus.RUNNING


async def test_a_selector_task_leaving_its_room_drops_its_reissue_slot_at_once(harness: Harness) -> None:
    """Walk 31a-1: a selector task whose run idled out while its room was still chosen (the room's close not yet
    known: a lost callback, a stream stopped with its user still in, its job removed meanwhile) was dormant with
    an hour's slot; its room then known closed, the task is left to its room (restartPolicy Never), yet `state
    list` said `dormant  in 59m55s` and the status page that it wakes at that slot, when nothing would start it
    but its room. The slot goes when the task leaves its room; the room's next activity starts it."""
    key = await dormant_in_a_closed_room(harness, slot=3600)
    await harness.start()
    await harness.advance(5)
    left = harness.record(key)
    assert left.status is TaskStatus.STOPPED and left.next_attempt_at is None and not left.room_empty
    assert started(harness) == ["class-1"]
    harness.sim.publish("volcengine", "class-1", user_id="t2")  # selected again: started at once
    await harness.advance(2)
    assert harness.record(key).status is TaskStatus.RUNNING


async def test_a_selector_task_whose_start_failed_is_left_to_its_room_once_it_closes(harness: Harness) -> None:
    """Walk 43B-1: a room selected while StartSnapshot failed (a vendor outage), then closed: its failed start was
    retried for the whole outage, the status page red with `failed` for a room nobody was in, and once the vendor
    answered again a capture started in the empty room (billed until it idled out, then recorded `done`, not
    waiting for its room). A failed start of a room no longer selected is left to its room, as a backing-off one."""
    write_specs(harness.specs, classes())
    await harness.start()
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StartSnapshot"]))
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.advance(120)
    key = "SnapshotJob/classes/class-1"
    assert harness.record(key).status is TaskStatus.FAILED
    harness.sim.unpublish("volcengine", "class-1", user_id="t")
    await harness.advance(5)
    left = harness.record(key)
    assert left.status is TaskStatus.STOPPED and left.next_attempt_at is None  # left to its room, no slot
    tries = harness.calls("StartSnapshot")
    async with await client(harness) as http:
        page = (await http.get("/api/v1/status")).json()
    assert (page["needs_attention"], page["waiting_for_room"]) == (False, 1)
    await harness.advance(600)
    harness.sim.faults.set(FaultConfig())
    await harness.advance(600)
    assert harness.calls("StartSnapshot") == tries and started(harness) == []  # nothing started in the empty room
    harness.sim.publish("volcengine", "class-1", user_id="t2")  # selected again: started at once
    await harness.advance(2)
    assert harness.record(key).status is TaskStatus.RUNNING and started(harness) == ["class-1"]
    # Walk 44c-3: its first run, not a re-issue of one the vendor stopped (it never ran): counted as one, it
    # read RE-ISSUES 1 and `reissue: vendor stopped it: stopped`, and counted an unproductive run.
    assert (harness.record(key).reissue_count, harness.record(key).unproductive_runs) == (0, 0)


@pytest.mark.parametrize("vendor", ["volcengine", "zego"])
async def test_a_lost_start_left_to_its_room_is_still_stopped_when_its_job_is_removed(
    harness: Harness, vendor: str
) -> None:
    """Walk 47a: every start's answer lost (the vendor started it), then the room closed: the failed start was
    left to its room (43B-1, `stopped`), which no longer said it may run, so removing the job before the vendor's
    idle timeout sent no stop (ZEGO: nor a start under its ClientTaskId to find it) and the run went on
    untracked. Left to its room, it stays stoppable."""
    volc = vendor == "volcengine"
    job, room, key = (
        (classes(), "class-1", "SnapshotJob/classes/class-1")
        if volc
        else (SHOWS, "show-1", "RecordingJob/shows/show-1")
    )
    start, stop = ("StartSnapshot", "StopSnapshot") if volc else ("StartRecord", "StopRecord")
    stream = None if volc else "s1"
    write_specs(harness.specs, re.sub(r"idleTimeout: \d+s", "idleTimeout: 600s", job), snapshot_job("audit", ["lobby"]))
    daemon = await harness.start(max_prune=100)  # (weighed as the stop it is, this one removal is all that runs)
    harness.sim.faults.set(FaultConfig(drop_rate=1.0, phase="after", apis=[start]))
    harness.sim.publish(vendor, room, user_id="t", stream_id=stream)
    await harness.advance(120)
    assert harness.record(key).status is TaskStatus.FAILED and len(harness.running_sim_tasks(vendor)) == 1
    harness.sim.faults.set(FaultConfig())
    harness.sim.unpublish(vendor, room, user_id="t", stream_id=stream)
    await harness.advance(5)
    assert harness.record(key).status is TaskStatus.STOPPED and harness.calls(stop) == 0  # left to its room
    # The job removed while the vendor still runs what the lost start began.
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    assert daemon.reload()
    await harness.advance(60)  # past the prune's grace, well before the vendor's idle timeout
    assert harness.record(key).status is TaskStatus.REMOVED
    assert harness.calls(stop) == 1 and harness.running_sim_tasks(vendor) == []


@pytest.mark.parametrize("vendor", ["volcengine", "zego"])
async def test_a_replaces_lost_start_left_to_its_room_is_taken_up_not_stopped_when_its_room_reopens(
    harness: Harness, vendor: str
) -> None:
    """Walk 48A-1: an edit replaced a room's run (its old run stopped), the new start's answers all lost (the
    vendor runs it), then the room closed (left to its room, 43B-1) and opened again. Its start is taken up as
    the replace it is: stoppable since 47a, the run that start began was stopped a second time and started anew
    (a gap in capture; ZEGO: another recording)."""
    volc = vendor == "volcengine"
    job, room, key = (
        (re.sub(r"idleTimeout: \d+s", "idleTimeout: 600s", classes()), "class-1", "SnapshotJob/classes/class-1")
        if volc
        else (SHOWS.replace("idleTimeout: 30s", "idleTimeout: 600s"), "show-1", "RecordingJob/shows/show-1")
    )
    start, stop = ("StartSnapshot", "StopSnapshot") if volc else ("StartRecord", "StopRecord")
    stream = None if volc else "s1"
    write_specs(harness.specs, job)
    daemon = await harness.start()
    harness.sim.publish(vendor, room, user_id="t", stream_id=stream)
    await harness.advance(5)
    assert harness.record(key).status is TaskStatus.RUNNING
    harness.sim.faults.set(FaultConfig(drop_rate=1.0, phase="after", apis=[start]))
    write_specs(harness.specs, job.replace("idleTimeout: 600s", "idleTimeout: 700s"))  # a replace
    assert daemon.reload()
    await harness.advance(120)
    assert harness.record(key).status is TaskStatus.FAILED and harness.calls(stop) == 1
    harness.sim.faults.set(FaultConfig())
    harness.sim.unpublish(vendor, room, user_id="t", stream_id=stream)
    await harness.advance(5)
    assert harness.record(key).status is TaskStatus.STOPPED  # left to its room
    [lost] = harness.running_sim_tasks(vendor)  # what the replace's lost start began
    harness.sim.publish(vendor, room, user_id="t", stream_id=stream)
    await harness.advance(5)
    assert harness.record(key).status is TaskStatus.RUNNING and harness.calls(stop) == 1
    [running] = harness.running_sim_tasks(vendor)
    assert (running.task_id, running.start_time) == (lost.task_id, lost.start_time)


async def test_a_lost_zego_start_left_to_its_room_is_found_and_stopped_when_its_edited_job_starts_again(
    harness: Harness,
) -> None:
    """Walk 47a: a ZEGO recording's lost start left to its room (43B-1), its job edited meanwhile, its room then
    active again: the replace started a new recording (a new ClientTaskId) beside the one the lost start began,
    two recordings of the room. What the lost start may run is found by its ClientTaskId and stopped first."""
    write_specs(harness.specs, SHOWS.replace("idleTimeout: 30s", "idleTimeout: 600s"))
    daemon = await harness.start()
    harness.sim.faults.set(FaultConfig(drop_rate=1.0, phase="after", apis=["StartRecord"]))
    harness.sim.publish("zego", "show-1", stream_id="s1", user_id="host")
    await harness.advance(120)
    key = "RecordingJob/shows/show-1"
    assert harness.record(key).status is TaskStatus.FAILED and len(harness.running_sim_tasks("zego")) == 1
    harness.sim.faults.set(FaultConfig())
    harness.sim.unpublish("zego", "show-1", stream_id="s1", user_id="host")
    await harness.advance(5)
    assert harness.record(key).status is TaskStatus.STOPPED  # left to its room
    write_specs(harness.specs, SHOWS.replace("idleTimeout: 30s", "idleTimeout: 600s").replace("record/", "rec2/"))
    assert daemon.reload()
    await harness.advance(5)
    harness.sim.publish("zego", "show-1", stream_id="s2", user_id="host")  # selected again: the edit starts
    await harness.advance(5)
    [running] = harness.running_sim_tasks("zego")
    assert running.task_id == harness.record(key).vendor_task_id and harness.calls("StopRecord") == 1
