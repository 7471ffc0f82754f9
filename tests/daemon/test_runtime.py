"""The per-key runtime value and its transitions, on their own (no daemon, no clock)."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.daemon import policy, runtime
from reconciler.daemon.runtime import EMPTY, KeyRuntime, RuntimeMap


def test_the_value_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EMPTY.observe_now = True  # type: ignore[misc]


def test_an_end_hint_asks_for_a_look_and_keeps_what_the_callback_said() -> None:
    rt = runtime.end_hinted(EMPTY, "run-1", rollover=True, reason="max duration (ZEGO quit_reason 4)")
    assert rt.observe_now and rt.rollover_hint == "run-1"
    assert rt.end_reason == ("run-1", "max duration (ZEGO quit_reason 4)")
    plain = runtime.end_hinted(rt, "run-2", rollover=False, reason=None)
    assert plain.rollover_hint == "run-1" and plain.end_reason == rt.end_reason  # nothing new said: kept


def test_one_transition_after_an_action_clears_every_hint_but_room_activity() -> None:
    busy = KeyRuntime(
        next_observe=10.0,
        looked_at=5.0,
        observe_now=True,
        rollover_hint="run-1",
        end_reason=("run-1", "idle timeout"),
        room_activity=7.0,
        probe_until=12.0,
        unconfirmed="unknown",
    )
    assert runtime.acted(busy) == KeyRuntime(room_activity=7.0)
    assert runtime.acted(KeyRuntime(next_observe=3.0)) == EMPTY


def test_a_look_while_probing_a_running_task_comes_every_probe_interval_after_the_stop() -> None:
    probing = runtime.probing(EMPTY, stop=100.0)
    assert probing.probe_until == 100.0 + policy.DEADLINE_MARGIN
    before = runtime.looked(probing, 50.0, swept=80.0, running=True)
    assert before.next_observe == 80.0 and before.looked_at == 50.0  # the regular sweep comes first
    after = runtime.looked(probing, 101.0, swept=130.0, running=True)
    assert after.next_observe == 101.0 + policy.PROBE_INTERVAL and after.probe_until == probing.probe_until
    stopped = runtime.looked(probing, 101.0, swept=130.0, running=False)
    assert stopped.next_observe == 130.0 and stopped.probe_until is None  # seen stopped: probing ends


def test_a_hinted_look_is_held_to_one_sweep_period_after_the_last_observation() -> None:
    assert runtime.hinted_look(EMPTY, hint=500.0, last=100.0, period=30.0).next_observe == 130.0
    assert runtime.hinted_look(EMPTY, hint=110.0, last=100.0, period=30.0).next_observe == 110.0


def test_forgetting_a_removed_task_keeps_its_callback_hints() -> None:
    rt = KeyRuntime(next_observe=1.0, looked_at=2.0, unconfirmed="stopped", rollover_hint="r")
    assert runtime.forgotten(rt) == KeyRuntime(rollover_hint="r")


def test_the_map_holds_only_keys_that_carry_something() -> None:
    runtimes = RuntimeMap()
    assert runtimes.get("j/a") is EMPTY
    runtimes.set("j/a", runtime.unconfirmed(EMPTY, "unknown"))
    runtimes.set("j/b", runtime.room_active(EMPTY, 3.0))
    assert runtimes.unconfirmed() == {"j/a": "unknown"}
    runtimes.clear_unconfirmed()
    assert runtimes.unconfirmed() == {} and runtimes.get("j/a") is EMPTY
    assert runtimes.get("j/b").room_activity == 3.0
    runtimes.set("j/b", runtime.acted(EMPTY))
    assert runtimes.get("j/b") is EMPTY
