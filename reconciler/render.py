"""Human views of a plan, rendered from its JSON form (the one saved format), like Terraform's jsonplan.

`render_text` writes a coloured rich view for terminals (plain when not a terminal); `render_markdown`
returns a view for pull-request comments. Unchanged tasks are counted, not listed. `render_apply_result`
is the outcome of an apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.text import Text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reconciler.execute import ApplyResult
    from reconciler.model import TaskRecord

SYMBOLS = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "replace": ("-/+", "magenta"),
    "reissue": ("↻", "cyan"),
    "delete": ("-", "red"),
    "no-op": ("=", "dim"),
}
UNOBSERVED = ("?", "yellow")  # a no-op only because its vendor status could not be read
SUMMARY_WORDS = (
    ("create", "to create"),
    ("update", "to update in place"),
    ("replace", "to replace"),
    ("reissue", "to re-issue"),
    ("delete", "to delete"),
    ("no-op", "unchanged"),
)
MD_ICONS = {"create": "➕", "update": "✏️", "replace": "🔁", "reissue": "↻", "delete": "➖", "no-op": ""}


def summary_line(plan: dict[str, Any]) -> str:
    counts = plan["summary"]
    parts = [f"{counts.get(action, 0)} {words}" for action, words in SUMMARY_WORDS]
    unobserved = len(plan.get("unobserved", ()))
    return "Plan: " + ", ".join(parts) + (f" ({unobserved} not observed)." if unobserved else ".")


def render_text(plan: dict[str, Any], console: Console, *, show_unchanged: bool = False) -> None:
    unobserved = set(plan.get("unobserved", ()))
    changes = [c for c in plan["changes"] if show_unchanged or c["action"] != "no-op" or c["key"] in unobserved]
    if not changes:
        console.print("No changes. The declared capture jobs match the recorded and observed state.", soft_wrap=True)
    else:
        if not any(c["action"] != "no-op" for c in changes):
            console.print("No changes for the tasks that could be observed. Left as is:\n")
        else:
            console.print("capctl will perform the following actions:\n")
        width = max(len(c["key"]) for c in changes)
        lines: list[tuple[tuple[str, str], ...]] = []  # (text, style) segments of each line
        for change in changes:
            symbol, style = UNOBSERVED if change["key"] in unobserved else SYMBOLS[change["action"]]
            action = "unknown" if change["key"] in unobserved else change["action"]
            lines.append(
                (
                    ("  ", ""),
                    (f"{symbol:>3} ", f"bold {style}"),
                    (change["key"].ljust(width), style),
                    (f"  {action:<8}", f"bold {style}"),
                    (f"  {change['reason']}", ""),
                )
            )
            lines += [((f"        {detail}", "dim"),) for detail in change["details"]]
        # rich renders ~0.1 ms per styled line (over a second for 10,000 creates): without colour the
        # styles would be dropped anyway, so the lines go out as one unstyled Text (same bytes, 10× faster).
        if console.color_system is None:
            console.print(Text("\n".join("".join(text for text, _ in line) for line in lines)), soft_wrap=True)
        else:
            console.print(Group(*(Text.assemble(*line) for line in lines)), soft_wrap=True)
        console.print()
    for note in plan["notes"]:
        console.print(Text(f"Note: {note}", style="yellow"), soft_wrap=True)
    console.print(Text(summary_line(plan), style="bold"), soft_wrap=True)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(plan: dict[str, Any]) -> str:
    lines = ["### capctl plan", "", f"**{summary_line(plan)}**", ""]
    for note in plan["notes"]:
        lines.append(f"> {note}")
    if plan["notes"]:
        lines.append("")
    unobserved = set(plan.get("unobserved", ()))
    changes = [c for c in plan["changes"] if c["action"] != "no-op" or c["key"] in unobserved]
    if changes:
        lines += ["| | Task | Action | Reason |", "|---|---|---|---|"]
        for c in changes:
            icon, action = ("❓", "unknown") if c["key"] in unobserved else (MD_ICONS[c["action"]], c["action"])
            lines.append(f"| {icon} | `{_md_cell(c['key'])}` | {action} | {_md_cell(c['reason'])} |")
        detailed = [c for c in changes if c["details"]]
        if detailed:
            lines += ["", "<details><summary>Field changes</summary>", ""]
            for c in detailed:
                lines.append(f"- `{_md_cell(c['key'])}`")
                lines += [f"  - `{_md_cell(d)}`" for d in c["details"]]
            lines += ["", "</details>"]
    else:
        lines.append("No changes.")
    return "\n".join(lines) + "\n"


def render_apply_result(result: ApplyResult, console: Console) -> None:
    """Each failed action with its error, then the summary line. Vendor error text is printed as it came:
    rich Text, never markup, so brackets in it can neither vanish nor break the output."""
    for failure in result.failed:
        console.print(
            Text.assemble((f"✗ {failure.key}", "red"), f" ({failure.action.value}): {failure.error}"), soft_wrap=True
        )
    console.print(Text(result.summary(), style="bold"), soft_wrap=True)


STATE_COLUMNS = ("KEY", "STATUS", "VENDOR TASK", "RE-ISSUES", "STOP REASON", "OBSERVED", "NEXT ATTEMPT", "ERROR")


def render_state_table(records: Sequence[TaskRecord], serial: int) -> str:
    """`capctl state list`: plain columns as `kubectl get` prints them, never wrapped or cut, so a line per
    task survives grep, awk and narrow terminals alike."""
    from reconciler.plan import fmt_time
    from reconciler.transitions import TOMBSTONE_RETENTION

    rows = [STATE_COLUMNS] + [
        (
            r.key,
            r.status.value,
            r.vendor_task_id or "-",
            str(r.reissue_count),
            r.stop_reason or "-",
            fmt_time(r.observed_at) if r.observed_at else "-",
            fmt_time(r.next_attempt_at) if r.next_attempt_at else "-",
            (r.last_error or "-").replace("\n", " "),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(STATE_COLUMNS) - 1)]
    lines = ["   ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows]
    count = f"{len(records)} task{'' if len(records) == 1 else 's'}"
    # Tombstones are listed as any task (status `removed`), and counted apart: they run nothing.
    removed = sum(1 for r in records if r.status.value == "removed")
    if removed:
        count += f", {removed} of them removed (tombstones: kept {TOMBSTONE_RETENTION / 86400:g} days after removal)"
    return f"{count} (state serial {serial})\n" + "\n".join(lines)
