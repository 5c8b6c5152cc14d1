"""`prodigy worktrees list|clean|merge`, and `checkpoints clean` removing a job's worktrees, on
jobs really run with `map.isolation: worktree` in a real git repository: a failed attempt's
branch kept, a final merge left, a job running, the user's own branches and files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import Env, ended_records, hold, job_id_of, release, wait_for

# Each agent commits a file of its own in its worktree, then fails if its item says so (its
# commit stays on its branch, merged nowhere). An agent whose hold file exists waits first.
WORKFLOW = """\
    name: isolated
    mode: mapreduce
    map:
      input: items.json
      isolation: worktree
      json_path: "$[*]"
      max_parallel: 2
      agent_template:
        - shell: 'while [ -e "{hold}/${{item_id}}" ]; do sleep 0.02; done'
        - shell: 'echo "${{item.name}}" > "out-${{item.name}}.txt" && git add -A && git commit -q --allow-empty -m "work on ${{item.name}}"'
        - shell: 'test "${{item.kind}}" != fail'
    error_policy:
      retry_config: {{max_attempts: 1}}
    """  # noqa: E501

ONE_FAILS = [{"name": "a", "kind": "ok"}, {"name": "b", "kind": "fail"}]
ALL_OK = [{"name": "a", "kind": "ok"}, {"name": "b", "kind": "ok"}]


def git(world: Env, *args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd or world.repo, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def prodigy(world: Env, *args: str) -> subprocess.CompletedProcess[str]:
    result = world.run(*args)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def one_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """One `error:` sentence on stderr, nothing else, and the exit code."""
    explained = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == code, explained
    assert result.stdout == "", explained
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), explained
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def setup_repo(world: Env, items: list[dict[str, str]]) -> str:
    """The user's repository with a first commit (worktree isolation starts from HEAD); the
    name of the branch they are on."""
    git(world, "config", "user.email", "user@example.com")
    git(world, "config", "user.name", "User")
    (world.repo / "hold").mkdir()
    world.write(".gitignore", "hold/\n")
    world.write("README.md", "the user's readme\n")
    world.write("wf.yaml", WORKFLOW.format(hold=world.repo / "hold"))
    world.write_json("items.json", items)
    git(world, "add", "-A")
    git(world, "commit", "-qm", "first")
    return git(world, "symbolic-ref", "--short", "HEAD")


def cook(world: Env, *args: str, expect: int) -> str:
    result = prodigy(world, "cook", "wf.yaml", *args)
    assert result.returncode == expect, result.stdout + result.stderr
    return job_id_of(result.stdout)


def rows(output: str) -> list[list[str]]:
    """The plain table (stdout is not a terminal): header, then one row per line."""
    return [line.split() for line in output.splitlines()]


def dead_attempt(world: Env, job_id: str) -> dict[str, str]:
    """The failed attempt as the journal records it (its DLQ entry's last attempt)."""
    ended = ended_records(world.job_dir(job_id))
    dead = [record["result"] for record in ended if record["outcome"] == "dead"]
    assert len(dead) == 1
    result: dict[str, str] = dead[0]
    return result


def job_refs(world: Env, job_id: str) -> list[str]:
    return git(
        world,
        "for-each-ref",
        "--format=%(refname:short)",
        f"refs/heads/prodigy/{job_id}",
        f"refs/heads/prodigy-agents/{job_id}",
    ).splitlines()


def worktrees_dir(world: Env) -> Path:
    return world.home / "worktrees" / world.repo.name


def git_state(world: Env) -> tuple[str, str, list[str]]:
    """Every ref and commit, every worktree, and every file in prodigy's worktrees folder."""
    refs = git(world, "for-each-ref", "--format=%(refname) %(objectname)")
    registered = git(world, "worktree", "list", "--porcelain")
    folder = worktrees_dir(world)
    files = sorted(str(p) for p in folder.rglob("*")) if folder.exists() else []
    return refs, registered, files


def tree_digest(root: Path) -> dict[str, str]:
    """Each file of the working tree under `root` (not git's own files) by its content."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(root).parts
    }


# ---- list ----------------------------------------------------------------------------------------


def test_list_shows_the_failed_attempt_as_failed_and_unmerged_and_nothing_after_clean(
    world: Env,
) -> None:
    setup_repo(world, ONE_FAILS)
    job_id = cook(world, expect=3)
    dead = dead_attempt(world, job_id)
    assert Path(dead["worktree"]).is_dir()

    listed = prodigy(world, "worktrees", "list", job_id)
    assert listed.returncode == 0, listed.stderr
    table = rows(listed.stdout)
    assert table[0] == ["ITEM", "ATTEMPT", "STATE", "UNMERGED", "SIZE", "BRANCH", "WORKTREE"]
    by_item = {row[0]: row for row in table[1:]}
    assert set(by_item) == {"(parent)", "item_1"}, listed.stdout
    failed = by_item["item_1"]
    assert failed[1:5] == ["1", "failed", "1", "commit"]
    assert failed[-2:] == [dead["branch"], dead["worktree"]]
    # The parent branch holds item_0's merged work, not yet in the user's branch: left.
    parent = by_item["(parent)"]
    assert parent[2] == "left" and parent[-2] == f"prodigy/{job_id}"
    assert dead["branch"] == f"prodigy-agents/{job_id}/item_1-a1"

    everything = prodigy(world, "worktrees", "list")
    assert everything.returncode == 0, everything.stderr
    assert rows(everything.stdout)[0][:2] == ["JOB", "ID"]
    assert sum(job_id in line for line in everything.stdout.splitlines()) == 2

    assert prodigy(world, "worktrees", "clean", job_id, "--force").returncode == 0
    after = prodigy(world, "worktrees", "list", job_id)
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == f"Job {job_id} has no worktrees or branches left."
    assert "has worktrees or branches left" in prodigy(world, "worktrees", "list").stdout
    assert job_refs(world, job_id) == []
    assert not worktrees_dir(world).joinpath(job_id).exists()
    assert not worktrees_dir(world).joinpath(f"{job_id}.agents").exists()


# ---- clean ---------------------------------------------------------------------------------------


def test_clean_refuses_unmerged_work_without_force_then_force_names_what_it_deleted(
    world: Env,
) -> None:
    setup_repo(world, ONE_FAILS)
    job_id = cook(world, "-y", expect=3)  # the parent branch is merged into the user's
    dead = dead_attempt(world, job_id)
    before = git_state(world)

    refused = prodigy(world, "worktrees", "clean", job_id)
    error = one_error(refused, 1, dead["branch"], "1 commit merged nowhere else", "--force")
    assert f"prodigy/{job_id} " not in error  # merged into the user's branch: not named
    assert git_state(world) == before

    removed_by_the_run = len([e for e in world.events(job_id) if e["type"] == "worktree_removed"])
    forced = prodigy(world, "worktrees", "clean", job_id, "--force")
    assert forced.returncode == 0, forced.stderr
    out = forced.stdout.splitlines()
    assert out == [
        f"Deleted branch {dead['branch']} (item item_1, attempt 1), which held 1 commit "
        "merged nowhere else (--force).",
        out[-1],
    ]
    assert out[-1].startswith("Removed 2 worktrees and 2 branches (") and job_id in out[-1]
    assert job_refs(world, job_id) == []
    assert not Path(dead["worktree"]).exists()
    assert git(world, "worktree", "list", "--porcelain").count("worktree ") == 1
    removed = [e for e in world.events(job_id) if e["type"] == "worktree_removed"]
    removed = removed[removed_by_the_run:]
    assert {e["branch"] for e in removed} == {dead["branch"], f"prodigy/{job_id}"}


def test_clean_leaves_the_users_branches_worktree_and_files_byte_for_byte(
    world: Env, tmp_path: Path
) -> None:
    base = setup_repo(world, ONE_FAILS)
    # The user's own things: branches, a worktree of theirs with a commit and uncommitted
    # work, an edit, a staged file and an untracked file in their working tree.
    git(world, "branch", "feature")
    user_worktree = tmp_path / "user-worktree"
    git(world, "worktree", "add", "-q", "-b", "side", str(user_worktree))
    (user_worktree / "side.txt").write_text("the user's side work\n")
    git(world, "add", "side.txt", cwd=user_worktree)
    git(world, "commit", "-qm", "side work", cwd=user_worktree)
    (user_worktree / "draft.txt").write_text("uncommitted in the user's worktree\n")
    job_id = cook(world, expect=3)
    world.write("README.md", "the user's readme, edited\n")
    world.write("staged.txt", "staged\n")
    git(world, "add", "staged.txt")
    world.write("notes.txt", "untracked notes\n")

    def users() -> tuple[object, ...]:
        refs = [
            line
            for line in git(world, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
            if "/prodigy" not in line
        ]
        return (
            refs,
            git(world, "symbolic-ref", "HEAD"),
            git(world, "ls-files", "--stage"),  # the index
            git(world, "--no-optional-locks", "status", "--porcelain"),
            git(world, "--no-optional-locks", "status", "--porcelain", cwd=user_worktree),
            tree_digest(world.repo),
            tree_digest(user_worktree),
        )

    before = users()
    assert prodigy(world, "worktrees", "clean", job_id, "--force").returncode == 0
    assert users() == before
    assert git(world, "symbolic-ref", "--short", "HEAD") == base
    worktrees = git(world, "worktree", "list", "--porcelain")
    assert f"worktree {user_worktree}" in worktrees and job_id not in worktrees
    assert (user_worktree / "side.txt").read_text() == "the user's side work\n"


def test_dry_run_changes_nothing(world: Env) -> None:
    setup_repo(world, ONE_FAILS)
    job_id = cook(world, expect=3)
    dead = dead_attempt(world, job_id)
    before = git_state(world)
    job_files = sorted(p.name for p in world.job_dir(job_id).iterdir())

    refused = prodigy(world, "worktrees", "clean", job_id, "--dry-run")
    one_error(refused, 1, dead["branch"])
    dry = prodigy(world, "worktrees", "clean", job_id, "--dry-run", "--force")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert f"Would remove worktree {dead['worktree']} (item item_1, attempt 1, " in lines[2]
    assert lines[3] == (
        f"Would delete branch {dead['branch']} (item item_1, attempt 1, holding 1 commit merged "
        "nowhere else)"
    )
    assert lines[-1].startswith("Would remove 2 worktrees and 2 branches")
    assert lines[-1].endswith("nothing was removed (dry run).")
    checkpoints = prodigy(world, "checkpoints", "clean", job_id, "--dry-run", "--force")
    assert checkpoints.returncode == 0, checkpoints.stderr
    assert "with 2 worktrees and 2 branches" in checkpoints.stdout
    assert git_state(world) == before
    assert sorted(p.name for p in world.job_dir(job_id).iterdir()) == job_files


def test_a_running_job_is_listed_as_running_and_never_cleaned(world: Env) -> None:
    setup_repo(world, [{"name": "a", "kind": "ok"}])
    hold(world, "item_0")
    proc = world.popen("cook", "wf.yaml")
    try:
        wait_for(lambda: world.jobs_dir().is_dir() and any(world.jobs_dir().iterdir()))
        job_id = next(world.jobs_dir().iterdir()).name
        agent = worktrees_dir(world) / f"{job_id}.agents" / "item_0-a1"
        wait_for(lambda: (agent / "README.md").exists(), what="the held agent's worktree")

        listed = prodigy(world, "worktrees", "list", job_id)
        assert listed.returncode == 0, listed.stderr
        states = {row[0]: row[2] for row in rows(listed.stdout)[1:]}
        assert states == {"(parent)": "running", "item_0": "running"}

        for command in (
            ("worktrees", "clean", job_id, "--force"),
            ("worktrees", "clean", job_id, "--dry-run"),
            ("checkpoints", "clean", job_id, "--force"),
        ):
            refused = prodigy(world, *command)
            one_error(refused, 1, f"Job {job_id} is running", f"PID {proc.pid}")
        refused_all = prodigy(world, "worktrees", "clean", "--all", "--older-than", "0s", "--force")
        assert refused_all.returncode == 0 and f"Skipped: Job {job_id} is running" in (
            refused_all.stdout
        )
        merge = prodigy(world, "worktrees", "merge", job_id, "-y")
        one_error(merge, 1, f"Job {job_id} is already being worked on", f"PID {proc.pid}")
        assert agent.is_dir() and job_refs(world, job_id) != []
    finally:
        release(world, "item_0")
        out, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, out + err
    assert "Merge it with: git merge --no-ff" in out


def test_checkpoints_clean_removes_the_jobs_worktrees_and_branches_by_the_same_rules(
    world: Env,
) -> None:
    setup_repo(world, ONE_FAILS)
    job_id = cook(world, "-y", expect=3)
    dead = dead_attempt(world, job_id)

    refused = prodigy(world, "checkpoints", "clean", job_id)
    one_error(refused, 1, dead["branch"], "--force")
    assert world.job_dir(job_id).is_dir() and job_refs(world, job_id) != []

    forced = prodigy(world, "checkpoints", "clean", job_id, "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"Deleted branch {dead['branch']} (item item_1, attempt 1)" in forced.stdout
    assert "with 2 worktrees and 2 branches" in forced.stdout
    assert not world.job_dir(job_id).exists()
    assert job_refs(world, job_id) == []
    assert not Path(dead["worktree"]).exists()
    assert git(world, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_clean_all_older_than_cleans_old_jobs_and_keeps_recent_ones(world: Env) -> None:
    setup_repo(world, ALL_OK)
    old = cook(world, "-y", expect=0)
    recent = cook(world, "-y", expect=0)
    path = world.job_dir(old) / "metadata.json"
    meta = json.loads(path.read_text())
    meta["updated_at"] = (datetime.now().astimezone() - timedelta(days=10)).isoformat()
    path.write_text(json.dumps(meta))

    cleaned = prodigy(world, "worktrees", "clean", "--all", "--older-than", "7d")
    assert cleaned.returncode == 0, cleaned.stderr
    assert cleaned.stdout.splitlines()[-1].startswith("Removed 1 worktree and 1 branch ("), (
        cleaned.stdout
    )
    assert "of 1 job; kept 1 updated within the last 7d." in cleaned.stdout
    assert job_refs(world, old) == [] and job_refs(world, recent) == [f"prodigy/{recent}"]


# ---- merge ---------------------------------------------------------------------------------------


def test_merge_of_a_branch_the_job_left(world: Env) -> None:
    base = setup_repo(world, ALL_OK)
    job_id = cook(world, expect=0)  # no -y and no terminal: the final merge is left
    head = git(world, "rev-parse", "HEAD")
    assert not (world.repo / "out-a.txt").exists()
    listed = rows(prodigy(world, "worktrees", "list", job_id).stdout)
    assert listed[1][:4] == ["(parent)", "-", "left", "4"]  # two items' commits and merges

    asked = prodigy(world, "worktrees", "merge", job_id)
    one_error(asked, 2, "pass -y")
    assert git(world, "rev-parse", "HEAD") == head

    merged = prodigy(world, "worktrees", "merge", job_id, "-y")
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.startswith(f"Merged branch prodigy/{job_id} into {base} (")
    assert (world.repo / "out-a.txt").read_text() == "a\n"
    assert (world.repo / "out-b.txt").read_text() == "b\n"
    assert git(world, "log", "-1", "--format=%s") == f"prodigy: merge job {job_id}"
    assert [e["into"] for e in world.events(job_id) if e["type"] == "job_merged"] == [base]

    again = prodigy(world, "worktrees", "merge", job_id, "-y")
    assert again.returncode == 0 and "holds nothing new" in again.stdout
    listed = rows(prodigy(world, "worktrees", "list", job_id).stdout)
    assert listed[1][:4] == ["(parent)", "-", "merged", "no"]
    # Merged into the user's branch: cleaning needs no --force.
    assert prodigy(world, "worktrees", "clean", job_id).returncode == 0
    assert job_refs(world, job_id) == []


def test_merge_is_refused_when_the_users_uncommitted_changes_overlap(world: Env) -> None:
    setup_repo(world, [{"name": "a", "kind": "ok"}])
    job_id = cook(world, expect=0)
    # The user starts editing, uncommitted, a file the job's branch adds.
    world.write("out-a.txt", "the user's own a\n")
    git(world, "add", "out-a.txt")
    refused = prodigy(world, "worktrees", "merge", job_id, "-y")
    one_error(refused, 1, "uncommitted changes touch 1 file", "out-a.txt")
    assert "prodigy worktrees merge " + job_id in refused.stderr
    assert (world.repo / "out-a.txt").read_text() == "the user's own a\n"


def test_merge_needs_a_finished_isolated_job(world: Env) -> None:
    setup_repo(world, ALL_OK)
    hold(world, "item_1")
    proc = world.popen("cook", "wf.yaml")
    wait_for(lambda: world.jobs_dir().is_dir() and any(world.jobs_dir().iterdir()))
    job_id = next(world.jobs_dir().iterdir()).name
    wait_for(lambda: any(e["type"] == "agent_merged" for e in world.events(job_id)))
    os.killpg(proc.pid, 9)
    proc.wait(timeout=10)
    release(world, "item_1")
    unfinished = prodigy(world, "worktrees", "merge", job_id, "-y")
    one_error(unfinished, 1, f"Job {job_id} is not finished", f"prodigy resume-job {job_id}")


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["list", "mapreduce-20240101-123456"],
        ["clean", "mapreduce-20240101-123456"],
        ["clean", "mapreduce-20240101-123456", "--dry-run"],
        ["merge", "mapreduce-20240101-123456", "-y"],
    ],
)
def test_an_unknown_job_id_is_one_sentence_and_exit_1(world: Env, args: list[str]) -> None:
    one_error(prodigy(world, "worktrees", *args), 1, "mapreduce-20240101-123456")


@pytest.mark.parametrize(
    "args",
    [
        ["clean"],
        ["clean", "--all"],
        ["clean", "--all", "--older-than", "7x"],
        ["clean", "mapreduce-20240101-123456", "--all", "--older-than", "7d"],
        ["clean", "mapreduce-20240101-123456", "--older-than", "7d"],
        ["merge"],
        ["prune"],
    ],
)
def test_usage_errors_exit_2_with_one_sentence(world: Env, args: list[str]) -> None:
    one_error(prodigy(world, "worktrees", *args), 2)


def test_a_job_without_isolation_has_no_worktrees(world: Env) -> None:
    setup_repo(world, ALL_OK)
    world.write(
        "wf.yaml",
        """\
        name: shared
        mode: mapreduce
        map:
          input: items.json
          isolation: none
          json_path: "$[*]"
          agent_template:
            - shell: 'true'
        """,
    )
    job_id = cook(world, expect=0)
    listed = prodigy(world, "worktrees", "list", job_id)
    assert listed.returncode == 0 and "without worktree isolation" in listed.stdout
    cleaned = prodigy(world, "worktrees", "clean", job_id)
    assert cleaned.returncode == 0 and "no worktrees or branches to remove" in cleaned.stdout
    one_error(prodigy(world, "worktrees", "merge", job_id), 1, "no branch to merge")


def test_a_job_branch_the_user_checked_out_is_left_alone_even_with_force(world: Env) -> None:
    setup_repo(world, ONE_FAILS)
    job_id = cook(world, expect=3)
    dead = dead_attempt(world, job_id)
    git(world, "worktree", "remove", "--force", str(worktrees_dir(world) / job_id))
    git(world, "checkout", "-q", f"prodigy/{job_id}")  # the user looks at the job's work
    before = git_state(world)
    refused = prodigy(world, "worktrees", "clean", job_id, "--force")
    one_error(refused, 1, f"prodigy/{job_id}", f"checked out in {world.repo.resolve()}")
    assert git_state(world) == before and Path(dead["worktree"]).is_dir()
    listed = rows(prodigy(world, "worktrees", "list", job_id).stdout)
    assert listed[1][0] == "(parent)"
    assert listed[1][-3:] == [str(world.repo.resolve()), "(not", "prodigy's)"]
