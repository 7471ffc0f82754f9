"""The log's ring of recent events that the page shows as "recent decisions": bounded, scrubbed, flat."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

import structlog

from reconciler import logs
from reconciler.clock import FakeClock
from reconciler.logs import RECENT_FIELD_CHARS, RecentEvents


def test_events_are_kept_scrubbed_and_bounded() -> None:
    ring = RecentEvents(size=3)
    for i in range(5):
        ring(None, "info", {"event": f"e{i}", "n": i})
    assert [e["event"] for e in ring.events()] == ["e2", "e3", "e4"]
    ring(None, "info", {"event": "big", "detail": "x" * 5000, "obj": object(), "exc_info": True})
    kept = ring.events()[-1]
    assert len(kept["detail"]) == RECENT_FIELD_CHARS and isinstance(kept["obj"], str) and "exc_info" not in kept


def test_the_configured_logger_feeds_the_ring_after_the_scrubber() -> None:
    logs.configure("info", json_logs=True, stream=io.StringIO())
    try:
        log = structlog.get_logger("capctl.daemon")
        log.info("decision", key="SnapshotJob/lobby/a", action="reissue", access_token="hunter2")
        log.debug("no change", key="SnapshotJob/lobby/a")  # below the level: neither logged nor kept
    finally:
        structlog.reset_defaults()
    newest = logs.recent_events()[-1]
    assert newest["event"] == "decision" and newest["key"] == "SnapshotJob/lobby/a"
    assert newest["access_token"].startswith("sha256:") and "hunter2" not in str(logs.recent_events())
    assert newest["level"] == "info" and newest["timestamp"]
    assert all(e["event"] != "no change" for e in logs.recent_events())


def test_a_librarys_warnings_are_said_once_a_minute_and_leave_the_decisions_in_the_ring() -> None:
    """uvicorn warns `Invalid HTTP request received.` for every malformed request anyone sends: 600 of them were
    600 log lines and pushed every decision out of the status page's recent events (500)."""
    clock, out = FakeClock(1_800_000_000.0), io.StringIO()
    logs.configure("info", json_logs=True, stream=out, clock=clock)
    try:
        structlog.get_logger("capctl.daemon").info("decision", key="SnapshotJob/lobby/a", action="reissue")
        for _ in range(600):
            logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
        logging.getLogger("uvicorn.error").warning("another %s", "thing")  # another message: said too
        logging.getLogger("asyncio").error("Task exception was never retrieved")  # an error: once a minute too
        logging.getLogger("asyncio").error("Task exception was never retrieved")
        clock.advance(61)
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e.get("repeats_held_back")) for e in lines] == [
        ("decision", None),
        ("Invalid HTTP request received.", None),
        ("another thing", None),
        ("Task exception was never retrieved", None),
        ("Invalid HTTP request received.", 599),
    ]
    assert [e["event"] for e in logs.recent_events()] == [e["event"] for e in lines]  # the decision kept


def _fail(bug: str) -> None:
    """A request handler's bug: which line raises depends on `bug`."""
    if bug == "key":
        raise KeyError("room")
    raise ValueError("bad")


def test_an_unhandled_error_repeated_is_one_whole_traceback_a_minute_per_exception_and_line() -> None:
    """uvicorn logs `Exception in ASGI application` with the traceback for every request that meets a bug: one
    reachable without a secret was one traceback per request anyone sends. The first is said whole; the same
    exception from the same line is held back for a minute and counted, another exception or line is said."""
    clock, out = FakeClock(1_800_000_000.0), io.StringIO()
    logs.configure("info", json_logs=True, stream=out, clock=clock)

    def request(bug: str) -> None:
        try:
            _fail(bug)
        except Exception:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application\n")

    try:
        for _ in range(300):
            request("key")
        request("value")  # another line, another exception: said
        clock.advance(61)
        request("key")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"].strip(), e.get("repeats_held_back")) for e in lines] == [
        ("Exception in ASGI application", None),
        ("Exception in ASGI application", None),
        ("Exception in ASGI application", 299),
    ]
    assert ["KeyError: 'room'" in e["exception"] and 'raise KeyError("room")' in e["exception"] for e in lines] == [
        True,
        False,
        True,
    ]


