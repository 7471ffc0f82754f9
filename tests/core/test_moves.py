"""A Provider renamed within one vendor account re-homes its tasks' records (`moves.py`); another account
replaces them. Real spec sets (every API family), the pure diff and the plan views."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from reconciler.model import Action, ApiFamily, TaskRecord, TaskStatus
from reconciler.moves import rehome
from reconciler.plan import Plan, PlanError, PlanOptions, Selection, diff, plan_to_json
from reconciler.render import render_markdown, render_text
from reconciler.spec import SpecSet, load_spec_set
from reconciler.spec.expand import hashes_under
from reconciler.transitions import intent, started
from tests.specdocs import STORAGE, providers, recording_job, snapshot_job, thumbnail_job

NOW = 1_800_000_000.0
KEY = b"k" * 32
ENV = {"S3_AK": "AKMOVES0000000001", "S3_SK": "moves-secret"}
NAMES = {"volc": "volc-main", "zego": "zego-main", "zego-legacy": "zego-old"}
JOBS = [
    snapshot_job("audit", ["r1", "r2", "r3"]),
    recording_job("rec", ["c1", "c2"]),
    recording_job("old-rec", ["c3"], provider="zego-legacy"),
    thumbnail_job(),
]


def load(tmp_path: Path, provider_docs: str, jobs: list[str] = JOBS, renamed: bool = False) -> SpecSet:
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    text = "---\n".join(jobs)
    if renamed:
        for old, new in NAMES.items():
            text = text.replace(f"provider: {old}\n", f"provider: {new}\n")
    for path in specs.glob("*.yaml"):
        path.unlink()
    (specs / "providers.yaml").write_text(provider_docs)
    (specs / "storage.yaml").write_text(STORAGE)
    (specs / "jobs.yaml").write_text(text)
    return load_spec_set([specs], env=ENV, fingerprint_key=KEY)


def renamed_providers(old: str = "") -> str:
    docs = providers("http://127.0.0.1:9")
    for name, new in NAMES.items():
        docs = docs.replace(f"{{name: {name}}}", f"{{name: {new}}}")
    return docs + ("---\n" + old if old else "")


def running(spec_set: SpecSet) -> dict[str, TaskRecord]:
    """Each task started through its Provider, as apply records it."""
    return {
        key: started(intent(task, None, NOW, reissue=False), f"vt-{task.target}", {}, NOW)
        for key, task in spec_set.tasks.items()
    }


def plan_of(spec_set: SpecSet, records: dict[str, TaskRecord], options: PlanOptions | None = None) -> Plan:
    options = options or PlanOptions()
    rehomed = rehome(spec_set.tasks, records, spec_set.providers, KEY, Selection(options))
    return diff(
        spec_set.tasks,
        rehomed.records,
        {},
        options=options,
        state_serial=1,
        now=NOW,
        providers=spec_set.providers,
        moved=rehomed.moved,
        submitted_as=rehomed.submitted_as,
    )


def test_a_tasks_hashes_under_its_own_provider_are_its_own(tmp_path: Path) -> None:
    """`hashes_under` rebuilds what expand hashed: a Volcengine fixed hash without the interval, the others whole."""
    for key in (KEY, None):
        specs = tmp_path / str(key is None)
        specs.mkdir()
        (specs / "p.yaml").write_text(
            providers("http://127.0.0.1:9") + "---\n" + STORAGE + "---\n" + "---\n".join(JOBS)
        )
        spec_set = load_spec_set([specs], env=ENV, fingerprint_key=key)
        assert {t.family for t in spec_set.tasks.values()} == set(ApiFamily)
        for task in spec_set.tasks.values():
            assert hashes_under(task, task.provider, key) == (task.spec_hash, task.fixed_hash), task.key
            assert hashes_under(task, "other", key)[0] != task.spec_hash


def test_providers_renamed_in_one_edit_move_every_task_in_one_line_per_job_with_no_vendor_call(tmp_path: Path) -> None:
    records = running(load(tmp_path, providers("http://127.0.0.1:9")))
    assert {r.home for r in records.values()} == {
        "volcengine:capctl-sim-volc at http://127.0.0.1:9/volc",
        "zego:1234567890 at http://127.0.0.1:9/zego/cloudrecord",
        "zego:1234567890 at http://127.0.0.1:9/zego/legacy",
        "zego:1234567890 at http://127.0.0.1:9/zego/rtc",
    }
    spec_set = load(tmp_path, renamed_providers(), renamed=True)  # the old documents removed in the same edit
    plan = plan_of(spec_set, records)
    assert {c.action for c in plan.changes} == {Action.MOVE}
    data = plan_to_json(plan)
    assert data["summary"]["move"] == 8 and all(c["provider"] in NAMES.values() for c in data["changes"])
    console = Console(record=True, width=400, color_system=None)
    render_text(data, console)
    text = console.export_text()
    assert text.count(" move ") == 4, text  # audit (3 rooms), rec (2 rooms), old-rec, thumbs (2 files)
    assert "→ SnapshotJob/audit (3 rooms)" in text and "→ RecordingJob/rec (2 rooms)" in text
    assert "provider volc → volc-main, same account (volcengine:capctl-sim-volc at http://127.0.0.1:9/volc)" in text
    assert "8 to re-home, 0 unchanged." in text
    assert render_markdown(data).count("| move |") == 4
    # An interval edited with the rename is an update in place, its record re-homed as it is sent.
    edited = load(tmp_path, renamed_providers(), [snapshot_job("audit", ["r1", "r2", "r3"], interval=10)], True)
    update = plan_of(edited, {k: r for k, r in records.items() if k.startswith("SnapshotJob/")})
    assert {c.action for c in update.changes} == {Action.UPDATE}
    assert update.changes[0].details == (
        "provider: volc → volc-main (same account: re-homed)",
        "interval 5s → 10s",
    )
    # Another change is a replace, stopped through the new document (the old one is gone): not refused.
    idle = load(tmp_path, renamed_providers(), [recording_job("rec", ["c1", "c2"], idle=60)], True)
    replace = plan_of(idle, {k: r for k, r in records.items() if k.startswith("RecordingJob/rec/")})
    assert {(c.action, c.provider) for c in replace.changes} == {(Action.REPLACE, "zego-main")}
    assert replace.changes[0].details[:2] == (
        "provider: zego → zego-main (same account: re-homed)",
        "RecordInputParams.MaxIdleTime: 30 → 60",
    )


def test_only_what_target_selects_is_re_homed(tmp_path: Path) -> None:
    records = running(load(tmp_path, providers("http://127.0.0.1:9")))
    spec_set = load(tmp_path, renamed_providers(), renamed=True)
    options = PlanOptions(targets=("SnapshotJob/audit/r1",))
    rehomed = rehome(spec_set.tasks, records, spec_set.providers, KEY, lambda key, _labels: key.endswith("/r1"))
    assert list(rehomed.moved) == ["SnapshotJob/audit/r1"] and rehomed.moved["SnapshotJob/audit/r1"] == "volc"
    assert rehomed.records["SnapshotJob/audit/r2"] is records["SnapshotJob/audit/r2"]
    assert [(c.key, c.action) for c in plan_of(spec_set, records, options).changes] == [
        ("SnapshotJob/audit/r1", Action.MOVE)
    ]


def test_another_account_or_an_unknown_one_still_needs_the_old_provider_to_stop_its_tasks(tmp_path: Path) -> None:
    old_docs = providers("http://127.0.0.1:9")
    records = running(load(tmp_path, old_docs))
    other_app = renamed_providers().replace("appId: capctl-sim-volc", "appId: other-app")
    spec_set = load(tmp_path, other_app, [snapshot_job("audit", ["r1"])], renamed=True)
    audit = {"SnapshotJob/audit/r1": records["SnapshotJob/audit/r1"]}
    with pytest.raises(PlanError, match="provider 'volc' was removed from the specs but still runs 1 task"):
        plan_of(spec_set, audit)
    old_volc = old_docs.split("---\n", 1)[0]
    beside = load(tmp_path, other_app + "---\n" + old_volc, [snapshot_job("audit", ["r1"])], renamed=True)
    [change] = plan_of(beside, audit).changes
    assert change.action is Action.REPLACE and change.details[0] == "provider: volc → volc-main"
    # A record of an older capctl knows no home: moved only while its old Provider tells it.
    older = {k: r.evolve(home=None) for k, r in audit.items()}
    same = load(tmp_path, renamed_providers(), [snapshot_job("audit", ["r1"])], renamed=True)
    with pytest.raises(PlanError, match="provider 'volc' was removed"):
        plan_of(same, older)
    both = load(tmp_path, renamed_providers(old_docs), [snapshot_job("audit", ["r1"])], renamed=True)
    assert [c.action for c in plan_of(both, older).changes] == [Action.MOVE]


def test_a_job_removed_with_its_renamed_provider_is_stopped_through_the_one_of_its_account(tmp_path: Path) -> None:
    records = running(load(tmp_path, providers("http://127.0.0.1:9")))
    spec_set = load(
        tmp_path, renamed_providers(), [thumbnail_job().replace("provider: zego\n", "provider: zego-main\n")]
    )
    plan = plan_of(spec_set, records)
    deletes = {c.key: c for c in plan.changes if c.action is Action.DELETE}
    assert len(deletes) == 6 and all(
        c.provider in ("volc-main", "zego-main", "zego-old") and c.details[0].endswith("(same account)")
        for c in deletes.values()
    )
    assert deletes["SnapshotJob/audit/r1"].details == ("provider: volc → volc-main (same account)",)
    tomb = records["SnapshotJob/audit/r1"].evolve(status=TaskStatus.REMOVED)
    assert rehome({}, {tomb.key: tomb}, spec_set.providers, KEY).moved == {}  # a tombstone stops nothing


def test_a_task_that_could_not_be_observed_is_left_as_is_and_a_home_follows_its_provider(tmp_path: Path) -> None:
    from reconciler.engine import record_labels
    from reconciler.model import Observed, ObservedState
    from reconciler.state.sqlite import SQLiteStateStore

    records = running(load(tmp_path, providers("http://127.0.0.1:9"), [snapshot_job("audit", ["r1"])]))
    spec_set = load(tmp_path, renamed_providers(), [snapshot_job("audit", ["r1"])], renamed=True)
    rehomed = rehome(spec_set.tasks, records, spec_set.providers, KEY)
    unknown = {key: Observed(ObservedState.UNKNOWN, detail="timed out") for key in records}
    plan = diff(
        spec_set.tasks,
        rehomed.records,
        unknown,
        options=PlanOptions(),
        state_serial=1,
        now=NOW,
        providers=spec_set.providers,
        moved=rehomed.moved,
    )
    assert [c.action for c in plan.changes] == [Action.NOOP] and plan.unobserved == ("SnapshotJob/audit/r1",)
    # An endpoint edited in place: capctl reaches the task there from then on, and so would a renamed Provider.
    proxied = load(
        tmp_path,
        providers("http://127.0.0.1:9").replace("127.0.0.1:9/volc", "127.0.0.1:8/volc"),
        [snapshot_job("audit", ["r1"])],
    )
    store = SQLiteStateStore(tmp_path / "state.db")
    try:
        [record] = record_labels(store, records, proxied.tasks).values()
        assert record.home == "volcengine:capctl-sim-volc at http://127.0.0.1:8/volc"
        assert store.load().records[record.key].home == record.home
        # An appId edited in place does not move the running task to that app: its home stays.
        other_app = load(
            tmp_path,
            providers("http://127.0.0.1:9").replace("capctl-sim-volc", "other-app"),
            [snapshot_job("audit", ["r1"])],
        )
        [kept] = record_labels(store, {record.key: record}, other_app.tasks).values()
        assert kept.home == record.home
    finally:
        store.close()


def refused_thumbnail_edit(
    tmp_path: Path, provider_docs: str, rename: str = ""
) -> tuple[dict[str, TaskRecord], dict[str, TaskRecord], SpecSet]:
    """A thumbnail done under `zego`, then its interval edited (2s -> 5s; under Provider `rename` of
    `provider_docs`, if given) and refused by ZEGO: the done records, the refused ones and the edit's spec set."""
    from reconciler.transitions import failed

    done = running(load(tmp_path, providers("http://127.0.0.1:9"), [thumbnail_job(tencent=False)]))
    edited = thumbnail_job(huawei_interval=5, tencent=False)
    edit = load(
        tmp_path, provider_docs, [edited.replace("provider: zego\n", f"provider: {rename}\n")] if rename else [edited]
    )
    tried = rehome(edit.tasks, done, edit.providers, KEY).records
    refused = {k: failed(intent(t, tried[k], NOW, reissue=False), "1000", NOW) for k, t in edit.tasks.items()}
    return done, refused, edit


