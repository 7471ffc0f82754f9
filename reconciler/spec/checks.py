"""Checks that need more than one document: references between documents, what a vendor accepts.

Every job is checked against the provider and storage it names (kinds, vendor, storage types, the
vendor's documented ranges), and rooms are checked across jobs. The result of a job that passes is a
`CheckedJob` with the vendor defaults filled in, ready for `expand.py`. All problems are collected.

A spec set is fixed in one pass, not in rounds: a job whose provider or storage is invalid or missing
still gets every check that does not depend on it (duplicate rooms, room claims, and the vendor's ranges
when an invalid provider's `spec.type` can still be read); only the checks that need the missing document
are skipped, since its own error already says what to fix. Likewise inside one document: a document
modelled partially (`Loaded.broken`: `spec` fields that failed validation, already reported) gets the
checks of its other fields, none that reads a broken one, and is not used by other documents' checks.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from reconciler.jsonlimits import MAX_INT_DIGITS
from reconciler.providers.family import VENDORS
from reconciler.spec.documents import Loaded
from reconciler.spec.errors import ErrorSink, did_you_mean, dotted, quote
from reconciler.spec.fields import VOLC_ID_RE, RefStr, room_id_problem, volc_task_id
from reconciler.spec.models import (
    ProviderDocument,
    RecordingJobSpec,
    RoomSelector,
    SnapshotJobSpec,
    StorageDocument,
    StreamSelector,
    ThumbnailFile,
    ThumbnailJobSpec,
    VolcengineProvider,
    ZegoProvider,
)
from reconciler.spec.selectors import covers, describe, volc_pattern_problem
from reconciler.spec.yamlpos import Path, RawDocument

__all__ = ["STORAGE_FIELDS", "ZEGO_LEGACY_STORAGE", "ZEGO_RECORDING_APIS", "CheckedJob", "check_all"]

VENDOR_STORAGE: Final = {
    "volcengine": ("tos", "vod", "veimagex", "s3", "oss", "obs", "cos", "kodo"),
    "zego": ("s3", "oss", "cos", "kodo", "aliyun-vod", "tencent-vod", "obs", "gcs", "eos", "s3-compatible"),
}
_KEYS: Final = ("bucket", "accessKey", "secretKey")
# A document's start and its kind, as read in text a YAML error left unread (`Checker._unread`).
_DOCUMENT_START: Final = re.compile(r"(?m)^---")
_KIND: Final = re.compile(r"(?<![\w.-])kind\s*:\s*(['\"]?)(\w+)\1")
_INTEGER: Final = re.compile(rf"-?[0-9]{{1,{MAX_INT_DIGITS}}}")  # longer: not converted (int() refused 5,000)
# Storage type → (required fields, other fields that apply). `region` is checked per vendor.
STORAGE_FIELDS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "tos": (("bucket", "accountId"), ("region",)),
    "vod": (("accountId", "space"), ("region", "storageClass", "autoSetFileExtension")),
    "veimagex": (("accountId", "serviceId"), ("region",)),
    **{t: (_KEYS, ("region",)) for t in ("s3", "oss", "obs", "cos", "kodo", "gcs", "eos")},
    "s3-compatible": ((*_KEYS, "endpoint"), ("region",)),
    "aliyun-vod": (("region", "accessKey", "secretKey", "title", "storageLocation"), ()),
    "tencent-vod": (("region", "accessKey", "secretKey"), ("subAppId",)),
}
# Seed 003: storage_provider 1..4 and 7; ZEGO's StartRecord page and StorageParams FAQ add 9 (eos) and 10
# (s3-compatible), not 8 (gcs).
_ZEGO_REGION_REQUIRED: Final = frozenset({"s3", "oss", "cos", "kodo", "obs", "eos", "s3-compatible"})
# Seed 003's storage_provider 1..7; 8 (gcs) and 9 (eos) came with the current API (vendor-apis.md).
ZEGO_LEGACY_STORAGE: Final = ("s3", "oss", "cos", "kodo", "aliyun-vod", "tencent-vod", "obs")
ZEGO_VOD: Final = frozenset({"aliyun-vod", "tencent-vod"})
VOLC_MAX_STREAMS: Final = 17
UINT32_MAX: Final = 4_294_967_295
# Seed 003 (the legacy page) lets max_idle_time reach 4294967295; ZEGO's current StartRecord page caps
# MaxIdleTime at 86400 (docs/providers-zego.md, "What each job sends").
ZEGO_CURRENT_MAX_IDLE: Final = 86400
# SnapshotJob field → vendor → (default, low, high, the vendor's name for it).
SNAPSHOT_RANGES: Final[dict[str, dict[str, tuple[int, int, int, str]]]] = {
    "interval": {"volcengine": (2, 1, 600, "volcengine Interval"), "zego": (10, 5, 3600, "zego snapshot_interval")},
    "idleTimeout": {
        "volcengine": (180, 1, 86400, "volcengine MaxIdleTime"),
        "zego": (30, 5, UINT32_MAX, "zego max_idle_time"),
    },
}


@dataclass(frozen=True, slots=True)
class CheckedJob:
    """A job that passed every check, with its provider and storage and the vendor defaults applied."""

    job: Loaded
    provider: Loaded
    storage: Loaded | None
    interval: int | None = None  # snapshot jobs
    idle_timeout: int | None = None
    volc_region: int = 0  # the storage region as the volcengine region table number


# The budget names of each ZEGO cloud recording API (docs/providers-zego.md, "Rate limits").
ZEGO_RECORDING_APIS: Final = {
    "current": ("StartRecord", "StopRecord", "DescribeRecordStatus"),
    "legacy": ("start", "stop", "query", "access_token"),
}


def _fields_set(model: Any) -> dict[str, Any]:
    """camelCase name → value of every field the user set (or that is not None)."""
    return {
        f.alias or n: getattr(model, n) for n, f in type(model).model_fields.items() if getattr(model, n) is not None
    }


def _identity(value: Any) -> tuple[str, str] | None:
    """(kind, name) of a raw document, when both can be read."""
    if not isinstance(value, dict) or not isinstance(value.get("metadata"), dict):
        return None
    kind, name = value.get("kind"), value["metadata"].get("name")
    return (kind, name) if isinstance(kind, str) and isinstance(name, str) else None


_Scope = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Covered:
    """A room that a job names (its `rooms[index]`) and a selector job covers, in one scope (`_Overlaps`)."""

    scope: _Scope
    room: str
    named_by: Loaded
    provider: str  # named_by's
    index: int
    selected_by: Loaded
    on: str  # selected_by's provider
    selector: RoomSelector


class _Overlaps:
    """Which jobs name or cover which rooms within scopes that two jobs must not share: a room of one kind on
    one provider, or (Volcengine) a room with one TaskId in one app, one vendor task. A room named twice is
    known at once (`name`); one that a selector covers too once every job is read (`covered`)."""

    def __init__(self) -> None:
        self._named: dict[tuple[_Scope, str], tuple[Loaded, str, int]] = {}  # → job, its provider, index in rooms
        self._selectors: dict[_Scope, list[tuple[Loaded, str, RoomSelector]]] = defaultdict(list)

    def name(self, scope: _Scope, room: str, job: Loaded, provider: str, i: int) -> tuple[Loaded, str] | None:
        """`job` names `room` (its `rooms[i]`) in `scope`: the job that named it first and its provider, if
        another did."""
        owner, on, _ = self._named.setdefault((scope, room), (job, provider, i))
        return None if owner is job else (owner, on)

    def cover(self, scope: _Scope, job: Loaded, provider: str, selector: RoomSelector) -> None:
        self._selectors[scope].append((job, provider, selector))

    def covered(self) -> Iterator[_Covered]:
        """Each named room that a selector of its scope covers."""
        for (scope, room), (owner, provider, i) in self._named.items():
            for job, on, selector in self._selectors.get(scope, ()):
                if covers(selector, room):
                    yield _Covered(scope, room, owner, provider, i, job, on, selector)


class Checker:
    def __init__(self, outcomes: list[tuple[RawDocument, Loaded | None]], errors: ErrorSink) -> None:
        self.errors = errors
        self.by_kind: dict[str, dict[str, Loaded]] = defaultdict(dict)
        # Documents that failed validation (already reported), by (kind, name): references to them are not
        # reported again, and what can still be read of them (a provider's type) is used.
        self.invalid: dict[tuple[str, str], RawDocument] = {}
        first: dict[tuple[str, str], RawDocument] = {}
        # Valid documents whose name was taken already: reported, and still checked (one pass, not rounds).
        self.duplicates: list[Loaded] = []
        for raw, doc in outcomes:
            identity = (doc.kind, doc.name) if doc is not None else _identity(raw.value)
            if identity is None:
                continue
            if identity in first:  # a duplicate is reported even when either document is invalid
                kind, name = identity
                self.errors.add(
                    raw.at(("metadata", "name")),
                    f"duplicate {kind} name '{name}' (first defined at {first[identity].source})",
                )
                if doc is not None:
                    self.duplicates.append(doc)
                continue
            first[identity] = raw
            if doc is not None and not doc.broken:
                self.by_kind[doc.kind][doc.name] = doc
            else:
                self.invalid[identity] = raw
        self._claims = _Overlaps()  # scope (kind, provider): a room belongs to one job of a kind per provider
        self._volc_tasks = _Overlaps()  # scope (AppId, TaskId): a room there is one Volcengine task
        # Only Provider documents that share their appId with another can share a Volcengine task (on one
        # provider the room claim says so): a set of 10k rooms on distinct apps skips that registry.
        apps = Counter(
            d.model.spec.app_id
            for d in self.by_kind["Provider"].values()
            if isinstance(d.model, ProviderDocument) and isinstance(d.model.spec, VolcengineProvider)
        )
        self._shared_apps = {app for app, providers in apps.items() if providers > 1}

    def fail(self, doc: Loaded, path: Path, message: str) -> None:
        self.errors.add(doc.at(path), f"{dotted(path)}: {message}")

    # --- single documents ---------------------------------------------------------------------

    def check_provider(self, doc: Loaded) -> None:
        assert isinstance(doc.model, ProviderDocument)
        spec = doc.model.spec
        apis = tuple(VENDORS[spec.type].rate_limits)  # the names the providers budget by
        # A bad value empties the modelled map: its keys are read from the document, so an unknown or
        # other-API key is reported in the same run as the value (walk 30b-3, issue 13 point 3).
        raw = doc.raw.value.get("spec", {}).get("rateLimits") if "rateLimits" in doc.broken else spec.rate_limits
        mapping = isinstance(raw, dict) and not {"env", "file"} & raw.keys()  # `{env: X}` is a reference
        limited = [api for api in raw if isinstance(api, str)] if mapping else []
        if not isinstance(spec, VolcengineProvider) and "cloudrecordApi" not in doc.broken:
            # Hinted and listed: the declared API's calls only (the other's are an error below; walk 30b-3).
            others = {n for a, names in ZEGO_RECORDING_APIS.items() if a != spec.cloudrecord_api for n in names}
            usable = tuple(a for a in apis if a not in others)
        else:
            usable = apis
        for api in limited:
            if api not in apis:
                self.errors.add(
                    doc.raw.key_at(("spec", "rateLimits", api)),
                    f"spec.rateLimits: unknown API {quote(api)} for {spec.type}{did_you_mean(api, usable)}; "
                    f"known: {', '.join(usable)}",
                )
        if isinstance(spec, VolcengineProvider):
            for name, value in (("appId", spec.app_id), ("businessId", spec.business_id)):
                if value is not None and not VOLC_ID_RE.match(value):
                    self.fail(doc, ("spec", name), "must match [a-zA-Z0-9_@-.]{1,128} (volcengine Id rule)")
        elif "cloudrecordApi" not in doc.broken:
            if spec.access_token is not None and spec.cloudrecord_api != "legacy":
                self.fail(doc, ("spec", "accessToken"), "only used with cloudrecordApi: legacy")
            for api in limited:
                other = next((a for a, names in ZEGO_RECORDING_APIS.items() if api in names), spec.cloudrecord_api)
                if other != spec.cloudrecord_api:  # it would limit nothing: no call of that API is made
                    self.errors.add(
                        doc.raw.key_at(("spec", "rateLimits", api)),
                        f"spec.rateLimits: {quote(api)} is a call of the {other} cloud recording API, "
                        f"only used with cloudrecordApi: {other}",
                    )

    def check_storage(self, doc: Loaded) -> None:
        assert isinstance(doc.model, StorageDocument)
        spec = doc.model.spec
        required, optional = STORAGE_FIELDS[spec.type]
        present = _fields_set(spec)
        for name in required:
            if name not in present and name not in doc.broken:
                self.errors.add(doc.raw.key_at(("spec",)), f"spec: storage type {spec.type} needs '{name}'")
        for name in present:
            if name not in (*required, *optional, "type"):
                self.errors.add(
                    doc.raw.key_at(("spec", name)), f"spec.{name}: does not apply to storage type {spec.type}"
                )

    # --- references ---------------------------------------------------------------------------

    def _vendor(self, name: str) -> str | None:
        """The vendor of provider `name`: from its model, or from an invalid document's readable `spec.type`."""
        provider = self.by_kind.get("Provider", {}).get(name)
        if provider is not None:
            assert isinstance(provider.model, ProviderDocument)
            return provider.model.spec.type
        raw = self.invalid.get(("Provider", name))
        spec = raw.value.get("spec") if raw is not None else None
        vendor = spec.get("type") if isinstance(spec, dict) else None
        # an unresolved reference (`type: {env: UNSET}`) stays a mapping: no vendor, not a crash (walk 48c)
        return vendor if isinstance(vendor, str) and vendor in VENDOR_STORAGE else None

    def _lookup(self, job: Loaded, field: str, kind: str, name: str) -> Loaded | None:
        found = self.by_kind.get(kind, {}).get(name)
        if found is not None or (kind, name) in self.invalid:
            return found
        others = [d for k, docs in self.by_kind.items() if k != kind for d in docs.values() if d.name == name]
        if not others and self._unread(kind, name):
            return None  # written where a YAML error stopped the reading: that error is the one to fix (walk 30c)
        if others:
            self.fail(job, ("spec", field), f"'{name}' is {others[0].ref()}, not a {kind}")
        else:
            hint = did_you_mean(name, self.by_kind.get(kind, {}))
            self.fail(job, ("spec", field), f"no {kind} named '{name}'{hint}")
        return None

    def _unread(self, kind: str, name: str) -> bool:
        """A document named `name` (`name: NAME`, quoted or not) is in text a YAML error left unread
        (`ErrorSink.unread`), and it is of `kind` or of no kind one can read there; a job's `provider: NAME`
        there defines nothing, nor does a Storage named as a job's provider (that error stays: walk 31a-2)."""
        named = re.compile(rf"(?<![\w.-])name\s*:\s*(['\"]?){re.escape(name)}\1(?![\w.-])")
        docs = (doc for text in self.errors.unread for doc in _DOCUMENT_START.split(text) if named.search(doc))
        return any((found := _KIND.search(doc)) is None or found[2] == kind for doc in docs)

    def _storage_of(self, storage: Loaded | None, name: str) -> tuple[str, object, str, bool] | None:
        """A job's Storage `name` as `_storage_fits` weighs it: its type, region, `ref()` and whether the region is
        known; of an invalid document (its errors reported) its readable type alone (walk 55a). None: not known."""
        if storage is not None:
            assert isinstance(storage.model, StorageDocument)
            return storage.model.spec.type, storage.model.spec.region, storage.ref(), True
        raw = self.invalid.get(("Storage", name))
        spec = raw.value.get("spec") if raw is not None else None
        kind = spec.get("type") if isinstance(spec, dict) else None
        if raw is None or not isinstance(kind, str) or kind not in STORAGE_FIELDS:  # every type's
            return None
        return kind, None, f"Storage '{name}' ({raw.source})", False

    def _storage_fits(
        self, job: Loaded, vendor: str, api: str | None, provider: str, storage: tuple[str, object, str, bool]
    ) -> int:
        """Check that the provider (of `vendor`, on zego's `api`: None when not known; `provider` its `ref()`) can
        write to the storage (`_storage_of`); returns the volcengine region number."""
        kind, region, where, region_known = storage
        both = f"{where} with {provider}"
        if kind not in VENDOR_STORAGE[vendor]:
            self.fail(
                job,
                ("spec", "storage"),
                f"{vendor} cannot write to storage type {kind} "
                f"({both}); it supports {', '.join(VENDOR_STORAGE[vendor])}",
            )
            return 0
        if api == "legacy" and kind == "s3-compatible":
            self.fail(
                job,
                ("spec", "storage"),
                f"the legacy ZEGO recording API has no storage endpoint, so "
                f"s3-compatible storage is not possible ({both})",
            )
        elif api == "legacy" and kind not in ZEGO_LEGACY_STORAGE:
            self.fail(
                job,
                ("spec", "storage"),
                f"the legacy ZEGO recording API writes to storage_provider 1..7 ({', '.join(ZEGO_LEGACY_STORAGE)}) "
                f"only, not {kind}: use cloudrecordApi: current ({both})",
            )
        if not region_known:  # an invalid Storage's: reported on its own
            return 0
        if vendor == "volcengine":
            # A reference's text: its number is checked as a literal one. ASCII digits only: "²" passes
            # str.isdigit() and int() refuses it (a traceback from validate and plan).
            if isinstance(region, RefStr) and _INTEGER.fullmatch(region):
                region = int(region)
            if region is None or (isinstance(region, int) and region >= 0):
                return region or 0
            if isinstance(region, int):  # the vendor refuses it (its Region fields are table numbers from 0)
                self.fail(
                    job,
                    ("spec", "storage"),
                    f"volcengine needs a storage region ≥ 0 (its region table), got {region} ({both})",
                )
                return 0
            self.fail(
                job,
                ("spec", "storage"),
                f"volcengine needs an integer storage region (its region table), got {quote(region)} ({both})",
            )
            return 0
        if isinstance(region, int):
            self.fail(
                job,
                ("spec", "storage"),
                f"zego needs a storage region name such as 'oss-cn-shanghai', got the integer {region} ({both})",
            )
        elif region is None and kind in _ZEGO_REGION_REQUIRED:
            self.fail(job, ("spec", "storage"), f"zego needs a region for storage type {kind} ({both})")
        return 0

    def _claim(self, job: Loaded, provider: str, targets: Iterable[tuple[int, str]], field: str, what: str) -> None:
        first: dict[str, int] = {}
        for i, target in targets:
            if target in first:
                self.fail(
                    job,
                    ("spec", *field.split("."), i),
                    f"{what} {quote(target)} is listed twice (first at {field}[{first[target]}])",
                )
                continue
            first[target] = i
            if what != "room":
                continue
            if (clash := self._claims.name((job.kind, provider), target, job, provider, i)) is not None:
                owner, _ = clash
                self.fail(
                    job,
                    ("spec", field, i),
                    f"room {quote(target)} on provider '{provider}' is already "
                    f"captured by {owner.ref()}; a room can belong to one {job.kind} per provider",
                )

    def _selector(self, job: Loaded, provider: str, selector: RoomSelector, vendor: str | None) -> None:
        """A selector's own checks; whether it covers another job's named room is checked once all are read."""
        for field in ("match", "exclude"):
            self._claim(job, provider, enumerate(getattr(selector, field)), f"rooms.{field}", "pattern")
            for i, pattern in enumerate(getattr(selector, field)):
                problem = volc_pattern_problem(pattern) if vendor == "volcengine" else None
                if problem:
                    self.fail(job, ("spec", "rooms", field, i), f"pattern {quote(pattern)} {problem}")
        self._claims.cover((job.kind, provider), job, provider, selector)

    def check_selector_claims(self) -> None:
        """A named room that a selector job of the same kind and provider also covers is claimed twice.

        Decided here, offline, wherever it can be: a named room is a fixed id. Two selectors that overlap
        cannot be told apart from their globs alone; at run time the first job by name takes such a room."""
        for c in self._claims.covered():
            self.fail(
                c.named_by,
                ("spec", "rooms", c.index),
                f"room {quote(c.room)} on provider '{c.provider}' is also covered by the selector of "
                f"{c.selected_by.ref()} (rooms: {describe(c.selector)}); a room can belong to one "
                f"{c.named_by.kind} per provider: exclude it there or drop it here",
            )
        for c in self._volc_tasks.covered():
            if c.on != c.provider:  # on one provider, the room claim above says so
                whose = f"is also the Volcengine task of the selector of {c.selected_by.ref()}"
                whose += f" (rooms: {describe(c.selector)})"
                self._shared_volc_task(c.named_by, c.index, whose, c.on, c.scope)

    # --- jobs ---------------------------------------------------------------------------------

    def check_job(self, job: Loaded) -> CheckedJob | None:
        """The checked job, or None after reporting every problem that can be found without what is missing."""
        spec, broken = job.model.spec, job.broken
        assert isinstance(spec, SnapshotJobSpec | RecordingJobSpec | ThumbnailJobSpec)
        before = len(self.errors.errors)
        named = "provider" not in broken  # else its placeholder: no provider, no vendor, no room of it
        provider = self._lookup(job, "provider", "Provider", spec.provider) if named else None
        storage_name = getattr(spec, "storage", None) if "storage" not in broken else None
        storage = self._lookup(job, "storage", "Storage", storage_name) if storage_name else None
        vendor = self._vendor(spec.provider) if named else None  # None: unknown, its rules cannot be checked
        region = 0
        if isinstance(spec, RecordingJobSpec | ThumbnailJobSpec) and vendor == "volcengine":
            where = provider.raw.source if provider is not None else self.invalid[("Provider", spec.provider)].source
            self.fail(
                job,
                ("spec", "provider"),
                f"a {job.kind} needs a zego provider; Provider '{spec.provider}' ({where}) is volcengine",
            )
        elif vendor is not None and storage_name and (fit := self._storage_of(storage, storage_name)) is not None:
            # An invalid Provider or Storage too, by what its document says (walk 55a): fixing it brought these up.
            api = self._zego_api(spec.provider) if vendor == "zego" else None
            region = self._storage_fits(job, vendor, api[0] if api else None, self._provider_ref(spec.provider), fit)
        interval: int | None = None
        idle: int | None = None
        targets = named and not {"rooms", "files"} & broken
        if isinstance(spec, ThumbnailJobSpec):
            if named:  # with a broken entry, the entries valid on their own (`Loaded.entries`)
                files = job.entries.get("files", ()) if "files" in broken else tuple(enumerate(spec.files))
                self._thumbnails(job, spec.provider, [(i, f) for i, f in files if isinstance(f, ThumbnailFile)])
        else:
            rooms = spec.rooms if targets else None
            if isinstance(rooms, RoomSelector):
                self._selector(job, spec.provider, rooms, vendor)
            elif rooms is not None:
                self._claim(job, spec.provider, enumerate(rooms), "rooms", "room")
                if vendor == "zego":  # (volcengine's Id rule: `_snapshot`) the ids its callbacks are answered for
                    for i, room in enumerate(rooms):
                        if problem := room_id_problem(room, vendor):
                            self.fail(job, ("spec", "rooms", i), f"room {quote(room)} {problem}")
            if isinstance(spec, SnapshotJobSpec):
                interval, idle = self._snapshot(job, spec, vendor, storage)
                if vendor == "volcengine" and provider is not None:
                    self._volc_task_names(job, spec, provider)
            else:
                idle = self._recording(job, spec, storage)
        if provider is None or (storage_name and storage is None) or broken or len(self.errors.errors) != before:
            return None
        return CheckedJob(job, provider, storage, interval, idle, region)

    def _zego_idle(self, job: Loaded, provider: str, idle: int) -> None:
        """ZEGO's MaxIdleTime: 5..86400 s on the current API (its StartRecord page), seed 003's 5..4294967295 on
        the legacy one. One message names the range of the job's API, so a too short value is not answered with
        a bound the current API refuses; a Provider not validly known is held to seed 003's range."""
        api = self._zego_api(provider)
        if api is None or api[0] != "current":
            self._range(job, ("spec", "idleTimeout"), idle, 5, UINT32_MAX, "zego max_idle_time")
        elif not 5 <= idle <= ZEGO_CURRENT_MAX_IDLE:
            self.fail(
                job,
                ("spec", "idleTimeout"),
                f"{idle}s is out of range for zego MaxIdleTime (5..{ZEGO_CURRENT_MAX_IDLE} s with cloudrecordApi: "
                f"current, {api[1]}; up to {UINT32_MAX} s with legacy)",
            )

    def _range(self, job: Loaded, path: Path, value: int, low: int, high: int, what: str) -> None:
        if not low <= value <= high:
            self.fail(job, path, f"{value}s is out of range for {what} ({low}..{high} s)")

    def _streams(self, job: Loaded, streams: list[StreamSelector], vendor: str) -> None:
        indexes: dict[int, int] = {}
        for i, stream in enumerate(streams):
            path = ("spec", "streams", i)
            if vendor == "volcengine":
                if stream.stream is not None:
                    self.fail(job, path, "volcengine selects streams by `user` (UserId), not `stream`")
                elif stream.user is None:  # `{}`, `{type: screen}`, `{user: ~}` (a null is unset): no `stream` to blame
                    self.fail(job, path, "volcengine needs `user` (UserId) in each stream; no streams = every stream")
                elif not VOLC_ID_RE.match(stream.user):
                    self.fail(job, (*path, "user"), "must match [a-zA-Z0-9_@-.]{1,128} (volcengine Id rule)")
                if stream.index is not None:
                    if stream.index in indexes:
                        self.fail(
                            job,
                            (*path, "index"),
                            f"index {stream.index} is already used by streams[{indexes[stream.index]}]",
                        )
                    indexes.setdefault(stream.index, i)
            elif stream.stream is None and stream.user is None and not stream.type and stream.index is None:
                self.fail(job, path, "zego needs `stream` (stream id) in each stream; no streams = every stream")
            elif stream.stream is None or stream.user is not None or stream.type or stream.index is not None:
                self.fail(
                    job,
                    path,
                    "zego selects streams by `stream` (stream id) only; user/type/index are volcengine fields",
                )
        if vendor == "zego":  # record_stream_list: a stream id listed twice is a slip, as a room listed twice
            self._claim(job, "", [(i, s.stream) for i, s in enumerate(streams) if s.stream], "streams", "stream")
        if vendor == "volcengine" and len(streams) > VOLC_MAX_STREAMS:
            self.fail(
                job, ("spec", "streams"), f"volcengine takes at most {VOLC_MAX_STREAMS} streams, got {len(streams)}"
            )

    def _snapshot(
        self, job: Loaded, spec: SnapshotJobSpec, vendor: str | None, storage: Loaded | None
    ) -> tuple[int | None, int | None]:
        """Check a snapshot job by its vendor's rules; returns (interval, idle timeout) with the defaults.

        With the vendor unknown (its provider is invalid), a value is checked against every vendor's range."""
        given = {"interval": spec.interval, "idleTimeout": spec.idle_timeout}
        if vendor is None:
            for name, value in given.items():
                ranges = SNAPSHOT_RANGES[name].values()
                if value is not None and not any(low <= value <= high for _, low, high, _ in ranges):
                    known = ", ".join(f"{what} {low}..{high} s" for _, low, high, what in ranges)
                    self.fail(job, ("spec", name), f"{value}s is out of range for every vendor ({known})")
            return None, None
        values = {}
        for name, value in given.items():
            default, low, high, what = SNAPSHOT_RANGES[name][vendor]
            values[name] = default if value is None else value
            if vendor == "zego" and name == "idleTimeout":
                self._zego_idle(job, spec.provider, values[name])
            else:
                self._range(job, ("spec", name), values[name], low, high, what)
        interval, idle = values["interval"], values["idleTimeout"]
        self._streams(job, spec.streams, vendor)
        if vendor == "volcengine":
            if spec.output_folder is not None:
                self.fail(
                    job,
                    ("spec", "outputFolder"),
                    "outputFolder is zego only: volcengine StartSnapshot takes no folder",
                )
            task_id = volc_task_id(job.name, spec.task_id)
            if not VOLC_ID_RE.match(task_id):
                self.fail(job, ("spec", "taskId"), "must match [a-zA-Z0-9_@-.]{1,128} (volcengine TaskId rule)")
            for i, room in enumerate(spec.rooms if isinstance(spec.rooms, list) and "rooms" not in job.broken else ()):
                if not VOLC_ID_RE.match(room):
                    # `rooms: [live-*]` meant every live room: say how a job selects them (walk 27b).
                    glob = any(c in room for c in "*?[") and (
                        f"; to select the rooms a glob matches: rooms: {{match: {quote(room)}}}"
                    )
                    self.fail(
                        job,
                        ("spec", "rooms", i),
                        f"room {quote(room)} must match [a-zA-Z0-9_@-.]{{1,128}} (volcengine RoomId rule){glob or ''}",
                    )
        else:
            if spec.image.format != "jpeg" or spec.image.width or spec.image.height:
                self.fail(
                    job,
                    ("spec", "image"),
                    "zego snapshots are jpg at the source size: png, width and height are volcengine only",
                )
            if spec.task_id is not None:
                self.fail(job, ("spec", "taskId"), "taskId is volcengine only")
            self._zego_vod_format(job, storage, "jpg", spec.provider, "video")
        return interval, idle

    def _volc_task_names(self, job: Loaded, spec: SnapshotJobSpec, provider: Loaded) -> None:
        """Seed 001: AppId + RoomId + TaskId name one vendor task. Two Provider documents of one app are one
        app at the vendor, so two jobs on them naming a room with one TaskId would share one task: the second
        start is "already started" with the first job's settings, and deleting either job stops both.
        (On one provider the room claim already says so.)"""
        assert isinstance(provider.model, ProviderDocument) and isinstance(provider.model.spec, VolcengineProvider)
        if provider.model.spec.app_id not in self._shared_apps:
            return
        scope = (provider.model.spec.app_id, volc_task_id(job.name, spec.task_id))
        if isinstance(spec.rooms, RoomSelector):  # matched against named rooms once every job is read
            self._volc_tasks.cover(scope, job, provider.name, spec.rooms)
            return
        for i, room in enumerate(spec.rooms):
            clash = self._volc_tasks.name(scope, room, job, provider.name, i)
            if clash is not None and clash[1] != provider.name:
                self._shared_volc_task(job, i, f"is the Volcengine task of {clash[0].ref()}", clash[1], scope)

    def _shared_volc_task(self, job: Loaded, i: int, whose: str, on: str, scope: _Scope) -> None:
        assert isinstance(job.model.spec, SnapshotJobSpec) and isinstance(job.model.spec.rooms, list)
        app_id, task_id = scope
        self.fail(
            job,
            ("spec", "rooms", i),
            f"room {quote(job.model.spec.rooms[i])} with taskId {quote(task_id)} {whose} (Provider '{on}', the same "
            f"appId {quote(app_id)}): the vendor knows one task by AppId, RoomId and TaskId, so the two jobs would "
            "share it; give one of them another taskId",
        )

    def _zego_api(self, name: str) -> tuple[str, str] | None:
        """The cloud recording API of zego Provider `name` and the document's `ref()`: the messages of the rules
        that differ by API name it, as its `cloudrecordApi` (current by default) is not in the job's file. Of an
        invalid Provider (already reported), what its document says when that is readable: a broken `appId`
        made the job's checks assume the legacy API (a false `jpg` refusal, a missed MaxIdleTime bound)."""
        provider = self.by_kind.get("Provider", {}).get(name)
        if provider is not None:
            pspec = provider.model.spec if isinstance(provider.model, ProviderDocument) else None
            return (pspec.cloudrecord_api, provider.ref()) if isinstance(pspec, ZegoProvider) else None
        raw = self.invalid.get(("Provider", name))
        spec = raw.value.get("spec") if raw is not None else None
        if raw is None or not isinstance(spec, dict) or spec.get("type") != "zego":
            return None
        # A null is unset, as the model reads it (`cloudrecordApi:` left empty): the default, not "not known" (55a).
        api = spec.get("cloudrecordApi")
        api = ZegoProvider.model_fields["cloudrecord_api"].default if api is None else api
        return (api, self._provider_ref(name)) if api in ("current", "legacy") else None

    def _provider_ref(self, name: str) -> str:
        """`Provider 'name' (file:line:col)` of a valid Provider or of an invalid one (its errors reported)."""
        if (provider := self.by_kind.get("Provider", {}).get(name)) is not None:
            return provider.ref()
        return f"Provider '{name}' ({self.invalid[('Provider', name)].source})"

    def _zego_vod_format(self, job: Loaded, storage: Loaded | None, fmt: str, provider: str, media: str) -> None:
        if storage is None:  # missing or invalid: reported on its own
            return
        assert isinstance(storage.model, StorageDocument)
        kind = storage.model.spec.type
        # Seed 003: VOD storage takes mp4 and flv; ZEGO's StartRecord page: the current API's tencent-vod (Vendor 6)
        # jpg and mp3 too.
        api = self._zego_api(provider) if kind == "tencent-vod" else None
        current = ("mp4", "flv", "jpg", "mp3")
        # Seed 003's list only where the Provider says legacy: one not known (missing, or its cloudrecordApi
        # unreadable: reported on its own) is held to what either API takes, as `_zego_idle` holds it to the
        # wider range: a jpg refusal that the Provider's fix (`curent` -> `current`) takes back misled.
        formats = ("mp4", "flv") if kind != "tencent-vod" or (api is not None and api[0] == "legacy") else current
        # Seed 003: mp4 or flv with stream_type 4 (media: separate) write the audio as aac files.
        apart = media == "separate" and fmt in ("mp4", "flv")
        if kind not in ZEGO_VOD or (fmt in formats and not apart):
            return
        which = " or ".join((", ".join(formats[:-1]), formats[-1])) + " files only"
        where, written = storage.ref(), "aac" if fmt in formats else fmt
        if api is not None and api[0] == "legacy":  # the Provider decides: say which, and the way out
            which += " with cloudrecordApi: legacy"
            written += f": cloudrecordApi: current takes {written} too" if written in current else ""
            where += f" with {api[1]}"
        if fmt in formats:  # the aac files of media: separate
            what = f"media: separate writes the audio apart, as aac files (seed 003), and {kind} storage takes {which}"
            self.fail(job, ("spec", "media"), f"{what}, not aac ({where})")
        else:
            self.fail(job, ("spec", "storage"), f"{kind} storage takes {which}, not {written} ({where})")

    def _recording(self, job: Loaded, spec: RecordingJobSpec, storage: Loaded | None) -> int:
        self._streams(job, spec.streams, "zego")
        self._zego_idle(job, spec.provider, spec.idle_timeout)
        self._range(job, ("spec", "maxDuration"), spec.max_duration, 300, 86400, "zego max_record_time")
        if {"mode", "media", "format", "mix", "options"} & job.broken:
            return spec.idle_timeout  # the rest weighs these fields against each other: not with a default
        self._zego_vod_format(job, storage, spec.format, spec.provider, spec.media)
        if spec.format == "mp3" and spec.media != "audio":
            self.fail(job, ("spec", "format"), "mp3 needs media: audio")
        if spec.mode == "mixed":
            if spec.mix is None:
                self.errors.add(job.raw.key_at(("spec",)), "spec: mode mixed needs 'mix' (mix_config)")
            else:
                self._mix(job, spec)
        elif spec.mix is not None:
            self.fail(job, ("spec", "mix"), "only applies to mode: mixed")
        self._options(job, spec)
        return spec.idle_timeout

    def _mix(self, job: Loaded, spec: RecordingJobSpec) -> None:
        assert spec.mix is not None
        video = spec.mix.mix_output_video_config
        if video.width * video.height > 1920 * 1080:
            self.fail(
                job,
                ("spec", "mix", "mixOutputVideoConfig"),
                f"width × height must not exceed 1920 × 1080, got {video.width} × {video.height}",
            )
        if spec.mix.mix_mode == 1 and not spec.mix.mix_input_list:
            # ZEGO's StartRecord page: "1：自定义布局，必须指定 MixInputList"
            self.fail(job, ("spec", "mix", "mixMode"), "mixMode 1 (custom layout) needs mixInputList (its regions)")
        for i, item in enumerate(spec.mix.mix_input_list or []):
            if not (item.top <= item.bottom <= video.height and item.left <= item.right <= video.width):
                self.fail(
                    job,
                    ("spec", "mix", "mixInputList", i),
                    "needs top ≤ bottom ≤ canvas height and "
                    f"left ≤ right ≤ canvas width ({video.width} × {video.height})",
                )
            # Seed 003's conditions under which a field takes effect: set otherwise, it would do nothing.
            if item.background_image is not None and item.stream_id is None:
                self.fail(job, ("spec", "mix", "mixInputList", i, "backgroundImage"), "only applies with streamId")
        # ZEGO's StartRecord page: ViewType 2 (whiteboard) takes effect only when recording one, in one region only.
        boards = [i for i, item in enumerate(spec.mix.mix_input_list or []) if item.view_type == 2]
        for i in boards[1:]:
            where = ("spec", "mix", "mixInputList", i, "viewType")
            self.fail(job, where, f"only one region can show the whiteboard (mixInputList[{boards[0]}] does)")
        if boards and not spec.options.has_whiteboard:
            where = ("spec", "mix", "mixInputList", boards[0], "viewType")
            self.fail(job, where, "viewType 2 (the whiteboard) only applies with options.hasWhiteboard: true")
        if spec.mix.mix_max_resolution_stream_id is not None and spec.mix.mix_mode not in (3, 4, 5):
            self.fail(job, ("spec", "mix", "mixMaxResolutionStreamId"), "only applies with mixMode 3, 4 or 5")
        if spec.mix.default_mix_stream_background_image is not None and not spec.options.fill_blank:
            self.fail(
                job, ("spec", "mix", "defaultMixStreamBackgroundImage"), "only applies with options.fillBlank: true"
            )

    def _options(self, job: Loaded, spec: RecordingJobSpec) -> None:
        opts, path = spec.options, ("spec", "options")
        fill = opts.fill_frame
        if fill is not None and spec.mode != "mixed":
            self.fail(job, (*path, "fillFrame"), "only applies to mode: mixed")
        elif fill is not None and fill.frame_fill_color is not None and fill.frame_fill_mode != 2:
            # seed 003: "frame_fill_mode 设置为 2 时有效"
            self.fail(job, (*path, "fillFrame", "frameFillColor"), "only applies with frameFillMode: 2")
        single_audio_mp3 = spec.mode == "single" and spec.media == "audio" and spec.format == "mp3"
        for name in ("recordMuteAudio", "recordMuteAudioSplitThreshold"):
            if name in _fields_set(opts) and not single_audio_mp3:
                self.fail(job, (*path, name), "only applies to mode: single, media: audio, format: mp3")
        if single_audio_mp3 and opts.record_mute_audio_split_threshold is not None and opts.record_mute_audio != 2:
            # seed 003: "… 且 record_mute_audio 为 2 时生效"
            self.fail(job, (*path, "recordMuteAudioSplitThreshold"), "only applies with recordMuteAudio: 2")
        if opts.has_whiteboard:
            if not opts.whiteboard:
                self.fail(job, (*path, "hasWhiteboard"), "needs 'whiteboard' (the whiteboards to record)")
            if spec.media == "audio":
                self.fail(job, (*path, "hasWhiteboard"), "an audio-only recording cannot record a whiteboard")
        elif opts.whiteboard:
            self.fail(job, (*path, "whiteboard"), "needs hasWhiteboard: true")
        if len(opts.whiteboard or ()) > 1:
            # Seed 003 lost whiteboard's description; ZEGO's whiteboard recording guide (docs.zegocloud.com/article/
            # 7413): "You can only configure one whiteboard for now". A second one would do nothing, or be refused.
            where = (*path, "whiteboard", 1)
            self.fail(
                job,
                where,
                'ZEGO records one whiteboard per recording (its guide: "You can only configure '
                'one whiteboard"): give one entry',
            )
        for i, board in enumerate(opts.whiteboard or () if spec.mode == "mixed" else ()):
            # seed 003: width / height are "单流录制白板输出视频的分辨率" (a single-stream recording's whiteboard video)
            for name in ("width", "height"):
                if name in _fields_set(board):
                    self.fail(job, (*path, "whiteboard", i, name), "only applies to mode: single")

    def _thumbnails(self, job: Loaded, provider: str, files: list[tuple[int, ThumbnailFile]]) -> None:
        self._claim(job, provider, [(i, f.file_id) for i, f in files], "files", "fileId")
        for i, item in files:
            path = ("spec", "files", i)
            if item.cdn == "tencent":
                if item.definition is None:
                    self.fail(job, path, "cdn tencent needs 'definition' (a snapshot template id)")
                if item.interval is not None:
                    self.fail(job, (*path, "interval"), "applies to cdn huawei only")
            else:
                if item.interval is None:
                    self.fail(job, path, "cdn huawei needs 'interval'")
                elif item.interval < 1:
                    self.fail(job, (*path, "interval"), "must be at least 1s")
                if item.definition is not None:
                    self.fail(job, (*path, "definition"), "applies to cdn tencent only")


def check_all(outcomes: list[tuple[RawDocument, Loaded | None]], errors: ErrorSink) -> tuple[Checker, list[CheckedJob]]:
    """Run every cross-document check over each document and its model (None: it failed validation, already
    reported); returns the name index and the jobs that passed. A reference to an invalid document is not
    reported again (its own errors say what is wrong)."""
    checker = Checker(outcomes, errors)
    docs = [doc for _, doc in outcomes if doc is not None]
    for doc in docs:
        if doc.kind == "Provider":
            checker.check_provider(doc)
        elif doc.kind == "Storage":
            checker.check_storage(doc)
    jobs = [d for d in docs if d.kind.endswith("Job")]
    # A duplicate job gets every check too, so its other errors show in this run; only the first one is kept.
    checked = [
        c for job in jobs if (c := checker.check_job(job)) is not None and not any(job is d for d in checker.duplicates)
    ]
    checker.check_selector_claims()
    return checker, checked
