"""Tests for prodigy.secrets (the Masker; resolving env_files, env, profiles and secrets) and
for loading those keys from a workflow file, each error with its FILE:LINE."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from prodigy.errors import WorkflowError
from prodigy.secrets import (
    MASK,
    MIN_SECRET_CHARS,
    EnvEntry,
    EnvironmentProblem,
    SecretSource,
    masker_for,
    read_env_file,
    resolve_environment,
)
from prodigy.steps import OutputTail, StepContext, StepSpec, run_step
from prodigy.workflow import Workflow, load_workflow

# ---- the Masker ---------------------------------------------------------------------------------


def test_masks_every_occurrence_longest_first() -> None:
    masker = masker_for(["hunter22", "hunter22-long-version"])
    text = "a hunter22-long-version b hunter22 c hunter22hunter22"
    assert masker.mask(text) == "a *** b *** c ***"


def test_overlapping_secrets_are_masked_as_one() -> None:
    masker = masker_for(["abcdef", "defghi"])
    assert masker.mask("xxabcdefghixx") == "xx***xx"


def test_short_values_are_not_masked_and_no_secrets_changes_nothing() -> None:
    masker = masker_for(["abc", ""])
    assert not masker
    assert masker.mask("abc abc") == "abc abc"
    assert masker_for([]).mask("anything") == "anything"


def test_mask_tail_masks_a_secret_cut_at_the_start() -> None:
    masker = masker_for(["s3cr3t-value"])
    assert masker.mask_tail("r3t-value and more") == "*** and more"
    assert masker.mask_tail("e tail") == "*** tail"  # even one letter of it
    assert masker.mask_tail("nothing here") == "nothing here"
    assert masker.mask_tail("s3cr3t-value!") == "***!"


def test_mask_data_masks_keys_and_values_and_found_in_sees_json_escapes() -> None:
    masker = masker_for(['pa"ss\\word'])
    data = {"k": ['x pa"ss\\word y', 3, None], 'pa"ss\\word': True}
    assert masker.mask_data(data) == {"k": ["x *** y", 3, None], "***": True}
    assert masker.found_in('{"a": "pa\\"ss\\\\word"}')
    assert not masker.found_in('{"a": "password"}')


secret_text = st.text(
    alphabet=st.characters(blacklist_characters="*", blacklist_categories=("Cs",)),
    min_size=MIN_SECRET_CHARS,
)  # lone surrogates cannot be printed by a process (they are not UTF-8)


@given(st.lists(secret_text, min_size=1, max_size=3), st.lists(st.text(), max_size=6))
def test_no_secret_survives_masking(secrets: list[str], pieces: list[str]) -> None:
    masker = masker_for(secrets)
    text = "".join(p + s for p, s in zip(pieces, secrets * 3, strict=False))
    masked = masker.mask(text)
    for secret in secrets:
        assert secret not in masked


@given(secret_text, st.text(max_size=40), st.integers(min_value=0, max_value=200))
def test_no_secret_survives_in_a_tail_cut_anywhere(secret: str, filler: str, cut: int) -> None:
    """Whatever the cut, the last characters of an output never hold the secret or the bigger
    part of it: the tail is masked before it is cut, and a cut through a secret is masked."""
    assume(secret.strip() == secret)
    masker = masker_for([secret])
    stream = (filler + secret) * 3
    tail = OutputTail(limit=max(cut % 50, 1), masker=masker)
    data = stream.encode()
    for start in range(0, len(data), 7):
        tail.append(data[start : start + 7])
    shown = tail.text()
    assert secret not in shown
    half = secret[len(secret) // 2 :]
    if len(half) >= 2 and half not in filler and half not in MASK:
        assert not shown.startswith(half)


# ---- resolving ----------------------------------------------------------------------------------


def resolve(tmp_path: Path, **kwargs: object) -> dict[str, str]:
    args: dict[str, object] = {
        "env_files": [],
        "env": {},
        "profiles": {},
        "secrets": {},
        "profile": None,
        "base_dir": tmp_path,
        "process_env": {},
    }
    args.update(kwargs)
    return resolve_environment(**args).values  # type: ignore[arg-type]


def test_precedence_env_files_then_env_then_profile_then_secrets(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("A=from-a\nB=from-a\nC=from-a\nS=from-a-file\n")
    (tmp_path / "b.env").write_text("B=from-b\nC=from-b\n")
    environment = resolve_environment(
        env_files=["a.env", "b.env"],
        env={"C": EnvEntry("from-env"), "D": EnvEntry("from-env")},
        profiles={"p": {"D": EnvEntry("from-profile")}, "q": {"D": EnvEntry("other")}},
        secrets={"S": SecretSource("env", "S")},
        profile="p",
        base_dir=tmp_path,
        process_env={"S": "from-process"},
    )
    assert environment.values == {
        "A": "from-a",
        "B": "from-b",
        "C": "from-env",
        "D": "from-profile",
        "S": "from-a-file",  # env files are loaded over the process environment
    }
    assert environment.secret_names == {"S"}
    assert environment.profile == "p"
    assert environment.masker.mask("x from-a-file") == "x ***"


def test_secret_forms(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("token-from-file\n")
    environment = resolve_environment(
        env_files=[],
        env={
            "DB": EnvEntry("db=${DB_PASS}", secret=True, expand=True),
            "RAW": EnvEntry("${NOT_EXPANDED}"),
        },
        profiles={},
        secrets={"K": SecretSource("env", "API"), "T": SecretSource("file", "token.txt")},
        profile=None,
        base_dir=tmp_path,
        process_env={"API": "api-value", "DB_PASS": "db-value"},
    )
    assert environment.values == {
        "DB": "db=db-value",
        "RAW": "${NOT_EXPANDED}",
        "K": "api-value",
        "T": "token-from-file",  # one trailing newline stripped
    }
    assert environment.secret_names == {"DB", "K", "T"}


@pytest.mark.parametrize(
    ("kwargs", "loc", "expected"),
    [
        (
            {"secrets": {"K": SecretSource("env", "NOPE")}},
            ("secrets", "K"),
            "secret K is missing: the environment variable NOPE is not set",
        ),
        (
            {"secrets": {"K": SecretSource("file", "missing.txt")}},
            ("secrets", "K"),
            "secret K is missing: the file 'missing.txt' is not found",
        ),
        (
            {"secrets": {"K": SecretSource("env", "SHORT")}},
            ("secrets", "K"),
            "secret K is shorter than 4 characters",
        ),
        (
            {"secrets": {"K": SecretSource("env", "EMPTY")}},
            ("secrets", "K"),
            "secret K is empty",
        ),
        (
            {"env": {"X": EnvEntry("${NOPE}", secret=True, expand=True)}},
            ("env", "X", "value"),
            "env.X uses ${NOPE}, but the environment variable NOPE is not set",
        ),
        (
            {"env_files": ["gone.env"]},
            ("env_files", 0),
            "env_files[0]: the env file 'gone.env' is not found",
        ),
        (
            {"profile": "prod", "profiles": {"dev": {}, "ci": {}}},
            ("profiles",),
            "there is no profile 'prod' in this workflow; its profiles are ci, dev",
        ),
        (
            {"profile": "prod"},
            (),
            "there is no profile 'prod' in this workflow; it defines no profiles",
        ),
        (
            {"env": {"K": EnvEntry("x")}, "secrets": {"K": SecretSource("env", "SHORT")}},
            ("env", "K"),
            "env.K sets K, which is also a secret",
        ),
    ],
)
def test_resolving_problems_name_the_place(
    tmp_path: Path, kwargs: dict[str, object], loc: tuple[object, ...], expected: str
) -> None:
    with pytest.raises(EnvironmentProblem) as raised:
        resolve(tmp_path, process_env={"SHORT": "abc", "EMPTY": ""}, **kwargs)
    assert raised.value.sentence.startswith(expected)
    assert raised.value.loc == loc


def test_env_file_syntax(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("# a comment\n\nexport A=1\nB=\"two words\"\nC='${A}'\nD=${A}\nE=\n")
    assert read_env_file(path, "x.env") == {
        "A": "1",
        "B": "two words",
        "C": "${A}",
        "D": "${A}",  # taken as written: no expansion
        "E": "",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nthis is not a line\n", "x.env:2: cannot read this line"),
        ("A=1\n\nLONELY\n", "x.env:3: LONELY has no value; write LONELY= for an empty one"),
        ("A=1\nB-C=2\n", "x.env:2: 'B-C' is not a variable name"),
    ],
)
def test_env_file_errors_name_the_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "x.env"
    path.write_text(text)
    with pytest.raises(EnvironmentProblem) as raised:
        read_env_file(path, "x.env")
    assert f"{raised.value.at}: {raised.value.sentence}".startswith(expected)


# ---- loading them from a workflow file ----------------------------------------------------------

HEAD = """\
name: demo
mode: mapreduce
map:
  input: items.json
  agent_template:
    - shell: "echo ${API_KEY} ${TARGET}"
