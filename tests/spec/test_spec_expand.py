"""Expansion: the exact vendor request of each API family, task fields, and hash behaviour."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from reconciler.model import ApiFamily, JobKind, RestartPolicy
from reconciler.redact import redact_tree
from reconciler.secrets import Secret, keyed_hash, upgrade_hash
from reconciler.spec.expand import content_hash
from tests.spec.conftest import SECRET_ENV, Loader, job

AK, SK = Secret(SECRET_ENV["AK"]), Secret(SECRET_ENV["SK"])


def test_volcengine_snapshot_request(load: Loader) -> None:
    spec_set = load(
        job(
            name="lobby-audit",
            body="""
        provider: volc
        rooms: [lobby, vip-1]
        streams: [{user: alice}, {user: bob, type: screen, index: 1}]
        interval: 5s
        image: {format: png, width: 800, height: 600}
        storage: s3
        idleTimeout: 3m
        restartPolicy: Never
        """,
        ).replace("storage: s3", "storage: s3v")
        + """---
apiVersion: capctl/v1
kind: Storage
metadata: {name: s3v}
spec: {type: oss, bucket: snaps, region: 3, accessKey: {env: AK}, secretKey: {env: SK}}
"""
    )
    task = spec_set.tasks["SnapshotJob/lobby-audit/vip-1"]
    assert task.request == {
        "AppId": "app1",
        "RoomId": "vip-1",
        "TaskId": "lobby-audit",
        "TargetStreams": {
            "StreamList": [{"UserId": "alice", "StreamType": 0}, {"UserId": "bob", "StreamType": 1, "Index": 1}]
        },
        "MaxIdleTime": 180,
        "StorageConfig": {
            "Type": 2,
            "CustomConfig": {"Vendor": 1, "Region": 3, "Bucket": "snaps", "AccessKey": AK, "SecretKey": SK},
        },
        "ImageConfig": {"Format": 1, "Width": 800, "Height": 600, "Interval": 5},
    }
    assert task.family is ApiFamily.VOLC_SNAPSHOT and task.kind is JobKind.SNAPSHOT
    assert (task.idle_timeout, task.max_duration, task.restart_policy) == (180, None, RestartPolicy.NEVER)
    assert task.updatable == {"interval": 5} and task.request["TaskId"] == "lobby-audit"
    assert task.target == "vip-1" and task.provider == "volc" and task.job == "lobby-audit"
    assert task.source.endswith("spec.yaml:1:1")
    assert list(spec_set.tasks) == ["SnapshotJob/lobby-audit/lobby", "SnapshotJob/lobby-audit/vip-1"]


def test_volcengine_defaults_business_id_task_id_and_storages(load: Loader) -> None:
    text = (
        """apiVersion: capctl/v1
kind: Provider
metadata: {name: vb}
spec: {type: volcengine, appId: app2, businessId: B123, accessKey: {env: AK}, secretKey: {env: SK}}
---
apiVersion: capctl/v1
kind: Storage
metadata: {name: vod}
spec: {type: vod, accountId: "21", space: sp, storageClass: archive, region: {env: REGION},
  autoSetFileExtension: {env: EXT}}
