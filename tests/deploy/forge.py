"""A local stand-in for the comment APIs of GitHub (issue comments) and GitLab (merge-request notes): a small
HTTP server on 127.0.0.1 that keeps comments in memory, pages its lists as the real ones do, checks the token,
and records every request, so the action's scripts are tested over real HTTP.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

TOKEN = "forge-token-5d1e0c"  # tests assert it is never printed
BOT = "capctl-bot"  # who the token comments as (GitHub: `github-actions[bot]`, a bot)


@dataclass
class Forge:
    kind: str  # "github" or "gitlab"
    comments: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    refuse: int | None = None  # answer every request with this status
    user_status: int | None = None  # answer `GET /user` (who the token is) with this status
    url: str = ""

    def authorized(self, headers: Any) -> bool:
        if self.kind == "github":
            return bool(headers.get("Authorization") == f"Bearer {TOKEN}")
        return bool(headers.get("PRIVATE-TOKEN") == TOKEN)

    def add(self, body: str, author: str, *, bot: bool = False) -> dict[str, Any]:
        """A comment by `author`, who is named as each forge does (GitHub: `user.login` and `user.type`)."""
        if self.kind == "github":
            who = {"user": {"login": author, "type": "Bot" if bot else "User"}}
        else:
            who = {"author": {"username": author}}
        comment = {"id": 1000 + len(self.comments), "body": body, **who}
        self.comments.append(comment)
        return comment


LIST = {
    "github": re.compile(r"^/repos/o/r/issues/7/comments$"),
    "gitlab": re.compile(r"^/projects/o%2Fr/merge_requests/7/notes$"),
}
EDIT = {
    "github": re.compile(r"^/repos/o/r/issues/comments/(\d+)$"),
    "gitlab": re.compile(r"^/projects/o%2Fr/merge_requests/7/notes/(\d+)$"),
}
EDIT_METHOD = {"github": "PATCH", "gitlab": "PUT"}


def handler(forge: Forge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads `forge.requests`
            pass

        def answer(self, status: int, data: Any) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def body(self) -> dict[str, Any]:
            return dict(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))

        def handle_any(self) -> None:
            url = urlparse(self.path)
            forge.requests.append((self.command, url.path))
            if forge.refuse is not None:
                return self.answer(forge.refuse, {"message": "Resource not accessible by integration"})
            if not forge.authorized(self.headers):
                return self.answer(401, {"message": "Bad credentials"})
            if LIST[forge.kind].match(url.path) and self.command == "GET":
                query = parse_qs(url.query)
                per_page, page = int(query["per_page"][0]), int(query["page"][0])
                return self.answer(200, forge.comments[(page - 1) * per_page : page * per_page])
            if LIST[forge.kind].match(url.path) and self.command == "POST":
                return self.answer(201, forge.add(self.body()["body"], BOT, bot=True))
            if url.path == "/user" and self.command == "GET":  # GitHub's GITHUB_TOKEN may not ask who it is
                if forge.user_status is not None:
                    return self.answer(forge.user_status, {"message": "Server Error"})
                if forge.kind == "github":
                    return self.answer(403, {"message": "Resource not accessible by integration"})
                return self.answer(200, {"id": 1, "username": BOT})
            edit = EDIT[forge.kind].match(url.path)
            if edit and self.command == EDIT_METHOD[forge.kind]:
                comment = next((c for c in forge.comments if c["id"] == int(edit.group(1))), None)
                if comment is None:
                    return self.answer(404, {"message": "Not Found"})
                comment["body"] = self.body()["body"]
                return self.answer(200, comment)
            return self.answer(404, {"message": f"no route {self.command} {url.path}"})

        do_GET = do_POST = do_PATCH = do_PUT = handle_any

    return Handler


@contextmanager
def serve(kind: str) -> Iterator[Forge]:
    forge = Forge(kind)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(forge))
    forge.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield forge
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
