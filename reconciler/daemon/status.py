"""The daemon's side of the status page (`GET /`, `GET /api/v1/status`): what it knows, as a snapshot.

`reconciler.status` builds and renders pages from `StatusInputs`; this module fills them from the daemon:
its record cache (with the run history it keeps; the callback router tells it about rooms), when each
task is next observed (its `KeyRuntime`), the leader election (lease.py), the spec set in force and the
log's recent events.
A page is built on the daemon's loop (where those are changed), and rendered on the HTTP thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler import logs
from reconciler.status import Replica, StatusInputs, StatusQuery, StatusSnapshot, build_snapshot
from reconciler.status.routes import SnapshotProvider

if TYPE_CHECKING:
    from reconciler.daemon.controller import Daemon


__all__ = ["snapshot_provider"]


def snapshot_provider(daemon: Daemon) -> SnapshotProvider:
    def build(query: StatusQuery) -> StatusSnapshot:
        spec, specs = daemon.spec, daemon.specs
        acting = daemon.lease.acting()
        replica = Replica(
            role="leader" if acting else "standby",
            detail=f"holds the state lease and acts (epoch {daemon.lease.elector.epoch})"
            if acting
            else f"does not act: {daemon.lease.role()}",
            spec_digest=daemon.spec_digest,  # the one `spec set loaded` logs and capctl_spec_set_info exports
            spec_loaded_at=specs.loaded_at,
            spec_summary=spec.summary() if spec is not None else None,
            spec_error=specs.error,
            spec_error_since=specs.invalid_since,
        )
        inputs = StatusInputs(
            records=daemon.records.values(),
            replica=replica,
            history=daemon.records.history,
            next_observation=lambda key: daemon.runtimes.get(key).next_observe,
            next_retry=lambda key: None if (wait := daemon.queue.retry_in(key)) is None else daemon.clock.now() + wait,
            events=logs.recent_events(),
            unknown={key for key, status in daemon.runtimes.unconfirmed().items() if status == "unknown"},
        )
        return build_snapshot(inputs, query, daemon.clock.now())

    async def provide(query: StatusQuery) -> StatusSnapshot:
        return await daemon.on_daemon_loop(build, query)

    return provide
