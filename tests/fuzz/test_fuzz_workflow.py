"""Fuzzing the workflow loader: any bytes, any YAML text and near-valid workflows with any value
in any field give a Workflow or one WorkflowError sentence `FILE:LINE:COLUMN: ...` pointing
inside the file, never another exception."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fuzzing import assert_clear_error, fuzz, json_values, user_text
from hypothesis import example, given
from hypothesis import strategies as st
from ruamel.yaml import YAML
from test_fuzz_item_filter import filter_texts
from test_fuzz_items import json_paths, sort_texts

from prodigy.errors import UsageError, WorkflowError
from prodigy.workflow import Workflow, load_workflow

# YAML that a dumper never writes, spliced in where a placeholder value was dumped.
RAW_YAML = [
    "2001-02-30",
    "2001-12-14t25:59:43",
    "2001-12-14t21:59:43.10-05:00",
    "!!int abc",
    "!!float abc",
    "!!bool abc",
    "!!binary aGk=",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!pairs [a: 1]",
    "!foo bar",
    "!foo [bar]",
    "!foo {a: 1}",
    "!!python/object:os.system ls",
    "!!str {a: 1}",
    "!!map abc",
    "*nope",
    "&x [*x]",
    "&y {k: *y}",
    "1" + "0" * 5000,
    ".nan",
    ".inf",
    "1e999",
    "0o99",
    "1:20:30",
    "~",
    '"\\ud800"',
    '"a\\x85b"',
    '"line\\nbreak"',
    '"${a\\nb}"',
    '"\\x00"',
    "{<<: {shell: x}}",
    "[" * 300 + "]" * 300,
    "{? [a, b]: c}",
    "{[1]: 2}",
]
PLACEHOLDER = "zzraw{}zz"

junk = st.one_of(json_values, st.sampled_from(range(len(RAW_YAML))).map(PLACEHOLDER.format))


def field(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any] = junk) -> Any:
    """A field's value: valid 17 times in 20, else an odd value for it (a wrong number, an
    undefined variable) or anything at all. Rarer, and every document would have something
    wrong somewhere, so the checks that run on a valid model would never be reached."""
    # Hypothesis draws 0 far more often than 1 in 20: 0 must be the valid case.
    return st.integers(0, 19).flatmap(lambda n: junk if n == 13 else odd if n in (5, 17) else valid)


def choice(valid: list[Any], odd: list[Any]) -> Any:
    return field(st.sampled_from(valid), st.sampled_from(odd))


def whole(low: int, high: int, odd_low: int) -> Any:
    return field(st.integers(low, high), st.integers(odd_low, low - 1))


durations = field(
    st.one_of(st.sampled_from(["500ms", "30s", "2m", "1h", "1.5m", "10 s"]), st.integers(1, 600)),
    st.one_of(
        st.sampled_from(["0", "-1", "never", "1d", "", "1e3", "١٢s"]),
        st.floats(),
        st.integers(-5, 10**30),
    ),
)
templates = field(
    st.sampled_from(["echo hi", "echo ${job_id}", "echo $${escaped}", "echo ${HOME}", "make"]),
    st.one_of(
        user_text,
        st.sampled_from(
            [
                "echo ${item}",
                "echo ${item.list[0]}",
                "echo ${map.results}",
                "echo ${map.nope}",
                "echo ${merge.source_branch}",
                "echo ${base_commit}",
                "echo ${OUT}",
                "echo ${undefined}",
                "echo ${HOME:-/tmp}",
                "echo ${a\nb}",
                "echo ${}",
                "echo ${item.²}",
            ]
        ),
    ),
)
item_templates = field(
    st.sampled_from(["echo ${item.path}", "echo ${item_id} ${attempt}", "cat ${item.list[0]}"]),
    templates,
)
NAMES = ["OUT", "base_commit", "x_1"]
ODD_NAMES = ["item", "map", "job_id", "1x", "a-b", "", "a\nb"]
names = choice(NAMES, ODD_NAMES)
env_values = st.dictionaries(
    st.sampled_from(NAMES) | st.sampled_from(ODD_NAMES), templates, max_size=3
)
STRAY_KEYS = st.sampled_from(["shel", "timeout_secs", "source_path", "x", "Name", "a\nb"])


def mapping(
    fields: dict[str, tuple[int, st.SearchStrategy[Any]]], junk_too: bool = True
) -> st.SearchStrategy[Any]:
    """A mapping with each key present with its chance (in percent), plus now and then a
    stray key; with `junk_too`, the mapping is now and then anything at all instead."""

    @st.composite
    def draw_mapping(draw: st.DrawFn) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, (chance, strategy) in fields.items():
            # The often drawn 0 gives the usual case: present if likely, absent if not.
            n = draw(st.integers(0, 99))
            if (n < chance) if chance >= 50 else (n >= 100 - chance):
                result[key] = draw(strategy)
        if draw(st.integers(0, 9)) == 7:
            result[draw(STRAY_KEYS)] = draw(json_values)
        return result

    return field(draw_mapping(), junk) if junk_too else draw_mapping()


def step_strategy(commands: st.SearchStrategy[Any], depth: int) -> st.SearchStrategy[Any]:
    common: dict[str, tuple[int, st.SearchStrategy[Any]]] = {
        "timeout": (20, durations),
        "env": (15, field(env_values)),
        "capture_output": (15, names),
        "working_dir": (10, templates),
        "commit_required": (10, field(st.booleans())),
    }
    if depth < 2:
        common["on_failure"] = (15, step_strategy(commands, depth + 1))
    write_file = mapping(
        {
            "path": (97, commands),
            "content": (97, commands),
            "format": (50, choice(["text", "json", "yaml"], ["xml", "JSON"])),
        }
    )
    kinds: list[dict[str, tuple[int, st.SearchStrategy[Any]]]] = [
        {"shell": (100, commands)},
        {"claude": (100, commands)},
        {"write_file": (100, write_file)},
    ]
    odd_kinds = [{"shell": (100, commands), "claude": (100, commands)}, {}]
    return field(
        st.one_of(*(mapping({**kind, **common}) for kind in kinds)),
        st.one_of(*(mapping({**kind, **common}) for kind in odd_kinds)),
    )


def step_lists(commands: st.SearchStrategy[Any], min_size: int = 0) -> st.SearchStrategy[Any]:
    listed = st.lists(step_strategy(commands, 0), min_size=min_size, max_size=3)
    return field(st.one_of(listed, listed.map(lambda s: {"commands": s})))


def phase(commands: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """setup: and merge: — a list of steps, or {commands, timeout}."""
    return st.one_of(
        step_lists(commands),
        mapping(
            {
                "commands": (97, st.lists(step_strategy(commands, 0), max_size=3)),
                "timeout": (50, durations),
            }
        ),
    )


map_phases = mapping(
    {
        "input": (97, choice(["items.json", "ls", "a.jsonl"], ["", " "])),
        "json_path": (30, field(json_paths)),
        "filter": (30, field(filter_texts)),
        "sort_by": (20, field(sort_texts)),
        "distinct": (10, names),
        "offset": (10, whole(0, 10, -2)),
        "max_items": (10, whole(1, 10, -2)),
        "max_parallel": (20, whole(1, 100, -2)),
        "agent_timeout_secs": (10, durations),
        "agent_template": (97, step_lists(item_templates, min_size=1)),
        "isolation": (20, choice(["worktree", "none"], ["docker", "None", ""])),
        "id_field": (10, names),
        "worktree_setup": (10, step_lists(templates)),
        "on_merge_conflict": (10, step_lists(templates)),
    }
)
retry_configs = mapping(
    {
        "max_attempts": (50, whole(1, 5, -1)),
        "backoff": (50, choice(["fixed", "linear", "exponential", "fibonacci"], ["x", ""])),
        "initial_delay": (30, durations),
        "max_delay": (30, durations),
        "jitter": (30, field(st.booleans())),
    }
)
workflows = mapping(
    {
        "name": (97, choice(["wf", "word-count"], ["", " "])),
        "mode": (97, choice(["mapreduce"], ["MapReduce", "batch"])),
        "env": (30, field(env_values)),
        "setup": (30, phase(templates)),
        "map": (97, map_phases),
        "reduce": (40, field(st.lists(step_strategy(templates, 0), max_size=3))),
        "merge": (10, phase(templates)),
        "executor": (10, mapping({"dask": (50, user_text), "working_dir": (50, user_text)})),
        "error_policy": (
            30,
            mapping(
                {
                    "on_item_failure": (50, choice(["dlq", "skip", "stop"], ["x", "DLQ"])),
                    "max_failures": (30, whole(1, 5, -1)),
                    "failure_threshold": (30, field(st.floats(0.01, 1), st.floats(-1, 2))),
                    "retry_config": (50, retry_configs),
                }
            ),
        ),
        "checkpoint": (
            10,
            mapping(
                {"interval_items": (50, whole(1, 5, -1)), "max_checkpoints": (50, whole(1, 5, -1))}
            ),
        ),
    },
    junk_too=False,
)


def dump(document: Any, flow: bool) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = flow
    yaml.width = 4096
    out = io.StringIO()
    yaml.dump(document, out)
    text = out.getvalue()
    return re.sub(r"zzraw(\d+)zz", lambda m: RAW_YAML[int(m.group(1))], text)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    text = dump(draw(workflows), draw(st.booleans()))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        at = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from([*":- \n\t'\"{}[]&*!#|>%@`,?", "\x00", "\ufeff", "é"]))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "insert":
            text = text[:at] + char + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + char + text[at + 1 :]
    return text


@pytest.fixture(scope="module")
def workflow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-workflow") / "wf.yaml"


def loaded_or_error(path: Path, data: bytes) -> Workflow | None:
    path.write_bytes(data)
    try:
        workflow = load_workflow(path)
    except Exception as exc:
        assert_clear_error(exc, WorkflowError, UsageError)
        where = re.match(rf"{re.escape(str(path))}:(\d+):(\d+): \S", str(exc))
        assert where, f"no FILE:LINE:COLUMN in {exc}"
        # YAML also breaks lines at a lone \r, \x85, \u2028 and \u2029.
        lines = len(data.decode("utf-8", errors="replace").splitlines()) + 1
        assert 1 <= int(where.group(1)) <= lines, f"line outside the file: {exc}"
        assert int(where.group(2)) >= 1
        return None
    assert isinstance(workflow, Workflow)
    msgspec.json.encode(workflow.config_json())
    workflow.uses_claude()
    return workflow


BASE = "name: wf\nmode: mapreduce\nmap:\n  input: items.json\n  agent_template:\n    - shell: a\n"
LAUGHS = "".join(
    f"a{n}: &a{n} [{', '.join([f'*a{n - 1}' if n else 'x'] * 10)}]\n" for n in range(8)
)


@fuzz(300)
@given(data=st.one_of(st.binary(max_size=200), user_text.map(str.encode)))
# Found by fuzzing: ruamel's two-line message for a character YAML refuses.
@example(data=b"\x00")
def test_any_bytes_load_or_give_one_located_error(workflow_file: Path, data: bytes) -> None:
    loaded_or_error(workflow_file, data)


@fuzz(300)
@given(text=yaml_texts())
# Found by fuzzing, each once a bare exception or a message of two lines:
@example(text=BASE + "reduce: !!omap [a: 1]\n")  # AttributeError: lc.data is None
@example(text="{&map: {agent_template: [shell: x], input: items.json}, mode: mapreduce}\n")
@example(text=BASE + "env: {[a]: 1}\n")  # TypeError: unhashable type (a list as a key)
@example(text=BASE + "reduce: !foo [bar]\n")
@example(text=BASE + "reduce: [{<<: {shell: x}}]\n")
@example(text=BASE + "reduce: 2001-02-30\n")  # ValueError from ruamel's constructor
@example(text=BASE + "env: {A: 2001-12-14t25:59:43}\n")
@example(text=BASE + "env: {A: !!int abc}\n")
@example(text=BASE + "env: {A: !!bool abc}\n")  # KeyError
@example(text=BASE + "checkpoint: {max_checkpoints: 1" + "0" * 5000 + "}\n")
@example(text=BASE + 'env: {A: "\x00"}\n')  # ruamel's two-line message
@example(text=BASE + "env: {A: *nope}\n")  # said to be a second document
@example(text=BASE + "env: " + "[" * 600 + "]" * 600 + "\n")  # RecursionError
@example(text=BASE + LAUGHS)  # 10**8 values once aliases are expanded
@example(text=BASE + '"a\\nb": 1\n')  # a line break in the quoted key
@example(text=BASE + 'reduce: [{shell: "${a\\nb}"}]\n')
@example(text=BASE + "  json_path: $[" + "9" * 5000 + "]\n")  # python-jsonpath's ValueError
@example(text=BASE + "  json_path: '$[?@.a == 1e999]'\n")  # and its OverflowError
def test_near_valid_workflows_load_or_give_one_located_error(
    workflow_file: Path, text: str
) -> None:
    loaded_or_error(workflow_file, text.encode("utf-8", errors="surrogatepass"))
