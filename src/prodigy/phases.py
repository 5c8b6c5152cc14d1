"""The phases around the map: setup, freezing the items, reduce (with `${map.results}`).

Each returns the sentence saying why it failed, or None; a phase cut short by an interrupt
returns None and records nothing for the step that did not finish.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from prodigy.agent import AfterStep, AgentSpec, SequenceResult
from prodigy.context import RunContext
from prodigy.display import plural
from prodigy.errors import ProdigyError
from prodigy.events import ReduceCompleted, ReduceStarted, SetupStarted
from prodigy.items import ItemSpec, WorkItem, load_items
from prodigy.job import write_items
from prodigy.scheduler import RunAttempt
from prodigy.state import (
    Attempt,
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
from prodigy.store import atomic_write
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
    items = run.options.preloaded_items
    if items is None:
        try:
            loaded = await asyncio.to_thread(
                load_items,
                item_spec(run.workflow, run.options.max_items),
                run.workspace.root,
                run.phase_env(),
            )
        except ProdigyError as exc:
            return str(exc)
        for warning in loaded.warnings:
            run.reporter.warn(f"warning: {warning}")
        items = loaded.items
    write_items(run.job, items)
    limit = run.workflow.error_policy.retry_config.max_attempts
    await run.recorder.record(ItemsFrozen(count=len(items), max_attempts=limit))
    run.open_items()
    run.save_checkpoint()
    return None


async def run_reduce(run: RunContext) -> str | None:
    steps = run.workflow.reduce
    items = run.open_items()
    results = map_results(run.state, items.ids)
    results_file = run.job.path / "map-results.json"
    # Atomically: a kill mid-write must not leave a file in the job directory that does not
    # parse (the kill soak checks every file after every kill).
    atomic_write(results_file, msgspec.json.encode(results))
    c = counts(run.state)
    variables = run.variables()
    variables["map"] = {
        "successful": c.succeeded,
        "failed": c.failed,
        "skipped": c.skipped,
        "total": c.total,
        "results": results,
    }
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
    return None


def map_results(state: JobState, ids: Sequence[str]) -> list[dict[str, Any]]:
    """`${map.results}`: one entry per item, in item order, failed ones included."""
    out: list[dict[str, Any]] = []
    for index, status in enumerate(state.status):
        last = state.results.get(index)
        spent = state.item_spend(index)
        name = (
            "succeeded"
            if status == ItemStatus.SUCCEEDED
            else "skipped"
            if status == ItemStatus.SKIPPED
            else "failed"
        )
        out.append(
            {
                "item_id": ids[index],
                "status": name,
                "attempts": state.attempts[index],
                "output": last.output if last is not None else "",
                "error": last.error if last is not None and not last.ok else None,
                "duration_s": last.duration_s if last is not None else 0.0,
                "cost_usd": round(spent.cost_usd, 6),
                "input_tokens": spent.input_tokens,
                "output_tokens": spent.output_tokens,
            }
        )
    return out


def conflict_steps(run: RunContext) -> ConflictSteps:
    """`map.on_merge_conflict`: steps that may conclude a conflicted merge, run in the parent
    worktree with the merge in progress. True when they all succeeded."""

    async def resolve(root: Path, item: WorkItem, result: Attempt) -> bool:
        steps = run.workflow.map.on_merge_conflict
        if not steps:
            return False
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
        env = {**run.phase_env(), "PRODIGY_ITEM_ID": item.id}
        ctx = StepContext(root, env, variables, run.options.claude_bin, run.job.scratch)
        done = await run.executor.run_steps(steps, ctx, 0, None, lambda: False, SequenceResult())
        return done.failure is None

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
