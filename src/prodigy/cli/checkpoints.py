"""`prodigy checkpoints list|show|clean`: where a job stands, its checkpoint files, and deleting
stored jobs. Listing and showing never change anything; clean deletes whole job directories,
and the worktrees and branches of the job, under the job's lock, so a run can never start on a
half-deleted job.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from datetime import datetime, timedelta
from pathlib import Path

import click
import msgspec

from prodigy.checkpoint import decode_checkpoint_head, encode_checkpoint
from prodigy.cleaning import clean_refusal, clean_summary, lock_for_clean
from prodigy.cli.output import say, say_no_jobs, table, warn
from prodigy.cli.params import DurationParam
from prodigy.display import byte_size, plural
from prodigy.durations import format_duration
from prodigy.errors import JobNotFound, ProdigyError, StateError
from prodigy.job import load_state, metadata_document, read_job_metadata
from prodigy.job_worktrees import (
    JobWorktree,
    JobWorktrees,
    WorktreesNotFound,
    check_removable,
    describe_removal,
    find_job_worktrees,
    forced_removal,
    job_worktree_dirs,
    remove_job_worktrees,
)
from prodigy.lock import is_locked
from prodigy.store import (
    JobDir,
    find_job,
    find_repository,
    jobs_root,
    list_jobs,
    write_checkpoint,
)
from prodigy.summary import JobSummary, describe_failed, repository_summaries, summarize
from prodigy.versions import checkpoint_files, rebuild_checkpoint_document, rebuild_metadata

TRASH_PREFIX = ".deleting-"


@click.group("checkpoints")
def checkpoints() -> None:
    """Inspect a job's checkpoints, and delete stored jobs."""


# ---- list ----------------------------------------------------------------------------------------


def _print_job_status(job: JobDir) -> None:
    s = summarize(job)
    for problem in s.problems:
        warn(f"warning: {problem}.")
    c = s.counts
    say(f"Job Status: {'Complete' if s.phase == 'done' else 'Incomplete'}")
    say(f"- Successful: {c.succeeded}")
    say(f"- Failed: {describe_failed(c)}")
    say(f"- Pending: {c.pending}")
    say()
    say("Available checkpoints:")
    files = checkpoint_files(job)
    versions = [f.version for f in files]
    # No tag when latest.json is missing or dangling: the warning above says so.
    latest = s.latest_checkpoint if s.latest_checkpoint in versions else None
    for f in files:
        tag = " (latest)" if f.version == latest else ""
        if f.problem is None:
            say(f"- v{f.version}{tag}: {f.succeeded}/{f.total} complete")
        else:
            say(f"- v{f.version}{tag}: unreadable ({f.problem})")
    if not files:
        say("- none on disk")
    say()
    if s.version is not None:
        say(
            f"Any version from v0 to v{s.version} can be restored with "
            f"`prodigy resume-job {s.job_id} --from-checkpoint N`."
        )


@checkpoints.command("list")
@click.argument("job_id", required=False)
def list_checkpoints(job_id: str | None) -> int:
    """A job's status and checkpoint versions; without JOB_ID, one line per job of this repo."""
    if job_id is not None:
        _print_job_status(find_job(job_id))
        return 0
    repo = find_repository(Path.cwd()).name
    jobs = repository_summaries(repo)
    if not jobs:
        say_no_jobs(repo)
        return 0
    table(
        ["JOB ID", "STATUS", "DONE/TOTAL"],
        [[s.job_id, s.status_label, f"{s.counts.succeeded}/{s.counts.total}"] for s in jobs],
    )
    for s in jobs:
        for problem in s.problems:
            warn(f"warning: job {s.job_id}: {problem}.")
    return 0


# ---- show ----------------------------------------------------------------------------------------


def _on_disk(job: JobDir, but: int | None = None) -> str:
    return ", ".join(f"v{v}" for v in job.checkpoint_versions() if v != but) or "none"


def _checkpoint_bytes(job: JobDir, version: int | None) -> bytes | None:
    """The file's bytes once checked to be a whole prodigy checkpoint; None if there is none."""
    path = job.latest if version is None else job.checkpoint(version)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        # The same check as resume's, so `show` never prints a file that resume refuses.
        decode_checkpoint_head(data)
        problem = None
    except msgspec.ValidationError as exc:
        problem = f"is not a prodigy checkpoint ({exc})"
    except msgspec.DecodeError as exc:
        problem = f"is damaged ({exc})"
    if problem is None:
        return data
    number = job.latest_version() if version is None else version
    raise StateError(
        f"Checkpoint {path.resolve()} {problem}.",
        hint=f"Other versions on disk: {_on_disk(job, number)}; show one with "
        f"`prodigy checkpoints show {job.job_id} --version N`.",
    )


