"""Which tasks a plan covers: --target globs, kubectl-style label selectors (-l), and --replace.

Pure table tests of `selector_matches`, `label_matcher` and `diff`'s selection; the CLI side is in
tests/e2e/test_cli_contract.py.
"""

from __future__ import annotations

from dataclasses import replace
from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.model import Action, DesiredTask, RestartPolicy, TaskStatus
from reconciler.plan import (
    PlanError,
    PlanOptions,
    check_selector,
    diff,
    keys_matching,
    label_matcher,
    selector_matches,
)
from tests.core.factories import desired, record_for

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("selector", "key", "expected"),
    [
        ("SnapshotJob/*", "SnapshotJob/a/r1", True),  # every job of a kind
        ("SnapshotJob/*", "RecordingJob/a/r1", False),
        ("SnapshotJob/lobby-*", "SnapshotJob/lobby-audit/r1", True),
        ("SnapshotJob/lobby-*", "SnapshotJob/hall/r1", False),
        ("SnapshotJob/lobby-*/vip-*", "SnapshotJob/lobby-audit/vip-1", True),
        ("SnapshotJob/lobby-*/vip-*", "SnapshotJob/lobby-audit/lobby", False),
        ("SnapshotJob/*/lobby", "SnapshotJob/a/lobby", True),
        ("SnapshotJob/*/lobby", "SnapshotJob/a/lobby-2", False),
        ("ThumbnailJob/t/*", "ThumbnailJob/t/record/a.mp4", True),  # "*" spans "/" in file ids
        ("ThumbnailJob/t/rec[1]?.mp4", "ThumbnailJob/t/rec[1]?.mp4", True),  # only "*" is special
        ("ThumbnailJob/t/rec[1]*", "ThumbnailJob/t/rec1.mp4", False),
        ("SnapshotJob/a*", "SnapshotJob/ab/r1", True),
        ("SnapshotJob/a", "SnapshotJob/ab/r1", False),
        ("SnapshotJob/a*/r1", "SnapshotJob/a/r1", True),  # "*" may stand for nothing
        ("SnapshotJob/ab*ba/r1", "SnapshotJob/aba/r1", False),  # the prefix and suffix must not overlap
        ("SnapshotJob/a*b*b/r1", "SnapshotJob/abb/r1", True),
        ("SnapshotJob/a*b*b/r1", "SnapshotJob/ab/r1", False),
        ("SnapshotJob/*x*y*/r1", "SnapshotJob/ayxbx/r1", False),  # the pieces in order
        ("SnapshotJob/*x*y*/r1", "SnapshotJob/ayxbyx/r1", True),
        ("SnapshotJob/**b/r1", "SnapshotJob/ab/r1", True),
        ("SnapshotJob/*ab*ba*/r1", "SnapshotJob/aba/r1", False),  # nor two pieces (walk 30a)
    ],
)
def test_globs_in_the_name_and_target_parts(selector: str, key: str, expected: bool) -> None:
    check_selector(selector)
    assert selector_matches(selector, key) is expected


def test_a_glob_of_many_stars_is_matched_in_one_pass() -> None:
    """A regex of the glob backtracked exponentially in its stars: this one took minutes on one key, on the
    daemon's loop when sent to sync or wake."""
    key = "SnapshotJob/lobby-audit-recordings-for-tenant-a/" + "room-" * 20
    assert not selector_matches("SnapshotJob/" + "*" * 40 + "z", key)
    assert not selector_matches("SnapshotJob/" + "*a" * 30 + "/*", key)
    assert not selector_matches("SnapshotJob/*/" + "*o" * 30 + "z", key)


@pytest.mark.timeout(30)  # minutes before the fix: a hang guard, not a speed target
def test_a_glob_costs_what_the_keys_cost_whatever_its_size() -> None:
    """Sent to sync or wake, an 800 kB glob of `*a` walked 10,000 keys for two minutes on the daemon's loop
    (walk 55c-1): one longer than every key matches none, and a run of stars is one star."""
    keys = {f"SnapshotJob/audit/room-{i:04d}" for i in range(2_000)}
    many_stars = "SnapshotJob/" + "*" * 400_000 + "/room-0007"
    globs = ["SnapshotJob/*/" + "*a" * 400_000, "SnapshotJob/" + "x" * 800_000 + "*", many_stars]
    assert keys_matching(globs, keys) == {globs[0]: [], globs[1]: [], many_stars: ["SnapshotJob/audit/room-0007"]}


