"""Builders shared by the state tests and their worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from reconciler.model import ApiFamily, JobKind, TaskRecord

PG_ENV = "CAPCTL_TEST_POSTGRES_URL"
REPO = Path(__file__).resolve().parents[2]


def with_search_path(url: str, schema: str) -> str:
    """`url` connecting with `schema` first on the search path (where the store creates its tables)."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def make_record(key: str = "SnapshotJob/lobby-audit/lobby", **changes: Any) -> TaskRecord:
    """A minimal valid record for `key`; `changes` set any other field."""
    kind, _, target = key.split("/", 2)
    base = TaskRecord(
        key=key,
        provider="volc",
        family=ApiFamily.VOLC_SNAPSHOT if kind == JobKind.SNAPSHOT else ApiFamily.ZEGO_RECORD,
        kind=JobKind(kind),
        target=target,
        spec_hash="hmac:spec",
        fixed_hash="hmac:fixed",
    )
    return base.evolve(**changes)


def start_worker(*args: str) -> subprocess.Popen[str]:
    """`python -m tests.state.worker ARGS` from the repository root, output piped as text."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.state.worker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
