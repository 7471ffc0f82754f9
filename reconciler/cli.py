"""The `capctl` command line: the composition root that wires specs, state, providers and views.

Heavy modules (httpx, starlette, the providers, the simulator) are imported inside the commands that use
them, so `capctl validate` and `capctl plan --no-refresh` start fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from reconciler import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from reconciler.execute import ApplyResult
    from reconciler.plan import Plan
    from reconciler.retry import RetryPolicy
    from reconciler.spec import SpecSet
    from reconciler.state.base import StateStore

app = typer.Typer(
    name="capctl",
    help="Declarative reconciler for RTC capture jobs: room snapshots, cloud recordings, thumbnails.\n\n"
    "Declare jobs in YAML specs, review `capctl plan`, converge with `capctl apply`, "
    "or keep them running with `capctl run`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
state_app = typer.Typer(help="Inspect and edit the state store.", no_args_is_help=True)
app.add_typer(state_app, name="state")

PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Spec files or directories (searched recursively for *.yaml, *.yml). Default: ./specs"),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        envvar="CAPCTL_STATE",
        show_envvar=True,
        help="State URL: sqlite:///path/state.db (default sqlite:///.capctl/state.db) or postgresql://…",
    ),
]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target", help="Only tasks matching: a key, kind/name, or a key with * in its last part. Repeatable."
    ),
]
ReplaceOpt = Annotated[
    list[str] | None,
    typer.Option("--replace", help="Force stop + start of this task key. Repeatable."),
]
LogLevelOpt = Annotated[
    str,
    typer.Option("--log-level", envvar="CAPCTL_LOG_LEVEL", help="debug, info, warning or error."),
]

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _out_console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def fail(message: str, *, code: int = EXIT_ERROR) -> NoReturn:
    from rich.markup import escape

    # The message may quote user input (a path, a flag value): escaped, so "[...]" in it prints as typed.
    _err_console().print(f"[bold red]Error:[/bold red] {escape(message)}", soft_wrap=True, markup=True)
    raise typer.Exit(code)


def _paths(paths: list[Path] | None) -> list[str]:
    return [str(p) for p in paths] if paths else ["specs"]


def _check_log_level(level: str) -> None:
    if level.lower() not in {"debug", "info", "warning", "error"}:
        fail(f"--log-level {level!r}: expected debug, info, warning or error")


def _setup_logs(level: str) -> None:
    from reconciler import logs

    _check_log_level(level)
    logs.configure(level)


def load_specs(paths: list[str]) -> SpecSet:
    """Load and validate, or print every error as file:line:col and exit 1."""
    from reconciler.spec import SpecErrors, load_spec_set

    try:
        return load_spec_set(paths)
    except SpecErrors as exc:
        console = _err_console()
        for error in exc.errors:
            console.print(str(error), markup=False, highlight=False, soft_wrap=True)
        count = len(exc.errors)
        console.print(f"[bold red]{count} error{'s' if count != 1 else ''}[/bold red]: nothing was changed.")
        raise typer.Exit(EXIT_ERROR) from None


@contextmanager
def open_store(url: str | None) -> Iterator[StateStore]:
    from reconciler.state import open_state
    from reconciler.state.base import StateError

    try:
        store = open_state(url)
    except StateError as exc:
        fail(str(exc))
    try:
        yield store
    finally:
        store.close()


@contextmanager
def locked(store: StateStore, command: str) -> Iterator[None]:
    from reconciler.state.base import LockHeld

    try:
        lock = store.lock(command)
    except LockHeld as exc:
        fail(
            f"another capctl holds the state lock ({exc.holder}); wait for it to finish. "
            f"A lock held by a process that died is released by itself."
        )
    try:
        yield
    finally:
        lock.release()


def run_async(coro_factory: Callable[[], Any]) -> Any:
    import asyncio

    from reconciler.plan import PlanError
    from reconciler.state.base import StateError

    try:
        return asyncio.run(coro_factory())
    except (PlanError, StateError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)


def _progress(total: int, label: str) -> Any:
    """A rich progress bar on stderr for long work on a terminal; a no-op context otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err_console(),
        transient=True,
        disable=total < 20 or not sys.stderr.isatty(),
    )
    return progress


