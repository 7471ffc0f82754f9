"""The digest of a spec set: which set a replica acts on, logged and exported (issue 16).

Replicas may hold different spec versions during a roll-out (git-sync updates each pod on its own); only
the leader's set acts. Its digest, on the leader's log lines and in `capctl_spec_set_info`, says which one.
It covers every task's key and spec hash (secrets enter those only as keyed digests), the job names and the
Providers' settings, credentials by their fingerprints (keyed with the state's key, which replicas share): a
replica that still has a rotated key's old value (a pod not yet restarted, a mounted Secret the kubelet has not
updated yet) shows another digest, as its calls would fail with it. Where a Provider is written (its
`file:line`) is not a setting. Limit: a room-selector job's tasks are known only at run time, so a change to
such a job's settings alone shows in its tasks' hashes once it has rooms, not in the digest of a set without them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from reconciler.spec import SpecSet

__all__ = ["provider_settings", "spec_digest"]


def provider_settings(spec: SpecSet) -> list[str]:
    """The set's Providers as settings, credentials by their fingerprints, not where they are written."""
    # A ProviderConfig's repr shows each Secret as its fingerprint, never its value.
    return sorted(repr(dataclasses.replace(p, source="")) for p in spec.providers.values())


def spec_digest(spec: SpecSet) -> str:
    """`sha256:` + 12 hex characters of the set's tasks and their spec hashes, its jobs and Providers."""
    tasks = sorted((key, task.spec_hash) for key, task in spec.tasks.items())
    jobs = sorted("/".join(name) for name in spec.jobs)
    text = json.dumps({"tasks": tasks, "jobs": jobs, "providers": provider_settings(spec)})
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12]
