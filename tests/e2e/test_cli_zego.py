"""Issue 5 end to end: ZEGO cloud recording (both API generations), jpg snapshots, MediaThumbnails, crash safety."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler import transitions
from reconciler.execute import GIVE_UP_AFTER
from reconciler.secrets import keyed_hash
from reconciler.spec import load_spec_set
from reconciler.spec.checks import ZEGO_LEGACY_STORAGE
from reconciler.spec.expand import content_hash
from reconciler.state import open_state
from tests.e2e.conftest import Workdir
from tests.specdocs import recording_job, thumbnail_job

REC = "RecordingJob/rec/class-1"
TENCENT_VOD = """\
apiVersion: capctl/v1
kind: Storage
metadata: {name: tv}
spec: {type: tencent-vod, region: ap-shanghai, accessKey: {env: S3_AK}, secretKey: {env: S3_SK}}
---
"""
REPO = Path(__file__).resolve().parents[2]


def zego_running(work: Workdir, api: str | None = None) -> list[dict[str, Any]]:
    return [t for t in work.sim.tasks("zego", state="running") if api is None or t["api"] == api]


def state(work: Workdir) -> dict[str, dict[str, Any]]:
    return {t["key"]: t for t in json.loads(work.capctl("state", "list", "-o", "json").stdout)["tasks"]}


def test_recording_current_api_start_noop_and_idle_reissue(work: Workdir) -> None:
    work.write("jobs.yaml", recording_job("rec", ["class-1"], idle="30s"))
    work.apply()
    [task] = zego_running(work, "current")
    assert task["clientTaskId"] == state(work)[REC]["client_task_id"]
    assert task["maxIdleTime"] == 30
    [start] = work.sim.requests("StartRecord")
    body = start["body"]
    assert body["RecordInputParams"]["RecordMode"] == 1 and body["RecordOutputParams"]["OutputFolder"] == "record/"
    assert body["StorageParams"]["Vendor"] == 1
    assert work.capctl("plan", "--detailed-exitcode").returncode == 0
    work.sim.advance(31)  # empty room: idles out (Status 4; quit_reason 3 is in the callback only)
    plan = work.capctl("plan").stdout
    # DescribeRecordStatus gives the status, not the quit reason (vendor-apis.md): the plan says what it read.
    assert "↻ RecordingJob/rec/class-1" in plan and "vendor stopped it: ended (ZEGO status 4) at" in plan
    work.apply()
    [again] = zego_running(work)
    assert again["taskId"] != task["taskId"] and again["clientTaskId"] != task["clientTaskId"]


def test_a_lost_state_finds_the_first_run_still_recording(work: Workdir) -> None:
    # The ClientTaskId once came from the state's keyed spec hash: a new state (a new random key) gave the
    # first start another id, and ZEGO started a second recording beside the one still recording.
    work.write("jobs.yaml", recording_job("rec", ["class-1"], idle="300s"))
    work.apply()
    [task] = zego_running(work)
    for lost in work.state.parent.glob(work.state.name + "*"):
        lost.unlink()
    work.apply()
    assert [t["taskId"] for t in zego_running(work)] == [task["taskId"]]
    assert state(work)[REC]["vendor_task_id"] == task["taskId"]


def test_an_idle_out_reads_the_same_in_plan_and_state_list(work: Workdir) -> None:
    work.write("jobs.yaml", recording_job("rec", ["class-1"], idle="30s", restart="Never"))
    work.apply()
    work.sim.advance(31)  # empty room: idles out (Status 4, read without its quit reason)
    reason = "ended (ZEGO status 4)"
    [change] = json.loads(work.capctl("plan", "--format", "json").stdout)["changes"]
    assert change["action"] == "no-op" and change["reason"].startswith(f"vendor stopped it: {reason} at ")
    work.write("more.yaml", recording_job("more", ["class-2"]))  # a change, so apply records what it observed
    work.apply()
    assert state(work)[REC]["stop_reason"] == reason
    [row] = [line for line in work.capctl("state", "list").stdout.splitlines() if line.startswith(REC)]
    assert row.endswith(f"   {reason}")  # REASON, the last column


def test_zego_snapshot_job_records_jpg_at_its_interval(work: Workdir) -> None:
    work.write(
        "jobs.yaml",
        """
    apiVersion: capctl/v1
    kind: SnapshotJob
    metadata: {name: shots}
    spec: {provider: zego, rooms: [class-1], streams: [{stream: teacher}], interval: 5s, storage: s3, idleTimeout: 60s}
    """,
    )
    work.sim.publish("zego", "class-1", streamId="teacher", userId="t")
    work.apply()
    [start] = work.sim.requests("StartRecord")
    assert start["body"]["RecordOutputParams"]["OutputFileFormat"] == "jpg"
    assert start["body"]["RecordOutputParams"]["SnapshotInterval"] == 5
    work.sim.advance(20)
    [task] = zego_running(work)
    assert task["images"] == 4


def test_max_duration_rollover_is_planned_as_such(work: Workdir) -> None:
    work.write("jobs.yaml", recording_job("rec", ["class-1"], idle="30s", max_duration="300s"))
    work.sim.publish("zego", "class-1", streamId="teacher", userId="t")
    work.apply()
    work.sim.advance(301)
    plan = work.capctl("plan").stdout
    assert "vendor stopped it (rollover): max duration (ZEGO" in plan
    work.apply()
    assert len(zego_running(work)) == 1


def test_legacy_api_with_access_token_query_and_reissue(work: Workdir) -> None:
    work.write("jobs.yaml", recording_job("rec", ["class-1"], provider="zego-legacy", idle="30s"))
    work.apply()
    [task] = zego_running(work, "legacy")
    assert len(work.sim.requests("access_token")) == 1
    [start] = work.sim.requests("start")
    assert start["body"]["record_input_params"]["max_idle_time"] == 30
    assert start["body"]["access_token"] != "" and "room_id" in start["body"]
    assert work.capctl("plan", "--detailed-exitcode").returncode == 0
    assert work.sim.requests("query")
    work.sim.advance(31)
    assert "ended (ZEGO status 4)" in work.capctl("plan").stdout
    work.apply()
    [again] = zego_running(work, "legacy")
    assert again["taskId"] != task["taskId"]


def test_a_provider_switched_to_the_legacy_api_in_place_says_how_to_move_its_recordings(work: Workdir) -> None:
    """Its recordings were queried with DescribeRecordStatus at the legacy endpoint (HTTP 404, retried, blamed
    on the endpoint): every plan incomplete, the job stuck on the current API for good."""
    work.write("jobs.yaml", recording_job("rec", ["class-1"]))
    work.apply()
    current = (work.specs / "providers.yaml").read_text()
    switched = current.replace(f"cloudrecordEndpoint: {work.sim.base}/zego/cloudrecord", "")
    switched = switched.replace(
        "  rtcEndpoint:",
        f"  cloudrecordApi: legacy\n  cloudrecordEndpoint: {work.sim.base}/zego/legacy\n  rtcEndpoint:",
        1,
    )
    assert switched.count("cloudrecordApi: legacy") == 2
    work.write("providers.yaml", switched)
    error = " ".join(work.capctl("plan", expect=1).stderr.split())
    assert "provider 'zego' now declares cloudrecordApi legacy, but 1 recording(s) it started on the current" in error
    assert "declare the other API as a Provider of its own beside it" in error
    assert not work.sim.requests("DescribeRecordStatus")  # not sent with the wrong API to the legacy endpoint
    assert len(zego_running(work, "current")) == 1


@pytest.mark.parametrize("point", ["start.before-call", "start.after-call", "start.after-commit"])
def test_kill_at_every_step_of_a_start_never_records_twice(work: Workdir, point: str) -> None:
    work.write("jobs.yaml", recording_job("rec", ["class-1"]))
    died = work.capctl("apply", "--auto-approve", env={"CAPCTL_FAILPOINTS": point}, expect=137)
    assert died.returncode == 137
    record = state(work)[REC]
    assert record["client_task_id"]  # the intent was committed before the call
    assert (record["status"] == "running") is (point == "start.after-commit")
    work.apply()
    assert len(zego_running(work)) == 1
    assert len(work.sim.tasks("zego")) == 1  # one recording ever, whatever the crash point
    final = state(work)[REC]
    assert final["status"] == "running" and final["client_task_id"] == record["client_task_id"]
    assert work.capctl("plan", "--detailed-exitcode").returncode == 0


def test_lost_answer_is_retried_with_the_same_client_task_id(work: Workdir) -> None:
    work.write("jobs.yaml", recording_job("rec", ["class-1"]))
    work.sim.faults(dropRate=1.0, phase="after", apis=["StartRecord"])
    work.apply(expect=1)  # every answer lost, but the vendor started it
    work.sim.http.delete("/faults")
    work.apply()
    assert len(work.sim.tasks("zego")) == 1 and len(zego_running(work)) == 1
    assert len({r["body"]["RecordInputParams"]["ClientTaskId"] for r in work.sim.requests("StartRecord")}) == 1


def test_thumbnails_submitted_once_and_again_when_changed(work: Workdir) -> None:
    work.write("jobs.yaml", thumbnail_job())
    work.sim.faults(throttleNext=1, apis=["MediaThumbnails"])  # code 6: retried within the budget
    work.apply()
    requests = [r for r in work.sim.requests("MediaThumbnails") if r["code"] == "0"]
    assert len(requests) == 2
    tencent = next(r for r in requests if r["query"]["Vendor"] == "Tencent")
    assert tencent["query"]["ExtTimeOffsetSet[]"] == ["1", "2"] and tencent["query"]["Definition"] == "10"
    work.apply()
    assert len(work.sim.requests("MediaThumbnails")) == 3  # unchanged: nothing submitted again
    work.write("jobs.yaml", thumbnail_job(huawei_interval="4s"))
    plan = work.capctl("plan").stdout
    assert "file entry changed: it is submitted again" in plan and "Plan: 0 to create, 0 to update in place, 1" in plan
    work.apply()
    last = work.sim.requests("MediaThumbnails")[-1]
    assert last["query"]["Vendor"] == "Huawei" and last["query"]["Interval"] == "4"
    (work.specs / "jobs.yaml").unlink()
    assert "removed from specs" in work.apply().stdout
    assert len(work.sim.requests("MediaThumbnails")) == 4  # removing an entry does nothing remote
    assert {t["status"] for t in state(work).values()} == {"removed"}
    work.write("jobs.yaml", thumbnail_job(huawei_interval="4s"))  # restored as it was: its content hash is known
    assert "submitted before with the same content, not again" in work.capctl("plan", "--format", "json").stdout
    work.apply()
    assert len(work.sim.requests("MediaThumbnails")) == 4
    assert {t["status"] for t in state(work).values()} == {"done"}


def test_a_renamed_thumbnail_job_says_its_files_are_submitted_again(work: Workdir) -> None:
    """Walk 58b: a ThumbnailJob renamed is a new task key per file, submitted again (no idempotency key: ZEGO
    makes the thumbnails twice). The plan said only "new task: not in state"; it names the submission it repeats."""
    work.write("jobs.yaml", thumbnail_job("thumbs", tencent=False))
    work.apply()
    [(old, record)] = state(work).items()
    work.write("jobs.yaml", thumbnail_job("thumbs-v2", tencent=False) + "---\n" + thumbnail_job("other"))
    changes = {c["key"]: c for c in json.loads(work.capctl("plan", "--format", "json").stdout)["changes"]}
    repeated = changes["ThumbnailJob/thumbs-v2//record/a.mp4"]["reason"]
    assert repeated == (
        f"new task: not in state; the same file and settings were submitted as {old} (ZEGO task"
        f" {record['vendor_task_id']}): submitted again under this key, so ZEGO makes its thumbnails twice"
        " (a job keeps its submissions under its own name only)"
    )
    assert changes["ThumbnailJob/other//record/a.mp4"]["reason"].startswith(repeated[:40])  # the same file again
    assert changes["ThumbnailJob/other/1397757897438985100"]["reason"] == "new task: not in state"  # a new file
    work.write("jobs.yaml", thumbnail_job("thumbs-v2", tencent=False, huawei_interval="5s"))  # other settings
    assert "submitted as" not in work.capctl("plan").stdout


def test_a_renamed_thumbnail_job_whose_submission_failed_still_says_it_repeats_one(work: Workdir) -> None:
    """Walk 59e: once the renamed job's submission failed (its file not uploaded yet), the retry's plan said only
    "previous submission failed: …", and the next apply made ZEGO's thumbnails twice all the same."""
    work.write("jobs.yaml", thumbnail_job("thumbs", tencent=False))
    work.apply()
    [(old, record)] = state(work).items()
    work.write("jobs.yaml", thumbnail_job("thumbs-v2", tencent=False))
    work.sim.post("/missing-files", {"fileIds": ["/record/a.mp4"]})
    work.apply(expect=1)
    assert state(work)["ThumbnailJob/thumbs-v2//record/a.mp4"]["status"] == "failed"
    [change] = json.loads(work.capctl("plan", "--format", "json").stdout)["changes"]
    assert change["reason"].startswith("previous submission failed: ")
    repeated = f"; the same file and settings were submitted as {old} (ZEGO task {record['vendor_task_id']}, removed"
    assert repeated in change["reason"]


