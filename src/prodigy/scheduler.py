"""The map phase's scheduler: which item runs next, how many at once, when a retry is due.

It owns the queue of items to run, the heap of delayed retries and the set of running
attempts (running lives here only, never in the recorded state), capped at `max_parallel`.
Every attempt is a task it owns and awaits. Results are recorded through the `Recorder`
(shielded: once a result exists it is recorded even if an interrupt arrives meanwhile). A plain
success gives its slot back as soon as its agent has ended; its record is a task of its own,
awaited before the map phase ends.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any, Protocol

from prodigy.events import AgentRetrying, AgentStarted, EventLog, MapStarted
from prodigy.interrupts import Interrupts
from prodigy.items import WorkItem
from prodigy.progress import Reporter
from prodigy.recorder import Recorder
from prodigy.retry import backoff_delay
from prodigy.state import (
    ITEM_DATA_ERRORS,
    Attempt,
    AttemptEnded,
    Counts,
    FailureLimits,
    ItemStatus,
    JobState,
    MergeQueued,
    Outcome,
    RunTally,
    counts,
    decide_outcome,
    failure_policy_stop,
)
from prodigy.workflow import ErrorPolicy

RunAttempt = Callable[[WorkItem, int], Awaitable[Attempt]]
Integrate = Callable[[WorkItem, Attempt, bool], Awaitable[Attempt]]


class ItemSource(Protocol):
    def id_of(self, index: int) -> str: ...

    def get(self, index: int) -> WorkItem: ...


_STARTABLE = (ItemStatus.PENDING, ItemStatus.RETRIABLE)


class Backlog:
    """The items still to start, in index order: the ones named, or else every item the state
    has pending or retriable, found by scanning its status array as the run goes (never
    listed in memory). Retries whose delay is over go first."""

    def __init__(self, state: JobState, named: Iterable[int] | None, skip: Set[int]) -> None:
        self.state = state
        self.named = deque(named) if named is not None else None
        self.skip = skip
        self.due: deque[int] = deque()
        self._next = self._scan(0) if named is None else None
        if self.named is not None:
            self.size = len(self.named)
        else:
            startable = sum(state.count(s) for s in _STARTABLE)
            self.size = startable - sum(1 for i in skip if state.status[i] in _STARTABLE)

    def _scan(self, start: int) -> int | None:
        found = self.state.next_with(start, *_STARTABLE)
        while found is not None and found in self.skip:
            found = self.state.next_with(found + 1, *_STARTABLE)
        return found

    def __bool__(self) -> bool:
        return bool(self.due) or bool(self.named) or self._next is not None

    def append(self, index: int) -> None:
        self.due.append(index)

    def popleft(self) -> int:
        if self.due:
            return self.due.popleft()
        if self.named is not None:
            return self.named.popleft()
        found = self._next
        if found is None:
            raise IndexError("the backlog is empty")
        # Items after the cursor have not started, so their statuses cannot change meanwhile.
        self._next = self._scan(found + 1)
        return found


@dataclass(frozen=True)
class MapRules:
    max_parallel: int
    policy: ErrorPolicy
    enforce_limits: bool = True  # a DLQ reprocess is a deliberate second try: no limits

    def failure_limits(self) -> FailureLimits:
        return FailureLimits(
            stop_on_item_failure=self.policy.on_item_failure == "stop",
            max_failures=self.policy.max_failures,
            failure_threshold=self.policy.failure_threshold,
        )


class MapScheduler:
    def __init__(
        self,
        state: JobState,
        items: ItemSource,
        run_attempt: RunAttempt,
        recorder: Recorder,
        rules: MapRules,
        interrupts: Interrupts,
        events: EventLog,
        reporter: Reporter,
        rng: random.Random | None = None,
        integrate: Integrate | None = None,
    ) -> None:
        self.state = state
        self.items = items
        self.run_attempt = run_attempt
        self.recorder = recorder
        self.rules = rules
        self.interrupts = interrupts
        self.events = events
        self.reporter = reporter
        self.rng = rng or random.Random()
        self.integrate = integrate
        self.queue = Backlog(state, (), frozenset())
        self.delayed: list[tuple[float, int]] = []  # (due time, index)
        self.running: dict[asyncio.Task[Outcome | None], int] = {}
        self.tally = RunTally()
        self._records: set[asyncio.Task[Outcome | None]] = set()
        self._unrecorded: set[asyncio.Task[Outcome | None]] = set()  # successes, slot freed

    async def run(self, indexes: Iterable[int] | None, merges: Mapping[int, Attempt] = {}) -> None:
        """Run `indexes` (None: every pending or retriable item) to a final outcome each, or
        until the run is stopped. `merges` are attempts that succeeded before a crash cut
        their merge short: they are concluded first (merged, or found merged already),
        without running their agents again."""
        self.queue = Backlog(self.state, indexes, frozenset(merges))
        self.events.emit(MapStarted(items=self.queue.size, max_parallel=self.rules.max_parallel))
        self.reporter.start_map(counts(self.state))
        loop = asyncio.get_running_loop()
        try:
            for index, result in sorted(merges.items()):
                if self.interrupts.stopped:
                    break
                self._after(index, await self._conclude(index, result, queued=True), loop.time())
            await self._loop()
        finally:
            for task in self.running:
                task.cancel()
            await asyncio.gather(*self.running, return_exceptions=True)
            self.running.clear()
            await asyncio.gather(*self._records, return_exceptions=True)
        self.reporter.update(self._counts, 0, self.state.spent.cost_usd, final=True)
        self.reporter.close()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.ensure_future(self.interrupts.stopping.wait())
        killing = asyncio.ensure_future(self.interrupts.killing.wait())
        try:
            while True:
                self._start_due(loop.time())
                stopped = self.interrupts.stopped
                if not self.running and (stopped or not (self.queue or self.delayed)):
                    return
                waiting: set[asyncio.Future[Any]] = set(self.running)
                if self.interrupts.killing.is_set():
                    for running in self.running:
                        running.cancel()
                else:
                    waiting.add(killing)
                timeout = None
                if not stopped:
                    waiting.add(stopping)
                    if self.delayed:
                        timeout = max(0.0, self.delayed[0][0] - loop.time())
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for finished in done:
                    if finished in self.running:
                        task: asyncio.Task[Outcome | None] = finished
                        self._ended(task, self.running.pop(task), loop.time())
                self.reporter.update(self._counts, len(self.running), self.state.spent.cost_usd)
        finally:
            stopping.cancel()
            killing.cancel()

    def _counts(self) -> Counts:
        return counts(self.state)

    def _start_due(self, now: float) -> None:
        while self.delayed and self.delayed[0][0] <= now:
            self.queue.append(heapq.heappop(self.delayed)[1])
        while (
            not self.interrupts.stopped
            and self.queue
            and len(self.running) < self.rules.max_parallel
        ):
            index = self.queue.popleft()
            self.running[asyncio.ensure_future(self._attempt(index))] = index

    async def _attempt(self, index: int) -> Outcome | None:
        """One attempt of one item; its outcome, or None for a duplicate result."""
        item = self.items.get(index)
        attempt = self.state.attempts[index] + 1
        self.events.emit(AgentStarted(item_id=item.id, attempt=attempt))
        result = await self.run_attempt(item, attempt)
        if await self.interrupts.interrupted(result):
            return None  # cut short by the interrupt: not a failure, not counted
        plain = result.ok and self._integration(result) is None
        if plain and len(self._unrecorded) < self.rules.max_parallel:
            # A plain success frees its slot now: the next agent starts while the record is
            # made durable (it counts only then). It cannot stop the run or ask for a retry,
            # so nothing waits on its outcome; failures and merges keep their slot until
            # recorded, so a failure policy stops the run before another agent starts. At
            # most max_parallel such records are outstanding: a crash makes at most twice
            # max_parallel items run again (running, or ended but not yet durable).
            self._record_later(index, result)
            return None
        return await self._conclude(index, result, queued=False)

    def _record_later(self, index: int, result: Attempt) -> None:
        task = self._record(index, result, queued=False)
        self._unrecorded.add(task)
        task.add_done_callback(lambda done: self._recorded_later(index, done))

    def _recorded_later(self, index: int, task: asyncio.Task[Outcome | None]) -> None:
        self._unrecorded.discard(task)
        if not task.cancelled() and task.exception() is None:
            self._after(index, task.result(), asyncio.get_running_loop().time())

    async def _conclude(self, index: int, result: Attempt, queued: bool) -> Outcome | None:
        """Merge (when isolated) and record an ended attempt. Once a result exists this runs
        to its end even if an interrupt arrives meanwhile (shielded, and awaited by `run`)."""
        return await asyncio.shield(self._record(index, result, queued))

    def _record(self, index: int, result: Attempt, queued: bool) -> asyncio.Task[Outcome | None]:
        task = asyncio.ensure_future(self._merge_and_record(index, result, queued))
        self._records.add(task)
        task.add_done_callback(self._recorded)
        return task

    def _integration(self, result: Attempt) -> Integrate | None:
        """How this ended attempt is merged before it is recorded (worktree isolation), if it
        is: a success with a branch, in a run that integrates."""
        return self.integrate if result.ok and result.branch is not None else None

    def _recorded(self, task: asyncio.Task[Outcome | None]) -> None:
        self._records.discard(task)
        # Its awaiter may have been cancelled meanwhile: a failure (a full disk) must still
        # stop the run, and never end as an unretrieved task exception.
        if not task.cancelled() and task.exception() is not None:
            self.interrupts.fail(task.exception() or RuntimeError())

    async def _merge_and_record(self, index: int, result: Attempt, queued: bool) -> Outcome | None:
        integrate = self._integration(result)
        if integrate is not None:
            # Durable before the merge: after a crash, resume merges it (or finds it merged)
            # instead of running the agent again.
            if not queued and not await self.recorder.record(MergeQueued(index, result)):
                return None
            result = await integrate(self.items.get(index), result, queued)
        outcome = decide_outcome(
            result.ok,
            result.attempt,
            self.state.limits[index],
            self.rules.policy.on_item_failure,
            retriable=result.error_kind not in ITEM_DATA_ERRORS,
        )
        recorded = await self.recorder.record(AttemptEnded(index, outcome, result))
        return outcome if recorded else None

    def _ended(self, task: asyncio.Task[Outcome | None], index: int, now: float) -> None:
        if task.cancelled():
            return  # cut short: not a failure, not counted; the item is still to run
        exc = task.exception()
        if exc is not None:
            self.interrupts.fail(exc)
            return
        self._after(index, task.result(), now)

    def _after(self, index: int, outcome: Outcome | None, now: float) -> None:
        if outcome is None:
            return
        if outcome == "retry":
            self._retry_later(index, now)
            return
        self.tally = self.tally.after(outcome)
        if self.rules.enforce_limits:
            reason = failure_policy_stop(
                self.rules.failure_limits(), self.tally, outcome, self.items.id_of(index)
            )
            if reason is not None:
                self.interrupts.stop_for_policy(reason)

    def _retry_later(self, index: int, now: float) -> None:
        retry = self.rules.policy.retry_config
        ended = self.state.attempts[index]
        delay = backoff_delay(
            retry.backoff, ended, retry.initial_delay, retry.max_delay, retry.jitter, self.rng
        )
        heapq.heappush(self.delayed, (now + delay, index))
        self.events.emit(
            AgentRetrying(
                item_id=self.items.id_of(index), attempt=ended + 1, delay_s=round(delay, 3)
            )
        )
