"""`plan`, `apply` and `show`: the commands that make a plan (specs against state and vendor status), carry
it out, or print a saved one again.

Together because they share how a plan is made (its options, room selection, a refresh), shown and saved;
an apply is a plan followed by its changes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Final, cast

import typer

from reconciler.cli.common import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_HUNG_UP,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    check_log_level,
    check_named,
    check_writable,
    confirm,
    err_console,
    fail,
    keep_until_exit,
    load_specs,
    locked,
    open_store,
    out_console,
    paths_or_default,
    progress_bar,
    retry_policy,
    retry_report,
    run_async,
    say_if_no_state,
    say_new_state,
    setup_logs,
    state_fingerprint_key,
)
from reconciler.cli.options import (
    LabelOpt,
    LogLevelOpt,
    NoColorOpt,
    PathsArg,
    ReplaceOpt,
    StateOpt,
    TargetOpt,
    complete_choices,
)
from reconciler.streams import write_json

if TYPE_CHECKING:
    from rich.console import Console

    from reconciler.execute import ApplyResult, Interrupt
    from reconciler.model import Observed, TaskRecord
    from reconciler.plan import Plan, PlanJSON, PlanOptions
    from reconciler.retry import RetryPolicy
    from reconciler.rooms import Selection
    from reconciler.spec import SpecSet
    from reconciler.state.base import NoState, StateStore
    from reconciler.state.sql import SqlStateStore

__all__ = ["apply", "plan", "show"]


def _locked_store(url: str | None, command: str, held: ExitStack) -> SqlStateStore | NoState:
    """The state at `url`, opened for writing (created if absent) and locked by `command` until `held` ends."""
    store = held.enter_context(open_store(url))
    held.enter_context(locked(store, command))
    return store


@contextmanager
def _interruptible(interrupt: Interrupt, console: Console, received: list[int]) -> Iterator[None]:
    """While an apply executes changes, Ctrl-C presses `interrupt`: the first press starts nothing new and
    lets the changes in flight finish (the summary is printed), a second cuts them short. SIGTERM (a service
    manager, a CI runner, Kubernetes) and SIGHUP (the terminal closed, an ssh session dropped) press it too,
    rather than killing the apply with its calls in flight; output to a terminal that is gone is dropped
    (streams.py). Each signal is added to `received`, which decides the exit code (`_exit_code_of`)."""
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


def _select_rooms(
    spec_set: SpecSet, store: StateStore, replace: Sequence[str] = ()
) -> tuple[SpecSet, list[Selection], dict[str, TaskRecord]]:
    """Add the tasks of room-selector jobs for the rooms the state knows active, and those leaving their room
    (`reconciler/rooms.py`); also returns the selections and the records they were made from (for `_annotate`).
    A `replace` key of a selector job's room with no task fails, saying why it has none."""
    if not spec_set.selector_jobs:
        return spec_set, [], {}
    import dataclasses

    from reconciler.rooms import accounts_of, selected_tasks, unselected
    from reconciler.state import RoomActivityStore

    providers = spec_set.providers
    activity = store.room_activity(accounts_of(providers)) if isinstance(store, RoomActivityStore) else []
    records = store.load().records
    tasks, selections = selected_tasks(
        spec_set.tasks, spec_set.selector_jobs, activity, records, providers, store.fingerprint_key()
    )
    # Walk 55b: `no task with key … in the specs` alone, where the plan knows why (left out past maxRooms, say).
    for key in replace:
        if key not in tasks and (why := unselected(key, selections)) is not None:
            fail(f"--replace: no task with key {key} in the specs: {why}")
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
    import dataclasses

    from reconciler.rooms import annotate, in_view

    shown = in_view(selections, spec_set.selector_jobs, the_plan.options)  # --target / -l narrow them too
    the_plan = dataclasses.replace(the_plan, notes=the_plan.notes + tuple(spec_set.warnings()))
    return annotate(the_plan, shown, records, observed, spec_set.providers)


def _check_selection(target: list[str] | None, labels: list[str] | None) -> None:
    """--target's and -l's syntax, before the state or the specs are read: a typo is said at once, not after
    (or hidden behind) the specs' own errors, such as a secret unset where the command was tried (walk 18H-12)."""
    from reconciler.plan import PlanError, check_selector, label_matcher

    try:
        for selector in target or ():
            check_selector(selector)
        label_matcher(labels or ())
    except PlanError as exc:
        fail(str(exc))


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

    snapshot, rehomed = load_rehomed(store, spec_set.tasks, spec_set.providers, options)
    keep_until_exit()  # the records, before the diff's allocations start a young pass over them
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
            moved=rehomed.moved,
            submitted_as=rehomed.submitted_as,
        )
    except PlanError as exc:
        fail(str(exc))


