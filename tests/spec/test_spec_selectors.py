"""Room selectors (`rooms: {match, exclude, maxRooms}`): validation, the offline clash with named rooms,
matching and exclusion (property-based), the selection from room activity with its cap, and task ids."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import transitions
from reconciler.model import RoomActivity, TaskStatus
from reconciler.rooms import Selection, holding, named_rooms, select, selector_view, unselected
from reconciler.spec import SpecSet
from reconciler.spec.fields import VOLC_ID_RE
from reconciler.spec.models import RoomSelector, SnapshotJobSpec
from reconciler.spec.selectors import covers
from tests.spec.conftest import ErrorsOf, Loader, job
from tests.state.helpers import make_record

VOLC_SELECTOR = "provider: volc\nrooms: {match: 'class-*', exclude: 'class-test-*'}\nstorage: tos\n"
ZEGO_SELECTOR = "provider: zego\nrooms: {match: 'class-*'}\nstorage: s3\n"


def _select(
    spec: SpecSet, active: list[str], provider: str = "volc", held: frozenset[str] = frozenset()
) -> list[Selection]:
    """The selections of `spec` with `active` rooms of `provider`'s account known active, as plan makes them."""
    account = spec.providers[provider].account
    activity = [RoomActivity(account, room, True, 100.0, "callback") for room in active]
    return select(spec.selector_jobs, activity, named_rooms(spec.tasks.values()), held, spec.providers)


# --- validation ---------------------------------------------------------------------------------------


def test_a_selector_job_loads_with_no_task_until_rooms_are_known(load: Loader) -> None:
    spec = load(job(body=VOLC_SELECTOR))
    assert spec.tasks == {} and [c.job.name for c in spec.selector_jobs] == ["j"]
    model = spec.jobs[("SnapshotJob", "j")].spec
    assert isinstance(model, SnapshotJobSpec) and isinstance(model.rooms, RoomSelector)
    assert model.rooms.match == ["class-*"] and model.rooms.exclude == ["class-test-*"]


def test_a_selector_of_every_room_without_max_rooms_is_warned_about_at_its_glob(load: Loader) -> None:
    """Valid (spec-language.md), but anyone who can create a room in the vendor app starts a capture there."""
    spec = load(job(body="provider: volc\nrooms:\n  match: [class-*, '?*']\nstorage: tos\n"))
    [warning] = spec.warnings()
    assert re.fullmatch(
        r".*spec\.yaml:7:\d+: SnapshotJob 'j': spec\.rooms\.match '\?\*' selects every room and no maxRooms caps it: "
        r"anyone who can create a room in the vendor app .*; set spec\.rooms\.maxRooms, or match a narrower pattern",
        warning,
    )
    for body in (
        "provider: volc\nrooms: {match: '*', maxRooms: 20}\nstorage: tos\n",  # capped
        "provider: volc\nrooms: {match: ['class-*', '[a-z]*']}\nstorage: tos\n",  # not any room
        "provider: volc\nrooms: {match: '*', exclude: '*'}\nstorage: tos\n",  # no room at all
        "provider: volc\nrooms: {match: '*', exclude: ['?*']}\nstorage: tos\n",
        "provider: volc\nrooms: [lobby]\nstorage: tos\n",
    ):
        assert [w for w in load(job(body=body)).warnings() if "selects every room" in w] == [], body


def test_the_every_room_warning_decides_by_what_the_globs_match_not_their_spelling(load: Loader) -> None:
    """22b's check took `*` and `?*` only: `??*` (every id but one-character ones), `*?*` or `[!t]*` went
    unwarned, while `*` with `exclude: '*'` (which selects nothing) was warned."""
    for match, exclude, glob in (
        ("['??*']", "[]", "??*"),
        ("[class-*, '*?*']", "[]", "*?*"),
        ("['[!t]*']", "[]", "[!t]*"),
        ("['*']", "[test-*, lobby]", "*"),  # a name picked by anyone is not excluded
    ):
        body = f"provider: volc\nrooms: {{match: {match}, exclude: {exclude}}}\nstorage: tos\n"
        [warning] = load(job(body=body)).warnings()
        assert f"spec.rooms.match '{glob}' selects every room and no maxRooms caps it" in warning, body


