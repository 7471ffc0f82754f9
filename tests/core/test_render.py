"""The text and markdown views: what each change will do, identical changes grouped, each fact said once.

Plans here come from real spec documents (the loader and expansion the CLI uses), diffed against an empty or a
recorded state, so the settings shown are read from the very requests capctl would send.
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import cmarkgfm
from rich.cells import cell_len
from rich.console import Console

from reconciler.model import TaskRecord
from reconciler.plan import PlanJSON, PlanOptions, diff, plan_from_json, plan_to_json
from reconciler.render import render_markdown, render_state_table, render_text
from reconciler.spec import load_spec_set
from tests.core.factories import desired, record_for
from tests.specdocs import STORAGE, providers, recording_job, snapshot_job, thumbnail_job

NOW = 1_800_000_000.0
ENV = {"S3_AK": "AKCANARYRENDER01", "S3_SK": "canary-render-secret-51c2"}

ZEGO_SNAPSHOT = """\
apiVersion: capctl/v1
kind: SnapshotJob
metadata: {name: stills}
spec:
  provider: zego
  rooms: [stage]
  streams: [{stream: cam-1}]
  interval: 30s
  storage: s3
  outputFolder: stills/
  idleTimeout: 2m
"""


def plan_of(tmp_path: Path, *jobs: str, records: dict[str, TaskRecord] | None = None) -> PlanJSON:
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    (specs / "providers.yaml").write_text(providers("http://127.0.0.1:9"))
    (specs / "storage.yaml").write_text(STORAGE)
    (specs / "jobs.yaml").write_text("---\n".join(jobs))
    spec_set = load_spec_set([specs], env=ENV)
    plan = diff(spec_set.tasks, records or {}, {}, options=PlanOptions(refreshed=False), state_serial=1, now=NOW)
    return plan_to_json(plan)


def text_of(plan: PlanJSON) -> str:
    """The text view with each settings line whole again (the view wraps them at 100 columns, between facts)."""
    console = Console(record=True, width=300, color_system=None)
    render_text(plan, console)
    return console.export_text().replace(" ·\n          ", " · ")


def test_creates_show_what_the_vendor_will_get_for_every_api_family(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        snapshot_job("audit", ["lobby"], interval="5s", idle="3m"),
        recording_job("rec", ["class-1"], idle="1m", max_duration="12h"),
        recording_job("old", ["hall"], provider="zego-legacy"),
        ZEGO_SNAPSHOT,
        thumbnail_job(),
    )
    text = text_of(plan)
    expected = [
        "    + SnapshotJob/audit/lobby                  create    new task: not in state",
        "        provider volc · interval 5s · image jpeg (source size) · storage tos snaps · idle timeout 3m",
        "        provider zego · mode single · media audio-video · format mp4 · folder record/ · storage s3 recs"
        " · idle timeout 1m · max duration 12h",
        "        provider zego-legacy · mode single · media audio-video · format mp4 · folder record/ · storage s3 recs"
        " · idle timeout 30s · max duration 24h",
        "        provider zego · jpg every 30s · folder stills/ · streams cam-1 · storage s3 recs · idle timeout 2m",
        "        provider zego · cdn Tencent · at 1s, 2s · definition 10",
        "        provider zego · cdn Huawei · every 2s",
    ]
    lines = text.splitlines()
    for line in expected:
        assert line in lines, f"{line!r} not in:\n{text}"
    markdown = render_markdown(plan)
    assert "- `RecordingJob/rec/class-1`: provider zego · mode single · media audio-video · format mp4" in markdown
    for secret in ENV.values():  # storage keys are in the requests (as fingerprints), never in a view
        assert secret not in text and secret not in markdown


def test_volcengine_vod_and_veimagex_storage_show_their_space_and_service(tmp_path: Path) -> None:
    storages = [
        f"apiVersion: capctl/v1\nkind: Storage\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n"
        for name, spec in (
            ("vod", 'type: vod, accountId: "21", space: clips'),
            ("imx", 'type: veimagex, accountId: "21", serviceId: svc-9'),
        )
    ]
    jobs = [
        snapshot_job(name, [room]).replace("storage: tos", f"storage: {storage}")
        for name, room, storage in (("a", "lobby", "vod"), ("b", "hall", "imx"))
    ]
    lines = text_of(plan_of(tmp_path, *storages, *jobs)).splitlines()
    for storage in ("vod space clips", "veimagex service svc-9"):
        line = f"        provider volc · interval 5s · image jpeg (source size) · storage {storage} · idle timeout 20s"
        assert line in lines, lines


def test_identical_changes_of_one_job_print_once_with_their_rooms(tmp_path: Path) -> None:
    rooms = [f"room-{i:03}" for i in range(500)]
    plan = plan_of(tmp_path, snapshot_job("audit", rooms), recording_job("rec", ["a", "b"]))
    text = text_of(plan)
    lines = text.splitlines()
    header = next(line for line in lines if "SnapshotJob/audit" in line)
    assert header.split()[:5] == ["+", "SnapshotJob/audit", "(500", "rooms)", "create"]
    assert text.count("provider volc · interval 5s") == 1
    at = lines.index(header)
    assert lines[at + 1].startswith("        provider volc · interval 5s")
    listing = [line for line in lines[at + 2 :] if line.startswith(("        rooms: ", "          room-"))]
    assert " ".join(listing).replace("rooms:", "").replace(",", " ").split() == rooms  # all, in order
    assert max(len(line) for line in listing) <= 100
    # Two alike are fewer than a group: listed one by one, each key whole (grep finds it).
    assert "+ RecordingJob/rec/a " in text and "+ RecordingJob/rec/b " in text
    assert len(lines) < 80, "500 creates alike: a header, their settings once, the rooms wrapped"
    markdown = render_markdown(plan)
    assert "| ➕ | `SnapshotJob/audit` (500 rooms) | create | new task: not in state |" in markdown
    assert "  - rooms: `room-000`, `room-001`," in markdown
    assert "<details><summary>" not in markdown and "<details open><summary>" in markdown


def test_a_narrow_terminal_wraps_no_line_of_a_plan(tmp_path: Path) -> None:
    """COLUMNS=40: the header alone was wrapped (`the following \\nactions:`), the entries were not."""
    console = Console(record=True, width=40, color_system=None)
    render_text(plan_of(tmp_path, snapshot_job("audit", ["lobby"])), console)
    assert console.export_text().splitlines()[0] == "capctl will perform the following actions:"


def test_markdown_escapes_a_pipe_in_table_cells_only(tmp_path: Path) -> None:
    """A ZEGO room id may hold `|`: escaped in the table (or it splits the row), as is in the list below it,
    where a backslash inside inline code would show."""
    plan = plan_of(tmp_path, recording_job("rec", ["a|b", "c|d", "e|f"]), recording_job("one", ["x|y"]))
    markdown = render_markdown(plan)
    assert "| ➕ | `RecordingJob/one/x\\|y` | create |" in markdown
    assert "- `RecordingJob/one/x|y`: provider zego" in markdown
    assert "  - rooms: `a|b`, `c|d`, `e|f`" in markdown


def test_markdown_writes_html_in_user_text_as_text(tmp_path: Path) -> None:
    """A ZEGO room id or folder may hold `<`: outside code, `<!--` would hide the rest of the PR comment (a
    delete below it) and `<i>` would restyle it, so the settings line writes them as entities; in code (the
    task keys, the rooms) they are shown as they are."""
    job = recording_job("rec", ['"<!--a"']).replace("outputFolder: record/", 'outputFolder: "rec/<i>&<!--/"')
    markdown = render_markdown(plan_of(tmp_path, job))
    assert "| ➕ | `RecordingJob/rec/<!--a` | create |" in markdown
    assert "folder rec/&lt;i&gt;&amp;&lt;!--/ · storage" in markdown
    assert "<!--" not in markdown.replace("`RecordingJob/rec/<!--a`", "")


def test_changes_that_differ_are_not_grouped(tmp_path: Path) -> None:
    rooms = ["r1", "r2", "r3", "r4"]
    old = plan_of(tmp_path, snapshot_job("audit", rooms, interval="5s"))
    spec_set = load_spec_set([tmp_path / "specs"], env=ENV)
    records = {key: record_for(task) for key, task in spec_set.tasks.items() if key.endswith(("r1", "r2", "r3"))}
    assert old["summary"]["create"] == 4
    plan = plan_of(tmp_path, snapshot_job("audit", rooms, interval="10s"), records=records)
    text = text_of(plan)
    assert "~ SnapshotJob/audit (3 rooms)" in text and "+ SnapshotJob/audit/r4" in text
    assert "        rooms: r1, r2, r3" in text.splitlines()


def test_an_update_says_each_fact_once(tmp_path: Path) -> None:
    old, new = desired(interval=5), desired(interval=10)
    plan = plan_to_json(
        diff({new.key: new}, {old.key: record_for(old)}, {}, options=PlanOptions(), state_serial=7, now=NOW)
    )
    text = text_of(plan)
    assert text.count("5s → 10s") == 1
    assert "~ SnapshotJob/lobby-audit/lobby  update    spec changed: the vendor updates it in place" in text
    assert "        interval 5s → 10s" in text.splitlines()
    markdown = render_markdown(plan)
    assert markdown.count("5s → 10s") == 1
    assert "| ✏️ | `SnapshotJob/lobby-audit/lobby` | update | spec changed: the vendor updates it in place |" in markdown


def test_a_saved_plan_renders_the_same_as_the_fresh_one(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, snapshot_job("audit", ["a", "b", "c", "d"]), thumbnail_job())
    saved = plan_to_json(plan_from_json(json.loads(json.dumps(plan))))  # no shared subtrees after a file
    assert text_of(saved) == text_of(plan)
    assert render_markdown(saved) == render_markdown(plan)


def test_a_hand_edited_plan_with_odd_values_still_renders(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, snapshot_job("audit", ["a"]))
    plan["changes"][0]["after"] = {"ImageConfig": "not an object", "StorageConfig": [1], "MaxIdleTime": True}
    plan["changes"].append({**plan["changes"][0], "key": "no-slashes", "after": None})
    text = text_of(plan)
    assert "provider volc · image jpeg (source size) · storage vendor None None · idle timeout True" in text
    assert "+ no-slashes" in text


def test_a_replace_that_also_changes_the_interval_marks_what_forces_it() -> None:
    """The interval alone is an update in place; with an idle timeout it is a replace, and the reviewer is
    told which line forced it. A replace where every line forces it is not marked."""
    old = desired(interval=5, idle=180)
    both = desired(interval=10, idle=240)
    plan = plan_to_json(
        diff({both.key: both}, {old.key: record_for(old)}, {}, options=PlanOptions(), state_serial=7, now=NOW)
    )
    lines = text_of(plan).splitlines()
    assert "        MaxIdleTime: 180 → 240 (forces the replace)" in lines
    assert "        ImageConfig.Interval: 5 → 10" in lines
    alone = desired(interval=5, idle=240)
    plan = plan_to_json(
        diff({alone.key: alone}, {old.key: record_for(old)}, {}, options=PlanOptions(), state_serial=7, now=NOW)
    )
    assert "        MaxIdleTime: 180 → 240" in text_of(plan).splitlines()


def test_a_volcengine_stream_shows_its_type_and_index(tmp_path: Path) -> None:
    """The index picks one of a user's screen shares: a changed index must not read the same (walk H8)."""
    job = snapshot_job("audit", ["lobby"]).replace(
        "storage: tos", "streams: [{user: host}, {user: host, type: screen, index: 1}]\n  storage: tos"
    )
    assert "streams host, host (screen, index 1) · storage" in text_of(plan_of(tmp_path, job))


