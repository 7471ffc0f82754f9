"""Prometheus metrics of one daemon, in its own registry (two daemons in one test process never collide).

Counters move where things happen (vendor calls through `CountingProvider`, re-issues in the
controller); gauges that describe the whole (tasks by status, queue depth) are read at scrape time from
callbacks the controller registers, so they can never drift from the state they describe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from reconciler.budget import Priority
from reconciler.model import ApiFamily, DesiredTask, Observed, TaskRecord, TaskStatus
from reconciler.providers.base import ErrorKind, Provider, StartResult, VendorError
from reconciler.providers.family import FAMILIES, VENDORS
from reconciler.state.base import StateError

__all__ = [
    "CONTENT_TYPE",
    "LAST_VENDOR_FAILURE",
    "RECONCILE_ERROR_REASONS",
    "CountingProvider",
    "Metrics",
    "VendorFailure",
    "error_reason",
    "shared_failure",
    "vendor_error_reason",
]

T = TypeVar("T")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The `reason` label of capctl_reconcile_errors_total: a small fixed set, so an alert can name each one.
_VENDOR_ERROR_REASONS: dict[ErrorKind, str] = {
    ErrorKind.AUTH: "vendor-auth",  # a wrong or revoked secret
    ErrorKind.THROTTLED: "vendor-unavailable",
    ErrorKind.RETRYABLE: "vendor-unavailable",  # 5xx, timeout, refused connection
    ErrorKind.TERMINAL: "vendor-rejected",
    ErrorKind.NOT_FOUND: "vendor-rejected",
}


def vendor_error_reason(exc: VendorError) -> str:
    """The `reason` label of a vendor error: one that no answer explained is `vendor-unavailable` whatever its
    kind (a legacy ZEGO start whose answer was lost is terminal only so as not to be retried)."""
    return "vendor-unavailable" if exc.unanswered else _VENDOR_ERROR_REASONS[exc.kind]


def shared_failure(owner: str, exc: VendorError) -> tuple[str, str] | None:
    """The kind of a failed look (an observation, a room listing) that every task of `owner` (a Provider, a
    vendor account) fails alike: a wrong secret, the vendor down or throttling; None for the task's own."""
    reason = vendor_error_reason(exc)
    return (owner, reason) if reason in ("vendor-auth", "vendor-unavailable") else None


RECONCILE_ERROR_REASONS = ("vendor-auth", "vendor-unavailable", "vendor-rejected", "state-write", "state-read", "other")


def error_reason(exc: Exception, failure: VendorFailure, *, state_write: bool) -> str:
    """The `reason` label of one failed reconcile; `state_write`: the store's last failure was a write."""
    if isinstance(exc, StateError):
        return "state-write" if state_write else "state-read"
    if isinstance(exc, VendorError):
        return vendor_error_reason(exc)
    return failure.reason or "other"


class VendorFailure:
    """The reason label of the last vendor error in one reconcile. The executor reports a failed change as
    text only, so `CountingProvider` notes it here; set per reconcile through `LAST_VENDOR_FAILURE`
    (the executor's child tasks copy the context, and with it this same holder)."""

    reason: str | None = None  # `vendor_error_reason`


LAST_VENDOR_FAILURE: ContextVar[VendorFailure | None] = ContextVar("capctl_last_vendor_failure", default=None)


