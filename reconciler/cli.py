"""The `capctl` command line: the composition root that wires specs, state, providers and views.

Heavy modules (httpx, starlette, the providers, the simulator) are imported inside the commands that use
them, so `capctl validate` and `capctl plan --no-refresh` start fast.
"""

from __future__ import annotations

import enum
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, NoReturn, TypeVar, get_type_hints

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

__all__ = [
    "LineProgress",
    "app",
    "main",
]

try:  # recent typer vendors click, and raises its own copy's usage errors; older typer used click itself
    from typer._click.exceptions import UsageError
    from typer._click.formatting import HelpFormatter
except ImportError:  # pragma: no cover - only with typer versions that predate the vendored copy
    from click.exceptions import UsageError  # type: ignore[assignment]
    from click.formatting import HelpFormatter  # type: ignore[assignment]

from reconciler import __version__, failpoints
from reconciler.streams import write_json

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from reconciler.execute import ApplyResult, Interrupt
    from reconciler.model import DesiredTask, Observed, TaskRecord
    from reconciler.plan import Plan, PlanOptions
    from reconciler.retry import RetryPolicy, RetryReport
    from reconciler.rooms import Selection
    from reconciler.spec import SpecSet
    from reconciler.state.base import NoState, StateStore
    from reconciler.state.sql import SqlStateStore

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


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

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from rich.console import Console

        if _rich_options_width(self.get_params(ctx), ctx) <= Console().width:
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
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            exc.exit_code = EXIT_ERROR
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            exc.exit_code = EXIT_ERROR
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


app = typer.Typer(
    name="capctl",
    cls=CapctlGroup,
    help="Declarative reconciler for RTC capture jobs: room snapshots, cloud recordings, thumbnails.\n\n"
    "Declare jobs in YAML specs, review `capctl plan`, converge with `capctl apply`, "
    "or keep them running with `capctl run`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
state_app = typer.Typer(cls=CapctlGroup, help="Inspect and edit the state store.", no_args_is_help=True)
app.add_typer(state_app, name="state")


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
    return [k for k in keys if k.startswith(incomplete)]


def complete_choices(*choices: str) -> Callable[[str], list[str]]:
    """Shell completion of an option that takes one of these words (--format, --output, --log-level)."""

    def complete(incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return complete


def complete_statuses(incomplete: str) -> list[str]:
    from reconciler.model import TaskStatus

    return [s.value for s in TaskStatus if s.value.startswith(incomplete)]


PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="PATH", help="Spec files or directories (searched recursively for *.yaml, *.yml). Default: ./specs"
    ),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        metavar="URL",
        envvar="CAPCTL_STATE",
        show_envvar=True,
        help="State URL: sqlite:///path/state.db (default sqlite:///.capctl/state.db) or postgresql://…",
    ),
]


def _task_keys_option(flag: str, help: str) -> Any:
    """A repeatable option naming task keys, completed from the state's keys (--target, --replace)."""
    return typer.Option(flag, metavar="KEY", autocompletion=complete_task_keys, help=help)


TargetOpt = Annotated[
    list[str] | None,
    _task_keys_option(
        "--target",
        "Only tasks matching: a task key (kind/name/room) or kind/name, with * allowed in the name and room "
        "parts (SnapshotJob/*, SnapshotJob/lobby-*/vip-*). Repeatable.",
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
        help="Only tasks of jobs whose metadata.labels match: key=value, key!=value, key (set) or !key (unset); "
        "comma-separated or repeated, all must hold.",
    ),
]
LOG_LEVELS = ("debug", "info", "warning", "error")
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

# Set by --no-color (global or on a command) for this invocation; reset by the root callback on every run.
# The commands' own `no_color` parameters exist for the option; its callback is what takes effect.
_no_color = False


def _set_no_color(value: bool) -> bool:
    global _no_color
    _no_color = _no_color or value
    return value


NoColorOpt = Annotated[
    bool,
    typer.Option(
        "--no-color",
        callback=_set_no_color,
        help="Plain text: no colours or styles (as the NO_COLOR environment variable).",
    ),
]


def _color_system() -> Literal["auto"] | None:
    """None (plain text, no escape codes at all) for --no-color or NO_COLOR; else rich's detection."""
    return None if _no_color or os.environ.get("NO_COLOR") else "auto"


def _err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, emoji=False, color_system=_color_system())


def _out_console() -> Console:
    from rich.console import Console

    return Console(highlight=False, emoji=False, color_system=_color_system())


def fail(message: str, *, code: int = EXIT_ERROR) -> NoReturn:
    from rich.markup import escape

    # The message may quote user input (a path, a flag value): escaped, so "[...]" in it prints as typed.
    _err_console().print(f"[bold red]Error:[/bold red] {escape(message)}", soft_wrap=True, markup=True)
    raise typer.Exit(code)


def _paths(paths: list[Path] | None) -> list[str]:
    return [str(p) for p in paths] if paths else ["specs"]


def _check_log_level(level: str) -> None:
    if level.lower() not in LOG_LEVELS:
        fail(f"--log-level {level!r}: expected debug, info, warning or error")


def _setup_logs(level: str) -> None:
    from reconciler import logs

    _check_log_level(level)
    logs.configure(level)


def load_specs(
    paths: list[str], *, resolve_secrets: bool = True, validating: bool = False, fingerprint_key: bytes | None = None
) -> SpecSet:
    """Load and validate, or print every error as file:line:col, then `N errors in M files`, and exit 1.

    `validating`: the caller only checks (`capctl validate`), so the count is not followed by "nothing was
    changed", which only means something to a command that would have changed something.
    `fingerprint_key`: the state's, for a set compared with records (None: the state has none yet).
    """
    from reconciler.spec import SpecErrors, load_spec_set

    try:
        return load_spec_set(paths, resolve_secrets=resolve_secrets, fingerprint_key=fingerprint_key)
    except SpecErrors as exc:
        from rich.text import Text  # here: a valid set is printed without rich (`validate`)

        console = _err_console()
        for error in exc.errors:
            console.print(str(error), markup=False, highlight=False, soft_wrap=True)
        count, files = len(exc.errors), len({e.file for e in exc.errors})
        summary = Text(f"{count} error{'s' if count != 1 else ''}", style="bold red")
        summary.append(f" in {files} file{'s' if files != 1 else ''}")
        summary.append("." if validating else ": nothing was changed.")
        console.print(summary, soft_wrap=True)
        if paths == _paths(None) and not Path(paths[0]).exists():  # the default, where a new user has none
            console.print(
                "./specs, the default spec path, is not here: give spec files or directories as arguments "
                "(`capctl demo` plays the quickstart specs capctl ships, and says where they are).",
                markup=False,
                soft_wrap=True,
            )
        raise typer.Exit(EXIT_ERROR) from None


def _keep_until_exit() -> None:
    """What a one-shot command has loaded by now (specs, records, a plan) lives until it exits. Frozen, it is out of
    the cyclic collector's reach: loaded with the collector paused (`gcpause.py`), it was walked afterwards anyway,
    by the next young pass, again by a middle one and by the interpreter's full pass at exit, 40–130 ms of a plan of
    10,000 tasks (bench/README.md, "The CLI's start"). Still freed by reference counting as before."""
    import gc

    gc.freeze()


@contextmanager
def open_store(url: str | None, *, read_only: bool = False) -> Iterator[SqlStateStore | NoState]:
    """The store at `url`; `read_only` creates nothing and yields a `NoState` when there is none yet."""
    from reconciler.state import NoState, StateMissing, open_state
    from reconciler.state.base import StateError

    store: SqlStateStore | NoState
    try:
        store = open_state(url, create=not read_only)
    except StateMissing as exc:
        store = NoState(exc)
    except StateError as exc:
        fail(str(exc))
    try:
        yield store
    finally:
        store.close()


def _state_fingerprint_key(url: str | None) -> tuple[bytes, bool]:
    """The key of the state's fingerprints and hashes, creating nothing: a fresh one for a state that has
    none yet (new, or made before keyed fingerprints), which the writable open then stores; and whether
    there is a state."""
    from reconciler.secrets import new_fingerprint_key
    from reconciler.state import NoState

    with open_store(url, read_only=True) as store:
        return store.fingerprint_key() or new_fingerprint_key(), not isinstance(store, NoState)


def _locked_store(url: str | None, command: str, held: ExitStack) -> SqlStateStore | NoState:
    """The state at `url`, opened for writing (created if absent) and locked by `command` until `held` ends."""
    store = held.enter_context(open_store(url))
    held.enter_context(locked(store, command))
    return store


