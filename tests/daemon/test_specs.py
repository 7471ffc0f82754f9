"""Spec changes while running: picked up, applied as `capctl apply` would, and never harmful when invalid."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import resource
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import watchfiles
from structlog.testing import capture_logs
from watchfiles._rust_notify import WatchfilesRustInternalError

from reconciler import logs
from reconciler.daemon.controller import PRUNE_GRACE
from reconciler.daemon.digest import spec_digest
from reconciler.daemon.watch import TreeState, tree_state, watch_roots, watch_specs
from reconciler.model import TaskStatus
from reconciler.sim.faults import FaultConfig
from reconciler.spec import SpecErrors, SpecSet, load_spec_set
from tests.daemon.conftest import Harness, write_specs
from tests.daemon.test_http import VOLC_SECRET, client, volc_body
from tests.specdocs import selector_job, snapshot_job

LOBBY, VIP = "SnapshotJob/audit/lobby", "SnapshotJob/audit/vip"


async def running_with_stream(harness: Harness, rooms: list[str]) -> None:
    for room in rooms:
        harness.sim.publish("volcengine", room, user_id="u")
    write_specs(harness.specs, snapshot_job("audit", rooms))
    await harness.start()
    await harness.advance(1)


async def test_edits_add_update_and_prune(harness: Harness) -> None:
    harness.daemon_options["max_prune"] = 100  # every task of the set is removed at once: no safeguard here
    await running_with_stream(harness, ["lobby"])
    assert harness.daemon is not None
    harness.sim.publish("volcengine", "vip", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby", "vip"], interval=10))
    assert harness.daemon.reload()
    await harness.advance(1)
    assert harness.record(VIP).status is TaskStatus.RUNNING
    assert harness.record(LOBBY).updatable == {"interval": 10}
    assert harness.calls("UpdateSnapshot") == 1 and harness.calls("StartSnapshot") == 2
    (harness.specs / "jobs.yaml").write_text("")  # the provider file stays: a valid set with no jobs
    (harness.specs / "providers.yaml").write_text((harness.specs / "providers.yaml").read_text())
    write_specs(harness.specs)
    (harness.specs / "other.yaml").write_text(snapshot_job("other", ["hall"]))
    assert harness.daemon.reload()
    await harness.advance(PRUNE_GRACE + 1)
    assert harness.record(LOBBY).status is TaskStatus.REMOVED and harness.record(VIP).status is TaskStatus.REMOVED
    assert harness.calls("StopSnapshot") == 2
    # The other job's run started; in the empty hall it has idled out since and waits for room activity.
    assert harness.calls("StartSnapshot") == 3
    assert harness.record("SnapshotJob/other/hall").status in (TaskStatus.RUNNING, TaskStatus.DORMANT)


async def test_an_edit_of_a_task_that_ended_unseen_is_started_anew_after_one_refused_update(harness: Harness) -> None:
    """The daemon updates a task it believes running; the vendor refuses (no running task: it ended since the
    last look). The retry looks first and replaces it, as `plan` does with a refresh; before, it tried the same
    update at every backoff step until the next scheduled look."""
    harness.sim.publish("volcengine", "r1", user_id="u")
    write_specs(harness.specs, snapshot_job("j", ["r1"], interval=5))
    daemon = await harness.start()
    await harness.advance(1)
    (task,) = harness.running_sim_tasks("volcengine")
    harness.sim.world.stop_out_of_band(task, "StopByAPI")
    write_specs(harness.specs, snapshot_job("j", ["r1"], interval=9))
    assert daemon.reload()
    await harness.advance(6)  # the refused update, then its retry after the first backoff step (5 s)
    assert harness.calls("UpdateSnapshot") == 1 and harness.calls("StartSnapshot") == 2
    record = harness.record("SnapshotJob/j/r1")
    assert (record.status, record.updatable, record.last_error) == (TaskStatus.RUNNING, {"interval": 9}, None)


async def test_no_prune_keeps_removed_jobs_running(harness: Harness) -> None:
    harness.daemon_options["prune"] = False
    await running_with_stream(harness, ["lobby"])
    assert harness.daemon is not None
    write_specs(harness.specs, snapshot_job("other", ["hall"]))
    assert harness.daemon.reload()
    await harness.advance(60)
    assert harness.calls("StopSnapshot") == 0
    assert harness.record(LOBBY).status is TaskStatus.RUNNING


async def test_invalid_or_vanished_spec_sets_are_logged_and_ignored(harness: Harness) -> None:
    await running_with_stream(harness, ["lobby"])
    assert harness.daemon is not None
    (harness.specs / "jobs.yaml").write_text(snapshot_job("audit", ["lobby"]).replace("interval: 5s", "intervl: 5s"))
    with capture_logs() as logs:
        assert not harness.daemon.reload()
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors[0]["event"] == "spec set rejected; the last valid set stays in force"
    assert any("jobs.yaml:7:3:" in line and "did you mean 'interval'" in line for line in errors[0]["errors"])
    shutil.rmtree(harness.specs)
    harness.specs.mkdir()
    with capture_logs() as logs:
        assert not harness.daemon.reload()  # an empty directory (git-sync mid-swap) is an error, not an intent
    assert "no spec files" in logs[0]["errors"][0]
    await harness.advance(120)
    assert harness.calls("StopSnapshot") == 0
    assert harness.record(LOBBY).status is TaskStatus.RUNNING
    assert harness.daemon.readiness().ready  # the last valid set is still in force


async def test_started_with_an_invalid_set_waits_then_works(harness: Harness) -> None:
    harness.specs.mkdir()
    (harness.specs / "jobs.yaml").write_text(": not yaml [")
    daemon = await harness.start()
    await harness.advance(60)
    assert not daemon.readiness().ready and daemon.records.keys() == []
    assert harness.sim.log.entries() == []
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    assert daemon.reload()
    await harness.advance(1)
    assert harness.record(LOBBY).status is TaskStatus.RUNNING


async def test_the_watcher_picks_up_real_file_changes(harness: Harness) -> None:
    harness.daemon_options["watch_debounce_ms"] = 50
    await running_with_stream(harness, ["lobby"])
    daemon = harness.daemon
    assert daemon is not None

    async def until(condition: object) -> None:
        async with asyncio.timeout(10):  # real time: watchfiles runs on the OS's notifications
            while not callable(condition) or not condition():
                await asyncio.sleep(0.02)
                await harness.advance(1)  # the daemon's own work runs on the fake clock

    (harness.specs / "more.yaml").write_text(snapshot_job("extra", ["hall"]))  # a new file
    await until(lambda: daemon.spec is not None and "SnapshotJob/extra/hall" in daemon.spec.tasks)
    (harness.specs / "more.yaml").rename(harness.specs / "renamed.yml")  # a rename keeps it
    (harness.specs / "jobs.yaml").write_text(snapshot_job("audit", ["lobby", "vip"]))  # an edit
    await until(
        lambda: daemon.spec is not None and VIP in daemon.spec.tasks and daemon.spec.files[-1].endswith("renamed.yml")
    )
    (harness.specs / "renamed.yml").unlink()  # a deletion
    await until(lambda: daemon.spec is not None and "SnapshotJob/extra/hall" not in daemon.spec.tasks)
    (harness.specs / "jobs.yaml").write_text("kind: [")  # an invalid edit: ignored
    with capture_logs() as logs:
        await until(lambda: any(e["log_level"] == "error" for e in logs))
    assert daemon.spec is not None and VIP in daemon.spec.tasks


async def test_a_fifo_or_dev_zero_among_the_specs_is_refused_by_name_and_the_probes_answer(harness: Harness) -> None:
    """Issue 14: a FIFO named *.yaml froze /healthz and a symlink to /dev/zero took gigabytes. Through the
    real watcher: the set is refused naming both, the last valid set stays, the probes say so."""
    harness.daemon_options["watch_debounce_ms"] = 50
    await running_with_stream(harness, ["lobby"])
    daemon = harness.daemon
    assert daemon is not None
    os.mkfifo(harness.specs / "pipe.yaml")
    (harness.specs / "zero.yaml").symlink_to("/dev/zero")
    with capture_logs() as logs:
        async with asyncio.timeout(10):  # real time: watchfiles runs on the OS's notifications
            while not any(e["log_level"] == "error" for e in logs):
                await asyncio.sleep(0.02)
                await harness.advance(1)
    rejected = next(e for e in logs if e["log_level"] == "error")
    assert rejected["errors"] == [
        f"{harness.specs / 'pipe.yaml'}: not a regular file (a FIFO)",
        f"{harness.specs / 'zero.yaml'}: not a regular file (a character device)",
    ]
    async with await client(harness) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
    assert ready.status_code == 200 and "not a regular file (a FIFO)" in ready.text
    assert daemon.spec is not None and LOBBY in daemon.spec.tasks


async def test_a_slow_spec_load_does_not_stall_the_probes(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    await running_with_stream(harness, ["lobby"])
    daemon = harness.daemon
    assert daemon is not None
    release, started, loading = threading.Event(), threading.Event(), threading.Event()

    def slow_load(*args: Any, **kwargs: Any) -> SpecSet:
        started.set()
        loading.set()
        release.wait(timeout=10)  # on the event loop this would hold /healthz for the whole wait
        try:
            return load_spec_set(*args, **kwargs)
        finally:
            loading.clear()

    monkeypatch.setattr("reconciler.daemon.specset.load_spec_set", slow_load)
    reloading = asyncio.create_task(daemon.reload_async())
    while not started.is_set():
        await asyncio.sleep(0.01)
    async with await client(harness) as http:
        assert (await http.get("/healthz")).status_code == 200
    answered_while_loading = loading.is_set()
    release.set()
    assert await reloading
    assert answered_while_loading


async def test_reloads_asked_for_while_one_reads_are_answered_by_one_read_after_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 37a-3: a burst of SIGHUPs (a reloader sending one per file, the watcher reloading for the same edit)
    read and compared the whole spec set once per signal, one after another (seconds each at 100,000 tasks)."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    daemon = await harness.start()
    release, started, reads = threading.Event(), threading.Event(), []

    def slow_load(*args: Any, **kwargs: Any) -> SpecSet:
        reads.append(1)
        started.set()
        release.wait(timeout=10)
        return load_spec_set(*args, **kwargs)

    monkeypatch.setattr("reconciler.daemon.specset.load_spec_set", slow_load)
    first = asyncio.create_task(daemon.reload_async())
    await asyncio.to_thread(started.wait, 5)
    (harness.specs / "jobs.yaml").write_text(snapshot_job("audit", ["lobby", "vip"]))  # edited, then 4 SIGHUPs
    later = [asyncio.create_task(daemon.reload_async()) for _ in range(4)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(first, *later), 10) == [True] * 5
    assert len(reads) == 2  # the one under way, and one for the four asked meanwhile
    assert daemon.spec is not None and "SnapshotJob/audit/vip" in daemon.spec.tasks


def test_watch_roots_follow_symlinks_and_missing_paths(tmp_path: object) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))
    (base / "rev-1").mkdir()
    (base / "current").symlink_to(base / "rev-1")
    (base / "file.yaml").write_text("")
    roots = watch_roots(
        [str(base / "current"), str(base / "gone" / "deeper"), str(base / "file.yaml"), str(base / "rev-1")]
    )
    assert roots == [str(base), str(base / "rev-1")]


async def test_a_spec_directory_inside_git_syncs_link_follows_every_commit(tmp_path: Path) -> None:
    """The specs in `specs/` of the repository, as every CI example keeps them: PATH=/specs/current/specs.
    git-sync checks each commit out into a new worktree and swaps `current` to it; the watch, set up through the
    old link, sees no event of the swap: each commit must still reload, not only the one whose old worktree
    happens to be deleted."""
    reloads: list[str] = []
    path = tmp_path / "current" / "specs"

    def commit(name: str) -> None:
        (tmp_path / ".worktrees" / name / "specs").mkdir(parents=True)
        (tmp_path / ".worktrees" / name / "specs" / "jobs.yaml").write_text(f"# {name}\n")
        (tmp_path / "next").symlink_to(Path(".worktrees") / name)
        os.replace(tmp_path / "next", tmp_path / "current")  # atomic, as git-sync swaps it

    async def reloaded(name: str) -> bool:
        return await _until(
            lambda: bool(reloads) and reloads[-1] == os.path.realpath(tmp_path / ".worktrees" / name / "specs")
        )

    async def on_change() -> None:
        reloads.append(os.path.realpath(path))

    commit("a")
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_specs([str(path)], on_change, stop=stop, debounce_ms=50))
    try:
        await asyncio.sleep(0.3)  # the watch is set up on .worktrees/a/specs
        commit("b")
        assert await reloaded("b")
        commit("c")
        shutil.rmtree(tmp_path / ".worktrees" / "a")  # git-sync removes the worktrees it no longer links
        assert await reloaded("c")
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 5)


async def test_a_file_written_between_the_first_read_and_the_watch_is_not_missed(tmp_path: Path) -> None:
    """Walk 60c-8: the daemon reads the specs, takes the lease, and only then begins to watch: a file written in
    between (a git-sync at the pod's start, an edit) was seen by no event, and the set read before it stayed in
    force until some other change. The watch compares the tree with what it was before that read."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "a.yaml").write_text("# a\n")
    before = tree_state([str(specs)])
    reloads: list[int] = []

    async def on_change() -> None:
        reloads.append(1)

    async def watched(read: TreeState) -> list[int]:
        reloads.clear()
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_specs([str(specs)], on_change, stop=stop, debounce_ms=50, read=read))
        try:
            await _until(lambda: bool(reloads), 3)
        finally:
            stop.set()
            await asyncio.wait_for(watcher, 5)
        return list(reloads)

    assert await watched(before) == []  # nothing changed since the read: no reload
    (specs / "b.yaml").write_text("# b\n")  # after the read, before the watch
    assert await watched(before) == [1]