def test_markdown_writes_a_selectors_rooms_as_code(tmp_path: Path) -> None:
    """A selector's rooms are named by whoever joins them: outside code, a room `@octocat` (a Volcengine room
    id may hold `@`) pinged that GitHub user from every plan comment listing it, and `<b>` was markup. In
    inline code a mention is no mention; the text view is unchanged. A reason quoting one is written alike."""
    plan = plan_of(tmp_path, snapshot_job("audit", ["lobby"]))
    counts = {"active": 3, "running": 0, "start": 1, "left_out": 1, "ending": 0, "claimed": 1}
    view = {"job": "SnapshotJob/sel", "provider": "volc", "rooms": "*", "max_rooms": 1, "counts": counts}
    view |= {"seen_at": plan["created_at"], "start": ["@octocat"], "left_out": ["x|<b>"], "ending": []}
    plan["selectors"] = [view | {"claimed": [{"room": "@org", "by": "SnapshotJob/named"}]}]
    plan["changes"][0]["reason"] = 'previous start failed: invalid parameter ({"RoomId":"@octocat"}); ops@example.com'
    markdown = render_markdown(plan)
    assert '| create | previous start failed: invalid parameter ({"RoomId":"`@octocat`"}); `ops@example.com` |' in (
        markdown
    )  # a vendor's message quoting a room: the mention in code too (an email address, which GFM links, too)
    assert (
        "<br>to start: `@octocat`<br>left out (maxRooms 1): `x\\|<b>`<br>`@org`: claimed by `SnapshotJob/named` |"
        in markdown
    )
    text = text_of(plan)
    assert "to start: @octocat" in text and "left out (maxRooms 1): x|<b>" in text
    assert "@org: claimed by SnapshotJob/named" in text