def reverted_under_zego_main(tmp_path: Path) -> SpecSet:
    back = thumbnail_job(tencent=False).replace("provider: zego\n", "provider: zego-main\n")
    return load(tmp_path, renamed_providers(), [back])


def test_a_refused_thumbnail_edit_reverted_under_a_renamed_provider_is_its_accepted_submission(
    tmp_path: Path,
) -> None:
    """20d-6 across a rename: the accepted submission's hash is re-homed with the record, or the entry edited
    back to it (in the edit that renames its Provider) is submitted again."""
    from reconciler.transitions import restored

    _, refused, _ = refused_thumbnail_edit(tmp_path, providers("http://127.0.0.1:9"))
    back = reverted_under_zego_main(tmp_path)
    plan = plan_of(back, refused)
    assert [c.action for c in plan.changes] == [Action.MOVE], [c.reason for c in plan.changes]
    (record,) = rehome(back.tasks, refused, back.providers, KEY).records.values()
    (task,) = back.tasks.values()
    assert record.accepted is not None and record.accepted["spec_hash"] == task.spec_hash
    revived = restored(record)  # what apply writes for the move (`execute._moved`): done, as ZEGO took it
    assert (revived.status, revived.spec_hash, revived.provider) == (TaskStatus.DONE, task.spec_hash, "zego-main")


