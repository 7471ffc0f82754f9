"""A Provider renamed (or jobs moved to another Provider document of the same vendor account) keeps its tasks.

A vendor names a task by the account and its own ids (Volcengine AppId + RoomId + TaskId, ZEGO the TaskId it
returned), never by the Provider document's name; the content hashes do include that name (so that a job moved
to another account is a replace). So before the diff, each record whose task the specs now declare under
another Provider document of the same home (`ProviderConfig.home`: vendor account and endpoint) is re-homed:
read as if it had been recorded under the new document, its hashes the new name's when its content is the
same. The diff then plans what the content asks (nothing, an update, a replace stopped through the new
document, which reaches the same account), and a plan that would do nothing else moves the record (`Action.MOVE`,
as Terraform's `moved`): no vendor call, no gap in capture. Pure but for `load_rehomed`, which reads the state;
the executor writes the moved records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler import transitions
from reconciler.model import ApiFamily, DesiredTask, ProviderConfig, TaskRecord, TaskStatus
from reconciler.plan import PlanOptions, Selection
from reconciler.spec.expand import hashes_under
from reconciler.state.base import Snapshot, StateStore

__all__ = ["Rehomed", "content_under", "home_of", "load_rehomed", "rehome"]


@dataclass(frozen=True, slots=True)
class Rehomed:
    records: dict[str, TaskRecord]  # every record; the moved ones as if recorded under their new Provider
    moved: dict[str, str]  # key -> the Provider document its record named
    # key -> the record of the submission it takes (`transitions.submitted_before`), as its old key holds it
    submitted_as: dict[str, TaskRecord] = field(default_factory=dict)


def home_of(record: TaskRecord, providers: Mapping[str, ProviderConfig]) -> str | None:
    """Where `record`'s task lives: as recorded, else (a record of an older capctl) its Provider's if declared."""
    if record.home is not None:
        return record.home
    config = providers.get(record.provider)
    return config.home(record.family) if config is not None else None


def rehome(
    desired: Mapping[str, DesiredTask],
    records: dict[str, TaskRecord],
    providers: Mapping[str, ProviderConfig],
    hash_key: bytes | None,
    wanted: Callable[[str, Mapping[str, str]], bool] | None = None,
) -> Rehomed:
    """The records with each one the specs moved to another Provider of the same home re-homed (only those
    `wanted` selects: --target and -l leave the others as recorded). `hash_key`: the state's (`expand`).

    A record of a job removed from the specs (or moved to another vendor API: a replace) whose Provider was
    removed too is re-homed to a declared one of the same home, the first by name: its delete (or the replace's
    stop) stops it through that one. A thumbnail key with no record whose submission ZEGO took under a key no
    longer declared (a ThumbnailJob renamed) gets that submission as its tombstone (`_submitted_before`), and
    `submitted_as` names it."""
    moved: dict[str, str] = {}
    out: dict[str, TaskRecord] | None = None
    for key, record in records.items():
        task = desired.get(key)
        if task is None or task.family is not record.family:
            # Removed, or moved to another vendor API (a replace that stops it first): its Provider gone too (a
            # rename in the same edit), it is stopped through a declared one of its home.
            new = _orphan_rehomed(record, providers)
        elif task.provider == record.provider:
            # Its Provider as declared, a thumbnail's accepted submission may still name one renamed since.
            accepted = _accepted_rehomed(record, task, providers, hash_key)
            if accepted is not None and (wanted is None or wanted(key, task.labels)):
                out = dict(records) if out is None else out
                out[key] = record.evolve(accepted=accepted)  # not a move: the record's Provider is the task's
            continue
        elif task.home and home_of(record, providers) == task.home:
            new = _rehomed(record, task, providers, hash_key)
        else:
            continue  # another account, or one that cannot be told: a replace (it needs the old one to stop)
        if new is None or (wanted is not None and not wanted(key, (task or record).labels)):
            continue
        if out is None:
            out = dict(records)
        out[key] = new
        moved[key] = record.provider
    taken = _submitted_before(desired, records, hash_key, wanted)
    if taken:
        out = {
            **(records if out is None else out),
            **{key: transitions.taken_over(b, desired[key]) for key, b in taken.items()},
        }
    return Rehomed(out if out is not None else records, moved, taken)


def _submitted_before(
    desired: Mapping[str, DesiredTask],
    records: Mapping[str, TaskRecord],
    hash_key: bytes | None,
    wanted: Callable[[str, Mapping[str, str]], bool] | None,
) -> dict[str, TaskRecord]:
    """Each thumbnail key of the specs with no record whose submission ZEGO took under a key no longer
    declared (`transitions.submitted_before`), with that submission's record as its old key holds it."""
    new = [
        task
        for key, task in desired.items()
        if task.family is ApiFamily.ZEGO_THUMBNAIL
        and key not in records
        and (wanted is None or wanted(key, task.labels))
    ]
    if not new:
        return {}
    by_file: dict[str, list[TaskRecord]] = {}
    for record in records.values():
        if transitions.taken_as(record) is not None:
            by_file.setdefault(record.target, []).append(record)
    taken = {}
    for task in new:
        before = transitions.submitted_before(
            task,
            by_file.get(task.target, ()),
            desired,
            content_under(task, hash_key),
        )
        if before is not None:
            taken[task.key] = before
            # taken: another key naming that file is submitted
            by_file[task.target].append(transitions.taken_over(before, task))
    return taken


