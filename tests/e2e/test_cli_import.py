"""`capctl state import`: a team adopting capctl with captures its own scripts started, end to end.

The team's scripts are signed requests straight at the simulator (not through capctl's providers), as a
team's own tooling would make them; `capctl state import` must adopt each without a second start or a stop.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from reconciler import cli
from reconciler.model import TaskStatus
from reconciler.providers.volc_signing import sign_request
from reconciler.providers.zego_signing import access_token_request, signature_params
from reconciler.state import open_state
from tests.e2e.conftest import Sim, Workdir
from tests.specdocs import recording_job, snapshot_job, thumbnail_job
from tests.state.helpers import make_record

ZEGO_APP, ZEGO_SECRET = 1234567890, "0123456789abcdef0123456789abcdef"
STORAGE_S3 = {"region": "us-east-1", "access_key_id": "AKS3", "access_key_secret": "s3-secret"}


def _clock(sim: Sim) -> float:
    """The simulator's time (a fake clock): signatures are checked against it."""
    return float(sim.get("/clock")["now"])


def their_volc_start(sim: Sim, room: str, task_id: str) -> None:
    url = f"{sim.base}/volc/?Action=StartSnapshot&Version=2023-11-01"
    body = json.dumps(
        {
            "AppId": "capctl-sim-volc",
            "RoomId": room,
            "TaskId": task_id,
            "ImageConfig": {"Interval": 10},
            "StorageConfig": {"Type": 0, "TosConfig": {"AccountId": "2100000000", "Region": 0, "Bucket": "theirs"}},
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    now = datetime.fromtimestamp(_clock(sim), UTC)
    headers |= sign_request(
        "POST", url, headers, body, access_key="AKCAPCTLSIM0000000001", secret_key="capctl-sim-volc-secret",
        region="cn-north-1", service="rtc", now=now,
    )  # fmt: skip
    answer = httpx.post(url, content=body, headers=headers)
    assert answer.json()["Result"] == "ok", answer.text


def their_zego_start(sim: Sim, room: str) -> str:
    params = signature_params(ZEGO_APP, ZEGO_SECRET, _clock(sim))
    body = {
        "RoomId": room,
        "RecordInputParams": {"RecordMode": 1, "StreamType": 3, "MaxIdleTime": 60},
        "RecordOutputParams": {"OutputFileFormat": "mp4"},
        "StorageParams": {
            "Vendor": 1,
            "Region": "us-east-1",
            "Bucket": "theirs",
            "AccessKeyId": "A",
            "AccessKeySecret": "S",
        },
    }
    answer = httpx.post(f"{sim.base}/zego/cloudrecord/", params={"Action": "StartRecord", **params}, json=body).json()
    return str(answer["Data"]["TaskId"])


def their_legacy_start(sim: Sim, room: str) -> str:
    token = httpx.post(
        f"{sim.base}/zego/legacy/access_token", json=access_token_request(ZEGO_APP, ZEGO_SECRET, _clock(sim), seq=1)
    ).json()["data"]["access_token"]
    body: dict[str, Any] = {
        "app_id": ZEGO_APP,
        "access_token": token,
        "room_id": room,
        "record_input_params": {"record_mode": 1, "stream_type": 3, "max_idle_time": 60},
        "record_output_params": {"output_file_format": "mp4"},
        "storage_params": {"storage_provider": 1, "bucket_name": "theirs", **STORAGE_S3},
    }
    return str(httpx.post(f"{sim.base}/zego/legacy/start", json=body).json()["task_id"])


def their_thumbnails(sim: Sim, file_id: str) -> str:
    params = signature_params(ZEGO_APP, ZEGO_SECRET, _clock(sim))
    query: dict[str, str | list[str]] = {"Action": "MediaThumbnails", "Vendor": "Tencent", "FileId": file_id}
    query |= {"Type": "SnapshotByTimeOffset", "Definition": "10", "ExtTimeOffsetSet[]": ["1", "2"], **params}
    return str(httpx.get(f"{sim.base}/zego/rtc/", params=query).json()["Data"]["Tencent"]["TaskId"])


def starts(sim: Sim) -> int:
    return sum(len(sim.requests(api)) for api in ("StartSnapshot", "StartRecord", "start", "MediaThumbnails"))


def test_tasks_started_outside_capctl_are_imported_and_kept_without_a_second_start(work: Workdir) -> None:
    """Before `state import`, apply stopped and restarted a running Volcengine TaskId (a capture gap) and
    started second ZEGO recordings and thumbnails: capctl had no way to adopt what a team already ran."""
    sim = work.sim
    for room in ("lobby", "hall"):
        sim.publish("volcengine", room, userId="u")
    for room in ("class-1", "class-2"):
        sim.publish("zego", room, userId="u", streamId=f"s-{room}")
    their_volc_start(sim, "lobby", "audit")  # the spec's own TaskId
    their_volc_start(sim, "hall", "their-hall")  # another TaskId
    ids = {
        "SnapshotJob/audit/lobby": "audit",
        "SnapshotJob/audit/hall": "their-hall",
        "RecordingJob/rec/class-1": their_zego_start(sim, "class-1"),
        "RecordingJob/leg/class-2": their_legacy_start(sim, "class-2"),
        "ThumbnailJob/thumbs/1397757897438985100": their_thumbnails(sim, "1397757897438985100"),
    }
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "hall"]))
    work.write(
        "rec.yaml",
        recording_job("rec", ["class-1"]) + "---\n" + recording_job("leg", ["class-2"], provider="zego-legacy"),
    )
    work.write("thumbs.yaml", thumbnail_job())
    before = starts(sim)

    # A refusal (a recording of another room) creates no state; a dry run checks at the vendor, writes nothing.
    other = ids["RecordingJob/leg/class-2"]
    refused = work.capctl("state", "import", "RecordingJob/rec/class-1", other, expect=1).stderr
    assert f"the vendor reports {other} in room class-2, not in RecordingJob/rec/class-1's room class-1" in refused
    assert not work.state.exists()
    elsewhere = work.capctl("state", "import", "SnapshotJob/audit/lobby", "their-hall", expect=1).stderr
    elsewhere = " ".join(elsewhere.split())
    assert "the vendor does not know the Volcengine snapshot task their-hall in room lobby" in elsewhere
    assert "a TaskId of another room is not found" in elsewhere  # not only the 72 h window (walk 36d-2)
    misspelt = work.capctl("state", "import", "SnapshotJob/audit/lobbby", "audit", expect=1).stderr
    assert "SnapshotJob/audit/lobbby: no such task in the specs (specs) (did you mean SnapshotJob/audit/lobby?)" in (
        " ".join(misspelt.split())
    )
    assert not work.state.exists()
    dry = work.capctl("state", "import", "SnapshotJob/audit/lobby", "audit", "--dry-run").stdout
    assert dry.startswith("Would import SnapshotJob/audit/lobby: the Volcengine snapshot task audit in room lobby")
    assert not work.state.exists()

    for n, (key, vendor_id) in enumerate(ids.items()):
        imported = work.capctl("state", "import", key, vendor_id)
        assert f"Imported {key} " in imported.stdout
        # The first made the state, and says where, as apply does (walk 20E-8: it said nothing); no other does.
        assert ("Started a new state at sqlite:///" in imported.stderr) == (n == 0), imported.stderr

    applied = work.apply().stdout  # only the Huawei file, which nobody submitted, is left to do
    assert "Plan: 1 to create, 0 to update in place, 0 to replace, 0 to re-issue, 0 to delete, 5 unchanged." in applied
    assert starts(sim) == before + 1 and not sim.requests("StopSnapshot") and not sim.requests("StopRecord")
    running = {(t["roomId"], t["taskId"]) for t in sim.tasks(state="running")}
    assert running == {
        ("lobby", "audit"),
        ("hall", "their-hall"),
        ("class-1", ids["RecordingJob/rec/class-1"]),
        ("class-2", ids["RecordingJob/leg/class-2"]),
    }
    with closing(open_state(f"sqlite:///{work.state}", create=False)) as store:
        records = store.load().records
    assert {k: records[k].vendor_task_id for k in ids} == ids
    assert all(records[k].client_task_id is None for k in ids)


