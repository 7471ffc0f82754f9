"""One vocabulary for why a vendor task stopped: plans, the state (`state list`), daemon logs and metrics.

Each vendor says it its own way (Volcengine `StopReason: IdleTimeOut`, a ZEGO recording's `Status` 4, a ZEGO
callback's `quit_reason` 3), and the same idle-out used to read `IdleTimeOut`, `ended (status 4)` or
`idle timeout` depending on who saw it. Every stop reason is now `<phrase> (<vendor> <code>)`: the phrase is
capctl's and the same for every vendor, the vendor's own code beside it keeps the evidence. This module holds
only that vendor-neutral part, the phrases and how a reason is written; each vendor's codes and how they map
to a phrase belong to its provider (`providers/volcengine.py`, `providers/zego_client.py` and
`providers/zego_callbacks.py`), so a new vendor adds its table there. Pure: no I/O. The mapping tables are
in docs/providers-volcengine.md and docs/providers-zego.md.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["FAULTS", "NOT_FOUND", "Phrase", "phrase_of", "stop_reason", "vendor_code"]


class Phrase(StrEnum):
    """capctl's words for why a run stopped, the same whichever vendor said it."""

    IDLE_TIMEOUT = "idle timeout"
    MAX_DURATION = "max duration"
    OUT_OF_BAND = "stopped out of band"
    START_FAILED = "start failed"
    ROOM_LOGIN_FAILED = "room login failed"
    ENGINE_FAILED = "engine failed"
    NETWORK_LOST = "network lost"
    USER_DISCONNECTED = "user disconnected"
    ENDED = "ended"  # the vendor ended it and did not say why
    FAILED = "failed"
    INTERNAL_ERROR = "internal error"  # the vendor's own fault, by a code it documents as such


NOT_FOUND: Final = "not found at the vendor"
# Ends that say nothing about the room (the daemon retries them as faults, not as idle-outs): the vendor's
# faults, someone else's stop, a task gone. A phrase not known here (a reason an older capctl stored in the
# vendor's own words) is not one.
FAULTS: Final = frozenset(
    {
        Phrase.START_FAILED,
        Phrase.ROOM_LOGIN_FAILED,
        Phrase.ENGINE_FAILED,
        Phrase.NETWORK_LOST,
        Phrase.USER_DISCONNECTED,
        Phrase.FAILED,
        Phrase.INTERNAL_ERROR,
        Phrase.OUT_OF_BAND,
        NOT_FOUND,
    }
)


def stop_reason(phrase: str, vendor_code: str) -> str:
    """A stop reason as every reader sees it: `idle timeout (ZEGO quit_reason 3)`."""
    return f"{phrase} ({vendor_code})"


def phrase_of(reason: str) -> str:
    """The vendor-neutral phrase of a stop reason (`idle timeout` of `idle timeout (ZEGO quit_reason 3)`)."""
    return reason.split(" (", 1)[0]


def vendor_code(value: object) -> int | None:
    """A numeric vendor code from a JSON answer, or None: a JSON `true` is not code 1."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
