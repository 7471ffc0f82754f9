"""`received_path` is the path as `request.url` gives it back, read from the scope when that is the same."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from reconciler.sim.simulator import received_path

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