def documented(selector: str, key: str) -> bool:
    """README's --target, stated apart from the code: `kind/name[/room]`, each part's `*` any text ("/" too in
    the room part), `?` and `[` themselves; fnmatch, with those two made literal, is the reference."""
    parts, fields = selector.split("/", 2), key.split("/", 2)

    def glob(pattern: str, text: str) -> bool:
        return fnmatchcase(text, pattern.replace("[", "[[]").replace("?", "[?]"))

    if selector == key:
        return True
    if len(parts) < 2 or len(fields) < 3 or parts[0] != fields[0] or not glob(parts[1], fields[1]):
        return False
    return len(parts) == 2 or glob(parts[2], fields[2])


@st.composite
def glob_and_text(draw: st.DrawFn, slash: bool) -> tuple[str, str]:
    """A glob of few letters and the characters that could be taken as special, and a text made from it
    (its stars filled in), often then cut or altered by one character: a near miss, where a matcher that
    lets a prefix and suffix overlap, or takes pieces out of order, goes wrong."""
    chars = "ab?[]!\\" + ("/" if slash else "")
    pieces = draw(st.lists(st.text(alphabet=chars, max_size=3), min_size=1, max_size=4))
    fills = draw(st.lists(st.text(alphabet=chars, max_size=3), min_size=len(pieces), max_size=len(pieces)))
    text = "".join(piece + fill for piece, fill in zip(pieces, fills, strict=True))[: -len(fills[-1]) or None]
    at = draw(st.integers(0, len(text)))
    text = draw(st.sampled_from([text, text[:at] + text[at + 1 :], text[:at] + "a" + text[at:]]))
    return "*".join(pieces), text or "a"


@given(name=glob_and_text(slash=False), room=glob_and_text(slash=True), two_parts=st.booleans())
def test_a_glob_matches_as_the_docs_say(name: tuple[str, str], room: tuple[str, str], two_parts: bool) -> None:
    """The one-pass matcher (walk 29a) against the documented meaning, on keys and globs of the characters
    that could be taken as special: `?`, `[`, `]`, `!`, `\\`, and `/` in a file id (walk 30a)."""
    key = f"ThumbnailJob/{name[1]}/{room[1]}"
    selector = f"ThumbnailJob/{name[0]}" + ("" if two_parts else f"/{room[0]}")
    assert selector_matches(selector, key) is documented(selector, key)


@given(
    keys=st.sets(st.tuples(st.sampled_from("ab"), st.text("a?[*/", max_size=4)), min_size=1, max_size=4),
    globs=st.lists(st.tuples(st.text("a?*", max_size=9), st.none() | st.text("a[*/", max_size=9)), max_size=4),
)
def test_the_bounded_walk_selects_what_the_docs_say(
    keys: set[tuple[str, str]], globs: list[tuple[str, str | None]]
) -> None:
    """`keys_matching`'s shortcuts (walk 55c-1: a glob with more characters but `*` than the longest key is
    skipped, a run of stars is one star) against the documented meaning; globs of many stars, often longer
    than every key, and keys that hold `*` (one given whole selects itself alone, walk 43d-3)."""
    known = {f"SnapshotJob/{name}/{room}" for name, room in keys}
    selectors = [f"SnapshotJob/{name}" + ("" if room is None else f"/{room}") for name, room in globs]
    selectors += [min(known), max(known, key=len) + "*"]  # one whole; one as long as the longest key, but `*`
    expected = {s: [s] if s in known else [k for k in known if documented(s, k)] for s in selectors}
    assert keys_matching(selectors, known) == expected


@pytest.mark.parametrize("bad", ["*", "*/a", "Snap*/a", "SnapshotJob", "SnapshotJob//r", "SnapshotJob/a/"])
def test_the_kind_is_spelled_out_and_no_part_is_empty(bad: str) -> None:
    with pytest.raises(PlanError, match="kind is one of SnapshotJob"):
        check_selector(bad)


