"""`prodigy cook` end to end: the real executable, a temporary PRODIGY_HOME and git repository.

Agents record what they did in files of the repository (runs.log and friends), so every count
below is exact; nothing waits on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import Env, checkpoint_items, job_id_of, wait_for

FULL_JOB_ID = re.compile(r"^mapreduce-(\d{8}-\d{6})(?:-\d+)?$")
CHECKPOINT_FILE = re.compile(r"^checkpoint-v(\d+)\.json$")
PY = sys.executable


# ---- helpers -----------------------------------------------------------------------------------


def cook(world: Env, workflow: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    world.write("wf.yaml", workflow)
    return world.run("cook", "wf.yaml", *args, **env)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def first_line_job_id(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stdout.splitlines()
    assert lines, explain(result)
    return job_id_of(lines[0])


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def home_entries(world: Env) -> list[Path]:
    return sorted(world.home.rglob("*")) if world.home.exists() else []


def metadata(world: Env, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = read_json(world.job_dir(job_id) / "metadata.json")
    return data


def latest(world: Env, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = read_json(world.job_dir(job_id) / "latest.json")
    return data


def event_types(world: Env, job_id: str) -> list[str]:
    return [e["type"] for e in world.events(job_id)]


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state is the first field after the parenthesised command name.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


ITEMS6 = [{"n": n} for n in range(1, 7)]

# Indented like the workflows below, so that `"""...""" + RESULTS_REDUCE` dedents as one.
RESULTS_REDUCE = """
        reduce:
          - shell: "echo totals ${map.successful}/${map.total} failed ${map.failed}"
          - write_file: {path: "out/results.json", content: "${map.results}", format: json}
