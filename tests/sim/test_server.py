"""The simulator under uvicorn on loopback: real sockets, the background pump, and throughput."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from reconciler import cli
from reconciler.listen import advertised_host, advertised_url, bind, parse_listen, url_of
from reconciler.sim.signing import zego_signature
from tests.servers import sim_output
from tests.sim.conftest import VOLC_APP, sdk_sign


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    """`serve()` in its own process, as `capctl sim` runs it, so client and server do not share a core."""
    code = "from reconciler.sim import serve; serve('127.0.0.1:0')"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield sim_output(proc).url(), proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def test_server_cost_allows_over_300_requests_per_second(server: tuple[str, int]) -> None:
    """Measured as the server's CPU time per request, so a slow client or a busy machine cannot skew it."""
    base, pid = server
    query = {"Action": "GetSnapshotTask", "Version": "2023-11-01", "AppId": VOLC_APP, "RoomId": "r", "TaskId": "t"}
    host = base.removeprefix("http://")
    # One signature serves every request (valid for 15 min): the client's CPU goes to requests.
    headers = sdk_sign(method="GET", path="/volc/", query=query, body=b"", host=host, when=time.time())
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=base) as http:

        async def worker() -> None:
            for _ in range(50):
                statuses.append((await http.get("/volc/", params=query, headers=headers)).status_code)

        await http.get("/volc/", params=query, headers=headers)
        before = _cpu_seconds(pid)
        await asyncio.gather(*(worker() for _ in range(12)))
        spent = _cpu_seconds(pid) - before
    assert set(statuses) <= {400, 429}  # unknown task, or throttled at 60/s: both answered
    assert len(statuses) / spent >= 300, f"{len(statuses) / spent:.0f} req/s per server CPU second"


async def test_speed_and_dropped_connection_on_a_real_socket(server: tuple[str, int]) -> None:
    base, _ = server
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/_sim/clock", json={"speed": 60})
        assert r.json()["speed"] == 60 and r.json()["kind"] == "scaled"
        assert (await http.post("/_sim/clock", json={"advance": 5})).status_code == 400
        await http.put("/_sim/faults", json={"dropRate": 1.0, "apis": ["StartRecord"]})
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/zego/cloudrecord/?Action=StartRecord", json={})


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8750", example="x") == ("127.0.0.1", 8750)
    assert parse_listen("[::1]:9000", example="x") == ("::1", 9000)
    assert parse_listen("127.0.0.1:0", example="x") == ("127.0.0.1", 0)  # any free port
    for bad in ("8750", "127.0.0.1:", ":8750", "127.0.0.1:http", "127.0.0.1:²"):
        with pytest.raises(ValueError, match=r"HOST:PORT \(e\.g\. x; port 0 picks a free one\)"):
            parse_listen(bad, example="x")
    for bad in ("127.0.0.1:65536", "127.0.0.1:99999"):  # walk 14b: the form is right, the port is not
        with pytest.raises(ValueError, match=r"port \d+ is out of range \(0 to 65535; 0 picks a free one\)"):
            parse_listen(bad, example="x")
    # 5,000 digits: int() refused them in Python's words; now the same error, the port and the value cut short
    with pytest.raises(ValueError, match=r"port 9{40}… \(5000 characters\) is out of range .*\(5010 characters\)$"):
        parse_listen("127.0.0.1:" + "9" * 5000, example="x")
    assert parse_listen("127.0.0.1:000080", example="x") == ("127.0.0.1", 80)  # leading zeros are no digits
    # Walk 35b: what no socket binds is refused here, naming the flag, not at bind; what binds is taken as bind does.
    for bad, why in (
        ("[::1", "an IPv6 address in brackets has no closing ']'"),
        ("[::1]x", "expected HOST:PORT"),
        ("[127.0.0.1]:80", "'127.0.0.1' in brackets is not an IPv6 address"),
        ("::1:8080", "an IPv6 address goes in brackets, before the port"),
        ("a b:80", "'a b' is not an IP address or a host name"),
        ("1.2.3.999:80", "'1.2.3.999' is not an IPv4 address"),
    ):
        with pytest.raises(ValueError, match=rf"^--flag: {re.escape(why)}.*, got {re.escape(repr(bad))}$"):
            parse_listen(bad, example="x", flag="--flag")
    for good, host in (("[fe80::1%eth0]:80", "fe80::1%eth0"), ("127.1:80", "127.1"), ("my-host.example.:80", None)):
        assert parse_listen(good, example="x")[0] == (host or good.rpartition(":")[0])


