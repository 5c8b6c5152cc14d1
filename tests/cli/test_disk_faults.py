"""A disk that fills up mid-run: one clear sentence, exit 1, nothing recorded lost, and the job
resumes once there is space again. Needs root to mount a small tmpfs (skipped otherwise)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import FIXABLE_WORKFLOW, Env, job_id_of, wait_for


def resume_runs_each_once(world: Env, job: str, log: str, items: int, recorded: set[int]) -> None:
    """`resume-job` finishes the job: every item is in the agents' `log`, and each item the
    journal had recorded as succeeded is there exactly once (it did not run again)."""
    resumed = world.run("resume-job", job)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    ran = (world.repo / log).read_text().split()
    assert set(ran) == {f"item_{n}" for n in range(items)}
    for index in recorded:
        assert ran.count(f"item_{index}") == 1, f"recorded item_{index} ran again"


def succeeded_indexes(journal: Path, since: int = 0) -> set[int]:
    """Items whose success is in the journal's whole lines (a torn last line never counts):
    `succeeded` records, or `attempt_ended` ones with an ok result (the older form)."""
    found = set()
    for line in journal.read_bytes()[since:].split(b"\n")[:-1]:
        record = json.loads(line)
        if record["type"] == "succeeded" or (
            record["type"] == "attempt_ended" and record["result"]["ok"]
        ):
            found.add(record["index"])
    return found


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
    recorded = succeeded_indexes(state_dir / "journal.jsonl")
    assert recorded, "some completions were recorded before the disk filled"

    subprocess.run(["mount", "-o", "remount,size=20m", str(tiny_home)], check=True)
    resume_runs_each_once(world, job, "runs.log", 300, recorded)


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
    # An agent_completed event is emitted once the journal's fdatasync has returned: the
    # record is durable. (A record merely visible in the file may not be: the fault can still
    # fail its fdatasync, and the run then never counts it.)
    events = lambda: next(home.glob("state/*/mapreduce/jobs/*/events.jsonl"), None)  # noqa: E731
    wait_for(
        lambda: (e := events()) is not None and e.read_text().count('"agent_completed"') >= 6,
        what="the free items recorded",
    )
    (Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error").write_text("test\n")
    (world.repo / "go").touch()
    out, err = run.communicate(timeout=50)

    assert run.returncode == 1, out + err
    assert "Traceback" not in err
    # The kernel reports the fault as EROFS, or as EIO to a write already under way.
    faults = ("Read-only file system", "Input/output error")
    sentences = [line for line in err.splitlines() if any(f in line for f in faults)]
    assert len(sentences) == 1, err
    job = job_id_of(out)

    # Back in service: unmounted, checked and mounted read-write again.
    assert _run("umount", str(home)).returncode == 0
    assert _run("e2fsck", "-fy", device).returncode in (0, 1)
    assert _run("mount", device, str(home)).returncode == 0
    state_dir = home / "state" / world.repo.name / "mapreduce" / "jobs" / job
    recorded = succeeded_indexes(state_dir / "journal.jsonl")
    assert set(range(6)) <= recorded, "completions recorded before the fault were kept"

    resume_runs_each_once(world, job, "ledger.log", 24, recorded)


# ---- the events log, and `dlq reprocess`, on a full disk ----------------------------------------


def _mount_tmpfs(path: Path, size: int) -> None:
    path.mkdir(exist_ok=True)
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points to undo at the end of the test, last first."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    made: list[Path] = []
    yield made
    for path in reversed(made):
        _run("umount", "-l", str(path))


def _whole_lines(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "no half line left at the end"
    return [json.loads(line) for line in data.splitlines()]


def test_a_full_disk_under_the_events_log_stops_the_run_in_one_sentence(
    world: Env, tmp_path: Path, mounts: list[Path]
) -> None:
    world.write_json("items.json", list(range(40)))
    world.write("wf.yaml", FIXABLE_WORKFLOW)
    first = world.run("cook", "wf.yaml")
    assert first.returncode == 3, first.stdout + first.stderr  # 35 items in the DLQ
    job = job_id_of(first.stdout)
    events = world.job_dir(job) / "events.jsonl"
    journal = world.job_dir(job) / "journal.jsonl"
    # Only the events log on a small disk: a tmpfs file bound over it, with room for the
    # requeue's events and a part of the run's.
    tiny = tmp_path / "tiny-events"
    _mount_tmpfs(tiny, events.stat().st_size + 8 * 1024)
    mounts.append(tiny)
    shutil.copyfile(events, tiny / "events.jsonl")
    assert _run("mount", "--bind", str(tiny / "events.jsonl"), str(events)).returncode == 0
    mounts.append(events)
    (world.repo / "fixed").touch()
    before = journal.stat().st_size

    full = world.run("resume-job", job, "--force")

    assert full.returncode == 1, full.stdout + full.stderr
    assert "Traceback" not in full.stderr
    sentences = [line for line in full.stderr.splitlines() if "No space left" in line]
    assert len(sentences) == 1 and str(events) in sentences[0], full.stderr
    recorded = succeeded_indexes(journal, before)
    assert 0 < len(recorded) < 35, "the disk filled in the middle of the run"
    _whole_lines(events)

    assert _run("mount", "-o", "remount,size=4m", str(tiny)).returncode == 0
    resume_runs_each_once(world, job, "ledger.log", 40, recorded)
    logged = _whole_lines(events)
    assert logged[-1]["type"] == "job_completed"


def _fill(path: Path) -> None:
    """Write `path` until the file system has no space left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (65536, 512):
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def test_a_full_disk_during_dlq_reprocess_loses_nothing_and_the_job_resumes(
    world: Env, tmp_path: Path, mounts: list[Path]
) -> None:
    home = tmp_path / "tiny-home"
    _mount_tmpfs(home, 4 << 20)
    mounts.append(home)
    world.env["PRODIGY_HOME"] = str(home)
    world.write_json("items.json", list(range(30)))
    world.write("wf.yaml", FIXABLE_WORKFLOW)
    first = world.run("cook", "wf.yaml")
    assert first.returncode == 3, first.stdout + first.stderr
    job = job_id_of(first.stdout)
    state_dir = home / "state" / world.repo.name / "mapreduce" / "jobs" / job
    journal = state_dir / "journal.jsonl"
    (world.repo / "fixed").touch()
    filler = home / "filler"
    _fill(filler)
    kept = journal.read_bytes()

    # A full disk: the requeue record is refused (the journal left as it was), or, when the
    # journal's last page still had room for it, the events saying the items left the DLQ are.
    # Either way one sentence names the file and the way on, and nothing runs.
    refused = world.run("dlq", "reprocess", job)

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert [line for line in refused.stderr.splitlines() if "No space left" in line] == [
        refused.stderr.strip()
    ]
    if str(journal) in refused.stderr:
        assert "nothing was recorded" in refused.stderr and journal.read_bytes() == kept
        again = ("dlq", "reprocess", job)
    else:
        assert str(state_dir / "events.jsonl") in refused.stderr
        assert f"prodigy resume-job {job}" in refused.stderr
        added = journal.read_bytes()[len(kept) :].decode().splitlines()
        assert [json.loads(line)["type"] for line in added] == ["requeued"]
        kept = journal.read_bytes()
        again = ("resume-job", job)
    ran = (world.repo / "ledger.log").read_text().split()
    assert sorted(ran) == [f"item_{n}" for n in range(5)], "nothing ran but the first cook"

    # Room for the requeue and a part of the run.
    os.truncate(filler, filler.stat().st_size - 32 * 1024)
    full = world.run(*again)

    assert full.returncode == 1, full.stdout + full.stderr
    assert "Traceback" not in full.stderr
    assert len([line for line in full.stderr.splitlines() if "No space left" in line]) == 1
    assert journal.read_bytes().startswith(kept)
    recorded = succeeded_indexes(journal, len(kept))

    filler.unlink()
    resume_runs_each_once(world, job, "ledger.log", 30, recorded)