"""


# ---- the happy path ----------------------------------------------------------------------------


def test_happy_path_runs_every_item_once_and_leaves_complete_state(world: Env) -> None:
    world.write_json("items.json", ITEMS6)
    before = time.time()
    result = cook(
        world,
        """
        name: happy
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          max_parallel: 3
          agent_template:
            - shell: "echo ${item_id} >> runs.log && echo out-${item.n}"
        checkpoint:
          max_checkpoints: 2
        """
        + RESULTS_REDUCE,
        "-y",
    )
    assert result.returncode == 0, explain(result)
    assert "Traceback" not in result.stdout + result.stderr

    # The job id is the first line of stdout and has the documented shape (local time).
    job_id = first_line_job_id(result)
    match = FULL_JOB_ID.match(job_id)
    assert match, job_id
    stamp = time.mktime(time.strptime(match.group(1), "%Y%m%d-%H%M%S"))
    assert before - 2 <= stamp <= time.time() + 1, f"{job_id} is not the local creation time"

    ids = [f"item_{i}" for i in range(6)]
    assert sorted(lines_of(world.repo / "runs.log")) == ids, "every item exactly once"
    assert "totals 6/6 failed 0" in result.stdout

    results = read_json(world.repo / "out" / "results.json")
    assert [r["item_id"] for r in results] == ids, "one entry per item, in item order"
    for n, entry in enumerate(results, start=1):
        assert entry["status"] == "succeeded"
        assert entry["attempts"] == 1
        assert entry["output"].strip() == f"out-{n}"

    job = world.job_dir(job_id)
    assert job.is_dir()
    versions = sorted(
        int(m.group(1)) for p in job.iterdir() if (m := CHECKPOINT_FILE.match(p.name))
    )
    assert versions, "no checkpoint files"
    assert len(versions) <= 2, f"max_checkpoints: 2 but found {versions}"
    link = job / "latest.json"
    assert link.is_symlink(), "latest.json must be a symlink"
    assert link.resolve() == (job / f"checkpoint-v{versions[-1]}.json").resolve()
    assert versions[-1] == 6, "N counts agent completions: 6 items, one attempt each"
    checkpoint = latest(world, job_id)
    assert checkpoint["job_id"] == job_id
    assert checkpoint["version"] == 6
    assert checkpoint["items"]["succeeded"] == [[0, 5]]

    meta = metadata(world, job_id)
    assert meta["status"] == "completed"
    assert meta["job_id"] == job_id
    types = event_types(world, job_id)
    assert types[0] == "job_started" and types[-1] == "job_completed", types
    assert types.count("agent_completed") == 6


def test_default_retention_keeps_three_checkpoints(world: Env) -> None:
    world.write_json("items.json", ITEMS6)
    result = cook(
        world,
        """
        name: retention
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          max_parallel: 1
          agent_template:
            - shell: "echo ${item_id} >> runs.log"
        """,
    )
    assert result.returncode == 0, explain(result)
    job = world.job_dir(first_line_job_id(result))
    files = [p.name for p in job.iterdir() if CHECKPOINT_FILE.match(p.name)]
    assert 1 <= len(files) <= 3, files
    assert "checkpoint-v6.json" in files


def test_job_id_is_printed_before_setup_runs(world: Env) -> None:
    """The id is flushed into the pipe at once, before setup (which here waits for a file)."""
    world.write_json("items.json", [1])
    world.write(
        "wf.yaml",
        """
        name: early-id
        mode: mapreduce
        setup:
          - shell: "while [ ! -f go ]; do sleep 0.02; done"
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: "echo ${item_id} >> runs.log"
        """,
    )
    proc = world.popen("cook", "wf.yaml")
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    try:
        reader.join(15)
        assert first and first[0], "no first line on stdout while setup was still waiting"
        job_id = job_id_of(first[0])
        assert not (world.repo / "runs.log").exists()
        (world.repo / "go").write_text("")
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert lines_of(world.repo / "runs.log") == ["item_0"]
    assert metadata(world, job_id)["status"] == "completed"


def test_run_is_an_alias_of_cook(world: Env) -> None:
    world.write_json("items.json", [{"n": 1}, {"n": 2}])
    world.write(
        "wf.yaml",
        """
        name: alias
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: "echo ${item_id} >> runs.log"
        reduce:
          - shell: "echo reduced ${map.successful}/${map.total}"
        """,
    )
    result = world.run("run", "wf.yaml")
    assert result.returncode == 0, explain(result)
    job_id = first_line_job_id(result)
    assert sorted(lines_of(world.repo / "runs.log")) == ["item_0", "item_1"]
    assert "reduced 2/2" in result.stdout
    assert metadata(world, job_id)["status"] == "completed"


def test_empty_input_is_a_zero_item_job(world: Env) -> None:
    world.write_json("items.json", [])
    result = cook(
        world,
        """
        name: empty
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: "echo ${item_id} >> runs.log"
        """
        + RESULTS_REDUCE,
    )
    assert result.returncode == 0, explain(result)
    assert "totals 0/0 failed 0" in result.stdout
    assert read_json(world.repo / "out" / "results.json") == []
    assert not (world.repo / "runs.log").exists()
    assert metadata(world, first_line_job_id(result))["status"] == "completed"


# ---- setup, variables, environment ---------------------------------------------------------------


def test_setup_creates_input_and_captures_output_for_map_and_reduce(world: Env) -> None:
    result = cook(
        world,
        """
        name: setup
        mode: mapreduce
        setup:
          - shell: |
              printf '[{"n": 1}, {"n": 2}, {"n": 3}]' > generated.json
          - shell: "echo base-4711"
            capture_output: base
        map:
          input: generated.json
          isolation: none
          agent_template:
            - shell: "echo ${base}:${item_id}:${item.n} >> runs.log"
        reduce:
          - shell: "echo reduce sees ${base} and ${map.successful}"
        """,
    )
    assert result.returncode == 0, explain(result)
    assert sorted(lines_of(world.repo / "runs.log")) == [
        "base-4711:item_0:1",
        "base-4711:item_1:2",
        "base-4711:item_2:3",
    ]
    assert "reduce sees base-4711 and 3" in result.stdout


def test_env_vars_and_prodigy_variables_reach_every_agent(world: Env) -> None:
    items = [{"name": "plain"}, {"name": 'it\'s "quoted" $HOME `x`'}]
    world.write_json("items.json", items)
    dump = (
        f"{PY} -c 'import json, os; print(json.dumps(dict(os.environ)))' > envs/${{item_id}}.json"
    )
    result = cook(
        world,
        f"""
        name: envs
        mode: mapreduce
        env:
          GREETING: hello
        setup:
          - shell: "mkdir -p envs"
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: "{dump}"
              env:
                STEP_VAR: "step-${{item_id}}"
            - shell: "echo ${{GREETING}}-$GREETING-${{item_index}}-${{attempt}} >> runs.log"
        reduce:
          - shell: "echo reduce $GREETING $PRODIGY_JOB_ID"
        """,
    )
    assert result.returncode == 0, explain(result)
    job_id = first_line_job_id(result)
    assert sorted(lines_of(world.repo / "runs.log")) == ["hello-hello-0-1", "hello-hello-1-1"]
    assert f"reduce hello {job_id}" in result.stdout
    for index, item in enumerate(items):
        env = read_json(world.repo / "envs" / f"item_{index}.json")
        assert env["PRODIGY_ITEM_ID"] == f"item_{index}"
        assert env["PRODIGY_ITEM_INDEX"] == str(index)
        assert env["PRODIGY_ATTEMPT"] == "1"
        assert env["PRODIGY_JOB_ID"] == job_id
        assert json.loads(env["PRODIGY_ITEM"]) == item
        assert env["GREETING"] == "hello"
        assert env["STEP_VAR"] == f"step-item_{index}"


# ---- map input and the item pipeline -----------------------------------------------------------


def test_input_command_printing_json(world: Env) -> None:
    result = cook(
        world,
        """
        name: cmd-json
        mode: mapreduce
        map:
          input: "printf '{\\"files\\": [{\\"p\\": \\"x\\"}, {\\"p\\": \\"y\\"}]}'"
          isolation: none
          json_path: "$.files[*]"
          agent_template:
            - shell: "echo ${item_id}=${item.p} >> runs.log"
        """,
    )
    assert result.returncode == 0, explain(result)
    assert sorted(lines_of(world.repo / "runs.log")) == ["item_0=x", "item_1=y"]


def test_input_command_one_item_per_line(world: Env) -> None:
    world.write("list.txt", 'alpha\nbeta gamma\n{"k": 1}\n\n42\n')
    result = cook(
        world,
        """
        name: cmd-lines
        mode: mapreduce
        setup:
          - shell: "mkdir -p got"
        map:
          input: "cat list.txt"
          isolation: none
          agent_template:
            - shell: printf '%s' "$PRODIGY_ITEM" > got/${item_id}.json
        """,
    )
    assert result.returncode == 0, explain(result)
    got = {p.stem: json.loads(p.read_text()) for p in (world.repo / "got").iterdir()}
    assert got == {"item_0": "alpha", "item_1": "beta gamma", "item_2": {"k": 1}, "item_3": 42}


def test_json_path_with_filter_expression(world: Env) -> None:
    world.write_json(
        "data.json",
        {
            "files": [
                {"path": "a", "size": 50},
                {"path": "b", "size": 150},
                {"path": "c", "size": 300},
                {"path": "d", "size": 100},
            ],
            "other": 1,
        },
    )
    result = cook(
        world,
        """
        name: jp-filter
        mode: mapreduce
        map:
          input: data.json
          isolation: none
          json_path: "$.files[?(@.size > 100)]"
          agent_template:
            - shell: "echo ${item_index} ${item.path} >> runs.log"
        """,
    )
    assert result.returncode == 0, explain(result)
    assert sorted(lines_of(world.repo / "runs.log")) == ["0 b", "1 c"]


PIPELINE_DATA = [
    {"path": "a", "size": 50, "priority": 1},
    {"path": "b", "size": 150, "priority": 3},
    {"path": "c", "size": 300, "priority": 2},
    {"path": "b", "size": 500, "priority": 5},
    {"path": "d", "size": 120, "priority": 3},
    {"path": "e", "size": 10, "priority": 9},
]


@pytest.mark.parametrize(
    ("settings", "args", "expected"),
    [
        pytest.param('filter: "size > 100"', (), ["b150", "c300", "b500", "d120"], id="filter"),
        pytest.param(
            'sort_by: "priority DESC, path"',
            (),
            ["e10", "b500", "b150", "d120", "c300", "a50"],
            id="sort_by",
        ),
        pytest.param("distinct: path", (), ["a50", "b150", "c300", "d120", "e10"], id="distinct"),
        pytest.param("offset: 2", (), ["c300", "b500", "d120", "e10"], id="offset"),
        pytest.param("max_items: 2", (), ["a50", "b150"], id="max_items"),
        pytest.param("", ("--max-items", "3"), ["a50", "b150", "c300"], id="--max-items"),
        pytest.param("max_items: 4", ("--max-items", "2"), ["a50", "b150"], id="both-limits"),
        pytest.param(
            'filter: "size > 100"\n  sort_by: "priority DESC, path"\n  distinct: path\n'
            "  offset: 1\n  max_items: 1",
            (),
            ["d120"],
            id="whole-pipeline",
        ),
    ],
)
def test_item_pipeline(
    world: Env, settings: str, args: tuple[str, ...], expected: list[str]
) -> None:
    world.write_json("items.json", PIPELINE_DATA)
    workflow = (
        "name: pipeline\n"
        "mode: mapreduce\n"
        "map:\n"
        "  input: items.json\n"
        "  isolation: none\n"
        f"  {settings}\n"
        "  agent_template:\n"
        '    - shell: "echo ${item_index} ${item_id} ${item.path}${item.size} >> runs.log"\n'
    )
    result = cook(world, workflow, *args)
    assert result.returncode == 0, explain(result)
    rows = sorted(line.split() for line in lines_of(world.repo / "runs.log"))
    rows.sort(key=lambda row: int(row[0]))
    assert [row[2] for row in rows] == expected
    assert [row[0] for row in rows] == [str(i) for i in range(len(expected))], "0-based indexes"
    assert [row[1] for row in rows] == [f"item_{i}" for i in range(len(expected))]


def test_id_field_names_the_items(world: Env) -> None:
    world.write_json("items.json", PIPELINE_DATA)
    result = cook(
        world,
        """
        name: ids
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          distinct: path
          id_field: path
          agent_template:
            - shell: "echo ${item_id} $PRODIGY_ITEM_ID >> runs.log"
        """
        + RESULTS_REDUCE,
    )
    assert result.returncode == 0, explain(result)
    assert sorted(lines_of(world.repo / "runs.log")) == [f"{p} {p}" for p in "abcde"]
    results = read_json(world.repo / "out" / "results.json")
    assert [r["item_id"] for r in results] == list("abcde")
    job_id = first_line_job_id(result)
    items = checkpoint_items(world.job_dir(job_id), latest(world, job_id))
    assert [item["id"] for item in items] == list("abcde")


# ---- parallelism -------------------------------------------------------------------------------

CONCURRENCY_AGENT = (
    "touch markers/${item_id}; ls markers | wc -l >> peaks.log; sleep 0.3; "
    "ls markers | wc -l >> peaks.log; rm markers/${item_id}"
)


@pytest.mark.parametrize(
    ("workflow_parallel", "args", "limit"),
    [
        pytest.param(2, (), 2, id="map.max_parallel"),
        pytest.param(10, ("--max-parallel", "3"), 3, id="--max-parallel-override"),
        pytest.param(1, (), 1, id="sequential"),
    ],
)
def test_max_parallel_bounds_concurrent_agents(
    world: Env, workflow_parallel: int, args: tuple[str, ...], limit: int
) -> None:
    items = 3 * limit + 1
    world.write_json("items.json", list(range(items)))
    (world.repo / "markers").mkdir()
    result = cook(
        world,
        f"""
        name: parallel
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          max_parallel: {workflow_parallel}
          agent_template:
            - shell: "{CONCURRENCY_AGENT}"
        """,
        *args,
    )
    assert result.returncode == 0, explain(result)
    peaks = [int(line) for line in lines_of(world.repo / "peaks.log")]
    assert len(peaks) == 2 * items
    assert max(peaks) <= limit, f"more than {limit} agents ran at once: {peaks}"
    assert max(peaks) == limit, f"never reached {limit} agents at once: {peaks}"
    assert list((world.repo / "markers").iterdir()) == []


# ---- retries, DLQ and failure policy -----------------------------------------------------------


def test_flaky_agent_succeeds_on_second_attempt(world: Env) -> None:
    world.write_json("items.json", [{"n": 1}, {"n": 2}, {"n": 3}])
    result = cook(
        world,
        """
        name: flaky
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: 'echo "${item_id} $PRODIGY_ATTEMPT ${attempt}" >> runs.log'
            - shell: 'test "$PRODIGY_ATTEMPT" -ge 2'
        error_policy:
          retry_config:
            max_attempts: 2
            backoff: fixed
            initial_delay: 10ms
        """
        + RESULTS_REDUCE,
    )
    assert result.returncode == 0, explain(result)
    runs = sorted(lines_of(world.repo / "runs.log"))
    assert runs == sorted(f"item_{i} {a} {a}" for i in range(3) for a in (1, 2))
    results = read_json(world.repo / "out" / "results.json")
    assert [(r["status"], r["attempts"]) for r in results] == [("succeeded", 2)] * 3
    assert "totals 3/3 failed 0" in result.stdout
    assert event_types(world, first_line_job_id(result)).count("agent_retrying") == 3


def test_always_failing_item_ends_in_dlq_after_max_attempts(world: Env) -> None:
    world.write_json("items.json", [{"p": "ok1"}, {"p": "bad"}, {"p": "ok2"}])
    result = cook(
        world,
        """
        name: dlq
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: 'echo ${item_id} >> runs.log; test "${item.p}" != bad'
        error_policy:
          retry_config:
            max_attempts: 3
            backoff: fixed
            initial_delay: 10ms
        """
        + RESULTS_REDUCE,
    )
    assert result.returncode == 3, explain(result)
    assert "Traceback" not in result.stdout + result.stderr
    job_id = first_line_job_id(result)
    assert Counter(lines_of(world.repo / "runs.log")) == {"item_0": 1, "item_1": 3, "item_2": 1}
    assert "totals 2/3 failed 1" in result.stdout, "reduce runs and counts the failure"
    results = read_json(world.repo / "out" / "results.json")
    bad = results[1]
    assert (bad["item_id"], bad["status"], bad["attempts"]) == ("item_1", "failed", 3)
    assert bad["error"]
    checkpoint = latest(world, job_id)
    assert checkpoint["dlq"] == ["item_1"]
    assert checkpoint["items"]["dead-lettered"] == [[1, 1]]
    events = world.events(job_id)
    assert [e["item_id"] for e in events if e["type"] == "dlq_item_added"] == ["item_1"]
    assert [e["attempt"] for e in events if e["type"] == "agent_failed"] == [1, 2, 3]
    assert metadata(world, job_id)["status"] == "completed"


def test_on_item_failure_skip_exits_zero_without_dlq(world: Env) -> None:
    world.write_json("items.json", [{"p": "ok1"}, {"p": "bad"}, {"p": "ok2"}])
    result = cook(
        world,
        """
        name: skip
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: 'echo ${item_id} >> runs.log; test "${item.p}" != bad'
        error_policy:
          on_item_failure: skip
        """
        + RESULTS_REDUCE,
    )
    assert result.returncode == 0, explain(result)
    job_id = first_line_job_id(result)
    assert sorted(lines_of(world.repo / "runs.log")) == ["item_0", "item_1", "item_2"]
    assert "totals 2/3 failed 1" in result.stdout
    results = read_json(world.repo / "out" / "results.json")
    assert [r["status"] for r in results] == ["succeeded", "skipped", "succeeded"]
    assert latest(world, job_id)["dlq"] == []
    assert "dlq_item_added" not in event_types(world, job_id)


STOP_WORKFLOW = """
name: stop
mode: mapreduce
map:
  input: items.json
  isolation: none
  max_parallel: 1
  agent_template:
    - shell: 'echo ${item_id} >> runs.log; test "${item.p}" != bad'
