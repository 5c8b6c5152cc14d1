"""Tests for loading workflow files: the validated model and FILE:LINE:COLUMN error messages."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prodigy.errors import UsageError, WorkflowError
from prodigy.workflow import Step, Workflow, WriteFile, load_workflow

SPEC_EXAMPLE = """\
name: analyze-codebase
mode: mapreduce
env: {REPORT_DIR: reports}
setup:
  - shell: "python list_files.py > files.json"
  - shell: "git rev-parse HEAD"
    capture_output: base_commit
map:
  input: files.json
  json_path: "$.files[*]"
  filter: "size > 100"
  sort_by: "priority DESC"
  distinct: path
  offset: 0
  max_items: 100
  max_parallel: 5
  agent_timeout_secs: 600
  agent_template:
    - claude: "/analyze '${item.path}'"
    - shell: "python check.py '${item.path}'"
      timeout: 60
      on_failure:
        shell: "echo recovering ${item.path}"
error_policy:
  on_item_failure: dlq
  max_failures: 20
  failure_threshold: 0.2
  retry_config:
    max_attempts: 3
    backoff: exponential
    initial_delay: 1s
    max_delay: 60s
    jitter: true
checkpoint:
  interval_items: 1
  max_checkpoints: 3
reduce:
  - shell: "echo ${map.successful}/${map.total} succeeded, ${map.failed} failed"
  - write_file: {path: "reports/summary.json", content: "${map.results}", format: json}
"""

# Line 6 is the one agent step; tests append or replace lines of this.
MINIMAL = """\
name: demo
mode: mapreduce
map:
  input: items.json
  agent_template:
    - shell: "echo ${item.path}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> Workflow:
    return load_workflow(write(tmp_path, text))


def error(tmp_path: Path, text: str) -> str:
    """The loading error with the temporary directory cut off: 'wf.yaml:L:C: sentence'."""
    path = write(tmp_path, text)
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path)
    message = caught.value.message
    assert message.startswith(f"{path}:")
    assert "\n" not in message
    return "wf.yaml:" + str(message).removeprefix(f"{path}:")


def test_spec_example_loads_with_its_values(tmp_path: Path) -> None:
    wf = load(tmp_path, SPEC_EXAMPLE)
    assert wf.name == "analyze-codebase"
    assert wf.mode == "mapreduce"
    assert wf.env == {"REPORT_DIR": "reports"}
    assert wf.setup is not None
    assert [s.shell for s in wf.setup.steps] == [
        "python list_files.py > files.json",
        "git rev-parse HEAD",
    ]
    assert wf.setup.steps[1].capture_output == "base_commit"
    assert wf.setup.timeout is None
    m = wf.map
    assert (m.input, m.json_path, m.filter, m.sort_by, m.distinct) == (
        "files.json",
        "$.files[*]",
        "size > 100",
        "priority DESC",
        "path",
    )
    assert (m.offset, m.max_items, m.max_parallel, m.agent_timeout_secs) == (0, 100, 5, 600.0)
    assert m.isolation is None, "decided when the job is created: worktree inside git"
    first, second = m.agent_template
    assert first.kind == "claude" and first.text == "/analyze '${item.path}'"
    assert second.kind == "shell" and second.timeout == 60.0
    assert second.on_failure is not None
    assert second.on_failure.shell == "echo recovering ${item.path}"
    policy = wf.error_policy
    assert (policy.on_item_failure, policy.max_failures, policy.failure_threshold) == (
        "dlq",
        20,
        0.2,
    )
    retry = policy.retry_config
    assert (retry.max_attempts, retry.backoff, retry.initial_delay, retry.max_delay) == (
        3,
        "exponential",
        1.0,
        60.0,
    )
    assert retry.jitter is True
    assert (wf.checkpoint.interval_items, wf.checkpoint.max_checkpoints) == (1, 3)
    assert wf.reduce[1].write_file == WriteFile(
        path="reports/summary.json", content="${map.results}", format="json"
    )
    assert wf.reduce[1].kind == "write_file"
    assert wf.reduce[1].text == "write_file reports/summary.json"
    assert wf.uses_claude()


def test_source_and_config_json(tmp_path: Path) -> None:
    path = write(tmp_path, SPEC_EXAMPLE)
    wf = load_workflow(path)
    assert wf.source_path == path
    assert wf.source_hash == hashlib.sha256(SPEC_EXAMPLE.encode()).hexdigest()
    config = wf.config_json()
    assert "source_path" not in config and "source_hash" not in config
    assert config["map"]["max_parallel"] == 5
    assert config["error_policy"]["retry_config"]["initial_delay"] == 1.0
    assert Workflow.model_validate(config).config_json() == config


