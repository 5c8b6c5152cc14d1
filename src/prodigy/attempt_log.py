"""Agent attempts as the events log tells them: when each started and ended, in which slot.

`AttemptLog.add_line` folds one line of `events.jsonl` into the log, so a reader can follow a
growing log at O(new lines). The journal knows outcomes but not times; the events know both,
so this is where the timeline, the throughput and the recent events come from. Only the
latest run's attempts are kept in full (in compact arrays): the page shows that run, and a
100,000-item job's history stays a few megabytes.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec

from prodigy.events import END_EVENTS

RUN_STARTS = frozenset({"job_started", "job_resumed", "dlq_reprocess_started"})
RECENT_EVENTS = 40

AttemptOutcome = Literal["running", "succeeded", "failed", "retried", "interrupted"]
# Stored as one byte per attempt; the order is the codes' values.
OUTCOMES: tuple[AttemptOutcome, ...] = ("running", "succeeded", "failed", "retried", "interrupted")
RUNNING, SUCCEEDED, FAILED, RETRIED, INTERRUPTED = range(len(OUTCOMES))


class LogEvent(msgspec.Struct):
    """The fields of an event line that the attempt log reads (the rest are ignored)."""

    type: str = ""
    ts: str = ""
    item_id: str | None = None
    attempt: int | None = None
    duration_s: float | None = None
    error: str | None = None
    error_kind: str | None = None
    cost_usd: float | None = None
    max_parallel: int | None = None


_decoder = msgspec.json.Decoder(LogEvent)


@dataclass
class Run:
    """One process's go at the job: `cook`, a resume, or a DLQ reprocess."""

    kind: str  # the event that started it
    started: float  # epoch seconds
    ended: float | None = None
    end_type: str | None = None
    max_parallel: int | None = None


_second_cache: dict[str, float] = {}


def parse_ts(ts: str) -> float | None:
    """Epoch seconds of an event's `ts`. Events are written as `...T12:00:01.234+00:00`: the
    moment of each whole second is parsed once and the milliseconds added, which makes
    reading a 200,000-line log several times faster than parsing every stamp."""
    if len(ts) == 29 and ts[19] == "." and ts[20:23].isdigit():
        key = ts[:19] + ts[23:]
        second = _second_cache.get(key)
        if second is None:
            if len(_second_cache) > 100_000:
                _second_cache.clear()
            second = _parse_slow(key)
            if second is None:
                return None
            _second_cache[key] = second
        return second + int(ts[20:23]) / 1000
    return _parse_slow(ts)


def _parse_slow(ts: str) -> float | None:
    try:
        return datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None


class AttemptLog:
    """The fold of the events log: runs, the latest run's attempts, the newest lines."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.recent: deque[bytes] = deque(maxlen=RECENT_EVENTS)
        self.torn_lines = 0
        self.last_ts: float | None = None
        self._reset_attempts()

    def _reset_attempts(self) -> None:
        # One entry per attempt of the latest run, in start order.
        self.item_ids: list[str] = []
        self.attempt_numbers = array("I")
        self.starts = array("d")
        self.ends = array("d")  # nan while running
        self.durations = array("d")  # the agent's own time, nan while running
        self.lanes = array("H")
        self.outcomes = bytearray()
        self.errors: dict[int, str] = {}
        self.costs: dict[int, float] = {}
        self._open: dict[tuple[str, int], int] = {}
        self._last_failed: dict[str, int] = {}
        self._free_lanes: list[int] = []
        self.lane_count = 0

    def __len__(self) -> int:
        return len(self.outcomes)

    @property
    def run(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    @property
    def running(self) -> int:
        return len(self._open)

    def outcome(self, position: int) -> AttemptOutcome:
        return OUTCOMES[self.outcomes[position]]

    def add_lines(self, data: bytes) -> None:
        """Fold complete lines (each ending in a newline) into the log."""
        try:
            events = _decoder.decode_lines(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            # A damaged line somewhere: go line by line so only that one is lost.
            for line in data.splitlines():
                self.add_line(line)
            return
        for event in events:
            self._add_timed(event)
        lines = data.splitlines()
        self.recent.extend(line for line in lines[-RECENT_EVENTS:] if line.strip())

    def add_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            event = _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.torn_lines += 1
            return
        self.recent.append(raw)
        self._add_timed(event)

    def _add_timed(self, event: LogEvent) -> None:
        when = parse_ts(event.ts)
        if when is None:
            when = self.last_ts if self.last_ts is not None else 0.0
        if self.last_ts is None or when > self.last_ts:
            self.last_ts = when
        self.add(event, when)

    def add(self, event: LogEvent, when: float) -> None:
        kind = event.type
        if kind in RUN_STARTS:
            self._close_run(when)
            self.runs.append(Run(kind, when))
            self._reset_attempts()
            return
        if not self.runs:
            # A log whose start was lost: its first event opens a run.
            self.runs.append(Run("unknown", when))
        if kind == "map_started":
            self.runs[-1].max_parallel = event.max_parallel
        elif kind == "agent_started" and event.item_id is not None:
            self._start(event.item_id, event.attempt or 1, when)
        elif kind in ("agent_completed", "agent_failed") and event.item_id is not None:
            self._end(event, when, SUCCEEDED if kind == "agent_completed" else FAILED)
        elif kind == "agent_retrying" and event.item_id is not None:
            failed = self._last_failed.pop(event.item_id, None)
            if failed is not None:
                self.outcomes[failed] = RETRIED
        elif kind in END_EVENTS:
            self._close_run(when)
            self.runs[-1].end_type = kind

    def _start(self, item_id: str, attempt: int, when: float) -> None:
        lane = heapq.heappop(self._free_lanes) if self._free_lanes else self._new_lane()
        position = len(self.outcomes)
        self._open[(item_id, attempt)] = position
        self.item_ids.append(item_id)
        self.attempt_numbers.append(attempt)
        self.starts.append(when)
        self.ends.append(math.nan)
        self.durations.append(math.nan)
        self.lanes.append(lane)
        self.outcomes.append(RUNNING)

    def _new_lane(self) -> int:
        self.lane_count += 1
        return self.lane_count - 1

    def _end(self, event: LogEvent, when: float, outcome: int) -> None:
        assert event.item_id is not None
        attempt = event.attempt or 1
        position = self._open.pop((event.item_id, attempt), None)
        if position is None:
            # Its start is missing (a damaged line): place it by its duration, in no slot's way.
            self._start(event.item_id, attempt, when - (event.duration_s or 0.0))
            position = self._open.pop((event.item_id, attempt))
        self.ends[position] = when
        self.durations[position] = (
            event.duration_s if event.duration_s is not None else when - self.starts[position]
        )
        self.outcomes[position] = outcome
        heapq.heappush(self._free_lanes, self.lanes[position])
        if event.cost_usd:
            self.costs[position] = event.cost_usd
        if outcome == FAILED:
            self.errors[position] = event.error or event.error_kind or "failed"
            self._last_failed[event.item_id] = position

    def _close_run(self, when: float) -> None:
        """The run is over: attempts still open were cut short by its end."""
        for position in self._open.values():
            self.ends[position] = when
            self.outcomes[position] = INTERRUPTED
            heapq.heappush(self._free_lanes, self.lanes[position])
        self._open.clear()
        if self.runs and self.runs[-1].ended is None:
            self.runs[-1].ended = when

    def open_positions(self) -> list[int]:
        return sorted(self._open.values())
