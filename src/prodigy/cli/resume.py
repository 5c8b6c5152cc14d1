"""`prodigy resume` and `prodigy resume-job`: validate a stopped job and run it to the end.

Resume holds the job's lock from before it reads the state until the run ends, so nothing
changes the job between validation and running.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
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
from prodigy.job import ItemsFile, JobMetadata, append_records, read_job_metadata
from prodigy.journal import JournalContents, read_journal
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


def _fresh_limits(
    state: JobState, indexes: Sequence[int], max_attempts: int, extra: int
) -> list[int]:
    rounds = max_attempts + extra
    return [state.attempts[i] + rounds for i in indexes]


def _item_ids(job: JobDir, indexes: Sequence[int]) -> list[str]:
    if not indexes:
        return []
    items = ItemsFile(job.items)
    try:
        return [items.ids[i] for i in indexes]
    finally:
        items.close()


@dataclass(frozen=True)
class ResumeRequest:
    """The flags of `resume-job`; a plain `resume` is all defaults."""

    force: bool = False
    max_parallel: int | None = None
    extra_retries: int = 0
    skip_validation: bool = False
    from_checkpoint: int | None = None


@dataclass(frozen=True)
class ResumePlan:
    """What a resume records before it runs, and the status lines that announce it.

    Decided from the state alone (`plan_resume`), so every refusal is raised before anything
    is printed or written.
    """

    said: tuple[str, ...]
    rollback_to: int | None = None
    requeue: tuple[int, ...] = ()
    limits: tuple[int, ...] = ()  # the new attempt limit of each requeued item
    rerun_reduce: bool = False
    out_of_dlq: tuple[int, ...] = ()  # the requeued items that leave the DLQ
    already_complete: bool = False  # nothing to record or run (--skip-validation on a done job)

    def records(self) -> list[Record]:
        """The journal records that carry out this plan (none for a plain resume)."""
        appended: list[Record] = []
        if self.rollback_to is not None:
            appended.append(RolledBack(to_version=self.rollback_to))
        if self.requeue or self.rerun_reduce:
            appended.append(
                Requeued(
                    indexes=list(self.requeue),
                    limits=list(self.limits),
                    rerun_reduce=self.rerun_reduce,
                )
            )
        return appended


def plan_resume(
    job_id: str,
    records: Sequence[Record],
    state: JobState,
    workflow: Workflow,
    request: ResumeRequest,
    checkpoint_files: Sequence[int],
) -> ResumePlan:
    """Decide what resuming `state` (the replay of `records`) does, or raise why it cannot.

    `checkpoint_files` (the versions on disk) only serve to name them when a version is refused.
    """
    head = f"Resuming job {job_id}"
    if request.from_checkpoint is not None:
        return _plan_rollback(
            job_id, records, state, request.from_checkpoint, checkpoint_files, head
        )
    c = counts(state)
    in_dlq = f", {c.dead} in DLQ" if c.dead else ""
    loaded = (
        f"Loaded checkpoint v{state.version}: {c.succeeded} completed, "
        f"{c.remaining} remaining{in_dlq}"
    )
    if phase(state, len(workflow.reduce)) == "done":
        if state.ended != "completed" and not request.force:
            # Interrupted or killed after its last step was recorded, before its end was: all
            # that is left is the end itself (the final merge, the `job_ended` record).
            return ResumePlan(said=(head, loaded, "All work is recorded; finishing the job"))
        return _plan_complete_job(job_id, state, workflow, request, (head, loaded))
    return _plan_unfinished_job(state, workflow, request, (head, loaded))


def _plan_rollback(
    job_id: str,
    records: Sequence[Record],
    state: JobState,
    to_version: int,
    checkpoint_files: Sequence[int],
    head: str,
) -> ResumePlan:
    if not 0 <= to_version <= state.version:
        on_disk = ", ".join(f"v{v}" for v in checkpoint_files) or "none"
        raise ProdigyError(
            f"Checkpoint v{to_version} does not exist for job {job_id}: versions "
            f"0 to {state.version} can be restored (checkpoint files on disk: {on_disk}).",
            exit_code=1,
        )
    target = counts(replay(records, to_version))
    return ResumePlan(
        said=(
            head,
            f"Loading checkpoint v{to_version}...",
            f"Rolling back to: {target.succeeded} completed, {target.remaining} remaining",
        ),
        rollback_to=to_version,
    )


def _plan_complete_job(
    job_id: str,
    state: JobState,
    workflow: Workflow,
    request: ResumeRequest,
    said: tuple[str, ...],
) -> ResumePlan:
    c = counts(state)
    if request.force:
        failed = state.indexes_with(ItemStatus.DEAD, ItemStatus.SKIPPED)
        max_attempts = workflow.error_policy.retry_config.max_attempts
        return ResumePlan(
            said=(
                *said,
                f"Forcing a re-run of {plural(len(failed), 'failed item')} and the reduce "
                "phase of a completed job",
            ),
            requeue=tuple(failed),
            limits=tuple(_fresh_limits(state, failed, max_attempts, request.extra_retries)),
            rerun_reduce=True,
            out_of_dlq=tuple(state.indexes_with(ItemStatus.DEAD)),
        )
    if c.dead:
        raise ProdigyError(
            f"No retriable items found in job {job_id}: nothing is pending and the "
            f"{plural(c.dead, 'failed item')} {'is' if c.dead == 1 else 'are'} in the DLQ.",
            hint=f"Use --force to retry {'it' if c.dead == 1 else 'them'} anyway, or "
            "`prodigy dlq reprocess "
            f"{job_id}`.",
        )
    if request.skip_validation:
        return ResumePlan(
            said=(*said, f"Job {job_id} is complete: nothing is left to run."),
            already_complete=True,
        )
    raise ProdigyError(
        f"Job {job_id} is already complete ({c.succeeded}/"
        f"{plural(c.total, 'item')} succeeded, reduce done).",
        hint="Use --force to re-run its reduce phase.",
    )


def _plan_unfinished_job(
    state: JobState, workflow: Workflow, request: ResumeRequest, said: tuple[str, ...]
) -> ResumePlan:
    lines = list(said)
    requeue: list[int] = []
    limits: list[int] = []
    dead = state.indexes_with(ItemStatus.DEAD) if request.force else []
    if dead:
        max_attempts = workflow.error_policy.retry_config.max_attempts
        requeue = list(dead)
        limits = _fresh_limits(state, dead, max_attempts, request.extra_retries)
        lines.append(f"Forcing {plural(len(dead), 'DLQ item')} back into the queue")
    extra = request.extra_retries
    if extra:
        retriable = state.indexes_with(ItemStatus.RETRIABLE)
        lines.append(f"Resuming with {plural(len(retriable), 'retriable item')}")
        lines.append(f"Granting {plural(extra, 'additional retry attempt')}")
        requeue += retriable
        limits += [state.limits[i] + extra for i in retriable]
    if phase(state, len(workflow.reduce)) == "reduce":
        lines.append(
            f"Map phase finished; resuming the reduce phase at step "
            f"{state.reduce_done + 1} of {len(workflow.reduce)}"
        )
    return ResumePlan(
        said=tuple(lines),
        requeue=tuple(requeue),
        limits=tuple(limits),
        out_of_dlq=tuple(dead),
    )


def resume_job_id(
    job_id: str,
    force: bool = False,
    max_parallel: int | None = None,
    max_additional_retries: int = 0,
    skip_validation: bool = False,
    from_checkpoint: int | None = None,
) -> int:
    request = ResumeRequest(
        force, max_parallel, max_additional_retries, skip_validation, from_checkpoint
    )
    job = find_job(job_id)
    lock = JobLock(job.lock, job.job_id, "resume")
    lock.acquire()
    try:
        if lock.taken_over is not None:
            warn(
                f"Taking over the lock of job {job.job_id} left by "
                f"{lock.taken_over.describe()}, which is no longer running."
            )
        return _resume_locked(job, request)
    finally:
        lock.release()


def _resume_locked(job: JobDir, request: ResumeRequest) -> int:
    stopped = _load_stopped_job(job, request)
    state, contents = stopped.state, stopped.contents
    plan = plan_resume(
        job.job_id, contents.records, state, stopped.workflow, request, job.checkpoint_versions()
    )
    if plan.already_complete:
        say("\n".join(plan.said))
        return 0
    # Read before anything is recorded, so a damaged items file changes nothing.
    out_of_dlq_ids = _item_ids(job, plan.out_of_dlq)
    say("\n".join(plan.said))
    if stopped.latest_damaged:
        _set_aside_corrupt(job)
    state, contents = _record_plan(job, contents, state, plan, out_of_dlq_ids)
    return _run_resumed(job, stopped.meta, stopped.workflow, state, contents, request)


@dataclass(frozen=True)
class _StoppedJob:
    """A job read back under its lock and checked: the state to plan a resume from."""

    meta: JobMetadata
    contents: JournalContents
    state: JobState
    workflow: Workflow
    latest_damaged: bool  # the latest checkpoint is unreadable and must be set aside


def _load_stopped_job(job: JobDir, request: ResumeRequest) -> _StoppedJob:
    meta = read_job_metadata(job)
    contents = read_journal(job.journal)
    state = replay(contents.records)
    checkpoint, latest_damaged = _read_latest_checkpoint(job, request)
    if checkpoint is not None and not request.skip_validation:
        _check_consistency(job, checkpoint, contents.records, state)
    workflow = load_job_workflow(
        job, Path(meta.workflow_path), meta.workflow_hash, request.skip_validation
    )
    check_claude(workflow)
    return _StoppedJob(meta, contents, state, workflow, latest_damaged)


def _read_latest_checkpoint(
    job: JobDir, request: ResumeRequest
) -> tuple[CheckpointHead | None, bool]:
    """The latest checkpoint (None if there is none yet), and whether it is damaged.

    Damage is only survivable when the resume does not depend on that file: --force or
    --from-checkpoint rebuild from the journal.
    """
    try:
        return (read_checkpoint(job) if job.latest.exists() else None), False
    except StateError:
        if request.from_checkpoint is None and not request.force:
            raise
        warn(
            f"The latest checkpoint of job {job.job_id} is unreadable; rebuilding from the "
            "journal instead."
        )
        return None, True


def _record_plan(
    job: JobDir,
    contents: JournalContents,
    state: JobState,
    plan: ResumePlan,
    out_of_dlq_ids: Sequence[str],
) -> tuple[JobState, JournalContents]:
    """Append the plan's records, then log what they did; the state and journal after them."""
    appended = plan.records()
    if appended:
        state, contents = append_records(job, contents, appended)
    # Only now that the records are durable: the log must never report an item out of the DLQ
    # (or a rollback) that a crash could still take back.
    if plan.rollback_to is not None or plan.out_of_dlq:
        events = EventLog(job.events, job.job_id)
        try:
            if plan.rollback_to is not None:
                events.emit(CheckpointRestored(version=plan.rollback_to, new_version=state.version))
            for index, item_id in zip(plan.out_of_dlq, out_of_dlq_ids, strict=True):
                events.emit(DlqItemRemoved(item_id=item_id, attempts=state.attempts[index]))
        finally:
            events.close()
    return state, contents


