"""Checkpoint files: what they hold, damage reported, background writes coalesced."""

from __future__ import annotations

import asyncio
import shutil
from array import array
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodigy.checkpoint import (
    CheckpointDocument,
    CheckpointWriter,
    JobInfo,
    checkpoint_document,
    document_of,
    encode_checkpoint,
    freeze,
    read_checkpoint,
    restore_state,
    status_ranges,
    value_runs,
)
from prodigy.errors import StateError
from prodigy.state import (
    Attempt,
    AttemptEnded,
    ItemsFrozen,
    JobState,
    Record,
    SetupCompleted,
    apply_record,
    replay,
)
from prodigy.store import JobDir, write_checkpoint
from test_state import HEAD, N_ITEMS, record_strategy

INFO = JobInfo(
    job_id="mapreduce-20260101-000000",
    workflow_path="/w.yaml",
    workflow_hash="abc",
    workflow_config={"name": "t"},
    workdir="/repo",
    reduce_steps=1,
    created_at="2026-01-01T00:00:00",
)


def job_dir(tmp_path: Path) -> JobDir:
    path = tmp_path / "state" / "repo" / "mapreduce" / "jobs" / INFO.job_id
    path.mkdir(parents=True)
    return JobDir(path)


def ended(index: int, ok: bool, attempt: int = 1) -> AttemptEnded:
    result = Attempt(
        attempt=attempt, ok=ok, started_at="t", duration_s=0.1, error=None if ok else "x"
    )
    return AttemptEnded(index=index, outcome="succeeded" if ok else "dead", result=result)


def test_document_says_where_the_job_stands() -> None:
    state = replay(
        [
            SetupCompleted(outputs={"k": "v"}),
            ItemsFrozen(count=3, max_attempts=2),
            ended(0, True),
            ended(1, False, 2),
        ]
    )
    document = checkpoint_document(state, INFO, ["a", "b", "c"].__getitem__)
    doc = msgspec.json.decode(encode_checkpoint(document))
    assert msgspec.json.decode(encode_checkpoint(document), type=CheckpointDocument) == document
    assert doc["version"] == 2 and doc["phase"] == "map"
    assert doc["counts"] == {
        "total": 3,
        "pending": 1,
        "running": 0,
        "succeeded": 1,
        "failed_retriable": 0,
        "dead_lettered": 1,
        "skipped": 0,
    }
    items = doc["items"]
    assert (items["succeeded"], items["dead-lettered"], items["pending"]) == (
        [[0, 0]],
        [[1, 1]],
        [[2, 2]],
    )
    assert items["attempts"] == [[1, 1], [2, 1], [0, 1]] and items["max_attempts"] == [[2, 3]]
    assert doc["dlq"] == ["b"] and doc["setup"]["outputs"] == {"k": "v"}
    assert doc["items_file"] == "items.jsonl" and doc["workflow"]["config"] == {"name": "t"}
    # Detail only for the item that failed: a succeeded item's result is in the journal.
    assert [(d["id"], d["status"]) for d in items["detail"]] == [("b", "dead-lettered")]
    assert items["detail"][0]["result"]["error"] == "x"


def test_running_items_are_shown_as_running_and_counted_apart() -> None:
    retry = AttemptEnded(index=0, outcome="retry", result=ended(0, False).result)
    state = replay([SetupCompleted(outputs={}), ItemsFrozen(count=3, max_attempts=2), retry])
    doc = checkpoint_document(state, INFO, ["a", "b", "c"].__getitem__, running=frozenset({0, 1}))
    assert doc.items is not None and doc.items.running == [0, 1]
    # Running is shown apart; the ranges keep what a resume runs them as.
    assert (doc.items.retriable, doc.items.pending) == ([(0, 0)], [(1, 2)])
    assert (doc.counts.pending, doc.counts.running, doc.counts.failed_retriable) == (1, 2, 0)


