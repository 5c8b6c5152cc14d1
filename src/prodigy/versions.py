"""A job's versions as the commands read them back: the checkpoint files on disk with their
progress, any version's checkpoint rebuilt from the journal (writes are skipped under load
and old files pruned, so most versions have no file), and the job's identity rebuilt from a
checkpoint file when metadata.json is damaged. Read-only; nothing here takes the lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from prodigy.checkpoint import (
    CheckpointDocument,
    JobInfo,
    checkpoint_document,
    decode_checkpoint_head,
)
from prodigy.errors import StateError
from prodigy.job import ItemsFile, JobMetadata, load_state, read_job_metadata
from prodigy.store import JobDir, find_repository


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
    """The checkpoint of `version` as it would have been written, rebuilt from the journal."""
    state = load_state(job, upto_version=version)
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
        ids = list(items.ids)
        items.close()
    return checkpoint_document(state, info, lambda i: ids[i] if i < len(ids) else f"#{i}")


class _StoredWorkflow(msgspec.Struct):
    path: str
    hash: str
    config: dict[str, Any]


class _StoredReduce(msgspec.Struct):
    steps_total: int


class _StoredIdentity(msgspec.Struct):
    """What every checkpoint file repeats about the job it belongs to."""

    job_id: str
    created_at: str
    workflow: _StoredWorkflow
    workdir: str
    reduce: _StoredReduce


_identity_decoder = msgspec.json.Decoder(_StoredIdentity)


def rebuild_metadata(job: JobDir) -> tuple[JobMetadata, int]:
    """The job's identity (what metadata.json holds for a run) rebuilt from its newest readable
    checkpoint file, and that file's version. Refused for a job under worktree isolation: its
    base commit and branch are written nowhere but metadata.json."""
    for version in job.checkpoint_versions():
        try:
            stored = _identity_decoder.decode(job.checkpoint(version).read_bytes())
        except (OSError, msgspec.DecodeError):
            continue
        if stored.job_id == job.job_id:
            return _identity(job, stored), version
    raise StateError(
        f"The metadata of job {job.job_id} cannot be rebuilt: no readable checkpoint file of "
        f"the job is left in {job.path} to take its workflow from."
    )


def _identity(job: JobDir, stored: _StoredIdentity) -> JobMetadata:
    config = stored.workflow.config
    map_part = config.get("map")
    isolation = map_part.get("isolation") if isinstance(map_part, dict) else None
    if isolation is None:
        # Decided when the job was created: worktree inside a git repository (SPEC-NOTES).
        isolation = "worktree" if find_repository(Path(stored.workdir)).git else "none"
    if isolation != "none":
        raise StateError(
            f"The metadata of job {job.job_id} cannot be rebuilt: the job runs under worktree "
            "isolation, and its base commit and branch are recorded only in metadata.json.",
            hint="Restore the file from a backup, or run the workflow again as a new job.",
        )
    name = config.get("name")
    return JobMetadata(
        job_id=job.job_id,
        repo=job.repo,
        workdir=stored.workdir,
        workflow_path=stored.workflow.path,
        workflow_hash=stored.workflow.hash,
        workflow_name=name if isinstance(name, str) else "",
        reduce_steps=stored.reduce.steps_total,
        created_at=stored.created_at,
        isolation="none",
    )
