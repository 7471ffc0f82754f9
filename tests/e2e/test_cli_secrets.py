"""No secret value ever reaches an output, a plan file, the state store or a log line."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import CANARY_AK, CANARY_SK, SIM_SECRETS, Workdir
from tests.specdocs import recording_job, snapshot_job


def test_secrets_never_leave_memory(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    work.write("rec.yaml", recording_job("rec", ["class-1"]))
    work.write("legacy.yaml", recording_job("old", ["class-2"], provider="zego-legacy"))
    debug = ["--log-level", "debug"]
    work.capctl("validate")
    for fmt in ("text", "json", "markdown"):
        work.capctl("plan", "--format", fmt, *debug)
    work.capctl("plan", "--out", "plan.json", *debug)
    work.capctl("apply", "--plan", "plan.json", *debug)
    work.sim.advance(31)
    work.apply(*debug)
    work.write("rec.yaml", recording_job("rec", ["class-1"], idle="45s"))  # replace: stop + start
    work.apply(*debug)
    work.capctl("state", "list")
    work.capctl("state", "list", "-o", "json")
    work.capctl("state", "show", "RecordingJob/rec/class-1")
    broken = work.write("broken.yaml", snapshot_job("bad", ["x"], interval="0s"))
    work.capctl("apply", "--auto-approve", expect=1)
    broken.unlink()

    written = "\n".join(work.outputs) + (work.root / "plan.json").read_text()
    stored = b"".join(p.read_bytes() for p in work.root.glob("state.db*") if p.is_file())
    assert "hmac:" in written  # the plan shows keyed fingerprints instead
    for secret in (CANARY_AK, CANARY_SK, *SIM_SECRETS):
        assert secret not in written, f"{secret!r} leaked into an output or the plan file"
        assert secret.encode() not in stored, f"{secret!r} leaked into the state store"
    assert sorted(Path(work.root).glob("*.db-journal")) == []
