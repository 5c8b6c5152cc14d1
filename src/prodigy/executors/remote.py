"""What runs on a cluster worker: one agent attempt, as a local agent runs, under a watchdog.

A worker runs the attempt's steps with the same process groups, timeouts and output capture
as the coordinator would, in an event loop of its own. Every half second it asks the worker
whether the task is still wanted: when the coordinator cancels it (Ctrl-C) or is gone (its
connection lost, so the scheduler releases its tasks), the agent is cancelled, which kills its
process groups. A process-wide reaper kills them too if the worker process itself dies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from prodigy.agent import AgentSpec, run_agent
from prodigy.events import now_iso
from prodigy.items import WorkItem
from prodigy.reaper import keep_reaping
from prodigy.state import Attempt, error_signature
from prodigy.steps import run_step

WATCH_INTERVAL_S = 0.5
_GONE_STATES = frozenset({"cancelled", "released", "forgotten", "error"})


def run_on_worker(spec: AgentSpec, item: WorkItem, attempt: int, cwd: str) -> Attempt:
    """The task a Dask worker runs for one attempt (in one of its threads)."""
    from distributed import get_worker

    keep_reaping()
    worker = get_worker()
    key = worker.get_current_task()

    def wanted() -> bool:
        task = worker.state.tasks.get(key)
        return task is not None and task.state not in _GONE_STATES

    here = dataclasses.replace(
        spec, workflow_env={**spec.workflow_env, "PRODIGY_WORKER": str(worker.address)}
    )
    return asyncio.run(_watched(here, item, attempt, Path(cwd), wanted))


async def _watched(
    spec: AgentSpec, item: WorkItem, attempt: int, cwd: Path, wanted: Callable[[], bool]
) -> Attempt:
    started_at, clock = now_iso(), time.monotonic()
    agent = asyncio.ensure_future(run_agent(spec, item, attempt, cwd, run_step))
    while not agent.done():
        await asyncio.wait({agent}, timeout=WATCH_INTERVAL_S)
        if not agent.done() and not wanted():
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)
            # Nobody waits for this result; it says what happened should anyone look.
            error = "the coordinator no longer wants this attempt (cancelled or gone)"
            return Attempt(
                attempt=attempt,
                ok=False,
                started_at=started_at,
                duration_s=round(time.monotonic() - clock, 3),
                error=error,
                error_kind="cancelled",
                signature=error_signature("cancelled", error),
            )
    return agent.result()
