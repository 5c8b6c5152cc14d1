"""Agents on a Dask distributed cluster (`--executor dask://HOST:PORT`, SPEC §7).

The coordinator (journal, checkpoints, events, lock) stays in this process; each attempt is a
Dask task running `remote.run_on_worker`. Setup and reduce run here, on the local executor.
Dask re-runs a task whose worker was lost on another worker: at-least-once from the cluster,
exactly-once in the record (a second result for a succeeded item is never recorded). A task
cancelled here, or orphaned by a coordinator that died, ends its agent's process groups on
the worker within about a second.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from prodigy.agent import AfterStep, AgentSpec, SequenceResult
from prodigy.errors import ProdigyError, UsageError
from prodigy.events import now_iso
from prodigy.executors.local import LocalExecutor
from prodigy.items import WorkItem
from prodigy.state import Attempt, error_signature
from prodigy.steps import StepContext
from prodigy.workflow import Step

DEFAULT_CONNECT_TIMEOUT_S = 10.0
INSTALL_HINT = "pip install 'prodigy[dask]'"


def connect_timeout() -> float:
    """How long to wait for the scheduler (PRODIGY_DASK_CONNECT_TIMEOUT, seconds)."""
    try:
        return float(os.environ.get("PRODIGY_DASK_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_CONNECT_TIMEOUT_S


def require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ProdigyError(
            "The Dask executor needs the dask extra, which is not installed; install it with "
            f"`{INSTALL_HINT}`."
        ) from None


def unreachable(address: str, timeout: float, reason: object) -> ProdigyError:
    return ProdigyError(
        f"The Dask scheduler at {address} cannot be reached within {timeout:g}s ({reason}); "
        "start it (`dask scheduler`) or check --executor."
    )


def probe(address: str) -> None:
    """Refuse a scheduler nobody listens at before a job is created for it."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    timeout = connect_timeout()
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise unreachable(address, timeout, exc.strerror or exc) from None
    except UnicodeError:
        # A host name IDNA cannot encode (`..`, a label of 64 characters or more).
        raise UsageError(
            f"The Dask scheduler address {address.removeprefix('tcp://')} has no valid host "
            "name; check --executor or the workflow's executor.dask."
        ) from None


class DaskExecutor:
    def __init__(self, address: str, working_dir: str | None = None) -> None:
        self.address = address
        self.working_dir = working_dir
        self.local = LocalExecutor()
        self.client: Any = None
        self._run_id = uuid.uuid4().hex[:8]

    async def __aenter__(self) -> Self:
        require_dask()
        from distributed import Client

        timeout = connect_timeout()
        try:
            self.client = await asyncio.wait_for(
                Client(  # type: ignore[no-untyped-call]
                    self.address, asynchronous=True, timeout=timeout, set_as_default=False
                ),
                timeout + 1,
            )
        except (OSError, TimeoutError) as exc:
            raise unreachable(self.address, timeout, exc or "timed out") from None
        await self.local.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.client is not None:
                await self.client.close()
        finally:
            await self.local.__aexit__(exc_type, exc, tb)

    async def run_steps(
        self,
        steps: Sequence[Step],
        ctx: StepContext,
        first: int,
        after_step: AfterStep | None,
        should_stop: Callable[[], bool],
        into: SequenceResult,
    ) -> SequenceResult:
        return await self.local.run_steps(steps, ctx, first, after_step, should_stop, into)

    async def run_attempt(
        self, spec: AgentSpec, item: WorkItem, attempt: int, cwd: Path
    ) -> Attempt:
        from distributed import KilledWorker

        from prodigy.executors.remote import run_on_worker

        where = self.working_dir or str(cwd)
        key = f"prodigy-{spec.job_id}-{self._run_id}-{item.index}-a{attempt}"
        future = self.client.submit(run_on_worker, spec, item, attempt, where, key=key)
        try:
            result: Attempt = await future
        except asyncio.CancelledError:
            # Cancelled here (Ctrl-C, the grace ended): the worker's watchdog sees the task
            # cancelled and kills the agent's process groups.
            await asyncio.shield(self.client.cancel([future], force=True))
            raise
        except KilledWorker as exc:
            return _lost(attempt, exc)
        return result


def _lost(attempt: int, exc: BaseException) -> Attempt:
    """Dask gave up on the task after losing several workers running it."""
    error = f"the workers running this attempt kept dying ({exc})"
    return Attempt(
        attempt=attempt,
        ok=False,
        started_at=now_iso(),
        duration_s=0.0,
        error=error,
        error_kind="worker_lost",
        signature=error_signature("worker_lost", error),
    )
