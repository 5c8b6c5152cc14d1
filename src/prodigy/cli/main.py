"""Entry point: the `prodigy` group, global options and the one place errors become messages.

Deep code raises `ProdigyError`; here it becomes one sentence on stderr and an exit code. A
traceback is shown only with `-v`.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import ClassVar

import click

from prodigy import __version__
from prodigy.cli.output import Settings, warn
from prodigy.errors import EXIT_FAILURE, EXIT_SIGINT, ProdigyError


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs: `events show` should not pay
    for the engine and the workflow validator."""

    COMMANDS: ClassVar[dict[str, tuple[str, str]]] = {
        "cook": ("prodigy.cli.run", "cook"),
        "run": ("prodigy.cli.run", "run_alias"),
        "resume": ("prodigy.cli.resume", "resume"),
        "resume-job": ("prodigy.cli.resume", "resume_job"),
        "checkpoints": ("prodigy.cli.checkpoints", "checkpoints"),
        "events": ("prodigy.cli.events", "events"),
        "dlq": ("prodigy.cli.dlq", "dlq"),
        "sessions": ("prodigy.cli.sessions", "sessions"),
        "worktrees": ("prodigy.cli.worktrees", "worktrees"),
        "progress": ("prodigy.cli.progress", "progress"),
    }

    # What `prodigy --help` says of each command, so that listing them imports none of them.
    SHORT_HELP: ClassVar[dict[str, str]] = {
        "cook": "Run a workflow file as a new job.",
        "run": "Same as cook.",
        "resume": "Resume the newest unfinished job of this repository (or JOB_ID).",
        "resume-job": "Resume one job by id.",
        "checkpoints": "List, show, repair and clean checkpoints.",
        "events": "Show or follow a job's events.",
        "dlq": "Inspect and reprocess the dead letter queue.",
        "sessions": "Show the jobs of this repository.",
        "worktrees": "List, clean and merge the git worktrees and branches of jobs.",
        "progress": "Where a job stands: a summary, a report file or a live dashboard.",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            text = self.SHORT_HELP.get(name)
            if text is None:
                command = self.get_command(ctx, name)
                text = command.get_short_help_str() if command is not None else ""
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.COMMANDS:
            return None
        module_name, attribute = self.COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        if (
            cmd_name == "dlq"
            and isinstance(command, click.Group)
            and "reprocess" not in command.commands
        ):
            from prodigy.cli.dlq_reprocess import reprocess

            command.add_command(reprocess)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v", "--verbose", count=True, help="A line per ended attempt, and tracebacks on errors."
)
@click.version_option(__version__, prog_name="prodigy")
def cli(verbose: int) -> None:
    """Run MapReduce workflows of shell and Claude agents, durably and resumably."""
    Settings.verbose = verbose


def report_error(exc: ProdigyError) -> None:
    message = exc.message if not exc.hint else f"{exc.message} {exc.hint}"
    warn(f"error: {message}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        result = cli.main(args=args, prog_name="prodigy", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # One sentence and the way out, like every other error, instead of click's usage block.
        command = exc.ctx.command_path if exc.ctx is not None else "prodigy"
        message = exc.format_message().rstrip(".")
        warn(f"error: {message}. See '{command} --help'.")
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        warn(f"error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except click.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            # Ctrl-C before a job's own handlers are installed (found by the kill soak): click
            # turns it into Abort, but it is an interruption like any other (exit 130).
            warn("Interrupted.")
            sys.exit(EXIT_SIGINT)
        warn("Aborted.")
        sys.exit(EXIT_FAILURE)
    except ProdigyError as exc:
        if Settings.verbose:
            traceback.print_exc()
        report_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        warn("Interrupted.")
        sys.exit(EXIT_SIGINT)
    except OSError as exc:
        if Settings.verbose:
            traceback.print_exc()
        where = f" ({exc.filename})" if exc.filename else ""
        warn(
            f"error: {exc.strerror or exc}{where}; the job's state on disk is unchanged "
            "up to this point, so it can be resumed once the cause is fixed."
        )
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # the last line of defence: never a bare traceback
        if Settings.verbose:
            traceback.print_exc()
        warn(f"error: internal error: {exc!r}. Run again with -v for the traceback and report it.")
        sys.exit(EXIT_FAILURE)
    sys.exit(result if isinstance(result, int) else 0)
