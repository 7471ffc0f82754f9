"""`received_path` and `received_query` are the path and query as `request.url` gives them back, read from the
scope when that is the same; `query_fields` is `dict(request.query_params)`."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from reconciler.sim.simulator import query_fields, received_path, received_query

PATHS = ["/volc/", "/zego/cloudrecord", "/a b/é", "/x%2Fy", "/a?b", "/a#b", "/a\\b", "/a\tb", "/a\r\nb", "//double"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("host", [True, False])
def test_received_path_is_the_urls_path(path: str, host: bool) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"Action=X",
        "headers": [(b"host", b"sim.local")] if host else [],
        "scheme": "http",
        "server": None,
    }
    assert received_path(Request(scope)) == Request(scope).url.path


QUERIES = [
    b"",
    b"Action=X&Version=2023-11-01",
    b"a=%20b&c=d%26e",
    "é=ü".encode(),
    b"a=b#c",
    b"a=\tb",
    b"a=b\r\nc",
    b"a=?b",
]


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("path", ["/volc/", "//double"])
def test_received_query_is_the_urls_query(query: bytes, path: str) -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": [],
        "server": None,
    }
    assert received_query(Request(scope)) == Request(scope).url.query


@pytest.mark.parametrize("query", [*QUERIES, b"a=1&a=2&b=", b"a+b=c+d&e", "x=ü&y=%C3%BC".encode(), b"&&a=%zz;b=1"])
def test_query_fields_are_starlettes_query_params(query: bytes) -> None:
    scope: dict[str, Any] = {"type": "http", "path": "/", "query_string": query, "headers": []}
    assert query_fields(Request(scope)) == dict(Request(scope).query_params)