def state_serial(work: Workdir) -> int:
    with closing(open_state(f"sqlite:///{work.state}", create=False)) as store:
        return store.serial()


def status_queries(sim: Sim) -> int:
    return sum(len(sim.requests(api)) for api in ("GetSnapshotTask", "DescribeRecordStatus", "query"))


def test_a_list_of_tasks_is_checked_whole_first_then_imported_all_or_nothing(work: Workdir) -> None:
    """Before `--from`, 40 rooms were 40 `state import` commands, each loading the specs and querying the vendor
    (walk 16d). A list is checked line by line before any vendor call, every problem said at once; then every
    task is queried, and one write records them all, or none when one cannot be imported."""
    sim = work.sim
    rooms = [f"room-{n}" for n in range(6)]
    for room in rooms:
        sim.publish("volcengine", room, userId="u")
        their_volc_start(sim, room, f"their-{room}")
    sim.publish("zego", "class-1", userId="u", streamId="s-class-1")
    rec = their_zego_start(sim, "class-1")
    thumb = their_thumbnails(sim, "1397757897438985100")
    work.write("jobs.yaml", snapshot_job("audit", [*rooms, "idle-room", "kept"]))
    work.write("rec.yaml", recording_job("rec", ["class-1", "class-2"]))
    work.write("thumbs.yaml", thumbnail_job())
    with closing(open_state(f"sqlite:///{work.state}")) as store:  # room-0 and kept are capctl's already
        store.fingerprint_key()  # made first, as every capctl command does before it writes a record
        serial = store.put_many(
            [
                make_record("SnapshotJob/audit/room-0", status=TaskStatus.RUNNING, vendor_task_id="v0"),
                make_record("SnapshotJob/audit/kept", status=TaskStatus.DORMANT, vendor_task_id="v9"),
            ]
        )
    queries = status_queries(sim)

    bad = work.root / "bad.txt"
    bad.write_text(
        "# rooms our scripts capture\n"
        "\n"
        "SnapshotJob/audit/room-1 their-room-1   # the first\n"
        "SnapshotJob/audit/room-2\n"
        "SnapshotJob/audit/rooom-3 their-room-3\n"
        "SnapshotJob/audit/room-4 bad!id\n"
        "SnapshotJob/audit/room-1 their-room-1\n"
        "SnapshotJob/audit/room-0 their-room-0\n"
        f"RecordingJob/rec/class-1 {rec}\n"
        f"RecordingJob/rec/class-2 {rec}\n"
        "SnapshotJob/audit/kept their-kept\n"
    )
    refused = work.capctl("state", "import", "--from", str(bad), expect=1).stderr
    said = " ".join(refused.split())
    for problem in (
        f"{bad}:4: expected KEY VENDOR_TASK_ID, found 1 field(s)",
        f"{bad}:5: SnapshotJob/audit/rooom-3: no such task in the specs (specs) (did you mean SnapshotJob/audit/room-3",
        f"{bad}:6: SnapshotJob/audit/room-4: vendor task id 'bad!id': a Volcengine TaskId is 1 to 128 of",
        f"{bad}:7: SnapshotJob/audit/room-1 is listed already on line 3",
        f"{bad}:8: SnapshotJob/audit/room-0: already in the state (running, vendor task v0)",
        f"{bad}:10: RecordingJob/rec/class-2: the ZEGO recording {rec} (current API) in room class-2 is listed "
        f"already, for RecordingJob/rec/class-1 ({bad}:9)",
        f"{bad}:11: SnapshotJob/audit/kept: already in the state (dormant, vendor task v9)",
        # The way out of those already tracked, once after the lines (each line repeated it: walk 17d).
        "Already in the state: `capctl state rm SnapshotJob/audit/room-0 SnapshotJob/audit/kept` first to replace "
        f"their records. Error: --from {bad}: 7 problem(s); nothing was queried at the vendor, nothing imported",
    ):
        assert problem in said, refused
    assert said.count("state rm") == 1, refused
    assert status_queries(sim) == queries
    assert state_serial(work) == serial

    good = "".join(f"SnapshotJob/audit/{room} their-{room}\n" for room in rooms[1:])
    good += f"RecordingJob/rec/class-1 {rec}\t# ZEGO\nThumbnailJob/thumbs/1397757897438985100 {thumb}\n"
    # One task the vendor does not know: nothing is written, and the report names its line and why.
    failing = work.root / "failing.txt"
    failing.write_text(good + "SnapshotJob/audit/idle-room their-idle-room\n")
    refused = " ".join(work.capctl("state", "import", "--from", str(failing), expect=1).stderr.split())
    assert (
        f"{failing}:8: SnapshotJob/audit/idle-room: the vendor does not know the Volcengine snapshot task "
        "their-idle-room in room idle-room" in refused
    )
    assert f"1 of the 8 task(s) in {failing} cannot be imported: nothing was imported" in refused
    assert status_queries(sim) == queries + 7  # every one but the thumbnail's, which has no status query
    assert state_serial(work) == serial

    dry = work.capctl("state", "import", "--from", "-", "--dry-run", stdin=good).stdout
    assert dry.count("Would import ") == 7 and "7 task(s) would be imported. Nothing was written (--dry-run)." in dry
    assert state_serial(work) == serial

    done = work.capctl("state", "import", "--from", "-", "specs", stdin=good).stdout
    assert f"Imported 7 task(s) (serial {serial + 1})." in done  # one write
    assert "Imported RecordingJob/rec/class-1: the ZEGO recording" in done
    with closing(open_state(f"sqlite:///{work.state}", create=False)) as store:
        records = store.load().records
    assert {k: r.vendor_task_id for k, r in records.items() if k.startswith("Snap")} == {
        f"SnapshotJob/audit/{room}": f"their-{room}" if room != "room-0" else "v0" for room in rooms
    } | {"SnapshotJob/audit/kept": "v9"}
    assert records["RecordingJob/rec/class-1"].vendor_task_id == rec and len(records) == 9