def test_a_damaged_latest_checkpoint_names_the_file_and_the_older_ones(tmp_path: Path) -> None:
    job = job_dir(tmp_path)
    for version in (1, 2, 3):
        write_checkpoint(job, version, b'{"format": "prodigy-checkpoint/1"}', keep=3)
    damaged = job.checkpoint(3)
    damaged.write_bytes(damaged.read_bytes()[:10])
    with pytest.raises(StateError) as error:
        read_checkpoint(job)
    assert str(damaged) in error.value.message
    assert "v2" in (error.value.hint or "") and "v1" in (error.value.hint or "")
    assert damaged.read_bytes() == b'{"format":'


@pytest.mark.parametrize(
    "text",
    [
        b"[]",
        b"null",
        b'{"format": "prodigy-checkpoint/1"}',
        b'{"format": "prodigy-checkpoint/9", "job_id": "j", "version": 3,'
        b' "counts": {"total": 1, "succeeded": 1}}',
        b'{"format": "prodigy-checkpoint/1", "job_id": "j", "version": -1,'
        b' "counts": {"total": 1, "succeeded": 1}}',
        b'{"format": "prodigy-checkpoint/1", "job_id": "j", "version": 3, "counts": []}',
        b'{"format": "prodigy-checkpoint/1", "job_id": 7, "version": 3,'
        b' "counts": {"total": 1, "succeeded": 1}}',
    ],
)
def test_valid_json_of_the_wrong_shape_is_damage_too(tmp_path: Path, text: bytes) -> None:
    job = job_dir(tmp_path)
    for version in (1, 2, 3):
        write_checkpoint(job, version, text, keep=3)
    with pytest.raises(StateError) as error:
        read_checkpoint(job)
    assert error.value.message.startswith(f"Checkpoint {job.checkpoint(3)} is corrupt (")
    assert "v2, v1" in (error.value.hint or "") and "--force" in (error.value.hint or "")


def test_a_written_checkpoint_reads_back(tmp_path: Path) -> None:
    job = job_dir(tmp_path)
    state = replay([SetupCompleted(outputs={}), ItemsFrozen(count=2, max_attempts=1)])
    apply_record(state, ended(0, True))
    doc = checkpoint_document(state, INFO, ["a", "b"].__getitem__)
    write_checkpoint(job, state.version, encode_checkpoint(doc), keep=3)
    head = read_checkpoint(job)
    assert (head.job_id, head.version) == (INFO.job_id, 1)
    assert (head.counts.total, head.counts.succeeded) == (2, 1)


def test_background_writes_coalesce_and_the_last_version_is_written(tmp_path: Path) -> None:
    job = job_dir(tmp_path)
    written: list[int] = []
    errors: list[BaseException] = []
    writer = CheckpointWriter(
        job, INFO, keep=3, after_write=lambda s: written.append(s.version), on_error=errors.append
    )
    writer.item_id = lambda index: "a"
    state = JobState()
    for record in [SetupCompleted(outputs={}), ItemsFrozen(count=200, max_attempts=1)]:
        apply_record(state, record)

    async def run() -> None:
        for index in range(200):
            apply_record(state, ended(index, True))
            writer.request(state)
            await asyncio.sleep(0)
        await writer.flush()

    asyncio.run(run())
    assert written[-1] == 200, "the newest version is always written in the end"
    assert len(written) < 200, "requests made while a write runs are coalesced"
    assert written == sorted(written)
    latest = msgspec.json.decode(job.latest.read_bytes())
    assert latest["version"] == 200 and latest["counts"]["succeeded"] == 200
    assert len(job.checkpoint_versions()) <= 3
    assert errors == []


def test_a_background_write_that_fails_is_reported_not_lost(tmp_path: Path) -> None:
    job = job_dir(tmp_path)
    errors: list[BaseException] = []
    writer = CheckpointWriter(job, INFO, keep=3, after_write=lambda s: None, on_error=errors.append)
    state = JobState()
    for record in [SetupCompleted(outputs={}), ItemsFrozen(count=1, max_attempts=1)]:
        apply_record(state, record)
    apply_record(state, ended(0, True))
    shutil.rmtree(job.path)  # the disk is gone from under the writer

    async def run() -> None:
        writer.request(state)
        await writer.flush()

    asyncio.run(run())
    assert len(errors) == 1 and isinstance(errors[0], StateError)
    message = errors[0].message
    assert "Cannot write checkpoint v1" in message and str(job.path) in message
    with pytest.raises(StateError):
        writer.write_now(state)


