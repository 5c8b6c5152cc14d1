"""Damaged files in a job directory, each made by hand on a real job: prodigy names the file and
the way out in one sentence, never shows a traceback, and never rewrites the damaged bytes
(unless its recovery is to set the file aside, and then it keeps them).

The job: 8 items, items 5..7 fail until the test creates `fixed`, one attempt each, so the job
ends with 3 items in the DLQ. Successful agents append their id to `ledger.log` in the repo,
outside PRODIGY_HOME, which is how the tests see that no recorded item runs twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import FIXABLE_WORKFLOW, Env, job_id_of, make_world


@dataclass
class Job:
    world: Env
    job_id: str

    @property
    def dir(self) -> Path:
        return self.world.job_dir(self.job_id)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.world.run(*args)

    def ledger(self) -> list[str]:
        return sorted((self.world.repo / "ledger.log").read_text().split())


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Job, Path]:
    """One real job per module (and xdist worker), and a copy of its PRODIGY_HOME."""
    world = make_world(tmp_path_factory.mktemp("damaged"))
    world.write_json("items.json", list(range(8)))
    world.write("wf.yaml", FIXABLE_WORKFLOW)
    cooked = world.run("cook", "wf.yaml")
    assert cooked.returncode == 3, cooked.stdout + cooked.stderr
    snapshot = world.home.with_name("home-snapshot")
    shutil.copytree(world.home, snapshot, symlinks=True)
    return Job(world, job_id_of(cooked.stdout)), snapshot


@pytest.fixture
def job(stored: tuple[Job, Path]) -> Iterator[Job]:
    """The module's job as `cook` left it (3 items in the DLQ, 5 in the ledger)."""
    made, snapshot = stored
    shutil.rmtree(made.world.home, ignore_errors=True)
    shutil.copytree(snapshot, made.world.home, symlinks=True)
    (made.world.repo / "fixed").unlink(missing_ok=True)
    (made.world.repo / "ledger.log").write_text("".join(f"item_{n}\n" for n in range(5)))
    yield made