def test_a_refused_thumbnail_edit_reverted_after_its_provider_was_renamed_is_its_accepted_submission(
    tmp_path: Path,
) -> None:
    """24a's sibling: the Provider renamed while the refused edit is still declared (tried again under the new
    name, refused again), the entry reverted only in a later edit. The accepted submission remembers the Provider
    it was taken under, so the revert is a no-op, not a second (paid, one-shot) submission."""
    from reconciler.transitions import failed, restored

    done, refused, _ = refused_thumbnail_edit(tmp_path, providers("http://127.0.0.1:9"))
    _, _, renamed = refused_thumbnail_edit(tmp_path, renamed_providers(), rename="zego-main")
    tried = rehome(renamed.tasks, refused, renamed.providers, KEY).records
    again = {k: failed(intent(t, tried[k], NOW, reissue=False), "1000", NOW) for k, t in renamed.tasks.items()}
    back = reverted_under_zego_main(tmp_path)
    plan = plan_of(back, again)
    assert [c.action for c in plan.changes] == [Action.NOOP], [c.reason for c in plan.changes]
    (record,) = rehome(back.tasks, again, back.providers, KEY).records.values()
    (task,) = back.tasks.values()
    revived = restored(record)  # what apply writes for the no-op (`engine.persist_restored`)
    assert (revived.status, revived.spec_hash, revived.provider) == (TaskStatus.DONE, task.spec_hash, "zego-main")
    assert revived.vendor_task_id == next(iter(done.values())).vendor_task_id
    # A row of the previous version (its accepted submission names no Provider) is still read: taken under the
    # record's, as before (submitted again).
    (old,) = again.values()
    assert old.accepted is not None
    legacy = old.evolve(accepted={k: v for k, v in old.accepted.items() if k not in ("provider", "home")})
    assert [c.action for c in plan_of(back, {old.key: legacy}).changes] == [Action.REPLACE]


