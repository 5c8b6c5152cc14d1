"""Where steps run. An `Executor` is opened before setup and closed after the job, even on
Ctrl-C (`async with`); between the two the engine asks it to run the setup and reduce steps
and, many at a time, one attempt of an item's agent. To add an executor (a cluster, say),
implement this protocol in a module of this package and choose it in `open_executor`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

from prodigy.agent import AfterStep, AgentSpec, SequenceResult
from prodigy.errors import UsageError
from prodigy.items import WorkItem
from prodigy.state import Attempt
from prodigy.steps import StepContext
from prodigy.workflow import Step, Workflow


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


@dataclass(frozen=True)
class ExecutorChoice:
    """Where agents run: `local`, or a Dask scheduler's address (and a working directory
    there, when the workers see the repository under another path)."""

    kind: Literal["local", "dask"] = "local"
    address: str = ""
    working_dir: str | None = None


LOCAL = ExecutorChoice()


def parse_executor(text: str) -> ExecutorChoice:
    """`--executor local` or `--executor dask://HOST:PORT`; anything else is a usage error."""
    if text == "local":
        return LOCAL
    scheme, _, address = text.partition("://")
    port = address.rpartition(":")[2]
    if scheme == "dask" and _HOST_PORT.fullmatch(address) and int(port) <= 65535:
        return ExecutorChoice("dask", f"tcp://{address}")
    raise UsageError(
        f"--executor {text!r} is not an executor prodigy knows; use local or dask://HOST:PORT."
    )


def choose_executor(flag: str | None, workflow: Workflow, isolation: str) -> ExecutorChoice:
    """The flag wins over the workflow's `executor:`; worktrees stay on one machine."""
    configured = workflow.executor
    choice = LOCAL
    if flag is not None:
        choice = parse_executor(flag)
    elif configured is not None and configured.dask is not None:
        choice = parse_executor(f"dask://{configured.dask}")
    if choice.kind == "dask":
        if configured is not None and configured.working_dir is not None:
            choice = ExecutorChoice("dask", choice.address, configured.working_dir)
        from prodigy.executors.dask import probe, require_dask

        require_dask()
        if isolation == "worktree":
            raise UsageError(
                "Worktree isolation runs on one machine and cannot use a Dask cluster; set "
                "map.isolation: none to run the agents on the cluster, or drop --executor."
            )
        probe(choice.address)
    return choice


def open_executor(choice: ExecutorChoice = LOCAL) -> Executor:
    """The executor for this run."""
    if choice.kind == "dask":
        from prodigy.executors.dask import DaskExecutor

        return DaskExecutor(choice.address, choice.working_dir)
    from prodigy.executors.local import LocalExecutor

    return LocalExecutor()


_HOST_PORT = re.compile(r"[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}")
