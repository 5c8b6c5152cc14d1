"""Worktree isolation on real repositories: every agent in its own worktree and branch, merged
back into the job's branch exactly once, then into the user's branch; conflicts retried from
the updated parent; crashes mid-merge resumed without merging twice.

Agents write their logs and wait on hold files under an absolute directory ($LOGS), since each
runs in a worktree of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import Env, checkpoint_items, job_id_of, wait_for

WORKFLOW = """\
name: wt
mode: mapreduce
map:
  input: items.json
  isolation: worktree
  max_parallel: {parallel}
  agent_template:
    - shell: >-
        echo ${{item_id}} >> $LOGS/started.log;
        while [ -e $LOGS/hold-${{item_id}} ]; do sleep 0.02; done;
        echo "${{item.text}}" > ${{item.file}} && git add ${{item.file}} &&
        git commit -qm "change ${{item.file}} for ${{item_id}}";
        echo ${{item_id}} >> $LOGS/runs.log
      commit_required: true
{extra}
error_policy:
  retry_config: {{max_attempts: {attempts}, backoff: fixed, initial_delay: 0}}
"""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def repo(world: Env, tmp_path: Path) -> Env:
    logs = tmp_path / "logs"
    logs.mkdir()
    world.env["LOGS"] = str(logs)
    git(world.repo, "config", "user.email", "user@example.com")
    git(world.repo, "config", "user.name", "User")
    world.write("README.md", "hello\n")
    git(world.repo, "add", "README.md")
    git(world.repo, "commit", "-qm", "first")
    return world


def logs(w: Env) -> Path:
    return Path(w.env["LOGS"])


def write_workflow(
    w: Env, items: list[dict[str, str]], parallel: int = 3, attempts: int = 2, extra: str = ""
) -> None:
    # The items are committed: under worktree isolation the input is read in the job's branch.
    w.write_json("items.json", items)
    w.write("wf.yaml", WORKFLOW.format(parallel=parallel, attempts=attempts, extra=extra))
    git(w.repo, "add", "wf.yaml", "items.json")
    git(w.repo, "commit", "-qm", "workflow")


def merges_by_item(w: Env, ref: str) -> Counter[str]:
    """How many merge commits on `ref` carry each item's trailer."""
    bodies = git(w.repo, "log", "--merges", "--format=%B%x1e", ref).split("\x1e")
    found: Counter[str] = Counter()
    for body in bodies:
        for line in body.splitlines():
            if line.startswith("Prodigy-Item: "):
                found[json.loads(line.removeprefix("Prodigy-Item: "))] += 1
    return found


def run_counts(w: Env) -> Counter[str]:
    path = logs(w) / "runs.log"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def test_agents_changing_different_files_all_land_once_and_the_users_files_survive(
    repo: Env,
) -> None:
    items = [{"file": f"f{n}.txt", "text": f"text {n}"} for n in range(4)]
    write_workflow(repo, items)
    (repo.repo / "untracked.txt").write_bytes(b"mine\x00\xff")
    (repo.repo / "README.md").write_text("hello\nmy uncommitted line\n")

    result = repo.run("cook", "wf.yaml", "-y")

    assert result.returncode == 0, result.stdout + result.stderr
    job = job_id_of(result.stdout)
    assert f"Merged branch prodigy/{job} into" in result.stdout
    for n in range(4):
        assert (repo.repo / f"f{n}.txt").read_text() == f"text {n}\n"
    assert merges_by_item(repo, "HEAD") == {f"item_{n}": 1 for n in range(4)}
    assert run_counts(repo) == {f"item_{n}": 1 for n in range(4)}
    # The user's own files, untouched byte for byte.
    assert (repo.repo / "untracked.txt").read_bytes() == b"mine\x00\xff"
    assert (repo.repo / "README.md").read_text() == "hello\nmy uncommitted line\n"
    # Merged agents leave no worktree or branch behind.
    assert "prodigy-agents/" not in git(repo.repo, "branch", "--list", "prodigy-agents/*")
    worktrees = git(repo.repo, "worktree", "list", "--porcelain")
    assert ".agents/" not in worktrees
    git(repo.repo, "fsck", "--no-progress")
    kinds = Counter(e["type"] for e in repo.events(job))
    assert kinds["agent_merged"] == 4 and kinds["worktree_created"] == 4
    assert kinds["job_merged"] == 1


