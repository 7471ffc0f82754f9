"""The `capctl state` commands: list, show, init, copy, rm and import the task records of a state store.

They read and edit the state directly (under its lock where they write), never a vendor, but for `import`,
which checks the adopted task at the vendor first.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Collection, Mapping
from contextlib import ExitStack, closing
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from reconciler.cli.common import (
    EXIT_INTERRUPTED,
    check_named,
    confirm,
    err_console,
    fail,
    load_specs,
    lock_free_now,
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
    PathsArg,
    StateOpt,
    complete_choices,
    complete_task_keys,
    state_url_given,
    typed_text,
)
from reconciler.streams import write_json

if TYPE_CHECKING:
    from reconciler.model import DesiredTask, Observed, TaskRecord
    from reconciler.spec import SpecSet
    from reconciler.state.base import StateStore
    from reconciler.state.codec import RowDamaged

__all__ = ["state_copy", "state_import", "state_init", "state_list", "state_rm", "state_show"]


def complete_statuses(incomplete: str) -> list[str]:
    from reconciler.model import TaskStatus

    return [s.value for s in TaskStatus if s.value.startswith(incomplete)]


def record_to_dict(record: TaskRecord) -> dict[str, Any]:
    """Every field of a task record, enums by value, times (`*_at`) in RFC 3339 as a plan's JSON has them
    (the state's own encoding omits defaults and keeps epoch seconds)."""
    import dataclasses
    import enum

    from reconciler.plan import rfc3339

    def shown(name: str, value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if name == "accepted" and isinstance(value, dict):  # a thumbnail's accepted submission: its time alike
            return {n: shown(n, v) for n, v in value.items()}
        return rfc3339(value) if name.endswith("_at") and isinstance(value, float) else value

    return {f.name: shown(f.name, getattr(record, f.name)) for f in dataclasses.fields(record)}


def _record_filter(
    keys: list[str], statuses: list[str], labels: list[str]
) -> Callable[[Collection[str]], Callable[[Any], bool]]:
    """`state list`'s filters, checked before the state is read: each given filter must hold. Given the keys
    the state holds, it is the test of a record (a KEY that is one of them is that task alone)."""
    from reconciler.model import TaskStatus
    from reconciler.plan import PlanError, check_selector, key_selector, label_matcher

    wanted = {s.strip() for item in statuses for s in item.split(",") if s.strip()}
    known = {s.value for s in TaskStatus}
    if unknown := sorted(wanted - known):
        from reconciler.spec.errors import did_you_mean

        hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""  # `runing` (walk 18H-11)
        fail(f"--status {', '.join(unknown)}: expected one of {', '.join(s.value for s in TaskStatus)}{hint}")
    try:
        for key in keys:
            check_selector(key, "KEY")
        matches_labels = label_matcher(labels)
    except PlanError as exc:
        fail(str(exc))

    def keep_of(known: Collection[str]) -> Callable[[Any], bool]:
        selected = key_selector(keys, known)

        def keep(record: TaskRecord) -> bool:
            return (
                (not keys or selected(record.key))
                and (not wanted or record.status.value in wanted)
                and matches_labels(record.labels)
            )

        return keep

    return keep_of


def state_list(
    keys: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY",
            help="Only these tasks: task keys or kind/name, with * in the name or room part "
            "('SnapshotJob/lobby-*/*'), as --target: a task's whole key is that task alone, even holding * "
            "(double a * for the glob: 'ThumbnailJob/t/rec/**.mp4').",
            autocompletion=complete_task_keys,
            callback=typed_text,
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
            autocompletion=complete_choices("table", "wide", "json"),
            help="table (what fits a terminal), wide (every column) or json.",
        ),
    ] = "table",
) -> None:
    """List recorded tasks with their status, re-issues, next attempt and reason (all, or those filtered).

    In a terminal the table fits its width (its REASON cut short, or under its task when narrow); in a pipe no
    cell is cut. -o wide adds the vendor task id, the last observation and a room selector's job, room and
    selector."""
    if output not in ("table", "wide", "json"):
        fail(f"--output {output!r}: expected table, wide or json")
    keep_of = _record_filter(keys or [], status or [], selector or [])
    with open_store(state, read_only=True) as store:
        # As kubectl's "No resources found": no state is an empty list (exit 0), said on stderr.
        say_if_no_state(store, "no task is recorded (apply or run creates it)")
        snapshot = store.load()
    keep = keep_of(snapshot.records)
    records = sorted((r for r in snapshot.records.values() if keep(r)), key=lambda r: r.key)
    from reconciler.plan import labels_known, near_key_hint, selector_matches

    for key in keys or []:
        if not any(selector_matches(key, k) for k in snapshot.records) and (
            hint := near_key_hint(key, snapshot.records)
        ):
            typer.echo(f"KEY {key} matches no task{hint}.", err=True)
    if selector and not any(_record_filter([], [], selector)(())(r) for r in snapshot.records.values()):
        # As plan's note; with the labels there are, a typo (`tier=gld`) shows itself (walk 14b: a bare "0 tasks").
        there = labels_known((r.labels for r in snapshot.records.values()), "recorded")
        typer.echo(f"-l {' '.join(selector)} matches no task{there}.", err=True)
    if output == "json":
        tasks = [record_to_dict(r) for r in records]
        write_json({"serial": snapshot.serial, "tasks": tasks}, sys.stdout, text="readable")
        return
    import time

    from reconciler.render import render_state_table

    console = out_console()
    # Cut to a terminal's width (COLUMNS, as rich reads it); in a pipe every cell is whole, for grep and awk.
    width = console.width if console.is_terminal else None
    typer.echo(render_state_table(records, snapshot.serial, wide=output == "wide", width=width, now=time.time()))


