"""Pure data shared by every layer: task keys, desired / recorded / observed tasks, plan actions.

Nothing here does I/O or reads the clock. The spec layer produces `DesiredTask`s, the state store
persists `TaskRecord`s, providers report `Observed`, the diff turns all three into `Change`s.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from reconciler.secrets import Secret

__all__ = [
    "Action",
    "ApiFamily",
    "Change",
    "DesiredTask",
    "JobKind",
    "Observed",
    "ObservedState",
    "ProviderConfig",
    "RestartPolicy",
    "RoomActivity",
    "TaskRecord",
    "TaskStatus",
    "account_of",
    "job_of",
    "split_key",
    "task_key",
]

JSONValue = Any  # a JSON-compatible tree; leaves may be `reconciler.secrets.Secret`


class JobKind(enum.StrEnum):
    SNAPSHOT = "SnapshotJob"
    RECORDING = "RecordingJob"
    THUMBNAIL = "ThumbnailJob"


class ApiFamily(enum.StrEnum):
    """One vendor API family = one provider implementation class."""

    VOLC_SNAPSHOT = "volcengine-snapshot"
    ZEGO_RECORD = "zego-record"  # current Action API (StartRecord / StopRecord / DescribeRecordStatus)
    ZEGO_RECORD_LEGACY = "zego-record-legacy"  # seed 003: /access_token, /start, /query, /stop
    ZEGO_THUMBNAIL = "zego-thumbnail"  # MediaThumbnails: one-shot


class TaskStatus(enum.StrEnum):
    PENDING = "pending"  # intent recorded, start not confirmed
    RUNNING = "running"
    STOPPED = "stopped"  # the vendor stopped it (idle timeout, max duration, out-of-band stop)
    FAILED = "failed"  # last attempt ended in a terminal error
    DONE = "done"  # one-shot task submitted (thumbnails), or restartPolicy Never after its run
    DORMANT = "dormant"  # repeatedly unproductive: no calls until room activity or its backoff slot
    # A tombstone: the task was pruned (its job left the specs) but its history is kept, so restoring the
    # spec resumes it (same counters, a thumbnail not submitted twice); forgotten after a retention period.
    REMOVED = "removed"


class RestartPolicy(enum.StrEnum):
    ALWAYS = "Always"
    NEVER = "Never"


class Action(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    REISSUE = "reissue"
    DELETE = "delete"
    # The task's record re-homed to another Provider document of the same vendor account (`moves.py`): a
    # renamed Provider, as Terraform's `moved`; no vendor call.
    MOVE = "move"
    NOOP = "no-op"


def task_key(kind: str, name: str, target: str) -> str:
    """`kind/name/room` (or `kind/name/fileId`). File ids may contain `/`; the first two parts never do."""
    return f"{kind}/{name}/{target}"


def split_key(key: str) -> tuple[str, str, str]:
    kind, name, target = key.split("/", 2)
    return kind, name, target


def job_of(key: str) -> str:
    """`Kind/name` of a task key (the target may hold `/`; kind and name never do)."""
    return key[: key.index("/", key.index("/") + 1)]


@dataclass(frozen=True, slots=True)
class DesiredTask:
    """One vendor task implied by the specs, with the exact request it implies.

    `request` is the vendor request body; secret leaves are `Secret` objects that render as fingerprints.
    `spec_hash` covers everything (secret values enter it through their full digest, never as text);
    `fixed_hash` covers everything except the fields in `updatable`, which the vendor can change in place.
    """

    key: str
    kind: JobKind
    job: str
    target: str  # room id, or file id for thumbnails
    provider: str  # Provider document name
    family: ApiFamily
    request: JSONValue
    spec_hash: str
    fixed_hash: str
    updatable: dict[str, int] = field(default_factory=dict)  # e.g. {"interval": 5}
    idle_timeout: int | None = None  # seconds; None for one-shot tasks
    max_duration: int | None = None  # seconds; recordings only
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    source: str = ""  # "file:line:col" of the job document, for messages
    labels: dict[str, str] = field(default_factory=dict)  # the job's metadata.labels, for `-l` selectors
    selector: str | None = None  # the room selector that chose this room (`class-*`), None for a named room
    home: str = ""  # where its vendor task lives: `ProviderConfig.home` of its Provider ("": not known)
    # A room selector's task left to end at its room (`rooms.leaving`): its restartPolicy Never is how it is
    # handled, not its job's policy, so it is not recorded as the task's.
    ending: bool = False


def account_of(vendor: str, app_id: str) -> str:
    """`volcengine:APPID`: a vendor account, as a Provider's type and appId, or a callback's vendor and app, name it."""
    return f"{vendor}:{app_id}"


@dataclass(frozen=True, slots=True)
class RoomActivity:
    """What the daemon last learned of one room (callbacks, the room-listing resync); kept in the state.

    Keyed by the vendor account, not by a Provider document: a room is a fact of the vendor app, whatever
    the specs call it, so a Provider renamed (or a second one for the same app) knows its rooms at once."""

    account: str  # the vendor account: `ProviderConfig.account` (`volcengine:APPID`, `zego:APPID`)
    room: str
    active: bool  # a stream is published in it
    last_seen: float  # when this was learned (epoch seconds)
    source: str  # how: "callback", "resync", ...


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """What the state store remembers about one task. Never holds a secret."""

    key: str
    provider: str
    family: ApiFamily
    kind: JobKind
    target: str
    spec_hash: str
    fixed_hash: str
    updatable: dict[str, int] = field(default_factory=dict)
    status: TaskStatus = TaskStatus.PENDING
    vendor_task_id: str | None = None
    client_task_id: str | None = None  # the intent: set before a non-idempotent start
    vendor_ref: dict[str, str] = field(default_factory=dict)  # ids needed to observe / stop without the spec
    stop_reason: str | None = None
    started_at: float | None = None
    observed_at: float | None = None
    stopped_at: float | None = None
    reissue_count: int = 0
    unproductive_runs: int = 0  # idle-outs in a row (no productive run since): the empty-room backoff
    fault_runs: int = 0  # runs the vendor ended by a fault, in a row (no productive run since): the fault retry
    next_attempt_at: float | None = None
    last_error: str | None = None
    removed_at: float | None = None  # when a tombstone (REMOVED) was made: its retention counts from here
    idle_timeout: int | None = None
    max_duration: int | None = None
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    productive: bool = False  # a callback reported output during the current run
    request: dict[str, Any] = field(default_factory=dict)  # redacted request (secrets as fingerprints)
    labels: dict[str, str] = field(default_factory=dict)  # the job's labels when last applied (`-l`, deletes)
    selector: str | None = None  # the room selector that started it (`class-*`), None for a named room
    # An in-place update was sent and its answer not recorded (a crash, a Ctrl-C, a lost answer): the vendor
    # may hold the old values or the new ones, so the next plan sends the spec's values again.
    update_unconfirmed: bool = False
    # When its last in-place update was sent (kept if its answer was lost, restored if refused; never before
    # another key's takeover of the run): the run has that update's settings since, also when another key took
    # it over after its start (`transitions.runs_as_sent`). None: none recorded (or by an older capctl only).
    updated_at: float | None = None
    # `ProviderConfig.home` of the Provider it was started through (None: recorded by an older capctl): a
    # Provider renamed, or its job moved to another document, keeps the task when the home is the same.
    home: str | None = None
    # Its last start, not confirmed yet (pending, or failed), is a re-issue: taken up again, it is planned and
    # counted as one, and its re-issue is not counted a second time.
    reissuing: bool = False
    # Its last start, not confirmed yet, is a replace's (its old run stopped first): taken up again, it is
    # planned and counted as a replace, and started without a second stop.
    replacing: bool = False
    # Dormant because room callbacks said its room is empty (`policy.room_known_empty`), not after idle runs
    # seen by polling only: a spec edit waits for the room's activity too (`transitions.waits_for_room`).
    room_empty: bool = False
    # Its last start (failed) was refused by the vendor, no answer lost before it, no earlier start of it
    # unconfirmed: the vendor said it did nothing, so nothing of it runs to be stopped (a mistyped appId, a
    # bucket it does not know). A throttled try is an answer too: the vendor did nothing. A start never sent
    # (its provider stopped answering: "not attempted") is marked so too, and a Volcengine start never confirmed
    # that a replace's stop ended (by its RoomId + TaskId) until that replace's start is sent.
    start_refused: bool = False
    # A thumbnail's last submission the vendor took (its hash, request, ids, time: `transitions.restored`), kept
    # while a later edit's submission is not taken (pending, refused): the entry reverted to it is no new one.
    accepted: dict[str, Any] | None = None

    @property
    def vendor_ids(self) -> dict[str, Any]:
        """The fields that name its vendor task: its vendor ref; for a start never confirmed (no vendor task id,
        at most an older run's ref), those it sent."""
        return self.vendor_ref if self.vendor_task_id else self.request

    def evolve(self, **changes: Any) -> TaskRecord:
        # As dataclasses.replace, in about two thirds of its time (a daemon evolves records at every pass).
        values = dict(zip(_RECORD_FIELDS, _record_values(self), strict=True))
        values.update(changes)
        return TaskRecord(**values)


_RECORD_FIELDS = tuple(f.name for f in fields(TaskRecord))
_record_values = attrgetter(*_RECORD_FIELDS)


class ObservedState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"  # ended by the vendor or by an API call; see reason
    FAILED = "failed"
    NOT_FOUND = "not-found"  # the vendor does not know the task (or it aged out of the query window)
    UNKNOWN = "unknown"  # could not be observed this time (error); never acted upon


@dataclass(frozen=True, slots=True)
class Observed:
    state: ObservedState
    reason: str | None = None  # vendor stop reason, e.g. "IdleTimeOut", "max duration reached"
    started_at: float | None = None
    ended_at: float | None = None
    rollover: bool = False  # ended at its max duration: re-issue without backoff
    detail: str | None = None  # raw status for messages ("status 4")
    room: str | None = None  # the room the vendor's answer names (ZEGO recordings), for `capctl state import`


@dataclass(frozen=True, slots=True)
class Change:
    """One line of a plan. `reason` explains the action; it never decides it."""

    key: str
    action: Action
    reason: str
    provider: str
    family: ApiFamily
    before_hash: str | None = None
    after_hash: str | None = None
    details: tuple[str, ...] = ()  # human lines, e.g. "interval 5s → 10s"
    before: dict[str, Any] | None = None  # redacted request recorded in state (None when new)
    after: dict[str, Any] | None = None  # redacted request the specs imply (None when deleted)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """A validated, resolved `Provider` document. Secret fields are `Secret`s (or None when optional)."""

    name: str
    type: str  # "volcengine" | "zego"
    app_id: str  # zego AppId as decimal text; providers convert
    source: str = ""  # "file:line:col"
    # volcengine
    endpoint: str = "https://rtc.volcengineapi.com"
    region: str = "cn-north-1"
    business_id: str | None = None
    access_key: Secret | None = None
    secret_key: Secret | None = None
    # zego
    server_secret: Secret | None = None
    rtc_endpoint: str = "https://rtc-api.zego.im"
    cloudrecord_endpoint: str = "https://cloudrecord-api.zego.im"
    cloudrecord_api: str = "current"  # "current" | "legacy"
    access_token: Secret | None = None  # legacy only
    # both
    callback_secret: Secret | None = None
    rate_limits: dict[str, float] = field(default_factory=dict)  # overrides, by API name

    @property
    def account(self) -> str:
        """The vendor account, the app id on that vendor: rate budgets and room activity are per account."""
        return account_of(self.type, self.app_id)

    def home(self, family: ApiFamily) -> str:
        """Where its tasks of `family` live: the vendor account and the endpoint they are started at. A vendor
        names a task by the account and its own ids (Volcengine AppId + RoomId + TaskId, ZEGO the TaskId it
        returned), never by a Provider document's name: two documents with one home reach the same tasks."""
        if self.type != "zego":
            url = self.endpoint
        else:
            url = self.rtc_endpoint if family is ApiFamily.ZEGO_THUMBNAIL else self.cloudrecord_endpoint
        return f"{self.account} at {url.rstrip('/')}"  # an account has no space: `engine._home` splits on " at "

    def serves(self, family: ApiFamily) -> bool:
        """False for a ZEGO recording started on the other cloud recording API than the one this document
        declares now: its stop and status calls would go to the wrong API, at the wrong endpoint."""
        api = _RECORDING_APIS.get(family)
        return api is None or api == self.cloudrecord_api


_RECORDING_APIS = {ApiFamily.ZEGO_RECORD: "current", ApiFamily.ZEGO_RECORD_LEGACY: "legacy"}