def test_defaults(tmp_path: Path) -> None:
    wf = load(tmp_path, MINIMAL)
    assert wf.setup is None and wf.reduce == [] and wf.env == {}
    assert wf.map.max_parallel == 10 and wf.map.offset == 0 and wf.map.max_items is None
    assert wf.error_policy.on_item_failure == "dlq"
    assert wf.error_policy.retry_config.max_attempts == 1
    assert wf.error_policy.retry_config.backoff == "exponential"
    assert wf.checkpoint.max_checkpoints == 3
    assert not wf.uses_claude()


def test_models_are_frozen(tmp_path: Path) -> None:
    wf = load(tmp_path, MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        wf.map.max_parallel = 3


def test_setup_as_plain_list_and_as_commands_mapping(tmp_path: Path) -> None:
    listed = load(tmp_path, MINIMAL + "setup:\n  - shell: make\n")
    assert listed.setup is not None
    assert [s.shell for s in listed.setup.steps] == ["make"]
    assert listed.setup.timeout is None
    mapped = load(tmp_path, MINIMAL + "setup:\n  timeout: 2m\n  commands:\n    - shell: make\n")
    assert mapped.setup is not None
    assert [s.shell for s in mapped.setup.steps] == ["make"]
    assert mapped.setup.timeout == 120.0


def test_agent_template_as_commands_mapping(tmp_path: Path) -> None:
    text = MINIMAL.replace("  agent_template:\n", "  agent_template:\n    commands:\n  ")
    wf = load(tmp_path, text)
    assert [s.shell for s in wf.map.agent_template] == ["echo ${item.path}"]


def test_uses_claude_sees_on_failure_handlers(tmp_path: Path) -> None:
    text = MINIMAL + "      on_failure: {claude: '/fix it'}\n"
    assert load(tmp_path, text).uses_claude()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("45", 45.0), ("1.5", 1.5)],
)
def test_duration_forms(tmp_path: Path, text: str, seconds: float) -> None:
    wf = load(tmp_path, MINIMAL + f"      timeout: {text}\n")
    assert wf.map.agent_template[0].timeout == seconds


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["ms", "s", "m", "h"]))
def test_duration_units_scale(number: int, unit: str) -> None:
    step = Step.model_validate({"shell": "x", "timeout": f"{number}{unit}"})
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert step.timeout == pytest.approx(number * factor)


def test_env_numbers_become_strings(tmp_path: Path) -> None:
    wf = load(tmp_path, MINIMAL + "env: {PORT: 8080, DEBUG: true, RATE: 0.5}\n")
    assert wf.env == {"PORT": "8080", "DEBUG": "true", "RATE": "0.5"}


# ---- errors -------------------------------------------------------------------------------------


def test_missing_file_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="workflow file not found"):
        load_workflow(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path: Path) -> None:
    text = MINIMAL.replace("input: items.json", "input: items.json: oops")
    assert error(tmp_path, text) == (
        "wf.yaml:4:20: invalid YAML: mapping values are not allowed here"
    )


def test_duplicate_key(tmp_path: Path) -> None:
    text = MINIMAL.replace("mode: mapreduce\n", "mode: mapreduce\nname: again\n")
    assert error(tmp_path, text) == (
        "wf.yaml:3:1: duplicate key 'name' (in the mapping starting at line 1); "
        "each key may appear only once"
    )


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    text = MINIMAL.replace("  input:", "  max_paralel: 5\n  input:")
    assert error(tmp_path, text) == (
        "wf.yaml:4:3: unknown key 'max_paralel' in map; did you mean 'max_parallel'?"
    )


def test_unknown_key_in_a_step(tmp_path: Path) -> None:
    text = MINIMAL + "      timout: 5\n"
    assert error(tmp_path, text) == (
        "wf.yaml:7:7: unknown key 'timout' in map.agent_template[0]; did you mean 'timeout'?"
    )


def test_unknown_top_level_key_without_close_match(tmp_path: Path) -> None:
    message = error(tmp_path, MINIMAL + "zzz: 1\n")
    assert message.startswith("wf.yaml:7:1: unknown key 'zzz' at the top level; the keys allowed")
    assert "error_policy" in message and "source_hash" not in message


