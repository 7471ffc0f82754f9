"""The pull-request kit: action/plan.sh (what action.yml and the GitLab example run) plans real specs with the
real CLI against the simulator and keeps ONE comment up to date on a local stand-in for GitHub's and GitLab's
APIs; the drift workflow's own step fails on drift; every capctl command and option in the CI files exists.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import typer.main
import yaml

from reconciler.cli import app
from reconciler.plan import PlanOptions, diff, plan_to_json
from reconciler.render import render_markdown
from reconciler.spec import load_spec_set
from tests.core.factories import record_for
from tests.deploy.daemon_facts import ROOT
from tests.deploy.forge import BOT, TOKEN, Forge, serve
from tests.e2e.conftest import Workdir
from tests.specdocs import STORAGE, providers, snapshot_job

PLAN_SH = ROOT / "action" / "plan.sh"
MARKER = "<!-- capctl-plan:default -->"


def forge_env(forge: Forge, work: Workdir) -> dict[str, str]:
    """The variables GitHub Actions or GitLab CI would set, pointed at the stand-in."""
    if forge.kind == "github":
        event = work.root / "event.json"
        event.write_text(json.dumps({"pull_request": {"number": 7}}))
        return {
            "GITHUB_API_URL": forge.url,
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_OUTPUT": str(work.root / "github-output"),
        }
    return {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": forge.url,
        "CI_PROJECT_ID": "o/r",
        "CI_MERGE_REQUEST_IID": "7",
        "GITLAB_TOKEN": TOKEN,
    }


def run_plan_sh(work: Workdir, forge: Forge, **inputs: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in work.env.items() if not k.startswith(("GITHUB_", "GITLAB_", "CI_"))}
    env |= forge_env(forge, work) | inputs
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # capctl, as the action installs it
    proc = subprocess.run(
        ["bash", str(PLAN_SH)], cwd=work.root, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert TOKEN not in proc.stdout + proc.stderr
    return proc


def marked(forge: Forge) -> list[dict[str, Any]]:
    return [c for c in forge.comments if MARKER in c["body"]]


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_one_comment_updated_in_place_on_every_push(work: Workdir, kind: str) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby", "hall"]))
    with serve(kind) as forge:
        # Someone quoting the marker before the first plan is posted: their comment is neither edited nor taken
        # for the plan's (it was: the plan then showed under their name, and they could edit it between pushes).
        stranger = forge.add(f"{MARKER}\n#### ✅ capctl: no changes", "someone")
        for n in range(130):  # a busy pull request: the plan comment must be found past the first page
            forge.add(f"review remark {n}", "someone")

        first = run_plan_sh(work, forge)
        assert first.returncode == 2, first.stderr
        [comment] = [c for c in marked(forge) if c is not stranger]
        assert "changes to apply" in comment["body"] and "SnapshotJob/audit/lobby" in comment["body"]
        assert (work.root / "plan.json").exists()

        work.apply()  # "the next push": the specs now match the vendors
        second = run_plan_sh(work, forge)
        assert second.returncode == 0, second.stderr
        assert marked(forge) == [stranger, comment] and len(forge.comments) == 132
        assert "✅ capctl: no changes" in comment["body"] and "SnapshotJob/audit" not in comment["body"]
        edits = [r for r in forge.requests if r[0] in ("PATCH", "PUT")]
        assert len(edits) == 1 and [r for r in forge.requests if r[0] == "POST"] != []

        work.write("jobs.yaml", "apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {name: [broken\n")
        third = run_plan_sh(work, forge)
        assert third.returncode == 1 and "jobs.yaml:" in third.stdout + third.stderr
        assert marked(forge) == [stranger, comment] and "capctl plan failed (exit 1)" in comment["body"]
        assert stranger["body"] == f"{MARKER}\n#### ✅ capctl: no changes"
    if kind == "github":
        outputs = (work.root / "github-output").read_text().split()
        assert outputs == [f"{k}={v}" for code in ("2", "0", "1") for k, v in _outputs(code)]


def _outputs(code: str) -> list[tuple[str, str]]:
    return [("exitcode", code), ("has-changes", "true" if code == "2" else "false")]


def test_a_forge_refusal_fails_the_job_and_says_why(work: Workdir) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    with serve("github") as forge:
        forge.refuse = 403
        proc = run_plan_sh(work, forge)
    assert proc.returncode == 1
    assert "GitHub answered 403" in proc.stderr and "Resource not accessible" in proc.stderr
    # GitHub's terse message, then what it most likely means (walk 60e-3)
    assert "the job needs `permissions: pull-requests: write`" in proc.stderr


def test_an_incomplete_plan_says_in_the_log_why(work: Workdir) -> None:
    """Walk 60e-1: a plan that could not observe its tasks fails with "see the note above", but the note (which
    tasks, the vendor's error) went to plan.md, emptied for the comment that says "The job log says why": the log
    had no why. It now holds the incomplete plan."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    work.apply()
    with serve("github") as forge:
        proc = run_plan_sh(work, forge, VOLC_SK="not-the-secret-key")
        [comment] = marked(forge)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "(see the note above)" in proc.stderr
    note = proc.stderr.split("(see the note above)")[1]
    assert "could not be observed" in note and "SignatureDoesNotMatch" in note
    assert "check the provider's secretKey" in note
    assert "not-the-secret-key" not in proc.stdout + proc.stderr
    assert "❌ capctl plan failed (exit 1): no plan. The job log says why." in comment["body"]
    assert (work.root / "plan.md").read_text() == ""
    # github-actions.yaml's own Plan step likewise (its artifact, plan.md, is not uploaded after a failure)
    script = workflow_step(ROOT / "examples" / "ci" / "github-actions.yaml", "plan", "Plan")
    env = {**work.env, "VOLC_SK": "not-the-secret-key", "PATH": f"{Path(sys.executable).parent}:{work.env['PATH']}"}
    step = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], cwd=work.root, env=env, capture_output=True, text=True, timeout=120
    )
    assert step.returncode == 1 and "::error::capctl plan failed (exit 1)" in step.stdout
    assert "SignatureDoesNotMatch" in step.stdout.split("::error::")[0]


