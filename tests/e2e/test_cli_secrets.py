"""No secret value ever reaches an output, a plan file, the state store or a log line."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

from reconciler.spec import load_spec_set
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
    assert "sha256:" in written  # the plan shows keyed fingerprints instead
    for secret in (CANARY_AK, CANARY_SK, *SIM_SECRETS):
        assert secret not in written, f"{secret!r} leaked into an output or the plan file"
        assert secret.encode() not in stored, f"{secret!r} leaked into the state store"
    assert sorted(Path(work.root).glob("*.db-journal")) == []


FOLDER = "folder-canary-91c2/"  # read from the environment into a field that is not a secret field


def _leaks(work: Workdir, value: str) -> list[str]:
    """Where `value` shows up among everything capctl printed, the saved plan and the state files."""
    found = [f"output {i}" for i, text in enumerate(work.outputs) if value in text]
    found += [p.name for p in work.root.glob("*.json") if value in p.read_text()]
    found += [p.name for p in work.root.glob("state.db*") if p.is_file() and value.encode() in p.read_bytes()]
    return found


def test_a_referenced_value_in_an_ordinary_field_is_sent_but_never_shown(work: Workdir) -> None:
    work.write("rec.yaml", recording_job("rec", ["class-1"]).replace("outputFolder: record/", "outputFolder: {env: F}"))
    env = {"F": FOLDER}
    debug = ["--log-level", "debug"]
    for fmt in ("text", "json", "markdown"):
        work.capctl("plan", "--format", fmt, *debug, env=env)
    work.capctl("plan", "--out", "plan.json", *debug, env=env)
    work.capctl("apply", "--plan", "plan.json", *debug, env=env)
    work.capctl("state", "list", "-o", "json", env=env)
    work.capctl("state", "show", "RecordingJob/rec/class-1", env=env)
    assert _leaks(work, FOLDER) == []
    assert "sha256:" in work.outputs[0]  # the plan shows the folder's fingerprint instead
    sent = [e for e in work.sim.requests() if FOLDER in json.dumps(e)]
    assert sent, "the vendor must still get the folder"
    # A new value is still a change: the hash covers it (keyed, so it reveals nothing).
    changed = work.capctl("plan", "--detailed-exitcode", env={"F": "another/"}, expect=2)
    assert "RecordingJob/rec/class-1" in changed.stdout and "another/" not in changed.stdout
    work.capctl("plan", "--detailed-exitcode", env=env, expect=0)


def test_a_reference_cannot_name_a_task(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["{env: ROOM}"]))
    for command in ("validate", "plan"):
        proc = work.capctl(command, env={"ROOM": "room-canary-55"}, expect=1)
        assert "spec.rooms[0]: a reference cannot name a task" in proc.stderr
    assert _leaks(work, "room-canary-55") == [] and not work.state.exists()


def test_fingerprints_are_keyed_per_state(work: Workdir) -> None:
    work.write("rec.yaml", recording_job("rec", ["class-1"]))
    plain = "sha256:" + hashlib.sha256(CANARY_SK.encode()).hexdigest()[:12]  # what a guesser could compute
    work.apply()
    first, again = (work.capctl("state", "show", "RecordingJob/rec/class-1").stdout for _ in range(2))
    other = work.capctl("plan", "--format", "json", env={"CAPCTL_STATE": f"sqlite:///{work.root / 'other.db'}"}).stdout
    fingerprints = [set(re.findall(r"sha256:[0-9a-f]{12}\b", text)) for text in (first, again, other)]
    assert fingerprints[0] and fingerprints[0] == fingerprints[1]  # stable within one state: rotations show
    assert not fingerprints[0] & fingerprints[2]  # another state, another key
    assert all(plain not in text for text in work.outputs)


def test_an_upgrade_from_unkeyed_hashes_changes_no_task(work: Workdir) -> None:
    """A state written before keyed hashes holds bare content hashes: upgrading must not replace anything."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "hall"]))
    work.write("rec.yaml", recording_job("rec", ["class-1"]))
    work.apply()
    starts = len(work.sim.requests())
    # Make the state what the previous version wrote: no key, bare content hashes.
    bare = load_spec_set([work.specs], env=work.env).tasks
    db = sqlite3.connect(work.state)
    with db:
        db.execute("DROP TABLE capctl_fingerprint_key")
        for key, body in db.execute("SELECT key, body FROM capctl_records").fetchall():
            record = json.loads(body)
            record["spec_hash"], record["fixed_hash"] = bare[key].spec_hash, bare[key].fixed_hash
            db.execute("UPDATE capctl_records SET body = ? WHERE key = ?", (json.dumps(record), key))
    serial = db.execute("SELECT serial FROM capctl_meta").fetchone()[0]
    db.close()

    work.capctl("plan", "--detailed-exitcode")  # read-only: compares bare with bare, creates no key
    work.capctl("plan", "--out", "plan.json")
    work.capctl("apply", "--plan", "plan.json")  # the saved plan from before the key still applies
    db = sqlite3.connect(work.state)
    hashes = [json.loads(body)["spec_hash"] for (body,) in db.execute("SELECT body FROM capctl_records")]
    assert db.execute("SELECT serial FROM capctl_meta").fetchone()[0] == serial  # nothing was changed
    assert db.execute("SELECT count(*) FROM capctl_fingerprint_key").fetchone()[0] == 1
    db.close()
    assert len(hashes) == 3 and all(h.startswith("hmac:") for h in hashes)  # keyed in place
    work.capctl("plan", "--detailed-exitcode")
    changes = [e["api"] for e in work.sim.requests()[starts:] if "Start" in e["api"] or "Stop" in e["api"]]
    assert changes == []  # no task was replaced
