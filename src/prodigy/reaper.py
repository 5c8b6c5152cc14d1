"""Step process groups never outlive the coordinator, even when it is killed with SIGKILL.

Each step runs in a process group of its own (so a terminal's Ctrl-C reaches only prodigy,
which then gives agents a grace period). The price is that killing prodigy's group leaves the
agents running. A tiny reaper process in a session of its own holds the read end of a pipe and
shares a small file with prodigy (a memfd on Linux), a table of 4-byte slots: prodigy writes a
group's id into a free slot when the group starts and zeroes the slot when it ends, a store
into the table mapped in memory (no system call; `pwrite` where it cannot be mapped) that wakes
nobody. When prodigy dies by any means, the kernel closes the write
end of the pipe; the reaper wakes, reads the table and SIGKILLs every group still listed.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

_SLOT = struct.Struct("=i")
_MAPPED_SLOTS = 4096  # groups running at once before the table is mapped again, bigger

_REAPER_SCRIPT = """
import os, signal, struct, sys
table = int(sys.argv[1])
while os.read(0, 65536):
    pass
data = os.pread(table, os.fstat(table).st_size, 0)
for (group,) in struct.iter_unpack("=i", data[: len(data) // 4 * 4]):
    if group > 0:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
"""


def _table_file() -> int:
    """An anonymous file for the table of groups: in memory where the system allows it."""
    if hasattr(os, "memfd_create"):
        with contextlib.suppress(OSError):
            return os.memfd_create("prodigy-reaper", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as handle:
        return os.dup(handle.fileno())


class GroupReaper:
    def __init__(self) -> None:
        self._table = _table_file()  # not inherited by steps (PEP 446)
        self._slots: dict[int, int] = {}  # group -> its slot in the table
        self._free: list[int] = []
        self._lock = threading.Lock()  # a cluster worker starts steps from many threads
        self._map: mmap.mmap | None = None
        self._map_table(_MAPPED_SLOTS)
        read_end, self._write_end = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-S", "-c", _REAPER_SCRIPT, str(self._table)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(self._table,),
                cwd="/",  # never pin the user's directory
            )
        finally:
            os.close(read_end)
        # Popen returns once the child has exec'd, and start_new_session calls setsid before
        # that: killing prodigy's process group can no longer take the reaper with it. If prodigy
        # dies before the reaper's interpreter is up, the reaper reads end of file at once.

    def watch(self, group: int) -> None:
        with self._lock:
            slot = self._free.pop() if self._free else len(self._slots)
            self._slots[group] = slot
            self._put(slot, group)

    def forget(self, group: int) -> None:
        with self._lock:
            slot = self._slots.pop(group, None)
            if slot is not None:
                self._put(slot, 0)
                self._free.append(slot)

    def _map_table(self, slots: int) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        with contextlib.suppress(OSError, ValueError):
            os.ftruncate(self._table, slots * _SLOT.size)
            self._map = mmap.mmap(self._table, slots * _SLOT.size)

    def _put(self, slot: int, group: int) -> None:
        # The reaper is a safety net: if the table cannot be written, the run itself goes on.
        offset = slot * _SLOT.size
        if self._map is not None and offset >= len(self._map):
            self._map_table(2 * (slot + 1))
        if self._map is not None:
            _SLOT.pack_into(self._map, offset, group)
            return
        with contextlib.suppress(OSError):
            os.pwrite(self._table, _SLOT.pack(group), offset)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        os.close(self._write_end)
        os.close(self._table)
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
