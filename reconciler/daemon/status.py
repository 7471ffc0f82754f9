"""The daemon's side of the status page (`GET /`, `GET /api/v1/status`): what it knows, as a snapshot.

`reconciler.status` builds and renders pages from `StatusInputs`; this module fills them from the daemon:
its record cache (with the run history it keeps; the callback router tells it about rooms), when each
task is next observed (its `KeyRuntime`), the leader election (lease.py), the spec set in force and the
log's recent events.
A page is built on the daemon's loop (where those are changed), and rendered on the HTTP thread.
A standby's cache holds the state as the replica last read it (at start, or when it last led): its page
reads the records and the timeline history afresh first (in a thread, the history made ready there too: at
100,000 tasks that is seconds, walk 31d), so it shows what the leader recorded, as the leader's page does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from reconciler import logs
from reconciler.daemon.readiness import STORE_PROBE_TIMEOUT
from reconciler.model import TaskRecord
from reconciler.rooms import accounts_of
from reconciler.state.base import StateError
from reconciler.status import Replica, StatusInputs, StatusQuery, StatusSnapshot, build_snapshot
from reconciler.status.history import Restored
from reconciler.status.routes import SnapshotProvider

if TYPE_CHECKING:
    from reconciler.daemon.controller import Daemon


__all__ = ["snapshot_provider"]

# The records as the store holds them, and the history made ready with them off the loop (installed on it).
Read = tuple[Mapping[str, TaskRecord], Restored | None]


def snapshot_provider(daemon: Daemon) -> SnapshotProvider:
    def build(query: StatusQuery, read: Read | None, unread: str | None) -> StatusSnapshot:
        spec, specs = daemon.spec, daemon.specs
        acting = daemon.lease.acting()
        if read is not None and not acting:  # (a term that began meanwhile read the state itself)
            daemon.records.adopt(*read)
        role = daemon.lease.role()
        stale = ""
        if unread:  # the role may quote the store's error already
            stale = "; tasks as this replica last read them" + (
                "" if unread in role else f" (cannot read them: {unread})"
            )
        # A leader that cannot write its state makes no change (each waits for its intent to be recorded): say why.
        problem = daemon.store_health.problem() if acting else None
        replica = Replica(
            role="leader" if acting else "standby",
            detail=f"holds the state lease and acts (epoch {daemon.lease.elector.epoch})"
            + (f"; but {problem}: changes wait until it can" if problem else "")
            if acting
            else _not_acting(role) + stale,
            spec_digest=daemon.spec_digest,  # the one `spec set loaded` logs and capctl_spec_set_info exports
            spec_loaded_at=specs.loaded_at,
            spec_summary=spec.summary() if spec is not None else None,
            spec_error=specs.error_listing(),
            spec_error_since=specs.invalid_since,
            prune_held=daemon.pruning.held(),
            max_prune=daemon.pruning.max_prune,
            left_out=daemon.rooms.jobs.rooms_left_out() if acting else (),  # a standby selects no room
            room_selectors=len(spec.selector_jobs) if spec is not None else 0,
        )
        inputs = StatusInputs(
            records=daemon.records.values(),
            replica=replica,
            history=daemon.records.history,
            # When this replica acts next, and what its looks found: a leader's; a deposed one's memory of them
            # went stale (its page said `now` of every running task, and `status unknown`, for good), and a
            # standby's page says what the state recorded, as one that never led does.
            next_observation=lambda key: daemon.runtimes.get(key).next_observe if acting else None,
            next_retry=lambda key: (
                None if not acting or (wait := daemon.queue.retry_in(key)) is None else daemon.clock.now() + wait
            ),
            events=logs.recent_events(),
            look_errors=daemon.runtimes.look_errors() if acting else {},
            unknown_since=daemon.runtimes.unknown_since() if acting else {},
            accounts=accounts_of(spec.providers) if spec is not None else {},
            prune_grace=daemon.pruning.grace,
            prunes=daemon.pruning.prune,
        )
        return build_snapshot(inputs, query, daemon.clock.now())

    # The read under way, which views meanwhile share: each read the whole state in a thread of its own (seconds
    # at 100,000 tasks, one at a time on the store's connection), and one that outlived its view stayed (walk 32a).
    reading: list[asyncio.Future[Read]] = []

    def read_shared() -> asyncio.Future[Read]:
        if not reading or reading[0].done():
            reading[:] = [asyncio.ensure_future(asyncio.to_thread(daemon.records.read_restored))]
        return reading[0]

    async def provide(query: StatusQuery) -> StatusSnapshot:
        read: Read | None = None
        unread: str | None = None
        lease = daemon.lease
        if lease.taking_over:  # its term's read replaces the cache at once: one more would only queue with it
            unread = lease.role()
        elif not lease.acting():  # bounded as /readyz's probe: a hung store must not hang the page
            try:
                read = await asyncio.wait_for(asyncio.shield(read_shared()), STORE_PROBE_TIMEOUT)
            except StateError as exc:
                unread = str(exc)
            except TimeoutError:
                unread = f"no answer within {STORE_PROBE_TIMEOUT:g} s"
        return await daemon.on_daemon_loop(build, query, read, unread)

    return provide


def _not_acting(role: str) -> str:
    """`standby: the leader is …` as the words after the page's `standby` badge (which says it once)."""
    why = role.removeprefix("standby").removeprefix(": ")
    return f"does not act: {why}" if why else "does not act"