def _mount_secret(mount: Path, revision: str, value: str) -> None:
    """A Kubernetes Secret volume: `key -> ..data/key`, `..data -> ..<revision>`, swapped atomically by kubelet."""
    (mount / f"..{revision}").mkdir(parents=True)
    (mount / f"..{revision}" / "key").write_text(value)
    (mount / "..data_tmp").symlink_to(f"..{revision}")
    os.replace(mount / "..data_tmp", mount / "..data")
    if not (mount / "key").is_symlink():
        (mount / "key").symlink_to("..data/key")


def _counting(reloads: list[int]) -> tuple[Callable[[], Awaitable[None]], Callable[[int], Awaitable[bool]]]:
    """An `on_change` that appends to `reloads`, and a wait (up to 30 s) until it holds `count` of them."""

    async def on_change() -> None:
        reloads.append(len(reloads))

    async def reloaded(count: int) -> bool:
        return await _until(lambda: len(reloads) >= count)

    return on_change, reloaded


async def _until(condition: Callable[[], bool], seconds: float = 30) -> bool:
    """Whether `condition()` came true within `seconds`: a bound for a loaded machine, not a measure."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while not condition():
                await asyncio.sleep(0.05)
            return True
    return False


class _Referenced:
    """The files the specs' references name, as `watch_specs(referenced=…)` asks for them at each check:
    `checks` counts the asks, so a test waits for the watch's next check instead of guessing its time."""

    def __init__(self, *files: Path) -> None:
        self.files = [str(f) for f in files]
        self.checks = 0

    def __call__(self) -> list[str]:
        self.checks += 1
        return self.files

    async def checked(self, times: int = 1) -> None:
        """Until the watch has checked `times` more times (each check notes the list and the files' states)."""
        then = self.checks
        assert await _until(lambda: self.checks >= then + times), "the watch made no check"


