"""What every capctl command shares: exit codes, consoles and `fail`, loading specs, the state store and its
lock, running a coroutine, progress and retry lines.

One place, so that every command says an error the same way (`Error: ...` on stderr, exit 1), honours
--no-color alike, and opens and locks a state alike. Heavy modules (rich, asyncio, the state package) are
imported inside the helpers that use them: a command pays only for what it calls.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from reconciler.retry import RetryPolicy, RetryReport
    from reconciler.spec import SpecSet
    from reconciler.state.base import Lock, LockHeld, NoState, StateStore
    from reconciler.state.sql import SqlStateStore

__all__ = [
    "COMMAND_LEASE_SECONDS",
    "EXIT_CHANGES",
    "EXIT_ERROR",
    "EXIT_HUNG_UP",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "LOG_LEVELS",
    "RELEASE_RETRY_DELAYS",
    "LineProgress",
    "check_log_level",
    "check_named",
    "check_writable",
    "confirm",
    "err_console",
    "fail",
    "keep_until_exit",
    "load_specs",
    "lock_free_now",
    "locked",
    "open_store",
    "out_console",
    "paths_or_default",
    "progress_bar",
    "reset_no_color",
    "retry_policy",
    "retry_report",
    "run_async",
    "say_if_no_state",
    "say_new_state",
    "set_no_color",
    "setup_logs",
    "split_listen",
    "state_fingerprint_key",
    "stop_cleanly_while_starting",
]


EXIT_ERROR, EXIT_CHANGES = 1, 2
EXIT_HUNG_UP = 129  # 128 + SIGHUP: an apply whose terminal closed (ssh dropped; changes in flight finished)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command ended by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM: an apply a service manager or CI runner stopped (changes in flight finished)


LOG_LEVELS = ("debug", "info", "warning", "error")


# Set by --no-color (global or on a command) for this invocation; reset by the root callback on every run.
# The commands' own `no_color` parameters exist for the option; its callback is what takes effect.
_no_color = False


def set_no_color(value: bool) -> bool:
    global _no_color
    _no_color = _no_color or value
    return value


def reset_no_color(no_color: bool) -> None:
    """The root's --no-color: the root runs first on every invocation, so an earlier in-process run leaves nothing."""
    global _no_color
    _no_color = no_color


def _color_system() -> Literal["auto"] | None:
    """None (plain text, no escape codes at all) for --no-color or NO_COLOR; else rich's detection."""
    return None if _no_color or os.environ.get("NO_COLOR") else "auto"


def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, emoji=False, color_system=_color_system())


def out_console() -> Console:
    from rich.console import Console

    return Console(highlight=False, emoji=False, color_system=_color_system())


def fail(message: str, *, code: int = EXIT_ERROR) -> NoReturn:
    from rich.markup import escape

    # The message may quote user input (a path, a flag value): escaped, so "[...]" in it prints as typed.
    err_console().print(f"[bold red]Error:[/bold red] {escape(message)}", soft_wrap=True, markup=True)
    raise typer.Exit(code)


def confirm(question: str, command: str, *, auto_approve: bool) -> None:
    """Ask `question`, going on only on `yes`; without a terminal, refuse rather than guess (`--auto-approve`)."""
    if auto_approve:
        return
    if not sys.stdin.isatty():
        fail(f"{command} needs confirmation: run it on a terminal, or pass --auto-approve")
    asked_on_stderr = not sys.stdout.isatty()
    try:
        # Where the user sees it: `capctl apply > apply.log` on a terminal put the question in the file and left
        # the user before a silent wait; stderr then, but stdout while that is the terminal (`2>/dev/null`).
        answer = typer.prompt(
            f"{question} Only 'yes' will be accepted", default="", show_default=False, err=asked_on_stderr
        )
    except typer.Abort:  # end of input (Ctrl-D): a no, said as one, not click's bare "Aborted."
        typer.echo(err=asked_on_stderr)
        answer = ""
    if answer.strip() != "yes":
        fail(f"{command} cancelled", code=EXIT_ERROR)


