"""Hostile item data through the real CLI: the safe forms pass any value to the shell as data.

Agents write what they received into files outside PRODIGY_HOME and the repository; the test
compares them byte for byte with the items, and looks everywhere for the file an injection
would have created.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from conftest import Env, job_id_of

# Under the limit of one environment variable, over the length that sends a command through a
# script file instead of `bash -c` (steps.SCRIPT_THRESHOLD_BYTES): both paths are exercised.
LONG = "long 'value' $(touch pwned) " * 3900


def hostile(pwned: Path) -> list[str]:
    return [
        "'; touch pwned; '",
        '"; touch pwned; "',
        "$(touch pwned)",
        "`touch pwned`",
        f"$(touch {pwned})",
        "a; touch pwned",
        "a && touch pwned || touch pwned",
        "line one\ntouch pwned\nline three\n",
        "back\\slash \\' \\\" \\n",
        "${HOME} $HOME $$ $0 * ? [a] ~ !! {a,b} #not a comment",
        "-n",
        "-e \\x41",
        "",
        "   leading and trailing   ",
        "tab\there\r\ncarriage",
        "unicode: é ß 中文 🎉 \u202e rtl \ufeff",
        LONG,
    ]


def run(world: Env, workflow: str) -> subprocess.CompletedProcess[str]:
    world.write("wf.yaml", textwrap.dedent(workflow))
    return world.run("cook", "wf.yaml")


def pwned_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*pwned*") if p.is_file()]


def test_both_safe_forms_pass_hostile_values_byte_exact(world: Env, tmp_path: Path) -> None:
    got = tmp_path / "got"
    for form in ("env", "sh", "item_env"):
        (got / form).mkdir(parents=True)
    pwned = tmp_path / "pwned-absolute"
    values = hostile(pwned)
    items: list[Any] = [{"x": value, "n": i} for i, value in enumerate(values)]
    world.write_json("items.json", items)
    result = run(
        world,
        f"""\
        name: hostile
        mode: mapreduce
        env: {{GOT: {json.dumps(str(got))}}}
        map:
          isolation: none
          input: items.json
          max_parallel: 4
          agent_template:
            - shell: printf %s "$PRODIGY_ITEM_X" > "$GOT/env/$PRODIGY_ITEM_ID"
            - shell: printf %s ${{sh:item.x}} > ${{sh:GOT}}/sh/${{sh:item_id}}
            - shell: printf %s "$PRODIGY_ITEM" > "$GOT/item_env/$PRODIGY_ITEM_ID"
        """,
    )
    assert result.returncode == 0, result.stderr
    job_id_of(result.stdout)
    assert pwned_files(tmp_path) == []
    for i, value in enumerate(values):
        expected = value.encode()
        assert (got / "env" / f"item_{i}").read_bytes() == expected, i
        assert (got / "sh" / f"item_{i}").read_bytes() == expected, i
        assert json.loads((got / "item_env" / f"item_{i}").read_bytes()) == items[i]


def test_scalar_items_and_field_names(world: Env, tmp_path: Path) -> None:
    got = tmp_path / "got"
    got.mkdir()
    world.write_json(
        "items.json", ["$(touch pwned)", {"file-name": "a'b", "2nd": 1, "id": "x", "tags": [1]}]
    )
    result = run(
        world,
        f"""\
        name: fields
        mode: mapreduce
        env: {{GOT: {json.dumps(str(got))}}}
        map:
          isolation: none
          input: items.json
          agent_template:
            - shell: env | grep ^PRODIGY_ITEM_ | sort > "$GOT/$PRODIGY_ITEM_ID"
        """,
    )
    assert result.returncode == 0, result.stderr
    assert pwned_files(tmp_path) == []
    assert (got / "item_0").read_text().splitlines() == [
        "PRODIGY_ITEM_ID=item_0",
        "PRODIGY_ITEM_INDEX=0",
        "PRODIGY_ITEM_VALUE=$(touch pwned)",
    ]
    assert (got / "item_1").read_text().splitlines() == [
        "PRODIGY_ITEM_FILE_NAME=a'b",
        "PRODIGY_ITEM_ID=item_1",  # the item's id: a field named `id` does not replace it
        "PRODIGY_ITEM_INDEX=1",
        "PRODIGY_ITEM_TAGS=[1]",
    ]


def test_values_no_command_can_hold_fail_their_item_with_one_sentence(world: Env) -> None:
    world.write_json(
        "items.json",
        [{"x": "fine"}, {"x": "nul\u0000byte"}, {"x": "big " * 40_000}, {"n": 1, "x": "ok"}],
    )
    result = run(
        world,
        """\
        name: unusable
        mode: mapreduce
        map:
          isolation: none
          input: items.json
          agent_template:
            - shell: echo "$PRODIGY_ITEM_X" >> ran.log
        error_policy:
          retry_config: {max_attempts: 3, initial_delay: 10ms}
        """,
    )
    assert result.returncode == 3, result.stderr
    job = job_id_of(result.stdout)
    assert sorted((world.repo / "ran.log").read_text().splitlines()) == ["fine", "ok"]
    dlq = json.loads(world.run("dlq", "list", job, "--json").stdout)
    # The item's data is at fault: no retry, and marked for manual review at once.
    assert [(entry["attempts"], entry["manual_review"]) for entry in dlq] == [(1, True)] * 2
    errors = {entry["item_id"]: (entry["error_kind"], entry["last_error"]) for entry in dlq}
    assert errors == {
        "item_1": (
            "unusable_value",
            "item field 'x' contains a NUL character, which no environment variable "
            "(PRODIGY_ITEM_X) can hold; remove NUL characters from the input",
        ),
        "item_2": (
            "unusable_value",
            "item field 'x' is too large for the environment variable PRODIGY_ITEM_X "
            "(160016 bytes; Linux allows 131072 per variable); keep large data in files and "
            "put their paths in the items",
        ),
    }
    assert "Traceback" not in result.stderr


def test_the_raw_form_is_raw_text(world: Env) -> None:
    """`${item.x}` is pasted into the command as it is (SPEC §8): the template quotes it, and
    item data that breaks out of the quotes runs. This is why the safe forms come first."""
    world.write_json("items.json", [{"x": "'; touch pwned-raw; echo '"}, {"x": "it's"}])
    result = run(
        world,
        """\
        name: raw
        mode: mapreduce
        map:
          isolation: none
          input: items.json
          agent_template:
            - shell: echo '${item.x}'
        """,
    )
    assert (world.repo / "pwned-raw").is_file()  # the first item's value ran as a command
    assert result.returncode == 3  # the second one's quote broke the command: bash failed
    job = job_id_of(result.stdout)
    dlq = json.loads(world.run("dlq", "list", job, "--json").stdout)
    assert [entry["item_id"] for entry in dlq] == ["item_1"]
    assert "unexpected EOF" in dlq[0]["last_error"]