def test_a_taken_address_is_named_and_port_zero_reports_the_real_port() -> None:
    with bind("127.0.0.1", 0) as first:
        url = url_of(first)
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}" and port > 0
        with pytest.raises(OSError, match=rf"^\[Errno \d+\] cannot listen on 127\.0\.0\.1:{port}: "):
            bind("127.0.0.1", port)


def test_a_wildcard_listen_is_named_by_the_host_s_name_for_others() -> None:
    """The daemon's lock holder tells a standby's `capctl sync` and a locked-out `apply` where the leader is:
    `--listen 0.0.0.0:8080` (the cluster kit) said `http://0.0.0.0:8080`, which reaches no pod."""
    assert advertised_host("0.0.0.0", "capctl-6d5f-x2k9p") == "capctl-6d5f-x2k9p"
    assert advertised_host("::", "capctl-6d5f-x2k9p") == "capctl-6d5f-x2k9p"
    assert advertised_host("127.0.0.1", "capctl-6d5f-x2k9p") == "127.0.0.1"
    with bind("127.0.0.1", 0) as sock:
        assert advertised_url(sock) == url_of(sock)


def test_every_answer_says_nosniff(server: tuple[str, int]) -> None:
    """A vendor's JSON, the control API, a refusal or an unknown path: the browser must not sniff HTML."""
    base, _ = server
    with httpx.Client(base_url=base) as http:
        answers = [
            http.get("/volc/"),
            http.get("/_sim/requests"),
            http.post("/zego/legacy/start"),
            http.get("/nowhere"),
        ]
    assert [a.status_code for a in answers] == [404, 200, 200, 404]
    assert all(a.headers.get_list("x-content-type-options") == ["nosniff"] for a in answers)


def zego_describe(http: httpx.Client, app_id: int, secret: str, now: float) -> object:
    """DescribeRecordStatus of an unknown task, signed for `app_id`: its Code."""
    nonce, ts = "0123456789abcdef", int(now)
    query: dict[str, str | int] = {"Action": "DescribeRecordStatus", "AppId": app_id, "SignatureNonce": nonce}
    query |= {"Timestamp": ts, "SignatureVersion": "2.0", "Signature": zego_signature(app_id, nonce, secret, ts)}
    return http.post("/zego/cloudrecord/", params=query, json={"TaskId": "0123456789abcdef"}).json()["Code"]


@pytest.mark.parametrize(
    ("signum", "options", "said"),
    [
        (signal.SIGTERM, [], ""),
        (
            signal.SIGINT,
            ["--clock-offset", "-300", "--zego-app", "222:secret-222:cb-222"],
            ", started 300 s behind this machine's; ZEGO apps 1234567890, 222",
        ),
    ],
    ids=["sigterm", "ctrl-c"],
)
def test_capctl_sim_stops_cleanly_and_exits_0_on_sigterm_or_ctrl_c(signum: int, options: list[str], said: str) -> None:
    """It died of the signal after a clean shutdown (uvicorn raises it again): 143, which a container runtime
    reports as a failure. It exits 0 now, as `capctl run` does. (And `--clock-offset` starts its clock off;
    `--zego-app` serves one more ZEGO app, whose signatures it checks with that app's secret.)"""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "sim", "--listen", "127.0.0.1:0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = sim_output(proc)
    with httpx.Client(base_url=output.url()) as http:
        assert http.get("/_sim/requests").status_code == 200
        now = http.get("/_sim/clock").json()["now"]
        assert now - time.time() == pytest.approx(-300 if options else 0, abs=5)
        # 300001000: no such task (signature accepted); 100000005: signature invalid (an app it does not serve)
        assert zego_describe(http, 222, "secret-222", now) == (300001000 if options else 100000005)
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == 0
    assert "Traceback" not in output.text() and f"clock speed 1x{said})" in output.text()


