"""docs/operations.md quotes the errors users meet: each quoted piece must still be in the code, so a reworded
message cannot leave the troubleshooting table describing one nobody sees any more."""

from __future__ import annotations

import re

from tests.deploy.daemon_facts import ROOT

CODE_SPAN = re.compile(r"``\s?(.+?)\s?``|`([^`]+)`")


def troubleshooting_quotes() -> list[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text[text.index("## Troubleshooting") :]
    quotes = []
    for row in table.splitlines():
        if row.startswith("| ") and not row.startswith(("| you see", "|---")):
            first_cell = row.split(" | ")[0]
            quotes += [a or b for a, b in CODE_SPAN.findall(first_cell)]
    return quotes


def test_every_quoted_message_is_in_the_code() -> None:
    sources = "\n".join(p.read_text() for p in [*ROOT.glob("reconciler/**/*.py"), *ROOT.glob("action/*.py")])
    quotes = troubleshooting_quotes()
    assert len(quotes) > 15
    missing = []
    for quote in quotes:
        if quote.startswith(("capctl ", "capctl_")):
            continue  # a command or a metric the row names, not a message
        for piece in quote.split("…"):
            piece = piece.strip(" '\"():;,.")
            if len(piece) >= 8 and piece not in sources:
                missing.append(f"{piece!r} (from {quote!r})")
    assert missing == []