"""


def load(tmp_path: Path, extra: str, profile: str | None = None, **env: str) -> Workflow:
    (tmp_path / "wf.yaml").write_text(HEAD + extra)
    return load_workflow(tmp_path / "wf.yaml", profile, {"PATH": "/bin", **env})


def error(tmp_path: Path, extra: str, profile: str | None = None, **env: str) -> str:
    with pytest.raises(WorkflowError) as raised:
        load(tmp_path, extra, profile, **env)
    return raised.value.message


FULL = """\
env_files: [.env]
env:
  PLAIN: plain
  DB: {secret: true, value: "${DB_SOURCE}"}
profiles:
  staging: {TARGET: staging-target}
  prod:
    TARGET: prod-target
    PROD_KEY: {secret: true, value: "${PROD_SOURCE}"}
secrets:
  API_KEY: "${env:SECRET_API_KEY}"
  TOKEN: {provider: file, key: secrets/token.txt}
  FROM_DOTENV: {provider: env, key: DOTENV_VALUE}
"""


def test_every_form_loads(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DOTENV_VALUE=dotenv-secret\nTARGET=from-dotenv\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token.txt").write_text("file-token-value\n")
    env = {"SECRET_API_KEY": "api-key-value", "DB_SOURCE": "db-value", "PROD_SOURCE": "prod-v"}
    staging = load(tmp_path, FULL, "staging", **env)
    assert staging.environment == {
        "DOTENV_VALUE": "dotenv-secret",
        "TARGET": "staging-target",
        "PLAIN": "plain",
        "DB": "db-value",
        "API_KEY": "api-key-value",
        "TOKEN": "file-token-value",
        "FROM_DOTENV": "dotenv-secret",
    }
    assert staging.profile == "staging"
    assert set(staging.secret_values) == {
        "db-value",
        "api-key-value",
        "file-token-value",
        "dotenv-secret",
    }
    prod = load(tmp_path, FULL, "prod", **env)
    assert prod.environment["TARGET"] == "prod-target"
    assert "prod-v" in prod.secret_values
    # Without a profile, TARGET comes from the .env file.
    assert load(tmp_path, FULL, **env).environment["TARGET"] == "from-dotenv"


def test_config_snapshot_masks_inline_secret_values(tmp_path: Path) -> None:
    workflow = load(
        tmp_path,
        'env:\n  API_KEY: {secret: true, value: "written-inline-42"}\n  TARGET: t\n',
    )
    config = workflow.config_json()
    assert config["env"]["API_KEY"] == {"value": MASK, "secret": True}
    assert "written-inline-42" not in repr(config)


@pytest.mark.parametrize(
    ("extra", "profile", "env", "expected"),
    [
        (
            'secrets:\n  API_KEY: "${env:MISSING_KEY}"\nenv: {TARGET: t}\n',
            None,
            {},
            "wf.yaml:8:12: secret API_KEY is missing: the environment variable MISSING_KEY is "
            "not set (nor in env_files)",
        ),
        (
            'secrets:\n  API_KEY: "sk-live-written-inline"\nenv: {TARGET: t}\n',
            None,
            {},
            'wf.yaml:8:12: secrets.API_KEY must be "${env:NAME}" (the environment variable NAME) '
            "or a mapping {provider: env | file, key: ...}, got a string that is neither",
        ),
        (
            "secrets:\n  API_KEY: {provider: vault, key: x}\nenv: {TARGET: t}\n",
            None,
            {},
            "wf.yaml:8:23: secrets.API_KEY.provider must be one of 'env' or 'file', got 'vault'",
        ),
        (
            "secrets:\n  API_KEY: {provider: file, key: nowhere.txt}\nenv: {TARGET: t}\n",
            None,
            {},
            "wf.yaml:8:12: secret API_KEY is missing: the file 'nowhere.txt' is not found",
        ),
        (
            "secrets:\n  API_KEY: {provider: env, kee: X}\nenv: {TARGET: t}\n",
            None,
            {},
            "wf.yaml:8:3: secrets.API_KEY is missing the required key 'key' (and 1 more problem)",
        ),
        (
            "env:\n  API_KEY: {secret: true, valu: x}\n  TARGET: t\n",
            None,
            {},
            "wf.yaml:8:3: env.API_KEY is missing the required key 'value' (and 1 more problem)",
        ),
        (
            "env:\n  API_KEY: [1]\n  TARGET: t\n",
            None,
            {},
            "wf.yaml:8:12: env.API_KEY must be a string, got a list",
        ),
        (
            'env:\n  API_KEY: {secret: true, value: "${NOT_SET}"}\n  TARGET: t\n',
            None,
            {},
            "wf.yaml:8:34: env.API_KEY uses ${NOT_SET}, but the environment variable NOT_SET is "
            "not set",
        ),
        (
            "env_files: [.env, missing.env]\nenv: {API_KEY: k, TARGET: t}\n",
            None,
            {},
            "wf.yaml:7:19: env_files[1]: the env file 'missing.env' is not found",
        ),
        (
            "env: {API_KEY: k}\nprofiles:\n  dev: {TARGET: d}\n  ci: {TARGET: c}\n",
            "prod",
            {},
            "wf.yaml:9:3: there is no profile 'prod' in this workflow; its profiles are ci, dev",
        ),
        (
            "env: {API_KEY: k, TARGET: t}\n",
            "prod",
            {},
            "wf.yaml:1:1: there is no profile 'prod' in this workflow; it defines no profiles",
        ),
        (
            "env: {API_KEY: k}\nprofiles:\n  dev: {item: d}\n",
            None,
            {},
            "wf.yaml:9:3: profiles profile 'dev' cannot define 'item'",
        ),
        (
            # TARGET is only in a profile: without it, ${TARGET} is undefined.
            "env: {API_KEY: k}\nprofiles:\n  dev: {TARGET: d}\n",
            None,
            {},
            "wf.yaml:6:14: ${TARGET} is not a workflow variable or an environment variable",
        ),
        (
            'secrets:\n  API_KEY: "${env:SHORT}"\nenv: {TARGET: t}\n',
            None,
            {"SHORT": "ab"},
            "wf.yaml:8:12: secret API_KEY is shorter than 4 characters",
        ),
    ],
)
def test_loading_errors_name_file_line_and_column(
    tmp_path: Path, extra: str, profile: str | None, env: dict[str, str], expected: str
) -> None:
    (tmp_path / ".env").write_text("X=1\n")
    message = error(tmp_path, extra, profile, **env).removeprefix(f"{tmp_path}/")
    assert message.startswith(expected), message
    assert "sk-live-written-inline" not in message


def test_an_env_file_error_names_that_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.env").write_text("OK=1\nNOT VALID\n")
    message = error(tmp_path, "env_files: [conf/app.env]\nenv: {API_KEY: k, TARGET: t}\n")
    assert message.startswith(f"{tmp_path}/conf/app.env:2: cannot read this line")


# ---- masking at the source: a step's outcome ----------------------------------------------------


def test_step_outcome_masks_output_stderr_and_the_command_in_its_message(tmp_path: Path) -> None:
    secret = "very-secret-value-1234"
    masker = masker_for([secret])
    ctx = StepContext(
        cwd=tmp_path,
        env={**os.environ, "KEY": secret},
        variables={"KEY": secret},
        claude_bin="none",
        scratch_dir=tmp_path / "scratch",
        output_limit=10,  # the tail starts inside the secret
        masker=masker,
    )
    command = "x" * 190 + " ${KEY}; echo out-$KEY; echo err-$KEY-end >&2; exit 4"
    outcome = asyncio.run(run_step(StepSpec(kind="shell", command=command), ctx))
    assert not outcome.ok and outcome.error is not None
    for text in (outcome.error, outcome.stdout, outcome.stderr):
        assert secret not in text
        assert secret[-8:] not in text  # nor its end, where the tail cut it
    assert outcome.stderr == "r-***-end\n"  # the last 10 characters, masked before the cut
    assert outcome.error.endswith(" ***; ech…; last stderr line: r-***-end")
