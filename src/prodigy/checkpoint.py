"""Checkpoint files: full, human-readable snapshots of a job, materialised from its state.

The journal is the source of truth; a checkpoint is the same state written out as one JSON file
(`jq . latest.json` tells where the job stands). A state is frozen in the event loop (status
ranges and run-length counts, found by C-speed scans without copying the arrays) and encoded and
written on a worker thread, skipping versions when completions arrive faster than files can be
written.
"""

from __future__ import annotations

import asyncio
import sys
import time
from array import array
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from prodigy.errors import StateError
from prodigy.state import (
    STATUS_NAMES,
    Attempt,
    AttemptEnded,
    ItemStatus,
    JobEndStatus,
    JobState,
    Phase,
    Record,
    Spend,
    Summary,
    counts,
    int_array,
    summarize,
)
from prodigy.store import JobDir, write_checkpoint

CheckpointFormat = Literal["prodigy-checkpoint/1", "prodigy-checkpoint/2"]
FORMAT: CheckpointFormat = "prodigy-checkpoint/2"

_NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class CheckpointCounts(msgspec.Struct, frozen=True):
    total: _NonNegative
    succeeded: _NonNegative


class CheckpointHead(msgspec.Struct, frozen=True):
    """The part of a checkpoint file that resume and the listings rely on.

    Decoding into it checks the shape as well as the syntax, so valid JSON of the wrong shape
    is damage like a torn file; the items part is skipped without being built.
    """

    format: CheckpointFormat
    job_id: str
    version: _NonNegative
    counts: CheckpointCounts


_head_decoder = msgspec.json.Decoder(CheckpointHead)


def decode_checkpoint_head(data: bytes) -> CheckpointHead:
    """Raises msgspec.DecodeError, or its subclass msgspec.ValidationError for a wrong shape."""
    return _head_decoder.decode(data)


@dataclass(frozen=True)
class JobInfo:
    """The unchanging facts about a job that every checkpoint repeats."""

    job_id: str
    workflow_path: str
    workflow_hash: str
    workflow_config: dict[str, Any]
    workdir: str
    reduce_steps: int
    created_at: str


StatusName = Literal[
    "pending", "running", "succeeded", "failed-retriable", "dead-lettered", "skipped"
]


class ItemCounts(msgspec.Struct, frozen=True):
    total: int
    pending: int
    running: int
    succeeded: int
    failed_retriable: int
    dead_lettered: int
    skipped: int


class WorkflowRef(msgspec.Struct, frozen=True):
    path: str
    hash: str
    config: dict[str, Any]


class SetupPart(msgspec.Struct, frozen=True):
    completed: bool
    outputs: dict[str, str]


class ReducePart(msgspec.Struct, frozen=True):
    steps_total: int
    steps_completed: int
    outputs: dict[str, str]


class CostPart(msgspec.Struct, frozen=True):
    usd: float
    input_tokens: int
    output_tokens: int


class JournalPart(msgspec.Struct, frozen=True):
    """Where the rest of the story is: the journal's first `bytes` bytes are folded into this
    checkpoint (resume replays only what follows), and succeeded items' results are there."""

    file: str
    bytes: _NonNegative


Range = tuple[int, int]  # first and last index, inclusive
Run = tuple[int, int]  # a value and how many items in a row have it


class ItemDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    """An item with something to tell beyond its status: a failed attempt."""

    index: int
    id: str
    status: StatusName
    attempts: int
    max_attempts: int
    result: Attempt | None = None  # the last attempt, when it failed
    failed_attempts: list[Attempt] | None = None


class MergingItem(msgspec.Struct, frozen=True):
    """Succeeded in its worktree; its merge into the job's branch is not recorded yet."""

    index: int
    id: str
    result: Attempt


class ItemsPart(msgspec.Struct, frozen=True, rename={"retriable": "failed-retriable"}):
    """Every item, compactly: index ranges per recorded status, run-length attempt counts,
    and full detail only for items that failed an attempt. Items in `running` have an attempt
    in flight; they are also in `pending` or `failed-retriable`, which is how a resume runs them.
    """

    pending: list[Range]
    succeeded: list[Range]
    retriable: list[Range]
    dead_lettered: list[Range] = msgspec.field(name="dead-lettered")
    skipped: list[Range] = msgspec.field(default_factory=list)
    running: list[int] = msgspec.field(default_factory=list)
    attempts: list[Run] = msgspec.field(default_factory=list)
    max_attempts: list[Run] = msgspec.field(default_factory=list)
    detail: list[ItemDetail] = msgspec.field(default_factory=list)
    merging: list[MergingItem] = msgspec.field(default_factory=list)


