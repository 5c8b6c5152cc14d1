"""Where a job's work happens on disk: the directory setup and reduce run in, and the one
each agent attempt runs in.

A `Workspace` is opened before setup and closed after the job (`async with`). The shared
workspace (`isolation: none`) runs everything in the job's working directory; an isolating
workspace (git worktrees) gives each attempt a directory of its own and brings its work back.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import msgspec

from prodigy.items import WorkItem
from prodigy.state import Attempt


@dataclass
class Place:
    """Where one attempt runs: its directory and, when isolated, its branch."""

    path: Path
    branch: str | None = None

    def describe(self, result: Attempt) -> Attempt:
        """The attempt's result, naming where it ran when that is a place of its own."""
        if self.branch is None:
            return result
        return msgspec.structs.replace(result, worktree=str(self.path), branch=self.branch)


class Workspace(Protocol):
    @property
    def root(self) -> Path:
        """Where setup and reduce run."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def attempt(self, item: WorkItem, attempt: int) -> AbstractAsyncContextManager[Place]:
        """Where one attempt runs, for as long as the attempt runs."""
        ...

    async def integrate(self, item: WorkItem, result: Attempt, recovering: bool = False) -> Attempt:
        """Bring a successful attempt's work back (a merge); may turn it into a failure.
        `recovering`: the attempt was recorded before a crash; its work may be back already."""
        ...


class SharedWorkspace:
    """Every step in the job's working directory (`isolation: none`)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    @contextlib.asynccontextmanager
    async def attempt(self, item: WorkItem, attempt: int) -> AsyncIterator[Place]:
        yield Place(self._root)

    async def integrate(self, item: WorkItem, result: Attempt, recovering: bool = False) -> Attempt:
        return result  # the work is already where everyone works
