"""The container image, built from the Dockerfile and run by a real container engine (podman, from Debian's
packages; ./dev test installs it with runc and debootstrap).

The suite's machines reach no container registry, so the base is `deploy/image/local-base.sh`: Debian bookworm's
own Python 3.11 from debootstrap, imported into podman (its root file system is cached under .cache/image). The
Dockerfile is built unchanged on it with `--build-arg PYTHON_IMAGE=...`; pip inside the build reaches the package
index through the host network, trusting the host's CA bundle (mounted for the build only, never in the image).
Then the image runs as users run it: read-only root, its own non-root user, `capctl` as the entrypoint, specs
mounted at /specs, and the daemon reconciling against a `capctl sim` on the host's loopback.

This machine's engine needs two settings that a test-owned containers.conf gives it: runc (crun refuses the
hybrid cgroup hierarchy), and open-file and process limits no higher than the host's (raising them needs a
capability the sandbox does not grant).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from reconciler import __version__
from tests.deploy.daemon_facts import ROOT
from tests.e2e.conftest import CANARY_SK, Workdir
from tests.servers import daemon_output
from tests.specdocs import snapshot_job

PODMAN = shutil.which("podman")
pytestmark = [
    pytest.mark.skipif(PODMAN is None or os.geteuid() != 0, reason="needs podman as root (./dev test installs it)"),
    # The first test waits for the build: the base (up to 900 s) and the image (up to 900 s) have their own limits,
    # which the suite's 300 s per test would cut short on a fresh machine under load (debootstrap, pip downloads).
    pytest.mark.timeout(1900),
]

BASE = "localhost/capctl-base:bookworm"
IMAGE = "localhost/capctl:suite"
CACHE = ROOT / ".cache" / "image"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
"""
# pip in the build stage verifies the index with the host's CA bundle (which holds any proxy's CA).
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PIP_CONF = "[global]\ncert = /run/capctl-build/ca.crt\n"
# The daemon on a free port of the host's loopback (host network), sweeping every second.
DAEMON_ARGS = ("run", "/specs", "--listen", "127.0.0.1:0", "--resync", "1s")


