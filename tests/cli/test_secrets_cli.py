"""Secrets and profiles through the real CLI (SPEC §9): a job whose setup, agents, a failing
agent and reduce all print their secrets leaves no secret value in any file under
PRODIGY_HOME nor in any output of cook, events, dlq, checkpoints or sessions, while the agents
did get the right values; `--profile` on cook, resume and resume-job."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from conftest import Env, job_id_of

SECRETS = {
    "API_KEY": "api-key-3f9c1e77",  # "${env:SECRET_API_KEY}"
    "TOKEN": "file-token-8d2b44a0",  # {provider: file, key: token.txt}
    "DOTENV": "dotenv-secret-51ac9e",  # {provider: env, key: DOTENV_SOURCE}, from .env
    "DB": "db-password-c07e12",  # env: {secret: true, value: "${DB_SOURCE}"}
    "INLINE": "inline-written-9a4f",  # env: {secret: true, value: "inline-..."}
}

WORKFLOW = """\
name: secrets-test
mode: mapreduce
env_files: [.env]
env:
  DB: {secret: true, value: "${DB_SOURCE}"}
  INLINE: {secret: true, value: "inline-written-9a4f"}
secrets:
  API_KEY: "${env:SECRET_API_KEY}"
  TOKEN: {provider: file, key: token.txt}
  DOTENV: {provider: env, key: DOTENV_SOURCE}
setup:
  - shell: "echo setup ${API_KEY} $TOKEN $DOTENV $DB $INLINE"
    capture_output: seen
map:
  input: items.json
  json_path: "$[*]"
  isolation: none
  max_parallel: 2
  agent_template:
    - shell: >-
        for v in API_KEY TOKEN DOTENV DB INLINE; do
        printf '%s' "$${!v}" | sha256sum | cut -d' ' -f1 >> "$OUT/${item_id}.hashes"; done;
        echo agent ${item_id} ${API_KEY} $TOKEN $DOTENV $DB $INLINE;
        echo warn ${TOKEN} >&2
    - claude: "summarise with key ${API_KEY} and $DB"
    - shell: >-
        if [ ${item.fail} = yes ]; then echo "failing with ${API_KEY} $INLINE" >&2; exit 3; fi
reduce:
  - shell: "echo reduce ${API_KEY} $TOKEN $DOTENV; cat $PRODIGY_MAP_RESULTS_FILE"
"""


def _world(world: Env, tmp_path: Path) -> Path:
    out = tmp_path / "out"  # outside PRODIGY_HOME: where agents write what they received
    out.mkdir()
    world.env.update(
        OUT=str(out),
        SECRET_API_KEY=SECRETS["API_KEY"],
        DB_SOURCE=SECRETS["DB"],
        FAKE_CLAUDE_LOG=str(out / "claude.log"),
    )
    world.write(".env", f"# for the test\nDOTENV_SOURCE={SECRETS['DOTENV']}\n")
    world.write("token.txt", SECRETS["TOKEN"] + "\n")
    world.write_json("items.json", [{"fail": "no"}, {"fail": "yes"}, {"fail": "no"}])
    world.write("wf.yaml", WORKFLOW)
    return out


def _files_holding(root: Path, values: list[str]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {v}" for v in values if v.encode() in data]
    return found


def test_no_secret_value_in_any_file_or_output(world: Env, tmp_path: Path) -> None:
    out = _world(world, tmp_path)
    cook = world.run("-v", "cook", "wf.yaml")
    assert cook.returncode == 3, cook.stdout + cook.stderr  # one item in the DLQ
    job = job_id_of(cook.stdout)
    outputs = [cook]
    for args in (
        ("events", "show", job),
        ("events", "show", job, "--json"),
        ("dlq", "list", job),
        ("dlq", "show", job, "item_1"),
        ("checkpoints", "show", job),
        ("checkpoints", "list", job),
        ("sessions", "show", job),
        ("sessions", "show"),
    ):
        done = world.run(*args)
        assert done.returncode == 0, f"{args}: {done.stderr}"
        outputs.append(done)

    values = list(SECRETS.values())
    leaks = _files_holding(world.home, values)
    leaks += [
        f"`{' '.join(map(str, done.args[1:]))}`: {v}"
        for done in outputs
        for v in values
        if v in done.stdout or v in done.stderr
    ]
    assert leaks == []

    # The text is there, masked: the failure, its stderr, the reduce output, the config.
    assert "failing with *** ***" in cook.stdout + cook.stderr
    shown = outputs[4].stdout  # dlq show
    assert "exit 3" in shown and "***" in shown
    assert "reduce *** *** ***" in cook.stdout
    config = json.loads(outputs[5].stdout)["workflow"]["config"]
    assert config["env"]["INLINE"] == {"value": "***", "secret": True}
    # ... while every agent got the real values, and claude got its command in clear.
    expected = [hashlib.sha256(SECRETS[n].encode()).hexdigest() for n in SECRETS]
    for item in ("item_0", "item_1", "item_2"):
        assert (out / f"{item}.hashes").read_text().split() == expected
    assert f"summarise with key {SECRETS['API_KEY']} and" in (out / "claude.log").read_text()


def test_a_missing_secret_is_a_loading_error_naming_it(world: Env, tmp_path: Path) -> None:
    _world(world, tmp_path)
    del world.env["SECRET_API_KEY"]
    done = world.run("cook", "wf.yaml")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "wf.yaml:8:12: secret API_KEY is missing: the environment variable " in done.stderr
    assert "SECRET_API_KEY is not set" in done.stderr
    assert not world.jobs_dir().exists() or not any(world.jobs_dir().iterdir())


PROFILE_WORKFLOW = """\
name: profiles-test
mode: mapreduce
env: {TARGET: default-target}
profiles:
  staging: {TARGET: staging-target}
  prod: {TARGET: prod-target}