def paths_or_default(paths: list[str] | None) -> list[str]:
    return list(paths) if paths else ["specs"]


def check_named(what: str, name: str | None) -> None:
    """An empty file name given is an unset variable (`--plan "$PLAN"`, `validate "$SPECS"`), not a choice:
    `--plan ""` was no --plan, so apply planned afresh (walk 12b), and pathlib reads "" as ".", so `validate ""`,
    `apply ""` took the working directory (walk 13a). Refused before anything is read or created."""
    if name is not None and not name.strip():
        fail(f"{what} {name!r}: no file named (an unset variable?)")


def check_writable(what: str, name: str) -> None:
    """A file written at the end of long work (a refreshed plan, a played scenario's report) is checked before it:
    a missing directory or a directory in its place was found only then, the work lost (walk 13a). Nothing is
    created; the write itself may still fail (a full disk), and says so in the same words."""
    import errno

    target = Path(name)
    try:
        if target.is_dir():
            problem = os.strerror(errno.EISDIR)
        elif not target.parent.is_dir():
            problem = os.strerror(errno.ENOENT)
        elif not os.access(target.parent, os.W_OK | os.X_OK):
            problem = os.strerror(errno.EACCES)
        else:
            return
    except OSError as exc:  # a name too long for the OS, say
        problem = exc.strerror or str(exc)
    fail(f"{name}: cannot write the {what} ({problem})")


def check_log_level(level: str) -> None:
    if level.lower() not in LOG_LEVELS:
        fail(f"--log-level {level!r}: expected debug, info, warning or error")


def setup_logs(level: str, *, now: bool = False) -> None:
    """Logging at `level`, set up by the first line written (`logs.configure_on_first_event`), or `now` for the
    daemon, whose modules log through structlog directly."""
    from reconciler import logs

    check_log_level(level)
    (logs.configure if now else logs.configure_on_first_event)(level)


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

        console = err_console()
        for error in exc.errors:
            console.print(str(error), markup=False, highlight=False, soft_wrap=True)
        count, files = len(exc.errors), len({e.file for e in exc.errors})
        summary = Text(f"{count} error{'s' if count != 1 else ''}", style="bold red")
        summary.append(f" in {files} file{'s' if files != 1 else ''}")
        summary.append("." if validating else ": nothing was changed.")
        console.print(summary, soft_wrap=True)
        if paths == paths_or_default(None) and not Path(paths[0]).exists():  # the default, where a new user has none
            console.print(
                "./specs, the default spec path, is not here: give spec files or directories as arguments "
                "(`capctl demo` plays the quickstart specs capctl ships, and says where they are).",
                markup=False,
                soft_wrap=True,
            )
        raise typer.Exit(EXIT_ERROR) from None


def keep_until_exit() -> None:
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


def state_fingerprint_key(url: str | None) -> tuple[bytes, NoState | None]:
    """The key of the state's fingerprints and hashes, creating nothing: a fresh one for a state that has
    none yet (new, or made before keyed fingerprints), which the writable open then stores; and, where there
    is no state, a `NoState` holding that key, to plan against until the state is created."""
    from reconciler.secrets import new_fingerprint_key
    from reconciler.state import NoState

    with open_store(url, read_only=True) as store:
        key = store.fingerprint_key() or new_fingerprint_key()
        return key, NoState(store.missing, key) if isinstance(store, NoState) else None


def lock_free_now(url: str | None, command: str) -> None:
    """Refuse at once, as `locked` would at the write, while another process (a running daemon) holds the state
    lock: a command that queries the vendor for minutes before it writes then learns it up front. The lock is
    taken and released at once, not held through those queries, which would block a daemon starting meanwhile;
    the write takes it again. Where there is no state yet, no one holds it: nothing is created."""
    from reconciler.state import NoState

    with open_store(url, read_only=True) as store:
        if isinstance(store, NoState):
            return
    with open_store(url) as store, locked(store, command):
        pass