def podman(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert PODMAN is not None
    return subprocess.run([PODMAN, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for podman commands: this machine's settings in a containers.conf of the test's own."""
    conf = tmp_path_factory.mktemp("podman")
    (conf / "containers.conf").write_text(CONTAINERS_CONF)
    (conf / "pip.conf").write_text(PIP_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf / "containers.conf")}


@pytest.fixture(scope="module")
def image(engine: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Dockerfile built on the local base, once per run: the first worker builds, the others wait and reuse."""
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = Path(engine["CONTAINERS_CONF"]).parent
    # This run's temporary root: under xdist, the parent of the workers' own (each run gets a new one).
    run_temp = tmp_path_factory.getbasetemp()
    built_marker = (run_temp.parent if "PYTEST_XDIST_WORKER" in os.environ else run_temp) / "capctl-image-built"
    with (CACHE / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if built_marker.exists():
            return IMAGE
        base = subprocess.run(
            [str(ROOT / "deploy/image/local-base.sh"), BASE], env=engine, capture_output=True, text=True, timeout=900
        )
        assert base.returncode == 0, base.stderr
        # Earlier runs' superseded images: gone after a day, so recent runs keep their build cache.
        podman(engine, "image", "prune", "--force", "--filter=until=24h")
        built = podman(
            engine,
            "build",
            "--network=host",
            f"--volume={HOST_CA}:/run/capctl-build/ca.crt:ro",
            f"--volume={conf / 'pip.conf'}:/etc/pip.conf:ro",
            f"--build-arg=PYTHON_IMAGE={BASE}",
            f"--tag={IMAGE}",
            str(ROOT),
            timeout=900,
        )
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
        built_marker.touch()
    return IMAGE


def run(engine: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`podman run --rm --read-only ...`: every run here has a read-only root file system."""
    return podman(engine, "run", "--rm", "--read-only", *args)


def test_the_image_runs_capctl_as_a_non_root_user_on_a_read_only_root(engine: dict[str, str], image: str) -> None:
    version = run(engine, image, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"capctl {__version__}"
    who = run(engine, "--entrypoint=id", image)
    assert who.returncode == 0, who.stderr
    assert who.stdout.split()[:2] == ["uid=10001(capctl)", "gid=10001(capctl)"]
    # Only the virtualenv came from the build stage: no sources, no pip cache, no compiler in the image.
    listing = run(engine, "--entrypoint=sh", image, "-c", "ls /src ~/.cache/pip; command -v gcc cc; true")
    assert listing.stdout == "", listing.stdout


def test_the_deployments_pre_stop_command_runs_in_the_image(engine: dict[str, str], image: str) -> None:
    """The kubelet runs deploy/'s preStop command inside this image: a command it lacks would fail the hook
    (an event on every rollout) and skip the pause."""
    deployment = yaml.safe_load((ROOT / "deploy/base/deployment.yaml").read_text())
    capctl = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "capctl")
    program, *_ = capctl["lifecycle"]["preStop"]["exec"]["command"]
    hook = run(engine, f"--entrypoint={program}", image, "0")
    assert hook.returncode == 0, hook.stderr


def test_the_image_validates_mounted_specs(engine: dict[str, str], image: str, tmp_path: Path) -> None:
    examples = f"--volume={ROOT / 'examples/specs'}:/specs:ro"
    # The examples' app ids are plain references (not secrets), so validate reads them from the environment.
    good = run(engine, examples, "--env=VOLC_APP_ID=app", "--env=ZEGO_APP_ID=1234567890", image, "validate", "/specs")
    assert good.returncode == 0, good.stdout + good.stderr
    specs = tmp_path / "specs"  # readable by the image's user (tmp_path itself is root's only)
    specs.mkdir(mode=0o755)
    (specs / "jobs.yaml").write_text("apiVersion: capctl/v1\nkind: SnapshotJob\nmetadata: {name: x}\nspec: 3\n")
    bad = run(engine, f"--volume={specs}:/specs:ro", image, "validate", "/specs")
    assert bad.returncode == 1
    assert "/specs/jobs.yaml:4:" in bad.stdout + bad.stderr


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """The daemon's SQLite state directory (/var/lib/capctl in the image), writable by the image's user only."""
    path = tmp_path / "state"
    path.mkdir()
    os.chown(path, 10001, 10001)
    return path


def test_the_image_runs_the_daemon_against_the_simulator(
    engine: dict[str, str], image: str, work: Workdir, state_dir: Path
) -> None:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"], idle="20s"))
    assert PODMAN is not None
    container = ["--network=host", f"--volume={work.specs}:/specs:ro", f"--volume={state_dir}:/var/lib/capctl"]
    daemon = subprocess.Popen(
        [PODMAN, "run", "--rm", "--read-only", *container, f"--env=S3_SK={CANARY_SK}", image, *DAEMON_ARGS],
        env=engine,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    log = daemon_output(daemon)
    try:
        http = httpx.Client(base_url=log.url(timeout=60), timeout=5)
        deadline = time.monotonic() + 30
        while http.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert http.get("/healthz").status_code == 200
        while not work.sim.tasks("volcengine", state="running") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(work.sim.tasks("volcengine", state="running")) == 1
        work.sim.advance(21)  # the empty room's task idles out at the vendor; the daemon's 1 s sweep re-issues it
        while len(work.sim.requests("StartSnapshot")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(work.sim.tasks("volcengine", state="running")) == 1
        assert "capctl_" in http.get("/metrics").text
    finally:
        daemon.send_signal(signal.SIGTERM)  # podman passes it on to capctl, which stops cleanly
        daemon.wait(timeout=60)
    stderr = log.text()
    assert daemon.returncode == 0, stderr
    assert '"action": "reissue"' in stderr
    assert CANARY_SK not in stderr
    # The state the container wrote, read by the host's capctl: the task, re-issued once.
    work.env["CAPCTL_STATE"] = f"sqlite:///{state_dir / 'state.db'}"
    listed = work.capctl("state", "list").stdout
    assert "SnapshotJob/audit/lobby" in listed and "running" in listed, listed


def test_the_image_keeps_its_state_on_a_volume_as_the_pod_mounts_it(engine: dict[str, str], image: str) -> None:
    """The single-replica overlay's state volume as the kubelet lays it out for the pod's `fsGroup`: a directory
    root owns, of that group, setgid and group-writable, the process in that group; then, at the next pod's
    mount, every file made group-writable. The state's hardening (waves 35-40) must still accept it all; and a
    directory the pod's user cannot write (a volume type that ignores fsGroup) is named (walk 41D-1)."""
    pod = yaml.safe_load((ROOT / "deploy/base/deployment.yaml").read_text())["spec"]["template"]["spec"]
    ids, group = pod["securityContext"], pod["securityContext"]["fsGroup"]
    user = [f"--user={ids['runAsUser']}:{ids['runAsGroup']}", f"--group-add={group}", "--tmpfs=/tmp"]
    with tempfile.TemporaryDirectory(prefix="capctl-41d-") as temp:  # (not tmp_path: root's 0700 parents)
        volume = Path(temp) / "volume"
        volume.mkdir()
        os.chown(volume, 0, group)
        volume.chmod(0o2775)
        mounted = f"--volume={volume}:/var/lib/capctl"
        made = run(engine, *user, mounted, image, "state", "init")
        assert made.returncode == 0, made.stderr
        for path in volume.iterdir():  # the next mount: the kubelet's recursive pass for fsGroup
            os.chown(path, -1, group)
            path.chmod(path.stat().st_mode | 0o660)
        listed = run(engine, *user, mounted, image, "state", "list")
        assert listed.returncode == 0 and "0 tasks" in listed.stdout, listed.stderr
        volume.chmod(0o755)
        os.chown(volume, 0, 0)
        (volume / "state.db").unlink()
        refused = run(engine, *user, mounted, image, "state", "init")
        assert refused.returncode == 1
        assert f"running as uid {ids['runAsUser']} " in refused.stderr
        assert "cannot write the directory /var/lib/capctl (owner uid 0, group 0, mode 0755)" in refused.stderr