def test_markdown_code_holds_any_run_of_backticks(tmp_path: Path) -> None:
    """A ZEGO room id may hold backticks: "``<!--``" in a fence of two ended the code at its own `` and
    `<!--` opened an HTML comment that hid the rest of the PR comment (a delete below it)."""
    markdown = render_markdown(plan_of(tmp_path, recording_job("rec", ['"``<!--``"'])))
    assert "| ➕ | ``` RecordingJob/rec/``<!--`` ``` | create |" in markdown
    assert "- ``` RecordingJob/rec/``<!--`` ```: provider zego" in markdown


def test_markdown_code_keeps_the_spaces_at_both_ends_of_a_room(tmp_path: Path) -> None:
    """A room from callbacks may be " a " (ZEGO's ids are any printable text): CommonMark takes one space off
    each end of such code, and the plan showed room "a", another room, to the reviewer."""
    plan = plan_of(tmp_path, snapshot_job("audit", ["lobby"]))
    counts = {"active": 3, "running": 0, "start": 3, "left_out": 0, "ending": 0, "claimed": 0}
    view = {"job": "SnapshotJob/sel", "provider": "zego", "rooms": "*", "max_rooms": None, "counts": counts}
    plan["selectors"] = [view | {"seen_at": plan["created_at"], "start": [" a ", "b ", "   "], "left_out": []}]
    plan["selectors"][0] |= {"ending": [], "claimed": []}
    html = cmarkgfm.github_flavored_markdown_to_html(render_markdown(plan))
    assert "to start: <code> a </code>, <code>b </code>, <code>   </code></td>" in html


