"""`reconciler.adopt`: what `capctl state import` records for a vendor task, and every reason it refuses."""

from __future__ import annotations

import pytest

from reconciler.adopt import AdoptError, Claims, adopted, check_unclaimed, probe
from reconciler.model import ApiFamily, JobKind, Observed, ObservedState, TaskRecord, TaskStatus
from tests.core.factories import desired, record_for

NOW = 1_800_000_000.0


def test_a_running_task_is_recorded_as_a_start_of_the_spec_would_have_been() -> None:
    task = desired("lobby", job="audit")
    found = adopted(probe(task, "their-id", NOW, app_id="1"), Observed(ObservedState.RUNNING, started_at=NOW - 3600))
    assert (found.status, found.vendor_task_id, found.started_at) == (TaskStatus.RUNNING, "their-id", NOW - 3600)
    assert found.vendor_ref == {"AppId": "app", "RoomId": "lobby", "TaskId": "their-id"}
    assert (found.spec_hash, found.client_task_id, found.reissue_count) == (task.spec_hash, None, 0)


def test_a_zego_recording_keeps_no_client_task_id_and_a_thumbnail_is_taken_as_submitted() -> None:
    zego = desired("class-1", family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING)
    found = adopted(probe(zego, "0123abcd", NOW, app_id="1"), Observed(ObservedState.RUNNING, room="class-1"))
    assert (found.client_task_id, found.vendor_ref) == (None, {"TaskId": "0123abcd", "RoomId": "class-1", "AppId": "1"})
    thumb = desired("1397757897438985100", family=ApiFamily.ZEGO_THUMBNAIL, kind=JobKind.THUMBNAIL)
    assert adopted(probe(thumb, "thumb-1", NOW, app_id="1"), None).status is TaskStatus.DONE


@pytest.mark.parametrize(
    ("observed", "message"),
    [
        (Observed(ObservedState.RUNNING, room="class-2"), "the vendor reports 0123abcd in room class-2, not in"),
        # The vendor's room text, quoted when no room can have it: no escape sequence, no 10 kB in the message.
        (Observed(ObservedState.RUNNING, room="\x1b[2J" + "x" * 10_000), "in room '\\x1b[2Jxxx"),
        (Observed(ObservedState.NOT_FOUND), "the vendor does not know the ZEGO recording 0123abcd (current API)"),
        (Observed(ObservedState.STOPPED, reason="idle timeout (ZEGO quit_reason 3)"), "has ended (idle timeout"),
        (Observed(ObservedState.UNKNOWN, detail="DescribeRecordStatus: timeout"), "could not read the status"),
    ],
)
def test_a_task_not_proven_running_in_the_room_is_refused(observed: Observed, message: str) -> None:
    task = desired("class-1", family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING)
    with pytest.raises(AdoptError) as refused:
        adopted(probe(task, "0123abcd", NOW, app_id="1"), observed)
    said = str(refused.value)
    assert message in said and "nothing" in said and said.isprintable() and len(said) < 400


def test_a_volcengine_task_not_found_names_the_72_hour_window_and_the_room() -> None:
    """A TaskId of another room (a list's lines mixed up) was explained by the 72 h window only (walk 36d-2)."""
    with pytest.raises(AdoptError, match="started in the last 72 hours: a TaskId of another room is not found"):
        adopted(probe(desired(), "old-task", NOW, app_id="1"), Observed(ObservedState.NOT_FOUND))


@pytest.mark.parametrize("vendor_id", ["", "has space", " lead", "x" * 129, "bad/slash"])
def test_an_id_the_vendor_could_not_hold_is_refused_before_any_call(vendor_id: str) -> None:
    with pytest.raises(AdoptError, match="vendor task id"):
        probe(desired(), vendor_id, NOW, app_id="1")


def test_a_tracked_key_or_a_vendor_task_another_key_holds_is_not_imported() -> None:
    lobby = desired("lobby", job="audit")
    tomb = record_for(lobby, TaskStatus.REMOVED)
    with pytest.raises(AdoptError, match=r"already in the state \(a tombstone of a removed job"):
        check_unclaimed(probe(lobby, "audit", NOW, app_id="1"), {lobby.key: tomb})
    # Another job whose record runs the same Volcengine task (AppId, RoomId, TaskId).
    other = desired("lobby", job="renamed")
    held = record_for(other, vendor_ref={"AppId": "app", "RoomId": "lobby", "TaskId": "audit"})
    with pytest.raises(AdoptError, match="already recorded as SnapshotJob/renamed/lobby's"):
        check_unclaimed(probe(lobby, "audit", NOW, app_id="1"), {other.key: held})
    zego = desired("class-1", family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING)
    zego_held = record_for(desired("class-1", job="x", family=ApiFamily.ZEGO_RECORD, kind=JobKind.RECORDING))
    with pytest.raises(AdoptError, match="already recorded as"):
        check_unclaimed(probe(zego, str(zego_held.vendor_task_id), NOW, app_id="1"), {zego_held.key: zego_held})
    check_unclaimed(probe(lobby, "audit", NOW, app_id="1"), {other.key: held.evolve(status=TaskStatus.REMOVED)})


def test_a_list_is_checked_against_a_large_state_in_one_pass_over_its_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`state import --from` compared every line with every record: 1,000 lines against a state of 10,000
    took 20 s before any vendor call, and as long again under the lock. The state is now indexed once."""
    from reconciler import transitions

    records = {}
    for n in range(300):
        task = desired(f"room-{n}", job="audit")
        records[task.key] = record_for(task, vendor_ref={"AppId": "app", "RoomId": f"room-{n}", "TaskId": f"t{n}"})
    reads = 0
    real = transitions.volc_task_held

    def counted(record: TaskRecord | None) -> tuple[str, str, str] | None:
        nonlocal reads
        reads += 1
        return real(record)

    monkeypatch.setattr(transitions, "volc_task_held", counted)
    claims = Claims(records)
    for n in range(100):
        check_unclaimed(probe(desired(f"room-{n}", job="new"), f"n{n}", NOW, app_id="1"), claims)
    with pytest.raises(AdoptError, match="already recorded as SnapshotJob/audit/room-7's"):
        check_unclaimed(probe(desired("room-7", job="new"), "t7", NOW, app_id="1"), claims)
    assert reads == len(records)
