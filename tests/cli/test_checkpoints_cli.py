"""`prodigy checkpoints list|show|clean` on jobs made by really running workflows: finished with
failed and timed-out items in the DLQ, interrupted mid-run, stopped by the failure policy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import Env, checkpoint_items, job_id_of, wait_for
from prodigy.checkpoint import encode_checkpoint
from prodigy.lock import JobLock
from prodigy.store import JobDir
from prodigy.versions import rebuild_checkpoint_document

# Five items succeed, two fail (exit 7), one times out; two attempts each: 5 + 3*2 = 11 versions.
MIXED = """\
    name: mixed
    mode: mapreduce
    map:
      input: items.json
      isolation: none
      json_path: "$[*]"
      max_parallel: 8
      agent_template:
        - shell: 'echo "$PRODIGY_ITEM_ID $PRODIGY_ATTEMPT" >> "$MARKS"'
        - shell: 'case "${item.kind}" in fail) exit 7 ;; slow) sleep 5 ;; esac'
          timeout: 1
    error_policy:
      retry_config: {max_attempts: 2, initial_delay: 0}
    """
MIXED_ITEMS = [{"kind": k} for k in ["ok", "fail", "ok", "slow", "ok", "fail", "ok", "ok"]]

# Three items succeed, one fails and waits 60 s for its retry, one lacks `path` (straight to the
# DLQ), one hangs: interrupted, they are succeeded / retriable / in the DLQ / pending.
INTERRUPTIBLE = """\
    name: interruptible
    mode: mapreduce
    map:
      input: items.json
      isolation: none
      json_path: "$[*]"
      max_parallel: 6
      agent_template:
        - shell: 'test "${item.kind}" != fail'
        - shell: 'if [ "${item.kind}" = hang ]; then sleep 30; fi; echo ${item.path}'
    error_policy:
      retry_config: {max_attempts: 2, initial_delay: 60s}
    """
INTERRUPTIBLE_ITEMS = [
    {"kind": "ok", "path": "a"},
    {"kind": "ok", "path": "b"},
    {"kind": "ok", "path": "c"},
    {"kind": "fail", "path": "d"},
    {"kind": "ok"},
    {"kind": "hang", "path": "e"},
]

FAST = """\
    name: fast
    mode: mapreduce
    map:
      input: items.json
      isolation: none
      json_path: "$[*]"
      max_parallel: 1
      agent_template:
        - shell: 'test "${item.kind}" != fail'
    error_policy:
      on_item_failure: {policy}
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


def fast_job(world: Env, kinds: list[str], policy: str = "dlq") -> str:
    expect = 0 if "fail" not in kinds else (1 if policy == "stop" else 3)
    return cook(world, FAST.replace("{policy}", policy), [{"kind": k} for k in kinds], expect)