@contextmanager
def locked(store: StateStore, command: str) -> Iterator[None]:
    from reconciler.state.base import LockHeld, StateError
    from reconciler.state.sql import holder_identity

    try:
        lock = store.lock(command)
    except LockHeld as exc:
        if exc.holder.startswith(holder_identity(command)):  # this very command: `state copy`'s source, named again
            fail(f"--from and --to name the same state ({store.url} is the source by another name): nothing to copy")
        if exc.daemon:  # a daemon never finishes: say what to do instead of waiting
            fail(
                f"the capctl daemon holds the state lock ({exc.holder}) and keeps it as long as it runs. "
                + _daemon_advice(command, exc.daemon_url)
            )
        fail(
            f"another capctl holds the state lock ({exc.holder}); wait for it to finish. "
            f"A lock held by a process that died is released by itself."
        )
    try:
        yield
    finally:
        try:
            lock.release()
        except StateError as exc:  # the store went away meanwhile: what the command did is still to be reported
            _err_console().print(
                f"Warning: could not release the state lock ({exc}); it lapses by itself when its lease ends.",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


# Stopping the one holder is not enough: a standby replica takes the lock within a retry period.
_STOP_EVERY_REPLICA = (
    "stop the daemon first (SIGTERM), every replica of it: a standby takes the lock within seconds"
    " (Kubernetes: `kubectl scale deploy/capctl --replicas=0`)"
)


def _daemon_advice(command: str, url: str | None) -> str:
    sync = f"capctl sync --daemon {url}" if url else "capctl sync --daemon URL"
    if command == "capctl apply":
        return (
            f"It applies the specs by itself; `{sync} [KEY...]` makes it reconcile now. "
            f"To apply by hand instead, {_STOP_EVERY_REPLICA}."
        )
    # After a copy it runs on the copy: on both states it would start each task twice.
    then = "start it on the copy (--state, CAPCTL_STATE)" if command == "capctl state copy" else "start it again"
    return f"To run `{command}`, {_STOP_EVERY_REPLICA}, then {then}."


T = TypeVar("T")
EXIT_HUNG_UP = 129  # 128 + SIGHUP: an apply whose terminal closed (ssh dropped; changes in flight finished)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command ended by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM: an apply a service manager or CI runner stopped (changes in flight finished)


def run_async(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    import asyncio

    from reconciler.plan import PlanError
    from reconciler.state.base import StateError

    try:
        return asyncio.run(coro_factory())
    except (PlanError, StateError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        # Outside an apply's changes (those report what was done, see `_interruptible`): nothing was changed.
        fail("interrupted before any change was made", code=EXIT_INTERRUPTED)


@contextmanager
def _interruptible(interrupt: Interrupt, console: Console, received: list[int]) -> Iterator[None]:
    """While an apply executes changes, Ctrl-C presses `interrupt`: the first press starts nothing new and
    lets the changes in flight finish (the summary is printed), a second cuts them short. SIGTERM (a service
    manager, a CI runner, Kubernetes) and SIGHUP (the terminal closed, an ssh session dropped) press it too,
    rather than killing the apply with its calls in flight; output to a terminal that is gone is dropped
    (streams.py). Each signal is added to `received`, which decides the exit code (`exit_code_of`)."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    # A signal ignored when capctl started stays ignored: `nohup capctl apply` must outlive its terminal.
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    previous = {signum: handler for signum, handler in handlers.items() if handler is not signal.SIG_IGN}
    said = {signal.SIGINT: "Interrupted", signal.SIGTERM: "Terminated (SIGTERM)", signal.SIGHUP: "Hung up (SIGHUP)"}

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        if interrupt.press() == 1:
            again = "Press Ctrl-C" if signum == signal.SIGINT else f"Send {signum.name}"
            console.print(
                f"{said[signum]}: no new change starts; the changes in flight finish. {again} again to cut them short.",
                markup=False,
                soft_wrap=True,
            )

    for signum in previous:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)


def _exit_code_of(received: list[int]) -> int:
    """128 + the signal that stopped an apply's changes first (Ctrl-C without one)."""
    import signal

    codes = {signal.SIGHUP: EXIT_HUNG_UP, signal.SIGTERM: EXIT_TERMINATED}
    return codes.get(signal.Signals(received[0]), EXIT_INTERRUPTED) if received else EXIT_INTERRUPTED


def _retry_report(policy: RetryPolicy, console: Console) -> RetryReport:
    """Progress lines on stderr while vendor calls are retried (stdout stays clean for --format json).
    `console` is the one a progress bar draws on, so the lines print above the bar, not into it."""
    from rich.text import Text

    from reconciler.clock import SystemClock
    from reconciler.retry import RetryReport

    return RetryReport(lambda line: console.print(Text(line), soft_wrap=True), SystemClock(), policy)


class LineProgress:
    """Progress of long work where no bar can be drawn (CI logs, a pipe): a line on stderr every `every`
    seconds, so a 30 s refresh of 2,000 tasks is not 30 s of silence. The subset of rich's Progress that the
    commands use; short work prints nothing."""

    def __init__(
        self, label: str, total: int, console: Console, every: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._label, self._total, self._console, self._every, self._clock = label, total, console, every, clock
        self._done = 0
        self._start = self._next = 0.0

    @staticmethod
    def instead_of_a_bar(console: Console) -> bool:
        """Lines rather than a bar: stderr is no terminal (a CI log, a pipe, whatever FORCE_COLOR says), or a
        dumb one (TERM=dumb, as in Emacs' shell), where rich draws no bar: a long apply showed nothing at all."""
        return not sys.stderr.isatty() or console.is_dumb_terminal

    def __enter__(self) -> LineProgress:
        self._start = self._clock()
        self._next = self._start + self._every
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def add_task(self, _name: str, total: float | None = None) -> TaskID:
        from rich.progress import TaskID

        return TaskID(0)

    def advance(self, _task: TaskID) -> None:
        self._done += 1
        now = self._clock()
        if now >= self._next:
            self._next = now + self._every
            of = f"/{self._total}" if self._total else ""
            self._console.print(
                f"{self._label}: {self._done}{of} ({now - self._start:.0f} s)", markup=False, soft_wrap=True
            )


def _progress(
    total: int, label: str, console: Console | None = None, *, known_total: bool = True
) -> Progress | LineProgress:
    """A rich progress bar on stderr for long work on a terminal; elsewhere a line every 10 s (LineProgress).
    `known_total` false: the count is of work done, its end is not known in advance (a refresh)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or _err_console()
    if LineProgress.instead_of_a_bar(console):
        return LineProgress(label, total if known_total else 0, console)
    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=total < 20,
    )
    return progress


@app.command()
def validate(
    paths: PathsArg = None,
    resolve_secrets: Annotated[
        bool,
        typer.Option(
            "--resolve-secrets",
            help="Also read every secret reference (environment variables, files) and check its value, "
            "as plan and apply do. Without it, secret references are checked for their shape only.",
        ),
    ] = False,
) -> None:
    """Parse and check every spec offline; exit 0 with a summary, or 1 listing every error.

    Needs no secret: secret references ({env: NAME}, {file: PATH}) are checked for their shape, not read,
    so it runs in pre-commit hooks and on pull requests from forks. Other references are read: their
    values are checked (an integer appId, a duration in range). A reference may not name a task (a room,
    a job name, a file id); outside endpoints, appId, region and a few other fields its text is shown only
    as a fingerprint, in errors and plans alike.
    """
    spec_set = load_specs(_paths(paths), resolve_secrets=resolve_secrets, validating=True)
    _keep_until_exit()
    typer.echo(f"Valid: {spec_set.summary()}")
    if not resolve_secrets:
        typer.echo("Secret references were checked for their shape only; --resolve-secrets reads them.")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec language (for editors: yaml-language-server)."""
    from reconciler.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


def complete_explain(incomplete: str) -> list[str]:
    from reconciler.spec import json_schema
    from reconciler.spec.explain import completions

    return completions(json_schema(), incomplete)


@app.command()
def explain(
    path: Annotated[
        str | None,
        typer.Argument(
            metavar="KIND[.FIELD]",
            help="A kind (SnapshotJob), or a field path below it: SnapshotJob.spec.interval. Default: the kinds.",
            autocompletion=complete_explain,
        ),
    ] = None,
) -> None:
    """Explain a spec kind or field: its type, default, range and description, from the JSON Schema (as kubectl
    explain). Lists and maps are walked through: SnapshotJob.spec.streams.user."""
    from reconciler.spec import json_schema
    from reconciler.spec.explain import ExplainError, kinds
    from reconciler.spec.explain import explain as explain_path

    schema = json_schema()
    if path is None:
        typer.echo("KINDS (capctl explain KIND for its fields):\n" + "".join(f"    {k}\n" for k in kinds(schema)))
        return
    try:
        typer.echo(explain_path(schema, path), nl=False)
    except ExplainError as exc:
        fail(str(exc))


def complete_docs(incomplete: str) -> list[str]:
    from reconciler import manual  # here: only `docs` reads the pages (importlib.resources and all)

    return manual.completions(incomplete)


@app.command()
def docs(
    topic: Annotated[
        str | None,
        typer.Argument(
            metavar="TOPIC",
            help="A page, as messages name it: spec-language, spec-language.md or docs/spec-language.md. "
            "Default: the list of pages.",
            autocompletion=complete_docs,
        ),
    ] = None,
    section: Annotated[
        str | None,
        typer.Argument(metavar="SECTION", help="Only this section of the page, by its heading: Limits."),
    ] = None,
) -> None:
    """Read capctl's documentation, the docs/*.md pages its messages point at, shipped with capctl.

    On a terminal the page is formatted and paged (PAGER, or less); piped or redirected, it is printed as
    Markdown. `capctl docs spec-language Limits` shows one section."""
    from reconciler import manual

    if topic is None:
        pages = manual.topics()
        width = max(map(len, pages))
        typer.echo(
            "TOPICS (capctl docs TOPIC [SECTION] to read one):\n"
            + "".join(f"    {name:<{width}}  {title}\n" for name, title in pages.items())
        )
        return
    try:
        found = manual.page(topic, section)
    except manual.ManualError as exc:
        fail(f"docs: {exc}")
    if not sys.stdout.isatty():
        typer.echo(found.text, nl=False)
        return
    from rich.markdown import Markdown

    console = _out_console()
    with console.capture() as captured:
        console.print(Markdown(found.text))
    _page(captured.get())


def _page(text: str) -> None:
    """Through PAGER, else less (LESS=FRX unless set, as git: colours through, a short page needs no `q`),
    else more, else straight out. Not pydoc's pager (rich's default): where less is missing, as in the image,
    it first runs `more` on an empty file to see whether it works, a blank screen to dismiss before the page."""
    import shutil
    import subprocess

    command = os.environ.get("PAGER") or next((name for name in ("less", "more") if shutil.which(name)), None)
    if not command:
        typer.echo(text, nl=False)
        return
    # As git runs PAGER: through the shell, so `less -S` or a pipeline works.
    done = subprocess.run(command, shell=True, input=text, text=True, env={"LESS": "FRX", **os.environ}, check=False)
    if done.returncode == 127:  # the shell's "not found"
        fail(f"docs: the pager {command!r} (PAGER) was not found: set PAGER to one that is, or pipe to a file")


def _select_rooms(spec_set: SpecSet, store: StateStore) -> tuple[SpecSet, list[Selection], dict[str, TaskRecord]]:
    """Add the tasks of room-selector jobs for the rooms the state knows active, and those leaving their room
    (`reconciler/rooms.py`); also returns the selections and the records they were made from (for `_annotate`)."""
    if not spec_set.selector_jobs:
        return spec_set, [], {}
    import dataclasses

    from reconciler.rooms import accounts_of, selected_tasks
    from reconciler.state import RoomActivityStore

    providers = spec_set.providers
    activity = store.room_activity(accounts_of(providers)) if isinstance(store, RoomActivityStore) else []
    records = store.load().records
    tasks, selections = selected_tasks(
        spec_set.tasks, spec_set.selector_jobs, activity, records, providers, store.fingerprint_key()
    )
    return dataclasses.replace(spec_set, tasks=tasks), selections, records


def _annotate(
    the_plan: Plan,
    selections: list[Selection],
    records: dict[str, TaskRecord],
    observed: Mapping[str, Observed],
    spec_set: SpecSet,
) -> Plan:
    if not selections:
        return the_plan
    from reconciler.rooms import annotate, in_view

    shown = in_view(selections, spec_set.selector_jobs, the_plan.options)  # --target / -l narrow them too
    return annotate(the_plan, shown, records, observed, spec_set.providers)


def _plan_options(
    spec_set: SpecSet,
    prune: bool,
    refresh: bool,
    target: list[str] | None,
    replace: list[str] | None,
    labels: list[str] | None,
) -> PlanOptions:
    """The options of a new plan, checked before any state is read or vendor called."""
    import dataclasses

    from reconciler.plan import PlanError, PlanOptions, check_options

    options = PlanOptions(
        prune=prune,
        refreshed=refresh,
        targets=tuple(target or ()),
        replace=tuple(replace or ()),
        labels=tuple(labels or ()),
    )
    # A room-selector job's tasks are known once the state is read: their --replace keys are checked then.
    selected = tuple(f"{c.job.kind}/{c.job.name}/" for c in spec_set.selector_jobs)
    early = dataclasses.replace(options, replace=tuple(k for k in options.replace if not k.startswith(selected)))
    try:
        check_options(early, spec_set.tasks)
    except PlanError as exc:
        fail(str(exc))
    return options


def _plan_from_state(spec_set: SpecSet, store: StateStore, options: PlanOptions, paths: list[str]) -> Plan:
    """`--no-refresh`: no vendor is called, so neither asyncio, httpx nor the providers' HTTP code is loaded."""
    from reconciler.clock import SystemClock
    from reconciler.moves import load_rehomed
    from reconciler.plan import PlanError, diff

    snapshot, moved = load_rehomed(store, spec_set.tasks, spec_set.providers, options)
    _keep_until_exit()  # the records, before the diff's allocations start a young pass over them
    try:
        return diff(
            spec_set.tasks,
            snapshot.records,
            {},
            options=options,
            state_serial=snapshot.serial,
            now=SystemClock().now(),
            paths=paths,
            providers=spec_set.providers,
            moved=moved,
        )
    except PlanError as exc:
        fail(str(exc))


def _retry_policy() -> RetryPolicy:
    from reconciler.retry import RetryPolicy

    try:
        return RetryPolicy.from_env(os.environ)
    except ValueError as exc:
        fail(str(exc))


async def _refreshed_plan(
    spec_set: SpecSet, store: StateStore, options: PlanOptions, paths: list[str]
) -> tuple[Plan, dict[str, Observed]]:
    from reconciler.clock import SystemClock
    from reconciler.engine import make_plan, provider_pool

    retry = _retry_policy()
    clock = SystemClock()
    err = _err_console()
    async with provider_pool(spec_set.providers, clock) as pool:
        with _progress(len(spec_set.tasks), "Refreshing", err, known_total=False) as progress:
            bar = progress.add_task("refresh", total=None)
            run = await make_plan(
                spec_set.tasks,
                store,
                pool,
                clock,
                options=options,
                paths=paths,
                retry=retry,
                on_observed=lambda _k, _o: progress.advance(bar),
                providers=spec_set.providers,
                on_retry=_retry_report(retry, err),
            )
    return run.plan, run.observed


PLAN_FORMATS = ("text", "json", "markdown")
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format", metavar="FORMAT", autocompletion=complete_choices(*PLAN_FORMATS), help="text, json or markdown."
    ),
]


def _check_format(fmt: str) -> None:
    if fmt not in PLAN_FORMATS:
        fail(f"--format {fmt!r}: expected text, json or markdown")


def show_plan(plan: Plan, fmt: str, console: Console | None = None) -> None:
    from reconciler.plan import plan_to_json
    from reconciler.render import render_markdown, render_text

    data = plan_to_json(plan)
    if fmt == "json":
        write_json(data, sys.stdout, ensure_ascii=False)
    elif fmt == "markdown":
        typer.echo(render_markdown(data), nl=False)
    else:
        render_text(data, console or _out_console())


@app.command()
def plan(
    paths: PathsArg = None,
    out: Annotated[
        str | None, typer.Option("--out", metavar="FILE", help="Save the plan (JSON) for `capctl apply --plan`.")
    ] = None,
    fmt: FormatOpt = "text",
    refresh: Annotated[
        bool, typer.Option("--refresh/--no-refresh", help="Observe vendor status first (default) or plan from state.")
    ] = True,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 0 = no changes, 2 = changes, 1 = error.")
    ] = False,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="Plan to stop tasks removed from specs.")] = True,
    target: TargetOpt = None,
    replace: ReplaceOpt = None,
    selector: LabelOpt = None,
    state: StateOpt = None,
    log_level: LogLevelOpt = "warning",
    no_color: NoColorOpt = False,
) -> None:
    """Show what apply would do: a read-only diff of specs, state and vendor status (it never creates a state)."""
    _check_format(fmt)
    _check_log_level(log_level)
    spec_paths = _paths(paths)
    with open_store(state, read_only=True) as store:
        # Hashes and fingerprints are keyed with the state's key (`secrets.py`), so the specs are read after it.
        spec_set = load_specs(spec_paths, fingerprint_key=store.fingerprint_key())
        _keep_until_exit()
        options = _plan_options(spec_set, prune, refresh, target, replace, selector)
        _say_if_no_state(store, "planning as if nothing was created yet")
        spec_set, selections, records = _select_rooms(spec_set, store)
        observed: dict[str, Observed] = {}
        if refresh:
            _setup_logs(log_level)
            the_plan, observed = run_async(lambda: _refreshed_plan(spec_set, store, options, spec_paths))
        else:
            the_plan = _plan_from_state(spec_set, store, options, spec_paths)
        the_plan = _annotate(the_plan, selections, records, observed, spec_set)
        _keep_until_exit()
    show_plan(the_plan, fmt)
    if the_plan.unobserved:
        # As Terraform's refresh errors: the diff printed above may be wrong for those tasks, so it is an error.
        saved_note = "; it was not saved" if out else ""
        fail(f"the plan is incomplete: {_unobserved(the_plan)} (see the note above){saved_note}")
    if out:
        from reconciler.planfile import write_plan_file

        try:
            write_plan_file(the_plan, out)
        except OSError as exc:
            fail(f"{out}: cannot write the plan ({exc.strerror})")
        _err_console().print(
            f"Saved the plan to {out}. Apply it with: capctl apply --plan {out}", markup=False, soft_wrap=True
        )
    if detailed_exitcode and the_plan.has_changes:
        raise typer.Exit(EXIT_CHANGES)


