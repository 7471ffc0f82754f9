"""What a platform team reads every day (walk 13f): `state list` in an 80-column terminal and in a pipe, and
`wake` given the globs `state list` takes. In process (CliRunner) on real SQLite files: no vendor is called."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from reconciler import cli
from reconciler.model import TaskStatus
from reconciler.plan import keys_matching
from reconciler.state import open_state
from tests.state.helpers import make_record

ERROR = "InvalidParameter: [/StorageConfig/TosConfig/Bucket] bucket 'audit' does not exist in region cn-north-1"
LONG = "SnapshotJob/premium-members-audit/vip-lounge-with-a-rather-long-room-identifier-0001"


def _state(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    now = time.time()
    store = open_state(url, init=True)
    store.put_many(
        [
            make_record("SnapshotJob/cls/class-1", selector="class-*", vendor_task_id="1f0e2d3c-4b5a-6978"),
            make_record(
                "SnapshotJob/cls/直播间-一号",
                status=TaskStatus.DORMANT,
                selector="class-*",
                stop_reason="idle timeout (room empty)",
                next_attempt_at=now + 1800,
                reissue_count=4,
            ),
            # (refused: nothing runs, its REASON the error alone)
            make_record("SnapshotJob/audit/lobby", status=TaskStatus.FAILED, last_error=ERROR, start_refused=True),
            make_record(LONG, status=TaskStatus.STOPPED, stop_reason="vendor fault: InternalError"),
        ]
    )
    store.close()
    return url


def test_state_list_fits_a_terminal_cuts_nothing_in_a_pipe_and_has_every_column_wide(tmp_path: Path) -> None:
    """With a selector task, `state list` was ~230 columns wide: every line wrapped into noise at 80 columns."""
    url = _state(tmp_path)
    runner = CliRunner()
    tty = runner.invoke(cli.app, ["state", "list", "--state", url], env={"COLUMNS": "80", "TTY_COMPATIBLE": "1"})
    lines = tty.stdout.splitlines()
    assert lines[1].split("   ")[0].rstrip() == "KEY" and lines[1].split()[-1] == "REASON", lines
    short = [line for line in lines if not line.startswith(LONG)]
    assert all(cell_len(line) <= 80 for line in short), short
    # The error is cut with an ellipsis; a key never is (the long one pushes only its own row); CJK lines up.
    assert any(line.startswith("SnapshotJob/audit/lobby ") and line.endswith("…") for line in lines), lines
    assert any(line.startswith(f"{LONG}   stopped") for line in lines), lines
    dormant = next(line for line in lines if "dormant" in line)
    assert cell_len(dormant.split("dormant")[0]) == cell_len(lines[1].split("STATUS")[0]), lines
    assert re.fullmatch("4 +in (30m|29m[0-9]+s) +idle.*", dormant.split("dormant   ")[1]), dormant  # not a date
    # A pipe (COLUMNS set or not): every cell whole, for grep and awk; the same columns.
    piped = runner.invoke(cli.app, ["state", "list", "--state", url], env={"COLUMNS": "80"}).stdout
    assert f"   {ERROR}\n" in piped and "idle timeout (room empty)" in piped and "…" not in piped
    # -o wide: every column as before (vendor id, last look, the selector's columns), never cut.
    wide = runner.invoke(
        cli.app, ["state", "list", "-o", "wide", "--state", url], env={"COLUMNS": "80", "TTY_COMPATIBLE": "1"}
    ).stdout.splitlines()
    assert wide[1].split()[:5] == ["KEY", "JOB", "ROOM", "SELECTOR", "STATUS"], wide
    assert any("   1f0e2d3c-4b5a-6978   " in line for line in wide) and any(line.endswith(ERROR) for line in wide)
    # json is unchanged by a terminal.
    data = json.loads(runner.invoke(cli.app, ["state", "list", "-o", "json", "--state", url]).stdout)
    assert {t["key"]: t["last_error"] for t in data["tasks"]}["SnapshotJob/audit/lobby"] == ERROR
    bad = runner.invoke(cli.app, ["state", "list", "-o", "yaml", "--state", url])
    assert bad.exit_code == 1 and "--output 'yaml': expected table, wide or json" in bad.stderr


def test_wake_takes_the_globs_state_list_takes_and_wakes_only_waiting_tasks(tmp_path: Path) -> None:
    """`wake` took one exact key: `wake 'SnapshotJob/classes/*'` after a night of empty classrooms was refused
    (walk 8f added a hint naming `state list`); a team then woke forty keys by hand."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    later = time.time() + 3600
    store = open_state(url, init=True)
    store.put_many(
        [
            make_record(
                "SnapshotJob/classes/c-1", status=TaskStatus.DORMANT, next_attempt_at=later, unproductive_runs=4
            ),
            make_record(
                "SnapshotJob/classes/c-2", status=TaskStatus.STOPPED, next_attempt_at=later, unproductive_runs=1
            ),
            make_record("SnapshotJob/classes/c-3", status=TaskStatus.RUNNING),
            make_record("SnapshotJob/lobby/lobby", status=TaskStatus.DORMANT, next_attempt_at=later),
        ]
    )
    store.close()

    def wake(*keys: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli.app, ["wake", *keys, "--state", url])
        return result.exit_code, result.stdout, " ".join(result.stderr.split())

    def statuses() -> dict[str, str]:
        data = json.loads(CliRunner().invoke(cli.app, ["state", "list", "-o", "json", "--state", url]).stdout)
        return {t["key"].rsplit("/", 1)[1]: t["status"] for t in data["tasks"]}

    before = statuses()
    # A glob that matches nothing is refused, also beside one that matches: nothing is woken.
    for keys in (("SnapshotJob/nope/*",), ("SnapshotJob/classes/*", "ThumbnailJob/*")):
        code, _, err = wake(*keys)
        assert code == 1 and "in the state (see `capctl state list`); nothing woken" in err, err
    code, _, err = wake("SnapshotJob/classes/c-?")
    assert code == 1 and "in task keys only * is a wildcard" in err
    assert statuses() == before
    code, out, _ = wake("SnapshotJob/classes/*")
    assert code == 0 and out.splitlines() == [
        "Woke SnapshotJob/classes/c-1 (was dormant after 5 idle runs, next slot "
        + time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(later))
        + ").",
        "Woke SnapshotJob/classes/c-2 (was stopped after 2 idle runs, next slot "
        + time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(later))
        + ").",
        "SnapshotJob/classes/*: left 1 task not waiting (1 running).",
        "Backoff cleared (state serial 2): the next `capctl apply`, or the daemon, starts them now.",
    ]
    assert statuses() == {"c-1": "stopped", "c-2": "stopped", "c-3": "running", "lobby": "dormant"}
    # KIND/* as --target takes it; a task named outright still says so of itself.
    code, out, _ = wake("SnapshotJob/*", "SnapshotJob/classes/c-3")
    assert code == 0 and out.splitlines()[1:] == [
        "SnapshotJob/*: left 2 tasks not waiting (2 stopped).",  # woken above: their backoff is cleared
        "SnapshotJob/classes/c-3 is running: nothing to wake.",
        "Backoff cleared (state serial 3): the next `capctl apply`, or the daemon, starts them now.",
    ], out
    assert out.startswith("Woke SnapshotJob/lobby/lobby (was dormant after 1 idle run, next slot "), out


