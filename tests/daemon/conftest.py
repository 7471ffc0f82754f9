"""A daemon and an in-process simulator sharing one FakeClock, wired to each other's ASGI apps: the daemon's
vendor calls through its httpx client and `httpx.ASGITransport`, the simulator's callbacks handed to the daemon's
app in-process as the request its HTTP sender would make (`AsgiSender`, reconciler/sim/senders.py).

`Harness.advance(seconds)` is a small discrete-event loop: it lets every runnable coroutine run, then
jumps the fake clock to the next thing that is due (a daemon sleeper, a rate-budget slot, a simulated
vendor deadline, a callback delivery), so hours of daemon life take well under a second of wall time.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from reconciler import logs
from reconciler.clock import FakeClock
from reconciler.daemon import Daemon
from reconciler.model import TaskRecord
from reconciler.sim.app import create_app
from reconciler.sim.config import SimConfig
from reconciler.sim.senders import AsgiSender
from reconciler.sim.simulator import Simulator
from reconciler.sim.world import SimTask
from reconciler.state.base import StateStore
from reconciler.state.sqlite import SQLiteStateStore
from tests.specdocs import STORAGE, providers
from tests.state.conftest import pg_url  # noqa: F401  (the outage tests run the daemon on PostgreSQL too)

SIM = "http://sim.local"
DAEMON = "http://daemon.local"


def write_specs(directory: Path, *jobs: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "providers.yaml").write_text(providers(SIM, callbacks=True) + "---\n" + STORAGE)
    (directory / "jobs.yaml").write_text("---\n".join(jobs) if jobs else "")
    return directory


async def settle() -> None:
    """Run every coroutine that can run; return once all of them wait on the fake clock (or nothing)."""
    loop = asyncio.get_running_loop()
    quiet = 0
    while quiet < 3:
        await asyncio.sleep(0)
        # Private, but exact: no ready callbacks means every task is parked on a future.
        quiet = quiet + 1 if not loop._ready else 0  # type: ignore[attr-defined]


class VendorClock:
    """The simulator's clock when the vendor's is off the daemon's: `offset` seconds at the start, drifting
    `drift` seconds per second after it. Durations (sleeps, the monotonic clock) are the daemon clock's."""

    def __init__(self, daemon: FakeClock, offset: float, drift: float = 0.0) -> None:
        self._daemon, self._offset, self._drift, self._t0 = daemon, offset, drift, daemon.now()

    def now(self) -> float:
        return self.vendor(self._daemon.now())

    def vendor(self, daemon_time: float) -> float:
        return daemon_time + self._offset + self._drift * (daemon_time - self._t0)

    def daemon(self, vendor_time: float) -> float:
        """The daemon's time when the vendor's reads `vendor_time`."""
        return self._t0 + (vendor_time - self._t0 - self._offset) / (1 + self._drift)

    def monotonic(self) -> float:
        return self._daemon.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._daemon.sleep(seconds)


