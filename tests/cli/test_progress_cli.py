"""`prodigy progress` on real jobs: the terminal summary, `--format json`, `--export`, the
dashboard's refusals (a port in use, an unknown job) and its promise to leave the job alone."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import Env, job_id_of, make_world, wait_for
from held_job import HeldJob, start_dashboard, stop_dashboard
from prodigy.report import ProgressReport

# Three items: one succeeds, one fails its Claude step twice, one fails its shell step twice.
WORKFLOW = """\
name: progress-test
mode: mapreduce
map:
  input: items.json
  json_path: "$[*]"
  max_parallel: 2
  isolation: none
  agent_template:
    - claude: "/analyze ${item.n} ${item.flag}"
    - shell: "test ${item.n} -ne 3"
error_policy:
  retry_config: {max_attempts: 2, initial_delay: 0}
"""
ITEMS = [{"n": 1, "flag": "x"}, {"n": 2, "flag": "FAIL_CLAUDE"}, {"n": 3, "flag": "x"}]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str]]:
    """One real finished job shared by the read-only tests below."""
    world = make_world(tmp_path_factory.mktemp("progress"))
    world.write_json("items.json", ITEMS)
    world.write("wf.yaml", WORKFLOW)
    done = world.run("cook", "wf.yaml")
    assert done.returncode == 3, done.stdout + done.stderr
    yield world, job_id_of(done.stdout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one sentence
    return result.stderr


def test_terminal_summary(finished: tuple[Env, str]) -> None:
    world, job = finished
    out = ok(world.run("progress"))  # the newest job of this repository
    lines = out.splitlines()
    assert lines[0] == f"Job       {job} (progress-test)"
    assert lines[1].startswith("Status    completed, phase done, started ")
    assert "Items     3/3 done: 1 succeeded, 2 failed (2 in DLQ, 0 retriable)" in out
    assert "[########################################] 100.0%" in out
    # Five Claude calls were paid for: item_0 once, item_1 and item_2 twice each.
    assert "Cost      $0.0500 so far (500 input / 100 output tokens)" in out
    assert "Slowest   item_" in out
    assert "claude_error: simulated failure" in out
    assert "exit_code: command exited with code 1: test 3 -ne 3" in out
    assert "DLQ       2 items (2 retriable, 0 need manual review), by error signature:" in out
    assert f"Next      prodigy dlq list {job}" in out
    assert ok(world.run("progress", job)) == out


def test_json_is_the_same_report(finished: tuple[Env, str]) -> None:
    world, job = finished
    out = ok(world.run("progress", job, "--format", "json"))
    report = msgspec.json.decode(out, type=ProgressReport)
    assert report.job.id == job and report.job.status == "completed"
    c = report.counts
    assert (c.total, c.succeeded, c.failed, c.dead_lettered) == (3, 1, 2, 2)
    assert report.cost.total_usd == pytest.approx(0.05)
    assert {g.error_kind for g in report.failures} == {"claude_error", "exit_code"}
    assert sorted(e.item_id for e in report.dlq.items) == ["item_1", "item_2"]
    assert report.timeline.attempts == 5 and len(report.timeline.bars) == 5
    assert sum(report.throughput.succeeded) == 1


def test_export_html_and_json(finished: tuple[Env, str], tmp_path: Path) -> None:
    world, job = finished
    html_path = tmp_path / "report.html"
    out = ok(world.run("progress", job, "--export", str(html_path)))
    assert out == f"Wrote the report of job {job} to {html_path}.\n"
    html = html_path.read_text()
    assert '<div class="value" id="count-succeeded">1</div>' in html
    assert "<script" not in html
    json_path = tmp_path / "report.json"
    ok(world.run("progress", job, "--export", str(json_path)))
    report = msgspec.json.decode(json_path.read_bytes(), type=ProgressReport)
    assert report.counts.total == 3
    # With --format json, stdout stays pure JSON; the note goes to stderr.
    both = world.run("progress", job, "--export", str(json_path), "--format", "json")
    assert json.loads(both.stdout)["counts"]["total"] == 3
    assert both.stderr.startswith("Wrote the report")


def test_refusals(finished: tuple[Env, str], tmp_path: Path) -> None:
    world, job = finished
    err = refused(world.run("progress", "mapreduce-20000101-000000"))
    assert "no job 'mapreduce-20000101-000000'" in err
    err = refused(world.run("progress", "mapreduce-20000101-000000", "--web", "0"))
    assert "no job 'mapreduce-20000101-000000'" in err
    err = refused(world.run("progress", job, "--export", str(tmp_path / "r.txt")), code=2)
    assert "--export writes an .html or a .json file" in err
    err = refused(world.run("progress", job, "--export", str(tmp_path / "nodir" / "r.html")))
    assert "Cannot write the report to" in err
    err = refused(world.run("progress", job, "--host", "0.0.0.0"), code=2)
    assert "--host only applies to the dashboard" in err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    err = refused(world.run("progress", cwd=elsewhere))
    assert "No jobs found for repository 'elsewhere'" in err


def test_a_port_in_use_is_one_sentence(finished: tuple[Env, str]) -> None:
    world, job = finished
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = refused(world.run("progress", job, "--web", str(port)))
    assert f"Port {port} on 127.0.0.1 is already in use" in err


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
    }


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def test_dashboard_serves_and_stops_on_ctrl_c_leaving_the_job_alone(
    finished: tuple[Env, str],
) -> None:
    world, job = finished
    job_dir = world.job_dir(job)
    before = _snapshot(job_dir)
    proc, url = start_dashboard(world, job)
    try:
        assert url.startswith("http://127.0.0.1:")
        page = _get(url).decode()
        assert f'<dd class="mono" id="job-id">{job}</dd>' in page
        assert "new EventSource" in page
        report = msgspec.json.decode(_get(url + "report.json"), type=ProgressReport)
        assert report.counts.succeeded == 1
        # The stream starts with every section a page of another generation lacks.
        with urllib.request.urlopen(url + "stream?generation=none", timeout=10) as stream:
            assert stream.readline() == b"event: sections\n"
            data = json.loads(stream.readline().removeprefix(b"data: "))
            assert "counts" in data and "timeline" in data
    finally:
        code, out, err = stop_dashboard(proc)
    assert code == 0, err
    assert "Stopped serving the dashboard." in out and "Traceback" not in err
    assert _snapshot(job_dir) == before, "the dashboard wrote to the job directory"


def test_a_non_loopback_host_is_warned_about(finished: tuple[Env, str]) -> None:
    world, job = finished
    proc, url = start_dashboard(world, job, "--host", "0.0.0.0")
    code, _, err = stop_dashboard(proc)
    assert url.startswith("http://0.0.0.0:") and code == 0
    assert "warning: serving on 0.0.0.0: anyone who can reach this machine" in err


def test_a_running_job(world: Env) -> None:
    held = HeldJob(world, items=4, parallel=2)
    try:
        held.started(2)
        report = _progress_json(world, held.job_id)
        assert report["job"]["live"] and report["job"]["status"] == "running"
        assert report["counts"]["running"] == 2 and report["counts"]["waiting"] == 2
        assert "cook" in report["job"]["holder"]
        held.release("item_0")
        wait_for(
            lambda: _progress_json(world, held.job_id)["counts"]["succeeded"] == 1,
            what="the first success in the report",
        )
        out = ok(world.run("progress", held.job_id))
        assert "Status    running, phase map" in out and "run by PID" in out
        assert f"Next      prodigy progress {held.job_id} --web 8080" in out
        assert held.finish() == 3
    finally:
        held.stop()
    report = _progress_json(world, held.job_id)
    assert not report["job"]["live"] and report["counts"]["finished"] == 4


def _progress_json(world: Env, job: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(ok(world.run("progress", job, "--format", "json")))
    return result


LAZY_CHECK = """
import sys
from prodigy.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'jinja2', 'selenium'})
print('HEAVY', ','.join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["--help"], ""),
        (["sessions", "show"], ""),
        (["progress", "--format", "json"], ""),
        (["progress", "--export", "report.html"], "jinja2"),
    ],
)
def test_the_web_stack_is_imported_only_when_needed(
    finished: tuple[Env, str], args: list[str], allowed: str
) -> None:
    world, _ = finished
    result = subprocess.run(
        [sys.executable, "-c", LAZY_CHECK, *args],
        cwd=world.repo,
        env=world.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert f"HEAVY {allowed}\n" in result.stderr, result.stderr