def _say_if_no_state(store: StateStore, consequence: str) -> bool:
    """On stderr, where a read-only command looked for a state and found none; True if so."""
    from reconciler.state import NoState

    if not isinstance(store, NoState):
        return False
    where = str(store.missing)
    _err_console().print(f"{where[:1].upper()}{where[1:]}: {consequence}.", markup=False, soft_wrap=True)
    return True


def _confirm(auto_approve: bool) -> None:
    if auto_approve:
        return
    if not sys.stdin.isatty():
        fail("apply needs confirmation: run it on a terminal, or pass --auto-approve")
    asked_on_stderr = not sys.stdout.isatty()
    try:
        # Where the user sees it: `capctl apply > apply.log` on a terminal put the question in the file and left
        # the user before a silent wait; stderr then, but stdout while that is the terminal (`2>/dev/null`).
        answer = typer.prompt(
            "Apply these changes? Only 'yes' will be accepted", default="", show_default=False, err=asked_on_stderr
        )
    except typer.Abort:  # end of input (Ctrl-D): a no, said as one, not click's bare "Aborted."
        typer.echo(err=asked_on_stderr)
        answer = ""
    if answer.strip() != "yes":
        fail("apply cancelled", code=EXIT_ERROR)


@app.command()
def apply(
    paths: PathsArg = None,
    plan_file: Annotated[
        str | None, typer.Option("--plan", metavar="FILE", help="Apply a plan saved by `capctl plan --out`.")
    ] = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask for confirmation.")] = False,
    parallelism: Annotated[
        int | None,
        typer.Option(
            "--parallelism",
            metavar="N",
            min=1,
            max=1000,
            show_default="auto",
            help="At most this many changes in flight at once. Auto: sized from the rate budgets and the "
            "observed vendor latency (at most 128), so the budgets bound the apply.",
        ),
    ] = None,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="Stop tasks removed from the specs.")] = True,
    refresh: Annotated[bool, typer.Option("--refresh/--no-refresh", help="Observe vendor status first.")] = True,
    target: TargetOpt = None,
    replace: ReplaceOpt = None,
    selector: LabelOpt = None,
    state: StateOpt = None,
    log_level: LogLevelOpt = "warning",
    no_color: NoColorOpt = False,
) -> None:
    """Converge: start missing tasks, re-issue stopped ones, update or replace changed ones, stop removed ones.

    Ctrl-C starts no new change, lets those in flight finish, prints what was done and left, and exits 130;
    SIGTERM does the same and exits 143, SIGHUP (the terminal closed) 129.
    """
    _setup_logs(log_level)
    if plan_file and (target or replace or selector):
        fail("--target, --replace and -l cannot be combined with --plan: they were fixed when the plan was made")
    saved = _read_plan(plan_file) if plan_file else None
    spec_paths = _paths(paths) if paths or saved is None else list(saved.paths)
    with ExitStack() as held:
        # The state's fingerprint key, read before anything is created: bad specs leave no state behind. A state
        # that exists is locked first: a second apply fails at once, naming the holder, without reading specs.
        key, exists = _state_fingerprint_key(state)
        store = _locked_store(state, "capctl apply", held) if exists else None
        spec_set = load_specs(spec_paths, fingerprint_key=key)
        _keep_until_exit()
        options = saved.options if saved else _plan_options(spec_set, prune, refresh, target, replace, selector)
        store = store or _locked_store(state, "capctl apply", held)
        if store.fingerprint_key(key) != key:
            fail("another command created the state meanwhile; nothing was changed: run apply again")
        received: list[int] = []  # the signals that stopped its changes
        the_plan, result = run_async(
            lambda: _apply(spec_set, store, options, spec_paths, saved, auto_approve, parallelism, received)
        )
    if result is not None:
        from reconciler.render import render_apply_result

        render_apply_result(result, _out_console())
        if result.store_error is not None:
            fail(
                f"{result.store_error}: apply again once the state store can be written: it finishes what this one left"
            )
        if result.interrupted:
            raise typer.Exit(_exit_code_of(received))
    if the_plan.unobserved:
        fail(f"{_unobserved(the_plan)} and were left as is (see the note above): apply again once the vendor answers")
    if result is not None and result.failed:
        raise typer.Exit(EXIT_ERROR)


