"""The commands around the daemon: `run` (the daemon itself), `sync` (asks it to reconcile now) and `wake`
(clears a dormant or backing-off task's wait, for the next apply or the daemon).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from reconciler.cli.common import (
    fail,
    locked,
    open_store,
    out_console,
    paths_or_default,
    setup_logs,
    stop_cleanly_while_starting,
)
from reconciler.cli.options import LogLevelOpt, PathsArg, StateOpt, complete_task_keys, typed_text

__all__ = ["DAEMON_ANSWER_SECONDS", "run", "sync", "wake"]

DAEMON_ANSWER_SECONDS = 10.0  # how long sync and wake wait for the daemon's answer


def _duration_option(option: str, value: str, *, also: str = "") -> int:
    """Seconds of a duration option (`30s`, `5m`, or plain seconds); a bad value exits naming the option (and
    `also`, what else it takes)."""
    from reconciler.jsonlimits import bounded_int
    from reconciler.spec.fields import parse_duration

    try:
        # ASCII digits only: str.isdigit() holds for "²", which int() refuses with Python's own words.
        # bounded_int: 5,000 digits are "a number of 5000 digits (at most 100)", not int()'s advice for programmers
        return int(parse_duration(bounded_int(value) if value.isascii() and value.isdigit() else value))
    except ValueError as exc:
        fail(f"{option}: {exc}{also}")


def _ask_daemon(daemon: str, path: str, keys: list[str]) -> tuple[str, int, dict[str, object]]:
    """POST `{"keys": keys}` (`{}` for none) to the daemon at `daemon`'s `path`, with CAPCTL_SYNC_TOKEN as a
    bearer token when set: (the URL as messages show it, the HTTP status, the JSON answer). Exits saying why
    when the URL, a key or the token cannot be sent, the daemon cannot be reached, or it answered no JSON
    object. The token is never printed."""
    import httpx

    from reconciler.daemon.http import sync_token
    from reconciler.httpclient import trust_settings_problem
    from reconciler.jsonlimits import is_utf8
    from reconciler.redact import redact_url, scrub_text
    from reconciler.secrets import Secret

    url = daemon.rstrip("/")
    try:
        base = redact_url(url)  # what messages show: a password in the URL is not printed
        target = httpx.URL(url + path)
    except (ValueError, httpx.InvalidURL):  # not quoted: neither can say which part is a password
        fail(
            "--daemon: the URL cannot be read (an unclosed [ or a port that is not a number): expected the "
            "daemon's URL, e.g. http://127.0.0.1:8080"
        )
    if not url.startswith(("http://", "https://")):
        fail(f"--daemon {base!r}: expected the daemon's URL, e.g. http://127.0.0.1:8080")
    if bad := next((key for key in keys if not is_utf8(key)), None):  # httpx's JSON encoder: a traceback
        fail(f"KEY {bad!r}: not UTF-8 text; no task key is")
    if problem := trust_settings_problem(os.environ):  # as plan and apply: httpx's own error was a traceback
        fail(problem)
    try:
        token = sync_token(os.environ)
    except ValueError as exc:
        fail(str(exc))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.post(target, json={"keys": keys} if keys else {}, headers=headers, timeout=DAEMON_ANSWER_SECONDS)
    except httpx.ReadTimeout:  # it took the request: not "cannot reach", and it may still act on it
        fail(
            f"the daemon at {base} took the request but gave no answer within {DAEMON_ANSWER_SECONDS:g} s (busy, or "
            "its state store slow): it may still act on it. Its log says what it did; `capctl state list KEY` shows "
            "the tasks as recorded."
        )
    except httpx.HTTPError as exc:
        said = scrub_text(str(exc) or type(exc).__name__, [Secret(token or "")], limit=None)
        fail(
            f"cannot reach the daemon at {base}: {said}. Is `capctl run` serving there? "
            "Point --daemon or CAPCTL_DAEMON at its --listen address."
        )
    status = f"{answer.status_code} {answer.reason_phrase}"
    try:
        reply = answer.json()
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("reason"), str):
        fail(f"{base} answered {status}, not as a capctl daemon: is --daemon right?")
    # What the other end says is printed to the terminal: each text on one line, its control characters (an
    # escape sequence, a forged line) as escapes and the token never echoed back, whoever answers at --daemon.
    hidden = [Secret(token or "")]
    lines = reply.get("lines")
    reply = {
        **reply,
        "reason": scrub_text(reply["reason"], hidden, limit=_SAID),
        "lines": [scrub_text(str(line), hidden, limit=_SAID) for line in lines] if isinstance(lines, list) else [],
    }
    return base, answer.status_code, reply


_SAID = 2_000  # characters of one line of a daemon's answer printed: its reasons and lines are far shorter


def run(
    ctx: typer.Context,
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
            help="A spec change that removes more than this share of the tasks in the state (thumbnails aside: "
            "their prune calls nothing) or of the running ones prunes none of them and waits for a human "
            "(`capctl apply`, or a restart with --max-prune 100). 100 disables it.",
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

    POST /api/v1/sync and /api/v1/wake (`capctl sync`, `capctl wake --daemon`) require CAPCTL_SYNC_TOKEN as a
    bearer token when it is set here.
    """
    stop_cleanly_while_starting(ctx, reloads=True)  # its imports take ~0.5 s: SIGTERM then is a clean stop too
    from reconciler.daemon import run_daemon
    from reconciler.daemon.starting import FOREVER
    from reconciler.httpclient import trust_settings_problem
    from reconciler.leader import LeaderSettings

    resync_seconds = _duration_option("--resync", resync)
    grace_seconds = _duration_option("--prune-grace", prune_grace)
    read_timeout_seconds = _duration_option("--read-timeout", read_timeout)
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
    except ValueError as exc:  # LeaderSettingsError is one
        fail(str(exc))
    if problem := trust_settings_problem(os.environ):  # the vendors' client is made once the daemon runs
        fail(problem)
    setup_logs(log_level, now=True)
    raise typer.Exit(
        run_daemon(
            paths_or_default(paths),
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
            refuse=fail,  # a value out of range (or CAPCTL_SYNC_TOKEN) as an `Error:`, not as a log line
        )
    )