def test_the_step_summary_shows_the_plan_comment_or_not(work: Workdir) -> None:
    """Walk 60e-2: the plan went to plan.md only, so with `comment: false` (or a token that may not comment) the
    run showed it nowhere, neither in its log nor on its page. The step summary holds the comment's text."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    summary = work.root / "step-summary.md"
    with serve("github") as forge:
        proc = run_plan_sh(work, forge, CAPCTL_COMMENT="false", GITHUB_STEP_SUMMARY=str(summary))
        assert proc.returncode == 2, proc.stderr
        assert forge.requests == []
        first = summary.read_text()
        assert first.startswith("#### capctl: changes to apply\n") and "`SnapshotJob/audit/lobby` | create" in first
        assert MARKER not in first
        forge.refuse = 403  # the comment is refused: the summary is written first, and says the same
        proc = run_plan_sh(work, forge, GITHUB_STEP_SUMMARY=str(summary))
        assert proc.returncode == 1 and "GitHub answered 403" in proc.stderr
    assert summary.read_text() == first * 2


@pytest.mark.parametrize("value", ["yes", "True", "no"])
def test_a_comment_input_neither_true_nor_false_fails_the_job(work: Workdir, value: str) -> None:
    """Walk 60e-4: anything but "true" was taken for "false": `comment: yes` planned, posted nothing, said
    nothing, and the job passed."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    with serve("github") as forge:
        proc = run_plan_sh(work, forge, CAPCTL_COMMENT=value)
        assert forge.requests == []
    assert proc.returncode == 1
    assert f'comment is "{value}": it takes true (post or update the plan comment) or false' in proc.stderr


