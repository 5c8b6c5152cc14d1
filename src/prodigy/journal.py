"""The journal: the durable, append-only record of every state transition of a job.

One JSON line per record. An item counts as done only once its record is on disk (fdatasync).
Appends from many agents are group-committed by one flusher task, so the cost per completion
stays O(1) whatever the job size. A crash can only tear the last line, which replay ignores.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import re
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec

from prodigy import test_pause
from prodigy.errors import StateError
from prodigy.state import Attempt, AttemptEnded, JobState, Record, fold
from prodigy.store import fsync_dir

_encoder = msgspec.json.Encoder()


class Succeeded(msgspec.Struct, frozen=True, tag="succeeded", omit_defaults=True):
    """How the journal spells the common record, an attempt that succeeded with nothing to
    say but its timing and output: an `AttemptEnded` in a third of the bytes."""

    index: int
    attempt: int
    started_at: str
    duration_s: float
    output: str = ""

    def expanded(self) -> AttemptEnded:
        return AttemptEnded(self.index, "succeeded", self._attempt())

    def _attempt(self) -> Attempt:
        return Attempt(
            self.attempt, True, self.started_at, self.duration_s, exit_code=0, output=self.output
        )


_decoder: msgspec.json.Decoder[Record | Succeeded] = msgspec.json.Decoder(Record | Succeeded)


def _short_form(record: Record) -> Record | Succeeded:
    if not isinstance(record, AttemptEnded) or record.outcome != "succeeded":
        return record
    r = record.result
    short = Succeeded(record.index, r.attempt, r.started_at, r.duration_s, r.output)
    return short if short._attempt() == r else record


def _decode(body: bytes) -> Record:
    record = _decoder.decode(body)
    return record.expanded() if isinstance(record, Succeeded) else record


def decode_lines(data: bytes) -> list[Record]:
    """Whole journal lines decoded at once (for readers that follow the file: checksums are
    not checked); msgspec.DecodeError if one does not decode."""
    return [r.expanded() if isinstance(r, Succeeded) else r for r in _decoder.decode_lines(data)]


def decode_line(line: bytes) -> Record:
    """One journal line (its checksum not checked); msgspec.DecodeError if it does not decode."""
    return _decode(line)


# Each line ends with its own checksum, `..."crc":"1a2b3c4d"}`: damage before the last line is
# told from a torn tail, even when the damaged line still parses. Readers that do not know
# about it (jq, tests) see one more field.
_CRC = re.compile(rb',"crc":"([0-9a-f]{8})"}$')


def encode_record(record: Record) -> bytes:
    body = _encoder.encode(_short_form(record))
    return body[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(body)


def _checked(line: bytes) -> bytes | None:
    """The record's own JSON if the line's checksum holds (or it has none), else None."""
    found = _CRC.search(line)
    if found is None:
        return line  # written before records carried checksums
    body = line[: found.start()] + b"}"
    return body if zlib.crc32(body) == int(found.group(1), 16) else None


@dataclass(frozen=True)
class JournalContents:
    records: list[Record]
    valid_bytes: int  # length of the intact prefix; anything after it is a torn last line
    torn_tail: bool


class JournalScan:
    """The journal's records as a stream, from byte `start` (a record boundary), never all in
    memory at once. Once iterated: `valid_bytes` is where the intact records end, and
    `torn_tail` says whether something unacknowledged follows (a crash mid-append)."""

    def __init__(self, path: Path, start: int = 0) -> None:
        self.path = path
        self.start = start
        self.valid_bytes = start
        self.torn_tail = False
        self.record_start = start

    def __iter__(self) -> Iterator[Record]:
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            raise StateError(
                f"The journal {self.path} is missing, so its state cannot be rebuilt."
            ) from None
        with file:
            file.seek(self.start)
            yield from self._records(file)

    def entries(self) -> Iterator[tuple[int, Record]]:
        """Each record with the byte offset its line starts at."""
        for record in self:
            yield self.record_start, record

    def _records(self, file: BinaryIO) -> Iterator[Record]:
        offset = self.start
        damaged: tuple[int, Exception] | None = None
        for number, line in enumerate(file, start=1):
            if damaged is not None:
                # A bad line with more after it is damage, not a crash mid-append.
                where = f"line {damaged[0]}" + (f" after byte {self.start}" if self.start else "")
                raise StateError(
                    f"The journal {self.path} is damaged at {where} ({damaged[1]}); "
                    "the state after that point cannot be trusted."
                )
            if not line.endswith(b"\n"):
                self.torn_tail = True  # bytes after the final newline were never acknowledged
                return
            try:
                body = _checked(line[:-1])
                if body is None:
                    raise msgspec.DecodeError("its checksum does not match its content")
                record = _decode(body)
            except msgspec.DecodeError as exc:
                damaged = (number, exc)
                continue
            self.record_start = offset
            offset += len(line)
            self.valid_bytes = offset
            yield record
        # A final line that was written whole but garbled is treated as torn as well.
        self.torn_tail = damaged is not None


def read_record_at(fd: int, offset: int) -> Record:
    """The record whose line starts at `offset` (from `JournalScan.entries`)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.pread(fd, 4096 if not line else len(line) * 2, offset + len(line))
        if not chunk:
            break
        end = chunk.find(b"\n")
        line += chunk if end < 0 else chunk[: end + 1]
    body = _checked(line.rstrip(b"\n"))
    if body is None:
        raise StateError(f"The journal record at byte {offset} is damaged (its checksum fails).")
    return _decode(body)


