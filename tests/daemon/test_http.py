"""The HTTP side: callback signatures, staleness, duplicates, malformed bodies, probes and metrics."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import httpx
import pytest
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp
from structlog.testing import capture_logs

from reconciler.clock import FakeClock, Throttle
from reconciler.daemon.bodies import MAX_JSON_DEPTH, load_json
from reconciler.daemon.connections import DEFAULT_MAX_CONNECTIONS, FD_RESERVE, default_max_connections
from reconciler.daemon.http import MAX_WALKS, parse_sync_body
from reconciler.daemon.starting import Front
from reconciler.headers import NoSniffApp
from reconciler.providers.volc_signing import sign_callback
from reconciler.providers.zego_signing import callback_signature
from reconciler.spec import SpecErrors, load_spec_set
from reconciler.state.sql import iso_utc
from tests.daemon.conftest import DAEMON, Harness, write_specs
from tests.specdocs import snapshot_job

VOLC_SECRET = "capctl-sim-volc-callback"
ZEGO_SECRET = "capctl-sim-zego-callback"


def volc_body(
    harness: Harness,
    *,
    event_id: str = "e1",
    secret: str = VOLC_SECRET,
    skew: float = 0.0,
    event_type: str = "UserJoinRoom",
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "EventType": event_type,
        "EventData": json.dumps(data or {"RoomId": "lobby", "UserId": "u"}),
        "EventTime": datetime.fromtimestamp(harness.clock.now() + skew, UTC).isoformat(),
        "EventId": event_id,
        "AppId": "capctl-sim-volc",
        "Version": "2020-12-01",
        "Nonce": "abcd",
    }
    body["Signature"] = sign_callback(body, secret)
    return body


def zego_body(
    harness: Harness,
    *,
    secret: str = ZEGO_SECRET,
    sequence: int = 1,
    skew: float = 0.0,
    nonce: str = "123412",
    task_id: str = "t",
    room_id: str = "r",
) -> dict[str, Any]:
    """A signed ZEGO event_type 4 (room has no stream) callback."""
    timestamp = int(harness.clock.now() + skew)
    return {
        "app_id": 1234567890,
        "task_id": task_id,
        "room_id": room_id,
        "event_type": 4,
        "message": "",
        "sequence": sequence,
        "detail": {},
        "timestamp": timestamp,
        "nonce": nonce,
        "signature": callback_signature(secret, str(timestamp), nonce),
    }


async def client(harness: Harness) -> httpx.AsyncClient:
    assert harness.daemon is not None
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.daemon.asgi_app), base_url=DAEMON)


async def test_volcengine_callbacks_are_verified(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    async with await client(harness) as http:
        ok = await http.post("/callbacks/volcengine", json=volc_body(harness))
        assert ok.status_code == 200 and ok.json()["reason"] == "accepted"
        forged = await http.post("/callbacks/volcengine", json=volc_body(harness, event_id="e2", secret="guess"))
        assert forged.status_code == 401 and "bad signature" in forged.json()["reason"]
        unsigned = volc_body(harness, event_id="e3")
        del unsigned["Signature"]
        missing = await http.post("/callbacks/volcengine", json=unsigned)
        assert missing.status_code == 401 and "missing Signature" in missing.json()["reason"]
        stale = await http.post("/callbacks/volcengine", json=volc_body(harness, event_id="e4", skew=-301))
        assert stale.status_code == 401 and "stale callback" in stale.json()["reason"]
        assert "301 s behind" in stale.json()["reason"]
        tampered = volc_body(harness, event_id="e5")
        tampered["EventData"] = json.dumps({"RoomId": "vip", "UserId": "u"})
        assert (await http.post("/callbacks/volcengine", json=tampered)).status_code == 401
        other_app = volc_body(harness, event_id="e6") | {"AppId": "someone-else"}
        unknown = await http.post("/callbacks/volcengine", json=other_app)
        assert unknown.status_code == 401 and "someone-else" in unknown.json()["reason"]
        text = (await http.get("/metrics")).text
    assert 'capctl_callbacks_total{outcome="rejected",vendor="volcengine"} 5.0' in text
    assert VOLC_SECRET not in text


async def test_duplicates_are_accepted_once_and_acted_on_once(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    body = zego_body(harness, sequence=42)
    async with await client(harness) as http:
        first = await http.post("/callbacks/zego", json=body)
        again = await http.post("/callbacks/zego", json=body)
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.json()["reason"] == "duplicate: already accepted"
        stale = await http.post("/callbacks/zego", json=zego_body(harness, sequence=43, skew=400))
        assert stale.status_code == 401 and "ahead of" in stale.json()["reason"]
        forged = await http.post("/callbacks/zego", json=zego_body(harness, sequence=44, secret="nope"))
        assert forged.status_code == 401
    assert harness.daemon is not None
    sample = harness.daemon.metrics.registry.get_sample_value
    assert sample("capctl_callbacks_total", {"vendor": "zego", "outcome": "accepted"}) == 1
    assert sample("capctl_callbacks_total", {"vendor": "zego", "outcome": "duplicate"}) == 1


async def test_malformed_callbacks_get_400_naming_the_problem(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    async with await client(harness) as http:
        broken = await http.post("/callbacks/volcengine", content=b'{"EventType": ')
        assert broken.status_code == 400 and "malformed JSON at line 1 column 15" in broken.json()["reason"]
        listed = await http.post("/callbacks/zego", content=b"[1, 2]")
        assert listed.status_code == 400 and "expected a JSON object, got list" in listed.json()["reason"]
        no_app = await http.post("/callbacks/zego", json={"task_id": "t"})
        assert no_app.status_code == 400 and "app_id is missing" in no_app.json()["reason"]
        bad_data = volc_body(harness, event_id="x") | {"EventData": "{not json"}
        bad_data["Signature"] = sign_callback(bad_data, VOLC_SECRET)
        answer = await http.post("/callbacks/volcengine", json=bad_data)
        assert answer.status_code == 400 and "EventData is not JSON" in answer.json()["reason"]
        listed_data = volc_body(harness, event_id="z") | {"EventData": "[1]"}
        listed_data["Signature"] = sign_callback(listed_data, VOLC_SECRET)
        answer = await http.post("/callbacks/volcengine", json=listed_data)
        assert (answer.status_code, answer.json()["reason"]) == (
            400,
            "malformed callback: EventData is not a JSON object",
        )
        assert (await http.post("/callbacks/other", json={})).status_code == 404
        # A signed callback whose EventData nests past the limit: parseable, but refused before anything walks it.
        deep = volc_body(harness, event_id="y") | {"EventData": "[" * 33 + "]" * 33}
        deep["Signature"] = sign_callback(deep, VOLC_SECRET)
        answer = await http.post("/callbacks/volcengine", json=deep)
        assert answer.status_code == 400
        assert answer.json()["reason"] == (
            "malformed callback: EventData is not JSON (malformed JSON: nested deeper than 32 levels)"
        )


async def test_text_no_encoder_takes_is_refused_in_words_never_500(harness: Harness) -> None:
    """Anyone who reaches the port, no secret needed: a Volcengine Signature outside ASCII (hmac.compare_digest
    refuses such str), or a `\\ud800` escape (a lone surrogate: every encode of it raised) in a callback's
    signature or nonce or a sync key, was a 500 with a traceback logged per request, never throttled."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    lone = "malformed JSON: a string holds a lone surrogate (U+D800), which is no character"
    cases = [
        ("/callbacks/volcengine", volc_body(harness, event_id="a") | {"Signature": "é" * 64}, 401, "bad signature"),
        ("/callbacks/volcengine", volc_body(harness, event_id="b") | {"Signature": "\ud800"}, 400, lone),
        ("/callbacks/zego", zego_body(harness) | {"signature": "\ud800"}, 400, lone),
        ("/callbacks/zego", zego_body(harness) | {"nonce": "\ud800"}, 400, lone),
        ("/api/v1/sync", {"keys": ["\ud800"]}, 400, lone),
        # The text `\ud800` (an escaped backslash) then a lone `\udc00` escape: read as a pair by the byte check.
        ("/callbacks/zego", zego_body(harness) | {"nonce": "\\ud800\udc00"}, 400, lone.replace("D800", "DC00")),
    ]
    async with await client(harness) as http:
        for route, body, status, reason in cases:
            answer = await http.post(route, content=json.dumps(body).encode())  # ensure_ascii: the escape
            assert answer.status_code == status and answer.json()["reason"].startswith(reason), route
        # json.loads reads UTF-16 bytes too, where no check that reads the bytes sees the escape: UTF-8 only.
        utf16 = json.dumps(zego_body(harness) | {"nonce": "\ud800"}).encode("utf-16")
        answer = await http.post("/callbacks/zego", content=utf16)
        assert (answer.status_code, answer.json()["reason"]) == (400, "malformed JSON: the body is not UTF-8")
    assert harness.daemon is not None
    sample = harness.daemon.metrics.registry.get_sample_value
    assert sample("capctl_callbacks_total", {"vendor": "volcengine", "outcome": "rejected"}) == 2
    assert sample("capctl_callbacks_total", {"vendor": "zego", "outcome": "rejected"}) == 4
    # What is text stays text: an escaped pair (an emoji as an ASCII-only encoder writes it), `\ud800` as text.
    for text in ("\U0001f600", "\\ud800", "\\\U0001f600", "\\ud800\\udc00"):
        assert load_json(json.dumps([text]).encode()) == [text]