def test_without_capctl_installed_the_job_says_so_and_the_comment_says_failed(work: Workdir) -> None:
    """Not "validate found errors (listed above)" under a "command not found": what is missing, and the old plan
    comment does not stay up looking current."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    with serve("github") as forge:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work.root), **forge_env(forge, work)}
        proc = subprocess.run(
            ["bash", str(PLAN_SH)], cwd=work.root, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        [comment] = marked(forge)
    assert proc.returncode == 1
    assert "capctl is not on PATH: install it first" in proc.stderr and "validate found errors" not in proc.stderr
    assert "❌ capctl plan failed (exit 1)" in comment["body"]


def test_paths_given_one_per_line_are_all_planned(work: Workdir) -> None:
    """A multi-line `paths:` input (one path per line, as YAML lists are often written) plans every path, not
    only the first line's: a job left out would be planned as a delete."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    (work.root / "more").mkdir()
    (work.root / "more" / "jobs.yaml").write_text(snapshot_job("hall", ["hall-a"]))
    with serve("github") as forge:
        proc = run_plan_sh(work, forge, CAPCTL_PATHS="specs\nmore\n", CAPCTL_COMMENT="false")
    assert proc.returncode == 2, proc.stderr
    planned = {c["key"] for c in json.loads((work.root / "plan.json").read_text())["changes"]}
    assert planned == {"SnapshotJob/audit/lobby", "SnapshotJob/hall/hall-a"}


