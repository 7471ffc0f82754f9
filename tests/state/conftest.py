"""Fixtures that run one behaviour suite against both stores.

`store_url` is parametrized: a fresh SQLite file, and a fresh schema in the PostgreSQL named by
CAPCTL_TEST_POSTGRES_URL (`source .ci/postgres.sh` starts one; without it the PostgreSQL cases skip).
A schema per test keeps tests independent, also under pytest-xdist.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.state import StateStore, open_state

from .helpers import PG_ENV, with_search_path


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose tables land in a new, empty schema (dropped afterwards)."""
    admin = os.environ.get(PG_ENV)
    if not admin:
        pytest.skip(f"{PG_ENV} is not set (run `source .ci/postgres.sh` first)")
    import psycopg

    schema = f"capctl_t_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(admin, schema)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'state.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[StateStore]:
    opened = open_state(store_url)
    try:
        yield opened
    finally:
        opened.close()