def test_thumbnail_vendor_errors_fail_that_entry_only(work: Workdir) -> None:
    work.write("jobs.yaml", thumbnail_job())
    work.sim.post("/missing-files", {"fileIds": ["/record/a.mp4"]})
    out = work.apply(expect=1).stdout
    assert "1000" in out and "1 created" in out and "1 failed" in out


def test_a_refused_thumbnail_edit_reverted_is_not_submitted_again_by_apply(work: Workdir) -> None:
    """20d-6 through apply: the refused edit's record kept the submission ZEGO took, so the revert calls nothing."""
    work.write("jobs.yaml", thumbnail_job(tencent=False))
    work.apply()
    work.sim.post("/missing-files", {"fileIds": ["/record/a.mp4"]})
    work.write("jobs.yaml", thumbnail_job(tencent=False, huawei_interval="5s"))
    assert "1000" in work.apply(expect=1).stdout
    [key] = state(work)
    kept = json.loads(work.capctl("state", "show", key).stdout)["accepted"]  # times in RFC 3339, as the record's
    assert kept["started_at"].endswith("Z") and kept["vendor_task_id"], kept
    work.write("jobs.yaml", thumbnail_job(tencent=False))
    assert "edited back to the entry ZEGO took before" in work.capctl("plan").stdout
    work.apply()
    assert len(work.sim.requests("MediaThumbnails")) == 2  # the first submission and the refused edit
    [record] = state(work).values()
    assert record["status"] == "done" and record["request"]["Interval"] == 2 and record["vendor_task_id"]


