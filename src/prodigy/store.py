"""The job directory: where each job's files live, how they are named, written and found.

Layout: $PRODIGY_HOME/state/{repo}/mapreduce/jobs/{job_id}/ holding the journal, checkpoints,
`latest.json`, `metadata.json`, the frozen items, the events log and the lock. Every file that
is replaced is written atomically (temporary file, fsync, rename, fsync of the directory). What
is inside the files is for the modules that own them (`job`, `journal`, `checkpoint`, ...).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from prodigy import test_pause
from prodigy.errors import JobNotFound, ProdigyError, StateError

JOB_ID_PATTERN = re.compile(r"^mapreduce-\d{8}-\d{6}(-\d+)?$")
JOB_ID_TIME_FORMAT = "mapreduce-%Y%m%d-%H%M%S"  # then `-2`, `-3`... for ids taken that second
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-v(\d+)\.json$")


def prodigy_home() -> Path:
    return Path(os.environ.get("PRODIGY_HOME") or Path.home() / ".prodigy")


def jobs_root(repo: str) -> Path:
    return prodigy_home() / "state" / repo / "mapreduce" / "jobs"


@dataclass(frozen=True)
class Repository:
    """Where a workflow runs: the git top level (or the plain directory) and its name."""

    root: Path
    name: str
    git: bool = False  # a git work tree (worktree isolation is possible)


def find_repository(cwd: Path) -> Repository:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        root = Path(out.stdout.strip())
        return Repository(root, root.name, git=True)
    # Outside git, the directory `cook` ran in is the job's working directory.
    return Repository(cwd.resolve(), cwd.resolve().name)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _AtomicFile:
    """The open temporary file behind `atomic_writer`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[_AtomicFile]:
    """Write `path` in pieces so that a reader sees the old file or the whole new one, never
    a mix: a temporary file, fsync'd, renamed over it, and the directory fsync'd."""
    # Unique per thread too: the background checkpoint writer and the engine both write
    # metadata.json.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        yield _AtomicFile(fd)
        os.fsync(fd)
        if test_pause.ACTIVE and CHECKPOINT_PATTERN.match(path.name):
            test_pause.reached("checkpoint")  # test-only: the kill soak strikes before the rename
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a reader sees the old file or the new one, never a mix."""
    with atomic_writer(path) as out:
        out.write(data)


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n")


def read_json(path: Path) -> Any:
    try:
        return msgspec.json.decode(path.read_bytes())
    except msgspec.DecodeError as exc:
        raise StateError(f"{path} is not valid JSON ({exc}).") from None


class JobDir:
    """One job's directory and the names of the files in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.job_id = path.name
        self.repo = path.parent.parent.parent.name

    def drop_stray_temporaries(self) -> None:
        """Remove temporary files that writes cut short by a crash left behind (`.NAME.PID.
        THREAD.tmp`). Only for the lock's holder: nobody else writes here meanwhile."""
        mine = f".{os.getpid()}."
        for stray in self.path.glob(".*.tmp"):
            if mine not in stray.name:
                stray.unlink(missing_ok=True)

    @property
    def journal(self) -> Path:
        return self.path / "journal.jsonl"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def metadata(self) -> Path:
        return self.path / "metadata.json"

    @property
    def items(self) -> Path:
        return self.path / "items.jsonl"

    @property
    def lock(self) -> Path:
        return self.path / "lock"

    @property
    def latest(self) -> Path:
        return self.path / "latest.json"

    @property
    def scratch(self) -> Path:
        return self.path / "tmp"

    def checkpoint(self, version: int) -> Path:
        return self.path / f"checkpoint-v{version}.json"

    def checkpoint_versions(self) -> list[int]:
        """Versions with a checkpoint file on disk, newest first."""
        found = []
        for entry in os.listdir(self.path):
            m = CHECKPOINT_PATTERN.match(entry)
            if m:
                found.append(int(m.group(1)))
        return sorted(found, reverse=True)

    def latest_version(self) -> int | None:
        """The version `latest.json` points to, or None when there is no link yet."""
        try:
            target = os.readlink(self.latest)
        except OSError:
            return None
        m = CHECKPOINT_PATTERN.match(os.path.basename(target))
        return int(m.group(1)) if m else None

    def latest_problem(self, expected: bool = False) -> str | None:
        """What is wrong with `latest.json`, or None: a link whose checkpoint file is gone, or
        no link while checkpoint files exist (or `expected`: the journal says one was written).
        A crash never leaves either (the link is replaced after its file is written, and older
        files are removed after that), so both are damage; the journal still holds the state."""
        try:
            target = os.readlink(self.latest)
        except FileNotFoundError:
            try:
                on_disk = self.checkpoint_versions()
            except OSError:
                on_disk = []
            if not on_disk and not expected:
                return None
            listing = ", ".join(f"v{v}" for v in on_disk) or "none"
            return f"{self.latest} is missing (checkpoint files on disk: {listing})"
        except OSError:
            return None  # a plain file, not a link: read as it is
        if not (self.path / target).exists():
            return f"{self.latest} points to {target}, which does not exist"
        return None

    def read_metadata(self) -> dict[str, Any]:
        data = read_json(self.metadata)
        if not isinstance(data, dict):
            raise StateError(f"{self.metadata} does not hold a JSON object.")
        return data

    def write_metadata(self, document: msgspec.Struct) -> None:
        write_json(self.metadata, document)

    def disk_usage(self) -> int:
        """Bytes used by the files in the directory (symlinks not followed)."""
        return directory_size(self.path)