def _no_task(key: str, store: StateStore, hint: str = "") -> NoReturn:
    from reconciler.state import NoState

    if isinstance(store, NoState):
        fail(f"no task {key!r}: {store.missing}")
    fail(f"no task {key!r} in the state at {store.url} (see `capctl state list`){hint}")


RAW_LIMIT = 2_000  # characters of a damaged row shown: enough to see what is wrong, never a flood


def _escaped(text: str, limit: int = RAW_LIMIT) -> str:
    """`text` cut at `limit` characters, with what a terminal must not get raw (controls, a bidirectional
    override, a zero-width character) as escapes."""
    from reconciler.redact import escape_unprintable

    return escape_unprintable(text[:limit]) + (
        f"… ({len(text) - limit:,} more characters)" if len(text) > limit else ""
    )


def _stored_vendor_id(raw: str) -> str | None:
    """The vendor task id a damaged row still holds readably, if any."""
    import json

    try:
        data = json.loads(raw, strict=False)  # a control character typed into a string: still readable
    except (ValueError, RecursionError):
        return None
    found = data.get("vendor_task_id") if isinstance(data, dict) else None
    return found if isinstance(found, str) and found else None


def _show_damaged(store: StateStore, damage: RowDamaged) -> str | None:
    """Print, on stderr, the damaged row as stored (escaped, bounded); return the vendor task
    id it holds, if it can be read. A record holds no secret: `codec.encode` refuses any `Secret`, and a stored
    request has fingerprints in their place."""
    from reconciler.state.sql import SqlStateStore

    raw = store.raw_record(damage.key) if isinstance(store, SqlStateStore) else None
    err = err_console()
    if raw is None:  # deleted meanwhile: nothing to show
        return None
    err.print(f"Row {damage.key!r} as stored ({len(raw):,} characters):", markup=False, highlight=False)
    err.print(f"  {_escaped(raw)}", markup=False, highlight=False, soft_wrap=True)
    return _stored_vendor_id(raw)


def state_init(state: StateOpt = None) -> None:
    """Start a new, empty state, also in an empty (0-byte) SQLite file, which other commands refuse as damage.

    It creates the capctl tables where there is no state, in an empty SQLite file, or in an SQLite file or
    PostgreSQL database without capctl tables (apply, run, demo and state import also create a state where
    there is none). An existing state is left as it is; a damaged one (some capctl tables but not all, corrupt
    pages) is refused: restore it from a backup, or move it away."""
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


