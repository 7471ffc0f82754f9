"""States written by older capctl releases (tests/state/fixtures, README there says which commit wrote each):
the current code reads them, plans them unchanged, upgrades them in place, and leaves a release that would
misread the upgraded state something it refuses rather than a plan that replaces every task."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from reconciler import cli
from reconciler.model import RoomActivity, TaskStatus
from reconciler.state import open_state, sqlite_path

from .helpers import REPO

FIXTURES = Path(__file__).parent / "fixtures"
# The quickstart specs those releases applied (unchanged since), and the selector job added beside them.
SELECTOR = (
    "apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata:\n  name: sel-audit\nspec:\n  provider: volc-sim\n"
    '  rooms: {match: "sel-*"}\n  interval: 5s\n  storage: volc-tos\n  idleTimeout: 20s\n'
)
ACCOUNTS = {"volc-sim": "volcengine:capctl-sim-volc", "zego-sim": "zego:1234567890"}


def _restore(url: str, fixture: str) -> None:
    """Load a dump an older capctl's state was saved as, as an operator restoring a backup would."""
    script = (FIXTURES / fixture).read_text()
    if url.startswith("sqlite"):
        path = Path(sqlite_path(url))
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.executescript(script)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(script.encode())


def _meta(url: str) -> tuple[int, int]:
    """(schema_version, serial) as stored."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(url)) as db:
            row = db.execute("SELECT schema_version, serial FROM capctl_meta").fetchone()
    else:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT schema_version, serial FROM capctl_meta").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _plan(url: str, specs: Path) -> str:
    """`capctl plan --no-refresh` (read-only, no vendor call): what the state means to the current code."""
    result = CliRunner().invoke(
        cli.app, ["plan", "--no-refresh", "--state", url, str(specs)], env={"NO_COLOR": "1", "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def _specs(tmp_path: Path, *, selector: bool) -> Path:
    specs = tmp_path / "specs"
    shutil.copytree(REPO / "specs", specs)
    if selector:
        (specs / "selector.yaml").write_text(SELECTOR)
    return specs


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_state_from_before_keyed_hashes_is_planned_unchanged_and_then_refused_by_its_writer(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """afd0986 (schema 1, bare content hashes, no fingerprint key): read and planned as it is; its first writer
    of this version keys the hashes and raises the schema, so that release refuses the state (`state schema
    version 2 was written by a newer capctl`) instead of planning every task as a replace."""
    url: str = request.getfixturevalue("sqlite_url" if store == "sqlite" else "pg_url")
    _restore(url, f"afd0986-{store}.sql")
    specs = _specs(tmp_path, selector=False)
    assert _plan(url, specs).startswith("No changes.")
    assert _meta(url) == (1, 22)  # a plan writes nothing

    writer = open_state(url)  # as `apply` or `run` opens it
    try:
        assert writer.fingerprint_key() is not None
        records = writer.load().records
        assert {r.status for r in records.values()} >= {TaskStatus.RUNNING, TaskStatus.DONE}
        assert all(r.spec_hash.startswith("hmac:") for r in records.values())
        assert _meta(url) == (2, 22)  # in the transaction that keyed them; the serial does not move
        # The room-activity table that a state of schema 2 has is there for the daemon's first report.
        with writer.lock("capctl run"):
            writer.record_rooms([RoomActivity("volcengine:capctl-sim-volc", "lobby", True, 1.0, "callback")])
    finally:
        writer.close()
    assert _plan(url, specs).startswith("No changes.")


def test_a_schema_1_state_with_rooms_by_provider_name_is_read_then_upgraded(pg_url: str, tmp_path: Path) -> None:
    """fce59b5 on PostgreSQL (schema 1: room activity by Provider name, keyed hashes, the inbox and the lock's
    epoch): plan reads the rooms through the names without upgrading; `upgrade_rooms` (run's start) keys
    them by account; a copy keeps what it copies, schema included."""
    _restore(pg_url, "fce59b5-postgres.sql")
    specs = _specs(tmp_path, selector=True)
    assert _plan(pg_url, specs).startswith("No changes.")
    assert _meta(pg_url) == (1, 17)

    copy = f"sqlite:///{tmp_path}/copy.db"
    source, target = open_state(pg_url), open_state(copy)
    try:
        target.import_copy(source.export())
        assert source.upgrade_rooms(ACCOUNTS) == (2, [])
        rooms = {(a.account, a.room, a.active) for a in source.room_activity(ACCOUNTS)}
        assert rooms == {("zego:1234567890", "class-101", True), ("volcengine:capctl-sim-volc", "sel-b", False)}
    finally:
        source.close()
        target.close()
    assert _meta(pg_url) == (2, 17)
    assert _meta(copy) == (1, 17)  # as it was
    for url in (pg_url, copy):
        assert _plan(url, specs).startswith("No changes.")


def test_the_newest_old_layout_reads_whole(sqlite_url: str, tmp_path: Path) -> None:
    """1b4dbdd (schema 2 with the status page's history, before fault_runs, home, reissuing, replacing): its
    dormant task, stopped selector task and history are read as written, and the plan changes nothing."""
    _restore(sqlite_url, "1b4dbdd-sqlite.sql")
    store = open_state(sqlite_url, create=False)
    try:
        records = store.load().records
        assert records["SnapshotJob/lobby-audit/vip-1"].status is TaskStatus.DORMANT
        assert records["SnapshotJob/sel-audit/sel-b"].status is TaskStatus.STOPPED
        assert all(r.fault_runs == 0 and not r.reissuing and not r.replacing for r in records.values())
        assert len(store.history()) == 12
    finally:
        store.close()
    assert _plan(sqlite_url, _specs(tmp_path, selector=True)).startswith("No changes.")


def test_yesterdays_release_layout_reads_whole_and_stays_at_its_schema(sqlite_url: str, tmp_path: Path) -> None:
    """f569545 (schema 2 with epochs, homes, the inbox and history; the release before the 36th wave): its
    failed create, dormant task, stopped selector task, inbox entry, lock epoch, rooms and history are read as
    written; the plan starts nothing anew but the failed create, and a writer of this version leaves the
    schema at 2, so that release still reads the state after it (a rollback needs no restore)."""
    _restore(sqlite_url, "f569545-sqlite.sql")
    specs = _specs(tmp_path, selector=True)
    plan = _plan(sqlite_url, specs)
    assert "previous submission failed" in plan
    assert "Plan: 1 to create, 0 to update in place, 0 to replace, 0 to re-issue, 0 to delete, 6 unchanged." in plan
    store = open_state(sqlite_url, create=False)  # as `apply` or `run` opens it
    try:
        records = store.load().records
        status = {key.rsplit("/", 1)[-1]: record.status for key, record in records.items()}
        assert status["vip-1"] is TaskStatus.DORMANT and status["sel-b"] is TaskStatus.STOPPED
        assert status["2024-11-13.mp4"] is TaskStatus.FAILED
        assert records["SnapshotJob/lobby-audit/lobby"].reissue_count == 1
        assert {r.home for r in records.values() if r.status is TaskStatus.RUNNING} >= {
            "volcengine:capctl-sim-volc at http://127.0.0.1:8750/volc"
        }
        rooms = {(a.account, a.room, a.active) for a in store.room_activity(ACCOUNTS)}
        assert ("volcengine:capctl-sim-volc", "sel-a", True) in rooms and len(rooms) == 4
        assert store.upgrade_rooms(ACCOUNTS) is None  # a run's start finds nothing to upgrade
        assert len(store.history()) == 11
        (entry,) = store.inbox_claim(now=1796637731.0, keep=1e9)
        assert entry.payload["event"] == "SnapshotRealTimeData" and entry.payload["room_id"] == "lobby"
    finally:
        store.close()
    assert _meta(sqlite_url) == (2, 32)
