"""The Python examples in docs/state.md run as written, in order, and print what the doc says."""

from __future__ import annotations

import fnmatch
import re
import tempfile
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "state.md"
# Each ```python block is followed by "prints" and a plain ``` block with its output (`...` = anything).
EXAMPLES = re.findall(r"```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_its_examples() -> None:
    assert len(EXAMPLES) == 3


def test_examples_run_in_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the example's mkdtemp() lands here
    namespace: dict[str, object] = {"__name__": "__doc_example__"}
    for code, expected in EXAMPLES:
        exec(compile(code, str(DOC), "exec"), namespace)
        printed = capsys.readouterr().out
        assert fnmatch.fnmatchcase(printed, expected.replace("...", "*")), (printed, expected)
