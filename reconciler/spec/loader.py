"""`load_spec_set`: files and directories → one validated `SpecSet`, or every error at once.

The pipeline is a single pass per stage: YAML with positions → references resolved → document models →
cross-document checks → expansion to desired tasks. Nothing here talks to a vendor; the only I/O is
reading the spec files (and files named by `{file: ...}` references) and the environment. With
`resolve_secrets=False` (what `capctl validate` does by default) secret references are checked for their
shape only, so a spec set can be validated where its secrets are not available.

`SpecLimits` bounds what a set may cost before it is built: each file is read only if it is a regular file
and at most so large (`files.read_regular`), and the set's bytes, documents and tasks are counted as the
files are read, so four huge files stop at the cap instead of expanding to 1.6 million tasks.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Final, Literal, NoReturn

from reconciler.gcpause import gc_paused
from reconciler.model import DesiredTask, ProviderConfig
from reconciler.secrets import RUN_KEY
from reconciler.spec.checks import CheckedJob, check_all
from reconciler.spec.documents import Loaded, validate_document
from reconciler.spec.errors import ErrorSink, SpecErrors, did_you_mean, quote
from reconciler.spec.expand import expand, provider_config
from reconciler.spec.files import FileRefused, read_regular, size_text
from reconciler.spec.models import JOB_MODELS, JobDocument, RoomSelector, StorageConfig, StorageDocument
from reconciler.spec.refs import resolve_document
from reconciler.spec.selectors import every_room, taken_back
from reconciler.spec.yamlpos import RawDocument, load_documents

__all__ = ["DEFAULT_LIMITS", "SpecLimits", "SpecSet", "file_at_fault", "load_spec_set"]

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class SpecLimits:
    """Caps on one spec set (docs/spec-language.md, "Limits"); above the largest benchmark (bench/README.md:
    10,002 documents, 100,000 tasks). Parameters so that tests can shrink them."""

    file_bytes: int = 4 * 1024 * 1024
    total_bytes: int = 64 * 1024 * 1024
    documents: int = 50_000
    tasks: int = 250_000


DEFAULT_LIMITS: Final = SpecLimits()


def _task_count(document: object) -> int:
    """Tasks a job document will expand to (one per room, one per thumbnail file), read off the raw YAML so
    that the cap is checked before anything is validated or built."""
    spec = document.get("spec") if isinstance(document, dict) else None
    if not isinstance(spec, dict):
        return 0
    return sum(len(v) for v in (spec.get("rooms"), spec.get("files")) if isinstance(v, list))


@dataclass(frozen=True)
class SpecSet:
    """A valid spec set: resolved providers and storages, validated jobs and the tasks they imply."""

    files: tuple[str, ...]
    documents: int
    providers: dict[str, ProviderConfig]
    storages: dict[str, StorageConfig]
    jobs: dict[tuple[str, str], JobDocument]
    tasks: dict[str, DesiredTask]  # named rooms and files only: selector jobs' rooms are known at run time
    selector_jobs: tuple[CheckedJob, ...] = ()  # jobs with `rooms: {match: ...}`, for `reconciler.rooms.select`
    # The files `{file: …}` references named (mounted Secrets): the daemon reloads when one changes, so a
    # rotated key is picked up without a restart.
    referenced_files: tuple[str, ...] = ()

    def warnings(self) -> list[str]:
        """What is valid but unsafe, each with its `file:line:col`: `validate` and `plan` print them, the daemon
        logs them when it loads the set. A room selector matching every room with no `maxRooms` lets anyone who
        can create a room in the vendor app (any of its users, often) start a capture for each: vendor spend."""
        out = []
        for c in self.selector_jobs:
            rooms = getattr(c.job.model.spec, "rooms", None)
            if not isinstance(rooms, RoomSelector):
                continue
            # A glob its own exclude takes back (the two swapped, say): the job never starts a room by it.
            for n, glob in enumerate(rooms.match):
                if (exclude := taken_back(glob, rooms.exclude)) is not None:
                    file, line, col = c.job.at(("spec", "rooms", "match", n))
                    out.append(
                        f"{file}:{line}:{col}: {c.job.kind} '{c.job.name}': spec.rooms.match {quote(glob)} selects no"
                        f" room: exclude {quote(exclude)} takes back every room it matches"
                    )
            if rooms.max_rooms is not None:
                continue
            if (i := every_room(rooms)) is not None:
                file, line, col = c.job.at(("spec", "rooms", "match", i))
                glob = quote(rooms.match[i])
                out.append(
                    f"{file}:{line}:{col}: {c.job.kind} '{c.job.name}': spec.rooms.match {glob} selects "
                    "every room and no maxRooms caps it: anyone who can create a room in the vendor app starts a "
                    "capture there (vendor spend); set spec.rooms.maxRooms, or match a narrower pattern"
                )
        return out

    def summary(self) -> str:
        """One line, e.g. `3 files, 6 documents: 2 providers, 1 storage, 3 jobs → 5 tasks (volcengine 2, zego 3)`."""
        by_vendor = Counter(self.providers[t.provider].type for t in self.tasks.values())
        vendors = ", ".join(f"{v} {n}" for v, n in sorted(by_vendor.items()))
        parts = (_count(len(self.files), "file"), _count(self.documents, "document"))
        kinds = (
            _count(len(self.providers), "provider"),
            _count(len(self.storages), "storage"),
            _count(len(self.jobs), "job"),
        )
        tail = f" ({vendors})" if vendors else ""
        if self.selector_jobs:  # their tasks follow room activity: counted apart
            tail += f" + {_count(len(self.selector_jobs), 'room selector')}"
        return f"{', '.join(parts)}: {', '.join(kinds)} → {_count(len(self.tasks), 'task')}{tail}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _near_name(path: FsPath) -> str:
    """` (did you mean 'specs'?)` for a typed name whose directory holds a near one (`capctl plan spec`)."""
    try:
        names = [p.name for p in (path.parent.iterdir() if path.name else ()) if not p.name.startswith(".")]
    except OSError:
        return ""
    return did_you_mean(path.name, names)


def _dangling(path: str | os.PathLike[str]) -> str | None:
    """`a symbolic link to 'gone.yaml', which does not exist`, or None for anything but a dangling link: said for a
    spec path given (walk 31c: it said `q: no such file or directory (did you mean 'q'?)`, offering the link
    itself) and for one found in a spec directory (walk 35b: `cannot read: No such file or directory`)."""
    try:
        target = os.readlink(path)
    except OSError:  # not a link (or not readable as one)
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):  # missing; a loop (ELOOP) keeps the system's words
            return f"a symbolic link to {quote(target)}, which does not exist"
    return None


def _missing(path: FsPath) -> str:
    """Why a path that does not stat is missing: a dangling link names its target, a typed name a near one."""
    return _dangling(path) or f"no such file or directory{_near_name(path)}"


def _saved_plan(raw: RawDocument) -> str | None:
    """What to do with a plan saved by `plan --out`, given where a spec belongs, or None for anything else.
    `capctl apply plan.json` is how Terraform applies a saved plan: here it was read as a spec, and said only
    `apiVersion: expected 'capctl/v1'` and `missing required field 'kind'` (walk 55b)."""
    value = raw.value
    if not isinstance(value, dict) or "format_version" not in value or "apiVersion" in value or "kind" in value:
        return None
    name = shlex.quote(raw.file)
    return (
        f"a plan saved by `capctl plan --out`, not a spec: apply it with `capctl apply --plan {name}`,"
        f" print it with `capctl show {name}`"
    )


def _spec_files(paths: Sequence[str | os.PathLike[str]], errors: ErrorSink) -> list[str]:
    files: list[str] = []
    for given in paths:
        path = FsPath(given)
        try:  # pathlib's is_dir() and exists() raise what is not "missing": a name too long, a directory not searchable
            mode = path.stat().st_mode
        except OSError as e:
            missing = e.errno in (errno.ENOENT, errno.ENOTDIR)
            said = _missing(path) if missing else (e.strerror or str(e)).lower()
            errors.add((str(path), 0, 0), said)
            continue
        if stat.S_ISDIR(mode):
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, n) for n in names if n.endswith(SPEC_SUFFIXES) and not n.startswith(".")]
            files += sorted(found)
        else:  # anything else (a FIFO, a device) is refused by name when it is read
            files.append(str(path))
    if not files and not errors:
        where = ", ".join(str(p) for p in paths) or "(no paths given)"
        errors.add((where, 0, 0), f"no spec files under {where} (looked for *.yaml and *.yml)")
    return list(dict.fromkeys(files))


def load_spec_set(
    paths: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    resolve_secrets: bool = True,
    limits: SpecLimits = DEFAULT_LIMITS,
    fingerprint_key: bytes | None = None,
) -> SpecSet:
    """Load, validate and expand every spec document under `paths`. Raises `SpecErrors` with all errors.

    With `resolve_secrets=False` secret references are checked for shape only and their fields hold
    `UnreadSecret`s: such a set is for validation, never for calling a vendor. A set over one of `limits`
    is refused as soon as the count passes it. Fingerprints and task hashes are keyed with
    `fingerprint_key`, the state's (`StateStore.fingerprint_key()`), wherever tasks are compared with records.
    Without one (validation, a state that has no key yet) fingerprints use a per-run key and task hashes are
    the bare content hashes (see `expand`).
    """
    with gc_paused():  # tens of thousands of small acyclic values: collector passes would find nothing
        return _load_spec_set(paths, env, resolve_secrets, limits, fingerprint_key)


def _load_spec_set(
    paths: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None,
    resolve_secrets: bool,
    limits: SpecLimits,
    key: bytes | None,
) -> SpecSet:
    environ = os.environ if env is None else env
    errors = ErrorSink()
    files = _spec_files(paths, errors)
    outcomes: list[tuple[RawDocument, Loaded | None]] = []
    documents = total_bytes = task_count = 0
    files_read: list[str] = []
    for file in files:
        with _Reading(file):
            try:
                data = read_regular(file, limits.file_bytes)
            except FileRefused as exc:
                if exc.os_error:
                    errors.add((file, 0, 0), _dangling(file) or f"cannot read: {exc}")
                else:
                    tail = " for one spec file (split it into several files)" if str(exc).startswith("larger") else ""
                    errors.add((file, 0, 0), f"{exc}{tail}")
                continue
            total_bytes += len(data)
            if total_bytes > limits.total_bytes:
                _refuse(errors, (file, 0, 0), f"the spec set is larger than the {size_text(limits.total_bytes)} limit")
            for raw in load_documents(file, data, errors):
                documents += 1
                task_count += _task_count(raw.value)
                if documents > limits.documents:
                    _refuse(
                        errors, raw.where, f"the spec set has more than the limit of {limits.documents:,} documents"
                    )
                if task_count > limits.tasks:
                    _refuse(errors, raw.where, f"the spec set makes more than the limit of {limits.tasks:,} tasks")
                if (saved := _saved_plan(raw)) is not None:
                    errors.add(raw.where, saved)
                    continue
                resolved = resolve_document(
                    raw, environ, errors, read_secrets=resolve_secrets, key=key or RUN_KEY, files_read=files_read
                )
                outcomes.append((raw, validate_document(raw, resolved, errors)))
    if files and not documents and not errors:
        errors.add(
            (files[0] if len(files) == 1 else ", ".join(str(p) for p in paths), 0, 0),
            "no documents (every spec file is empty)",
        )
    checker, checked = check_all(outcomes, errors)
    if errors:
        failed = SpecErrors(errors.errors)
        failed.referenced_files = tuple(dict.fromkeys(files_read))
        raise failed
    tasks: dict[str, DesiredTask] = {}
    for job in checked:
        for task in expand(job, key):
            tasks[task.key] = task
    storages = {}
    for name, doc in checker.by_kind.get("Storage", {}).items():
        assert isinstance(doc.model, StorageDocument)
        storages[name] = doc.model.spec
    jobs: dict[tuple[str, str], JobDocument] = {}
    selector_jobs = tuple(c for c in checked if isinstance(getattr(c.job.model.spec, "rooms", None), RoomSelector))
    for c in checked:
        assert isinstance(c.job.model, JOB_MODELS)
        jobs[(c.job.kind, c.job.name)] = c.job.model
    return SpecSet(
        files=tuple(files),
        documents=documents,
        providers={name: provider_config(doc) for name, doc in checker.by_kind.get("Provider", {}).items()},
        storages=storages,
        jobs=jobs,
        tasks=tasks,
        selector_jobs=selector_jobs,
        referenced_files=tuple(dict.fromkeys(files_read)),
    )


_READING: Final = "capctl was reading the spec file "


class _Reading:
    """Tags an exception of capctl's own (a bug, not a spec's error) with the file read (`file_at_fault`)."""

    def __init__(self, file: str) -> None:
        self.file = file

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if isinstance(exc, Exception) and not isinstance(exc, SpecErrors):
            exc.add_note(f"{_READING}{self.file}")
        return False


def file_at_fault(exc: BaseException) -> str | None:
    """The spec file capctl was reading when `exc`, a fault of its own loader, was raised; None when it was not
    reading one (a check across files)."""
    notes: list[str] = getattr(exc, "__notes__", [])
    return next((note.removeprefix(_READING) for note in notes if note.startswith(_READING)), None)


def _refuse(errors: ErrorSink, where: tuple[str, int, int], message: str) -> NoReturn:
    """Stop at a set-wide cap: what was found so far, and where the cap was passed (nothing more is read)."""
    errors.add(where, f"{message} (reached here; see docs/spec-language.md, Limits)")
    raise SpecErrors(errors.errors)