def test_quickstart_specs_apply_cleanly(work: Workdir, tmp_path: Path) -> None:
    quick = tmp_path / "quick"
    shutil.copytree(REPO / "specs", quick)
    host = work.sim.base.removeprefix("http://")
    for path in quick.glob("*.yaml"):
        path.write_text(path.read_text().replace("127.0.0.1:8750", host))
    assert "→ 5 tasks" in work.capctl("validate", str(quick)).stdout
    out = work.apply(str(quick)).stdout
    assert "Apply complete: 5 created" in out and "0 failed" in out
    assert work.capctl("plan", "--detailed-exitcode", str(quick)).returncode == 0


def test_lost_answer_to_a_reissue_is_retried_with_the_same_client_task_id(work: Workdir) -> None:
    work.write("jobs.yaml", recording_job("rec", ["class-1"], idle="30s"))
    work.apply()
    work.sim.advance(31)  # idles out: the next apply re-issues it
    work.sim.faults(dropRate=1.0, phase="after", apis=["StartRecord"])
    work.apply(expect=1)  # the vendor started the re-issue, but every answer was lost
    work.sim.http.delete("/faults")
    work.apply()
    assert len(zego_running(work)) == 1
    assert len(work.sim.tasks("zego")) == 2  # the first run and exactly one re-issue
    reissues = [r["body"]["RecordInputParams"]["ClientTaskId"] for r in work.sim.requests("StartRecord")[1:]]
    assert len(set(reissues)) == 1