class Harness:
    def __init__(
        self, tmp_path: Path, clock: FakeClock, *, vendor_clock: VendorClock | None = None, **daemon_options: Any
    ) -> None:
        """`vendor_clock`: the simulator's, when it is off `clock` (the daemon's); None: they share `clock`."""
        self.tmp_path = tmp_path
        self.clock = clock
        self.vendor_clock = vendor_clock
        self.specs = tmp_path / "specs"
        self.state_path = tmp_path / "state.db"
        self.daemon_options = daemon_options
        self.daemon: Daemon | None = None
        self._daemon_app: ASGIApp | None = None
        config = SimConfig(
            volcengine_callback_url=f"{DAEMON}/callbacks/volcengine",
            zego_callback_url=f"{DAEMON}/callbacks/zego",
            callback_sender=AsgiSender(self._route_callback),  # in-process: what the HTTP sender would send
            seed=7,
        )
        app = create_app(config, vendor_clock or clock)
        self.sim: Simulator = app.state.sim
        self.sim_app: ASGIApp = app  # what the daemon's vendor calls reach (a test may wrap it before start)
        self._images_at = float("-inf")

    async def _route_callback(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Callbacks reach whichever daemon is running now (a restarted one too); none: 503, as a dead host."""
        if self._daemon_app is None:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self._daemon_app(scope, receive, send)

    async def start(self, store: StateStore | None = None, **options: Any) -> Daemon:
        store = store or SQLiteStateStore(self.state_path, clock=self.clock)
        # Elections and inbox claims on the loop: a thread's store call would finish after the fake clock moved on.
        merged = {
            "resync": 30.0,
            "rng": __import__("random").Random(1),
            "elect_in_thread": False,
            **self.daemon_options,
            **options,
        }
        daemon = Daemon([str(self.specs)], store, self.clock, transport=httpx.ASGITransport(app=self.sim_app), **merged)
        await daemon.start()
        self.daemon = daemon
        self._daemon_app = daemon.asgi_app
        await settle()
        return daemon

    async def start_standby(self, store: StateStore | None = None, specs: Path | None = None, **options: Any) -> Daemon:
        """A second replica on the same simulator, specs and state file (or `specs`, `store`): a standby
        while another leads; not the harness's daemon: callbacks reach it once `_daemon_app` points at it."""
        merged = {"resync": 30.0, "rng": __import__("random").Random(2), "elect_in_thread": False, **options}
        merged.setdefault("holder", "capctl run on standby")
        store = store or SQLiteStateStore(self.state_path)
        standby = Daemon(
            [str(specs or self.specs)], store, self.clock, transport=httpx.ASGITransport(app=self.sim_app), **merged
        )
        await standby.start()
        return standby

    async def stop(self) -> None:
        assert self.daemon is not None
        self._daemon_app = None
        stopping = asyncio.ensure_future(self.daemon.stop())
        while not stopping.done():  # in-flight calls may wait on a rate-budget slot: keep the clock moving
            await self.advance(0.5)
        await stopping
        self.daemon.records.close()
        self.daemon = None

    async def advance(self, seconds: float, *, image_every: float = 5.0) -> None:
        """Move time forward by `seconds`, processing everything that falls due on the way, in order.
        Image callbacks are produced every `image_every` simulated seconds (a step of their own)."""
        target = self.clock.now() + seconds
        while True:
            await self._pump(image_every)
            await settle()
            dues = [
                self.clock.next_wakeup(),
                self._daemon_time(self.sim.world.next_due()),
                self._daemon_time(self.sim.callbacks.next_due()),
                self._images_at + image_every,
            ]
            step = min((d for d in dues if d is not None), default=None)
            if step is None or step > target:
                break
            self.clock.set(max(step, self.clock.now() + 1e-6))
        self.clock.set(target)
        await self._pump(0.0)
        await settle()

    def _daemon_time(self, vendor_time: float | None) -> float | None:
        """A simulator's due time on the daemon's clock (they differ with a `vendor_clock`)."""
        if vendor_time is None or self.vendor_clock is None:
            return vendor_time
        return self.vendor_clock.daemon(vendor_time)

    async def _pump(self, image_every: float) -> None:
        """Due vendor events and callbacks; image callbacks are batched every `image_every` sim seconds."""
        if self.clock.now() - self._images_at >= image_every:
            self._images_at = self.clock.now()
            self.sim.world.settle_images()
        else:
            self.sim.world.catch_up()
        await self.sim.callbacks.deliver_due()

    def record(self, key: str) -> TaskRecord:
        assert self.daemon is not None
        record = self.daemon.records.get(key)
        assert record is not None, f"no record for {key}"
        return record

    def running_sim_tasks(self, vendor: str | None = None) -> list[SimTask]:
        return [t for t in self.sim.tasks(vendor) if t.running]

    def calls(self, api: str) -> int:
        return sum(1 for e in self.sim.log.entries() if e.api == api)


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """Info and above, rendered as JSON into memory: as in production, without flooding the test output."""
    logs.configure("info", json_logs=True, stream=io.StringIO())
    yield
    structlog.reset_defaults()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_750_000_000.0)


@pytest.fixture
async def harness(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, clock)
    yield h
    if h.daemon is not None:
        await h.stop()
    await h.sim.callbacks.aclose()
