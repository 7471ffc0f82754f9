"""The `capctl` command line: the composition root that wires specs, state, providers and views.

This package is laid out as mature CLIs are (kubectl: a package per command group): this module makes the
app, its `state` group and the root options and lists every command in the order `capctl --help` shows
them; `classes` holds how commands print help and fail on usage, `common` and `options` what commands share;
`spectools`, `plans`, `daemon`, `state` and `sim` hold the commands themselves.

Heavy modules (httpx, starlette, the providers, the simulator) are imported inside the commands that use
them, so `capctl validate` and `capctl plan --no-refresh` start fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, get_type_hints

import typer

from reconciler import __version__, failpoints
from reconciler.cli import daemon, plans, sim, spectools, state
from reconciler.cli.classes import CapctlCommand, CapctlGroup
from reconciler.cli.common import EXIT_ERROR, fail, reset_no_color

__all__ = ["app", "main"]

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

for _command in (
    spectools.validate,
    spectools.schema,
    spectools.explain,
    spectools.docs,
    plans.plan,
    plans.apply,
    plans.show,
    daemon.run,
    daemon.sync,
    daemon.wake,
    sim.sim,
    sim.demo,
    spectools.completion,
):
    app.command(cls=CapctlCommand)(_command)
for _name, _state_command in (
    ("list", state.state_list),
    ("init", state.state_init),
    ("copy", state.state_copy),
    ("show", state.state_show),
    ("rm", state.state_rm),
    ("import", state.state_import),
):
    state_app.command(_name, cls=CapctlCommand)(_state_command)


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
    reset_no_color(no_color)
    if problem := failpoints.misspelt():
        fail(problem)


# typer reads each command's parameters from its annotations on every run and evaluates them twice
# (`inspect.signature(eval_str=True)`, then `get_type_hints`), and the command modules' are strings (`from __future__
# import annotations`): 23 ms of every command's start. Evaluated once, here: 4 ms, and typer's part 9 ms.
for _info in (*app.registered_commands, *state_app.registered_commands):
    if _info.callback is not None:
        _info.callback.__annotations__ = get_type_hints(_info.callback, include_extras=True)
main_options.__annotations__ = get_type_hints(main_options, include_extras=True)


# Optional modules that libraries import whenever they are installed, and that capctl never runs: httpcore imports
# trio (installed beside capctl by selenium, say) for trio callers, httpx its own command line (click, rich's syntax,
# pygments). Marked absent in capctl's own process, both fall back as where they are not installed: 240 M and 60 M
# instructions of every command that calls a vendor (bench/README.md, "The CLI's start").
_UNUSED_OPTIONAL_MODULES = ("trio", "httpx._main")


def main() -> None:
    for name in _UNUSED_OPTIONAL_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "import name" raises ImportError
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
