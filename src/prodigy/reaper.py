"""Step process groups never outlive the coordinator, even when it is killed with SIGKILL.

Each step runs in a process group of its own (so a terminal's Ctrl-C reaches only prodigy,
which then gives agents a grace period). The price is that killing prodigy's group leaves the
agents running. A tiny reaper process in a session of its own holds the read end of a pipe;
prodigy writes `+PGID` / `-PGID` lines as groups start and end. When prodigy dies by any
means, the kernel closes the write end, and the reaper SIGKILLs every group still listed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

_REAPER_SCRIPT = """
import os, signal
os.write(1, b"ready")
groups, pending = set(), b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    pending += chunk
    *lines, pending = pending.split(b"\\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


class GroupReaper:
    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()  # not inherited by steps (PEP 446)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-S", "-c", _REAPER_SCRIPT],
                stdin=read_end,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",  # never pin the user's directory
            )
        finally:
            os.close(read_end)
        # Wait until it runs in its own session: from then on, killing prodigy's process
        # group cannot take the reaper with it.
        assert self._process.stdout is not None
        self._process.stdout.read(5)
        self._process.stdout.close()

    def _send(self, line: str) -> None:
        # The reaper is a safety net: if it is gone, the run itself goes on.
        with contextlib.suppress(OSError):
            os.write(self._write_end, line.encode())

    def watch(self, group: int) -> None:
        self._send(f"+{group}\n")

    def forget(self, group: int) -> None:
        self._send(f"-{group}\n")

    def close(self) -> None:
        os.close(self._write_end)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=10)


_current: GroupReaper | None = None


def watch_group(group: int) -> None:
    if _current is not None:
        _current.watch(group)


def forget_group(group: int) -> None:
    if _current is not None:
        _current.forget(group)


@contextlib.contextmanager
def reaping() -> Iterator[None]:
    """While active, every step's process group is killed if this process dies."""
    global _current
    if _current is not None:
        yield
        return
    _current = GroupReaper()
    try:
        yield
    finally:
        reaper, _current = _current, None
        reaper.close()


_process_lock = threading.Lock()


def keep_reaping() -> None:
    """A reaper for the rest of this process's life (a cluster worker's): started once, never
    closed, so step groups die with the process whichever thread started them."""
    global _current
    with _process_lock:
        if _current is None:
            _current = GroupReaper()
