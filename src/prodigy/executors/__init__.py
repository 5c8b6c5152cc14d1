"""Where steps run. An `Executor` is opened before setup and closed after the job, even on
Ctrl-C (`async with`); between the two the engine asks it to run the setup and reduce steps
and, many at a time, one attempt of an item's agent. To add an executor (a cluster, say),
implement this protocol in a module of this package and choose it in `open_executor`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from prodigy.agent import AfterStep, AgentSpec, SequenceResult
from prodigy.items import WorkItem
from prodigy.state import Attempt
from prodigy.steps import StepContext
from prodigy.workflow import Step


class Executor(Protocol):
    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def run_steps(
        self,
        steps: Sequence[Step],
        ctx: StepContext,
        first: int,
        after_step: AfterStep | None,
        should_stop: Callable[[], bool],
        into: SequenceResult,
    ) -> SequenceResult:
        """Setup or reduce steps, on the coordinator's machine, in `ctx.cwd`."""
        ...

    async def run_attempt(
        self, spec: AgentSpec, item: WorkItem, attempt: int, cwd: Path
    ) -> Attempt:
        """One attempt of `item`'s agent in `cwd`; cancelling it kills its processes."""
        ...


def open_executor() -> Executor:
    """The executor for this run (the local one: agents as local process groups)."""
    from prodigy.executors.local import LocalExecutor

    return LocalExecutor()