async def test_a_signed_callback_whose_time_is_not_a_time_gets_400_naming_it(harness: Harness) -> None:
    """The time is read after the signature is checked: a vendor's (or a signing proxy's) odd time field is
    answered 400 saying what is wrong with it, never 500, and nothing is stored."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    cases: list[tuple[str, dict[str, Any], str]] = []
    for n, (time, why) in enumerate(
        (
            ("yesterday", "EventTime 'yesterday' is not a time"),
            ("2026-12-06T08:00:00", "EventTime '2026-12-06T08:00:00' has no time zone"),
            (True, "EventTime is not a time"),
            ([1733456789], "EventTime is not a time"),
        )
    ):
        body = volc_body(harness, event_id=f"t{n}") | {"EventTime": time}
        body["Signature"] = sign_callback(body, VOLC_SECRET)
        cases.append(("/callbacks/volcengine", body, why))
    superscript = zego_body(harness) | {"timestamp": "1²"}  # str.isdigit() holds, int() refuses
    superscript["signature"] = callback_signature(ZEGO_SECRET, "1²", superscript["nonce"])
    cases.append(("/callbacks/zego", superscript, "timestamp '1²' is not a time"))
    for digits in (400, 5000):  # over a float's range once divided by 1000; over Python's int limit
        long = zego_body(harness) | {"timestamp": "9" * digits}
        long["signature"] = callback_signature(ZEGO_SECRET, long["timestamp"], long["nonce"])
        cases.append(("/callbacks/zego", long, f"timestamp {'9' * 40!r} is not a time"))
    async with await client(harness) as http:
        for route, body, why in cases:
            answer = await http.post(route, json=body)
            assert (answer.status_code, answer.json()["reason"]) == (400, f"malformed callback: {why}")
    assert harness.daemon is not None
    sample = harness.daemon.metrics.registry.get_sample_value
    assert sample("capctl_callbacks_total", {"vendor": "volcengine", "outcome": "rejected"}) == 4
    assert sample("capctl_callbacks_total", {"vendor": "zego", "outcome": "rejected"}) == 3


async def test_what_an_unverified_client_sent_is_quoted_at_a_bounded_size(harness: Harness) -> None:
    """An unknown app id (or sync key) of 100,000 characters: the answer and the log line quote its start and
    its length, so each request under the 1 MiB limit cannot write a megabyte of log."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    async with await client(harness) as http:
        with capture_logs() as logs:
            for route, field in (("/callbacks/volcengine", "AppId"), ("/callbacks/zego", "app_id")):
                answer = await http.post(route, json={field: "A" * 100_000, "Signature": "x", "signature": "x"})
                assert answer.status_code == 401
                assert answer.json()["reason"].endswith(
                    f"app id '{'A' * 40}'… (100000 characters): cannot verify the callback"
                )
        assert [len(log["reason"]) < 200 for log in logs if log["event"] == "callback rejected"] == [True, True]
        synced = await http.post("/api/v1/sync", json={"keys": ["S" * 100_000]})
        assert synced.status_code == 404 and "… (100000 characters)' in the spec set" in synced.json()["reason"]
        assert len(synced.json()["reason"]) < 500
        woken = await http.post("/api/v1/wake", json={"keys": ["S" * 100_000]})  # the same refusal as sync's
        assert woken.status_code == 404 and len(woken.json()["reason"]) < 500
        unrouted = await http.post("/callbacks/" + "v" * 50_000, json={})  # a vendor no route serves
        assert unrouted.status_code == 404 and unrouted.json()["reason"].endswith("… (50000 characters)")