def test_removing_a_recording_whose_start_was_never_confirmed_finds_and_stops_it(work: Workdir) -> None:
    """ZEGO knows an unconfirmed start only through its start request (ClientTaskId): the delete sends it again
    (the record's stored request), ZEGO answers with the recording, which is stopped. It ran, unknown, to its
    idle timeout or maximum duration, and the plan told the user to restore the job, apply, remove it (25f-2)."""
    work.write("jobs.yaml", recording_job("rec", ["class-1"]))
    work.capctl("apply", "--auto-approve", env={"CAPCTL_FAILPOINTS": "start.after-call"}, expect=137)
    [running] = zego_running(work)
    (work.specs / "jobs.yaml").unlink()
    plan = " ".join(work.capctl("plan").stdout.split())
    assert "its last start was never confirmed: found by its recorded ClientTaskId" in plan, plan
    assert "starts one, stopped at once" in plan and "restore the job" not in plan
    applied = " ".join(work.apply().stdout.split())
    assert "(delete): its last start was never confirmed: found by its recorded ClientTaskId" in applied, applied
    assert zego_running(work) == [] and len(work.sim.tasks("zego")) == 1  # found, not a second one started
    tombstone = state(work)[REC]
    assert tombstone["status"] == "removed" and tombstone["vendor_task_id"] == running["taskId"]
    assert work.capctl("plan", "--detailed-exitcode").returncode == 0