def thumbnails_of(tmp_path: Path, *names: str) -> dict[str, TaskRecord]:
    """The Huawei file of ThumbnailJob `names[0]`, and of each other name, `done` as one ZEGO submission."""
    records = {}
    for name in names:
        records.update(running(load(tmp_path, providers("http://127.0.0.1:9"), [thumbnail_job(name, tencent=False)])))
    return records


def test_a_taken_thumbnail_submission_names_the_key_that_held_it_last(tmp_path: Path) -> None:
    """Walk 60a-3: an entry moved from job a to b, then from b to c, was said `submitted before as` a's key (the
    first of the keys holding that ZEGO task, by name), though the user had just moved it out of b."""
    records = thumbnails_of(tmp_path, "a-thumbs", "b-thumbs")
    a, b = "ThumbnailJob/a-thumbs//record/a.mp4", "ThumbnailJob/b-thumbs//record/a.mp4"
    records[a] = records[a].evolve(status=TaskStatus.REMOVED, removed_at=NOW - 100)
    moved_to_c = load(tmp_path, providers("http://127.0.0.1:9"), [thumbnail_job("c-thumbs", tencent=False)])
    changes = {c.key: c for c in plan_of(moved_to_c, records).changes}
    taken = changes["ThumbnailJob/c-thumbs//record/a.mp4"]
    assert taken.action is Action.NOOP
    assert taken.reason.startswith(f"submitted before as {b} (ZEGO task vt-/record/a.mp4) with the same file")
    # b removed too (later than a): the last removed holds it.
    records[b] = records[b].evolve(status=TaskStatus.REMOVED, removed_at=NOW - 10)
    changes = {c.key: c for c in plan_of(moved_to_c, records).changes}
    assert changes["ThumbnailJob/c-thumbs//record/a.mp4"].reason.startswith(
        f"submitted before as {b} (ZEGO task vt-/record/a.mp4, removed at "
    )