def item_sets(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Where each item ended up, according to the events log alone."""
    last: dict[str, str] = {}
    for event in events:
        if event["type"] in ("agent_completed", "agent_retrying", "dlq_item_added"):
            last[event["item_id"]] = event["type"]
    return {
        kind: {item for item, t in last.items() if t == kind}
        for kind in ("agent_completed", "agent_retrying", "dlq_item_added")
    }


def checkpoint_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def running_as_recorded(document: dict[str, Any], rebuilt: dict[str, Any]) -> dict[str, Any]:
    """Running is never journaled: a rebuilt checkpoint shows those items as the record has
    them, pending or retriable (which is how a resume runs them)."""
    counts = document["counts"]
    items = document["items"]
    for index in items["running"]:
        retriable = any(a <= index <= b for a, b in items["failed-retriable"])
        counts["running"] -= 1
        counts["failed_retriable" if retriable else "pending"] += 1
    items["running"] = []
    return document


def test_list_and_show_a_job_with_failed_and_timed_out_items(world: Env, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    job_id = cook(world, MIXED, MIXED_ITEMS, expect=3, MARKS=str(marks))
    job = world.job_dir(job_id)
    events = world.events(job_id)
    where = item_sets(events)
    ended = [e for e in events if e["type"] in ("agent_completed", "agent_failed")]
    ran = Counter(line.split()[0] for line in marks.read_text().splitlines())
    # What ran, what the events say and what the status block says all agree.
    assert len(where["agent_completed"]) == 5 and len(where["dlq_item_added"]) == 3
    assert sum(ran.values()) == len(ended) == 11
    assert {item for item, n in ran.items() if n == 2} == where["dlq_item_added"]
    assert any(
        e.get("error_kind") == "timeout" or "timed out" in str(e.get("error")) for e in ended
    )

    out = prodigy(world, "checkpoints", "list", job_id)
    assert out.returncode == 0, out.stderr
    on_disk = sorted(
        (int(p.name[len("checkpoint-v") : -len(".json")]) for p in job.glob("checkpoint-v*.json")),
        reverse=True,
    )
    latest = int(os.readlink(job / "latest.json")[len("checkpoint-v") : -len(".json")])
    assert latest == 11 and on_disk[0] == 11 and len(on_disk) == 3  # max_checkpoints default
    lines = []
    for version in on_disk:
        stored = checkpoint_json(job / f"checkpoint-v{version}.json")["counts"]
        tag = " (latest)" if version == latest else ""
        lines.append(f"- v{version}{tag}: {stored['succeeded']}/{stored['total']} complete")
    assert out.stdout.splitlines() == [
        "Job Status: Complete",
        "- Successful: 5",
        "- Failed: 3 (3 in DLQ, 0 retriable)",
        "- Pending: 0",
        "",
        "Available checkpoints:",
        *lines,
        "",
        f"Any version from v0 to v11 can be restored with "
        f"`prodigy resume-job {job_id} --from-checkpoint N`.",
    ]

    listing = prodigy(world, "checkpoints", "list")
    assert listing.returncode == 0
    assert [line.split() for line in listing.stdout.splitlines()[1:]] == [
        [job_id, "completed", "5/8"]
    ]

    shown = prodigy(world, "checkpoints", "show", job_id)
    assert shown.returncode == 0 and shown.stderr == ""
    assert json.loads(shown.stdout) == checkpoint_json(job / "latest.json")
    older = on_disk[1]
    shown = prodigy(world, "checkpoints", "show", job_id, "--version", str(older))
    assert json.loads(shown.stdout) == checkpoint_json(job / f"checkpoint-v{older}.json")
    for version in on_disk:
        # The journal rebuilds what was written (items running then are pending in a rebuild).
        written = checkpoint_json(job / f"checkpoint-v{version}.json")
        rebuilt = json.loads(encode_checkpoint(rebuild_checkpoint_document(JobDir(job), version)))
        assert rebuilt == running_as_recorded(written, rebuilt)

    pruned = min(set(range(12)) - set(on_disk) - {0})
    shown = prodigy(world, "checkpoints", "show", job_id, "--version", str(pruned))
    assert shown.returncode == 0
    assert f"v{pruned}" in shown.stderr and "rebuilt from the journal" in shown.stderr
    document = json.loads(shown.stdout)
    assert document["version"] == pruned
    done_by_then = {
        e["item_id"] for e in ended if e["type"] == "agent_completed" and e["version"] <= pruned
    }
    assert document["counts"]["succeeded"] == len(done_by_then)
    listed = checkpoint_items(world.job_dir(job_id), document)
    assert {i["id"] for i in listed if i["status"] == "succeeded"} == done_by_then

    too_far = prodigy(world, "checkpoints", "show", job_id, "--version", "12")
    assert too_far.returncode == 1 and too_far.stdout == ""
    assert "0 to 11" in too_far.stderr and f"v{on_disk[0]}" in too_far.stderr


def test_a_damaged_checkpoint_is_named_and_never_crashes_the_listing(world: Env) -> None:
    job_id = fast_job(world, ["ok", "ok", "ok", "ok"])
    job = world.job_dir(job_id)
    versions = sorted(int(p.stem.split("-v")[1]) for p in job.glob("checkpoint-v*.json"))
    damaged, other = versions[0], versions[1]
    path = job / f"checkpoint-v{damaged}.json"
    path.write_bytes(path.read_bytes()[:40])
    (job / f"checkpoint-v{other}.json").write_text('{"hello": 1}')

    out = prodigy(world, "checkpoints", "list", job_id)
    assert out.returncode == 0
    assert f"- v{damaged}: unreadable (not valid JSON" in out.stdout
    assert f"- v{other}: unreadable (not a prodigy checkpoint" in out.stdout
    assert f"- v{versions[-1]} (latest): 4/4 complete" in out.stdout

    shown = prodigy(world, "checkpoints", "show", job_id, "--version", str(damaged))
    assert shown.returncode == 1 and shown.stdout == ""
    assert str(path) in shown.stderr and len(shown.stderr.strip().splitlines()) == 1

    latest = job / f"checkpoint-v{versions[-1]}.json"
    latest.write_bytes(b"{")
    shown = prodigy(world, "checkpoints", "show", job_id)
    assert shown.returncode == 1 and str(latest) in shown.stderr
    assert f"v{damaged}" in shown.stderr  # the other versions on disk are named


def test_an_interrupted_job_and_a_running_one(world: Env) -> None:
    world.write("wf.yaml", INTERRUPTIBLE)
    world.write_json("items.json", INTERRUPTIBLE_ITEMS)
    proc = world.popen("cook", "wf.yaml", PRODIGY_INTERRUPT_GRACE="0.5")
    try:
        assert proc.stdout is not None
        job_id = job_id_of(proc.stdout.readline())

        def settled() -> bool:
            types = Counter(e["type"] for e in world.events(job_id))
            return (
                types["agent_completed"] == 3
                and types["dlq_item_added"] == 1
                and types["agent_retrying"] == 1
            )

        wait_for(settled, what="three successes, one retry pending and one DLQ entry")

        # Running: listed as such, and never cleaned, not even with --force.
        listing = prodigy(world, "checkpoints", "list")
        assert [line.split()[:2] for line in listing.stdout.splitlines()[1:]] == [
            [job_id, "running"]
        ]
        refused = prodigy(world, "checkpoints", "clean", job_id, "--force")
        assert refused.returncode == 1
        assert f"PID {proc.pid}" in refused.stderr and "running" in refused.stderr
        swept = prodigy(world, "checkpoints", "clean", "--all", "--older-than", "0s", "--force")
        assert swept.returncode == 0 and f"PID {proc.pid}" in swept.stdout
        assert world.job_dir(job_id).is_dir()

        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130

    where = item_sets(world.events(job_id))
    out = prodigy(world, "checkpoints", "list", job_id)
    assert out.stdout.splitlines()[:4] == [
        "Job Status: Incomplete",
        f"- Successful: {len(where['agent_completed'])}",
        f"- Failed: 2 ({len(where['dlq_item_added'])} in DLQ, "
        f"{len(where['agent_retrying'])} retriable)",
        "- Pending: 1",
    ]
    assert "Any version from v0 to v5 can be restored" in out.stdout

    unforced = prodigy(world, "checkpoints", "clean", job_id)
    assert unforced.returncode == 1
    assert "--force" in unforced.stderr and f"prodigy resume-job {job_id}" in unforced.stderr
    assert world.job_dir(job_id).is_dir()
    forced = prodigy(world, "checkpoints", "clean", job_id, "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"Deleted {job_id} (interrupted" in forced.stdout
    assert not world.job_dir(job_id).exists()


def test_clean_deletes_exactly_the_job_named(world: Env) -> None:
    first = fast_job(world, ["ok", "ok"])
    second = fast_job(world, ["ok", "fail"])  # finished, with an item in the DLQ
    kept = sorted(p.name for p in world.job_dir(first).iterdir())

    dry = prodigy(world, "checkpoints", "clean", second, "--dry-run")
    assert dry.returncode == 0 and f"Would delete {second} (completed" in dry.stdout
    assert world.job_dir(second).is_dir()

    done = prodigy(world, "checkpoints", "clean", second)
    assert done.returncode == 0, done.stderr
    assert f"Deleted {second} (completed, 1/2 succeeded" in done.stdout
    assert "Deleted 1 job" in done.stdout
    assert not world.job_dir(second).exists()
    assert sorted(p.name for p in world.job_dir(first).iterdir()) == kept
    assert sorted(p.name for p in world.jobs_dir().iterdir()) == [first]

    gone = prodigy(world, "checkpoints", "list", second)
    assert gone.returncode == 1 and "Checkpoint not found" in gone.stderr


def test_clean_refuses_a_locked_job(world: Env) -> None:
    job_id = fast_job(world, ["ok"])
    lock = JobLock(world.job_dir(job_id) / "lock", job_id, "resume")
    with lock:
        refused = prodigy(world, "checkpoints", "clean", job_id, "--force")
        assert refused.returncode == 1 and f"PID {os.getpid()}" in refused.stderr
        dry = prodigy(world, "checkpoints", "clean", job_id, "--force", "--dry-run")
        assert dry.returncode == 1 and f"PID {os.getpid()}" in dry.stderr
        swept = prodigy(world, "checkpoints", "clean", "--all", "--older-than", "0s", "--force")
        assert swept.returncode == 0 and "Deleted 0 jobs" in swept.stdout
        assert world.job_dir(job_id).is_dir()
    assert prodigy(world, "checkpoints", "clean", job_id).returncode == 0
    assert not world.job_dir(job_id).exists()


def _backdate(world: Env, job_id: str, days: int) -> None:
    path = world.job_dir(job_id) / "metadata.json"
    meta = json.loads(path.read_text())
    meta["updated_at"] = (datetime.now().astimezone() - timedelta(days=days)).isoformat()
    path.write_text(json.dumps(meta))


def test_clean_all_older_than(world: Env) -> None:
    old_done = fast_job(world, ["ok"])
    old_stopped = fast_job(world, ["fail", "ok"], policy="stop")
    recent = fast_job(world, ["ok"])
    no_metadata = fast_job(world, ["ok"])
    _backdate(world, old_done, 10)
    _backdate(world, old_stopped, 8)
    (world.job_dir(no_metadata) / "metadata.json").unlink()
    long_ago = (datetime.now() - timedelta(days=30)).timestamp()
    os.utime(world.job_dir(no_metadata), (long_ago, long_ago))
    everything = {old_done, old_stopped, recent, no_metadata}

    def remaining() -> set[str]:
        return {p.name for p in world.jobs_dir().iterdir()}

    dry = prodigy(world, "checkpoints", "clean", "--all", "--older-than", "7d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith(
        f"Would delete {old_done} (completed, 1/1 succeeded, last update 10d"
    )
    assert lines[1].startswith(f"Skipped: Job {old_stopped} is not finished (stopped")
    assert "--force" in lines[-1]
    # Without metadata.json the age is the directory's; the journal says it completed.
    assert lines[2].startswith(f"Would delete {no_metadata} (completed (damaged), 1/1 succeeded")
    assert "last update 30d ago" in lines[2]
    assert len(lines) == 4 and "nothing was deleted" in lines[3] and "kept 1" in lines[3]
    assert remaining() == everything

    out = prodigy(world, "checkpoints", "clean", "--all", "--older-than", "7d")
    assert out.returncode == 0, out.stderr
    assert remaining() == {old_stopped, recent}
    assert "Deleted 2 jobs" in out.stdout and "kept 1" in out.stdout and "skipped 1" in out.stdout

    forced = prodigy(world, "checkpoints", "clean", "--all", "--older-than", "1w", "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith(f"Deleted {old_stopped} (stopped, 0/2 succeeded")
    assert remaining() == {recent}


@pytest.mark.parametrize(
    "args",
    [
        ["clean", "--all", "--older-than", "7x"],
        ["clean", "--all", "--older-than", "7"],
        ["clean", "--all"],
        ["clean", "mapreduce-20240101-123456", "--all", "--older-than", "7d"],
        ["clean", "mapreduce-20240101-123456", "--older-than", "7d"],
        ["prune"],
        ["show", "mapreduce-20240101-123456", "--version", "-1"],
    ],
)
def test_usage_errors_exit_2_with_one_clear_error(world: Env, args: list[str]) -> None:
    result = prodigy(world, "checkpoints", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stdout == ""


def test_bad_duration_names_the_value(world: Env) -> None:
    result = prodigy(world, "checkpoints", "clean", "--all", "--older-than", "7x")
    assert "'7x' is not a duration" in result.stderr and "7d" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["list"], ["show"], ["clean", "--force"]],
)
def test_unknown_job_is_not_found(world: Env, args: list[str]) -> None:
    result = prodigy(world, "checkpoints", *args, "mapreduce-20240101-123456")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: Checkpoint not found")
    assert "mapreduce-20240101-123456" in result.stderr


def test_one_item_is_counted_in_the_singular(world: Env) -> None:
    """`1 item`, never `1 items`, in every command's wording of a one-item job."""
    in_dlq = fast_job(world, ["fail"])
    said = {
        "dlq status": prodigy(world, "dlq", "status", in_dlq).stdout,
        "sessions show": prodigy(world, "sessions", "show", in_dlq).stdout,
        "resume-job": prodigy(world, "resume-job", in_dlq).stderr,
    }
    assert f"DLQ of job {in_dlq}: 1 item\n" in said["dlq status"]
    assert "DLQ:" in said["sessions show"] and " 1 item\n" in said["sessions show"]
    assert "the 1 failed item is in the DLQ" in said["resume-job"]
    assert "retry it anyway" in said["resume-job"]

    stopped = fast_job(world, ["fail"], policy="stop")
    said["checkpoints clean"] = prodigy(world, "checkpoints", "clean", stopped).stderr
    assert (
        f"Job {stopped} is not finished (stopped, 0/1 item succeeded)" in said["checkpoints clean"]
    )
    for command, text in said.items():
        assert "1 items" not in text and "1 failed items" not in text, (command, text)