def test_without_a_terminal_or_yes_the_branch_is_left_with_the_command(repo: Env) -> None:
    write_workflow(repo, [{"file": "a.txt", "text": "a"}])
    result = repo.run("cook", "wf.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    job = job_id_of(result.stdout)
    assert f"git merge --no-ff prodigy/{job}" in result.stdout
    assert not (repo.repo / "a.txt").exists()
    assert "a.txt" in git(repo.repo, "ls-tree", "--name-only", f"prodigy/{job}")


def test_two_agents_changing_the_same_lines_one_conflicts_and_succeeds_on_retry(
    repo: Env,
) -> None:
    items = [{"file": "shared.txt", "text": "from A"}, {"file": "shared.txt", "text": "from B"}]
    write_workflow(repo, items, parallel=2)
    for name in ("item_0", "item_1"):
        (logs(repo) / f"hold-{name}").touch()
    proc = repo.popen("cook", "wf.yaml", "-y")
    # Both agents are past their worktree's creation before either commits.
    wait_for(
        lambda: (
            len((logs(repo) / "started.log").read_text().split()) >= 2
            if (logs(repo) / "started.log").exists()
            else False
        ),
        what="two agents",
    )
    (logs(repo) / "hold-item_0").unlink()
    wait_for(lambda: run_counts(repo)["item_0"] == 1, what="item_0 to commit")
    (logs(repo) / "hold-item_1").unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    job = job_id_of(out)
    events = repo.events(job)
    conflicts = [e for e in events if e["type"] == "merge_conflict"]
    assert [(e["item_id"], e["attempt"]) for e in conflicts] == [("item_1", 1)]
    assert conflicts[0]["files"] == ["shared.txt"]
    assert merges_by_item(repo, "HEAD") == {"item_0": 1, "item_1": 1}
    assert (repo.repo / "shared.txt").read_text() == "from B\n", "the retry saw A's work"
    # The conflicted attempt's branch is kept for inspection.
    kept = git(
        repo.repo, "branch", "--format=%(refname:short)", "--list", f"prodigy-agents/{job}/*"
    )
    kept = kept.split()
    assert kept == [f"prodigy-agents/{job}/item_1-a1"]


def test_an_on_merge_conflict_step_that_concludes_the_merge_saves_the_attempt(
    repo: Env,
) -> None:
    items = [{"file": "shared.txt", "text": "from A"}, {"file": "shared.txt", "text": "from B"}]
    resolve = (
        "  on_merge_conflict:\n"
        '    - claude: "/look at the conflict"\n'  # the fake claude reports $0.01
        "    - shell: >-\n"
        '        echo ${item_id} ${merge.source_branch} "$PRODIGY_ITEM_FILE"\n'
        "        >> $LOGS/resolved.log &&\n"
        "        git checkout --theirs shared.txt && git add shared.txt &&\n"
        "        git commit -q --no-edit\n"
    )
    write_workflow(repo, items, parallel=2, attempts=1, extra=resolve)
    for name in ("item_0", "item_1"):
        (logs(repo) / f"hold-{name}").touch()
    proc = repo.popen("cook", "wf.yaml", "-y")
    wait_for(
        lambda: (
            (logs(repo) / "started.log").exists()
            and len((logs(repo) / "started.log").read_text().split()) >= 2
        ),
        what="two agents",
    )
    (logs(repo) / "hold-item_0").unlink()
    wait_for(lambda: run_counts(repo)["item_0"] == 1, what="item_0 to commit")
    (logs(repo) / "hold-item_1").unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    job = job_id_of(out)
    assert (logs(repo) / "resolved.log").read_text().split() == [
        "item_1",
        f"prodigy-agents/{job}/item_1-a1",
        "shared.txt",  # the item's fields are in its environment, as in the agent's
    ]
    assert (repo.repo / "shared.txt").read_text() == "from B\n"
    assert merges_by_item(repo, "HEAD") == {"item_0": 1, "item_1": 1}
    # What the conflict steps paid is in the job's total (the agents themselves paid nothing).
    latest = json.loads((repo.job_dir(job) / "latest.json").read_text())
    assert latest["cost"]["usd"] == pytest.approx(0.01)


def test_commit_required_without_a_commit_fails_and_the_dlq_names_the_worktree(
    repo: Env,
) -> None:
    write_workflow(repo, [{"file": "a.txt", "text": "a"}], attempts=1)
    workflow = (
        (repo.repo / "wf.yaml").read_text().replace("git commit -qm", "true || git commit -qm")
    )
    repo.write("wf.yaml", workflow)
    git(repo.repo, "commit", "-qam", "no commit")
    result = repo.run("cook", "wf.yaml", "-y")
    assert result.returncode == 3, result.stdout + result.stderr
    job = job_id_of(result.stdout)
    (entry,) = json.loads(repo.run("dlq", "list", job, "--json").stdout)
    latest = json.loads((repo.job_dir(job) / "latest.json").read_text())
    last = checkpoint_items(repo.job_dir(job), latest)[0]["result"]
    assert "commit" in last["error"].lower()
    assert last["branch"] == f"prodigy-agents/{job}/item_0-a1"
    assert Path(last["worktree"]).is_dir(), "a failed attempt's worktree is kept"
    assert entry["item_id"] == "item_0"


HOOKS = {
    # A merge in progress (MERGE_HEAD written, no commit yet): the crash lands mid-merge.
    "during": "pre-merge-commit",
    # The merge commit exists but prodigy has not recorded it: the crash lands after it.
    "after": "post-merge",
}


def merge_queued(w: Env) -> bool:
    """The journal holds a success waiting for its merge: the instant just before a merge."""
    journals = list(w.jobs_dir().glob("*/journal.jsonl")) if w.jobs_dir().is_dir() else []
    return any(b'"merge_queued"' in path.read_bytes() for path in journals)


@pytest.mark.parametrize("stage", [*HOOKS, "before"])
def test_a_kill_at_a_merge_then_resume_merges_each_item_exactly_once(repo: Env, stage: str) -> None:
    items = [{"file": f"f{n}.txt", "text": f"text {n}"} for n in range(3)]
    write_workflow(repo, items, parallel=1)
    if stage in HOOKS:
        hook = repo.repo / ".git" / "hooks" / HOOKS[stage]
        hook.write_text(
            "#!/bin/sh\n"
            f'if [ -e "$LOGS/hold-merge" ]; then touch "$LOGS/at-{stage}";\n'
            '  while [ -e "$LOGS/hold-merge" ]; do sleep 0.02; done; fi\n'
        )
        hook.chmod(0o755)
    (logs(repo) / "hold-merge").touch()
    proc = repo.popen("cook", "wf.yaml", "-y")
    if stage in HOOKS:
        wait_for(lambda: (logs(repo) / f"at-{stage}").exists(), what=f"the {stage} hook")
    else:
        # Races the merge on purpose: wherever the kill lands, the merge happens once.
        wait_for(lambda: merge_queued(repo), what="a queued merge")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    (logs(repo) / "hold-merge").unlink()
    job = job_id_of(next(p.name for p in repo.jobs_dir().iterdir()))

    resumed = repo.run("resume-job", job, "-y")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert merges_by_item(repo, f"prodigy/{job}") == {f"item_{n}": 1 for n in range(3)}
    assert merges_by_item(repo, "HEAD") == {f"item_{n}": 1 for n in range(3)}
    assert run_counts(repo) == {f"item_{n}": 1 for n in range(3)}, "no agent ran twice"
    for n in range(3):
        assert (repo.repo / f"f{n}.txt").read_text() == f"text {n}\n"
    git(repo.repo, "fsck", "--no-progress")


@pytest.mark.parametrize("torn", [False, True])
def test_a_merge_killed_while_writing_the_parent_worktree_is_merged_once_on_resume(
    repo: Env, torn: bool
) -> None:
    """Found by the kill soak: `git merge` killed after it wrote a file into the parent
    worktree, before its index and commit, left that file untracked; merging again refused to
    overwrite it, so the item went to the DLQ as a merge conflict."""
    items = [{"file": f"f{n}.txt", "text": f"text {n}"} for n in range(2)]
    write_workflow(repo, items, parallel=1, attempts=1)
    pause = logs(repo)
    proc = repo.popen(
        "cook", "wf.yaml", PRODIGY_TEST_PAUSE="merge@1", PRODIGY_TEST_PAUSE_DIR=str(pause)
    )
    wait_for(lambda: (pause / "merge.paused").exists(), what="the first merge to pause")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    job = next(p.name for p in repo.jobs_dir().iterdir())
    parent = repo.home / "worktrees" / repo.repo.name / job
    # Undo the merge commit and the index, keep its files: the merge cut short mid-write.
    git(parent, "reset", "--quiet", "--mixed", "HEAD~1")
    written = git(parent, "status", "--porcelain").split()
    assert written in (["??", "f0.txt"], ["??", "f1.txt"]), written
    if torn:  # killed half way through writing the file (found by the worktree soak)
        (parent / written[1]).write_text("tex")
    (parent / "notes.txt").write_text("setup made this\n")

    resumed = repo.run("resume-job", job, "-y")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert merges_by_item(repo, "HEAD") == {"item_0": 1, "item_1": 1}
    assert run_counts(repo) == {"item_0": 1, "item_1": 1}, "no agent ran twice"
    assert (parent / "notes.txt").read_text() == "setup made this\n"
    git(repo.repo, "fsck", "--no-progress")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_during_a_merge_interrupts_the_run_and_never_fails_the_item(
    repo: Env, signum: int
) -> None:
    """Found by the kill soak: git ran in prodigy's process group, so the signal a terminal
    sends there killed a merge half-way and the item went to the DLQ as a merge conflict."""
    items = [{"file": f"f{n}.txt", "text": f"text {n}"} for n in range(2)]
    write_workflow(repo, items, parallel=1, attempts=1)
    hook = repo.repo / ".git" / "hooks" / "pre-merge-commit"
    hook.write_text(
        "#!/bin/sh\n"
        'if [ -e "$LOGS/hold-merge" ]; then touch "$LOGS/at-merge";\n'
        '  while [ -e "$LOGS/hold-merge" ]; do sleep 0.02; done; fi\n'
    )
    hook.chmod(0o755)
    (logs(repo) / "hold-merge").touch()
    proc = repo.popen("cook", "wf.yaml", PRODIGY_INTERRUPT_GRACE="0.2")
    wait_for(lambda: (logs(repo) / "at-merge").exists(), what="a merge in its hook")
    os.killpg(proc.pid, signum)
    (logs(repo) / "hold-merge").unlink()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, out + err
    job = next(p.name for p in repo.jobs_dir().iterdir())

    resumed = repo.run("resume-job", job, "-y")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert merges_by_item(repo, "HEAD") == {"item_0": 1, "item_1": 1}
    assert run_counts(repo) == {"item_0": 1, "item_1": 1}, "no agent ran twice"


@pytest.mark.parametrize("lock", ["packed-refs.lock", "config.lock"])
def test_a_packed_refs_lock_a_killed_git_left_is_dropped_and_the_job_runs(
    repo: Env, lock: str
) -> None:
    """Found by the kill soak: a git killed with prodigy while deleting a merged branch left
    `.git/packed-refs.lock`, and every later branch change of the job failed."""
    items = [{"file": f"f{n}.txt", "text": f"text {n}"} for n in range(2)]
    write_workflow(repo, items, parallel=1, attempts=1)
    (repo.repo / ".git" / lock).touch()

    cooked = repo.run("cook", "wf.yaml", "-y")

    assert cooked.returncode == 0, cooked.stdout + cooked.stderr
    assert merges_by_item(repo, "HEAD") == {"item_0": 1, "item_1": 1}
    assert not (repo.repo / ".git" / lock).exists()


def killed_while_item_1_runs(repo: Env, parallel: int) -> str:
    """A two-item job SIGKILLed (its whole process group) once item_0 is done and item_1's
    agent runs; item_1 is released for the resume. The job's id."""
    items = [{"file": f"f{n}.txt", "text": f"text {n}"} for n in range(2)]
    write_workflow(repo, items, parallel=parallel)
    (logs(repo) / "hold-item_1").touch()
    proc = repo.popen("cook", "wf.yaml", "-y")
    wait_for(lambda: run_counts(repo)["item_0"] == 1, what="item_0 to finish")
    wait_for(lambda: "item_1" in ((logs(repo) / "started.log").read_text()), what="item_1")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    (logs(repo) / "hold-item_1").unlink()
    return next(p.name for p in repo.jobs_dir().iterdir())


def test_a_worktree_add_killed_half_way_is_dropped_and_the_job_resumes(repo: Env) -> None:
    """Found by the kill soak: a SIGKILL inside `git worktree add` left an entry under
    `.git/worktrees` without its `commondir`, and every later `git worktree list` (so every
    resume) failed. The job's own broken entry goes."""
    job = killed_while_item_1_runs(repo, parallel=1)
    admin = repo.repo / ".git" / "worktrees"
    ours = admin / "item_1-a9"
    ours.mkdir(parents=True)
    # What `worktree add --lock` writes first, then the files a kill left empty or unwritten.
    (ours / "locked").write_text(f"prodigy job {job}, item item_1")
    (ours / "gitdir").write_text(f"{repo.home}/worktrees/{ours.name}/.git\n")
    (ours / "commondir").touch()
    assert subprocess.run(["git", "worktree", "list"], cwd=repo.repo).returncode != 0

    resumed = repo.run("resume-job", job, "-y")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert merges_by_item(repo, "HEAD") == {"item_0": 1, "item_1": 1}
    assert not ours.exists()


def test_a_registered_worktree_whose_directory_is_gone_is_pruned_and_run_again(
    repo: Env,
) -> None:
    """Found by the kill soak: killed between `worktree add`'s bookkeeping and its checkout,
    the attempt's path stayed registered and locked, and `worktree add` refused it forever."""
    job = killed_while_item_1_runs(repo, parallel=1)
    attempt = next(repo.home.glob(f"worktrees/*/{job}.agents/item_1-a1"))
    shutil.rmtree(attempt)  # still registered, and locked

    resumed = repo.run("resume-job", job, "-y")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert merges_by_item(repo, "HEAD") == {"item_0": 1, "item_1": 1}


def test_a_kill_during_an_agent_then_resume_runs_it_again_in_a_fresh_worktree(
    repo: Env,
) -> None:
    job = killed_while_item_1_runs(repo, parallel=2)

    resumed = repo.run("resume-job", job, "-y")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert merges_by_item(repo, "HEAD") == {"item_0": 1, "item_1": 1}
    assert (repo.repo / "f1.txt").read_text() == "text 1\n"
    git(repo.repo, "fsck", "--no-progress")


def test_worktreeinclude_files_and_worktree_setup_steps_reach_every_agent(repo: Env) -> None:
    items = [{"file": f"f{n}.txt", "text": f"text {n}"} for n in range(2)]
    setup = (
        "  worktree_setup:\n"
        '    - shell: "cp .env prepared.txt && echo ${item_id} >> $LOGS/prepared.log"\n'
    )
    write_workflow(repo, items, extra=setup)
    workflow = (
        (repo.repo / "wf.yaml")
        .read_text()
        .replace(
            "echo ${item_id} >> $LOGS/runs.log",
            "echo ${item_id} $(cat prepared.txt) >> $LOGS/runs.log",
        )
    )
    repo.write("wf.yaml", workflow)
    repo.write(".gitignore", ".env\nprepared.txt\n")
    repo.write(".worktreeinclude", ".env\n")
    git(repo.repo, "add", "wf.yaml", ".gitignore", ".worktreeinclude")
    git(repo.repo, "commit", "-qm", "include")
    repo.write(".env", "SECRET=1\n")  # untracked and ignored: git alone never copies it

    result = repo.run("cook", "wf.yaml", "-y")

    assert result.returncode == 0, result.stdout + result.stderr
    runs = sorted((logs(repo) / "runs.log").read_text().splitlines())
    assert runs == ["item_0 SECRET=1", "item_1 SECRET=1"]
    assert sorted((logs(repo) / "prepared.log").read_text().split()) == ["item_0", "item_1"]
    job = job_id_of(result.stdout)
    latest = json.loads((repo.job_dir(job) / "latest.json").read_text())
    items = checkpoint_items(repo.job_dir(job), latest)
    assert all(item["result"]["worktree_setup_s"] > 0 for item in items)
    assert (repo.repo / ".env").read_text() == "SECRET=1\n"


def test_merge_steps_replace_the_final_git_merge(repo: Env) -> None:
    items = [{"file": f"f{n}.txt", "text": f"text {n}"} for n in range(2)]
    write_workflow(repo, items)
    custom = (
        "merge:\n"
        '  - claude: "/review the merge"\n'  # the fake claude reports $0.01
        "  - shell: >-\n"
        "      echo ${merge.session_id} ${merge.source_branch} ${merge.target_branch}\n"
        "      ${merge.commit_count} '${merge.modified_files}' >> $LOGS/merge.log &&\n"
        '      git -C "$USER_REPO" merge -q --no-ff -m custom ${merge.source_branch}\n'
    )
    repo.write("wf.yaml", (repo.repo / "wf.yaml").read_text() + custom)
    git(repo.repo, "commit", "-qam", "custom merge")
    repo.env["USER_REPO"] = str(repo.repo)

    result = repo.run("cook", "wf.yaml", "-y")

    assert result.returncode == 0, result.stdout + result.stderr
    job = job_id_of(result.stdout)
    logged = (logs(repo) / "merge.log").read_text().split(maxsplit=4)
    branch = git(repo.repo, "symbolic-ref", "--short", "HEAD").strip()
    assert logged[:3] == [job, f"prodigy/{job}", branch]
    assert int(logged[3]) >= 4, "two agent commits and two merges at least"
    assert json.loads(logged[4]) == ["f0.txt", "f1.txt"]
    assert git(repo.repo, "log", "-1", "--format=%s").strip() == "custom"
    assert "with the workflow's merge steps" in result.stdout
    events = repo.events(job)
    assert [e["type"] for e in events].count("job_merged") == 1
    # What the merge steps paid is in the job's total (the agents themselves paid nothing),
    # recorded before the job ended: a resume reads the same total back.
    latest = json.loads((repo.job_dir(job) / "latest.json").read_text())
    assert latest["cost"]["usd"] == pytest.approx(0.01)
    completed = next(e for e in events if e["type"] == "job_completed")
    assert completed["cost_usd"] == pytest.approx(0.01)


def test_dlq_reprocess_merges_into_the_job_branch_and_offers_the_final_merge(repo: Env) -> None:
    items = [{"file": f"f{n}.txt", "text": f"text {n}"} for n in range(2)]
    write_workflow(repo, items, attempts=1)
    workflow = (
        (repo.repo / "wf.yaml")
        .read_text()
        .replace(
            "echo ${item_id} >> $LOGS/started.log;",
            "echo ${item_id} >> $LOGS/started.log; test ! -e $LOGS/fail-${item_id} || exit 1;",
        )
    )
    repo.write("wf.yaml", workflow)
    git(repo.repo, "commit", "-qam", "failing item")
    (logs(repo) / "fail-item_1").touch()
    first = repo.run("cook", "wf.yaml", "-y")
    assert first.returncode == 3, first.stdout + first.stderr
    job = job_id_of(first.stdout)
    assert (repo.repo / "f0.txt").exists() and not (repo.repo / "f1.txt").exists()

    (logs(repo) / "fail-item_1").unlink()
    again = repo.run("dlq", "reprocess", job)

    assert again.returncode == 0, again.stdout + again.stderr
    assert f"git merge --no-ff prodigy/{job}" in again.stdout
    assert merges_by_item(repo, f"prodigy/{job}") == {"item_0": 1, "item_1": 1}
    git(repo.repo, "merge", "-q", "--no-ff", "--no-edit", f"prodigy/{job}")
    assert (repo.repo / "f1.txt").read_text() == "text 1\n"
