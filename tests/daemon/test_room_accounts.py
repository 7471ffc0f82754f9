"""Room activity is a fact of the vendor account (type + appId) and the room, not of the Provider document
that names the account: a Provider renamed (its new document declared beside the old one, as `plan`
advises) keeps what the daemon learned of its rooms, so a selector job moved to it keeps capturing the
rooms whose streams began before the rename, with no new stream event."""

from __future__ import annotations

import sqlite3

from structlog.testing import capture_logs

from reconciler.daemon.controller import PRUNE_GRACE
from reconciler.model import TaskStatus
from tests.daemon.conftest import Harness, write_specs
from tests.specdocs import VOLC_ACCOUNT, selector_job
from tests.state.test_state_rooms import SCHEMA_1_ROOMS

ROOMS = ["class-1", "class-5"]


def renamed(doc: str) -> str:
    """A copy of a `volc` document on `volc-b`: the same vendor account under another name."""
    return doc.replace("name: volc}", "name: volc-b}").replace("provider: volc\n", "provider: volc-b\n")


def volc_b(harness: Harness) -> str:
    """The `volc` Provider document of the harness's specs, renamed `volc-b`."""
    text = (harness.specs / "providers.yaml").read_text()
    volc = next(doc for doc in text.split("---\n") if "name: volc}" in doc)
    return renamed(volc)


def capturing(harness: Harness) -> list[str]:
    return sorted(t.room_id for t in harness.running_sim_tasks("volcengine"))


async def test_a_renamed_provider_keeps_the_activity_of_its_rooms(harness: Harness) -> None:
    write_specs(harness.specs, selector_job("classes", "class-*"))
    await harness.start()
    for room in ROOMS:
        harness.sim.publish("volcengine", room, user_id="t")
    await harness.advance(2)
    assert capturing(harness) == ROOMS
    await harness.stop()
    # The rename as `plan` advises it: the new document beside the old one, the job moved to it.
    write_specs(harness.specs, volc_b(harness), renamed(selector_job("classes", "class-*")))
    with capture_logs() as logs:
        await harness.start()
        await harness.advance(PRUNE_GRACE + 120)  # no stream event meanwhile: the streams are still up
    # Before, the job on `volc-b` knew no active room: its two tasks were missing from the specs and waited
    # for a prune (held by --max-prune), and the listing never asked about rooms known under `volc`.
    assert capturing(harness) == ROOMS
    decisions = sorted(e["action"] for e in logs if e["event"] == "decision")
    assert decisions == ["move", "move"]  # the same account: re-homed to `volc-b`, no stop, no start
    assert (harness.calls("StopSnapshot"), harness.calls("StartSnapshot")) == (0, 2)
    for room in ROOMS:
        record = harness.record(f"SnapshotJob/classes/{room}")
        assert (record.status, record.provider) == (TaskStatus.RUNNING, "volc-b")


def to_schema_1(harness: Harness) -> None:
    """Turn the harness's state into what capctl before schema 2 kept: activity by Provider name (`volc`)."""
    with sqlite3.connect(harness.state_path) as db:
        rows = db.execute("SELECT room, active, last_seen, source FROM capctl_room_activity").fetchall()
        db.execute("DROP TABLE capctl_room_activity")
        db.execute(SCHEMA_1_ROOMS)
        db.executemany("INSERT INTO capctl_room_activity VALUES ('volc', ?, ?, ?, ?)", rows)
        db.execute("UPDATE capctl_meta SET schema_version = 1")


async def test_a_daemon_upgrades_a_state_of_schema_1_and_keeps_its_rooms(harness: Harness) -> None:
    write_specs(harness.specs, selector_job("classes", "class-*"))
    await harness.start()
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.advance(2)
    await harness.stop()
    to_schema_1(harness)
    with capture_logs() as logs:
        await harness.start()
        await harness.advance(60)
    (upgraded,) = [e for e in logs if e["event"] == "state upgraded: room activity kept by vendor account"]
    assert (upgraded["rooms"], upgraded["providers_unknown"]) == (1, [])
    assert capturing(harness) == ["class-1"] and harness.calls("StartSnapshot") == 1  # known, not started twice
    with sqlite3.connect(harness.state_path) as db:
        assert db.execute("SELECT schema_version FROM capctl_meta").fetchall() == [(2,)]
        assert db.execute("SELECT provider, room, active FROM capctl_room_activity").fetchall() == [
            (VOLC_ACCOUNT, "class-1", 1)
        ]


async def test_a_room_quiet_at_the_rename_is_left_to_end_and_captured_again_when_it_comes_back(
    harness: Harness,
) -> None:
    write_specs(harness.specs, selector_job("classes", "class-*"))
    await harness.start()
    harness.sim.publish("volcengine", "class-1", user_id="t")
    await harness.advance(2)
    harness.sim.unpublish("volcengine", "class-1", user_id="t")  # its run idles out 20 s later
    await harness.advance(1)
    await harness.stop()
    write_specs(harness.specs, volc_b(harness), renamed(selector_job("classes", "class-*")))
    with capture_logs() as logs:
        await harness.start()
        await harness.advance(5)
        harness.sim.publish("volcengine", "class-1", user_id="t2")  # back before the run idled out
        await harness.advance(60)
    # Before, the run of `volc` was not the renamed job's leaving task: missing from the specs, its prune
    # was held by --max-prune, and the start the room's return asked for waited for that prune for ever.
    assert not [e for e in logs if e["event"] == "decision" and e["action"] == "wait"]
    assert capturing(harness) == ["class-1"]
    record = harness.record("SnapshotJob/classes/class-1")
    assert (record.status, record.provider) == (TaskStatus.RUNNING, "volc-b")