def _holder_gone(exc: LockHeld) -> str | None:
    """What to do about a lease whose holder ran on this host and runs no more (an apply killed, or one that
    could not release the lock as the state store went away): "wait for it to finish" had an operator look for
    a process that was gone (walk 55D-2). None: it runs, runs elsewhere, or the lock is an OS lock. Never more
    than the pid and the lease's renewals show (walk 56c)."""
    import re
    import socket

    found = re.match(r"pid (\d+) on (\S+) \(", exc.holder)
    if exc.expires_in is None or found is None or found.group(2) != socket.gethostname():
        return None
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        pass
    except OSError:
        return None  # another user's process: it runs
    else:
        return None
    # The pid and host name alone do not prove it ended: a capctl in another container (`--network host`, a
    # hostNetwork pod) or on another machine of the same name is no process here and renews its lease. A lease
    # left unrenewed past two renewals shows its holder stopped (a running command renews every quarter of it);
    # else both cases are said (walk 56c: "it ended" tempted an operator to break a live lease).
    lapses = f"the lock lapses by itself in {math.ceil(exc.expires_in)} s: run this again then"
    silent = COMMAND_LEASE_SECONDS - exc.expires_in
    if silent >= COMMAND_LEASE_SECONDS / 2:
        return (
            f"no process {found.group(1)} runs on this host now, and its lease has not been renewed for"
            f" {math.floor(silent)} s (a running capctl renews it every {COMMAND_LEASE_SECONDS / 4:g} s): it ended,"
            f" or lost the state store, without releasing the lock; {lapses}"
        )
    return (
        f"no process {found.group(1)} runs on this host now: if it ran here, it ended without releasing the lock"
        f" (killed, or the state store was out of reach when it tried), and {lapses}; if it runs in another"
        " container or on another machine of the same host name, it renews the lock: wait for it to finish"
    )


@contextmanager
def locked(store: StateStore, command: str, *, destination: bool = False) -> Iterator[None]:
    """Hold `store`'s state lock for `command`, or fail saying who holds it and what to do. `destination`: the
    state `capctl state copy` writes, whose refusal names it (the source's and the destination's read alike)."""
    from reconciler.state.base import LockHeld, StateError
    from reconciler.state.sql import SqlStateStore, holder_identity

    try:
        lock = store.lock(command, lease_seconds=COMMAND_LEASE_SECONDS)
    except LockHeld as exc:
        if exc.holder.startswith(holder_identity(command)):  # this very command: `state copy`'s source, named again
            fail(f"--from and --to name the same state ({store.url} is the source by another name): nothing to copy")
        which = f" of {store.url} (the {'destination' if destination else 'source'})" if command == _COPY else ""
        if exc.daemon:  # a daemon never finishes: say what to do instead of waiting
            advice = _DAEMON_ON_DESTINATION if destination else _daemon_advice(command, exc.daemon_url)
            fail(
                f"the capctl daemon holds the state lock{which} ({exc.holder}) and keeps it as long as it runs. "
                + advice
            )
        if (gone := _holder_gone(exc)) is not None:
            fail(f"another capctl holds the state lock{which} ({exc.holder}); {gone}")
        fail(
            f"another capctl holds the state lock{which} ({exc.holder}); wait for it to finish. "
            f"A lock held by a process that died is released by itself."
        )
    # A lease (PostgreSQL) lapses while its command is paused (SIGSTOP, a frozen VM): every write is fenced by
    # the lock's epoch, so one taken over writes nothing more (walk 22C-1). An OS lock (SQLite) lasts as long
    # as its process, paused or not, but its writes are fenced alike: the fence's statement also reads the
    # schema, which a newer capctl beside this one (a daemon pod of a rolling update) may raise meanwhile, and
    # a command writing on as the older schema would misread the state (walk 59c).
    lock.keep_silence()  # a command answers no callbacks: the next daemon still sees how long none was answered
    fenced = store if isinstance(store, SqlStateStore) else None
    if fenced is not None:
        fenced.command_epoch = lock.epoch
    try:
        with _kept(lock):
            yield
    finally:
        if fenced is not None:
            fenced.command_epoch = None
        # Bounded in time, not only in tries: each try against a database host that does not answer waits out
        # its connect timeout (10 s), and six of them (66 s) outlasted the lease the retries were to spare.
        give_up = time.monotonic() + sum(RELEASE_RETRY_DELAYS)
        for delay in (*RELEASE_RETRY_DELAYS, None):
            try:
                lock.release()
                break
            except StateError as exc:  # the store went away meanwhile: what the command did is still to be reported
                if delay is not None and time.monotonic() + delay <= give_up:
                    try:
                        time.sleep(delay)
                        continue
                    except KeyboardInterrupt:  # Ctrl-C ends the wait, not the report of what was done
                        pass
                err_console().print(
                    f"Warning: could not release the state lock ({exc}); it lapses by itself when its lease ends.",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
                break


# A command's PostgreSQL lease lapses this long after its last renew: a command that died lets the lock go by
# itself; one that runs renews it (`_kept`).
COMMAND_LEASE_SECONDS = 60.0


@contextmanager
def _kept(lock: Lock) -> Iterator[None]:
    """Renew a lease (`lock.lease_seconds`: PostgreSQL's) every quarter of it while the command holds it. It
    was never renewed, so it lapsed 60 s after it was taken: an apply or a `state rm` waiting at its
    confirmation, or an apply of thousands of changes, went on writing while a daemon replica or another
    command held the lock it had taken over (walk 20A-4). An OS lock (SQLite) lasts as long as its process."""
    import threading

    from reconciler.state.base import LockHeld, StateError

    lease: float | None = getattr(lock, "lease_seconds", None)
    if lease is None:
        yield
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease / 4):
            try:
                lock.renew()
            except LockHeld as exc:
                if not stop.is_set():  # (not the release racing the renew)
                    err_console().print(
                        f"Warning: the state lock lapsed and was taken over ({exc.holder}): this command's "
                        "writes and vendor stops are refused from now on; stop it (Ctrl-C), and run it again once "
                        "that one is done (or stopped).",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )
                return
            except StateError:  # the database out of reach a moment: the lease may still be ours, tried again
                continue

    threading.Thread(target=renew, name="capctl-lock-renew", daemon=True).start()
    try:
        yield
    finally:
        stop.set()


