"""Pruning in the daemon: the --max-prune safeguard, tombstones that let a restored spec resume, a removed
provider reported once, and failed stops recorded on their task."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from reconciler.daemon.controller import PRUNE_GRACE
from reconciler.model import TaskStatus
from reconciler.sim.faults import FaultConfig
from reconciler.transitions import TOMBSTONE_RETENTION
from tests.daemon.conftest import Harness, write_specs
from tests.daemon.test_http import client
from tests.daemon.test_status_page import task_of
from tests.specdocs import recording_job, snapshot_job, thumbnail_job

LOBBY = "SnapshotJob/audit/lobby"
BIG = [f"SnapshotJob/big/r{i}" for i in range(3)]


async def metrics(harness: Harness) -> str:
    async with await client(harness) as http:
        return (await http.get("/metrics")).text


async def start_with_two_files(harness: Harness, *, prune_grace: float = PRUNE_GRACE) -> None:
    """`audit` (1 task, lobby) in jobs.yaml and `big` (3 tasks) in big.yaml, all running with streams."""
    for room in ["lobby", "r0", "r1", "r2"]:
        harness.sim.publish("volcengine", room, user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    (harness.specs / "big.yaml").write_text(snapshot_job("big", ["r0", "r1", "r2"]))
    await harness.start(prune_grace=prune_grace)
    await harness.advance(1)


async def test_removing_more_than_max_prune_stops_nothing_logs_once_and_waits_for_a_human(harness: Harness) -> None:
    await start_with_two_files(harness)
    assert harness.daemon is not None
    (harness.specs / "big.yaml").unlink()  # 3 of the 4 tasks: 75 % > 50 %
    with capture_logs() as logs:
        assert harness.daemon.reload()
        await harness.advance(300)  # ten resyncs
    assert harness.calls("StopSnapshot") == 0
    assert all(harness.record(k).status is TaskStatus.RUNNING for k in BIG)
    blocked = [e for e in logs if e["event"].startswith("prune blocked")]
    assert len(blocked) == 1 and blocked[0]["tasks"] == 3 and blocked[0]["of"] == 4
    assert "--max-prune 100" in blocked[0]["to_confirm"]
    assert 'capctl_prune_blocked{reason="max-prune"} 3.0' in await metrics(harness)
    # The status page says so (walk 12A-3: it read "Every task is running." and nothing else).
    async with await client(harness) as http:
        assert (await http.get("/api/v1/status")).json()["replica"]["prune_held"] == BIG
        page = (await http.get("/")).text
    assert "A prune waits for a human: 3 tasks removed from the specs are not stopped" in page
    # (walk 14b: 4 of 9 tasks but 4 of 6 running were held by a box that said only "of the tasks")
    assert "More than --max-prune (50 %) of the tasks, or of the running ones, at once" in page
    assert all(key in page for key in BIG)
    # The operator confirms by restarting the daemon with the safeguard off: the three are pruned.
    await harness.stop()
    await harness.start(max_prune=100)
    await harness.advance(PRUNE_GRACE + 1)  # a restarted daemon gives the missing tasks the grace period too
    assert harness.calls("StopSnapshot") == 3
    assert all(harness.record(k).status is TaskStatus.REMOVED for k in BIG)
    assert harness.record(LOBBY).status is TaskStatus.RUNNING
    assert 'capctl_prune_blocked{reason="max-prune"} 0.0' in await metrics(harness)
    async with await client(harness) as http:
        assert (await http.get("/api/v1/status")).json()["replica"]["prune_held"] == []


async def test_tasks_held_by_max_prune_keep_being_observed(harness: Harness) -> None:
    """docs/daemon.md: "The held tasks keep running and keep being observed" (walk 32d-1: a held task was never
    looked at again, so one the vendor stopped read `running` in `state list` until the file came back)."""
    await start_with_two_files(harness)
    assert harness.daemon is not None
    (harness.specs / "big.yaml").unlink()
    assert harness.daemon.reload()
    await harness.advance(5)
    r0 = harness.record(BIG[0])
    harness.sim.stop_task("volcengine", r0.vendor_task_id or "", room_id=r0.target, reason="UnknownStopReason")
    await harness.advance(120)  # a few resyncs
    assert harness.calls("StopSnapshot") == 0 and harness.calls("StartSnapshot") == 4  # held: nothing decided
    stopped = harness.record(BIG[0])
    assert stopped.status is TaskStatus.STOPPED and stopped.stop_reason is not None
    assert all(harness.record(k).status is TaskStatus.RUNNING for k in BIG[1:])
    assert 'capctl_prune_blocked{reason="max-prune"} 3.0' in await metrics(harness)


async def test_stopped_records_do_not_dilute_the_share_of_what_runs_that_a_prune_would_stop(harness: Harness) -> None:
    """3 of 12 tasks (25 %) but 3 of the 4 running (75 %): held, for a selector job's quiet rooms of the last day
    (or any stopped tasks) must not let a bad merge stop most of what captures now."""
    for room in ["lobby", "r0", "r1", "r2"]:
        harness.sim.publish("volcengine", room, user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    (harness.specs / "big.yaml").write_text(snapshot_job("big", ["r0", "r1", "r2"]))
    quiet = [f"q{i}" for i in range(8)]
    (harness.specs / "quiet.yaml").write_text(snapshot_job("quiet", quiet, restart="Never"))
    await harness.start()
    await harness.advance(60)  # the quiet rooms' runs idle out: 8 stopped records, 4 running
    assert all(harness.record(f"SnapshotJob/quiet/{q}").status is not TaskStatus.RUNNING for q in quiet)
    assert harness.daemon is not None
    (harness.specs / "big.yaml").unlink()
    with capture_logs() as logs:
        assert harness.daemon.reload()
        await harness.advance(PRUNE_GRACE + 60)
    assert harness.calls("StopSnapshot") == 0
    assert all(harness.record(k).status is TaskStatus.RUNNING for k in BIG)
    (blocked,) = [e for e in logs if e["event"].startswith("prune blocked")]
    assert (blocked["tasks"], blocked["of"], blocked["running"], blocked["of_running"]) == (3, 12, 3, 4)


async def test_a_blocked_prune_is_released_when_the_file_comes_back(harness: Harness) -> None:
    await start_with_two_files(harness)
    assert harness.daemon is not None
    big = (harness.specs / "big.yaml").read_text()
    (harness.specs / "big.yaml").unlink()
    assert harness.daemon.reload()
    await harness.advance(60)
    (harness.specs / "big.yaml").write_text(big)
    assert harness.daemon.reload()
    await harness.advance(60)
    assert harness.calls("StopSnapshot") == 0 and harness.calls("StartSnapshot") == 4
    assert 'capctl_prune_blocked{reason="max-prune"} 0.0' in await metrics(harness)


async def test_a_small_removal_is_pruned_after_the_grace_and_restoring_it_resumes_its_history(harness: Harness) -> None:
    await start_with_two_files(harness)
    assert harness.daemon is not None
    harness.sim.unpublish("volcengine", "lobby", user_id="u")
    await harness.advance(200)  # the empty lobby idles out and, known empty, goes dormant
    before = harness.record(LOBBY)
    assert before.status is TaskStatus.DORMANT and before.next_attempt_at is not None
    jobs = (harness.specs / "jobs.yaml").read_text()
    (harness.specs / "jobs.yaml").write_text("")  # 1 task of 4: 25 %, within the default 50 %
    assert harness.daemon.reload()
    stops = harness.calls("StopSnapshot")
    await harness.advance(PRUNE_GRACE + 1)
    tomb = harness.record(LOBBY)
    assert tomb.status is TaskStatus.REMOVED and tomb.removed_at is not None
    assert (tomb.reissue_count, tomb.unproductive_runs, tomb.stopped_at) == (
        before.reissue_count,
        before.unproductive_runs,
        before.stopped_at,
    )
    assert harness.calls("StopSnapshot") == stops  # a dormant task has no run to stop
    assert 'capctl_tasks{status="removed"} 1.0' in await metrics(harness)
    await harness.advance(120)  # resyncs never turn a tombstone into a delete again
    assert harness.record(LOBBY).status is TaskStatus.REMOVED
    (harness.specs / "jobs.yaml").write_text(jobs)
    assert harness.daemon.reload()
    await harness.advance(1)
    back = harness.record(LOBBY)
    assert back.status is TaskStatus.RUNNING and back.removed_at is None
    # its callbacks reach it from its restart on (a tombstone is never in their index: walk 28a, 29b)
    run = ("volcengine", back.vendor_ref["AppId"], back.target, back.vendor_task_id or "")
    assert (routed := harness.daemon.records.by_vendor_id(run)) is not None and routed.key == LOBBY
    assert (back.reissue_count, back.unproductive_runs) == (before.reissue_count, before.unproductive_runs)
    # The page agrees, after a restart too: the restore is no re-issue of the run the vendor idled out (42B-6).
    for restart in (False, True):
        if restart:
            await harness.stop()
            await harness.start()
        async with await client(harness) as http:
            task = task_of((await http.get("/api/v1/status")).json(), LOBBY)
        assert (task["reissue_count"], task["reissues"]) == (before.reissue_count, []), restart


async def test_tombstones_are_forgotten_after_their_retention(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    harness.daemon_options["max_prune"] = 100  # its only task: 100 %
    await harness.start()
    await harness.advance(1)
    assert harness.daemon is not None
    (harness.specs / "jobs.yaml").write_text("")
    assert harness.daemon.reload()
    await harness.advance(PRUNE_GRACE + 1)
    assert harness.record(LOBBY).status is TaskStatus.REMOVED
    await harness.advance(60)
    assert harness.record(LOBBY).status is TaskStatus.REMOVED
    removed_at = harness.record(LOBBY).removed_at
    assert removed_at is not None
    await harness.stop()  # most of a week without the daemon, then it comes back
    harness.clock.set(removed_at + TOMBSTONE_RETENTION - 10)
    daemon = await harness.start()
    await harness.advance(5)
    assert harness.record(LOBBY).status is TaskStatus.REMOVED  # kept until its retention is over
    await harness.advance(10)
    assert daemon.records.get(LOBBY) is None


async def test_a_removed_provider_that_still_runs_tasks_is_reported_once_and_not_retried(harness: Harness) -> None:
    harness.sim.publish("volcengine", "lobby", user_id="u")
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]), recording_job("rec", ["class-1"]))
    await harness.start()
    await harness.advance(1)
    assert harness.daemon is not None
    providers = (harness.specs / "providers.yaml").read_text()
    without_volc = providers.split("---\n", 1)[1]  # the first document is Provider volc
    (harness.specs / "providers.yaml").write_text(without_volc)
    (harness.specs / "jobs.yaml").write_text(recording_job("rec", ["class-1"]))
    with capture_logs() as logs:
        assert harness.daemon.reload()
        await harness.advance(300)
    errors = [e for e in logs if e["event"] == "cannot prune"]
    assert len(errors) == 1 and "provider 'volc' was removed" in errors[0]["error"] and LOBBY in errors[0]["error"]
    assert not [e for e in logs if e["event"].startswith("reconcile failed")]
    assert harness.record(LOBBY).status is TaskStatus.RUNNING and harness.calls("StopSnapshot") == 0
    assert 'capctl_prune_blocked{reason="provider-missing"} 1.0' in await metrics(harness)
    (harness.specs / "providers.yaml").write_text(providers)  # keep the Provider until its tasks are gone
    assert harness.daemon.reload()
    await harness.advance(40)
    assert harness.record(LOBBY).status is TaskStatus.REMOVED and harness.calls("StopSnapshot") == 1
    assert 'capctl_prune_blocked{reason="provider-missing"} 0.0' in await metrics(harness)


async def test_a_failed_stop_is_recorded_on_its_task_which_keeps_running(harness: Harness) -> None:
    await start_with_two_files(harness)
    assert harness.daemon is not None
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StopSnapshot"]))
    (harness.specs / "jobs.yaml").write_text("")
    assert harness.daemon.reload()
    await harness.advance(60)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.RUNNING
    assert record.last_error is not None and record.last_error.startswith("delete failed: ")
    harness.sim.faults.set(FaultConfig())
    await harness.advance(120)
    record = harness.record(LOBBY)
    assert record.status is TaskStatus.REMOVED and record.last_error is None


async def test_a_restored_thumbnail_is_not_submitted_again(harness: Harness) -> None:
    harness.daemon_options["max_prune"] = 100
    write_specs(harness.specs, thumbnail_job(tencent=False))
    await harness.start()
    await harness.advance(1)
    key = "ThumbnailJob/thumbs//record/a.mp4"
    assert harness.record(key).status is TaskStatus.DONE and harness.calls("MediaThumbnails") == 1
    assert harness.daemon is not None
    (harness.specs / "jobs.yaml").write_text("")
    assert harness.daemon.reload()
    await harness.advance(PRUNE_GRACE + 1)
    assert harness.record(key).status is TaskStatus.REMOVED
    write_specs(harness.specs, thumbnail_job(tencent=False))
    with capture_logs() as logs:
        assert harness.daemon.reload()
        await harness.advance(1)
    assert harness.record(key).status is TaskStatus.DONE and harness.calls("MediaThumbnails") == 1
    run = ("zego", harness.record(key).vendor_task_id or "")  # its callbacks reach it again at once (walk 29b)
    assert (routed := harness.daemon.records.by_vendor_id(run)) is not None and routed.key == key
    # 20d-5: the revival was silent (a debug line), where every other record the daemon changes is logged.
    [revived] = [e for e in logs if e["event"] == "no change" and "restored to the specs" in e["reason"]]
    assert revived["log_level"] == "info" and "submitted before with the same content" in revived["reason"]


async def test_a_renamed_thumbnail_job_is_not_submitted_again(harness: Harness) -> None:
    """Walk 58b/59f: the daemon submitted a renamed ThumbnailJob's files again (a new key each, no record), so
    ZEGO made their thumbnails twice. The old key's submission is the new key's, as `capctl apply` takes it;
    an entry changed in the rename is submitted."""
    harness.daemon_options["max_prune"] = 100
    write_specs(harness.specs, thumbnail_job(tencent=False))
    await harness.start()
    await harness.advance(1)
    old, new = "ThumbnailJob/thumbs//record/a.mp4", "ThumbnailJob/thumbs-v2//record/a.mp4"
    task_id = harness.record(old).vendor_task_id
    assert harness.calls("MediaThumbnails") == 1 and task_id
    assert harness.daemon is not None
    write_specs(harness.specs, thumbnail_job("thumbs-v2", tencent=False))
    with capture_logs() as logs:
        assert harness.daemon.reload()
        await harness.advance(PRUNE_GRACE + 1)
    assert harness.calls("MediaThumbnails") == 1
    # Walk 60a-1: its log said "restored to the specs (removed at an unknown time)", the old key still `done`.
    [taken] = [e for e in logs if e["event"] == "no change" and e["log_level"] == "info"]  # the record it writes
    assert taken["reason"] == (
        f"submitted before as {old} (ZEGO task {task_id}) with the same file and settings: not again, recorded"
        " done under this key (no vendor call)"
    )
    assert harness.record(new).status is TaskStatus.DONE and harness.record(new).vendor_task_id == task_id
    assert harness.record(old).status is TaskStatus.REMOVED
    routed = harness.daemon.records.by_vendor_id(("zego", task_id))  # its callbacks reach the new key
    assert routed is not None and routed.key == new
    write_specs(harness.specs, thumbnail_job("thumbs-v3", tencent=False, huawei_interval="5s"))  # and changed
    assert harness.daemon.reload()
    await harness.advance(1)
    assert harness.calls("MediaThumbnails") == 2
    assert harness.record("ThumbnailJob/thumbs-v3//record/a.mp4").vendor_task_id != task_id


async def test_a_thumbnail_job_renamed_with_its_provider_is_not_submitted_again(harness: Harness) -> None:
    """Walk 60a-4: a ThumbnailJob renamed in the edit that renames its Provider (the same ZEGO app) was submitted
    again: its content hash holds the Provider's name, so the old key's submission was not found for it. The same
    account's submission is the new key's; another app's is not."""
    harness.daemon_options["max_prune"] = 100
    write_specs(harness.specs, thumbnail_job(tencent=False))
    await harness.start()
    await harness.advance(1)
    task_id = harness.record("ThumbnailJob/thumbs//record/a.mp4").vendor_task_id
    assert harness.calls("MediaThumbnails") == 1 and task_id and harness.daemon is not None
    providers = harness.specs / "providers.yaml"
    providers.write_text(providers.read_text().replace("{name: zego}", "{name: zego-main}"))
    renamed = thumbnail_job("thumbs-v2", tencent=False).replace("provider: zego\n", "provider: zego-main\n")
    (harness.specs / "jobs.yaml").write_text(renamed)
    assert harness.daemon.reload()
    await harness.advance(PRUNE_GRACE + 1)
    assert harness.calls("MediaThumbnails") == 1
    new = harness.record("ThumbnailJob/thumbs-v2//record/a.mp4")
    assert (new.status, new.vendor_task_id, new.provider) == (TaskStatus.DONE, task_id, "zego-main")