def state_copy(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            callback=state_url_given,
            # From the environment too: a pod reads the URL from a Secret into a variable, and a password on
            # the command line is in every `ps` of the node (`--from` reads CAPCTL_STATE for the same reason).
            envvar="CAPCTL_STATE_TO",
            show_envvar=True,
            help="The state to copy into: a new or empty one (see --force).",
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="URL",
            callback=state_url_given,
            envvar="CAPCTL_STATE",
            show_envvar=True,
            help="The state to copy (default sqlite:///.capctl/state.db).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace the tasks, rooms, inbox and history of a destination that holds a state."
        ),
    ] = False,
) -> None:
    """Copy a whole state to another store, e.g. SQLite to PostgreSQL before running several replicas.

    Every task record (tombstones, backoffs, dormancy), the fingerprint key, room activity, the callback inbox
    and the status page's history.

    Both states' locks are taken: stop every daemon replica first.

    The destination gets all of it or nothing (one transaction); one that holds task records is refused unless
    --force. Its serial never moves back.

    The source's records are left as they were (taking its lock writes, so it must be writable, a backup too):
    point every capctl at the copy, then move the source away."""
    from reconciler.state import LockTakenOver, open_state
    from reconciler.state.sql import SqlStateStore

    with ExitStack() as stack:
        src = stack.enter_context(closing(open_state(source, create=False)))
        assert isinstance(src, SqlStateStore)  # as every store open_state makes
        stack.enter_context(locked(src, "capctl state copy"))
        try:
            copy = src.export()  # before the destination is opened: a refusal creates nothing there
        except KeyboardInterrupt:
            fail("interrupted while reading the source: nothing was copied", code=EXIT_INTERRUPTED)
        # Its lock still held (PostgreSQL: paused past its lease, a standby replica left running takes it), so
        # no daemon runs on the source the copy would stand beside: each would start every task (walk 25d).
        try:
            src.check_lock()
        except LockTakenOver as exc:
            fail(f"{src.url} (the source): {exc}: nothing was copied")
        dst = stack.enter_context(closing(open_state(to)))
        assert isinstance(dst, SqlStateStore)
        if src.url == dst.url:
            fail(f"--from and --to name the same state ({src.url}): nothing to copy")
        stack.enter_context(locked(dst, "capctl state copy", destination=True))
        err = err_console()

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


def state_show(
    key: Annotated[
        str,
        typer.Argument(
            metavar="KEY",
            help="Task key, e.g. SnapshotJob/lobby-audit/lobby",
            autocompletion=complete_task_keys,
            callback=typed_text,
        ),
    ],
    state: StateOpt = None,
) -> None:
    """Show one task's record as JSON."""
    from reconciler.plan import near_key_hint, selector_room_hint
    from reconciler.state import NoState
    from reconciler.state.codec import RowDamaged

    with open_store(state, read_only=True) as store:
        try:
            record = store.record(key)
        except RowDamaged as exc:  # only this row is read: its own damage, shown as stored
            _show_damaged(store, exc)
            fail(str(exc))
        # A typo gets the nearest job or room, as rm, wake and --target give it (walk 18H-9).
        typo = record is None and "*" not in key
        keys = store.keys() if typo and not isinstance(store, NoState) else []
        near = near_key_hint(key, keys) if keys else ""
        if any(k.startswith(f"{key}/") for k in keys):  # a job's key, kind/name (walk 21c)
            near = f"; {key} is a job: `capctl state list '{key}/*'` lists its tasks"
        else:
            near += selector_room_hint(key, keys, store.record)
    if record is None:
        # One record: a glob, as list, rm and wake take, is pointed at `state list -o json` (walk 14b).
        glob = f"; show takes one key: `capctl state list -o json '{key}'` shows every match" if "*" in key else near
        _no_task(key, store, glob)
    write_json(record_to_dict(record), sys.stdout, text="readable")


