"""What a person wants to know about a stored job, read without changing or locking anything.

`summarize(job)` combines metadata.json (identity, times), the journal (counts, phase, cost: the
source of truth) and the lock (is it running, or did it crash?). A damaged job never raises:
what could not be read is listed in `JobSummary.problems` and the rest is filled in as best it can.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from prodigy.checkpoint import (
    CheckpointDocument,
    JobInfo,
    checkpoint_document,
    decode_checkpoint_head,
)
from prodigy.errors import StateError
from prodigy.job import ItemsFile, load_state, read_job_metadata
from prodigy.lock import LockHolder, is_locked
from prodigy.state import Counts, JobState, counts, phase
from prodigy.store import JobDir

END_STATUSES = ("completed", "failed", "stopped", "interrupted")
CountsSource = Literal["journal", "metadata", "none"]


@dataclass(frozen=True)
class JobSummary:
    job_id: str
    repo: str
    state_dir: Path
    workflow_name: str
    workflow_path: str
    workdir: str
    # running | completed | failed | stopped | interrupted | unknown
    status: str
    crashed: bool  # metadata says running but no live process holds the lock
    holder: LockHolder | None
    phase: str
    counts: Counts
    counts_source: CountsSource
    version: int | None  # the journal's version: every version up to it can be restored
    checkpoint_versions: tuple[int, ...]  # files on disk, newest first
    latest_checkpoint: int | None  # the version latest.json points to
    started_at: datetime | None
    updated_at: datetime | None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    problems: tuple[str, ...]

    @property
    def finished(self) -> bool:
        """Completed, with or without items in the DLQ; anything else could still be resumed."""
        return self.status == "completed"

    @property
    def running(self) -> bool:
        return self.holder is not None

    @property
    def status_label(self) -> str:
        if self.crashed:
            return "interrupted (crashed)"
        if self.holder is not None and self.holder.purpose not in ("cook", "resume", "run"):
            return f"running ({self.holder.purpose})"
        return self.status

    def age(self, now: datetime | None = None) -> float:
        """Seconds since the last update (since the directory changed, if that is unknown)."""
        current = now or datetime.now().astimezone()
        if self.updated_at is not None:
            return (current - self.updated_at).total_seconds()
        try:
            mtime = self.state_dir.stat().st_mtime
        except OSError:
            return 0.0
        return current.timestamp() - mtime


@dataclass(frozen=True)
class CheckpointFile:
    """One checkpoint-v{N}.json on disk, with its progress or why it cannot be read."""

    version: int
    path: Path
    succeeded: int | None = None
    total: int | None = None
    problem: str | None = None


def read_checkpoint_file(job: JobDir, version: int) -> CheckpointFile:
    path = job.checkpoint(version)
    try:
        head = decode_checkpoint_head(path.read_bytes())
    except FileNotFoundError:
        return CheckpointFile(version, path, problem="removed while being read")
    except OSError as exc:
        return CheckpointFile(version, path, problem=exc.strerror or str(exc))
    except msgspec.ValidationError as exc:
        return CheckpointFile(version, path, problem=f"not a prodigy checkpoint: {exc}")
    except msgspec.DecodeError as exc:
        return CheckpointFile(version, path, problem=f"not valid JSON: {exc}")
    return CheckpointFile(version, path, head.counts.succeeded, head.counts.total)


def checkpoint_files(job: JobDir) -> list[CheckpointFile]:
    """Every checkpoint file of the job, newest first."""
    try:
        versions = job.checkpoint_versions()
    except OSError:
        return []
    return [read_checkpoint_file(job, v) for v in versions]


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # A naive time was written in local time; make it comparable with aware ones.
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


def _time_from_id(job_id: str) -> datetime | None:
    try:
        return datetime.strptime(job_id[len("mapreduce-") :][:15], "%Y%m%d-%H%M%S").astimezone()
    except ValueError:
        return None


def format_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _read_metadata(job: JobDir) -> tuple[dict[str, Any], str | None]:
    try:
        return job.read_metadata(), None
    except FileNotFoundError:
        return {}, f"{job.metadata} is missing"
    except StateError as exc:
        return {}, exc.message.rstrip(".")
    except OSError as exc:
        return {}, f"{job.metadata} cannot be read ({exc.strerror or exc})"


def _read_state(job: JobDir) -> tuple[JobState | None, str | None]:
    try:
        state, _ = load_state(job)
    except StateError as exc:
        return None, exc.message.rstrip(".")
    except OSError as exc:
        return None, f"{job.journal} cannot be read ({exc.strerror or exc})"
    except (ValueError, IndexError) as exc:
        return None, f"the journal {job.journal} does not replay ({exc})"
    return state, None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _counts_from_metadata(meta: dict[str, Any]) -> Counts:
    stored = meta.get("counts")
    if not isinstance(stored, dict):
        return Counts(0, 0, 0, 0, 0, 0)
    failed = _int(stored.get("failed"))
    dead = _int(stored.get("dead_lettered"))
    # metadata folds retriable items into both "failed" and "pending"; split them back out.
    retriable = max(0, failed - dead)
    return Counts(
        total=_int(stored.get("total")),
        pending=max(0, _int(stored.get("pending")) - retriable),
        succeeded=_int(stored.get("succeeded")),
        retriable=retriable,
        dead=dead,
        skipped=0,
    )


def _status(meta_status: object, ended: str | None, holder: LockHolder | None) -> tuple[str, bool]:
    """The job's status and whether it crashed, trusting a live lock, then the journal."""
    if holder is not None:
        return "running", False
    if ended == "completed":
        # The journal records the end before metadata.json is rewritten: a crash in between
        # still leaves a completed job.
        return "completed", False
    if meta_status == "running":
        return "interrupted", True
    if isinstance(meta_status, str) and meta_status in END_STATUSES:
        return meta_status, False
    if ended is not None:
        return ended, False
    return "unknown", False


