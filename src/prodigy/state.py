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
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

import msgspec


class ItemStatus(IntEnum):
    """Where an item stands in the record. "Running" is not here: it exists only in the
    scheduler, and an item running at a crash is simply still pending (or retriable)."""

    PENDING = 0
    SUCCEEDED = 2
    RETRIABLE = 3  # its last attempt failed and it has attempts left
    DEAD = 4  # failed for good: in the dead letter queue
    SKIPPED = 5  # failed for good under `on_item_failure: skip`


STATUS_NAMES: dict[
    ItemStatus, Literal["pending", "succeeded", "failed-retriable", "dead-lettered", "skipped"]
] = {
    ItemStatus.PENDING: "pending",
    ItemStatus.SUCCEEDED: "succeeded",
    ItemStatus.RETRIABLE: "failed-retriable",
    ItemStatus.DEAD: "dead-lettered",
    ItemStatus.SKIPPED: "skipped",
}


class Spend(msgspec.Struct, frozen=True, omit_defaults=True):
    """Money and tokens paid for (Claude steps report them); sums with `+`."""

    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            self.cost_usd + other.cost_usd,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
        )

    def __bool__(self) -> bool:
        return bool(self.cost_usd or self.input_tokens or self.output_tokens)


NO_SPEND = Spend()


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
    spend: Spend = NO_SPEND
    worktree: str | None = None  # worktree isolation: where the attempt ran
    branch: str | None = None  # ... and its branch (kept when the attempt failed)
    merge_commit: str | None = None  # the parent-branch commit that brought its work in
    worktree_setup_s: float = 0.0  # time `map.worktree_setup` took, apart from duration_s


# ---- journal records -------------------------------------------------------------------------


class SetupCompleted(msgspec.Struct, frozen=True, tag="setup_completed", omit_defaults=True):
    outputs: dict[str, str]
    spend: Spend = NO_SPEND


class ItemsFrozen(msgspec.Struct, frozen=True, tag="items_frozen"):
    count: int
    max_attempts: int


Outcome = Literal["succeeded", "retry", "dead", "skipped"]


class AttemptEnded(msgspec.Struct, frozen=True, tag="attempt_ended"):
    index: int
    outcome: Outcome
    result: Attempt


class MergeQueued(msgspec.Struct, frozen=True, tag="merge_queued"):
    """An attempt succeeded in its own worktree; its branch waits to be merged into the
    parent branch. The item is not done (nor run again) until its merge is recorded."""

    index: int
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
    spend: Spend = NO_SPEND


class MergeStepsEnded(msgspec.Struct, frozen=True, tag="merge_steps_ended"):
    """The workflow's `merge:` steps ran at the final merge (after the job's last attempt):
    what they cost is part of the job's."""

    spend: Spend


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
    | MergeQueued
    | Requeued
    | ReduceStepCompleted
    | MergeStepsEnded
    | RolledBack
    | JobEnded
)


def bumps_version(record: Record) -> bool:
    """Versions count ended attempts (and rollbacks), so version N is a well-defined state."""
    return isinstance(record, AttemptEnded | RolledBack)


# ---- the state ---------------------------------------------------------------------------------


def int_array(count: int, value: int = 0) -> array[int]:
    """A compact array of per-item counts (4 bytes an item, not a Python int object each)."""
    return array("I", [value]) * count


def status_pattern(*statuses: ItemStatus) -> re.Pattern[bytes]:
    """A regular expression matching one status byte of `statuses`."""
    return _status_pattern(frozenset(statuses))


def _status_pattern(statuses: frozenset[ItemStatus]) -> re.Pattern[bytes]:
    found = _STATUS_PATTERNS.get(statuses)
    if found is None:
        found = re.compile(b"[" + b"".join(re.escape(bytes([s])) for s in sorted(statuses)) + b"]")
        _STATUS_PATTERNS[statuses] = found
    return found


_STATUS_PATTERNS: dict[frozenset[ItemStatus], re.Pattern[bytes]] = {}