@checkpoints.command("show")
@click.argument("job_id")
@click.option("--version", "version", type=click.IntRange(min=0), help="Show version N.")
def show(job_id: str, version: int | None) -> int:
    """Print a checkpoint of JOB_ID (the latest by default) as JSON."""
    job = find_job(job_id)
    data = _checkpoint_bytes(job, version)
    if data is None:
        summary = summarize(job)
        newest = summary.version
        if newest is None:
            raise StateError(
                f"Job {job.job_id} has no checkpoint file to show, and none can be rebuilt "
                f"({'; '.join(summary.problems)})."
            )
        wanted = newest if version is None else version
        if wanted > newest:
            raise ProdigyError(
                f"Checkpoint v{wanted} does not exist for job {job.job_id}: versions 0 to "
                f"{newest} can be shown (checkpoint files on disk: {_on_disk(job)}).",
            )
        if version is None:
            # latest.json is gone (set aside as corrupt, or deleted) or dangling: the newest
            # version may still have its file.
            problem = job.latest_problem(expected=True)
            if problem is not None:
                warn(f"warning: {problem}; showing the newest version, v{wanted}.")
            data = _checkpoint_bytes(job, wanted)
        if data is None:
            data = encode_checkpoint(rebuild_checkpoint_document(job, wanted))
            warn(
                f"Checkpoint v{wanted} of job {job.job_id} has no file on disk (files on disk: "
                f"{_on_disk(job)}); it was rebuilt from the journal."
            )
    sys.stdout.flush()
    sys.stdout.buffer.write(msgspec.json.format(data, indent=2).rstrip(b"\n") + b"\n")
    sys.stdout.buffer.flush()
    return 0


# ---- repair --------------------------------------------------------------------------------------


def _set_aside(path: Path) -> Path:
    """Move a damaged file to `corrupt-<name>` (a new name each time): kept for inspection,
    out of the way of every write and of retention."""
    n = 1
    while True:
        aside = path.with_name(f"corrupt-{path.name}" if n == 1 else f"corrupt-{n}-{path.name}")
        if not os.path.lexists(aside):
            os.replace(path, aside)
            return aside
        n += 1


def _repair_metadata(job: JobDir) -> bool:
    """Rebuild a damaged metadata.json from a checkpoint file and the journal."""
    try:
        read_job_metadata(job)
        return False
    except StateError as exc:
        warn(f"warning: {exc.message}")
    meta, version = rebuild_metadata(job)
    state = load_state(job)
    aside = _set_aside(job.metadata) if os.path.lexists(job.metadata) else None
    job.write_metadata(metadata_document(meta, state, state.ended or "interrupted"))
    kept = f"; the damaged file was kept as {aside}" if aside is not None else ""
    say(
        f"Rebuilt {job.metadata} from checkpoint v{version} and the journal "
        f"(v{state.version}){kept}."
    )
    return True


def _repair_latest(job: JobDir) -> bool:
    """Point a missing or dangling latest.json at a checkpoint of the journal's version."""
    state = load_state(job)
    problem = job.latest_problem(expected=state.item_count is not None)
    if problem is None:
        return False
    warn(f"warning: {problem}.")
    document = rebuild_checkpoint_document(job, state.version)
    # Nothing is pruned here: the next run's retention does that.
    write_checkpoint(job, state.version, encode_checkpoint(document), keep=1 << 30)
    say(
        f"Wrote checkpoint v{state.version}, rebuilt from the journal, and pointed "
        f"{job.latest} at it."
    )
    return True


@checkpoints.command("repair")
@click.argument("job_id")
def repair(job_id: str) -> int:
    """Rebuild a damaged metadata.json and a missing or dangling latest.json of JOB_ID.

    Both are rebuilt from the journal (the source of truth) and a checkpoint file; a damaged
    file is kept as corrupt-<name>. A running job is never repaired.
    """
    job = find_job(job_id)
    lock = lock_for_clean(job, "repair")
    try:
        repaired = _repair_metadata(job)
        repaired = _repair_latest(job) or repaired
    finally:
        lock.release()
    if not repaired:
        say(f"Nothing to repair in job {job.job_id}: its metadata.json and latest.json are sound.")
    return 0


# ---- clean ---------------------------------------------------------------------------------------


def _describe(s: JobSummary, size: int, found: JobWorktrees | None) -> str:
    line = (
        f"{s.job_id} ({s.status_label}, {s.counts.succeeded}/{s.counts.total} succeeded, "
        f"last update {format_duration(timedelta(seconds=s.age()))} ago, {byte_size(size)})"
    )
    if found is not None and found.entries:
        line += f" with {describe_removal(found)}"
    return line


