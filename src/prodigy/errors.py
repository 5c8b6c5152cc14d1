"""The one exception hierarchy: every error a user can see, with its exit code.

Deep code raises these; the command line catches them once and prints `message` (one sentence)
and `hint` (the next command to type, when there is one) on stderr.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ITEMS_IN_DLQ = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class ProdigyError(Exception):
    """An error meant for the user: a clear sentence, an optional hint, an exit code."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class UsageError(ProdigyError):
    """Bad flags or arguments (exit 2)."""

    exit_code = EXIT_USAGE


class WorkflowError(ProdigyError):
    """The workflow file cannot be loaded: bad YAML, unknown key, wrong type, bad variable."""


class InputError(ProdigyError):
    """The map input cannot be turned into work items."""


class MissingVariable(ProdigyError):
    """A `${name}` has no value (an item field missing from one item, for instance)."""

    def __init__(self, name: str, message: str | None = None):
        super().__init__(message or f"variable ${{{name}}} is not defined")
        self.name = name


class UnusableValue(ProdigyError):
    """A value that exists but cannot be passed on (a NUL character bound for a command)."""


class JobNotFound(ProdigyError):
    """No job with that id under $PRODIGY_HOME."""


class JobLocked(ProdigyError):
    """Another live process holds the job's lock."""


class StateError(ProdigyError):
    """Stored job state is unreadable or inconsistent."""
