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
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from prodigy.items import WorkItem


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

    def attempt(self, item: WorkItem, attempt: int) -> AbstractAsyncContextManager[Path]:
        """The directory one attempt runs in, for as long as the attempt runs."""
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
    async def attempt(self, item: WorkItem, attempt: int) -> AsyncIterator[Path]:
        yield self._root
