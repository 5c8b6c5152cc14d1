"""The flags and messages of `prodigy resume` / `resume-job`, as the resume guide shows them.

Every test drives the real executable. Agents append to log files in the repository so the
tests count exactly what ran; an agent whose `hold/<item_id>-<attempt>` file exists waits until
the test removes it, which is how a test interrupts a job at a known point.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Env, checkpoint_items, events, hold, ids, job_id_of, lines, the_job, wait_for
from prodigy.journal import encode_record
from prodigy.state import JobEnded

AGENT = """\
    - shell: >-
        echo ${item_id} ${attempt} >> started.log; echo + >> running.log;
        while [ -e hold/${item_id}-${attempt} ]; do sleep 0.02; done;
        echo ${item_id} ${attempt} >> runs.log; echo - >> running.log;
        @COMMAND@
"""

PLAIN = (
    """\
name: cli-test
mode: mapreduce
map:
  input: items.json
  isolation: none
  max_parallel: @MAX_PARALLEL@
  agent_template:
"""
    + AGENT.replace("@COMMAND@", "true")
    + """\
reduce:
  - shell: "echo ${map.successful}/${map.total} ${map.failed} >> reduce.log"
"""
)

RETRYING = (
    """\
name: retry-test
mode: mapreduce
map:
  input: items.json
  isolation: none
  max_parallel: 4
  agent_template:
"""
    + AGENT.replace("@COMMAND@", "${item.cmd}")
    + """\
error_policy:
  retry_config:
    max_attempts: 2
    backoff: fixed
    initial_delay: @DELAY@
    jitter: false
reduce:
  - shell: "echo reduce >> reduce.log"
  - write_file: {path: results.json, content: "${map.results}", format: json}
