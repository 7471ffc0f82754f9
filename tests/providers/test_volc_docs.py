"""The Python examples in docs/providers-volcengine.md run as written and print what they say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers-volcengine.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
# What each example prints: the signing and webhook examples only assert.
OUTPUTS = ["", "", 'lobby-audit {"AppId": "app1", "RoomId": "lobby", "TaskId": "lobby-audit"}\n']


def test_the_doc_has_its_examples() -> None:
    assert len(EXAMPLES) == len(OUTPUTS)


@pytest.mark.parametrize(("code", "output"), list(zip(EXAMPLES, OUTPUTS, strict=True)))
def test_example_runs(code: str, output: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, str(DOC), "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out == output
