"""The digest of a spec set: which set a replica acts on, logged and exported (issue 16).

Replicas may hold different spec versions during a roll-out (git-sync updates each pod on its own); only
the leader's set acts. Its digest, on the leader's log lines and in `capctl_spec_set_info`, says which one.
It covers every task's key and spec hash (secrets enter those only as keyed digests) with what else of it the
daemon acts on (its restartPolicy, labels: `task_looks`), the job names and the Providers' settings, credentials
by their fingerprints (keyed with the state's key, which replicas share): a replica that still has a rotated key's
old value (a pod not yet restarted, a mounted Secret the kubelet has not updated yet) shows another digest, as its
calls would fail with it. Where a Provider is written (its `file:line`) is not a setting. A room-selector job is
digested by its settings (its task in one stand-in room, and its globs), not by the rooms it has: those follow
room activity, which each replica learned at its own time, so the same files showed other digests on two replicas,
and on one replica from one load to the next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from reconciler.daemon.specset import task_looks
from reconciler.spec import SpecSet
from reconciler.spec.checks import CheckedJob
from reconciler.spec.expand import expand
from reconciler.spec.models import RoomSelector

__all__ = ["provider_settings", "spec_digest"]


def provider_settings(spec: SpecSet) -> list[str]:
    """The set's Providers as settings, credentials by their fingerprints, not where they are written."""
    # A ProviderConfig's repr shows each Secret as its fingerprint, never its value.
    return sorted(repr(dataclasses.replace(p, source="")) for p in spec.providers.values())


_SELECTOR_STAND_IN = "-"  # the room a selector job's settings are hashed in (any valid room id would do)


def spec_digest(spec: SpecSet, fingerprint_key: bytes | None = None) -> str:
    """`sha256:` + 12 hex characters of the set's tasks and their spec hashes, its jobs and Providers; `spec` as
    loaded (its selector jobs' rooms apart), `fingerprint_key` the one its task hashes are keyed with."""
    tasks = sorted((key, task_looks(task)) for key, task in spec.tasks.items())
    jobs = sorted("/".join(name) for name in spec.jobs)
    # Its rooms' globs and maxRooms too: the stand-in's task hash has none of them (walk 53c).
    selectors = sorted(
        (
            f"{c.job.kind}/{c.job.name}",
            [task_looks(t) for t in expand(c, fingerprint_key, [_SELECTOR_STAND_IN])],
            _rooms_of(c),
        )
        for c in spec.selector_jobs
    )
    text = json.dumps({"tasks": tasks, "jobs": jobs, "selectors": selectors, "providers": provider_settings(spec)})
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _rooms_of(checked: CheckedJob) -> str | None:
    rooms = getattr(checked.job.model.spec, "rooms", None)
    return rooms.model_dump_json() if isinstance(rooms, RoomSelector) else None