@pytest.mark.parametrize(
    ("selectors", "labels", "expected"),
    [
        (["team=safety"], {"team": "safety"}, True),
        (["team==safety"], {"team": "safety"}, True),
        (["team=safety"], {"team": "media"}, False),
        (["team=safety"], {}, False),
        (["team!=safety"], {"team": "media"}, True),
        (["team!=safety"], {}, True),  # as kubectl: an absent label differs
        (["team!=safety"], {"team": "safety"}, False),
        (["team"], {"team": ""}, True),
        (["team"], {}, False),
        (["!team"], {}, True),
        (["!team"], {"team": "x"}, False),
        (["team=safety,tier=gold"], {"team": "safety", "tier": "gold"}, True),  # a comma list: AND
        (["team=safety,tier=gold"], {"team": "safety"}, False),
        (["team=safety", "tier=gold"], {"team": "safety", "tier": "silver"}, False),  # repeated -l: AND
        (["app.kubernetes.io/name=capctl"], {"app.kubernetes.io/name": "capctl"}, True),
        (["团队=安全"], {"团队": "安全"}, True),  # walk 16B-4: a label key the specs allow was "expected key=value"
        (["צוות!=בטיחות", "!🎥"], {"צוות": "x"}, True),
        ([], {}, True),
    ],
)
def test_label_selectors(selectors: list[str], labels: dict[str, str], expected: bool) -> None:
    assert label_matcher(selectors)(labels) is expected


@pytest.mark.parametrize("bad", ["", "=x", "team=a=b", "te am", "team in (a,b)", "!team=x", "te\u200bam"])
def test_bad_label_selectors_are_errors(bad: str) -> None:
    with pytest.raises(PlanError, match="expected key=value, key!=value, key or !key"):
        label_matcher([bad])


def test_a_label_with_a_space_is_named_as_what_l_cannot_take() -> None:
    """Walk 18H-4: `team: a b` is a valid spec label, and `-l 'team=a b'` said only "expected key=value"."""
    with pytest.raises(PlanError, match=r"\('a b': -l takes no key or value holding a space, '=', '!' or ','\)$"):
        label_matcher(["team=a b"])
    with pytest.raises(PlanError, match=r"\('my team': -l takes no"):
        label_matcher(["my team=x"])


def labelled(room: str, job: str, **labels: str) -> DesiredTask:
    return replace(desired(room=room, job=job), labels=labels)


def test_replace_plans_the_whole_set_and_is_not_partial() -> None:
    a, b = desired(room="a"), desired(room="b")
    plan = diff(
        {a.key: a, b.key: b},
        {a.key: record_for(a), b.key: record_for(b, TaskStatus.STOPPED)},
        {},
        options=PlanOptions(replace=(a.key,)),
        state_serial=1,
        now=NOW,
    )
    assert {c.key: c.action for c in plan.changes} == {a.key: Action.REPLACE, b.key: Action.REISSUE}
    assert not plan.partial and not any("partial" in n for n in plan.notes)
    assert f"--replace {a.key}: stopped and started again on purpose." in plan.notes  # the contract's note


def test_a_label_selector_narrows_the_plan_deletes_included() -> None:
    safety, media = labelled("a", "cams", team="safety"), labelled("b", "recs", team="media")
    gone = labelled("c", "old", team="safety")
    gone_other = labelled("d", "older", team="media")
    records = {t.key: replace(record_for(t, TaskStatus.STOPPED), labels=t.labels) for t in (gone, gone_other)}
    plan = diff(
        {safety.key: safety, media.key: media},
        records,
        {},
        options=PlanOptions(labels=("team=safety",)),
        state_serial=1,
        now=NOW,
    )
    assert {c.key: c.action for c in plan.changes} == {safety.key: Action.CREATE, gone.key: Action.DELETE}
    assert plan.partial and "This plan is partial (--target / -l): other tasks may still differ." in plan.notes


def test_targets_and_labels_both_hold_and_replace_keys_are_always_in() -> None:
    a, b = labelled("a", "cams", team="safety"), labelled("b", "cams", team="media")
    c = labelled("c", "hall", team="media")
    plan = diff(
        {t.key: t for t in (a, b, c)},
        {c.key: record_for(c)},
        {},
        options=PlanOptions(targets=("SnapshotJob/cams",), labels=("team=media",), replace=(c.key,)),
        state_serial=1,
        now=NOW,
    )
    assert {ch.key: ch.action for ch in plan.changes} == {b.key: Action.CREATE, c.key: Action.REPLACE}


