"""A job directory read as it grows, strictly read-only: no lock taken, nothing written.

`JobWatch.refresh()` reads only what was appended since the last call: journal records are
folded into the state with the pure rules of `prodigy.state`, event lines into an
`AttemptLog`. A line still being written is read again next time. Whether a process runs the
job is asked of the kernel's lock table (`/proc/locks`), not by trying the lock, so a watcher
can never make `cook` or `resume` find the job busy.
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from prodigy.attempt_log import AttemptLog
from prodigy.errors import StateError
from prodigy.job import ItemsFile, StoredMetadata, read_stored_metadata
from prodigy.journal import decode_line, decode_lines
from prodigy.lock import UNKNOWN_HOLDER, LockHolder, parse_holder
from prodigy.state import JobState, Record, RolledBack, apply_record, replay
from prodigy.store import JobDir

PROC_LOCKS = Path("/proc/locks")
READ_CHUNK = 8 << 20


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Decoding 100,000 records makes a million small objects, none of them garbage; the
    cyclic collector would scan them again and again (0.9 s instead of 0.15 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class FileTail:
    """The complete lines appended to a file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.consumed = 0  # bytes of complete lines handed out so far

    def read(self) -> bytes:
        """New complete lines (each ending in a newline), or b"". A partial last line is left
        for the next call: its writer may still be finishing it, or truncate it away."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return b""
        try:
            size = os.fstat(fd).st_size
            if size < self.consumed:
                raise StateError(f"{self.path} shrank while being read.")
            chunks: list[bytes] = []
            position = self.consumed
            while position < size:
                chunk = os.pread(fd, min(size - position, READ_CHUNK), position)
                if not chunk:
                    break
                chunks.append(chunk)
                position += len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        end = data.rfind(b"\n")
        if end < 0:
            return b""
        self.consumed += end + 1
        return data[: end + 1]


def _lock_table_holds(path: Path) -> bool | None:
    """Whether the kernel lists a flock on `path`'s inode; None when it cannot be asked."""
    try:
        inode = os.stat(path).st_ino
        table = PROC_LOCKS.read_text()
    except FileNotFoundError:
        return False if not path.exists() else None
    except OSError:
        return None
    for line in table.splitlines():
        # `1: FLOCK  ADVISORY  WRITE 9300 fe:00:2252835 0 EOF`; a waiter's line has `->`.
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        # `major:minor:inode`; the device numbers are left out of the match because an
        # overlay filesystem reports other ones through stat() than the lock table shows.
        if fields[5].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def _holder_in_file(path: Path) -> LockHolder | None:
    """Who wrote themselves into the lock file (emptied on a clean release)."""
    try:
        return parse_holder(path.read_bytes())
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_holder(path: Path) -> LockHolder | None:
    """The process running the job, found without touching its lock; None if nobody is."""
    holder = _holder_in_file(path)
    held = _lock_table_holds(path)
    if held is None:
        # No lock table to ask (not Linux): trust a holder on this host whose process lives.
        held = (
            holder is not None and holder.host == socket.gethostname() and (_pid_alive(holder.pid))
        )
    if not held:
        return None
    return holder or UNKNOWN_HOLDER


class JobWatch:
    """What one job's directory says now; `refresh()` catches up with its files."""

    def __init__(self, job: JobDir) -> None:
        self.job = job
        self.meta: StoredMetadata | None = None
        self.state = JobState()
        self.item_ids: list[str] = []
        self.log = AttemptLog()
        self.holder: LockHolder | None = None
        self.problems: dict[str, str] = {}  # by source, so a cured problem disappears
        self._journal = FileTail(job.journal)
        self._events = FileTail(job.events)
        self._meta_stamp: tuple[int, int] | None = None
        self._journal_stuck = False

    def refresh(self) -> bool:
        """Read what changed; True when anything did."""
        changed = self._read_metadata()
        changed = self._read_journal() or changed
        changed = self._read_items() or changed
        events = self._events.read()
        if events:
            with _collector_paused():
                self.log.add_lines(events)
        holder = live_holder(self.job.lock)
        if holder != self.holder:
            self.holder = holder
            changed = True
        return changed or bool(events)

    def _read_metadata(self) -> bool:
        try:
            stat = self.job.metadata.stat()
        except OSError as exc:
            self.problems["metadata"] = f"{self.job.metadata} cannot be read ({exc.strerror})"
            return False
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._meta_stamp:
            return False
        self._meta_stamp = stamp
        try:
            self.meta = read_stored_metadata(self.job)
        except StateError as exc:
            self.problems["metadata"] = exc.message.rstrip(".")
            return True
        except OSError as exc:
            self.problems["metadata"] = f"{self.job.metadata} cannot be read ({exc.strerror})"
            return True
        self.problems.pop("metadata", None)
        return True

    def _read_journal(self) -> bool:
        if self._journal_stuck:
            return False
        try:
            data = self._journal.read()
        except StateError as exc:
            return self._journal_damaged(exc.message.rstrip("."))
        except OSError as exc:
            self.problems["journal"] = f"{self.job.journal} cannot be read ({exc.strerror})"
            return False
        if not data:
            if self._journal.consumed == 0 and not self.job.journal.exists():
                self.problems["journal"] = (
                    f"the journal {self.job.journal} is missing, so the counts are unknown"
                )
            return False
        self.problems.pop("journal", None)
        try:
            with _collector_paused():
                records = decode_lines(data)
        except msgspec.DecodeError:
            records = self._decode_until_damage(data)
        if any(isinstance(r, RolledBack) for r in records):
            # A rollback restores an earlier version: that needs every record before it.
            self._replay_all()
            return True
        with _collector_paused():
            for record in records:
                apply_record(self.state, record)
        return True

    def _decode_until_damage(self, data: bytes) -> list[Record]:
        """Records up to a damaged line. A damaged *last* line may be a write in progress (the
        writer truncates it before appending again): it is read again later, not reported."""
        records: list[Record] = []
        lines = data.split(b"\n")[:-1]
        offset = self._journal.consumed - len(data)
        for number, line in enumerate(lines):
            try:
                records.append(decode_line(line))
            except msgspec.DecodeError as exc:
                self._journal.consumed = offset
                if number < len(lines) - 1:
                    self._journal_damaged(
                        f"the journal {self.job.journal} is damaged at byte {offset} ({exc})"
                    )
                break
            offset += len(line) + 1
        return records

    def _journal_damaged(self, problem: str) -> bool:
        self.problems["journal"] = problem + "; the counts shown stop before that point"
        self._journal_stuck = True
        return True

    def _replay_all(self) -> None:
        self._journal.consumed = 0
        data = self._journal.read()
        with _collector_paused():
            try:
                records = decode_lines(data)
            except msgspec.DecodeError:
                records = self._decode_until_damage(data)
            self.state = replay(records)

    def _read_items(self) -> bool:
        if self.item_ids or self.state.item_count is None:
            return False
        try:
            items = ItemsFile(self.job.items)
        except (StateError, OSError) as exc:
            self.problems["items"] = str(exc).rstrip(".")
            return False
        self.item_ids = list(items.ids)
        items.close()
        self.problems.pop("items", None)
        return True

    def item_id(self, index: int) -> str:
        return self.item_ids[index] if index < len(self.item_ids) else f"#{index}"