def test_a_thumbnail_back_on_its_own_tombstone_is_restored_not_taken_from_another_key(tmp_path: Path) -> None:
    """Walk 60a-2: a renamed job's key, its spec file deleted and put back, was said `submitted before as` the
    key it had taken the submission from (both tombstones name that ZEGO task), where the daemon said it was
    restored. Its own tombstone is what comes back."""
    records = thumbnails_of(tmp_path, "old", "thumbs")
    old, key = "ThumbnailJob/old//record/a.mp4", "ThumbnailJob/thumbs//record/a.mp4"
    records[old] = records[old].evolve(status=TaskStatus.REMOVED, removed_at=NOW - 100)
    records[key] = records[key].evolve(status=TaskStatus.REMOVED, removed_at=NOW - 50)
    back = load(tmp_path, providers("http://127.0.0.1:9"), [thumbnail_job(tencent=False)])
    plan = plan_of(back, records)
    (change,) = [c for c in plan.changes if c.key == key]
    assert change.action is Action.NOOP
    assert change.reason.startswith("restored to the specs (removed at "), change.reason
    assert not any("no longer declared" in note for note in plan.notes)
    assert any(note.startswith("1 thumbnail task(s) restored to the specs") for note in plan.notes)


def test_a_thumbnail_job_renamed_with_its_provider_takes_its_submission_in_that_account_only(
    tmp_path: Path,
) -> None:
    """Walk 60a-4: a ThumbnailJob renamed in the edit that renames its Provider (the same ZEGO app) was planned a
    create, submitted again: its content hash holds the Provider's name. Another app's Provider submits it."""
    records = thumbnails_of(tmp_path, "thumbs")
    new = "ThumbnailJob/thumbs-v2//record/a.mp4"
    job = thumbnail_job("thumbs-v2", tencent=False).replace("provider: zego\n", "provider: zego-main\n")
    both = load(tmp_path, renamed_providers(), [job])
    plan = plan_of(both, records)
    changes = {c.key: c for c in plan.changes}
    assert changes[new].action is Action.NOOP, changes[new].reason
    assert changes[new].reason.startswith("submitted before as ThumbnailJob/thumbs//record/a.mp4 (ZEGO task")
    taken = rehome(both.tasks, records, both.providers, KEY).records[new]
    assert (taken.provider, taken.spec_hash) == ("zego-main", both.tasks[new].spec_hash)  # as a moved record
    other_app = load(tmp_path, renamed_providers().replace("1234567890", "1234567899"), [job])
    assert {c.key: c for c in plan_of(other_app, records).changes}[new].action is Action.CREATE