def test_markdown_shows_vendor_text_as_it_is_when_github_renders_it(tmp_path: Path) -> None:
    """Rendered by cmark-gfm (GitHub's own): a vendor's message quoting a room "a`b" opened a code span that
    pushed the `@octocat` after it out of code (a mention from every plan comment), and `*x*`, `[z](url)`,
    `~~w~~` in a message or a folder became emphasis, a masked link, a strike-through. Each text now reads back
    as it was, in a table whose rows keep their columns; a bare URL is code, as every reference (walk 13f)."""
    hostile = 'room "a`b" of @octocat: *x* _y_ [z](https://evil.example) ~~w~~ a\\|b; see https://e.com/a_b|c'
    folder = "rec/*a*_b_`c`[d]/"
    job = recording_job("rec", ["lobby"]).replace("outputFolder: record/", f'outputFolder: "{folder}"')
    plan = plan_of(tmp_path, job)
    plan["changes"][0]["reason"] = hostile
    # capctl's own notes put commands in code: kept as code (where a key's `*` and `_` are no emphasis either)
    waiting = "1 backing-off task(s) left alone: R/j/*a*_b_: backing off (`capctl wake R/j/*a*_b_` starts it)."
    plan["notes"] = [hostile, waiting.replace("starts it", "or `capctl wake R/j/a|b` start them")]
    html = cmarkgfm.github_flavored_markdown_to_html(render_markdown(plan), options=cmarkgfm.Options.CMARK_OPT_UNSAFE)

    def text(fragment: str) -> str:
        return unescape(re.sub(r"<[^>]+>", "", fragment))

    quote = re.search("<blockquote>(.*?)</blockquote>", html, re.S)
    notes = re.findall(r"<p>(.*?)</p>", quote.group(1) if quote else "", re.S)  # a paragraph each
    assert [text(note) for note in notes] == [hostile, plan["notes"][1].replace("`", "")]
    assert "<code>capctl wake R/j/*a*_b_</code>" in notes[1]
    rows = [re.findall(r"<t[hd]>(.*?)</t[hd]>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)]
    assert [len(cells) for cells in rows] == [4, 4] and text(rows[1][3]) == hostile
    assert f"mp4 · folder {folder} · storage" in text(html)
    outside_code = re.sub(r"<code>.*?</code>", "", html)
    assert "@octocat" not in outside_code and not re.search("<(em|del)>", outside_code)
    assert "<a " not in html  # no link, masked or bare
    assert "<code>https://evil.example</code>" in html and "<code>https://e.com/a_b|c</code>" in html


def test_markdown_puts_githubs_references_in_code_where_github_links_none(tmp_path: Path) -> None:
    """GitHub links `#26`, `GH-26`, `owner/repo#26`, a commit id, `user@SHA`, bare URLs and emails, mentions
    `@name`, and draws `:emoji:` after rendering a comment, in any text but code, pre and links (a backslash
    escape is gone by then): a vendor's "see #12" linked the repository's issue 12 from every plan comment, and
    a request id of hex digits a commit; GitLab (the action comments there too) links `!8`, `g/p!9`, `~10` alike.
    Each reads back as it was, in code; a time's `21:30:12` is no emoji."""
    said = (
        "see #12 GH-7 acme/infra#3 org#4; request 20261206205710abcdef, task 1f0e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b, "
        "fixed in a5c3785 jlord@a5c3785ed jlord/sheetsee.js@a5c3785 :tada: :+1: @ops-team @org/sre mail ops@x.io "
        "https://status.example/x?y=1&z=2 www.example.com at 2026-12-06 21:30:12Z, 50% done; GitLab: !8 g/p!9 ~10 "
        "&#11;"
    )
    plan = plan_of(tmp_path, snapshot_job("audit", ["lobby"]))
    plan["changes"][0]["reason"] = said
    plan["notes"] = [said]
    html = cmarkgfm.github_flavored_markdown_to_html(render_markdown(plan))
    refs = ["#12", "GH-7", "acme/infra#3", "org#4", "20261206205710abcdef", "1f0e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"]
    refs += ["a5c3785", "jlord@a5c3785ed", "jlord/sheetsee.js@a5c3785", ":tada:", ":+1:", "@ops-team", "@org/sre"]
    refs += ["ops@x.io", "https://status.example/x?y=1&amp;z=2", "www.example.com", "!8", "g/p!9", "~10", "#11"]
    for ref in refs:
        assert html.count(f"<code>{ref}</code>") == 2, ref  # the note and the table's reason
    outside = re.sub(r"<code>.*?</code>", "", html)
    assert not re.search(r"[#!~]\d|@|:[a-z]\w*:|[0-9a-f]{7}|https?:|www\.|<a ", outside), outside
    assert "at 2026-12-06 21:30:12Z" in outside  # a date and a time are no reference
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)]
    assert unescape(re.sub(r"<[^>]+>", "", cells[1][3])) == said