def test_wrong_type(tmp_path: Path) -> None:
    text = MINIMAL + "  max_parallel: five\n"
    assert error(tmp_path, text) == (
        "wf.yaml:7:17: map.max_parallel must be an integer, got 'five'"
    )


def test_quoted_number_is_a_wrong_type(tmp_path: Path) -> None:
    text = MINIMAL + '  max_parallel: "5"\n'
    assert error(tmp_path, text) == "wf.yaml:7:17: map.max_parallel must be an integer, got '5'"


def test_missing_required_field_points_at_parent(tmp_path: Path) -> None:
    text = MINIMAL.replace("  input: items.json\n", "")
    assert error(tmp_path, text) == "wf.yaml:3:1: map is missing the required key 'input'"
    assert error(tmp_path, MINIMAL.replace("name: demo\n", "")) == (
        "wf.yaml:1:1: the workflow is missing the required key 'name'"
    )


def test_max_parallel_zero(tmp_path: Path) -> None:
    text = MINIMAL + "  max_parallel: 0\n"
    assert error(tmp_path, text) == "wf.yaml:7:17: map.max_parallel must be at least 1, got 0"


def test_bad_duration(tmp_path: Path) -> None:
    message = error(tmp_path, MINIMAL + "      timeout: soon\n")
    assert message.startswith("wf.yaml:7:16: map.agent_template[0].timeout must be a duration")
    assert message.endswith("got 'soon'")


def test_non_positive_timeout(tmp_path: Path) -> None:
    assert error(tmp_path, MINIMAL + "      timeout: 0s\n") == (
        "wf.yaml:7:16: map.agent_template[0].timeout must be greater than 0, got '0s'"
    )


def test_shell_and_claude_in_one_step(tmp_path: Path) -> None:
    text = MINIMAL + "      claude: /fix\n"
    assert error(tmp_path, text) == (
        "wf.yaml:6:7: map.agent_template[0] must have exactly one of shell, claude or "
        "write_file, but has shell and claude"
    )


def test_step_with_no_kind(tmp_path: Path) -> None:
    text = MINIMAL + "reduce:\n  - timeout: 5\n"
    assert error(tmp_path, text) == (
        "wf.yaml:8:5: reduce[0] must have exactly one of shell, claude or write_file, "
        "but has none of them"
    )


def test_isolation_worktree_and_merge_conflict_steps_load(tmp_path: Path) -> None:
    body = (
        MINIMAL
        + "  isolation: worktree\n"
        + "  on_merge_conflict:\n"
        + '    - shell: "echo ${merge.source_branch} ${merge.target_branch} ${item_id}"\n'
    )
    path = tmp_path / "wf.yaml"
    path.write_text(body)
    m = load_workflow(path).map
    assert m.isolation == "worktree" and len(m.on_merge_conflict) == 1


def test_merge_variables_exist_only_in_merge_conflict_steps(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        MINIMAL + '  on_merge_conflict:\n    - shell: "echo ${merge.nope}"\n',
    )
    assert "merge.source_branch" in message


def test_literal_choices(tmp_path: Path) -> None:
    text = MINIMAL + "error_policy:\n  retry_config:\n    backoff: quadratic\n"
    assert error(tmp_path, text) == (
        "wf.yaml:9:14: error_policy.retry_config.backoff must be one of 'fixed', 'linear', "
        "'exponential' or 'fibonacci', got 'quadratic'"
    )


def test_failure_threshold_range(tmp_path: Path) -> None:
    text = MINIMAL + "error_policy: {failure_threshold: 1.5}\n"
    assert error(tmp_path, text) == (
        "wf.yaml:7:35: error_policy.failure_threshold must be at most 1, got 1.5"
    )


def test_unknown_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNDEFINED_THING", raising=False)
    text = MINIMAL + "reduce:\n  - shell: echo ${UNDEFINED_THING}\n"
    assert error(tmp_path, text) == (
        "wf.yaml:8:12: ${UNDEFINED_THING} is not a workflow variable or an environment "
        "variable; define it under env:"
    )


def test_environment_variable_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODIGY_TEST_ONLY", "1")
    load(tmp_path, MINIMAL + "reduce:\n  - shell: echo ${PRODIGY_TEST_ONLY}\n")