async def test_a_referenced_file_rotated_by_a_secret_update_reloads_the_specs(tmp_path: Path) -> None:
    """The files `{file: …}` references read lie outside the spec paths (a Secret mounted elsewhere): the
    kubelet's `..data` swap and an edit in place each reload, a file no longer read does not."""
    reloads: list[int] = []
    mount, other = tmp_path / "secret", tmp_path / "other"
    _mount_secret(mount, "rev-1", "old")
    other.write_text("x")
    (tmp_path / "specs").mkdir()
    referenced = _Referenced(mount / "key", other)

    on_change, reloaded = _counting(reloads)

    stop = asyncio.Event()
    watch = watch_specs([str(tmp_path / "specs")], on_change, stop=stop, debounce_ms=50, referenced=referenced)
    watcher = asyncio.create_task(watch)
    try:
        await referenced.checked()  # the states it compares with are taken
        _mount_secret(mount, "rev-2", "new")
        assert await reloaded(1)
        other.write_text("y")  # an edit in place
        assert await reloaded(2)
        referenced.files.pop()
        other.write_text("z")
        await referenced.checked(2)  # a check or more later
        assert len(reloads) == 2
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 5)


async def test_a_file_a_reload_from_elsewhere_adds_is_watched_too(tmp_path: Path) -> None:
    """A SIGHUP reload (not the watcher's) may change which files the references name: each is compared with
    its own earlier state, so a file added then is watched, and a new order is no change (before: compared by
    position, the added file was never looked at and the reordered list reloaded for nothing)."""
    reloads: list[int] = []
    first, added = tmp_path / "first", tmp_path / "added"
    first.write_text("a")
    added.write_text("b")
    (tmp_path / "specs").mkdir()
    referenced = _Referenced(first)

    on_change, reloaded = _counting(reloads)

    stop = asyncio.Event()
    watch = watch_specs([str(tmp_path / "specs")], on_change, stop=stop, debounce_ms=50, referenced=referenced)
    watcher = asyncio.create_task(watch)
    try:
        await referenced.checked()
        referenced.files.insert(0, str(added))  # the set a SIGHUP loaded reads one more file, listed first
        # A check or more: the new list is noted, nothing reloaded. Waited for, not slept: a write before
        # the check that notes the file would be the file's first state, and no change.
        await referenced.checked(2)
        assert reloads == []
        added.write_text("rotated")
        assert await reloaded(1)
        assert reloads == [0]
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 5)


