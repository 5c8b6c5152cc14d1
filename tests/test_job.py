"""A job on disk: metadata.json read back strictly (to run a job) or leniently (to list it)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from prodigy.checkpoint import CheckpointDocument, JobInfo, checkpoint_document
from prodigy.errors import StateError
from prodigy.items import WorkItem
from prodigy.job import (
    JobMetadata,
    MetadataDocument,
    load_run_state,
    metadata_document,
    open_frozen_items,
    read_job_metadata,
    read_stored_metadata,
    stored_metadata,
    write_items,
)
from prodigy.journal import Journal, replay_journal
from prodigy.state import (
    Attempt,
    AttemptEnded,
    ItemsFrozen,
    Record,
    RolledBack,
    SetupCompleted,
    replay,
)
from prodigy.store import JobDir

META = JobMetadata(
    job_id="mapreduce-20260101-101010",
    repo="repo",
    workdir="/work",
    workflow_path="/work/wf.yaml",
    workflow_hash="abc",
    workflow_name="wf",
    reduce_steps=1,
    created_at="2026-01-01T10:10:10.000+00:00",
)


def _attempt(ok: bool) -> Attempt:
    return Attempt(attempt=1, ok=ok, started_at="2026-01-01T10:10:11+00:00", duration_s=0.1)


def _job(tmp_path: Path) -> JobDir:
    path = tmp_path / "state" / "repo" / "mapreduce" / "jobs" / META.job_id
    path.mkdir(parents=True)
    return JobDir(path)


def test_metadata_reads_back_as_written(tmp_path: Path) -> None:
    job = _job(tmp_path)
    state = replay(
        [
            SetupCompleted(outputs={}),
            ItemsFrozen(count=3, max_attempts=2),
            AttemptEnded(index=0, outcome="succeeded", result=_attempt(ok=True)),
            AttemptEnded(index=1, outcome="retry", result=_attempt(ok=False)),
        ]
    )
    job.write_metadata(metadata_document(META, state, "running", pid=42))
    assert read_job_metadata(job) == META
    stored = read_stored_metadata(job)
    assert (stored.repo, stored.workflow_name, stored.status, stored.phase) == (
        "repo",
        "wf",
        "running",
        "map",
    )
    c = stored.counts
    # "failed" and "pending" both include the retriable item; read back, it is counted once.
    assert (c.total, c.succeeded, c.retriable, c.pending, c.dead) == (3, 1, 1, 1, 0)
    assert stored.created_at is not None and stored.created_at.year == 2026


def test_a_damaged_file_is_read_leniently_for_listings_but_refused_for_running(
    tmp_path: Path,
) -> None:
    job = _job(tmp_path)
    job.metadata.write_text('{"status": "completed", "counts": "many", "repo": 7}')
    stored = read_stored_metadata(job)
    assert (stored.status, stored.counts.total, stored.repo) == ("completed", 0, "7")
    with pytest.raises(StateError, match="a field is missing or of the wrong type") as refused:
        read_job_metadata(job)
    assert f"prodigy checkpoints repair {job.job_id}" in str(refused.value)


def test_metadata_that_is_not_an_object_is_a_state_error(tmp_path: Path) -> None:
    job = _job(tmp_path)
    job.metadata.write_text("[1, 2]")
    with pytest.raises(StateError):
        read_stored_metadata(job)
    assert stored_metadata({}).phase == "unknown"


def test_metadata_is_a_typed_document_with_the_one_meaning_of_failed(tmp_path: Path) -> None:
    job = _job(tmp_path)
    state = replay(
        [
            SetupCompleted(outputs={}),
            ItemsFrozen(count=4, max_attempts=2),
            AttemptEnded(index=0, outcome="retry", result=_attempt(False)),
            AttemptEnded(index=1, outcome="dead", result=_attempt(False)),
            AttemptEnded(index=2, outcome="succeeded", result=_attempt(True)),
        ]
    )
    job.write_metadata(metadata_document(META, state, "running", pid=7))
    document = msgspec.json.decode(job.metadata.read_bytes(), type=MetadataDocument)
    c = document.counts
    assert (c.failed, c.retriable, c.dead_lettered, c.pending, c.remaining) == (2, 1, 1, 1, 2)
    assert (document.job_id, document.pid, document.phase) == (META.job_id, 7, "map")


def test_frozen_items_are_checked_against_the_count_frozen(tmp_path: Path) -> None:
    job = _job(tmp_path)
    write_items(job, [WorkItem(index=i, id=f"item_{i}", data=i) for i in range(4)])
    open_frozen_items(job, 4).close()
    whole = job.items.read_bytes()
    job.items.write_bytes(b"".join(whole.splitlines(keepends=True)[:3]))
    with pytest.raises(StateError, match="holds 3 of the 4 items frozen into it"):
        open_frozen_items(job, 4)
    job.items.write_bytes(whole[:-3])
    with pytest.raises(StateError, match="is cut short: its last line is incomplete") as refused:
        open_frozen_items(job, 4)
    assert "left untouched" in refused.value.message and refused.value.hint


# ---- the state a run starts from: newest checkpoint + the journal after it -------------------


def _journaled(tmp_path: Path, records: list[Record]) -> JobDir:
    job = _job(tmp_path)
    journal = Journal(job.journal)
    journal.append_now(records)
    journal.close()
    return job


def _checkpoint_at(job: JobDir, records: list[Record], cut: int) -> CheckpointDocument:
    """The checkpoint a run would have written after `records[:cut]`."""
    state = replay_journal(job.journal, compact=True)
    prefix = state if cut == len(records) else None
    if prefix is None:
        scratch = JobDir(job.path.with_name("scratch"))
        scratch.path.mkdir()
        part = Journal(scratch.journal)
        part.append_now(records[:cut])
        part.close()
        prefix = replay_journal(scratch.journal, compact=True)
    info = JobInfo(META.job_id, "/w.yaml", "abc", {}, "/work", 1, "t")
    return checkpoint_document(prefix, info, "item_{}".format)


RUN: list[Record] = [
    SetupCompleted(outputs={}),
    ItemsFrozen(count=4, max_attempts=2),
    AttemptEnded(0, "succeeded", _attempt(True)),
    AttemptEnded(1, "retry", _attempt(False)),
    AttemptEnded(2, "succeeded", _attempt(True)),
]


def test_a_run_starts_from_the_checkpoint_plus_the_records_after_it(tmp_path: Path) -> None:
    job = _journaled(tmp_path, RUN)
    checkpoint = _checkpoint_at(job, RUN, 3)
    assert 0 < checkpoint.journal.bytes < job.journal.stat().st_size
    state = load_run_state(job, checkpoint)
    assert state == replay_journal(job.journal, compact=True)
    assert state.journal_bytes == job.journal.stat().st_size
    assert state.results.keys() == {1}, "a run keeps only failed items' results"


def test_a_rollback_after_the_checkpoint_replays_the_whole_journal(tmp_path: Path) -> None:
    records = [*RUN, RolledBack(to_version=1)]
    job = _journaled(tmp_path, records)
    state = load_run_state(job, _checkpoint_at(job, records, 4))
    assert state == replay_journal(job.journal, compact=True)
    assert bytes(state.status) == bytes([2, 0, 0, 0]) and state.version == 4


def test_a_checkpoint_ahead_of_its_journal_is_refused(tmp_path: Path) -> None:
    job = _journaled(tmp_path, RUN)
    checkpoint = _checkpoint_at(job, RUN, len(RUN))
    with job.journal.open("r+b") as journal:
        journal.truncate(checkpoint.journal.bytes - 10)
    with pytest.raises(StateError, match="ahead of its journal"):
        load_run_state(job, checkpoint)
