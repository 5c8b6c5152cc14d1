"""A job on disk: its frozen items, its metadata and its state rebuilt from the journal.

Items are frozen into `items.jsonl` once (after setup) and read back by byte offset, so only
the ids and offsets of a 100,000-item job live in memory. `metadata.json` is written and read
back only here: strictly to run the job, leniently to list it.
"""

from __future__ import annotations

import itertools
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, overload

import msgspec

from prodigy.checkpoint import CheckpointDocument, restore_state
from prodigy.errors import StateError
from prodigy.events import now_iso
from prodigy.items import WorkItem
from prodigy.journal import Journal, JournalScan, replay_journal
from prodigy.state import (
    Counts,
    JobState,
    Phase,
    Record,
    RolledBack,
    Summary,
    apply_record,
    summarize,
)
from prodigy.store import JobDir, atomic_writer, create_job_dir


class _ItemLine(msgspec.Struct, array_like=True):
    id: str
    data: msgspec.Raw


_item_encoder = msgspec.json.Encoder()
_item_decoder = msgspec.json.Decoder(_ItemLine)


def write_items(job: JobDir, items: Iterable[WorkItem]) -> int:
    """Freeze the job's items: one `[id, data]` line per item, in index order; the count."""
    count = 0
    with atomic_writer(job.items) as out:
        buf = bytearray()
        for item in items:
            buf += _item_encoder.encode([item.id, item.data])
            buf += b"\n"
            count += 1
            if len(buf) >= _CHUNK:
                out.write(buf)
                buf.clear()
        out.write(buf)
    return count


_CHUNK = 1 << 20


class ItemIds(Sequence[str]):
    """The items' ids, read from the items file when asked for (never all held in memory)."""

    def __init__(self, items: ItemsFile) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._items.id_of(i) for i in range(len(self))[index]]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._items.id_of(index % len(self))

    def __iter__(self) -> Iterator[str]:
        with self._items.path.open("rb") as lines:
            for line in lines:
                yield self._items.decode_line(line).id


def items_damaged(path: Path, problem: str) -> StateError:
    """The one sentence for a frozen items file that cannot be trusted, and what to do.

    It is never rewritten: re-reading the map input could give other items than the ones the
    journal's indexes refer to (SPEC-NOTES, damaged files)."""
    return StateError(
        f"The job's item file {path} {problem}; it was left untouched.",
        hint="Restore it from a backup to resume the job; prodigy does not re-read the map "
        "input for a job, since that could give other items than the ones recorded.",
    )


def open_frozen_items(job: JobDir, count: int | None) -> ItemsFile:
    """The frozen items, checked against the number the journal says were frozen."""
    items = ItemsFile(job.items)
    if count is not None and len(items) != count:
        items.close()
        raise items_damaged(
            job.items,
            f"holds {len(items)} of the {count} items frozen into it (it was cut short or changed)",
        )
    return items


_READ_AHEAD = 65_536


class ItemsFile:
    """Random access to the frozen items: 8 bytes of memory per item (its offset)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            file = path.open("rb")
        except FileNotFoundError:
            raise items_damaged(path, "is missing") from None
        with file:
            # Where every line starts, plus where the last one ends: C-speed loops only.
            self._offsets = array("Q", [0])
            self._offsets.extend(itertools.accumulate(map(len, file)))
        size = self._offsets[-1]
        if size and _byte_before(self.path, size) != b"\n":
            raise items_damaged(path, "is cut short: its last line is incomplete")
        self._fd = os.open(path, os.O_RDONLY)
        self._block: tuple[int, bytes] = (0, b"")
        self.ids = ItemIds(self)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _line(self, index: int) -> _ItemLine:
        start, end = self._offsets[index], self._offsets[index + 1]
        # Items are mostly read in order: one read brings the next ones too.
        at, block = self._block
        if not at <= start <= end <= at + len(block):
            at, block = start, os.pread(self._fd, max(end - start, _READ_AHEAD), start)
            self._block = (at, block)  # one assignment: safe for the checkpoint thread
        return self.decode_line(block[start - at : end - at])

    def decode_line(self, line: bytes) -> _ItemLine:
        try:
            return _item_decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise items_damaged(self.path, f"is damaged ({exc})") from None

    def id_of(self, index: int) -> str:
        return self._line(index).id

    def get(self, index: int) -> WorkItem:
        line = self._line(index)
        return WorkItem(index=index, id=line.id, data=msgspec.json.decode(line.data))

    def close(self) -> None:
        os.close(self._fd)


def load_state(job: JobDir, upto_version: int | None = None) -> JobState:
    """The whole state the journal records, every result included (for the views)."""
    return replay_journal(job.journal, upto_version)


def load_run_state(job: JobDir, checkpoint: CheckpointDocument | None) -> JobState:
    """The compact state a run starts from: the checkpoint's (when it says how much of the
    journal it holds) plus the journal records after it, or else the whole journal replayed.
    The cost depends on the records since the checkpoint, not on the job's size."""
    if checkpoint is None or checkpoint.journal.bytes == 0:
        return replay_journal(job.journal, compact=True)
    state = restore_state(checkpoint)
    start = checkpoint.journal.bytes
    if not _is_record_boundary(job.journal, start):
        raise StateError(
            f"Checkpoint v{checkpoint.version} of job {job.job_id} is ahead of its journal "
            f"(it holds {start} bytes of {job.journal}, which does not end a record there): "
            "the state is inconsistent.",
            hint="Pass --skip-validation to trust the journal, or --from-checkpoint N.",
        )
    scan = JournalScan(job.journal, start)
    for record in scan:
        if isinstance(record, RolledBack):
            # A rollback needs the records before it: replay the journal from its start.
            return replay_journal(job.journal, compact=True)
        apply_record(state, record)
    state.journal_bytes = scan.valid_bytes
    return state


