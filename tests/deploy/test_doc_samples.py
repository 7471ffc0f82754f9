"""The console samples of the docs are what capctl prints (walk 60g): a block marked `<!-- sample: NAME -->` on
the line before its fence is compared with the output of the scene NAME below, which sets up what the page's
text describes and runs the command in-process, after normalising what legitimately varies (absolute paths,
file positions). Samples drifted when they were compared with the output by hand only: a README plan whose
order and columns no plan has. A new sample gets a marker and a scene; a marker without a scene, or a scene
no page marks, fails here."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.model import Observed, ObservedState
from reconciler.plan import PlanOptions, diff, plan_to_json
from reconciler.render import render_text
from reconciler.sim import create_app as create_sim_app
from reconciler.spec import load_spec_set
from reconciler.state import open_state
from tests.core.factories import record_for
from tests.deploy.daemon_facts import ROOT

MARKER = re.compile(r"^<!-- sample: ([a-z0-9-]+) -->\n```[a-z]*\n(.*?)^```", re.M | re.S)
PAGES = [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))]
STOPPED_AT = 1_795_780_987.0  # 2026-11-27 12:03:07Z

PROVIDERS = """\
apiVersion: capctl/v1
kind: Provider
metadata: {name: volc-prod}
spec:
  type: volcengine
  appId: "6123456789abcdef01234567"
  accessKey: {env: VOLC_AK, default: AKVOLC}
  secretKey: {env: VOLC_SK, default: volc-secret}
  endpoint: "http://127.0.0.1:9/volc"
---
apiVersion: capctl/v1
kind: Provider
metadata: {name: zego-prod}
spec:
  type: zego
  appId: 1234567890
  serverSecret: {env: ZEGO_SECRET, default: 0123456789abcdef0123456789abcdef}
  rtcEndpoint: "http://127.0.0.1:9/zego/rtc"
  cloudrecordEndpoint: "http://127.0.0.1:9/zego/cloudrecord"
"""

STORAGE = """\
{apiVersion: capctl/v1, kind: Storage, metadata: {name: audit},
 spec: {type: tos, accountId: "2100000000", region: 0, bucket: audit}}
---
{apiVersion: capctl/v1, kind: Storage, metadata: {name: recs}, spec: {type: oss, region: oss-cn-shanghai, bucket: recs,
 accessKey: {env: OSS_AK, default: AKOSS}, secretKey: {env: OSS_SK, default: oss-secret}}}
"""


def _snapshots(name: str, rooms: str, interval: int) -> str:
    return (
        f"apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {{name: {name}}}\nspec: {{provider: volc-prod, "
        f"rooms: [{rooms}], interval: {interval}s, image: {{format: jpeg, width: 800, height: 800}}, "
        "storage: audit, idleTimeout: 3m}\n"
    )


def _recordings(idle: str) -> str:
    return (
        "apiVersion: capctl/v1\nkind: RecordingJob\nmetadata: {name: class-rec}\nspec: {provider: zego-prod, "
        f"rooms: [class-101], mode: single, storage: recs, outputFolder: record/, idleTimeout: {idle}, "
        "maxDuration: 24h}\n"
    )


def _spec_dir(root: Path, *jobs: str) -> Path:
    specs = root / "specs"
    specs.mkdir(parents=True)
    (specs / "providers.yaml").write_text(PROVIDERS)
    (specs / "storage.yaml").write_text(STORAGE)
    (specs / "jobs.yaml").write_text("---\n".join(jobs))
    return specs


def readme_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """README "Plans": every action of a plan, from the state an earlier set left and what the vendor says."""
    before = load_spec_set(
        [
            _spec_dir(
                tmp_path / "before",
                _snapshots("vip-audit", "vip-1", 5),
                _recordings("30s"),
                _snapshots("lobby-audit", "lobby, stage, foyer, bar", 5),
                _snapshots("old-job", "r1", 5),
            )
        ],
        env={},
    )
    after = load_spec_set(
        [
            _spec_dir(
                tmp_path / "after",
                _snapshots("hall-audit", "hall-a, hall-b, hall-c", 5),
                _snapshots("vip-audit", "vip-1", 10),
                _recordings("1m"),
                _snapshots("lobby-audit", "lobby, stage, foyer, bar", 5),
            )
        ],
        env={},
    )
    records = {key: record_for(task) for key, task in before.tasks.items()}
    lobby = "SnapshotJob/lobby-audit/lobby"
    records[lobby] = records[lobby].evolve(started_at=STOPPED_AT - 600)  # ran 10 minutes, as the vendor says:
    stopped = Observed(ObservedState.STOPPED, "idle timeout (Volcengine IdleTimeOut)", 1000.0, 1600.0)
    plan = diff(after.tasks, records, {lobby: stopped}, options=PlanOptions(), state_serial=4, now=STOPPED_AT + 60)
    console = Console(record=True, width=100, color_system=None, file=io.StringIO())
    render_text(plan_to_json(plan), console)
    return console.export_text()


def _capctl(cwd: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """`capctl ARGS` in `cwd`, in-process: what it prints, stdout and stderr."""
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner().invoke(app, list(args)).output


def validate_relation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """docs/spec-language.md "Errors": a job on a Provider that cannot write to its Storage's type."""
    specs = _spec_dir(tmp_path, _snapshots("lobby-audit", "lobby", 5).replace("storage: audit", "storage: gcs"))
    gcs = "\n".join(["---", "apiVersion: capctl/v1", "kind: Storage", "metadata: {name: gcs}", "spec:", "  type: gcs"])
    gcs += "\n  bucket: b\n  accessKey: {env: GCS_AK, default: AK}\n  secretKey: {env: GCS_SK, default: SK}\n"
    (specs / "storage.yaml").write_text(STORAGE + gcs)
    return _capctl(tmp_path, monkeypatch, "validate", "specs").splitlines()[0] + "\n"