def test_selector_errors_name_the_field_at_its_place(errors_of: ErrorsOf) -> None:
    text = job(body="provider: volc\nrooms: {mach: 'a*', maxRooms: 0}\nstorage: tos\n")
    errors = errors_of(text)
    assert any(
        re.search(r"spec\.yaml:6:11: unknown field 'spec\.rooms\.mach' \(did you mean 'match'\?\)", e) for e in errors
    )
    assert any(re.search(r"spec\.yaml:6:\d+: spec\.rooms\.maxRooms: must be at least 1, got 0", e) for e in errors)
    wrong = errors_of(job(body="provider: volc\nrooms: lobby\nstorage: tos\n"))
    assert any(
        "spec.rooms: expected a list of room names or a selector {match: PATTERN}, got a string" in e for e in wrong
    )


def test_volcengine_patterns_that_can_never_match_and_repeated_patterns_are_errors(
    load: Loader, errors_of: ErrorsOf
) -> None:
    errors = errors_of(job(body="provider: volc\nrooms: {match: ['a b*', 'x*', 'x*']}\nstorage: tos\n"))
    assert any(
        re.search(r"spec\.yaml:6:\d+: spec\.rooms\.match\[0\]: pattern 'a b\*' can never match", e) for e in errors
    )
    assert any("spec.rooms.match[2]: pattern 'x*' is listed twice (first at rooms.match[1])" in e for e in errors)
    # What fnmatch takes as itself, or a set of no room-id character, can never match either (walk 8f F4: valid
    # before, a selector job that silently captured nothing).
    odd = errors_of(
        job(body="provider: volc\nrooms: {match: ['mod-[0-9', 'mod-[z-a]', 'mod-!x'], exclude: ']*'}\nstorage: tos\n")
    )
    for field, pattern, why in [
        ("match[0]", "mod-[0-9", "no ']' closes its '[' at character 5, so the '[' stands for itself"),
        ("match[1]", "mod-[z-a]", "its set [z-a] holds none of the characters a room id may"),
        ("match[2]", "mod-!x", "a '!' outside a set [...] stands for itself"),
        ("exclude[0]", "]*", "a ']' outside a set [...] stands for itself"),
    ]:
        assert any(
            f"spec.rooms.{field}: pattern '{pattern}' can never match a volcengine room id: {why}" in e for e in odd
        )
    load(job(body="provider: volc\nrooms: {match: ['class-[0-9]*', '[!x]?', '[!]]*']}\nstorage: tos\n"))  # valid


def test_a_named_room_covered_by_a_selector_on_the_same_provider_is_an_error_naming_both(errors_of: ErrorsOf) -> None:
    named = job(name="named", body="provider: volc\nrooms: [lobby, class-1]\nstorage: tos\n")
    errors = errors_of(job(name="sel", body=VOLC_SELECTOR) + "---\n" + named)
    assert len(errors) == 1
    assert re.search(
        r"spec\.yaml:14:\d+: spec\.rooms\[1\]: room 'class-1' on provider 'volc' is also covered by the selector "
        r"of SnapshotJob 'sel' \(.*spec\.yaml:1:1\) \(rooms: class-\* except class-test-\*\)",
        errors[0],
    )


def test_no_clash_when_excluded_or_on_another_provider_or_kind(load: Loader) -> None:
    excluded = job(name="named", body="provider: volc\nrooms: [class-test-1]\nstorage: tos\n")
    other_provider = job(name="z", body="provider: zego\nrooms: [class-1]\nstorage: s3\n")
    other_kind = job("RecordingJob", "rec", "provider: zego\nrooms: [class-2]\nstorage: s3\n")
    zego_selector = "provider: zego\nrooms: {match: 'class-2*'}\nstorage: s3\n"
    selectors = job(name="sel", body=VOLC_SELECTOR) + "---\n" + job(name="zsel", body=zego_selector)
    spec = load("---\n".join([selectors, excluded, other_provider, other_kind]))
    assert sorted(spec.tasks) == [
        "RecordingJob/rec/class-2",
        "SnapshotJob/named/class-test-1",
        "SnapshotJob/z/class-1",
    ]


# --- matching and exclusion (property-based) --------------------------------------------------------------

