"""`prodigy events show` and `prodigy events watch` on jobs made by really running workflows."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Env, job_id_of, wait_for
from prodigy.cli.events import (
    EndTracker,
    Event,
    LineAssembler,
    format_event,
    parse_line,
)
from prodigy.display import display_time
from prodigy.lock import JobLock

FAILING = """\
name: events-test
mode: mapreduce
map:
  input: items.json
  json_path: "$[*]"
  max_parallel: 4
  isolation: none
  agent_template:
    - shell: "test ${item.n} -ne 3"
error_policy:
  retry_config: {max_attempts: 2, initial_delay: 0}
"""

SLOW = """\
name: slow
mode: mapreduce
map:
  input: items.json
  json_path: "$[*]"
  max_parallel: 2
  isolation: none
  agent_template:
    - shell: "sleep %s"
"""


def cook_failing(world: Env) -> str:
    world.write_json("items.json", [{"n": n} for n in range(1, 5)])
    world.write("wf.yaml", FAILING)
    done = world.run("cook", "wf.yaml")
    assert done.returncode == 3, done.stderr
    return job_id_of(done.stdout)


class LineReader:
    """Reads a process's stdout on a thread, noting the monotonic time each line arrives."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._thread.start()

    def _run(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def texts(self) -> list[str]:
        return [text for _, text in self.lines]

    def wait_for(self, needle: str, timeout: float = 20) -> None:
        wait_for(lambda: any(needle in t for t in self.texts()), timeout, f"a line with {needle}")

    def join(self) -> None:
        self._thread.join(timeout=10)


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


# ---- the pure parts ----------------------------------------------------------------------------


def test_readable_line_puts_time_type_item_first_and_error_last() -> None:
    line = format_event(
        {
            "ts": "2026-11-27T03:01:02.123+01:00",
            "type": "agent_failed",
            "job_id": "mapreduce-20261127-030102",
            "item_id": "item_3",
            "attempt": 1,
            "duration_s": 0.206,
            "error": "command exited with code 1:   test 3\n -ne 3",
            "error_kind": "exit_code",
            "exit_code": 1,
            "version": 4,
        }
    )
    assert line.startswith("2026-11-27 03:01:02.123  agent_failed")
    assert " ".join(line.split()[3:]) == (
        "item_3 attempt 1 exit 1 0.21s v4 command exited with code 1: test 3 -ne 3"
    )
    assert "mapreduce-" not in line


def test_readable_line_shortens_long_errors_and_shows_other_fields() -> None:
    line = format_event({"ts": "x", "type": "job_stopped", "reason": "r" * 500, "total": 9})
    assert "total=9" in line
    assert line.endswith("…") and len(line) < 200
    assert line.startswith("x  job_stopped")


def test_readable_line_sums_up_the_job_counts() -> None:
    counts = {
        "total": 5,
        "succeeded": 2,
        "failed": 2,
        "dead_lettered": 1,
        "skipped": 1,
        "remaining": 1,
    }
    line = format_event({"ts": "x", "type": "job_stopped", **counts, "reason": "too many"})
    assert line == "x  job_stopped      2/5 succeeded, 1 remaining, 1 in DLQ, 1 skipped  too many"
    resumed = format_event({"ts": "x", "type": "job_resumed", "workflow": "w.yml", "version": 3})
    assert resumed == "x  job_resumed      v3  workflow=w.yml"


def test_display_time() -> None:
    assert display_time("2026-11-27T03:01:02.123456+00:00") == "2026-11-27 03:01:02.123"
    assert display_time("2026-11-27T03:01:02+00:00", millis=False) == "2026-11-27 03:01:02"
    assert display_time("not a time") == "not a time"


def test_parse_line_keeps_the_text_and_flags_damage() -> None:
    raw = b'{"type":"job_started","ts":"t"}'
    parsed = parse_line(raw, 1)
    assert isinstance(parsed, Event) and parsed.raw == raw.decode()
    assert not isinstance(parse_line(b'{"type":"agent_st', 2), Event)
    assert not isinstance(parse_line(b"[1, 2]", 3), Event)


@given(st.lists(st.binary(max_size=30), max_size=10), st.data())
def test_line_assembler_gives_the_same_lines_however_the_bytes_arrive(
    pieces: list[bytes], data: st.DataObject
) -> None:
    whole = b"\n".join(pieces) + b"\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    assembler = LineAssembler()
    got: list[tuple[int, bytes]] = []
    start = 0
    for cut in [*cuts, len(whole)]:
        got.extend(assembler.feed(whole[start:cut]))
        start = cut
    expected = whole.split(b"\n")[:-1]
    assert got == list(enumerate(expected, start=1))
    assert assembler.pending == b""


def test_line_assembler_holds_a_partial_line() -> None:
    assembler = LineAssembler()
    assert assembler.feed(b'{"a":1}\n{"b"') == [(1, b'{"a":1}')]
    assert assembler.pending == b'{"b"'
    assert assembler.feed(b":2}\n") == [(2, b'{"b":2}')]


def test_end_tracker_counts_only_ends_after_the_latest_start() -> None:
    tracker = EndTracker()

    def see(type_: str) -> bool:
        tracker.observe(Event({"type": type_}, ""))
        return tracker.ended

    assert not see("job_started")
    assert see("job_interrupted")
    assert not see("job_resumed")
    assert not see("agent_started")
    assert see("job_completed")


# ---- events show -------------------------------------------------------------------------------


def test_show_prints_every_event_readably_and_as_json(world: Env) -> None:
    job_id = cook_failing(world)
    logged = world.events(job_id)
    shown = world.run("events", "show", job_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == len(logged)
    for line, event in zip(lines, logged, strict=True):
        assert line.split()[2] == event["type"]
        assert line[:10] == event["ts"][:10]
    as_json = world.run("events", "show", job_id, "--json")
    assert as_json.returncode == 0
    shown_json = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert shown_json == [{**event, "job_id": job_id} for event in logged]
    # The log leaves the job out of item events; --json puts it back where it always was.
    assert all(("job_id" in e) == ("item_id" not in e) for e in logged)
    for event in shown_json:
        keys = list(event)
        assert keys[keys.index("ts") + 1] == "job_id"
    raw = (world.job_dir(job_id) / "events.jsonl").read_text().splitlines()
    unchanged = [line for line in raw if '"job_id"' in line]
    assert unchanged and set(unchanged) <= set(as_json.stdout.splitlines())


def test_show_filters_by_type_and_item_and_tails(world: Env) -> None:
    job_id = cook_failing(world)
    logged = [{**event, "job_id": job_id} for event in world.events(job_id)]
    failed = world.run("events", "show", job_id, "--json", "--type", "agent_failed")
    events = [json.loads(line) for line in failed.stdout.splitlines()]
    assert events == [e for e in logged if e["type"] == "agent_failed"]
    assert len(events) == 2  # item_2 (n=3) failed twice: max_attempts 2

    two_types = world.run(
        "events", "show", job_id, "--json", "--type", "agent_started", "--type", "dlq_item_added"
    )
    types = {json.loads(line)["type"] for line in two_types.stdout.splitlines()}
    assert types == {"agent_started", "dlq_item_added"}

    item = world.run("events", "show", job_id, "--item", "item_2", "--json")
    item_events = [json.loads(line) for line in item.stdout.splitlines()]
    assert item_events == [e for e in logged if e.get("item_id") == "item_2"]
    assert [e["type"] for e in item_events].count("agent_started") == 2

    tail = world.run("events", "show", job_id, "--item", "item_2", "--tail", "1")
    assert tail.returncode == 0
    assert (
        tail.stdout.splitlines()
        == [
            line
            for line in world.run("events", "show", job_id, "--item", "item_2").stdout.splitlines()
        ][-1:]
    )
    assert "dlq_item_added" in tail.stdout


def test_show_reports_a_damaged_line_and_goes_on(world: Env) -> None:
    job_id = cook_failing(world)
    path = world.job_dir(job_id) / "events.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(2, '{"ts": "2026-11-27T03:00:00", "type": "agent_sta\n')
    path.write_text("".join(lines) + '{"type": "job_res')
    shown = world.run("events", "show", job_id)
    assert shown.returncode == 0
    no_traceback(shown.stderr)
    assert len(shown.stdout.splitlines()) == len(lines) - 1
    warnings = shown.stderr.splitlines()
    assert len(warnings) == 2
    assert "line 3" in warnings[0] and f"line {len(lines) + 1}" in warnings[1]


def test_show_refuses_unknown_job_type_and_item(world: Env) -> None:
    missing = world.run("events", "show", "mapreduce-20200101-000000")
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "mapreduce-20200101-000000" in missing.stderr
    no_traceback(missing.stderr)

    job_id = cook_failing(world)
    bad_type = world.run("events", "show", job_id, "--type", "agent_exploded")
    assert bad_type.returncode == 2
    assert "agent_exploded" in bad_type.stderr
    no_traceback(bad_type.stderr)

    bad_item = world.run("events", "show", job_id, "--item", "item_99")
    assert bad_item.returncode == 1
    assert "item_99" in bad_item.stderr and job_id in bad_item.stderr
    no_traceback(bad_item.stderr)


# ---- events watch ------------------------------------------------------------------------------


def test_watch_prints_an_agent_start_while_the_job_runs_and_exits_at_its_end(world: Env) -> None:
    world.write_json("items.json", [{"n": n} for n in range(2)])
    world.write("slow.yaml", SLOW % "1.5")
    cook = world.popen("cook", "slow.yaml")
    assert cook.stdout is not None
    job_id = job_id_of(cook.stdout.readline())  # printed before any agent starts
    watch = world.popen("events", "watch", job_id)
    reader = LineReader(watch)
    cook_rest = threading.Thread(target=cook.communicate, daemon=True)
    cook_rest.start()
    cook.wait(timeout=30)
    cook_exited = time.monotonic()
    assert cook.returncode == 0
    assert watch.wait(timeout=10) == 0
    reader.join()
    arrivals = [t for t, text in reader.lines if "agent_started" in text]
    assert len(arrivals) == 2
    # The agents sleep 1.5 s: their start was shown live, well before the job was over.
    assert arrivals[0] < cook_exited - 1.0
    assert "job_completed" in reader.texts()[-1]
    assert len(reader.lines) == len(world.events(job_id))


def test_watch_exits_zero_on_ctrl_c_and_by_itself_when_the_job_is_interrupted(
    world: Env,
) -> None:
    world.write_json("items.json", [{"n": 1}])
    world.write("slow.yaml", SLOW % "30")
    cook = world.popen("cook", "slow.yaml", PRODIGY_INTERRUPT_GRACE="0")
    assert cook.stdout is not None
    job_id = job_id_of(cook.stdout.readline())
    try:
        first = world.popen("events", "watch", job_id)
        LineReader(first).wait_for("agent_started")
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=10) == 0
        assert first.stderr is not None
        no_traceback(first.stderr.read())

        second = world.popen("events", "watch", job_id)
        reader = LineReader(second)
        reader.wait_for("agent_started")
        assert second.poll() is None  # still following: the job has not ended
        cook.send_signal(signal.SIGINT)
        assert cook.wait(timeout=20) == 130
        assert second.wait(timeout=10) == 0
        reader.join()
        assert "job_interrupted" in reader.texts()[-1]
    finally:
        if cook.poll() is None:
            cook.kill()
            cook.wait()


def test_watch_without_id_follows_the_newest_job_and_ends_at_once_when_finished(
    world: Env,
) -> None:
    cook_failing(world)
    newest = cook_failing(world)
    watch = world.run("events", "watch", timeout=10)
    assert watch.returncode == 0, watch.stderr
    assert newest in watch.stderr
    assert len(watch.stdout.splitlines()) == len(world.events(newest))
    assert "job_completed" in watch.stdout.splitlines()[-1]


def synthetic_job(world: Env, events: list[dict[str, Any]]) -> Path:
    job = world.jobs_dir() / "mapreduce-20260101-000000"
    job.mkdir(parents=True)
    (job / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return job


def event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"ts": "2026-01-01T00:00:00.000+00:00", "type": type_, "job_id": "j", **fields}


def test_watch_holds_a_partial_line_and_skips_a_damaged_one(world: Env) -> None:
    job = synthetic_job(world, [event("job_started")])
    lock = JobLock(job / "lock", job.name, "test")
    lock.acquire()
    try:
        watch = world.popen("events", "watch", job.name)
        reader = LineReader(watch)
        reader.wait_for("job_started")
        line = json.dumps(event("agent_started", item_id="item_0", attempt=1)) + "\n"
        with (job / "events.jsonl").open("a") as log:
            log.write(line[:20])
            log.flush()
            time.sleep(0.5)  # several polls see the partial line
            log.write(line[20:] + "this is not json\n")
            log.write(json.dumps(event("job_completed")) + "\n")
        # The end arrived while watching: watch exits though the lock is still held.
        assert watch.wait(timeout=10) == 0
        reader.join()
    finally:
        lock.release()
    texts = reader.texts()
    assert [t.split()[2] for t in texts] == ["job_started", "agent_started", "job_completed"]
    assert "item_0" in texts[1]
    assert watch.stderr is not None
    stderr = watch.stderr.read()
    no_traceback(stderr)
    assert stderr.count("not valid JSON") == 1 and "line 3" in stderr


def test_watch_gives_up_on_a_job_that_crashed(world: Env) -> None:
    job = synthetic_job(world, [event("job_started"), event("agent_started", item_id="item_0")])
    watch = world.run("events", "watch", job.name, timeout=10)
    assert watch.returncode == 0
    assert len(watch.stdout.splitlines()) == 2
    assert "not running" in watch.stderr and f"prodigy resume-job {job.name}" in watch.stderr


def test_watch_refuses_an_unknown_job(world: Env) -> None:
    missing = world.run("events", "watch", "mapreduce-20200101-000000")
    assert missing.returncode == 1
    no_traceback(missing.stderr)
    nothing = world.run("events", "watch")
    assert nothing.returncode == 1
    assert "No jobs found" in nothing.stderr


@pytest.mark.parametrize("args", [["events", "--help"], ["events", "watch", "--help"]])
def test_help(world: Env, args: list[str]) -> None:
    assert world.run(*args).returncode == 0
