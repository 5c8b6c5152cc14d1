"""Secrets and environments (SPEC §9): the values a workflow's steps get from `env_files:`,
`env:`, the chosen profile and `secrets:`, which of them are secret, and the `Masker` that
replaces every secret value with `***` in the text prodigy keeps, writes or prints.

Resolving reads files (the .env files, `provider: file` secrets) and the process environment
it is given; the Masker is pure.
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prodigy.errors import MissingVariable
from prodigy.interpolate import referenced_names, render

MASK = "***"
# A secret this short cannot be told apart from ordinary text: masking it would garble every
# output where its letters occur, so the loader refuses it instead.
MIN_SECRET_CHARS = 4

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_SHORTHAND = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


# ---- masking ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Masker:
    """Replaces every occurrence of the secret values with `***`.

    `values` are kept longest first, and only those of at least MIN_SECRET_CHARS characters
    (build it with `masker_for`). Overlapping occurrences of different secrets are replaced as
    one, so no part of either is left in clear. Plain data, so it travels to a Dask worker.
    """

    values: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.values)

    def mask(self, text: str) -> str:
        """`text` with every secret value in it replaced by `***`."""
        if not self.values:
            return text
        spans = _occurrences(text, self.values)
        if not spans:
            return text
        parts: list[str] = []
        position = 0
        for start, end in spans:
            parts.append(text[position:start])
            parts.append(MASK)
            position = end
        parts.append(text[position:])
        return "".join(parts)

    def mask_tail(self, text: str) -> str:
        """`text` that starts where longer text was cut off (the tail of an output): as
        `mask`, and a beginning that may be the cut-off end of a secret is masked too."""
        if not self.values:
            return text
        longest = 0
        for value in self.values:
            for size in range(min(len(value) - 1, len(text)), longest, -1):
                if text.startswith(value[-size:]):
                    longest = size
                    break
        if longest:
            return MASK + self.mask(text[longest:])
        return self.mask(text)

    def found_in(self, text: str) -> bool:
        """Whether a secret value is in `text`, as it is or as JSON spells it (escaped)."""
        return any(v in text or _json_spelling(v) in text for v in self.values)

    def mask_data(self, value: Any) -> Any:
        """JSON-like data with every string in it (keys included) masked."""
        if not self.values:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask_data(k): self.mask_data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_data(v) for v in value]
        return value


def _json_spelling(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


def _occurrences(text: str, values: Sequence[str]) -> list[tuple[int, int]]:
    """The spans of text covered by any occurrence of any value, merged, in order."""
    spans: list[tuple[int, int]] = []
    for value in values:
        start = text.find(value)
        while start >= 0:
            spans.append((start, start + len(value)))
            start = text.find(value, start + 1)
    if not spans:
        return []
    spans.sort()
    merged = [spans[0]]
    for start, end in spans[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged


@functools.lru_cache(maxsize=64)
def _masker(values: tuple[str, ...]) -> Masker:
    kept = sorted({v for v in values if len(v) >= MIN_SECRET_CHARS}, key=lambda v: (-len(v), v))
    return Masker(tuple(kept))


def masker_for(values: Iterable[str]) -> Masker:
    """The Masker of these secret values (shorter ones than MIN_SECRET_CHARS are ignored: the
    loader refuses them, see `resolve_environment`)."""
    return _masker(tuple(values))


NO_MASK = Masker()


# ---- resolving --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvEntry:
    """One `env:` or profile entry: `NAME: text` or `NAME: {secret: true, value: text}`."""

    value: str
    secret: bool = False
    # The mapping form: `${NAME}` in `value` is read from the environment when loading.
    expand: bool = False


@dataclass(frozen=True)
class SecretSource:
    """Where a secret's value is read: an environment variable, or a whole file."""

    provider: Literal["env", "file"]
    key: str


@dataclass(frozen=True)
class Environment:
    """What every step's environment gets from the workflow, and which of it is secret."""

    values: dict[str, str]
    secret_names: frozenset[str]
    profile: str | None = None

    @property
    def secret_values(self) -> tuple[str, ...]:
        return tuple(self.values[name] for name in sorted(self.secret_names))

    @property
    def masker(self) -> Masker:
        return masker_for(self.secret_values)


class EnvironmentProblem(Exception):
    """A loading error: `loc` is where in the workflow (as pydantic would spell it), or `at`
    names another file's line (`.env:3`) when the problem is there."""

    def __init__(
        self, sentence: str, loc: tuple[str | int, ...] = (), at: str | None = None
    ) -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.loc = loc
        self.at = at


def parse_secret_shorthand(text: str) -> str | None:
    """The NAME of `"${env:NAME}"`, or None when `text` is not written so."""
    match = _ENV_SHORTHAND.fullmatch(text)
    return match.group(1) if match else None


