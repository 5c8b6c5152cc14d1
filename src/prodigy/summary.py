"""What a person wants to know about a stored job, read without changing or locking anything.

`summarize(job)` combines metadata.json (identity, times), the journal (counts, phase, cost: the
source of truth) and the lock (is it running, or did it crash?). A damaged job never raises:
what could not be read is listed in `JobSummary.problems` and the rest is filled in as best it can.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from prodigy.errors import StateError
from prodigy.job import StoredMetadata, load_state, read_stored_metadata, stored_metadata
from prodigy.lock import LockHolder, is_locked
from prodigy.state import Counts, JobState, counts, phase
from prodigy.store import JobDir, list_jobs, time_from_job_id

END_STATUSES = ("completed", "failed", "stopped", "interrupted")
CountsSource = Literal["journal", "metadata", "none"]


@dataclass(frozen=True)
class JobSummary:
    job_id: str
    repo: str
    state_dir: Path
    workflow_name: str
    workflow_path: str
    workdir: str
    # running | completed | failed | stopped | interrupted | unknown
    status: str
    crashed: bool  # metadata says running but no live process holds the lock
    holder: LockHolder | None
    phase: str
    counts: Counts
    counts_source: CountsSource
    version: int | None  # the journal's version: every version up to it can be restored
    checkpoint_versions: tuple[int, ...]  # files on disk, newest first
    latest_checkpoint: int | None  # the version latest.json points to
    started_at: datetime | None
    updated_at: datetime | None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    problems: tuple[str, ...]

    @property
    def finished(self) -> bool:
        """Completed, with or without items in the DLQ; anything else could still be resumed."""
        return self.status == "completed"

    @property
    def running(self) -> bool:
        return self.holder is not None

    @property
    def status_label(self) -> str:
        if self.crashed:
            label = "interrupted (crashed)"
        elif self.holder is not None and self.holder.purpose not in ("cook", "resume", "run"):
            label = f"running ({self.holder.purpose})"
        else:
            label = self.status
        # Listings mark a damaged job instead of failing on it; `problems` says what and how.
        return f"{label} (damaged)" if self.problems else label

    def age(self, now: datetime | None = None) -> float:
        """Seconds since the last update (since the directory changed, if that is unknown)."""
        current = now or datetime.now().astimezone()
        if self.updated_at is not None:
            return (current - self.updated_at).total_seconds()
        try:
            mtime = self.state_dir.stat().st_mtime
        except OSError:
            return 0.0
        return current.timestamp() - mtime


def _read_metadata(job: JobDir) -> tuple[StoredMetadata | None, str | None]:
    repair = f"`prodigy checkpoints repair {job.job_id}` rebuilds it"
    try:
        return read_stored_metadata(job), None
    except FileNotFoundError:
        return None, f"{job.metadata} is missing; {repair}"
    except StateError as exc:
        return None, f"{exc.message.rstrip('.')}; {repair}"
    except OSError as exc:
        return None, f"{job.metadata} cannot be read ({exc.strerror or exc})"


def _read_state(job: JobDir) -> tuple[JobState | None, str | None]:
    try:
        state = load_state(job)
    except StateError as exc:
        return None, exc.message.rstrip(".")
    except OSError as exc:
        return None, f"{job.journal} cannot be read ({exc.strerror or exc})"
    except (ValueError, IndexError) as exc:
        return None, f"the journal {job.journal} does not replay ({exc})"
    return state, None


def _status(
    meta_status: str | None, ended: str | None, holder: LockHolder | None
) -> tuple[str, bool]:
    """The job's status and whether it crashed, trusting a live lock, then the journal."""
    if holder is not None:
        return "running", False
    if ended == "completed":
        # The journal records the end before metadata.json is rewritten: a crash in between
        # still leaves a completed job.
        return "completed", False
    if meta_status == "running":
        return "interrupted", True
    if meta_status in END_STATUSES:
        return meta_status, False
    if ended is not None:
        return ended, False
    return "unknown", False


