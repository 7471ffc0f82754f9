"""The callback router on its own: a signed webhook in, the keys and hints it means out (no daemon)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from structlog.testing import capture_logs

from reconciler.daemon.metrics import Metrics
from reconciler.daemon.records import RecordCache
from reconciler.daemon.router import ROOM_USERS_MEMORY, CallbackRouter, RoutedCallback
from reconciler.model import ProviderConfig, TaskStatus
from reconciler.providers.volc_signing import sign_callback
from reconciler.spec import load_spec_set
from reconciler.state import open_state
from tests.daemon.conftest import write_specs
from tests.daemon.test_units import record
from tests.specdocs import snapshot_job

NOW = 1_750_000_000.0
SECRET = "capctl-sim-volc-callback"  # the default of the `volc` Provider's callbackSecret (tests/specdocs.py)
LOBBY, HALL = "SnapshotJob/cam/lobby", "SnapshotJob/cam/hall"


def _router(
    tmp_path: Path, room_memory: int = ROOM_USERS_MEMORY
) -> tuple[CallbackRouter, list[ProviderConfig], Metrics]:
    spec = load_spec_set([str(write_specs(tmp_path / "specs", snapshot_job("cam", ["lobby", "hall"])))])
    records = RecordCache(open_state(f"sqlite:///{tmp_path / 'state.db'}"))
    run = {"AppId": "capctl-sim-volc", "RoomId": "lobby"}
    records.put(
        record(
            key=LOBBY, provider="volc", target="lobby", status=TaskStatus.RUNNING, vendor_task_id="t-1", vendor_ref=run
        )
    )
    metrics = Metrics()
    router = CallbackRouter(records, metrics, room_memory=room_memory)
    router.index(spec)
    return router, list(spec.providers.values()), metrics


def _route(
    router: CallbackRouter,
    providers: list[ProviderConfig],
    event_type: str,
    event_id: str,
    *,
    at: float = NOW,
    **data: str,
) -> RoutedCallback:
    """A signed Volcengine callback of vendor time `at` (EventTime, in ms), routed at NOW."""
    body = {
        "EventType": event_type,
        "EventData": json.dumps(data),
        "EventTime": str(int(at * 1000)),
        "EventId": event_id,
        "AppId": "capctl-sim-volc",
        "Version": "2020-12-01",
        "Nonce": "n",
    }
    body["Signature"] = sign_callback(body, SECRET)
    return router.route("volcengine", json.dumps(body).encode(), providers, NOW)


def test_a_callback_names_its_run_the_room_keys_and_when_a_room_empties(tmp_path: Path) -> None:
    router, providers, metrics = _router(tmp_path)
    image = _route(router, providers, "SnapshotRealTimeData", "e1", TaskId="t-1", RoomId="lobby")
    assert (image.status, image.outcome, image.task_key) == (200, "accepted", LOBBY)
    assert image.event is not None and image.event.output and image.woken == () == image.emptied
    joined = _route(router, providers, "UserJoinRoom", "e2", RoomId="lobby", UserId="u1")
    assert joined.task_key is None and joined.woken == (LOBBY,) and joined.emptied == ()
    assert _route(router, providers, "UserJoinRoom", "e3", RoomId="hall", UserId="u2").woken == (HALL,)
    left = _route(router, providers, "UserLeaveRoom", "e4", at=NOW + 1, RoomId="lobby", UserId="u1")
    assert left.emptied == (LOBBY,)
    assert _route(router, providers, "UserLeaveRoom", "e5", RoomId="elsewhere", UserId="u3").emptied == ()
    again = _route(router, providers, "UserLeaveRoom", "e4", at=NOW + 1, RoomId="lobby", UserId="u1")  # a retry
    assert (again.outcome, again.event) == ("duplicate", None)
    sample = metrics.registry.get_sample_value
    assert sample("capctl_callbacks_total", {"vendor": "volcengine", "outcome": "accepted"}) == 5
    assert sample("capctl_callbacks_total", {"vendor": "volcengine", "outcome": "duplicate"}) == 1


def test_a_signed_callback_without_an_event_id_is_refused_not_taken_as_a_duplicate(tmp_path: Path) -> None:
    """EventId is what the vendor's retries share (the dedupe key): signed as "", every such callback was the
    same one, and all but the first were answered "duplicate" and dropped without a word."""
    router, providers, _ = _router(tmp_path)
    for n in range(2):
        routed = _route(router, providers, "UserJoinRoom", "", RoomId="lobby", UserId=f"u{n}")
        assert (routed.status, routed.outcome, routed.woken) == (400, "rejected", ())
        assert routed.reason == "malformed callback: EventId is empty or not text (what names a callback)"


def test_an_unsigned_callback_is_refused_and_names_no_key(tmp_path: Path) -> None:
    router, providers, metrics = _router(tmp_path)
    routed = router.route("volcengine", b'{"AppId": "capctl-sim-volc"}', providers, NOW)
    assert (routed.status, routed.outcome, routed.task_key, routed.woken) == (401, "rejected", None, ())
    assert (
        metrics.registry.get_sample_value("capctl_callbacks_total", {"vendor": "volcengine", "outcome": "rejected"})
        == 1
    )
    assert not CallbackRouter.knows("tencent") and CallbackRouter.knows("zego")


def test_a_refused_callback_names_its_app_and_each_app_is_said_once_a_minute(tmp_path: Path) -> None:
    """`callback rejected` named the vendor only: an operator with two apps could not tell whose callback URL or
    secret was wrong, and one app's refusals held the other's back for the minute (walk 16a). A declared app is
    named and said once a minute; an app id no Provider declares is quoted in its reason, and made-up ids share
    one line (a forger adds no lines by inventing apps)."""
    router, providers, _ = _router(tmp_path)
    volc = next(p for p in providers if p.type == "volcengine")
    both = [*providers, dataclasses.replace(volc, name="volc-b", app_id="app-b")]

    def forged(app: str) -> bytes:
        return json.dumps({"AppId": app, "Signature": "forged", "EventTime": str(int(NOW * 1000))}).encode()

    with capture_logs() as logs:
        for app in ("capctl-sim-volc", "app-b", "capctl-sim-volc", "app-b", "made-up-1", "made-up-2"):
            assert router.route("volcengine", forged(app), both, NOW).status == 401
    bad = "bad signature (check the Provider's callbackSecret)"
    assert [(e.get("app_id"), e["reason"]) for e in logs if e["event"] == "callback rejected"] == [
        ("capctl-sim-volc", bad),
        ("app-b", bad),
        (None, "no Provider for volcengine app id 'made-up-1': cannot verify the callback"),
    ]


def test_stream_events_track_users_and_a_late_callback_of_an_earlier_moment_is_stale(tmp_path: Path) -> None:
    router, providers, _ = _router(tmp_path)
    started = _route(router, providers, "UserVideoStreamStart", "s1", at=NOW - 10, RoomId="lobby", UserId="u1")
    assert started.woken == (LOBBY,) and not started.stale
    late = _route(router, providers, "UserLeaveRoom", "l0", at=NOW - 20, RoomId="lobby", UserId="u1")
    assert late.stale and late.emptied == () and late.woken == ()  # from before her stream: she is in
    stopped = _route(router, providers, "UserVideoStreamStop", "s2", at=NOW - 5, RoomId="lobby", UserId="u1")
    assert stopped.emptied == (LOBBY,)  # the only user we saw stopped her stream: the room may be empty
    destroyed = _route(router, providers, "RoomDestroy", "d1", at=NOW - 4, RoomId="lobby")
    # said already by her stream stop: a close reports the room's tasks anyway (ZEGO's room callbacks name no
    # user, so the router cannot tell a repeat), and `Reconciler._emptied` skips a task told since its activity
    assert destroyed.emptied == (LOBBY,) and not destroyed.stale
    retried = _route(router, providers, "UserJoinRoom", "j0", at=NOW - 6, RoomId="lobby", UserId="u1")
    assert retried.stale and retried.woken == ()  # a join older than the room's close wakes nothing
    _route(router, providers, "UserJoinRoom", "j1", at=NOW - 3, RoomId="lobby", UserId="u2")
    closed = _route(router, providers, "RoomDestroy", "d2", at=NOW - 1, RoomId="lobby")
    assert closed.emptied == (LOBBY,)  # her leave was lost: the room's close says it


def test_the_users_of_rooms_whose_leaves_were_lost_are_not_kept_for_ever(tmp_path: Path) -> None:
    """Before, a room whose last leave and close callbacks were lost kept its users for the process's life,
    one entry per such room ever made. Past the cap the least recently changed room is forgotten: its next
    leave counts as the room emptying (a few extra looks), as for a user who joined before the daemon started."""
    router, providers, _ = _router(tmp_path, room_memory=2)
    _route(router, providers, "UserJoinRoom", "a", RoomId="lobby", UserId="u1")
    _route(router, providers, "UserJoinRoom", "b", RoomId="lobby", UserId="u2")
    assert _route(router, providers, "UserLeaveRoom", "c", at=NOW + 1, RoomId="lobby", UserId="u1").emptied == ()
    for n in range(2):  # rooms whose leaves never arrive
        _route(router, providers, "UserJoinRoom", f"x{n}", RoomId=f"gone-{n}", UserId="u")
    left = _route(router, providers, "UserLeaveRoom", "d", at=NOW + 2, RoomId="lobby", UserId="u1")
    assert left.emptied == (LOBBY,)  # lobby's u2 was forgotten with it: its leave may have emptied the room
