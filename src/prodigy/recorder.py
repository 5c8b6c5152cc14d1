"""Recording a transition: journal append (durable), then `apply_record`, then observers.

Nothing is reported before it is durable, and the events that follow from a record are
derived from it here, in one place (`RecordEvents`). A second result for an item already
recorded as succeeded is not recorded at all: it becomes a `duplicate_result` event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from prodigy.events import (
    AgentCompleted,
    AgentFailed,
    DlqItemAdded,
    DuplicateResult,
    EventLog,
    ReduceStepDone,
    SetupDone,
)
from prodigy.journal import Journal
from prodigy.progress import Reporter
from prodigy.state import (
    AttemptEnded,
    JobState,
    Record,
    ReduceStepCompleted,
    SetupCompleted,
    apply_record,
    is_duplicate_result,
)


class Observer(Protocol):
    def recorded(self, record: Record, state: JobState) -> None: ...

    def duplicate(self, record: AttemptEnded, state: JobState) -> None: ...


class Recorder:
    def __init__(self, journal: Journal, state: JobState, observers: Sequence[Observer]) -> None:
        self.journal = journal
        self.state = state
        self.observers = list(observers)
        self._succeeding: set[int] = set()

    async def record(self, record: Record) -> bool:
        """Append `record` durably and fold it into the state; False if it was a duplicate."""
        if not isinstance(record, AttemptEnded):
            self._apply(record, await self.journal.append(record))
            return True
        index = record.index
        if is_duplicate_result(self.state, index) or index in self._succeeding:
            for observer in self.observers:
                observer.duplicate(record, self.state)
            return False
        # While a success is being written, another result for the item is a duplicate too.
        if record.result.ok:
            self._succeeding.add(index)
        try:
            end = await self.journal.append(record)
        finally:
            self._succeeding.discard(index)
        self._apply(record, end)
        return True

    def _apply(self, record: Record, journal_end: int) -> None:
        apply_record(self.state, record)
        self.state.journal_bytes = journal_end
        for observer in self.observers:
            observer.recorded(record, self.state)


class RecordEvents:
    """The events log's view of records: one place says which events a record means."""

    def __init__(
        self,
        events: EventLog,
        item_id: Callable[[int], str],
        setup_steps: int,
    ) -> None:
        self.events = events
        self.item_id = item_id
        self.setup_steps = setup_steps

    def recorded(self, record: Record, state: JobState) -> None:
        if isinstance(record, AttemptEnded):
            self._attempt_ended(record, state)
        elif isinstance(record, SetupCompleted) and self.setup_steps:
            self.events.emit(SetupDone(outputs=sorted(record.outputs)))
        elif isinstance(record, ReduceStepCompleted):
            self.events.emit(ReduceStepDone(step=record.step + 1))

    def duplicate(self, record: AttemptEnded, state: JobState) -> None:
        self.events.emit(
            DuplicateResult(
                item_id=self.item_id(record.index),
                attempt=record.result.attempt,
                ok=record.result.ok,
            )
        )

    def _attempt_ended(self, record: AttemptEnded, state: JobState) -> None:
        r = record.result
        item_id = self.item_id(record.index)
        if r.ok:
            self.events.emit(
                AgentCompleted(
                    item_id=item_id,
                    attempt=r.attempt,
                    duration_s=r.duration_s,
                    version=state.version,
                    cost_usd=r.spend.cost_usd or None,
                )
            )
            return
        self.events.emit(
            AgentFailed(
                item_id=item_id,
                attempt=r.attempt,
                duration_s=r.duration_s,
                version=state.version,
                error=r.error,
                error_kind=r.error_kind,
                exit_code=r.exit_code,
            )
        )
        if record.outcome == "dead":
            self.events.emit(DlqItemAdded(item_id=item_id, attempts=r.attempt, error=r.error))


class AttemptLines:
    """`--verbose`: a line per ended attempt."""

    def __init__(self, reporter: Reporter, item_id: Callable[[int], str]) -> None:
        self.reporter = reporter
        self.item_id = item_id

    def recorded(self, record: Record, state: JobState) -> None:
        if isinstance(record, AttemptEnded):
            r = record.result
            detail = "" if r.ok else f": {r.error}"
            self.reporter.say(
                f"{self.item_id(record.index)} {record.outcome} "
                f"(attempt {r.attempt}, {r.duration_s:.2f}s){detail}"
            )

    def duplicate(self, record: AttemptEnded, state: JobState) -> None:
        return None
