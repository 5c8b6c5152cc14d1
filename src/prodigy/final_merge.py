"""The final merge of worktree isolation: the job's parent branch into the branch the user
started from (SPEC §6), with `-y`, or after asking on a terminal, or left with the command.

The user's working tree and index are touched by nothing else, and not by this either when
their uncommitted changes touch files the merge would change: then the branch is left.
`merge_job_branch` needs no run, so `prodigy worktrees merge` does a merge that was left the
same way the end of a job does it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prodigy.agent import SequenceResult
from prodigy.display import plural
from prodigy.events import EventLog, JobMerged
from prodigy.git import Git
from prodigy.job import JobMetadata
from prodigy.state import MergeStepsEnded
from prodigy.steps import StepContext
from prodigy.worktree import current_branch, parent_branch, parent_path

if TYPE_CHECKING:  # only the engine's call passes one: `worktrees merge` loads no engine
    from prodigy.context import RunContext

# merged: done; up_to_date: the user's branch already has it; elsewhere: the user is not on
# the branch the job started from; declined: not confirmed; refused: their uncommitted changes
# overlap, or the merge conflicted (nothing of theirs was changed).
MergeOutcome = Literal["merged", "up_to_date", "elsewhere", "declined", "refused"]


@dataclass(frozen=True)
class MergeResult:
    outcome: MergeOutcome
    message: str  # one sentence for the user, with the command to type when one is needed


# The workflow's `merge:` steps, given the job branch and the user's: they do the merging.
MergeSteps = Callable[[str, str], Awaitable[MergeResult]]


def ask_on_terminal(question: str) -> bool:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


async def _dirty_paths(user: Git) -> set[str]:
    """Paths with uncommitted changes (staged or not) in the user's working tree."""
    status = (await user.run("status", "--porcelain=v1", "-z", "--untracked-files=no")).out
    paths: set[str] = set()
    entries = status.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        if len(entry) > 3:
            paths.add(entry[3:])
            if entry[0] in "RC":  # a rename or copy names its source next
                i += 1
                paths.add(entries[i])
        i += 1
    return paths


async def merge_job_branch(
    meta: JobMetadata,
    events: EventLog,
    yes: bool,
    ask: Callable[[str], bool] = ask_on_terminal,
    again: str | None = None,
    steps: MergeSteps | None = None,
) -> MergeResult:
    """Merge the job's branch into the user's, or say why not. `again` is the command that
    retries it (the `git merge` command by default)."""
    source, base = parent_branch(meta.job_id), meta.base_branch
    root = Path(meta.workdir)
    user = Git(root)
    await user.ensure_identity()
    command = f"git merge --no-ff {source}"
    again = again or command
    if await user.ok("merge-base", "--is-ancestor", source, "HEAD"):
        return MergeResult(
            "up_to_date", f"Branch {source} holds nothing new for your working tree."
        )
    if not base or current_branch(root) != base:
        where = f"Check out {base}, then run" if base else "Merge it with"
        return MergeResult(
            "elsewhere",
            f"The job's work is on branch {source}. {where}: {again if base else command}",
        )
    if not yes and not ask(f"Merge branch {source} into {base}?"):
        return MergeResult(
            "declined", f"The job's work is on branch {source}. Merge it with: {again}"
        )
    if steps is not None:
        return await steps(source, base)
    changed = set((await user.out("diff", "--name-only", f"{base}...{source}")).splitlines())
    overlap = sorted(changed & await _dirty_paths(user))
    if overlap:
        return MergeResult(
            "refused",
            f"Not merging {source} into {base}: your uncommitted changes touch "
            f"{plural(len(overlap), 'file')} it changes ({', '.join(overlap[:5])}); commit or "
            f"stash them, then run: {again}",
        )
    message = f"prodigy: merge job {meta.job_id}"
    merged = await user.run("merge", "--no-ff", "-m", message, source, check=False)
    if merged.code != 0:
        await user.run("merge", "--abort", check=False)
        last = (merged.err or merged.out).strip().splitlines()[-1:] or ["conflict"]
        return MergeResult(
            "refused",
            f"Not merging {source} into {base}: {last[0]}; nothing of yours was changed. "
            f"Resolve it yourself with: {command}",
        )
    commit = await user.out("rev-parse", "HEAD")
    events.emit(JobMerged(branch=source, into=base, commit=commit))
    return MergeResult("merged", f"Merged branch {source} into {base} ({commit[:12]}).")


def merge_steps(run: RunContext) -> MergeSteps:
    """The workflow's `merge:` steps in place of `git merge`, run in the parent worktree."""

    async def run_them(source: str, base: str) -> MergeResult:
        assert run.workflow.merge is not None
        root = parent_path(run.meta.repo, run.meta.job_id)
        here = Git(root)
        commits = (await here.out("rev-list", "--reverse", f"{base}..{source}")).split()
        changed = (await here.out("diff", "--name-only", f"{base}...{source}")).splitlines()
        variables = {
            **run.variables(),
            "merge": {
                "worktree": str(root),
                "source_branch": source,
                "target_branch": base,
                "session_id": run.meta.job_id,
                "commit_count": len(commits),
                "commits": commits,
                "modified_files": changed,
            },
        }
        ctx = StepContext(
            root,
            run.phase_env(),
            variables,
            run.options.claude_bin,
            run.job.scratch,
            masker=run.workflow.masker,
        )
        done = SequenceResult()
        try:
            async with asyncio.timeout(run.workflow.merge.timeout):
                await run.executor.run_steps(
                    run.workflow.merge.steps, ctx, 0, None, lambda: False, done
                )
            failure = done.failure_sentence()
        except TimeoutError:
            failure = f"they took longer than {run.workflow.merge.timeout:g}s"
        if done.spend:
            # What they paid, steps cut short by the timeout included, is in the job's total.
            await run.recorder.record(MergeStepsEnded(done.spend))
        if failure is not None:
            return MergeResult(
                "refused",
                f"The workflow's merge steps failed ({failure}); branch {source} is left. "
                f"Merge it with: git merge --no-ff {source}",
            )
        user = Git(Path(run.meta.workdir))
        if not await user.ok("merge-base", "--is-ancestor", source, base):
            return MergeResult(
                "refused", f"The merge steps ended, but {base} does not hold {source} yet."
            )
        commit = await user.out("rev-parse", base)
        run.events.emit(JobMerged(branch=source, into=base, commit=commit))
        return MergeResult(
            "merged", f"Merged branch {source} into {base} with the workflow's merge steps."
        )

    return run_them


async def merge_into_base(run: RunContext) -> None:
    """At the end of a job: a refusal is a message, never a failure."""
    steps = merge_steps(run) if run.workflow.merge is not None else None
    result = await merge_job_branch(run.meta, run.events, run.options.yes, steps=steps)
    if result.outcome == "refused":
        run.reporter.warn(result.message)
    else:
        run.reporter.say(result.message)
