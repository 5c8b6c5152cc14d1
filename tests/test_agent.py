"""One item's agent: steps in order, on_failure handlers, the agent time limit, spend."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

from prodigy.agent import AgentSpec
from prodigy.executors.local import LocalExecutor
from prodigy.items import WorkItem
from prodigy.state import Attempt
from prodigy.workflow import Step, load_workflow

FAKE_CLAUDE = Path(__file__).resolve().parent / "fake_claude.py"


def template(tmp_path: Path, steps: str, extra: str = "") -> list[Step]:
    path = tmp_path / "wf.yaml"
    path.write_text(
        "name: t\nmode: mapreduce\nmap:\n  input: x.json\n"
        + textwrap.indent(extra, "  ")
        + "  agent_template:\n"
        + textwrap.indent(textwrap.dedent(steps), "    ")
    )
    return list(load_workflow(path).map.agent_template)


def attempt(
    tmp_path: Path, steps: list[Step], data: object, timeout: float | None = None
) -> Attempt:
    spec = AgentSpec(
        job_id="job-1",
        template=steps,
        workflow_env={},
        variables={},
        claude_bin=str(FAKE_CLAUDE),
        scratch_dir=tmp_path / "scratch",
        agent_timeout=timeout,
    )
    item = WorkItem(index=4, id="item_4", data=data)

    async def run() -> Attempt:
        async with LocalExecutor() as executor:
            return await executor.run_attempt(spec, item, 2, tmp_path)

    return asyncio.run(run())


def test_steps_run_in_order_with_the_item_environment(tmp_path: Path) -> None:
    steps = template(
        tmp_path,
        """\
        - shell: "echo ${item.name} $PRODIGY_ITEM_ID $PRODIGY_ATTEMPT $PRODIGY_ITEM_INDEX"
        - shell: "echo second ${item_index} ${attempt}"
        """,
    )
    result = attempt(tmp_path, steps, {"name": "x"})
    assert result.ok and result.attempt == 2
    assert result.output == "x item_4 2 4\nsecond 4 2\n"


def test_a_failing_step_stops_the_agent_and_names_itself(tmp_path: Path) -> None:
    steps = template(
        tmp_path,
        """\
        - shell: "echo before"
        - shell: "echo oops >&2; exit 4"
        - shell: "touch never"
        """,
    )
    result = attempt(tmp_path, steps, {})
    assert not result.ok and result.exit_code == 4 and result.error_kind == "exit_code"
    assert result.failed_step == "echo oops >&2; exit 4"
    assert "oops" in result.stderr and result.signature
    assert not (tmp_path / "never").exists()


def test_on_failure_handler_that_succeeds_lets_the_agent_go_on(tmp_path: Path) -> None:
    steps = template(
        tmp_path,
        """\
        - shell: "exit 1"
          on_failure:
            shell: "echo recovered"
        - shell: "echo after"
        """,
    )
    result = attempt(tmp_path, steps, {})
    assert result.ok and result.output == "recovered\nafter\n"


def test_agent_timeout_ends_the_attempt(tmp_path: Path) -> None:
    steps = template(tmp_path, '- shell: "sleep 30"\n')
    result = attempt(tmp_path, steps, {}, timeout=0.5)
    assert not result.ok and result.timed_out and result.error_kind == "timeout"
    assert result.duration_s < 10


def test_missing_item_field_is_a_missing_variable_failure(tmp_path: Path) -> None:
    steps = template(tmp_path, '- shell: "echo ${item.path}"\n')
    result = attempt(tmp_path, steps, {"other": 1})
    assert not result.ok and result.error_kind == "missing_variable"
    assert "path" in (result.error or "")


def test_claude_spend_is_summed_over_the_steps_of_an_attempt(tmp_path: Path) -> None:
    steps = template(
        tmp_path,
        """\
        - claude: "/one ${item.n}"
        - claude: "/two ${item.n}"
        """,
    )
    result = attempt(tmp_path, steps, {"n": 1})
    assert result.ok
    assert abs(result.spend.cost_usd - 0.02) < 1e-9
    assert (result.spend.input_tokens, result.spend.output_tokens) == (200, 40)
