"""The events log: one whole line per event, even from many writers at once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import msgspec
import pytest

from prodigy.errors import StateError
from prodigy.events import (
    EVENT_TYPES,
    AgentCompleted,
    AgentFailed,
    AgentStarted,
    DlqItemAdded,
    Event,
    EventLog,
    JobStarted,
    TornLine,
    read_events,
    with_job_id,
)


def test_parallel_writers_never_tear_or_weld_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    logs = [EventLog(path, "job-1") for _ in range(4)]

    def write(log: EventLog, writer: int) -> None:
        for n in range(250):
            error = "x" * (n % 97)
            log.emit(DlqItemAdded(item_id=f"item_{writer}_{n}", attempts=1, error=error))

    threads = [threading.Thread(target=write, args=(log, w)) for w, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(events) == 1000
    assert len({e["item_id"] for e in events}) == 1000
    assert all(e["ts"] and "job_id" not in e for e in events)  # item events: the log's job


def test_only_events_about_the_job_name_it(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, "job-1")
    log.emit(JobStarted(workflow="w.yml", name="w"))
    log.emit(AgentStarted(item_id="item_0", attempt=1))
    log.emit(AgentCompleted(item_id="item_0", attempt=1, duration_s=0.012, version=1))
    log.close()
    started, agent, completed = [json.loads(line) for line in path.read_text().splitlines()]
    assert started["job_id"] == "job-1"
    assert list(agent) == ["type", "item_id", "attempt", "ts"]
    assert list(completed) == ["type", "item_id", "attempt", "duration_s", "version", "ts"]
    assert list(with_job_id(agent, "job-1")) == ["type", "item_id", "attempt", "ts", "job_id"]
    assert with_job_id(started, "other") == started


def test_reading_reports_a_torn_line_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, "job-1")
    log.emit(JobStarted(workflow="w.yml", name="w"))
    log.close()
    with path.open("ab") as f:
        f.write(b'{"ts": "2026", "type": "agent_sta')
    read = list(read_events(path))
    assert isinstance(read[0], dict) and read[0]["type"] == "job_started"
    assert isinstance(read[1], TornLine) and read[1].line_number == 2


def test_a_torn_last_line_is_cut_off_before_the_next_event(tmp_path: Path) -> None:
    # A power loss can leave half an event at the end (the log is not fsync'd); the next run's
    # first event must not weld onto it, which would damage a line in the middle of the log.
    path = tmp_path / "events.jsonl"
    for torn in (b'{"ts": "2026", "type": "agent_sta', b'{"type": "job_started"}\n{"ts'):
        path.write_bytes(torn)
        log = EventLog(path, "job-1")
        log.emit(JobStarted(workflow="w.yml", name="w"))
        log.close()
        read = list(read_events(path))
        assert not any(isinstance(event, TornLine) for event in read), read
        assert isinstance(read[-1], dict) and read[-1]["type"] == "job_started"
        assert len(read) == torn.count(b"\n") + 1


def test_none_fields_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, "job-1")
    log.emit(AgentFailed(item_id="item_1", attempt=1, duration_s=0.5, version=3, error="boom"))
    log.close()
    (event,) = read_events(path)
    assert isinstance(event, dict)
    assert "exit_code" not in event and event["error"] == "boom"


def _event_classes(cls: type[Event]) -> list[type[Event]]:
    found: list[type[Event]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_event_classes(sub)]
    return found


def test_every_event_type_has_exactly_one_struct() -> None:
    tags = [
        msgspec.inspect.type_info(cls).tag  # type: ignore[attr-defined]
        for cls in _event_classes(Event)
        if not cls.__name__.startswith("_")
    ]
    assert sorted(tags) == sorted(EVENT_TYPES)


def test_an_event_line_reads_back_as_its_struct(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, "job-1")
    log.emit(AgentFailed(item_id="item_1", attempt=2, duration_s=0.5, version=3, exit_code=4))
    log.close()
    line = path.read_bytes().strip()
    event = msgspec.json.decode(line, type=AgentFailed)
    assert (event.item_id, event.attempt, event.exit_code, event.job_id) == ("item_1", 2, 4, "")
    assert json.loads(line)["type"] == "agent_failed"


def test_a_write_the_disk_refuses_is_one_sentence_naming_the_log(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.symlink_to("/dev/full")  # every write: ENOSPC
    log = EventLog(path, "job-1")
    try:
        with pytest.raises(StateError) as refused:
            log.emit(JobStarted(workflow="wf.yaml", name="wf"))
        assert str(path) in refused.value.message and "No space left" in refused.value.message
        assert "prodigy resume-job job-1" in str(refused.value)
        log.emit(JobStarted(workflow="wf.yaml", name="wf"))  # the log ended: no second error
    finally:
        log.close()


def test_in_a_run_a_failed_write_goes_to_on_error_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.symlink_to("/dev/full")
    log = EventLog(path, "job-1")
    errors: list[StateError] = []
    log.on_error = errors.append
    for _ in range(3):
        log.emit(JobStarted(workflow="wf.yaml", name="wf"))
    log.close()
    assert len(errors) == 1 and log.error is errors[0]
