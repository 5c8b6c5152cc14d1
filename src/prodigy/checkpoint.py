"""Checkpoint files: full, human-readable snapshots of a job, materialised from its state.

The journal is the source of truth; a checkpoint is the same state written out as one JSON file
(`jq . latest.json` tells where the job stands). Snapshots are taken in the event loop (cheap
copies of compact arrays) and encoded and written on a worker thread, skipping versions when
completions arrive faster than files can be written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

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
    counts,
    phase,
)
from prodigy.store import JobDir, write_checkpoint

CheckpointFormat = Literal["prodigy-checkpoint/1"]
FORMAT: CheckpointFormat = "prodigy-checkpoint/1"

_NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class CheckpointCounts(msgspec.Struct, frozen=True):
    total: _NonNegative
    succeeded: _NonNegative


class CheckpointHead(msgspec.Struct, frozen=True):
    """The part of a checkpoint file that resume and the listings rely on.

    Decoding into it checks the shape as well as the syntax, so valid JSON of the wrong shape
    is damage like a torn file; the items array is skipped without being built.
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


@dataclass(frozen=True)
class Snapshot:
    """A state and the items running at that moment, safe to encode on another thread."""

    state: JobState
    running: frozenset[int] = frozenset()


def snapshot(state: JobState) -> JobState:
    """A copy safe to encode on another thread while the engine keeps mutating the original."""
    return JobState(
        version=state.version,
        setup_done=state.setup_done,
        setup_outputs=dict(state.setup_outputs),
        item_count=state.item_count,
        status=bytearray(state.status),
        attempts=list(state.attempts),
        limits=list(state.limits),
        results=dict(state.results),
        merging=dict(state.merging),
        history={i: list(h) for i, h in state.history.items()},
        reduce_done=state.reduce_done,
        reduce_outputs=dict(state.reduce_outputs),
        ended=state.ended,
        end_reason=state.end_reason,
        spent=state.spent,
    )


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


class CheckpointItem(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    status: StatusName
    attempts: int
    max_attempts: int
    result: Attempt | None = None
    failed_attempts: list[Attempt] | None = None


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
    counts: ItemCounts
    setup: SetupPart
    reduce: ReducePart
    cost: CostPart
    dlq: list[str]
    items: list[CheckpointItem]


def _item_counts(state: JobState, running: frozenset[int]) -> ItemCounts:
    c = counts(state)
    # Only pending and retriable items are ever started.
    running_pending = sum(1 for i in running if state.status[i] == ItemStatus.PENDING)
    running_retriable = sum(1 for i in running if state.status[i] == ItemStatus.RETRIABLE)
    return ItemCounts(
        total=c.total,
        pending=c.pending - running_pending,
        running=len(running),
        succeeded=c.succeeded,
        failed_retriable=c.retriable - running_retriable,
        dead_lettered=c.dead,
        skipped=c.skipped,
    )


def checkpoint_document(
    state: JobState, info: JobInfo, item_ids: list[str], running: frozenset[int] = frozenset()
) -> CheckpointDocument:
    """The checkpoint file's content. `running` items are shown as such; the record has them
    pending (or retriable), which is what a resume runs them as."""
    items = [
        CheckpointItem(
            id=item_ids[i] if i < len(item_ids) else f"#{i}",
            status="running" if i in running else STATUS_NAMES[ItemStatus(status)],
            attempts=state.attempts[i],
            max_attempts=state.limits[i],
            result=state.results.get(i),
            failed_attempts=state.history.get(i),
        )
        for i, status in enumerate(state.status)
    ]
    spent = state.spent
    return CheckpointDocument(
        format=FORMAT,
        job_id=info.job_id,
        version=state.version,
        phase=phase(state, info.reduce_steps),
        status=state.ended or "running",
        created_at=info.created_at,
        workflow=WorkflowRef(info.workflow_path, info.workflow_hash, info.workflow_config),
        workdir=info.workdir,
        items_file="items.jsonl",
        counts=_item_counts(state, running),
        setup=SetupPart(state.setup_done, state.setup_outputs),
        reduce=ReducePart(info.reduce_steps, state.reduce_done, state.reduce_outputs),
        cost=CostPart(round(spent.cost_usd, 6), spent.input_tokens, spent.output_tokens),
        dlq=[item_ids[i] for i in state.indexes_with(ItemStatus.DEAD) if i < len(item_ids)],
        items=items,
    )


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
        after_write: Callable[[JobState], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.job = job
        self.info = info
        self.keep = keep
        self.after_write = after_write
        self.on_error = on_error
        self.item_ids: list[str] = []
        self.running: Callable[[], Iterable[int]] = tuple
        self.spawn: Spawn = asyncio.ensure_future
        self.written_version = job.latest_version()
        self._task: asyncio.Task[None] | None = None
        self._wanted: JobState | None = None

    def write_now(self, state: JobState) -> None:
        """Synchronous write of this exact version (start, end and interruption)."""
        self._write(Snapshot(state, frozenset(self.running())))
        self.after_write(state)

    def _write(self, snap: Snapshot) -> None:
        doc = checkpoint_document(snap.state, self.info, self.item_ids, snap.running)
        try:
            write_checkpoint(self.job, snap.state.version, encode_checkpoint(doc), self.keep)
        except OSError as exc:
            raise StateError(
                f"Cannot write checkpoint v{snap.state.version} of job {self.job.job_id} in "
                f"{self.job.path}: {exc.strerror or exc}.",
                hint="Free some space (or fix the permissions), then resume the job: "
                f"prodigy resume-job {self.job.job_id}",
            ) from None
        self.written_version = snap.state.version

    def _write_and_report(self, snap: Snapshot) -> None:
        self._write(snap)
        self.after_write(snap.state)

    def request(self, state: JobState) -> None:
        """Ask for a checkpoint of the live state; O(1): requests made while a write is in
        progress coalesce into one snapshot taken when the writer is free."""
        self._wanted = state
        if self._task is None or self._task.done():
            self._task = self.spawn(self._drain())

    async def _drain(self) -> None:
        try:
            while self._wanted is not None:
                live, self._wanted = self._wanted, None
                if live.version == self.written_version:
                    continue
                wanted = Snapshot(snapshot(live), frozenset(self.running()))
                started = time.monotonic()
                await asyncio.to_thread(self._write_and_report, wanted)
                # Big jobs have big checkpoint files: rest as long as the write took, so that
                # materialising checkpoints never takes more than half of the coordinator's time.
                await asyncio.sleep(time.monotonic() - started)
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