ROOM_CHARS = "abcz019-_.@"
rooms = st.text(alphabet=ROOM_CHARS, min_size=1, max_size=12)
patterns = st.lists(st.text(alphabet=ROOM_CHARS + "*?", min_size=1, max_size=6), min_size=1, max_size=3)


@given(room=rooms, prefix=st.text(alphabet=ROOM_CHARS, max_size=4))
def test_a_prefix_glob_matches_exactly_the_rooms_with_that_prefix(room: str, prefix: str) -> None:
    assert covers(RoomSelector(match=[prefix + "*"]), room) == room.startswith(prefix)
    assert covers(RoomSelector(match=[room]), room)  # a room id (no glob character) matches itself


@given(room=rooms, match=patterns, exclude=patterns)
def test_covered_means_matched_by_some_pattern_and_excluded_by_none(
    room: str, match: list[str], exclude: list[str]
) -> None:
    selector = RoomSelector(match=match, exclude=exclude)
    expected = any(fnmatchcase(room, p) for p in match) and not any(fnmatchcase(room, p) for p in exclude)
    assert covers(selector, room) == expected
    assert not covers(RoomSelector(match=match, exclude=match), room)  # excluding what is matched leaves nothing


@given(room=rooms, match=patterns, more=patterns, exclude=patterns)
def test_more_match_patterns_never_drop_a_room_and_more_excludes_never_add_one(
    room: str, match: list[str], more: list[str], exclude: list[str]
) -> None:
    base = covers(RoomSelector(match=match), room)
    assert covers(RoomSelector(match=match + more), room) >= base
    assert covers(RoomSelector(match=match, exclude=exclude), room) <= base


# --- selection from room activity, the cap ---------------------------------------------------------------


def test_selection_starts_covered_active_rooms_only_and_the_named_job_keeps_its_room(load: Loader) -> None:
    named = job(name="named", body="provider: volc\nrooms: [lobby]\nstorage: tos\n")
    loose = job(name="all", body="provider: volc\nrooms: {match: '*', exclude: lobby}\nstorage: tos\n")
    spec = load(job(name="sel", body=VOLC_SELECTOR) + "---\n" + named)
    (sel,) = _select(spec, ["class-1", "class-test-1", "lobby", "other"])
    assert sel.active == ("class-1",) and sel.chosen == ("class-1",)
    assert [t.key for t in sel.tasks] == ["SnapshotJob/sel/class-1"] and sel.tasks[
        0
    ].selector == "class-* except class-test-*"
    # Overlapping selectors: the first by name takes the room, the other lists it as claimed.
    both = load(job(name="sel", body=VOLC_SELECTOR) + "---\n" + named + "---\n" + loose)
    first, second = _select(both, ["class-1", "lobby", "other"])
    assert (first.job, first.chosen, first.claimed) == ("SnapshotJob/all", ("class-1", "other"), ())
    assert (second.job, second.chosen, second.claimed) == ("SnapshotJob/sel", (), (("class-1", "SnapshotJob/all"),))
    # A room a named job has (offline a spec error; at run time the named job wins) is never selected.
    activity = [RoomActivity(spec.providers["volc"].account, "class-1", True, 1.0, "callback")]
    named_by = {("SnapshotJob", "volc", "class-1"): "SnapshotJob/named"}
    (taken,) = select(spec.selector_jobs, activity, named_by, (), spec.providers)
    assert (taken.chosen, taken.claimed, taken.tasks) == ((), (("class-1", "SnapshotJob/named"),), ())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    active=st.lists(st.sampled_from([f"class-{i}" for i in range(12)] + ["lobby", "class-test-1"]), unique=True),
    held=st.sets(st.sampled_from([f"class-{i}" for i in range(12)])),
    cap=st.integers(min_value=1, max_value=6),
)
def test_max_rooms_keeps_running_rooms_first_and_returns_what_it_left_out(
    load: Loader, active: list[str], held: set[str], cap: int
) -> None:
    spec = load(
        job(
            name="sel",
            body=f"provider: volc\nrooms: {{match: class-*, exclude: class-test-*, maxRooms: {cap}}}\nstorage: tos\n",
        )
    )
    (sel,) = _select(spec, active, held=frozenset(f"SnapshotJob/sel/{r}" for r in held))
    covered = sorted(r for r in active if r.startswith("class-") and not r.startswith("class-test-"))
    assert sel.active == tuple(covered)
    assert not set(sel.chosen) & set(sel.left_out) and set(sel.chosen + sel.left_out) <= set(covered)
    # Walk 52C-2: a room still running past the cap is left to end: neither chosen nor left out (not captured).
    assert {r for r in covered if r not in sel.chosen + sel.left_out} == {r for r in covered if r in held} - set(
        sel.chosen
    )
    assert len(sel.chosen) == min(cap, len(covered))
    kept = [r for r in covered if r in held]
    assert set(kept[:cap]) <= set(sel.chosen)  # a running room is never dropped for a new one
    assert [t.target for t in sel.tasks] == list(sel.chosen)


