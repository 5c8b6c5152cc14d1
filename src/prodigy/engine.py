"""The job: setup, then the map phase (scheduler, retries, failure policy), then reduce.

Every transition goes through `_commit`: append the record to the journal (durable), then fold
it into the in-memory state, then report it (events, progress, background checkpoint). Signals
stop the scheduler from starting agents; running agents get a grace period, then their process
groups are killed and their items go back to pending.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import random
import signal
import sys
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from prodigy.agent import AgentContext, Executor, LocalExecutor, Spend, step_spec
from prodigy.checkpoint import CheckpointWriter, JobInfo
from prodigy.errors import (
    EXIT_FAILURE,
    EXIT_ITEMS_IN_DLQ,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    ProdigyError,
)
from prodigy.events import EventLog
from prodigy.items import ItemSpec, WorkItem, load_items
from prodigy.job import ItemsFile, JobMetadata, metadata_document, write_items
from prodigy.journal import Journal
from prodigy.progress import Reporter
from prodigy.reaper import reaping
from prodigy.retry import backoff_delay
from prodigy.state import (
    AttemptEnded,
    Counts,
    ItemsFrozen,
    ItemStatus,
    JobEnded,
    JobEndStatus,
    JobState,
    Outcome,
    Record,
    ReduceStepCompleted,
    SetupCompleted,
    apply_record,
    counts,
    decide_outcome,
    phase,
)
from prodigy.steps import StepContext, StepOutcome, run_step
from prodigy.store import JobDir
from prodigy.workflow import Step, Workflow

DEFAULT_GRACE_SECONDS = 5.0


def grace_seconds() -> float:
    """How long running agents may finish after a first Ctrl-C (PRODIGY_INTERRUPT_GRACE)."""
    try:
        return float(os.environ.get("PRODIGY_INTERRUPT_GRACE", DEFAULT_GRACE_SECONDS))
    except ValueError:
        return DEFAULT_GRACE_SECONDS


def item_spec(workflow: Workflow, max_items: int | None = None) -> ItemSpec:
    m = workflow.map
    limit = m.max_items
    if max_items is not None:
        limit = max_items if limit is None else min(limit, max_items)
    return ItemSpec(
        input=m.input,
        json_path=m.json_path,
        filter=m.filter,
        sort_by=m.sort_by,
        distinct=m.distinct,
        offset=m.offset,
        max_items=limit,
        id_field=m.id_field,
    )


def base_environment(workflow: Workflow) -> dict[str, str]:
    return {**os.environ, **workflow.env}


@dataclass
class RunOptions:
    max_parallel: int
    claude_bin: str
    max_items: int | None = None
    preloaded_items: list[WorkItem] | None = None
    verbose: bool = False  # a line per ended attempt


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
    ) -> None:
        self.job = job
        self.meta = meta
        self.workflow = workflow
        self.state = state
        self.journal = journal
        self.events = events
        self.reporter = reporter
        self.options = options
        self.items: ItemsFile | None = None
        self.info = JobInfo(
            job_id=meta.job_id,
            workflow_path=meta.workflow_path,
            workflow_hash=meta.workflow_hash,
            workflow_config=workflow.config_json(),
            workdir=meta.workdir,
            reduce_steps=len(workflow.reduce),
            created_at=meta.created_at,
        )
        self.writer = CheckpointWriter(
            job,
            self.info,
            [],
            workflow.checkpoint.max_checkpoints,
            after_write=self._after_checkpoint,
        )
        self._stop = asyncio.Event()
        self._signal: int | None = None
        self._policy_stop: str | None = None
        self._fatal: BaseException | None = None
        self._killable: set[asyncio.Task[Any]] = set()
        self._commits: set[asyncio.Task[None]] = set()
        self._failed_this_run = 0
        self._from_dlq: set[int] = set()
        self._policy_enabled = True
        self._last_checkpoint_event: int | None = None
        self._finished_this_run = 0
        self._rng = random.Random()

    # ---- bookkeeping ---------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        return Path(self.meta.workdir)

    def _metadata(self, status: str) -> None:
        self.job.write_metadata(metadata_document(self.meta, self.state, status, os.getpid()))

    def _after_checkpoint(self, state: JobState) -> None:
        # A version is rewritten when the job ends (its status changes, not its items): one
        # event per version is enough.
        if state.version != self._last_checkpoint_event:
            self._last_checkpoint_event = state.version
            self.events.emit("checkpoint_created", version=state.version)
        self.job.write_metadata(
            metadata_document(self.meta, state, state.ended or "running", os.getpid())
        )

    def _open_items(self) -> None:
        self.items = ItemsFile(self.job.items)
        self.writer.item_ids = self.items.ids

    async def _commit(self, record: Record) -> None:
        await self.journal.append(record)
        apply_record(self.state, record)

    def _track_commit(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        return task

    def _maybe_checkpoint(self) -> None:
        written = self.writer.written_version
        if (
            written is None
            or self.state.version - written >= self.workflow.checkpoint.interval_items
        ):
            self.writer.request(self.state)

    def _save_checkpoint_now(self) -> None:
        self.writer.write_now(self.state)
        self._after_checkpoint(self.state)

    # ---- signals -------------------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        loop = asyncio.get_running_loop()
        if self._signal is None:
            self._signal = signum
            self._stop.set()
            self.reporter.warn(
                "Interrupt received: starting no new agents; running agents get "
                f"{grace_seconds():g}s to finish (press Ctrl-C again to stop them now)."
            )
            loop.call_later(grace_seconds(), self._kill_running)
        else:
            self._kill_running()

    def _kill_running(self) -> None:
        for task in list(self._killable):
            task.cancel()

    def _request_stop(self, reason: str) -> None:
        if self._policy_stop is None:
            self._policy_stop = reason
        self._stop.set()

    # ---- the run -------------------------------------------------------------------------------

    async def run(self) -> int:
        return await self._with_signals(self._run_phases())

    async def reprocess(self, indexes: list[int], status_before: JobEndStatus | None) -> int:
        """Run only `indexes` (items just taken out of the DLQ); no setup, no reduce."""
        return await self._with_signals(self._reprocess(indexes, status_before))

    async def _with_signals(self, body: Awaitable[int]) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            return await body
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await self.writer.flush()
            await self.journal.aclose()
            if self.items is not None:
                self.items.close()

    async def _run_phases(self) -> int:
        self._metadata("running")
        if self.state.item_count is not None:
            self._open_items()
        has_setup = self.workflow.setup is not None and bool(self.workflow.setup.steps)
        frozen_or_setup = self.state.item_count is not None or has_setup
        if frozen_or_setup:
            # Also when the version is unchanged: a resume may have requeued items since.
            self._save_checkpoint_now()
        if not self.state.setup_done:
            failure = await self._run_setup()
            if failure is not None or self._stop.is_set():
                return await self._end_early(failure)
        if self.state.item_count is None:
            try:
                await self._freeze_items()
            except ProdigyError as exc:
                return await self._fail(str(exc))
        if phase(self.state, len(self.workflow.reduce)) == "map":
            await self._run_map()
            if self._signal is not None or self._policy_stop or self._fatal:
                return await self._end_early(None)
        if phase(self.state, len(self.workflow.reduce)) == "reduce":
            failure = await self._run_reduce()
            if failure is not None or self._stop.is_set():
                return await self._end_early(failure)
        return await self._complete()

    async def _reprocess(self, indexes: list[int], status_before: JobEndStatus | None) -> int:
        self._metadata("running")
        self._open_items()
        self._from_dlq = set(indexes)
        # A reprocess is a deliberate second try: the failure policy does not cut it short.
        self._policy_enabled = False
        await self._run_map(indexes)
        if self._signal is not None or self._fatal:
            return await self._end_early(None)
        c = counts(self.state)
        still = sum(1 for i in indexes if self.state.status[i] == ItemStatus.DEAD)
        self.reporter.close()
        self.reporter.say(
            f"Reprocessed {len(indexes)} DLQ items: {len(indexes) - still} succeeded and left "
            f"the DLQ, {still} failed and stay in it ({c.dead} in the DLQ now)."
        )
        done = phase(self.state, len(self.workflow.reduce)) == "done"
        status: JobEndStatus = "completed" if done else (status_before or "interrupted")
        await self._end(status, self.state.end_reason if not done else "")
        if done and len(indexes) > still:
            self.reporter.say(
                "The reduce phase ran before these items succeeded; re-run it with: "
                f"prodigy resume-job {self.meta.job_id} --force"
            )
        return EXIT_ITEMS_IN_DLQ if still else EXIT_OK

    # ---- setup ---------------------------------------------------------------------------------

    def _variables(self) -> dict[str, Any]:
        return {**self.workflow.env, **self.state.captures(), "job_id": self.meta.job_id}

    def _phase_env(self) -> dict[str, str]:
        return {**base_environment(self.workflow), "PRODIGY_JOB_ID": self.meta.job_id}

    async def _run_steps(
        self,
        steps: Sequence[Step],
        first: int,
        variables: dict[str, Any],
        env: Mapping[str, str],
        on_done: Callable[[int, dict[str, str], Spend], Awaitable[None]],
        show_output: bool = False,
    ) -> str | None:
        """Run steps in order from `first`; the failure sentence, or None when all succeeded."""
        for n in range(first, len(steps)):
            if self._stop.is_set():
                return None
            step = steps[n]
            ctx = StepContext(
                cwd=self.workdir,
                env=env,
                variables=dict(variables),
                claude_bin=self.options.claude_bin,
                scratch_dir=self.job.scratch,
            )
            spend = Spend()
            outcome = await self._killable_step(step, ctx)
            if outcome is None:
                return None
            spend.add(outcome)
            if not outcome.ok and step.on_failure is not None:
                handler = await self._killable_step(step.on_failure, ctx)
                if handler is None:
                    return None
                spend.add(handler)
                if handler.ok:
                    outcome = handler
            if not outcome.ok:
                return f"step {n + 1} ({step.text}) failed: {outcome.error}"
            if show_output and outcome.stdout.strip():
                self.reporter.say(outcome.stdout.rstrip("\n"))
            captured: dict[str, str] = {}
            if step.capture_output:
                captured[step.capture_output] = outcome.stdout.strip()
                variables.update(captured)
            await on_done(n, captured, spend)
        return None

    async def _killable_step(self, step: Step, ctx: StepContext) -> StepOutcome | None:
        task = asyncio.ensure_future(run_step(step_spec(step), ctx))
        self._killable.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and not self._is_self_cancelled():
                return None
            raise
        finally:
            self._killable.discard(task)

    @staticmethod
    def _is_self_cancelled() -> bool:
        current = asyncio.current_task()
        return current is not None and current.cancelling() > 0

    async def _run_setup(self) -> str | None:
        setup = self.workflow.setup
        self.job.scratch.mkdir(exist_ok=True)
        if setup is None or not setup.steps:
            await self._commit(SetupCompleted(outputs={}))
            return None
        self.events.emit("setup_started", steps=len(setup.steps))
        self.reporter.say(f"Running setup ({len(setup.steps)} steps)...")
        outputs: dict[str, str] = {}
        spent = Spend()

        async def done(n: int, captured: dict[str, str], spend: Spend) -> None:
            outputs.update(captured)
            spent.cost_usd += spend.cost_usd
            spent.input_tokens += spend.input_tokens
            spent.output_tokens += spend.output_tokens

        try:
            async with asyncio.timeout(setup.timeout):
                failure = await self._run_steps(
                    setup.steps, 0, self._variables(), self._phase_env(), done
                )
        except TimeoutError:
            failure = f"setup timed out after {setup.timeout:g}s"
        if failure is not None:
            return f"setup failed: {failure}"
        if self._stop.is_set():
            return None
        await self._commit(
            SetupCompleted(
                outputs=outputs,
                cost_usd=spent.cost_usd,
                input_tokens=spent.input_tokens,
                output_tokens=spent.output_tokens,
            )
        )
        self.events.emit("setup_completed", outputs=sorted(outputs))
        return None

    async def _freeze_items(self) -> None:
        items = self.options.preloaded_items
        if items is None:
            loaded = await asyncio.to_thread(
                load_items,
                item_spec(self.workflow, self.options.max_items),
                self.workdir,
                self._phase_env(),
            )
            for warning in loaded.warnings:
                self.reporter.warn(f"warning: {warning}")
            items = loaded.items
        write_items(self.job, items)
        await self._commit(
            ItemsFrozen(
                count=len(items), max_attempts=self.workflow.error_policy.retry_config.max_attempts
            )
        )
        self._open_items()
        self._save_checkpoint_now()

    # ---- map -----------------------------------------------------------------------------------

    def _executor(self) -> Executor:
        ctx = AgentContext(
            job_id=self.meta.job_id,
            workdir=self.workdir,
            base_env=base_environment(self.workflow),
            variables={**self.workflow.env, **self.state.setup_outputs},
            claude_bin=self.options.claude_bin,
            scratch_dir=self.job.scratch,
            agent_timeout=self.workflow.map.agent_timeout_secs,
        )
        return LocalExecutor(self.workflow.map.agent_template, ctx)

    async def _run_map(self, only: list[int] | None = None) -> None:
        assert self.items is not None
        executor = self._executor()
        queue: deque[int] = deque(
            only
            if only is not None
            else self.state.indexes_with(ItemStatus.PENDING, ItemStatus.FAILED, ItemStatus.RUNNING)
        )
        delayed: list[tuple[float, int]] = []
        running: dict[asyncio.Task[Outcome], int] = {}
        loop = asyncio.get_running_loop()
        self.events.emit("map_started", items=len(queue), max_parallel=self.options.max_parallel)
        self.reporter.start_map(counts(self.state))
        stop_waiter = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                now = loop.time()
                while delayed and delayed[0][0] <= now:
                    queue.append(heapq.heappop(delayed)[1])
                while (
                    not self._stop.is_set() and queue and len(running) < self.options.max_parallel
                ):
                    index = queue.popleft()
                    task = asyncio.ensure_future(self._run_agent(executor, index))
                    running[task] = index
                    self._killable.add(task)
                if not running and (self._stop.is_set() or (not queue and not delayed)):
                    break
                timeout = None
                if delayed and not self._stop.is_set():
                    timeout = max(0.0, delayed[0][0] - loop.time())
                waiting: set[asyncio.Future[Any]] = set(running)
                if not self._stop.is_set():
                    waiting.add(stop_waiter)
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for finished in done:
                    if finished is stop_waiter:
                        continue
                    agent_task: asyncio.Task[Outcome] = finished  # type: ignore[assignment]
                    index = running.pop(agent_task)
                    self._killable.discard(agent_task)
                    self._after_agent(agent_task, index, delayed, loop.time())
                self.reporter.update(counts(self.state), len(running), self.state.cost_usd)
        finally:
            stop_waiter.cancel()
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            if self._commits:
                await asyncio.gather(*list(self._commits), return_exceptions=True)
        self.reporter.update(counts(self.state), 0, self.state.cost_usd, final=True)
        self.reporter.close()

    def _after_agent(
        self, task: asyncio.Task[Outcome], index: int, delayed: list[tuple[float, int]], now: float
    ) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if self._fatal is None:
                self._fatal = exc
            self._stop.set()
            self._kill_running()
            return
        outcome = task.result()
        policy = self.workflow.error_policy
        if outcome == "retry":
            retry = policy.retry_config
            delay = backoff_delay(
                retry.backoff,
                self.state.attempts[index],
                retry.initial_delay,
                retry.max_delay,
                retry.jitter,
                self._rng,
            )
            heapq.heappush(delayed, (now + delay, index))
            assert self.items is not None
            self.events.emit(
                "agent_retrying",
                item_id=self.items.ids[index],
                attempt=self.state.attempts[index] + 1,
                delay_s=round(delay, 3),
            )
            return
        self._finished_this_run += 1
        if outcome in ("dead", "skipped"):
            self._failed_this_run += 1
            if self._policy_enabled:
                self._check_failure_policy(index, outcome)

    def _check_failure_policy(self, index: int, outcome: Outcome) -> None:
        policy = self.workflow.error_policy
        assert self.items is not None
        if policy.on_item_failure == "stop" and outcome == "dead":
            self._request_stop(
                f"item {self.items.ids[index]} failed and error_policy.on_item_failure is stop"
            )
        elif policy.max_failures is not None and self._failed_this_run >= policy.max_failures:
            self._request_stop(
                f"{self._failed_this_run} items failed, reaching error_policy.max_failures "
                f"({policy.max_failures})"
            )
        elif (
            policy.failure_threshold is not None
            and self._finished_this_run >= 10
            and self._failed_this_run / self._finished_this_run >= policy.failure_threshold
        ):
            rate = self._failed_this_run / self._finished_this_run
            self._request_stop(
                f"{rate:.0%} of items failed, reaching error_policy.failure_threshold "
                f"({policy.failure_threshold:.0%})"
            )

    async def _run_agent(self, executor: Executor, index: int) -> Outcome:
        assert self.items is not None
        item = self.items.get(index)
        previous = self.state.status[index]
        attempt = self.state.attempts[index] + 1
        self.state.status[index] = ItemStatus.RUNNING
        self.events.emit("agent_started", item_id=item.id, attempt=attempt)
        try:
            result = await executor.run_attempt(item, attempt)
        except asyncio.CancelledError:
            # An interrupted attempt is not a failure and does not count: back to where it was.
            if self.state.status[index] == ItemStatus.RUNNING:
                self.state.status[index] = (
                    previous if previous != ItemStatus.RUNNING else ItemStatus.PENDING
                )
            raise
        outcome = decide_outcome(
            result.ok,
            attempt,
            self.state.limits[index],
            self.workflow.error_policy.on_item_failure,
            retriable=result.error_kind != "missing_variable",
        )
        record = AttemptEnded(index=index, outcome=outcome, result=result)
        # Once the result exists it is recorded even if an interrupt arrives meanwhile.
        await asyncio.shield(self._track_commit(self._commit_attempt(record, item)))
        return outcome

    async def _commit_attempt(self, record: AttemptEnded, item: WorkItem) -> None:
        await self._commit(record)
        r = record.result
        if self.options.verbose:
            detail = "" if r.ok else f": {r.error}"
            self.reporter.say(
                f"{item.id} {record.outcome} (attempt {r.attempt}, {r.duration_s:.2f}s){detail}"
            )
        if r.ok and item.index in self._from_dlq:
            self.events.emit("dlq_item_removed", item_id=item.id, attempt=r.attempt)
        if r.ok:
            self.events.emit(
                "agent_completed",
                item_id=item.id,
                attempt=r.attempt,
                duration_s=r.duration_s,
                cost_usd=r.cost_usd or None,
                version=self.state.version,
            )
        else:
            self.events.emit(
                "agent_failed",
                item_id=item.id,
                attempt=r.attempt,
                duration_s=r.duration_s,
                error=r.error,
                error_kind=r.error_kind,
                exit_code=r.exit_code,
                version=self.state.version,
            )
            if record.outcome == "dead":
                self.events.emit(
                    "dlq_item_added", item_id=item.id, attempts=r.attempt, error=r.error
                )
        self._maybe_checkpoint()

    # ---- reduce --------------------------------------------------------------------------------

    async def _run_reduce(self) -> str | None:
        steps = self.workflow.reduce
        c = counts(self.state)
        assert self.items is not None
        results = map_results(self.state, self.items.ids)
        results_file = self.job.path / "map-results.json"
        results_file.write_bytes(msgspec.json.encode(results))
        variables = self._variables()
        variables["map"] = {
            "successful": c.succeeded,
            "failed": c.dead + c.skipped,
            "skipped": c.skipped,
            "total": c.total,
            "results": results,
        }
        env = {**self._phase_env(), "PRODIGY_MAP_RESULTS_FILE": str(results_file)}
        self.events.emit("reduce_started", steps=len(steps), first_step=self.state.reduce_done + 1)

        async def done(n: int, captured: dict[str, str], spend: Spend) -> None:
            await self._commit(
                ReduceStepCompleted(
                    step=n,
                    outputs=captured,
                    cost_usd=spend.cost_usd,
                    input_tokens=spend.input_tokens,
                    output_tokens=spend.output_tokens,
                )
            )
            self.events.emit("reduce_step_completed", step=n + 1)

        failure = await self._run_steps(
            steps, self.state.reduce_done, variables, env, done, show_output=True
        )
        if failure is not None:
            return f"reduce failed: {failure}"
        if not self._stop.is_set():
            self.events.emit("reduce_completed")
        return None

    # ---- endings -------------------------------------------------------------------------------

    async def _end(self, status: JobEndStatus, reason: str = "") -> None:
        await self.writer.flush()
        await self._commit(JobEnded(status=status, reason=reason))
        self._save_checkpoint_now()
        self._metadata(status)

    def _resume_hint(self) -> str:
        return f"prodigy resume-job {self.meta.job_id}"

    async def _end_early(self, failure: str | None) -> int:
        if self._fatal is not None:
            exc = self._fatal
            message = str(exc) if isinstance(exc, ProdigyError) else repr(exc)
            return await self._fail(message)
        if self._signal is not None:
            return await self._interrupted()
        if failure is not None:
            return await self._fail(failure)
        assert self._policy_stop is not None
        await self._end("stopped", self._policy_stop)
        c = counts(self.state)
        self.events.emit("job_stopped", reason=self._policy_stop, **_count_fields(c))
        self.reporter.warn(f"Job stopped: {self._policy_stop}.")
        self.reporter.say(
            f"Stopped at checkpoint v{self.state.version}: {c.succeeded} completed, "
            f"{c.remaining} remaining, {c.dead} in DLQ. Resume with: {self._resume_hint()}"
        )
        return EXIT_FAILURE

    async def _fail(self, reason: str) -> int:
        try:
            await self._end("failed", reason)
        except ProdigyError as exc:
            self.reporter.warn(f"error: {exc}")
        self.events.emit("job_failed", reason=reason)
        self.reporter.warn(f"Job failed: {reason}")
        self.reporter.warn(f"Fix the cause, then run: {self._resume_hint()}")
        return EXIT_FAILURE

    async def _interrupted(self) -> int:
        await self._end("interrupted", signal.Signals(self._signal or signal.SIGINT).name)
        c = counts(self.state)
        self.events.emit("job_interrupted", version=self.state.version, **_count_fields(c))
        self.reporter.close()
        self.reporter.say(
            f"Interrupted: state saved at checkpoint v{self.state.version} "
            f"({c.succeeded} completed, {c.remaining} remaining)."
        )
        self.reporter.say(f"Resume with: {self._resume_hint()}")
        return EXIT_SIGTERM if self._signal == signal.SIGTERM else EXIT_SIGINT

    async def _complete(self) -> int:
        await self._end("completed")
        c = counts(self.state)
        self.events.emit("job_completed", **_count_fields(c), cost_usd=self.state.cost_usd or None)
        self.reporter.close()
        summary = f"{c.succeeded}/{c.total} items succeeded, {c.dead + c.skipped} failed"
        if self.state.cost_usd or self.state.input_tokens:
            summary += (
                f"; cost ${self.state.cost_usd:.4f} "
                f"({self.state.input_tokens} input / {self.state.output_tokens} output tokens)"
            )
        if c.dead:
            self.reporter.say(f"Job completed with {c.dead} items in the DLQ: {summary}.")
            self.reporter.say(f"Inspect them with: prodigy dlq list {self.meta.job_id}")
            return EXIT_ITEMS_IN_DLQ
        self.reporter.say(f"Job completed successfully! {summary}.")
        return EXIT_OK


def _count_fields(c: Counts) -> dict[str, int]:
    return {
        "total": c.total,
        "succeeded": c.succeeded,
        "failed": c.dead + c.skipped,
        "dead_lettered": c.dead,
        "remaining": c.remaining,
    }


def map_results(state: JobState, ids: Sequence[str]) -> list[dict[str, Any]]:
    """`${map.results}`: one entry per item, in item order, failed ones included."""
    out: list[dict[str, Any]] = []
    for index, status in enumerate(state.status):
        last = state.results.get(index)
        cost, tokens_in, tokens_out = state.item_cost(index)
        name = (
            "succeeded"
            if status == ItemStatus.SUCCEEDED
            else "skipped"
            if status == ItemStatus.SKIPPED
            else "failed"
        )
        out.append(
            {
                "item_id": ids[index],
                "status": name,
                "attempts": state.attempts[index],
                "output": last.output if last is not None else "",
                "error": last.error if last is not None and not last.ok else None,
                "duration_s": last.duration_s if last is not None else 0.0,
                "cost_usd": round(cost, 6),
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
            }
        )
    return out


def _pidfd_works() -> bool:
    """pidfd_open exists in the os module but needs Linux 5.3+ at run time."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def _event_loop_policy_for_agents() -> None:
    """On Python 3.11 asyncio waits for each child on a thread of its own; a pidfd watcher
    waits in the event loop instead, which matters at hundreds of agents a second. (3.12+
    does this by itself.)"""
    if sys.version_info < (3, 12) and _pidfd_works():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


def run_job(runner: JobRunner) -> int:
    _event_loop_policy_for_agents()
    with reaping():
        return asyncio.run(runner.run())


def run_reprocess(runner: JobRunner, indexes: list[int], status_before: JobEndStatus | None) -> int:
    _event_loop_policy_for_agents()
    with reaping():
        return asyncio.run(runner.reprocess(indexes, status_before))


__all__ = [
    "JobRunner",
    "RunOptions",
    "base_environment",
    "item_spec",
    "map_results",
    "run_job",
    "run_reprocess",
]