---
apiVersion: capctl/v1
kind: Storage
metadata: {name: imx}
spec: {type: veimagex, accountId: "21", serviceId: svc}
---
"""
        + job(name="a", body="provider: vb\nrooms: [r]\nstorage: vod\ntaskId: custom.task@1")
        + "---\n"
        + job(name="b", body="provider: vb\nrooms: [r2]\nstorage: imx")
        + "---\n"
        + job(name="c", body="provider: volc\nrooms: [r]\nstorage: tos")
    )
    tasks = load(text, env={**SECRET_ENV, "REGION": "2", "EXT": "True"}).tasks  # a boolean from a reference
    a = tasks["SnapshotJob/a/r"].request
    assert a["BusinessId"] == "B123" and a["TaskId"] == "custom.task@1" and "TargetStreams" not in a
    assert a["ImageConfig"] == {"Format": 0, "Width": 0, "Height": 0, "Interval": 2}
    assert a["MaxIdleTime"] == 180
    assert a["StorageConfig"] == {
        "Type": 1,
        "VodConfig": {"AccountId": "21", "Region": 2, "Space": "sp", "StorageClass": 2, "AutoSetFileExtension": True},
    }
    assert tasks["SnapshotJob/b/r2"].request["StorageConfig"] == {
        "Type": 3,
        "VeImageXConfig": {"AccountId": "21", "Region": 0, "ServiceId": "svc"},
    }
    assert tasks["SnapshotJob/c/r"].request["StorageConfig"] == {
        "Type": 0,
        "TosConfig": {"AccountId": "1", "Region": 0, "Bucket": "b"},
    }
    assert "BusinessId" not in tasks["SnapshotJob/c/r"].request


RECORDING = """
provider: zego
rooms: [class-101]
mode: mixed
media: audio-video
streams: [{stream: teacher}, {stream: board}]
format: flv
outputFolder: record/
storage: s3
idleTimeout: 60s
maxDuration: 2h
mix:
  mixMode: 1
  mixOutputStreamId: mix-out
  mixOutputVideoConfig: {width: 1280, height: 720, fps: 15, bitrate: 1500000}
  mixInputList:
    - {streamId: teacher, top: 0, left: 0, bottom: 720, right: 640, layer: 1}
options: {fillBlank: true, fillFrame: {frameFillMode: 2, frameFillColor: 65280}, outputFileRule: 1,
          callbackUrl: "https://hooks.example/rec?token=t1"}
"""

STORAGE_SNAKE: dict[str, Any] = {
    "storage_provider": 1,
    "region": "us-east-1",
    "bucket_name": "b",
    "access_key_id": AK,
    "access_key_secret": SK,
}


def test_zego_recording_current_request(load: Loader) -> None:
    task = load(job("RecordingJob", "class-rec", RECORDING)).tasks["RecordingJob/class-rec/class-101"]
    assert task.family is ApiFamily.ZEGO_RECORD
    assert task.request == {
        "RoomId": "class-101",
        "RecordInputParams": {
            "RecordMode": 2,
            "StreamType": 3,
            "RecordStreamList": [{"StreamId": "teacher"}, {"StreamId": "board"}],
            "MaxIdleTime": 60,
            "MaxRecordTime": 7200,
            "FillBlank": True,
            "FillFrame": {"FrameFillMode": 2, "FrameFillColor": 65280},
            "MixConfig": {
                "MixMode": 1,
                "MixOutputStreamId": "mix-out",
                "MixOutputVideoConfig": {"Width": 1280, "Height": 720, "Fps": 15, "Bitrate": 1500000},
                "MixInputList": [{"StreamId": "teacher", "Top": 0, "Left": 0, "Bottom": 720, "Right": 640, "Layer": 1}],
            },
        },
        "RecordOutputParams": {
            "OutputFileFormat": "flv",
            "OutputFolder": "record/",
            "OutputFileRule": 1,
            "CallbackUrl": "https://hooks.example/rec?token=t1",
        },
        "StorageParams": {"Vendor": 1, "Region": "us-east-1", "Bucket": "b", "AccessKeyId": AK, "AccessKeySecret": SK},
    }
    assert (task.idle_timeout, task.max_duration, task.updatable) == (60, 7200, {})
    assert task.fixed_hash == task.spec_hash


def test_zego_recording_legacy_request(load: Loader) -> None:
    text = job(
        "RecordingJob",
        "rec",
        "provider: zego-legacy\nrooms: [r1]\nstorage: s3\nmedia: audio\nformat: mp3\n"
        "options: {recordMuteAudio: 2, recordMuteAudioSplitThreshold: 3}",
    )
    task = load(text).tasks["RecordingJob/rec/r1"]
    assert task.family is ApiFamily.ZEGO_RECORD_LEGACY
    assert task.request == {
        "room_id": "r1",
        "record_input_params": {
            "record_mode": 1,
            "stream_type": 1,
            "max_idle_time": 30,
            "max_record_time": 86400,
            "record_mute_audio": 2,
            "record_mute_audio_split_threshold": 3,
        },
        "record_output_params": {"output_file_format": "mp3"},
        "storage_params": STORAGE_SNAKE,
    }


def test_zego_snapshot_and_vod_storages(load: Loader) -> None:
    text = (
        """apiVersion: capctl/v1