async def test_a_flood_of_forged_callbacks_is_logged_once_a_minute_and_counted_in_full(harness: Harness) -> None:
    """Whoever reaches the callback route must not decide the log's volume: refusals of one vendor and status
    are said once a minute with the number held back; the metric counts every one."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    async with await client(harness) as http:
        with capture_logs() as logs:
            for n in range(50):
                forged = volc_body(harness, event_id=f"f{n}", secret="guess")
                assert (await http.post("/callbacks/volcengine", json=forged)).status_code == 401
            assert (await http.post("/callbacks/volcengine", content=b"{")).status_code == 400  # another status
            await harness.advance(61)
            late = volc_body(harness, event_id="late", secret="guess")
            assert (await http.post("/callbacks/volcengine", json=late)).status_code == 401
    warnings = [(e["status"], e.get("repeats_held_back")) for e in logs if e["event"] == "callback rejected"]
    assert warnings == [(401, None), (400, None), (401, 49)]
    assert harness.daemon is not None
    sample = harness.daemon.metrics.registry.get_sample_value
    assert sample("capctl_callbacks_total", {"vendor": "volcengine", "outcome": "rejected"}) == 52


def test_what_is_not_json_is_refused_in_its_own_words() -> None:
    """Python's parser takes NaN and Infinity (not JSON) and answers a 5,000-digit number with advice to call
    sys.set_int_max_str_digits(): both are malformed JSON, said as such."""
    for body, why in (
        (b'{"app_id": NaN}', "malformed JSON: NaN is not a JSON value"),
        (b"[-Infinity]", "malformed JSON: -Infinity is not a JSON value"),
        (b'{"app_id": ' + b"9" * 5000 + b"}", "malformed JSON: a number of 5000 digits (at most 100)"),
        (b'["' + b"1" * 101 + b'", -' + b"1" * 101 + b"]", "malformed JSON: a number of 101 digits (at most 100)"),
        (b'{"s": "\\"", "n": ' + b"1" * 101 + b"}", "malformed JSON: a number of 101 digits (at most 100)"),
    ):
        with pytest.raises(ValueError) as refused:
            load_json(body)
        assert str(refused.value) == why
    assert load_json(b'{"timestamp": 1733456789123, "n": -1.5}') == {"timestamp": 1733456789123, "n": -1.5}
    # Long digit runs that are no integer: in a string, a float's fraction or exponent, a float's integer part.
    digits = "1" * 150
    for text in (f'["{digits}"]', f"[1.{digits}]", f"[{digits}.5]", f"[{digits}e2]", f"[1e-{digits}]"):
        assert load_json(text) == json.loads(text), text


def test_json_nesting_limit() -> None:
    assert load_json(b'{"a": [[{"b": 1}]], "c": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}')["a"] == [[{"b": 1}]]
    nested: dict[str, object] = {"k": 0}
    for _ in range(MAX_JSON_DEPTH - 1):
        nested = {"k": nested}
    assert load_json(json.dumps(nested)) == nested  # exactly at the limit
    for too_deep in (json.dumps([nested]), "[" * 100_000, '{"a": ' * 100_000):
        with pytest.raises(ValueError, match="nested deeper than 32 levels"):
            load_json(too_deep)
    with pytest.raises(ValueError, match="nested deeper than 32 levels"):
        parse_sync_body(b'{"keys": ' + b"[" * 40 + b"]" * 40 + b"}")
    # Brackets in a string are no nesting, after an escaped quote too; a string ending in `\\` ends there.
    assert load_json('{"s": "\\"' + "[" * 40 + '", "t": 1}')["t"] == 1
    with pytest.raises(ValueError, match="nested deeper than 32 levels"):
        load_json('{"s": "\\\\", "a": ' + "[" * 33 + "]" * 33 + "}")


def test_a_body_of_many_small_values_costs_about_what_parsing_it_costs() -> None:
    """A callback is parsed on the daemon's loop before anything is verified: a 1 MiB body of 300,000 `{}` held
    it for a second (a Python walk of every container for the nesting limit; parse_int called per number), so a
    few clients without a secret kept the daemon from reconciling. The limits are checked at C speed now."""

    def fastest(parse: Any, body: bytes) -> float:
        times = []
        for _ in range(3):
            started = perf_counter()
            parse(body)
            times.append(perf_counter() - started)
        return min(times)

    for value in (b"{}", b"1"):
        body = b'{"app_id": 1, "pad": [' + b",".join([value] * 300_000) + b"]}"
        assert fastest(load_json, body) < 8 * fastest(json.loads, body) + 0.05  # it was 30 times
    # Runs of 100 digits (one short of a long integer): a regex `\d{101}` took 100 steps per byte (0.15 s).
    for run in (b'"' + b"1" * 100 + b'"', b"1" * 100):
        body = b'{"app_id": 1, "pad": [' + b",".join([run] * 10_000) + b"]}"
        assert fastest(load_json, body) < 8 * fastest(json.loads, body) + 0.05


def test_a_sync_or_wake_names_a_bounded_number_of_jobs_and_globs_and_any_number_of_keys() -> None:
    """Each job or glob is compared with every task on the daemon's loop: 40,000 globs in a 1 MiB body held
    it for minutes at 10,000 tasks (walk 55c-1). Whole keys are looked up, so 10,000 of them are taken."""
    globs = [f"SnapshotJob/*{i}*" for i in range(MAX_WALKS)]
    keys = [f"SnapshotJob/audit/room-{i}" for i in range(10_000)]
    assert parse_sync_body(json.dumps({"keys": globs + globs + keys}).encode()) == globs + globs + keys
    with pytest.raises(ValueError, match=f"at most {MAX_WALKS} jobs or globs in one request .*; got 33:"):
        parse_sync_body(json.dumps({"keys": [*globs, "SnapshotJob/audit"]}).encode())


def test_throttle_lets_one_through_per_interval_and_counts_the_rest() -> None:
    clock = FakeClock()
    throttle = Throttle(clock, interval=60)
    assert throttle.allow() == 0
    assert [throttle.allow() for _ in range(1000)] == [None] * 1000
    clock.advance(59.9)
    assert throttle.allow() is None
    clock.advance(0.1)
    assert throttle.allow() == 1001  # the next line says how many were held back


def test_default_connection_cap_stays_below_the_descriptor_limit() -> None:
    assert default_max_connections(None) == DEFAULT_MAX_CONNECTIONS == 1024
    assert default_max_connections(1_048_576) == 1024
    assert default_max_connections(1024) == 1024 - FD_RESERVE
    assert default_max_connections(64) == 16  # a floor: the daemon stays reachable


async def test_probes_and_metrics(harness: Harness) -> None:
    harness.specs.mkdir()
    (harness.specs / "jobs.yaml").write_text("apiVersion: capctl/v1\nkind: SnapshotJob\n")  # invalid
    await harness.start()
    async with await client(harness) as http:
        assert (await http.get("/healthz")).status_code == 200
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503
        assert "no valid spec set in force" in not_ready.text and "jobs.yaml:" in not_ready.text
        write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
        assert harness.daemon is not None and harness.daemon.reload()
        assert (await http.get("/readyz")).status_code == 200
        await harness.advance(1)
        metrics = await http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in (
        'capctl_tasks{status="running"} 1.0',
        "capctl_queue_depth",
        "capctl_reconcile_duration_seconds",
        'capctl_vendor_calls_total{api="StartSnapshot",outcome="ok"} 1.0',
        "capctl_reissue_gap_seconds",
        "capctl_reissues_total",
        "capctl_vendor_throttled_total",
    ):
        assert name in text, name


async def test_readyz_reports_a_state_store_that_does_not_answer(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    daemon = await harness.start()
    daemon.records.store.close()
    await daemon.probe_store()
    state = daemon.readiness()
    assert not state.ready and "state store does not answer" in state.reason


async def test_sync_reconciles_at_once_what_would_wait_for_its_next_look(harness: Harness) -> None:
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], idle=180))
    await harness.start()
    await harness.advance(1)
    lobby = "SnapshotJob/audit/lobby"
    harness.sim.stop_task(
        "volcengine", harness.record(lobby).vendor_task_id or "", room_id="lobby", reason="UnknownStopReason"
    )
    await harness.advance(1)
    assert harness.calls("StartSnapshot") == 1  # Volcengine sends no stop callback: the next look is far off
    async with await client(harness) as http:
        synced = await http.post("/api/v1/sync", json={"keys": [lobby]})
        assert synced.status_code == 200 and synced.json() == {
            "ok": True,
            "reason": "queued 1 task key(s)",
            "queued": 1,
            "tombstones": 0,
        }
        await harness.advance(1)
        assert harness.calls("StartSnapshot") == 2  # observed at once, seen stopped, re-issued
        every = await http.post("/api/v1/sync", content=b"")
        assert every.status_code == 200 and every.json()["queued"] == 1
        typo = await http.post("/api/v1/sync", json={"keys": [lobby, "SnapshotJob/audit/lobbi"]})
        assert typo.status_code == 404
        assert typo.json()["reason"] == (
            "no task 'SnapshotJob/audit/lobbi' in the spec set or the state"
            " (see `capctl state list`, or `capctl plan` for a task not recorded yet)"
            " (did you mean SnapshotJob/audit/lobby?)"
        )
        # A job or a glob, as wake and `state list` take them (walk 27b): its tasks, each once.
        for selection in (["SnapshotJob/audit/*"], ["SnapshotJob/audit"], ["SnapshotJob/*", lobby]):
            glob = await http.post("/api/v1/sync", json={"keys": selection})
            assert glob.status_code == 200 and glob.json()["queued"] == 1, selection
        # Every KEY must match: one glob that matches nothing (a typo) queues nothing, and is named.
        missed = await http.post("/api/v1/sync", json={"keys": ["SnapshotJob/audit", "SnapshotJob/audt/*"]})
        assert missed.status_code == 404 and missed.json()["reason"] == (
            "no task 'SnapshotJob/audt/*' in the spec set or the state"
            " (see `capctl state list`, or `capctl plan` for a task not recorded yet)"
            " (did you mean SnapshotJob/audit/*?)"
        )
        for bad, why in (
            (b"{", "malformed JSON"),
            (b'{"keys": []}', "non-empty list"),
            (b'{"key": ["x"]}', 'expected {"keys"'),
            (b'["x"]', 'expected {"keys"'),
            (json.dumps({"keys": [f"SnapshotJob/*{i}*" for i in range(33)]}).encode(), "at most 32 jobs or globs"),
        ):
            answer = await http.post("/api/v1/sync", content=bad)
            assert answer.status_code == 400 and why in answer.json()["reason"], bad
        wake = await http.post("/api/v1/wake", json={"keys": [f"SnapshotJob/a{i}" for i in range(33)]})
        assert wake.status_code == 400 and "at most 32 jobs or globs" in wake.json()["reason"]
        assert (await http.get("/api/v1/sync")).status_code == 405  # it changes something: POST only
    assert harness.calls("StartSnapshot") == 2  # the refused requests queued nothing


async def test_sync_before_any_valid_spec_set_queues_nothing(harness: Harness) -> None:
    harness.specs.mkdir()
    (harness.specs / "jobs.yaml").write_text(": not yaml [")
    await harness.start()
    async with await client(harness) as http:
        answer = await http.post("/api/v1/sync", content=b"{}")
        # A callback then: 503 saying why (the vendor retries), not 401 "no Provider for … app id" (walk 8f).
        callback = await http.post("/callbacks/volcengine", json=volc_body(harness))
    assert answer.status_code == 503 and "no valid spec set in force" in answer.json()["reason"]
    assert callback.status_code == 503
    assert callback.json()["reason"] == "no valid spec set in force yet: cannot verify the callback"


async def test_a_spec_set_broken_while_running_shows_on_readyz_and_in_metrics(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    daemon = await harness.start()
    sample = daemon.metrics.registry.get_sample_value
    loaded_at = harness.clock.now()
    assert sample("capctl_spec_set_valid") == 1 and sample("capctl_spec_set_errors") == 0
    assert sample("capctl_spec_set_last_load_timestamp_seconds") == loaded_at
    await harness.advance(60)
    broken_at = harness.clock.now()
    providers = (harness.specs / "providers.yaml").read_text()
    # Two errors, one of them a literal secret, which must not be echoed anywhere.
    (harness.specs / "providers.yaml").write_text(
        providers.replace("{env: VOLC_SK, default: capctl-sim-volc-secret}", "literal-secret-0042", 1)
    )
    (harness.specs / "jobs.yaml").write_text(snapshot_job("audit", ["lobby"]).replace("interval: 5s", "intervl: 5s"))
    assert not daemon.reload()
    await harness.advance(30)
    assert not daemon.reload()  # still broken: "since" stays the time it broke
    with pytest.raises(SpecErrors) as broken:
        load_spec_set([harness.specs])
    errors = broken.value.errors
    assert len(errors) >= 2
    async with await client(harness) as http:
        ready = await http.get("/readyz")
        text = (await http.get("/metrics")).text
    assert ready.status_code == 200  # the last valid set still runs
    since = iso_utc(broken_at)
    assert (
        ready.text
        == f"ready (leader, epoch 1); spec set invalid since {since}: {len(errors)} errors, first: {errors[0]}\n"
    )
    assert "literal-secret-0042" not in ready.text + text
    assert "capctl_spec_set_valid 0.0" in text and f"capctl_spec_set_errors {len(errors)}.0" in text
    assert sample("capctl_spec_set_last_load_timestamp_seconds") == loaded_at  # the set in force
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    assert daemon.reload()
    assert daemon.readiness().reason == "ready (leader, epoch 1)"
    assert sample("capctl_spec_set_valid") == 1 and sample("capctl_spec_set_errors") == 0
    assert sample("capctl_spec_set_last_load_timestamp_seconds") == harness.clock.now()


async def test_sync_with_a_token_needs_it(harness: Harness) -> None:
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start(sync_token="s3cret-token")
    async with await client(harness) as http:
        for headers in ({}, {"Authorization": "Bearer guess"}, {"Authorization": "Basic s3cret-token"}):
            refused = await http.post("/api/v1/sync", content=b"", headers=headers)
            assert refused.status_code == 401 and "bearer token" in refused.json()["reason"], headers
            assert refused.headers["www-authenticate"] == 'Bearer realm="capctl sync"'  # a 401 must say which scheme
            assert "s3cret-token" not in refused.text
        allowed = await http.post("/api/v1/sync", content=b"", headers={"Authorization": "Bearer s3cret-token"})
    assert allowed.status_code == 200 and allowed.json()["queued"] == 1


async def test_a_web_pages_cross_site_request_to_sync_or_wake_is_refused(harness: Harness) -> None:
    """Any page the operator's browser opens could POST text/plain to a daemon it reaches (127.0.0.1, a
    `kubectl port-forward`): no preflight, and the body was read as JSON whatever its type. Without a token
    (the default) that made the daemon sync every task or wake dormant ones (vendor calls, captures started)."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    page = {"content-type": "text/plain"}
    async with await client(harness) as http:
        with capture_logs() as logs:
            for headers in (
                {"origin": "http://evil.example"},
                {"origin": "null"},  # a sandboxed frame
                {"sec-fetch-site": "cross-site"},
                {"sec-fetch-site": "same-site", "origin": DAEMON},  # another port or subdomain of the same site
            ):
                for route, body in (("/api/v1/sync", b"{}"), ("/api/v1/wake", b'{"keys": ["SnapshotJob/*"]}')):
                    refused = await http.post(route, content=body, headers=page | headers)
                    assert refused.status_code == 403 and "cross-site" in refused.json()["reason"], (route, headers)
            assert not [log for log in logs if log["event"] in ("sync requested", "woke tasks")]
        for headers in ({}, {"origin": DAEMON, "sec-fetch-site": "same-origin"}):  # capctl, curl; the daemon's own
            allowed = await http.post("/api/v1/sync", content=b"", headers=headers)
            assert allowed.status_code == 200 and allowed.json()["queued"] == 1


