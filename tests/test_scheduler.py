"""The map scheduler against a fake in-process executor: no subprocesses, well under a second
each. Real journal and events files in a temporary directory."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from prodigy.events import EventLog
from prodigy.interrupts import Interrupts
from prodigy.items import WorkItem
from prodigy.journal import Journal, read_journal
from prodigy.progress import Reporter
from prodigy.recorder import Recorder, RecordEvents
from prodigy.scheduler import MapRules, MapScheduler
from prodigy.state import (
    Attempt,
    AttemptEnded,
    ItemsFrozen,
    ItemStatus,
    JobState,
    SetupCompleted,
    apply_record,
    counts,
    replay,
)
from prodigy.workflow import ErrorPolicy, RetryConfig


@dataclass
class Items:
    ids: list[str]

    def id_of(self, index: int) -> str:
        return self.ids[index]

    def get(self, index: int) -> WorkItem:
        return WorkItem(index=index, id=self.ids[index], data={"n": index})


@dataclass
class World:
    tmp: Path
    state: JobState
    journal: Journal
    events: EventLog
    interrupts: Interrupts
    started: list[tuple[str, int, float]] = field(default_factory=list)

    def event_types(self) -> list[str]:
        lines = (self.tmp / "events.jsonl").read_text().splitlines()
        return [json.loads(line)["type"] for line in lines]

    def recorded(self) -> list[AttemptEnded]:
        records = read_journal(self.tmp / "journal.jsonl").records
        return [r for r in records if isinstance(r, AttemptEnded)]


def make_world(tmp: Path, n_items: int, max_attempts: int = 1, grace: float = 0.05) -> World:
    state = JobState()
    journal = Journal(tmp / "journal.jsonl")
    head = [SetupCompleted(outputs={}), ItemsFrozen(count=n_items, max_attempts=max_attempts)]
    journal.append_now(head)
    for record in head:
        apply_record(state, record)
    return World(
        tmp=tmp,
        state=state,
        journal=journal,
        events=EventLog(tmp / "events.jsonl", "job-1"),
        interrupts=Interrupts(lambda text: None, grace=grace),
    )


def result(attempt: int, ok: bool) -> Attempt:
    return Attempt(
        attempt=attempt,
        ok=ok,
        started_at="2026-01-01T00:00:00",
        duration_s=0.0,
        error=None if ok else "boom",
        error_kind=None if ok else "exit_code",
    )


RunAttempt = Callable[[WorkItem, int], Awaitable[Attempt]]


async def schedule(
    world: World,
    run_attempt: RunAttempt,
    indexes: list[int] | None = None,
    max_parallel: int = 4,
    policy: ErrorPolicy | None = None,
    during: Callable[[MapScheduler], Awaitable[None]] | None = None,
) -> MapScheduler:
    ids = [f"item_{i}" for i in range(world.state.item_count or 0)]
    recorder = Recorder(
        world.journal, world.state, [RecordEvents(world.events, ids.__getitem__, 0)]
    )
    scheduler = MapScheduler(
        world.state,
        Items(ids),
        run_attempt,
        recorder,
        MapRules(max_parallel, policy or ErrorPolicy()),
        world.interrupts,
        world.events,
        Reporter(io.StringIO(), io.StringIO()),
    )
    todo = indexes  # None: every pending or retriable item, found in the state
    if during is None:
        await scheduler.run(todo)
    else:
        await asyncio.gather(scheduler.run(todo), during(scheduler))
    await world.journal.aclose()
    return scheduler


def test_never_more_than_max_parallel_attempts_at_once(tmp_path: Path) -> None:
    world = make_world(tmp_path, 20)
    now_running = 0
    most = 0

    async def run_attempt(item: WorkItem, attempt: int) -> Attempt:
        nonlocal now_running, most
        now_running += 1
        most = max(most, now_running)
        await asyncio.sleep(0.005)
        now_running -= 1
        return result(attempt, True)

    asyncio.run(schedule(world, run_attempt, max_parallel=3))
    assert most == 3
    assert counts(world.state).succeeded == 20
    assert replay(read_journal(tmp_path / "journal.jsonl").records).status == world.state.status


def test_a_retry_waits_for_its_backoff_delay(tmp_path: Path) -> None:
    world = make_world(tmp_path, 2, max_attempts=2)
    policy = ErrorPolicy(
        retry_config=RetryConfig(max_attempts=2, backoff="fixed", initial_delay=0.2)
    )
    times: dict[tuple[str, int], float] = {}

    async def run_attempt(item: WorkItem, attempt: int) -> Attempt:
        times[(item.id, attempt)] = asyncio.get_running_loop().time()
        return result(attempt, attempt == 2)

    asyncio.run(schedule(world, run_attempt, policy=policy))
    for item in ("item_0", "item_1"):
        assert times[(item, 2)] - times[(item, 1)] >= 0.2
    assert counts(world.state).succeeded == 2
    assert world.event_types().count("agent_retrying") == 2


def test_max_failures_stops_starting_agents(tmp_path: Path) -> None:
    world = make_world(tmp_path, 10)

    async def run_attempt(item: WorkItem, attempt: int) -> Attempt:
        return result(attempt, False)

    asyncio.run(schedule(world, run_attempt, max_parallel=1, policy=ErrorPolicy(max_failures=2)))
    c = counts(world.state)
    assert (c.dead, c.pending) == (2, 8)
    assert world.interrupts.policy_reason is not None
    assert "2 items failed" in world.interrupts.policy_reason
    assert world.interrupts.signal is None and world.interrupts.fatal is None


def test_failure_threshold_needs_ten_finished_items(tmp_path: Path) -> None:
    world = make_world(tmp_path, 30)

    async def run_attempt(item: WorkItem, attempt: int) -> Attempt:
        return result(attempt, item.index % 2 == 0)  # half of them fail

    asyncio.run(
        schedule(world, run_attempt, max_parallel=1, policy=ErrorPolicy(failure_threshold=0.5))
    )
    c = counts(world.state)
    assert c.finished == 10, "checked only once 10 items are done, then it stops"
    assert world.interrupts.policy_reason is not None and "50%" in world.interrupts.policy_reason


def test_an_interrupt_kills_running_attempts_after_the_grace_and_records_nothing(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path, 6)
    cancelled: list[str] = []
    sleeping: list[str] = []

    async def run_attempt(item: WorkItem, attempt: int) -> Attempt:
        if item.index == 0:
            return result(attempt, True)
        sleeping.append(item.id)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(item.id)
            raise
        return result(attempt, True)

    async def interrupt(scheduler: MapScheduler) -> None:
        while len(sleeping) < 3 or counts(world.state).succeeded < 1:
            await asyncio.sleep(0.001)
        world.interrupts.on_signal(signal.SIGINT)

    scheduler = asyncio.run(schedule(world, run_attempt, max_parallel=3, during=interrupt))
    assert sorted(cancelled) == ["item_1", "item_2", "item_3"]
    assert not scheduler.running
    c = counts(world.state)
    assert (c.succeeded, c.pending) == (1, 5), "cut-short attempts are not failures"
    assert [r.index for r in world.recorded()] == [0]
    assert world.state.attempts[1] == 0


def test_a_second_result_for_a_succeeded_item_is_ignored(tmp_path: Path) -> None:
    world = make_world(tmp_path, 3)

    async def run_attempt(item: WorkItem, attempt: int) -> Attempt:
        await asyncio.sleep(0.001)
        return result(attempt, True)

    # Item 0 delivered twice, as a cluster may do after a worker is lost.
    asyncio.run(schedule(world, run_attempt, indexes=[0, 1, 0, 2], max_parallel=4))
    assert world.state.version == 3
    assert [r.index for r in world.recorded()].count(0) == 1
    assert world.event_types().count("duplicate_result") == 1
    assert world.event_types().count("agent_completed") == 3
    assert world.state.status[0] == ItemStatus.SUCCEEDED


def test_an_executor_error_stops_the_run_as_fatal(tmp_path: Path) -> None:
    world = make_world(tmp_path, 5)

    async def run_attempt(item: WorkItem, attempt: int) -> Attempt:
        if item.index == 1:
            raise RuntimeError("worker lost its mind")
        await asyncio.sleep(0.01)
        return result(attempt, True)

    asyncio.run(schedule(world, run_attempt, max_parallel=2))
    assert isinstance(world.interrupts.fatal, RuntimeError)
    assert world.interrupts.killing.is_set()
    assert counts(world.state).succeeded < 5


def test_an_attempt_killed_by_the_runs_own_signal_is_not_a_failure(tmp_path: Path) -> None:
    world = make_world(tmp_path, 2)

    async def run_attempt(item: WorkItem, attempt: int) -> Attempt:
        # The SIGINT sent to prodigy's process group reached this step before it had moved to
        # a group of its own.
        world.interrupts.on_signal(signal.SIGINT)
        return Attempt(
            attempt=attempt,
            ok=False,
            started_at="2026-01-01T00:00:00",
            duration_s=0.0,
            exit_code=128 + signal.SIGINT,
            error="killed by SIGINT",
            error_kind="exit_code",
        )

    asyncio.run(schedule(world, run_attempt, max_parallel=1))
    assert world.recorded() == []
    assert counts(world.state).pending == 2 and list(world.state.attempts) == [0, 0]


def test_a_record_that_cannot_be_written_stops_the_run_and_is_never_lost(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path, 3)
    unhandled: list[str] = []

    async def full_disk(record: AttemptEnded) -> None:
        # Item 0's write fails first and stops the run; item 1's fails while the run is still
        # waiting for item 2's agent to die, after item 1's own awaiter was cancelled.
        await asyncio.sleep(0.01 if record.index == 0 else 0.05)
        raise OSError(28, "No space left on device")

    world.journal.append = full_disk  # type: ignore[assignment,method-assign]

    async def run_attempt(item: WorkItem, attempt: int) -> Attempt:
        if item.index == 2:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # a process group that takes a while to die
                raise
        await asyncio.sleep(0.001 * item.index)
        return result(attempt, True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: unhandled.append(context["message"]))
        await schedule(world, run_attempt, max_parallel=3)
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    gc.collect()
    assert isinstance(world.interrupts.fatal, OSError)
    assert unhandled == [], "every failed record reached the run, none was left unretrieved"
    assert counts(world.state).succeeded == 0