map:
  input: items.json
  json_path: "$[*]"
  isolation: none
  agent_template:
    - shell: "echo agent $TARGET >> targets.log"
reduce:
  - shell: "echo reduce ${TARGET} >> targets.log; test ! -e stop"
"""


def _profile_of(world: Env, job: str) -> str:
    return str(json.loads((world.job_dir(job) / "metadata.json").read_text())["profile"])


def _targets(world: Env) -> list[str]:
    lines = (world.repo / "targets.log").read_text().splitlines()
    (world.repo / "targets.log").unlink()
    return lines


def _fails(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr


def test_profile_on_cook_is_remembered_by_resume_and_overridden(world: Env) -> None:
    world.write_json("items.json", [1])
    world.write("wf.yaml", PROFILE_WORKFLOW)
    world.write("stop", "")  # the reduce fails while this file exists

    cook = world.run("cook", "wf.yaml", "--profile", "staging")
    _fails(cook)
    job = job_id_of(cook.stdout)
    assert _targets(world) == ["agent staging-target", "reduce staging-target"]
    assert _profile_of(world, job) == "staging"

    _fails(world.run("resume", job))  # no --profile: the job's own
    assert _targets(world) == ["reduce staging-target"]

    _fails(world.run("resume", job, "--profile", "prod"))
    assert _targets(world) == ["reduce prod-target"]
    assert _profile_of(world, job) == "prod"  # the override is now the job's profile

    unknown = world.run("resume-job", job, "--profile", "qa")
    _fails(unknown)
    assert "there is no profile 'qa' in this workflow; its profiles are prod, staging" in (
        unknown.stderr
    )

    (world.repo / "stop").unlink()
    done = world.run("resume-job", job, "--profile", "staging")
    assert done.returncode == 0, done.stderr
    assert _targets(world) == ["reduce staging-target"]
    assert _profile_of(world, job) == "staging"


def test_unknown_profile_on_cook_creates_nothing(world: Env) -> None:
    world.write_json("items.json", [1])
    world.write("wf.yaml", PROFILE_WORKFLOW)
    done = world.run("cook", "wf.yaml", "--profile", "qa")
    _fails(done)
    assert "wf.yaml:5:3: there is no profile 'qa' in this workflow; its profiles are prod, " in (
        done.stderr
    )
    assert not world.jobs_dir().exists() or not any(world.jobs_dir().iterdir())


INPUT_WORKFLOW = """\
name: input-test
mode: mapreduce
secrets:
  API_KEY: "${env:SECRET_API_KEY}"
map:
  input: %s
  isolation: none
  agent_template:
    - shell: "true"
"""


def test_a_map_input_holding_a_secret_is_refused_and_input_errors_are_masked(
    world: Env,
) -> None:
    secret = SECRETS["API_KEY"]
    world.env["SECRET_API_KEY"] = secret
    world.write("wf.yaml", INPUT_WORKFLOW % "'echo first; echo x-$API_KEY'")  # a line per item
    held = world.run("cook", "wf.yaml")
    _fails(held)
    assert "the map input holds the value of a secret (in item item_1)" in held.stderr
    world.write("wf.yaml", INPUT_WORKFLOW % "'echo no access for $API_KEY >&2; exit 5'")
    broken = world.run("cook", "wf.yaml")
    _fails(broken)
    assert "no access for ***" in broken.stderr
    for done in (held, broken):
        assert secret not in done.stdout + done.stderr
    assert _files_holding(world.home, [secret]) == []