@dataclass(frozen=True)
class _Progress:
    """How far a job got and what it cost, as one source tells it."""

    counts: Counts
    source: CountsSource
    phase: str
    version: int | None
    cost_usd: float
    input_tokens: int
    output_tokens: int


def _progress_from_journal(state: JobState, reduce_steps: int) -> _Progress:
    spent = state.spent
    return _Progress(
        counts=counts(state),
        source="journal",
        phase=phase(state, reduce_steps),
        version=state.version,
        cost_usd=spent.cost_usd,
        input_tokens=spent.input_tokens,
        output_tokens=spent.output_tokens,
    )


def _progress_from_metadata(meta: StoredMetadata, source: CountsSource) -> _Progress:
    """metadata.json's copy as of its last update, for a journal left unread or unreadable."""
    return _Progress(
        counts=meta.counts,
        source=source,
        phase=meta.phase,
        version=meta.version,
        cost_usd=meta.cost_usd,
        input_tokens=meta.input_tokens,
        output_tokens=meta.output_tokens,
    )


def _other_holder(job: JobDir) -> LockHolder | None:
    """Who else holds the job's lock, if anyone: a live run of it."""
    try:
        holder = is_locked(job.lock)
    except OSError:
        return None
    if holder is not None and (holder.pid, holder.host) == (os.getpid(), socket.gethostname()):
        # This process holds the lock (a clean deciding under it): nobody else is running it.
        return None
    return holder


def _checkpoint_files(job: JobDir) -> tuple[int, ...]:
    try:
        return tuple(job.checkpoint_versions())
    except OSError:
        return ()


def summarize(job: JobDir, replay_journal: bool = True) -> JobSummary:
    """Everything the listings show about one job. `replay_journal=False` trusts metadata.json
    for counts (cheaper, and enough to decide whether a job is finished)."""
    problems: list[str] = []
    found, problem = _read_metadata(job)
    if problem:
        problems.append(problem)
    meta = found if found is not None else stored_metadata({})
    state: JobState | None = None
    if replay_journal:
        state, problem = _read_state(job)
        if problem:
            problems.append(problem)
    problem = job.latest_problem(expected=state is not None and state.item_count is not None)
    if problem:
        problems.append(f"{problem}; resume rebuilds the state from the journal")
    holder = _other_holder(job)
    status, crashed = _status(meta.status, state.ended if state else None, holder)
    if state is not None:
        progress = _progress_from_journal(state, meta.reduce_steps)
    else:
        progress = _progress_from_metadata(meta, "metadata" if found is not None else "none")
    return JobSummary(
        job_id=job.job_id,
        repo=meta.repo or job.repo,
        state_dir=job.path,
        workflow_name=meta.workflow_name,
        workflow_path=meta.workflow_path,
        workdir=meta.workdir,
        status=status,
        crashed=crashed,
        holder=holder,
        phase=progress.phase,
        counts=progress.counts,
        counts_source=progress.source,
        version=progress.version,
        checkpoint_versions=_checkpoint_files(job),
        latest_checkpoint=job.latest_version(),
        started_at=meta.created_at or time_from_job_id(job.job_id),
        updated_at=meta.updated_at,
        cost_usd=progress.cost_usd,
        input_tokens=progress.input_tokens,
        output_tokens=progress.output_tokens,
        problems=tuple(problems),
    )


def repository_summaries(repo: str) -> list[JobSummary]:
    """Every job of the repository, newest first."""
    return [summarize(job) for job in reversed(list_jobs(repo))]


def failed_split(c: Counts) -> str:
    """`10 in DLQ, 10 retriable`: where the failed items stand."""
    parts = [f"{c.dead} in DLQ", f"{c.retriable} retriable"]
    if c.skipped:
        parts.append(f"{c.skipped} skipped")
    return ", ".join(parts)


def describe_failed(c: Counts) -> str:
    """`20 (10 in DLQ, 10 retriable)`, the wording of the guide's `checkpoints list`."""
    return f"{c.failed} ({failed_split(c)})"
