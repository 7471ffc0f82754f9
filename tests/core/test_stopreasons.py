"""The stop-reason vocabulary: one phrase per cause, the vendor's own code beside it. The phrases are
`stopreasons`'; each vendor's codes are its provider's."""

from __future__ import annotations

import pytest

from reconciler import stopreasons
from reconciler.providers.volcengine import stop_reason_of
from reconciler.providers.zego_callbacks import callback_stop_reason
from reconciler.providers.zego_client import recording_stop_reason


@pytest.mark.parametrize(
    ("reason", "status", "expected"),
    [
        ("IdleTimeOut", 3, "idle timeout (Volcengine IdleTimeOut)"),
        ("StopByAPI", 3, "stopped out of band (Volcengine StopByAPI)"),
        ("StartTaskFailed", 4, "start failed (Volcengine StartTaskFailed)"),
        ("UserDisconnect", 3, "user disconnected (Volcengine UserDisconnect)"),
        ("UnknownStopReason", 3, "ended (Volcengine UnknownStopReason)"),
        ("SomethingNew", 3, "ended (Volcengine SomethingNew)"),
        (None, 3, "ended (Volcengine status 3)"),
        (None, 4, "failed (Volcengine status 4)"),
    ],
)
def test_volcengine_stop_reasons(reason: str | None, status: int, expected: str) -> None:
    assert stop_reason_of(reason, status) == expected


@pytest.mark.parametrize(
    ("status", "quit_reason", "rollover", "expected"),
    [
        (4, None, False, "ended (ZEGO status 4)"),  # the contract's "ended (status N)": polling cannot tell why
        (3, None, False, "ended (ZEGO status 3)"),
        (3, None, True, "max duration (ZEGO status 3)"),
        (4, 3, False, "idle timeout (ZEGO quit_reason 3)"),
        (4, 4, True, "max duration (ZEGO quit_reason 4)"),
        (4, 6, False, "network lost (ZEGO quit_reason 6)"),
        (4, 1001, False, "internal error (ZEGO quit_reason 1001)"),
        (4, True, False, "ended (ZEGO status 4)"),  # a JSON true is not a quit reason
    ],
)
def test_zego_recording_stop_reasons(status: int, quit_reason: object, rollover: bool, expected: str) -> None:
    assert recording_stop_reason(status, quit_reason, rollover=rollover) == expected


@pytest.mark.parametrize(
    ("event_type", "quit_reason", "expected"),
    [
        (2, 3, "idle timeout (ZEGO quit_reason 3)"),
        (2, None, "ended (ZEGO event_type 2)"),
        (5, None, "ended (ZEGO event_type 5)"),
        (7, None, "ended (ZEGO event_type 7)"),
        (1, None, None),
        (4, None, None),
    ],
)
def test_zego_callback_stop_reasons(event_type: int, quit_reason: object, expected: str | None) -> None:
    assert callback_stop_reason(event_type, quit_reason) == expected


def test_the_same_idle_out_reads_the_same_from_a_status_answer_and_from_a_callback() -> None:
    assert recording_stop_reason(4, 3) == callback_stop_reason(2, 3)
    assert stopreasons.phrase_of(recording_stop_reason(4, 3)) == stopreasons.phrase_of(stop_reason_of("IdleTimeOut", 3))


def test_the_vocabulary_knows_no_vendor() -> None:
    """A new vendor adds its codes to its provider, not here: nothing in `stopreasons` names a vendor."""
    names = " ".join(vars(stopreasons)).lower()
    assert "volc" not in names and "zego" not in names
    assert stopreasons.vendor_code(3) == 3 and stopreasons.vendor_code(True) is None
