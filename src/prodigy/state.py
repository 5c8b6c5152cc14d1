"""Job state as plain data, and the deterministic transitions that change it.

Every change to a job is a journal *record*; `apply_record` folds one record into a state and
`replay` rebuilds a state from a sequence of records. Records *assign* values (attempt number,
status, limit) rather than increment them, so replaying a record twice changes nothing. No I/O
happens here: the journal persists records, the engine decides which records to write.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

import msgspec


class ItemStatus(IntEnum):
    PENDING = 0
    RUNNING = 1  # only ever in memory: a crash turns it back into PENDING
    SUCCEEDED = 2
    FAILED = 3  # failed with attempts left: retriable
    DEAD = 4  # in the dead letter queue
    SKIPPED = 5  # failed for good under `on_item_failure: skip`


STATUS_NAMES = {
    ItemStatus.PENDING: "pending",
    ItemStatus.RUNNING: "running",
    ItemStatus.SUCCEEDED: "succeeded",
    ItemStatus.FAILED: "failed-retriable",
    ItemStatus.DEAD: "dead-lettered",
    ItemStatus.SKIPPED: "skipped",
}


class Attempt(msgspec.Struct, frozen=True, omit_defaults=True):
    """What one agent attempt did: kept as the item's result and in its failure history."""

    attempt: int
    ok: bool
    started_at: str
    duration_s: float
    exit_code: int | None = None
    timed_out: bool = False
    error: str | None = None
    error_kind: str | None = None
    signature: str | None = None
    failed_step: str | None = None
    output: str = ""
    stderr: str = ""
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


# ---- journal records -------------------------------------------------------------------------


class SetupCompleted(msgspec.Struct, frozen=True, tag="setup_completed", omit_defaults=True):
    outputs: dict[str, str]
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


class ItemsFrozen(msgspec.Struct, frozen=True, tag="items_frozen"):
    count: int
    max_attempts: int


Outcome = Literal["succeeded", "retry", "dead", "skipped"]


class AttemptEnded(msgspec.Struct, frozen=True, tag="attempt_ended"):
    index: int
    outcome: Outcome
    result: Attempt


class Requeued(msgspec.Struct, frozen=True, tag="requeued"):
    """Items put back to run with new attempt limits (--force, extra retries, dlq reprocess)."""

    indexes: list[int]
    limits: list[int]
    rerun_reduce: bool = False


class ReduceStepCompleted(
    msgspec.Struct, frozen=True, tag="reduce_step_completed", omit_defaults=True
):
    step: int
    outputs: dict[str, str]
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


class RolledBack(msgspec.Struct, frozen=True, tag="rolled_back"):
    to_version: int


JobEndStatus = Literal["completed", "failed", "stopped", "interrupted"]


class JobEnded(msgspec.Struct, frozen=True, tag="job_ended"):
    status: JobEndStatus
    reason: str = ""


Record = (
    SetupCompleted
    | ItemsFrozen
    | AttemptEnded
    | Requeued
    | ReduceStepCompleted
    | RolledBack
    | JobEnded
)


def bumps_version(record: Record) -> bool:
    """Versions count ended attempts (and rollbacks), so version N is a well-defined state."""
    return isinstance(record, AttemptEnded | RolledBack)


# ---- the state ---------------------------------------------------------------------------------


@dataclass
class JobState:
    version: int = 0
    setup_done: bool = False
    setup_outputs: dict[str, str] = field(default_factory=dict)
    item_count: int | None = None  # None until the items are frozen
    status: bytearray = field(default_factory=bytearray)
    attempts: list[int] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)
    results: dict[int, Attempt] = field(default_factory=dict)  # last ended attempt per item
    history: dict[int, list[Attempt]] = field(default_factory=dict)  # failed attempts per item
    reduce_done: int = 0
    reduce_outputs: dict[str, str] = field(default_factory=dict)
    ended: JobEndStatus | None = None
    end_reason: str = ""
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0

    def copy(self) -> JobState:
        return copy.deepcopy(self)

    def count(self, status: ItemStatus) -> int:
        return self.status.count(status)

    def indexes_with(self, *statuses: ItemStatus) -> list[int]:
        wanted = set(statuses)
        return [i for i, s in enumerate(self.status) if s in wanted]

    def captures(self) -> dict[str, str]:
        return {**self.setup_outputs, **self.reduce_outputs}

    def item_cost(self, index: int) -> tuple[float, int, int]:
        """Money and tokens spent on one item, failed attempts included."""
        spent = list(self.history.get(index, ()))
        last = self.results.get(index)
        if last is not None and last.ok:
            spent.append(last)
        return (
            sum(a.cost_usd for a in spent),
            sum(a.input_tokens for a in spent),
            sum(a.output_tokens for a in spent),
        )


@dataclass(frozen=True)
class Counts:
    total: int
    pending: int
    running: int
    succeeded: int
    retriable: int
    dead: int
    skipped: int

    @property
    def failed(self) -> int:
        return self.retriable + self.dead + self.skipped

    @property
    def remaining(self) -> int:
        return self.pending + self.running + self.retriable

    @property
    def finished(self) -> int:
        return self.succeeded + self.dead + self.skipped