def test_a_room_running_past_a_lowered_cap_is_not_started_by_another_selector(load: Loader) -> None:
    """Walk 52C-2: it was returned as left out and so released to the next overlapping selector job."""
    capped = "provider: volc\nrooms: {match: 'class-*', maxRooms: 1}\nstorage: tos\n"
    spec = load(job(name="a", body=capped) + "---\n" + job(name="b", body=VOLC_SELECTOR))
    first, second = _select(
        spec, ["class-1", "class-2"], held=frozenset({"SnapshotJob/a/class-1", "SnapshotJob/a/class-2"})
    )
    assert (first.chosen, first.left_out) == (("class-1",), ())
    assert (second.chosen, second.claimed) == ((), (("class-1", "SnapshotJob/a"), ("class-2", "SnapshotJob/a")))


def test_a_room_past_a_lowered_cap_whose_run_was_seen_to_end_is_left_out_in_the_plan(load: Loader) -> None:
    """Walk 53D-2: its record still running, `select` left it to end; the vendor said it ended, so the plan's
    view had it neither running, left to end nor left out: `3 active · 2 running · 0 left out (maxRooms 1)`."""
    spec = load(job(name="sel", body="provider: volc\nrooms: {match: 'class-*', maxRooms: 1}\nstorage: tos\n"))
    rooms = ["class-1", "class-2", "class-3"]
    (sel,) = _select(spec, rooms, held=frozenset(f"SnapshotJob/sel/{r}" for r in rooms))
    view = selector_view(sel, {}, {"SnapshotJob/sel/class-1", "SnapshotJob/sel/class-2"})
    assert (view["running"], view["ending"], view["left_out"]) == (["class-1", "class-2"], ["class-2"], ["class-3"])
    running = selector_view(sel, {}, {f"SnapshotJob/sel/{r}" for r in rooms})  # all run on: none left out
    assert (running["ending"], running["left_out"]) == (["class-2", "class-3"], [])


def test_holding_counts_running_and_pending_tasks() -> None:
    statuses = {"r": TaskStatus.RUNNING, "p": TaskStatus.PENDING, "s": TaskStatus.STOPPED, "d": TaskStatus.DORMANT}
    records = {f"SnapshotJob/j/{r}": make_record(f"SnapshotJob/j/{r}", status=s) for r, s in statuses.items()}
    assert holding(records) == {"SnapshotJob/j/r", "SnapshotJob/j/p"}


# --- task ids ------------------------------------------------------------------------------------------------


def test_volcengine_task_ids_are_the_job_per_room_valid_and_distinct(load: Loader) -> None:
    text = (
        job(name="sel", body=VOLC_SELECTOR)
        + "---\n"
        + job(name="other", body="provider: volc\nrooms: {match: 'x*'}\nstorage: tos\n")
    )
    spec = load(text)
    selections = _select(spec, ["class-1", "class-2", "x1"])
    ids = [(t.request["RoomId"], t.request["TaskId"]) for s in selections for t in s.tasks]
    assert ids == [("x1", "other"), ("class-1", "sel"), ("class-2", "sel")]
    assert len(set(ids)) == len(ids) and all(VOLC_ID_RE.match(room) and VOLC_ID_RE.match(tid) for room, tid in ids)
    again = _select(load(text), ["class-2", "x1", "class-1"])
    assert [t.request for s in again for t in s.tasks] == [t.request for s in selections for t in s.tasks]