class _StateCollector(Collector):
    """Gauges computed at scrape time from the controller's live view."""

    def __init__(self, statuses: Callable[[], Mapping[str, int] | None], depth: Callable[[], int]) -> None:
        self._statuses = statuses  # None: not leading, no sample (a standby's records are those it read last)
        self._depth = depth

    def collect(self) -> list[GaugeMetricFamily]:
        tasks = GaugeMetricFamily(
            "capctl_tasks",
            "Tasks by status: the state's records, except a task seen stopped but not yet recorded (stopped)"
            " or whose last observation failed (unknown)",
            labels=["status"],
        )
        # Every status, and "unknown": tasks whose last observation failed (the daemon does not know).
        if (counts := self._statuses()) is not None:
            for status in [*(s.value for s in TaskStatus), "unknown"]:
                tasks.add_metric([status], counts.get(status, 0))
        depth = GaugeMetricFamily("capctl_queue_depth", "Task keys ready to be reconciled now")
        depth.add_metric([], self._depth())
        return [tasks, depth]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
        self.vendor_calls = Counter(
            "capctl_vendor_calls", "Vendor API calls, by API and outcome", ["api", "outcome"], registry=self.registry
        )
        self.throttled = Counter(
            "capctl_vendor_throttled", "Vendor calls answered 'too many requests'", ["api"], registry=self.registry
        )
        self.reissues = Counter(
            "capctl_reissues",
            "Tasks re-issued after the vendor stopped them, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.callbacks = Counter(
            "capctl_callbacks",
            "Vendor callbacks received, by vendor and outcome",
            ["vendor", "outcome"],
            registry=self.registry,
        )
        # CapctlCallbacksRejected uses increase(): a series born at 1 shows no increase, so one forged callback
        # (or the first burst of a wrong secret's) went unseen. Each vendor's `rejected` series starts at 0.
        for vendor in VENDORS:
            self.counter(self.callbacks, vendor, "rejected")
        self.reconcile_seconds = Histogram(
            "capctl_reconcile_duration_seconds",
            "Time to reconcile one task key (vendor calls included)",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.prune_blocked = Gauge(
            "capctl_prune_blocked",
            "Tasks removed from the specs that the daemon does not stop (yet): held by --max-prune, within "
            "--prune-grace, or provider gone",
            ["reason"],
            registry=self.registry,
        )
        self.reissue_gap = Histogram(
            "capctl_reissue_gap_seconds",
            "Time from a vendor stop to the start of the task's next run",
            registry=self.registry,
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 14400),
        )
        self.capture_gap = Histogram(
            "capctl_capture_gap_seconds",
            "Time from room activity (a join or stream callback) in a room no run captured to the start of "
            "the task's next run",
            registry=self.registry,
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
        )
        # A spec set that breaks while the daemon runs changes nothing (the last valid set stays in force):
        # these say so where an alert can see it, not only in a log line. They are exported from the first
        # load on (`spec_load`): before it (a daemon waiting for its state store) no load failed, and a 0
        # there fired CapctlSpecSetInvalid ("the specs do not validate") during a database outage.
        self.spec_set_valid = Gauge(
            "capctl_spec_set_valid",
            "1 when the last spec load succeeded, 0 when it failed (the last valid set stays in force)",
            registry=None,
        )
        self.spec_set_errors = Gauge(
            "capctl_spec_set_errors", "Errors found by the last spec load (0 when it succeeded)", registry=None
        )
        self.spec_set_last_load = Gauge(
            "capctl_spec_set_last_load_timestamp_seconds",
            "When the spec set in force was loaded (Unix time; 0 before the first valid load)",
            registry=None,
        )
        self._spec_set_exported = False
        # A daemon that cannot act says so here as well as on /readyz (issue 14).
        self.lease_held = Gauge(
            "capctl_lease_held",
            "1 while this daemon holds the state lock and acts, 0 while it lost it and tries to take it again",
            registry=self.registry,
        )
        # Leader election (issue 16): which replica leads, its term, and how often that changed.
        self.leader = Gauge(
            "capctl_leader", "1 on the replica that leads (acts), 0 on a standby", registry=self.registry
        )
        self.leader_epoch = Gauge(
            "capctl_leader_epoch",
            "The epoch of this replica's last leadership term (0 before it first led)",
            registry=self.registry,
        )
        self.leadership_changes = Counter(
            "capctl_leadership_changes",
            "Times this replica became leader or lost leadership",
            registry=self.registry,
        )
        # Every replica tries the lock every retry period, leader or not: whether that reached the store is
        # the one signal of an outage that standbys (which reconcile nothing) and a deposed leader give.
        self.state_store_reachable = Gauge(
            "capctl_state_store_reachable",
            "1 when this replica's last attempt to take or renew the state lock reached the state store, else 0",
            registry=self.registry,
        )
        # A replica started before its database waits for it (starting.py): each failed attempt counts here.
        self.state_store_connect_failures = Counter(
            "capctl_state_store_connect_failures",
            "Failed attempts to connect to the state store while the daemon starts (it waits: --state-wait)",
            registry=self.registry,
        )
        # A step (NTP, a VM restored from a snapshot) is handled (the daemon's waits keep their length), but
        # what it cannot fix (times written across it, docs/failure-modes.md) makes one worth knowing of.
        self.clock_steps = Counter(
            "capctl_wall_clock_steps",
            "Times the leader saw the host's wall clock step (more than 1 s against the monotonic clock)",
            registry=self.registry,
        )
        self.spec_set_info = Gauge(
            "capctl_spec_set_info",
            "1, labelled with the digest of the spec set in force (the leader's is the set that acts)",
            ["digest"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "capctl_reconcile_errors",
            "Reconciles of one task key that failed, by reason (" + ", ".join(RECONCILE_ERROR_REASONS) + ")",
            ["reason"],
            registry=self.registry,
        )
        for reason in RECONCILE_ERROR_REASONS:  # every series exists from the start: rate() needs a zero
            self.reconcile_errors.labels(reason=reason)

    def watch(self, statuses: Callable[[], Mapping[str, int] | None], depth: Callable[[], int]) -> None:
        """Register the scrape-time gauges (called once by the controller)."""
        self.registry.register(_StateCollector(statuses, depth))

    def spec_load(self, *, errors: int, at: float) -> None:
        """Record the outcome of one spec load: `errors` 0 means it succeeded at `at`."""
        if not self._spec_set_exported:
            self._spec_set_exported = True
            for gauge in (self.spec_set_valid, self.spec_set_errors, self.spec_set_last_load):
                self.registry.register(gauge)
        self.spec_set_valid.set(0 if errors else 1)
        self.spec_set_errors.set(errors)
        if not errors:
            self.spec_set_last_load.set(at)

    def spec_digest(self, digest: str) -> None:
        """The spec set in force is now the one of `digest` (one series at a time)."""
        self.spec_set_info.clear()
        self.spec_set_info.labels(digest=digest).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def counter(self, metric: Counter, *values: str) -> Counter:
        """`metric.labels(*values)`, looked up once: prometheus_client checks the values and takes a lock at
        every `labels` call, and these are counted per vendor call and per callback. Never cleared: only
        gauges (`spec_set_info`) drop series."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def call(self, family: ApiFamily, method: str, outcome: str) -> None:
        api = FAMILIES[family].api(method)  # the family says which vendor API the method calls
        self.counter(self.vendor_calls, api, outcome).inc()
        if outcome == "throttled":
            self.counter(self.throttled, api).inc()


class CountingProvider:
    """A provider that counts each call by API and outcome (`ok` or the VendorError kind), then delegates."""

    def __init__(self, inner: Provider, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.name = inner.name
        self.family = inner.family

    async def _counted(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await call()
        except VendorError as exc:
            self._metrics.call(self.family, method, exc.kind.value)
            if (failure := LAST_VENDOR_FAILURE.get()) is not None:
                failure.reason = vendor_error_reason(exc)
            raise
        self._metrics.call(self.family, method, "ok")
        return result

    async def start(
        self, task: DesiredTask, client_task_id: str | None, *, priority: Priority = Priority.CHANGE
    ) -> StartResult:
        return await self._counted("start", lambda: self._inner.start(task, client_task_id, priority=priority))

    async def update(self, task: DesiredTask, record: TaskRecord) -> None:
        await self._counted("update", lambda: self._inner.update(task, record))

    async def stop(self, record: TaskRecord) -> None:
        await self._counted("stop", lambda: self._inner.stop(record))

    async def observe(self, record: TaskRecord) -> Observed:
        return await self._counted("observe", lambda: self._inner.observe(record))

    async def room_streams(self, room: str) -> int:
        return await self._counted("rooms", lambda: self._inner.room_streams(room))

    async def aclose(self) -> None:
        await self._inner.aclose()