def _byte_before(path: Path, offset: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset - 1)
        return file.read(1)


def _is_record_boundary(path: Path, offset: int) -> bool:
    try:
        return _byte_before(path, offset) == b"\n"
    except FileNotFoundError:
        raise StateError(
            f"The journal {path} is missing, so its state cannot be rebuilt."
        ) from None


def append_records(job: JobDir, state: JobState, records: list[Record]) -> JobState:
    """Durably append records outside a run (a rollback, a requeue); the state after them.

    `state.journal_bytes` is how much of the journal is intact: a torn tail after it goes.
    """
    try:
        journal = Journal(job.journal, state.journal_bytes)
        try:
            if records:
                journal.append_now(records)
            size = journal.size
        finally:
            journal.close()
    except OSError as exc:
        # A write cut short is cut off again by the journal: nothing of it was recorded.
        raise StateError(
            f"Could not write the journal {job.journal}: {exc.strerror or exc}; nothing was "
            "recorded.",
            hint="Free some space (or fix the permissions), then run the command again.",
        ) from None
    if any(isinstance(r, RolledBack) for r in records):
        return replay_journal(job.journal, compact=state.compact)
    for record in records:
        apply_record(state, record)
    state.journal_bytes = size
    return state


Isolation = Literal["worktree", "none"]


class JobMetadata(msgspec.Struct, frozen=True):
    """The job's identity: what a run needs from `metadata.json`."""

    job_id: str
    repo: str
    workdir: str
    workflow_path: str
    workflow_hash: str
    workflow_name: str = ""
    reduce_steps: int = 0
    created_at: str = ""
    isolation: Isolation = "none"
    base_commit: str = ""  # worktree isolation: where the parent branch starts
    base_branch: str = ""  # ... and the user's branch its work is merged into at the end
    profile: str = ""  # the --profile chosen (its name only, never values): resume reuses it


class MetadataCounts(msgspec.Struct, frozen=True):
    """Items by where they stand; `failed` = retriable + dead-lettered + skipped, and
    `remaining` = pending + retriable (SPEC-NOTES: the one meaning of failed)."""

    total: int
    succeeded: int
    failed: int
    retriable: int
    dead_lettered: int
    skipped: int
    pending: int
    remaining: int


class MetadataCost(msgspec.Struct, frozen=True):
    usd: float
    input_tokens: int
    output_tokens: int


class MetadataDocument(JobMetadata, frozen=True, kw_only=True):
    """The whole `metadata.json`: the identity, then where the job stands."""

    updated_at: str
    status: str
    phase: Phase
    version: int
    pid: int | None
    counts: MetadataCounts
    cost: MetadataCost


def metadata_document(
    meta: JobMetadata, state: JobState | Summary, status: str, pid: int | None = None
) -> MetadataDocument:
    summary = state if isinstance(state, Summary) else summarize(state, meta.reduce_steps)
    c = summary.counts
    spent = summary.spent
    return MetadataDocument(
        **msgspec.structs.asdict(meta),
        updated_at=now_iso(),
        status=status,
        phase=summary.phase,
        version=summary.version,
        pid=pid,
        counts=MetadataCounts(
            total=c.total,
            succeeded=c.succeeded,
            failed=c.failed,
            retriable=c.retriable,
            dead_lettered=c.dead,
            skipped=c.skipped,
            pending=c.pending,
            remaining=c.remaining,
        ),
        cost=MetadataCost(round(spent.cost_usd, 6), spent.input_tokens, spent.output_tokens),
    )


