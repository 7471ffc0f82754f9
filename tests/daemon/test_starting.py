"""`capctl run` waiting at start for a state store whose server does not answer (starting.py), on a fake clock.

The process-level behaviour, with a real PostgreSQL that comes up late, is tests/e2e/test_cli_state_wait.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import MutableMapping
from typing import Any

import httpx
from starlette.responses import PlainTextResponse
from structlog.testing import capture_logs

from reconciler.clock import FakeClock
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.starting import FOREVER, Front, open_when_reachable, retry_delay
from reconciler.state.base import StateDamaged, StateError, StateUnreachable

URL = "postgresql://capctl@127.0.0.1:5432/capctl"
REFUSED = f"cannot connect to the PostgreSQL state store {URL}: connection refused"


class Database:
    """Refuses the first `down` connections (None: every one), then opens."""

    def __init__(self, down: int | None, error: StateError | None = None) -> None:
        self.down, self.error, self.attempts = down, error, 0

    def open(self) -> str:
        self.attempts += 1
        if self.down is None or self.attempts <= self.down:
            raise self.error or StateUnreachable(REFUSED, where=URL)
        return "store"


async def wait_for(
    db: Database, *, wait: float = FOREVER, stop_after: int | None = None
) -> tuple[Any, list[MutableMapping[str, Any]], Front, Metrics]:
    """`open_when_reachable` on a fake clock moved to each wake-up; SIGTERM (stopping) after `stop_after` tries."""
    clock, metrics, stopping = FakeClock(), Metrics(), asyncio.Event()
    front = Front(metrics)
    with capture_logs() as logs:
        task = asyncio.ensure_future(
            open_when_reachable(
                db.open,
                url="http://127.0.0.1:8080",
                wait=wait,
                clock=clock,
                stopping=stopping,
                front=front,
                metrics=metrics,
            )
        )
        while not task.done():
            await asyncio.sleep(0.005)  # the attempt runs in a thread
            if stop_after is not None and db.attempts >= stop_after:
                stopping.set()
            elif (due := clock.next_wakeup()) is not None:
                clock.set(due)
        try:
            return await task, logs, front, metrics
        except StateError as exc:
            return exc, logs, front, metrics


def failures(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("capctl_state_store_connect_failures_total")


async def test_it_tries_again_with_a_growing_delay_logging_each_failure_and_opens_once_the_server_answers() -> None:
    opened, logs, front, metrics = await wait_for(Database(down=7))
    assert opened == "store"
    waits = [entry for entry in logs if entry["event"] == "state store unreachable; waiting for it"]
    assert [entry["retry_in"] for entry in waits] == [1, 2, 4, 8, 16, 30, 30]
    assert [entry["attempt"] for entry in waits] == [1, 2, 3, 4, 5, 6, 7]
    assert all(entry["state"] == URL and entry["error"] == REFUSED for entry in waits)
    assert all(entry["url"] == "http://127.0.0.1:8080" for entry in waits)  # where the probes answer meanwhile
    assert failures(metrics) == 7
    assert front.reason == f"not ready (waiting for the state store: attempt 7 failed): {REFUSED}"


def test_the_delay_doubles_up_to_thirty_seconds() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4, 5, 6, 100_000)] == [1, 2, 4, 8, 16, 30, 30]


async def test_state_wait_bounds_the_wait_and_says_so() -> None:
    gave_up, logs, _, metrics = await wait_for(Database(down=None), wait=10)
    assert isinstance(gave_up, StateUnreachable)
    assert str(gave_up) == f"{REFUSED}; gave up after 10 s (--state-wait)"
    assert [e["retry_in"] for e in logs if e["event"].startswith("state store unreachable")] == [1, 2, 4, 3]
    assert failures(metrics) == 5


async def test_state_wait_0_fails_at_once_as_the_one_shot_commands_do() -> None:
    db = Database(down=None)
    failed, logs, _, _ = await wait_for(db, wait=0)
    assert isinstance(failed, StateUnreachable) and str(failed) == REFUSED
    assert db.attempts == 1 and logs == []


async def test_a_signal_while_waiting_ends_the_wait_without_opening() -> None:
    db = Database(down=None)
    stopped, _, _, _ = await wait_for(db, stop_after=2)
    assert stopped is None and db.attempts == 2


async def test_a_signal_during_a_connection_to_a_silent_host_ends_the_wait_at_once() -> None:
    """A host that accepts and never answers holds a connection for its whole timeout (10 s): SIGTERM waited it out."""
    released = threading.Event()

    def silent() -> str:
        released.wait(30)
        raise StateUnreachable(f"cannot connect to the PostgreSQL state store {URL}: timeout expired", where=URL)

    clock, metrics, stopping = FakeClock(), Metrics(), asyncio.Event()
    front = Front(metrics)
    waiting = asyncio.ensure_future(
        open_when_reachable(silent, url=URL, wait=FOREVER, clock=clock, stopping=stopping, front=front, metrics=metrics)
    )
    await asyncio.sleep(0.05)
    assert front.reason == "not ready (starting: connecting to the state store)"
    stopping.set()
    try:
        assert await asyncio.wait_for(waiting, 2) is None
    finally:
        released.set()


async def test_a_store_that_answers_with_an_error_is_not_waited_for() -> None:
    """Waiting mends an unreachable server, not a damaged state or a bad URL."""
    db = Database(down=None, error=StateDamaged(URL, "missing tables"))
    failed, logs, _, metrics = await wait_for(db)
    assert isinstance(failed, StateDamaged) and db.attempts == 1 and logs == [] and failures(metrics) == 0


async def test_until_the_daemon_runs_it_is_alive_not_ready_and_says_why_then_the_daemon_answers() -> None:
    metrics = Metrics()
    front = Front(metrics)
    front.reason = f"not ready (waiting for the state store: attempt 3 failed): {REFUSED}"
    metrics.state_store_connect_failures.inc(3)

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://daemon")

    async with client() as http:
        assert (await http.get("/healthz")).text == "ok\n"  # the kubelet does not restart it
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.text == front.reason + "\n"
        scraped = (await http.get("/metrics")).text
        assert "capctl_state_store_connect_failures_total 3.0" in scraped
        assert "capctl_state_store_reachable 0.0" in scraped
        # No spec load failed yet: no capctl_spec_set_valid 0 to fire CapctlSpecSetInvalid during the outage.
        assert "capctl_spec_set_valid" not in scraped and "capctl_spec_set_errors" not in scraped
        page = await http.get("/")  # the status page in a browser: the reason in words
        assert page.status_code == 503 and page.text == front.reason + "\n"
        for call in (http.post("/callbacks/volcengine", content=b"{}"), http.post("/api/v1/sync")):
            answer = await call
            assert answer.status_code == 503 and answer.json() == {"ok": False, "reason": front.reason}
        assert (await http.get("/api/v1/status")).json() == {"ok": False, "reason": front.reason}

    metrics.spec_load(errors=2, at=1.0)  # the first load exports them, and a second one does not re-register
    metrics.spec_load(errors=0, at=2.0)
    assert metrics.registry.get_sample_value("capctl_spec_set_valid") == 1
    assert metrics.registry.get_sample_value("capctl_spec_set_last_load_timestamp_seconds") == 2

    front.serve(PlainTextResponse("the daemon's app\n"))
    async with client() as http:
        assert (await http.get("/readyz")).text == "the daemon's app\n"
