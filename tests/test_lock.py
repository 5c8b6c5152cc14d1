"""The per-job lock: one holder at a time, a clear refusal, take-over after a dead holder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from prodigy.errors import JobLocked
from prodigy.lock import JobLock, is_locked, parse_holder


def test_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with JobLock(path, "job-1", "cook"):
        with pytest.raises(JobLocked) as refused:
            JobLock(path, "job-1", "resume").acquire()
        assert f"PID {os.getpid()}" in refused.value.message
        assert socket.gethostname() in refused.value.message
        assert "cook" in refused.value.message
        holder = is_locked(path)
        assert holder is not None and holder.pid == os.getpid()
    assert is_locked(path) is None
    # Released cleanly: the next holder takes nothing over.
    lock = JobLock(path, "job-1")
    lock.acquire()
    assert lock.taken_over is None
    lock.release()


def test_lock_of_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    code = (
        "import os, sys; from pathlib import Path; from prodigy.lock import JobLock; "
        f"JobLock(Path({str(path)!r}), 'job-1', 'cook').acquire(); "
        "os.kill(os.getpid(), 9)"
    )
    dead = subprocess.run([sys.executable, "-c", code], check=False)
    assert dead.returncode == -9
    assert is_locked(path) is None, "the kernel drops a dead holder's flock"
    lock = JobLock(path, "job-1")
    lock.acquire()
    try:
        assert lock.taken_over is not None and lock.taken_over.pid != os.getpid()
        assert lock.taken_over.purpose == "cook"
    finally:
        lock.release()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\xff garbage",
        b"[1, 2]",
        b'{"pid": "x", "host": "h", "started": "s"}',
        b'{"pid": 1e400, "host": "h", "started": "s"}',
        b'{"pid": -4, "host": "h", "started": "s"}',
        b'{"pid": 0, "host": "h", "started": "s"}',
        b'{"host": "h", "started": "s"}',
    ],
)
def test_lock_files_that_name_no_holder_read_as_none(data: bytes) -> None:
    assert parse_holder(data) is None


def test_a_holder_is_read_back_on_one_line() -> None:
    holder = parse_holder(b'{"pid": 42, "host": "a\\nb", "started": "t", "purpose": "cook"}')
    assert holder is not None and holder.pid == 42 and holder.host == "a b"
    assert "\n" not in holder.describe()


def test_garbage_left_in_a_free_lock_is_taken_over_with_a_notice(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_bytes(b"\x00\xff garbage")
    lock = JobLock(path, "job-1")
    lock.acquire()
    try:
        assert lock.taken_over is None and lock.unreadable_holder
        notice = lock.take_over_notice()
        assert notice is not None and str(path) in notice and "unreadable" in notice
        assert parse_holder(path.read_bytes()) is not None, "the file names its new holder"
    finally:
        lock.release()
    assert path.read_bytes() == b""


def test_a_live_holder_that_wrote_garbage_is_refused_without_naming_anyone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lock"
    with JobLock(path, "job-1"):
        path.write_bytes(b"garbage")
        with pytest.raises(JobLocked) as refused:
            JobLock(path, "job-1").acquire()
    assert "another process (its lock file does not say which)" in refused.value.message