def test_a_pattern_in_paths_is_expanded_as_a_shell_would(work: Workdir) -> None:
    """Walk 60e-6: no shell reads `paths`, so `specs/*.yaml` (as `capctl plan specs/*.yaml` in a terminal) reached
    capctl as written and failed the job, `specs/*.yaml: no such file or directory`. A pattern matching nothing
    stays as written, and capctl names it."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    (work.root / "more").mkdir()
    (work.root / "more" / "hall.yaml").write_text(snapshot_job("hall", ["hall-a"]))
    (work.root / "more" / "notes.txt").write_text("not a spec")
    with serve("github") as forge:
        proc = run_plan_sh(work, forge, CAPCTL_PATHS="specs/*.yaml more/*.y[a]ml", CAPCTL_COMMENT="false")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        planned = {c["key"] for c in json.loads((work.root / "plan.json").read_text())["changes"]}
        assert planned == {"SnapshotJob/audit/lobby", "SnapshotJob/hall/hall-a"}
        proc = run_plan_sh(work, forge, CAPCTL_PATHS="specs/*.yml", CAPCTL_COMMENT="false")
    assert proc.returncode == 1 and "specs/*.yml: no such file or directory" in proc.stdout + proc.stderr


@pytest.mark.parametrize("plan_args", ["-l 'team=safety'", '--target "SnapshotJob/*"'])
def test_plan_args_in_shell_quotes_fail_the_job_rather_than_plan_nothing(work: Workdir, plan_args: str) -> None:
    """Walk 58d: no shell reads `plan-args`, so `-l 'team=safety'` reached capctl as the label `'team`: a plan
    of nothing, "no changes", exit 0, a green check on a pull request that changes every task."""
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    with serve("github") as forge:
        proc = run_plan_sh(work, forge, CAPCTL_PLAN_ARGS=plan_args, CAPCTL_COMMENT="false")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "with no shell to remove quotes: " + plan_args.split()[1] + " would reach capctl" in proc.stderr


def workflow_step(path: Path, job: str, name: str) -> str:
    steps = yaml.safe_load(path.read_text())["jobs"][job]["steps"]
    return str(next(step["run"] for step in steps if step.get("name") == name))


def test_the_scheduled_drift_check_fails_when_the_vendors_drifted(work: Workdir) -> None:
    workflow = ROOT / "examples" / "ci" / "github-drift.yaml"
    assert yaml.safe_load(workflow.read_text())[True]["schedule"][0]["cron"]  # YAML 1.1 reads `on` as True
    script = workflow_step(workflow, "drift", "Plan against the vendors")
    env = {**work.env, "PATH": f"{Path(sys.executable).parent}:{work.env.get('PATH', '')}"}

    def drift_check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", script], cwd=work.root, env=env, capture_output=True, text=True, timeout=120
        )

    work.write("jobs.yaml", snapshot_job("audit", ["lobby"], idle="20s"))
    work.apply()
    in_sync = drift_check()
    assert in_sync.returncode == 0 and "No drift" in in_sync.stdout
    work.sim.advance(21)  # the room stays empty: the vendor stops the task, nobody re-issues it
    drifted = drift_check()
    assert drifted.returncode == 1 and "drifted from the specs" in drifted.stdout and "reissue" in drifted.stdout
    # No state configured: no plan against none, which showed every task as a create, "drifted" (walk 41D-3).
    env["CAPCTL_STATE"] = ""
    unset = drift_check()
    assert unset.returncode == 1 and "::error::CAPCTL_STATE is not set" in unset.stdout, unset.stdout
    assert "drifted" not in unset.stdout and not (work.root / ".capctl").exists()
    gitlab = yaml.safe_load((ROOT / "examples" / "ci" / "gitlab-ci.yml").read_text())["drift"]["script"]
    commands = "\n".join(gitlab)
    unset = subprocess.run(
        ["bash", "-ec", commands], cwd=work.root, env=env, capture_output=True, text=True, timeout=60
    )
    assert unset.returncode == 1 and "CAPCTL_STATE is not set" in unset.stdout, unset.stdout + unset.stderr


CI_FILES = [ROOT / "action" / "plan.sh", *sorted((ROOT / "examples" / "ci").iterdir()), ROOT / "action.yml"]
# A command line: its words up to the end of the line, or of the lines a trailing backslash continues.
CAPCTL_LINE = re.compile(r"\bcapctl((?:(?:[ \t]*\\\n[ \t]*|[ \t]+)[^\s|;&)>]+)+)")


def test_every_capctl_command_and_option_in_the_ci_files_exists() -> None:
    group = cast(Any, typer.main.get_command(app))
    root_options = {o for p in group.params for o in p.opts}
    checked = 0
    for path in CI_FILES:
        for match in CAPCTL_LINE.finditer(path.read_text()):
            line = re.split("[#`]", match.group(1))[0]  # a shell comment ends the command, a backtick prose's
            words = [w.strip("\"'`") for w in line.split() if not w.startswith(("$", '"$'))]
            words = [w for w in words if w not in root_options]
            if not words or words[0] not in group.commands:
                continue  # prose ("capctl action", "capctl repository"), not a command line
            command = group.commands[words[0]]
            options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            for word in words[1:]:
                if word.startswith("-"):
                    assert word.split("=")[0] in options, f"{path.name}: capctl {words[0]} has no {word}"
            checked += 1
    assert checked >= 6


def test_action_is_composite_and_uses_only_what_it_declares() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    text = (ROOT / "action.yml").read_text()
    used = set(re.findall(r"inputs\.([\w-]+)", text))
    assert used == set(action["inputs"]), "every input is used, and only declared ones"
    for path in re.findall(r"\$GITHUB_ACTION_PATH/([\w./-]+)", text):
        assert (ROOT / path).exists(), path
    # Every variable plan.sh takes (its header) is an input: CAPCTL_OUT_DIR was not, so two plans in one job
    # (two comment-ids) wrote the same plan.json and plan.md, and the artifact kept the last one only.
    taken = set(re.findall(r"^#   (CAPCTL_\w+) ", PLAN_SH.read_text(), re.MULTILINE))
    step = next(s for s in action["runs"]["steps"] if s.get("id") == "plan")
    assert len(taken) >= 5 and taken <= set(step["env"]), f"not inputs of the action: {taken - set(step['env'])}"
    written = set(re.findall(r'echo "([\w-]+)=', PLAN_SH.read_text()))
    for output in action["outputs"].values():
        step_output = re.fullmatch(r"\$\{\{ steps\.plan\.outputs\.([\w-]+) \}\}", output["value"])
        assert step_output and step_output.group(1) in written


def load_plan_comment() -> Any:
    spec = importlib.util.spec_from_file_location("plan_comment", ROOT / "action" / "plan_comment.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_plan_too_long_for_a_comment_is_cut_and_says_where_the_rest_is(tmp_path: Path) -> None:
    plan_comment = load_plan_comment()
    plan = tmp_path / "plan.md"
    plan.write_text("| + | `SnapshotJob/audit/room` | create | new task |\n" * 2000)  # ~100,000 characters
    with serve("github") as forge:
        work_env = {"GITHUB_API_URL": forge.url, "GITHUB_REPOSITORY": "o/r", "GITHUB_TOKEN": TOKEN}
        args = ["--plan", str(plan), "--exit-code", "2", "--number", "7", "--where", "the capctl-plan artifact"]
        assert plan_comment.main(args, env=work_env) == 0
        [comment] = forge.comments
    assert len(comment["body"]) < 65_536
    assert "the whole plan is in the capctl-plan artifact.)" in comment["body"].split("|")[0]  # above the plan


def test_a_cut_plan_says_so_where_it_is_seen_and_keeps_its_markup_whole(tmp_path: Path) -> None:
    """Over 50 entries, "What each change does" is folded: a note at the cut would sit inside the fold, unseen,
    under a table that looks complete. It goes under the headline; the cut falls at a line's end and the
    fold is closed."""
    plan_comment = load_plan_comment()
    rows = [f"| ➕ | `SnapshotJob/job-{i:04d}/room` | create | new task: not in state |" for i in range(600)]
    entries = [f"- `SnapshotJob/job-{i:04d}/room`: provider volc · interval 5s · storage tos audit" for i in range(600)]
    details = ["<details><summary>What each change does</summary>", "", *entries, "", "</details>"]
    plan = "\n".join(["### capctl plan", "", "| | Task | Action | Reason |", "|---|---|---|---|", *rows, "", *details])
    body = plan_comment.comment_body(MARKER, plan + "\n", 2, "the capctl-plan artifact")
    assert len(plan) > plan_comment.MAX_BODY > len(body) - 200
    before_plan, _, shown = body.partition("### capctl plan")
    assert "(The plan was cut at 60,000 characters: the whole plan is in the capctl-plan artifact.)" in before_plan
    assert shown.count("<details>") == shown.count("</details>") == 1
    assert set(shown.splitlines()) <= set(plan.splitlines()), "a line was cut in half"


def test_a_cut_plan_never_hides_a_delete_or_a_replace(tmp_path: Path) -> None:
    """The plan lists deletes after every declared task: 2,000 new single-room jobs and one removed were cut at
    row ~880, the delete counted in the summary line but not named in the comment (walk 11b). The markdown plan
    lists deletes and replaces first; the rest keeps its order."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "providers.yaml").write_text(providers("http://127.0.0.1:9"))
    (specs / "storage.yaml").write_text(STORAGE)
    (specs / "jobs.yaml").write_text("---\n".join(snapshot_job(f"job-{i:04d}", [f"room-{i}"]) for i in range(2000)))
    spec_set = load_spec_set([specs], env={"S3_AK": "AKCANARYCUT00001", "S3_SK": "canary-cut-secret"})
    kept = spec_set.tasks["SnapshotJob/job-0007/room-7"]
    records = {
        "SnapshotJob/gone/lobby": record_for(kept).evolve(key="SnapshotJob/gone/lobby"),
        kept.key: record_for(kept).evolve(spec_hash="changed"),  # a replace, in the middle of the plan's order
    }
    plan = plan_to_json(
        diff(spec_set.tasks, records, {}, options=PlanOptions(refreshed=False), state_serial=1, now=0.0)
    )
    markdown = render_markdown(plan)
    body = load_plan_comment().comment_body(MARKER, markdown, 2, "the capctl-plan artifact")
    assert "(The plan was cut at 60,000 characters" in body and "`SnapshotJob/job-1999/room-1999`" not in body
    table = [line for line in body.splitlines() if line.startswith("| ") and "Task" not in line]
    assert [row.split(" | ")[2] for row in table[:2]] == ["delete", "replace"]
    assert "`SnapshotJob/gone/lobby`" in table[0] and "`SnapshotJob/job-0007/room-7`" in table[1]
    assert "`SnapshotJob/job-0000/room-0`" in table[2]  # then the plan's own order