@settings(max_examples=100, deadline=None)
@given(st.lists(record_strategy, max_size=40), st.data())
def test_a_frozen_state_is_not_changed_by_what_the_engine_records_after(
    tail: list[Record], data: st.DataObject
) -> None:
    """The writer thread encodes a `freeze` while the event loop goes on applying records: the
    document must be the one of the state at the moment it was frozen."""
    records = [*HEAD, *tail]
    cut = data.draw(st.integers(0, len(records)))
    state = replay(records[:cut], compact=True)
    before = checkpoint_document(state.copy(), INFO, "item-{}".format)
    frozen = freeze(state, INFO.reduce_steps)
    for record in records[cut:]:
        apply_record(state, record)
    assert document_of(frozen, INFO, "item-{}".format) == before


# ---- property: a checkpoint plus the journal after it is the whole journal ---------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(record_strategy, max_size=40), st.data())
def test_restoring_a_checkpoint_then_the_records_after_it_equals_a_full_replay(
    tail: list[Record], data: st.DataObject
) -> None:
    """What resume does (newest checkpoint + the journal after it) gives the state a replay of
    the whole journal gives, wherever the checkpoint was taken."""
    records = [*HEAD, *tail]
    cut = data.draw(st.integers(0, len(records)))
    taken = replay(records[:cut], compact=True)
    running = frozenset(data.draw(st.sets(st.integers(0, N_ITEMS - 1), max_size=3)))
    running = frozenset(i for i in running if taken.item_count and taken.status[i] in (0, 3))
    document = checkpoint_document(taken, INFO, "item-{}".format, running)
    again = msgspec.json.decode(encode_checkpoint(document), type=CheckpointDocument)
    restored = restore_state(again)
    for record in records[cut:]:
        apply_record(restored, record)
    assert restored == replay(records, compact=True)


def test_a_checkpoint_does_not_grow_with_finished_items() -> None:
    def size(n: int) -> int:
        state = replay(
            [SetupCompleted(outputs={}), ItemsFrozen(count=n, max_attempts=1)], compact=True
        )
        for index in range(n):
            apply_record(state, ended(index, True))
        return len(encode_checkpoint(checkpoint_document(state, INFO, str)))

    # A hundred times the items: only the numbers get longer.
    assert size(20_000) - size(200) < 20


def test_a_just_recorded_item_is_not_shown_running_and_stray_temporaries_go(
    tmp_path: Path,
) -> None:
    state = replay([SetupCompleted(outputs={}), ItemsFrozen(count=2, max_attempts=1)])
    apply_record(state, ended(0, True))
    # Item 0's task is still in the scheduler's set for a moment after its record.
    doc = checkpoint_document(state, INFO, str, running=frozenset({0, 1}))
    assert doc.items is not None and doc.items.running == [1]
    assert (doc.counts.running, doc.counts.succeeded, doc.counts.pending) == (1, 1, 0)
    job = job_dir(tmp_path)
    stray = job.path / ".checkpoint-v7.json.999999.1.tmp"
    stray.write_bytes(b'{"half')
    CheckpointWriter(job, INFO, keep=3, after_write=lambda s: None, on_error=lambda e: None)
    assert not stray.exists()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2, 70_000, 2**32 - 1]), max_size=300))
def test_value_runs_are_the_run_length_encoding(values: list[int]) -> None:
    naive: list[tuple[int, int]] = []
    for value in values:
        if naive and naive[-1][0] == value:
            naive[-1] = (value, naive[-1][1] + 1)
        else:
            naive.append((value, 1))
    assert value_runs(array("I", values)) == naive
    statuses = bytearray(v % 6 for v in values if v % 6 != 1)
    ranges = status_ranges(statuses)
    listed = sorted((first, last, s) for s, found in ranges.items() for first, last in found)
    assert [s for first, last, s in listed for _ in range(first, last + 1)] == list(statuses)
