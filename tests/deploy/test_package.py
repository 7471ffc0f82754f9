"""capctl as users install it: the sdist, the wheel built from that sdist (as `python -m build` makes a
release), installed into a virtualenv of its own and run from a directory that is not the checkout.

Everything else in the suite runs the checkout's editable install, where a file read relative to the sources,
a template left out of the package data or a package left out of the wheel still works. The wheel is
installed with `--no-deps` into a throwaway virtualenv that finds its dependencies in the suite's
site-packages through a .pth file (installing them again would take the network and a minute). The suite's
own editable capctl stays out: its import hook is a .pth file of the suite's environment, which the
throwaway one does not process; the test checks that the copy imported is the installed one.

The dependency ranges of pyproject.toml: their floors are the oldest versions capctl was run on. The versions
known to fail are kept below with what failed on them, so a range never admits them again.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from reconciler import __version__
from tests.deploy.daemon_facts import ROOT
from tests.servers import children_of

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# (package, version): what capctl did on it, each found by installing the wheel at pyproject's old floors.
KNOWN_TO_FAIL = {
    ("typer", "0.12.0"): "every command, even --version: No module named 'typer._click'",
    ("typer", "0.25.1"): "every command, even --version: No module named 'typer._click'",
    ("typer", "0.26.0"): "a usage error is a traceback: '_PlainArgument' object has no attribute 'display_name_raw'",
    ("typer", "0.28.0"): "a usage error is a traceback: '_PlainArgument' object has no attribute 'display_name_raw'",
    ("pydantic", "2.6.0"): "capctl explain SnapshotJob.spec.image.width: SnapshotJob.spec has no field 'image'",
    ("pydantic", "2.8.0"): "capctl explain SnapshotJob.spec.image.width: SnapshotJob.spec has no field 'image'",
    ("rich", "13.7.0"): "typer 0.29 needs rich>=13.8: no install resolves",
}


def requirements() -> dict[str, Requirement]:
    return {(req := Requirement(line)).name: req for line in PROJECT["dependencies"]}


@pytest.mark.parametrize(("package", "version"), sorted(KNOWN_TO_FAIL))
def test_the_dependency_ranges_leave_out_the_versions_capctl_fails_on(package: str, version: str) -> None:
    assert not requirements()[package].specifier.contains(version), KNOWN_TO_FAIL[(package, version)]


def test_the_pinned_versions_are_within_the_dependency_ranges() -> None:
    """constraints.txt (what ./dev, CI and the image install) stays inside what pyproject.toml promises."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    for name, req in requirements().items():
        pinned = pins[name.lower().replace("_", "-")]
        assert req.specifier.contains(pinned), f"constraints.txt pins {name}=={pinned}, outside {req}"