def test_text_columns_line_up_with_wide_characters_in_room_ids(tmp_path: Path) -> None:
    """A room id in CJK or with an emoji (ZEGO allows them) takes two terminal cells a character: padded by
    `str.ljust`, the plan's action column and `capctl state list`'s columns after such a key were pushed right."""
    plan = plan_of(tmp_path, recording_job("rec", ["房间一号", '"🎉 party"']), recording_job("r2", ["plain-room"]))
    rows = [line for line in text_of(plan).splitlines() if line.endswith("new task: not in state")]
    assert len(rows) == 3 and len({cell_len(row.split("create")[0]) for row in rows}) == 1, rows
    records = [record_for(desired(room)) for room in ("房间一号", "lobby")]
    table = render_state_table(records, 1, now=0).splitlines()[1:]
    assert len({cell_len(line.split("running")[0]) for line in table[1:]}) == 1, table
    assert cell_len(table[0].split("STATUS")[0]) == cell_len(table[1].split("running")[0]), table


def test_a_long_room_id_or_a_narrow_terminal_keeps_the_text_plan_in_80_columns(tmp_path: Path) -> None:
    """One room id of 128 characters (ZEGO's longest) padded every row's label to it, pushing each action past
    column 150; and rooms were wrapped at 100 columns, which an 80-column terminal broke again at 80. Now only
    the long row is pushed, and rooms wrap at the terminal's width."""
    long = "L" + "o" * 127
    rooms = [long, *(f"房间-{i:03d}" for i in range(30))]
    plan = plan_of(tmp_path, recording_job("rec", rooms[:1]), recording_job("many", rooms[1:]), ZEGO_SNAPSHOT)
    console = Console(record=True, width=80, color_system=None)
    render_text(plan, console)
    lines = console.export_text().splitlines()
    actions = [cell_len(line.split(" create ")[0]) for line in lines if "new task: not in state" in line]
    assert actions[1:] == [35, 35] and actions[0] > 128, lines  # `RecordingJob/many (30 rooms)`: 28 cells
    members = [line for line in lines if "房间-" in line]
    assert len(members) > 3 and all(cell_len(line) <= 80 for line in members), lines