def test_a_running_daemon_refuses_an_import_before_any_vendor_call_a_dry_run_still_checks(work: Workdir) -> None:
    """The daemon's lock was met only at the write (walk 17d): a 300-line list spent minutes of vendor queries
    to be refused. Now the lock is tried first (and let go: the write takes it again); a dry run writes nothing
    and runs beside the daemon."""
    sim = work.sim
    sim.publish("volcengine", "lobby", userId="u")
    their_volc_start(sim, "lobby", "their-lobby")
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    (work.root / "list.txt").write_text("SnapshotJob/audit/lobby their-lobby\n")
    with closing(open_state(f"sqlite:///{work.state}")) as daemon:
        daemon.fingerprint_key()  # made first, as every capctl command does before it writes a record
        serial = daemon.serial()
        queries = status_queries(sim)
        with daemon.lock("capctl run on http://127.0.0.1:63901"):
            for args in (["SnapshotJob/audit/lobby", "their-lobby"], ["--from", "list.txt"]):
                refused = " ".join(work.capctl("state", "import", *args, expect=1).stderr.split())
                assert "the capctl daemon holds the state lock (pid " in refused, refused
                assert "To run `capctl state import`, stop the daemon first (SIGTERM), every replica" in refused
            assert status_queries(sim) == queries  # nothing queried
            dry = work.capctl("state", "import", "--from", "list.txt", "--dry-run").stdout
            assert "1 task(s) would be imported. Nothing was written (--dry-run)." in dry
            assert status_queries(sim) == queries + 1
        assert daemon.serial() == serial
    # No daemon: the lock tried first is let go, and the write takes it.
    assert (
        "Imported SnapshotJob/audit/lobby "
        in work.capctl("state", "import", "SnapshotJob/audit/lobby", "their-lobby").stdout
    )


