"""Throughput of trivial agents: prodigy (journal fsync per completion) vs GNU parallel --joblog.

Both run the same N trivial shell commands with the same parallelism, side by side in one run,
alternating which goes first; the ratio is what to compare (machines here are shared and noisy).

    python benchmarks/throughput.py --items 2000 --parallel 8 --rounds 3

GNU parallel is found on PATH or installed with apt-get (Debian package `parallel`).
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
from pathlib import Path

WORKFLOW = """\
name: throughput
mode: mapreduce
map:
  input: items.json
  max_parallel: {parallel}
  agent_template:
    - shell: "true"
"""


def find_parallel() -> str:
    found = shutil.which("parallel")
    if found:
        return found
    print("GNU parallel not found; installing the Debian package `parallel`...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "parallel"], check=False, capture_output=True)
    found = shutil.which("parallel")
    if not found:
        sys.exit("GNU parallel is needed as the baseline: install it (apt-get install parallel).")
    return found


def prodigy_command() -> list[str]:
    exe = shutil.which("prodigy", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "prodigy"]


def time_prodigy(workdir: Path, home: Path) -> float:
    env = {**os.environ, "PRODIGY_HOME": str(home)}
    started = time.perf_counter()
    subprocess.run(
        [*prodigy_command(), "cook", "workflow.yaml"],
        cwd=workdir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def time_parallel(parallel: str, workdir: Path, items: int, jobs: int) -> float:
    joblog = workdir / "joblog.txt"
    joblog.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(
        [
            parallel,
            "-j",
            str(jobs),
            "--joblog",
            str(joblog),
            "true",
            ":::",
            *map(str, range(items)),
        ],
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    parallel = find_parallel()
    with tempfile.TemporaryDirectory(prefix="prodigy-bench-") as tmp:
        workdir = Path(tmp) / "repo"
        workdir.mkdir()
        subprocess.run(["git", "init", "-q", str(workdir)], check=True)
        (workdir / "items.json").write_text(json.dumps(list(range(args.items))))
        (workdir / "workflow.yaml").write_text(WORKFLOW.format(parallel=args.parallel))
        ours: list[float] = []
        theirs: list[float] = []
        for n in range(args.rounds):
            home = Path(tmp) / f"home-{n}"
            if n % 2 == 0:
                ours.append(time_prodigy(workdir, home))
                theirs.append(time_parallel(parallel, workdir, args.items, args.parallel))
            else:
                theirs.append(time_parallel(parallel, workdir, args.items, args.parallel))
                ours.append(time_prodigy(workdir, home))
    ours_rate = args.items / statistics.median(ours)
    theirs_rate = args.items / statistics.median(theirs)
    print(f"{args.items} trivial items, {args.parallel} at a time, {args.rounds} rounds (median):")
    print(f"  prodigy (fsync per completion): {ours_rate:8.0f} items/s")
    print(f"  GNU parallel --joblog:          {theirs_rate:8.0f} items/s")
    print(f"  ratio prodigy / parallel:       {ours_rate / theirs_rate:8.2f}")


if __name__ == "__main__":
    main()