def test_item_variable_in_reduce(tmp_path: Path) -> None:
    text = MINIMAL + "reduce:\n  - shell: echo ${item.path}\n"
    assert error(tmp_path, text) == (
        "wf.yaml:8:12: reduce step uses ${item.path}, but item variables exist only in map steps"
    )


def test_item_variable_in_setup_on_failure(tmp_path: Path) -> None:
    text = MINIMAL + "setup:\n  - shell: make\n    on_failure:\n      shell: echo ${item_id}\n"
    assert error(tmp_path, text) == (
        "wf.yaml:10:14: setup step uses ${item_id}, but item variables exist only in map steps"
    )


def test_map_variable_outside_reduce_and_unknown_map_field(tmp_path: Path) -> None:
    text = MINIMAL.replace("${item.path}", "${map.total}")
    assert error(tmp_path, text) == (
        "wf.yaml:6:14: map step uses ${map.total}, but map results exist only in reduce steps"
    )
    message = error(tmp_path, MINIMAL + "reduce:\n  - shell: echo ${map.sucessful}\n")
    assert message.startswith("wf.yaml:8:12: reduce step uses ${map.sucessful}, but map has")


def test_variables_in_every_step_field(tmp_path: Path) -> None:
    text = MINIMAL + "reduce:\n  - write_file:\n      path: out.txt\n      content: ${nope_var}\n"
    assert error(tmp_path, text).startswith("wf.yaml:10:16: ${nope_var} is not a workflow")
    text = MINIMAL + "      env: {X: '${nope_var}'}\n"
    assert error(tmp_path, text).startswith("wf.yaml:7:16: ${nope_var} is not a workflow")


def test_known_variables_are_accepted(tmp_path: Path) -> None:
    text = (
        "name: v\nmode: mapreduce\nenv: {OUT: reports}\n"
        "setup:\n  - shell: git rev-parse HEAD\n    capture_output: base\n"
        "map:\n  input: x.json\n  agent_template:\n"
        "    - shell: echo ${item} ${item.a.b[0]} ${item_index} ${item_id} ${attempt}\n"
        "    - claude: ${job_id} ${OUT} ${base} ${count} $${literal} $HOME\n"
        "reduce:\n  - shell: echo ${map.results} ${map.skipped} ${base}\n"
        "    capture_output: count\n"
    )
    load(tmp_path, text)


def test_shell_parameter_syntax_needs_escape(tmp_path: Path) -> None:
    message = error(tmp_path, MINIMAL.replace("${item.path}", "${HOME:-/tmp}"))
    assert message.startswith("wf.yaml:6:14: ${HOME:-/tmp} is not a valid variable reference")


def test_shell_quoted_form_is_checked_as_its_name(tmp_path: Path) -> None:
    text = (
        "name: v\nmode: mapreduce\nenv: {OUT: reports}\n"
        "map:\n  input: x.json\n  agent_template:\n"
        "    - shell: cat ${sh:item.path} ${sh:item} ${sh:item_id} > ${sh:OUT}/${sh:job_id}\n"
        "      env: {P: '${sh:item.a[0]}'}\n"
        "reduce:\n  - shell: echo ${sh:map.results} ${sh:map.total}\n"
    )
    load(tmp_path, text)
    text = MINIMAL + "reduce:\n  - shell: echo ${sh:item.path}\n"
    assert error(tmp_path, text) == (
        "wf.yaml:8:12: reduce step uses ${sh:item.path}, but item variables exist only in map steps"
    )
    message = error(tmp_path, MINIMAL + "reduce:\n  - shell: echo ${sh:nope_var}\n")
    assert message.startswith("wf.yaml:8:12: ${sh:nope_var} is not a workflow variable")


def test_empty_or_unknown_prefixed_form(tmp_path: Path) -> None:
    assert error(tmp_path, MINIMAL.replace("${item.path}", "${sh:}")) == (
        "wf.yaml:6:14: ${sh:} names no variable (write one after 'sh:', as in "
        "${sh:item.path}); write $${sh:} to pass it to the shell unchanged"
    )
    assert error(tmp_path, MINIMAL.replace("${item.path}", "${quote:item.path}")) == (
        "wf.yaml:6:14: ${quote:item.path} is not a valid variable reference (the only prefixed "
        "form is ${sh:NAME}, the value shell-quoted); write $${quote:item.path} to pass it to "
        "the shell unchanged"
    )


def test_capture_output_must_be_a_name(tmp_path: Path) -> None:
    text = MINIMAL + "reduce:\n  - shell: date\n    capture_output: true\n"
    message = error(tmp_path, text)
    assert message.startswith("wf.yaml:9:21: reduce[0].capture_output must be the name")