error_policy:
  %s
reduce:
  - shell: "echo ${map.successful} >> reduce.log"
"""


@pytest.mark.parametrize(
    ("policy", "items", "ran_before_stop"),
    [
        pytest.param(
            "on_item_failure: stop", ["ok", "bad", "ok", "ok", "ok"], 2, id="on_item_failure-stop"
        ),
        pytest.param(
            "max_failures: 2", ["ok", "bad", "ok", "bad", "ok", "ok", "ok"], 4, id="max_failures"
        ),
    ],
)
def test_failure_policy_stops_the_job_resumably(
    world: Env, policy: str, items: list[str], ran_before_stop: int
) -> None:
    world.write_json("items.json", [{"p": p} for p in items])
    result = cook(world, STOP_WORKFLOW % policy)
    assert result.returncode == 1, explain(result)
    assert "Traceback" not in result.stdout + result.stderr
    job_id = first_line_job_id(result)
    ran = lines_of(world.repo / "runs.log")
    assert ran == [f"item_{i}" for i in range(ran_before_stop)], "no agent starts after the stop"
    assert not (world.repo / "reduce.log").exists(), "a stopped job does not reduce"
    assert metadata(world, job_id)["status"] == "stopped"
    assert "job_stopped" in event_types(world, job_id)
    assert f"prodigy resume-job {job_id}" in result.stdout + result.stderr

    # Resumable: the rest of the items run (each once overall), then reduce; failures stay in DLQ.
    resumed = world.run("resume-job", job_id)
    failures = items.count("bad")
    assert resumed.returncode == (3 if failures else 0), explain(resumed)
    assert Counter(lines_of(world.repo / "runs.log")) == {f"item_{i}": 1 for i in range(len(items))}
    assert lines_of(world.repo / "reduce.log") == [str(len(items) - failures)]
    assert metadata(world, job_id)["status"] == "completed"


BACKOFF_WORKFLOW = """
name: backoff
mode: mapreduce
map:
  input: items.json
  isolation: none
  agent_template:
    - shell: 'echo ${item_id} >> runs.log; test "$PRODIGY_ATTEMPT" -ge 4'
