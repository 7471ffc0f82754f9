"""Hostile spec paths and oversized sets (issue 14, point 5): only regular files are read, never more than
the limit plus one byte, and a whole set is capped in bytes, documents and tasks, with an error naming where."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from reconciler.spec import SpecErrors, load_spec_set
from reconciler.spec.files import FileRefused, read_regular
from reconciler.spec.loader import DEFAULT_LIMITS, SpecLimits
from tests.spec.conftest import BASE, SECRET_ENV, job


def _messages(*paths: Path, limits: SpecLimits = DEFAULT_LIMITS) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        load_spec_set(list(paths), env=SECRET_ENV, limits=limits)
    return [str(e) for e in info.value.errors]


def _jobs(n: int, rooms: int, start: int = 0) -> str:
    """`n` SnapshotJobs of `rooms` rooms each (names and rooms unique per `start`)."""
    return "---\n".join(
        job(
            name=f"j{start}-{i}",
            body=f"provider: volc\nrooms: [{', '.join(f'r{start}-{i}-{k}' for k in range(rooms))}]\n"
            "interval: 5s\nstorage: tos",
        )
        for i in range(n)
    )


def test_a_symlink_to_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    assert _messages(BASE, tmp_path) == [f"{tmp_path / 'zero.yaml'}: not a regular file (a character device)"]


def test_a_fifo_is_refused_and_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "x.yaml"
    os.mkfifo(fifo)
    outcome: list[list[str]] = []
    loader = threading.Thread(target=lambda: outcome.append(_messages(BASE, tmp_path)), daemon=True)
    loader.start()
    loader.join(timeout=30)
    if loader.is_alive():  # unblock the reader so the test run can end, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO named *.yaml blocked the loader")
    assert outcome == [[f"{fifo}: not a regular file (a FIFO)"]]


def test_a_fifo_swapped_in_after_the_check_does_not_block(tmp_path: Path) -> None:
    """The open is non-blocking and fstat re-checks: a FIFO that replaces a file between stat and open
    (simulated by opening the FIFO with the check passed) is refused, not waited on."""
    fifo = tmp_path / "x.yaml"
    os.mkfifo(fifo)
    real_stat = os.stat
    regular = real_stat(BASE)

    def stat_says_regular(path: object, *args: object, **kwargs: object) -> os.stat_result:
        return regular if str(path) == str(fifo) else real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "stat", stat_says_regular)
        with pytest.raises(FileRefused, match=r"^not a regular file \(a FIFO\)$"):
            read_regular(fifo, 1024)


def test_a_directory_named_like_a_spec_file_is_walked_not_read(tmp_path: Path) -> None:
    inner = tmp_path / "x.yaml"
    inner.mkdir()
    (inner / "jobs.yaml").write_text(_jobs(1, 2))
    assert len(load_spec_set([BASE, tmp_path], env=SECRET_ENV).tasks) == 2


def test_a_named_fifo_or_device_says_what_it_is(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "given.yaml")
    assert _messages(tmp_path / "given.yaml") == [f"{tmp_path / 'given.yaml'}: not a regular file (a FIFO)"]
    assert _messages(Path("/dev/zero")) == ["/dev/zero: not a regular file (a character device)"]


def test_an_unreadable_file_is_named() -> None:
    """As root a mode-000 file is readable, so the load runs in a child that drops to `nobody`."""
    top = Path(tempfile.mkdtemp())
    try:
        top.chmod(0o755)
        secret = top / "jobs.yaml"
        secret.write_text(_jobs(1, 1))
        secret.chmod(0)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                found = "\n".join(_messages(secret))
            except BaseException as exc:
                found = f"child failed: {exc!r}"
            os.write(write, found.encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            found = pipe.read().decode()
        os.waitpid(pid, 0)
    finally:
        shutil.rmtree(top)
    assert found == f"{secret}: cannot read: Permission denied"


def test_read_stops_at_the_limit_plus_one_byte(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 1001)
    assert read_regular(big, 1001) == b"#" * 1001
    with pytest.raises(FileRefused, match=r"^larger than the 1000 bytes limit$"):
        read_regular(big, 1000)


def test_a_file_over_the_limit_is_named(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_text(_jobs(3, 2))
    assert _messages(tmp_path, limits=SpecLimits(file_bytes=64)) == [
        f"{tmp_path / 'jobs.yaml'}: larger than the 64 bytes limit for one spec file (split it into several files)"
    ]


def test_the_whole_set_is_capped_in_bytes(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"j{i}.yaml").write_text(_jobs(1, 1, start=i))
    size = BASE.stat().st_size + sum(p.stat().st_size for p in tmp_path.iterdir())
    assert load_spec_set([BASE, tmp_path], env=SECRET_ENV, limits=SpecLimits(total_bytes=size)).tasks
    found = _messages(BASE, tmp_path, limits=SpecLimits(total_bytes=size - 1))
    assert found[-1] == (
        f"{tmp_path / 'j2.yaml'}: the spec set is larger than the {size - 1} bytes limit "
        "(reached here; see docs/spec-language.md, Limits)"
    )


def test_the_documents_are_capped(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_text(_jobs(5, 1))
    documents = load_spec_set([BASE, tmp_path], env=SECRET_ENV).documents
    found = _messages(BASE, tmp_path, limits=SpecLimits(documents=documents - 1))
    assert found == [
        f"{tmp_path / 'jobs.yaml'}:37:1: the spec set has more than the limit of {documents - 1} documents "
        "(reached here; see docs/spec-language.md, Limits)"
    ]


def test_the_tasks_are_capped_before_they_are_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jobs.yaml").write_text(_jobs(4, 3))
    assert len(load_spec_set([BASE, tmp_path], env=SECRET_ENV, limits=SpecLimits(tasks=12)).tasks) == 12

    def validate(*_: object) -> None:
        raise AssertionError("a document past the task cap was validated")

    monkeypatch.setattr("reconciler.spec.loader.validate_document", validate)
    monkeypatch.setattr("reconciler.spec.loader.expand", validate)
    found = _messages(tmp_path, limits=SpecLimits(tasks=2))
    assert found == [
        f"{tmp_path / 'jobs.yaml'}:1:1: the spec set makes more than the limit of 2 tasks "
        "(reached here; see docs/spec-language.md, Limits)"
    ]


def test_a_number_of_thousands_of_digits_is_an_error_naming_it_not_a_traceback(tmp_path: Path) -> None:
    """Python converts at most 4,300 decimal digits and a hex literal has no limit: `interval: 0x` + 5,000 digits
    parsed, and the message that printed it in decimal was a traceback; 5,000 digits in a reference (a Storage's
    region) were one, and in a duration gave Python's advice for programmers. At most 100 digits, as JSON's."""
    digits = "9" * 5000
    storage = (
        "apiVersion: capctl/v1\nkind: Storage\nmetadata: {name: tos9}\n"
        "spec: {type: tos, bucket: b, accountId: '1', region: {env: LONG}}\n"
    )
    cases = {
        f"interval: 0x{digits}": "… (5002 characters) is a number of more than 100 digits",
        f"interval: 5\nidleTimeout: {digits}s": "spec.idleTimeout: a number of 5000 digits (at most 100)",
        "interval: {env: LONG}": "spec.interval: a number of 5000 digits (at most 100)",
    }
    for body, expected in cases.items():
        path = tmp_path / "job.yaml"
        path.write_text(job(body=f"provider: volc\nrooms: [lobby]\nstorage: tos\n{body}"))
        with pytest.raises(SpecErrors) as info:
            load_spec_set([BASE, path], env={**SECRET_ENV, "LONG": digits})
        said = [str(e) for e in info.value.errors]
        assert len(said) == 1 and expected in said[0] and len(said[0]) < 300, said
    path = tmp_path / "job.yaml"
    path.write_text(storage + "---\n" + job(body="provider: volc\nrooms: [lobby]\nstorage: tos9"))
    with pytest.raises(SpecErrors) as info:
        load_spec_set([BASE, path], env={**SECRET_ENV, "LONG": digits})
    (region,) = (str(e) for e in info.value.errors)
    assert "volcengine needs an integer storage region (its region table), got '9999" in region and len(region) < 600
