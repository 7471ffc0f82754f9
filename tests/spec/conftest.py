"""Helpers for the spec-language tests: write spec text into tmp_path and load it."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from reconciler.spec import SpecErrors, SpecSet, load_spec_set

HERE = Path(__file__).parent
BASE = HERE / "base.yaml"
# Values the tests' references resolve to; none of them may ever show up in output.
SECRET_ENV = {"AK": "corpus-access-key-value", "SK": "corpus-secret-key-value", "APP": "7"}

Loader = Callable[..., SpecSet]
ErrorsOf = Callable[..., list[str]]


def job(kind: str = "SnapshotJob", name: str = "j", body: str = "") -> str:
    """A job document; `body` is the spec's YAML at any indentation."""
    spec = textwrap.indent(textwrap.dedent(body).strip("\n"), "  ")
    return f"apiVersion: capctl/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{spec}\n"


@pytest.fixture
def load(tmp_path: Path) -> Loader:
    """Load `text` (one file in tmp_path) together with tests/spec/base.yaml."""

    def _load(
        text: str, *, env: Mapping[str, str] | None = None, base: bool = True, key: bytes | None = None
    ) -> SpecSet:
        path = tmp_path / "spec.yaml"
        path.write_text(text)
        paths = [BASE, path] if base else [path]
        return load_spec_set(paths, env=SECRET_ENV if env is None else env, fingerprint_key=key)

    return _load


@pytest.fixture
def errors_of(load: Loader) -> ErrorsOf:
    """The error lines (str) that loading `text` raises; fails the test if it loads."""

    def _errors(text: str, **kwargs: object) -> list[str]:
        with pytest.raises(SpecErrors) as info:
            load(text, **kwargs)
        return [str(e) for e in info.value.errors]

    return _errors