@app.command()
def show(
    plan_file: Annotated[
        str, typer.Argument(metavar="PLAN", help="A plan saved by `capctl plan --out` (e.g. a CI artifact).")
    ],
    fmt: FormatOpt = "text",
    no_color: NoColorOpt = False,
) -> None:
    """Show a saved plan again, as text, markdown (for a PR comment) or JSON. Reads no specs, state or vendor."""
    _check_format(fmt)
    show_plan(_read_plan(plan_file), fmt)


def _unobserved(the_plan: Plan) -> str:
    return f"{len(the_plan.unobserved)} task(s) could not be observed"


def _read_plan(path: str) -> Plan:
    from reconciler.plan import PlanError
    from reconciler.planfile import read_plan_file

    try:
        return read_plan_file(path)
    except PlanError as exc:
        fail(str(exc))


async def _apply(
    spec_set: SpecSet,
    store: StateStore,
    options: PlanOptions,
    paths: list[str],
    saved: Plan | None,
    auto_approve: bool,
    parallelism: int | None,
    received: list[int],
) -> tuple[Plan, ApplyResult | None]:
    from reconciler.clock import SystemClock
    from reconciler.engine import apply_plan, housekeep, make_plan, provider_pool, verify_saved_plan
    from reconciler.execute import ApplyResult, ChangeResult, Interrupt
    from reconciler.moves import load_rehomed
    from reconciler.state.base import StateError

    retry = _retry_policy()
    err = _err_console()
    report = _retry_report(retry, err)
    clock = SystemClock()
    spec_set, selections, records = _select_rooms(spec_set, store)
    async with provider_pool(spec_set.providers, clock) as pool:
        if saved is not None:
            snapshot, moved = load_rehomed(store, spec_set.tasks, spec_set.providers, saved.options)
            verify_saved_plan(
                saved, spec_set.tasks, snapshot, spec_set.providers, hash_key=store.fingerprint_key(), moved=moved
            )
            the_plan, observed = saved, {}
            show_plan(the_plan, "text")
        else:
            run = await make_plan(
                spec_set.tasks,
                store,
                pool if options.refreshed else None,
                clock,
                options=options,
                paths=paths,
                retry=retry,
                providers=spec_set.providers,
                on_retry=report,
            )
            the_plan, snapshot, observed = (
                _annotate(run.plan, selections, records, run.observed, spec_set),
                run.snapshot,
                run.observed,
            )
            show_plan(the_plan, "text")
            if not the_plan.has_changes:
                # e.g. a label edit, or a stop the vendor reported of a task left alone
                housekeep(store, the_plan, spec_set.tasks, snapshot.records, observed, clock.now())
                return the_plan, None
            _confirm(auto_approve)
        # The records and the plan too: the collector's full passes during the apply (up to 0.1 s on a loaded
        # machine, each a stall of the loop that paces the vendor calls) and the one at exit no longer walk them.
        # bench/README.md, "Apply at the defaults".
        _keep_until_exit()
        interrupt = Interrupt()
        done: list[ChangeResult] = []  # as they end: what to report should the state store fail half-way

        def on_done(result: ChangeResult) -> None:
            done.append(result)
            progress.advance(bar)

        with _progress(len(the_plan.actionable), "Applying", err) as progress, _interruptible(interrupt, err, received):
            bar = progress.add_task("apply", total=len(the_plan.actionable))
            try:
                return the_plan, await apply_plan(
                    the_plan,
                    spec_set.tasks,
                    snapshot,
                    observed,
                    store,
                    pool,
                    clock,
                    parallelism=parallelism,
                    retry=retry,
                    on_done=on_done,
                    on_retry=report,
                    interrupt=interrupt,
                )
            except StateError as exc:  # the changes in flight have finished: say what was done and what was not
                not_started = len(the_plan.actionable) - len(done)
                return the_plan, ApplyResult(tuple(done), not_started=not_started, store_error=str(exc))


