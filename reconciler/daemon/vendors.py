"""The daemon's vendor clients: one HTTP client, one provider per (Provider document, API family), counted.

Opened at start and closed at stop; a new spec set rebuilds the providers whose document changed
(`ProviderPool.update_configs`). Every provider is wrapped in `CountingProvider`, so each vendor call
is counted by API and outcome in the daemon's metrics, over `GuardedProvider`, so a replica that does not
lead makes no call that changes anything (`fencing.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from reconciler.budget import BudgetRegistry
from reconciler.clock import Clock
from reconciler.daemon.fencing import GuardedProvider, request_guard
from reconciler.daemon.metrics import CountingProvider, Metrics
from reconciler.httpclient import StatelessClient
from reconciler.leader import LeaderElector
from reconciler.model import ApiFamily, ProviderConfig
from reconciler.providers import ProviderPool
from reconciler.providers.base import Provider

__all__ = ["HTTP_TIMEOUT", "VendorClients"]

HTTP_TIMEOUT = 10.0


class VendorClients:
    def __init__(
        self, clock: Clock, metrics: Metrics, transport: httpx.AsyncBaseTransport | None, *, guard: LeaderElector
    ) -> None:
        self.clock = clock
        self._guard = guard  # a mutating call is made only while this replica may act (fencing.py)
        self.metrics = metrics
        self.budgets = BudgetRegistry(clock)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._pool: ProviderPool | None = None
        self._counted: dict[tuple[str, ApiFamily], CountingProvider] = {}

    def open(self) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        self._http = StatelessClient(
            timeout=httpx.Timeout(HTTP_TIMEOUT, connect=5.0),
            limits=limits,
            transport=self._transport,
            event_hooks={"request": [request_guard(self._guard)]},
        )
        self._pool = ProviderPool({}, budgets=self.budgets, clock=self.clock, http=self._http)

    def configure(self, providers: Mapping[str, ProviderConfig]) -> None:
        """A new spec set's Provider documents."""
        assert self._pool is not None, "configure() before open()"
        self._pool.update_configs(providers)
        self._counted.clear()  # rebuilt on use, over the pool's (possibly rebuilt) providers

    def provider(self, name: str, family: ApiFamily) -> Provider:
        counted = self._counted.get((name, family))
        if counted is None:
            assert self._pool is not None
            guarded = GuardedProvider(self._pool(name, family), self._guard)
            counted = self._counted[(name, family)] = CountingProvider(guarded, self.metrics)
        return counted

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        if self._http is not None:
            await self._http.aclose()
