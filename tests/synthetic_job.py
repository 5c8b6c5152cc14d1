"""A job directory written directly with prodigy's own writers, as if a run had made it: for
report tests that need a big or a precisely timed job (100,000 items would take minutes to
really run). Items run `parallel` at a time from `start`; every `fail_every`-th item fails
twice (retried, then dead-lettered)."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from prodigy.events import (
    AgentCompleted,
    AgentFailed,
    AgentRetrying,
    AgentStarted,
    DlqItemAdded,
    Event,
    JobCompleted,
    JobStarted,
    MapStarted,
    count_fields,
)
from prodigy.items import WorkItem
from prodigy.job import JobMetadata, metadata_document, write_items
from prodigy.journal import Journal
from prodigy.state import (
    Attempt,
    AttemptEnded,
    ItemsFrozen,
    JobEnded,
    Record,
    SetupCompleted,
    Spend,
    counts,
    error_signature,
    replay,
)
from prodigy.store import JobDir

START = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
ERROR = "command exited with code 1: ./check.sh"


def _ts(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def write_job(
    home: Path,
    items: int,
    parallel: int = 8,
    fail_every: int = 50,
    cost_usd: float = 0.0,
    job_id: str = "mapreduce-20261101-120000",
    repo: str = "synthetic",
) -> JobDir:
    path = home / "state" / repo / "mapreduce" / "jobs" / job_id
    path.mkdir(parents=True)
    job = JobDir(path)
    write_items(job, [WorkItem(i, f"item_{i}", {"n": i}) for i in range(items)])
    records: list[Record] = [SetupCompleted({}), ItemsFrozen(items, 2)]
    timed: list[tuple[float, int, Event]] = []
    free = [0.0] * parallel
    sequence = 0

    def event(at: float, e: Event) -> None:
        nonlocal sequence
        e.ts = _ts(at)
        e.job_id = job_id
        timed.append((at, sequence, e))
        sequence += 1

    version = 0
    for index in range(items):
        item_id = f"item_{index}"
        failing = fail_every and index % fail_every == fail_every - 1
        for attempt in (1, 2) if failing else (1,):
            start = heapq.heappop(free)
            duration = 0.5 + (index % 7) * 0.1
            end = start + duration
            heapq.heappush(free, end)
            ok = not failing
            spend = Spend(cost_usd, 100, 20) if cost_usd else Spend()
            result = Attempt(
                attempt,
                ok,
                _ts(start),
                duration,
                exit_code=0 if ok else 1,
                error=None if ok else ERROR,
                error_kind=None if ok else "exit_code",
                signature=None if ok else error_signature("exit_code", ERROR),
                spend=spend,
            )
            outcome = "succeeded" if ok else ("retry" if attempt == 1 else "dead")
            records.append(AttemptEnded(index, outcome, result))
            version += 1
            event(start, AgentStarted(item_id=item_id, attempt=attempt))
            if ok:
                event(
                    end,
                    AgentCompleted(
                        item_id=item_id,
                        attempt=attempt,
                        duration_s=duration,
                        version=version,
                        cost_usd=cost_usd or None,
                    ),
                )
            else:
                event(
                    end,
                    AgentFailed(
                        item_id=item_id,
                        attempt=attempt,
                        duration_s=duration,
                        version=version,
                        error=ERROR,
                        error_kind="exit_code",
                        exit_code=1,
                    ),
                )
                if attempt == 1:
                    event(end, AgentRetrying(item_id=item_id, attempt=2, delay_s=0.0))
                else:
                    event(end, DlqItemAdded(item_id=item_id, attempts=2, error=ERROR))
    finish = max(free)
    records.append(JobEnded("completed"))
    journal = Journal(job.journal)
    journal.append_now(records)
    journal.close()
    state = replay(records)
    head: list[Event] = [
        JobStarted(workflow="/repo/wf.yaml", name="synthetic"),
        MapStarted(items=items, max_parallel=parallel),
    ]
    for e in head:
        e.ts, e.job_id = _ts(0.0), job_id
    end_event = JobCompleted(**count_fields(counts(state)))
    end_event.ts, end_event.job_id = _ts(finish), job_id
    timed.sort(key=lambda t: (t[0], t[1]))
    encoder = msgspec.json.Encoder()
    lines = [encoder.encode(e) for e in [*head, *(t[2] for t in timed), end_event]]
    job.events.write_bytes(b"\n".join(lines) + b"\n")
    meta = JobMetadata(
        job_id=job_id,
        repo=repo,
        workdir="/repo",
        workflow_path="/repo/wf.yaml",
        workflow_hash="0",
        workflow_name="synthetic",
        created_at=_ts(0.0),
    )
    document = metadata_document(meta, state, "completed")
    job.write_metadata(msgspec.structs.replace(document, updated_at=_ts(finish)))
    job.lock.touch()
    return job