class CheckpointDocument(msgspec.Struct, frozen=True):
    """A whole `checkpoint-v{N}.json` file."""

    format: CheckpointFormat
    job_id: str
    version: int
    phase: Phase
    status: JobEndStatus | Literal["running"]
    created_at: str
    workflow: WorkflowRef
    workdir: str
    items_file: str
    journal: JournalPart
    counts: ItemCounts
    setup: SetupPart
    reduce: ReducePart
    cost: CostPart
    dlq: list[str]
    items: ItemsPart | None  # None until the items are frozen
    end_reason: str = ""


def _runs(data: bytes | bytearray, size: int) -> list[tuple[bytes, int]]:
    """Runs of equal `size`-byte values in `data`: `(value, count)` in order.

    A segment is one run when counting its first value finds the whole segment (a C-speed
    scan, nothing allocated; non-overlapping occurrences tile it only if it is uniform);
    otherwise it is halved. A job's statuses and counts come in long runs, so this costs a
    few scans of the array, however many items it holds (a regular expression with a
    backreference kept a backtracking entry per item: 100 MB at a million).
    """
    runs: list[tuple[bytes, int]] = []
    # An explicit stack, not a recursive closure: a closure that calls itself is a reference
    # cycle, and it kept each checkpoint's copy of the arrays alive until a full collection
    # (80 MB at a million items).
    segments = [(0, len(data) // size)] if data else []
    while segments:
        lo, hi = segments.pop()
        first = bytes(data[lo * size : (lo + 1) * size])
        if data.count(first, lo * size, hi * size) == hi - lo:
            found = [(first, hi - lo)]
        elif hi - lo <= 32:
            found = [(bytes(data[i * size : (i + 1) * size]), 1) for i in range(lo, hi)]
        else:
            mid = (lo + hi) // 2
            segments += [(mid, hi), (lo, mid)]
            continue
        for value, count in found:
            _add_run(runs, value, count)
    return runs


_V = TypeVar("_V")


def _add_run(runs: list[tuple[_V, int]], value: _V, count: int) -> None:
    """Append a run, or lengthen the last one when it holds the same value."""
    if runs and runs[-1][0] == value:
        runs[-1] = (value, runs[-1][1] + count)
    else:
        runs.append((value, count))


def status_ranges(status: bytearray) -> dict[ItemStatus, list[Range]]:
    """Index ranges per status (a job's statuses come in long runs)."""
    ranges: dict[ItemStatus, list[Range]] = {s: [] for s in ItemStatus}
    start = 0
    for value, count in _runs(status, 1):
        ranges[ItemStatus(value[0])].append((start, start + count - 1))
        start += count
    return ranges


_CHUNK = 16_384  # values scanned at a time: a 64 KB copy, however big the array


def value_runs(values: array[int]) -> list[Run]:
    """`[value, count]` pairs, in order: run-length encoding at C speed, a chunk at a time."""
    runs: list[Run] = []
    for lo in range(0, len(values), _CHUNK):
        for raw, count in _runs(values[lo : lo + _CHUNK].tobytes(), values.itemsize):
            _add_run(runs, int.from_bytes(raw, sys.byteorder), count)
    return runs


def _expand_runs(runs: list[Run], count: int, what: str) -> array[int]:
    if any(length < 0 or not 0 <= value < 2**32 for value, length in runs):
        raise StateError(f"The checkpoint's {what} hold a negative or oversized number.")
    covered = sum(length for _, length in runs)
    if covered != count:
        raise StateError(f"The checkpoint's {what} cover {covered} items, not {count}.")
    values = int_array(count)
    start = 0
    for value, length in runs:
        # A chunk at a time, so a long run costs no copy of its length.
        for lo in range(start, start + length if value else start, _CHUNK):
            n = min(_CHUNK, start + length - lo)
            values[lo : lo + n] = int_array(n, value)
        start += length
    return values


ItemId = Callable[[int], str]


@dataclass(frozen=True, slots=True)
class FrozenItem:
    """An item with something to tell beyond its status (see `ItemDetail`)."""

    index: int
    status: ItemStatus
    attempts: int
    limit: int
    result: Attempt | None
    history: list[Attempt] | None


@dataclass(frozen=True, slots=True)
class Frozen:
    """What a checkpoint says about a state at one moment, taken in the event loop: status
    ranges and run-length counts (C-speed scans, the arrays are not copied) and the detail of
    the few failed items. Encoding it on another thread is then safe while the engine goes on
    mutating the state, and takes no memory that grows with the job."""

    summary: Summary
    setup_done: bool
    setup_outputs: dict[str, str]
    reduce_done: int
    reduce_outputs: dict[str, str]
    end_reason: str
    journal_bytes: int
    frozen: bool  # whether the items are frozen (the fields below are empty until then)
    ranges: dict[ItemStatus, list[Range]]
    running: list[int]
    running_retriable: int  # how many of `running` the record has retriable (not pending)
    attempts: list[Run]
    limits: list[Run]
    detail: list[FrozenItem]
    merging: list[tuple[int, Attempt]]


def freeze(state: JobState, reduce_steps: int, running: Iterable[int] = frozenset()) -> Frozen:
    """`running` items are shown as such; the record has them pending (or retriable), which is
    what a resume runs them as. An attempt whose result was just recorded is still in the
    scheduler's set for a moment: only an item the record has pending or retriable can run."""
    status = state.status
    startable = (ItemStatus.PENDING, ItemStatus.RETRIABLE)
    in_flight = sorted(i for i in running if status[i] in startable)
    detailed = sorted(
        {i for i in state.results if status[i] != ItemStatus.SUCCEEDED} | set(state.history)
    )
    return Frozen(
        summary=summarize(state, reduce_steps),
        setup_done=state.setup_done,
        setup_outputs=dict(state.setup_outputs),
        reduce_done=state.reduce_done,
        reduce_outputs=dict(state.reduce_outputs),
        end_reason=state.end_reason,
        journal_bytes=state.journal_bytes,
        frozen=state.item_count is not None,
        ranges=status_ranges(status),
        running=in_flight,
        running_retriable=sum(1 for i in in_flight if status[i] == ItemStatus.RETRIABLE),
        attempts=value_runs(state.attempts),
        limits=value_runs(state.limits),
        detail=[
            FrozenItem(
                index=i,
                status=ItemStatus(status[i]),
                attempts=state.attempts[i],
                limit=state.limits[i],
                result=None if status[i] == ItemStatus.SUCCEEDED else state.results.get(i),
                history=list(state.history[i]) if i in state.history else None,
            )
            for i in detailed
        ],
        merging=sorted(state.merging.items()),
    )


def _item_counts(frozen: Frozen) -> ItemCounts:
    c = frozen.summary.counts
    running, retriable = len(frozen.running), frozen.running_retriable
    return ItemCounts(
        total=c.total,
        pending=c.pending - (running - retriable),
        running=running,
        succeeded=c.succeeded,
        failed_retriable=c.retriable - retriable,
        dead_lettered=c.dead,
        skipped=c.skipped,
    )


def _items_part(frozen: Frozen, item_id: ItemId) -> ItemsPart:
    ranges = frozen.ranges
    return ItemsPart(
        pending=ranges[ItemStatus.PENDING],
        succeeded=ranges[ItemStatus.SUCCEEDED],
        retriable=ranges[ItemStatus.RETRIABLE],
        dead_lettered=ranges[ItemStatus.DEAD],
        skipped=ranges[ItemStatus.SKIPPED],
        running=frozen.running,
        attempts=frozen.attempts,
        max_attempts=frozen.limits,
        detail=[
            ItemDetail(
                index=item.index,
                id=item_id(item.index),
                status=STATUS_NAMES[item.status],
                attempts=item.attempts,
                max_attempts=item.limit,
                result=item.result,
                failed_attempts=item.history,
            )
            for item in frozen.detail
        ],
        merging=[MergingItem(i, item_id(i), r) for i, r in frozen.merging],
    )


def document_of(frozen: Frozen, info: JobInfo, item_id: ItemId) -> CheckpointDocument:
    """The checkpoint file's content. Its size grows with the failures and the number of
    status runs, not with the items finished."""
    summary = frozen.summary
    spent = summary.spent
    dead = [i for first, last in frozen.ranges[ItemStatus.DEAD] for i in range(first, last + 1)]
    return CheckpointDocument(
        format=FORMAT,
        job_id=info.job_id,
        version=summary.version,
        phase=summary.phase,
        status=summary.ended or "running",
        created_at=info.created_at,
        workflow=WorkflowRef(info.workflow_path, info.workflow_hash, info.workflow_config),
        workdir=info.workdir,
        items_file="items.jsonl",
        journal=JournalPart("journal.jsonl", frozen.journal_bytes),
        counts=_item_counts(frozen),
        setup=SetupPart(frozen.setup_done, frozen.setup_outputs),
        reduce=ReducePart(info.reduce_steps, frozen.reduce_done, frozen.reduce_outputs),
        cost=CostPart(spent.cost_usd, spent.input_tokens, spent.output_tokens),
        dlq=[item_id(i) for i in dead],
        items=_items_part(frozen, item_id) if frozen.frozen else None,
        end_reason=frozen.end_reason,
    )


def checkpoint_document(
    state: JobState, info: JobInfo, item_id: ItemId, running: Iterable[int] = frozenset()
) -> CheckpointDocument:
    """The checkpoint file's content for `state` (see `freeze` and `document_of`)."""
    return document_of(freeze(state, info.reduce_steps, running), info, item_id)


_STATUS_OF_NAME: dict[str, ItemStatus] = {name: status for status, name in STATUS_NAMES.items()}


def restore_state(doc: CheckpointDocument) -> JobState:
    """The compact state a checkpoint describes (`checkpoint_document`'s inverse, less the
    results of succeeded items, which stay in the journal). StateError if inconsistent."""
    state = JobState(
        version=doc.version,
        setup_done=doc.setup.completed,
        setup_outputs=dict(doc.setup.outputs),
        reduce_done=doc.reduce.steps_completed,
        reduce_outputs=dict(doc.reduce.outputs),
        ended=None if doc.status == "running" else doc.status,
        end_reason=doc.end_reason,
        spent=Spend(doc.cost.usd, doc.cost.input_tokens, doc.cost.output_tokens),
        compact=True,
        journal_bytes=doc.journal.bytes,
    )
    part = doc.items
    if part is None:
        return state
    total = doc.counts.total
    state.item_count = total
    state.status = bytearray(total)
    named = (
        (ItemStatus.SUCCEEDED, part.succeeded),
        (ItemStatus.RETRIABLE, part.retriable),
        (ItemStatus.DEAD, part.dead_lettered),
        (ItemStatus.SKIPPED, part.skipped),
    )
    for status, ranges in named:
        for first, last in ranges:
            if not 0 <= first <= last < total:
                raise StateError(f"The checkpoint's item range [{first}, {last}] is out of range.")
            state.status[first : last + 1] = bytes([status]) * (last - first + 1)
    state.attempts = _expand_runs(part.attempts, total, "attempt counts")
    state.limits = _expand_runs(part.max_attempts, total, "attempt limits")
    for item in part.detail:
        if item.result is not None:
            state.results[item.index] = item.result
        if item.failed_attempts:
            state.history[item.index] = list(item.failed_attempts)
        if _STATUS_OF_NAME.get(item.status) != state.status[item.index]:
            raise StateError(f"The checkpoint's detail of item {item.id} contradicts its ranges.")
    state.merging = {m.index: m.result for m in part.merging}
    restored = counts(state)
    if (restored.succeeded, restored.dead) != (doc.counts.succeeded, doc.counts.dead_lettered):
        raise StateError("The checkpoint's item ranges contradict its counts.")
    return state


_document_decoder = msgspec.json.Decoder(CheckpointDocument)


def decode_checkpoint(data: bytes) -> CheckpointDocument:
    """A whole checkpoint file; msgspec.DecodeError (or ValidationError) if damaged."""
    return _document_decoder.decode(data)


def newest_checkpoint(job: JobDir) -> CheckpointDocument | None:
    """The latest checkpoint file, if it can be resumed from: None when it is missing,
    unreadable or of an older format (the caller then replays the whole journal)."""
    try:
        document = decode_checkpoint(job.latest.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    if document.format != FORMAT or document.job_id != job.job_id:
        return None
    return document


def encode_checkpoint(document: CheckpointDocument) -> bytes:
    return msgspec.json.format(msgspec.json.encode(document), indent=1) + b"\n"


def read_checkpoint(job: JobDir, version: int | None = None) -> CheckpointHead:
    """Check one checkpoint file (the latest by default); a damaged file is a StateError."""
    path = job.latest if version is None else job.checkpoint(version)
    try:
        head = decode_checkpoint_head(path.read_bytes())
    except FileNotFoundError:
        raise StateError(f"Checkpoint not found: {path} does not exist.") from None
    except msgspec.DecodeError as exc:
        # Also a ValidationError: valid JSON of the wrong shape is as unusable as a torn file.
        target = path.resolve()
        older = [v for v in job.checkpoint_versions() if job.checkpoint(v) != target]
        listing = ", ".join(f"v{v}" for v in older) or "none on disk"
        raise StateError(
            f"Checkpoint {target} is corrupt ({exc}); it has been left untouched.",
            hint=(
                f"Older checkpoints: {listing}. Resume from an older version with "
                f"`prodigy resume-job {job.job_id} --from-checkpoint N`, or pass --force to "
                "rebuild from the journal."
            ),
        ) from None
    return head


Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class CheckpointWriter:
    """Writes checkpoint files in the background; never more than one write in flight.

    A write that fails (a full disk, a permission error) is never lost in a background task:
    it raises `StateError` from `write_now`, and is handed to `on_error` from the background.
    """

    def __init__(
        self,
        job: JobDir,
        info: JobInfo,
        keep: int,
        after_write: Callable[[Summary], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.job = job
        self.info = info
        self.keep = keep
        self.after_write = after_write
        self.on_error = on_error
        self.item_id: ItemId = str
        # Made by the lock's holder only, so the temporaries of a write cut short can go.
        job.drop_stray_temporaries()
        self.running: Callable[[], Iterable[int]] = tuple
        self.spawn: Spawn = asyncio.ensure_future
        self.written_version = job.latest_version()
        self._task: asyncio.Task[None] | None = None
        self._wanted: JobState | None = None

    def write_now(self, state: JobState) -> None:
        """Synchronous write of this exact version (start, end and interruption)."""
        self._write_and_report(self._freeze(state))

    def _freeze(self, state: JobState) -> Frozen:
        return freeze(state, self.info.reduce_steps, self.running())

    def _write(self, frozen: Frozen) -> None:
        version = frozen.summary.version
        doc = document_of(frozen, self.info, self.item_id)
        try:
            write_checkpoint(self.job, version, encode_checkpoint(doc), self.keep)
        except OSError as exc:
            raise StateError(
                f"Cannot write checkpoint v{version} of job {self.job.job_id} in "
                f"{self.job.path}: {exc.strerror or exc}.",
                hint="Free some space (or fix the permissions), then resume the job: "
                f"prodigy resume-job {self.job.job_id}",
            ) from None
        self.written_version = version

    def _write_and_report(self, frozen: Frozen) -> None:
        self._write(frozen)
        self.after_write(frozen.summary)

    def request(self, state: JobState) -> None:
        """Ask for a checkpoint of the live state; O(1): requests made while a write is in
        progress coalesce into one `freeze` taken when the writer is free."""
        self._wanted = state
        if self._task is None or self._task.done():
            self._task = self.spawn(self._drain())

    async def _drain(self) -> None:
        try:
            while self._wanted is not None:
                live, self._wanted = self._wanted, None
                if live.version == self.written_version:
                    continue
                frozen = self._freeze(live)
                del live
                started = time.monotonic()
                await asyncio.to_thread(self._write_and_report, frozen)
                del frozen
                # Rest three times as long as the write took, so that materialising
                # checkpoints never takes more than a quarter of the coordinator's time, whatever
                # the job's size (versions in between are skipped; the journal has them).
                await asyncio.sleep(3 * (time.monotonic() - started))
        except Exception as exc:
            self._wanted = None
            self.on_error(exc)

    async def flush(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


class CheckpointPacer:
    """Asks for a checkpoint every `interval` ended attempts (`checkpoint.interval_items`)."""

    def __init__(self, writer: CheckpointWriter, interval: int) -> None:
        self.writer = writer
        self.interval = interval

    def recorded(self, record: Record, state: JobState) -> None:
        if not isinstance(record, AttemptEnded):
            return
        written = self.writer.written_version
        if written is None or state.version - written >= self.interval:
            self.writer.request(state)

    def duplicate(self, record: AttemptEnded, state: JobState) -> None:
        return None