def sync(
    keys: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY",
            help="Task keys to reconcile now, e.g. SnapshotJob/lobby-audit/lobby, or a job or globs as `state "
            "list` takes them ('SnapshotJob/lobby-audit', 'SnapshotJob/classes/*'). Default: every task.",
            autocompletion=complete_task_keys,
            callback=typed_text,
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
    keeps waiting: `capctl wake --daemon URL KEY` wakes it), within the vendors' rate budgets. Each KEY must
    match a task the daemon knows (in its specs or its state), else nothing is queued. At most 32 jobs or globs
    in one call (the daemon compares each with every task); whole task keys, any number.
    Use it instead of `capctl apply` while a daemon runs.
    When CAPCTL_SYNC_TOKEN is set, it is sent as a bearer token (the daemon requires it when it has one).
    """
    from reconciler.daemon.http import SYNC_PATH

    _check_keys(keys or [])
    base, status, reply = _ask_daemon(daemon, SYNC_PATH, keys or [])
    if status != 200:
        fail(f"the daemon at {base} queued nothing: {reply['reason']}")
    count = reply.get("queued")
    queued = count if isinstance(count, int) else "?"
    what = f"{queued} task(s)" if keys else f"every task ({queued})"
    out_console().print(f"Queued {what} for an immediate reconcile at {base}.", markup=False, soft_wrap=True)
    for key in keys or ():
        out_console().print(f"  {key}", markup=False, soft_wrap=True)
    # An older daemon does not say; a tombstone's removed job has nothing left to reconcile.
    if isinstance(left := reply.get("tombstones"), int) and left > 0:
        said = f"Not queued: {left} tombstone(s) of removed tasks (nothing to reconcile; `capctl state list`)."
        out_console().print(said, markup=False, soft_wrap=True)


def wake(
    ctx: typer.Context,
    keys: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY",
            help="Task keys, e.g. SnapshotJob/lobby-audit/lobby, or globs as `state list` takes them "
            "('SnapshotJob/classes/*', 'SnapshotJob/*')",
            autocompletion=complete_task_keys,
            callback=typed_text,
        ),
    ],
    state: StateOpt = None,
    daemon: Annotated[
        str | None,
        typer.Option(
            "--daemon",
            metavar="URL",
            envvar="CAPCTL_DAEMON",
            show_envvar=True,
            help="Ask the running `capctl run` at this URL (its --listen) to wake them and start them now, "
            "instead of taking the state lock (which it holds).",
        ),
    ] = None,
) -> None:
    """Wake dormant or backing-off tasks: clear their backoff so they start now.

    Each KEY must match a task; only those waiting (dormant, or stopped with a backoff) are woken, the others
    are left as they are. While a daemon runs, use --daemon (or CAPCTL_DAEMON): it wakes them and starts them
    at once (as for `capctl sync`, CAPCTL_SYNC_TOKEN is sent, and at most 32 jobs or globs in one call are
    taken); it wakes them in the state it runs on, so --state beside --daemon is refused. Without it, wake takes
    the state lock (a running daemon holds it) and the next `capctl apply` starts them."""
    from reconciler.state import NoState
    from reconciler.waking import plan_wake

    _check_keys(keys)
    given = ctx.get_parameter_source("state")
    if daemon is not None and given is not None and given.name == "COMMANDLINE":
        # The daemon wakes tasks in its own state: a --state named beside it would be silently ignored (walk 19a).
        # CAPCTL_STATE from the environment is only a default, and yields.
        fail(
            "--state and --daemon exclude each other (the daemon wakes tasks in the state it runs on): "
            "give --daemon to ask the running daemon, or --state alone to wake offline"
        )
    if daemon is not None:
        _wake_at(daemon, keys)
        return
    with open_store(state, read_only=True) as store:  # waking a task in no state creates none
        if isinstance(store, NoState):
            fail(f"nothing to wake: {store.missing}")
        with locked(store, "capctl wake"):
            wake = plan_wake(keys, store.keys(), store.record)
            if wake.unknown:
                fail(wake.problem)
            lines = wake.lines
            serial = store.put_many(wake.woken) if wake.woken else None
    for line in lines:
        typer.echo(line)
    if serial is not None:
        typer.echo(f"Backoff cleared (state serial {serial}): the next `capctl apply`, or the daemon, starts them now.")


def _check_keys(keys: list[str]) -> None:
    """A KEY that is neither a task key nor a glob of them is refused before the daemon is asked (sync, wake)."""
    from reconciler.plan import PlanError, check_selector

    try:
        for key in keys:
            check_selector(key, "KEY")
    except PlanError as exc:
        fail(str(exc))


def _wake_at(daemon: str, keys: list[str]) -> None:
    """`capctl wake --daemon`: the leader wakes the keys under its lease and reconciles them at once."""
    from reconciler.daemon.http import WAKE_PATH

    base, status, reply = _ask_daemon(daemon, WAKE_PATH, keys)
    if status != 200:
        fail(f"the daemon at {base} woke nothing: {reply['reason']}")
    lines = reply["lines"]  # each on one line, escaped (`_ask_daemon`)
    for line in lines if isinstance(lines, list) else ():
        out_console().print(str(line), markup=False, soft_wrap=True, highlight=False)
    out_console().print(f"{reply['reason']} at {base}.", markup=False, soft_wrap=True, highlight=False)