def state_rm(
    keys: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY",
            help="Task keys to forget, or globs as `state list` takes them ('SnapshotJob/lobby-*/*')",
            autocompletion=complete_task_keys,
            callback=typed_text,
        ),
    ],
    state: StateOpt = None,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Do not ask before forgetting a damaged record row.")
    ] = False,
) -> None:
    """Forget tasks (their vendor tasks are NOT stopped: capctl just stops tracking them), or removed tasks'
    tombstones; all in one transaction, or none when a KEY is not there (a glob may match nothing beside
    others that do).

    A record row capctl cannot read (edited by hand, a bad restore) stops every other command; named by its
    exact key, it is shown as stored and forgotten after a confirmation."""
    from reconciler.model import TaskStatus
    from reconciler.plan import PlanError, check_selector, keys_matching, near_key_hint
    from reconciler.redact import escape_unprintable
    from reconciler.state import NoState
    from reconciler.state.codec import RowDamaged, forget_command, shell_word

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
            matched = keys_matching(keys, known)
            # A key named outright must be there (a typo forgets nothing); a glob may match nothing, as long as
            # something is forgotten (`state rm 'SnapshotJob/*' 'ThumbnailJob/*'` in a state of snapshots only).
            unmatched = [k for k, hits in matched.items() if not hits and ("*" not in k or len(matched) == 1)]
            if unmatched or not any(matched.values()):
                # A glob's `?` or `[` stands for itself in task keys, as in `state list` (its KEY hint).
                hint = next((h for k in unmatched or keys if (h := near_key_hint(k, known))), "")
                if len(keys) == 1:
                    _no_task(keys[0], store, hint)
                named = ", ".join(repr(k) for k in unmatched or keys)
                fail(f"no task {named} in the state (see `capctl state list`); nothing forgotten{hint}")
            forgotten: dict[str, TaskRecord | None] = {}
            damaged: dict[str, str | None] = {}  # a damaged row's key: the vendor task id it holds, if readable
            for key in dict.fromkeys(key for hits in matched.values() for key in hits):  # once each
                try:
                    forgotten[key] = store.record(key)
                except RowDamaged as exc:
                    if key not in matched:  # a glob forgets only what it can read: a damaged row is named
                        why = f"{exc.where}: row {key!r}: {exc.detail}"
                        fail(f"{why}; a glob never forgets a damaged row: name it, `{forget_command(key)}`")
                    damaged[key] = _show_damaged(store, exc)
                    err_console().print(f"Problem: {exc.detail}", markup=False, highlight=False, soft_wrap=True)
                    forgotten[key] = None
            if damaged:
                confirm(
                    f"Forget the damaged row(s) {', '.join(map(repr, damaged))}?", "state rm", auto_approve=auto_approve
                )
            serial = store.delete_many(forgotten)
    running = False
    for key, record in forgotten.items():
        # A key from a state an older capctl wrote may hold an escape sequence: escaped, as `state list` shows it.
        named = escape_unprintable(key)
        if key in damaged:
            vendor_id = damaged[key]
            held = (
                f"its vendor task {vendor_id}" if vendor_id else "its vendor task, if any (its id could not be read),"
            )
            adopt = f"`capctl state import {shell_word(key)} {shlex.quote(vendor_id or 'VENDOR_TASK_ID')}`"
            typer.echo(
                f"Forgot the damaged row {key!r} (serial {serial}): {held} may still run at the vendor; "
                f"adopt it again with {adopt}, or the next apply starts the task anew while the specs declare it."
            )
        elif record is not None and record.status is TaskStatus.REMOVED:
            typer.echo(f"Forgot the tombstone of {named} (serial {serial}): restoring its spec now starts it anew.")
        else:
            running = True
            typer.echo(f"Removed {named} from the state (serial {serial}).")
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