def test_two_bugs_that_raise_at_one_library_line_each_have_their_first_traceback() -> None:
    """Walk 25d (23a left it): keyed by the line that raised alone, two bugs meeting one library line (json's
    decoder, pydantic's validator) shared a throttle, so requests meeting the first (anyone's, once a minute)
    left the other's traceback never said, only counted. An error is keyed by every line of its traceback (a
    set: a recursion's depth makes no new key)."""
    clock, out = FakeClock(1_800_000_000.0), io.StringIO()
    logs.configure("info", json_logs=True, stream=out, clock=clock)

    def callback_route(depth: int) -> None:
        if depth:
            callback_route(depth - 1)
        json.loads("{")

    def sync_route(depth: int) -> None:
        json.loads("{")

    def request(route: Callable[[int], None], depth: int = 1) -> None:
        try:
            route(depth)
        except ValueError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application\n")

    try:
        for depth in range(1, 30):
            request(callback_route, depth)
        request(sync_route)
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert ["sync_route" in e["exception"] for e in lines] == [False, True]
    assert all("JSONDecodeError" in e["exception"] for e in lines)


def test_a_background_tasks_error_formatted_anew_each_time_is_held_back_too() -> None:
    """asyncio logs `Task exception was never retrieved` formatted, the task's name in its text: each one was a
    new message, said whole every time (and kept as a key). An error is its exception's type and line (23a)."""
    clock, out = FakeClock(1_800_000_000.0), io.StringIO()
    logs.configure("info", json_logs=True, stream=out, clock=clock)
    try:
        for n in range(50):
            try:
                _fail("key")
            except KeyError as exc:
                text = f"Task exception was never retrieved\nfuture: <Task finished name='Task-{n}'>"
                logging.getLogger("asyncio").error(text, exc_info=exc)
        logging.getLogger("asyncio").error("Unclosed client session")  # no exception: its text, said
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"].splitlines()[-1] for e in lines] == [
        "future: <Task finished name='Task-0'>",
        "Unclosed client session",
    ]
    assert "KeyError: 'room'" in lines[0]["exception"]


def test_a_deferred_set_up_is_applied_by_the_first_event_the_level_lets_through() -> None:
    """One-shot commands set up logging without importing structlog (reconciler/logs.py): an event below the level
    applies nothing, the first one at it (a module's, or a library's through `logging`) writes as `configure`."""
    out, handlers = io.StringIO(), logging.getLogger().handlers[:]
    logs.configure("info", json_logs=True, stream=io.StringIO())
    logs.configure_on_first_event("warning", json_logs=True, stream=out)
    try:
        log = logs.lazy_logger("capctl.execute")
        log.info("retrying", attempt=1)  # below the level: the earlier set-up is still the one in force
        assert out.getvalue() == "" and logs.recent_events() == []
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
        log.warning("change failed", access_token="hunter2")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers = handlers
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [
        ("Invalid HTTP request received.", "warning"),
        ("change failed", "warning"),
    ]
    assert lines[0]["logger"] == "uvicorn.error" and lines[1]["access_token"].startswith("sha256:")
    assert [e["event"] for e in logs.recent_events()] == ["Invalid HTTP request received.", "change failed"]


def test_a_console_line_writes_what_a_terminal_must_not_get_raw_as_escapes() -> None:
    """Walk 58e: a key from a state an older capctl wrote (a room id with an escape sequence) went raw into the
    console's line (JSON lines always escaped it), where it retitled the terminal or forged a line."""
    out = io.StringIO()
    logs.configure("info", json_logs=False, stream=out)
    try:
        structlog.get_logger("capctl.daemon").warning("reconcile failed", key="SnapshotJob/a/ev\x1b]0;t\x07il")
    finally:
        structlog.reset_defaults()
    assert not {"\x1b", "\x07"} & set(out.getvalue()) and "key=SnapshotJob/a/ev\\x1b]0;t\\x07il" in out.getvalue()