def summarize(job: JobDir, replay_journal: bool = True) -> JobSummary:
    """Everything the listings show about one job. `replay_journal=False` trusts metadata.json
    for counts (cheaper, and enough to decide whether a job is finished)."""
    problems: list[str] = []
    meta, problem = _read_metadata(job)
    if problem:
        problems.append(problem)
    state: JobState | None = None
    if replay_journal:
        state, problem = _read_state(job)
        if problem:
            problems.append(problem)
    try:
        holder = is_locked(job.lock)
    except OSError:
        holder = None
    if holder is not None and (holder.pid, holder.host) == (os.getpid(), socket.gethostname()):
        # This process holds the lock (a clean deciding under it): nobody else is running it.
        holder = None
    status, crashed = _status(meta.get("status"), state.ended if state else None, holder)

    source: CountsSource
    if state is not None:
        job_counts = counts(state)
        source = "journal"
        job_phase: str = phase(state, _int(meta.get("reduce_steps")))
        cost = (state.spent.cost_usd, state.spent.input_tokens, state.spent.output_tokens)
        version: int | None = state.version
    else:
        job_counts = _counts_from_metadata(meta)
        source = "metadata" if meta else "none"
        job_phase = str(meta.get("phase") or "unknown")
        raw_cost = meta.get("cost")
        stored_cost: dict[str, Any] = raw_cost if isinstance(raw_cost, dict) else {}
        usd = stored_cost.get("usd")
        cost = (
            float(usd) if isinstance(usd, int | float) else 0.0,
            _int(stored_cost.get("input_tokens")),
            _int(stored_cost.get("output_tokens")),
        )
        meta_version = meta.get("version")
        version = meta_version if isinstance(meta_version, int) else None

    try:
        on_disk = tuple(job.checkpoint_versions())
    except OSError:
        on_disk = ()
    return JobSummary(
        job_id=job.job_id,
        repo=str(meta.get("repo") or job.repo),
        state_dir=job.path,
        workflow_name=str(meta.get("workflow_name") or ""),
        workflow_path=str(meta.get("workflow_path") or ""),
        workdir=str(meta.get("workdir") or ""),
        status=status,
        crashed=crashed,
        holder=holder,
        phase=job_phase,
        counts=job_counts,
        counts_source=source,
        version=version,
        checkpoint_versions=on_disk,
        latest_checkpoint=job.latest_version(),
        started_at=parse_time(meta.get("created_at")) or _time_from_id(job.job_id),
        updated_at=parse_time(meta.get("updated_at")),
        cost_usd=cost[0],
        input_tokens=cost[1],
        output_tokens=cost[2],
        problems=tuple(problems),
    )


def directory_size(path: Path) -> int:
    """Bytes used by the files under `path` (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def failed_split(c: Counts) -> str:
    """`10 in DLQ, 10 retriable`: where the failed items stand."""
    parts = [f"{c.dead} in DLQ", f"{c.retriable} retriable"]
    if c.skipped:
        parts.append(f"{c.skipped} skipped")
    return ", ".join(parts)


def describe_failed(c: Counts) -> str:
    """`20 (10 in DLQ, 10 retriable)`, the wording of the guide's `checkpoints list`."""
    return f"{c.failed} ({failed_split(c)})"


class _WorkflowPart(msgspec.Struct):
    workflow: dict[str, Any]


_workflow_decoder = msgspec.json.Decoder(_WorkflowPart)


def _stored_workflow_config(job: JobDir) -> dict[str, Any] | None:
    """The workflow configuration every checkpoint repeats, from the newest readable file."""
    for version in job.checkpoint_versions():
        try:
            part = _workflow_decoder.decode(job.checkpoint(version).read_bytes())
        except (OSError, msgspec.DecodeError):
            continue
        config = part.workflow.get("config")
        if isinstance(config, dict):
            return config
    return None


def rebuild_checkpoint_document(job: JobDir, version: int) -> CheckpointDocument:
    """The checkpoint of `version` as it would have been written, rebuilt from the journal
    (versions may have no file: writes are skipped under load and old files are pruned)."""
    state, _ = load_state(job, upto_version=version)
    meta = read_job_metadata(job)
    config = _stored_workflow_config(job)
    if config is None:
        raise StateError(
            f"Checkpoint v{version} of job {job.job_id} cannot be rebuilt: no readable "
            "checkpoint file is left to take the workflow configuration from."
        )
    info = JobInfo(
        job_id=meta.job_id,
        workflow_path=meta.workflow_path,
        workflow_hash=meta.workflow_hash,
        workflow_config=config,
        workdir=meta.workdir,
        reduce_steps=meta.reduce_steps,
        created_at=meta.created_at,
    )
    ids: list[str] = []
    if state.item_count is not None:
        items = ItemsFile(job.items)
        ids = items.ids
        items.close()
    return checkpoint_document(state, info, ids)