def test_settings_wrap_between_facts_at_the_terminals_width(tmp_path: Path) -> None:
    """Walk 16c: a ZEGO recording's settings were one line of 135 columns (267 with every field set long), which
    an 80-column terminal broke flush left between the indented lines. Now they wrap between two facts, later
    lines indented; a fact is never cut (grep finds it whole), and the markdown view keeps one line."""
    job = recording_job("rec", ["r" * 64]).replace(
        "  mode: single\n",
        "  mode: single\n  streams: [{stream: teacher-camera-main}, {stream: teacher-screen-share}]\n",
    )
    plan = plan_of(tmp_path, job.replace("outputFolder: record/", "outputFolder: recordings/classes/2026/"))
    expected = {
        80: [
            "        provider zego · mode single · media audio-video · format mp4 ·",
            "          folder recordings/classes/2026/ ·",
            "          streams teacher-camera-main, teacher-screen-share · storage s3 recs ·",
            "          idle timeout 30s · max duration 24h",
        ],
        120: [  # at most 100 columns, as the rooms
            "        provider zego · mode single · media audio-video · format mp4 ·",
            "          folder recordings/classes/2026/ · streams teacher-camera-main, teacher-screen-share ·",
            "          storage s3 recs · idle timeout 30s · max duration 24h",
        ],
    }
    for width, wrapped in expected.items():
        console = Console(record=True, width=width, color_system=None)
        render_text(plan, console)
        lines = console.export_text().splitlines()
        assert lines[3 : 3 + len(wrapped)] == wrapped and lines[3 + len(wrapped)] == "", lines
    said = " · ".join(part.strip(" ·") for part in expected[80])
    assert f"`RecordingJob/rec/{'r' * 64}`: {said}\n" in render_markdown(plan)