def _duration_option(option: str, value: str, *, also: str = "") -> int:
    """Seconds of a duration option (`30s`, `5m`, or plain seconds); a bad value exits naming the option (and
    `also`, what else it takes)."""
    from reconciler.spec.fields import parse_duration

    try:
        return int(parse_duration(int(value) if value.isdigit() else value))
    except ValueError as exc:
        fail(f"{option}: {exc}{also}")


@app.command()
def run(
    paths: PathsArg = None,
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="HOST:PORT for callbacks, /healthz, /readyz, /metrics and the status page (use 0.0.0.0:8080 in a "
            "container, with --status-token-ref).",
        ),
    ] = "127.0.0.1:8080",
    resync: Annotated[
        str,
        typer.Option(
            "--resync",
            metavar="DURATION",
            help="Longest a running task goes unobserved, whatever callbacks say, ± 10 % jitter "
            "(longer only when tasks ÷ query budget needs it; a duration: 30s, 5m, or seconds).",
        ),
    ] = "30s",
    prune: Annotated[
        bool, typer.Option("--prune/--no-prune", help="Stop tasks of jobs removed from the specs.")
    ] = True,
    max_prune: Annotated[
        float,
        typer.Option(
            "--max-prune",
            min=0,
            max=100,
            metavar="PERCENT",
            help="A spec change that removes more than this share of the tasks in the state prunes none of them "
            "and waits for a human (`capctl apply`, or a restart with --max-prune 100). 100 disables it.",
        ),
    ] = 50.0,
    prune_grace: Annotated[
        str,
        typer.Option(
            "--prune-grace",
            metavar="DURATION",
            help="How long a task must be missing from the specs before it is stopped (a file rewritten in "
            "place is briefly missing documents); one that comes back in time is left alone. 0 prunes at once.",
        ),
    ] = "30s",
    read_timeout: Annotated[
        str,
        typer.Option(
            "--read-timeout",
            metavar="DURATION",
            help="A connection must send a whole request (headers and body) within this long of connecting or of "
            "its last answer, else it is closed (a duration: 10s, or seconds).",
        ),
    ] = "10s",
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            metavar="N",
            min=1,
            help="Open connections at most; beyond it a new one closes the one waiting longest for its request. "
            "Default: the file-descriptor limit (ulimit -n) less 128, at most 1024.",
        ),
    ] = None,
    status_page: Annotated[
        bool,
        typer.Option(
            "--status-page/--no-status-page",
            help="Serve the read-only status page (GET /) and its JSON twin (GET /api/v1/status) on --listen: "
            "what runs, what the vendor stopped, where capture was lost. See docs/status-page.md.",
        ),
    ] = True,
    status_token_ref: Annotated[
        str | None,
        typer.Option(
            "--status-token-ref",
            metavar="env:NAME|file:PATH",
            help="Require this bearer token for the status page and its JSON (a browser asks for it as the "
            "password), read at start from an environment variable or a file, e.g. a mounted Kubernetes Secret. "
            "Callbacks keep their own signature checks.",
        ),
    ] = None,
    lease_duration: Annotated[
        str,
        typer.Option(
            "--lease-duration",
            metavar="DURATION",
            help="Replicas on one state: the leader's lock lapses this long after its last renew, on the "
            "database's clock; a standby then takes over (a duration: 15s, or seconds).",
        ),
    ] = "15s",
    renew_deadline: Annotated[
        str,
        typer.Option(
            "--renew-deadline",
            metavar="DURATION",
            help="The leader stops acting (and stands by) this long after its last successful renew began, on its "
            "own clock; must be below --lease-duration.",
        ),
    ] = "10s",
    retry_period: Annotated[
        str,
        typer.Option(
            "--retry-period",
            metavar="DURATION",
            help="A standby tries to take the lead, and the leader renews, this often; must be below --renew-deadline.",
        ),
    ] = "2s",
    state: StateOpt = None,
    state_wait: Annotated[
        str,
        typer.Option(
            "--state-wait",
            metavar="DURATION",
            help="How long to wait at start for a state store whose server does not answer (a PostgreSQL not up "
            "yet), trying again every 1 s to 30 s while /healthz answers and /readyz says why; then exit 1. "
            "0 exits at once (a duration: 5m, or seconds; or forever).",
        ),
    ] = "forever",
    log_level: LogLevelOpt = "info",
) -> None:
    """The daemon: reconcile forever, watch the spec files (and the files their references read), serve
    callbacks, probes and the status page.
    Several replicas may run on one state: one leads and acts, the others stand by (they serve callbacks into
    the state's inbox).

    Room-selector jobs start a room's task as a callback says someone entered it (a join, a stream), never stop
    one they cover.

    Each --resync also lists their rooms at the vendor, repairing lost callbacks (docs/daemon.md).

    POST /api/v1/sync (`capctl sync`) requires CAPCTL_SYNC_TOKEN as a bearer token when it is set here.
    """
    from reconciler.daemon import run_daemon
    from reconciler.daemon.http import daemon_sync_token
    from reconciler.daemon.starting import FOREVER
    from reconciler.leader import LeaderSettings

    _split_listen(listen, "127.0.0.1:8080")
    resync_seconds = _duration_option("--resync", resync)
    if resync_seconds <= 0:
        fail("--resync must be at least 1s")
    grace_seconds = _duration_option("--prune-grace", prune_grace)
    read_timeout_seconds = _duration_option("--read-timeout", read_timeout)
    if read_timeout_seconds <= 0:
        fail("--read-timeout must be at least 1s")
    wait_seconds = (
        FOREVER if state_wait == "forever" else float(_duration_option("--state-wait", state_wait, also=", or forever"))
    )
    status_token = None
    if status_token_ref is not None:
        from reconciler.status.token import read_token

        try:
            status_token = read_token(status_token_ref, os.environ)
        except ValueError as exc:
            fail(str(exc))
    try:
        leader = LeaderSettings.parse(
            lease_duration=lease_duration, renew_deadline=renew_deadline, retry_period=retry_period
        )
        daemon_sync_token(os.environ)  # refused as the options are, not as a log line once the logs run
    except ValueError as exc:  # LeaderSettingsError is one
        fail(str(exc))
    _setup_logs(log_level)
    raise typer.Exit(
        run_daemon(
            _paths(paths),
            listen=listen,
            resync=float(resync_seconds),
            prune=prune,
            state_url=state,
            log_level=None,
            max_prune=max_prune,
            prune_grace=float(grace_seconds),
            read_timeout=float(read_timeout_seconds),
            max_connections=max_connections,
            status_page=status_page,
            status_token=status_token,
            leader=leader,
            state_wait=wait_seconds,
        )
    )