def counts(state: JobState) -> Counts:
    return Counts(
        total=state.item_count or 0,
        pending=state.count(ItemStatus.PENDING),
        running=state.count(ItemStatus.RUNNING),
        succeeded=state.count(ItemStatus.SUCCEEDED),
        retriable=state.count(ItemStatus.FAILED),
        dead=state.count(ItemStatus.DEAD),
        skipped=state.count(ItemStatus.SKIPPED),
    )


Phase = Literal["setup", "map", "reduce", "done"]


def phase(state: JobState, reduce_steps: int) -> Phase:
    if not state.setup_done:
        return "setup"
    c = counts(state)
    if state.item_count is None or c.remaining > 0:
        return "map"
    if state.reduce_done < reduce_steps:
        return "reduce"
    return "done"


# ---- transitions -------------------------------------------------------------------------------

_OUTCOME_STATUS: dict[str, ItemStatus] = {
    "succeeded": ItemStatus.SUCCEEDED,
    "retry": ItemStatus.FAILED,
    "dead": ItemStatus.DEAD,
    "skipped": ItemStatus.SKIPPED,
}


def apply_record(state: JobState, record: Record) -> None:
    """Fold one record into `state` (in place, for speed at 100,000 items)."""
    if isinstance(record, AttemptEnded):
        i = record.index
        result = record.result
        state.version += 1
        state.status[i] = _OUTCOME_STATUS[record.outcome]
        state.attempts[i] = result.attempt
        state.results[i] = result
        if not result.ok:
            past = state.history.setdefault(i, [])
            # Assign, do not append blindly: a replayed record must not duplicate history.
            if not past or past[-1].attempt < result.attempt:
                past.append(result)
        _add_spend(state, result.cost_usd, result.input_tokens, result.output_tokens)
        if state.ended is not None:
            state.ended = None
    elif isinstance(record, SetupCompleted):
        state.setup_done = True
        state.setup_outputs = dict(record.outputs)
        _add_spend(state, record.cost_usd, record.input_tokens, record.output_tokens)
    elif isinstance(record, ItemsFrozen):
        if state.item_count is None:
            state.item_count = record.count
            state.status = bytearray(record.count)
            state.attempts = [0] * record.count
            state.limits = [record.max_attempts] * record.count
    elif isinstance(record, Requeued):
        for i, limit in zip(record.indexes, record.limits, strict=True):
            if state.status[i] != ItemStatus.SUCCEEDED:
                state.status[i] = ItemStatus.PENDING
                state.limits[i] = limit
        if record.rerun_reduce:
            state.reduce_done = 0
            state.reduce_outputs = {}
        state.ended = None
    elif isinstance(record, ReduceStepCompleted):
        state.reduce_done = max(state.reduce_done, record.step + 1)
        state.reduce_outputs.update(record.outputs)
        _add_spend(state, record.cost_usd, record.input_tokens, record.output_tokens)
    elif isinstance(record, JobEnded):
        state.ended = record.status
        state.end_reason = record.reason
    elif isinstance(record, RolledBack):
        raise ValueError("a rollback needs the records before it; use replay()")


def _add_spend(state: JobState, cost_usd: float, input_tokens: int, output_tokens: int) -> None:
    # Everything paid for counts: failed and retried attempts, setup and reduce steps.
    state.cost_usd += cost_usd
    state.input_tokens += input_tokens
    state.output_tokens += output_tokens


def apply(state: JobState, record: Record) -> JobState:
    """The pure form of `apply_record`: a new state, the old one untouched."""
    new = state.copy()
    apply_record(new, record)
    return new


def replay(records: Sequence[Record], upto_version: int | None = None) -> JobState:
    """The state after `records`, or at `upto_version` (before the record that would pass it)."""
    state = JobState()
    for position, record in enumerate(records):
        if upto_version is not None and bumps_version(record) and state.version >= upto_version:
            break
        if isinstance(record, RolledBack):
            restored = replay(records[:position], record.to_version)
            # Money spent on rolled-back attempts was still spent.
            restored.cost_usd = state.cost_usd
            restored.input_tokens = state.input_tokens
            restored.output_tokens = state.output_tokens
            restored.version = state.version + 1
            restored.ended = None
            state = restored
            continue
        apply_record(state, record)
    return state


# ---- decisions ---------------------------------------------------------------------------------


def decide_outcome(
    ok: bool, attempt: int, limit: int, on_item_failure: str, retriable: bool = True
) -> Outcome:
    """Where an item goes after an attempt ends."""
    if ok:
        return "succeeded"
    if retriable and attempt < limit:
        return "retry"
    return "skipped" if on_item_failure == "skip" else "dead"


_VOLATILE = re.compile(
    r"0x[0-9a-f]+|[0-9a-f]{8,}|\d+(\.\d+)?|'[^']*'|\"[^\"]*\"|/[^\s:]+", re.IGNORECASE
)


def error_signature(error_kind: str | None, error: str | None) -> str:
    """A short stable id for an error, ignoring numbers, paths and quoted values."""
    text = _VOLATILE.sub("_", (error or "").strip().lower())
    return hashlib.sha1(f"{error_kind}|{text}".encode()).hexdigest()[:10]


def needs_manual_review(history: Sequence[Attempt]) -> bool:
    """A plain retry cannot help: a template variable is missing, or the same error repeats."""
    if not history:
        return False
    if history[-1].error_kind == "missing_variable":
        return True
    last = history[-3:]
    return len(last) == 3 and len({a.signature for a in last}) == 1