def test_several_plans_in_one_pull_request_each_name_theirs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Walk 60e-7: `comment-id` told the script which comment is which, not the reviewer: two environments' plan
    comments both read "capctl: changes to apply". A `-->` in it ended the hidden marker, the rest shown."""
    plan_comment = load_plan_comment()
    (tmp_path / "plan.md").write_text("### capctl plan\n")
    with serve("github") as forge:
        env = {"GITHUB_API_URL": forge.url, "GITHUB_REPOSITORY": "o/r", "GITHUB_TOKEN": TOKEN}
        for name, code in [("staging", "0"), ("eu/prod", "2"), ("default", "1")]:
            args = ["--plan", str(tmp_path / "plan.md"), "--exit-code", code, "--number", "7", "--id", name]
            assert plan_comment.main(args, env=env) == 0
        headlines = [c["body"].splitlines()[:2] for c in forge.comments]
        assert headlines == [
            ["<!-- capctl-plan:staging -->", "#### ✅ capctl (staging): no changes"],
            ["<!-- capctl-plan:eu/prod -->", "#### capctl (eu/prod): changes to apply"],
            [MARKER, "#### ❌ capctl plan failed (exit 1): no plan. The job log says why."],
        ]
        forge.requests.clear()
        with pytest.raises(SystemExit) as exited:
            plan_comment.main(["--plan", str(tmp_path / "plan.md"), "--exit-code", "2", "--id", "x --> <b>"], env=env)
        assert exited.value.code == 1 and forge.requests == []
    assert "'x --> <b>': a comment-id takes letters, digits, spaces and" in capsys.readouterr().err


def test_a_usage_error_exits_1_never_2_which_means_changes(capsys: pytest.CaptureFixture[str]) -> None:
    plan_comment = load_plan_comment()
    with pytest.raises(SystemExit) as exited:
        plan_comment.main(["--exit-code", "2"], env={})
    assert exited.value.code == 1
    assert "the following arguments are required: --plan" in capsys.readouterr().err


def test_a_missing_variable_is_named_and_nothing_is_sent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_comment = load_plan_comment()
    (tmp_path / "plan.md").write_text("No changes.\n")
    with serve("gitlab") as forge:
        env = {"GITLAB_CI": "true", "CI_API_V4_URL": forge.url, "CI_PROJECT_ID": "o/r", "CI_MERGE_REQUEST_IID": "7"}
        assert plan_comment.main(["--plan", str(tmp_path / "plan.md"), "--exit-code", "0"], env=env) == 1
        assert forge.requests == []
    assert "plan_comment: GITLAB_TOKEN is not set" in capsys.readouterr().err


def test_the_workflow_cuts_a_long_plan_where_it_is_seen_and_as_valid_text(tmp_path: Path) -> None:
    """github-actions.yaml's own "Prepare the comment" step, run by bash as the runner runs it: on a plan over
    60,000 bytes of multi-byte text, the comment says first that it was cut, is valid UTF-8 (no character cut
    in half) and closes the fold it cut into."""
    workflow = yaml.safe_load((ROOT / "examples" / "ci" / "github-actions.yaml").read_text())
    [step] = [s for s in workflow["jobs"]["plan"]["steps"] if s.get("name") == "Prepare the comment"]
    entries = [f"- `SnapshotJob/job-{i:04d}/room` ➕ provider volc · interval 5s" for i in range(1500)]
    plan = "\n".join(["### capctl plan", "", "<details><summary>What each change does</summary>", "", *entries])
    (tmp_path / "plan.md").write_text(plan + "\n\n</details>\n")
    subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=tmp_path, check=True, timeout=30)
    comment = (tmp_path / "comment.md").read_bytes().decode("utf-8")  # raises on a character cut in half
    assert comment.startswith("(The plan was cut at 60,000 characters")
    assert comment.count("<details>") == comment.count("</details>") == 1
    assert len(comment.encode()) < 65_536


@pytest.mark.parametrize("path", [p for p in CI_FILES if p.suffix in (".yml", ".yaml")], ids=lambda p: p.name)
def test_every_ci_file_installs_capctl_from_its_sources_with_the_pins(path: Path) -> None:
    """`pip install capctl` installs another tool of that name from PyPI (capctl is not published there), with
    the job's vendor secrets in its environment. Every install names capctl's sources and its constraints, or
    the file uses the action, which does so."""
    text = path.read_text()
    installs = [shlex.split(cmd) for line in text.splitlines() for cmd in re.findall(r"pip install (.*?)(?:#|$)", line)]
    assert installs or "uses: example/capctl@" in text, "capctl is installed"
    for args in installs:
        requirements = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] != "-c"]
        assert "-c" in args and requirements, args
        assert not any(re.match(r"capctl\b", r) for r in requirements), f"capctl by name, from the index: {args}"


def test_every_command_in_the_ci_files_is_text() -> None:
    """Walk 41D-4: an unquoted `- test … || { echo "…: …"; exit 1; }` in gitlab-ci.yml is a YAML mapping (a `: `
    in a plain scalar), not a command: GitLab refuses the whole file (`script config should be a string or a
    nested array of strings`), so no job of the example ran. GitHub's `run:` likewise."""
    gitlab = yaml.safe_load((ROOT / "examples" / "ci" / "gitlab-ci.yml").read_text())
    for name, job in gitlab.items():
        for key in ("before_script", "script", "after_script"):
            for line in job.get(key, []) if isinstance(job, dict) else []:
                assert isinstance(line, str), f"gitlab-ci.yml {name}.{key}: {line!r} is not a command"
    for path in [*sorted((ROOT / "examples" / "ci").glob("github-*.yaml")), ROOT / "action.yml"]:
        data = yaml.safe_load(path.read_text())
        jobs = data["jobs"].values() if "jobs" in data else [data["runs"]]
        for step in (step for job in jobs for step in job["steps"]):
            assert isinstance(step.get("run", ""), str), f"{path.name}: {step!r}"