def content_under(task: DesiredTask, hash_key: bytes | None) -> Callable[[str], str]:
    """`task`'s content hash had its job named another Provider (`transitions.submitted_before`'s `under`)."""
    return lambda provider: hashes_under(task, provider, hash_key)[0]


def _orphan_rehomed(record: TaskRecord, providers: Mapping[str, ProviderConfig]) -> TaskRecord | None:
    if record.status is TaskStatus.REMOVED or record.provider in providers:
        return None  # a tombstone stops nothing
    if (home := home_of(record, providers)) is None:
        return None
    name = next((n for n, config in sorted(providers.items()) if config.home(record.family) == home), None)
    return record.evolve(provider=name) if name is not None else None


def _same_content(
    fields: Mapping[str, Any], task: DesiredTask, provider: str, hash_key: bytes | None
) -> dict[str, Any]:
    """`fields`' hashes (those it has: an accepted submission of an older row may lack one) as `task`'s where
    they are its content under Provider `provider`; the others as they are, differing from the spec's as the
    content does."""
    under = dict(zip(("spec_hash", "fixed_hash"), hashes_under(task, provider, hash_key), strict=True))
    now = {"spec_hash": task.spec_hash, "fixed_hash": task.fixed_hash}
    return {name: now[name] if fields[name] == old else fields[name] for name, old in under.items() if name in fields}


def _accepted_rehomed(
    record: TaskRecord, task: DesiredTask, providers: Mapping[str, ProviderConfig], hash_key: bytes | None
) -> dict[str, Any] | None:
    """A thumbnail's accepted submission (`transitions.reverted`) as if taken under `task`'s Provider, when
    that is another document of the home it was taken in and `task` holds its content: the entry edited back
    to it after its Provider was renamed is that submission, not a new one, in the edit that renames it or in
    a later one. None: nothing to re-home. An accepted submission written before it named its Provider was
    taken under the record's."""
    accepted = record.accepted
    if accepted is None:
        return None
    provider = accepted.get("provider", record.provider)
    home = accepted.get("home") or home_of(record, providers)
    if provider == task.provider or not task.home or home != task.home:
        return None
    hashes = _same_content(accepted, task, provider, hash_key)
    if hashes.get("spec_hash") != task.spec_hash:
        return None  # another content: the provider it was taken under is kept, for a later revert
    return {**accepted, **hashes, "provider": task.provider, "home": task.home}


def _rehomed(
    record: TaskRecord, task: DesiredTask, providers: Mapping[str, ProviderConfig], hash_key: bytes | None
) -> TaskRecord:
    accepted = _accepted_rehomed(record, task, providers, hash_key)
    return record.evolve(
        provider=task.provider,
        home=task.home,
        accepted=record.accepted if accepted is None else accepted,
        **_same_content(
            {"spec_hash": record.spec_hash, "fixed_hash": record.fixed_hash}, task, record.provider, hash_key
        ),
    )


def load_rehomed(
    store: StateStore, desired: Mapping[str, DesiredTask], providers: Mapping[str, ProviderConfig], options: PlanOptions
) -> tuple[Snapshot, Rehomed]:
    """The state, its records re-homed where the specs moved a task to another Provider document of the same
    vendor account (among the tasks `options` select), and what `rehome` moved and took over (for `plan.diff`)."""
    snapshot = store.load()
    wanted = Selection(options, {*desired, *snapshot.records})
    rehomed = rehome(desired, snapshot.records, providers, store.fingerprint_key(), wanted)
    return Snapshot(snapshot.serial, rehomed.records), rehomed
