"""What git worktree isolation costs per agent, and how fast prodigy's merge queue drains.

Every variant does the same work for N items in a fresh copy of one repository: the agent
writes one file and commits it. Side by side in one run, on the same machine:

- prodigy, `isolation: worktree`, `max_parallel` P: a worktree and branch per agent, each
  agent's branch merged into the job's branch (`git merge --no-ff`) one at a time, the job's
  branch merged into the user's with -y;
- a plain shell loop doing the same by hand (`git worktree add`, the commit, `git merge
  --no-ff` into a parent worktree, `git worktree remove`, `git branch -D`), the items one after
  another, then P at a time with `xargs -P` (worktree add and merge+remove serialized by a
  flock, as prodigy serializes them); the job's branch merged into the user's at the end;
- prodigy, `isolation: none`: agents share the repository's tree and nothing is merged; their
  `git add` + `git commit` are serialized by a flock (concurrent commits in one index race on
  index.lock).

Times are the whole command's wall clock (prodigy's start-up and final merge included), so
items/s = N / wall and ms/agent = wall / N. The merge queue's rate is the number of
`agent_merged` events over the map phase (from `map_started` to the last `agent_merged`) of the
worktree run's events log. Each run checks its result (every item's file on the user's
branch, one merge commit per item); a prodigy run that fails is reported and run once more in a
fresh copy. With --rounds, the variants take turns going first and the medians are shown; the
load average is printed, since the machines here are shared and noisy. Nothing needs the
network; git, flock and xargs must be installed.

    python benchmarks/worktrees.py --items 200 --parallel 4     # about two minutes on 2 cores
    python benchmarks/worktrees.py --items 40 --rounds 3        # medians of 3 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# MAX_PARALLEL is replaced by --parallel.
WORKTREE_WORKFLOW = """\
name: bench-worktree
mode: mapreduce
map:
  input: items.json
  max_parallel: MAX_PARALLEL
  isolation: worktree
  agent_template:
    - shell: >-
        echo ${item_id} > ${item.file} &&
        git add ${item.file} && git commit -qm "item ${item_id}"
      commit_required: true
"""
# One index for every agent: their add+commit take turns (flock), or git's index.lock refuses.
SHARED_WORKFLOW = """\
name: bench-shared
mode: mapreduce
map:
  input: items.json
  max_parallel: MAX_PARALLEL
  isolation: none
  agent_template:
    - shell: >-
        echo ${item_id} > ${item.file} &&
        flock .git/bench-commit.lock sh -c
        'git add ${item.file} && git commit -qm "item ${item_id}"'
"""
# One item by hand: $1 is its number; REPO, PARENT, AGENTS and LOCK come from the driver.
SHELL_AGENT = """\
set -euo pipefail
n=$1
wt="$AGENTS/item_$n"
branch="agents/item_$n"
flock "$LOCK" git -C "$REPO" worktree add -q -b "$branch" "$wt" job
cd "$wt"
echo "item_$n" > "f$n.txt" && git add "f$n.txt" && git commit -qm "item item_$n"
flock "$LOCK" sh -c "git -C '$PARENT' merge -q --no-ff -m 'merge item_$n' '$branch' &&
  git -C '$REPO' worktree remove --force '$wt' && git -C '$REPO' branch -q -D '$branch'"
"""
SHELL_DRIVER = """\
set -euo pipefail
git -C "$REPO" worktree add -q -b job "$PARENT" HEAD
if [ "$P" = 1 ]; then
  for n in $(seq 0 $((N - 1))); do bash "$AGENT_SCRIPT" "$n"; done
else
  seq 0 $((N - 1)) | xargs -P "$P" -n 1 bash "$AGENT_SCRIPT"
