"""The CLI's start: what each kind of `capctl` run costs before and around its small piece of work.

Every CI gate, every test that runs a capctl child and every apply's start pays the interpreter, the imports and
the set-up of the command (bench/README.md, "The CLI's start"). This runs a dozen typical commands on a spec set
of 2 jobs × 3 rooms against a `capctl sim` on loopback: wall and child CPU (user + system, from `wait4`) medians,
and with `--against TREE` the same commands of another tree (a `git worktree` or `git archive` of an older
commit, put first on `PYTHONPATH`) in turn, run for run, so both see the same load on a shared machine.
`--callgrind` counts instructions instead (valgrind, one run per command and tree): repeatable where CPU time is
not, ~50 × slower.

    .venv/bin/python bench/cli_start.py [--runs 9] [--against TREE] [--callgrind] [--port P] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from common import CAPCTL, bench_env, free_port, machine, median, simulator, write_specs

__all__ = ["main"]


def cases(specs: Path, work: Path) -> list[tuple[str, list[str]]]:
    """Name and argv of each command measured; `{fresh}` is a new SQLite path per run."""
    state = f"sqlite:///{work}/state.db"
    return [
        ("--version", ["--version"]),
        ("--help", ["--help"]),
        ("plan --help", ["plan", "--help"]),
        ("validate", ["validate", str(specs)]),
        ("validate (error)", ["validate", str(work / "bad")]),
        ("schema", ["schema"]),
        ("plan --no-refresh", ["plan", "--no-refresh", "--state", state, str(specs)]),
        ("plan", ["plan", "--state", state, str(specs)]),
        ("apply, no change", ["apply", "--auto-approve", "--state", state, str(specs)]),
        ("apply, 6 creates", ["apply", "--auto-approve", "--no-refresh", "--state", "sqlite:///{fresh}", str(specs)]),
        ("state list", ["state", "list", "--state", state]),
    ]


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1, 2):
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def instructions(argv: list[str], env: dict[str, str]) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env={**env, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"{' '.join(argv)}: no count from valgrind\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="runs per command and tree (wall and CPU medians)")
    parser.add_argument("--against", help="also run this tree's reconciler, in turn with this one's")
    parser.add_argument("--callgrind", action="store_true", help="count instructions (valgrind), one run each")
    parser.add_argument("--port", type=int, default=0, help="the simulator's loopback port (default: a free one)")
    parser.add_argument("--only", default="", help="comma-separated names of the commands to measure")
    args = parser.parse_args()

    env = {**bench_env(), "NO_COLOR": "1", "COLUMNS": "80"}
    env.pop("PYTHONPATH", None)
    trees = [("this", env)] + ([("against", {**env, "PYTHONPATH": args.against})] if args.against else [])
    port = args.port or free_port()
    with tempfile.TemporaryDirectory() as tmp, simulator(port):
        work = Path(tmp)
        specs = write_specs(work / "specs", 2, 3, port=port)
        bad = work / "bad"
        bad.mkdir()
        (bad / "job.yaml").write_text((specs / "job-00000.yaml").read_text().replace("interval: 5s", "interval: 5x"))
        subprocess.run(
            [CAPCTL, "apply", "--auto-approve", "--state", f"sqlite:///{work}/state.db", str(specs)],
            env=env,
            check=True,
            capture_output=True,
        )
        only = {name.strip() for name in args.only.split(",") if name.strip()}
        print(f"{machine()}, load {os.getloadavg()[0]:.1f}, {'callgrind' if args.callgrind else f'{args.runs} runs'}")
        for name, argv in cases(specs, work):
            if only and name not in only:
                continue
            figures: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in trees}
            for i in range(1 if args.callgrind else args.runs):
                for label, tree_env in trees if i % 2 == 0 else trees[::-1]:
                    full = [CAPCTL, *(a.replace("{fresh}", f"{work}/fresh-{label}-{i}.db") for a in argv)]
                    if args.callgrind:
                        figures[label].append((instructions(full, tree_env), 0.0))
                    else:
                        figures[label].append(run_once(full, tree_env))
            cells = []
            for label, _ in trees:
                if args.callgrind:
                    cells.append(f"{label} {figures[label][0][0] / 1e6:,.0f} M instructions")
                else:
                    wall = median([w for w, _ in figures[label]])
                    cpu = median([c for _, c in figures[label]])
                    cells.append(f"{label} {wall:.3f} / {cpu:.3f} s")
            print(f"{name:<20} " + ";  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