def state_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """docs/state.md: a state file of 0 bytes is refused, never read as empty."""
    (tmp_path / ".capctl").mkdir()
    (tmp_path / ".capctl" / "state.db").write_bytes(b"")
    monkeypatch.delenv("CAPCTL_STATE", raising=False)
    return _capctl(tmp_path, monkeypatch, "state", "list")


def state_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """docs/state.md "Locking": a second command that takes the lock fails at once, naming the holder."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    holder = open_state(url)
    holder.fingerprint_key()  # a whole state, as any command leaves it
    try:
        with holder.lock("capctl apply"):
            return _capctl(tmp_path, monkeypatch, "state", "rm", "--state", url, "SnapshotJob/audit/*")
    finally:
        holder.close()


def sim_bad_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """docs/simulator.md "Scenarios": a scenario file with a range upside down, refused before anything starts."""
    scenario = (ROOT / "examples" / "scenarios" / "compressed.yaml").read_text()
    (tmp_path / "bad.yaml").write_text(
        scenario.replace("session_length: {min: 20, max: 90}", "session_length: {min: 5, max: 1}")
    )
    return "$ capctl sim --scenario bad.yaml\n" + _capctl(tmp_path, monkeypatch, "sim", "--scenario", "bad.yaml")


def sim_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """docs/simulator.md "Built-in credentials": `GET /_sim/config` of a simulator started with no option."""

    async def get() -> str:
        transport = httpx.ASGITransport(app=create_sim_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            return (await http.get("/_sim/config")).text

    return asyncio.run(get())


SCENES: dict[str, Callable[[Path, pytest.MonkeyPatch], str]] = {
    "readme-plan": readme_plan,
    "validate-relation": validate_relation,
    "state-damaged": state_damaged,
    "state-locked": state_locked,
    "sim-bad-scenario": sim_bad_scenario,
    "sim-config": sim_config,
}


def marked_samples() -> dict[str, str]:
    """Each marked block of the pages, by its scene's name."""
    found: dict[str, str] = {}
    for page in PAGES:
        for name, block in MARKER.findall(page.read_text()):
            assert name not in found, f"{page.name}: sample {name} marked twice"
            found[name] = block
    return found


def normalised(text: str) -> str:
    """What may differ between the doc and a run: absolute paths (a scratch directory), line:col positions;
    JSON (a body, laid out for reading in the doc) is compared as its values."""
    try:
        return json.dumps(json.loads(text), indent=1, sort_keys=True)
    except json.JSONDecodeError:
        pass
    text = re.sub(r"(resolved to )/\S+", r"\1/PATH", text)
    text = re.sub(r"\(pid \d+ on \S+ ", "(pid PID on HOST ", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME", text)
    text = re.sub(r"(\.yaml):\d+:\d+", r"\1:L:C", text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def test_every_marked_sample_has_a_scene_and_every_scene_a_sample() -> None:
    assert sorted(marked_samples()) == sorted(SCENES)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_the_sample_is_what_capctl_prints(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = marked_samples()[name]
    assert normalised(SCENES[name](tmp_path, monkeypatch)) == normalised(sample)
