"""Agents as local subprocesses, each step in a process group of its own.

While open, the executor keeps the reaper (which SIGKILLs every step's process group if the
coordinator dies, even by `kill -9`) and, on Python 3.11, a pidfd child watcher (so waiting
for hundreds of children a second costs no thread per child).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from prodigy.agent import AfterStep, AgentSpec, SequenceResult, run_agent, run_sequence
from prodigy.items import WorkItem
from prodigy.reaper import reaping
from prodigy.spawn import pidfd_works
from prodigy.state import Attempt
from prodigy.steps import StepContext, run_step
from prodigy.workflow import Step


def _watch_children_with_pidfd() -> None:
    """On Python 3.11 asyncio waits for each child on a thread of its own; a pidfd watcher
    waits in the event loop instead. (3.12+ does this by itself.)"""
    if sys.version_info < (3, 12) and pidfd_works():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.set_child_watcher(watcher)


class LocalExecutor:
    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()

    async def __aenter__(self) -> Self:
        _watch_children_with_pidfd()
        self._stack.enter_context(reaping())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    async def run_steps(
        self,
        steps: Sequence[Step],
        ctx: StepContext,
        first: int,
        after_step: AfterStep | None,
        should_stop: Callable[[], bool],
        into: SequenceResult,
    ) -> SequenceResult:
        return await run_sequence(steps, ctx, run_step, first, after_step, should_stop, into)

    async def run_attempt(
        self, spec: AgentSpec, item: WorkItem, attempt: int, cwd: Path
    ) -> Attempt:
        return await run_agent(spec, item, attempt, cwd, run_step)
