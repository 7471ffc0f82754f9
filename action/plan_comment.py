#!/usr/bin/env python3
"""Post a capctl plan to a pull request (GitHub) or merge request (GitLab) as ONE comment, updated in place.

Why a script and not `gh pr comment`: every push would add a new comment, and reviewers would have to find
the latest one. The comment carries a hidden marker (`<!-- capctl-plan:ID -->`); the script lists the
comments, edits its own one with the marker (never a stranger's that quotes it), and posts a new one only when
there is none. Standard library only, so it runs before (or without) capctl's own dependencies.

  plan_comment.py --plan plan.md --exit-code 2          # exit code of `capctl plan --detailed-exitcode`
  plan_comment.py ... --summary "$GITHUB_STEP_SUMMARY" [--no-post]   # the same text on the run's page too
GitHub: GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL, GITHUB_EVENT_PATH (the pull request number).
GitLab: GITLAB_TOKEN (an access token with `api` scope), CI_API_V4_URL, CI_PROJECT_ID, CI_MERGE_REQUEST_IID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, NoReturn

ID_RE = re.compile(r"[\w.:/ -]+")  # no markup, and no `>` to end the marker
MAX_BODY = 60_000  # GitHub refuses comments over 65,536 characters; GitLab's notes allow more
PAGE = 100


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 1: a CI gate reads 2 as "changes" (`--detailed-exitcode`)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


class Refused(Exception):
    """The forge answered with an error (`status`), or could not be reached, or a variable the script needs is
    missing (`status` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Forge:
    name: str
    comments_url: str  # list (GET) and create (POST)
    edit_url: str  # "{id}" replaced by the comment's id
    edit_method: str
    headers: dict[str, str]
    user_url: str  # who the token is (GET)
    author: str  # the comment's field naming its author
    login: str  # the author's (and the user's) field holding the login
    forbidden: str  # what a 403 most likely means, said after the forge's own terse message


def _need(env: dict[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise Refused(f"{name} is not set")
    return value


def github(env: dict[str, str], number: str | None) -> Forge:
    api = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    repo = _need(env, "GITHUB_REPOSITORY")
    if number is None:
        with open(_need(env, "GITHUB_EVENT_PATH"), encoding="utf-8") as event:
            pull = json.load(event).get("pull_request") or {}
        if "number" not in pull:
            raise Refused("this run is not for a pull request (GITHUB_EVENT_PATH has no pull_request.number)")
        number = str(pull["number"])
    return Forge(
        "GitHub",
        f"{api}/repos/{repo}/issues/{number}/comments",
        f"{api}/repos/{repo}/issues/comments/{{id}}",
        "PATCH",
        {
            "Authorization": f"Bearer {_need(env, 'GITHUB_TOKEN')}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        },
        f"{api}/user",
        "user",
        "login",
        "the token may not comment: the job needs `permissions: pull-requests: write`; a pull request from a fork"
        " gets a read-only token whatever the workflow asks",
    )


def gitlab(env: dict[str, str], number: str | None) -> Forge:
    api = _need(env, "CI_API_V4_URL").rstrip("/")
    project = urllib.parse.quote(_need(env, "CI_PROJECT_ID"), safe="")
    iid = number or _need(env, "CI_MERGE_REQUEST_IID")
    notes = f"{api}/projects/{project}/merge_requests/{iid}/notes"
    headers = {"PRIVATE-TOKEN": _need(env, "GITLAB_TOKEN")}
    forbidden = "GITLAB_TOKEN may not write notes on this merge request: a project access token with the `api` scope"
    return Forge("GitLab", notes, f"{notes}/{{id}}", "PUT", headers, f"{api}/user", "author", "username", forbidden)


def call(forge: Forge, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {**forge.headers, "Content-Type": "application/json", "User-Agent": "capctl-plan-comment"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:  # the forge's own message, never the request's headers (the token)
        detail = exc.read().decode(errors="replace")[:300]
        hint = f" ({forge.forbidden})" if exc.code == 403 else ""
        raise Refused(f"{forge.name} answered {exc.code} to {method} {url}: {detail}{hint}", exc.code) from None
    except urllib.error.URLError as exc:
        raise Refused(f"cannot reach {forge.name} at {url}: {exc.reason}") from None


def whoami(forge: Forge) -> str | None:
    """The login the token comments as, or None when the forge will not say (403: GitHub's GITHUB_TOKEN, an
    app's token, whose comments are a bot's). Any other failure is one: taken for "a bot", a GitLab or PAT
    token's own comment would be a stranger's, and one more plan comment posted."""
    try:
        user = call(forge, "GET", forge.user_url)
    except Refused as exc:
        if exc.status == 403:
            return None
        raise
    login = user.get(forge.login) if isinstance(user, dict) else None
    return login if isinstance(login, str) and login else None


def ours(forge: Forge, comment: dict[str, Any], me: str | None) -> bool:
    """Whether the token wrote `comment`: anyone may post a comment holding the marker (before the first plan
    is posted), and the script would then have edited that stranger's comment, or failed on it every push."""
    author = comment.get(forge.author) or {}
    return author.get(forge.login) == me if me is not None else author.get("type") == "Bot"


def find_comment(forge: Forge, marker: str) -> int | None:
    """The id of the first comment of the token's own holding `marker`, through every page of comments."""
    me = whoami(forge)
    page = 1
    while True:
        query = urllib.parse.urlencode({"per_page": PAGE, "page": page, "sort": "asc"})
        comments = call(forge, "GET", f"{forge.comments_url}?{query}")
        for comment in comments:
            if marker in (comment.get("body") or "") and ours(forge, comment, me):
                return int(comment["id"])
        if len(comments) < PAGE:
            return None
        page += 1


def plan_id(text: str) -> str:
    """`--id`, which goes into the hidden marker and the headline: `-->` in it ended the marker early (the rest
    showed), and markup in it would be read in the headline."""
    if not ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a comment-id takes letters, digits, spaces and . _ : / - (e.g. prod, eu/staging)"
        )
    return text


def comment_body(marker: str, plan: str, exit_code: int, where: str, name: str = "default") -> str:
    """The comment: the marker, a headline that says plainly what the plan found (and, with several plans in
    one pull request, which one: their comments looked alike), then the plan itself."""
    capctl = "capctl" if name == "default" else f"capctl ({name})"
    if exit_code == 0:
        headline = f"#### ✅ {capctl}: no changes"
    elif exit_code == 2:
        headline = f"#### {capctl}: changes to apply"
    else:  # the old plan must not stay up looking current
        headline = f"#### ❌ {capctl} plan failed (exit {exit_code}): no plan. The job log says why."
        plan = ""
    if len(plan) > MAX_BODY:
        # Said under the headline: at the end it would sit inside a folded <details> nobody opens.
        headline += f"\n\n(The plan was cut at {MAX_BODY:,} characters: the whole plan is in {where}.)"
        line_end = plan.rfind("\n", 0, MAX_BODY)  # cut at a line's end: no half table row or entry
        plan = plan[: line_end + 1 if line_end > 0 else MAX_BODY]
        plan += "\n</details>\n" * (plan.count("<details") - plan.count("</details>"))
    return f"{marker}\n{headline}\n\n{plan}".rstrip() + "\n"


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--plan", required=True, help="the markdown plan (`capctl plan --format markdown`)")
    parser.add_argument("--exit-code", type=int, required=True, help="`capctl plan --detailed-exitcode`'s exit")
    parser.add_argument(
        "--id", type=plan_id, default="default", help="tells apart several plans in one pull request (named in each)"
    )
    parser.add_argument("--forge", choices=["github", "gitlab"], help="default: from the CI's variables")
    parser.add_argument("--number", help="pull/merge request number (default: from the CI's variables)")
    parser.add_argument("--where", default="the job's artifacts", help="where the whole plan is, if cut")
    parser.add_argument("--summary", metavar="FILE", help="also append the text to FILE ($GITHUB_STEP_SUMMARY)")
    parser.add_argument("--no-post", action="store_true", help="post no comment (with --summary: only the summary)")
    args = parser.parse_args(argv)
    env = dict(os.environ) if env is None else env
    name = args.forge or ("gitlab" if env.get("GITLAB_CI") else "github")
    marker = f"<!-- capctl-plan:{args.id} -->"
    try:
        with open(args.plan, encoding="utf-8") as plan_file:
            body = comment_body(marker, plan_file.read(), args.exit_code, args.where, args.id)
        if args.summary:
            # First: with `comment: false`, or a token that may not comment, the run's page still shows the plan
            # (it was in no log either: stdout goes to plan.md).
            with open(args.summary, "a", encoding="utf-8") as summary:
                summary.write(body.removeprefix(f"{marker}\n") + "\n")
        if args.no_post:
            return 0
        forge = (gitlab if name == "gitlab" else github)(env, args.number)
        existing = find_comment(forge, marker)
        if existing is None:
            created = call(forge, "POST", forge.comments_url, {"body": body})
            print(f"plan_comment: posted comment {created['id']} on the {forge.name} request")
        else:
            call(forge, forge.edit_method, forge.edit_url.format(id=existing), {"body": body})
            print(f"plan_comment: updated comment {existing} on the {forge.name} request")
    except (Refused, OSError) as exc:
        print(f"plan_comment: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