# A lock that cannot be released refuses the next command (`apply again …`) until its lease lapses (PostgreSQL:
# 60 s), naming a process that has ended; a database restart, the usual cause, is over within a few seconds.
RELEASE_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 2.0)


# Stopping the one holder is not enough: a standby replica takes the lock within a retry period.
_STOP_EVERY_REPLICA = (
    "stop the daemon first (SIGTERM), every replica of it: a standby takes the lock within seconds"
    " (Kubernetes: `kubectl scale deploy/capctl --replicas=0`)"
)
_COPY = "capctl state copy"
# A daemon deployed on the new store before the copy (walk 36d-1): it has acted there already, so "start it on the
# copy" was wrong, and the tasks it started are what `--force` would forget without stopping them.
_DAEMON_ON_DESTINATION = (
    "It acts on the state the copy would write into (started on an empty state, it starts every declared task): "
    f"{_STOP_EVERY_REPLICA}; `capctl state list --state` of it shows what it started, which a copy with --force "
    "forgets without stopping (a ZEGO recording it started beside the source's keeps running, untracked). "
    "Start it again once the copy is in."
)


def _daemon_advice(command: str, url: str | None) -> str:
    sync = f"capctl sync --daemon {url}" if url else "capctl sync --daemon URL"
    if command == "capctl apply":
        return (
            f"It applies the specs by itself; `{sync} [KEY...]` makes it reconcile now. "
            f"To apply by hand instead, {_STOP_EVERY_REPLICA}."
        )
    if command == "capctl wake":  # what the daemon does about a dormant task without a human (walk 12A-5)
        wake = f"capctl wake --daemon {url or 'URL'} KEY..."
        return (
            "It wakes a dormant task by itself at the first activity in its room (a join or a stream), "
            f"or at its next slot; `{wake}` makes it wake them and start them now. "
            f"To wake them offline instead, {_STOP_EVERY_REPLICA}, then start it again."
        )
    # After a copy it runs on the copy: on both states it would start each task twice.
    then = "start it on the copy (--state, CAPCTL_STATE)" if command == _COPY else "start it again"
    return f"To run `{command}`, {_STOP_EVERY_REPLICA}, then {then}."


