"""The journal: the durable, append-only record of every state transition of a job.

One JSON line per record. An item counts as done only once its record is on disk (fdatasync).
Appends from many agents are group-committed by one flusher task, so the cost per completion
stays O(1) whatever the job size. A crash can only tear the last line, which replay ignores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from prodigy import test_pause
from prodigy.errors import StateError
from prodigy.state import Record
from prodigy.store import fsync_dir

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Record] = msgspec.json.Decoder(Record)


# Each line ends with its own checksum, `..."crc":"1a2b3c4d"}`: damage before the last line is
# told from a torn tail, even when the damaged line still parses. Readers that do not know
# about it (jq, tests) see one more field.
_CRC = re.compile(rb',"crc":"([0-9a-f]{8})"}$')


def encode_record(record: Record) -> bytes:
    body = _encoder.encode(record)
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


def read_journal(path: Path) -> JournalContents:
    """Parse the journal; a torn final line (a crash mid-append) is reported, not fatal."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StateError(
            f"The job's journal {path} is missing, so its state cannot be rebuilt."
        ) from None
    records: list[Record] = []
    offset = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        if is_last:
            # Bytes after the final newline were never acknowledged.
            return JournalContents(records, offset, torn_tail=bool(line))
        try:
            body = _checked(line)
            if body is None:
                raise msgspec.DecodeError("its checksum does not match its content")
            records.append(_decoder.decode(body))
        except msgspec.DecodeError as exc:
            if number == len(lines) - 1 and not lines[-1]:
                # A final line that was written whole but garbled is treated as torn as well.
                return JournalContents(records, offset, torn_tail=True)
            raise StateError(
                f"The journal {path} is damaged at line {number} ({exc}); "
                "the state after that point cannot be trusted."
            ) from None
        offset += len(line) + 1
    return JournalContents(records, offset, torn_tail=False)


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
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def append_now(self, records: Sequence[Record]) -> None:
        """Synchronous durable append, for use outside the event loop."""
        self._write(b"".join(encode_record(r) for r in records))

    async def append(self, record: Record) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((encode_record(record), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, b"".join(line for line, _ in batch))
            except OSError as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(
                            StateError(f"Could not write the journal {self.path}: {exc}.")
                        )
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

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

    async def aclose(self) -> None:
        if self._flusher is not None:
            await self._flusher
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