@app.command()
def sync(
    keys: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY",
            help="Task keys to reconcile now, e.g. SnapshotJob/lobby-audit/lobby. Default: every task.",
            autocompletion=complete_task_keys,
        ),
    ] = None,
    daemon: Annotated[
        str,
        typer.Option(
            "--daemon",
            metavar="URL",
            envvar="CAPCTL_DAEMON",
            show_envvar=True,
            help="URL of the running `capctl run` (its --listen).",
        ),
    ] = "http://127.0.0.1:8080",
) -> None:
    """Ask the running daemon to reconcile now (these keys, or every task), looking at the vendors first.

    It only queues the keys: the daemon decides and acts as it always does (a task backing off or dormant
    keeps waiting), within the vendors' rate budgets. Use it instead of `capctl apply` while a daemon runs.
    When CAPCTL_SYNC_TOKEN is set, it is sent as a bearer token (the daemon requires it when it has one).
    """
    import httpx

    from reconciler.daemon.http import SYNC_PATH, sync_token
    from reconciler.redact import redact_url, scrub_text
    from reconciler.secrets import Secret

    url = daemon.rstrip("/")
    try:
        base = redact_url(url)  # what messages show: a password in the URL is not printed
        target = httpx.URL(url + SYNC_PATH)
    except (ValueError, httpx.InvalidURL):  # not quoted: neither can say which part is a password
        fail(
            "--daemon: the URL cannot be read (an unclosed [ or a port that is not a number): expected the "
            "daemon's URL, e.g. http://127.0.0.1:8080"
        )
    if not url.startswith(("http://", "https://")):
        fail(f"--daemon {base!r}: expected the daemon's URL, e.g. http://127.0.0.1:8080")
    try:
        token = sync_token(os.environ)
    except ValueError as exc:
        fail(str(exc))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.post(target, json={"keys": keys} if keys else {}, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        said = scrub_text(str(exc) or type(exc).__name__, [Secret(token or "")], limit=None)
        fail(
            f"cannot reach the daemon at {base}: {said}. Is `capctl run` serving there? "
            "Point --daemon or CAPCTL_DAEMON at its --listen address."
        )
    try:
        reply = answer.json()
        reason, queued = str(reply["reason"]), int(reply.get("queued", 0))
    except (ValueError, KeyError, TypeError):
        fail(f"{base} answered {answer.status_code} {answer.reason_phrase}, not as a capctl daemon: is --daemon right?")
    if answer.status_code != 200:
        fail(f"the daemon at {base} queued nothing: {reason}")
    what = f"{queued} task(s)" if keys else f"every task ({queued})"
    _out_console().print(f"Queued {what} for an immediate reconcile at {base}.", markup=False, soft_wrap=True)
    for key in keys or ():
        _out_console().print(f"  {key}", markup=False, soft_wrap=True)


# --- state ---------------------------------------------------------------------------------------------


def record_to_dict(record: TaskRecord) -> dict[str, Any]:
    """Every field of a task record, enums by value, times (`*_at`) in RFC 3339 as a plan's JSON has them
    (the state's own encoding omits defaults and keeps epoch seconds)."""
    import dataclasses
    import enum

    from reconciler.plan import rfc3339

    def shown(name: str, value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        return rfc3339(value) if name.endswith("_at") and isinstance(value, float) else value

    return {f.name: shown(f.name, getattr(record, f.name)) for f in dataclasses.fields(record)}


def _record_filter(keys: list[str], statuses: list[str], labels: list[str]) -> Callable[[Any], bool]:
    """`state list`'s filters, checked before the state is read: each given filter must hold."""
    from reconciler.model import TaskStatus
    from reconciler.plan import PlanError, check_selector, label_matcher, selector_matches

    wanted = {s.strip() for item in statuses for s in item.split(",") if s.strip()}
    known = {s.value for s in TaskStatus}
    if unknown := sorted(wanted - known):
        fail(f"--status {', '.join(unknown)}: expected one of {', '.join(s.value for s in TaskStatus)}")
    try:
        for key in keys:
            check_selector(key, "KEY")
        matches_labels = label_matcher(labels)
    except PlanError as exc:
        fail(str(exc))

    def keep(record: TaskRecord) -> bool:
        return (
            (not keys or any(selector_matches(k, record.key) for k in keys))
            and (not wanted or record.status.value in wanted)
            and matches_labels(record.labels)
        )

    return keep


@state_app.command("list")
def state_list(
    keys: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY",
            help="Only these tasks: task keys or kind/name, with * in the name or room part "
            "('SnapshotJob/lobby-*/*'), as --target.",
            autocompletion=complete_task_keys,
        ),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            metavar="STATUS",
            autocompletion=complete_statuses,
            help="Only tasks in this status (pending, running, stopped, failed, done, dormant, removed); "
            "repeatable or comma-separated.",
        ),
    ] = None,
    selector: LabelOpt = None,
    state: StateOpt = None,
    output: Annotated[
        # --format as plan and show spell it; -o/--output as kubectl does
        str,
        typer.Option(
            "--output",
            "-o",
            "--format",
            metavar="FORMAT",
            autocompletion=complete_choices("table", "json"),
            help="table or json.",
        ),
    ] = "table",
) -> None:
    """List recorded tasks with their status, vendor id, re-issues and next attempt (all, or those filtered)."""
    if output not in ("table", "json"):
        fail(f"--output {output!r}: expected table or json")
    keep = _record_filter(keys or [], status or [], selector or [])
    with open_store(state, read_only=True) as store:
        # As kubectl's "No resources found": no state is an empty list (exit 0), said on stderr.
        _say_if_no_state(store, "no task is recorded (apply or run creates it)")
        snapshot = store.load()
    records = sorted((r for r in snapshot.records.values() if keep(r)), key=lambda r: r.key)
    from reconciler.plan import literal_hint, selector_matches

    for key in keys or []:
        if (hint := literal_hint(key)) and not any(selector_matches(key, k) for k in snapshot.records):
            typer.echo(f"KEY {key} matches no task{hint}.", err=True)
    if output == "json":
        write_json({"serial": snapshot.serial, "tasks": [record_to_dict(r) for r in records]}, sys.stdout)
        return
    from reconciler.render import render_state_table

    typer.echo(render_state_table(records, snapshot.serial))


def _no_task(key: str, store: StateStore) -> NoReturn:
    from reconciler.state import NoState

    if isinstance(store, NoState):
        fail(f"no task {key!r}: {store.missing}")
    fail(f"no task {key!r} in the state at {store.url} (see `capctl state list`)")


@state_app.command("init")
def state_init(state: StateOpt = None) -> None:
    """Start a new, empty state, also in an empty (0-byte) SQLite file, which other commands refuse as damage.

    It creates the capctl tables where there is no state, in an empty SQLite file, or in an SQLite file or
    PostgreSQL database without capctl tables (apply, run and demo also create a state where there is none).
    An existing state is left as it is; a damaged one (some capctl tables but not all, corrupt pages) is
    refused: restore it from a backup, or move it away."""
    from reconciler.state import open_state
    from reconciler.state.sql import SqlStateStore

    store = open_state(state, init=True)
    try:
        serial = store.serial()
    finally:
        store.close()
    if isinstance(store, SqlStateStore) and store.created:
        typer.echo(f"Started a new state at {store.url} (serial {serial}).")
    else:
        typer.echo(f"A state already exists at {store.url} (serial {serial}): nothing changed.")


@state_app.command("copy")
def state_copy(
    to: Annotated[
        str, typer.Option("--to", metavar="URL", help="The state to copy into: a new or empty one (see --force).")
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="URL",
            envvar="CAPCTL_STATE",
            show_envvar=True,
            help="The state to copy (default sqlite:///.capctl/state.db).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the tasks, rooms and inbox of a destination that holds a state.")
    ] = False,
) -> None:
    """Copy a whole state to another store, e.g. SQLite to PostgreSQL before running several replicas.

    Every task record (tombstones, backoffs, dormancy), the fingerprint key, room activity and the callback inbox.

    Both states' locks are taken: stop every daemon replica first.

    The destination gets all of it or nothing (one transaction); one that holds task records is refused unless
    --force. Its serial never moves back.

    The source is left as it was: point every capctl at the copy, then move the source away."""
    from reconciler.state import open_state
    from reconciler.state.sql import SqlStateStore

    with ExitStack() as stack:
        src = stack.enter_context(closing(open_state(source, create=False)))
        assert isinstance(src, SqlStateStore)  # as every store open_state makes
        stack.enter_context(locked(src, "capctl state copy"))
        try:
            copy = src.export()  # before the destination is opened: a refusal creates nothing there
        except KeyboardInterrupt:
            fail("interrupted while reading the source: nothing was copied", code=EXIT_INTERRUPTED)
        dst = stack.enter_context(closing(open_state(to)))
        assert isinstance(dst, SqlStateStore)
        if src.url == dst.url:
            fail(f"--from and --to name the same state ({src.url}): nothing to copy")
        stack.enter_context(locked(dst, "capctl state copy"))
        err = _err_console()

        def progress(done: int, total: int) -> None:
            if total >= 10_000:  # a small state is copied in a blink: no running count
                err.print(f"copied {done:,} of {total:,} task records", soft_wrap=True)

        try:
            serial = dst.import_copy(copy, replace=force, progress=progress)
        except KeyboardInterrupt:  # its transaction was rolled back
            fail(f"interrupted: nothing was copied, {dst.url} is as it was", code=EXIT_INTERRUPTED)
    key = "the fingerprint key" if copy.key_hex else "no fingerprint key (the source's hashes are not keyed yet)"
    typer.echo(
        f"Copied the state at {src.url} (serial {copy.serial}) to {dst.url} (serial {serial}): "
        f"{len(copy.records):,} task record(s), tombstones included; {key}; the activity of {len(copy.rooms)} "
        f"room(s); {len(copy.inbox)} inbox entr{'y' if len(copy.inbox) == 1 else 'ies'}."
    )
    typer.echo(
        f"Point every capctl at {dst.url} now (--state, CAPCTL_STATE) and move the source away, keeping it as a "
        "backup: a daemon on each state would start each task twice."
    )


@state_app.command("show")
def state_show(
    key: Annotated[
        str,
        typer.Argument(
            metavar="KEY", help="Task key, e.g. SnapshotJob/lobby-audit/lobby", autocompletion=complete_task_keys
        ),
    ],
    state: StateOpt = None,
) -> None:
    """Show one task's record as JSON."""
    with open_store(state, read_only=True) as store:
        record = store.record(key)
    if record is None:
        _no_task(key, store)
    typer.echo(json.dumps(record_to_dict(record), indent=2))