@contextlib.contextmanager
def _out_of_descriptors() -> Iterator[list[int]]:
    """This process out of file descriptors (a low soft limit, filled) until the list it gives is emptied."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(int(n) for n in os.listdir("/proc/self/fd")) + 16, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        yield fillers
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_watch_that_cannot_be_set_up_says_so_and_watches_once_it_can(tmp_path: Path) -> None:
    """Started while the process is out of descriptors (`capctl run` flooded with connections right after it
    said it listens), the watch cannot have its inotify: one error line, a try every second, and the specs are
    read once it watches. Before, the watch task ended silently and no spec change was seen until a restart."""
    reloads: list[int] = []
    specs = tmp_path / "specs"
    specs.mkdir()

    on_change, reloaded = _counting(reloads)

    stop = asyncio.Event()
    with capture_logs() as logs:
        with _out_of_descriptors() as fillers:
            watcher = asyncio.create_task(watch_specs([str(specs)], on_change, stop=stop, debounce_ms=50))
            await asyncio.sleep(1.5)  # the first try and the one a second later
            for fd in fillers:
                os.close(fd)
            fillers.clear()
        try:
            assert await reloaded(1)  # the catch-up read, once it watches
            (specs / "jobs.yaml").write_text("a: 1\n")
            assert await reloaded(2)
        finally:
            stop.set()
            await asyncio.wait_for(watcher, 5)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == [
        "cannot watch the spec files; trying again every second (SIGHUP re-reads them)"
    ]
    assert "Too many open files" in errors[0]["error"]
    assert "watching the spec files again" in [e["event"] for e in logs]


async def test_watchfiles_still_raises_the_private_error_the_watch_catches(tmp_path: Path) -> None:
    """reconciler/daemon/watch.py catches `watchfiles._rust_notify.WatchfilesRustInternalError` by its private
    path: watchfiles exports it nowhere public (its docs show `_rust_notify` as the interface to its Rust
    code), and its public base, RuntimeError, would take capctl's own errors for a watch that cannot be set up.
    If a watchfiles release moves it or raises another error there, this fails, not a daemon in production
    (an ImportError at start, or a watch task that ends silently)."""
    with _out_of_descriptors(), pytest.raises(WatchfilesRustInternalError, match="Too many open files"):
        async for _ in watchfiles.awatch(tmp_path, stop_event=asyncio.Event()):
            break


async def test_a_rotated_callback_secret_in_a_mounted_file_is_used_without_a_restart(harness: Harness) -> None:
    """A Secret update of the file a callbackSecret references: the daemon verifies with the new key within a
    second or two; before, it kept the old one until a restart (or until some unrelated spec change)."""
    harness.daemon_options["watch_debounce_ms"] = 50
    mount = harness.tmp_path / "secret"
    _mount_secret(mount, "rev-1", VOLC_SECRET)
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    providers = harness.specs / "providers.yaml"
    providers.write_text(
        providers.read_text().replace("{env: VOLC_CB, default: capctl-sim-volc-callback}", "{file: ../secret/key}")
    )
    await harness.start()
    async with await client(harness) as http:
        assert (await http.post("/callbacks/volcengine", json=volc_body(harness))).status_code == 200
        _mount_secret(mount, "rev-2", "rotated-callback-secret")
        async with asyncio.timeout(10):  # real time: the watcher checks the file every second
            while True:
                answer = await http.post(
                    "/callbacks/volcengine", json=volc_body(harness, event_id="e2", secret="rotated-callback-secret")
                )
                if answer.status_code == 200:
                    break
                await asyncio.sleep(0.05)
        old = await http.post("/callbacks/volcengine", json=volc_body(harness, event_id="e3"))
        assert old.status_code == 401


async def test_a_provider_change_retries_a_failing_task_at_once(harness: Harness) -> None:
    """A rotated key (or a renamed Provider's old document put back) changes no task's hash: a task failing
    for want of it waited out its backoff (5 s, 10 s, … up to 5 minutes) after the fix was in force."""
    harness.sim.publish("volcengine", "lobby", user_id="u")
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    providers = harness.specs / "providers.yaml"
    good = providers.read_text()
    providers.write_text(good.replace("default: capctl-sim-volc-secret", "default: not-the-secret"))
    await harness.start()
    await harness.advance(8)  # two failed starts: the next in 10 s
    assert harness.record(LOBBY).status is TaskStatus.FAILED
    assert harness.daemon is not None
    providers.write_text(good)
    assert harness.daemon.reload()
    await harness.advance(1)
    assert harness.record(LOBBY).status is TaskStatus.RUNNING


def test_the_spec_digest_tells_a_rotated_provider_key_apart_but_not_where_a_provider_is_written(tmp_path: Path) -> None:
    """Replicas compare digests (a pod with a rotated key's old value acts differently); a key that changes
    the tasks' hashes (a storage key) showed already, a Provider's own key (callback, API) did not."""
    specs = write_specs(tmp_path / "specs", snapshot_job("audit", ["lobby"]))

    def digest(**env: str) -> str:
        return spec_digest(load_spec_set([str(specs)], env=env, fingerprint_key=b"k" * 32))

    before = digest()
    assert digest(VOLC_CB="rotated-callback") != before and digest(VOLC_SK="rotated-api-key") != before
    (specs / "providers.yaml").write_text("# moved down a line\n" + (specs / "providers.yaml").read_text())
    assert digest() == before


@pytest.mark.parametrize("job", [snapshot_job("audit", ["lobby"]), selector_job("audit", "class-*")])
def test_the_spec_digest_tells_a_job_s_restart_policy_and_labels_apart(tmp_path: Path, job: str) -> None:
    """A job's restartPolicy (whether an ended run is re-issued) and labels (recorded with its tasks) are not in
    a task's spec hash: a replica still on the old ones showed the leader's digest, its failover acting on them
    unnoticed (walk 54b). The same as what gives a task work on a reload (`changed_keys`)."""

    def digest(text: str) -> str:
        specs = write_specs(tmp_path / "specs", text)
        return spec_digest(load_spec_set([str(specs)], fingerprint_key=b"k" * 32))

    labelled = job.replace("metadata: {name: audit}", "metadata: {name: audit, labels: {team: school}}")
    seen = [digest(job), digest(job + "  restartPolicy: Never\n"), digest(labelled)]
    assert labelled != job and len(set(seen)) == 3
    assert digest(job + "  restartPolicy: Always\n") == seen[0]  # the default, written out: the same set


async def test_a_set_invalid_for_a_missing_referenced_file_loads_once_the_file_appears(harness: Harness) -> None:
    """The daemon waits for a valid set; a referenced file outside the spec paths that appears (a Secret
    created after the pod) makes it valid: before, nothing reloaded until a spec file changed or SIGHUP."""
    harness.daemon_options["watch_debounce_ms"] = 50
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    providers = harness.specs / "providers.yaml"
    providers.write_text(
        providers.read_text().replace("{env: VOLC_CB, default: capctl-sim-volc-callback}", "{file: ../secret/key}")
    )
    daemon = await harness.start()
    assert daemon.spec is None and not daemon.readiness().ready
    _mount_secret(harness.tmp_path / "secret", "rev-1", VOLC_SECRET)
    async with asyncio.timeout(10):  # real time: the watcher checks the file every second
        while daemon.spec is None:
            await asyncio.sleep(0.05)
    await harness.advance(1)
    assert harness.record(LOBBY).status is TaskStatus.RUNNING


@pytest.mark.parametrize("fault", [StopIteration, ValueError])
async def test_a_fault_of_the_loader_rejects_the_set_and_later_reloads_still_read(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, fault: type[Exception]
) -> None:
    """A bug in capctl's spec loader (walk 28B-1: a StopIteration from a reference check) is a rejected set, not a
    reload that never ends (asyncio cannot hand a StopIteration over from the reload's thread) or a dead watcher."""
    await running_with_stream(harness, ["lobby"])
    daemon = harness.daemon
    assert daemon is not None

    def look_up(spec: dict[str, str]) -> str:
        return spec["".join(["a value ", "from a spec"])]  # built, so no source line the traceback shows holds it

    def broken(*args: Any, **kwargs: Any) -> SpecSet:
        try:
            look_up({})
        except KeyError as first:  # raised while handling a first fault: the log still names where it was raised
            if fault is StopIteration:
                raise fault("".join(["a value ", "from a spec"]))  # noqa: B904 (its context, implicitly)
            raise fault("".join(["a value ", "from a spec"])) from first
        raise AssertionError("unreachable")

    logged = io.StringIO()
    logs.configure("info", json_logs=True, stream=logged)  # rendered as the daemon writes it, traceback and all
    with monkeypatch.context() as patch:
        patch.setattr("reconciler.daemon.specset.load_spec_set", broken)
        assert not await asyncio.wait_for(daemon.reload_async(), 5)
    assert daemon.specs.error is not None and "a capctl bug" in daemon.specs.error
    events = [json.loads(line) for line in logged.getvalue().splitlines()]
    assert any(e["level"] == "error" and "capctl bug" in e["event"] and "broken" in e["traceback"] for e in events)
    assert any("KeyError:" in e.get("traceback", "") and ", in look_up\n" in e["traceback"] for e in events)
    assert "a value from a spec" not in logged.getvalue()  # its text may quote a value: not logged
    assert harness.record(LOBBY).status is TaskStatus.RUNNING  # the last valid set stays in force
    write_specs(harness.specs, snapshot_job("audit", ["lobby"], interval=10))
    assert await asyncio.wait_for(daemon.reload_async(), 5)  # the next edit is read (no reload left waiting)
    assert daemon.specs.error is None


def test_a_fault_of_the_loader_names_the_file_it_was_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Walk 30c: the error named the first spec path (`specs/`, fine) when capctl failed on another (`extra/`);
    a fault in no one file's reading (a check across files) names every path."""
    from reconciler.daemon.specset import read_specs
    from reconciler.spec.refs import resolve_document as resolve

    first = write_specs(tmp_path / "specs", snapshot_job("audit", ["lobby"]))
    other = tmp_path / "extra" / "more.yaml"
    other.parent.mkdir()
    other.write_text(snapshot_job("hall", ["hall"]))

    def broken(raw: Any, *args: Any, **kwargs: Any) -> Any:
        if raw.file == str(other):
            raise StopIteration
        return resolve(raw, *args, **kwargs)

    monkeypatch.setattr("reconciler.spec.loader.resolve_document", broken)
    read = read_specs([str(first), str(other.parent)], None)
    assert isinstance(read, SpecErrors) and [e.file for e in read.errors] == [str(other)]
    monkeypatch.setattr("reconciler.spec.loader.resolve_document", resolve)

    def broken_check(*args: Any) -> Any:
        raise ValueError

    monkeypatch.setattr("reconciler.spec.loader.check_all", broken_check)
    read = read_specs([str(first), str(other.parent)], None)
    assert isinstance(read, SpecErrors) and [e.file for e in read.errors] == [f"{first}, {other.parent}"]


async def test_started_with_a_fault_of_the_loader_it_stays_up_and_says_so_as_for_any_invalid_set(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 29a: the start reads the set through the same guard as a reload (an exception out of `start` would end
    the daemon): it stays up, stands by, and /readyz, the gauges, the status page and sync all name the fault."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))

    def broken(*args: Any, **kwargs: Any) -> SpecSet:
        raise StopIteration("a loader bug")

    with monkeypatch.context() as patch:
        patch.setattr("reconciler.daemon.specset.load_spec_set", broken)
        daemon = await harness.start()
        await harness.advance(5)
        async with await client(harness) as http:
            ready = await http.get("/readyz")
            metrics = (await http.get("/metrics")).text
            replica = (await http.get("/api/v1/status")).json()["replica"]
            sync = await http.post("/api/v1/sync", content=b"")
    why = "capctl could not read the specs (StopIteration): a capctl bug, its traceback is in the log"
    assert ready.status_code == 503 and ready.text.startswith("no valid spec set in force: 1 error")
    assert why in ready.text
    assert "capctl_spec_set_valid 0.0" in metrics and "capctl_spec_set_errors 1.0" in metrics
    assert replica["role"] == "standby" and why in replica["spec_error"]
    assert sync.status_code == 503 and why in sync.json()["reason"]
    assert harness.sim.log.entries() == []
    assert daemon.reload()  # the loader mended: the set is read and acted on
    await harness.advance(1)
    assert harness.record(LOBBY).status is TaskStatus.RUNNING


async def test_a_label_edit_does_not_cut_a_failing_update_s_backoff_short(harness: Harness) -> None:
    """Walk 55a: a changed task is tried at once, its backoff step dropped (44c-1: the edit may fix what failed).
    A label edit changes no vendor call: it sent the failing update again at once, for every task of the job."""
    write_specs(harness.specs, snapshot_job("audit", ["lobby"]))
    harness.sim.publish("volcengine", "lobby", user_id="alice")
    await harness.start()
    await harness.advance(1)
    harness.sim.faults.set(FaultConfig(error_rate=1.0, apis=["GetSnapshotTask", "UpdateSnapshot"]))
    edited = snapshot_job("audit", ["lobby"], interval=10)
    write_specs(harness.specs, edited)
    assert harness.daemon is not None and harness.daemon.reload()
    await harness.advance(600)
    assert harness.daemon.queue.backing_off(LOBBY)  # its step, up to 5 minutes, still ahead
    updates = harness.calls("UpdateSnapshot")
    write_specs(harness.specs, edited.replace("metadata: {name: audit}", "metadata: {name: audit, labels: {a: b}}"))
    assert harness.daemon.reload()
    await harness.advance(2)
    assert harness.calls("UpdateSnapshot") == updates and harness.daemon.queue.backing_off(LOBBY)
