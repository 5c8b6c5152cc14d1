"""Agents on a loopback Dask cluster against local agents: items/s and per-item overhead.

Starts a scheduler and two workers (subprocesses, loopback) and runs the same trivial job
(`isolation: none`, one `true` step per item) with `--executor dask://...` and locally, side
by side in one run, alternating which goes first; prints the medians and the ratio.

    python benchmarks/cluster.py --items 500 --parallel 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKFLOW = """\
name: cluster-bench
mode: mapreduce
map:
  input: items.json
  isolation: none
  max_parallel: {parallel}
  agent_template:
    - shell: "true"
"""

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_cluster(workdir: Path, threads: int) -> tuple[str, list[subprocess.Popen[bytes]]]:
    port = free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            cwd=workdir,
            start_new_session=True,
            **quiet,  # type: ignore[call-overload]
        )
    ]
    address = f"127.0.0.1:{port}"
    for n in range(2):
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "dask"),
                    "worker",
                    f"tcp://{address}",
                    "--nthreads",
                    str(threads),
                    "--name",
                    f"w{n}",
                    "--no-dashboard",
                ],
                cwd=workdir,
                start_new_session=True,
                **quiet,  # type: ignore[call-overload]
            )
        )
    code = (
        "import time\nfrom distributed import Client\n"
        f"c = Client('tcp://{address}', timeout=30)\n"
        "while len(c.scheduler_info()['workers']) < 2: time.sleep(0.2)\nc.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    return address, procs


def time_cook(workdir: Path, home: Path, executor: str) -> float:
    env = {**os.environ, "PRODIGY_HOME": str(home)}
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "prodigy"), "cook", "workflow.yaml", "--executor", executor],
        cwd=workdir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "items.json").write_text(json.dumps(list(range(args.items))))
        (workdir / "workflow.yaml").write_text(WORKFLOW.format(parallel=args.parallel))
        address, procs = start_cluster(workdir, threads=max(1, args.parallel // 2))
        try:
            times: dict[str, list[float]] = {"local": [], "dask": []}
            for n in range(args.rounds):
                order = ["local", "dask"] if n % 2 == 0 else ["dask", "local"]
                for kind in order:
                    executor = "local" if kind == "local" else f"dask://{address}"
                    times[kind].append(time_cook(workdir, workdir / f"home-{kind}-{n}", executor))
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    local, dask = statistics.median(times["local"]), statistics.median(times["dask"])
    print(f"{args.items} trivial items, {args.parallel} at a time, {args.rounds} rounds (median):")
    print(f"  local executor:              {args.items / local:8.0f} items/s")
    print(f"  Dask, 2 loopback workers:    {args.items / dask:8.0f} items/s")
    print(f"  ratio dask / local:          {local / dask:8.2f}")
    overhead_ms = (dask - local) * 1000 * args.parallel / args.items
    print(f"  cluster overhead per item:   {overhead_ms:8.1f} ms (of one agent slot)")


if __name__ == "__main__":
    main()
