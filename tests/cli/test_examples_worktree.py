"""The worktree examples end to end: each example copied into a fresh committed repository and
cooked with -y, its agents (the fake Claude of tests/fake_claude.py, or a shell command) editing
one file each in their own worktree; every file lands on the user's branch exactly once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, Env, job_id_of

EXAMPLES = ROOT / "examples"
SAMPLE_FILES = [
    "sample/__init__.py",
    "sample/cart.py",
    "sample/inventory.py",
    "sample/pricing.py",
    "sample/report.py",
    "sample/users.py",
]
# The line each example's agent appends to its file.
MARKERS = {
    "refactor-with-claude": "# fake claude: ",
    "refactor-with-shell": "# reviewed by prodigy agent ",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


def copy_example(w: Env, name: str) -> str:
    """The example as the first commit of the test's repository; returns that commit."""
    shutil.copytree(EXAMPLES / name, w.repo, dirs_exist_ok=True)
    git(w.repo, "config", "user.email", "user@example.com")
    git(w.repo, "config", "user.name", "User")
    git(w.repo, "add", ".")
    git(w.repo, "commit", "-qm", f"example {name}")
    return git(w.repo, "rev-parse", "HEAD").strip()


def merges_by_item(w: Env, ref: str) -> Counter[str]:
    """How many merge commits on `ref` carry each item's trailer."""
    found: Counter[str] = Counter()
    for body in git(w.repo, "log", "--merges", "--format=%B%x1e", ref).split("\x1e"):
        for line in body.splitlines():
            if line.startswith("Prodigy-Item: "):
                found[json.loads(line.removeprefix("Prodigy-Item: "))] += 1
    return found


@pytest.mark.parametrize("example", sorted(MARKERS))
def test_each_example_edits_every_file_once_and_merges_it_into_the_users_branch(
    world: Env, tmp_path: Path, example: str
) -> None:
    base = copy_example(world, example)
    branch = git(world.repo, "symbolic-ref", "--short", "HEAD").strip()
    calls = tmp_path / "claude-calls.log"

    result = world.run("cook", "workflow.yaml", "-y", timeout=120, FAKE_CLAUDE_LOG=str(calls))

    assert result.returncode == 0, result.stdout + result.stderr
    job = job_id_of(result.stdout)
    assert f"refactored {len(SAMPLE_FILES)}/{len(SAMPLE_FILES)} files (0 failed)" in result.stdout
    assert f"Merged branch prodigy/{job} into {branch}" in result.stdout
    assert git(world.repo, "symbolic-ref", "--short", "HEAD").strip() == branch

    # Every file edited exactly once, on the user's branch and in their (clean) working tree.
    marker = MARKERS[example]
    for name in SAMPLE_FILES:
        committed = git(world.repo, "show", f"HEAD:{name}")
        (line,) = [line for line in committed.splitlines() if line.startswith(marker)]
        assert name in line, "the line names the prompt (claude) or the item (shell)"
        assert (world.repo / name).read_text() == committed
        edits = git(world.repo, "log", "--no-merges", "--format=%H", f"{base}..HEAD", "--", name)
        assert len(edits.split()) == 1, name
    changed = git(world.repo, "diff", "--name-only", base, "HEAD").split()
    assert sorted(changed) == SAMPLE_FILES
    assert git(world.repo, "status", "--porcelain") == ""

    # One merge commit per item into the job's branch, then the job's into the user's.
    assert merges_by_item(world, "HEAD") == dict.fromkeys(SAMPLE_FILES, 1)
    head_parents = git(world.repo, "log", "-1", "--format=%P", "HEAD").split()
    assert head_parents[0] == base and len(head_parents) == 2
    events = world.events(job)
    kinds = Counter(e["type"] for e in events)
    assert kinds["agent_merged"] == len(SAMPLE_FILES) and kinds["job_merged"] == 1
    assert not git(world.repo, "branch", "--list", f"prodigy-agents/{job}/*").strip()

    # Claude's cost is summed over the agents; the shell agents spend nothing.
    meta = json.loads((world.job_dir(job) / "metadata.json").read_text())
    (completed,) = [e for e in events if e["type"] == "job_completed"]
    if example == "refactor-with-claude":
        prompts = calls.read_text().splitlines()
        assert sorted(p.rsplit("EDIT=", 1)[1] for p in prompts) == SAMPLE_FILES
        assert meta["cost"]["usd"] == pytest.approx(0.01 * len(SAMPLE_FILES))
        assert completed["cost_usd"] == pytest.approx(0.01 * len(SAMPLE_FILES))
        assert f"cost ${0.01 * len(SAMPLE_FILES):.4f}" in result.stdout
    else:
        assert not calls.exists()
        assert meta["cost"]["usd"] == 0
        assert completed.get("cost_usd") is None

    fsck = subprocess.run(
        ["git", "fsck", "--no-progress"], cwd=world.repo, capture_output=True, text=True
    )
    assert (fsck.returncode, fsck.stdout + fsck.stderr) == (0, "")