def example_spec_variables() -> set[str]:
    """Every `{env: NAME}` examples/specs reference without a default: `validate --resolve-secrets` in an
    empty environment names each one."""
    capctl = str(Path(sys.executable).parent / "capctl")
    args = [capctl, "--no-color", "validate", "--resolve-secrets", str(ROOT / "examples" / "specs")]
    listed = subprocess.run(args, env={}, capture_output=True, text=True, timeout=60, check=False)
    needed = set(re.findall(r"environment variable ([A-Z0-9_]+) is not set", listed.stdout + listed.stderr))
    assert len(needed) >= 9, listed.stdout + listed.stderr
    return needed


def test_the_github_workflows_give_every_variable_the_example_specs_reference() -> None:
    """Copied beside examples/specs, a workflow must resolve every variable they reference: the Storage's OSS keys
    were missing, so every plan, drift check and apply failed (`environment variable OSS_ACCESS_KEY is not set`)."""
    needed = example_spec_variables()
    for path in sorted((ROOT / "examples" / "ci").glob("github-*.yaml")):
        given = set(yaml.safe_load(path.read_text())["env"])
        assert needed <= given, f"{path.name} lacks {sorted(needed - given)}"


def test_the_gitlab_example_names_every_variable_the_example_specs_reference() -> None:
    """GitLab takes its variables from the project's settings, so the file's header is the list: it named no app
    id (validate itself needs them) and no OSS key."""
    lines = (ROOT / "examples" / "ci" / "gitlab-ci.yml").read_text().splitlines()
    header = " ".join(line for line in lines if line.startswith("#"))
    assert {name for name in example_spec_variables() if name not in header} == set()