def test_ctrl_c_while_a_list_is_checked_at_the_vendor_writes_nothing_and_says_so(work: Workdir) -> None:
    sim = work.sim
    for room in ("lobby", "hall"):
        sim.publish("volcengine", room, userId="u")
        their_volc_start(sim, room, f"their-{room}")
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "hall"]))
    (work.root / "list.txt").write_text("SnapshotJob/audit/lobby their-lobby\nSnapshotJob/audit/hall their-hall\n")
    sim.faults(latencyMs=1500, apis=["GetSnapshotTask"])  # the queries are in flight at the Ctrl-C
    proc = work.spawn("state", "import", "--from", "list.txt")
    deadline = time.monotonic() + 60
    while not sim.requests("GetSnapshotTask") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Error: interrupted before any change was made" in stderr and not stdout
    assert not work.state.exists()


def test_arguments_that_cannot_mean_an_import_are_refused_before_anything_is_read(tmp_path: Path) -> None:
    """`--from FILE KEY ID` (the single form's arguments kept) read KEY as a spec path: `no such file`, said
    with no word of why; `--from "$LIST"` with LIST unset read the empty name as a file."""
    runner, env = CliRunner(), {"CAPCTL_STATE": f"sqlite:///{tmp_path}/state.db", "COLUMNS": "200"}
    for args, said in (
        (["--from", "l.txt", "SnapshotJob/a/b", "t"], "SnapshotJob/a/b: no such spec file or directory; with --from"),
        (["--from", ""], "--from '': no file named (an unset variable?)"),
        (["SnapshotJob/a/b"], "give KEY and VENDOR_TASK_ID, or --from FILE to import the tasks a file lists"),
    ):
        result = runner.invoke(cli.app, ["state", "import", *args], env=env)
        assert result.exit_code == 1 and said in " ".join(result.output.split()), result.output
    assert list(tmp_path.iterdir()) == []