def test_state_list_in_80_columns_puts_a_reason_that_cannot_fit_under_its_task() -> None:
    """Walk 14b: at 80 columns a key of 34 cells (`RecordingJob/webinar-rec/webinar-2`) left REASON fewer than its
    10 cells; the row was printed 84 cells wide anyway, so the terminal wrapped every stopped task's row. Now the
    reason goes under its task, whole up to the edge; a wider terminal and a pipe keep one line a task."""
    from reconciler.model import TaskStatus

    reason = "idle timeout (ZEGO quit_reason 3)"
    stopped = record_for(desired("webinar-2")).evolve(status=TaskStatus.DORMANT, stop_reason=reason)
    running = record_for(desired("webinar-1"))
    assert cell_len(stopped.key) == 33  # `SnapshotJob/lobby-audit/webinar-2`
    narrow = render_state_table([stopped, running], 1, now=0, width=80).splitlines()[1:]
    assert all(cell_len(line) <= 80 for line in narrow), narrow
    assert narrow[0].split() == ["KEY", "STATUS", "RE-ISSUES", "NEXT", "ATTEMPT"]  # no REASON it cannot show
    assert narrow[1].startswith(stopped.key) and narrow[2] == f"    ↳ {reason}" and narrow[3].startswith(running.key)
    wide = render_state_table([stopped, running], 1, now=0, width=120).splitlines()[1:]
    assert len(wide) == 3 and wide[0].endswith("REASON") and wide[1].endswith(reason) and wide[2].endswith("-")
    assert render_state_table([stopped, running], 1, now=0).splitlines()[2].endswith(reason)  # a pipe: one line


def test_state_list_says_a_tombstone_was_removed_also_when_its_run_had_ended_before() -> None:
    """Walk 41C-6: `RecordingJob/class-recs/class-101   removed   0   -   idle timeout (ZEGO quit_reason 3)` beside
    `… class-102   removed   0   -   removed from specs`: the REASON of a tombstone whose run had ended before its
    removal said why that run ended, not that it was removed. `-o wide`'s STOP REASON keeps the stop reason."""
    from reconciler import transitions
    from reconciler.model import TaskStatus

    reason = "idle timeout (ZEGO quit_reason 3)"
    ended = record_for(desired("class-101")).evolve(status=TaskStatus.STOPPED, stop_reason=reason, stopped_at=5.0)
    tombstones = [transitions.removed(ended, 10.0), transitions.removed(record_for(desired("class-102")), 10.0)]
    rows = render_state_table(tombstones, 1, now=20).splitlines()[2:]
    assert rows[0].endswith(f"removed from specs (its run had ended: {reason})"), rows
    assert rows[1].endswith("   removed from specs"), rows
    wide = render_state_table(tombstones, 1, now=20, wide=True).splitlines()[2]
    assert f"   {reason}   " in wide and "its run had ended" not in wide


def test_a_long_change_puts_the_new_value_under_the_old() -> None:
    """Walk 16c: `StorageConfig.TosConfig.Bucket: <63 characters> → <63 characters>` was one line of 169 columns;
    now the new value goes under the old when both do not fit, each whole. A short change stays one line."""
    old, new = desired(bucket="b" * 63), desired(bucket="c" * 63, interval=10)
    plan = plan_to_json(
        diff({new.key: new}, {old.key: record_for(old)}, {}, options=PlanOptions(), state_serial=7, now=NOW)
    )
    console = Console(record=True, width=80, color_system=None)
    render_text(plan, console)
    lines = console.export_text().splitlines()
    at = lines.index(f"        StorageConfig.TosConfig.Bucket: {'b' * 63}")
    assert lines[at + 1] == f"          → {'c' * 63} (forces the replace)", lines
    assert "        ImageConfig.Interval: 5 → 10" in lines
    assert f"StorageConfig.TosConfig.Bucket: {'b' * 63} → {'c' * 63} (forces the replace)" in render_markdown(plan)


