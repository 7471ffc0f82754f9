"""Scenarios: deterministic for a seed, shaped as configured, played on the sim clock, refused when wrong."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.clock import FakeClock
from reconciler.sim import create_app
from reconciler.sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario, timeline
from tests.servers import sim_output
from tests.sim.conftest import SimClient, scenario_body

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def scenario(**fields: Any) -> Scenario:
    base: dict[str, Any] = {"seed": 3, "duration": 600, "rooms": 4, "session_length": {"min": 20, "max": 90}}
    base.update(fields)
    return parse_scenario(base)


def test_the_same_seed_gives_the_same_timeline_and_another_seed_another() -> None:
    s = scenario(gap={"min": 15, "max": 60}, users={"min": 1, "max": 3}, dropouts={"probability": 0.5})
    assert timeline(s) == timeline(
        scenario(gap={"min": 15, "max": 60}, users={"min": 1, "max": 3}, dropouts={"probability": 0.5})
    )
    other = timeline(s.model_copy(update={"seed": 4}))
    assert other != timeline(s)


def test_adding_rooms_leaves_the_traffic_of_the_others_alone() -> None:
    small = [a for a in timeline(scenario(rooms=2, gap={"min": 5, "max": 9})) if a.room_id == "room-0001"]
    large = [a for a in timeline(scenario(rooms=9, gap={"min": 5, "max": 9})) if a.room_id == "room-0001"]
    assert [(a.at, a.user_id, a.stream, a.publish) for a in small] == [
        (a.at, a.user_id, a.stream, a.publish) for a in large
    ]


def test_every_stream_is_published_then_unpublished_within_the_duration() -> None:
    s = scenario(
        vendor="zego",
        gap={"min": 15, "max": 60},
        users={"min": 1, "max": 4},
        streams_per_user={"min": 1, "max": 3},
        join_spread=10,
        dropouts={"probability": 1.0, "length": {"min": 1, "max": 5}},
    )
    live: Counter[tuple[str, str]] = Counter()
    times = []
    for a in timeline(s):
        key = (a.room_id, a.stream)
        live[key] += 1 if a.publish else -1
        assert live[key] in (0, 1), f"{key} published twice or unpublished while not published"
        times.append(a.at)
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= s.duration
    assert not +live, "everything is unpublished by the end"
    assert {a.stream.rsplit("-v", 1)[1] for a in timeline(s)} == {"0", "1", "2"}


def test_sessions_bunch_in_the_peak_hours() -> None:
    s = scenario(duration=86_400, rooms=50, sessions_per_day=24, peak_hours=[[9, 12]], peak_weight=4)
    starts = [a.at for a in timeline(s) if a.publish and a.user_id.endswith("-u0")]
    peak = sum(1 for t in starts if 9 <= t / 3600 < 12) / 3
    off = sum(1 for t in starts if not 9 <= t / 3600 < 12) / 21
    assert 2.5 < peak / off < 6, (peak, off)  # weight 4, minus sessions still running into the peak
    assert 0.7 * 50 * 24 < len(starts) < 1.3 * 50 * 24


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"rooms": 0}, "rooms: Input should be greater than or equal to 1"),
        ({"session_length": {"min": 9, "max": 3}}, "session_length: Value error, max (3) is below min (9)"),
        ({"peak_hours": [[20, 8]]}, "peak_hours: [20, 8] must satisfy"),
        ({"streams_per_user": {"min": 1, "max": 3}}, "volcengine users publish at most 2 streams"),
        ({"callbacks": {"loss": 1.5}}, "callbacks.loss: Input should be less than or equal to 1"),
        ({"sessions": 3}, "sessions: Extra inputs are not permitted"),
    ],
)
def test_a_wrong_scenario_names_the_field(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ScenarioError, match=r"^body: ") as caught:
        parse_scenario({"duration": 60, "rooms": 1, "session_length": {"min": 1, "max": 2}, **fields}, source="body")
    assert problem in str(caught.value)


def test_the_examples_load() -> None:
    for path in EXAMPLES.glob("*.yaml"):
        assert timeline(load_scenario(path)), path


async def test_a_scenario_plays_on_the_clock_through_the_control_api(client: SimClient) -> None:
    body = scenario_body()
    loaded = (await client.http.post("/_sim/scenario", json=body)).json()
    assert loaded["actions"] == len(timeline(parse_scenario(body))) and loaded["played"] == 0
    rooms = (await client.http.get("/_sim/rooms")).json()["rooms"]
    assert sorted(r["roomId"] for r in rooms) == ["room-0000", "room-0001", "room-0002"]
    first = timeline(parse_scenario(body))[0]
    await client.sim.advance(first.at)
    room = next(r for r in (await client.http.get("/_sim/rooms")).json()["rooms"] if r["roomId"] == first.room_id)
    assert room["users"] == [first.user_id]
    await client.sim.advance(300)
    status = (await client.http.get("/_sim/scenario")).json()
    assert status["finished"] and status["played"] == status["actions"]
    assert all(not r["streams"] for r in (await client.http.get("/_sim/rooms")).json()["rooms"])


async def test_a_wrong_scenario_body_is_refused_and_changes_nothing(client: SimClient) -> None:
    answer = await client.http.post(
        "/_sim/scenario", json={"duration": 10, "rooms": "many", "session_length": {"min": 1, "max": 2}}
    )
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("body: rooms: Input should be a valid integer")
    # A ZEGO app id in digits int() refuses (it was HTTP 500) is an app this simulator does not have.
    body = {"vendor": "zego", "app_id": "²", "duration": 10, "rooms": 1, "session_length": {"min": 1, "max": 2}}
    answer = await client.http.post("/_sim/scenario", json=body)
    assert answer.status_code == 400 and "no zego app '²'" in answer.json()["error"]
    assert (await client.http.get("/_sim/scenario")).json() == {"scenario": None}
    assert (await client.http.get("/_sim/rooms")).json() == {"rooms": []}


@pytest.mark.parametrize("case", ["bad file", "report without scenario"])
def test_capctl_sim_refuses_bad_scenario_options_before_serving(tmp_path: Path, case: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("duration: 60\nrooms: 2\nsession_length: {min: 5, max: 1}\n")
    options = ["--scenario", str(bad)] if case == "bad file" else ["--coverage-out", str(tmp_path / "c.json")]
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "sim", "--listen", "127.0.0.1:0", *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    expected = (
        f"sim: {bad}: session_length: Value error, max (1) is below min (5)"
        if case == "bad file"
        else "sim: --coverage-out needs --scenario"
    )
    assert expected in done.stderr
    assert "listening" not in done.stdout


ROOMS_OF_30_S = "seed: 2\nfirst_session_within: 0\ngap: {min: 1000, max: 1000}\nsession_length: {min: 30, max: 30}\n"


def play_to_the_end(spec: Path, out: Path, duration: int, before_the_end: Callable[[], object]) -> tuple[int, str]:
    """`capctl sim --fake-clock --scenario SPEC --coverage-out OUT`, its clock moved past the scenario's end
    once it listens and `before_the_end` has run: its exit code and output."""
    args = ["--listen", "127.0.0.1:0", "--fake-clock", "--scenario", str(spec), "--coverage-out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "sim", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output = sim_output(proc)
        url = output.url()  # listening: the start's checks are done
        assert f"playing a scenario of {duration} s" in output.lines[0]
        before_the_end()
        httpx.post(f"{url}/_sim/clock", json={"advance": duration + 1}, timeout=10).raise_for_status()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, output.text()


def test_capctl_sim_plays_a_scenario_prints_its_coverage_and_stops(tmp_path: Path) -> None:
    spec = tmp_path / "two-rooms.yaml"
    spec.write_text(f"{ROOMS_OF_30_S}duration: 120\nrooms: 2\njobs: [snap]\n")
    out = tmp_path / "coverage.json"
    code, text = play_to_the_end(spec, out, 120, lambda: None)
    assert code == 0, text
    assert "volcengine job snap: 0.00 % of 60 stream-seconds captured in 2 rooms; 2 gaps, longest 30.0 s" in text
    assert "    gaps by cause: never started 2 (longest 30.0 s)" in text  # the README promises their causes
    report = json.loads(out.read_text())
    assert [r["roomId"] for r in report["rooms"]] == ["room-0000", "room-0001"]
    assert report["streamSecondsPresent"] == 60 and report["calls"]["roomHours"] == pytest.approx(240 / 3600)


def test_a_coverage_report_that_cannot_be_written_is_named_and_exits_1(tmp_path: Path) -> None:
    """The report is written when the scenario ends, minutes to hours after the start's checks: a directory
    gone meanwhile (or a full disk) is an error naming the file, after the summary, never a traceback."""
    spec = tmp_path / "one-room.yaml"
    spec.write_text(f"{ROOMS_OF_30_S}duration: 60\nrooms: 1\njobs: [snap]\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    code, text = play_to_the_end(spec, reports / "c.json", 60, reports.rmdir)
    assert code == 1 and "volcengine job snap:" in text and "Traceback" not in text, text
    assert f"sim: cannot write the coverage report {reports / 'c.json'}: No such file or directory" in text


async def test_a_scenario_being_played_reports_its_progress() -> None:
    """`capctl sim --scenario` plays minutes to hours of traffic: while it plays, the server says how far it is
    (every 30 s of real time under `capctl sim`), not only the summary at the end."""
    statuses: list[dict[str, Any]] = []
    clock = FakeClock()
    app = create_app(clock=clock, on_scenario_progress=statuses.append, progress_every=0.1)
    app.state.sim.load_scenario(scenario(duration=120, rooms=2, first_session_within=0))
    await app.state.sim.advance(30)
    async with app.router.lifespan_context(app):
        for _ in range(100):
            if statuses:
                break
            await asyncio.sleep(0.05)
    assert statuses and statuses[0]["end"] - statuses[0]["start"] == 120 and not statuses[0]["finished"]
    assert 0 < statuses[0]["played"] < statuses[0]["actions"]


# Walk 16E-10: `capctl sim --scenario` on a file PyYAML's constructors or its recursion cannot take was a
# traceback (IndexError for `!!int` on nothing, KeyError for `!!bool maybe`, RecursionError for 1,000 `[`).
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: !!int\n", "a tagged value it cannot build"),
        ("seed: !!bool maybe\n", "a tagged value it cannot build"),
        ("[" * 1000, "nested too deeply"),  # past the recursion limit, cheaply
    ],
)
def test_a_scenario_file_yaml_cannot_build_is_an_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=rf"s\.yaml: not valid YAML \({message}"):
        load_scenario(path)
