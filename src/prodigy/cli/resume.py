"""`prodigy resume` and `prodigy resume-job`: validate a stopped job and run it to the end.

Resume holds the job's lock from before it reads the state until the run ends, so nothing
changes the job between validation and running.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from prodigy.checkpoint import CheckpointHead, read_checkpoint
from prodigy.cli.common import check_claude, claude_bin, execute, load_job_workflow, verbose
from prodigy.cli.output import Settings, say, warn
from prodigy.display import plural
from prodigy.engine import RunOptions
from prodigy.errors import ProdigyError, StateError
from prodigy.events import (
    CheckpointRestored,
    DlqItemRemoved,
    EventLog,
    JobResumed,
    count_fields,
)
from prodigy.job import ItemsFile, append_records, read_job_metadata
from prodigy.journal import read_journal
from prodigy.lock import JobLock
from prodigy.state import (
    ItemStatus,
    JobState,
    Record,
    Requeued,
    RolledBack,
    counts,
    phase,
    replay,
)
from prodigy.store import JobDir, find_job, find_repository, list_jobs
from prodigy.workflow import Workflow


def _set_aside_corrupt(job: JobDir) -> None:
    """Keep a damaged latest checkpoint under a name that no write or retention touches."""
    target = job.latest.resolve()
    if target.exists():
        aside = target.with_name(f"corrupt-{target.name}")
        os.replace(target, aside)
        warn(f"The damaged checkpoint was kept as {aside}.")
    job.latest.unlink(missing_ok=True)


def _check_consistency(
    job: JobDir, checkpoint: CheckpointHead, records: list[Any], state: JobState
) -> None:
    if checkpoint.job_id != job.job_id:
        raise StateError(
            f"Checkpoint {job.latest.resolve()} belongs to job {checkpoint.job_id!r}, "
            f"not {job.job_id}.",
            hint="Pass --skip-validation to rebuild the state from the journal instead.",
        )
    version = checkpoint.version
    if version > state.version:
        raise StateError(
            f"Checkpoint v{version} of job {job.job_id} is ahead of its journal "
            f"(v{state.version}): the state is inconsistent.",
            hint="Pass --skip-validation to trust the journal, or --from-checkpoint N.",
        )
    # Usually the checkpoint is of the newest version: no second replay needed.
    at = counts(state if version == state.version else replay(records, version))
    stored = checkpoint.counts
    # Only counts no record can change within one version: a requeue (--force, reprocess)
    # moves items out of the DLQ, and freezing the items sets the total, without a new one.
    expected = {"total": at.total, "succeeded": at.succeeded}
    found = {"total": stored.total, "succeeded": stored.succeeded}
    if not stored.total:
        expected.pop("total")
        found.pop("total")
    if expected != found:
        raise StateError(
            f"Checkpoint v{version} of job {job.job_id} disagrees with its journal "
            f"(checkpoint {found}, journal {expected}): the state is inconsistent.",
            hint="Pass --skip-validation to trust the journal, or --from-checkpoint N.",
        )


def _fresh_limits(state: JobState, indexes: list[int], workflow: Workflow, extra: int) -> list[int]:
    rounds = workflow.error_policy.retry_config.max_attempts + extra
    return [state.attempts[i] + rounds for i in indexes]


def _item_ids(job: JobDir, indexes: list[int]) -> list[str]:
    if not indexes:
        return []
    items = ItemsFile(job.items)
    try:
        return [items.ids[i] for i in indexes]
    finally:
        items.close()


def resume_job_id(
    job_id: str,
    force: bool = False,
    max_parallel: int | None = None,
    max_additional_retries: int = 0,
    skip_validation: bool = False,
    from_checkpoint: int | None = None,
) -> int:
    job = find_job(job_id)
    lock = JobLock(job.lock, job.job_id, "resume")
    lock.acquire()
    try:
        if lock.taken_over is not None:
            warn(
                f"Taking over the lock of job {job.job_id} left by "
                f"{lock.taken_over.describe()}, which is no longer running."
            )
        return _resume_locked(
            job, force, max_parallel, max_additional_retries, skip_validation, from_checkpoint
        )
    finally:
        lock.release()


def _resume_locked(
    job: JobDir,
    force: bool,
    max_parallel: int | None,
    extra_retries: int,
    skip_validation: bool,
    from_checkpoint: int | None,
) -> int:
    meta = read_job_metadata(job)
    contents = read_journal(job.journal)
    records = contents.records
    state = replay(records)
    latest_damaged = False
    try:
        checkpoint = read_checkpoint(job) if job.latest.exists() else None
    except StateError:
        if from_checkpoint is None and not force:
            raise
        latest_damaged = True
        checkpoint = None
        warn(
            f"The latest checkpoint of job {job.job_id} is unreadable; rebuilding from the "
            "journal instead."
        )
    if checkpoint is not None and not skip_validation:
        _check_consistency(job, checkpoint, records, state)
    workflow = load_job_workflow(job, Path(meta.workflow_path), meta.workflow_hash, skip_validation)
    check_claude(workflow)

    # Status lines are printed once every refusal has been ruled out.
    said: list[str] = [f"Resuming job {job.job_id}"]
    requeue: list[int] = []
    limits: list[int] = []
    out_of_dlq: list[int] = []
    rerun_reduce = False
    if from_checkpoint is not None:
        if not 0 <= from_checkpoint <= state.version:
            on_disk = ", ".join(f"v{v}" for v in job.checkpoint_versions()) or "none"
            raise ProdigyError(
                f"Checkpoint v{from_checkpoint} does not exist for job {job.job_id}: versions "
                f"0 to {state.version} can be restored (checkpoint files on disk: {on_disk}).",
                exit_code=1,
            )
        said.append(f"Loading checkpoint v{from_checkpoint}...")
        target = replay(records, from_checkpoint)
        tc = counts(target)
        said.append(f"Rolling back to: {tc.succeeded} completed, {tc.remaining} remaining")
    else:
        c = counts(state)
        extra = f", {c.dead} in DLQ" if c.dead else ""
        said.append(
            f"Loaded checkpoint v{state.version}: {c.succeeded} completed, "
            f"{c.remaining} remaining{extra}"
        )
        current = phase(state, len(workflow.reduce))
        dead = state.indexes_with(ItemStatus.DEAD, ItemStatus.SKIPPED)
        if current == "done":
            if force:
                requeue = dead
                out_of_dlq = state.indexes_with(ItemStatus.DEAD)
                limits = _fresh_limits(state, dead, workflow, extra_retries)
                rerun_reduce = True
                said.append(
                    f"Forcing a re-run of {plural(len(dead), 'failed item')} and the reduce "
                    "phase of a completed job"
                )
            elif c.dead:
                raise ProdigyError(
                    f"No retriable items found in job {job.job_id}: nothing is pending and the "
                    f"{plural(c.dead, 'failed item')} {'is' if c.dead == 1 else 'are'} in the DLQ.",
                    hint=f"Use --force to retry {'it' if c.dead == 1 else 'them'} anyway, or "
                    "`prodigy dlq reprocess "
                    f"{job.job_id}`.",
                )
            elif skip_validation:
                said.append(f"Job {job.job_id} is complete: nothing is left to run.")
                say("\n".join(said))
                return 0
            else:
                raise ProdigyError(
                    f"Job {job.job_id} is already complete ({c.succeeded}/"
                    f"{plural(c.total, 'item')} succeeded, reduce done).",
                    hint="Use --force to re-run its reduce phase.",
                )
        else:
            if force and state.indexes_with(ItemStatus.DEAD):
                requeue = state.indexes_with(ItemStatus.DEAD)
                out_of_dlq = list(requeue)
                limits = _fresh_limits(state, requeue, workflow, extra_retries)
                said.append(f"Forcing {plural(len(requeue), 'DLQ item')} back into the queue")
            retriable = state.indexes_with(ItemStatus.RETRIABLE)
            if extra_retries:
                said.append(f"Resuming with {plural(len(retriable), 'retriable item')}")
                said.append(f"Granting {plural(extra_retries, 'additional retry attempt')}")
                requeue += retriable
                limits += [state.limits[i] + extra_retries for i in retriable]
            if current == "reduce":
                said.append(
                    f"Map phase finished; resuming the reduce phase at step "
                    f"{state.reduce_done + 1} of {len(workflow.reduce)}"
                )

    # Read before anything is recorded, so a damaged items file changes nothing.
    out_of_dlq_ids = _item_ids(job, out_of_dlq)
    say("\n".join(said))
    if latest_damaged:
        _set_aside_corrupt(job)
    appended: list[Record] = []
    if from_checkpoint is not None:
        appended.append(RolledBack(to_version=from_checkpoint))
    if requeue or rerun_reduce:
        appended.append(Requeued(indexes=requeue, limits=limits, rerun_reduce=rerun_reduce))
    if appended:
        state, contents = append_records(job, contents, appended)
    # Only now that the records are durable: the log must never report an item out of the DLQ
    # (or a rollback) that a crash could still take back.
    if from_checkpoint is not None or out_of_dlq:
        events = EventLog(job.events, job.job_id)
        try:
            if from_checkpoint is not None:
                events.emit(CheckpointRestored(version=from_checkpoint, new_version=state.version))
            for index, item_id in zip(out_of_dlq, out_of_dlq_ids, strict=True):
                events.emit(DlqItemRemoved(item_id=item_id, attempts=state.attempts[index]))
        finally:
            events.close()

    configured = workflow.map.max_parallel
    parallel = max_parallel or configured
    remaining = counts(state).remaining
    if from_checkpoint is not None:
        say(f"Continuing from checkpoint v{from_checkpoint}...")
    if max_parallel is not None and max_parallel != configured:
        say(f"Resuming job with max_parallel override: {configured} -> {max_parallel}")
        say(
            f"Processing {plural(remaining, 'remaining item')} with "
            f"{plural(max_parallel, 'parallel agent')}..."
        )
    elif from_checkpoint is None and phase(state, len(workflow.reduce)) == "map":
        say(f"Continuing with {plural(remaining, 'pending item')}...")
    options = RunOptions(max_parallel=parallel, claude_bin=claude_bin(), verbose=verbose())
    return execute(
        job,
        meta,
        workflow,
        state,
        contents.valid_bytes,
        options,
        # As the run starts: after any rollback or requeue above, so `remaining` is its work.
        JobResumed(
            workflow=meta.workflow_path, version=state.version, **count_fields(counts(state))
        ),
    )


def _newest_unfinished_job() -> str:
    repo = find_repository(Path.cwd())
    for job in reversed(list_jobs(repo.name)):
        try:
            status = job.read_metadata().get("status")
        except (StateError, OSError):
            continue
        if status != "completed":
            return job.job_id
    raise ProdigyError(
        f"No unfinished job found for repository {repo.name!r}.",
        hint="List jobs with `prodigy sessions show`, or start one with `prodigy cook WORKFLOW`.",
    )


@click.command("resume")
@click.argument("job_id", required=False)
@click.option("-y", "--yes", is_flag=True, help="Answer yes to every question.")
def resume(job_id: str | None, yes: bool) -> int:
    """Resume the newest unfinished job of this repository (or JOB_ID)."""
    Settings.yes = yes
    return resume_job_id(job_id or _newest_unfinished_job())


@click.command("resume-job")
@click.argument("job_id")
@click.option("-y", "--yes", is_flag=True, help="Answer yes to every question.")
@click.option("--force", is_flag=True, help="Also retry DLQ items; re-run a complete job.")
@click.option("--max-parallel", type=click.IntRange(min=1), help="Agents at a time, this run.")
@click.option(
    "--max-additional-retries",
    type=click.IntRange(min=0),
    default=0,
    help="Extra attempts for each failed item.",
)
@click.option("--skip-validation", is_flag=True, help="Skip the pre-resume safety checks.")
@click.option("--from-checkpoint", type=click.IntRange(min=0), help="Restore version N first.")
@click.option(
    "--verbose",
    "verbose_flag",
    is_flag=True,
    help="A line per ended attempt; tracebacks on errors.",
)
def resume_job(
    job_id: str,
    yes: bool,
    force: bool,
    max_parallel: int | None,
    max_additional_retries: int,
    skip_validation: bool,
    from_checkpoint: int | None,
    verbose_flag: bool,
) -> int:
    """Resume one job by id."""
    Settings.yes = yes
    if verbose_flag:
        Settings.verbose = max(Settings.verbose, 1)
    return resume_job_id(
        job_id, force, max_parallel, max_additional_retries, skip_validation, from_checkpoint
    )
