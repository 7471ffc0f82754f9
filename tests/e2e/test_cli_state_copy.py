"""`capctl state copy`: going from one SQLite state to PostgreSQL (several replicas) and back, as the
operator does it (docs/state.md "Moving a state"): the copy lists as the source did, a destination holding
tasks is refused, a state a daemon holds is refused before anything is created, the password of a URL is
never shown, and a large state reports its progress."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from reconciler.state import open_state
from tests.e2e.test_cli_contract import capctl
from tests.state.conftest import pg_url  # noqa: F401  (the suite's PostgreSQL, a schema per test)
from tests.state.helpers import make_record


def make_state(path: Path, count: int) -> str:
    url = f"sqlite:///{path}"
    store = open_state(url)
    store.fingerprint_key()  # as every command takes it first: keyed records with no key are damage (walk 16E-8)
    store.put_many(make_record(f"SnapshotJob/audit/room-{n}") for n in range(count))
    store.close()
    return url


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", "postgresql://postgres:hunter2-canary@")  # trust auth: ignored


def test_sqlite_to_postgres_and_back(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    source = make_state(tmp_path / "state.db", 3)
    to_pg = capctl("state", "copy", "--to", with_password(pg_url), cwd=tmp_path, env={"CAPCTL_STATE": source})
    assert to_pg.returncode == 0, to_pg.stderr
    assert "Copied the state at sqlite:///" in to_pg.stdout and "3 task record(s)" in to_pg.stdout
    assert "Point every capctl at postgresql://postgres@127.0.0.1" in to_pg.stdout
    assert "hunter2-canary" not in to_pg.stdout + to_pg.stderr and to_pg.stderr == ""

    listed = [capctl("state", "list", "-o", "json", "--state", url, cwd=tmp_path).stdout for url in (source, pg_url)]
    assert listed[0] == listed[1] and '"serial": 1' in listed[0]

    again = capctl("state", "copy", "--from", source, "--to", pg_url, cwd=tmp_path)
    assert (
        again.returncode == 1
        and "already holds a state (3 task record(s), serial 1): nothing was copied" in again.stderr
    )

    back = capctl("state", "copy", "--from", pg_url, "--to", "sqlite:///back/state.db", cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    restored = capctl("state", "list", "-o", "json", "--state", "sqlite:///back/state.db", cwd=tmp_path).stdout
    assert restored == listed[0]


def test_the_sample_of_the_docs_reads_as_capctl_prints_it(tmp_path: Path) -> None:
    """Walk 59e (58d: the docs' output samples were never compared with what capctl prints): docs/state.md's
    `state copy` sample, its URLs and numbers aside, is the output of a copy."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "state.md").read_text()
    [sample] = re.findall(r"```\n\$ capctl state copy [^\n]*\n(.*?)```", page, re.S)
    source = make_state(tmp_path / "state.db", 3)
    copied = capctl("state", "copy", "--from", source, "--to", "sqlite:///copy.db", cwd=tmp_path)

    def shape(text: str) -> str:
        return re.sub(r"\d[\d,]*", "N", re.sub(r"(sqlite|postgresql)://\S+", "URL", text))

    assert copied.returncode == 0, copied.stderr
    assert shape(copied.stdout) == shape(sample)


def test_a_state_a_daemon_holds_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    source = make_state(tmp_path / "state.db", 1)
    daemon = open_state(source)
    with daemon.lock("capctl run on http://127.0.0.1:61599"):
        refused = capctl("state", "copy", "--from", source, "--to", "sqlite:///copy.db", cwd=tmp_path)
    daemon.close()
    assert refused.returncode == 1
    assert "the capctl daemon holds the state lock" in refused.stderr and "every replica" in refused.stderr
    assert "then start it on the copy (--state, CAPCTL_STATE)." in refused.stderr  # was: "start it again"
    assert "the state lock of sqlite:///" in refused.stderr and "state.db (the source) (pid " in refused.stderr
    assert not (tmp_path / "copy.db").exists()


def test_a_daemon_already_on_the_destination_is_named_as_such_and_force_is_said_to_forget_its_tasks(
    tmp_path: Path,
) -> None:
    """The cluster's daemon deployed on the new store before the copy (walk 36d-1): the refusal did not say which
    state was held and told the user to "start it on the copy", which it ran on already; nor did the refusal of
    the records it wrote there say that `--force` forgets the tasks it started without stopping them."""
    source = make_state(tmp_path / "state.db", 1)
    target = make_state(tmp_path / "cluster.db", 2)  # what the early daemon started there
    daemon = open_state(target)
    with daemon.lock("capctl run on http://127.0.0.1:61599"):
        refused = capctl("state", "copy", "--from", source, "--to", target, cwd=tmp_path)
    daemon.close()
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "cluster.db (the destination) (pid " in said, said
    assert "It acts on the state the copy would write into" in said and "start it on the copy" not in said
    assert "a copy with --force forgets without stopping" in said

    held = capctl("state", "copy", "--from", source, "--to", target, cwd=tmp_path)
    said = " ".join(held.stderr.split())
    assert held.returncode == 1 and "already holds a state (2 task record(s), serial 1)" in said
    assert "a task only its records hold (one a daemon started there) is forgotten, not stopped" in said


def test_a_large_state_reports_its_progress(tmp_path: Path) -> None:
    source = make_state(tmp_path / "state.db", 20_000)
    done = capctl("state", "copy", "--from", source, "--to", "sqlite:///copy.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["copied 10,000 of 20,000 task records", "copied 20,000 of 20,000 task records"]


def test_a_missing_source_or_the_same_state_twice_is_refused(tmp_path: Path) -> None:
    missing = capctl("state", "copy", "--from", "sqlite:///none.db", "--to", "sqlite:///copy.db", cwd=tmp_path)
    assert missing.returncode == 1 and "no state at sqlite:///none.db" in missing.stderr
    source = make_state(tmp_path / "state.db", 1)
    same = capctl("state", "copy", "--from", source, "--to", "sqlite:///state.db", cwd=tmp_path)
    assert same.returncode == 1 and "--from and --to name the same state" in same.stderr
    (tmp_path / "link.db").symlink_to("state.db")  # one file by another name: it said another capctl held it
    linked = capctl("state", "copy", "--from", source, "--to", "sqlite:///link.db", "--force", cwd=tmp_path)
    assert linked.returncode == 1 and "another capctl" not in linked.stderr
    assert (
        "--from and --to name the same state (sqlite:///" in linked.stderr and "link.db is the source" in linked.stderr
    )
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "copy.db").exists()


def test_a_copy_interrupted_or_killed_half_way_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    source = make_state(tmp_path / "state.db", 30_000)
    env = {k: v for k, v in os.environ.items() if k != "CAPCTL_STATE"}
    command = [sys.executable, "-m", "reconciler", "state", "copy", "--from", source, "--to", "sqlite:///copy.db"]
    paused = {**env, "CAPCTL_FAILPOINTS": "state-copy.records-written:pause"}  # held after 10,000 records
    ctrl_c = subprocess.Popen(
        command, cwd=tmp_path, env=paused, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert ctrl_c.stderr is not None
    assert ctrl_c.stderr.readline() == "copied 10,000 of 30,000 task records\n"
    ctrl_c.send_signal(signal.SIGINT)  # in the middle of the destination's transaction, however loaded the machine
    _, err = ctrl_c.communicate(timeout=60)
    assert ctrl_c.returncode == 130 and "interrupted: nothing was copied, sqlite:///" in err and "Traceback" not in err

    killed = capctl(*command[3:], cwd=tmp_path, env={"CAPCTL_FAILPOINTS": "state-copy.records-written"})
    assert killed.returncode == 137  # died as kill -9 would, after its first 10,000 records
    listed = capctl("state", "list", "--state", "sqlite:///copy.db", cwd=tmp_path)
    assert listed.stdout.startswith("0 tasks (state serial 0)")  # the new, empty state: no record of the copy