def test_replace_of_a_taken_thumbnail_submits_it_again_and_says_so(tmp_path: Path) -> None:
    """Walk 60a-5: `--replace` of a thumbnail key noted "stopped and started again on purpose", where nothing can
    be stopped (MediaThumbnails has no cancel): it is submitted again, and the first submission's thumbnails are
    made too. A key taking a renamed job's submission is submitted again too, on purpose."""
    records = thumbnails_of(tmp_path, "thumbs")
    new = "ThumbnailJob/thumbs-v2//record/a.mp4"
    renamed = load(tmp_path, providers("http://127.0.0.1:9"), [thumbnail_job("thumbs-v2", tencent=False)])
    plan = plan_of(renamed, records, PlanOptions(replace=(new,)))
    assert {c.key: c.action for c in plan.changes}[new] is Action.REPLACE
    assert f"--replace {new}: submitted again (a thumbnail submission cannot be stopped) on purpose." in plan.notes
    assert not any("no longer declared" in note for note in plan.notes)
    both = load(tmp_path, providers("http://127.0.0.1:9"), [thumbnail_job("thumbs-v2", tencent=False), JOBS[0]])
    replaced = (new, "SnapshotJob/audit/r1")
    note = f"--replace {', '.join(replaced)}: stopped and started again, thumbnails submitted again on purpose."
    assert note in plan_of(both, records, PlanOptions(replace=replaced)).notes


def test_a_refused_thumbnail_edit_reverted_as_its_job_is_renamed_takes_the_accepted_submission(
    tmp_path: Path,
) -> None:
    """Walk 60a-6: an entry whose edit ZEGO refused, edited back in the edit that renames its job, was submitted
    again: its old key's record holds the submission ZEGO took as `accepted`, not as itself."""
    done, refused, _ = refused_thumbnail_edit(tmp_path, providers("http://127.0.0.1:9"))
    [(old, record)] = refused.items()
    assert record.status is TaskStatus.FAILED and record.accepted is not None
    back = load(tmp_path, providers("http://127.0.0.1:9"), [thumbnail_job("thumbs-v2", tencent=False)])
    new = "ThumbnailJob/thumbs-v2//record/a.mp4"
    change = {c.key: c for c in plan_of(back, refused).changes}[new]
    assert change.action is Action.NOOP, change.reason
    assert change.reason.startswith(f"submitted before as {old} (ZEGO task {done[old].vendor_task_id}) with the")
    edited = load(
        tmp_path, providers("http://127.0.0.1:9"), [thumbnail_job("thumbs-v2", huawei_interval=5, tencent=False)]
    )
    assert {c.key: c for c in plan_of(edited, refused).changes}[new].action is Action.CREATE  # the refused edit
