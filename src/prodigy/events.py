"""The per-job events log: an append-only JSON-lines history a person can grep or follow.

Each event is one line written with a single `write` on an O_APPEND descriptor, so concurrent
writers (a run and a DLQ reprocess, say) never tear or weld lines. Events are a report, not the
source of truth: the journal is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypedDict, get_args

import msgspec

from prodigy.errors import StateError
from prodigy.state import Counts

EventType = Literal[
    "job_started",
    "job_resumed",
    "setup_started",
    "setup_completed",
    "map_started",
    "agent_started",
    "agent_completed",
    "agent_failed",
    "agent_retrying",
    "duplicate_result",
    "dlq_item_added",
    "dlq_item_removed",
    "dlq_reprocess_started",
    "checkpoint_created",
    "reduce_started",
    "reduce_step_completed",
    "reduce_completed",
    "job_completed",
    "job_failed",
    "job_stopped",
    "job_interrupted",
    "checkpoint_restored",
    "worktree_created",
    "worktree_removed",
    "agent_merged",
    "merge_conflict",
    "job_merged",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
END_EVENTS = frozenset({"job_completed", "job_failed", "job_stopped", "job_interrupted"})


# The current second, formatted once: `now_iso` runs a few times per agent, and formatting a
# local time with its offset costs more than all the rest of an event.
_second: tuple[int, str, str] = (-1, "", "")


def now_iso() -> str:
    """The local time to the millisecond with its offset: `2026-11-30T07:22:03.719+01:00`."""
    global _second
    now = time.time()
    second = int(now)
    cached = _second
    if cached[0] != second:
        text = datetime.fromtimestamp(second).astimezone().isoformat()
        cached = _second = (second, text[:19], text[19:])
    return f"{cached[1]}.{min(int((now - second) * 1000), 999):03d}{cached[2]}"


# ---- the events --------------------------------------------------------------------------------


class Event(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    """One line of the log: its `type` (the tag), when, which job; the rest per type.
    Fields left at None are not written. An event about one item (it has an `item_id`) does
    not name the job: it is the log's own job, and those lines are most of the log
    (`with_job_id` puts it back for a reader's JSON)."""

    ts: str = ""
    job_id: str = ""


class EventCounts(TypedDict):
    """The counts a job-level event carries, under the same names in every such event."""

    total: int
    succeeded: int
    failed: int
    dead_lettered: int
    skipped: int
    remaining: int


def count_fields(c: Counts) -> EventCounts:
    return EventCounts(
        total=c.total,
        succeeded=c.succeeded,
        failed=c.failed,
        dead_lettered=c.dead,
        skipped=c.skipped,
        remaining=c.remaining,
    )


class _WithCounts(Event, kw_only=True):
    total: int
    succeeded: int
    failed: int
    dead_lettered: int
    skipped: int
    remaining: int


class JobStarted(Event, tag="job_started"):
    workflow: str
    name: str


class JobResumed(_WithCounts, tag="job_resumed"):
    workflow: str
    version: int


class DlqReprocessStarted(Event, tag="dlq_reprocess_started"):
    workflow: str
    items: int


class SetupStarted(Event, tag="setup_started"):
    steps: int


class SetupDone(Event, tag="setup_completed"):
    outputs: list[str]


class MapStarted(Event, tag="map_started"):
    items: int
    max_parallel: int


class AgentStarted(Event, tag="agent_started"):
    item_id: str
    attempt: int


class AgentCompleted(Event, tag="agent_completed"):
    item_id: str
    attempt: int
    duration_s: float
    version: int
    cost_usd: float | None = None


class AgentFailed(Event, tag="agent_failed"):
    item_id: str
    attempt: int
    duration_s: float
    version: int
    error: str | None = None
    error_kind: str | None = None
    exit_code: int | None = None


class AgentRetrying(Event, tag="agent_retrying"):
    item_id: str
    attempt: int
    delay_s: float


class DuplicateResult(Event, tag="duplicate_result"):
    item_id: str
    attempt: int
    ok: bool


class DlqItemAdded(Event, tag="dlq_item_added"):
    item_id: str
    attempts: int
    error: str | None = None


class DlqItemRemoved(Event, tag="dlq_item_removed"):
    item_id: str
    attempts: int


class CheckpointCreated(Event, tag="checkpoint_created"):
    version: int


class CheckpointRestored(Event, tag="checkpoint_restored"):
    version: int
    new_version: int


class ReduceStarted(Event, tag="reduce_started"):
    steps: int
    first_step: int


class ReduceStepDone(Event, tag="reduce_step_completed"):
    step: int


class ReduceCompleted(Event, tag="reduce_completed"):
    pass


class JobCompleted(_WithCounts, tag="job_completed"):
    cost_usd: float | None = None


class JobFailed(Event, tag="job_failed"):
    reason: str


class JobStopped(_WithCounts, tag="job_stopped"):
    reason: str


class JobInterrupted(_WithCounts, tag="job_interrupted"):
    version: int


class WorktreeCreated(Event, tag="worktree_created"):
    item_id: str
    attempt: int
    path: str
    branch: str


class WorktreeRemoved(Event, tag="worktree_removed"):
    path: str
    branch: str


class AgentMerged(Event, tag="agent_merged"):
    item_id: str
    attempt: int
    commit: str


class MergeConflict(Event, tag="merge_conflict"):
    item_id: str
    attempt: int
    files: list[str]


class JobMerged(Event, tag="job_merged"):
    branch: str
    into: str
    commit: str


_encoder = msgspec.json.Encoder()


class EventLog:
    """Appends events to one job's log.

    A write that fails (a full disk, a read-only file system) is never silent: it becomes a
    `StateError` naming the log, raised from `emit`, or, during a run, handed to `on_error`,
    which stops the run like a journal failure would (a log that quietly lost lines would
    mislead whoever reads it). After a failure the log takes no more lines in this process,
    so it ends where the disk failed instead of having a hole in the middle.
    """

    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self.job_id = job_id
        self.on_error: Callable[[StateError], None] | None = None
        self.error: StateError | None = None
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            _drop_torn_tail(self._fd)
        except OSError as exc:
            raise self._failure(exc) from None

    def emit(self, event: Event) -> None:
        if self.error is not None:
            return
        event.ts = now_iso()
        if "item_id" not in event.__struct_fields__:
            event.job_id = self.job_id
        try:
            _append_line(self._fd, _encoder.encode(event) + b"\n")
        except OSError as exc:
            self.error = self._failure(exc)
            if self.on_error is None:
                raise self.error from None
            self.on_error(self.error)

    def _failure(self, exc: OSError) -> StateError:
        return StateError(
            f"Could not write the events log {self.path}: {exc.strerror or exc}.",
            hint="Free some space (or fix the permissions), then go on with "
            f"`prodigy resume-job {self.job_id}`.",
        )

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def with_job_id(event: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The event with its job named, where the line left it out, after `ts` as in the lines
    that name it."""
    if "job_id" in event:
        return event
    named: dict[str, Any] = {}
    for key, value in event.items():
        named[key] = value
        if key == "ts":
            named["job_id"] = job_id
    if "job_id" not in named:
        named["job_id"] = job_id
    return named


def _append_line(fd: int, line: bytes) -> None:
    """One write of a whole line; a write the disk cuts short is taken back (when no other
    writer appended since), so the log never holds half a line for the next one to weld to."""
    written = os.write(fd, line)  # nothing written when it raises
    if written < len(line):
        with contextlib.suppress(OSError):
            end = os.fstat(fd).st_size
            # Still the file's end: no other writer appended since.
            if os.pread(fd, written, end - written) == line[:written]:
                os.ftruncate(fd, end - written)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _drop_torn_tail(fd: int) -> None:
    """Cut off half a line left at the end (the log is not fsync'd, so a power loss can leave
    one): the next event must start a line of its own, not weld onto the fragment."""
    end = os.fstat(fd).st_size
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return
    keep = 0
    while end > 0:
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    os.ftruncate(fd, keep)


class TornLine(msgspec.Struct, frozen=True):
    """A line of the log that is not valid JSON (being written, or damaged)."""

    line_number: int
    text: str


def read_events(path: Path) -> Iterator[dict[str, Any] | TornLine]:
    """Every event in the log, in order; a damaged line is yielded as TornLine."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = msgspec.json.decode(line)
        except msgspec.DecodeError:
            yield TornLine(number, line.decode("utf-8", "replace"))
            continue
        if isinstance(event, dict):
            yield event
        else:
            yield TornLine(number, line.decode("utf-8", "replace"))