def _git_leftovers(job: JobDir, force: bool) -> tuple[JobWorktrees | None, tuple[JobWorktree, ...]]:
    """The job's worktrees and branches, to go with it (SPEC §6), and those of them holding
    work merged nowhere else (removed only with --force). None when they cannot be found:
    refused, unless forced (then the job goes and its branches, if any, stay)."""
    try:
        meta = read_job_metadata(job)
        found = asyncio.run(find_job_worktrees(job, meta, running=False))
    except (ProdigyError, OSError) as exc:
        if not job_worktree_dirs(job.repo, job.job_id):
            # A job that ran in worktrees keeps its parent worktree until it is cleaned: with
            # none on disk there is nothing in git to go with the job (and no repository to
            # look in when metadata.json is lost).
            return None, ()
        if isinstance(exc, WorktreesNotFound):
            reason = exc.message.rstrip(".")
        else:
            detail = exc.message.rstrip(".") if isinstance(exc, ProdigyError) else exc
            reason = f"Job {job.job_id}'s worktrees and branches cannot be found ({detail})"
        if not force:
            raise ProdigyError(
                f"{reason}; cleaning the job could leave them behind unnoticed.",
                hint="Pass --force to delete the job anyway.",
            ) from None
        warn(f"warning: {reason}; any it has are left.")
        return None, ()
    return found, check_removable(found, force)


def _delete(job: JobDir) -> None:
    """Move the directory out of the jobs' namespace in one rename, then remove it: a reader or
    a resume never finds a half-deleted job under the real id."""
    trash = job.path.with_name(f"{TRASH_PREFIX}{job.job_id}-{os.getpid()}")
    try:
        os.rename(job.path, trash)
    except OSError as exc:
        raise ProdigyError(f"Could not delete {job.path}: {exc.strerror or exc}.") from None
    try:
        shutil.rmtree(trash)
    except OSError as exc:
        # The job is already out of every listing; the next clean sweeps what is left.
        warn(
            f"warning: {trash} could not be removed completely ({exc.strerror or exc}); "
            "the next `prodigy checkpoints clean` will retry."
        )


def _sweep_trash(root: Path) -> None:
    """Finish deletions that an earlier, killed `clean` left half done."""
    try:
        leftovers = [p for p in root.iterdir() if p.name.startswith(TRASH_PREFIX)]
    except OSError:
        return
    for path in leftovers:
        try:
            busy = is_locked(path / "lock") is not None
        except OSError:
            busy = False
        if not busy:
            shutil.rmtree(path, ignore_errors=True)


def _clean_one(job: JobDir, force: bool, dry_run: bool) -> tuple[str, int]:
    """Delete one job (under its lock); raises when it must not be deleted."""
    if dry_run:
        s = summarize(job)
        refusal = clean_refusal(s, force)
        if refusal is not None:
            raise refusal
        found, forced = _git_leftovers(job, force)
        size = job.disk_usage()
        for entry in forced:
            say(forced_removal(entry, dry_run=True))
        return _describe(s, size, found), size
    lock = lock_for_clean(job)
    try:
        # Decided under the lock: nothing can start or change the job from here on.
        s = summarize(job)
        refusal = clean_refusal(s, force)
        if refusal is not None:
            raise refusal
        found, forced = _git_leftovers(job, force)
        size = job.disk_usage()
        line = _describe(s, size, found)
        if found is not None and found.entries:
            # Before the job directory: if git fails, the job is still there to clean again.
            asyncio.run(remove_job_worktrees(found))
        for entry in forced:
            say(forced_removal(entry, dry_run=False))
        _delete(job)
    finally:
        lock.release()
    return line, size


def _clean_all(older_than: timedelta, force: bool, dry_run: bool) -> int:
    repo = find_repository(Path.cwd())
    verb = "Would delete" if dry_run else "Deleted"
    now = datetime.now().astimezone()
    deleted = kept = skipped = 0
    total_size = 0
    for job in list_jobs(repo.name):
        quick = summarize(job, replay_journal=False)
        if quick.age(now) < older_than.total_seconds():
            kept += 1
            continue
        try:
            line, size = _clean_one(job, force, dry_run)
        except JobNotFound:
            continue  # deleted by another clean meanwhile
        except ProdigyError as exc:
            skipped += 1
            say(f"Skipped: {exc.message}")
            continue
        deleted += 1
        total_size += size
        say(f"{verb} {line}")
    if not dry_run:
        _sweep_trash(jobs_root(repo.name))
    done = f"{verb} {plural(deleted, 'job')} ({byte_size(total_size)})"
    forced_only = "unfinished ones are deleted"
    say(clean_summary(done, kept, older_than, skipped, force, forced_only, dry_run, "deleted"))
    return 0


@checkpoints.command("clean")
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
    help="Also delete unfinished (resumable) jobs, and work merged nowhere else in their "
    "branches (each branch is named).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
def clean(
    job_id: str | None,
    all_jobs: bool,
    older_than: timedelta | None,
    force: bool,
    dry_run: bool,
) -> int:
    """Delete a job's stored state (JOB_ID), or old jobs (--all --older-than 7d).

    A running job is never deleted; an unfinished one only with --force. Its worktrees and
    branches (map.isolation: worktree) go with it; a branch or worktree holding work merged
    nowhere else only with --force.
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
    line, size = _clean_one(job, force, dry_run)
    if dry_run:
        say(f"Would delete {line}")
        say(f"Would delete 1 job ({byte_size(size)}); nothing was deleted (dry run).")
    else:
        say(f"Deleted {line}")
        say(f"Deleted 1 job ({byte_size(size)}).")
        _sweep_trash(job.path.parent)
    return 0