error_policy:
  retry_config:
    max_attempts: 4
    backoff: %s
    initial_delay: 20ms
    max_delay: %s
    jitter: %s
"""


@pytest.mark.parametrize(
    ("backoff", "max_delay", "jitter", "delays"),
    [
        ("fixed", "1s", "false", [0.02, 0.02, 0.02]),
        ("linear", "1s", "false", [0.02, 0.04, 0.06]),
        ("exponential", "1s", "false", [0.02, 0.04, 0.08]),
        ("fibonacci", "1s", "false", [0.02, 0.02, 0.04]),
        ("exponential", "50ms", "false", [0.02, 0.04, 0.05]),
        ("linear", "1s", "true", [0.02, 0.04, 0.06]),
    ],
)
def test_backoff_kinds(
    world: Env, backoff: str, max_delay: str, jitter: str, delays: list[float]
) -> None:
    world.write_json("items.json", [1])
    result = cook(world, BACKOFF_WORKFLOW % (backoff, max_delay, jitter))
    assert result.returncode == 0, explain(result)
    assert lines_of(world.repo / "runs.log") == ["item_0"] * 4
    retries = [e for e in world.events(first_line_job_id(result)) if e["type"] == "agent_retrying"]
    got = [float(e["delay_s"]) for e in retries]
    assert len(got) == 3
    for value, expected in zip(got, delays, strict=True):
        low = expected / 2 if jitter == "true" else expected
        assert low - 1e-3 <= value <= expected + 1e-3, (backoff, got, delays)


# ---- time limits and on_failure ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step_timeout", "agent_timeout"),
    [
        pytest.param("\n      timeout: 0.5", "", id="step-timeout"),
        pytest.param("", "\n  agent_timeout_secs: 0.5", id="agent_timeout_secs"),
    ],
)
def test_timeouts_kill_the_agents_child_processes(
    world: Env, step_timeout: str, agent_timeout: str
) -> None:
    world.write_json("items.json", [1, 2])
    (world.repo / "pids").mkdir()
    workflow = (
        "name: timeouts\n"
        "mode: mapreduce\n"
        "map:\n"
        "  input: items.json\n"
        "  isolation: none"
        f"{agent_timeout}\n"
        "  agent_template:\n"
        '    - shell: "sleep 300 & echo $! > pids/${item_id}; wait"'
        f"{step_timeout}\n" + textwrap.dedent(RESULTS_REDUCE)
    )
    started = time.monotonic()
    try:
        result = cook(world, workflow)
        elapsed = time.monotonic() - started
        assert result.returncode == 3, explain(result)
        assert elapsed < 30, "the agents were not stopped at their time limit"
        pids = [int(p.read_text()) for p in sorted((world.repo / "pids").iterdir())]
        assert len(pids) == 2
        wait_for(
            lambda: not any(pid_alive(pid) for pid in pids),
            timeout=5,
            what="the agents' background `sleep 300` to be killed",
        )
        results = read_json(world.repo / "out" / "results.json")
        assert [r["status"] for r in results] == ["failed", "failed"]
        assert all("timed out" in (r["error"] or "") for r in results), results
    finally:
        for path in (world.repo / "pids").iterdir():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(path.read_text()), signal.SIGKILL)


def test_on_failure_handler_that_succeeds_lets_the_agent_continue(world: Env) -> None:
    world.write_json("items.json", [{"ok": "yes"}, {"ok": "no"}, {"ok": "yes"}])
    result = cook(
        world,
        """
        name: handler
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: 'test "${item.ok}" = yes'
              on_failure:
                shell: "echo recovering ${item_id} >> handler.log"
            - shell: "echo ${item_id} >> runs.log"
        """
        + RESULTS_REDUCE,
    )
    assert result.returncode == 0, explain(result)
    assert lines_of(world.repo / "handler.log") == ["recovering item_1"]
    assert sorted(lines_of(world.repo / "runs.log")) == ["item_0", "item_1", "item_2"]
    assert "totals 3/3 failed 0" in result.stdout


def test_on_failure_handler_that_fails_fails_the_attempt(world: Env) -> None:
    world.write_json("items.json", [{"ok": "yes"}, {"ok": "no"}])
    result = cook(
        world,
        """
        name: handler-fails
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: 'test "${item.ok}" = yes'
              on_failure:
                shell: "echo tried ${item_id} >> handler.log; exit 1"
            - shell: "echo ${item_id} >> runs.log"
        """,
    )
    assert result.returncode == 3, explain(result)
    assert lines_of(world.repo / "handler.log") == ["tried item_1"]
    assert lines_of(world.repo / "runs.log") == ["item_0"]


# ---- claude steps ------------------------------------------------------------------------------


def test_claude_cost_and_tokens_in_results_and_summary(world: Env) -> None:
    world.write_json("items.json", [{"path": "a.py"}, {"path": "b.py"}, {"path": "c.py"}])
    log = world.repo.parent / "claude.log"
    result = cook(
        world,
        """
        name: claude
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - claude: "/analyze '${item.path}'"
        """
        + RESULTS_REDUCE,
        FAKE_CLAUDE_LOG=str(log),
    )
    assert result.returncode == 0, explain(result)
    assert sorted(lines_of(log)) == ["/analyze 'a.py'", "/analyze 'b.py'", "/analyze 'c.py'"]
    results = read_json(world.repo / "out" / "results.json")
    for entry, path in zip(results, ["a.py", "b.py", "c.py"], strict=True):
        assert entry["status"] == "succeeded"
        assert entry["cost_usd"] == pytest.approx(0.01)
        assert entry["input_tokens"] == 100
        assert entry["output_tokens"] == 20
        assert f"analyzed: /analyze '{path}'" in entry["output"]
    summary = result.stdout.strip().splitlines()[-1]
    assert "0.03" in summary, f"total cost missing from the final summary line: {summary!r}"
    assert "300" in summary and "60" in summary, f"tokens missing from {summary!r}"
    meta = metadata(world, first_line_job_id(result))
    assert meta["cost"]["usd"] == pytest.approx(0.03)


def test_claude_steps_in_setup_and_reduce_count_toward_the_job_total(world: Env) -> None:
    world.write_json("items.json", [{"path": "a.py"}, {"path": "b.py"}])
    result = cook(
        world,
        """
        name: claude-phases
        mode: mapreduce
        setup:
          - claude: "/plan the work"
        map:
          input: items.json
          isolation: none
          agent_template:
            - claude: "/analyze '${item.path}'"
        reduce:
          - claude: "/summarize ${map.successful} results"
        """,
    )
    assert result.returncode == 0, explain(result)
    # Two items, one setup step and one reduce step, $0.01 and 100/20 tokens each.
    meta = metadata(world, first_line_job_id(result))
    assert meta["cost"]["usd"] == pytest.approx(0.04)
    assert meta["cost"]["input_tokens"] == 400
    assert meta["cost"]["output_tokens"] == 80


def test_claude_is_error_fails_the_attempt_and_its_cost_still_counts(world: Env) -> None:
    world.write_json("items.json", [{"path": "fine"}, {"path": "FAIL_CLAUDE"}])
    result = cook(
        world,
        """
        name: claude-error
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - claude: "/analyze ${item.path}"
            - shell: "echo ${item_id} >> runs.log"
        error_policy:
          retry_config: {max_attempts: 2, backoff: fixed, initial_delay: 10ms}
        """
        + RESULTS_REDUCE,
    )
    assert result.returncode == 3, explain(result)
    assert lines_of(world.repo / "runs.log") == ["item_0"], "a failed claude step ends the agent"
    results = read_json(world.repo / "out" / "results.json")
    failed = results[1]
    assert (failed["status"], failed["attempts"]) == ("failed", 2)
    assert "simulated failure" in failed["error"]
    assert failed["cost_usd"] == pytest.approx(0.02), "both paid-for attempts are counted"
    assert failed["input_tokens"] == 200
    assert latest(world, first_line_job_id(result))["dlq"] == ["item_1"]


@pytest.mark.parametrize("extra", [(), ("--dry-run",)], ids=["run", "dry-run"])
def test_missing_claude_binary_is_an_error_before_anything_runs(
    world: Env, extra: tuple[str, ...]
) -> None:
    world.write_json("items.json", [{"path": "a"}])
    result = cook(
        world,
        """
        name: no-claude
        mode: mapreduce
        setup:
          - shell: "echo setup >> runs.log"
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: "echo ${item_id} >> runs.log"
        reduce:
          - claude: "/summarize ${map.total}"
        """,
        *extra,
        PRODIGY_CLAUDE_BIN="/nonexistent/claude",
    )
    assert result.returncode == 1, explain(result)
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:"), result.stderr
    assert "claude" in errors[0].lower()
    assert "/nonexistent/claude" in errors[0] or "PRODIGY_CLAUDE_BIN" in errors[0]
    assert not (world.repo / "runs.log").exists(), "setup ran"
    assert home_entries(world) == [], "a job was created"
    assert not JOB_ID_MATCH.search(result.stdout)


JOB_ID_MATCH = re.compile(r"mapreduce-\d{8}-\d{6}")


# ---- dry run -----------------------------------------------------------------------------------


def test_dry_run_lists_items_and_creates_nothing(world: Env) -> None:
    world.write_json("items.json", [{"path": f"file{i}.py"} for i in range(4)])
    result = cook(
        world,
        """
        name: dry
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: "echo ${item_id} >> runs.log"
            - claude: "/analyze ${item.path}"
        reduce:
          - shell: "echo reduced >> runs.log"
        """,
        "--dry-run",
    )
    assert result.returncode == 0, explain(result)
    for i in range(4):
        assert f"item_{i}" in result.stdout
        assert f"file{i}.py" in result.stdout
    assert home_entries(world) == [], "--dry-run created state under PRODIGY_HOME"
    assert not (world.repo / "runs.log").exists()
    assert not JOB_ID_MATCH.search(result.stdout)


def test_dry_run_counts_one_item_and_one_step_in_the_singular(world: Env) -> None:
    world.write_json("items.json", [{"path": "only.py"}])
    result = cook(
        world,
        """
        name: dry-one
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: "echo ${item.path}"
        reduce:
          - shell: "echo reduced"
        """,
        "--dry-run",
    )
    assert result.returncode == 0, explain(result)
    assert "1 item would run, " in result.stdout and "Reduce: 1 step.\n" in result.stdout
    assert "1 items" not in result.stdout


def test_job_runs_on_when_the_reader_of_its_output_goes_away(world: Env) -> None:
    """`JOB=$(prodigy cook wf.yaml | head -1)`: reading the id and closing the pipe must not
    kill the job with a broken pipe."""
    world.write_json("items.json", [{"n": n} for n in range(6)])
    world.write(
        "wf.yaml",
        """\
        name: pipe
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          max_parallel: 2
          agent_template:
            - shell: "sleep 0.2 && echo ${item_id} >> runs.log"
        reduce:
          - shell: "echo reduced"
        """,
    )
    proc = world.popen("cook", "wf.yaml")
    assert proc.stdout is not None
    first = proc.stdout.readline()
    job_id = job_id_of(first)
    proc.stdout.close()  # the reader goes away, as `head -1` does
    assert proc.wait(timeout=40) == 0
    assert sorted((world.repo / "runs.log").read_text().split()) == [f"item_{n}" for n in range(6)]
    metadata = json.loads((world.job_dir(job_id) / "metadata.json").read_text())
    assert metadata["status"] == "completed"