T = TypeVar("T")


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


def retry_report(policy: RetryPolicy, console: Console) -> RetryReport:
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


def progress_bar(
    total: int, label: str, console: Console | None = None, *, known_total: bool = True
) -> Progress | LineProgress:
    """A rich progress bar on stderr for long work on a terminal; elsewhere a line every 10 s (LineProgress).
    `known_total` false: the count is of work done, its end is not known in advance (a refresh)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or err_console()
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


def retry_policy() -> RetryPolicy:
    """How calls to vendors are tried (CAPCTL_MAX_ATTEMPTS); the certificate authorities they trust checked too
    (SSL_CERT_FILE / SSL_CERT_DIR): each refused with what is wrong before any call, not as a traceback."""
    from reconciler.httpclient import trust_settings_problem
    from reconciler.retry import RetryPolicy

    if problem := trust_settings_problem(os.environ):
        fail(problem)
    try:
        return RetryPolicy.from_env(os.environ)
    except ValueError as exc:
        fail(str(exc))


def say_if_no_state(store: StateStore, consequence: str) -> bool:
    """On stderr, where a read-only command looked for a state and found none; True if so."""
    from reconciler.state import NoState

    if not isinstance(store, NoState):
        return False
    where = str(store.missing)
    err_console().print(f"{where[:1].upper()}{where[1:]}: {consequence}.", markup=False, soft_wrap=True)
    return True


def say_new_state(url: str) -> None:
    """On stderr, that a writing command (apply, state import) made the state, path resolved: `sqlite:///tmp/x.db`
    is ./tmp/x.db, and a state nobody expected there starts every task again at the next apply elsewhere."""
    err_console().print(f"Started a new state at {url}.", markup=False, soft_wrap=True)


def stop_cleanly_while_starting(ctx: typer.Context, *, reloads: bool = False) -> None:
    """First thing in a server command (`run`, `sim`): SIGTERM or Ctrl-C before it sets its own handlers exits 0,
    its documented clean stop. Its imports take ~0.5 s on a loaded node, and a SIGTERM then killed it (143; Ctrl-C:
    click's `Aborted!`, 1; walk 30c-6/35b); nothing is open yet, so there is nothing to finish. A signal ignored
    (`nohup`, a background job's SIGINT) stays ignored. The handlers before come back when the command's context
    closes (commands run in-process by tests); the server's own replace these while it serves.
    `reloads` (`run`, whose SIGHUP re-reads the specs): a SIGHUP meanwhile is let pass: nothing is read yet, they
    are read as it starts (the daemon's own early handler answers a later one once it runs); it killed the daemon
    (129, walk 36a-3)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        return

    def stop(signum: int, frame: object) -> NoReturn:
        raise SystemExit(0)

    def let_pass(signum: int, frame: object) -> None:
        pass

    wanted: dict[signal.Signals, tuple[object, Callable[[int, object], None]]] = {
        signal.SIGTERM: (signal.SIG_DFL, stop),
        signal.SIGINT: (signal.default_int_handler, stop),
    }
    if reloads:
        wanted[signal.SIGHUP] = (signal.SIG_DFL, let_pass)
    previous = {signum: signal.getsignal(signum) for signum in wanted}
    for signum, (default, handler) in wanted.items():
        if previous[signum] is default:
            signal.signal(signum, handler)

    def restore() -> None:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)

    ctx.call_on_close(restore)


def split_listen(listen: str, example: str, flag: str = "--listen") -> tuple[str, int]:
    from reconciler.listen import parse_listen

    try:
        return parse_listen(listen, example=example, flag=flag)
    except ValueError as exc:
        fail(str(exc))
