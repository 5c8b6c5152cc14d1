"""`prodigy cook` (alias `run`): validate a workflow, create a job and run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import msgspec

from prodigy.cli.common import check_claude, claude_bin, execute, verbose
from prodigy.cli.output import Settings, say, warn
from prodigy.display import one_line, plural
from prodigy.engine import RunOptions, base_environment, item_spec
from prodigy.errors import WorkflowError
from prodigy.events import JobStarted
from prodigy.executors import choose_executor
from prodigy.items import WorkItem, load_items, stream_items
from prodigy.job import Isolation, create_job, metadata_document
from prodigy.lock import JobLock
from prodigy.state import JobState
from prodigy.store import Repository, find_repository
from prodigy.workflow import Workflow, load_workflow
from prodigy.worktree import current_branch, head_commit

PREVIEW_ITEMS = 20


@dataclass(frozen=True)
class _CheckedItems:
    """The items read before the job exists: how many, the first few, and the list itself
    unless it came from a plain file (which the run streams again instead of holding)."""

    count: int
    first: list[WorkItem]
    items: list[WorkItem] | None


def _check_items(workflow: Workflow, max_items: int | None, root: Path) -> _CheckedItems:
    spec = item_spec(workflow, max_items)
    streamed = stream_items(spec, root)
    if streamed is not None:
        first: list[WorkItem] = []
        count = 0
        for item in streamed.items:
            if count <= PREVIEW_ITEMS:
                first.append(item)
            count += 1
        warnings, checked = streamed.warnings, _CheckedItems(count, first, None)
    else:
        loaded = load_items(spec, root, base_environment(workflow))
        warnings = loaded.warnings
        checked = _CheckedItems(len(loaded.items), loaded.items[: PREVIEW_ITEMS + 1], loaded.items)
    for warning in warnings:
        warn(f"warning: {warning}")
    return checked


def _preview(items: _CheckedItems) -> None:
    for item in items.first[:PREVIEW_ITEMS]:
        say(f"  {item.id}  {one_line(msgspec.json.encode(item.data).decode(), 100)}")
    if items.count > PREVIEW_ITEMS:
        say(f"  ... and {items.count - PREVIEW_ITEMS} more")


def _dry_run(workflow: Workflow, items: _CheckedItems | None, max_parallel: int) -> int:
    say(f"Dry run: workflow '{workflow.name}' is valid; nothing was run or created.")
    if workflow.setup is not None and workflow.setup.steps:
        say(
            f"Setup: {plural(len(workflow.setup.steps), 'step')} would run first; the items "
            f"are read from {workflow.map.input!r} after setup."
        )
    if items is not None:
        say(f"{plural(items.count, 'item')} would run, {max_parallel} at a time:")
        _preview(items)
    say(f"Reduce: {plural(len(workflow.reduce), 'step')}.")
    return 0


def _isolation(workflow: Workflow, repo: Repository) -> tuple[Isolation, str]:
    """The job's isolation (SPEC §6: worktree inside git by default) and its base commit."""
    wanted = workflow.map.isolation or ("worktree" if repo.git else "none")
    if wanted == "none":
        return "none", ""
    if not repo.git:
        raise WorkflowError(
            f"map.isolation is worktree, but {repo.root} is not in a git repository; run the "
            "workflow inside one, or set map.isolation: none."
        )
    base = head_commit(repo.root)
    if base is None:
        raise WorkflowError(
            f"The git repository {repo.root} has no commit yet, and worktree isolation (the "
            "default inside a git repository) starts the job's branch from HEAD; make a first "
            "commit, or set map.isolation: none."
        )
    return "worktree", base


def cook_workflow(
    workflow_file: Path, max_parallel: int | None, max_items: int | None, dry_run: bool
) -> int:
    workflow = load_workflow(workflow_file)
    check_claude(workflow)
    repo = find_repository(Path.cwd())
    isolation, base_commit = _isolation(workflow, repo)
    choose_executor(Settings.executor, workflow, isolation)  # refused before a job exists
    parallel = max_parallel or workflow.map.max_parallel
    has_setup = workflow.setup is not None and bool(workflow.setup.steps)
    items: _CheckedItems | None = None
    # With worktree isolation the input is read in the job's parent worktree, once it exists.
    if not has_setup and isolation == "none":
        # Without setup the input exists now: bad input is refused before any job exists.
        items = _check_items(workflow, max_items, repo.root)
    if dry_run:
        return _dry_run(workflow, items, parallel)
    job, meta = create_job(
        repo.name,
        repo.root,
        workflow_file,
        workflow.source_hash,
        workflow.name,
        len(workflow.reduce),
        isolation=isolation,
        base_commit=base_commit,
        base_branch=(current_branch(repo.root) or "") if isolation == "worktree" else "",
    )
    lock = JobLock(job.lock, job.job_id, "cook")
    lock.acquire()
    try:
        # Written before anything else so that a job interrupted at any instant can be found
        # and resumed.
        job.write_metadata(metadata_document(meta, JobState(), "running"))
        say(f"Started job {job.job_id}")
        options = RunOptions(
            max_parallel=parallel,
            claude_bin=claude_bin(),
            verbose=verbose(),
            max_items=max_items,
            preloaded_items=items.items if items is not None else None,
            items_checked=items is not None,
        )
        started = JobStarted(workflow=meta.workflow_path, name=workflow.name)
        return execute(job, meta, workflow, JobState(compact=True), None, options, started)
    finally:
        lock.release()


_workflow_arg = click.argument("workflow_file", metavar="WORKFLOW", type=click.Path(path_type=Path))
_options = [
    click.option("--max-parallel", type=click.IntRange(min=1), help="Agents at a time."),
    click.option("--max-items", type=click.IntRange(min=1), help="Run only the first N items."),
    click.option("-y", "--yes", is_flag=True, help="Answer yes to every question."),
    click.option("--executor", metavar="local|dask://HOST:PORT", help="Where agents run."),
    click.option("--dry-run", is_flag=True, help="Validate and list the items; run nothing."),
]


def _command(name: str, help_text: str) -> click.Command:
    def callback(
        workflow_file: Path,
        max_parallel: int | None,
        max_items: int | None,
        yes: bool,
        executor: str | None,
        dry_run: bool,
    ) -> int:
        Settings.yes = yes
        Settings.executor = executor
        return cook_workflow(workflow_file, max_parallel, max_items, dry_run)

    decorated: Callable[..., int] = callback
    for option in reversed(_options):
        decorated = option(decorated)
    return click.command(name, help=help_text)(_workflow_arg(decorated))


cook = _command("cook", "Start a new job from WORKFLOW (a YAML file) and run it.")
run_alias = _command("run", "Same as `cook`.")
