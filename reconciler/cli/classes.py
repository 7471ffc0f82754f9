"""The typer classes every capctl command and group is made with: how they print help and fail on usage.

typer's defaults print a Python type beside each option, cut words at a narrow terminal, exit 2 on a typo
(which `--detailed-exitcode` reserves for "changes") and turn a state store's error into a traceback; these
classes are where each of those is put right, once for every command.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any, Final

from typer.core import TyperArgument, TyperCommand, TyperGroup

from reconciler.cli.common import EXIT_ERROR, fail

try:  # recent typer vendors click, and raises its own copy's usage errors; older typer used click itself
    from typer._click.exceptions import NoSuchOption, UsageError
    from typer._click.formatting import HelpFormatter
except ImportError:  # pragma: no cover - only with typer versions that predate the vendored copy
    from click.exceptions import NoSuchOption, UsageError  # type: ignore[assignment]
    from click.formatting import HelpFormatter  # type: ignore[assignment]

__all__ = ["CapctlCommand", "CapctlGroup"]

# Whether this command line asks for plain output (`--no-color` anywhere before a `--`, or NO_COLOR): set when
# the root parses it, before typer prints any help or usage error. And its words, for `_single_dash`.
_plain_asked = False
_words: list[str] = []


def _before_dashes(args: list[str]) -> list[str]:
    """The words before a `--`: after it every word is an argument, never an option."""
    return args[: args.index("--") if "--" in args else None]


def _option_named(params: Any, name: str) -> Any | None:
    """The option of `params` that `name` (`--out`, `--no-refresh`) spells, if any."""
    return next((p for p in params if name in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))), None)


def _failed(exc: UsageError) -> None:
    """A usage error, as capctl says it: exit 1 (not click's 2), plain when asked, Terraform's spelling named."""
    exc.exit_code = EXIT_ERROR
    _plain_typer_output()
    # A sub-group's command (`state rm`) fails through its group's invoke and the root's: named once (walk 57b).
    if isinstance(exc, NoSuchOption) and not exc.message.endswith(hint := _single_dash(exc)):
        exc.message += hint


def _single_dash(exc: NoSuchOption) -> str:
    """` ('-out=plan.json': capctl's long options take two dashes: --out=plan.json)`: Terraform writes its long
    options with one (`-out=`, `-target=`, `-replace=`), which click reads as `-o`, `-t`, `-r` and refused as
    `No such option: -o` (walk 55b). Only for a word that is an option of the command with one dash less."""
    params = getattr(getattr(exc.ctx, "command", None), "params", ())
    for word in _words:
        if not word.startswith(exc.option_name) or word.startswith("--"):
            continue
        name, eq, value = ("-" + word).partition("=")
        if (option := _option_named(params, name)) is not None:
            return f" ({word!r}: capctl's long options take two dashes{_as_flag(option, name, eq + value)})"
    return ""


def _no_glued_long_option(ctx: Any, args: list[str]) -> None:
    """A word that click would read as a short option with a value glued on, but that is one of the command's
    long options written with one dash (`-log-level=debug`: `-l og-level=debug`, walk 57b), or Terraform's
    `-lock=false` / `-lock-timeout=5s` (its habit for a pull request's plan, walk 56a): to click, a label selector
    that matched no task, so a plan of nothing, exit 0 under `--detailed-exitcode`. Refused, naming the reading.
    Other glued values (`-lfoo=bar`, `-srunning`) are the short option's, as ever."""
    if ctx.resilient_parsing:  # shell completion: it offers what fits, it refuses nothing (a traceback there)
        return
    params = ctx.command.params
    shorts = {o for p in params for o in getattr(p, "opts", ()) if len(o) == 2 and o[0] == "-" and o[1] != "-"}
    for word in _before_dashes(args):
        name, eq, value = word.partition("=")
        if len(name) <= 2 or name.startswith("--") or name[:2] not in shorts:
            continue
        reading = f"'{name[:2]} {word[2:]}'"
        if name[:2] == "-l" and name in ("-lock", "-lock-timeout"):
            raise UsageError(
                f"No such option: {name} ({word!r} is Terraform's: capctl has no such option, and would read it as"
                f" {reading}, a label selector; to select on a label {name[2:]!r}, write '-l {word[2:]}' or"
                f" '--selector {word[2:]}')",
                ctx,
            )
        if (option := _option_named(params, "-" + name)) is not None:
            raise UsageError(
                f"No such option: {name} ({word!r}: capctl would read it as {reading}; its long options take two"
                f" dashes{_as_flag(option, '-' + name, eq + value)})",
                ctx,
            )


def _short_equals(ctx: Any, args: list[str]) -> list[str]:
    """`-o=json`, `-l=team=safety`, `-s=running` as kubectl reads them (`-o json`): click took the `=` into the
    value (`--output '=json': expected table, wide or json`). No value of a short option begins with `=`. A word
    that is the value of the option before it (`--out -l=x.json`, a file of that name) is left as it is."""
    valued = {o for p in ctx.command.params if not getattr(p, "is_flag", False) for o in getattr(p, "opts", ())}
    words = _before_dashes(args)
    glued: list[str] = []
    a_value = False  # the word is the value of the option before it
    for word in words:
        glued.append(word[:2] + word[3:] if not a_value and word[2:3] == "=" and word[:2] in valued else word)
        a_value = not a_value and word in valued
    return glued + args[len(words) :]


_FALSE: Final = frozenset({"false", "f", "0", "no", "off"})


def _as_flag(option: Any, name: str, value: str) -> str:
    """`: --out=plan.json`; for a flag, which takes no value, the word that says it: Terraform's `-refresh=false`
    is `--no-refresh` (walk 56a: the hint said `--refresh=false`, which click then refused), `=true` the flag alone."""
    if not (value and getattr(option, "is_flag", False)):
        return f": {name}{value}"
    if value[1:].lower() not in _FALSE:
        return f", and a flag takes no value: {name}"
    other = [o for o in (*option.opts, *option.secondary_opts) if o != name and o.startswith("--")]
    return f", and a flag takes no value: {other[0]}" if other else f", and a flag takes no value: leave out {name}"


def _plain_typer_output() -> None:
    """typer prints usage errors and rich help on a console of its own, which kept bold and dim under NO_COLOR
    and every colour under --no-color (walk 55b: `capctl --no-color plan -o x` drew a red box). Told here, just
    before it prints (typer imports its rich module only then: setting it up front cost every command 60 ms)."""
    from typer import rich_utils

    rich_utils.COLOR_SYSTEM = None if _plain_asked or os.environ.get("NO_COLOR") else "auto"


class _PlainArgument(TyperArgument):
    """An argument as mature CLIs print it: `capctl show [OPTIONS] PLAN` and `[PATH]...` on the usage line
    (typer 0.29 braces a required one: `{PLAN}`), and no Python type beside its name in help (`<list[Path]>`,
    `<str>`): its metavar and help say what it takes."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return [name + ("..." if self.nargs != 1 else "")]


def without_help_types(params: list[Any]) -> list[Any]:
    """Help shows no Python types. typer's rich help prints one beside every parameter, so a flag read
    `--auto-approve <bool>`, as if it took a value (click's plain help never showed one): a flag's value is its
    presence, and an empty metavar is what typer prints in that column instead. Arguments print as
    `_PlainArgument` (options all have a metavar: tests/e2e/test_cli_contract.py)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif type(param) is TyperArgument:
            param.__class__ = _PlainArgument
    return params


def reflowed(help_text: str | None) -> str | None:
    """A help text whose paragraphs are each one line, so rich wraps them to the terminal's width. Docstrings
    break lines where the source is 110 wide; typer joins those only in a command's own first paragraph, so
    its later paragraphs and its entry in the group's command list kept them mid-sentence at any other
    width. Only a blank line separates paragraphs."""
    if help_text is None:
        return None
    return "\n\n".join(p.replace("\n", " ") for p in inspect.cleandoc(help_text).split("\n\n"))


def _rich_options_width(params: list[Any], ctx: Any) -> int:
    """The width typer's rich option table needs to cut no option name and no word of its help: its columns
    (a `*` one when an option is required; long names, short names or an argument's name, their negations
    long and short, the metavar with its range, the help), each as wide as its widest cell (the help's
    longest word: a URL, a glob) and one space either side, empty ones too; the panel's border around it."""
    rows = [
        (
            ",".join(o for o in p.opts if "--" in o),
            p.display_name_raw if isinstance(p, TyperArgument) else ",".join(o for o in p.opts if "--" not in o),
            ",".join(o for o in p.secondary_opts if "--" in o),
            ",".join(o for o in p.secondary_opts if "--" not in o),
            (p.display_type_rich(ctx) or "") + (f" [{r}]" if (r := p._get_number_range_help_str()) else ""),
            max((p.help or "").split(), key=len, default=""),
        )
        for p in params
    ]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    widths[-1] = max(widths)  # rich narrows the help column only down to the widest other, then all of them
    if any(p.required for p in params):
        widths.append(1)
    return 2 + sum(w + 2 for w in widths)


_NO_BREAK_HYPHEN: Final = "\u2011"  # textwrap breaks lines after "-" but not after this one


class _WholeWords(HelpFormatter):
    """click's plain help, with no line broken after a hyphen inside a word: it wrapped `--max-` / `prune`,
    `re-` / `issues`. Hyphens go through the wrapping as non-breaking ones and come out as they were."""

    def write(self, string: str) -> None:
        super().write(string.replace(_NO_BREAK_HYPHEN, "-"))

    def write_text(self, text: str) -> None:
        super().write_text(text.replace("-", _NO_BREAK_HYPHEN))

    def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = [(first, second.replace("-", _NO_BREAK_HYPHEN)) for first, second in rows]
        super().write_dl(rows, col_max, col_spacing)


class CapctlCommand(TyperCommand):
    """Every capctl command: its help shows no Python types, and reflows to the terminal's width.

    Where the terminal is too narrow for rich's option table (it cut option names and words with an ellipsis,
    `--detailed-e…`, at 60 columns; `capctl run`'s at 80), the help is click's plain one: each option's names
    whole on its line, its help wrapped beside them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflowed(self.help)

    def get_params(self, ctx: Any) -> list[Any]:
        return without_help_types(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        _no_glued_long_option(ctx, args)
        return super().parse_args(ctx, _short_equals(ctx, args))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from rich.console import Console

        if _rich_options_width(self.get_params(ctx), ctx) <= Console().width:
            _plain_typer_output()  # only where typer's rich help prints: the plain one imports none of it
            return super().format_help(ctx, formatter)
        plain = _WholeWords(width=formatter.width)
        super(TyperCommand, self).format_help(ctx, plain)  # click's
        formatter.write(plain.getvalue())
        return None


class CapctlGroup(TyperGroup):
    """A command group whose usage errors exit 1 instead of click's 2, and whose help reflows.

    `capctl plan --detailed-exitcode` exits 2 for "changes present", so CI scripts test for 2 (`|| [ $? -eq 2 ]`):
    a typo such as `--tagret` must not pass for a plan with changes. As Terraform, every error exits 1; click's
    usage message (with its "did you mean") is kept. Sub-groups (`state`) are parsed and invoked from here, so
    their usage errors pass through this class too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflowed(self.help)  # as CapctlCommand's

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        if parent is None:  # the root, which sees the whole command line
            global _plain_asked, _words
            _words = _before_dashes(args)
            _plain_asked = "--no-color" in _words
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            _failed(exc)
            raise

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_typer_output()
        super().format_help(ctx, formatter)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            _failed(exc)
            raise
        except Exception as exc:  # wherever a command meets a store it cannot use: one line, never a traceback
            # A StateError, if the command loaded the state package at all (those that never do, such as
            # validate, do not pay for importing it here).
            state = sys.modules.get("reconciler.state.base")
            if state is None or not isinstance(exc, state.StateError):
                raise
            fail(str(exc))

    def get_params(self, ctx: Any) -> list[Any]:
        return without_help_types(super().get_params(ctx))

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            # Absent, typer's --help has no value (None), which it coerces through a pydantic adapter on every
            # invocation of a sub-command: `capctl plan --help` imported pydantic for that alone.
            option.default = False
        return option
