"""`prodigy sessions show [JOB_ID]` on real jobs: finished with paid-for Claude failures in the
DLQ, stopped by the failure policy, running, and crashed (the coordinator killed with -9)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import Env, job_id_of, wait_for

COSTLY = """\
    name: costly
    mode: mapreduce
    map:
      input: items.json
      isolation: none
      json_path: "$[*]"
      max_parallel: 4
      agent_template:
        - claude: "/analyze ${item.name} ${item.flag}"
    error_policy:
      retry_config: {max_attempts: 2, initial_delay: 0}
    """
COSTLY_ITEMS = [
    {"name": "a", "flag": "x"},
    {"name": "b", "flag": "FAIL_CLAUDE"},
    {"name": "c", "flag": "x"},
]

STOPPING = """\
    name: stopping
    mode: mapreduce
    map:
      input: items.json
      isolation: none
      json_path: "$[*]"
      max_parallel: 1
      agent_template:
        - shell: 'test "${item.kind}" != fail'
    error_policy:
      on_item_failure: stop
    """

# The agent waits for a file the test creates, so killing the coordinator leaves no stray agent.
WAITING = """\
    name: waiting
    mode: mapreduce
    map:
      input: items.json
      isolation: none
      json_path: "$[*]"
      max_parallel: 2
      agent_template:
        - shell: 'for i in $(seq 400); do [ -e "$RELEASE" ] && break; sleep 0.05; done'
    """


def prodigy(world: Env, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = world.run(*args, **env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def cook(world: Env, workflow: str, items: list[dict[str, Any]], expect: int, **env: str) -> str:
    world.write("wf.yaml", workflow)
    world.write_json("items.json", items)
    result = prodigy(world, "cook", "wf.yaml", **env)
    assert result.returncode == expect, result.stdout + result.stderr
    return job_id_of(result.stdout)


def table(output: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines()]


def details(output: str) -> dict[str, str]:
    fields = {}
    for line in output.splitlines():
        label, _, value = line.partition(":")
        fields[label] = value.strip()
    return fields


def test_table_and_details_of_this_repositorys_jobs(world: Env, tmp_path: Path) -> None:
    elsewhere = tmp_path / "other-repo"
    elsewhere.mkdir()
    subprocess.run(["git", "init", "-q", str(elsewhere)], check=True)
    world.write("wf.yaml", STOPPING)
    (elsewhere / "wf.yaml").write_text((world.repo / "wf.yaml").read_text())
    (elsewhere / "items.json").write_text('[{"kind": "ok"}]')
    other = job_id_of(world.run("cook", "wf.yaml", cwd=elsewhere).stdout)
    # Ids are only made unique within one repository; keep this test about listing, not that.
    wait_for(lambda: time.strftime("mapreduce-%Y%m%d-%H%M%S") > other, what="the next second")
    calls = tmp_path / "claude-calls"
    costly = cook(world, COSTLY, COSTLY_ITEMS, expect=3, FAKE_CLAUDE_LOG=str(calls))
    stopped = cook(world, STOPPING, [{"kind": "ok"}, {"kind": "fail"}, {"kind": "ok"}], expect=1)

    events = world.events(costly)
    completed = {e["item_id"] for e in events if e["type"] == "agent_completed"}
    in_dlq = {e["item_id"] for e in events if e["type"] == "dlq_item_added"}
    assert (len(completed), len(in_dlq)) == (2, 1)

    out = prodigy(world, "sessions", "show")
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    assert rows[0] == [
        "JOB ID", "WORKFLOW", "STATUS", "PHASE", "DONE/FAILED/TOTAL", "STARTED", "LAST UPDATE"
    ]  # fmt: skip
    assert [row[:5] for row in rows[1:]] == [
        [stopped, "stopping", "stopped", "map", "1/1/3"],
        [costly, "costly", "completed", "done", f"{len(completed)}/{len(in_dlq)}/3"],
    ]
    assert len(rows) == 3  # the other repository's job is not listed here
    for row in rows[1:]:
        started, updated = row[5:]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", started) and updated >= started

    shown = prodigy(world, "sessions", "show", costly)
    assert shown.returncode == 0, shown.stderr
    fields = details(shown.stdout)
    n = len(calls.read_text().splitlines())  # every call was paid for, the failed ones too
    assert n == 4
    assert fields["Job"] == costly
    assert fields["Workflow"] == f"costly ({world.repo / 'wf.yaml'})"
    assert fields["Status"] == "completed" and fields["Phase"] == "done"
    assert fields["Items"] == "2 succeeded, 1 failed (1 in DLQ, 0 retriable), 0 pending, 3 total"
    assert fields["DLQ"] == "1 item"
    assert fields["Checkpoint"].startswith(f"v{n} (files on disk: v{n}")
    assert fields["Cost"] == f"${0.01 * n:.4f} ({100 * n} input / {20 * n} output tokens)"
    assert fields["Working directory"] == str(world.repo)
    assert fields["State directory"] == str(world.job_dir(costly))
    assert "Next" not in fields  # finished: nothing to resume

    shown = prodigy(world, "sessions", "show", stopped)
    fields = details(shown.stdout)
    assert fields["Status"] == "stopped" and fields["Next"] == f"prodigy resume-job {stopped}"
    assert fields["Items"] == "1 succeeded, 1 failed (1 in DLQ, 0 retriable), 1 pending, 3 total"

    # A job id is found from any repository.
    anywhere = details(world.run("sessions", "show", other).stdout)
    assert anywhere["Workflow"] == f"stopping ({elsewhere / 'wf.yaml'})"
    assert anywhere["Status"] == "completed"


def test_a_running_job_then_a_crashed_one(world: Env, tmp_path: Path) -> None:
    release = tmp_path / "release"
    world.write("wf.yaml", WAITING)
    world.write_json("items.json", [{"n": 1}, {"n": 2}])
    proc = world.popen("cook", "wf.yaml", RELEASE=str(release))
    try:
        assert proc.stdout is not None
        job_id = job_id_of(proc.stdout.readline())
        wait_for(
            lambda: sum(e["type"] == "agent_started" for e in world.events(job_id)) == 2,
            what="both agents to start",
        )
        running = details(prodigy(world, "sessions", "show", job_id).stdout)
        assert running["Status"] == "running"
        assert running["Lock"].startswith(f"held by PID {proc.pid} on host")
        assert "Next" not in running

        # kill -9 of the coordinator alone: its lock dies with it, its metadata still says running.
        os.kill(proc.pid, signal.SIGKILL)
        release.touch()
        proc.communicate(timeout=20)
    finally:
        release.touch()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()

    crashed = details(prodigy(world, "sessions", "show", job_id).stdout)
    assert crashed["Status"] == "interrupted (crashed)"
    assert crashed["Phase"] == "map" and "Lock" not in crashed
    assert crashed["Items"] == "0 succeeded, 0 failed (0 in DLQ, 0 retriable), 2 pending, 2 total"
    assert crashed["Next"] == f"prodigy resume-job {job_id}"
    rows = table(prodigy(world, "sessions", "show").stdout)
    assert rows[1][:5] == [job_id, "waiting", "interrupted (crashed)", "map", "0/0/2"]


def test_no_jobs_unknown_job_and_unknown_subcommand(world: Env) -> None:
    empty = prodigy(world, "sessions", "show")
    assert empty.returncode == 0 and "No jobs for repository 'repo'" in empty.stdout

    unknown = prodigy(world, "sessions", "show", "mapreduce-20240101-123456")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.startswith("error: Checkpoint not found")

    bad = prodigy(world, "sessions", "list")
    assert bad.returncode == 2 and "No such command 'list'" in bad.stderr