async def test_a_loopback_daemon_without_a_token_answers_only_requests_named_for_this_machine(
    harness: Harness,
) -> None:
    """DNS rebinding: a page at http://rebind.example:8080 whose name its DNS server then points at 127.0.0.1 is
    same-origin to a daemon on 127.0.0.1:8080 (so 20C-3's Origin check passes it): it could read the token-less
    status page and its JSON, and wake or sync tasks. Its requests carry its own name in Host."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start(local_only=True)
    async with await client(harness) as http:
        # Not a host at all, though a loopback address or `.localhost` is in it (walk 56b).
        odd = ("127.0.0.1:8080@rebind.example", "[::1]rebind.example", "rebind.example/.localhost", "[localhost]")
        for host in ("rebind.example:8080", "rebind.example", "127.0.0.1.nip.io:8080", *odd):
            for method, route in (("GET", "/"), ("GET", "/api/v1/status"), ("POST", "/api/v1/sync")):
                refused = await http.request(method, route, headers={"host": host})
                assert refused.status_code == 403 and "DNS rebinding" in refused.text, (route, host)
        local = ("127.0.0.1:8080", "localhost:8080", "LOCALHOST.", "[::1]:8080", "capctl.localhost", "10.0.0.7")
        for host in (*local, ""):  # "": no Host (HTTP/1.0), which a browser always sends
            assert (await http.get("/api/v1/status", headers={"host": host})).status_code == 200, host
            assert (await http.post("/api/v1/sync", headers={"host": host})).status_code == 200, host
        assert (await http.get("/metrics", headers={"host": "rebind.example"})).status_code == 200  # no data
    await harness.stop()
    # With its token, a route needs no such check: the rebound page has no token to send.
    await harness.start(local_only=True, status_token="page-token", sync_token="sync-token")
    async with await client(harness) as http:
        assert (await http.get("/", headers={"host": "rebind.example"})).status_code == 401
        assert (await http.post("/api/v1/sync", headers={"host": "rebind.example"})).status_code == 401


async def test_metrics_are_collected_on_the_daemons_loop_not_the_http_thread(harness: Harness) -> None:
    """The HTTP server runs on a thread of its own; the scrape-time gauges read records and rooms that the
    daemon's loop changes (a scrape on the HTTP thread raced with them: 'dictionary changed size'). So does
    `capctl run`'s starting app (`Front`), which answers until the daemon has started: the daemon registers
    those gauges when it is built, and the workers start changing records the moment it has started, while a
    scrape the starting app took may still be collecting."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    await harness.start()
    assert harness.daemon is not None
    daemon = harness.daemon
    collected_on: list[int] = []

    class Spy(Collector):
        def collect(self) -> list[GaugeMetricFamily]:
            collected_on.append(threading.get_ident())
            return []

    daemon.metrics.registry.register(Spy())

    async def scrape(app: ASGIApp) -> str:  # as uvicorn does: another thread, its own event loop
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=DAEMON) as http:
            return (await http.get("/metrics")).text

    for app in (daemon.asgi_app, Front(daemon.metrics)):  # `capctl run` builds its Front on the daemon's loop
        collected_on.clear()
        text = await asyncio.to_thread(asyncio.run, scrape(app))
        assert 'capctl_tasks{status="running"}' in text
        assert collected_on == [threading.get_ident()]  # the daemon's loop runs on this (the test's) thread


async def test_an_error_the_app_did_not_handle_says_nosniff_too() -> None:
    """Starlette answers it outside the middleware an app adds: NoSniffApp wraps the whole stack."""

    async def broken(_: Request) -> Response:
        raise RuntimeError("a bug")

    app = NoSniffApp(routes=[Route("/broken", broken)])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=DAEMON) as http:
        answer = await http.get("/broken")
    assert answer.status_code == 500 and answer.headers.get_list("x-content-type-options") == ["nosniff"]