def test_a_failure_to_say_who_the_token_is_fails_the_job_and_posts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only GitHub's 403 (its GITHUB_TOKEN may not ask) means "a bot's comments are ours". A 502 or an unreachable
    forge on `GET /user` was taken as that too: on GitLab (no bot type) and for a PAT the token's own comment
    was then a stranger's, and every such push posted one more plan comment (walk 11A-3)."""
    plan_comment = load_plan_comment()
    (tmp_path / "plan.md").write_text("No changes.\n")
    with serve("gitlab") as forge:
        forge.add(f"{MARKER}\n#### ✅ capctl: no changes", BOT)
        env = {"GITLAB_CI": "true", "CI_API_V4_URL": forge.url, "CI_PROJECT_ID": "o/r", "GITLAB_TOKEN": TOKEN}
        args = ["--plan", str(tmp_path / "plan.md"), "--exit-code", "0", "--number", "7"]
        forge.user_status = 502
        assert plan_comment.main(args, env=env) == 1
        assert len(forge.comments) == 1 and [r for r in forge.requests if r[0] != "GET"] == []
        assert "GitLab answered 502 to GET" in capsys.readouterr().err
        forge.user_status = None
        assert plan_comment.main(args, env=env) == 0
        assert len(forge.comments) == 1 and [r[0] for r in forge.requests if r[0] != "GET"] == ["PUT"]


