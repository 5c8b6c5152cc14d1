"""The journal file: durable appends, torn last lines, damage in the middle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodigy.errors import StateError
from prodigy.journal import Journal, encode_record, read_journal
from prodigy.state import (
    Attempt,
    AttemptEnded,
    ItemsFrozen,
    Record,
    SetupCompleted,
    replay,
)


def records(n: int) -> list[Record]:
    out: list[Record] = [SetupCompleted(outputs={}), ItemsFrozen(count=n, max_attempts=2)]
    for i in range(n):
        result = Attempt(attempt=1, ok=i % 3 != 0, started_at="t", duration_s=0.01, output="x" * i)
        out.append(
            AttemptEnded(index=i, outcome="succeeded" if result.ok else "retry", result=result)
        )
    return out


def test_async_appends_are_all_durable_and_ordered(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    written = records(50)

    async def main() -> None:
        journal = Journal(path)
        await journal.append(written[0])
        await journal.append(written[1])
        await asyncio.gather(*(journal.append(r) for r in written[2:]))
        await journal.aclose()

    asyncio.run(main())
    contents = read_journal(path)
    assert not contents.torn_tail
    assert replay(contents.records) == replay(written)


def test_missing_journal_is_a_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="missing"):
        read_journal(tmp_path / "nope.jsonl")


def test_damage_in_the_middle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = [encode_record(r) for r in records(3)]
    lines[2] = b'{"garbage": \n'
    path.write_bytes(b"".join(lines))
    with pytest.raises(StateError, match="line 3"):
        read_journal(path)


def test_reopening_truncates_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    data = b"".join(encode_record(r) for r in records(4))
    path.write_bytes(data + b'{"type":"attempt_ended","ind')
    contents = read_journal(path)
    assert contents.torn_tail
    journal = Journal(path, contents.valid_bytes)
    journal.append_now([SetupCompleted(outputs={"after": "crash"})])
    journal.close()
    again = read_journal(path)
    assert not again.torn_tail
    assert len(again.records) == len(records(4)) + 1


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12), st.data())
def test_crash_at_any_byte_replays_the_surviving_records(n: int, data: st.DataObject) -> None:
    """A crash can cut the file anywhere: the state is that of the whole lines that survived."""
    import tempfile

    written = records(n)
    encoded = [encode_record(r) for r in written]
    blob = b"".join(encoded)
    cut = data.draw(st.integers(0, len(blob)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.jsonl"
        path.write_bytes(blob[:cut])
        contents = read_journal(path)
    whole = 0
    size = 0
    for line in encoded:
        if size + len(line) > cut:
            break
        whole += 1
        size += len(line)
    assert contents.valid_bytes == size
    assert contents.torn_tail == (cut > size)
    assert replay(contents.records) == replay(written[:whole])


def test_a_damaged_line_that_still_parses_is_caught_by_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = [encode_record(r) for r in records(4)]
    # One digit changed in the middle: still valid JSON, still a record, but not what was written.
    lines[3] = lines[3].replace(b'"index":1', b'"index":2')
    path.write_bytes(b"".join(lines))
    with pytest.raises(StateError, match=r"line 4.*checksum"):
        read_journal(path)


def test_a_last_line_whose_checksum_fails_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = [encode_record(r) for r in records(3)]
    lines[-1] = lines[-1].replace(b'"index":2', b'"index":1')
    path.write_bytes(b"".join(lines))
    contents = read_journal(path)
    assert contents.torn_tail and len(contents.records) == len(lines) - 1


def test_lines_without_a_checksum_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    plain = [line.split(b',"crc"')[0] + b"}\n" for line in map(encode_record, records(3))]
    path.write_bytes(b"".join(plain))
    assert read_journal(path).records == records(3)


def test_a_write_the_disk_cuts_short_is_cut_off_before_the_next_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os as real_os

    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append_now(records(1)[:1])
    write = real_os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        monkeypatch.setattr(real_os, "write", write)  # the disk fills after half of it
        written = write(fd, bytes(data)[: len(data) // 2])
        raise OSError(28, f"No space left on device after {written} bytes")

    monkeypatch.setattr(real_os, "write", half_then_full)
    with pytest.raises(OSError):
        journal.append_now(records(3)[1:])
    journal.append_now(records(3)[1:])  # space again: the record lands whole
    journal.close()
    contents = read_journal(path)
    assert not contents.torn_tail
    assert contents.records == [records(1)[0], *records(3)[1:]]
