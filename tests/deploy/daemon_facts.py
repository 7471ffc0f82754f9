"""What the daemon really offers, read from its code: the deploy kit's tests check manifests and the image
against these, never against a copied list, so a renamed flag or route fails them.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, cast

import typer.main
from starlette.routing import Route

from reconciler.cli import app
from reconciler.daemon.http import SYNC_TOKEN_ENV, create_app
from reconciler.listen import parse_listen
from reconciler.spec.fields import parse_duration
from reconciler.state import STATE_ENV

ROOT = Path(__file__).resolve().parents[2]


def run_options() -> dict[str, Any]:
    """Every option of `capctl run`, by each of its spellings, to its click parameter."""
    group = cast(Any, typer.main.get_command(app))
    command = group.commands["run"]
    return {opt: param for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def commands() -> set[str]:
    return set(cast(Any, typer.main.get_command(app)).commands)


def http_paths() -> set[str]:
    """The daemon's routes (building the app reads no daemon: the handlers only close over it)."""
    return {cast(Route, route).path for route in create_app(cast(Any, None)).routes}


def env_names() -> set[str]:
    """The environment variables the daemon itself reads (vendor secrets are named by the user's specs)."""
    return {STATE_ENV, SYNC_TOKEN_ENV}


def check_run_args(args: list[str]) -> tuple[int, list[str]]:
    """Check `capctl run ARGS` (ARGS[0] == "run") against the real command: every option exists and its value
    parses as the daemon would parse it. Returns the port of --listen and the positional paths."""
    assert args[0] == "run" and "run" in commands(), shlex.join(args)
    options = run_options()
    port, paths, rest = -1, [], iter(args[1:])
    for arg in rest:
        if not arg.startswith("--"):
            paths.append(arg)
            continue
        name, eq, value = arg.partition("=")
        assert name in options, f"capctl run has no option {name} (it has {sorted(options)})"
        param = options[name]
        if param.is_flag:
            continue
        value = value if eq else next(rest)
        if name == "--listen":
            port = parse_listen(value, example="0.0.0.0:8080")[1]
        elif name in ("--resync", "--prune-grace", "--read-timeout"):
            assert parse_duration(int(value) if value.isdigit() else value) > 0, arg
    assert port > 0, f"capctl run needs --listen with a port reachable from outside the pod: {shlex.join(args)}"
    return port, paths