async def test_a_refused_thumbnail_edit_reverted_is_its_accepted_submission_not_a_new_one(harness: Harness) -> None:
    """20d-6: an edit ZEGO refused (its file missing) overwrote the record's accepted submission (its hash,
    task id and time); the entry reverted was then submitted a second time, its thumbnails made twice."""
    write_specs(harness.specs, thumbnail_job(tencent=False))
    await harness.start()
    await harness.advance(1)
    key = "ThumbnailJob/thumbs//record/a.mp4"
    done = harness.record(key)
    assert done.status is TaskStatus.DONE and harness.calls("MediaThumbnails") == 1
    assert harness.daemon is not None
    harness.sim.missing_files.add("/record/a.mp4")
    write_specs(harness.specs, thumbnail_job(tencent=False, huawei_interval=5))
    assert harness.daemon.reload()
    await harness.advance(1)
    failed = harness.record(key)
    assert failed.status is TaskStatus.FAILED and failed.vendor_task_id is None and failed.next_attempt_at
    assert harness.calls("MediaThumbnails") == 2
    write_specs(harness.specs, thumbnail_job(tencent=False))  # reverted
    assert harness.daemon.reload()
    await harness.advance(60)
    back = harness.record(key)
    assert harness.calls("MediaThumbnails") == 2  # not submitted again
    assert back.status is TaskStatus.DONE and back.last_error is None and back.accepted is None
    assert back.next_attempt_at is None  # the refused edit's backoff slot is not kept
    assert (back.vendor_task_id, back.started_at, back.spec_hash, back.request) == (
        done.vendor_task_id,
        done.started_at,
        done.spec_hash,
        done.request,
    )


