"""The job: setup, then the map phase, then reduce, then the end — in that order.

The engine builds one run's parts (recorder and its observers, checkpoint writer, scheduler,
interrupts), opens the executor and the workspace around the whole run (closed even on
Ctrl-C), owns the task group its background work runs in, and decides the next phase from the
recorded state. Everything else lives in the modules it calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prodigy import endings
from prodigy.agent import AgentSpec
from prodigy.checkpoint import CheckpointPacer, CheckpointWriter, JobInfo
from prodigy.context import RunContext, RunOptions, base_environment
from prodigy.errors import EXIT_FAILURE, EXIT_ITEMS_IN_DLQ, EXIT_OK
from prodigy.events import CheckpointCreated, EventLog
from prodigy.executors import Executor, open_executor
from prodigy.final_merge import merge_into_base
from prodigy.interrupts import Interrupts
from prodigy.job import JobMetadata
from prodigy.journal import Journal
from prodigy.phases import (
    attempt_runner,
    conflict_steps,
    freeze_items,
    item_spec,
    run_reduce,
    run_setup,
)
from prodigy.progress import Reporter
from prodigy.recorder import AttemptLines, Observer, Recorder, RecordEvents
from prodigy.scheduler import MapRules, MapScheduler
from prodigy.state import ItemStatus, JobEndStatus, JobState, Summary, phase
from prodigy.store import JobDir
from prodigy.workflow import Workflow
from prodigy.workspace import Workspace
from prodigy.worktree import GitWorkspace, open_workspace


class JobRunner:
    """Runs one job to its end (or to an interruption) with the job's lock already held."""

    def __init__(
        self,
        job: JobDir,
        meta: JobMetadata,
        workflow: Workflow,
        state: JobState,
        journal: Journal,
        events: EventLog,
        reporter: Reporter,
        options: RunOptions,
        executor: Executor | None = None,
        workspace: Workspace | None = None,
    ) -> None:
        self.journal = journal
        interrupts = Interrupts(reporter.warn)
        # The events log is a report, but one that silently lost lines would mislead: a failed
        # write stops the run like a failed journal write (SPEC-NOTES, damaged files).
        events.on_error = interrupts.fail
        writer = CheckpointWriter(
            job,
            _job_info(meta, workflow),
            workflow.checkpoint.max_checkpoints,
            after_write=self._after_checkpoint,
            on_error=interrupts.fail,
        )
        self.run_ctx = RunContext(
            job=job,
            meta=meta,
            workflow=workflow,
            state=state,
            recorder=Recorder(journal, state, []),
            writer=writer,
            events=events,
            reporter=reporter,
            options=options,
            interrupts=interrupts,
            executor=executor or open_executor(options.executor),
            workspace=workspace or open_workspace(meta, events),
        )
        if isinstance(self.run_ctx.workspace, GitWorkspace):
            self.run_ctx.workspace.on_conflict = conflict_steps(self.run_ctx)
        self._last_checkpoint_event: int | None = None

    # ---- the run -------------------------------------------------------------------------------

    async def run(self) -> int:
        return await self._session(self._phases)

    async def reprocess(self, indexes: list[int], status_before: JobEndStatus | None) -> int:
        """Run only `indexes` (items just taken out of the DLQ); no setup, no reduce."""

        async def body() -> int:
            await self._map(indexes, enforce_limits=False)
            run = self.run_ctx
            if run.interrupts.cut_short:
                return await endings.end_early(run, None)
            succeeded = any(run.state.status[i] == ItemStatus.SUCCEEDED for i in indexes)
            if succeeded and isinstance(run.workspace, GitWorkspace):
                await merge_into_base(run)  # their work, on the user's branch
            return await endings.reprocessed(run, indexes, status_before)

        return await self._session(body)

    async def _session(self, body: Callable[[], Awaitable[int]]) -> int:
        run = self.run_ctx
        run.recorder.observers = self._observers()
        error: Exception | None = None
        try:
            async with run.executor, run.workspace, asyncio.TaskGroup() as background:
                run.writer.spawn = background.create_task
                with run.interrupts.handling_signals():
                    try:
                        code = await body()
                    except Exception as exc:
                        # Raised after the task group, so it is not wrapped in a group.
                        error = exc
                    await run.writer.flush()
        finally:
            await self.journal.aclose()
            if run.items is not None:
                run.items.close()
        if error is not None:
            raise error
        if run.interrupts.fatal is not None and code in (EXIT_OK, EXIT_ITEMS_IN_DLQ):
            # It broke after the last point where the run could stop for it (the events log
            # failing at the final event, say): the job's record is whole, but say it.
            run.reporter.warn(f"error: {run.interrupts.fatal_message()}")
            return EXIT_FAILURE
        return code

    def _observers(self) -> list[Observer]:
        run = self.run_ctx
        setup_steps = len(run.workflow.setup.steps) if run.workflow.setup else 0
        observers: list[Observer] = []
        if run.options.verbose:
            observers.append(AttemptLines(run.reporter, run.item_id))
        observers.append(RecordEvents(run.events, run.item_id, setup_steps))
        observers.append(CheckpointPacer(run.writer, run.workflow.checkpoint.interval_items))
        return observers

    async def _phases(self) -> int:
        run = self.run_ctx
        run.write_metadata("running")
        if run.state.item_count is not None:
            run.open_items()
        has_setup = run.workflow.setup is not None and bool(run.workflow.setup.steps)
        if run.state.item_count is not None or has_setup:
            # Also when the version is unchanged: a resume may have requeued items since.
            run.save_checkpoint()
        if not run.state.setup_done:
            failure = await run_setup(run)
            if failure is not None or run.interrupts.stopped:
                return await endings.end_early(run, failure)
        if run.state.item_count is None:
            failure = await freeze_items(run)
            if failure is not None:
                return await endings.failed(run, failure)
        if self._phase() == "map":
            await self._map(None, enforce_limits=True)
            if run.interrupts.stopped:
                return await endings.end_early(run, None)
        if self._phase() == "reduce":
            failure = await run_reduce(run)
            if failure is not None or run.interrupts.stopped:
                return await endings.end_early(run, failure)
        if isinstance(run.workspace, GitWorkspace):
            await merge_into_base(run)
        return await endings.completed(run)

    def _phase(self) -> str:
        return phase(self.run_ctx.state, len(self.run_ctx.workflow.reduce))

    async def _map(self, only: list[int] | None, enforce_limits: bool) -> None:
        run = self.run_ctx
        items = run.open_items()
        spec = self._agent_spec()

        scheduler = MapScheduler(
            run.state,
            items,
            attempt_runner(run, spec),
            run.recorder,
            MapRules(run.options.max_parallel, run.workflow.error_policy, enforce_limits),
            run.interrupts,
            run.events,
            run.reporter,
            integrate=run.workspace.integrate,
        )
        run.writer.running = scheduler.running.values
        merges = dict(run.state.merging) if only is None else {}
        try:
            await scheduler.run(only, merges)
        finally:
            run.writer.running = tuple

    def _agent_spec(self) -> AgentSpec:
        run = self.run_ctx
        return AgentSpec(
            job_id=run.meta.job_id,
            template=run.workflow.map.agent_template,
            workflow_env=dict(run.workflow.environment),
            variables={**run.workflow.environment, **run.state.setup_outputs},
            masker=run.workflow.masker,
            claude_bin=run.options.claude_bin,
            scratch_dir=run.job.scratch,
            agent_timeout=run.workflow.map.agent_timeout_secs,
        )

    def _after_checkpoint(self, state: Summary) -> None:
        # A version is rewritten when the job ends (its status changes, not its items): one
        # event per version is enough.
        run = self.run_ctx
        if state.version != self._last_checkpoint_event:
            self._last_checkpoint_event = state.version
            run.events.emit(CheckpointCreated(version=state.version))
        run.write_metadata(state.ended or "running", state)


def _job_info(meta: JobMetadata, workflow: Workflow) -> JobInfo:
    return JobInfo(
        job_id=meta.job_id,
        workflow_path=meta.workflow_path,
        workflow_hash=meta.workflow_hash,
        workflow_config=workflow.config_json(),
        workdir=meta.workdir,
        reduce_steps=len(workflow.reduce),
        created_at=meta.created_at,
    )


def run_job(runner: JobRunner) -> int:
    return asyncio.run(runner.run())


def run_reprocess(runner: JobRunner, indexes: list[int], status_before: JobEndStatus | None) -> int:
    return asyncio.run(runner.reprocess(indexes, status_before))


__all__ = [
    "JobRunner",
    "RunOptions",
    "base_environment",
    "item_spec",
    "run_job",
    "run_reprocess",
]
