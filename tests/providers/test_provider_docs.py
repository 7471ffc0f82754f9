"""The Python examples in docs/providers-volcengine.md and docs/providers-zego.md run as written and print what
they say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
# What each example prints, as a pattern: the signing and webhook examples only assert.
OUTPUTS = {
    "providers-volcengine.md": [
        "",
        "",
        re.escape('lobby-audit {"AppId": "app1", "RoomId": "lobby", "TaskId": "lobby-audit"}\n'),
    ],
    "providers-zego.md": ["", "", r"thumb-[0-9a-f]{16}\n"],  # the simulator's MediaThumbnails task id
}
EXAMPLES = {page: re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S) for page in OUTPUTS}


def test_each_page_has_its_examples() -> None:
    assert {page: len(examples) for page, examples in EXAMPLES.items()} == {p: len(o) for p, o in OUTPUTS.items()}


@pytest.mark.parametrize(
    ("page", "code", "output"),
    [(page, code, output) for page in OUTPUTS for code, output in zip(EXAMPLES[page], OUTPUTS[page], strict=True)],
)
def test_example_runs(page: str, code: str, output: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, str(DOCS / page), "exec"), {"__name__": "__doc_example__"})
    assert re.fullmatch(output, capsys.readouterr().out)
