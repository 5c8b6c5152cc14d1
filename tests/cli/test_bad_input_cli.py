"""Bad input to the real `prodigy` executable: one clear `error:` sentence, the right exit code,
no traceback, and nothing half-created under PRODIGY_HOME.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import Env, job_id_of

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ITEMS_IN_DLQ = 3


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def home_tree(world: Env) -> set[str]:
    if not world.home.exists():
        return set()
    return {str(p.relative_to(world.home)) for p in world.home.rglob("*")}


def assert_clean_error(
    result: subprocess.CompletedProcess[str],
    exit_code: int,
    *fragments: str,
    pattern: str | None = None,
) -> str:
    """One `error:` sentence on stderr naming the fault; returns that line.

    Usage errors may add click's `Usage:` / `Try '... --help'` lines around it: those are the
    next command to type. Nothing else is printed, and never a traceback.
    """
    both = result.stdout + result.stderr
    assert "Traceback" not in both, explain(result)
    assert result.returncode == exit_code, explain(result)
    assert result.stdout.strip() == "", f"errors belong on stderr\n{explain(result)}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one line starting 'error:'\n{explain(result)}"
    allowed_extra = ("Usage:", "Try '") if exit_code == EXIT_USAGE else ()
    others = [line for line in lines if line not in errors and not line.startswith(allowed_extra)]
    assert others == [], f"stderr has more than the one error sentence\n{explain(result)}"
    error = errors[0]
    for fragment in fragments:
        assert fragment.lower() in error.lower(), f"{fragment!r} missing from {error!r}"
    if pattern is not None:
        assert re.search(pattern, error), f"{pattern!r} not found in {error!r}"
    return error


def assert_no_job(world: Env) -> None:
    assert not world.jobs_dir().exists() or list(world.jobs_dir().iterdir()) == [], (
        f"a job was created: {sorted(home_tree(world))}"
    )
    assert home_tree(world) == set(), f"files were created: {sorted(home_tree(world))}"


def cook_bad(world: Env, workflow: str, *args: str) -> subprocess.CompletedProcess[str]:
    world.write("bad.yaml", workflow)
    return world.run("cook", "bad.yaml", *args)


AGENT = """
  isolation: none
  agent_template:
    - shell: "echo ${item_id} >> runs.log"
