"""Refresh (`observe_all`): retries, and giving up on a provider whose every status query fails."""

from __future__ import annotations

from collections.abc import Callable

from reconciler.clock import FakeClock
from reconciler.execute import GIVE_UP_AFTER, observe_all
from reconciler.model import ApiFamily, Observed, ObservedState, TaskRecord
from reconciler.providers.base import ErrorKind, VendorError
from reconciler.retry import RetryPolicy
from tests.core.factories import desired, record_for


class FakeProvider:
    """Answers RUNNING, or fails with a retryable error on the calls `failing(n)` picks (n counts from 1)."""

    def __init__(self, failing: Callable[[int], bool] = lambda n: False) -> None:
        self.failing = failing
        self.calls = 0

    async def observe(self, record: TaskRecord) -> Observed:
        self.calls += 1
        if self.failing(self.calls):
            raise VendorError(ErrorKind.RETRYABLE, "InternalError", "the vendor is down", api="GetSnapshotTask")
        return Observed(ObservedState.RUNNING)


def records_of(provider: str, count: int) -> dict[str, TaskRecord]:
    tasks = [desired(f"{provider}-{i}") for i in range(count)]
    return {t.key: record_for(t).evolve(provider=provider) for t in tasks}


async def observe(
    providers: dict[str, FakeProvider], records: dict[str, TaskRecord], attempts: int = 1
) -> dict[str, Observed]:
    def lookup(name: str, family: ApiFamily) -> FakeProvider:
        return providers[name]

    retry = RetryPolicy(base=0.0, max_attempts=attempts)  # no backoff: the fake clock is never moved
    return await observe_all(records, lookup, FakeClock(), retry=retry, concurrency=1)  # type: ignore[arg-type]


async def test_a_provider_that_keeps_failing_is_given_up_on_the_others_are_not() -> None:
    down, up = FakeProvider(lambda n: True), FakeProvider()
    records = {**records_of("down", 20), **records_of("up", 3)}
    observed = await observe({"down": down, "up": up}, records)
    assert down.calls == GIVE_UP_AFTER  # not 20: an outage costs one round of retries
    down_obs = [o for k, o in observed.items() if records[k].provider == "down"]
    assert all(o.state is ObservedState.UNKNOWN for o in down_obs) and len(down_obs) == 20
    skipped = [o.detail for o in down_obs if o.detail and o.detail.startswith("not tried")]
    assert len(skipped) == 20 - GIVE_UP_AFTER
    assert skipped[0] == (
        f"not tried: the last {GIVE_UP_AFTER} status queries to provider down failed "
        "(GetSnapshotTask: InternalError: the vendor is down)"
    )
    assert [o.state for k, o in observed.items() if records[k].provider == "up"] == [ObservedState.RUNNING] * 3


async def test_failures_are_retried_and_a_success_resets_the_count() -> None:
    flaky = FakeProvider(lambda n: n % 3 != 0)  # two failures, then a success, again and again
    observed = await observe({"flaky": flaky}, records_of("flaky", 10), attempts=3)
    assert [o.state for o in observed.values()] == [ObservedState.RUNNING] * 10
    assert flaky.calls == 30