def test_removing_a_recording_whose_start_never_reached_zego_starts_and_stops_one(work: Workdir) -> None:
    """A start cut short before its call looks the same in the state (pending, a ClientTaskId): the delete's
    StartRecord finds nothing under that id, so ZEGO starts a recording, which the delete stops at once: the
    cost the plan names. A delete killed once that StartRecord is answered (the recording it began is in no
    record) finds that same recording at the next apply: one recording ever (walk 28a: the model test, which
    may kill there, reaches this path too rarely to count on)."""
    work.write("jobs.yaml", recording_job("rec", ["class-1"]))
    work.capctl("apply", "--auto-approve", env={"CAPCTL_FAILPOINTS": "start.before-call"}, expect=137)
    assert work.sim.tasks("zego") == []
    (work.specs / "jobs.yaml").unlink()
    work.capctl("apply", "--auto-approve", env={"CAPCTL_FAILPOINTS": "find.after-call"}, expect=137)
    [begun] = zego_running(work)
    assert state(work)[REC]["vendor_task_id"] is None and state(work)[REC]["status"] == "pending"
    assert "starts one, stopped at once" in " ".join(work.apply().stdout.split())
    [task] = work.sim.tasks("zego")
    assert task["taskId"] == begun["taskId"] and zego_running(work) == []
    assert state(work)[REC]["vendor_task_id"] == task["taskId"] and state(work)[REC]["status"] == "removed"


def test_a_delete_whose_find_zego_refuses_keeps_its_tombstone_and_says_the_recording_may_run(work: Workdir) -> None:
    """The find sends the record's stored request (secrets as fingerprints): a refusal of it, answered, would
    refuse every retry, so the delete is not held for ever: it is a tombstone, and says what may run, as before."""
    work.write("jobs.yaml", recording_job("rec", ["class-1"]))
    work.capctl("apply", "--auto-approve", env={"CAPCTL_FAILPOINTS": "start.after-call"}, expect=137)
    store = open_state(f"sqlite:///{work.state}")
    record = store.record(REC) or pytest.fail("no record")
    inputs = {k: v for k, v in record.request["RecordInputParams"].items() if k != "RecordMode"}
    store.put(record.evolve(request={**record.request, "RecordInputParams": inputs}))  # ZEGO refuses it now
    store.close()
    (work.specs / "jobs.yaml").unlink()
    applied = " ".join(work.apply().stdout.split())
    assert "the StartRecord that looks for it was refused" in applied and "300000004" in applied, applied
    assert "if it runs, it ends by itself" in applied and state(work)[REC]["status"] == "removed"
    assert len(zego_running(work)) == 1


def test_a_removed_recording_whose_start_was_never_confirmed_restored_changed_records_its_room_once(
    work: Workdir,
) -> None:
    """A tombstone that an earlier capctl left with its start never confirmed (its delete did not find it),
    restored with another spec: a start under a new ClientTaskId ran beside the unconfirmed one (two recordings
    of one key, one unknown): that one is found by its recorded ClientTaskId and stopped first (walk 25f)."""
    work.write("jobs.yaml", recording_job("rec", ["class-1"]))
    work.capctl("apply", "--auto-approve", env={"CAPCTL_FAILPOINTS": "start.after-call"}, expect=137)
    store = open_state(f"sqlite:///{work.state}")
    store.put(transitions.removed(store.record(REC) or pytest.fail("no record"), time.time()))
    store.close()
    work.write("jobs.yaml", recording_job("rec", ["class-1"], idle=60))
    plan = work.capctl("plan").stdout
    assert "restored to the specs" in plan and "found by its recorded ClientTaskId" in plan, plan
    work.apply()
    running = zego_running(work)
    assert [t["maxIdleTime"] for t in running] == [60], running