def one_sentence(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """The single stderr line of a refusal, which must name each of `names`."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def resumes_to_the_end(job: Job, *extra: str) -> subprocess.CompletedProcess[str]:
    """`resume-job --force` with the failing items fixed: it runs them, and only them."""
    (job.world.repo / "fixed").touch()
    resumed = job.run("resume-job", job.job_id, "--force", *extra)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert job.ledger() == [f"item_{n}" for n in range(8)], "a recorded item ran again"
    return resumed


# ---- latest.json -------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "dangling"])
def test_a_missing_or_dangling_latest_json_is_said_and_resume_rebuilds_from_the_journal(
    job: Job, damage: str
) -> None:
    latest = job.dir / "latest.json"
    target = job.dir / os.readlink(latest)
    if damage == "missing":
        latest.unlink()
        problem = f"{latest} is missing (checkpoint files on disk: v"
    else:
        target.unlink()
        problem = f"{latest} points to {target.name}, which does not exist"

    listed = job.run("checkpoints", "list", job.job_id)
    assert listed.returncode == 0 and problem in listed.stderr, listed.stderr
    assert "(latest)" not in listed.stdout  # no file is wrongly called the latest
    table = job.run("sessions", "show")
    assert table.returncode == 0 and "completed (damaged)" in table.stdout
    assert problem in table.stderr
    shown = job.run("checkpoints", "show", job.job_id)
    assert shown.returncode == 0 and problem in shown.stderr and '"version": 8' in shown.stdout

    resumed = resumes_to_the_end(job)

    warnings = [line for line in resumed.stderr.splitlines() if "latest.json" in line]
    assert len(warnings) == 1 and problem in warnings[0], resumed.stderr
    assert "rebuilt from its journal" in warnings[0]
    # The run's checkpoints point the link at a file again.
    assert (job.dir / os.readlink(latest)).is_file()
    healthy = job.run("checkpoints", "list", job.job_id)
    assert healthy.returncode == 0 and healthy.stderr == "" and "(latest)" in healthy.stdout


def test_repair_points_a_dangling_latest_json_at_a_checkpoint_rebuilt_from_the_journal(
    job: Job,
) -> None:
    latest = job.dir / "latest.json"
    (job.dir / os.readlink(latest)).unlink()

    repaired = job.run("checkpoints", "repair", job.job_id)

    assert repaired.returncode == 0, repaired.stderr
    assert "Wrote checkpoint v8, rebuilt from the journal" in repaired.stdout
    assert (
        os.readlink(latest) == "checkpoint-v8.json" and (job.dir / "checkpoint-v8.json").is_file()
    )
    again = job.run("checkpoints", "repair", job.job_id)
    assert again.returncode == 0 and "Nothing to repair" in again.stdout
    resumed = resumes_to_the_end(job)  # from the rebuilt checkpoint, checked like any other
    assert "latest.json" not in resumed.stderr


# ---- metadata.json ----------------------------------------------------------------------------


def test_a_metadata_json_that_does_not_parse_is_named_and_repaired_from_the_checkpoint(
    job: Job,
) -> None:
    metadata = job.dir / "metadata.json"
    original = metadata.read_bytes()
    damaged = original[: len(original) // 2]
    metadata.write_bytes(damaged)
    repair = f"prodigy checkpoints repair {job.job_id}"

    for command in (("resume-job", job.job_id, "--force"), ("dlq", "reprocess", job.job_id)):
        refused = job.run(*command)
        sentence = one_sentence(refused, str(metadata), repair)
        assert "left untouched" in sentence
    newest = job.run("resume")  # without an id: the job cannot be told unfinished
    one_sentence(newest, job.job_id, repair)
    assert metadata.read_bytes() == damaged
    assert job.ledger() == [f"item_{n}" for n in range(5)], "nothing ran"

    for listing in (("sessions", "show"), ("checkpoints", "list")):
        listed = job.run(*listing)
        assert listed.returncode == 0 and "Traceback" not in listed.stderr
        assert f"{job.job_id}" in listed.stdout and "(damaged)" in listed.stdout
        assert str(metadata) in listed.stderr and repair in listed.stderr
    detail = job.run("sessions", "show", job.job_id)
    assert detail.returncode == 0 and repair in detail.stdout
    assert metadata.read_bytes() == damaged

    repaired = job.run("checkpoints", "repair", job.job_id)

    assert repaired.returncode == 0, repaired.stderr
    assert (job.dir / "corrupt-metadata.json").read_bytes() == damaged
    assert "corrupt-metadata.json" in repaired.stdout
    rebuilt, before = json.loads(metadata.read_bytes()), json.loads(original)
    for written in (rebuilt, before):
        del written["updated_at"], written["pid"]
    assert rebuilt == before  # every other field as the run wrote it
    resumes_to_the_end(job)


def test_metadata_missing_a_field_is_damage_too(job: Job) -> None:
    metadata = job.dir / "metadata.json"
    metadata.write_text(json.dumps({"job_id": job.job_id}))

    refused = job.run("resume-job", job.job_id)

    one_sentence(refused, str(metadata), "a field is missing", "checkpoints repair")


# ---- the lock file ----------------------------------------------------------------------------


GARBAGE = [b"\x00\xff\xfe not json \x01", b'{"pid": 1e400, "host": "a\\nb", "started": 1}', b"[]"]


@pytest.mark.parametrize("garbage", GARBAGE, ids=["binary", "overflowing-pid", "not-an-object"])
def test_garbage_in_the_lock_file_never_crashes_the_refusal_or_the_take_over(
    job: Job, garbage: bytes
) -> None:
    lock = job.dir / "lock"
    lock.write_bytes(garbage)
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live holder that wrote garbage
        refused = job.run("resume-job", job.job_id, "--force")
        sentence = one_sentence(refused, job.job_id, "another process")
        assert "its lock file does not say which" in sentence
        shown = job.run("sessions", "show", job.job_id)
        assert shown.returncode == 0 and "held by another process" in shown.stdout
    finally:
        os.close(fd)
    assert lock.read_bytes() == garbage

    if garbage == GARBAGE[0]:
        resumed = resumes_to_the_end(job)
    else:  # the take-over, then the plan's refusal: no run needed to see the notice
        resumed = job.run("resume-job", job.job_id)
        assert resumed.returncode == 1 and "No retriable items found" in resumed.stderr
        assert "Traceback" not in resumed.stderr and len(resumed.stderr.splitlines()) == 2

    notices = [line for line in resumed.stderr.splitlines() if str(lock) in line]
    assert len(notices) == 1 and "unreadable holder details" in notices[0], resumed.stderr


# ---- items.jsonl --------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["mid-line", "whole-lines"])
def test_an_items_file_cut_short_is_refused_and_left_untouched(job: Job, cut: str) -> None:
    items = job.dir / "items.jsonl"
    data = items.read_bytes()
    if cut == "mid-line":
        damaged, problem = data[:-4], "is cut short: its last line is incomplete"
    else:
        damaged, problem = b"".join(data.splitlines(keepends=True)[:6]), "holds 6 of the 8 items"
    items.write_bytes(damaged)

    for command in (("resume-job", job.job_id, "--force"), ("dlq", "reprocess", job.job_id)):
        refused = job.run(*command)
        sentence = one_sentence(refused, str(items), problem, "left untouched")
        assert "Restore it from a backup" in sentence
    assert items.read_bytes() == damaged
    assert job.ledger() == [f"item_{n}" for n in range(5)], "nothing ran"
    assert "requeued" not in (job.dir / "journal.jsonl").read_text(), "nothing was recorded"
