"""The per-job lock: one process runs (or repairs) a job at a time.

`fcntl.flock` is released by the kernel when its holder dies, so a stale lock never blocks;
the file also records who holds it, for the refusal message and the take-over notice.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from prodigy.errors import JobLocked


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started: str
    purpose: str

    def describe(self) -> str:
        return f"PID {self.pid} on host {self.host} ({self.purpose}, since {self.started})"


def _read_holder(path: Path) -> LockHolder | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return LockHolder(
            int(raw["pid"]), str(raw["host"]), str(raw["started"]), str(raw.get("purpose", "run"))
        )
    except (KeyError, TypeError, ValueError):
        return None


class JobLock:
    """Exclusive, non-blocking lock on a job directory's `lock` file."""

    def __init__(self, path: Path, job_id: str, purpose: str = "run") -> None:
        self.path = path
        self.job_id = job_id
        self.purpose = purpose
        self._fd: int | None = None
        self.taken_over: LockHolder | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(self.path)
            who = holder.describe() if holder else "another process"
            raise JobLocked(
                f"Job {self.job_id} is already being worked on by {who}.",
                hint="Wait for it to finish, or stop that process; its state is safe either way.",
            ) from None
        # Holder details left behind mean the previous holder died without releasing.
        self.taken_over = _read_holder(self.path)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "purpose": self.purpose,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def is_locked(path: Path) -> LockHolder | None:
    """The live holder of the lock at `path`, or None when nobody holds it."""
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path) or LockHolder(0, "?", "?", "run")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
