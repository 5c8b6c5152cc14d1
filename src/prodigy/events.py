"""The per-job events log: an append-only JSON-lines history a person can grep or follow.

Each event is one line written with a single `write` on an O_APPEND descriptor, so concurrent
writers (a run and a DLQ reprocess, say) never tear or weld lines. Events are a report, not the
source of truth: the journal is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec

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
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
END_EVENTS = frozenset({"job_completed", "job_failed", "job_stopped", "job_interrupted"})

_encoder = msgspec.json.Encoder()


def count_fields(c: Counts) -> dict[str, int]:
    """The counts an event carries, under the same names in every event that has them."""
    return {
        "total": c.total,
        "succeeded": c.succeeded,
        "failed": c.failed,
        "dead_lettered": c.dead,
        "skipped": c.skipped,
        "remaining": c.remaining,
    }


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


class EventLog:
    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self.job_id = job_id
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def emit(self, type_: EventType, **fields: Any) -> None:
        event = {"ts": now_iso(), "type": type_, "job_id": self.job_id}
        event.update({k: v for k, v in fields.items() if v is not None})
        os.write(self._fd, _encoder.encode(event) + b"\n")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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