async def test_a_refused_thumbnail_edit_reverted_as_its_job_is_renamed_is_not_submitted_again(
    harness: Harness,
) -> None:
    """Walk 60a-6 in the daemon: the renamed job's key takes the submission the old key holds as `accepted`."""
    harness.daemon_options["max_prune"] = 100
    write_specs(harness.specs, thumbnail_job(tencent=False))
    await harness.start()
    await harness.advance(1)
    task_id = harness.record("ThumbnailJob/thumbs//record/a.mp4").vendor_task_id
    assert harness.daemon is not None and task_id
    harness.sim.missing_files.add("/record/a.mp4")
    write_specs(harness.specs, thumbnail_job(tencent=False, huawei_interval=5))
    assert harness.daemon.reload()
    await harness.advance(1)
    assert harness.record("ThumbnailJob/thumbs//record/a.mp4").status is TaskStatus.FAILED
    harness.sim.missing_files.discard("/record/a.mp4")
    write_specs(harness.specs, thumbnail_job("thumbs-v2", tencent=False))  # reverted, and renamed
    assert harness.daemon.reload()
    await harness.advance(PRUNE_GRACE + 1)
    assert harness.calls("MediaThumbnails") == 2  # the first submission and the refused edit only
    new = harness.record("ThumbnailJob/thumbs-v2//record/a.mp4")
    assert (new.status, new.vendor_task_id) == (TaskStatus.DONE, task_id)


