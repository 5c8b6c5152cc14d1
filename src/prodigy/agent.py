"""Running one item's agent: its steps in order, with on_failure handlers and a time limit.

`Executor` is the one seam where an agent runs. `LocalExecutor` runs the steps as local
subprocesses in the job's working directory; git worktree isolation and remote executors plug
in here with the same `run_attempt` contract.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from prodigy.events import now_iso
from prodigy.items import WorkItem
from prodigy.state import Attempt, error_signature
from prodigy.steps import StepContext, StepOutcome, StepSpec, run_step
from prodigy.workflow import Step

OUTPUT_TAIL = 4000  # characters of an agent's output kept with its result


def step_spec(step: Step) -> StepSpec:
    if step.write_file is not None:
        return StepSpec(
            kind="write_file",
            command=step.write_file.content,
            path=step.write_file.path,
            file_format=step.write_file.format,
            timeout=step.timeout,
            env=dict(step.env),
            working_dir=step.working_dir,
            commit_required=step.commit_required,
        )
    return StepSpec(
        kind=step.kind,
        command=step.shell if step.shell is not None else (step.claude or ""),
        timeout=step.timeout,
        env=dict(step.env),
        working_dir=step.working_dir,
        commit_required=step.commit_required,
    )


@dataclass(frozen=True)
class AgentContext:
    """What every agent of a job shares."""

    job_id: str
    workdir: Path
    base_env: Mapping[str, str]  # process env + workflow env
    variables: Mapping[str, Any]  # workflow env + setup captures
    claude_bin: str
    scratch_dir: Path
    agent_timeout: float | None


def item_environment(ctx: AgentContext, item: WorkItem, attempt: int) -> dict[str, str]:
    return {
        **ctx.base_env,
        "PRODIGY_JOB_ID": ctx.job_id,
        "PRODIGY_ITEM_ID": item.id,
        "PRODIGY_ITEM_INDEX": str(item.index),
        "PRODIGY_ATTEMPT": str(attempt),
        "PRODIGY_ITEM": msgspec.json.encode(item.data).decode(),
    }


def item_variables(ctx: AgentContext, item: WorkItem, attempt: int) -> dict[str, Any]:
    return {
        **ctx.variables,
        "item": item.data,
        "item_index": item.index,
        "item_id": item.id,
        "attempt": attempt,
        "job_id": ctx.job_id,
    }


class Spend:
    """Money and tokens spent by a run of steps (claude steps report them)."""

    def __init__(self) -> None:
        self.cost_usd = 0.0
        self.input_tokens = 0
        self.output_tokens = 0

    def add(self, outcome: StepOutcome) -> None:
        self.cost_usd += outcome.cost_usd
        self.input_tokens += outcome.input_tokens
        self.output_tokens += outcome.output_tokens


def _tail(text: str, limit: int = OUTPUT_TAIL) -> str:
    return text if len(text) <= limit else text[-limit:]


async def run_agent(
    template: Sequence[Step], item: WorkItem, attempt: int, ctx: AgentContext
) -> Attempt:
    """Run the agent template for one item; never raises for a failing step."""
    started_at = now_iso()
    clock = time.monotonic()
    step_ctx = StepContext(
        cwd=ctx.workdir,
        env=item_environment(ctx, item, attempt),
        variables=item_variables(ctx, item, attempt),
        claude_bin=ctx.claude_bin,
        scratch_dir=ctx.scratch_dir,
    )
    spend = Spend()
    outputs: list[str] = []
    failure: tuple[Step, StepOutcome] | None = None
    try:
        async with asyncio.timeout(ctx.agent_timeout):
            for step in template:
                outcome = await run_step(step_spec(step), step_ctx)
                spend.add(outcome)
                if not outcome.ok and step.on_failure is not None:
                    handler = await run_step(step_spec(step.on_failure), step_ctx)
                    spend.add(handler)
                    if handler.ok:
                        outputs.append(handler.stdout)
                        continue
                if not outcome.ok:
                    failure = (step, outcome)
                    break
                outputs.append(outcome.stdout)
    except TimeoutError:
        error = f"agent timed out after {ctx.agent_timeout:g}s (agent_timeout_secs)"
        return Attempt(
            attempt=attempt,
            ok=False,
            started_at=started_at,
            duration_s=round(time.monotonic() - clock, 3),
            timed_out=True,
            error=error,
            error_kind="timeout",
            signature=error_signature("timeout", error),
            output=_tail("".join(outputs)),
            cost_usd=spend.cost_usd,
            input_tokens=spend.input_tokens,
            output_tokens=spend.output_tokens,
        )
    duration = round(time.monotonic() - clock, 3)
    if failure is not None:
        step, outcome = failure
        return Attempt(
            attempt=attempt,
            ok=False,
            started_at=started_at,
            duration_s=duration,
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            error=outcome.error,
            error_kind=outcome.error_kind,
            signature=error_signature(outcome.error_kind, outcome.error),
            failed_step=step.text,
            output=_tail("".join(outputs) + outcome.stdout),
            stderr=_tail(outcome.stderr),
            cost_usd=spend.cost_usd,
            input_tokens=spend.input_tokens,
            output_tokens=spend.output_tokens,
        )
    return Attempt(
        attempt=attempt,
        ok=True,
        started_at=started_at,
        duration_s=duration,
        exit_code=0,
        output=_tail("".join(outputs)),
        cost_usd=spend.cost_usd,
        input_tokens=spend.input_tokens,
        output_tokens=spend.output_tokens,
    )


class Executor(Protocol):
    """Where agents run. The engine calls `run_attempt` once per attempt, many concurrently."""

    async def run_attempt(self, item: WorkItem, attempt: int) -> Attempt: ...


class LocalExecutor:
    """Agents as local subprocesses in the job's working directory (`isolation: none`)."""

    def __init__(self, template: Sequence[Step], ctx: AgentContext) -> None:
        self.template = template
        self.ctx = ctx

    async def run_attempt(self, item: WorkItem, attempt: int) -> Attempt:
        return await run_agent(self.template, item, attempt, self.ctx)
