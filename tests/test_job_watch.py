"""Reading a job directory as it grows: partial lines, incremental replay, rollbacks, and
telling whether the job runs without touching its lock."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from prodigy.job import load_state
from prodigy.job_watch import FileTail, JobWatch, live_holder
from prodigy.journal import Journal, encode_record
from prodigy.lock import JobLock
from prodigy.state import Attempt, AttemptEnded, ItemsFrozen, RolledBack, SetupCompleted, counts
from synthetic_job import write_job


def test_a_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "log"
    tail = FileTail(path)
    assert tail.read() == b""  # no file yet
    path.write_bytes(b'{"a": 1}\n{"b"')
    assert tail.read() == b'{"a": 1}\n'
    assert tail.read() == b""
    with path.open("ab") as f:
        f.write(b": 2}\n")
    assert tail.read() == b'{"b": 2}\n'


def test_a_torn_tail_truncated_by_the_next_writer_is_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"one\ntorn")
    tail = FileTail(path)
    assert tail.read() == b"one\n"
    os.truncate(path, 4)  # what Journal(valid_bytes) does before appending
    with path.open("ab") as f:
        f.write(b"two\n")
    assert tail.read() == b"two\n"


def _result(attempt: int, ok: bool) -> Attempt:
    return Attempt(attempt, ok, "2026-11-01T12:00:00.000+00:00", 0.5, error=None if ok else "e")


def test_incremental_reading_gives_the_state_a_replay_gives(tmp_path: Path) -> None:
    job = write_job(tmp_path, 60, parallel=4, fail_every=7)
    watch = JobWatch(job)
    assert watch.refresh()
    expected = load_state(job)
    assert counts(watch.state) == counts(expected)
    assert watch.item_ids[:2] == ["item_0", "item_1"]
    assert not watch.refresh(), "nothing changed"
    journal = Journal(job.journal)
    journal.append_now([AttemptEnded(0, "retry", _result(2, False))])
    journal.close()
    assert watch.refresh()
    expected = load_state(job)
    assert counts(watch.state) == counts(expected) and watch.state.version == expected.version


def test_a_rollback_is_replayed_from_the_start(tmp_path: Path) -> None:
    job = write_job(tmp_path, 10, parallel=2, fail_every=0)
    watch = JobWatch(job)
    watch.refresh()
    assert counts(watch.state).succeeded == 10
    journal = Journal(job.journal)
    journal.append_now([RolledBack(4)])
    journal.close()
    watch.refresh()
    expected = load_state(job)
    assert counts(watch.state) == counts(expected) and counts(expected).succeeded == 4


def test_a_damaged_journal_line_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    job = write_job(tmp_path, 3, parallel=1, fail_every=0)
    data = job.journal.read_bytes().split(b"\n")
    data[3] = b'{"type": "attempt_ended", garbage'
    job.journal.write_bytes(b"\n".join(data))
    watch = JobWatch(job)
    watch.refresh()
    assert "damaged" in watch.problems["journal"]
    assert counts(watch.state).succeeded == 1  # what came before the damage


def test_a_garbled_last_line_is_read_again_not_reported(tmp_path: Path) -> None:
    job = write_job(tmp_path, 2, parallel=1, fail_every=0)
    with job.journal.open("ab") as f:
        f.write(b'{"type": "attem\n')
    watch = JobWatch(job)
    watch.refresh()
    assert "journal" not in watch.problems


def test_setup_only_job_has_no_items_yet(tmp_path: Path) -> None:
    job = write_job(tmp_path, 1)
    job.journal.write_bytes(encode_record(SetupCompleted({})))
    job.items.unlink()
    watch = JobWatch(job)
    watch.refresh()
    assert watch.state.item_count is None and watch.item_ids == []
    job.journal.write_bytes(job.journal.read_bytes() + encode_record(ItemsFrozen(1, 1)))
    watch.refresh()
    assert "items" in watch.problems  # frozen, but the items file is gone


def test_a_held_lock_is_seen_without_taking_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lock"
    lock = JobLock(path, "job", purpose="cook")
    lock.acquire()
    calls: list[Any] = []
    monkeypatch.setattr(fcntl, "flock", lambda *a: calls.append(a))
    try:
        holder = live_holder(path)
        assert holder is not None and holder.pid == os.getpid() and holder.purpose == "cook"
        assert holder.host == socket.gethostname()
    finally:
        monkeypatch.undo()
        lock.release()
    assert calls == [], "the watcher must never call flock"
    assert live_holder(path) is None


def test_a_dead_holders_details_do_not_make_the_job_live(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    # What a holder killed with -9 leaves: its details, no flock.
    path.write_text('{"pid": 1, "host": "elsewhere", "started": "x", "purpose": "cook"}')
    assert live_holder(path) is None
    assert live_holder(tmp_path / "missing") is None


def test_a_missing_journal_is_a_problem_until_it_appears(tmp_path: Path) -> None:
    job = write_job(tmp_path, 2, parallel=1, fail_every=0)
    records = job.journal.read_bytes()
    job.journal.unlink()
    watch = JobWatch(job)
    watch.refresh()
    assert "is missing" in watch.problems["journal"]
    job.journal.write_bytes(records)
    watch.refresh()
    assert "journal" not in watch.problems and counts(watch.state).succeeded == 2
