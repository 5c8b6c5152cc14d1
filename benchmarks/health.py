"""Long-running health: a job whose agents print megabytes each, run for a while, must keep the
coordinator's memory flat and its job directory bounded (output tails, not whole outputs).

    python benchmarks/health.py --minutes 30
    python benchmarks/health.py --minutes 3 --stdout-mb 4 --stderr-mb 1 --parallel 4

Every agent prints `--stdout-mb` MB to stdout and `--stderr-mb` MB to stderr (lines of text),
then sleeps `--sleep` seconds. Every `--interval` seconds the script samples the coordinator's
resident memory (VmRSS in /proc/PID/status of the `prodigy` process) and the job directory's
size. After `--minutes` it interrupts the job (SIGINT, exit 130 expected) and prints the first,
last and peak of both. It fails (exit 1) if the memory at the end (median of the last five
samples) is more than `--max-rss-growth` times the memory after warm-up, or if the job
directory holds more than `--max-dir-per-item` bytes per finished item.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from prodigy.store import directory_size

WORKFLOW = """\
name: health
mode: mapreduce
map:
  input: items.json
  isolation: none
  max_parallel: {parallel}
  agent_template:
    - shell: >-
        yes 'agent ${{item_id}} prints a line of output, one of very many .....' |
        head -c {stdout_bytes};
        yes 'agent ${{item_id}} complains on stderr, line after line .....' |
        head -c {stderr_bytes} >&2; sleep {sleep}
"""

# An item's share of the job directory: its result (output tail of 4,000 characters) in the
# journal and in each of the 3 checkpoint files kept, its events and its items.jsonl line.
DEFAULT_DIR_PER_ITEM = 4 * 5_000 + 4_000


@dataclass
class Sample:
    at: float  # seconds since the job started
    rss: int  # bytes
    dir_bytes: int
    items_done: int


def prodigy_command() -> list[str]:
    exe = shutil.which("prodigy", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "prodigy"]


def rss_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def items_done(job_dir: Path | None) -> int:
    if job_dir is None:
        return 0
    try:
        data = (job_dir / "journal.jsonl").read_bytes()
    except FileNotFoundError:
        return 0
    # A plain success is journaled in its short form, `{"type":"succeeded",...}`.
    return data.count(b'"type":"attempt_ended"') + data.count(b'"type":"succeeded"')


def find_job_dir(home: Path) -> Path | None:
    jobs = sorted(home.glob("state/*/mapreduce/jobs/*"))
    return jobs[0] if jobs else None


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def run(args: argparse.Namespace, root: Path) -> int:
    repo, home = root / "repo", root / "home"
    repo.mkdir()
    parallel = args.parallel
    # More items than the run can finish: it is stopped by time, not by running out.
    items = max(100, int(args.minutes * 60 * parallel / max(args.sleep, 0.05) * 2))
    (repo / "items.json").write_text(json.dumps([{"n": n} for n in range(items)]))
    (repo / "wf.yml").write_text(
        WORKFLOW.format(
            parallel=parallel,
            stdout_bytes=int(args.stdout_mb * 1e6),
            stderr_bytes=int(args.stderr_mb * 1e6),
            sleep=args.sleep,
        )
    )
    env = {**os.environ, "PRODIGY_HOME": str(home), "PRODIGY_INTERRUPT_GRACE": "2"}
    log = open(root / "prodigy.out", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*prodigy_command(), "cook", "wf.yml"],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    samples: list[Sample] = []
    job_dir: Path | None = None
    while time.monotonic() < deadline and proc.poll() is None:
        rss = rss_of(proc.pid)
        job_dir = job_dir or find_job_dir(home)
        if rss is not None:
            size = directory_size(job_dir) if job_dir else 0
            samples.append(Sample(time.monotonic() - started, rss, size, items_done(job_dir)))
            if args.verbose:
                s = samples[-1]
                print(
                    f"{s.at:7.1f} s  rss {mb(s.rss)}  dir {mb(s.dir_bytes)}  {s.items_done} items"
                )
        time.sleep(args.interval)
    if proc.poll() is not None:
        print(f"prodigy ended early (exit {proc.returncode}):", file=sys.stderr)
        print((root / "prodigy.out").read_text(errors="replace")[-2000:], file=sys.stderr)
        return 1
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(timeout=120)
    return report(args, samples, job_dir, code)


def report(args: argparse.Namespace, samples: list[Sample], job_dir: Path | None, code: int) -> int:
    warm = [s for s in samples if s.at >= args.warmup] or samples
    if len(warm) < 3 or job_dir is None:
        print("Too few samples: run for longer (--minutes) or sample more often (--interval).")
        return 1
    done = items_done(job_dir)
    final_dir = directory_size(job_dir)
    baseline = warm[0].rss
    end_rss = statistics.median(s.rss for s in warm[-5:])
    peak = max(warm, key=lambda s: s.rss)
    per_item = final_dir / max(done, 1)
    growth = end_rss / baseline
    printed = done * (args.stdout_mb + args.stderr_mb) * 1e6
    print(
        f"health: {args.minutes} min, {args.parallel} agents at a time, each printing "
        f"{args.stdout_mb} MB + {args.stderr_mb} MB; {done} items finished, {mb(printed)} of "
        f"output read; {len(samples)} samples every {args.interval} s\n"
    )
    print("| | first (after warm-up) | last | peak |")
    print("|---|---:|---:|---:|")
    print(
        f"| coordinator RSS | {mb(baseline)} at {warm[0].at:.0f} s | {mb(warm[-1].rss)} | "
        f"{mb(peak.rss)} at {peak.at:.0f} s |"
    )
    dir_peak = max(samples, key=lambda s: s.dir_bytes)
    print(
        f"| job directory | {mb(warm[0].dir_bytes)} ({warm[0].items_done} items) | "
        f"{mb(final_dir)} ({done} items) | {mb(dir_peak.dir_bytes)} |"
    )
    print(
        f"\nRSS at the end / after warm-up: {growth:.2f} (limit {args.max_rss_growth}); "
        f"job directory per finished item: {per_item / 1000:.1f} KB "
        f"(limit {args.max_dir_per_item / 1000:.1f} KB); SIGINT exit {code} (expected 130)"
    )
    failed = []
    if growth > args.max_rss_growth:
        failed.append(f"the coordinator's memory grew {growth:.2f}x")
    if per_item > args.max_dir_per_item:
        failed.append(f"the job directory holds {per_item:.0f} bytes per item")
    if code != 130:
        failed.append(f"SIGINT ended prodigy with exit {code}, not 130")
    for problem in failed:
        print(f"FAILED: {problem}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--stdout-mb", type=float, default=4)
    parser.add_argument("--stderr-mb", type=float, default=1)
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each agent sleeps")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before the baseline")
    parser.add_argument("--max-rss-growth", type=float, default=1.5)
    parser.add_argument("--max-dir-per-item", type=int, default=DEFAULT_DIR_PER_ITEM)
    parser.add_argument("--keep", action="store_true", help="keep the job's directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every sample")
    args = parser.parse_args()
    if args.minutes <= 0 or args.parallel < 1 or args.interval <= 0:
        parser.error("--minutes and --interval must be positive, --parallel at least 1")
    root = Path(tempfile.mkdtemp(prefix="prodigy-health-"))
    try:
        return run(args, root)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
