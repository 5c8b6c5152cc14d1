"""`prodigy dlq reprocess`: run DLQ items again through the job's agent template.

Holds the job's lock for the whole run (so it never races a resume or another reprocess),
gives each chosen item a fresh round of `max_attempts`, and records the results in the job
like any other attempts: successes leave the DLQ, failures stay with their history extended.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from prodigy.checkpoint import newest_checkpoint
from prodigy.cli.output import Settings, say, warn
from prodigy.display import plural
from prodigy.errors import ProdigyError
from prodigy.events import DlqItemRemoved, DlqReprocessStarted, EventLog
from prodigy.job import (
    JobMetadata,
    append_records,
    load_run_state,
    open_frozen_items,
    read_job_metadata,
)
from prodigy.lock import JobLock
from prodigy.state import (
    STATUS_NAMES,
    ItemStatus,
    JobEndStatus,
    JobState,
    Requeued,
    needs_manual_review,
)
from prodigy.store import JobDir, find_job

if TYPE_CHECKING:
    # Only the type: loading the workflow model at import would slow `prodigy dlq list`.
    from prodigy.workflow import Workflow


def _choose(
    job_id: str, ids: Sequence[str], state_status: bytearray, wanted: tuple[str, ...]
) -> list[int]:
    dead = [i for i, s in enumerate(state_status) if s == ItemStatus.DEAD]
    if not wanted:
        return dead
    position = {item_id: i for i, item_id in enumerate(ids)}
    chosen: list[int] = []
    for item_id in wanted:
        if item_id not in position:
            raise ProdigyError(
                f"Job {job_id} has no item {item_id!r}.",
                hint=f"List the DLQ with `prodigy dlq list {job_id}`.",
            )
        index = position[item_id]
        if state_status[index] != ItemStatus.DEAD:
            status = STATUS_NAMES[ItemStatus(state_status[index])]
            raise ProdigyError(
                f"Item {item_id} of job {job_id} is not in the DLQ (it is {status}).",
                hint=f"List the DLQ with `prodigy dlq list {job_id}`.",
            )
        if index not in chosen:
            chosen.append(index)
    return chosen


def _choose_items(
    job: JobDir, state: JobState, wanted: tuple[str, ...], force: bool
) -> tuple[list[int], dict[int, str]]:
    """The DLQ items to run again (all, or those named by --item) and their ids."""
    if state.item_count is None:
        raise ProdigyError(f"Job {job.job_id} has not reached its map phase; it has no DLQ.")
    ids = open_frozen_items(job, state.item_count)
    try:
        chosen = _choose(job.job_id, ids.ids, state.status, wanted)
        id_of = {index: ids.ids[index] for index in chosen}
    finally:
        ids.close()
    return _without_manual_review(state, chosen, force), id_of


def _without_manual_review(state: JobState, chosen: list[int], force: bool) -> list[int]:
    """Leave out items a plain rerun cannot fix, saying so, unless --force includes them."""
    review = [i for i in chosen if needs_manual_review(state.history.get(i, []))]
    if not review or force:
        return chosen
    one = len(review) == 1
    say(
        f"Skipping {plural(len(review), 'item')} that {'needs' if one else 'need'} "
        "manual review (the same error keeps repeating, or the item lacks a field the "
        f"template uses); pass --force to include {'it' if one else 'them'}."
    )
    return [i for i in chosen if i not in review]


def _record_requeue(
    job: JobDir,
    state: JobState,
    chosen: list[int],
    id_of: dict[int, str],
    rounds: int,
) -> JobState:
    """Give each chosen item `rounds` more attempts; the state after the requeue."""
    requeue = Requeued(indexes=chosen, limits=[state.attempts[i] + rounds for i in chosen])
    state = append_records(job, state, [requeue])
    # Only now that the requeue is durable: the items have left the DLQ.
    events_log = EventLog(job.events, job.job_id)
    try:
        for index in chosen:
            events_log.emit(DlqItemRemoved(item_id=id_of[index], attempts=state.attempts[index]))
    finally:
        events_log.close()
    return state


@click.command("reprocess")
@click.argument("job_id")
@click.option("--max-parallel", type=click.IntRange(min=1), help="Agents at a time.")
@click.option("--item", "items", multiple=True, metavar="ID", help="Only this item (repeatable).")
@click.option("--force", is_flag=True, help="Also items marked for manual review.")
@click.option("--executor", metavar="local|dask://HOST:PORT", help="Where agents run.")
def reprocess(
    job_id: str,
    max_parallel: int | None,
    items: tuple[str, ...],
    force: bool,
    executor: str | None,
) -> int:
    """Run the DLQ items of JOB_ID again; successes leave the DLQ."""
    Settings.executor = executor
    job = find_job(job_id)
    lock = JobLock(job.lock, job.job_id, "dlq reprocess")
    lock.acquire()
    try:
        notice = lock.take_over_notice()
        if notice is not None:
            warn(notice)
        return _reprocess_locked(job, max_parallel, items, force)
    finally:
        lock.release()


def _reprocess_locked(
    job: JobDir, max_parallel: int | None, wanted: tuple[str, ...], force: bool
) -> int:
    # Imported here, like the engine below, so that `prodigy dlq list` stays quick to start.
    from prodigy.cli.common import check_claude, load_job_workflow

    meta = read_job_metadata(job)
    state = load_run_state(job, newest_checkpoint(job))
    chosen, id_of = _choose_items(job, state, wanted, force)
    if not chosen:
        say(f"No DLQ items to reprocess in job {job.job_id}.")
        return 0
    # A changed template is allowed here: fixing it is a common reason to reprocess.
    workflow = load_job_workflow(
        job, Path(meta.workflow_path), meta.workflow_hash, True, meta.profile or None
    )
    check_claude(workflow)
    say(f"Processing {plural(len(chosen), 'DLQ item')}...")
    status_before = state.ended
    rounds = workflow.error_policy.retry_config.max_attempts
    state = _record_requeue(job, state, chosen, id_of, rounds)
    return _run_requeued(job, meta, workflow, state, chosen, status_before, max_parallel)


def _run_requeued(
    job: JobDir,
    meta: JobMetadata,
    workflow: Workflow,
    state: JobState,
    chosen: list[int],
    status_before: JobEndStatus | None,
    max_parallel: int | None,
) -> int:
    """Run the requeued items; unless that completes the job, it ends with `status_before`."""
    # The engine is imported here so that `prodigy dlq list` stays quick to start.
    from prodigy.cli.common import claude_bin, open_runner, verbose
    from prodigy.engine import RunOptions, run_reprocess

    options = RunOptions(
        max_parallel=max_parallel or workflow.map.max_parallel,
        claude_bin=claude_bin(),
        verbose=verbose(),
    )
    runner, events = open_runner(
        job,
        meta,
        workflow,
        state,
        state.journal_bytes,
        options,
        DlqReprocessStarted(workflow=meta.workflow_path, items=len(chosen)),
    )
    try:
        return run_reprocess(runner, chosen, status_before)
    finally:
        events.close()
