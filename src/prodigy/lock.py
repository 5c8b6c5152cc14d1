"""The per-job lock: one process runs (or repairs) a job at a time.

`fcntl.flock` is released by the kernel when its holder dies, so a stale lock never blocks;
the file also records who holds it, for the refusal message and the take-over notice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from prodigy.display import one_line
from prodigy.errors import JobLocked


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started: str
    purpose: str

    def describe(self) -> str:
        if self.pid == 0:
            return "another process (its lock file does not say which)"
        return f"PID {self.pid} on host {self.host} ({self.purpose}, since {self.started})"


# A live holder whose lock file names nobody readable (garbage in it, or written just now).
UNKNOWN_HOLDER = LockHolder(0, "?", "?", "run")


def parse_holder(data: bytes) -> LockHolder | None:
    """The holder a lock file names; None when it is empty (released cleanly) or holds
    anything else (garbage, another program's text): flock is the lock, these bytes only the
    name for a message, so damage here never decides anything."""
    try:
        raw = json.loads(data.decode("utf-8") or "null")
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(raw, dict):
        return None
    try:
        pid = int(raw["pid"])
        holder = LockHolder(
            pid,
            one_line(str(raw["host"]), 100),
            one_line(str(raw["started"]), 40),
            one_line(str(raw.get("purpose", "run")), 40),
        )
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    # A PID no process can have: the file was not written by prodigy.
    return holder if 0 < pid < 2**31 else None


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _read_holder(path: Path) -> LockHolder | None:
    return parse_holder(_read_file(path))


class JobLock:
    """Exclusive, non-blocking lock on a job directory's `lock` file."""

    def __init__(self, path: Path, job_id: str, purpose: str = "run") -> None:
        self.path = path
        self.job_id = job_id
        self.purpose = purpose
        self._fd: int | None = None
        self.taken_over: LockHolder | None = None
        self.unreadable_holder = False  # the file held bytes that name no holder

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(self.path)
            who = (holder or UNKNOWN_HOLDER).describe()
            raise JobLocked(
                f"Job {self.job_id} is already being worked on by {who}.",
                hint="Wait for it to finish, or stop that process; its state is safe either way.",
            ) from None
        # Holder details left behind mean the previous holder died without releasing.
        left = _read_file(self.path)
        self.taken_over = parse_holder(left)
        self.unreadable_holder = bool(left.strip()) and self.taken_over is None
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "purpose": self.purpose,
        }
        # The flock is the lock; the details only name its holder in messages, so a full or
        # failed disk does not stop the command here (its own writes then say what broke).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd

    def take_over_notice(self) -> str | None:
        """What to tell the user about the holder this lock replaced, if anything."""
        if self.taken_over is not None:
            return (
                f"Taking over the lock of job {self.job_id} left by "
                f"{self.taken_over.describe()}, which is no longer running."
            )
        if self.unreadable_holder:
            return (
                f"The lock file {self.path} of job {self.job_id} held unreadable holder "
                "details (not written by prodigy); nobody held the lock, so it is taken and "
                "the file rewritten."
            )
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        # Emptied, so the next holder takes nothing over; on a file system that failed (full,
        # read-only) the details stay, and the next holder says it took over from this one.
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
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
            return _read_holder(path) or UNKNOWN_HOLDER
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
