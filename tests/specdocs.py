"""Spec documents the daemon and end-to-end tests write: providers at a simulator, storages, jobs.

One set for both suites, so they test the same spec language the same way. Secrets are `{env, default}`
references whose defaults are the simulator's built-in credentials; the end-to-end tests set S3_AK and
S3_SK to canary values and check that those never appear anywhere capctl writes.
"""

from __future__ import annotations

import textwrap


def _duration(value: int | str) -> str:
    """Seconds as a spec duration (`20` -> `20s`); strings such as `24h` pass through."""
    return f"{value}s" if isinstance(value, int) else value


# The vendor accounts (`ProviderConfig.account`) of `providers`: what room activity is kept by.
VOLC_ACCOUNT = "volcengine:capctl-sim-volc"
ZEGO_ACCOUNT = "zego:1234567890"


def providers(base: str, *, callbacks: bool = False) -> str:
    """Providers `volc`, `zego` and `zego-legacy` at the simulator `base`, with callback secrets if asked."""
    volc_callback = "\n  callbackSecret: {env: VOLC_CB, default: capctl-sim-volc-callback}" if callbacks else ""
    zego_callback = "\n  callbackSecret: {env: ZEGO_CB, default: capctl-sim-zego-callback}" if callbacks else ""
    return f"""\
apiVersion: capctl/v1
kind: Provider
metadata: {{name: volc}}
spec:
  type: volcengine
  appId: capctl-sim-volc
  accessKey: {{env: VOLC_AK, default: AKCAPCTLSIM0000000001}}
  secretKey: {{env: VOLC_SK, default: capctl-sim-volc-secret}}
  endpoint: {base}/volc{volc_callback}
---
apiVersion: capctl/v1
kind: Provider
metadata: {{name: zego}}
spec:
  type: zego
  appId: 1234567890
  serverSecret: {{env: ZEGO_SECRET, default: 0123456789abcdef0123456789abcdef}}
  rtcEndpoint: {base}/zego/rtc
  cloudrecordEndpoint: {base}/zego/cloudrecord{zego_callback}
---
apiVersion: capctl/v1
kind: Provider
metadata: {{name: zego-legacy}}
spec:
  type: zego
  appId: 1234567890
  serverSecret: {{env: ZEGO_SECRET, default: 0123456789abcdef0123456789abcdef}}
  cloudrecordApi: legacy
  cloudrecordEndpoint: {base}/zego/legacy
"""


STORAGE = """\
apiVersion: capctl/v1
kind: Storage
metadata: {name: tos}
spec: {type: tos, accountId: "2100000000", region: 0, bucket: snaps}
---
apiVersion: capctl/v1
kind: Storage
metadata: {name: s3}
spec:
  type: s3
  region: us-east-1
  bucket: recs
  accessKey: {env: S3_AK, default: AKS3}
  secretKey: {env: S3_SK, default: s3-secret}
"""


def _restart(policy: str | None) -> str:
    return f"\n  restartPolicy: {policy}" if policy else ""


def snapshot_job(
    name: str, rooms: list[str], *, interval: int | str = 5, idle: int | str = 20, restart: str | None = None
) -> str:
    """A Volcengine SnapshotJob on `rooms`, to the `tos` storage (durations in seconds or as text)."""
    return (
        textwrap.dedent(f"""\
        apiVersion: capctl/v1
        kind: SnapshotJob
        metadata: {{name: {name}}}
        spec:
          provider: volc
          rooms: [{", ".join(rooms)}]
          interval: {_duration(interval)}
          storage: tos
          idleTimeout: {_duration(idle)}""")
        + _restart(restart)
        + "\n"
    )


def recording_job(
    name: str,
    rooms: list[str],
    *,
    provider: str = "zego",
    idle: int | str = 30,
    max_duration: int | str = "24h",
    restart: str | None = None,
) -> str:
    """A ZEGO RecordingJob (one file per stream) on `rooms`, to the `s3` storage."""
    return (
        textwrap.dedent(f"""\
        apiVersion: capctl/v1
        kind: RecordingJob
        metadata: {{name: {name}}}
        spec:
          provider: {provider}
          rooms: [{", ".join(rooms)}]
          mode: single
          storage: s3
          outputFolder: record/
          idleTimeout: {_duration(idle)}
          maxDuration: {_duration(max_duration)}""")
        + _restart(restart)
        + "\n"
    )


def thumbnail_job(name: str = "thumbs", *, huawei_interval: int | str = 2, tencent: bool = True) -> str:
    """A ZEGO ThumbnailJob: a Huawei file at `huawei_interval`, and (with `tencent`) a Tencent file by offsets."""
    files = (
        ['    - {cdn: tencent, fileId: "1397757897438985100", definition: 10, offsets: [1s, 2s]}'] if tencent else []
    )
    files.append(f"    - {{cdn: huawei, fileId: /record/a.mp4, interval: {_duration(huawei_interval)}}}")
    header = (
        f"apiVersion: capctl/v1\nkind: ThumbnailJob\nmetadata: {{name: {name}}}\nspec:\n  provider: zego\n  files:\n"
    )
    return header + "\n".join(files) + "\n"


def selector_job(name: str, match: str, *, exclude: str | None = None, max_rooms: int | None = None) -> str:
    """A Volcengine SnapshotJob selecting its rooms (`rooms: {match: ...}`), to the `tos` storage."""
    more = (f', exclude: "{exclude}"' if exclude else "") + (f", maxRooms: {max_rooms}" if max_rooms else "")
    return textwrap.dedent(f"""\
        apiVersion: capctl/v1
        kind: SnapshotJob
        metadata: {{name: {name}}}
        spec:
          provider: volc
          rooms: {{match: "{match}"{more}}}
          interval: 5s
          storage: tos
          idleTimeout: 20s
        """)
