"""The events log: one whole line per event, even from many writers at once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from prodigy.events import EventLog, TornLine, read_events


def test_parallel_writers_never_tear_or_weld_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    logs = [EventLog(path, "job-1") for _ in range(4)]

    def write(log: EventLog, writer: int) -> None:
        for n in range(250):
            log.emit("agent_completed", item_id=f"item_{writer}_{n}", output="x" * (n % 97))

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
    assert all(e["job_id"] == "job-1" and e["ts"] for e in events)


def test_reading_reports_a_torn_line_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, "job-1")
    log.emit("job_started")
    log.close()
    with path.open("ab") as f:
        f.write(b'{"ts": "2026", "type": "agent_sta')
    read = list(read_events(path))
    assert isinstance(read[0], dict) and read[0]["type"] == "job_started"
    assert isinstance(read[1], TornLine) and read[1].line_number == 2


def test_none_fields_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, "job-1")
    log.emit("agent_failed", item_id="item_1", exit_code=None, error="boom")
    log.close()
    (event,) = read_events(path)
    assert isinstance(event, dict)
    assert "exit_code" not in event and event["error"] == "boom"