@app.command()
def validate(paths: PathsArg = None) -> None:
    """Parse and check every spec offline; exit 0 with a summary, or 1 listing every error."""
    spec_set = load_specs(_paths(paths))
    typer.echo(f"Valid: {spec_set.summary()}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec language (for editors: yaml-language-server)."""
    from reconciler.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


def _plan_options(prune: bool, refresh: bool, target: list[str] | None, replace: list[str] | None) -> Any:
    from reconciler.plan import PlanOptions

    return PlanOptions(prune=prune, refreshed=refresh, targets=tuple(target or ()), replace=tuple(replace or ()))


def _plan_from_state(spec_set: SpecSet, store: StateStore, options: Any, paths: list[str]) -> Plan:
    """`--no-refresh`: no vendor is called, so neither asyncio, httpx nor the providers are loaded."""
    from reconciler.clock import SystemClock
    from reconciler.plan import PlanError, diff

    snapshot = store.load()
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
        )
    except PlanError as exc:
        fail(str(exc))


def _retry_policy() -> RetryPolicy:
    from reconciler.retry import RetryPolicy

    try:
        return RetryPolicy.from_env(os.environ)
    except ValueError as exc:
        fail(str(exc))


async def _refreshed_plan(spec_set: SpecSet, store: StateStore, options: Any, paths: list[str]) -> Plan:
    from reconciler.clock import SystemClock
    from reconciler.engine import make_plan, provider_pool

    retry = _retry_policy()
    clock = SystemClock()
    async with provider_pool(spec_set.providers, clock) as pool:
        with _progress(len(spec_set.tasks), "Refreshing") as progress:
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
            )
    return run.plan


def show_plan(plan: Plan, fmt: str, console: Console | None = None) -> None:
    from reconciler.plan import plan_to_json
    from reconciler.render import render_markdown, render_text

    data = plan_to_json(plan)
    if fmt == "json":
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif fmt == "markdown":
        typer.echo(render_markdown(data), nl=False)
    else:
        render_text(data, console or _out_console())


@app.command()
def plan(
    paths: PathsArg = None,
    out: Annotated[str | None, typer.Option("--out", help="Save the plan (JSON) for `capctl apply --plan`.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text, json or markdown.")] = "text",
    refresh: Annotated[
        bool, typer.Option("--refresh/--no-refresh", help="Observe vendor status first (default) or plan from state.")
    ] = True,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 0 = no changes, 2 = changes, 1 = error.")
    ] = False,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="Plan to stop tasks removed from specs.")] = True,
    target: TargetOpt = None,
    replace: ReplaceOpt = None,
    state: StateOpt = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Show what apply would do: a read-only diff of specs, state and vendor status."""
    if fmt not in ("text", "json", "markdown"):
        fail(f"--format {fmt!r}: expected text, json or markdown")
    _check_log_level(log_level)
    spec_paths = _paths(paths)
    spec_set = load_specs(spec_paths)
    options = _plan_options(prune, refresh, target, replace)
    with open_store(state) as store:
        if refresh:
            _setup_logs(log_level)
            the_plan = run_async(lambda: _refreshed_plan(spec_set, store, options, spec_paths))
        else:
            the_plan = _plan_from_state(spec_set, store, options, spec_paths)
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
        _err_console().print(f"Saved the plan to {out}. Apply it with: capctl apply --plan {out}", markup=False)
    if detailed_exitcode and the_plan.has_changes:
        raise typer.Exit(EXIT_CHANGES)


def _confirm(auto_approve: bool) -> None:
    if auto_approve:
        return
    if not sys.stdin.isatty():
        fail("apply needs confirmation: run it on a terminal, or pass --auto-approve")
    answer = typer.prompt("Apply these changes? Only 'yes' will be accepted", default="", show_default=False)
    if answer.strip() != "yes":
        fail("apply cancelled", code=EXIT_ERROR)


@app.command()
def apply(
    paths: PathsArg = None,
    plan_file: Annotated[str | None, typer.Option("--plan", help="Apply a plan saved by `capctl plan --out`.")] = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask for confirmation.")] = False,
    parallelism: Annotated[
        int,
        typer.Option(
            "--parallelism", min=1, max=1000, help="Vendor calls in flight at once (rate budgets still apply)."
        ),
    ] = 10,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="Stop tasks removed from the specs.")] = True,
    refresh: Annotated[bool, typer.Option("--refresh/--no-refresh", help="Observe vendor status first.")] = True,
    target: TargetOpt = None,
    replace: ReplaceOpt = None,
    state: StateOpt = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Converge: start missing tasks, re-issue stopped ones, update or replace changed ones, stop removed ones."""
    _setup_logs(log_level)
    if plan_file and (target or replace):
        fail("--target and --replace cannot be combined with --plan: they were fixed when the plan was made")
    saved = _read_plan(plan_file) if plan_file else None
    spec_paths = _paths(paths) if paths or saved is None else list(saved.paths)
    spec_set = load_specs(spec_paths)
    options = saved.options if saved else _plan_options(prune, refresh, target, replace)
    with open_store(state) as store, locked(store, "capctl apply"):
        the_plan, result = run_async(
            lambda: _apply(spec_set, store, options, spec_paths, saved, auto_approve, parallelism)
        )
    if result is not None:
        from reconciler.render import render_apply_result

        render_apply_result(result, _out_console())
    if the_plan.unobserved:
        fail(f"{_unobserved(the_plan)} and were left as is (see the note above): apply again once the vendor answers")
    if result is not None and result.failed:
        raise typer.Exit(EXIT_ERROR)


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
    options: Any,
    paths: list[str],
    saved: Plan | None,
    auto_approve: bool,
    parallelism: int,
) -> tuple[Plan, ApplyResult | None]:
    from reconciler.clock import SystemClock
    from reconciler.engine import apply_plan, housekeep, make_plan, provider_pool, verify_saved_plan

    retry = _retry_policy()
    clock = SystemClock()
    async with provider_pool(spec_set.providers, clock) as pool:
        if saved is not None:
            snapshot = store.load()
            verify_saved_plan(saved, spec_set.tasks, snapshot, spec_set.providers)
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
            )
            the_plan, snapshot, observed = run.plan, run.snapshot, run.observed
            show_plan(the_plan, "text")
            if not the_plan.has_changes:
                housekeep(store, the_plan, spec_set.tasks, snapshot, clock.now())
                return the_plan, None
            _confirm(auto_approve)
        housekeep(store, the_plan, spec_set.tasks, snapshot, clock.now())
        with _progress(len(the_plan.actionable), "Applying") as progress:
            bar = progress.add_task("apply", total=len(the_plan.actionable))
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
                on_done=lambda _r: progress.advance(bar),
            )


