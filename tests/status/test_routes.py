"""`GET /` and `GET /api/v1/status` over ASGI: read-only, the token, bad queries, headers that load nothing."""

from __future__ import annotations

import base64

import httpx
import pytest
from starlette.applications import Starlette

from reconciler.model import TaskStatus
from reconciler.status import StatusQuery, StatusSnapshot, build_snapshot, status_routes
from reconciler.status.token import token_accepted
from tests.status.conftest import NOW, inputs, record

TOKEN = "s3cret-status-token"
RECORDS = [record("SnapshotJob/lobby/a"), record("SnapshotJob/lobby/b", TaskStatus.STOPPED)]


def _client(token: str | None = None) -> tuple[httpx.AsyncClient, list[StatusQuery]]:
    asked: list[StatusQuery] = []

    async def provider(query: StatusQuery) -> StatusSnapshot:
        asked.append(query)
        return build_snapshot(inputs(RECORDS), query, NOW)

    app = Starlette(routes=status_routes(provider, token=lambda: token))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://daemon.local"), asked


async def test_page_and_json_answer_with_the_query_asked() -> None:
    client, asked = _client()
    async with client:
        page = await client.get("/", params={"status": "stopped", "per_page": "10"})
        api = await client.get("/api/v1/status", params={"job": "lobby", "room": " lobby "})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "SnapshotJob/lobby" in page.text
    assert api.status_code == 200 and api.json()["totals"] == {"stopped": 1, "running": 1}
    assert asked == [StatusQuery(status="stopped", per_page=10), StatusQuery(job="lobby", room="lobby")]
    assert api.json()["query"]["room"] == "lobby"
    for answer in (page, api):
        assert answer.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in answer.headers["content-security-policy"]


async def test_the_routes_only_read() -> None:
    client, asked = _client()
    async with client:
        for method in ("POST", "PUT", "DELETE"):
            assert (await client.request(method, "/")).status_code == 405
            assert (await client.request(method, "/api/v1/status")).status_code == 405
    assert asked == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "bogus"}, "status must be one of failed, stopped, dormant, pending, running, done, removed"),
        ({"page": "0"}, "page must be from 1 to 1000000; got 0"),
        ({"per_page": "lots"}, "per_page must be a whole number from 1 to 500; got 'lots'"),
        # What `int` takes beyond ASCII digits is no page number (walk 55c-2).
        ({"page": "\uff11"}, "page must be a whole number from 1 to 1000000; got '\uff11'"),
        ({"per_page": "1_0"}, "per_page must be a whole number from 1 to 500; got '1_0'"),
        ({"decisions": " 5"}, "decisions must be a whole number from 0 to 500; got ' 5'"),
        ({"per_page": "5000"}, "per_page must be from 1 to 500; got 5000"),
        ({"sort": "x"}, "unknown query parameter 'sort'"),
        # A value no job can have matched nothing, silently: "No task matches." for a task it names (walk 60c-5).
        (
            {"job": "SnapshotJob/lobby-audit/lobby"},
            "a task key: its job is job=SnapshotJob/lobby-audit, its room room=lobby",
        ),
        (
            {"job": "snapshotjob/lobby-audit"},
            "or a bare name; got 'snapshotjob/lobby-audit' (did you mean 'SnapshotJob'?)",
        ),
        # "Were rooms a and b captured?" answered for b alone would read as both (walk 26d-2).
        ((("room", "a"), ("room", "b")), "'room' is given more than once: one value per parameter"),
        ((("status", "failed"), ("status", "")), "'status' is given more than once"),
    ],
)
async def test_a_bad_query_is_a_400_naming_the_parameter(
    params: dict[str, str] | tuple[tuple[str, str], ...], message: str
) -> None:
    client, asked = _client()
    async with client:
        page = await client.get("/", params=params)
        api = await client.get("/api/v1/status", params=params)
    assert page.status_code == 400 and message in page.text
    assert api.status_code == 400 and api.json()["ok"] is False and message in api.json()["reason"]
    assert asked == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"job": "x" * 60_000}, "job must be a job's Kind/name, at most 76 characters; got 'xxx"),
        ({"room": "r" * 2_000}, "room must be a room id or a thumbnail's file id, at most 1024 characters; got 'rrr"),
        ({"page": "9" * 4_000}, "page must be from 1 to 1000000; got 999"),
        # Past 4,300 digits `int` refuses the text: a 500 and a traceback in the log (walk 56b).
        ({"page": "1" * 5_000}, "page must be from 1 to 1000000; got 111"),
        ({"decisions": "-" + "0" * 5_000}, "decisions must be from 0 to 500; got -000"),
    ],
)
async def test_a_long_query_value_is_refused_not_echoed(params: dict[str, str], message: str) -> None:
    """Walk 30E-10: a 60 kB `?job=` came back ~3 times in a 190 kB page, 4,000 digits of `?page=` whole in
    the 400. A value longer than any job, room or file id matches nothing: a 400 quoting 40 characters."""
    client, asked = _client()
    async with client:
        page = await client.get("/", params=params)
        api = await client.get("/api/v1/status", params=params)
        longest = await client.get("/api/v1/status", params={"job": "ThumbnailJob/" + "a" * 63, "room": "r" * 1024})
    (value,) = params.values()
    for answer in (page, api):
        assert answer.status_code == 400 and message in answer.text, answer.text[:300]
        assert f"({len(value)} characters)" in answer.text and len(answer.content) < 4_000
    assert longest.status_code == 200 and len(asked) == 1


async def test_with_a_token_both_routes_need_it_as_bearer_or_basic_password() -> None:
    client, asked = _client(TOKEN)
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    async with client:
        bare = await client.get("/")
        wrong = await client.get("/api/v1/status", headers={"authorization": "Bearer nope"})
        bearer = await client.get("/api/v1/status", headers={"authorization": f"Bearer {TOKEN}"})
        browser = await client.get("/", headers={"authorization": f"Basic {basic}"})
    assert bare.status_code == 401 and bare.headers["www-authenticate"].startswith("Basic realm=")
    assert wrong.status_code == 401 and "Authorization: Bearer TOKEN" in wrong.json()["reason"]
    assert TOKEN not in bare.text + wrong.text
    assert bearer.status_code == 200 and browser.status_code == 200
    assert len(asked) == 2  # a refused request builds no snapshot


def test_token_check() -> None:
    assert token_accepted(None, None)
    assert not token_accepted(TOKEN, None)
    assert not token_accepted(TOKEN, f"Token {TOKEN}")
    assert not token_accepted(TOKEN, "Basic !!not-base64!!")
    assert not token_accepted(TOKEN, "Basic " + base64.b64encode(TOKEN.encode()).decode())  # no "user:" part
    assert token_accepted(TOKEN, f"bearer {TOKEN}")


async def test_turned_off_both_routes_answer_404_and_say_why() -> None:
    asked: list[StatusQuery] = []

    async def provider(query: StatusQuery) -> StatusSnapshot:
        asked.append(query)
        return build_snapshot(inputs(RECORDS), query, NOW)

    app = Starlette(routes=status_routes(provider, enabled=lambda: False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://daemon.local") as client:
        page = await client.get("/")
        api = await client.get("/api/v1/status")
    assert page.status_code == 404 and "turned off on this daemon (--no-status-page)" in page.text
    assert api.status_code == 404 and api.json()["ok"] is False
    assert asked == []