fi
git -C "$REPO" merge -q --no-ff -m "merge job" job
"""


class RunFailed(Exception):
    pass


@dataclass(frozen=True)
class Run:
    seconds: float
    merges_per_second: float | None = None


def prodigy_command() -> list[str]:
    exe = shutil.which("prodigy", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "prodigy"]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


def make_template(path: Path, items: int, parallel: int) -> None:
    """The repository every variant starts from: one commit with the items and workflows."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    git(path, "config", "user.email", "bench@example.com")
    git(path, "config", "user.name", "Bench")
    (path / "items.json").write_text(
        json.dumps([{"id": f"item_{n}", "file": f"f{n}.txt"} for n in range(items)])
    )
    (path / "worktree.yaml").write_text(WORKTREE_WORKFLOW.replace("MAX_PARALLEL", str(parallel)))
    (path / "shared.yaml").write_text(SHARED_WORKFLOW.replace("MAX_PARALLEL", str(parallel)))
    (path / "README.md").write_text("benchmark\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "benchmark items")


def fresh_copy(template: Path, workdir: Path) -> Path:
    repo = workdir / "repo"
    shutil.copytree(template, repo, symlinks=True)
    return repo


def check_committed(repo: Path, items: int, merges: int) -> None:
    """Every item's file on the user's branch, with the expected number of merge commits."""
    files = [name for name in git(repo, "ls-tree", "--name-only", "HEAD").split() if name[0] == "f"]
    found = int(git(repo, "rev-list", "--count", "--merges", "HEAD"))
    if len(files) != items or found != merges:
        sys.exit(f"{repo.name}: {len(files)} files and {found} merges, expected {items}/{merges}")


def merge_rate(events_file: Path) -> float:
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    started = next(e["ts"] for e in events if e["type"] == "map_started")
    merged = [e["ts"] for e in events if e["type"] == "agent_merged"]
    span = datetime.fromisoformat(max(merged)) - datetime.fromisoformat(started)
    return len(merged) / span.total_seconds()


def time_prodigy(repo: Path, home: Path, workflow: str, items: int) -> Run:
    env = {**os.environ, "PRODIGY_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run(
        [*prodigy_command(), "cook", workflow, "-y"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RunFailed(f"prodigy cook {workflow} exited {done.returncode}: {done.stdout[-500:]}")
    if workflow == "worktree.yaml":
        check_committed(repo, items, merges=items + 1)
        (events_file,) = home.glob("state/*/mapreduce/jobs/*/events.jsonl")
        return Run(seconds, merge_rate(events_file))
    check_committed(repo, items, merges=0)
    return Run(seconds)


def time_shell(repo: Path, workdir: Path, items: int, parallel: int) -> Run:
    agent = workdir / "agent.sh"
    agent.write_text(SHELL_AGENT)
    agents = workdir / "agents"
    agents.mkdir()
    env = {
        **os.environ,
        "REPO": str(repo),
        "PARENT": str(workdir / "parent"),
        "AGENTS": str(agents),
        "LOCK": str(workdir / "merge.lock"),
        "AGENT_SCRIPT": str(agent),
        "N": str(items),
        "P": str(parallel),
    }
    started = time.perf_counter()
    subprocess.run(["bash", "-c", SHELL_DRIVER], cwd=repo, env=env, check=True)
    seconds = time.perf_counter() - started
    check_committed(repo, items, merges=items + 1)
    return Run(seconds)


# Each variant runs in a directory of its own (`workdir`), from a copy of the template.
Variant = Callable[[Path, Path, int, int], Run]


def prodigy_worktree(template: Path, workdir: Path, items: int, parallel: int) -> Run:
    return time_prodigy(fresh_copy(template, workdir), workdir / "home", "worktree.yaml", items)


def shell_one_at_a_time(template: Path, workdir: Path, items: int, parallel: int) -> Run:
    return time_shell(fresh_copy(template, workdir), workdir, items, 1)


def shell_in_parallel(template: Path, workdir: Path, items: int, parallel: int) -> Run:
    return time_shell(fresh_copy(template, workdir), workdir, items, parallel)


def prodigy_shared(template: Path, workdir: Path, items: int, parallel: int) -> Run:
    return time_prodigy(fresh_copy(template, workdir), workdir / "home", "shared.yaml", items)


def run_variant(name: str, variant: Variant, scratch: Path, template: Path, n: int, p: int) -> Run:
    """One run; a prodigy run that failed is reported and run again in a fresh copy, once."""
    for last in (False, True):
        workdir = Path(tempfile.mkdtemp(prefix="variant-", dir=scratch))
        try:
            return variant(template, workdir, n, p)
        except RunFailed as failed:
            if last:
                raise
            print(f"  {name} FAILED, running it again: {failed}", file=sys.stderr)
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    for tool in ("git", "flock", "xargs"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: install it first")
    n, p = args.items, args.parallel
    variants: list[tuple[str, Variant]] = [
        (f"prodigy, isolation: worktree, {p} at a time", prodigy_worktree),
        ("shell loop, worktree+merge, 1 at a time", shell_one_at_a_time),
        (f"shell loop, worktree+merge, {p} at a time", shell_in_parallel),
        (f"prodigy, isolation: none, {p} at a time", prodigy_shared),
    ]
    names = [name for name, _ in variants]
    load_before = os.getloadavg()[0]
    runs: dict[str, list[Run]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="prodigy-bench-wt-") as tmp:
        scratch = Path(tmp)
        template = scratch / "template"
        make_template(template, n, p)
        for r in range(args.rounds):
            # Rotate who goes first, so that a slow spell of a shared machine is spread out.
            for name, variant in variants[r % 4 :] + variants[: r % 4]:
                run = run_variant(name, variant, scratch, template, n, p)
                print(f"  round {r + 1}: {name}: {run.seconds:.2f} s", file=sys.stderr)
                runs[name].append(run)

    load_after = os.getloadavg()[0]
    seconds = {name: statistics.median(run.seconds for run in runs[name]) for name in names}
    print(
        f"{n} items (write one file + git commit), {args.rounds} round(s), median wall time; "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, {load_after:.1f} after:"
    )
    print(f"  {'variant':<44} {'items/s':>8} {'ms/agent':>9}")
    for name in names:
        print(f"  {name:<44} {n / seconds[name]:8.1f} {1000 * seconds[name] / n:9.1f}")
    worktree, sequential, parallel, shared = (seconds[name] for name in names)
    print("ratios (items/s of prodigy with worktrees / items/s of the other):")
    print(f"  vs shell loop 1 at a time:       {sequential / worktree:6.2f}")
    print(f"  vs shell loop {p} at a time:       {parallel / worktree:6.2f}")
    print(f"  vs prodigy isolation: none:      {shared / worktree:6.2f}")
    overhead = 1000 * (worktree - shared) / n
    print(f"worktree isolation costs {overhead:.1f} ms per agent over isolation: none")
    rates = [run.merges_per_second for run in runs[names[0]] if run.merges_per_second]
    print(f"prodigy's merge queue: {statistics.median(rates):.1f} merges/s over the map phase")


if __name__ == "__main__":
    main()