async def test_a_refused_thumbnail_edit_reverted_after_a_provider_rename_is_not_submitted_again(
    harness: Harness,
) -> None:
    """The Provider renamed while the refused edit is declared (retried under the new name, refused again), the
    entry reverted in a later edit: the accepted submission still named the old Provider's hash, so the daemon
    submitted the thumbnails a second time (one-shot and paid)."""
    key = "ThumbnailJob/thumbs//record/a.mp4"
    renamed = thumbnail_job(tencent=False).replace("provider: zego\n", "provider: zego-main\n")
    write_specs(harness.specs, thumbnail_job(tencent=False))
    await harness.start()
    await harness.advance(1)
    done = harness.record(key)
    assert harness.daemon is not None and done.status is TaskStatus.DONE
    harness.sim.missing_files.add("/record/a.mp4")
    write_specs(harness.specs, thumbnail_job(tencent=False, huawei_interval=5))
    assert harness.daemon.reload()
    await harness.advance(1)
    providers = harness.specs / "providers.yaml"
    write_specs(harness.specs, thumbnail_job(tencent=False, huawei_interval=5).replace("zego\n", "zego-main\n"))
    providers.write_text(providers.read_text().replace("{name: zego}", "{name: zego-main}"))
    assert harness.daemon.reload()
    await harness.advance(10)  # tried again under the new name, refused again
    tried = harness.calls("MediaThumbnails")
    assert harness.record(key).provider == "zego-main" and harness.record(key).status is TaskStatus.FAILED
    assert tried >= 3
    (harness.specs / "jobs.yaml").write_text(renamed)  # reverted, a later edit
    assert harness.daemon.reload()
    await harness.advance(60)
    back = harness.record(key)
    assert harness.calls("MediaThumbnails") == tried  # not submitted again
    assert (back.status, back.provider, back.vendor_task_id) == (TaskStatus.DONE, "zego-main", done.vendor_task_id)


