"""`prodigy worktrees list|clean|merge`: what jobs run with `map.isolation: worktree` left in
git. Listing only reads (never the job's lock, so it is safe beside a run); clean and merge
hold the job's lock, so no run starts while they change its branches.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import click

from prodigy.cleaning import clean_refusal, clean_summary, lock_for_clean
from prodigy.cli.output import say, say_no_jobs, table, warn
from prodigy.cli.params import DurationParam
from prodigy.display import byte_size, plural
from prodigy.errors import JobNotFound, ProdigyError, UsageError
from prodigy.events import EventLog
from prodigy.final_merge import MergeResult, ask_on_terminal, merge_job_branch
from prodigy.git import Git
from prodigy.job import JobMetadata, read_job_metadata
from prodigy.job_worktrees import (
    JobWorktree,
    JobWorktrees,
    check_removable,
    describe_removal,
    find_job_worktrees,
    forced_removal,
    remove_job_worktrees,
)
from prodigy.lock import JobLock, is_locked
from prodigy.store import JobDir, find_job, find_repository, list_jobs
from prodigy.summary import summarize
from prodigy.worktree import parent_branch


@click.group("worktrees")
def worktrees() -> None:
    """The git worktrees and branches of jobs run with map.isolation: worktree."""


def _not_isolated(job_id: str) -> str:
    return f"Job {job_id} ran without worktree isolation (map.isolation: none)"


def _held_by_other(job: JobDir) -> bool:
    try:
        return is_locked(job.lock) is not None
    except OSError:
        return False


# ---- list --------------------------------------------------------------------------------------

COLUMNS = ["ITEM", "ATTEMPT", "STATE", "UNMERGED", "SIZE", "BRANCH", "WORKTREE"]


def _row(entry: JobWorktree) -> list[str]:
    unmerged = [plural(entry.unmerged, "commit")] if entry.unmerged else []
    if entry.uncommitted:
        unmerged.append("uncommitted changes")
    where = str(entry.worktree) if entry.worktree is not None else "-"
    if entry.checked_out_in is not None:
        where = f"{entry.checked_out_in} (not prodigy's)"
    elif entry.worktree is not None and not entry.registered:
        where += " (unknown to git)"
    return [
        "(parent)" if entry.role == "parent" else (entry.item_id or "?"),
        str(entry.attempt) if entry.attempt is not None else "-",
        entry.state,
        ", ".join(unmerged) or "no",
        byte_size(entry.size) if entry.size is not None else "-",
        entry.branch or "-",
        where,
    ]


async def _find_all(jobs: list[JobDir]) -> list[list[str]]:
    rows: list[list[str]] = []
    for job in jobs:
        try:
            meta = read_job_metadata(job)
            found = await find_job_worktrees(job, meta, running=_held_by_other(job))
        except ProdigyError as exc:
            warn(f"warning: job {job.job_id} skipped: {exc.message}")
            continue
        except OSError as exc:
            warn(f"warning: job {job.job_id} skipped: {exc.strerror or exc}.")
            continue
        rows.extend([job.job_id, *_row(entry)] for entry in found.entries)
    return rows


@worktrees.command("list")
@click.argument("job_id", required=False)
def list_worktrees(job_id: str | None) -> int:
    """Each worktree and branch of JOB_ID (or of every job of this repository): its item and
    attempt, state, unmerged work and size.

    States: running (the job's lock is held), merged, failed (a failed attempt's, kept),
    succeeded (its merge waits for a resume), orphaned (no recorded attempt names it, or a
    worktree without a branch), left (a completed job's branch not merged into yours:
    `prodigy worktrees merge`), unfinished (a resumable job's branch). UNMERGED counts the
    commits in neither the job's parent branch nor your base branch.
    """
    if job_id is not None:
        job = find_job(job_id)
        meta = read_job_metadata(job)
        found = asyncio.run(find_job_worktrees(job, meta, running=_held_by_other(job)))
        if not found.isolated:
            say(f"{_not_isolated(job.job_id)}, so it has no worktrees or branches.")
        elif not found.entries:
            say(f"Job {job.job_id} has no worktrees or branches left.")
        else:
            table(COLUMNS, [_row(entry) for entry in found.entries])
        return 0
    repo = find_repository(Path.cwd()).name
    jobs = list_jobs(repo)
    if not jobs:
        say_no_jobs(repo)
        return 0
    rows = asyncio.run(_find_all(jobs))
    if not rows:
        say(f"No job of repository {repo!r} has worktrees or branches left.")
        return 0
    table(["JOB ID", *COLUMNS], rows)
    return 0


# ---- clean -------------------------------------------------------------------------------------


@dataclass
class _Tally:
    jobs: int = 0
    worktrees: int = 0
    branches: int = 0
    size: int = 0

    def add(self, found: JobWorktrees) -> None:
        self.jobs += 1
        self.worktrees += len(found.worktrees)
        self.branches += len(found.branches)
        self.size += found.size

    def describe(self) -> str:
        worktrees = plural(self.worktrees, "worktree")
        branches = plural(self.branches, "branch", "branches")
        return f"{worktrees} and {branches} ({byte_size(self.size)})"


def _decide(
    job: JobDir, meta: JobMetadata, force: bool, dry_run: bool
) -> tuple[JobWorktrees, list[str]]:
    """What cleaning the job removes and the lines naming forced deletions; raises when the
    job is running, unfinished (without --force) or holds unmerged work (without --force)."""
    refusal = clean_refusal(summarize(job), force)
    if refusal is not None:
        raise refusal
    found = asyncio.run(find_job_worktrees(job, meta, running=False))
    forced = check_removable(found, force)
    return found, [forced_removal(entry, dry_run) for entry in forced]


def _clean_one(job: JobDir, force: bool, dry_run: bool) -> tuple[JobWorktrees, list[str]]:
    meta = read_job_metadata(job)
    if meta.isolation != "worktree":
        return JobWorktrees(job.job_id, Path(meta.workdir), False, ()), []
    if dry_run:
        return _decide(job, meta, force, dry_run=True)
    lock = lock_for_clean(job)
    try:
        # Decided under the lock: no run can start, or change the branches, from here on.
        found, forced = _decide(job, meta, force, dry_run=False)
        if found.entries:
            events = EventLog(job.events, job.job_id)
            try:
                asyncio.run(remove_job_worktrees(found, events))
            finally:
                events.close()
    finally:
        lock.release()
    return found, forced


def _what_would_go(found: JobWorktrees) -> list[str]:
    """A dry run's lines; what only --force deletes says what it holds."""
    lines = []
    for entry in found.entries:
        owner = entry.owner()
        held = f", holding {entry.work_description()}" if entry.holds_work else ""
        if entry.worktree is not None:
            size = byte_size(entry.size) if entry.size is not None else "gone from disk"
            work = held if entry.branch is None else ""
            lines.append(f"Would remove worktree {entry.worktree} ({owner}, {size}{work})")
        if entry.branch is not None:
            lines.append(f"Would delete branch {entry.branch} ({owner}{held})")
    return lines


def _clean_all(older_than: timedelta, force: bool, dry_run: bool) -> int:
    repo = find_repository(Path.cwd())
    verb = "Would remove" if dry_run else "Removed"
    now = datetime.now().astimezone()
    tally = _Tally()
    kept = skipped = 0
    for job in list_jobs(repo.name):
        if summarize(job, replay_journal=False).age(now) < older_than.total_seconds():
            kept += 1
            continue
        try:
            found, forced = _clean_one(job, force, dry_run)
        except JobNotFound:
            continue  # deleted by a `checkpoints clean` meanwhile
        except ProdigyError as exc:
            skipped += 1
            say(f"Skipped: {exc.message}")
            continue
        if not found.entries:
            continue
        for line in forced:
            say(line)
        say(f"{verb} {describe_removal(found)} of job {job.job_id}")
        tally.add(found)
    done = f"{verb} {tally.describe()} of {plural(tally.jobs, 'job')}"
    forced_only = "unfinished ones and work merged nowhere else go"
    say(clean_summary(done, kept, older_than, skipped, force, forced_only, dry_run, "removed"))
    return 0


@worktrees.command("clean")
@click.argument("job_id", required=False)
@click.option(
    "--all", "all_jobs", is_flag=True, help="Clean this repository's jobs (needs --older-than)."
)
@click.option(
    "--older-than",
    type=DurationParam(),
    help="With --all: jobs last updated longer ago than this (30m, 12h, 7d, 2w).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Also clean unfinished jobs, and delete work merged nowhere else (each is named).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def clean(
    job_id: str | None,
    all_jobs: bool,
    older_than: timedelta | None,
    force: bool,
    dry_run: bool,
) -> int:
    """Remove a job's worktrees and branches (JOB_ID), or old jobs' (--all --older-than 7d).

    Never a running job's; an unfinished job's, or a branch or worktree holding work merged
    nowhere else (not in the job's parent branch, not in your base branch), only with
    --force. Your own branches, worktrees and files are never touched.
    """
    if job_id is None:
        if not all_jobs:
            raise click.UsageError("Give the JOB_ID to clean, or --all --older-than D.")
        if older_than is None:
            raise click.UsageError(
                "--all needs --older-than (for example --older-than 7d) so recent jobs are kept."
            )
        return _clean_all(older_than, force, dry_run)
    if all_jobs:
        raise click.UsageError("Give either a JOB_ID or --all, not both.")
    if older_than is not None:
        raise click.UsageError("--older-than applies only with --all.")
    job = find_job(job_id)
    found, forced = _clean_one(job, force, dry_run)
    if not found.isolated:
        say(f"{_not_isolated(job.job_id)}; it has no worktrees or branches to remove.")
        return 0
    if not found.entries:
        say(f"Job {job.job_id} has no worktrees or branches left; nothing to remove.")
        return 0
    # A dry run names what holds work in its own lines.
    for line in _what_would_go(found) if dry_run else forced:
        say(line)
    if dry_run:
        say(
            f"Would remove {describe_removal(found)} of job {job.job_id}; nothing was removed "
            "(dry run)."
        )
    else:
        say(f"Removed {describe_removal(found)} of job {job.job_id}.")
    return 0


# ---- merge -------------------------------------------------------------------------------------


def _ask_or_refuse(question: str) -> bool:
    """Asked on a terminal; without one nothing can answer, so the merge needs -y."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "There is no terminal to ask on whether to merge; pass -y to merge without asking."
        )
    return ask_on_terminal(question)


async def _merge(job: JobDir, meta: JobMetadata, yes: bool) -> MergeResult:
    branch = parent_branch(meta.job_id)
    user = Git(Path(meta.workdir))
    if not await user.ok("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"):
        raise ProdigyError(
            f"Job {meta.job_id}'s branch {branch} does not exist any more (cleaned up?), so "
            "there is nothing to merge."
        )
    events = EventLog(job.events, job.job_id)
    try:
        again = f"prodigy worktrees merge {meta.job_id}"
        return await merge_job_branch(meta, events, yes, ask=_ask_or_refuse, again=again)
    finally:
        events.close()


@worktrees.command("merge")
@click.argument("job_id")
@click.option("-y", "--yes", is_flag=True, help="Merge without asking.")
def merge(job_id: str, yes: bool) -> int:
    """Merge a completed job's branch into the branch you started it from (the final merge,
    when it was left: declined, or run without -y and without a terminal).

    Refused when your uncommitted changes touch files the merge changes, or when it
    conflicts; nothing of yours is changed then.
    """
    job = find_job(job_id)
    meta = read_job_metadata(job)
    if meta.isolation != "worktree":
        raise ProdigyError(
            f"{_not_isolated(job.job_id)}: its work is already in your working tree, so there "
            "is no branch to merge."
        )
    lock = JobLock(job.lock, job.job_id, "merge")
    try:
        lock.acquire()
    except FileNotFoundError:
        raise JobNotFound(f"Job {job.job_id} was deleted by another process.") from None
    try:
        status = summarize(job)
        if not status.finished:
            raise ProdigyError(
                f"Job {job.job_id} is not finished ({status.status_label}), so its branch holds "
                "only part of its work; the merge comes at the end of the job.",
                hint=f"Resume it with `prodigy resume-job {job.job_id} -y`.",
            )
        result = asyncio.run(_merge(job, meta, yes))
    finally:
        lock.release()
    if result.outcome in ("merged", "up_to_date", "declined"):
        say(result.message)
        return 0
    raise ProdigyError(result.message)