def test_the_plan_jobs_run_one_plan_per_pull_request_at_a_time() -> None:
    """Walk 60e-5: two pushes in quick succession ran two plans at once. On a new pull request both found no
    comment and both posted one (the older then stayed up, never updated: the script edits the first); later, a
    slower run of the older push wrote its plan over the newer one's. Each plan job cancels the one it
    supersedes, per workflow and pull request (GitLab: an interruptible job, cancelled by the newer pipeline)."""
    ci = ROOT / "examples" / "ci"
    pull_request = yaml.safe_load((ci / "github-pull-request.yaml").read_text())
    actions = yaml.safe_load((ci / "github-actions.yaml").read_text())
    for concurrency in (pull_request["concurrency"], actions["jobs"]["plan"]["concurrency"]):
        assert concurrency["cancel-in-progress"] is True
        assert "${{ github.workflow }}" in concurrency["group"]
        assert "${{ github.event.pull_request.number }}" in concurrency["group"]
    assert yaml.safe_load((ci / "gitlab-ci.yml").read_text())["plan"]["interruptible"] is True


def test_the_github_workflows_of_the_kit_read_the_same_settings_the_same_way() -> None:
    """A user who takes github-actions.yaml with github-drift.yaml (or github-pull-request.yaml) sets up one
    set of secrets and writes the app ids once per file alike. Walk 42B-5: after 41D-2 github-actions.yaml wrote
    the app ids (a fork's pull request gets no repository variable) while the other two read `vars.…`: one kit,
    two places to keep the same ids, and an unset repository variable failed only the drift and plan runs."""
    workflows = {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples" / "ci").glob("github-*"))}
    assert len(workflows) == 3
    envs = {name: workflow["env"] for name, workflow in workflows.items()}
    first = envs["github-actions.yaml"]
    for name, env in envs.items():
        assert not [k for k, v in env.items() if "vars." in str(v)], f"{name} reads a repository variable"
        assert env == first, f"{name}'s env differs from github-actions.yaml's"
