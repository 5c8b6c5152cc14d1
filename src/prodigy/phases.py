"""The phases around the map: setup, freezing the items, reduce (with `${map.results}`).

Each returns the sentence saying why it failed, or None; a phase cut short by an interrupt
returns None and records nothing for the step that did not finish.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from prodigy.agent import AfterStep, AgentSpec, SequenceResult
from prodigy.context import RunContext
from prodigy.display import plural
from prodigy.errors import ProdigyError
from prodigy.events import ReduceCompleted, ReduceStarted, SetupStarted
from prodigy.item_environment import prodigy_variables
from prodigy.items import ItemSpec, WorkItem, load_items, stream_items
from prodigy.job import ItemsFile, write_items
from prodigy.journal import JournalScan, read_record_at
from prodigy.scheduler import RunAttempt
from prodigy.state import (
    NO_SPEND,
    Attempt,
    AttemptEnded,
    ItemsFrozen,
    ItemStatus,
    JobState,
    ReduceStepCompleted,
    SetupCompleted,
    Spend,
    counts,
    error_signature,
)
from prodigy.steps import StepContext, StepOutcome
from prodigy.store import atomic_writer
from prodigy.workflow import Step, Workflow
from prodigy.worktree import ConflictSteps, parent_branch


def item_spec(workflow: Workflow, max_items: int | None = None) -> ItemSpec:
    m = workflow.map
    limit = m.max_items
    if max_items is not None:
        limit = max_items if limit is None else min(limit, max_items)
    return ItemSpec(
        input=m.input,
        json_path=m.json_path,
        filter=m.filter,
        sort_by=m.sort_by,
        distinct=m.distinct,
        offset=m.offset,
        max_items=limit,
        id_field=m.id_field,
    )


async def _run_phase_steps(
    run: RunContext,
    steps: Sequence[Step],
    first: int,
    variables: dict[str, Any],
    env: dict[str, str],
    after_step: AfterStep | None,
) -> SequenceResult | None:
    """The steps on the coordinator, in the workspace root; None when killed midway."""
    ctx = StepContext(
        cwd=run.workspace.root,
        env=env,
        variables=variables,
        claude_bin=run.options.claude_bin,
        scratch_dir=run.job.scratch,
        masker=run.workflow.masker,
    )
    return await run.interrupts.killable(
        run.executor.run_steps(
            steps, ctx, first, after_step, lambda: run.interrupts.stopped, SequenceResult()
        )
    )


async def run_setup(run: RunContext) -> str | None:
    setup = run.workflow.setup
    run.job.scratch.mkdir(exist_ok=True)
    if setup is None or not setup.steps:
        await run.recorder.record(SetupCompleted(outputs={}))
        return None
    run.events.emit(SetupStarted(steps=len(setup.steps)))
    run.reporter.say(f"Running setup ({plural(len(setup.steps), 'step')})...")

    # Setup is recorded whole, once it has ended: a setup cut short is re-run from its start.
    try:
        async with asyncio.timeout(setup.timeout):
            done = await _run_phase_steps(
                run, setup.steps, 0, run.variables(), run.phase_env(), None
            )
    except TimeoutError:
        return f"setup failed: setup timed out after {setup.timeout:g}s"
    if done is None or done.stopped:
        return None
    failure = done.failure_sentence()
    if failure is not None:
        return f"setup failed: {failure}"
    await run.recorder.record(SetupCompleted(outputs=done.captured, spend=done.spend))
    return None


async def freeze_items(run: RunContext) -> str | None:
    """Load the items (after setup, which may have made the input) and freeze them."""
    try:
        count, warnings = await asyncio.to_thread(_freeze, run)
    except ProdigyError as exc:
        # An input command's message quotes the command and its stderr.
        return run.workflow.masker.mask(str(exc))
    for warning in warnings:
        run.reporter.warn(f"warning: {run.workflow.masker.mask(warning)}")
    limit = run.workflow.error_policy.retry_config.max_attempts
    await run.recorder.record(ItemsFrozen(count=count, max_attempts=limit))
    run.open_items()
    run.save_checkpoint()
    return None


def _freeze(run: RunContext) -> tuple[int, list[str]]:
    """Write the items file: streamed from a plain input file, else selected in memory."""
    if run.options.preloaded_items is not None:
        return write_items(run.job, _without_secrets(run, run.options.preloaded_items)), []
    spec = item_spec(run.workflow, run.options.max_items)
    streamed = stream_items(spec, run.workspace.root)
    if streamed is not None:
        count = write_items(run.job, _without_secrets(run, streamed.items))
        return count, [] if run.options.items_checked else streamed.warnings
    loaded = load_items(spec, run.workspace.root, run.phase_env())
    return write_items(run.job, _without_secrets(run, loaded.items)), loaded.warnings


def _without_secrets(run: RunContext, items: Iterable[WorkItem]) -> Iterator[WorkItem]:
    """The items, refused (ProdigyError) at the first whose data holds a secret value
    (SPEC §9): items are stored as they are."""
    masker = run.workflow.masker
    for item in items:
        if masker and masker.found_in(msgspec.json.encode(item.data).decode()):
            raise ProdigyError(
                f"the map input holds the value of a secret (in item {item.id}); items are "
                "stored as they are, so keep secret values out of the input and let the agent "
                "read them from its environment instead"
            )
        yield item


async def run_reduce(run: RunContext) -> str | None:
    steps = run.workflow.reduce
    items = run.open_items()
    results_file = run.job.path / "map-results.json"
    await asyncio.to_thread(write_map_results, run.state, items, run.job.journal, results_file)
    c = counts(run.state)
    variables = run.variables()
    variables["map"] = {
        "successful": c.succeeded,
        "failed": c.failed,
        "skipped": c.skipped,
        "total": c.total,
    }
    if mentions(steps, "map.results"):
        variables["map"]["results"] = msgspec.json.decode(results_file.read_bytes())
    env = {**run.phase_env(), "PRODIGY_MAP_RESULTS_FILE": str(results_file)}
    run.events.emit(ReduceStarted(steps=len(steps), first_step=run.state.reduce_done + 1))

    async def record_step(
        n: int, outcome: StepOutcome, captured: dict[str, str], spend: Spend
    ) -> None:
        # A reduce step's output is shown: a summary is what a reduce is for.
        if outcome.stdout.strip():
            run.reporter.say(outcome.stdout.rstrip("\n"))
        await run.recorder.record(ReduceStepCompleted(step=n, outputs=captured, spend=spend))

    done = await _run_phase_steps(run, steps, run.state.reduce_done, variables, env, record_step)
    if done is None or done.stopped:
        return None
    failure = done.failure_sentence()
    if failure is not None:
        return f"reduce failed: {failure}"
    run.events.emit(ReduceCompleted())
    # Derived from the journal, and as big as the job: it exists while reduce steps run.
    results_file.unlink(missing_ok=True)
    return None


def write_map_results(state: JobState, items: ItemsFile, journal: Path, out: Path) -> None:
    """`${map.results}` as a JSON array file: one entry per item, in item order, failed ones
    included. Written as a stream; succeeded items' results are read back from the journal
    (one pass to find each one's record, then one read per item), never all held at once."""
    where = array("q", [-1]) * (state.item_count or 0)
    for start, record in JournalScan(journal).entries():
        if isinstance(record, AttemptEnded) and record.result.ok:
            where[record.index] = start
    fd = os.open(journal, os.O_RDONLY)
    try:
        with atomic_writer(out) as file:
            file.write(b"[")
            for index in range(len(where)):
                last = state.results.get(index)
                if last is None and where[index] >= 0:
                    found = read_record_at(fd, where[index])
                    last = found.result if isinstance(found, AttemptEnded) else None
                entry = map_result(state, index, items.id_of(index), last)
                file.write((b"," if index else b"") + _encoder.encode(entry))
            file.write(b"]")
    finally:
        os.close(fd)


_encoder = msgspec.json.Encoder()


def map_result(state: JobState, index: int, item_id: str, last: Attempt | None) -> dict[str, Any]:
    """One entry of `${map.results}`; `last` is the item's last ended attempt, if any."""
    status = state.status[index]
    spent = sum((p.spend for p in state.history.get(index, ())), NO_SPEND)
    if last is not None and last.ok:
        spent += last.spend
    name = (
        "succeeded"
        if status == ItemStatus.SUCCEEDED
        else "skipped"
        if status == ItemStatus.SKIPPED
        else "failed"
    )
    return {
        "item_id": item_id,
        "status": name,
        "attempts": state.attempts[index],
        "output": last.output if last is not None else "",
        "error": last.error if last is not None and not last.ok else None,
        "duration_s": last.duration_s if last is not None else 0.0,
        "cost_usd": round(spent.cost_usd, 6),
        "input_tokens": spent.input_tokens,
        "output_tokens": spent.output_tokens,
    }


def mentions(steps: Sequence[Step], text: str) -> bool:
    """Whether any of `steps` (their handlers included) has `text` in a template."""
    for step in steps:
        texts = [step.shell, step.claude, step.working_dir, *step.env.values()]
        if step.write_file is not None:
            texts += [step.write_file.path, step.write_file.content]
        if any(text in (t or "") for t in texts):
            return True
        if step.on_failure is not None and mentions([step.on_failure], text):
            return True
    return False


def conflict_steps(run: RunContext) -> ConflictSteps:
    """`map.on_merge_conflict`: steps that may conclude a conflicted merge, run in the parent
    worktree with the merge in progress. True when they all succeeded, and what they cost."""

    async def resolve(root: Path, item: WorkItem, result: Attempt) -> tuple[bool, Spend]:
        steps = run.workflow.map.on_merge_conflict
        if not steps:
            return False, NO_SPEND
        variables = {
            **run.variables(),
            "item": item.data,
            "item_index": item.index,
            "item_id": item.id,
            "attempt": result.attempt,
            "merge": {
                "source_branch": result.branch,
                "target_branch": parent_branch(run.meta.job_id),
                "worktree": str(root),
            },
        }
        # The same PRODIGY_* variables as the agent had; they passed its checks, so they pass.
        item_env = prodigy_variables(
            run.meta.job_id, item.id, item.index, result.attempt, item.data
        )
        env = {**run.phase_env(), **item_env}
        ctx = StepContext(
            root,
            env,
            variables,
            run.options.claude_bin,
            run.job.scratch,
            masker=run.workflow.masker,
        )
        done = await run.executor.run_steps(steps, ctx, 0, None, lambda: False, SequenceResult())
        return done.failure is None, done.spend

    return resolve


def attempt_runner(run: RunContext, spec: AgentSpec) -> RunAttempt:
    """One attempt, start to end: its place (a worktree when isolated), `worktree_setup` steps
    there, then the agent; the result names the place when it is one of its own."""

    async def attempt(item: WorkItem, number: int) -> Attempt:
        async with run.workspace.attempt(item, number) as place:
            prepared = await _prepare(run, spec, item, number, place.path)
            if prepared is not None and not prepared.ok:
                return place.describe(prepared)
            result = await run.executor.run_attempt(spec, item, number, place.path)
            if prepared is not None:
                result = msgspec.structs.replace(
                    result,
                    worktree_setup_s=prepared.duration_s,
                    spend=prepared.spend + result.spend,
                )
            return place.describe(result)

    return attempt


async def _prepare(
    run: RunContext, spec: AgentSpec, item: WorkItem, number: int, cwd: Path
) -> Attempt | None:
    """`map.worktree_setup` in a new agent worktree, as an attempt of its own (None when there
    is nothing to run). It fails the attempt like a step of the agent would."""
    steps = run.workflow.map.worktree_setup
    if not steps or cwd == run.workspace.root:
        return None
    setup_spec = dataclasses.replace(spec, template=steps, agent_timeout=None)
    done = await run.executor.run_attempt(setup_spec, item, number, cwd)
    if done.ok:
        return done
    error = f"map.worktree_setup failed: {done.error}"
    return msgspec.structs.replace(
        done,
        error=error,
        error_kind="worktree_setup",
        signature=error_signature("worktree_setup", error),
        worktree_setup_s=done.duration_s,
    )
