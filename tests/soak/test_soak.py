"""The kill soak in CI: 10 interruptions of real jobs (SIGKILL of the whole process tree,
SIGTERM, SIGINT; plain, setup+reduce and worktree jobs; inside a journal append, a checkpoint
write and a merge), each resumed, with every file and the ledger checked after each.

The release figures (1,000 SIGKILLs) come from the same script: `benchmarks/soak.py`.
Below it, the soak's own checks are shown to catch what they claim to catch.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import ROOT

SOAK = ROOT / "benchmarks" / "soak.py"


def soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(150)
def test_ten_interruptions_lose_nothing_repeat_nothing_and_leave_every_file_readable(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "figures.json"
    args = ["--kills", "10", "--signal", "mixed", "--kind", "all", "--items", "150"]
    args += ["--worktree-items", "8", "--kills-per-job", "4", "--seed", "3"]
    done = subprocess.run(
        [sys.executable, str(SOAK), *args, "--json", str(figures), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(figures.read_text())
    assert found["violations"] == [], found["violations"]
    assert found["delivered"] == 10
    assert (found["lost"], found["repeated"], found["unreadable"]) == (0, 0, 0)
    assert found["by_signal"].get("KILL", 0) >= 1, found["by_signal"]
    assert found["by_signal"].get("TERM", 0) + found["by_signal"].get("INT", 0) >= 1
    # The paused writers were struck where they were paused.
    assert found["landed"].get("inside journal append", 0) >= 1, found["landed"]
    assert found["landed"].get("inside checkpoint write", 0) >= 1, found["landed"]
    assert set(found["jobs"]) == {"plain", "setup-reduce", "worktree"}, found["jobs"]
    assert "| items lost" in done.stdout


# ---- the soak's checks can fail -----------------------------------------------------------------


def test_file_check_refuses_a_torn_checkpoint_and_damage_before_the_journals_last_line(
    tmp_path: Path,
) -> None:
    soak = soak_module()
    (tmp_path / "checkpoint-v3.json").write_text('{"format": "prodigy-checkpoint/1", "ite')
    (tmp_path / "metadata.json").write_text("{}")
    good = b'{"type":"job_ended","status":"completed","reason":""}\n'
    (tmp_path / "journal.jsonl").write_bytes(b"garbage\n" + good)
    (tmp_path / "events.jsonl").write_bytes(b'{"type":"a"}\n{"type":')  # torn tail: acceptable
    (tmp_path / ".checkpoint-v4.json.1.2.tmp").write_text("{")  # a write cut short: counted
    found = soak.check_files(tmp_path)
    assert sorted(p.split(":")[0] for p in found.unreadable) == [
        "checkpoint-v3.json",
        "journal.jsonl",
    ], found.unreadable
    assert (found.torn_tails, found.temp_files) == (1, 1)


def test_a_start_after_a_recorded_success_is_counted_as_repeated_work(tmp_path: Path) -> None:
    soak = soak_module()
    tally = soak.Tally()
    job = soak.SoakJob(tmp_path / "job", "plain", 3, 2, tally)
    job.ledger.write_text("start item_0\ndone item_0\nstart item_1\n")
    job.succeeded_since["item_0"] = 2  # seen recorded as succeeded when the ledger had 2 lines
    job._judge_ledger(job.ledger_lines())
    assert tally.repeated == 0  # item_0's own first start came before
    job.ledger.write_text("start item_0\ndone item_0\nstart item_1\nstart item_0\n")
    job._judge_ledger(job.ledger_lines())
    assert tally.repeated == 1 and "item_0 started again" in tally.violations[0]


def test_checkpoint_successes_refuses_a_format_it_does_not_know() -> None:
    soak = soak_module()
    doc = {"items": [{"id": "a", "status": "succeeded"}, {"id": "b", "status": "pending"}]}
    assert soak.checkpoint_successes(doc, ["a", "b"]) == {"a"}
    compact = {"items": {"succeeded": [[0, 0], [2, 3]], "pending": [[1, 1]]}}
    assert soak.checkpoint_successes(compact, ["a", "b", "c", "d"]) == {"a", "c", "d"}
    with pytest.raises(ValueError, match="does not know this checkpoint format"):
        soak.checkpoint_successes({"status": [2, 0]}, ["a"])