def test_capture_output_refused_in_map_steps(tmp_path: Path) -> None:
    text = MINIMAL + "      capture_output: out\n"
    assert error(tmp_path, text) == (
        "wf.yaml:7:7: map steps cannot use capture_output; it is for setup and reduce steps"
    )


def test_bad_json_path(tmp_path: Path) -> None:
    text = MINIMAL + "  json_path: '$.files['\n"
    message = error(tmp_path, text)
    assert message.startswith("wf.yaml:7:14: map.json_path '$.files[' is not valid JSONPath: ")


# Found by fuzzing (tests/fuzz): ruamel keeps no positions (lc.data is None) for the contents of a
# tagged collection or for keys merged in with `<<`, and the loader failed with AttributeError.
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("reduce: !!omap [a: 1]\n", "wf.yaml:7:9: reduce must be a list, got a mapping"),
        ("env: !!omap [A: [1]]\n", "wf.yaml:7:6: env.A must be a string, got a list"),
        ("reduce: !x [{shel: x}]\n", "wf.yaml:7:9: unknown key 'shel' in reduce[0]; did you"),
        ("<<: {source_path: x}\n", "wf.yaml:1:1: unknown key 'source_path' at the top level"),
    ],
)
def test_yaml_without_positions_is_still_located(tmp_path: Path, extra: str, expected: str) -> None:
    assert error(tmp_path, MINIMAL + extra).startswith(expected)


def test_merge_keys_in_steps_load(tmp_path: Path) -> None:
    text = MINIMAL + "reduce:\n  - <<: {shell: echo done}\n    timeout: 5\n"
    step = load(tmp_path, text).reduce[0]
    assert (step.shell, step.timeout) == ("echo done", 5.0)


# Found by fuzzing (tests/fuzz): ruamel raised ValueError or KeyError for a scalar it cannot
# convert to the type its spelling or tag gives it.
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "reduce: 2001-02-30\n",
            "wf.yaml:7:9: invalid YAML: '2001-02-30' cannot be read as a YAML timestamp (day is "
            "out of range for month); quote it if it is meant as text",
        ),
        (
            "env: {A: 2001-12-14t25:59:43}\n",
            "wf.yaml:7:10: invalid YAML: '2001-12-14t25:59:43' cannot be read as a YAML "
            "timestamp (hour must be in 0..23)",
        ),
        (
            "env:\n  A: !!int abc\n",
            "wf.yaml:8:6: invalid YAML: 'abc' cannot be read as a YAML int (",
        ),
        (
            "env:\n  A: !!bool abc\n",
            "wf.yaml:8:6: invalid YAML: 'abc' cannot be read as a YAML bool; quote",
        ),
        (
            "checkpoint: {max_checkpoints: 1" + "0" * 5000 + "}\n",
            "wf.yaml:7:31: invalid YAML: '1000",
        ),
    ],
)
def test_scalar_yaml_cannot_convert_is_located(tmp_path: Path, extra: str, expected: str) -> None:
    assert error(tmp_path, MINIMAL + extra).startswith(expected)


# Found by fuzzing (tests/fuzz): ruamel's message for a character YAML does not allow spans two
# lines and has no line and column.
def test_a_character_yaml_refuses_is_one_located_line(tmp_path: Path) -> None:
    assert error(tmp_path, MINIMAL + 'env: {A: "a\x00b"}\n') == (
        "wf.yaml:7:12: invalid YAML: U+0000 is not allowed in a YAML file "
        "(special characters are not allowed)"
    )


# Found by fuzzing (tests/fuzz): every ComposerError was reported as a second document.
def test_undefined_alias_is_named(tmp_path: Path) -> None:
    assert error(tmp_path, MINIMAL + "env: {A: *nope}\n") == (
        "wf.yaml:7:10: invalid YAML: found undefined alias 'nope'"
    )


# Found by fuzzing (tests/fuzz): ruamel's composer recursed into a RecursionError (after seconds).
@pytest.mark.parametrize(
    "value", ["[" * 600 + "]" * 600, "{a: " * 600 + "1" + "}" * 600, "[" * 101 + "]" * 101]
)
def test_deep_nesting_is_refused_at_its_depth(tmp_path: Path, value: str) -> None:
    message = error(tmp_path, MINIMAL + f"env: {{A: {value}}}\n")
    assert message.startswith("wf.yaml:7:")
    assert message.endswith(": the YAML is nested more than 100 levels deep")


