"""The per-job lock: one holder at a time, a clear refusal, take-over after a dead holder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from prodigy.errors import JobLocked
from prodigy.lock import JobLock, is_locked


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