@dataclass
class JobState:
    """Per-item facts live in compact arrays; per-item detail only where it is small.

    A *compact* state (the one a run keeps) drops the result of an item once it succeeded: it
    stays in the journal, where `${map.results}` and the views read it. Only failed items'
    results and histories stay in memory, so the state does not grow with finished work.
    """

    version: int = 0
    setup_done: bool = False
    setup_outputs: dict[str, str] = field(default_factory=dict)
    item_count: int | None = None  # None until the items are frozen
    status: bytearray = field(default_factory=bytearray)
    attempts: array[int] = field(default_factory=lambda: int_array(0))
    limits: array[int] = field(default_factory=lambda: int_array(0))
    results: dict[int, Attempt] = field(default_factory=dict)  # last ended attempt per item
    merging: dict[int, Attempt] = field(default_factory=dict)  # succeeded, merge not recorded
    history: dict[int, list[Attempt]] = field(default_factory=dict)  # failed attempts per item
    reduce_done: int = 0
    reduce_outputs: dict[str, str] = field(default_factory=dict)
    ended: JobEndStatus | None = None
    end_reason: str = ""
    spent: Spend = NO_SPEND  # everything paid for: failed attempts, setup and reduce included
    compact: bool = False  # keep no result of a succeeded item (see above)
    journal_bytes: int = 0  # how much of the journal file this state has folded in (0: unknown)

    def copy(self) -> JobState:
        return copy.deepcopy(self)

    def count(self, status: ItemStatus) -> int:
        return self.status.count(status)

    def indexes_with(self, *statuses: ItemStatus) -> list[int]:
        return [m.start() for m in status_pattern(*statuses).finditer(self.status)]

    def next_with(self, start: int, *statuses: ItemStatus) -> int | None:
        """The first index at or after `start` in one of `statuses` (a scan at C speed)."""
        found = status_pattern(*statuses).search(self.status, start)
        return None if found is None else found.start()

    def captures(self) -> dict[str, str]:
        return {**self.setup_outputs, **self.reduce_outputs}

    def item_spend(self, index: int) -> Spend:
        """Money and tokens spent on one item, failed attempts included."""
        total = NO_SPEND
        for past in self.history.get(index, ()):
            total += past.spend
        last = self.results.get(index)
        if last is not None and last.ok:
            total += last.spend
        return total


@dataclass(frozen=True)
class Counts:
    total: int
    pending: int
    succeeded: int
    retriable: int
    dead: int
    skipped: int

    @property
    def failed(self) -> int:
        """Items whose last attempt failed: retriable, in the DLQ or skipped. The one meaning
        of "failed" in checkpoints, metadata, events, progress and listings."""
        return self.retriable + self.dead + self.skipped

    @property
    def remaining(self) -> int:
        return self.pending + self.retriable

    @property
    def finished(self) -> int:
        return self.succeeded + self.dead + self.skipped


def counts(state: JobState) -> Counts:
    return Counts(
        total=state.item_count or 0,
        pending=state.count(ItemStatus.PENDING),
        succeeded=state.count(ItemStatus.SUCCEEDED),
        retriable=state.count(ItemStatus.RETRIABLE),
        dead=state.count(ItemStatus.DEAD),
        skipped=state.count(ItemStatus.SKIPPED),
    )


Phase = Literal["setup", "map", "reduce", "done"]


def phase(state: JobState, reduce_steps: int) -> Phase:
    return _phase(state, counts(state), reduce_steps)


def _phase(state: JobState, c: Counts, reduce_steps: int) -> Phase:
    if not state.setup_done:
        return "setup"
    if state.item_count is None or c.remaining > 0:
        return "map"
    if state.reduce_done < reduce_steps:
        return "reduce"
    return "done"


@dataclass(frozen=True, slots=True)
class Summary:
    """Where a job stands, in a few numbers (what `metadata.json` tells)."""

    version: int
    counts: Counts
    phase: Phase
    spent: Spend
    ended: JobEndStatus | None


def summarize(state: JobState, reduce_steps: int) -> Summary:
    c = counts(state)
    return Summary(state.version, c, _phase(state, c, reduce_steps), state.spent, state.ended)


# ---- transitions -------------------------------------------------------------------------------

_OUTCOME_STATUS: dict[str, ItemStatus] = {
    "succeeded": ItemStatus.SUCCEEDED,
    "retry": ItemStatus.RETRIABLE,
    "dead": ItemStatus.DEAD,
    "skipped": ItemStatus.SKIPPED,
}


def apply_record(state: JobState, record: Record) -> None:
    """Fold one record into `state` (in place, for speed at 100,000 items)."""
    if isinstance(record, AttemptEnded):
        i = record.index
        result = record.result
        if is_duplicate_result(state, i):
            return
        state.version += 1
        state.merging.pop(i, None)
        state.status[i] = _OUTCOME_STATUS[record.outcome]
        state.attempts[i] = result.attempt
        if result.ok and state.compact:
            state.results.pop(i, None)
        else:
            state.results[i] = result
        if not result.ok:
            past = state.history.setdefault(i, [])
            # Assign, do not append blindly: a replayed record must not duplicate history.
            if not past or past[-1].attempt < result.attempt:
                past.append(result)
        state.spent += result.spend
        if state.ended is not None:
            state.ended = None
    elif isinstance(record, MergeQueued):
        if not is_duplicate_result(state, record.index):
            state.merging[record.index] = record.result
    elif isinstance(record, SetupCompleted):
        state.setup_done = True
        state.setup_outputs = dict(record.outputs)
        state.spent += record.spend
    elif isinstance(record, ItemsFrozen):
        if state.item_count is None:
            state.item_count = record.count
            state.status = bytearray(record.count)
            state.attempts = int_array(record.count)
            state.limits = int_array(record.count, record.max_attempts)
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
        state.spent += record.spend
    elif isinstance(record, MergeStepsEnded):
        state.spent += record.spend
    elif isinstance(record, JobEnded):
        state.ended = record.status
        state.end_reason = record.reason
    elif isinstance(record, RolledBack):
        raise ValueError("a rollback needs the records before it; use replay()")


