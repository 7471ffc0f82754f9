"""Progress of long work where no bar can be drawn (CI logs, a pipe): a plain line every 10 s on stderr."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from reconciler.cli.common import LineProgress


def test_a_line_every_ten_seconds_and_none_for_short_work() -> None:
    now = [100.0]
    out = io.StringIO()
    with LineProgress("Applying", 2000, Console(file=out, width=200), clock=lambda: now[0]) as progress:
        task = progress.add_task("apply", total=2000)
        for _ in range(500):  # 500 done within the first 10 s: nothing said yet
            now[0] += 0.019
            progress.advance(task)
        now[0] = 110.5
        progress.advance(task)
        for _ in range(100):
            now[0] += 0.01
            progress.advance(task)
        now[0] = 121.0
        progress.advance(task)
    assert out.getvalue().splitlines() == ["Applying: 501/2000 (10 s)", "Applying: 602/2000 (21 s)"]


def test_without_a_known_end_it_counts_what_is_done() -> None:
    now = [0.0]
    out = io.StringIO()
    with LineProgress("Refreshing", 0, Console(file=out, width=200), clock=lambda: now[0]) as progress:
        now[0] = 12.0
        progress.advance(progress.add_task("refresh"))
    assert out.getvalue() == "Refreshing: 1 (12 s)\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("term", "lines"), [("dumb", True), ("xterm-256color", False)])
def test_a_dumb_terminal_gets_lines_as_it_gets_no_bar(monkeypatch: pytest.MonkeyPatch, term: str, lines: bool) -> None:
    """TERM=dumb: rich draws no bar there, and stderr is a terminal, so a long apply showed no progress at all."""
    monkeypatch.setenv("TERM", term)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert LineProgress.instead_of_a_bar(Console(stderr=True)) is lines
