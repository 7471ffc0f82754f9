"""The list `capctl state import --from FILE` reads: which vendor task each task key adopts, one per line.

A team adopting capctl has hundreds of rooms its own scripts capture; one `state import` per room loaded the
specs and queried the vendor each time (walk 16d: 40 rooms, 40 commands). The list is plain text a shell loop
or a spreadsheet writes (`KEY VENDOR_TASK_ID`, as `terraform import` takes them), with comments, so every
line can be checked before any vendor call and every problem said at once, naming its line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from reconciler.spec.files import FileRefused, NotText, read_regular, size_text, utf8_text

__all__ = ["MAX_IMPORT_LIST_BYTES", "ImportLine", "ImportListError", "parse_import_list", "read_import_list"]

# 250,000 tasks (the spec limit) of 128-character keys and ids are about 64 MiB: room above it, and a bound
# on a file gone wrong (`--from /dev/zero` is refused before, as no regular file).
MAX_IMPORT_LIST_BYTES = 128 * 1024 * 1024
_SHOWN = 200  # characters of a malformed line quoted back


class ImportListError(Exception):
    """The list cannot be read at all (no such file, not UTF-8): said as is."""


@dataclass(frozen=True, slots=True)
class ImportLine:
    """One line of the list: `where` is `FILE:line`, as every message about it starts."""

    number: int
    where: str
    key: str
    vendor_id: str


def read_import_list(source: str) -> tuple[str, str]:
    """The name messages call the list (`stdin` for `-`) and its text, or ImportListError."""
    name = "stdin" if source == "-" else source
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_IMPORT_LIST_BYTES + 1)
        else:
            data = read_regular(source, MAX_IMPORT_LIST_BYTES)
        if len(data) > MAX_IMPORT_LIST_BYTES:
            raise FileRefused(f"larger than the {size_text(MAX_IMPORT_LIST_BYTES)} limit")
        return name, utf8_text(data)
    except FileRefused as exc:
        raise ImportListError(f"--from {name}: cannot read the import list: {exc}") from None
    except NotText as exc:
        raise ImportListError(
            f"--from {name}: cannot read the import list: it is {exc.reason}: save it as UTF-8"
        ) from None


def parse_import_list(name: str, text: str) -> tuple[list[ImportLine], list[tuple[int, str]]]:
    """The lines of `text` that name a task, and the problems of the others (each its line number and
    `name:line: ...`).

    Fields are separated by spaces or tabs; a field that starts with `#` starts a comment (a whole line, or
    after the two fields); blank lines are skipped. A key listed twice is a problem on its second line: which
    of the two ids was meant is the operator's to say."""
    lines: list[ImportLine] = []
    problems: list[tuple[int, str]] = []
    first: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        fields = fields[: next((i for i, f in enumerate(fields) if f.startswith("#")), len(fields))]
        where = f"{name}:{number}"
        if not fields:
            continue
        if len(fields) != 2:
            shown = " ".join(fields)  # the line as read, cut short: a line gone wrong may be a whole file
            shown = shown if len(shown) <= _SHOWN else f"{shown[:_SHOWN]}…"
            # A spreadsheet's CSV export is the likeliest list gone wrong: say what separates the fields.
            csv = " (fields are separated by spaces or tabs, not commas)" if len(fields) == 1 and "," in line else ""
            found = f"found {len(fields)} field(s): {shown!r}{csv}"
            problems.append((number, f"{where}: expected KEY VENDOR_TASK_ID, {found}"))
            continue
        key, vendor_id = fields
        if key in first:
            problems.append((number, f"{where}: {key} is listed already on line {first[key]}"))
            continue
        first[key] = number
        lines.append(ImportLine(number, where, key, vendor_id))
    return lines, problems
