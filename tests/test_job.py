"""A job on disk: metadata.json read back strictly (to run a job) or leniently (to list it)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from prodigy.errors import StateError
from prodigy.items import WorkItem
from prodigy.job import (
    JobMetadata,
    MetadataDocument,
    metadata_document,
    open_frozen_items,
    read_job_metadata,
    read_stored_metadata,
    stored_metadata,
    write_items,
)
from prodigy.state import Attempt, AttemptEnded, ItemsFrozen, SetupCompleted, replay
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