def apply(state: JobState, record: Record) -> JobState:
    """The pure form of `apply_record`: a new state, the old one untouched."""
    new = state.copy()
    apply_record(new, record)
    return new


def replay(
    records: Sequence[Record], upto_version: int | None = None, compact: bool = False
) -> JobState:
    """The state after `records`, or at `upto_version` (before the record that would pass it)."""
    return fold(records, lambda count: records[:count], upto_version, compact)


Prefix = Callable[[int], Iterable[Record]]


def fold(
    records: Iterable[Record],
    prefix: Prefix,
    upto_version: int | None = None,
    compact: bool = False,
    start: JobState | None = None,
) -> JobState:
    """`replay` over any iterable of records (a journal read as a stream). A rollback needs
    the records before it again: `prefix(n)` gives the first n records of the same sequence."""
    state = start if start is not None else JobState(compact=compact)
    for position, record in enumerate(records):
        if upto_version is not None and bumps_version(record) and state.version >= upto_version:
            break
        if isinstance(record, RolledBack):
            restored = fold(prefix(position), prefix, record.to_version, state.compact)
            # Money spent on rolled-back attempts was still spent.
            restored.spent = state.spent
            restored.version = state.version + 1
            restored.ended = None
            restored.journal_bytes = state.journal_bytes
            state = restored
            continue
        apply_record(state, record)
    return state


# ---- decisions ---------------------------------------------------------------------------------


def is_duplicate_result(state: JobState, index: int) -> bool:
    """A result for an item already recorded as succeeded changes nothing: a cluster may
    deliver one attempt's result twice, and finished work is never redone or recounted."""
    return state.status[index] == ItemStatus.SUCCEEDED


@dataclass(frozen=True)
class FailureLimits:
    """`error_policy`'s limits on failures within one run (SPEC-NOTES: the current run)."""

    stop_on_item_failure: bool = False
    max_failures: int | None = None
    failure_threshold: float | None = None


@dataclass(frozen=True)
class RunTally:
    """Items that ended for good in this run, and how many of them failed."""

    finished: int = 0
    failed: int = 0

    def after(self, outcome: Outcome) -> RunTally:
        if outcome == "retry":
            return self
        return RunTally(self.finished + 1, self.failed + (outcome in ("dead", "skipped")))


THRESHOLD_MIN_ITEMS = 10  # a rate over fewer finished items says little


def failure_policy_stop(
    limits: FailureLimits, tally: RunTally, outcome: Outcome, item_id: str
) -> str | None:
    """Why the map phase must stop after this outcome (a sentence), or None to go on."""
    if outcome not in ("dead", "skipped"):
        return None
    if limits.stop_on_item_failure and outcome == "dead":
        return f"item {item_id} failed and error_policy.on_item_failure is stop"
    if limits.max_failures is not None and tally.failed >= limits.max_failures:
        return (
            f"{tally.failed} items failed, reaching error_policy.max_failures "
            f"({limits.max_failures})"
        )
    threshold = limits.failure_threshold
    if threshold is not None and tally.finished >= THRESHOLD_MIN_ITEMS:
        rate = tally.failed / tally.finished
        if rate >= threshold:
            return (
                f"{rate:.0%} of items failed, reaching error_policy.failure_threshold "
                f"({threshold:.0%})"
            )
    return None


def decide_outcome(
    ok: bool, attempt: int, limit: int, on_item_failure: str, retriable: bool = True
) -> Outcome:
    """Where an item goes after an attempt ends."""
    if ok:
        return "succeeded"
    if retriable and attempt < limit:
        return "retry"
    return "skipped" if on_item_failure == "skip" else "dead"


# The item's data is at fault (a field the template uses is missing, a value no command can be
# given): running the same item again cannot help, so it is not retried.
ITEM_DATA_ERRORS = frozenset({"missing_variable", "unusable_value"})

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
    if history[-1].error_kind in ITEM_DATA_ERRORS:
        return True
    last = history[-3:]
    return len(last) == 3 and len({a.signature for a in last}) == 1
