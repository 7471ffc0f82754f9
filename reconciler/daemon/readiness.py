"""What /readyz answers, from what the daemon already knows: it never touches the store, which may hang.

The store probe (`storehealth.probe_store`, bounded by STORE_PROBE_TIMEOUT) runs before the answer and
leaves its outcome in `StoreHealth`; the lease says the role; the spec set in force says whether it is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.daemon.lease import Lease
from reconciler.daemon.specset import SpecState
from reconciler.daemon.storehealth import StoreHealth

__all__ = ["STORE_PROBE_TIMEOUT", "Readiness", "readiness_of"]

STORE_PROBE_TIMEOUT = 3.5  # seconds /readyz waits for its store probe: past STUCK_AFTER, so a hung store shows


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str


def readiness_of(lease: Lease, store: StoreHealth, specs: SpecState) -> Readiness:
    """Ready = it acts (leader) or can take callbacks into the inbox (standby); the reason says which. A
    leader whose takeover keeps failing is not: it holds the lock, so no replica acts (walk 25B-2)."""
    role = lease.role()
    if lease.outdated is not None:  # it never leads, nor reads the state for a standby's work: to be replaced
        return Readiness(False, f"not ready ({role})")
    if (unreachable := lease.elector.last_error) is not None:
        why = f"the state store cannot be reached: {unreachable}"  # a standby's role says it already
        return Readiness(False, f"not ready ({role})" if role.endswith(why) else f"not ready ({role}): {why}")
    if (failed := lease.takeover_failed) is not None:  # it holds the lock: no replica acts
        return Readiness(False, f"not ready ({role}): the last try failed: {failed}")
    if (problem := store.problem(acting=lease.acting())) is not None:
        return Readiness(False, f"not ready ({role}): {problem}")
    if (said := specs.problem()) is not None:
        ready, why = said
        return Readiness(ready, why.replace("ready", f"ready ({role})", 1) if ready else why)
    return Readiness(True, f"ready ({role})")