@app.command()
def run(
    paths: PathsArg = None,
    listen: Annotated[
        str,
        typer.Option(
            "--listen", help="HOST:PORT for callbacks, /healthz, /readyz, /metrics (use 0.0.0.0:8080 in a container)."
        ),
    ] = "127.0.0.1:8080",
    resync: Annotated[
        str, typer.Option("--resync", help="Longest a running task goes unobserved (a duration: 30s, 5m, or seconds).")
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
    state: StateOpt = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """The daemon: reconcile forever, watch the spec files, serve callbacks and probes."""
    from reconciler.daemon import run_daemon
    from reconciler.spec.fields import parse_duration

    _split_listen(listen, "127.0.0.1:8080")
    try:
        resync_seconds = int(parse_duration(int(resync) if resync.isdigit() else resync))
    except ValueError as exc:
        fail(f"--resync: {exc}")
    if resync_seconds <= 0:
        fail("--resync must be at least 1s")
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
        )
    )


# --- state ---------------------------------------------------------------------------------------------


def record_to_dict(record: Any) -> dict[str, Any]:
    """Every field of a task record, enums by value (the state's own encoding omits defaults)."""
    import dataclasses
    import enum

    return {
        f.name: (v.value if isinstance(v := getattr(record, f.name), enum.Enum) else v)
        for f in dataclasses.fields(record)
    }