async def _refreshed_plan(
    spec_set: SpecSet, store: StateStore, options: PlanOptions, paths: list[str]
) -> tuple[Plan, dict[str, Observed]]:
    from reconciler.clock import SystemClock
    from reconciler.engine import make_plan, provider_pool

    retry = retry_policy()
    clock = SystemClock()
    err = err_console()
    async with provider_pool(spec_set.providers, clock) as pool:
        with progress_bar(len(spec_set.tasks), "Refreshing", err, known_total=False) as progress:
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
                on_retry=retry_report(retry, err),
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
    """`plan` as `fmt`; its text escaped where it holds what a terminal must not get raw (`_printable`)."""
    from reconciler.plan import plan_to_json
    from reconciler.render import render_markdown, render_text

    data = plan_to_json(plan)
    if fmt == "json":  # (JSON writes a control character as its escape)
        write_json(data, sys.stdout, text="readable")
        return
    shown = data if _all_printable(data) else cast("PlanJSON", _printable(data))
    if fmt == "markdown":
        typer.echo(render_markdown(shown), nl=False)
    else:
        render_text(shown, console or out_console())


# What JSON writes as itself and a terminal still acts on (DEL, C1 controls, bidirectional overrides). C0 controls
# JSON writes as escapes, which start with a backslash (a plan with any backslash takes the walk).
_RAW_UNPRINTABLE: Final = re.compile("[\\\\\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _all_printable(data: PlanJSON) -> bool:
    """No text of `data` holds a control character: one `json.dumps` and one scan, not a walk of every
    string (4.8 s for a plan of 50,000 changes)."""
    import json

    return _RAW_UNPRINTABLE.search(json.dumps(data, ensure_ascii=False)) is None


def _printable(tree: Any) -> Any:
    """`tree` with each text's control characters written as escapes (`\\x1b`). Specs refuse them and vendor
    text is scrubbed, but a saved plan edited by hand could hold an escape sequence that cleared the reviewer's
    screen or hid a line of the plan `apply --plan` then runs, and so could a fresh plan's keys from a state an
    older capctl wrote (a room id a callback named before room ids were checked; walk 58e)."""
    from reconciler.redact import scrub_text

    if isinstance(tree, str):
        return tree if tree.isprintable() else scrub_text(tree, (), limit=None)
    if isinstance(tree, list):
        return [_printable(item) for item in tree]
    if isinstance(tree, dict):
        return {_printable(key): _printable(value) for key, value in tree.items()}
    return tree


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
    check_named("--out", out)
    if out is not None:
        check_writable("plan", out)
    _check_format(fmt)
    check_log_level(log_level)
    _check_selection(target, selector)
    spec_paths = paths_or_default(paths)
    with open_store(state, read_only=True) as store:
        # Hashes and fingerprints are keyed with the state's key (`secrets.py`), so the specs are read after it.
        spec_set = load_specs(spec_paths, fingerprint_key=store.fingerprint_key())
        keep_until_exit()
        options = _plan_options(spec_set, prune, refresh, target, replace, selector)
        say_if_no_state(store, "planning as if nothing was created yet")
        spec_set, selections, records = _select_rooms(spec_set, store, options.replace)
        observed: dict[str, Observed] = {}
        if refresh:
            setup_logs(log_level)
            the_plan, observed = run_async(lambda: _refreshed_plan(spec_set, store, options, spec_paths))
        else:
            the_plan = _plan_from_state(spec_set, store, options, spec_paths)
        the_plan = _annotate(the_plan, selections, records, observed, spec_set)
        keep_until_exit()
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
        err_console().print(
            f"Saved the plan to {out}. Apply it with: capctl apply --plan {out}", markup=False, soft_wrap=True
        )
    if detailed_exitcode and the_plan.has_changes:
        raise typer.Exit(EXIT_CHANGES)


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
    # None when not given: a saved plan fixed them, so one given with --plan is refused, not ignored.
    prune: Annotated[
        bool | None,
        typer.Option("--prune/--no-prune", help="Stop tasks removed from the specs.", show_default="prune"),
    ] = None,
    refresh: Annotated[
        bool | None,
        typer.Option("--refresh/--no-refresh", help="Observe vendor status first.", show_default="refresh"),
    ] = None,
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
    check_named("--plan", plan_file)
    setup_logs(log_level)
    fixed_by_plan = {
        "--target": target,
        "--replace": replace,
        "-l": selector,
        "--prune/--no-prune": prune is not None,
        "--refresh/--no-refresh": refresh is not None,
    }
    given = [flag for flag, value in fixed_by_plan.items() if value]
    if plan_file and given:
        fail(f"{', '.join(given)} cannot be combined with --plan: they were fixed when the plan was made")
    _check_selection(target, selector)
    saved = _read_plan(plan_file) if plan_file else None
    spec_paths = paths_or_default(paths) if paths or saved is None else list(saved.paths)
    with ExitStack() as held:
        # The state's fingerprint key, read before anything is created. A state that exists is locked first: a
        # second apply fails at once, naming the holder, without reading specs. Where there is none, the plan is
        # made against none (as `plan`'s) and the state is created once there are changes to make, confirmed:
        # bad specs, a stale plan, a "no" or Ctrl-C at the prompt leave no state behind (walk 13a).
        key, no_state = state_fingerprint_key(state)
        store = no_state or _locked_store(state, "capctl apply", held)
        spec_set = load_specs(spec_paths, fingerprint_key=key)
        keep_until_exit()
        options = (
            saved.options
            if saved
            else _plan_options(spec_set, prune is not False, refresh is not False, target, replace, selector)
        )
        retry = retry_policy()  # vendor settings refused before anything is written, as bad specs are
        if store.fingerprint_key(key) != key:
            fail("another command created the state meanwhile; nothing was changed: run apply again")

        def writable() -> StateStore:
            """The state the changes are recorded in: where there was none, created and locked now."""
            nonlocal store
            if store is no_state:
                store = _locked_store(state, "capctl apply", held)
                if store.fingerprint_key(key) != key or store.serial() != 0:  # planned as if nothing was created
                    fail("another command created the state meanwhile; nothing was changed: run apply again")
                say_new_state(store.url)  # where, path resolved (walk 14b)
            return store

        received: list[int] = []  # the signals that stopped its changes
        the_plan, result = run_async(
            lambda: _apply(
                spec_set, store, writable, options, spec_paths, saved, auto_approve, parallelism, retry, received
            )
        )
    if result is not None:
        from reconciler.render import render_apply_result

        render_apply_result(result, out_console())
        if result.store_error is not None:
            fail(result.store_error)
        if result.interrupted:
            raise typer.Exit(_exit_code_of(received))
    if the_plan.unobserved:
        fail(f"{_unobserved(the_plan)} and were left as is (see the note above): apply again once the vendor answers")
    if result is not None and result.failed:
        raise typer.Exit(EXIT_ERROR)


def _store_failed(exc: Exception) -> str:
    """The error an apply stopped by its state store ends with, and what to do. A lock taken over (walk 22C-1)
    is no store that cannot be written: another capctl writes it now, and applying at once is refused by its
    lock; the one named is waited for, or stopped (a `capctl run` holds it until it is stopped)."""
    from reconciler.state.base import LockTakenOver, StateTooNew

    if isinstance(exc, StateTooNew):  # no store to wait for: a newer capctl upgraded it as this one applied (59c)
        return (
            f"{exc}: a newer capctl upgraded the state while this apply ran, and this one writes no more to it; "
            "the changes already started run on: apply again with that capctl (or a newer one): it finishes what "
            "this one left"
        )
    if isinstance(exc, LockTakenOver):
        holder = exc.holder or "another capctl"
        return (
            f"{exc}: {holder} holds the state lock now: wait for it to finish, or stop it, then apply again: "
            "it finishes what this one left"
        )
    return f"{exc}: apply again once the state store can be written: it finishes what this one left"


def show(
    plan_file: Annotated[
        str, typer.Argument(metavar="PLAN", help="A plan saved by `capctl plan --out` (e.g. a CI artifact).")
    ],
    fmt: FormatOpt = "text",
    no_color: NoColorOpt = False,
) -> None:
    """Show a saved plan again, as text, markdown (for a PR comment) or JSON. Reads no specs, state or vendor."""
    check_named("PLAN", plan_file)
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
    writable: Callable[[], StateStore],
    options: PlanOptions,
    paths: list[str],
    saved: Plan | None,
    auto_approve: bool,
    parallelism: int | None,
    retry: RetryPolicy,
    received: list[int],
) -> tuple[Plan, ApplyResult | None]:
    from reconciler.clock import SystemClock
    from reconciler.engine import apply_plan, housekeep, make_plan, provider_pool, verify_saved_plan
    from reconciler.execute import ApplyResult, ChangeResult, Interrupt
    from reconciler.moves import load_rehomed
    from reconciler.state.base import StateError

    err = err_console()
    report = retry_report(retry, err)
    clock = SystemClock()
    spec_set, selections, records = _select_rooms(spec_set, store, options.replace)
    async with provider_pool(spec_set.providers, clock) as pool:
        if saved is not None:
            snapshot, rehomed = load_rehomed(store, spec_set.tasks, spec_set.providers, saved.options)
            verify_saved_plan(
                saved,
                spec_set.tasks,
                snapshot,
                spec_set.providers,
                hash_key=store.fingerprint_key(),
                moved=rehomed.moved,
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
                # e.g. a label edit, or a stop the vendor reported of a task left alone (none without a state)
                housekeep(store, the_plan, spec_set.tasks, snapshot.records, observed, clock.now())
                return the_plan, None
            confirm("Apply these changes?", "apply", auto_approve=auto_approve)
        store = writable() if the_plan.has_changes else store  # nothing to record: no state made for it
        # The records and the plan too: the collector's full passes during the apply (up to 0.1 s on a loaded
        # machine, each a stall of the loop that paces the vendor calls) and the one at exit no longer walk them.
        # bench/README.md, "Apply at the defaults".
        keep_until_exit()
        interrupt = Interrupt()
        done: list[ChangeResult] = []  # as they end: what to report should the state store fail half-way

        def on_done(result: ChangeResult) -> None:
            done.append(result)
            progress.advance(bar)

        with (
            progress_bar(len(the_plan.actionable), "Applying", err) as progress,
            _interruptible(interrupt, err, received),
        ):
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
                return the_plan, ApplyResult(tuple(done), not_started=not_started, store_error=_store_failed(exc))