def read_job_metadata(job: JobDir) -> JobMetadata:
    """The identity a run needs. A missing, unparsable or ill-shaped file is a StateError that
    names it and the repair; the file itself is never rewritten here."""
    if not job.journal.exists() and (
        not job.metadata.exists() or _as_written_at_start(read_stored_metadata(job))
    ):
        # A crash or power loss between making the directory and creating the journal.
        raise StateError(
            f"Job {job.job_id} recorded nothing before it was interrupted (its directory "
            "has no journal), so there is nothing to resume.",
            hint="Start it again with `prodigy cook WORKFLOW`.",
        )
    try:
        return msgspec.convert(job.read_metadata(), JobMetadata)
    except FileNotFoundError:
        problem = "is missing"
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
    except StateError as exc:  # not JSON, or not an object
        problem = exc.message.removeprefix(f"{job.metadata} ").rstrip(".")
    except msgspec.ValidationError as exc:
        problem = f"is damaged: a field is missing or of the wrong type ({exc})"
    raise StateError(
        f"The metadata of job {job.job_id}, {job.metadata}, {problem}; it was left untouched.",
        hint="Rebuild it from the job's checkpoint and journal with "
        f"`prodigy checkpoints repair {job.job_id}`.",
    ) from None


def create_job(
    repo_name: str,
    workdir: Path,
    workflow_path: Path,
    workflow_hash: str,
    workflow_name: str,
    reduce_steps: int,
    isolation: Isolation = "none",
    base_commit: str = "",
    base_branch: str = "",
    profile: str = "",
) -> tuple[JobDir, JobMetadata]:
    """Make the job directory with its metadata, empty journal and events log."""
    job = create_job_dir(repo_name)
    meta = JobMetadata(
        job_id=job.job_id,
        repo=repo_name,
        workdir=str(workdir),
        workflow_path=str(workflow_path.resolve()),
        workflow_hash=workflow_hash,
        workflow_name=workflow_name,
        reduce_steps=reduce_steps,
        created_at=now_iso(),
        isolation=isolation,
        base_commit=base_commit,
        base_branch=base_branch,
        profile=profile,
    )
    return job, meta


@dataclass(frozen=True)
class StoredMetadata:
    """metadata.json read back for listings. Lenient: a field that is missing or of the wrong
    type reads as unknown, so a damaged file still tells what it can. Its progress fields are
    the journal's as of the last update: a fallback when the journal cannot be read."""

    repo: str
    workflow_name: str
    workflow_path: str
    workdir: str
    reduce_steps: int
    created_at: datetime | None
    updated_at: datetime | None
    status: str | None
    phase: str
    version: int | None
    counts: Counts
    cost_usd: float
    input_tokens: int
    output_tokens: int


def read_stored_metadata(job: JobDir) -> StoredMetadata:
    """Raises StateError when the file is not a JSON object, OSError when it cannot be read."""
    return stored_metadata(job.read_metadata())


def stored_metadata(raw: dict[str, Any]) -> StoredMetadata:
    cost = raw.get("cost")
    stored_cost: dict[str, Any] = cost if isinstance(cost, dict) else {}
    usd = stored_cost.get("usd")
    status = raw.get("status")
    version = raw.get("version")
    return StoredMetadata(
        repo=str(raw.get("repo") or ""),
        workflow_name=str(raw.get("workflow_name") or ""),
        workflow_path=str(raw.get("workflow_path") or ""),
        workdir=str(raw.get("workdir") or ""),
        reduce_steps=_int(raw.get("reduce_steps")),
        created_at=_parse_time(raw.get("created_at")),
        updated_at=_parse_time(raw.get("updated_at")),
        status=status if isinstance(status, str) else None,
        phase=str(raw.get("phase") or "unknown"),
        version=version if isinstance(version, int) else None,
        counts=_stored_counts(raw.get("counts")),
        cost_usd=float(usd) if isinstance(usd, int | float) else 0.0,
        input_tokens=_int(stored_cost.get("input_tokens")),
        output_tokens=_int(stored_cost.get("output_tokens")),
    )


def _as_written_at_start(stored: StoredMetadata) -> bool:
    """The metadata `cook` writes before anything is recorded (running, version 0)."""
    return stored.status == "running" and stored.version == 0


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # A naive time was written in local time; make it comparable with aware ones.
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


def _stored_counts(stored: object) -> Counts:
    if not isinstance(stored, dict):
        return Counts(0, 0, 0, 0, 0, 0)
    dead = _int(stored.get("dead_lettered"))
    if "retriable" in stored:
        return Counts(
            total=_int(stored.get("total")),
            pending=_int(stored.get("pending")),
            succeeded=_int(stored.get("succeeded")),
            retriable=_int(stored.get("retriable")),
            dead=dead,
            skipped=_int(stored.get("skipped")),
        )
    # Files written before `retriable` was stored folded it into "failed" and "pending".
    retriable = max(0, _int(stored.get("failed")) - dead)
    return Counts(
        total=_int(stored.get("total")),
        pending=max(0, _int(stored.get("pending")) - retriable),
        succeeded=_int(stored.get("succeeded")),
        retriable=retriable,
        dead=dead,
        skipped=0,
    )