def read_journal(path: Path) -> JournalContents:
    """Parse the whole journal; a torn final line (a crash mid-append) is reported, not fatal."""
    scan = JournalScan(path)
    records = list(scan)
    return JournalContents(records, scan.valid_bytes, scan.torn_tail)


def replay_journal(path: Path, upto_version: int | None = None, compact: bool = False) -> JobState:
    """The state the journal records (at `upto_version`), read as a stream; a rollback reads
    its prefix again. `journal_bytes` says how much of the file the state holds."""
    scan = JournalScan(path)
    read_all = False

    def records() -> Iterator[Record]:
        nonlocal read_all
        yield from scan
        read_all = True

    def prefix(count: int) -> Iterator[Record]:
        return itertools.islice(JournalScan(path), count)

    state = fold(records(), prefix, upto_version, compact)
    # Stopped early at a version: the state holds the records before the one it stopped at.
    state.journal_bytes = scan.valid_bytes if read_all else scan.record_start
    return state


_Write = tuple[bytes, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _ends(start: int, batch: Sequence[tuple[bytes, object]]) -> list[int]:
    return list(itertools.accumulate((len(line) for line, _ in batch), initial=start))[1:]


class Journal:
    """Appends records durably. `append` returns once the record is on disk."""

    def __init__(self, path: Path, valid_bytes: int | None = None) -> None:
        self.path = path
        existed = path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if not existed:
            # The new file's directory entry must survive a power loss too.
            fsync_dir(path.parent)
        if valid_bytes is not None and os.fstat(self._fd).st_size > valid_bytes:
            # Drop a torn tail so the next record does not weld onto it.
            os.ftruncate(self._fd, valid_bytes)
            os.fsync(self._fd)
        self.size = os.fstat(self._fd).st_size  # where the next record will start
        self._pending: list[tuple[bytes, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # A thread of its own for the writes and fdatasyncs of the event loop's batches: a
        # queue and a wake-up per batch, not an executor's bookkeeping.
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def append_now(self, records: Sequence[Record]) -> None:
        """Synchronous durable append, for use outside the event loop."""
        self._write(b"".join(encode_record(r) for r in records))

    async def append(self, record: Record) -> int:
        """Append durably; returns where the record ends in the file (records are acknowledged
        in file order, so a state that folded this record in has folded all before it)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        self._pending.append((encode_record(record), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            start = self.size
            try:
                await self._in_writer(b"".join(line for line, _ in batch))
            except OSError as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(
                            StateError(f"Could not write the journal {self.path}: {exc}.")
                        )
                continue
            for end, (_, done) in zip(_ends(start, batch), batch, strict=True):
                if not done.done():
                    done.set_result(end)

    def _in_writer(self, data: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_batches, daemon=True)
            self._writer.start()
        self._writes.put((data, loop, done))
        return done

    def _write_batches(self) -> None:
        while (job := self._writes.get()) is not None:
            data, loop, done = job
            error: BaseException | None = None
            try:
                self._write(data)
            except Exception as exc:  # handed to the waiting task, whatever it is
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, done, error)

    def _write(self, data: bytes) -> None:
        # Where this write starts: a write the disk cuts short (ENOSPC, EIO) is cut off again
        # here, so a later append can never weld onto half a line in the middle of the file.
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            if test_pause.ACTIVE:  # test-only: the kill soak strikes between two halves
                view = view[test_pause.write_first_half(self._fd, view, "journal") :]
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fdatasync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise
        self.size = start + len(data)

    async def aclose(self) -> None:
        if self._flusher is not None:
            await self._flusher
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join()
            self._writer = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
