"""The options and arguments several commands share (spec paths, --state, --target, -l, --log-level,
--no-color), and the shell completions they offer.

Declared once, so a flag reads, completes and is documented the same in every command that takes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from reconciler.cli.common import LOG_LEVELS, check_named, set_no_color

__all__ = [
    "LabelOpt",
    "LogLevelOpt",
    "NoColorOpt",
    "PathsArg",
    "ReplaceOpt",
    "StateOpt",
    "TargetOpt",
    "complete_choices",
    "complete_task_keys",
    "state_url_given",
    "typed_text",
]


def typed_text(value: Any) -> Any:
    """A task key or label selector as the UTF-8 it was typed in: where Python read the command line as ASCII
    (`LC_ALL=C` with `PYTHONUTF8=0`) each byte past ASCII came as a surrogate escape (`\\udce6`), and
    `state show 'RecordingJob/r/教室-101'` found no task (walk 16B-10). A key is no path, so its bytes are read
    as UTF-8 again; bytes that are not UTF-8 stay escaped (and are refused as before)."""

    def one(text: str) -> str:
        try:
            return os.fsencode(text).decode("utf-8") if any("\udc80" <= c <= "\udcff" for c in text) else text
        except (UnicodeError, ValueError):
            return text

    if isinstance(value, str):
        return one(value)
    return value if value is None else [one(v) for v in value]


def complete_task_keys(ctx: typer.Context, incomplete: str) -> list[str]:
    """Task keys in the state that start with what was typed (shell completion: reads, never creates).

    The state is the one the command line names so far (`--state`), else `CAPCTL_STATE`, else the default.
    """
    from reconciler.state import open_state
    from reconciler.state.base import StateError

    url = ctx.params.get("state")
    try:
        # A database that does not answer holds the shell's prompt: give up sooner than commands do.
        store = open_state(url if isinstance(url, str) else None, create=False, connect_timeout=2)
        try:
            keys = store.keys()
        finally:
            store.close()
    except StateError:
        return []  # no state, or an unreadable one: nothing to offer, and nothing to print mid-completion
    # A key from a state an older capctl wrote may hold an escape sequence or a line break: offered, it reached
    # the terminal raw in the shell's list and split into two candidates (walk 59b). A glob still names it.
    return [k for k in keys if k.startswith(incomplete) and k.isprintable()]


def complete_choices(*choices: str) -> Callable[[str], list[str]]:
    """Shell completion of an option that takes one of these words (--format, --output, --log-level)."""

    def complete(incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return complete


def _paths_named(paths: list[str] | None) -> list[str] | None:
    for path in paths or ():
        check_named("PATH", path)
    return paths


PathsArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="PATH",
        path_type=str,  # a path, completed as one, but as typed: pathlib would make "" the working directory
        callback=_paths_named,
        help="Spec files or directories (searched recursively for *.yaml, *.yml). Default: ./specs",
    ),
]


def state_url_given(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """An empty --state (or --from, --to) on the command line, `--state "$STATE"` with STATE unset, is refused:
    taken as the default state, `apply` started every task again in a new .capctl/state.db (walk 12b), and
    `state copy --to ""` copied into it (walk 13a). An empty CAPCTL_STATE stays unset, as empty environment
    variables are."""
    source = ctx.get_parameter_source(param.name or "")
    if value is None or value.strip() or (source is not None and source.name == "ENVIRONMENT"):
        return value
    default = "" if param.required else "; leave it out for the default"  # --to has none
    raise typer.BadParameter(f"{value!r} names no state (an unset variable?){default}")


StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        metavar="URL",
        callback=state_url_given,
        envvar="CAPCTL_STATE",
        show_envvar=True,
        help="State URL: sqlite:///path/state.db (default sqlite:///.capctl/state.db) or postgresql://…",
    ),
]


def _task_keys_option(flag: str, help: str) -> Any:
    """A repeatable option naming task keys, completed from the state's keys (--target, --replace)."""
    return typer.Option(flag, metavar="KEY", autocompletion=complete_task_keys, callback=typed_text, help=help)


TargetOpt = Annotated[
    list[str] | None,
    _task_keys_option(
        "--target",
        "Only tasks matching: a task key (kind/name/room) or kind/name, with * allowed in the name and room "
        "parts (SnapshotJob/*, SnapshotJob/lobby-*/vip-*); a task's whole key is that task alone, even "
        "holding * (double a * for the glob: ThumbnailJob/t/rec/**.mp4). Repeatable.",
    ),
]


ReplaceOpt = Annotated[
    list[str] | None,
    _task_keys_option(
        "--replace",
        "Plan the whole set with this task key stopped and started again (as Terraform's -replace). Repeatable.",
    ),
]


LabelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--selector",
        "-l",
        metavar="LABELS",
        callback=typed_text,
        help="Only tasks of jobs whose metadata.labels match: key=value, key!=value, key (set) or !key (unset); "
        "comma-separated or repeated, all must hold.",
    ),
]


LogLevelOpt = Annotated[
    str,
    typer.Option(
        "--log-level",
        metavar="LEVEL",
        envvar="CAPCTL_LOG_LEVEL",
        autocompletion=complete_choices(*LOG_LEVELS),
        help="debug, info, warning or error.",
    ),
]


NoColorOpt = Annotated[
    bool,
    typer.Option(
        "--no-color",
        callback=set_no_color,
        help="Plain text: no colours or styles (as the NO_COLOR environment variable).",
    ),
]