@state_app.command("list")
def state_list(
    state: StateOpt = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """List every recorded task with its status, vendor id, re-issues and next attempt."""
    if output not in ("table", "json"):
        fail(f"--output {output!r}: expected table or json")
    with open_store(state) as store:
        snapshot = store.load()
    records = sorted(snapshot.records.values(), key=lambda r: r.key)
    if output == "json":
        typer.echo(json.dumps({"serial": snapshot.serial, "tasks": [record_to_dict(r) for r in records]}, indent=2))
        return
    from reconciler.render import render_state_table

    typer.echo(render_state_table(records, snapshot.serial))


@state_app.command("show")
def state_show(
    key: Annotated[str, typer.Argument(help="Task key, e.g. SnapshotJob/lobby-audit/lobby")], state: StateOpt = None
) -> None:
    """Show one task's record as JSON."""
    with open_store(state) as store:
        record = store.load().records.get(key)
    if record is None:
        fail(f"no task {key!r} in the state (see `capctl state list`)")
    typer.echo(json.dumps(record_to_dict(record), indent=2))


@state_app.command("rm")
def state_rm(key: Annotated[str, typer.Argument(help="Task key to forget")], state: StateOpt = None) -> None:
    """Forget a task (the vendor task is NOT stopped: capctl just stops tracking it), or a removed task's tombstone."""
    from reconciler.model import TaskStatus

    with open_store(state) as store, locked(store, "capctl state rm"):
        record = store.load().records.get(key)
        if record is None:
            fail(f"no task {key!r} in the state (see `capctl state list`)")
        serial = store.delete(key)
    if record.status is TaskStatus.REMOVED:
        typer.echo(f"Forgot the tombstone of {key} (serial {serial}): restoring its spec now starts it anew.")
        return
    typer.echo(f"Removed {key} from the state (serial {serial}). The vendor task, if any, keeps running.")


@app.command()
def wake(
    keys: Annotated[list[str], typer.Argument(metavar="KEY", help="Task keys, e.g. SnapshotJob/lobby-audit/lobby")],
    state: StateOpt = None,
) -> None:
    """Wake dormant or backing-off tasks: clear their backoff so the next apply (or the daemon) starts them now.

    Takes the state lock, which a running daemon holds: stop it first (it wakes a dormant task by itself on
    room activity)."""
    from reconciler import transitions
    from reconciler.plan import fmt_time

    with open_store(state) as store, locked(store, "capctl wake"):
        records = store.load().records
        unknown = [k for k in keys if k not in records]
        if unknown:
            fail(f"no task {', '.join(repr(k) for k in unknown)} in the state (see `capctl state list`); nothing woken")
        lines, woken = [], []
        for key in dict.fromkeys(keys):
            record = records[key]
            new = transitions.woken(record)
            if new is None:
                lines.append(f"{key} is {record.status.value}: nothing to wake.")
                continue
            woken.append(new)
            slot = f", next slot {fmt_time(record.next_attempt_at)}" if record.next_attempt_at else ""
            lines.append(f"Woke {key} (was {record.status.value} after {record.unproductive_runs} idle runs{slot}).")
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
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to serve on.")] = "127.0.0.1:8750",
    speed: Annotated[float, typer.Option("--speed", min=0.01, help="Simulated time runs this much faster.")] = 1.0,
    fake_clock: Annotated[
        bool, typer.Option("--fake-clock", help="Time moves only via POST /_sim/clock (for tests).")
    ] = False,
    volcengine_callback_url: Annotated[str | None, typer.Option(help="Where to POST Volcengine callbacks.")] = None,
    zego_callback_url: Annotated[str | None, typer.Option(help="Where to POST ZEGO callbacks.")] = None,
) -> None:
    """Run the local vendor simulator (Volcengine under /volc, ZEGO under /zego, control API under /_sim)."""
    from reconciler.sim import serve

    _split_listen(listen, "127.0.0.1:8750")
    try:
        serve(
            listen,
            speed=speed,
            fake_clock=fake_clock,
            volcengine_callback_url=volcengine_callback_url,
            zego_callback_url=zego_callback_url,
        )
    except OSError as exc:
        fail(f"sim: {exc.strerror}")


@app.command()
def demo(
    paths: PathsArg = None,
    listen: Annotated[
        str,
        typer.Option(
            "--listen", help="Where the demo's simulator listens (the quickstart specs point at 127.0.0.1:8750)."
        ),
    ] = "127.0.0.1:8750",
    keep_running: Annotated[
        bool,
        typer.Option("--keep-running", help="Leave the daemon and the simulator running at the end, until Ctrl-C."),
    ] = False,
) -> None:
    """Walk through the main job end to end on the quickstart specs, against a local simulator.

    plan → apply → a room empties → its task idles out → plan shows the re-issue and why → apply re-issues it →
    the daemon keeps it all running by itself. State goes to .capctl/demo.db, apart from your real state.
    """
    from reconciler.demo import DemoError, run_demo

    host, port = _split_listen(listen, "127.0.0.1:8750")
    spec_paths = _paths(paths)
    spec_set = load_specs(spec_paths)
    try:
        run_demo(spec_set, spec_paths, host=host, port=port, console=_out_console(), keep_running=keep_running)
    except DemoError as exc:
        fail(f"demo: {exc}")


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"capctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """capctl keeps declared RTC capture jobs running."""


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
