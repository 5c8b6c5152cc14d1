"""`prodigy dlq status|list|show` on a job made by really running a workflow with failing,
timing-out and field-missing items; counts are checked against the events log and what ran."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest

from conftest import Env, job_id_of, make_world

# item_2 (n=3) exits 7 twice; item_4 (n=5) times out twice; item_5 has no `name` field, which
# the second step uses: it fails once and needs manual review. Every attempt logs to ran.log.
WORKFLOW = """\
name: dlq-test
mode: mapreduce
map:
  input: items.json
  json_path: "$[*]"
  max_parallel: 6
  isolation: none
  agent_template:
    - shell: "echo ${item_id} ${attempt} >> ran.log"
    - shell: >-
        echo processing ${item.name};
        if [ ${item.n} -eq 5 ]; then sleep 5; fi;
        if [ ${item.n} -eq 3 ]; then echo broken >&2; exit 7; fi
      timeout: 1
error_policy:
  retry_config: {max_attempts: 2, initial_delay: 0}
"""
ITEMS = [{"n": n, "name": f"file{n}"} for n in range(1, 6)] + [{"n": 6}]
DLQ_IDS = {"item_2", "item_4", "item_5"}


@pytest.fixture(scope="module")
def failed_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str]]:
    """One real job shared by the read-only tests below (nothing here changes it)."""
    world = make_world(tmp_path_factory.mktemp("dlq"))
    world.write_json("items.json", ITEMS)
    world.write("wf.yaml", WORKFLOW)
    done = world.run("cook", "wf.yaml")
    assert done.returncode == 3, done.stdout + done.stderr
    yield world, job_id_of(done.stdout)


@pytest.fixture
def job(failed_job: tuple[Env, str]) -> tuple[Env, str]:
    # Per test, so that a per-test hook that changes how the CLI is run applies here too.
    return failed_job


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one sentence
    return result.stderr


def test_list_json_agrees_with_the_events_log_and_with_what_ran(job: tuple[Env, str]) -> None:
    world, job_id = job
    entries = json.loads(ok(world.run("dlq", "list", job_id, "--json")))
    by_id = {e["item_id"]: e for e in entries}
    assert set(by_id) == DLQ_IDS

    events = world.events(job_id)
    added = [e["item_id"] for e in events if e["type"] == "dlq_item_added"]
    assert sorted(added) == sorted(DLQ_IDS)
    failures = Counter(e["item_id"] for e in events if e["type"] == "agent_failed")
    ran = Counter(line.split()[0] for line in (world.repo / "ran.log").read_text().splitlines())
    for item_id, entry in by_id.items():
        assert entry["attempts"] == failures[item_id] == ran[item_id]
    assert {i: e["attempts"] for i, e in by_id.items()} == {
        "item_2": 2,
        "item_4": 2,
        "item_5": 1,
    }

    assert by_id["item_2"]["error_kind"] == "exit_code" and by_id["item_2"]["exit_code"] == 7
    assert by_id["item_4"]["error_kind"] == "timeout" and by_id["item_4"]["timed_out"]
    assert by_id["item_5"]["error_kind"] == "missing_variable"
    assert "name" in by_id["item_5"]["last_error"]
    assert [i for i, e in by_id.items() if e["manual_review"]] == ["item_5"]
    assert by_id["item_2"]["item"] == {"n": 3, "name": "file3"}
    last_failed = [e for e in events if e["type"] == "agent_failed" and e["item_id"] == "item_2"]
    assert by_id["item_2"]["last_error"] == last_failed[-1]["error"]


def test_list_readable_and_limited(job: tuple[Env, str]) -> None:
    world, job_id = job
    lines = ok(world.run("dlq", "list", job_id)).splitlines()
    assert lines[0].split() == ["ITEM", "ATTEMPTS", "KIND", "LAST", "ERROR", "LAST", "ATTEMPT"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == DLQ_IDS
    assert rows["item_4"][1:3] == ["2", "timeout"]
    assert rows["item_2"][-2][:4].isdigit()  # the last attempt's date

    limited = world.run("dlq", "list", job_id, "--limit", "1")
    assert len(ok(limited).splitlines()) == 2
    assert "1 of 3" in limited.stderr
    limited_json = json.loads(ok(world.run("dlq", "list", job_id, "--json", "--limit", "2")))
    assert [e["item_id"] for e in limited_json] == ["item_2", "item_4"]


def test_status_counts_and_groups(job: tuple[Env, str]) -> None:
    world, job_id = job
    out = ok(world.run("dlq", "status", job_id))
    assert f"DLQ of job {job_id}: 3 items" in out
    assert "Retriable (a plain reprocess may help): 2" in out
    assert "Needing manual review: 1" in out
    kinds, signatures = out.split("By error kind:")[1].split("By error signature:")
    kind_rows = dict(line.split() for line in kinds.strip().splitlines()[1:])
    assert kind_rows == {"exit_code": "1", "timeout": "1", "missing_variable": "1"}
    signature_rows = [line for line in signatures.strip().split("\n\n")[0].splitlines()[1:]]
    assert len(signature_rows) == 3
    assert any("exited with code 7" in row for row in signature_rows)
    assert any("timed out" in row for row in signature_rows)
    assert f"prodigy dlq reprocess {job_id}" in out


def test_show_prints_the_item_and_every_attempt(job: tuple[Env, str]) -> None:
    world, job_id = job
    out = ok(world.run("dlq", "show", job_id, "item_2"))
    data = out.split("Item data:\n")[1].split("\n\n")[0]
    assert json.loads(data) == {"n": 3, "name": "file3"}
    assert "Attempt 1 of 2" in out and "Attempt 2 of 2" in out
    assert out.count("exit code 7") == 2
    assert out.count("Failed step: echo processing ${item.name}") == 2
    assert out.count("    broken") == 2  # stderr tail
    assert out.count("    processing file3") == 2  # output tail

    timed = ok(world.run("dlq", "show", job_id, "item_4"))
    assert timed.count("timed out") >= 2 and "Retriable" in timed

    review = ok(world.run("dlq", "show", job_id, "item_5"))
    assert "Needs manual review" in review and "lacks a field" in review
    assert "Attempt 1 of 1" in review and "Attempt 2" not in review


def test_show_refuses_unknown_and_not_dead_items(job: tuple[Env, str]) -> None:
    world, job_id = job
    unknown = refused(world.run("dlq", "show", job_id, "item_99"))
    assert "item_99" in unknown and f"prodigy dlq list {job_id}" in unknown
    fine = refused(world.run("dlq", "show", job_id, "item_0"))
    assert "not in the DLQ" in fine and "succeeded" in fine


@pytest.mark.parametrize("command", ["status", "list"])
def test_unknown_job(job: tuple[Env, str], command: str) -> None:
    world, _ = job
    message = refused(world.run("dlq", command, "mapreduce-20200101-000000"))
    assert "mapreduce-20200101-000000" in message
    refused(world.run("dlq", "show", "mapreduce-20200101-000000", "item_0"))


def test_missing_argument_is_a_usage_error(job: tuple[Env, str]) -> None:
    world, _ = job
    assert world.run("dlq", "show").returncode == 2
    assert world.run("dlq", "list", "x", "--limit", "0").returncode == 2


def test_an_empty_dlq_and_a_repeated_error(world: Env) -> None:
    world.write_json("items.json", [{"n": 1}, {"n": 2}])
    world.write(
        "wf.yaml",
        """\
        name: repeat
        mode: mapreduce
        map:
          input: items.json
          json_path: "$[*]"
          isolation: none
          agent_template:
            - shell: "test ${item.n} -ne 2"
        error_policy:
          retry_config: {max_attempts: 3, initial_delay: 0}
        """,
    )
    done = world.run("cook", "wf.yaml")
    assert done.returncode == 3
    job_id = job_id_of(done.stdout)
    status = ok(world.run("dlq", "status", job_id))
    assert "1 item" in status and "Needing manual review: 1" in status
    assert "same error" in ok(world.run("dlq", "show", job_id, "item_1"))

    world.write_json("items.json", [{"n": 1}])
    clean = world.run("cook", "wf.yaml")
    assert clean.returncode == 0
    clean_id = job_id_of(clean.stdout)
    assert "No items in the DLQ" in ok(world.run("dlq", "status", clean_id))
    assert json.loads(ok(world.run("dlq", "list", clean_id, "--json"))) == []
    assert "No items in the DLQ" in ok(world.run("dlq", "list", clean_id))