kind: Storage
metadata: {name: tvod}
spec: {type: tencent-vod, region: ap-shanghai, accessKey: {env: AK}, secretKey: {env: SK}, subAppId: 9}
---
apiVersion: capctl/v1
kind: Storage
metadata: {name: avod}
spec: {type: aliyun-vod, region: cn-shanghai, accessKey: {env: AK}, secretKey: {env: SK}, title: t,
       storageLocation: loc.oss-cn-shanghai.aliyuncs.com}
---
"""
        + job(
            name="snap",
            body="provider: zego\nrooms: [lobby]\nstorage: s3c\nstreams: [{stream: s1}]\ninterval: 30s\n"
            "outputFolder: stills/",  # walk 16D-2: a zego snapshot job's jpg files go to a folder too
        )
        + "---\n"
        + job("RecordingJob", "tv", "provider: zego-legacy\nrooms: [a]\nstorage: tvod")
        + "---\n"
        + job("RecordingJob", "av", "provider: zego\nrooms: [a]\nstorage: avod")
        + "---\n"
        + job("RecordingJob", "tvc", "provider: zego\nrooms: [b]\nstorage: tvod")
    )
    tasks = load(text).tasks
    snap = tasks["SnapshotJob/snap/lobby"]
    assert snap.family is ApiFamily.ZEGO_RECORD
    assert snap.request == {
        "RoomId": "lobby",
        "RecordInputParams": {
            "RecordMode": 1,
            "StreamType": 2,
            "RecordStreamList": [{"StreamId": "s1"}],
            "MaxIdleTime": 30,
            "MaxRecordTime": 86400,
        },
        "RecordOutputParams": {"OutputFileFormat": "jpg", "SnapshotInterval": 30, "OutputFolder": "stills/"},
        "StorageParams": {
            "Vendor": 10,
            "Region": "us-east-1",
            "Bucket": "b",
            "AccessKeyId": AK,
            "AccessKeySecret": SK,
            "EndPoint": "https://minio.example",
        },
    }
    assert (snap.idle_timeout, snap.max_duration, snap.updatable) == (30, 86400, {})
    assert tasks["RecordingJob/tv/a"].request["storage_params"] == {
        "storage_provider": 6,
        "tencentyun_vod_params": {
            "access_key_id": AK,
            "access_key_secret": SK,
            "region": "ap-shanghai",
            "sub_app_id": 9,
        },
    }
    assert tasks["RecordingJob/av/a"].request["StorageParams"] == {
        "Vendor": 5,
        "AlibabaCloudVodParams": {
            "Region": "cn-shanghai",
            "AccessKeyId": AK,
            "AccessKeySecret": SK,
            "Title": "t",
            "StorageLocation": "loc.oss-cn-shanghai.aliyuncs.com",
        },
    }
    # The current API's own names (ZEGO's StartRecord page): SecretId / SecretKey, not StorageParams' AccessKeyId.
    assert tasks["RecordingJob/tvc/b"].request["StorageParams"] == {
        "Vendor": 6,
        "TencentCloudVodParams": {"SecretId": AK, "SecretKey": SK, "Region": "ap-shanghai", "SubAppId": 9},
    }


def test_thumbnail_requests(load: Loader) -> None:
    text = job(
        "ThumbnailJob",
        "replay-thumbs",
        """
        provider: zego
        files:
          - {cdn: huawei, fileId: /record/a/2024-11-13.mp4, interval: 2s}
          - {cdn: tencent, fileId: "1397757897438985100", definition: 10, offsets: [1s, 1m]}
          - {cdn: tencent, fileId: "7", definition: 3}
        """,
    )
    tasks = load(text).tasks
    assert [t.request for t in tasks.values()] == [
        {"Vendor": "Huawei", "FileId": "/record/a/2024-11-13.mp4", "Type": "SampleSnapshot", "Interval": 2},
        {
            "Vendor": "Tencent",
            "FileId": "1397757897438985100",
            "Type": "SnapshotByTimeOffset",
            "Definition": 10,
            "ExtTimeOffsetSet": [1, 60],
        },
        {"Vendor": "Tencent", "FileId": "7", "Type": "SampleSnapshot", "Definition": 3},
    ]
    first = tasks["ThumbnailJob/replay-thumbs//record/a/2024-11-13.mp4"]
    assert first.family is ApiFamily.ZEGO_THUMBNAIL and first.target == "/record/a/2024-11-13.mp4"
    assert (first.idle_timeout, first.max_duration) == (None, None)


SNAP = "provider: volc\nrooms: [lobby]\nstorage: tos\ninterval: {interval}\nidleTimeout: {idle}"


STATE_KEY = b"k" * 32  # a state's fingerprint key


def _hashes(
    load: Loader, interval: str = "5s", idle: str = "20s", env: dict[str, str] | None = None
) -> tuple[str, str]:
    task = load(job(body=SNAP.format(interval=interval, idle=idle)), env=env, key=STATE_KEY).tasks[
        "SnapshotJob/j/lobby"
    ]
    assert task.spec_hash == keyed_hash(STATE_KEY, content_hash(task.provider, task.family, task.request))
    return task.spec_hash, task.fixed_hash


def test_hashes_are_stable_and_change_exactly_when_they_should(load: Loader) -> None:
    base = _hashes(load)
    assert base == _hashes(load)  # stable across loads
    assert base == _hashes(load, interval="5")  # same value, other spelling
    assert base[0].startswith("hmac:") and len(base[0]) == 5 + 64
    interval = _hashes(load, interval="10s")
    assert interval[0] != base[0] and interval[1] == base[1]  # interval: updatable in place
    idle = _hashes(load, idle="30s")
    assert idle[0] != base[0] and idle[1] != base[1]  # anything else: replace
    rotated = _hashes(load, env={**SECRET_ENV, "SK": "another-secret"})
    assert rotated == base  # the provider's keys sign requests; they are not part of a tos request


def test_secret_rotation_changes_the_hash_of_requests_that_carry_it(load: Loader) -> None:
    text = job("RecordingJob", "r", "provider: zego\nrooms: [a]\nstorage: s3")
    first = load(text).tasks["RecordingJob/r/a"]
    again = load(text).tasks["RecordingJob/r/a"]
    rotated = load(text, env={**SECRET_ENV, "SK": "rotated"}).tasks["RecordingJob/r/a"]
    assert first.spec_hash == again.spec_hash != rotated.spec_hash
    assert redact_tree(rotated.request)["StorageParams"]["AccessKeySecret"] == Secret("rotated").fingerprint


def test_known_hash_value(load: Loader) -> None:
    """Pins the canonical form: a change here changes every recorded hash in every state store."""
    task = load(job(body=SNAP.format(interval="5s", idle="20s"))).tasks["SnapshotJob/j/lobby"]
    canonical = json.dumps(
        {"provider": "volc", "family": "volcengine-snapshot", "request": task.request},
        sort_keys=True,
        separators=(",", ":"),
    )
    content = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert task.spec_hash == content  # no state key yet: the bare content hash, as records from before keys hold
    keyed = load(job(body=SNAP.format(interval="5s", idle="20s")), key=STATE_KEY).tasks["SnapshotJob/j/lobby"]
    assert keyed.spec_hash == "hmac:" + hmac.new(STATE_KEY, content.encode(), "sha256").hexdigest()
    assert upgrade_hash(STATE_KEY, task.spec_hash) == keyed.spec_hash  # how an upgraded state keys old records


def test_hashes_under_another_state_key_differ_and_are_no_guessing_oracle(load: Loader) -> None:
    """A hash is in plans and the state; without the key, a guessed secret cannot be checked against it."""
    text = job("RecordingJob", "r", "provider: zego\nrooms: [a]\nstorage: s3")
    one = load(text, key=STATE_KEY).tasks["RecordingJob/r/a"]
    other = load(text, key=b"o" * 32).tasks["RecordingJob/r/a"]
    assert one.spec_hash != other.spec_hash and one.spec_hash.startswith("hmac:")
    guessed = content_hash(one.provider, one.family, one.request)  # all an outsider could compute from a guess
    assert guessed not in (one.spec_hash, one.fixed_hash)