def test_removing_a_recording_whose_start_failed_with_its_answers_lost_says_it_may_run(work: Workdir) -> None:
    """Every try of StartRecord takes effect but its answer is lost: the record is `failed` without a vendor id,
    and the recording runs. Without the job, the plan must not claim there is nothing at the vendor."""
    work.write("jobs.yaml", recording_job("rec", ["class-1"]))
    work.sim.faults(dropRate=1.0, phase="after", apis=["StartRecord"])
    work.apply(expect=1)
    work.sim.http.delete("/faults")
    (work.specs / "jobs.yaml").unlink()
    plan = work.capctl("plan").stdout
    assert "its last start was never confirmed" in plan and "nothing to stop" not in plan


def test_removing_a_legacy_recording_whose_start_was_never_confirmed_does_not_advise_a_second_start(
    work: Workdir,
) -> None:
    """The legacy API has no idempotency key: restoring the job would start a second recording, so the plan
    only says that the first one, if it runs, ends by itself."""
    work.write("jobs.yaml", recording_job("rec", ["class-1"], provider="zego-legacy"))
    work.capctl("apply", "--auto-approve", env={"CAPCTL_FAILPOINTS": "start.after-call"}, expect=137)
    (work.specs / "jobs.yaml").unlink()
    plan = work.capctl("plan").stdout
    ends = "the legacy API cannot find that recording; if it runs, it ends by itself at its idle timeout or its maximum"
    assert ends in " ".join(plan.split())
    assert "restore the job" not in plan


def test_a_legacy_start_whose_answer_is_lost_is_not_tried_again(work: Workdir) -> None:
    """The legacy /start has no idempotency key: retrying a start the vendor took but whose answer was lost
    made a second (third, ...) recording of the room that capctl never knew of."""
    work.write("jobs.yaml", recording_job("rec", ["class-1"], provider="zego-legacy"))
    work.sim.faults(dropRate=1.0, phase="after", apis=["start"])
    out = work.apply(expect=1).stdout
    assert "not retried at once: the vendor may have started a recording" in out
    assert len(work.sim.requests("start")) == 1 and len(zego_running(work, "legacy")) == 1


def test_legacy_starts_whose_answers_are_lost_give_the_provider_up_as_no_answer_does(work: Workdir) -> None:
    """A lost answer is no answer: after GIVE_UP_AFTER in a row, the provider's other legacy starts are not
    attempted (each could leave one more recording nobody knows of). Made terminal so as not to be retried,
    they were taken for the vendor's answer, and every start of the apply was tried."""
    rooms = [f"class-{i}" for i in range(GIVE_UP_AFTER + 3)]
    work.write("jobs.yaml", recording_job("rec", rooms, provider="zego-legacy"))
    work.sim.faults(dropRate=1.0, phase="after", apis=["start"])
    out = work.apply("--parallelism", "1", expect=1).stdout
    assert len(work.sim.requests("start")) == GIVE_UP_AFTER
    assert out.count("not attempted: zego-legacy (zego) did not answer: ") == 3


ZEGO_STORAGES = {  # every storage type a ZEGO provider writes to, with what its type requires
    "s3": "region: us-east-1, bucket: b",  # seed 003: region required for 1~4 and 7 only
    "oss": "region: oss-cn-shanghai, bucket: b",
    "cos": "region: ap-shanghai, bucket: b",
    "kodo": "region: z0, bucket: b",
    "obs": "region: cn-north-4, bucket: b",
    "gcs": "bucket: b",
    "eos": "bucket: b, region: eos-shanghai-1",
    "s3-compatible": "bucket: b, region: us-east-1, endpoint: https://minio.example",
    "aliyun-vod": "region: cn-shanghai, title: t, storageLocation: x.oss-cn-shanghai.aliyuncs.com",
    "tencent-vod": "region: ap-shanghai, subAppId: 7",
}


