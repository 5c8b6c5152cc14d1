"""The attempt log: events folded into runs, attempts and slots (lanes)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from prodigy.attempt_log import AttemptLog, parse_ts

T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)


def line(at: float, kind: str, **fields: object) -> bytes:
    ts = (T0 + timedelta(seconds=at)).isoformat(timespec="milliseconds")
    return msgspec.json.encode({"ts": ts, "type": kind, "job_id": "j", **fields})


def fold(*lines: bytes) -> AttemptLog:
    log = AttemptLog()
    log.add_lines(b"\n".join(lines) + b"\n")
    return log


def test_attempts_take_the_lowest_free_slot() -> None:
    log = fold(
        line(0, "job_started", workflow="w", name="n"),
        line(0, "map_started", items=3, max_parallel=2),
        line(0.1, "agent_started", item_id="a", attempt=1),
        line(0.2, "agent_started", item_id="b", attempt=1),
        line(1.0, "agent_completed", item_id="a", attempt=1, duration_s=0.9, version=1),
        line(1.1, "agent_started", item_id="c", attempt=1),  # a's slot is free again
        line(2.0, "agent_failed", item_id="b", attempt=1, duration_s=1.8, version=2, error="x"),
        line(2.0, "agent_retrying", item_id="b", attempt=2, delay_s=0),
        line(2.5, "agent_started", item_id="b", attempt=2),
    )
    assert list(log.lanes) == [0, 1, 0, 1]
    assert log.lane_count == 2
    assert [log.outcome(p) for p in range(4)] == ["succeeded", "retried", "running", "running"]
    assert log.errors == {1: "x"}
    assert log.running == 2
    assert log.run is not None and log.run.max_parallel == 2
    assert log.durations[0] == 0.9 and math.isnan(log.durations[2])


def test_the_end_of_a_run_cuts_open_attempts_short_and_a_resume_starts_afresh() -> None:
    log = fold(
        line(0, "job_started", workflow="w", name="n"),
        line(0.1, "agent_started", item_id="a", attempt=1),
        line(0.5, "job_interrupted", version=0, total=1, succeeded=0, failed=0,
             dead_lettered=0, skipped=0, remaining=1),
    )  # fmt: skip
    assert log.outcome(0) == "interrupted" and log.ends[0] == log.starts[0] + 0.4
    assert log.run is not None and log.run.end_type == "job_interrupted"
    log.add_lines(line(9, "job_resumed", workflow="w", version=0, total=1, succeeded=0,
                       failed=0, dead_lettered=0, skipped=0, remaining=1) + b"\n")  # fmt: skip
    assert len(log) == 0 and len(log.runs) == 2 and log.lane_count == 0


def test_a_damaged_line_is_counted_and_the_rest_is_read() -> None:
    log = fold(
        line(0, "job_started", workflow="w", name="n"),
        b'{"ts": "2026-11-01T12:00:01.000+00:00", "type": "agent_sta',
        line(1, "agent_started", item_id="a", attempt=1),
    )
    assert log.torn_lines == 1 and len(log) == 1
    assert len(log.recent) == 2


def test_an_end_without_its_start_is_placed_by_its_duration() -> None:
    log = fold(line(5, "agent_completed", item_id="a", attempt=1, duration_s=2.0, version=1))
    assert log.starts[0] == log.ends[0] - 2.0
    assert log.outcome(0) == "succeeded"


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.timezones()
    )
)
def test_the_fast_timestamp_parser_agrees_with_fromisoformat(moment: datetime) -> None:
    ts = moment.isoformat(timespec="milliseconds")
    expected = datetime.fromisoformat(ts).timestamp()
    parsed = parse_ts(ts)
    assert parsed is not None and abs(parsed - expected) < 1e-6