async def test_a_clock_value_out_of_range_is_refused_and_the_clock_keeps_running(server: tuple[str, int]) -> None:
    """Infinity, NaN or 1e300 as a speed used to be taken (or answered 500): the clock went past what a
    timestamp holds and every answer after it was a 500. Refused with the range, the clock as it was."""
    base, _ = server
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.post("/_sim/clock", json={"speed": 60})).status_code == 200
        for speed, shown in (("Infinity", "inf"), ("NaN", "nan"), ("1e300", "1e+300"), ("0.001", "0.001")):
            answer = await http.post("/_sim/clock", content=f'{{"speed": {speed}}}')  # as Python's json sends them
            assert (answer.status_code, answer.json()) == (
                400,
                {"error": f"speed: must be a factor from 0.01 to 100000, got {shown}"},
            )
        now = await http.get("/_sim/clock")
        assert now.status_code == 200 and now.json()["speed"] == 60


async def test_an_advance_out_of_range_is_refused_and_the_fake_clock_stays() -> None:
    """NaN never reaches its target (a sim with a task due stepped forever), Infinity broke every answer."""
    from reconciler.clock import FakeClock
    from reconciler.sim import create_app

    clock = FakeClock()
    app = create_app(clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as http:
        for seconds, shown in (("NaN", "nan"), ("Infinity", "inf"), ("-5", "-5"), ("1e300", "1e+300")):
            answer = await http.post("/_sim/clock", content=f'{{"advance": {seconds}}}')
            assert (answer.status_code, answer.json()) == (
                400,
                {"error": f"advance: seconds must be from 0 to 31536000 (a year), got {shown}"},
            )
        assert (await http.get("/_sim/clock")).json()["now"] == 1_700_000_000.0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        # The same check as the control API's (1e300 and NaN are proved there): --speed had only min=0.01.
        (["--speed", "inf"], "--speed: must be a factor from 0.01 to 100000, got inf"),
        # Taken silently before: the simulator served a clock that never moved.
        (["--fake-clock", "--speed", "60"], "sim: --speed and --fake-clock exclude each other"),
    ],
)
def test_capctl_sim_refuses_a_speed_it_cannot_run_before_serving(options: list[str], error: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "sim", "--listen", "127.0.0.1:0", *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "listening" not in done.stdout
    assert error in done.stderr


@pytest.mark.parametrize(
    ("apps", "error"),
    [
        (["222:s3cret"], "--zego-app: '222:…' is not APPID:SERVER_SECRET:CALLBACK_SECRET with an APPID from 1 to"),
        (["0:s3cret:x:"], "--zego-app: '0:…' is not APPID:SERVER_SECRET:CALLBACK_SECRET"),
        (["s3cret:222:c"], "--zego-app: the value (not shown: it may hold secrets) is not APPID:SERVER_SECRET"),
        # Digits int() refuses ("²": was a ValueError's text) or reads as another app ("２２２": was app 222).
        (["²:s3cret:c"], "--zego-app: the value (not shown: it may hold secrets) is not APPID:SERVER_SECRET"),
        (["２２２:s3cret:c"], "--zego-app: the value (not shown: it may hold secrets) is not APPID:SERVER_SECRET"),
        (["222:s:c", "222:t:d"], "--zego-app: app 222 is given twice (1234567890 is built in)"),
        (["1234567890:s:c"], "--zego-app: app 1234567890 is given twice (1234567890 is built in)"),
    ],
)
def test_capctl_sim_refuses_a_zego_app_it_cannot_serve_before_serving(apps: list[str], error: str) -> None:
    options = [arg for app in apps for arg in ("--zego-app", app)]
    result = CliRunner().invoke(cli.app, ["sim", "--listen", "127.0.0.1:0", *options])
    assert result.exit_code == 1 and "listening" not in result.output
    assert error in " ".join(result.output.split())
    assert "s3cret" not in result.output  # the secrets given are never echoed


def test_capctl_errors_print_user_input_as_typed_not_as_emoji() -> None:
    # Rich would turn ":x:" in a quoted value into an emoji.
    result = CliRunner().invoke(cli.app, ["sim", "--listen", "127.0.0.1:0", "--scenario", "/nonexistent/no:x:.yaml"])
    assert result.exit_code == 1 and "no:x:.yaml" in result.output and "\u274c" not in result.output


@pytest.mark.parametrize("offset", ["nan", "-86401"])
def test_capctl_sim_refuses_a_clock_offset_past_a_day_before_serving(offset: str) -> None:
    result = CliRunner().invoke(cli.app, ["sim", "--listen", "127.0.0.1:0", "--clock-offset", offset])
    assert result.exit_code == 1 and "listening" not in result.output
    assert f"--clock-offset: must be seconds from -86400 to 86400, got {offset}" in result.output
