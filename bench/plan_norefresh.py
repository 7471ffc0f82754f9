"""Benchmark 1: `capctl plan --no-refresh` on 10,000 (and 100,000) tasks, no-op and all-create.

Runs the real CLI as a subprocess on a generated spec directory (providers + storage + N SnapshotJob
files of 10 rooms each) with a SQLite state that already records every task (a realistic no-op plan),
and with an empty state (every task a create; stdout to /dev/null). Prints the median wall time and CPU time
(user + system) of several runs and the peak RSS of the child. Targets: 10k ≤ 1.0 s and ≤ 250 MB; 100k ≤ 8 s.
`--against TREE` runs another tree's capctl (a `git worktree` of an older commit) in turn with this one, run
for run, and prints both: on a machine shared with other work, before and after measured in the same minutes.

    .venv/bin/python bench/plan_norefresh.py [--jobs 1000] [--rooms 10] [--runs 5] [--pythonpath TREE]
        [--against TREE]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import CAPCTL, bench_env, machine, median, populate_state, write_specs

ENV = bench_env()


def run_plan(spec_dir: Path, state_url: str, env: dict[str, str]) -> tuple[float, float, float, int]:
    """One CLI run: (wall seconds, CPU seconds and peak RSS MB of exactly this child, exit code)."""
    argv = [CAPCTL, "plan", "--no-refresh", "--detailed-exitcode", "--state", state_url, str(spec_dir)]
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        pid = os.posix_spawn(
            CAPCTL,
            argv,
            env,
            file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0), (os.POSIX_SPAWN_DUP2, err.fileno(), 2)],
        )
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN is a maximum over every child so far).
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, 2):
            err.seek(0)
            raise SystemExit(f"capctl plan failed ({code}): {err.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code


def measure(
    spec_dir: Path, state_url: str, runs: int, envs: list[dict[str, str]]
) -> list[tuple[float, float, float, int]]:
    """Per environment (tree): median wall, median CPU, peak RSS, exit code; the trees' runs alternate."""
    seen: list[list[tuple[float, float, float, int]]] = [[] for _ in envs]
    for _ in range(runs):
        for env, results in zip(envs, seen, strict=True):
            results.append(run_plan(spec_dir, state_url, env))
    return [(median([r[0] for r in rs]), median([r[1] for r in rs]), max(r[2] for r in rs), rs[-1][3]) for rs in seen]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--pythonpath",
        help="import reconciler from this tree (e.g. a `git worktree` of an older commit) for before/after figures",
    )
    parser.add_argument("--against", help="also run this tree's reconciler, in turn with this one's (see above)")
    args = parser.parse_args()
    if args.pythonpath:
        ENV["PYTHONPATH"] = args.pythonpath
    trees = [("", ENV)] + ([(f"{args.against}: ", {**ENV, "PYTHONPATH": args.against})] if args.against else [])
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        spec_dir = write_specs(Path(tmp) / "specs", args.jobs, args.rooms)
        tasks = args.jobs * args.rooms
        empty = f"sqlite:///{tmp}/empty.db"
        full = f"sqlite:///{tmp}/full.db"
        populate_state(spec_dir, full)
        for _, env in trees:
            run_plan(spec_dir, empty, env)  # warm-up: bytecode cache and page cache, not measured
        for label, url, expected in (
            ("no-op (state holds every task)", full, 0),
            ("all-create (empty state)", empty, 2),
        ):
            for (tree, _), (wall, cpu, rss, code) in zip(
                trees, measure(spec_dir, url, args.runs, [env for _, env in trees]), strict=True
            ):
                if code != expected:
                    raise SystemExit(f"{tree}{label}: exit code {code}, expected {expected}")
                print(
                    f"{tree}plan --no-refresh {tasks} tasks, {label}: median wall {wall:.3f} s, CPU {cpu:.3f} s "
                    f"over {args.runs} runs, peak RSS {rss:.0f} MB"
                )


if __name__ == "__main__":
    main()
