"""A disk that fills up mid-run: one clear sentence, exit 1, nothing recorded lost, and the job
resumes once there is space again. Needs root to mount a small tmpfs (skipped otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Env, job_id_of, wait_for

WORKFLOW = """\
name: disk
mode: mapreduce
map:
  input: items.json
  isolation: none
  max_parallel: 4
  agent_template:
    - shell: "head -c 3000 /dev/zero | tr '\\\\0' x; echo ${{item_id}} >> runs.log"
checkpoint:
  interval_items: {interval}
"""


@pytest.fixture
def tiny_home(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    home = tmp_path / "tiny-home"
    home.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(home)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


@pytest.mark.parametrize("interval", [1, 100000], ids=["checkpoint-fills-it", "journal-fills-it"])
def test_a_full_disk_stops_the_run_with_one_sentence_and_the_job_resumes(
    world: Env, tiny_home: Path, interval: int
) -> None:
    world.write_json("items.json", list(range(300)))
    world.write("wf.yaml", WORKFLOW.format(interval=interval))
    world.env["PRODIGY_HOME"] = str(tiny_home)

    full = world.run("cook", "wf.yaml")

    assert full.returncode == 1, full.stdout + full.stderr
    assert "No space left on device" in full.stderr and "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if "No space left" in line]
    assert len(errors) == 1, full.stderr
    job = job_id_of(full.stdout)
    state_dir = tiny_home / "state" / world.repo.name / "mapreduce" / "jobs" / job
    # Only whole lines count: the write the disk cut short left a torn last line, which is
    # never acknowledged (and resume drops it).
    journal = (state_dir / "journal.jsonl").read_text().split("\n")[:-1]
    recorded = {json.loads(line)["index"] for line in journal if '"attempt_ended"' in line}
    assert recorded, "some completions were recorded before the disk filled"

    subprocess.run(["mount", "-o", "remount,size=20m", str(tiny_home)], check=True)
    resumed = world.run("resume-job", job)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = (world.repo / "runs.log").read_text().split()
    assert set(runs) == {f"item_{n}" for n in range(300)}
    for index in recorded:
        assert runs.count(f"item_{index}") == 1, "a recorded item ran again"


# ---- a state directory that turns read-only mid-run ------------------------------------------

HELD = """\
name: readonly
mode: mapreduce
map:
  input: items.json
  isolation: none
  max_parallel: 2
  agent_template:
    - shell: "test ${item} -lt {free} || while [ ! -e go ]; do sleep 0.02; done"
    - shell: "echo ${item_id} >> ledger.log"
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


@pytest.fixture
def ext4_home(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """PRODIGY_HOME on a small ext4 file system (a loop device) mounted errors=remount-ro, and
    the device's name. `mount -o remount,ro` refuses while prodigy holds files open for writing
    ("busy"); an ext4 error turns it read-only under every open file, as a failing disk does."""
    if os.geteuid() != 0:
        pytest.skip("a loop-mounted ext4 file system needs root")
    image, home = tmp_path / "ext4.img", tmp_path / "ro-home"
    home.mkdir()
    with image.open("wb") as f:
        f.truncate(32 << 20)
    made = _run("mkfs.ext4", "-q", "-F", str(image))
    if made.returncode != 0:
        pytest.skip(f"cannot make an ext4 file system here: {made.stderr.strip()}")
    loop = _run("losetup", "-f", "--show", str(image))
    if loop.returncode != 0:
        pytest.skip(f"no loop device here: {loop.stderr.strip()}")
    device = loop.stdout.strip()
    try:
        mounted = _run("mount", "-o", "errors=remount-ro", device, str(home))
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
        trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"{trigger} is missing: no way to make the file system fail")
        yield home, device
    finally:
        _run("umount", "-l", str(home))
        _run("losetup", "-d", device)


def test_a_state_directory_turned_read_only_stops_the_run_and_the_job_resumes(
    world: Env, ext4_home: tuple[Path, str]
) -> None:
    home, device = ext4_home
    world.write_json("items.json", list(range(24)))
    world.write("wf.yaml", HELD.replace("{free}", "6"))
    world.env["PRODIGY_HOME"] = str(home)
    run = world.popen("cook", "wf.yaml")
    journal = lambda: next(home.glob("state/*/mapreduce/jobs/*/journal.jsonl"), None)  # noqa: E731
    wait_for(
        lambda: (j := journal()) is not None and j.read_text().count('"attempt_ended"') >= 6,
        what="the free items recorded",
    )
    (Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error").write_text("test\n")
    (world.repo / "go").touch()
    out, err = run.communicate(timeout=50)

    assert run.returncode == 1, out + err
    assert "Traceback" not in err
    sentences = [line for line in err.splitlines() if "Read-only file system" in line]
    assert len(sentences) == 1, err
    job = job_id_of(out)

    # Back in service: unmounted, checked and mounted read-write again.
    assert _run("umount", str(home)).returncode == 0
    assert _run("e2fsck", "-fy", device).returncode in (0, 1)
    assert _run("mount", device, str(home)).returncode == 0
    state_dir = home / "state" / world.repo.name / "mapreduce" / "jobs" / job
    lines = (state_dir / "journal.jsonl").read_text().split("\n")[:-1]
    recorded = {json.loads(line)["index"] for line in lines if '"attempt_ended"' in line}
    assert set(range(6)) <= recorded, "completions recorded before the fault were kept"

    resumed = world.run("resume-job", job)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    ledger = (world.repo / "ledger.log").read_text().split()
    assert set(ledger) == {f"item_{n}" for n in range(24)}
    for index in recorded:
        assert ledger.count(f"item_{index}") == 1, f"recorded item_{index} ran again"