def test_a_checkout_without_its_symlinks_does_not_build_a_package_without_the_docs(tmp_path: Path) -> None:
    """Cloned with core.symlinks=false, reconciler/docs is a file holding `../docs`: refused, not left out."""
    for name in ("setup.py", "pyproject.toml", "README.md", "reconciler/manual.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "reconciler" / "docs").write_text("../docs")
    built = subprocess.run([sys.executable, "setup.py", "--name"], cwd=tmp_path, capture_output=True, text=True)
    assert built.returncode == 1, built.stdout + built.stderr
    assert "reconciler/docs is not a directory: it is a symlink in git; clone with symlinks" in built.stderr


@dataclass
class Installed:
    bin: Path
    sdist: Path
    wheel: Path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CAPCTL_", "VIRTUAL_ENV"))}
    return {**env, "NO_COLOR": "1", "COLUMNS": "120"}


def _install(into: Path) -> None:
    """The checkout's tracked files (what a clean clone holds) → sdist → wheel → a throwaway virtualenv."""
    src, dist, venv = into / "src", into / "dist", into / "venv"
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True, check=True)
    for name in filter(None, tracked.stdout.split("\0")):
        if (ROOT / name).is_symlink():  # reconciler/docs, reconciler/quickstart: links as git keeps them
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).symlink_to((ROOT / name).readlink())
        elif (ROOT / name).is_file():  # a file deleted but not yet committed is no longer there
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    # --no-isolation: the build backend of the dev tools (pinned), no download.
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    ).stdout.strip()
    Path(purelib, "suite-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip comes from the suite's site-packages too; --ignore-installed: the suite's capctl is never touched.
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--no-compile"]
    [wheel] = dist.glob("*.whl")  # built from the sdist alone
    done = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Built and installed once per run: the first worker builds, the others wait and reuse it."""
    run_temp = tmp_path_factory.getbasetemp()
    shared = run_temp.parent if "PYTEST_XDIST_WORKER" in os.environ else run_temp
    into = shared / "capctl-package"
    with (shared / "capctl-package.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (into / "installed").exists():
            shutil.rmtree(into, ignore_errors=True)  # a worker that failed half-way
            _install(into)
            (into / "installed").touch()
    [sdist], [wheel] = (into / "dist").glob("*.tar.gz"), (into / "dist").glob("*.whl")
    return Installed(into / "venv" / "bin", sdist, wheel)


@pytest.fixture
def away(tmp_path: Path) -> Path:
    """The working directory of every command: not the checkout, with a copy of its quickstart specs."""
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    return tmp_path


def run(away: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=away, env=_env(), capture_output=True, text=True, timeout=60)


def test_the_sdist_and_the_wheel_hold_the_package_its_data_and_the_license(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as sdist:
        top = f"capctl-{__version__}/"
        names = {name.removeprefix(top) for name in sdist.getnames()}
    assert {"pyproject.toml", "README.md", "LICENSE", "reconciler/status/templates/status.html"} <= names
    with zipfile.ZipFile(installed.wheel) as wheel:
        files = set(wheel.namelist())
        metadata = wheel.read(f"capctl-{__version__}.dist-info/METADATA").decode()
        entry_points = wheel.read(f"capctl-{__version__}.dist-info/entry_points.txt").decode()
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "reconciler").rglob("*.py")}
    assert sources <= files, sorted(sources - files)
    # The docs and the quickstart specs, from the one copy in git (docs/, specs/), for `capctl docs` and the demo.
    shipped = {f"reconciler/docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    shipped |= {f"reconciler/quickstart/{p.name}" for p in (ROOT / "specs").glob("*.yaml")}
    assert shipped <= names and shipped <= files, sorted(shipped - names) + sorted(shipped - files)
    assert {"reconciler/status/templates/status.html", f"capctl-{__version__}.dist-info/licenses/LICENSE"} <= files
    assert "reconciler/py.typed" in files
    assert not any(name.startswith(("tests/", "bench/", "docs/")) for name in files)
    assert "capctl = reconciler.cli:main" in entry_points
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Python: >=3.11" in metadata
    classifiers = {line.removeprefix("Classifier: ") for line in metadata.splitlines() if line.startswith("Classifier")}
    assert {"Programming Language :: Python :: 3.11", "Operating System :: POSIX", "Typing :: Typed"} <= classifiers
    assert "Keywords: rtc," in metadata
    # The README, as an index shows it: a link relative to the repository would lead nowhere there.
    assert "Description-Content-Type: text/markdown" in metadata and "# capctl" in metadata
    assert re.findall(r"\]\((?![a-z]+:)[^)]*\)", metadata) == []
    assert "See docs/state.md (`capctl docs state`)." in metadata


def test_the_installed_capctl_runs_outside_the_checkout(installed: Installed, away: Path) -> None:
    python, capctl = installed.bin / "python", installed.bin / "capctl"
    where = run(away, python, "-c", "import reconciler; print(reconciler.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(installed.bin.parent), where.stdout + where.stderr
    assert run(away, capctl, "--version").stdout == f"capctl {__version__}\n"
    assert run(away, python, "-m", "reconciler", "--version").stdout == f"capctl {__version__}\n"
    valid = run(away, capctl, "validate")  # ./specs, the default
    assert valid.returncode == 0 and valid.stdout.startswith("Valid: 3 files"), valid.stdout + valid.stderr
    explained = run(away, capctl, "explain", "SnapshotJob.spec.image.width")
    assert explained.returncode == 0 and "FIELD:    width" in explained.stdout, explained.stdout + explained.stderr
    assert json.loads(run(away, capctl, "schema").stdout)["title"].startswith("capctl spec document")
    assert "complete -o default -F _capctl_completion capctl" in run(away, capctl, "completion", "bash").stdout
    nowhere = away / "empty"  # a new user's directory: no ./specs, the default
    nowhere.mkdir()
    assert "give spec files or directories as arguments (`capctl demo`" in run(nowhere, capctl, "validate").stderr
    usage = run(away, capctl, "state", "show")
    assert usage.returncode == 1 and "Missing argument 'KEY'" in usage.stderr, usage.stderr
    # The pages messages point at ("see docs/spec-language.md, Limits"), without a checkout.
    assert "spec-language         The capctl spec language" in run(away, capctl, "docs").stdout
    limits = run(away, capctl, "docs", "docs/spec-language.md", "Limits")
    assert limits.returncode == 0 and limits.stdout.startswith("### Limits\n"), limits.stdout + limits.stderr


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=20)


def test_the_installed_demo_runs_end_to_end_anywhere_on_any_free_ports(
    installed: Installed, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """`pip install` then `capctl demo --keep-running`, in a directory without specs/: the quickstart specs and
    the template of the daemon's status page come from the package; SIGTERM (`docker stop`, systemd) ends the
    kept demo cleanly, exit 0 (it was 143, a failure). The demo's one end-to-end run in the suite (its ports,
    signals and refusals: tests/e2e/test_cli_demo.py)."""
    # Port 0 for both: never the defaults 8750 / 8081, which another demo on this machine may hold.
    ports = ["--listen", "127.0.0.1:0", "--daemon-listen", "127.0.0.1:0", "--keep-running"]
    demo = subprocess.Popen(
        [installed.bin / "capctl", "demo", *ports],
        cwd=tmp_path,
        env={**_env(), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started.append(demo)
    assert demo.stdout is not None
    said, page = [], None
    for line in demo.stdout:
        said.append(line)
        if "press Ctrl-C (or send SIGTERM) to stop" in line:  # it serves its status page until stopped
            where = re.search(r"daemon on (http://127\.0\.0\.1:\d+),", said[0])
            assert where is not None, said[0]
            page = httpx.get(where.group(1) + "/", timeout=10)
            children = children_of(demo.pid)
            demo.send_signal(signal.SIGTERM)
    out = "".join(said)
    assert demo.wait(timeout=60) == 0, out
    assert children and not any(Path(f"/proc/{child}").exists() for child in children), out
    assert page is not None and page.status_code == 200, out
    assert "<title>" in page.text and "SnapshotJob/lobby-audit" in page.text
    where = re.search(r"simulator on (http://127\.0\.0\.1:(\d+)) .*daemon on http://127\.0\.0\.1:(\d+),", out)
    assert where is not None, out
    sim, sim_port, daemon_port = where.group(1), int(where.group(2)), int(where.group(3))
    assert 0 not in (sim_port, daemon_port) and sim_port != 8750 and daemon_port != 8081
    shipped = f"{installed.bin.parent}/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages/"
    assert f"specs {shipped}reconciler/quickstart (the quickstart specs shipped with capctl)" in out
    assert f"`cp -r {shipped}reconciler/quickstart specs` to start from these" in out
    assert f"CAPCTL_VOLC_ENDPOINT={sim}/volc" in out
    assert "Apply complete: 5 created" in out and "1 re-issued" in out
    assert f"capctl run --resync 5s --listen 127.0.0.1:{daemon_port} " in out
    # The daemon got the simulator's callbacks on its port, and used the simulator's port for its calls.
    assert "callback: run ended; observing RecordingJob/class-rec/class-101" in out
    assert "SnapshotJob/lobby-audit/vip-1: started" in out
    # Its waits read as the plan writes a duration, not as the log line's float (`waits 3600.0 s`, walk 18h).
    assert "SnapshotJob/lobby-audit/lobby: waits 1h — dormant: no room activity" in out, out
    # It takes over what apply started: the specs the demo read were hashed with its state's key.
    assert "replace —" not in out
    assert "running again where people came back; the empty lobby waits, dormant" in out and "Done." in out
    # Kept running, it links its page; stopped, it no longer offers to keep it up.
    assert f"status page shows it too: http://127.0.0.1:{daemon_port}/" in out
    assert "`capctl demo --keep-running` to browse" not in out
    assert (tmp_path / ".capctl" / "demo.db").exists()