def test_wake_refuses_a_state_named_beside_a_daemon(tmp_path: Path) -> None:
    """`wake --state URL --daemon URL` asked the daemon and ignored --state in silence (walk 19a): refused as
    the CLI refuses other options that exclude each other, nothing woken; CAPCTL_STATE, a default, yields."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    key = "SnapshotJob/lobby/lobby"
    store = open_state(url, init=True)
    store.put_many([make_record(key, status=TaskStatus.DORMANT, next_attempt_at=time.time() + 3600)])
    store.close()
    nobody = "http://127.0.0.1:63199"  # no daemon listens there
    for args, env in (
        (["--state", url, "--daemon", nobody], {}),
        (["--state", url], {"CAPCTL_DAEMON": nobody}),
    ):
        result = CliRunner().invoke(cli.app, ["wake", key, *args], env=env)
        err = " ".join(result.stderr.split())
        assert result.exit_code == 1 and "--state and --daemon exclude each other" in err, err
    store = open_state(url)
    assert [r.status for r in store.load().records.values()] == [TaskStatus.DORMANT]
    store.close()
    for state in (url, None):  # the daemon is asked (none there)
        asked = CliRunner().invoke(cli.app, ["wake", key, "--daemon", nobody], env={"CAPCTL_STATE": state})
        assert asked.exit_code == 1 and "cannot reach the daemon" in " ".join(asked.stderr.split()), asked.stderr


def test_state_show_and_json_listings_write_a_cjk_room_as_itself_and_escape_what_is_unprintable(
    tmp_path: Path,
) -> None:
    """`state show 'RecordingJob/shows/直播间'` printed `"key": "RecordingJob/shows/\\u76f4\\u64ad\\u95f4"`: no
    one reads that. Text is written as itself now, but for what no terminal should get raw (a bidirectional
    override in a vendor's message would reorder the line; DEL, C1): still escaped, as JSON allows both."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    key, error = "RecordingJob/shows/直播间", "房间 busy \u202egnp.exe\x85 (\U0001f389)"
    store = open_state(url, init=True)
    store.put(make_record(key, status=TaskStatus.FAILED, last_error=error))
    store.close()
    runner = CliRunner()
    shown = runner.invoke(cli.app, ["state", "show", key, "--state", url]).stdout
    listed = runner.invoke(cli.app, ["state", "list", "-o", "json", "--state", url]).stdout
    for out in (shown, listed):
        assert '"key": "RecordingJob/shows/直播间"' in out and "房间 busy \\u202egnp.exe\\u0085 (\U0001f389)" in out, (
            out
        )
        assert "\u202e" not in out and "\x85" not in out
    assert json.loads(shown)["last_error"] == error and json.loads(listed)["tasks"][0]["last_error"] == error


def test_a_selection_typo_is_said_before_the_specs_are_read(tmp_path: Path) -> None:
    """Walk 18H-12: `plan -l 'a b'` (or `--target '[a'`) where the specs cannot be read said only the specs'
    errors (an unset secret where it was tried), the typo not at all."""
    runner = CliRunner()
    for command in ("plan", "apply"):
        for option in (["-l", "team=a b"], ["--target", "[a"]):
            args = [command, str(tmp_path / "nospecs"), *option, "--state", f"sqlite:///{tmp_path / 's.db'}"]
            result = runner.invoke(cli.app, args)
            assert result.exit_code == 1 and "nospecs" not in result.stderr, result.stderr
            assert result.stderr.startswith(f"Error: {option[0]} "), result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_label_selector_that_matches_nothing_says_so_with_the_labels_there_are(tmp_path: Path) -> None:
    """Walk 14b: `state list -l tier=gld` (a typo of gold) printed a bare "0 tasks"; `plan -l` notes it. And
    `state show 'SnapshotJob/audit/*'` said only that no such task exists."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_state(url, init=True)
    store.put_many([make_record("SnapshotJob/audit/lobby", labels={"tier": "gold", "team": "safety"})])
    store.close()
    runner = CliRunner()
    typo = runner.invoke(cli.app, ["state", "list", "-l", "tier=gld", "--state", url])
    assert typo.exit_code == 0 and typo.stdout.startswith("0 tasks")
    assert "-l tier=gld matches no task (labels recorded: team=safety, tier=gold)." in typo.stderr
    # `state show` takes one key: a glob, as list, rm and wake take, is pointed at `state list -o json`.
    glob = runner.invoke(cli.app, ["state", "show", "SnapshotJob/audit/*", "--state", url])
    assert (
        glob.exit_code == 1 and "show takes one key: `capctl state list -o json 'SnapshotJob/audit/*'`" in glob.stderr
    )
    # Walk 18H-9: a mistyped key gets the nearest one, as `state rm`, `wake` and `--target` give it.
    typo_key = runner.invoke(cli.app, ["state", "show", "SnapshotJob/audit/loby", "--state", url])
    assert typo_key.exit_code == 1 and typo_key.stderr.rstrip().endswith("(did you mean SnapshotJob/audit/lobby?)")
    # Walk 21c: a job's key (kind/name) is pointed at the listing of its tasks.
    job = runner.invoke(cli.app, ["state", "show", "SnapshotJob/audit", "--state", url])
    assert job.exit_code == 1 and job.stderr.rstrip().endswith(
        "; SnapshotJob/audit is a job: `capctl state list 'SnapshotJob/audit/*'` lists its tasks"
    )
    status = runner.invoke(cli.app, ["state", "list", "-s", "runing", "--state", url])
    assert status.exit_code == 1 and status.stderr.rstrip().endswith("removed (did you mean 'running'?)")
    none = runner.invoke(cli.app, ["state", "show", "SnapshotJob/audit/loby", "--state", f"{url}-none"])
    assert none.exit_code == 1 and "no state at" in none.stderr and not (tmp_path / "state.db-none").exists()
    # Labels that match, with another filter that leaves nothing: no word about the labels.
    other = runner.invoke(cli.app, ["state", "list", "-l", "tier=gold", "-s", "failed", "--state", url])
    assert other.exit_code == 0 and other.stderr == ""


def test_state_show_of_a_selector_jobs_room_without_a_task_says_why_there_may_be_none(tmp_path: Path) -> None:
    """Walk 25e: on-call asked why room-0003 was not captured; `state show` of its key offered room-0002 alone,
    while its job picks rooms with a selector and left it out (past maxRooms): no task, by design."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_state(url, init=True)
    store.put_many(
        [
            make_record("SnapshotJob/sel/room-0002", selector="room-*"),
            make_record("SnapshotJob/named/lobby"),
        ]
    )
    store.close()
    runner = CliRunner()
    left_out = runner.invoke(cli.app, ["state", "show", "SnapshotJob/sel/room-0003", "--state", url])
    assert left_out.exit_code == 1
    assert (
        "; SnapshotJob/sel picks its rooms with a selector (room-*) and has no task for this room now: "
        "a room it does not cover, one no callback said active, one left out past the job's maxRooms, or "
        "another job's (the status page lists the rooms left out;" in " ".join(left_out.stderr.split())
    )
    named = runner.invoke(cli.app, ["state", "show", "SnapshotJob/named/hall", "--state", url])
    assert named.exit_code == 1 and "picks its rooms" not in named.stderr  # a named room's job: no such story
    # `wake` of it said only "did you mean room-0002?", as show did before (walk 26d-9); the daemon's wake too.
    wake = runner.invoke(cli.app, ["wake", "SnapshotJob/sel/room-0003", "--state", url])
    said = " ".join(wake.stderr.split())
    assert wake.exit_code == 1 and "nothing woken (did you mean SnapshotJob/sel/room-0002?)" in said
    assert "; SnapshotJob/sel picks its rooms with a selector (room-*) and has no task" in said
    named = runner.invoke(cli.app, ["wake", "SnapshotJob/named/hall", "--state", url])
    assert named.exit_code == 1 and "picks its rooms" not in named.stderr


def test_a_whole_task_key_holding_a_star_names_that_task_alone(tmp_path: Path) -> None:
    """Walk 43d-3: a file id (or room id) may hold `*`; its key copied from `state list` into `state rm`
    forgot every task it matched as a glob (three thumbnails, all submitted again by the next apply)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_state(url, init=True)
    star, others = "ThumbnailJob/t/rec/*.mp4", ["ThumbnailJob/t/rec/a.mp4", "ThumbnailJob/t/rec/b.mp4"]
    store.put_many([make_record(key, status=TaskStatus.DONE) for key in (star, *others)])
    store.close()
    runner = CliRunner()
    listed = runner.invoke(cli.app, ["state", "list", star, "-o", "json", "--state", url])
    assert [t["key"] for t in json.loads(listed.stdout)["tasks"]] == [star], listed.stdout
    # Walk 44c-2: the glob meaning of such a key, as README says: a `*` doubled.
    doubled = runner.invoke(cli.app, ["state", "list", "ThumbnailJob/t/rec/**.mp4", "-o", "json", "--state", url])
    assert sorted(t["key"] for t in json.loads(doubled.stdout)["tasks"]) == sorted([star, *others])
    removed = runner.invoke(cli.app, ["state", "rm", star, "--state", url])
    assert removed.exit_code == 0 and "rec/a.mp4" not in removed.stdout, removed.stdout
    left = json.loads(runner.invoke(cli.app, ["state", "list", "-o", "json", "--state", url]).stdout)["tasks"]
    assert sorted(t["key"] for t in left) == others
    # wake and the daemon's sync look KEYs up the same way.
    assert keys_matching([star, "ThumbnailJob/t/*"], [star, *others]) == {
        star: [star],
        "ThumbnailJob/t/*": [star, *others],
    }
    # Not a key of any task, the same text is a glob as before.
    globbed = runner.invoke(cli.app, ["state", "list", "ThumbnailJob/t/rec/*", "-o", "json", "--state", url])
    assert sorted(t["key"] for t in json.loads(globbed.stdout)["tasks"]) == others


def test_a_target_that_is_a_whole_task_key_holding_a_star_plans_that_task_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 43d-3, as `state rm`: `--target` of a thumbnail's key with `*` in its file id planned every file."""
    specs = tmp_path / "specs.yaml"
    specs.write_text(
        "apiVersion: capctl/v1\nkind: Provider\nmetadata: {name: z}\n"
        "spec: {type: zego, appId: 1234567890, serverSecret: {env: Z_SECRET}, rtcEndpoint: 'http://127.0.0.1:9/r'}\n"
        "---\napiVersion: capctl/v1\nkind: ThumbnailJob\nmetadata: {name: t}\nspec:\n  provider: z\n  files:\n"
        + "".join(f"    - {{cdn: huawei, fileId: 'rec/{name}.mp4', interval: 2s}}\n" for name in ("*", "a", "b"))
    )
    monkeypatch.setenv("Z_SECRET", "0123456789abcdef0123456789abcdef")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    out = CliRunner().invoke(cli.app, ["plan", str(specs), "--target", "ThumbnailJob/t/rec/*.mp4", "--state", url])
    assert out.exit_code == 0, out.output
    assert "Plan: 1 to create" in out.stdout and "rec/a.mp4" not in out.stdout, out.stdout
    globbed = CliRunner().invoke(cli.app, ["plan", str(specs), "--target", "ThumbnailJob/t/rec/*", "--state", url])
    assert "Plan: 3 to create" in globbed.stdout, globbed.stdout
    doubled = CliRunner().invoke(cli.app, ["plan", str(specs), "--target", "ThumbnailJob/t/rec/**.mp4", "--state", url])
    assert "Plan: 3 to create" in doubled.stdout, doubled.stdout  # the glob meaning, as README says (walk 44c-2)