def test_a_named_room_and_the_same_room_selected_make_the_same_task(load: Loader) -> None:
    named = load(job(name="j", body="provider: zego\nrooms: [class-1]\nstorage: s3\n")).tasks["SnapshotJob/j/class-1"]
    (sel,) = _select(load(job(name="j", body=ZEGO_SELECTOR)), ["class-1"], provider="zego")
    (selected,) = sel.tasks
    assert (selected.key, selected.request, selected.spec_hash) == (named.key, named.request, named.spec_hash)
    assert transitions.client_task_id(selected, None) == transitions.client_task_id(named, None)


_CLIENT_IDS = """
import json, sys
from tests.spec.conftest import BASE, SECRET_ENV, job
from reconciler import transitions
from reconciler.model import RoomActivity, TaskStatus
from reconciler.rooms import named_rooms, select
from reconciler.spec import load_spec_set
path = sys.argv[1]
spec = load_spec_set([BASE, path], env=SECRET_ENV)
acts = [RoomActivity(spec.providers["zego"].account, r, True, 1.0, "resync") for r in ("class-1", "class-2")]
chosen = select(spec.selector_jobs, acts, named_rooms(spec.tasks.values()), set(), spec.providers)
out = {t.key: transitions.client_task_id(t, None) for s in chosen for t in s.tasks}
print(json.dumps(out))
"""


def test_zego_client_task_ids_are_stable_across_processes_distinct_and_valid(tmp_path: Path) -> None:
    path = os.path.join(tmp_path, "spec.yaml")
    with open(path, "w") as f:
        f.write(
            job(name="a", body=ZEGO_SELECTOR)
            + "---\n"
            + job("RecordingJob", "b", "provider: zego\nrooms: {match: 'class-*'}\nstorage: s3\n")
        )
    runs = []
    for seed in ("1", "2"):  # another process, another hash seed: the ids must not depend on either
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _CLIENT_IDS, path], capture_output=True, text=True, env=env, check=True
        )
        runs.append(json.loads(done.stdout))
    assert runs[0] == runs[1]
    assert sorted(runs[0]) == [
        "RecordingJob/b/class-1",
        "RecordingJob/b/class-2",
        "SnapshotJob/a/class-1",
        "SnapshotJob/a/class-2",
    ]
    ids = list(runs[0].values())
    assert len(set(ids)) == 4 and all(re.fullmatch(r"capctl-[0-9a-f]{24}", i) for i in ids)


def test_globs_cannot_be_references_but_max_rooms_can(load: Loader, errors_of: ErrorsOf) -> None:
    errors = errors_of(job(body="provider: volc\nrooms: {match: {env: AK}}\nstorage: tos\n"))
    assert any(re.search(r"spec\.yaml:6:\d+: spec\.rooms\.match: a reference cannot name a task", e) for e in errors)
    spec = load(job(body="provider: volc\nrooms: {match: x*, maxRooms: {env: APP}}\nstorage: tos\n"))
    model = spec.jobs[("SnapshotJob", "j")].spec
    assert isinstance(model, SnapshotJobSpec) and isinstance(model.rooms, RoomSelector)
    assert model.rooms.max_rooms == 7


def test_a_replace_of_a_selector_room_without_a_task_says_why_it_has_none(load: Loader) -> None:
    """Walk 55b: `plan --replace SnapshotJob/j/class-c` said only `no task with key … in the specs`, where the
    plan knows the room is left out past maxRooms (or not covered, another job's, not known active)."""
    capped = "provider: volc\nrooms: {match: 'class-*', exclude: 'class-test-*', maxRooms: 1}\nstorage: tos\n"
    first = job(name="i", body="provider: volc\nrooms: {match: 'class-n*'}\nstorage: tos\n")  # first by name
    spec = load(
        job(body=capped)
        + "---\n"
        + first
        + "---\n"
        + job(name="k", body="provider: volc\nrooms: [lobby]\nstorage: tos\n")
    )
    selections = _select(spec, ["class-a", "class-c", "class-n"])
    assert [unselected(f"SnapshotJob/j/{room}", selections) for room in ("class-c", "class-n", "class-z")] == [
        "SnapshotJob/j leaves room 'class-c' out, past its maxRooms (1)",
        "room 'class-n' is taken by SnapshotJob/i",
        "room 'class-z' is not known active: SnapshotJob/j starts it when a room callback says it is",
    ]
    assert unselected("SnapshotJob/j/class-test-1", selections) == (
        "the room selector of SnapshotJob/j (class-* except class-test-*) does not cover room 'class-test-1'"
    )
    assert unselected("SnapshotJob/k/lobby", selections) is None  # a named job's key: plan's own error
    assert unselected("SnapshotJob/j/a/b", selections) is None


