"""When a stored job, or what it left in git, may be deleted: never while it runs (the
deleter holds the job's lock, so nothing starts meanwhile), and an unfinished job only with
--force, since a resume would need it. `checkpoints clean` and `worktrees clean` share these
rules; what may go inside git is `job_worktrees`'.
"""

from __future__ import annotations

from datetime import timedelta

from prodigy.display import plural
from prodigy.durations import format_duration
from prodigy.errors import JobLocked, JobNotFound, ProdigyError
from prodigy.lock import JobLock, LockHolder, is_locked
from prodigy.store import JobDir
from prodigy.summary import JobSummary


def running_error(job_id: str, holder: LockHolder | None) -> JobLocked:
    who = holder.describe() if holder is not None else "another process"
    return JobLocked(
        f"Job {job_id} is running ({who}) and cannot be cleaned while it runs.",
        hint="Wait for it to end, or stop that process first.",
    )


def clean_refusal(s: JobSummary, force: bool) -> ProdigyError | None:
    """Why this job must not be cleaned now, or None."""
    if s.holder is not None:
        return running_error(s.job_id, s.holder)
    if s.finished or force:
        return None
    if s.status == "unknown":
        hint = (
            f"Its state cannot be read (see `prodigy sessions show {s.job_id}`); pass --force "
            "to delete it anyway."
        )
    else:
        hint = f"Resume it with `prodigy resume-job {s.job_id}`, or pass --force to delete it."
    return ProdigyError(
        f"Job {s.job_id} is not finished ({s.status_label}, {s.counts.succeeded}/"
        f"{plural(s.counts.total, 'item')} succeeded), so cleaning it would delete resumable "
        "work.",
        hint=hint,
    )


def clean_summary(
    done: str,
    kept: int,
    older_than: timedelta,
    skipped: int,
    force: bool,
    forced_only: str,
    dry_run: bool,
    dry_nothing: str,
) -> str:
    """The last line of an `--all --older-than` clean: what went, what was kept or skipped
    and why (`forced_only`: what needs --force), and whether this was only a dry run."""
    summary = done
    if kept:
        summary += f"; kept {kept} updated within the last {format_duration(older_than)}"
    if skipped:
        summary += f"; skipped {skipped}"
        if not force:
            summary += f" ({forced_only} only with --force; running ones never)"
    return summary + (f"; nothing was {dry_nothing} (dry run)." if dry_run else ".")


def lock_for_clean(job: JobDir, purpose: str = "clean") -> JobLock:
    """The job's lock, or the running error naming its holder."""
    lock = JobLock(job.lock, job.job_id, purpose)
    try:
        lock.acquire()
    except FileNotFoundError:
        raise JobNotFound(
            f"Checkpoint not found: job {job.job_id} was deleted by another process."
        ) from None
    except JobLocked:
        raise running_error(job.job_id, is_locked(job.lock)) from None
    return lock
