"""The provider contract: the only code that talks to a vendor.

One class per vendor API family. Each owns its request signing, its error mapping and its documented
rate limits; the executor and the daemon see only `observe`, `start`, `update`, `stop`.
Every call passes through the provider's `RateBudget` for that (account, API).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.budget import Priority
from reconciler.model import ApiFamily, DesiredTask, Observed, TaskRecord
from reconciler.spec.errors import quote

__all__ = [
    "MAX_VENDOR_ID",
    "ErrorKind",
    "Provider",
    "StartResult",
    "VendorError",
    "seconds_of_ms",
    "status_text",
    "vendor_id_ok",
    "vendor_int",
]

MAX_VENDOR_ID = 128  # characters of a vendor's task id, as capctl stores, prints and sends it back


def vendor_int(value: Any) -> int | None:
    """A vendor's JSON integer (a status, a code); None for anything else, a boolean too (Python's True == 1)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def vendor_id_ok(value: str) -> bool:
    """Whether `value` can be a vendor's task id: 1 to MAX_VENDOR_ID printable characters, no surrounding space.
    It is stored, printed in plans, `state list`, logs and the status page, and sent back in every query."""
    return 0 < len(value) <= MAX_VENDOR_ID and value.isprintable() and value == value.strip()


def status_text(value: Any) -> str:
    """`status N` for a vendor's status answer, as an `Observed.detail` says it. A value that is no integer is
    quoted at a bounded size with its control characters escaped: the detail is printed in plans, logs and the
    status page, and a status of 1 MB of text or an escape sequence (`\\x1b[2J`) was printed raw."""
    code = vendor_int(value)
    return f"status {code}" if code is not None else f"status {quote(value)}"


def seconds_of_ms(ms: Any) -> float | None:
    """Vendor milliseconds as unix seconds; 0 (not ended), a missing value or one that is no number → None."""
    if isinstance(ms, int | float) and not isinstance(ms, bool) and ms > 0:
        return ms / 1000
    return None


class ErrorKind(enum.StrEnum):
    THROTTLED = "throttled"  # rate limited by the vendor: slow down, retry
    RETRYABLE = "retryable"  # 5xx, timeout, dropped connection, transient vendor error
    TERMINAL = "terminal"  # the request itself is wrong or not allowed: do not retry
    NOT_FOUND = "not-found"  # the task does not exist / is not running
    AUTH = "auth"  # credentials rejected (terminal for the apply, but named clearly)


class VendorError(Exception):
    """A vendor call failed. `message` never contains a secret.

    `code` is the vendor's error code, or "" when no answer came at all (a refused connection, a timeout).
    `unanswered`: no answer said what happened (every retryable error; a terminal one that must not be retried
    only because the call may have acted), so that a run of them gives up on the provider (`GIVE_UP_AFTER`).
    `unsent`: the request never left this host (a refused or timed-out connect): unanswered, yet it cannot
    have acted (`may_have_acted`).
    `provider` and `provider_type` name the Provider document whose call failed: the provider sets them
    (`named`), so that every error says which account and endpoint it is about.
    """

    def __init__(
        self, kind: ErrorKind, code: str, message: str, *, api: str = "", unanswered: bool = False, unsent: bool = False
    ) -> None:
        super().__init__(code, message)
        self.kind = kind
        self.unanswered = unanswered or kind is ErrorKind.RETRYABLE
        self.unsent = unsent
        self.code = code
        self.message = message
        self.api = api
        self.provider = ""
        self.provider_type = ""

    @property
    def may_have_acted(self) -> bool:
        """No answer said what happened to a request that reached the vendor (or may have)."""
        return self.unanswered and not self.unsent

    def __str__(self) -> str:
        where = f"{self.provider} ({self.provider_type}): " if self.provider else ""
        return f"{where}{self.api + ': ' if self.api else ''}{self.code + ': ' if self.code else ''}{self.message}"

    def named(self, provider: str, provider_type: str) -> VendorError:
        """This error, tagged with the Provider document that made the call (the first tag stays)."""
        if not self.provider:
            self.provider, self.provider_type = provider, provider_type
        return self

    def after_tries(self, tries: int) -> VendorError:
        """The same failure, saying how many tries it took to give up (the message a retry loop ends with)."""
        return self._copy(f"{self.message} after {tries} tries", unanswered=self.unanswered, unsent=self.unsent)

    def explained(self, why: str) -> VendorError:
        """The same failure, with what the caller knows of its likely cause and what to do."""
        return self._copy(f"{self.message} ({why})", unanswered=self.unanswered, unsent=self.unsent)

    def before_sending(self) -> VendorError:
        """The same failure, of a call that failed before its own request was sent (getting what it needed first:
        a legacy access token): unanswered as it was, yet that call cannot have acted (`unsent`)."""
        return self._copy(self.message, unanswered=self.unanswered, unsent=True)

    def after_a_lost_answer(self) -> VendorError:
        """The same failure of a call an earlier try of which got no answer: that try may have acted, whatever
        this answer says (`unanswered`)."""
        return self._copy(self.message, unanswered=True, unsent=False)

    def _copy(self, message: str, *, unanswered: bool, unsent: bool) -> VendorError:
        copy = VendorError(self.kind, self.code, message, api=self.api, unanswered=unanswered, unsent=unsent)
        return copy.named(self.provider, self.provider_type)


@dataclass(frozen=True, slots=True)
class StartResult:
    vendor_task_id: str
    vendor_ref: dict[str, str]  # what observe/stop need later without the spec (no secrets)
    # True: the vendor said the same task is already started; None: its answer does not say (ZEGO's StartRecord
    # answers a known ClientTaskId with the running task's id, as it answers a new start: the `started` log
    # line says null, not a false "no").
    already_running: bool | None = False


class Provider(Protocol):
    """A vendor API family bound to one Provider document (one account)."""

    name: str
    family: ApiFamily

    async def start(
        self, task: DesiredTask, client_task_id: str | None, *, priority: Priority = Priority.CHANGE
    ) -> StartResult:
        """Start the task. `client_task_id` is the idempotency key recorded as intent before the call
        (ZEGO ClientTaskId); providers whose starts are idempotent by their own id ignore it."""

    async def update(self, task: DesiredTask, record: TaskRecord) -> None:
        """Change the updatable fields (`task.updatable`) of a running task in place."""

    async def stop(self, record: TaskRecord) -> None:
        """Stop a task from its record alone (the spec may be gone). A task that is already
        stopped or unknown raises VendorError(NOT_FOUND); callers treat that as done."""

    async def observe(self, record: TaskRecord) -> Observed:
        """One status query, paced at POLL priority. Never raises for 'not found': returns NOT_FOUND."""

    async def room_streams(self, room: str) -> int:
        """How many streams (ZEGO) or visible users (Volcengine) the vendor lists in `room` now, 0 for a room
        that does not exist: the room-listing resync (`daemon/roomlisting.py`). Never mutates; POLL priority."""

    async def aclose(self) -> None: ...
