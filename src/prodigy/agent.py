"""Running a sequence of steps, and one item's agent built on it.

`run_sequence` is the one step loop: setup, reduce and every agent attempt go through it (each
step in order, its `on_failure` handler, `capture_output`). `run_agent` wraps it for one item:
the item's variables and environment, the agent time limit, and the `Attempt` it returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prodigy.errors import UnusableValue
from prodigy.events import now_iso
from prodigy.item_environment import prodigy_variables
from prodigy.items import WorkItem
from prodigy.secrets import NO_MASK, Masker
from prodigy.state import NO_SPEND, Attempt, Spend, error_signature
from prodigy.steps import StepContext, StepOutcome, StepSpec
from prodigy.workflow import Step

OUTPUT_TAIL = 4000  # characters of an agent's output kept with its result

RunStep = Callable[[StepSpec, StepContext], Awaitable[StepOutcome]]
AfterStep = Callable[[int, StepOutcome, dict[str, str], Spend], Awaitable[None]]


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


@dataclass
class SequenceResult:
    """How a run of steps ended: `failure` names the failing step, None when all succeeded
    (or when the run was told to stop before its end: see `stopped`)."""

    outputs: list[str] = field(default_factory=list)  # stdout of each step that succeeded
    captured: dict[str, str] = field(default_factory=dict)
    spend: Spend = NO_SPEND
    failure: tuple[int, Step, StepOutcome] | None = None
    stopped: bool = False

    def failure_sentence(self) -> str | None:
        if self.failure is None:
            return None
        n, step, outcome = self.failure
        return f"step {n + 1} ({step.text}) failed: {outcome.error}"


async def run_sequence(
    steps: Sequence[Step],
    ctx: StepContext,
    run_step: RunStep,
    first: int = 0,
    after_step: AfterStep | None = None,
    should_stop: Callable[[], bool] | None = None,
    into: SequenceResult | None = None,
) -> SequenceResult:
    """Run `steps` from `first` in order until one fails; never raises for a failing step.

    A step's captured output is a variable for the steps after it; `after_step` hears of each
    step that succeeded (its index, outcome, what it captured, what it cost) before the next
    starts.
    `into` is filled as steps end, so a caller that cancels the run still sees what was done.
    """
    result = into if into is not None else SequenceResult()
    variables = dict(ctx.variables)
    for n in range(first, len(steps)):
        if should_stop is not None and should_stop():
            result.stopped = True
            return result
        step = steps[n]
        here = dataclasses.replace(ctx, variables=dict(variables))
        outcome = await run_step(step_spec(step), here)
        spend = outcome.spend
        if not outcome.ok and step.on_failure is not None:
            handler = await run_step(step_spec(step.on_failure), here)
            spend += handler.spend
            if handler.ok:
                outcome = handler
        result.spend += spend
        if not outcome.ok:
            result.failure = (n, step, outcome)
            return result
        result.outputs.append(outcome.stdout)
        captured: dict[str, str] = {}
        if step.capture_output:
            captured[step.capture_output] = outcome.stdout.strip()
            variables.update(captured)
            result.captured.update(captured)
        if after_step is not None:
            await after_step(n, outcome, captured, spend)
    return result


@dataclass(frozen=True)
class AgentSpec:
    """What every agent attempt of a job shares; plain data, so it can travel to a worker."""

    job_id: str
    template: Sequence[Step]
    # The workflow's env only: the rest of an agent's environment is that of the process
    # running it (the coordinator's locally, a worker's on a cluster).
    workflow_env: Mapping[str, str]
    variables: Mapping[str, Any]  # workflow env + setup captures
    claude_bin: str
    scratch_dir: Path
    agent_timeout: float | None
    masker: Masker = NO_MASK  # the job's secret values (SPEC §9)


# The environment every attempt of a run shares, built once per spec: copying os.environ
# decodes each variable again, a noticeable part of a trivial agent's cost.
_shared: tuple[AgentSpec, dict[str, str]] | None = None


def _shared_environment(spec: AgentSpec) -> dict[str, str]:
    global _shared
    shared = _shared
    if shared is None or shared[0] is not spec:
        shared = (spec, {**os.environ, **spec.workflow_env, "PRODIGY_JOB_ID": spec.job_id})
        _shared = shared
    return shared[1]


def item_environment(spec: AgentSpec, item: WorkItem, attempt: int) -> dict[str, str]:
    """The agent's whole environment; UnusableValue when the item's data cannot go in it."""
    return {
        **_shared_environment(spec),
        **prodigy_variables(spec.job_id, item.id, item.index, attempt, item.data),
    }


def item_variables(spec: AgentSpec, item: WorkItem, attempt: int) -> dict[str, Any]:
    return {
        **spec.variables,
        "item": item.data,
        "item_index": item.index,
        "item_id": item.id,
        "attempt": attempt,
        "job_id": spec.job_id,
    }


def _tail(text: str, masker: Masker, limit: int = OUTPUT_TAIL) -> str:
    # Masked again as a whole: the end of one step's output and the start of the next could
    # together spell a secret.
    text = masker.mask(text)
    return text if len(text) <= limit else text[-limit:]


async def run_agent(
    spec: AgentSpec, item: WorkItem, attempt: int, cwd: Path, run_step: RunStep
) -> Attempt:
    """Run the agent template for one item in `cwd`; never raises for a failing step."""
    started_at = now_iso()
    clock = time.monotonic()
    try:
        env = item_environment(spec, item, attempt)
    except UnusableValue as exc:
        return Attempt(
            attempt=attempt,
            ok=False,
            started_at=started_at,
            duration_s=round(time.monotonic() - clock, 3),
            error=exc.message,
            error_kind="unusable_value",
            signature=error_signature("unusable_value", exc.message),
        )
    ctx = StepContext(
        cwd=cwd,
        env=env,
        variables=item_variables(spec, item, attempt),
        claude_bin=spec.claude_bin,
        scratch_dir=spec.scratch_dir,
        masker=spec.masker,
    )
    done = SequenceResult()  # filled as steps end: a time limit keeps what was done and paid
    try:
        async with asyncio.timeout(spec.agent_timeout):
            await run_sequence(spec.template, ctx, run_step, into=done)
    except TimeoutError:
        error = f"agent timed out after {spec.agent_timeout:g}s (agent_timeout_secs)"
        return Attempt(
            attempt=attempt,
            ok=False,
            started_at=started_at,
            duration_s=round(time.monotonic() - clock, 3),
            timed_out=True,
            error=error,
            error_kind="timeout",
            signature=error_signature("timeout", error),
            output=_tail("".join(done.outputs), spec.masker),
            spend=done.spend,
        )
    duration = round(time.monotonic() - clock, 3)
    output = "".join(done.outputs)
    if done.failure is not None:
        _, step, outcome = done.failure
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
            output=_tail(output + outcome.stdout, spec.masker),
            stderr=_tail(outcome.stderr, spec.masker),
            spend=done.spend,
        )
    return Attempt(
        attempt=attempt,
        ok=True,
        started_at=started_at,
        duration_s=duration,
        exit_code=0,
        output=_tail(output, spec.masker),
        spend=done.spend,
    )