def test_every_zego_storage_type_records(work: Workdir) -> None:
    """What validate accepts for a storage type on either API, the vendor (the simulator, seed 003's fields)
    accepts too."""
    keys = "accessKey: {env: S3_AK, default: ak}, secretKey: {env: S3_SK, default: sk}"
    docs = []
    for kind, fields in ZEGO_STORAGES.items():
        docs.append(f"apiVersion: capctl/v1\nkind: Storage\nmetadata: {{name: st-{kind}}}\n")
        docs[-1] += f"spec: {{type: {kind}, {fields}, {keys}}}\n"
        job = recording_job(f"rec-{kind}", [f"room-{kind}"]).replace("storage: s3", f"storage: st-{kind}")
        docs.append(job)
        if kind in ZEGO_LEGACY_STORAGE:
            docs.append(job.replace("name: rec-", "name: legacy-").replace("provider: zego", "provider: zego-legacy"))
    work.write("jobs.yaml", "---\n".join(docs))
    assert "0 failed" in work.apply().stdout
    current = {
        r["body"]["StorageParams"]["Vendor"]: r["body"]["StorageParams"] for r in work.sim.requests("StartRecord")
    }
    assert sorted(current) == list(range(1, 11))
    # ZEGO's StartRecord page names the current API's VOD objects and keys otherwise than seed 003's legacy body.
    assert sorted(current[6]["TencentCloudVodParams"]) == ["Region", "SecretId", "SecretKey", "SubAppId"]
    assert current[6]["TencentCloudVodParams"]["SubAppId"] == 7
    vod = ["AccessKeyId", "AccessKeySecret", "Region", "StorageLocation", "Title"]
    assert sorted(current[5]["AlibabaCloudVodParams"]) == vod
    legacy = {r["body"]["storage_params"]["storage_provider"] for r in work.sim.requests("start")}
    assert sorted(legacy) == list(range(1, 8))


def _as_before_37d(request: dict[str, Any]) -> dict[str, Any]:
    """A current-API tencent-vod request as capctl sent it before 37d: seed 003's names in PascalCase."""
    vod = request["StorageParams"]["TencentCloudVodParams"]
    old = {"AccessKeyId": vod["SecretId"], "AccessKeySecret": vod["SecretKey"], "Region": vod["Region"]}
    storage = {k: v for k, v in request["StorageParams"].items() if k != "TencentCloudVodParams"}
    return {**request, "StorageParams": {**storage, "TencentyunVodParams": old}}


def test_a_recording_of_a_state_from_before_the_vod_names_is_started_anew_with_them(work: Workdir) -> None:
    """Before 37d, capctl sent the current API `TencentyunVodParams {AccessKeyId, …}`; ZEGO requires
    `TencentCloudVodParams {SecretId, …}` for Vendor 6, so such a start was refused (or, if ZEGO ran it, could not
    upload). A record of that request is therefore not read as unchanged (a rename is a changed request): the plan
    names the renamed fields and the task runs with ZEGO's names, once (docs/providers-zego.md)."""
    work.write("tv.yaml", TENCENT_VOD + recording_job("rec", ["class-1"]).replace("storage: s3", "storage: tv"))
    work.apply()
    store = open_state(f"sqlite:///{work.state}")
    key = store.fingerprint_key()
    [task] = load_spec_set([work.specs], env=work.env, fingerprint_key=key).tasks.values()
    record = store.record(REC) or pytest.fail("no record")
    before = keyed_hash(key or b"", content_hash(task.provider, task.family, _as_before_37d(task.request)))
    store.put(record.evolve(request=_as_before_37d(record.request), spec_hash=before, fixed_hash=before))
    store.close()
    plan = " ".join(work.capctl("plan").stdout.split())
    assert "RecordingJob/rec/class-1 replace spec changed" in plan, plan
    assert "StorageParams.TencentyunVodParams.Region: ap-shanghai → (unset)" in plan
    assert "StorageParams.TencentCloudVodParams.Region: (unset) → ap-shanghai" in plan
    work.apply()
    [*_, last] = work.sim.requests("StartRecord")
    assert sorted(last["body"]["StorageParams"]["TencentCloudVodParams"]) == ["Region", "SecretId", "SecretKey"]
    assert work.capctl("plan", "--detailed-exitcode").returncode == 0


def test_a_fake_clock_simulator_does_not_throttle_a_client_paced_at_the_limit(work: Workdir) -> None:
    """`capctl sim --fake-clock` counted DescribeRecordStatus (10/s) per second of its frozen clock: after ten
    status queries without an `advance`, every further one was throttled, and a plan retried each for minutes
    (found by tests/e2e/test_model_plan_apply.py). A vendor counts per real second: capctl's pacing suffices."""
    work.write("jobs.yaml", recording_job("rec", [f"class-{i}" for i in range(8)]))
    work.apply()
    for _ in range(2):  # 16 status queries in well under two seconds of the frozen clock
        work.capctl("plan", "--detailed-exitcode")
    assert work.sim.get("/throttled")["notForced"] == 0