def test_a_selector_with_no_room_activity_says_where_the_activity_comes_from(tmp_path: Path) -> None:
    """Walk 41c: with `capctl run` running and a simulator started without its callback URLs, the plan said
    `no room activity known yet (`capctl run` records it)`: the daemon ran, and nothing said that it learns of
    rooms from the vendor's room callbacks only."""
    plan = plan_of(tmp_path, snapshot_job("audit", ["lobby"]))
    counts = {"active": 0, "running": 0, "start": 0, "left_out": 0, "ending": 0, "claimed": 0}
    view = {"job": "SnapshotJob/sel", "provider": "volc", "rooms": "class-*", "max_rooms": None, "counts": counts}
    plan["selectors"] = [view | {"seen_at": None, "start": [], "left_out": [], "ending": [], "claimed": []}]
    console = Console(record=True, width=200, color_system=None)
    render_text(plan, console)
    assert (
        "no room activity known yet (`capctl run` records it from the vendor's room callbacks, sent to its"
        " /callbacks/volcengine or /callbacks/zego): nothing to start" in console.export_text().replace("\n", " ")
    )


def test_a_selectors_rooms_wrap_under_it(tmp_path: Path) -> None:
    """Walk 16c: a selector's rooms to start were one line however many (200 active rooms: ~2,000 columns),
    where a named job's rooms wrap. Now they wrap as those do; the selector's own line and markdown unchanged."""
    plan = plan_of(tmp_path, snapshot_job("audit", ["lobby"]))
    rooms = [f"class-{i:03d}" for i in range(40)]
    counts = {"active": 40, "running": 0, "start": 40, "left_out": 0, "ending": 0, "claimed": 0}
    view = {"job": "SnapshotJob/sel", "provider": "volc", "rooms": "class-*", "max_rooms": None, "counts": counts}
    plan["selectors"] = [view | {"seen_at": plan["created_at"], "start": rooms, "left_out": [], "ending": []}]
    plan["selectors"][0]["claimed"] = []
    console = Console(record=True, width=80, color_system=None)
    render_text(plan, console)
    lines = console.export_text().splitlines()
    listing = [line for line in lines if line.startswith(("        to start: class-000,", "          class-"))]
    assert len(listing) > 3 and all(len(line) <= 80 for line in listing), lines
    assert " ".join(listing).replace("to start:", "").replace(",", " ").split() == rooms
    assert "<br>to start: " + ", ".join(f"`{r}`" for r in rooms) + " |" in render_markdown(plan)


def test_markdown_puts_the_changes_before_a_selectors_long_room_lists(tmp_path: Path) -> None:
    """Walk 55b: the selector table came before the changes, each of its lists whole: 5,000 rooms left out past a
    `maxRooms` (one table row, one line) put the delete past the 60,000 characters a PR comment is cut at, and
    the cut, at a line's end, took that row too. The changes come first now, and each list names 50 rooms."""
    gone = desired("r1", job="old-job")
    plan = plan_of(tmp_path, snapshot_job("audit", ["lobby"]), records={gone.key: record_for(gone)})
    rooms = [f"live-{i:05d}" for i in range(5000)]
    counts = {"active": 5060, "running": 0, "start": 0, "left_out": 5000, "ending": 0, "claimed": 60}
    view = {"job": "SnapshotJob/sel", "provider": "volc", "rooms": "live-*", "max_rooms": 1, "counts": counts}
    view |= {"seen_at": plan["created_at"], "start": [], "left_out": rooms, "ending": []}
    plan["selectors"] = [view | {"claimed": [{"room": f"dup-{i}", "by": "SnapshotJob/a"} for i in range(60)]}]
    markdown = render_markdown(plan)
    assert markdown.index("| ➖ | `SnapshotJob/old-job/r1` | delete |") < markdown.index("| Room selector |")
    shown = ", ".join(f"`{room}`" for room in rooms[:50])
    assert f"<br>left out (maxRooms 1): {shown}, … and 4,950 more<br>`dup-0`: claimed by" in markdown
    assert "`dup-49`: claimed by `SnapshotJob/a`<br>… and 10 more claimed |" in markdown
    assert "dup-50" not in markdown and len(markdown) < 4000
    assert ", ".join(rooms) in text_of(plan).replace(",\n          ", ", ")  # the text view lists them all