def _continuing_lines(request: ResumeRequest, workflow: Workflow, state: JobState) -> list[str]:
    """What the run is about to do, said after the plan is recorded."""
    lines: list[str] = []
    configured = workflow.map.max_parallel
    remaining = counts(state).remaining
    if request.from_checkpoint is not None:
        lines.append(f"Continuing from checkpoint v{request.from_checkpoint}...")
    if request.max_parallel is not None and request.max_parallel != configured:
        lines.append(
            f"Resuming job with max_parallel override: {configured} -> {request.max_parallel}"
        )
        lines.append(
            f"Processing {plural(remaining, 'remaining item')} with "
            f"{plural(request.max_parallel, 'parallel agent')}..."
        )
    elif request.from_checkpoint is None and phase(state, len(workflow.reduce)) == "map":
        lines.append(f"Continuing with {plural(remaining, 'pending item')}...")
    return lines


def _run_resumed(
    job: JobDir,
    meta: JobMetadata,
    workflow: Workflow,
    state: JobState,
    contents: JournalContents,
    request: ResumeRequest,
) -> int:
    for line in _continuing_lines(request, workflow, state):
        say(line)
    parallel = request.max_parallel or workflow.map.max_parallel
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
@click.option("--executor", metavar="local|dask://HOST:PORT", help="Where agents run.")
def resume(job_id: str | None, yes: bool, executor: str | None) -> int:
    """Resume the newest unfinished job of this repository (or JOB_ID)."""
    Settings.yes = yes
    Settings.executor = executor
    return resume_job_id(job_id or _newest_unfinished_job())


@click.command("resume-job")
@click.argument("job_id")
@click.option("-y", "--yes", is_flag=True, help="Answer yes to every question.")
@click.option("--executor", metavar="local|dask://HOST:PORT", help="Where agents run.")
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
    executor: str | None,
    force: bool,
    max_parallel: int | None,
    max_additional_retries: int,
    skip_validation: bool,
    from_checkpoint: int | None,
    verbose_flag: bool,
) -> int:
    """Resume one job by id."""
    Settings.yes = yes
    Settings.executor = executor
    if verbose_flag:
        Settings.verbose = max(Settings.verbose, 1)
    return resume_job_id(
        job_id, force, max_parallel, max_additional_retries, skip_validation, from_checkpoint
    )