"""
)

# An item command that fails on its first attempt only.
FAIL_ONCE = "test -e seen-$PRODIGY_ITEM_ID || { touch seen-$PRODIGY_ITEM_ID; exit 1; }"


# ---- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def w(world: Env) -> Iterator[Env]:
    world.env["PRODIGY_INTERRUPT_GRACE"] = "0.3"
    (world.repo / "hold").mkdir()
    yield world


def plain_job(w: Env, items: int, max_parallel: int) -> None:
    w.write("wf.yml", PLAIN.replace("@MAX_PARALLEL@", str(max_parallel)))
    w.write_json("items.json", [{"n": n} for n in range(items)])


def retry_job(w: Env, cmds: list[str | None], delay: str) -> None:
    w.write("wf.yml", RETRYING.replace("@DELAY@", delay))
    w.write_json("items.json", [{"cmd": c} if c is not None else {"n": 0} for c in cmds])


def release_all(w: Env) -> None:
    for path in (w.repo / "hold").iterdir():
        path.unlink()


def attempts_of(w: Env, log: str) -> dict[str, list[int]]:
    """Per item, the attempt numbers logged, in order."""
    out: dict[str, list[int]] = {}
    for line in lines(w, log):
        item, attempt = line.split()
        out.setdefault(item, []).append(int(attempt))
    return out


def runs(w: Env) -> Counter[str]:
    return Counter(line.split()[0] for line in lines(w, "runs.log"))


def recorded(w: Env, job: str, kind: str) -> set[str]:
    return {e["item_id"] for e in events(w, job, kind)}


def latest(w: Env, job: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((w.job_dir(job) / "latest.json").read_text())
    return data


def item_states(w: Env, job: str) -> dict[str, tuple[str, int]]:
    items = checkpoint_items(w.job_dir(job), latest(w, job))
    return {i["id"]: (i["status"], i["attempts"]) for i in items}


def results(w: Env) -> dict[str, dict[str, Any]]:
    return {r["item_id"]: r for r in json.loads((w.repo / "results.json").read_text())}


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def interrupted_plain_job(w: Env, items: int, held: list[str], done: list[str]) -> str:
    """Ctrl-C a job once `done` are recorded and the `held` agents are running."""
    hold(w, *(f"{h}-1" for h in held))
    proc = w.popen("cook", "wf.yml")
    job = the_job(w)
    wait_for(lambda: set(done) <= recorded(w, job, "agent_completed"), what=f"{done} done")
    wait_for(
        lambda: set(held) <= {line.split()[0] for line in lines(w, "started.log")},
        what=f"{held} to start",
    )
    rc, out, err = interrupt(proc)
    assert rc == 130, out + err
    return job


def resume(w: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return w.run(*args, timeout=40)


def max_running(marks: list[str]) -> int:
    """The most agents running at once, from their start (+) and end (-) marks in order."""
    running = most = 0
    for mark in marks:
        running += 1 if mark == "+" else -1
        most = max(most, running)
    return most


def in_order(text: str, *parts: str) -> bool:
    """Each part appears in `text`, each after the previous one."""
    position = 0
    for part in parts:
        found = text.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


# ---- Example 1: resume after an interruption --------------------------------------------------


def test_resume_prints_the_guides_progress_lines(w: Env) -> None:
    plain_job(w, items=8, max_parallel=2)
    job = interrupted_plain_job(w, 8, held=ids(3, 4), done=ids(0, 1, 2))
    release_all(w)

    result = resume(w, "resume")
    assert result.returncode == 0, result.stdout + result.stderr
    assert in_order(
        result.stdout,
        f"Resuming job {job}\n",
        "Loaded checkpoint v3: 3 completed, 5 remaining\n",
        "Continuing with 5 pending items...\n",
        "Job completed successfully!",
    ), result.stdout
    assert runs(w) == Counter(ids(*range(8)))
    assert lines(w, "reduce.log") == ["8/8 0"]


# ---- Example 2: retries and the DLQ across a resume -------------------------------------------


def test_retry_counts_and_dlq_entries_survive_a_resume(w: Env) -> None:
    # item_1 fails once and waits 30 s for its retry; item_2 lacks `cmd` and goes to the DLQ.
    retry_job(w, ["true", FAIL_ONCE, None, "true"], delay="30s")
    hold(w, "item_3-1")
    proc = w.popen("cook", "wf.yml")
    job = the_job(w)
    wait_for(lambda: "item_1" in recorded(w, job, "agent_retrying"), what="item_1 to fail once")
    wait_for(lambda: "item_2" in recorded(w, job, "dlq_item_added"), what="item_2 in the DLQ")
    wait_for(lambda: "item_0" in recorded(w, job, "agent_completed"), what="item_0 done")
    wait_for(lambda: "item_3 1" in lines(w, "started.log"), what="item_3 to start")
    rc, out, err = interrupt(proc)
    assert rc == 130, out + err
    before = item_states(w, job)
    assert before["item_1"] == ("failed-retriable", 1), before
    assert before["item_2"] == ("dead-lettered", 1), before
    assert latest(w, job)["dlq"] == ["item_2"]
    release_all(w)

    clock = time.monotonic()
    result = resume(w, "resume-job", job)
    assert result.returncode == 3, result.stdout + result.stderr
    assert time.monotonic() - clock < 20, "the retry waited out its backoff after the resume"
    after = item_states(w, job)
    assert after["item_1"] == ("succeeded", 2), after
    assert after["item_2"] == ("dead-lettered", 1), after
    assert latest(w, job)["dlq"] == ["item_2"]
    # item_1 got exactly its one remaining attempt; the DLQ item was not run again.
    assert attempts_of(w, "runs.log") == {
        "item_0": [1],
        "item_1": [1, 2],
        "item_3": [1],
    }
    by_item = results(w)
    assert by_item["item_1"]["attempts"] == 2 and by_item["item_1"]["status"] == "succeeded"
    assert by_item["item_2"]["attempts"] == 1 and by_item["item_2"]["status"] == "failed"
    assert [e["item_id"] for e in events(w, job, "dlq_item_added")] == ["item_2"]


def test_max_additional_retries_gives_exactly_n_more_attempts(w: Env) -> None:
    retry_job(w, ["exit 1", "true"], delay="0.05s")
    # The retry (attempt 2) of item_0 is running when Ctrl-C comes: it does not count.
    hold(w, "item_0-2")
    proc = w.popen("cook", "wf.yml")
    job = the_job(w)
    wait_for(lambda: "item_0 2" in lines(w, "started.log"), what="item_0's retry")
    wait_for(lambda: "item_1" in recorded(w, job, "agent_completed"), what="item_1 done")
    rc, out, err = interrupt(proc)
    assert rc == 130, out + err
    assert item_states(w, job)["item_0"] == ("failed-retriable", 1)
    release_all(w)

    result = resume(w, "resume-job", job, "--max-additional-retries", "2")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Resuming with 1 retriable item" in result.stdout
    assert "Granting 2 additional retry attempts" in result.stdout
    # max_attempts (2) + 2 additional: attempts 1 to 4, each once, then the DLQ.
    assert attempts_of(w, "runs.log") == {"item_0": [1, 2, 3, 4], "item_1": [1]}
    assert item_states(w, job)["item_0"] == ("dead-lettered", 4)
    assert results(w)["item_0"]["attempts"] == 4


def test_job_resumed_event_carries_the_version_and_the_counts(w: Env) -> None:
    # item_1 lacks `cmd`, so it goes straight to the DLQ; item_2 and item_3 are held running.
    retry_job(w, ["true", None, "true", "true"], delay="0s")
    hold(w, "item_2-1", "item_3-1")
    proc = w.popen("cook", "wf.yml")
    job = the_job(w)
    wait_for(lambda: "item_1" in recorded(w, job, "dlq_item_added"), what="item_1 in the DLQ")
    wait_for(lambda: "item_0" in recorded(w, job, "agent_completed"), what="item_0 done")
    wait_for(lambda: {"item_2 1", "item_3 1"} <= set(lines(w, "started.log")), what="held agents")
    rc, out, err = interrupt(proc)
    assert rc == 130, out + err
    release_all(w)

    result = resume(w, "resume-job", job)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Loaded checkpoint v2: 1 completed, 2 remaining, 1 in DLQ" in result.stdout
    [resumed] = events(w, job, "job_resumed")
    counted = {k: resumed[k] for k in ("total", "succeeded", "failed", "dead_lettered")}
    assert counted == {"total": 4, "succeeded": 1, "failed": 1, "dead_lettered": 1}
    assert (resumed["version"], resumed["remaining"]) == (2, 2)
    # The same names as the other events that carry counts.
    [completed] = events(w, job, "job_completed")
    assert set(counted) | {"remaining"} <= set(completed)

    shown = w.run("events", "show", job, "--type", "job_resumed")
    assert shown.returncode == 0, shown.stderr
    assert re.search(
        r"job_resumed +v2  1/4 succeeded, 2 remaining, 1 in DLQ  workflow=\S*wf\.yml$",
        shown.stdout.strip(),
    ), shown.stdout


# ---- Example 3: parallelism override ----------------------------------------------------------


def test_max_parallel_override(w: Env) -> None:
    plain_job(w, items=9, max_parallel=2)
    job = interrupted_plain_job(w, 9, held=ids(0, 1), done=[])
    # On resume every agent waits, so the number running at once is plain to see.
    hold(w, *(f"item_{n}-1" for n in range(9)))

    before = len(lines(w, "running.log"))
    proc = w.popen("resume-job", job, "--max-parallel", "5")
    wait_for(lambda: len(lines(w, "started.log")) >= 2 + 5, what="5 agents at once")
    release_all(w)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    assert max_running(lines(w, "running.log")[before:]) == 5
    assert events(w, job, "map_started")[-1]["max_parallel"] == 5
    assert "Resuming job with max_parallel override: 2 -> 5" in out
    assert "Processing 9 remaining items with 5 parallel agents..." in out
    assert runs(w) == Counter(ids(*range(9)))


# ---- Example 4: recovery from a checkpoint ----------------------------------------------------


def test_from_checkpoint_reruns_exactly_the_items_finished_after_it(w: Env) -> None:
    plain_job(w, items=6, max_parallel=1)
    job = interrupted_plain_job(w, 6, held=ids(4), done=ids(0, 1, 2, 3))
    release_all(w)

    unknown = resume(w, "resume-job", job, "--from-checkpoint", "99")
    assert unknown.returncode == 1, unknown.stdout + unknown.stderr
    assert re.search(r"\b0 to 4\b", unknown.stderr), unknown.stderr
    assert "Traceback" not in unknown.stderr
    assert not events(w, job, "checkpoint_restored")

    result = resume(w, "resume-job", job, "--from-checkpoint", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert in_order(
        result.stdout,
        "Loading checkpoint v2...\n",
        "Rolling back to: 2 completed, 4 remaining\n",
        "Continuing from checkpoint v2...\n",
    ), result.stdout
    # With one agent at a time, versions 3 and 4 were item_2 and item_3.
    assert runs(w) == Counter(ids(0, 1, 2, 2, 3, 3, 4, 5))
    assert [e["version"] for e in events(w, job, "checkpoint_restored")] == [2]
    assert lines(w, "reduce.log") == ["6/6 0"]


# ---- validation -------------------------------------------------------------------------------


def test_changed_workflow_is_refused_unless_validation_is_skipped(w: Env) -> None:
    plain_job(w, items=4, max_parallel=1)
    job = interrupted_plain_job(w, 4, held=ids(1), done=ids(0))
    release_all(w)
    w.write("wf.yml", PLAIN.replace("@MAX_PARALLEL@", "2"))
    started = lines(w, "started.log")

    refused = resume(w, "resume-job", job)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "changed" in refused.stderr, refused.stderr
    assert lines(w, "started.log") == started, "agents ran although the resume was refused"

    result = resume(w, "resume-job", job, "--skip-validation")
    assert result.returncode == 0, result.stdout + result.stderr
    assert runs(w) == Counter(ids(0, 1, 2, 3))


def test_deleted_workflow_file_is_reported(w: Env) -> None:
    plain_job(w, items=3, max_parallel=1)
    job = interrupted_plain_job(w, 3, held=ids(1), done=ids(0))
    workflow = w.repo / "wf.yml"
    workflow.unlink()

    result = resume(w, "resume-job", job)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Workflow file not found" in result.stderr, result.stderr
    assert str(workflow) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_complete_job_is_refused_unless_skip_validation_or_force(w: Env) -> None:
    plain_job(w, items=3, max_parallel=2)
    cooked = w.run("cook", "wf.yml")
    assert cooked.returncode == 0, cooked.stdout + cooked.stderr
    job = the_job(w)

    refused = resume(w, "resume-job", job, "--verbose")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"Job {job} is already complete" in refused.stderr, refused.stderr

    skipped = resume(w, "resume-job", job, "--skip-validation")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr

    forced = resume(w, "resume-job", job, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert lines(w, "reduce.log") == ["3/3 0", "3/3 0"], "the reduce phase did not re-run"
    assert runs(w) == Counter(ids(0, 1, 2)), "--force re-ran succeeded items"


@pytest.mark.parametrize("end", ["none", "interrupted"])
def test_a_job_stopped_after_its_last_step_but_before_its_end_is_finished_by_resume(
    w: Env, end: str
) -> None:
    """Found by the kill soak: a SIGINT (or a kill) landing after reduce's last record but
    before `job_ended: completed` left a job that said "Resume with: ..." and a resume that
    refused it as already complete (exit 1), so it could never be marked completed."""
    plain_job(w, items=3, max_parallel=2)
    cooked = w.run("cook", "wf.yml")
    assert cooked.returncode == 0, cooked.stdout + cooked.stderr
    job = the_job(w)
    path = w.job_dir(job) / "journal.jsonl"
    kept = path.read_bytes().splitlines(keepends=True)
    assert json.loads(kept[-1])["status"] == "completed"
    tail = [] if end == "none" else [encode_record(JobEnded(status="interrupted", reason="SIGINT"))]
    path.write_bytes(b"".join(kept[:-1] + tail))
    # As a crash there would have left it: no checkpoint holds more of the journal than that.
    for written in w.job_dir(job).glob("checkpoint-v*.json"):
        written.unlink()
    (w.job_dir(job) / "latest.json").unlink()

    finished = resume(w, "resume-job", job)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "finishing the job" in finished.stdout, finished.stdout
    assert journal(w, job)[-1]["status"] == "completed"
    assert lines(w, "reduce.log") == ["3/3 0"], "reduce ran again"
    assert runs(w) == Counter(ids(0, 1, 2)), "items ran again"
    refused = resume(w, "resume-job", job)
    assert refused.returncode == 1 and "already complete" in refused.stderr, refused.stderr


def test_dlq_only_job_needs_force_which_retries_dlq_items_and_reruns_reduce(w: Env) -> None:
    retry_job(w, ["true", "exit 1"], delay="0.05s")
    cooked = w.run("cook", "wf.yml")
    assert cooked.returncode == 3, cooked.stdout + cooked.stderr
    job = the_job(w)
    assert attempts_of(w, "runs.log") == {"item_0": [1], "item_1": [1, 2]}

    refused = resume(w, "resume-job", job)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "No retriable items found" in refused.stderr, refused.stderr
    assert "--force" in refused.stderr and "prodigy dlq reprocess" in refused.stderr

    forced = resume(w, "resume-job", job, "--force")
    assert forced.returncode == 3, forced.stdout + forced.stderr
    # A fresh round of max_attempts, numbered on from the history.
    assert attempts_of(w, "runs.log") == {"item_0": [1], "item_1": [1, 2, 3, 4]}
    assert lines(w, "reduce.log") == ["reduce", "reduce"]
    assert results(w)["item_1"]["attempts"] == 4
    assert item_states(w, job)["item_1"] == ("dead-lettered", 4)


def journal(w: Env, job: str) -> list[dict[str, Any]]:
    text = (w.job_dir(job) / "journal.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def dlq_moves(w: Env, job: str) -> list[tuple[str, str, int]]:
    """The DLQ events in order: (type, item, attempts)."""
    kinds = ("dlq_item_added", "dlq_item_removed")
    return [(e["type"], e["item_id"], e["attempts"]) for e in w.events(job) if e["type"] in kinds]


def test_force_on_a_complete_job_records_each_item_taken_out_of_the_dlq(w: Env) -> None:
    # item_1 succeeds from its third attempt on; item_2 never does.
    retry_job(w, ["true", "test $PRODIGY_ATTEMPT -gt 2", "exit 1"], delay="0.05s")
    cooked = w.run("cook", "wf.yml")
    assert cooked.returncode == 3, cooked.stdout + cooked.stderr
    job = the_job(w)
    before = len(w.events(job))

    forced = resume(w, "resume-job", job, "--force")
    assert forced.returncode == 3, forced.stdout + forced.stderr
    new = w.events(job)[before:]
    removed = [e for e in new if e["type"] == "dlq_item_removed"]
    assert sorted((e["item_id"], e["attempts"]) for e in removed) == [("item_1", 2), ("item_2", 2)]
    # Written once the requeue was in the journal, before the run that retries them.
    requeued = [r for r in journal(w, job) if r["type"] == "requeued"]
    assert [sorted(r["indexes"]) for r in requeued] == [[1, 2]]
    [resumed] = [e for e in new if e["type"] == "job_resumed"]
    assert max(new.index(e) for e in removed) < new.index(resumed)
    assert (resumed["dead_lettered"], resumed["remaining"]) == (0, 2)
    # An item's last DLQ event says whether it is in the DLQ: item_1 left it, item_2 is back.
    last = {item: kind for kind, item, _ in dlq_moves(w, job)}
    assert last == {"item_1": "dlq_item_removed", "item_2": "dlq_item_added"}
    in_dlq = json.loads(w.run("dlq", "list", job, "--json").stdout)
    assert [entry["item_id"] for entry in in_dlq] == ["item_2"]


def test_force_on_an_unfinished_job_records_only_the_dlq_items_it_requeues(w: Env) -> None:
    # item_0 fails once and waits 30 s for its retry (retriable, not in the DLQ); item_1 lacks
    # `cmd` and goes to the DLQ; item_2 is held running when Ctrl-C comes.
    retry_job(w, [FAIL_ONCE, None, "true"], delay="30s")
    hold(w, "item_2-1")
    proc = w.popen("cook", "wf.yml")
    job = the_job(w)
    wait_for(lambda: "item_0" in recorded(w, job, "agent_retrying"), what="item_0 to fail once")
    wait_for(lambda: "item_1" in recorded(w, job, "dlq_item_added"), what="item_1 in the DLQ")
    wait_for(lambda: "item_2 1" in lines(w, "started.log"), what="item_2 to start")
    rc, out, err = interrupt(proc)
    assert rc == 130, out + err
    release_all(w)

    forced = resume(w, "resume-job", job, "--force", "--max-additional-retries", "1")
    assert forced.returncode == 3, forced.stdout + forced.stderr
    assert "Forcing 1 DLQ item back into the queue" in forced.stdout
    # Requeued together with the retriable item_0, but only item_1 left the DLQ.
    requeued = [r for r in journal(w, job) if r["type"] == "requeued"]
    assert [sorted(r["indexes"]) for r in requeued] == [[0, 1]]
    assert dlq_moves(w, job) == [
        ("dlq_item_added", "item_1", 1),
        ("dlq_item_removed", "item_1", 1),
        ("dlq_item_added", "item_1", 2),
    ]
    assert attempts_of(w, "runs.log") == {"item_0": [1, 2], "item_2": [1]}
    shown = w.run("events", "show", job, "--type", "dlq_item_removed")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"dlq_item_removed +item_1 +attempts=1$", shown.stdout.strip()), shown.stdout


def test_failed_reduce_is_resumed_into_the_reduce_phase(w: Env) -> None:
    w.write(
        "wf.yml",
        PLAIN.replace("@MAX_PARALLEL@", "2").replace(
            'reduce:\n  - shell: "echo ${map.successful}/${map.total} ${map.failed} >> reduce.log"',
            "reduce:\n"
            '  - shell: "echo r1 >> reduce.log"\n'
            '  - shell: "test -e fixed || { touch fixed; exit 1; }; echo r2 >> reduce.log"\n'
            '  - shell: "echo r3 >> reduce.log"',
        ),
    )
    w.write_json("items.json", [{"n": n} for n in range(4)])
    cooked = w.run("cook", "wf.yml")
    assert cooked.returncode == 1, cooked.stdout + cooked.stderr
    assert lines(w, "reduce.log") == ["r1"]
    job = the_job(w)

    result = resume(w, "resume-job", job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(w, "reduce.log") == ["r1", "r2", "r3"]
    assert runs(w) == Counter(ids(0, 1, 2, 3)), "the map phase ran again"
    assert len(lines(w, "started.log")) == 4


def _wrong_shape(case: str, real: dict[str, Any]) -> str:
    if case == "array":
        return "[]"
    if case == "format only":
        return '{"format": "prodigy-checkpoint/1"}'
    if case == "version as text":
        return json.dumps({**real, "version": str(real["version"])})
    assert case == "another format"
    return json.dumps({**real, "format": "prodigy-checkpoint/99"})


def _one_sentence_about(stderr: str, path: str) -> None:
    assert "Traceback" not in stderr, stderr
    [line] = stderr.splitlines()
    assert line.startswith("error: ") and path in line, stderr


@pytest.mark.parametrize(
    ("case", "flag"),
    [
        ("array", "--force"),
        ("format only", "--from-checkpoint"),
        ("version as text", "--force"),
        ("another format", "--from-checkpoint"),
    ],
)
def test_checkpoint_of_the_wrong_shape_is_damage_like_a_truncated_one(
    w: Env, case: str, flag: str
) -> None:
    plain_job(w, items=4, max_parallel=1)
    job = interrupted_plain_job(w, 4, held=ids(2), done=ids(0, 1))
    release_all(w)
    target = (w.job_dir(job) / "latest.json").resolve()
    assert target.name == "checkpoint-v2.json"
    real = target.read_bytes()
    target.write_bytes(real[: len(real) // 2])
    truncated = resume(w, "resume-job", job)
    assert truncated.returncode == 1, truncated.stdout + truncated.stderr

    wrong = _wrong_shape(case, json.loads(real))
    target.write_text(wrong)
    refused = resume(w, "resume-job", job)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    _one_sentence_about(refused.stderr, str(target))

    def detail_blanked(text: str) -> str:
        return re.sub(r"is corrupt \(.*\); it has", "is corrupt (…); it has", text)

    assert detail_blanked(refused.stderr) == detail_blanked(truncated.stderr)
    for hint in ("v1, v0", "--from-checkpoint N", "--force"):
        assert hint in refused.stderr, refused.stderr
    assert target.read_text() == wrong, "the damaged checkpoint was modified"
    assert runs(w) == Counter(ids(0, 1))

    listed = w.run("checkpoints", "list", job)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "Traceback" not in listed.stderr, listed.stderr
    assert re.search(r"^- v2 \(latest\): unreadable \(.+\)$", listed.stdout, re.M), listed.stdout
    shown = w.run("checkpoints", "show", job)
    assert shown.returncode == 1 and not shown.stdout, shown.stdout + shown.stderr
    _one_sentence_about(shown.stderr, str(target))
    for command in (("checkpoints", "list"), ("sessions", "show"), ("sessions", "show", job)):
        other = w.run(*command)
        assert other.returncode == 0, other.stdout + other.stderr
        assert "Traceback" not in other.stderr, other.stderr

    args = ("--force",) if flag == "--force" else ("--from-checkpoint", "1")
    result = resume(w, "resume-job", job, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert (w.job_dir(job) / "corrupt-checkpoint-v2.json").read_text() == wrong
    again = Counter({"item_1": 1}) if flag == "--from-checkpoint" else Counter()
    assert runs(w) == Counter(ids(0, 1, 2, 3)) + again
    assert lines(w, "reduce.log") == ["4/4 0"]


def test_unknown_job_is_checkpoint_not_found(w: Env) -> None:
    result = resume(w, "resume-job", "mapreduce-20000101-000000")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Checkpoint not found" in result.stderr
    assert "mapreduce-20000101-000000" in result.stderr
    assert "Traceback" not in result.stderr


def test_verbose_resume_prints_a_line_per_ended_attempt(world: Env) -> None:
    world.write_json("items.json", [{"n": n} for n in range(3)])
    world.write(
        "wf.yaml",
        """\
        name: verbose
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          max_parallel: 1
          agent_template:
            - shell: "test ${item.n} -ne 1"
        error_policy:
          on_item_failure: stop
        """,
    )
    first = world.run("cook", "wf.yaml")
    assert first.returncode == 1, first.stderr
    job_id = job_id_of(first.stdout)
    resumed = world.run("resume-job", job_id, "--verbose")
    # item_1 stays in the DLQ, so the finished job exits 3.
    assert resumed.returncode == 3, resumed.stdout + resumed.stderr
    ended = [line for line in resumed.stdout.splitlines() if "(attempt " in line]
    assert ended == ["item_2 succeeded (attempt 1, " + ended[0].split(", ", 1)[1]]


def test_a_forced_resume_killed_before_any_attempt_ends_resumes_cleanly(world: Env) -> None:
    """`--force` requeues DLQ items without a new version; a crash right after must not make
    the next resume see an inconsistent checkpoint."""
    world.write_json("items.json", [{"n": n} for n in range(3)])
    world.write(
        "wf.yaml",
        """\
        name: forced
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: "test ${item.n} -ne 1 || sh wait.sh ${attempt}"
        reduce:
          - shell: "echo ${map.successful}/${map.total} >> reduce.log"
        """,
    )
    world.write(
        "wait.sh",
        """\
        touch "started-$1"
        while [ -e hold ]; do sleep 0.05; done
        test -e fixed
        """,
    )
    first = world.run("cook", "wf.yaml")
    assert first.returncode == 3, first.stdout + first.stderr
    job_id = job_id_of(first.stdout)
    (world.repo / "hold").touch()
    (world.repo / "fixed").touch()
    forced = world.popen("resume-job", job_id, "--force")
    wait_for(lambda: (world.repo / "started-2").exists(), what="the forced retry to start")
    os.killpg(forced.pid, signal.SIGKILL)
    forced.wait(timeout=30)
    (world.repo / "hold").unlink()
    again = world.run("resume-job", job_id)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "inconsistent" not in again.stderr
    assert (world.repo / "reduce.log").read_text().splitlines()[-1] == "3/3"


def test_a_crash_between_freezing_items_and_the_next_checkpoint_resumes_cleanly(
    world: Env,
) -> None:
    """The first v0 file is written before setup (no items yet); a crash right after the items
    are frozen leaves that file as latest, which is not an inconsistency."""
    world.write_json("items.json", [{"n": n} for n in range(3)])
    world.write(
        "wf.yaml",
        """\
        name: frozen
        mode: mapreduce
        setup:
          - shell: "echo setup >> setup.log"
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: "echo ${item_id} >> runs.log"
        """,
    )
    first = world.run("cook", "wf.yaml")
    assert first.returncode == 0, first.stdout + first.stderr
    job_id = job_id_of(first.stdout)
    job = world.job_dir(job_id)
    # Rebuild the crash state: journal up to items_frozen, latest = the pre-setup v0 file.
    journal = (job / "journal.jsonl").read_text().splitlines()
    (job / "journal.jsonl").write_text("\n".join(journal[:2]) + "\n")
    doc = json.loads((job / "latest.json").read_text())
    doc.update(version=0, phase="setup", items=[], dlq=[])
    doc["counts"] = dict.fromkeys(doc["counts"], 0)
    for stale in job.glob("checkpoint-v*.json"):
        stale.unlink()
    (job / "checkpoint-v0.json").write_text(json.dumps(doc))
    (job / "latest.json").unlink()
    (job / "latest.json").symlink_to("checkpoint-v0.json")
    (world.repo / "runs.log").unlink()
    again = world.run("resume-job", job_id)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted((world.repo / "runs.log").read_text().split()) == ["item_0", "item_1", "item_2"]


def test_a_job_interrupted_before_recording_anything_says_so(w: Env) -> None:
    # What a power loss can leave: the job directory is durable, nothing in it is yet.
    job = "mapreduce-20261130-000000"
    w.job_dir(job).mkdir(parents=True)
    for metadata in (None, {"job_id": job, "status": "running", "version": 0}):
        if metadata is not None:
            (w.job_dir(job) / "metadata.json").write_text(json.dumps(metadata))
        result = w.run("resume", job, "-y")
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"Job {job} recorded nothing before it was interrupted" in result.stderr
        assert "prodigy cook WORKFLOW" in result.stderr