def test_the_example_list_names_tasks_the_example_specs_declare(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/imports.txt, as docs/operations.md shows it: every line parses and names a task of examples/specs
    that import takes (a named room or file, an id of the vendor's shape)."""
    from reconciler.adopt import probe
    from reconciler.importlist import parse_import_list
    from reconciler.spec import load_spec_set

    monkeypatch.setenv("VOLC_APP_ID", "app")
    monkeypatch.setenv("ZEGO_APP_ID", "1234567890")
    root = Path(__file__).parents[2] / "examples"
    lines, problems = parse_import_list("imports.txt", (root / "imports.txt").read_text())
    spec_set = load_spec_set([str(root / "specs")], resolve_secrets=False)
    assert problems == [] and len(lines) >= 3
    for line in lines:
        probe(spec_set.tasks[line.key], line.vendor_id, 0.0, app_id="1234567890")


def test_an_import_that_makes_the_state_says_where_as_apply_does(work: Workdir) -> None:
    """Walk 20E-8: an import into no state made one silently (a script with CAPCTL_STATE unset adopted its tasks
    into ./.capctl/state.db, and the next apply elsewhere started them again). A MediaThumbnails task is taken
    on your word: no vendor call, so each form costs a spec load."""
    work.write("thumbs.yaml", thumbnail_job())
    line = "ThumbnailJob/thumbs/1397757897438985100 their-thumbs"
    for args, state in (
        (line.split(), work.root / "one.db"),
        (["--from", "-"], work.root / "many.db"),
    ):
        made = work.capctl("state", "import", *args, "--state", f"sqlite:///{state}", stdin=line + "\n")
        assert f"Started a new state at sqlite:///{state}." in " ".join(made.stderr.split()), made.stderr