def read_env_file(path: Path, shown: str) -> dict[str, str]:
    """The NAME=value lines of a .env file (python-dotenv's syntax: comments, `export`,
    quotes); values are taken as written, with no `${...}` expansion. Any line that is not
    a comment, a blank or NAME=value is an EnvironmentProblem naming `shown:LINE`."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EnvironmentProblem(
            f"the env file is not UTF-8 text (bad byte at offset {exc.start})", at=shown
        ) from None
    values: dict[str, str] = {}
    from dotenv.parser import parse_stream  # only for a workflow with env_files (15 ms)

    for binding in parse_stream(io.StringIO(text)):
        # python-dotenv counts blank lines before a binding as part of it.
        original = binding.original.string
        blank = original[: len(original) - len(original.lstrip())]
        line = binding.original.line + blank.count("\n")
        if binding.error:
            raise EnvironmentProblem(
                "cannot read this line; an env file holds NAME=value lines, comments (#) "
                "and blank lines",
                at=f"{shown}:{line}",
            )
        if binding.key is None:
            continue  # a comment or a blank line
        if _NAME.fullmatch(binding.key) is None:
            raise EnvironmentProblem(
                f"'{binding.key}' is not a variable name (letters, digits and underscores, "
                "not starting with a digit)",
                at=f"{shown}:{line}",
            )
        if binding.value is None:
            raise EnvironmentProblem(
                f"{binding.key} has no value; write {binding.key}= for an empty one",
                at=f"{shown}:{line}",
            )
        values[binding.key] = binding.value
    return values


def resolve_environment(
    *,
    env_files: Sequence[str],
    env: Mapping[str, EnvEntry],
    profiles: Mapping[str, Mapping[str, EnvEntry]],
    secrets: Mapping[str, SecretSource],
    profile: str | None,
    base_dir: Path,
    process_env: Mapping[str, str],
) -> Environment:
    """The workflow's environment: env_files in order (later wins), then `env:`, then the
    chosen profile, then the secrets. Relative paths are relative to `base_dir` (the
    workflow file's directory). `${env:NAME}`, `provider: env` and `${NAME}` in the mapping
    form of an entry read the process environment with the env files loaded over it.
    Raises EnvironmentProblem for the first problem found."""
    values: dict[str, str] = {}
    for i, name in enumerate(env_files):
        values.update(_load_env_file(base_dir, name, i))
    lookup = {**process_env, **values}
    secret_names: set[str] = set()

    def apply(entries: Mapping[str, EnvEntry], where: tuple[str | int, ...]) -> None:
        for key, entry in entries.items():
            if key in secrets:
                raise EnvironmentProblem(
                    f"{_path(where)}.{key} sets {key}, which is also a secret; a secret gets its "
                    "value only from secrets:, so remove one of them",
                    (*where, key),
                )
            value = _expand(entry, lookup, (*where, key)) if entry.expand else entry.value
            values[key] = value
            if entry.secret:
                _check_secret_value(key, value, (*where, key))
                secret_names.add(key)
            else:
                secret_names.discard(key)

    apply(env, ("env",))
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles))
            listed = f"its profiles are {known}" if known else "it defines no profiles"
            raise EnvironmentProblem(
                f"there is no profile '{profile}' in this workflow; {listed}",
                ("profiles",) if profiles else (),
            )
        apply(profiles[profile], ("profiles", profile))
    for name, source in secrets.items():
        value = _secret_value(name, source, lookup, base_dir)
        _check_secret_value(name, value, ("secrets", name))
        values[name] = value
        secret_names.add(name)
    return Environment(values, frozenset(secret_names), profile)


def _path(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _unreadable(exc: OSError) -> str:
    """Why a file named in the workflow could not be read, as the end of a sentence."""
    if isinstance(exc, FileNotFoundError):
        return "is not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    return f"cannot be read ({exc.strerror or exc})"


def _load_env_file(base_dir: Path, name: str, index: int) -> dict[str, str]:
    path = base_dir / name
    try:
        return read_env_file(path, str(path))
    except OSError as exc:
        reason = _unreadable(exc)
    raise EnvironmentProblem(
        f"env_files[{index}]: the env file '{name}' {reason} (looked for {path}); create it or "
        "remove it from env_files",
        ("env_files", index),
    )


def _expand(entry: EnvEntry, lookup: Mapping[str, str], loc: tuple[str | int, ...]) -> str:
    for name in referenced_names(entry.value):
        if _NAME.fullmatch(name) is None:
            raise EnvironmentProblem(
                f"{_path(loc)} uses ${{{name}}}; only environment variables (${{NAME}}) can be "
                "used in an env value",
                (*loc, "value"),
            )
        if name not in lookup:
            raise EnvironmentProblem(
                f"{_path(loc)} uses ${{{name}}}, but the environment variable {name} is not set "
                "(nor in env_files); set it before running prodigy",
                (*loc, "value"),
            )
    try:
        return render(entry.value, lookup)
    except MissingVariable as exc:  # checked above; kept so a message never becomes a crash
        raise EnvironmentProblem(f"{_path(loc)}: {exc.message}", (*loc, "value")) from None


def _secret_value(
    name: str, source: SecretSource, lookup: Mapping[str, str], base_dir: Path
) -> str:
    loc: tuple[str | int, ...] = ("secrets", name)
    if source.provider == "env":
        if source.key not in lookup:
            raise EnvironmentProblem(
                f"secret {name} is missing: the environment variable {source.key} is not set "
                "(nor in env_files); set it before running prodigy",
                loc,
            )
        return lookup[source.key]
    path = base_dir / source.key
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = _unreadable(exc)
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvironmentProblem(
                f"secret {name} is missing: the file '{source.key}' is not UTF-8 text "
                f"(looked at {path})",
                loc,
            ) from None
        # Most editors and `echo x > file` end a file with a newline that is not the secret.
        return text.removesuffix("\n").removesuffix("\r")
    raise EnvironmentProblem(
        f"secret {name} is missing: the file '{source.key}' {reason} (looked for {path})", loc
    )


def _check_secret_value(name: str, value: str, loc: tuple[str | int, ...]) -> None:
    if not value:
        raise EnvironmentProblem(
            f"secret {name} is empty; give it a value, or do not declare it as a secret", loc
        )
    if len(value) < MIN_SECRET_CHARS:
        raise EnvironmentProblem(
            f"secret {name} is shorter than {MIN_SECRET_CHARS} characters, too short to be "
            "masked in output without garbling it; use a longer value, or do not declare it "
            "as a secret",
            loc,
        )
