"""A job on disk: its frozen items, its metadata and its state rebuilt from the journal.

Items are frozen into `items.jsonl` once (after setup) and read back by byte offset, so only
the ids and offsets of a 100,000-item job live in memory. `metadata.json` is written and read
back only here: strictly to run the job, leniently to list it.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from prodigy.errors import StateError
from prodigy.events import now_iso
from prodigy.items import WorkItem
from prodigy.journal import Journal, JournalContents, read_journal
from prodigy.state import Counts, JobState, Phase, Record, counts, phase, replay
from prodigy.store import JobDir, atomic_write, create_job_dir


class _ItemLine(msgspec.Struct, array_like=True):
    id: str
    data: msgspec.Raw


_item_encoder = msgspec.json.Encoder()
_item_decoder = msgspec.json.Decoder(_ItemLine)


def write_items(job: JobDir, items: list[WorkItem]) -> None:
    """Freeze the job's items: one `[id, data]` line per item, in index order."""
    buf = bytearray()
    for item in items:
        buf += _item_encoder.encode([item.id, item.data])
        buf += b"\n"
    atomic_write(job.items, bytes(buf))


class ItemsFile:
    """Random access to the frozen items."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: list[str] = []
        self._offsets = array("Q")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StateError(f"The job's item file {path} is missing.") from None
        offset = 0
        for line in data.split(b"\n"):
            if line:
                try:
                    self.ids.append(_item_decoder.decode(line).id)
                except msgspec.DecodeError as exc:
                    raise StateError(f"The job's item file {path} is damaged ({exc}).") from None
                self._offsets.append(offset)
            offset += len(line) + 1
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, index: int) -> WorkItem:
        start = self._offsets[index]
        end = self._offsets[index + 1] if index + 1 < len(self._offsets) else None
        length = (end - start) if end is not None else os.fstat(self._fd).st_size - start
        line = _item_decoder.decode(os.pread(self._fd, length, start).rstrip(b"\n"))
        return WorkItem(index=index, id=line.id, data=msgspec.json.decode(line.data))

    def close(self) -> None:
        os.close(self._fd)


def load_state(job: JobDir, upto_version: int | None = None) -> tuple[JobState, JournalContents]:
    contents = read_journal(job.journal)
    return replay(contents.records, upto_version), contents


def append_records(
    job: JobDir, contents: JournalContents, records: list[Record]
) -> tuple[JobState, JournalContents]:
    """Durably append records outside a run (a rollback, a requeue), then rebuild the state.

    `contents` is what was read before: its intact length tells where a torn tail starts.
    """
    journal = Journal(job.journal, contents.valid_bytes)
    try:
        if records:
            journal.append_now(records)
    finally:
        journal.close()
    return load_state(job)


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
    meta: JobMetadata, state: JobState, status: str, pid: int | None = None
) -> MetadataDocument:
    c = counts(state)
    spent = state.spent
    return MetadataDocument(
        **msgspec.structs.asdict(meta),
        updated_at=now_iso(),
        status=status,
        phase=phase(state, meta.reduce_steps),
        version=state.version,
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
    """The identity a run needs; a missing field (or one of the wrong type) is a StateError."""
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
    except msgspec.ValidationError as exc:
        raise StateError(
            f"{job.metadata} is missing a field or has one of the wrong type ({exc})."
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
