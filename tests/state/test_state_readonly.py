"""Read-only opens (`create=False`, for plan / state list / state show): they never create a state.

Run against both stores: no file, directory or table appears; an absent store says where it was looked for;
an existing store opens and reads as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.state import NoState, StateDamaged, StateError, StateMissing, open_state

from .helpers import make_record


def _tables(pg_url: str) -> list[str]:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    return sorted(str(r[0]) for r in rows)


def test_a_missing_store_is_reported_and_nothing_is_created(store_url: str, tmp_path: Path) -> None:
    with pytest.raises(StateMissing, match="no state at") as caught:
        open_state(store_url, create=False)
    if store_url.startswith("sqlite"):
        assert not (tmp_path / "state").exists()  # not even the directory
        assert str(tmp_path / "state" / "state.db") in caught.value.where
    else:
        assert _tables(store_url) == []
        assert "no capctl tables" in caught.value.where


def test_an_existing_store_opens_read_only_and_reads(store_url: str) -> None:
    writer = open_state(store_url)
    writer.put(make_record())
    writer.close()
    reader = open_state(store_url, create=False)
    try:
        snapshot = reader.load()
    finally:
        reader.close()
    assert snapshot.serial == 1 and list(snapshot.records) == ["SnapshotJob/lobby-audit/lobby"]


def test_a_relative_sqlite_url_says_what_it_resolved_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StateMissing) as caught:
        open_state("sqlite:///.capctl/state.db", create=False)
    assert caught.value.where == f"sqlite:///.capctl/state.db (resolved to {tmp_path / '.capctl' / 'state.db'})"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("create", [False, True])
def test_an_empty_file_is_damage_not_a_new_state_and_stays_empty(tmp_path: Path, create: bool) -> None:
    # Read as empty, an apply would start every task again: only `capctl state init` starts a state in it.
    empty = tmp_path / "state.db"
    empty.touch()
    with pytest.raises(StateDamaged, match=r"state\.db looks damaged \(the file is 0 bytes\); .*capctl state init"):
        open_state(f"sqlite:///{empty}", create=create)
    assert empty.stat().st_size == 0
    assert sorted(os.listdir(tmp_path)) == ["state.db"]


def test_no_state_reads_as_a_new_store_and_refuses_writes(tmp_path: Path) -> None:
    missing = StateMissing(str(tmp_path / "none.db"))
    empty = NoState(missing)
    assert empty.load().records == {} and empty.load().serial == 0 == empty.serial()
    with pytest.raises(StateError, match="read-only"):
        empty.put(make_record())
    with pytest.raises(StateError, match="read-only"):
        empty.lock("capctl apply")


def test_plan_and_state_list_on_an_empty_postgres_database_create_no_table(pg_url: str, tmp_path: Path) -> None:
    from tests.e2e.test_cli_contract import capctl, write_specs
    from tests.specdocs import snapshot_job

    write_specs(tmp_path, snapshot_job("audit", ["lobby"]))
    plan = capctl("plan", "--state", pg_url, "--detailed-exitcode", cwd=tmp_path)
    assert plan.returncode == 2 and "(no capctl tables in that database): planning as if nothing" in plan.stderr
    listed = capctl("state", "list", "--state", pg_url, cwd=tmp_path)
    assert listed.returncode == 0 and "No state at postgresql://" in listed.stderr
    assert _tables(pg_url) == []
