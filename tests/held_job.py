"""A real job whose agents wait on hold files (see `hold`/`release` in conftest), for watching
a running job: the test decides when each item may finish."""

from __future__ import annotations

import os
import signal
import subprocess

from conftest import Env, events, hold, ids, release, the_job, wait_for

# Each agent runs a Claude step (a cost to show), then waits for its hold file; item n=3
# fails every attempt.
HELD = """\
name: held
mode: mapreduce
map:
  input: items.json
  json_path: "$[*]"
  max_parallel: {parallel}
  isolation: none
  agent_template:
    - claude: "/analyze ${{item.n}}"
    - shell: "while [ -e hold/${{item_id}} ]; do sleep 0.02; done; test ${{item.n}} -ne 3"
error_policy:
  retry_config: {{max_attempts: 2, initial_delay: 0}}
"""


class HeldJob:
    """`cook` running `items` held items `parallel` at a time."""

    def __init__(self, world: Env, items: int, parallel: int) -> None:
        self.world = world
        (world.repo / "hold").mkdir(exist_ok=True)
        self.names = ids(*range(items))
        hold(world, *self.names)
        world.write("wf.yaml", HELD.format(parallel=parallel))
        world.write_json("items.json", [{"n": n} for n in range(items)])
        self.proc = world.popen("cook", "wf.yaml")
        self.job_id = the_job(world)

    def started(self, count: int) -> None:
        wait_for(
            lambda: len(events(self.world, self.job_id, "agent_started")) >= count,
            what=f"{count} agents started",
        )

    def release(self, *names: str) -> None:
        release(self.world, *names)

    def finish(self, timeout: float = 30) -> int:
        """Release everything and wait for the job's end; its exit code."""
        release(self.world, *self.names)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def start_dashboard(world: Env, job_id: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`prodigy progress JOB --web 0` in the background; the process and its URL."""
    proc = world.popen("progress", job_id, "--web", "0", *args)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the dashboard did not start: {line!r} {err!r}")
    return proc, line.split()[4]


def stop_dashboard(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Ctrl-C, as a person would; its exit code and output."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    return proc.returncode, out, err
