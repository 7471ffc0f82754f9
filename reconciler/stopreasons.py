"""One vocabulary for why a vendor task stopped: plans, the state (`state list`), daemon logs and metrics.

Each vendor says it its own way (Volcengine `StopReason: IdleTimeOut`, a ZEGO recording's `Status` 4, a ZEGO
callback's `quit_reason` 3), and the same idle-out used to read `IdleTimeOut`, `ended (status 4)` or
`idle timeout` depending on who saw it. Every stop reason is now `<phrase> (<vendor> <code>)`: the phrase is
capctl's and the same for every vendor, the vendor's own code beside it keeps the evidence. Polling a ZEGO
recording that does not say why it ended gives `ended (ZEGO status N)`. Pure: no I/O. The mapping table is in
docs/providers-volcengine.md and docs/providers-zego.md.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "IDLE_TIMEOUT",
    "NOT_FOUND",
    "ZEGO_QUIT_MAX_DURATION",
    "phrase_of",
    "volcengine",
    "zego_callback",
    "zego_recording",
]

IDLE_TIMEOUT: Final = "idle timeout"
MAX_DURATION: Final = "max duration"
OUT_OF_BAND: Final = "stopped out of band"
START_FAILED: Final = "start failed"
ENDED: Final = "ended"  # the vendor ended it and did not say why
FAILED: Final = "failed"
NOT_FOUND: Final = "not found at the vendor"

# Volcengine GetSnapshotTask `StopReason` (vendor-apis.md).
VOLC_STOP_REASONS: Final = {
    "IdleTimeOut": IDLE_TIMEOUT,
    "StopByAPI": OUT_OF_BAND,  # capctl's own stops are never observed as a stop to re-issue: someone else's
    "StartTaskFailed": START_FAILED,
    "UserDisconnect": "user disconnected",
    "UnknownStopReason": ENDED,
}
# ZEGO cloud-recording `detail.quit_reason` of an abnormal end (event_type 2); 1001+ are internal errors.
ZEGO_QUIT_REASONS: Final = {
    1: START_FAILED,
    2: "room login failed",
    3: IDLE_TIMEOUT,
    4: MAX_DURATION,
    5: "engine failed",
    6: "network lost",
}
ZEGO_QUIT_MAX_DURATION: Final = 4
ZEGO_ABNORMAL_END: Final = 2
ZEGO_END_EVENTS: Final = frozenset({5, 7})  # normal exit; stopped, uploading


def stop_reason(phrase: str, vendor_code: str) -> str:
    return f"{phrase} ({vendor_code})"


def phrase_of(reason: str) -> str:
    """The vendor-neutral phrase of a stop reason (`idle timeout` of `idle timeout (ZEGO quit_reason 3)`)."""
    return reason.split(" (", 1)[0]


def volcengine(reason: str | None, status: object) -> str:
    """A Volcengine snapshot task's `StopReason` (or, without one, its `Status`: 3 ended, 4 failed)."""
    if reason:
        return stop_reason(VOLC_STOP_REASONS.get(reason, ENDED), f"Volcengine {reason}")
    return stop_reason(FAILED if status == 4 else ENDED, f"Volcengine status {status}")


def zego_recording(status: object, quit_reason: object = None, *, rollover: bool = False) -> str:
    """A ZEGO recording that ended: its `quit_reason` when known (a callback, or a status answer carrying one),
    else its status; a run as long as its max duration is a max-duration end whatever the status says."""
    if isinstance(quit_reason, int) and not isinstance(quit_reason, bool):
        return stop_reason(ZEGO_QUIT_REASONS.get(quit_reason, "internal error"), f"ZEGO quit_reason {quit_reason}")
    return stop_reason(MAX_DURATION if rollover else ENDED, f"ZEGO status {status}")


def zego_callback(event_type: int, quit_reason: object) -> str | None:
    """Why a ZEGO cloud-recording callback says the run ended, or None when the event is not an end."""
    if event_type == ZEGO_ABNORMAL_END and isinstance(quit_reason, int) and not isinstance(quit_reason, bool):
        return zego_recording(None, quit_reason)
    if event_type == ZEGO_ABNORMAL_END or event_type in ZEGO_END_EVENTS:
        return stop_reason(ENDED, f"ZEGO event_type {event_type}")
    return None
