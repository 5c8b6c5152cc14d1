"""What the commands that run items share (cook, resume, dlq reprocess): the Claude
pre-flight, loading a job's workflow back, and starting a runner.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from prodigy.cli.output import Settings
from prodigy.engine import JobRunner, RunOptions, run_job
from prodigy.errors import ProdigyError
from prodigy.events import Event, EventLog
from prodigy.executors import choose_executor
from prodigy.job import JobMetadata
from prodigy.journal import Journal
from prodigy.progress import make_reporter
from prodigy.state import JobState
from prodigy.steps import claude_available
from prodigy.store import JobDir
from prodigy.workflow import Workflow, load_workflow


def verbose() -> bool:
    return Settings.verbose > 0


def claude_bin() -> str:
    return os.environ.get("PRODIGY_CLAUDE_BIN") or "claude"


def check_claude(workflow: Workflow) -> None:
    """A workflow with claude steps needs the Claude CLI before anything runs."""
    if workflow.uses_claude() and not claude_available(claude_bin()):
        raise ProdigyError(
            f"The Claude Code CLI {claude_bin()!r} cannot be found or run, and this workflow "
            "has claude steps.",
            hint="Install it (`npm install -g @anthropic-ai/claude-code`) or point "
            "PRODIGY_CLAUDE_BIN at the executable.",
        )


def load_job_workflow(
    job: JobDir, path: Path, workflow_hash: str, skip_validation: bool, profile: str | None = None
) -> Workflow:
    """The job's workflow loaded back, with `profile` (the one chosen at cook unless a new
    --profile overrides it); its secrets are read again from the environment."""
    if not path.exists():
        raise ProdigyError(
            f"Workflow file not found: {path} (job {job.job_id} was started from it).",
            hint="Restore it or recreate a workflow with the same structure at that path, then "
            f"run `prodigy resume-job {job.job_id}` again.",
        )
    workflow = load_workflow(path, profile)
    if workflow.source_hash != workflow_hash and not skip_validation:
        raise ProdigyError(
            f"Workflow file {path} has changed since job {job.job_id} started, so resuming "
            "could mix two different workflows.",
            hint="Restore the original file, or pass --skip-validation to resume with the "
            "changed one.",
        )
    return workflow


def execute(
    job: JobDir,
    meta: JobMetadata,
    workflow: Workflow,
    state: JobState,
    journal_valid_bytes: int | None,
    options: RunOptions,
    first_event: Event,
) -> int:
    """Open the journal and events log and run the job to its end or interruption."""
    runner, events = open_runner(
        job, meta, workflow, state, journal_valid_bytes, options, first_event
    )
    try:
        return run_job(runner)
    finally:
        events.close()


def open_runner(
    job: JobDir,
    meta: JobMetadata,
    workflow: Workflow,
    state: JobState,
    journal_valid_bytes: int | None,
    options: RunOptions,
    first_event: Event,
) -> tuple[JobRunner, EventLog]:
    # The command line's -y and --executor, checked before anything is written.
    executor = choose_executor(Settings.executor, workflow, meta.isolation)
    options = dataclasses.replace(options, yes=options.yes or Settings.yes, executor=executor)
    journal = Journal(job.journal, journal_valid_bytes)
    events = EventLog(job.events, job.job_id)
    events.emit(first_event)
    runner = JobRunner(job, meta, workflow, state, journal, events, make_reporter(), options)
    return runner, events