@state_app.command("rm")
def state_rm(
    keys: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY",
            help="Task keys to forget, or globs as `state list` takes them ('SnapshotJob/lobby-*/*')",
            autocompletion=complete_task_keys,
        ),
    ],
    state: StateOpt = None,
) -> None:
    """Forget tasks (their vendor tasks are NOT stopped: capctl just stops tracking them), or removed tasks'
    tombstones; all in one transaction, or none when a KEY is not there (a glob may match nothing beside
    others that do)."""
    from reconciler.model import TaskStatus
    from reconciler.plan import PlanError, check_selector, selector_matches
    from reconciler.state import NoState

    try:
        for key in keys:
            check_selector(key, "KEY")
    except PlanError as exc:
        fail(str(exc))
    with open_store(state, read_only=True) as store:  # forgetting a task in no state creates none
        if isinstance(store, NoState):
            _no_task(keys[0], store)
        with locked(store, "capctl state rm"):
            known = store.keys()
            matched = {k: [key for key in known if selector_matches(k, key)] for k in dict.fromkeys(keys)}
            # A key named outright must be there (a typo forgets nothing); a glob may match nothing, as long as
            # something is forgotten (`state rm 'SnapshotJob/*' 'ThumbnailJob/*'` in a state of snapshots only).
            unmatched = [k for k, hits in matched.items() if not hits and ("*" not in k or len(matched) == 1)]
            if unmatched or not any(matched.values()):
                if len(keys) == 1:
                    _no_task(keys[0], store)
                named = ", ".join(repr(k) for k in unmatched or keys)
                fail(f"no task {named} in the state (see `capctl state list`); nothing forgotten")
            forgotten = {key: store.record(key) for hits in matched.values() for key in hits}
            serial = store.delete_many(forgotten)
    running = False
    for key, record in forgotten.items():
        if record is not None and record.status is TaskStatus.REMOVED:
            typer.echo(f"Forgot the tombstone of {key} (serial {serial}): restoring its spec now starts it anew.")
        else:
            running = True
            typer.echo(f"Removed {key} from the state (serial {serial}).")
    if running:
        typer.echo(
            "The vendor tasks, if any, keep running. While the specs declare their jobs, the next apply (or the "
            "daemon) starts them again: remove the jobs to hand the tasks back, or `capctl state import` them again."
        )


def complete_spec_keys(ctx: typer.Context, incomplete: str) -> list[str]:
    """Task keys the specs in ./specs declare that the state does not track yet: what `state import` can
    adopt (shell completion: reads no secret, creates nothing; any error offers nothing)."""
    from reconciler.spec import SpecErrors, load_spec_set

    try:
        declared = load_spec_set(["specs"], resolve_secrets=False).tasks
    except (SpecErrors, OSError):
        return []
    tracked = set(complete_task_keys(ctx, incomplete))
    return [k for k in declared if k.startswith(incomplete) and k not in tracked]