"""


@pytest.fixture
def inputs(world: Env) -> Env:
    world.write_json("items.json", [{"path": "a"}, {"path": "b"}])
    world.write_json("obj.json", {"files": [{"path": "a"}], "other": 1})
    world.write("badjson.json", '{"a": [1, 2,, 3]}\n')
    (world.repo / "latin1.jsonl").write_bytes(b'{"path": "a"}\n{"path": "caf\xe9"}\n')
    return world


# (workflow, exit code, fragments of the message, regex the message must match)
WORKFLOW_CASES = {
    "invalid-yaml": (
        "name: t\nmode: mapreduce\nmap: [unclosed\n",
        ["invalid YAML"],
        r"bad\.yaml:\d+:\d+",
    ),
    "tab-indented-yaml": (
        "name: t\nmode: mapreduce\nmap:\n\tinput: items.json\n",
        [],
        r"bad\.yaml:4:\d+",
    ),
    "unknown-key": (
        "name: t\nmode: mapreduce\nmap:\n  input: items.json\n  max_paralel: 2" + AGENT,
        ["max_paralel", "did you mean", "max_parallel"],
        r"bad\.yaml:5:3\b",
    ),
    "unknown-top-level-key": (
        "name: t\nmode: mapreduce\nreduse: []\nmap:\n  input: items.json" + AGENT,
        ["reduse", "did you mean", "reduce"],
        r"bad\.yaml:3:1\b",
    ),
    "wrong-type": (
        'name: t\nmode: mapreduce\nmap:\n  input: items.json\n  max_parallel: "two"' + AGENT,
        ["max_parallel", "integer"],
        r"bad\.yaml:5:17\b",
    ),
    "wrong-type-nested": (
        "name: t\nmode: mapreduce\nmap:\n  input: items.json"
        + AGENT
        + "error_policy:\n  retry_config:\n    max_attempts: [3]\n",
        ["max_attempts"],
        r"bad\.yaml:10:19\b",
    ),
    "wrong-type-steps": (
        "name: t\nmode: mapreduce\nmap:\n  input: items.json\n  agent_template: 5\n",
        ["agent_template"],
        r"bad\.yaml:5:\d+",
    ),
    "missing-agent_template": (
        "name: t\nmode: mapreduce\nmap:\n  input: items.json\n",
        ["agent_template", "missing"],
        r"bad\.yaml:\d+:\d+",
    ),
    "missing-name": (
        "mode: mapreduce\nmap:\n  input: items.json" + AGENT,
        ["name", "missing"],
        r"bad\.yaml:\d+:\d+",
    ),
    "missing-map": (
        "name: t\nmode: mapreduce\n",
        ["map", "missing"],
        r"bad\.yaml:\d+:\d+",
    ),
    "max_parallel-0": (
        "name: t\nmode: mapreduce\nmap:\n  input: items.json\n  max_parallel: 0" + AGENT,
        ["max_parallel", "at least 1"],
        r"bad\.yaml:5:\d+",
    ),
    "bad-mode": (
        "name: t\nmode: batch\nmap:\n  input: items.json" + AGENT,
        ["mode", "mapreduce"],
        r"bad\.yaml:2:\d+",
    ),
    "invalid-jsonpath-syntax": (
        'name: t\nmode: mapreduce\nmap:\n  input: obj.json\n  json_path: "$.files[?("' + AGENT,
        ["json_path"],
        r"bad\.yaml:5:\d+",
    ),
    "undefined-variable": (
        "name: t\nmode: mapreduce\nmap:\n  input: items.json\n  agent_template:\n"
        '    - shell: "echo ${NOPE_UNDEFINED_VAR_1234}"\n',
        ["NOPE_UNDEFINED_VAR_1234"],
        r"bad\.yaml:6:\d+",
    ),
    "undefined-variable-in-reduce": (
        "name: t\nmode: mapreduce\nmap:\n  input: items.json"
        + AGENT
        + 'reduce:\n  - shell: "echo ${map.totl}"\n',
        ["map.totl"],
        r"bad\.yaml:9:\d+",
    ),
    # SPEC §2: a bad filter is a loading error, reported with file, line and column.
    "bad-filter": (
        'name: t\nmode: mapreduce\nmap:\n  input: items.json\n  filter: "size >"' + AGENT,
        ["filter", "size >"],
        r"bad\.yaml:5:\d+",
    ),
}


@pytest.mark.parametrize("isolation", ["", "\n  isolation: worktree"], ids=["default", "asked"])
def test_worktree_isolation_needs_a_first_commit(inputs: Env, isolation: str) -> None:
    agent = AGENT.replace("  isolation: none\n", "")
    result = cook_bad(
        inputs, "name: t\nmode: mapreduce\nmap:\n  input: items.json" + isolation + agent
    )
    assert_clean_error(result, EXIT_FAILURE, "has no commit yet", "isolation: none", pattern=None)
    assert_no_job(inputs)


def test_worktree_isolation_outside_git_is_refused(inputs: Env, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "bad.yaml").write_text(
        "name: t\nmode: mapreduce\nmap:\n  input: items.json\n  isolation: worktree"
        + AGENT.replace("  isolation: none\n", "")
    )
    result = inputs.run("cook", "bad.yaml", cwd=plain)
    assert_clean_error(result, EXIT_FAILURE, "not in a git repository", pattern=None)


@pytest.mark.parametrize("case", list(WORKFLOW_CASES))
def test_bad_workflow_file(inputs: Env, case: str) -> None:
    workflow, fragments, pattern = WORKFLOW_CASES[case]
    result = cook_bad(inputs, workflow)
    assert_clean_error(result, EXIT_FAILURE, *fragments, pattern=pattern)
    assert_no_job(inputs)
    assert not (inputs.repo / "runs.log").exists()


# Problems found in the input, after the workflow itself has loaded.
INPUT_CASES = {
    "missing-input-file": (
        "map:\n  input: nope.json" + AGENT,
        ["nope.json", "not found"],
        None,
    ),
    "input-not-json": (
        "map:\n  input: badjson.json" + AGENT,
        ["badjson.json", "not valid JSON"],
        r"\b1:13\b",  # line 1, column 13: the second comma
    ),
    "input-not-utf8": (
        "map:\n  input: latin1.jsonl" + AGENT,
        ["latin1.jsonl", "not UTF-8", "byte 0xe9 at 2:14", "iconv"],
        None,
    ),
    "command-output-not-utf8": (
        "map:\n  input: \"printf 'caf\\\\351'\"" + AGENT,
        ["output of input command", "not UTF-8", "byte 0xe9 at 1:4"],
        None,
    ),
    "jsonpath-selects-nothing": (
        'map:\n  input: obj.json\n  json_path: "$.fils[*]"' + AGENT,
        ["$.fils[*]", "files", "other"],
        None,
    ),
    "object-without-json_path": (
        "map:\n  input: obj.json" + AGENT,
        ["json_path", "files", "other"],
        None,
    ),
    "input-command-fails": (
        'map:\n  input: "echo broken >&2; exit 7"' + AGENT,
        ["exit code 7", "broken"],
        None,
    ),
    "duplicate-id_field": (
        "map:\n  input: dupes.json\n  id_field: path" + AGENT,
        ["path", "unique"],
        None,
    ),
}


@pytest.mark.parametrize("case", list(INPUT_CASES))
@pytest.mark.parametrize("dry_run", [False, True], ids=["cook", "dry-run"])
def test_bad_map_input(inputs: Env, case: str, dry_run: bool) -> None:
    inputs.write_json("dupes.json", [{"path": "x"}, {"path": "x"}])
    body, fragments, pattern = INPUT_CASES[case]
    args = ("--dry-run",) if dry_run else ()
    result = cook_bad(inputs, "name: t\nmode: mapreduce\n" + body, *args)
    assert_clean_error(result, EXIT_FAILURE, *fragments, pattern=pattern)
    assert_no_job(inputs)
    assert not (inputs.repo / "runs.log").exists()


@pytest.mark.parametrize(
    "map_setting",
    [
        pytest.param('input: obj.json\n  json_path: "$.files[?("', id="bad-jsonpath"),
        pytest.param('input: items.json\n  filter: "size >"', id="bad-filter"),
    ],
)
def test_loading_errors_are_reported_before_setup_runs(inputs: Env, map_setting: str) -> None:
    """SPEC §2: bad JSONPath and bad filter are loading errors, found "before anything runs"."""
    result = cook_bad(
        inputs,
        'name: t\nmode: mapreduce\nsetup:\n  - shell: "echo setup >> runs.log"\n'
        f"map:\n  {map_setting}" + AGENT,
    )
    assert_clean_error(result, EXIT_FAILURE, pattern=r"bad\.yaml:7:\d+")
    assert not (inputs.repo / "runs.log").exists(), "setup ran although the workflow is invalid"
    assert_no_job(inputs)


def test_unwritable_state_directory(world: Env) -> None:
    world.write_json("items.json", [1])
    world.write("wf.yaml", "name: t\nmode: mapreduce\nmap:\n  input: items.json" + AGENT)
    not_a_dir = world.repo.parent / "home-is-a-file"
    not_a_dir.write_text("")
    result = world.run("cook", "wf.yaml", PRODIGY_HOME=str(not_a_dir))
    assert_clean_error(result, EXIT_FAILURE, str(not_a_dir))
    assert not (world.repo / "runs.log").exists()


# ---- command-line usage --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(("cook",), ["WORKFLOW"], id="missing-workflow-argument"),
        pytest.param(("cook", "nonexistent.yaml"), ["nonexistent.yaml"], id="no-such-file"),
        pytest.param(("cook", "--bogus", "wf.yaml"), ["--bogus"], id="unknown-flag"),
        pytest.param(("frobnicate",), ["frobnicate"], id="unknown-command"),
        pytest.param(("cook", "--max-parallel", "0", "wf.yaml"), ["--max-parallel"], id="mp-0"),
        pytest.param(
            ("cook", "--max-parallel", "lots", "wf.yaml"), ["--max-parallel"], id="mp-nan"
        ),
        pytest.param(("cook", "--max-items", "0", "wf.yaml"), ["--max-items"], id="max-items-0"),
        pytest.param(("resume-job",), ["JOB_ID"], id="resume-job-without-id"),
    ],
)
def test_usage_errors_exit_2(world: Env, args: tuple[str, ...], fragments: list[str]) -> None:
    world.write_json("items.json", [1])
    world.write(
        "wf.yaml",
        "name: t\nmode: mapreduce\nmap:\n  input: items.json" + AGENT,
    )
    result = world.run(*args)
    assert_clean_error(result, EXIT_USAGE, *fragments)
    assert_no_job(world)
    assert not (world.repo / "runs.log").exists()


def test_workflow_path_that_is_a_directory(world: Env) -> None:
    (world.repo / "adir.yaml").mkdir()
    result = world.run("cook", "adir.yaml")
    assert_clean_error(result, EXIT_USAGE, "adir.yaml")
    assert_no_job(world)


def test_resume_job_with_unknown_id(world: Env) -> None:
    result = world.run("resume-job", "mapreduce-20200101-000000")
    assert_clean_error(result, EXIT_FAILURE, "Checkpoint not found", "mapreduce-20200101-000000")
    assert_no_job(world)


def test_resume_job_with_malformed_id_does_not_escape_the_state_dir(world: Env) -> None:
    result = world.run("resume-job", "../../etc")
    assert_clean_error(result, EXIT_FAILURE, "Checkpoint not found")
    assert_no_job(world)


def test_resume_with_no_unfinished_job(world: Env) -> None:
    result = world.run("resume")
    assert_clean_error(result, EXIT_FAILURE)
    assert_no_job(world)


def test_resume_when_the_only_job_is_complete(world: Env) -> None:
    world.write_json("items.json", [1])
    world.write("wf.yaml", "name: t\nmode: mapreduce\nmap:\n  input: items.json" + AGENT)
    done = world.run("cook", "wf.yaml")
    assert done.returncode == 0, explain(done)
    job_id = job_id_of(done.stdout)
    before = home_tree(world)
    journal = (world.job_dir(job_id) / "journal.jsonl").read_bytes()

    result = world.run("resume")
    assert_clean_error(result, EXIT_FAILURE)
    assert home_tree(world) == before, "a refused resume changed the job's files"
    assert (world.job_dir(job_id) / "journal.jsonl").read_bytes() == journal
    assert (world.repo / "runs.log").read_text().splitlines() == ["item_0"]


# ---- an item that lacks a field the template uses ----------------------------------------------


@pytest.mark.parametrize(
    "odd_item",
    [
        pytest.param({"name": "no path here"}, id="object-without-the-field"),
        pytest.param("just a string", id="not-an-object"),
    ],
)
def test_item_missing_a_template_field_fails_only_that_item(world: Env, odd_item: object) -> None:
    world.write_json("items.json", [{"path": "a"}, odd_item, {"path": "c"}])
    world.write(
        "wf.yaml",
        """
        name: missing-field
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          agent_template:
            - shell: "echo ${item.path} >> runs.log"
        error_policy:
          retry_config: {max_attempts: 2, backoff: fixed, initial_delay: 10ms}
        reduce:
          - write_file: {path: "results.json", content: "${map.results}", format: json}
        """,
    )
    result = world.run("cook", "wf.yaml")
    assert result.returncode == EXIT_ITEMS_IN_DLQ, explain(result)
    assert "Traceback" not in result.stdout + result.stderr
    job_id = job_id_of(result.stdout)
    assert Counter((world.repo / "runs.log").read_text().splitlines()) == {"a": 1, "c": 1}
    results = json.loads((world.repo / "results.json").read_text())
    assert [r["status"] for r in results] == ["succeeded", "failed", "succeeded"]
    assert "item.path" in (results[1]["error"] or ""), results[1]
    checkpoint = json.loads((world.job_dir(job_id) / "latest.json").read_text())
    assert checkpoint["dlq"] == ["item_1"]
    assert "{" not in Path(world.repo / "runs.log").read_text(), "no raw ${...} reached the shell"