def test_a_selector_field_written_in_the_wrong_place_says_where_it_goes(errors_of: ErrorsOf) -> None:
    """Walk 55b: `maxRooms` beside `rooms` said `(did you mean 'rooms'?)`, `exclude` there pointed at explain,
    and `- match:` under rooms (a list of one selector) said `Input should be a valid string, got a mapping`."""

    def located(body: str) -> list[str]:
        return [e.split("spec.yaml:", 1)[1] for e in errors_of(job(body=body))]

    beside = "provider: volc\nrooms: {match: 'class-*'}\nmaxRooms: 3\nexclude: x\nstorage: tos\n"
    assert located(beside) == [
        "7:3: unknown field 'spec.maxRooms' (maxRooms is a room selector's field: rooms: {match: …, maxRooms: 20})",
        "8:3: unknown field 'spec.exclude' (exclude is a room selector's field: rooms: {match: …, exclude:"
        " 'class-test-*'})",
    ]
    # Walk 56a: misspelled as well (snake case, another case) said `(did you mean 'rooms'?)` still.
    spelled = "provider: volc\nrooms: {match: 'class-*'}\nmax_rooms: 3\nExclude: x\nstorage: tos\n"
    assert located(spelled) == [
        "7:3: unknown field 'spec.max_rooms' (did you mean 'maxRooms'? a room selector's field: rooms: {match: …,"
        " maxRooms: 20})",
        "8:3: unknown field 'spec.Exclude' (did you mean 'exclude'? a room selector's field: rooms: {match: …,"
        " exclude: 'class-test-*'})",
    ]
    listed = "provider: volc\nrooms:\n  - match: 'class-*'\nstorage: tos\n"
    assert located(listed) == [
        "7:7: spec.rooms[0]: a room selector is the value of spec.rooms, not an entry of a list:"
        " rooms: {match: …} (no '-')"
    ]
    thumbs = "provider: zego\nfiles: [{cdn: huawei, fileId: /a.mp4, interval: 2s}]\nmaxRooms: 3\n"
    [other] = errors_of(job(kind="ThumbnailJob", body=thumbs))  # no rooms there: no selector to point at
    assert other.endswith("unknown field 'spec.maxRooms' (`capctl explain ThumbnailJob.spec` lists its fields)")


def test_a_match_glob_its_exclude_takes_back_is_warned_about(load: Loader) -> None:
    """Walk 55b: `match` and `exclude` swapped (`match: class-test-*`, `exclude: class-*`), or one glob in both,
    was valid and silent: the job never started a room by it. Warned where certain (the same glob, `*`, a
    literal prefix or suffix the glob's own begins or ends with); an overlap in part is what exclude is for."""
    body = "provider: volc\nrooms: {match: [class-test-*, lab-*, '*-x'], exclude: [class-*, '*x']}\nstorage: tos\n"
    assert [w.split("spec.yaml:", 1)[1] for w in load(job(body=body)).warnings()] == [
        "6:19: SnapshotJob 'j': spec.rooms.match 'class-test-*' selects no room: exclude 'class-*' takes back every"
        " room it matches",
        "6:40: SnapshotJob 'j': spec.rooms.match '*-x' selects no room: exclude '*x' takes back every room it matches",
    ]
    everything = "provider: volc\nrooms: {match: '*', exclude: '*'}\nstorage: tos\n"
    [warning] = load(job(body=everything)).warnings()
    assert "match '*' selects no room: exclude '*' takes back" in warning
    for match, exclude in (("class-*", "class-test-*"), ("class-[0-9]", "class-1*"), ("?x", "x*"), ("a*", "*b")):
        selector = f"provider: volc\nrooms: {{match: '{match}', exclude: '{exclude}', maxRooms: 5}}\nstorage: tos\n"
        assert load(job(body=selector)).warnings() == [], (match, exclude)