def _task_to_import(spec_set: SpecSet, key: str, paths: list[str]) -> DesiredTask:
    import difflib

    from reconciler.model import job_of

    task = spec_set.tasks.get(key)
    if task is not None:
        return task
    if any(key.startswith(f"{c.job.kind}/{c.job.name}/") for c in spec_set.selector_jobs):
        fail(
            f"{key}: {job_of(key)} picks its rooms with a selector, whose tasks start as the rooms become active; "
            "import adopts the tasks of named rooms and files only"
        )
    close = difflib.get_close_matches(key, list(spec_set.tasks), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    fail(f"{key}: no such task in the specs ({', '.join(paths)}){hint}; import adopts a task the specs declare")


def _adopt_checked(record: TaskRecord, store: StateStore, spec_set: SpecSet, *, vendor: bool = True) -> TaskRecord:
    """The record to store for the probe `record`: checked against the state, then (`vendor`) at the vendor."""
    from reconciler.adopt import AdoptError, adopted, check_unclaimed
    from reconciler.model import ApiFamily

    async def observe() -> Observed | None:
        from reconciler.clock import SystemClock
        from reconciler.engine import provider_pool
        from reconciler.execute import observe_all

        retry, clock = _retry_policy(), SystemClock()
        async with provider_pool(spec_set.providers, clock) as pool:
            found = await observe_all(
                {record.key: record}, pool, clock, retry=retry, on_retry=_retry_report(retry, _err_console())
            )
        return found.get(record.key)

    try:
        check_unclaimed(record, store.load().records)
        if vendor:
            # MediaThumbnails has no status query: a thumbnail task is recorded on the operator's word.
            observed = None if record.family is ApiFamily.ZEGO_THUMBNAIL else run_async(observe)
            return adopted(record, observed)
    except AdoptError as exc:
        fail(f"{record.key}: {exc}")
    return record


@state_app.command("import")
def state_import(
    key: Annotated[
        str,
        typer.Argument(
            metavar="KEY", help="The task key the specs give it (kind/name/room)", autocompletion=complete_spec_keys
        ),
    ],
    vendor_id: Annotated[
        str,
        typer.Argument(
            metavar="VENDOR_TASK_ID",
            help="The vendor's id of the task: a Volcengine TaskId, a ZEGO recording's TaskId (legacy: task_id), "
            "a MediaThumbnails TaskId",
        ),
    ],
    paths: PathsArg = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check the task at the vendor and say what would be recorded; write nothing."),
    ] = False,
    state: StateOpt = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Adopt a task started outside capctl as KEY's, without stopping it, as `terraform import` does.

    The vendor's status query must find it running in KEY's room (a MediaThumbnails task, which has no status
    query, is taken on your word); it is then recorded as if capctl had started it with the spec's settings,
    so `capctl plan` shows it unchanged."""
    from reconciler.adopt import AdoptError, describe, probe
    from reconciler.clock import SystemClock
    from reconciler.model import TaskStatus
    from reconciler.plan import fmt_time

    _setup_logs(log_level)
    spec_paths = _paths(paths)
    # The state's fingerprint key, read before anything is created: bad specs leave no state behind.
    hash_key, _ = _state_fingerprint_key(state)
    spec_set = load_specs(spec_paths, fingerprint_key=hash_key)
    task = _task_to_import(spec_set, key, spec_paths)
    try:
        record = probe(task, vendor_id, SystemClock().now(), app_id=spec_set.providers[task.provider].app_id)
    except AdoptError as exc:
        fail(f"{key}: {exc}")
    # Checked read-only first, so a refusal creates no state; a dry run stops there.
    with open_store(state, read_only=True) as store:
        found = _adopt_checked(record, store, spec_set)
    if not dry_run:
        with open_store(state) as store, locked(store, "capctl state import"):
            if store.fingerprint_key(hash_key) != hash_key:
                fail("another command created the state meanwhile; nothing was imported: run it again")
            serial = store.put(_adopt_checked(found, store, spec_set, vendor=False))  # what changed since
    what = describe(found)
    how = (
        "recorded as submitted (MediaThumbnails has no status query: not checked at the vendor)"
        if found.status is TaskStatus.DONE
        else f"running since {fmt_time(found.started_at)}"
        if found.started_at
        else "running"
    )
    if dry_run:
        typer.echo(f"Would import {key}: the {what}, {how}. Nothing was written (--dry-run).")
        return
    typer.echo(
        f"Imported {key} (serial {serial}): the {what}, {how}. capctl now keeps it as if it had started it with "
        "the spec's settings: `capctl plan` shows it unchanged."
    )


@app.command()
def wake(
    keys: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY", help="Task keys, e.g. SnapshotJob/lobby-audit/lobby", autocompletion=complete_task_keys
        ),
    ],
    state: StateOpt = None,
) -> None:
    """Wake dormant or backing-off tasks: clear their backoff so the next apply (or the daemon) starts them now.

    Takes the state lock, which a running daemon holds: stop it first (it wakes a dormant task by itself on
    room activity)."""
    from reconciler import transitions
    from reconciler.plan import fmt_time, waited_after, whole_keys_hint
    from reconciler.state import NoState

    with open_store(state, read_only=True) as store:  # waking a task in no state creates none
        if isinstance(store, NoState):
            fail(f"nothing to wake: {store.missing}")
        with locked(store, "capctl wake"):
            records = {k: r for k in dict.fromkeys(keys) if (r := store.record(k)) is not None}
            unknown = [k for k in keys if k not in records]
            if unknown:
                named = ", ".join(repr(k) for k in unknown)
                hint = next((h for k in unknown if (h := whole_keys_hint("wake", k))), "")
                fail(f"no task {named} in the state (see `capctl state list`); nothing woken{hint}")
            lines, woken = [], []
            for key in dict.fromkeys(keys):
                record = records[key]
                new = transitions.woken(record)
                if new is None:
                    lines.append(f"{key} is {record.status.value}: nothing to wake.")
                    continue
                woken.append(new)
                slot = f", next slot {fmt_time(record.next_attempt_at)}" if record.next_attempt_at else ""
                lines.append(f"Woke {key} (was {record.status.value} after {waited_after(record)}{slot}).")
            serial = store.put_many(woken) if woken else None
    for line in lines:
        typer.echo(line)
    if serial is not None:
        typer.echo(f"Backoff cleared (state serial {serial}): the next `capctl apply`, or the daemon, starts them now.")


# --- simulator and demo ------------------------------------------------------------------------------


def _split_listen(listen: str, example: str) -> tuple[str, int]:
    from reconciler.listen import parse_listen

    try:
        return parse_listen(listen, example=example)
    except ValueError as exc:
        fail(str(exc))


@app.command()
def sim(
    listen: Annotated[
        str, typer.Option("--listen", metavar="HOST:PORT", help="HOST:PORT to serve on.")
    ] = "127.0.0.1:8750",
    speed: Annotated[
        float,
        typer.Option(
            "--speed", metavar="FACTOR", min=0.01, help="Simulated time runs this much faster (at most 100000)."
        ),
    ] = 1.0,
    fake_clock: Annotated[
        bool, typer.Option("--fake-clock", help="Time moves only via POST /_sim/clock (for tests).")
    ] = False,
    clock_offset: Annotated[
        float,
        typer.Option(
            "--clock-offset",
            metavar="SECONDS",
            help="Start the clock this far off this machine's (negative: behind), as a vendor whose clock is off.",
        ),
    ] = 0.0,
    volcengine_callback_url: Annotated[
        str | None, typer.Option(metavar="URL", help="Where to POST Volcengine callbacks.")
    ] = None,
    zego_callback_url: Annotated[str | None, typer.Option(metavar="URL", help="Where to POST ZEGO callbacks.")] = None,
    scenario: Annotated[
        Path | None,
        typer.Option(
            "--scenario",
            metavar="FILE",
            help="Play this room-traffic scenario (YAML, see docs/simulator.md), print its coverage, then stop.",
        ),
    ] = None,
    coverage_out: Annotated[
        Path | None,
        typer.Option(
            "--coverage-out", metavar="FILE", help="With --scenario: also write the full coverage report (JSON)."
        ),
    ] = None,
    zego_app: Annotated[
        list[str] | None,
        typer.Option(
            "--zego-app",
            metavar="APPID:SERVER_SECRET:CALLBACK_SECRET",
            help="Serve this ZEGO app too, beside the built-in 1234567890 (repeatable): specs of several apps "
            "can point at one simulator.",
        ),
    ] = None,
) -> None:
    """Run the local vendor simulator (Volcengine under /volc, ZEGO under /zego, control API under /_sim).

    Every path also works under /as/NAME/ (the request log, GET /_sim/requests, names NAME as the caller).
    """
    from reconciler.sim import serve
    from reconciler.sim.clocks import check_offset, check_speed
    from reconciler.sim.config import BUILTIN_ZEGO_APP, parse_zego_app
    from reconciler.sim.scenario import ScenarioError, load_scenario

    _split_listen(listen, "127.0.0.1:8750")
    try:
        check_speed(speed)
    except ValueError as exc:
        fail(f"--speed: {exc}")
    try:
        check_offset(clock_offset)
    except ValueError as exc:
        fail(f"--clock-offset: {exc}")
    if fake_clock and speed != 1.0:  # taken silently before: the clock stood still all the same
        fail("sim: --speed and --fake-clock exclude each other (a fake clock moves only by POST /_sim/clock)")
    if coverage_out is not None and scenario is None:
        fail("sim: --coverage-out needs --scenario")
    zego_apps = []
    for text in zego_app or ():
        try:
            zego_apps.append(parse_zego_app(text))
        except ValueError as exc:
            fail(f"--zego-app: {exc}")
        if zego_apps[-1].app_id in {a.app_id for a in (BUILTIN_ZEGO_APP, *zego_apps[:-1])}:
            fail(f"--zego-app: app {zego_apps[-1].app_id} is given twice (1234567890 is built in)")
    try:
        played = load_scenario(scenario) if scenario is not None else None
    except ScenarioError as exc:
        fail(f"sim: {exc}")
    try:
        serve(
            listen,
            speed=speed,
            fake_clock=fake_clock,
            clock_offset=clock_offset,
            volcengine_callback_url=volcengine_callback_url,
            zego_callback_url=zego_callback_url,
            scenario=played,
            coverage_out=coverage_out,
            zego_apps=zego_apps,
        )
    except OSError as exc:
        fail(f"sim: {exc.strerror}")


@app.command()
def demo(
    paths: PathsArg = None,
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Where the demo's simulator listens (port 0: any free port). The quickstart specs follow it "
            "through the CAPCTL_*_ENDPOINT variables the demo sets.",
        ),
    ] = "127.0.0.1:8750",
    daemon_listen: Annotated[
        str,
        typer.Option(
            "--daemon-listen",
            metavar="HOST:PORT",
            help="Where the demo's daemon (`capctl run`) listens (port 0: any free port).",
        ),
    ] = "127.0.0.1:8081",
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Leave the daemon and the simulator running at the end, until Ctrl-C (exit 130) or SIGTERM (exit 0).",
        ),
    ] = False,
) -> None:
    """Walk through the main job end to end on the quickstart specs, against a local simulator.

    plan → apply → a room empties → its task idles out → plan shows the re-issue and why → apply re-issues it →
    the daemon keeps it all running by itself. State goes to .capctl/demo.db, apart from your real state.
    Without ./specs (a capctl checkout's quickstart specs), it plays the copy of them that capctl ships.
    """
    from reconciler.demo import DemoError, quickstart, run_demo

    sim_at = _split_listen(listen, "127.0.0.1:8750")
    daemon_at = _split_listen(daemon_listen, "127.0.0.1:8081")
    # ./specs is a capctl checkout's quickstart (every command's default); elsewhere, the copy capctl ships.
    spec_paths = _paths(paths) if paths or Path("specs").exists() else [quickstart()]
    load_specs(spec_paths)  # bad specs fail here, before anything starts; the demo reads them again
    try:
        code = run_demo(
            spec_paths,
            lambda paths, key: load_specs(paths, fingerprint_key=key),
            sim_at=sim_at,
            daemon_at=daemon_at,
            console=_out_console(),
            keep_running=keep_running,
        )
    except DemoError as exc:
        fail(f"demo: {exc}")
    if code:
        raise typer.Exit(code)


class CompletionShell(enum.StrEnum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"


COMPLETE_VAR = "_CAPCTL_COMPLETE"  # the variable the scripts set when they ask capctl for completions


@app.command()
def completion(shell: Annotated[CompletionShell, typer.Argument(metavar="SHELL", help="bash, zsh or fish.")]) -> None:
    """Print the shell completion script for capctl's commands, options and task keys.

    bash: `source <(capctl completion bash)` (add it to ~/.bashrc); zsh: `source <(capctl completion zsh)`
    after compinit; fish: `capctl completion fish > ~/.config/fish/completions/capctl.fish`.
    """
    # Typer keeps its script templates in a private module; these are the scripts of its own
    # --show-completion, which capctl does not offer (a `completion` command is what kubectl and gh do).
    # bash's also passes the line as typed (reconciler/completion.py: a `:` in a --state URL).
    from typer._completion_shared import get_completion_script

    from reconciler.completion import BASH_SCRIPT

    if shell is CompletionShell.BASH:
        typer.echo(BASH_SCRIPT % {"complete_var": COMPLETE_VAR})
        return
    typer.echo(get_completion_script(prog_name="capctl", complete_var=COMPLETE_VAR, shell=shell.value))


for command in (*app.registered_commands, *state_app.registered_commands):
    command.cls = CapctlCommand


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"capctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="Plain text for every command: no colours or styles (as NO_COLOR).")
    ] = False,
) -> None:
    """capctl keeps declared RTC capture jobs running."""
    global _no_color
    _no_color = no_color  # the root runs first on every invocation: an earlier in-process run leaves nothing
    if problem := failpoints.misspelt():
        fail(problem)


# typer reads each command's parameters from its annotations on every run and evaluates them twice
# (`inspect.signature(eval_str=True)`, then `get_type_hints`), and this module's are strings (`from __future__ import
# annotations`): 23 ms of every command's start. Evaluated once, here: 4 ms, and typer's part 9 ms.
for _command in (*app.registered_commands, *state_app.registered_commands):
    if _command.callback is not None:
        _command.callback.__annotations__ = get_type_hints(_command.callback, include_extras=True)
main_options.__annotations__ = get_type_hints(main_options, include_extras=True)


def main() -> None:
    from typer._completion_classes import completion_init

    from reconciler import completion, streams

    streams.install()  # a reader that leaves early (`| head`) or an ASCII terminal: no traceback, same exit code
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    completion_init()  # registers the shells whose scripts `capctl completion` prints (typer does so only with
    # add_completion, which would add --install-completion options instead of the command)
    completion.register()  # bash: the words from the line as typed
    try:
        app()
    finally:
        if (failure := streams.output_failure()) is not None:  # a full or failing disk under `> file`
            print(f"Error: {failure}", file=sys.stderr, flush=True)  # dropped if stderr is the one that failed
            sys.exit(EXIT_ERROR)  # not the 0 (or 2) of a command whose output is cut short