async def test_done_thumbnails_removed_are_neither_held_nor_weighed_by_max_prune(harness: Harness) -> None:
    """20d-3: a ThumbnailJob whose files were all submitted (`done`) is one-shot: its prune calls nothing, loses
    nothing (restored, it is not submitted again). Removing it (1 snapshot running + 2 done thumbnails: 2 of 3
    tasks) was held for a human as a bad merge would be; and such records diluted a real one's share."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]), thumbnail_job())
    await harness.start()
    await harness.advance(1)
    thumbs = ["ThumbnailJob/thumbs//record/a.mp4", "ThumbnailJob/thumbs/1397757897438985100"]
    assert all(harness.record(k).status is TaskStatus.DONE for k in thumbs)
    assert harness.daemon is not None
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    assert harness.daemon.reload()
    await harness.advance(PRUNE_GRACE + 1)
    assert all(harness.record(k).status is TaskStatus.REMOVED for k in thumbs)
    assert 'capctl_prune_blocked{reason="max-prune"} 0.0' in await metrics(harness)
    # The other side: done thumbnails no longer dilute a real removal. The snapshot task, idled out (nothing to
    # stop, but pruned it is not started again when its room fills), is 1 of 1 weighed tasks, not 1 of 3.
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]), thumbnail_job(name="more"))
    assert harness.daemon.reload()
    await harness.advance(1)
    harness.sim.unpublish("volcengine", "lobby", user_id="u")
    await harness.advance(60)  # the snapshot idles out: its room left, its task is not running
    assert harness.record(LOBBY).status is not TaskStatus.RUNNING
    write_specs(harness.specs, thumbnail_job(name="more"))
    with capture_logs() as logs:
        assert harness.daemon.reload()
        await harness.advance(PRUNE_GRACE + 1)
    assert harness.record(LOBBY).status is not TaskStatus.REMOVED
    assert 'capctl_prune_blocked{reason="max-prune"} 1.0' in await metrics(harness)
    # Its line gives the counts weighed (21b: it said "1 of 3", a share below --max-prune, for a hold).
    [blocked] = [e for e in logs if e["event"].startswith("prune blocked")]
    assert (blocked["tasks"], blocked["of"], blocked["running"], blocked["of_running"]) == (1, 1, 0, 0)
    assert "thumbnails" not in blocked
    # Submitted thumbnails removed beside it are held with it, and said apart from the counts weighed.
    write_specs(harness.specs, snapshot_job("other", ["hall"]))
    with capture_logs() as logs:
        assert harness.daemon.reload()
    [blocked] = [e for e in logs if e["event"].startswith("prune blocked")]
    assert (blocked["tasks"], blocked["of"], blocked["thumbnails"]) == (1, 1, 2)
    # Walk 30b-4: `first` lists all 3 held keys; `held` counts them, as the gauge does (1 task beside 3 keys).
    assert blocked["held"] == len(blocked["first"]) == 3, blocked


async def test_a_thumbnail_refused_on_an_edit_is_submitted_and_not_weighed_by_max_prune(harness: Harness) -> None:
    """Walk 25d (20d-3 after 23b): a thumbnail whose edit ZEGO refused keeps the submission it took (`accepted`):
    its prune calls nothing and loses nothing, as a done one's (restored as taken, it is not submitted again),
    yet it was weighed as a real removal: its job removed was held for a human (1 of 1 tasks)."""
    write_specs(harness.specs, thumbnail_job(tencent=False))
    await harness.start()
    await harness.advance(1)
    key = "ThumbnailJob/thumbs//record/a.mp4"
    harness.sim.missing_files.add("/record/a.mp4")
    write_specs(harness.specs, thumbnail_job(tencent=False, huawei_interval=5))
    assert harness.daemon is not None and harness.daemon.reload()
    await harness.advance(1)
    assert harness.record(key).status is TaskStatus.FAILED and harness.record(key).accepted is not None
    (harness.specs / "jobs.yaml").write_text("")
    assert harness.daemon.reload()
    await harness.advance(PRUNE_GRACE + 1)
    assert harness.record(key).status is TaskStatus.REMOVED
    assert 'capctl_prune_blocked{reason="max-prune"} 0.0' in await metrics(harness)


async def test_a_thumbnail_whose_submission_failed_is_not_weighed_by_max_prune(harness: Harness) -> None:
    """Walk 59e: a ThumbnailJob renamed while one of its files was not uploaded yet (its submission failed) was
    held for a human ("1 of 1 tasks", an alert): that prune calls nothing, and restored it is tried again as it
    would have been."""
    harness.sim.missing_files.add("/record/a.mp4")
    write_specs(harness.specs, thumbnail_job(tencent=False))
    await harness.start()
    await harness.advance(1)
    key = "ThumbnailJob/thumbs//record/a.mp4"
    assert harness.record(key).status is TaskStatus.FAILED and harness.record(key).accepted is None
    write_specs(harness.specs, thumbnail_job("thumbs-v2", tencent=False))
    assert harness.daemon is not None
    with capture_logs() as logs:
        assert harness.daemon.reload()
        await harness.advance(PRUNE_GRACE + 1)
    assert not [e for e in logs if e["event"].startswith("prune blocked")]
    assert harness.record(key).status is TaskStatus.REMOVED
    assert 'capctl_prune_blocked{reason="max-prune"} 0.0' in await metrics(harness)


async def test_a_job_missing_for_less_than_the_grace_period_is_not_touched(harness: Harness) -> None:
    """A spec file rewritten in place (a writer pausing between documents): the daemon reloads a set without
    `audit`, then the whole file again. Nothing is stopped or started, and the pending prune is visible."""
    await start_with_two_files(harness)
    assert harness.daemon is not None
    starts = harness.calls("StartSnapshot")
    jobs = (harness.specs / "jobs.yaml").read_text()
    (harness.specs / "jobs.yaml").write_text("")  # half written: 1 task of 4, within --max-prune
    with capture_logs() as logs:
        assert harness.daemon.reload()
        await harness.advance(PRUNE_GRACE - 1)
        assert 'capctl_prune_blocked{reason="grace"} 1.0' in await metrics(harness)
        (harness.specs / "jobs.yaml").write_text(jobs)  # the writer finishes
        assert harness.daemon.reload()
        await harness.advance(PRUNE_GRACE * 3)
    pending = [e for e in logs if e["event"].startswith("prune pending")]
    assert len(pending) == 1 and pending[0]["tasks"] == 1 and pending[0]["first"] == [LOBBY]
    assert pending[0]["grace"] == PRUNE_GRACE
    assert [e["tasks"] for e in logs if e["event"].startswith("prune cancelled")] == [1]
    assert harness.calls("StopSnapshot") == 0 and harness.calls("StartSnapshot") == starts
    assert harness.record(LOBBY).status is TaskStatus.RUNNING
    assert 'capctl_prune_blocked{reason="grace"} 0.0' in await metrics(harness)


async def test_prune_pending_says_thumbnails_apart_they_are_not_stopped(harness: Harness) -> None:
    """Walk 60a: "prune pending: tasks removed from the specs are stopped …" named a removed ThumbnailJob's
    submissions too, which cannot be stopped (their prune only records them removed). Each kind is said apart."""
    harness.daemon_options["max_prune"] = 100
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]), thumbnail_job(tencent=False))
    await harness.start()
    await harness.advance(1)
    assert harness.daemon is not None
    write_specs(harness.specs)
    with capture_logs() as logs:
        assert harness.daemon.reload()
    pending = {e["event"]: e["first"] for e in logs if e["event"].startswith("prune pending")}
    assert pending == {
        "prune pending: tasks removed from the specs are stopped after the grace period unless they return": [LOBBY],
        "prune pending: thumbnail tasks removed from the specs are recorded removed after the grace period unless"
        " they return (nothing to stop: a submission cannot be stopped; back in the specs, one ZEGO took is not"
        " submitted again)": ["ThumbnailJob/thumbs//record/a.mp4"],
    }


async def test_a_job_missing_past_the_grace_period_is_pruned_then(harness: Harness) -> None:
    await start_with_two_files(harness, prune_grace=60)
    assert harness.daemon is not None
    (harness.specs / "jobs.yaml").write_text("")
    assert harness.daemon.reload()
    await harness.advance(59)
    assert harness.calls("StopSnapshot") == 0 and harness.record(LOBBY).status is TaskStatus.RUNNING
    await harness.advance(2)
    assert harness.calls("StopSnapshot") == 1 and harness.record(LOBBY).status is TaskStatus.REMOVED
    assert 'capctl_prune_blocked{reason="grace"} 0.0' in await metrics(harness)


async def test_the_grace_period_does_not_lift_the_max_prune_safeguard(harness: Harness) -> None:
    await start_with_two_files(harness)
    assert harness.daemon is not None
    (harness.specs / "big.yaml").unlink()  # 3 of 4: blocked, and stays blocked after the grace period
    assert harness.daemon.reload()
    await harness.advance(PRUNE_GRACE * 4)
    assert harness.calls("StopSnapshot") == 0
    text = await metrics(harness)
    assert 'capctl_prune_blocked{reason="max-prune"} 3.0' in text and 'capctl_prune_blocked{reason="grace"} 0.0' in text


async def test_a_held_prune_stays_held_across_a_failover_to_a_standby_that_never_saw_those_tasks(
    harness: Harness,
) -> None:
    # The standby's records are the state as it read it at its start: the `big` tasks came later. It did not
    # check the prune against the state at its takeover, so the new leader pruned 3 of 4 tasks (75 %) after
    # the grace that the old one held for a human. A standby (its view is stale) exports no held count.
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start(prune_grace=5.0)
    standby = await harness.start_standby(prune_grace=5.0)
    try:
        (harness.specs / "big.yaml").write_text(snapshot_job("big", ["r0", "r1", "r2"]))
        assert harness.daemon is not None and harness.daemon.reload() and standby.reload()
        await harness.advance(2)
        assert all(harness.record(k).status is TaskStatus.RUNNING for k in BIG)
        (harness.specs / "big.yaml").unlink()  # 3 of 4: held by the leader
        assert harness.daemon.reload() and standby.reload()
        await harness.advance(10)
        assert 'capctl_prune_blocked{reason="max-prune"} 3.0' in await metrics(harness)
        assert "capctl_prune_blocked{" not in standby.metrics.render().decode()  # the leader's word only
        with capture_logs() as logs:
            await harness.stop()  # the standby takes over
            await harness.advance(60)
        assert standby.lease_lost is None
        assert harness.calls("StopSnapshot") == 0
        assert [e["tasks"] for e in logs if e["event"].startswith("prune blocked")] == [3]
        assert 'capctl_prune_blocked{reason="max-prune"} 3.0' in standby.metrics.render().decode()
    finally:
        await standby.stop()
        standby.records.close()


async def test_a_start_cut_short_by_a_held_prune_says_on_the_page_what_it_waits_for(harness: Harness) -> None:
    """walk 14b: a re-issue retrying when its job left the specs is cut short; the prune is held (3 of 4), so
    nothing retries it, and its row read `pending`, no error, next attempt "—". It says what it waits for."""
    await start_with_two_files(harness)
    assert harness.daemon is not None
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["StartSnapshot"]))
    for key in BIG:
        record = harness.record(key)
        harness.sim.stop_task(
            "volcengine", record.vendor_task_id or "", room_id=record.target, reason="UnknownStopReason"
        )
    harness.daemon.sync(BIG)
    await harness.advance(2)  # the re-issues are retrying
    (harness.specs / "big.yaml").unlink()
    assert harness.daemon.reload()
    await harness.advance(120)
    async with await client(harness) as http:
        status = (await http.get("/api/v1/status")).json()
        page = (await http.get("/")).text
    assert status["replica"]["prune_held"] == BIG
    tasks = {t["key"]: t for job in status["jobs"] for g in job["groups"] for t in g["tasks"]}
    assert all(tasks[k]["prune_held"] for k in BIG) and not tasks[LOBBY]["prune_held"]
    # As walk 14b saw them: pending, no error, no next attempt (cut short, nothing retries them).
    assert all(
        (tasks[k]["status"], tasks[k]["last_error"], tasks[k]["next_attempt"]) == ("pending", None, None) for k in BIG
    )
    assert "none: removed from the specs, its stop waits for a human (the prune above)" in page
    # What the box says releases them does: the operator confirms, and they are removed, not started.
    await harness.stop()
    harness.sim.faults.set(FaultConfig())
    await harness.start(max_prune=100)
    await harness.advance(PRUNE_GRACE + 1)
    assert all(harness.record(k).status is TaskStatus.REMOVED for k in BIG), [harness.record(k) for k in BIG]
    assert harness.record(LOBBY).status is TaskStatus.RUNNING


async def test_a_removed_zego_start_never_confirmed_is_weighed_as_a_stop_and_found_by_its_prune(
    harness: Harness,
) -> None:
    """walk 25f-2: a ZEGO recording whose every start answer was lost (`failed`, no vendor id) runs; its job
    removed, the prune left it recording, unknown, to its idle timeout or maximum duration, and --max-prune did not
    count it among the running tasks. Now it is weighed as a stop, and the prune finds it by its ClientTaskId."""
    rec = "RecordingJob/rec/class-1"
    harness.sim.publish("volcengine", "lobby", user_id="u")
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    (harness.specs / "rec.yaml").write_text(recording_job("rec", ["class-1"]))
    harness.sim.faults.set(FaultConfig(drop_rate=1.0, phase="after", apis=["StartRecord"]))
    await harness.start(max_prune=0)
    await harness.advance(5)
    assert harness.daemon is not None
    assert harness.record(rec).vendor_task_id is None and harness.record(rec).client_task_id
    [running] = harness.running_sim_tasks("zego")
    (harness.specs / "rec.yaml").unlink()
    with capture_logs() as logs:
        assert harness.daemon.reload()
        await harness.advance(PRUNE_GRACE + 1)
    (blocked,) = [e for e in logs if e["event"].startswith("prune blocked")]
    assert (blocked["running"], blocked["of_running"]) == (1, 2), blocked  # weighed as the stop it is
    await harness.stop()
    harness.sim.faults.set(FaultConfig())
    await harness.start(max_prune=100)
    await harness.advance(PRUNE_GRACE + 1)
    tomb = harness.record(rec)
    assert tomb.status is TaskStatus.REMOVED and tomb.vendor_task_id == running.task_id, tomb
    assert harness.running_sim_tasks("zego") == [] and len(harness.sim.tasks("zego")) == 1


@pytest.mark.timeout(60)  # without the fix the passes never let the fake clock settle
async def test_tasks_held_by_max_prune_whose_provider_is_gone_too_are_not_reconciled_in_a_loop(
    harness: Harness,
) -> None:
    """Walk 33b-1: a held task is observed at its period (32d-1); its Provider removed with it, nothing observes
    it, its next look stayed where the last one put it, past, and each pass queued the key again at once."""
    for room in ["r0", "r1", "r2"]:
        harness.sim.publish("volcengine", room, user_id="u")
    harness.sim.publish("zego", "class-1", stream_id="teacher")
    write_specs(harness.specs, recording_job("rec", ["class-1"]))
    (harness.specs / "big.yaml").write_text(snapshot_job("big", ["r0", "r1", "r2"]))
    daemon = await harness.start()
    await harness.advance(1)
    providers = (harness.specs / "providers.yaml").read_text()
    (harness.specs / "providers.yaml").write_text(providers.split("---\n", 1)[1])  # Provider volc
    (harness.specs / "big.yaml").unlink()  # 3 of the 4 tasks: held
    assert daemon.reload()
    passes = daemon.metrics.registry.get_sample_value
    before = passes("capctl_reconcile_duration_seconds_count") or 0
    await harness.advance(120)  # a few resyncs, past each held task's next look
    assert (passes("capctl_reconcile_duration_seconds_count") or 0) - before < 50
    assert harness.calls("StopSnapshot") == 0
    assert all(harness.record(k).status is TaskStatus.RUNNING for k in BIG)
    assert 'capctl_prune_blocked{reason="max-prune"} 3.0' in await metrics(harness)
    (harness.specs / "providers.yaml").write_text(providers)  # the Provider is back: observed again
    assert daemon.reload()
    r0 = harness.record(BIG[0])
    harness.sim.stop_task("volcengine", r0.vendor_task_id or "", room_id=r0.target, reason="UnknownStopReason")
    await harness.advance(120)
    assert harness.record(BIG[0]).status is TaskStatus.STOPPED and harness.calls("StopSnapshot") == 0
