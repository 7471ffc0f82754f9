"""`capctl validate` as CI and pre-commit hooks call it: no secret needed, every error in one run, each at
the line a user sees in the editor, and a summary that fits a command that changes nothing."""

from __future__ import annotations

import os

from tests.e2e.conftest import Workdir
from tests.specdocs import snapshot_job

# Secret references without defaults: nothing in the test environment sets them.
PROVIDERS = """\
apiVersion: capctl/v1
kind: Provider
metadata: {name: volc}
spec:
  type: volcengine
  appId: capctl-sim-volc
  accessKey: {env: E2E_VOLC_AK}
  secretKey: {file: ../secrets/volc-sk}
"""
SECRET = "e2e-volc-secret-5b1d"

BROKEN = """\
# cameras
---
apiVersion: capctl/v1
kind: Provider
metadata: {name: cam}
spec:
  type: volcengine
  appId: app1
  accessKey: {env: VOLC_AK, default: AKCAPCTLSIM0000000001}
  secretKey: {env: VOLC_SK, default: capctl-sim-volc-secret}
  endpoint: ftp://not-http
---
# the lobby job
apiVersion: capctl/v1
kind: SnapshotJob
metadata: {name: lobby}
spec:
  provider: cam
  rooms: [lobby, hall, lobby]
  interval: 900s
  storage: tos
"""


def test_validate_needs_no_secret_and_resolve_secrets_reads_them(work: Workdir) -> None:
    work.write("providers.yaml", PROVIDERS)
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))

    ok = work.capctl("validate")
    assert ok.stdout.startswith("Valid: 3 files, ") and "→ 1 task (volcengine 1)" in ok.stdout
    assert "checked for their shape only; --resolve-secrets reads them" in ok.stdout
    assert "nothing was changed" not in ok.stdout + ok.stderr

    resolved = work.capctl("validate", "--resolve-secrets", expect=1)
    assert resolved.stderr.splitlines() == [
        "specs/providers.yaml:7:14: spec.accessKey: environment variable E2E_VOLC_AK is not set and the reference has"
        " no default",
        # Where it was looked for, from the working directory: not where '../secrets' from here would be.
        "specs/providers.yaml:8:14: spec.secretKey: cannot read referenced file '../secrets/volc-sk' (looked for at"
        " 'secrets/volc-sk': a path is relative to its spec file): No such file or directory",
        "2 errors in 1 file.",
    ]
    plan = work.capctl("plan", "--no-refresh", expect=1)  # plan and apply keep reading secrets
    assert plan.stderr.splitlines()[-1] == "2 errors in 1 file: nothing was changed."

    (work.root / "secrets").mkdir()
    (work.root / "secrets" / "volc-sk").write_text(SECRET + "\n")
    found = work.capctl("validate", "--resolve-secrets", env={"E2E_VOLC_AK": SECRET})
    assert found.stdout.startswith("Valid: ") and "shape only" not in found.stdout
    assert SECRET not in "".join(work.outputs)


def test_every_independent_error_in_one_run(work: Workdir) -> None:
    work.write("a.yaml", BROKEN)
    work.write("b.yaml", snapshot_job("other", ["x"]) + "  intervall: 5s\n")
    out = work.capctl("validate", expect=1)
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "specs/a.yaml:11:13: spec.endpoint: 'ftp://not-http' is not an http:// or https:// URL without spaces, "
        "query or fragment (https://host[:port][/path])",
        "specs/a.yaml:19:24: spec.rooms[2]: room 'lobby' is listed twice (first at rooms[0])",
        "specs/a.yaml:20:13: spec.interval: 900s is out of range for volcengine Interval (1..600 s)",
        "specs/b.yaml:10:3: unknown field 'spec.intervall' (did you mean 'interval'?)",
        "4 errors in 2 files.",
    ]


def test_locations_name_the_document_not_its_separator(work: Workdir) -> None:
    fixed = BROKEN.replace("  endpoint: ftp://not-http\n", "").replace("[lobby, hall, lobby]", "[lobby, hall]")
    work.write("a.yaml", fixed.replace("interval: 900s", "interval: 9s") + "---\n" + fixed.split("---\n")[1])
    out = work.capctl("validate", expect=1)
    assert out.stderr.splitlines() == [
        "specs/a.yaml:24:18: duplicate Provider name 'cam' (first defined at specs/a.yaml:3:1)",
        "1 error in 1 file.",
    ]


def test_validate_and_plan_refuse_a_fifo_and_dev_zero_by_name_without_reading_them(work: Workdir) -> None:
    """Issue 14: a symlink to /dev/zero took `validate` to 6.5 GB and a FIFO named *.yaml hung it."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    os.mkfifo(work.root / "specs" / "pipe.yaml")
    (work.root / "specs" / "zero.yaml").symlink_to("/dev/zero")
    expected = [
        "specs/pipe.yaml: not a regular file (a FIFO)",
        "specs/zero.yaml: not a regular file (a character device)",
    ]
    assert work.capctl("validate", expect=1).stderr.splitlines() == [*expected, "2 errors in 2 files."]
    plan = work.capctl("plan", "--no-refresh", expect=1).stderr.splitlines()
    assert plan == [*expected, "2 errors in 2 files: nothing was changed."]
