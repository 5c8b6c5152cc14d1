"""The final merge of worktree isolation: the job's parent branch into the branch the user
started from (SPEC §6), with `-y`, or after asking on a terminal, or left with the command.

The user's working tree and index are touched by nothing else, and not by this either when
their uncommitted changes touch files the merge would change: then the branch is left.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prodigy.agent import SequenceResult
from prodigy.context import RunContext
from prodigy.display import plural
from prodigy.events import JobMerged
from prodigy.git import Git
from prodigy.steps import StepContext
from prodigy.worktree import GitWorkspace, current_branch


def _ask(question: str) -> bool:
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


async def _merge_with_steps(
    run: RunContext, workspace: GitWorkspace, source: str, base: str
) -> None:
    """The workflow's `merge:` steps in place of `git merge`, in the parent worktree."""
    assert run.workflow.merge is not None
    here = Git(workspace.root)
    commits = (await here.out("rev-list", "--reverse", f"{base}..{source}")).split()
    changed = (await here.out("diff", "--name-only", f"{base}...{source}")).splitlines()
    variables = {
        **run.variables(),
        "merge": {
            "worktree": str(workspace.root),
            "source_branch": source,
            "target_branch": base,
            "session_id": run.meta.job_id,
            "commit_count": len(commits),
            "commits": commits,
            "modified_files": changed,
        },
    }
    ctx = StepContext(
        workspace.root, run.phase_env(), variables, run.options.claude_bin, run.job.scratch
    )
    try:
        async with asyncio.timeout(run.workflow.merge.timeout):
            done = await run.executor.run_steps(
                run.workflow.merge.steps, ctx, 0, None, lambda: False, SequenceResult()
            )
        failure = done.failure_sentence()
    except TimeoutError:
        failure = f"they took longer than {run.workflow.merge.timeout:g}s"
    command = f"git merge --no-ff {source}"
    if failure is not None:
        run.reporter.warn(
            f"The workflow's merge steps failed ({failure}); branch {source} is left. Merge "
            f"it with: {command}"
        )
        return
    root = Git(Path(run.meta.workdir))
    if not await root.ok("merge-base", "--is-ancestor", source, base):
        run.reporter.say(f"The merge steps ended, but {base} does not hold {source} yet.")
        return
    commit = await root.out("rev-parse", base)
    run.events.emit(JobMerged(branch=source, into=base, commit=commit))
    run.reporter.say(f"Merged branch {source} into {base} with the workflow's merge steps.")


async def merge_into_base(run: RunContext, workspace: GitWorkspace) -> None:
    """Merge the job's branch into the user's; a refusal is a message, never a failure."""
    source, base = workspace.branch, run.meta.base_branch
    root = Path(run.meta.workdir)
    user = Git(root)
    await user.ensure_identity()
    command = f"git merge --no-ff {source}"
    if await user.ok("merge-base", "--is-ancestor", source, "HEAD"):
        run.reporter.say(f"Branch {source} holds nothing new for your working tree.")
        return
    if not base or current_branch(root) != base:
        where = f"Check out {base}, then run" if base else "Merge it with"
        run.reporter.say(f"The job's work is on branch {source}. {where}: {command}")
        return
    if not run.options.yes and not _ask(f"Merge branch {source} into {base}?"):
        run.reporter.say(f"The job's work is on branch {source}. Merge it with: {command}")
        return
    if run.workflow.merge is not None:
        await _merge_with_steps(run, workspace, source, base)
        return
    changed = set((await user.out("diff", "--name-only", f"{base}...{source}")).splitlines())
    overlap = sorted(changed & await _dirty_paths(user))
    if overlap:
        run.reporter.warn(
            f"Not merging {source} into {base}: your uncommitted changes touch "
            f"{plural(len(overlap), 'file')} it changes ({', '.join(overlap[:5])}); commit or "
            f"stash them, then run: {command}"
        )
        return
    message = f"prodigy: merge job {run.meta.job_id}"
    merged = await user.run("merge", "--no-ff", "-m", message, source, check=False)
    if merged.code != 0:
        await user.run("merge", "--abort", check=False)
        last = (merged.err or merged.out).strip().splitlines()[-1:] or ["conflict"]
        run.reporter.warn(
            f"Not merging {source} into {base}: {last[0]}; nothing of yours was changed. "
            f"Resolve it yourself with: {command}"
        )
        return
    commit = await user.out("rev-parse", "HEAD")
    run.events.emit(JobMerged(branch=source, into=base, commit=commit))
    run.reporter.say(f"Merged branch {source} into {base} ({commit[:12]}).")