def _spec_task(spec_set: SpecSet, key: str, paths: list[str]) -> DesiredTask | str:
    """The task the specs declare as `key`, or why there is none to import into."""
    import difflib

    from reconciler.model import job_of

    task = spec_set.tasks.get(key)
    if task is not None:
        return task
    if any(key.startswith(f"{c.job.kind}/{c.job.name}/") for c in spec_set.selector_jobs):
        return (
            f"{key}: {job_of(key)} picks its rooms with a selector, whose tasks start as the rooms become active; "
            "import adopts the tasks of named rooms and files only"
        )
    close = difflib.get_close_matches(key, list(spec_set.tasks), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{key}: no such task in the specs ({', '.join(paths)}){hint}; import adopts a task the specs declare"


def _task_to_import(spec_set: SpecSet, key: str, paths: list[str]) -> DesiredTask:
    task = _spec_task(spec_set, key, paths)
    if isinstance(task, str):
        fail(task)
    return task


def _observed_at_vendor(records: Mapping[str, TaskRecord], spec_set: SpecSet) -> dict[str, Observed]:
    """The vendor's status of each probe record, within the providers' rate budgets as every vendor call, with
    a progress bar on stderr (as apply's: from 20 tasks on, or a line every 10 s where no bar is drawn).
    MediaThumbnails has no status query: a thumbnail task is not queried (it is recorded on your word)."""
    from reconciler.clock import SystemClock
    from reconciler.engine import provider_pool
    from reconciler.execute import needs_observation, observe_all

    records = {key: record for key, record in records.items() if needs_observation(record)}
    if not records:
        return {}

    retry, clock, err = retry_policy(), SystemClock(), err_console()

    async def observe() -> dict[str, Observed]:
        async with provider_pool(spec_set.providers, clock) as pool:
            label = f"Checking {len(records)} task(s) at the vendor"
            with progress_bar(len(records), label, err) as progress:
                bar = progress.add_task("import", total=len(records))
                return await observe_all(
                    records,
                    pool,
                    clock,
                    retry=retry,
                    on_retry=retry_report(retry, err),
                    on_done=lambda _k, _o: progress.advance(bar),
                )

    return run_async(observe)


def _import_many(source: str, paths: list[str], *, dry_run: bool, state: str | None, log_level: str) -> None:
    """`state import --from FILE`: every line checked before any vendor call, then every task at the vendor,
    then one write of them all (or nothing)."""
    from reconciler.adopt import AdoptError, AlreadyRecorded, Claims, adopted, check_unclaimed, describe, probe
    from reconciler.clock import SystemClock
    from reconciler.importlist import ImportListError, parse_import_list, read_import_list

    setup_logs(log_level)
    spec_paths = paths_or_default(paths)
    try:
        name, text = read_import_list(source)
    except ImportListError as exc:
        fail(str(exc))
    lines, problems = parse_import_list(name, text)
    if not dry_run:  # before any vendor call (a dry run writes nothing: it may run beside the daemon)
        lock_free_now(state, "capctl state import")
    hash_key, no_state = state_fingerprint_key(state)
    spec_set = load_specs(spec_paths, fingerprint_key=hash_key)
    with open_store(state, read_only=True) as store:
        recorded = Claims(store.load().records)
    now = SystemClock().now()
    probes: dict[str, TaskRecord] = {}
    listed = Claims()
    where: dict[str, str] = {}
    tracked: list[str] = []  # keys already in the state: the way out is said once, after the lines
    for line in lines:
        task = _spec_task(spec_set, line.key, spec_paths)
        if isinstance(task, str):
            problems.append((line.number, f"{line.where}: {task}"))
            continue
        try:
            record = probe(task, line.vendor_id, now, app_id=spec_set.providers[task.provider].app_id)
            check_unclaimed(record, recorded)
        except AlreadyRecorded as exc:
            problems.append((line.number, f"{line.where}: {line.key}: {exc.what}"))
            tracked.append(line.key)
            continue
        except AdoptError as exc:
            problems.append((line.number, f"{line.where}: {line.key}: {exc}"))
            continue
        if (other := listed.holder(record)) is not None:
            what = f"the {describe(record)} is listed already, for {other} ({where[other]})"
            problems.append((line.number, f"{line.where}: {line.key}: {what}"))
            continue
        probes[line.key], where[line.key] = record, line.where
        listed.add(record)
    err = err_console()
    if problems:
        for _, problem in sorted(problems):  # in the order of their lines
            err.print(problem, markup=False, soft_wrap=True)
        if tracked:
            forget = " ".join(shlex.quote(key) for key in tracked)
            their = "its record" if len(tracked) == 1 else "their records"
            err.print(
                f"Already in the state: `capctl state rm {forget}` first to replace {their}.",
                markup=False,
                soft_wrap=True,
            )
        fail(f"--from {name}: {len(problems)} problem(s); nothing was queried at the vendor, nothing imported")
    if not probes:
        fail(f"--from {name}: lists no task (expected lines of KEY VENDOR_TASK_ID); nothing imported")
    observed = _observed_at_vendor(probes, spec_set)
    found: dict[str, TaskRecord] = {}
    failed: list[str] = []
    for key, record in probes.items():
        try:
            found[key] = adopted(record, observed.get(key))
        except AdoptError as exc:
            failed.append(f"{where[key]}: {key}: {exc}")
    if failed:
        for problem in failed:
            err.print(problem, markup=False, soft_wrap=True)
        fail(f"{len(failed)} of the {len(probes)} task(s) in {name} cannot be imported: nothing was imported")
    if not dry_run:
        try:
            with open_store(state) as store, locked(store, "capctl state import"):
                if store.fingerprint_key(hash_key) != hash_key:
                    fail("another command created the state meanwhile; nothing was imported: run it again")
                recorded = Claims(store.load().records)  # what changed since the check
                for key, record in found.items():
                    try:
                        check_unclaimed(record, recorded)
                    except AdoptError as exc:
                        fail(f"{where[key]}: {key}: {exc} (recorded meanwhile); nothing was imported")
                serial = store.put_many(found.values())  # one transaction: all of them or none
                if no_state is not None:  # made now (one made meanwhile has another key: refused above)
                    say_new_state(store.url)
        except KeyboardInterrupt:
            fail("interrupted: nothing was imported", code=EXIT_INTERRUPTED)
    for key, record in found.items():
        typer.echo(f"{'Would import' if dry_run else 'Imported'} {key}: the {describe(record)}, {_how(record)}.")
    if dry_run:
        typer.echo(f"{len(found)} task(s) would be imported. Nothing was written (--dry-run).")
        return
    typer.echo(
        f"Imported {len(found)} task(s) (serial {serial}). capctl now keeps them as if it had started them with "
        "the specs' settings: `capctl plan` shows them unchanged."
    )


def _how(record: TaskRecord) -> str:
    """How an adopted task is known to run, as its import says it."""
    from reconciler.model import TaskStatus
    from reconciler.plan import fmt_time

    if record.status is TaskStatus.DONE:
        return "recorded as submitted (MediaThumbnails has no status query: not checked at the vendor)"
    return f"running since {fmt_time(record.started_at)}" if record.started_at else "running"


def _adopt_checked(record: TaskRecord, store: StateStore, spec_set: SpecSet, *, vendor: bool = True) -> TaskRecord:
    """The record to store for the probe `record`: checked against the state, then (`vendor`) at the vendor."""
    from reconciler.adopt import AdoptError, adopted, check_unclaimed

    try:
        check_unclaimed(record, store.load().records)
        if vendor:
            return adopted(record, _observed_at_vendor({record.key: record}, spec_set).get(record.key))
    except AdoptError as exc:
        fail(f"{record.key}: {exc}")
    return record


def state_import(
    key: Annotated[
        str | None,
        typer.Argument(
            metavar="KEY",
            help="The task key the specs give it (kind/name/room); with --from, a PATH",
            autocompletion=complete_spec_keys,
            show_default=False,
        ),
    ] = None,
    vendor_id: Annotated[
        str | None,
        typer.Argument(
            metavar="VENDOR_TASK_ID",
            help="The vendor's id of the task: a Volcengine TaskId, a ZEGO recording's TaskId (legacy: task_id), "
            "a MediaThumbnails TaskId; with --from, a PATH",
            show_default=False,
        ),
    ] = None,
    paths: PathsArg = None,
    from_file: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="FILE",
            help="Import every task FILE lists instead (- for stdin): lines of KEY VENDOR_TASK_ID, # comments; "
            "all or none. Every argument is then a PATH.",
        ),
    ] = None,
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
    so `capctl plan` shows it unchanged.

    --from FILE imports many at once: every line is checked first (no vendor call while one is wrong), then
    each task at the vendor, and all are recorded in one write, or none."""
    from reconciler.adopt import AdoptError, describe, probe
    from reconciler.clock import SystemClock

    if from_file is not None:
        # Typer gives the first two positionals the names KEY and VENDOR_TASK_ID: with --from they are PATHs.
        check_named("--from", from_file)
        named = [p for p in (key, vendor_id) if p is not None]
        for path in named:
            check_named("PATH", path)
            if not os.path.lexists(path):  # `--from FILE KEY ID`: the keys and ids are FILE's
                fail(f"{path}: no such spec file or directory; with --from FILE every argument is a PATH of specs")
        _import_many(from_file, named + (paths or []), dry_run=dry_run, state=state, log_level=log_level)
        return
    if key is None or vendor_id is None:
        fail("give KEY and VENDOR_TASK_ID, or --from FILE to import the tasks a file lists")
    key = typed_text(key)
    setup_logs(log_level)
    spec_paths = paths_or_default(paths)
    if not dry_run:  # before the vendor call (a dry run writes nothing: it may run beside the daemon)
        lock_free_now(state, "capctl state import")
    # The state's fingerprint key, read before anything is created: bad specs leave no state behind.
    hash_key, no_state = state_fingerprint_key(state)
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
            if no_state is not None:  # made now, as apply says (walk 20E-8)
                say_new_state(store.url)
    what, how = describe(found), _how(found)
    if dry_run:
        typer.echo(f"Would import {key}: the {what}, {how}. Nothing was written (--dry-run).")
        return
    typer.echo(
        f"Imported {key} (serial {serial}): the {what}, {how}. capctl now keeps it as if it had started it with "
        "the spec's settings: `capctl plan` shows it unchanged."
    )