def directory_size(path: Path) -> int:
    """Bytes used by the files under `path` (symlinks not followed; 0 if it is gone)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def time_from_job_id(job_id: str) -> datetime | None:
    """When the job was created, read from its id (for a job whose metadata is lost)."""
    try:
        stamp = job_id[len("mapreduce-") :][:15]
        return datetime.strptime(stamp, JOB_ID_TIME_FORMAT.removeprefix("mapreduce-")).astimezone()
    except ValueError:
        return None


def create_job_dir(repo: str) -> JobDir:
    """Make a new job directory with a fresh id; `mkdir` makes the choice race-free."""
    root = jobs_root(repo)
    try:
        root.mkdir(parents=True, exist_ok=True)
        # A new directory's name is durable only once its parent is fsync'd: without this, a
        # power loss can take the whole job (journal and all) with it, whatever was fsync'd
        # inside. Every level, since an earlier run may have made them without an fsync.
        for level in (root, *root.parents):
            fsync_dir(level)
            if level == prodigy_home().parent:
                break
        return _reserve_job_dir(root)
    except OSError as exc:
        raise ProdigyError(
            f"Cannot create the state directory {root}: {exc.strerror}.",
            hint="Set PRODIGY_HOME to a writable directory.",
        ) from None


def _reserve_job_dir(root: Path) -> JobDir:
    # Ids are reserved in one namespace for all repositories, since `find_job` looks an id up
    # across all of them; `mkdir` makes the reservation atomic between processes.
    ids = prodigy_home() / "ids"
    ids.mkdir(parents=True, exist_ok=True)
    base = time.strftime(JOB_ID_TIME_FORMAT)
    suffix = 1
    while True:
        job_id = base if suffix == 1 else f"{base}-{suffix}"
        try:
            (ids / job_id).mkdir()
            (root / job_id).mkdir()
        except FileExistsError:
            suffix += 1
            continue
        fsync_dir(root)
        return JobDir(root / job_id)


def write_checkpoint(job: JobDir, version: int, data: bytes, keep: int) -> None:
    """Write checkpoint-v{version}.json, point latest.json at it, keep the newest `keep` files."""
    target = job.checkpoint(version)
    atomic_write(target, data)
    link_tmp = job.path / f".latest.{os.getpid()}.{threading.get_ident()}.tmp"
    link_tmp.unlink(missing_ok=True)
    os.symlink(target.name, link_tmp)
    os.replace(link_tmp, job.latest)
    fsync_dir(job.path)
    for old in job.checkpoint_versions()[keep:]:
        if old != version:
            job.checkpoint(old).unlink(missing_ok=True)


def find_job(job_id: str) -> JobDir:
    """Look a job id up across every repository under $PRODIGY_HOME."""
    state = prodigy_home() / "state"
    if state.is_dir() and "/" not in job_id and job_id not in ("", ".", ".."):
        for repo in sorted(state.iterdir()):
            candidate = repo / "mapreduce" / "jobs" / job_id
            if candidate.is_dir():
                return JobDir(candidate)
    raise JobNotFound(
        f"Checkpoint not found: no job {job_id!r} under {state}.",
        hint="Check the id with `prodigy sessions show` (the job may have been cleaned up).",
    )


def list_jobs(repo: str | None = None) -> list[JobDir]:
    """Jobs of one repository (or of all), oldest first by id."""
    state = prodigy_home() / "state"
    if not state.is_dir():
        return []
    repos = [state / repo] if repo is not None else sorted(state.iterdir())
    jobs: list[JobDir] = []
    for r in repos:
        root = r / "mapreduce" / "jobs"
        if root.is_dir():
            jobs.extend(JobDir(p) for p in root.iterdir() if JOB_ID_PATTERN.match(p.name))
    return sorted(jobs, key=lambda j: _id_sort_key(j.job_id))


def _id_sort_key(job_id: str) -> tuple[str, int]:
    parts = job_id.split("-")
    return ("-".join(parts[:3]), int(parts[3]) if len(parts) > 3 else 1)
