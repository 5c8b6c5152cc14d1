"""`prodigy dlq reprocess` on jobs made by really running workflows with `prodigy cook`.

Fragile items fail until the test creates their `fixed-<item_id>` marker; every attempt appends
`<item_id> <attempt>` to ran.log, which is how the tests count exactly what ran.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import Env, checkpoint_items, job_id_of, wait_for

AGENT = (
    "echo ${item_id} ${attempt} >> ran.log; test ${item.fragile} = no || test -f fixed-${item_id}"
)

WORKFLOW = """\
name: reprocess-test
mode: mapreduce
map:
  input: items.json
  isolation: none
  max_parallel: 4
  agent_template:
    - shell: "@AGENT@"
@EXTRA@
error_policy:
  retry_config: {max_attempts: @ATTEMPTS@, initial_delay: 0}
reduce:
  - shell: "echo ${map.successful}/${map.total} ${map.failed} >> reduce.log"
"""

# A second agent step for fragile items that, once they pass the first, says it started and
# waits for the `release` file: it holds a reprocess open for as long as a test needs.
SLOW_STEP = (
    '    - shell: "test ${item.fragile} = no || { touch started-${item_id}-${attempt}; '
    'until [ -e release ]; do sleep 0.05; done; }"'
)
# A second step that logs its start and end: overlapping agents interleave these lines.
ORDER_STEP = '    - shell: "echo start >> order.log; sleep 0.1; echo end >> order.log"'


# ---- helpers ------------------------------------------------------------------------------------


def cook(
    world: Env,
    items: list[dict[str, Any]],
    *,
    extra: str = "",
    attempts: int = 2,
    expect: int = 3,
) -> str:
    """Run a real job; items whose `fragile` is "yes" end in the DLQ (until fixed)."""
    world.write_json("items.json", items)
    text = WORKFLOW.replace("@AGENT@", AGENT).replace("@EXTRA@", extra)
    world.write("wf.yaml", text.replace("@ATTEMPTS@", str(attempts)))
    done = world.run("cook", "wf.yaml")
    assert done.returncode == expect, done.stdout + done.stderr
    return job_id_of(done.stdout)


def items_with(fragile: set[int], count: int = 3) -> list[dict[str, Any]]:
    return [{"n": n, "fragile": "yes" if n in fragile else "no"} for n in range(count)]


def fix(world: Env, item_id: str) -> None:
    (world.repo / f"fixed-{item_id}").touch()


def ran(world: Env) -> list[tuple[str, int]]:
    path = world.repo / "ran.log"
    if not path.exists():
        return []
    return [(line.split()[0], int(line.split()[1])) for line in path.read_text().splitlines()]


def reprocess(
    world: Env, job_id: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = world.run("dlq", "reprocess", job_id, *args, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def dlq_list(world: Env, job_id: str) -> dict[str, dict[str, Any]]:
    result = world.run("dlq", "list", job_id, "--json")
    assert result.returncode == 0, result.stderr
    return {entry["item_id"]: entry for entry in json.loads(result.stdout)}


def latest(world: Env, job_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((world.job_dir(job_id) / "latest.json").read_text())
    return document


def item_states(world: Env, job_id: str) -> dict[str, dict[str, Any]]:
    items = checkpoint_items(world.job_dir(job_id), latest(world, job_id))
    return {item["id"]: item for item in items}


def summary_line(stdout: str) -> str:
    """The reprocess result summary (progress lines say "N ok", never "N succeeded")."""
    lines = [line for line in stdout.splitlines() if re.search(r"\b\d+ succeeded\b", line)]
    assert len(lines) == 1, f"no single result summary in: {stdout!r}"
    return lines[0]


def one_sentence_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


# ---- outcomes -----------------------------------------------------------------------------------


def test_success_removes_the_item_from_the_dlq_and_records_it_as_succeeded(world: Env) -> None:
    job_id = cook(world, items_with({1}))
    assert set(dlq_list(world, job_id)) == {"item_1"}
    assert sorted(ran(world)) == [("item_0", 1), ("item_1", 1), ("item_1", 2), ("item_2", 1)]
    version_before = latest(world, job_id)["version"]
    events_before = len(world.events(job_id))

    fix(world, "item_1")
    result = reprocess(world, job_id)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Processing 1 DLQ item..." in result.stdout
    summary = summary_line(result.stdout)
    assert re.search(r"\b1 succeeded\b", summary) and re.search(r"\b0 failed\b", summary), summary
    assert dlq_list(world, job_id) == {}
    assert json.loads(world.run("dlq", "list", job_id, "--json").stdout) == []

    # Attempt numbers keep counting: two failures in the cook, so this was attempt 3.
    assert sorted(ran(world)) == [
        ("item_0", 1),
        ("item_1", 1),
        ("item_1", 2),
        ("item_1", 3),
        ("item_2", 1),
    ]
    checkpoint = latest(world, job_id)
    assert checkpoint["version"] > version_before
    states = item_states(world, job_id)
    assert states["item_1"]["status"] == "succeeded"
    assert states["item_1"]["attempts"] == 3
    assert checkpoint["counts"]["succeeded"] == 3
    assert checkpoint["counts"]["dead_lettered"] == 0
    assert checkpoint["dlq"] == []

    new = world.events(job_id)[events_before:]
    removed = [e for e in new if e["type"] == "dlq_item_removed"]
    completed = [e for e in new if e["type"] == "agent_completed"]
    assert [e["item_id"] for e in removed] == ["item_1"]
    assert [(e["item_id"], e["attempt"]) for e in completed] == [("item_1", 3)]
    started = [e["item_id"] for e in new if e["type"] == "agent_started"]
    assert started == ["item_1"], "items that already succeeded must never run again"
    versions = [e["version"] for e in new if e["type"] == "checkpoint_created"]
    assert versions and max(versions) == checkpoint["version"]


def test_failure_keeps_the_item_with_its_history_extended(world: Env) -> None:
    job_id = cook(world, items_with({1}))
    version_before = latest(world, job_id)["version"]

    # From another directory: the job is found under PRODIGY_HOME and runs in its own workdir.
    result = reprocess(world, job_id, cwd=world.home.parent)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "Processing 1 DLQ item..." in result.stdout
    summary = summary_line(result.stdout)
    assert re.search(r"\b0 succeeded\b", summary) and re.search(r"\b1 failed\b", summary), summary
    entry = dlq_list(world, job_id)["item_1"]
    assert entry["attempts"] == 4
    assert [a for i, a in ran(world) if i == "item_1"] == [1, 2, 3, 4]
    assert [i for i, _ in ran(world)].count("item_0") == 1
    assert [i for i, _ in ran(world)].count("item_2") == 1

    shown = world.run("dlq", "show", job_id, "item_1")
    assert shown.returncode == 0, shown.stderr
    numbers = [int(n) for n in re.findall(r"^Attempt (\d+) of 4\b", shown.stdout, re.M)]
    assert numbers == [1, 2, 3, 4], shown.stdout

    states = item_states(world, job_id)
    assert states["item_1"]["status"] == "dead-lettered"
    assert states["item_1"]["attempts"] == 4
    assert latest(world, job_id)["version"] == version_before + 2


def test_mixed_outcome_one_item_leaves_and_one_stays(world: Env) -> None:
    job_id = cook(world, items_with({1, 2}))
    assert set(dlq_list(world, job_id)) == {"item_1", "item_2"}
    events_before = len(world.events(job_id))

    fix(world, "item_1")
    result = reprocess(world, job_id)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "Processing 2 DLQ items..." in result.stdout
    summary = summary_line(result.stdout)
    assert re.search(r"\b1 succeeded\b", summary) and re.search(r"\b1 failed\b", summary), summary
    remaining = dlq_list(world, job_id)
    assert set(remaining) == {"item_2"}
    assert remaining["item_2"]["attempts"] == 4

    states = item_states(world, job_id)
    assert (states["item_1"]["status"], states["item_1"]["attempts"]) == ("succeeded", 3)
    assert (states["item_2"]["status"], states["item_2"]["attempts"]) == ("dead-lettered", 4)
    counts = latest(world, job_id)["counts"]
    assert (counts["succeeded"], counts["dead_lettered"]) == (2, 1)

    # Both left the DLQ when they were requeued; the one that failed again came back to it.
    new = world.events(job_id)[events_before:]
    dlq_moves = [(e["type"], e["item_id"]) for e in new if e["type"].startswith("dlq_item")]
    assert sorted(dlq_moves[:2]) == [("dlq_item_removed", "item_1"), ("dlq_item_removed", "item_2")]
    assert dlq_moves[2:] == [("dlq_item_added", "item_2")]
    assert new.index(next(e for e in new if e["type"] == "dlq_item_removed")) < new.index(
        next(e for e in new if e["type"] == "dlq_reprocess_started")
    ), "the items leave the DLQ once the requeue is durable, before the run starts"
    assert [e["item_id"] for e in new if e["type"] == "agent_completed"] == ["item_1"]
    assert [i for i, _ in ran(world)].count("item_0") == 1
    # Every event prodigy writes is a type `events show --type` knows.
    shown = world.run("events", "show", job_id, "--type", "dlq_reprocess_started")
    assert shown.returncode == 0, shown.stderr
    assert "dlq_reprocess_started" in shown.stdout and "items=2" in shown.stdout


# ---- choosing items -----------------------------------------------------------------------------


def test_item_option_reprocesses_only_that_item_and_rejects_bad_ids(world: Env) -> None:
    job_id = cook(world, items_with({1, 2}))
    fix(world, "item_1")
    fix(world, "item_2")
    before = ran(world)

    unknown = one_sentence_error(reprocess(world, job_id, "--item", "nope"))
    assert "nope" in unknown
    not_dead = one_sentence_error(reprocess(world, job_id, "--item", "item_0"))
    assert "item_0" in not_dead and "not in the DLQ" in not_dead
    # One bad id refuses the whole command: nothing runs, not even the good id.
    one_sentence_error(reprocess(world, job_id, "--item", "item_2", "--item", "nope"))
    assert ran(world) == before
    assert set(dlq_list(world, job_id)) == {"item_1", "item_2"}

    result = reprocess(world, job_id, "--item", "item_2")
    # SPEC §1: 3 while the job still has items in its DLQ, whichever items were chosen.
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Processing 1 DLQ item..." in result.stdout
    assert ran(world)[len(before) :] == [("item_2", 3)]
    assert set(dlq_list(world, job_id)) == {"item_1"}
    assert item_states(world, job_id)["item_2"]["status"] == "succeeded"
    emptied = reprocess(world, job_id, "--item", "item_1")
    assert emptied.returncode == 0, emptied.stdout + emptied.stderr
    assert dlq_list(world, job_id) == {}


def test_manual_review_items_are_skipped_unless_forced(world: Env) -> None:
    # item_2 lacks the `fragile` field the template uses: manual review from the start.
    job_id = cook(world, [*items_with({1}, count=2), {"n": 2}])
    entries = dlq_list(world, job_id)
    assert set(entries) == {"item_1", "item_2"}
    assert entries["item_2"]["error_kind"] == "missing_variable"
    assert (entries["item_1"]["manual_review"], entries["item_2"]["manual_review"]) == (False, True)

    # Without --force the missing-field item is skipped; item_1 fails twice more (4 in a row).
    first = reprocess(world, job_id)
    assert first.returncode == 3, first.stdout + first.stderr
    said = (first.stdout + first.stderr).lower()
    assert "manual review" in said and "--force" in said, said
    assert "Processing 1 DLQ item..." in first.stdout
    entries = dlq_list(world, job_id)
    assert entries["item_1"]["attempts"] == 4
    assert entries["item_2"]["attempts"] == 1, "a skipped item must not run"

    # Now item_1 has failed with the same error 3+ times: both need manual review.
    assert entries["item_1"]["manual_review"] and entries["item_2"]["manual_review"]
    before = ran(world)
    second = reprocess(world, job_id)
    assert second.returncode == 0, second.stdout + second.stderr
    said = (second.stdout + second.stderr).lower()
    assert "manual review" in said and "--force" in said, said
    assert "Processing" not in second.stdout
    assert ran(world) == before
    assert set(dlq_list(world, job_id)) == {"item_1", "item_2"}

    fix(world, "item_1")
    forced = reprocess(world, job_id, "--force")
    assert forced.returncode == 3, forced.stdout + forced.stderr
    assert "Processing 2 DLQ items..." in forced.stdout
    assert ran(world)[len(before) :] == [("item_1", 5)]
    entries = dlq_list(world, job_id)
    assert set(entries) == {"item_2"}
    assert entries["item_2"]["attempts"] == 2
    assert item_states(world, job_id)["item_1"]["status"] == "succeeded"


# ---- the lock -----------------------------------------------------------------------------------


def test_concurrent_reprocess_and_resume_are_refused_while_one_runs(world: Env) -> None:
    job_id = cook(world, items_with({1}), extra=SLOW_STEP)
    fix(world, "item_1")
    events_before = len(world.events(job_id))
    first = world.popen("dlq", "reprocess", job_id)
    try:
        wait_for(lambda: (world.repo / "started-item_1-3").exists(), timeout=20, what="agent start")
        new = world.events(job_id)[events_before:]
        assert [e["item_id"] for e in new if e["type"] == "agent_started"] == ["item_1"]

        began = time.monotonic()
        second = world.run("dlq", "reprocess", job_id, timeout=15)
        # The first reprocess holds the lock until `release` exists: waiting for it would hang.
        assert time.monotonic() - began < 10, "the refusal must not wait for the lock"
        message = one_sentence_error(second)
        assert f"PID {first.pid}" in message, message
        assert "Processing" not in second.stdout

        resumed = world.run("resume-job", job_id, "--force", "-y", timeout=15)
        assert resumed.returncode == 1, resumed.stdout + resumed.stderr
        assert "Traceback" not in resumed.stderr
        assert f"PID {first.pid}" in resumed.stderr, resumed.stderr
        assert first.poll() is None, "the first reprocess must still be running"
    finally:
        (world.repo / "release").touch()
        try:
            out, err = first.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(first.pid, signal.SIGKILL)
            raise
    assert first.returncode == 0, out + err
    assert "Processing 1 DLQ item..." in out
    assert dlq_list(world, job_id) == {}
    assert [a for i, a in ran(world) if i == "item_1"] == [1, 2, 3]
    assert item_states(world, job_id)["item_1"]["status"] == "succeeded"


# ---- flags and edge cases -----------------------------------------------------------------------


def test_max_parallel_limits_agents_running_at_once(world: Env) -> None:
    job_id = cook(world, items_with({0, 1, 2}), extra=ORDER_STEP)
    for n in range(3):
        fix(world, f"item_{n}")
    result = reprocess(world, job_id, "--max-parallel", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Processing 3 DLQ items..." in result.stdout
    order = (world.repo / "order.log").read_text().split()
    assert order == ["start", "end"] * 3, order
    assert dlq_list(world, job_id) == {}

    bad = world.run("dlq", "reprocess", job_id, "--max-parallel", "0")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr


def test_unknown_job_is_not_found(world: Env) -> None:
    world.write_json("items.json", [])
    result = reprocess(world, "mapreduce-20000101-000000")
    message = one_sentence_error(result)
    assert "not found" in message.lower()
    assert "mapreduce-20000101-000000" in message


def test_job_with_an_empty_dlq_has_nothing_to_do(world: Env) -> None:
    job_id = cook(world, items_with(set()), expect=0)
    before = ran(world)
    result = reprocess(world, job_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip(), "a reprocess with nothing to do must say so"
    assert "DLQ" in result.stdout and job_id in result.stdout
    assert "Processing" not in result.stdout
    assert ran(world) == before


def test_resume_force_reruns_reduce_after_a_successful_reprocess(world: Env) -> None:
    job_id = cook(world, items_with({1}))
    assert (world.repo / "reduce.log").read_text().splitlines() == ["2/3 1"]
    fix(world, "item_1")
    result = reprocess(world, job_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"prodigy resume-job {job_id} --force" in result.stdout

    before = ran(world)
    resumed = world.run("resume-job", job_id, "--force", "-y")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (world.repo / "reduce.log").read_text().splitlines()[-1] == "3/3 0"
    assert ran(world) == before, "succeeded items are never re-run by --force"