# Found while writing the fuzz strategies: aliases of aliases ("billion laughs") were expanded
# in full; eight such lines stand for 10**8 values, and the loader ran out of time and memory.
def test_aliases_expanding_past_the_limit_are_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 8)]
    message = error(tmp_path, MINIMAL + "\n".join(lines) + "\n")
    assert message.endswith(
        ": the workflow holds more than 10000 values once its YAML aliases are expanded"
    )


# Found by fuzzing (tests/fuzz): a sentence quoting a key or a ${...} with a line break in it
# (written "a\nb" in YAML) was two lines.
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('"a\\nb": 1\n', "wf.yaml:7:1: unknown key 'a b' at the top level; the keys allowed"),
        (
            'reduce: [{shell: "echo ${a\\nb}"}]\n',
            "wf.yaml:7:18: ${a b} is not a valid variable reference; write $${a b} to pass it",
        ),
    ],
)
def test_sentences_quoting_a_line_break_stay_one_line(
    tmp_path: Path, extra: str, expected: str
) -> None:
    assert error(tmp_path, MINIMAL + extra).startswith(expected)


# Seen while fuzzing (tests/fuzz): ruamel warned, on eight lines of stderr, about an anchor
# defined twice, which YAML allows (an alias refers to the latest).
def test_an_anchor_defined_twice_loads_without_a_warning(tmp_path: Path) -> None:
    text = MINIMAL + "env: {A: &x a, B: &x b, C: *x}\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(tmp_path, text).env == {"A": "a", "B": "b", "C": "b"}


# Found by fuzzing (tests/fuzz): python-jsonpath let int()'s ValueError and OverflowError escape.
@pytest.mark.parametrize("path", ["$[" + "9" * 5000 + "]", "$[?@.size > 1e999]"])
def test_json_path_with_a_number_too_large(tmp_path: Path, path: str) -> None:
    message = error(tmp_path, MINIMAL + f"  json_path: '{path}'\n")
    assert message.startswith("wf.yaml:7:14: map.json_path ")
    assert message.endswith("is not valid JSONPath: a number in it is too large")


def test_errors_in_setup_point_into_the_file(tmp_path: Path) -> None:
    listed = MINIMAL + "setup:\n  - shell: make\n    timeout: never\n"
    assert error(tmp_path, listed).startswith("wf.yaml:9:14: setup[0].timeout must be a duration")
    mapped = MINIMAL + "setup:\n  commands:\n    - shel: make\n"
    assert error(tmp_path, mapped) == (
        "wf.yaml:9:7: unknown key 'shel' in setup.commands[0]; did you mean 'shell'?"
    )


def test_first_problem_in_file_order_with_count(tmp_path: Path) -> None:
    text = MINIMAL + "  max_parallel: 0\n  offset: -1\nname2: x\n"
    assert error(tmp_path, text) == (
        "wf.yaml:7:17: map.max_parallel must be at least 1, got 0 (and 2 more problems)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "wf.yaml:1:1: the workflow file is empty"),
        ("# only a comment\n", "wf.yaml:1:1: the workflow file is empty"),
        ("- a\n- b\n", "wf.yaml:1:1: the workflow must be a mapping"),
        ("just text\n", "wf.yaml:1:1: the workflow must be a mapping"),
        ("a: 1\n---\nb: 2\n", "wf.yaml:2:1: the workflow file must hold a single YAML document"),
        (MINIMAL + "env: !secret x\n", "wf.yaml:7:6: the YAML tag !secret is not supported"),
        (MINIMAL + "env: &loop [*loop]\n", "wf.yaml:7:6: env must be a mapping, got a list"),
        ("source_hash: x\n" + MINIMAL, "wf.yaml:1:1: unknown key 'source_hash' at the top level"),
    ],
)
def test_documents_that_are_not_workflows(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text).startswith(expected)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(WorkflowError, match=r"wf\.yaml:1:1: the workflow file is not UTF-8"):
        load_workflow(path)


@given(st.integers(min_value=-5, max_value=0))
def test_max_parallel_below_one_always_refused(value: int) -> None:
    data = {
        "name": "n",
        "mode": "mapreduce",
        "map": {"input": "x", "max_parallel": value, "agent_template": [{"shell": "x"}]},
    }
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Workflow.model_validate(data)