def test_a_label_selector_matching_nothing_says_so_with_the_labels_there_are() -> None:
    """With the labels of the specs and the state, as `state list` says them, a typo shows itself (walk 27b:
    `plan -l team=meda` said only "matches no task")."""
    a = labelled("a", "cams", team="safety")
    gone = record_for(desired(room="b", job="old")).evolve(labels={"team": "media", "tier": "gold"})
    options = PlanOptions(labels=("team=nobody",), prune=False)
    plan = diff({a.key: a}, {gone.key: gone}, {}, options=options, state_serial=0, now=NOW)
    assert plan.changes == ()
    assert "-l team=nobody matches no task (labels there: team=media, team=safety, tier=gold)." in plan.notes
    bare = diff({}, {}, {}, options=options, state_serial=0, now=NOW)
    assert "-l team=nobody matches no task." in bare.notes


def test_a_target_matching_nothing_says_so_and_that_question_marks_are_literal_in_keys() -> None:
    """`?` is a wildcard in a room selector's globs, not in task keys: `class-?` matched nothing silently."""
    a = labelled("c1", "cams")
    plan = diff(
        {a.key: a},
        {},
        {},
        options=PlanOptions(
            targets=("SnapshotJob/cams/c?", "SnapshotJob/nope", "SnapshotJob/cam", "SnapshotJob/cams/c11")
        ),
        state_serial=0,
        now=NOW,
    )
    assert (
        "--target SnapshotJob/cams/c? matches no task (in task keys only * is a wildcard: ? and [ stand for "
        "themselves, unlike in room selectors)." in plan.notes
    )
    assert "--target SnapshotJob/nope matches no task." in plan.notes  # every job shares `SnapshotJob/`: not near
    # Walk 14b: `--target SnapshotJob/lobby` for the job lobby-audit said only "matches no task".
    assert "--target SnapshotJob/cam matches no task (did you mean SnapshotJob/cams?)." in plan.notes
    assert "--target SnapshotJob/cams/c11 matches no task (did you mean SnapshotJob/cams/c1?)." in plan.notes


def test_a_label_edit_is_noted_though_no_task_changes() -> None:
    """A label edit changes no vendor task (a no-op) but changes what `-l` selects: the reviewer sees it."""
    a1, a2 = labelled("a1", "cams", team="media", tier="t1"), labelled("a2", "cams", team="media", tier="t1")
    b = labelled("b", "hall", team="safety")
    records = {t.key: replace(record_for(t), labels={"team": "safety", "tier": "t1"}) for t in (a1, a2)}
    records[b.key] = replace(record_for(b), labels=dict(b.labels))
    plan = diff({t.key: t for t in (a1, a2, b)}, records, {}, options=PlanOptions(), state_serial=1, now=NOW)
    assert all(c.action is Action.NOOP for c in plan.changes) and not plan.has_changes
    assert (
        "Labels of 1 job(s) changed, recorded by apply (no vendor call; `-l` selects by them): "
        "SnapshotJob/cams: team safety → media." in plan.notes
    )
    unchanged = diff({b.key: b}, records, {}, options=PlanOptions(labels=("team=safety",)), state_serial=1, now=NOW)
    assert not any("Labels" in n for n in unchanged.notes)  # outside the selection: not this plan's business


def test_a_restart_policy_edit_is_noted_but_not_a_selector_task_left_to_end() -> None:
    """The policy is no vendor field (8c-11): the plan says apply records it; a selector's task left to end is
    handled as Never (`rooms.leaving`) without its job's policy being edited, so nothing is said of it."""
    a = replace(labelled("a", "cams"), restart_policy=RestartPolicy.NEVER)
    left = replace(labelled("b", "rooms"), restart_policy=RestartPolicy.NEVER, selector="b*", ending=True)
    records = {t.key: replace(record_for(t), restart_policy=RestartPolicy.ALWAYS) for t in (a, left)}
    plan = diff({t.key: t for t in (a, left)}, records, {}, options=PlanOptions(), state_serial=1, now=NOW)
    assert not plan.has_changes
    assert [n for n in plan.notes if "restartPolicy" in n] == [
        "restartPolicy of 1 job(s) changed, recorded by apply (no vendor call): SnapshotJob/cams: Always → Never."
    ]
