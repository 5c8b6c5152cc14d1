"""What every part of one run shares: the job's files and state, the recorder, where steps
run (executor, workspace), why the run would stop (interrupts) and where messages go.

Built once by the engine; the phases, the scheduler's glue and the endings read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prodigy.checkpoint import CheckpointWriter
from prodigy.events import EventLog
from prodigy.executors import LOCAL, Executor, ExecutorChoice
from prodigy.interrupts import Interrupts
from prodigy.items import WorkItem
from prodigy.job import ItemsFile, JobMetadata, metadata_document
from prodigy.progress import Reporter
from prodigy.recorder import Recorder
from prodigy.state import JobState, Summary
from prodigy.store import JobDir
from prodigy.workflow import Workflow
from prodigy.workspace import Workspace


def base_environment(workflow: Workflow) -> dict[str, str]:
    """What every step's environment starts from: prodigy's own plus the workflow's (its
    env_files, env, chosen profile and secrets: SPEC §9)."""
    return {**os.environ, **workflow.environment}


@dataclass
class RunOptions:
    max_parallel: int
    claude_bin: str
    max_items: int | None = None
    preloaded_items: list[WorkItem] | None = None
    items_checked: bool = False  # read once already (their warnings shown): freeze quietly
    verbose: bool = False  # a line per ended attempt
    yes: bool = False  # answer yes to every question (the final merge of worktree isolation)
    executor: ExecutorChoice = LOCAL


@dataclass
class RunContext:
    job: JobDir
    meta: JobMetadata
    workflow: Workflow
    state: JobState
    recorder: Recorder
    writer: CheckpointWriter
    events: EventLog
    reporter: Reporter
    options: RunOptions
    interrupts: Interrupts
    executor: Executor
    workspace: Workspace
    items: ItemsFile | None = field(default=None)

    def phase_env(self) -> dict[str, str]:
        return {**base_environment(self.workflow), "PRODIGY_JOB_ID": self.meta.job_id}

    def variables(self) -> dict[str, Any]:
        return {**self.workflow.environment, **self.state.captures(), "job_id": self.meta.job_id}

    def item_id(self, index: int) -> str:
        return self.items.id_of(index) if self.items is not None else f"#{index}"

    def open_items(self) -> ItemsFile:
        if self.items is None:
            self.items = ItemsFile(self.job.items)
            self.writer.item_id = self.items.id_of
        return self.items

    def write_metadata(self, status: str, state: JobState | Summary | None = None) -> None:
        self.job.write_metadata(
            metadata_document(self.meta, state or self.state, status, os.getpid())
        )

    def save_checkpoint(self) -> None:
        """This exact version, now (start, end and interruption)."""
        self.writer.write_now(self.state)

    def resume_hint(self) -> str:
        return f"prodigy resume-job {self.meta.job_id}"
