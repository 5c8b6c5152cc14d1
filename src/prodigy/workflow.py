"""The workflow model (validated, immutable) and loading it from a YAML file.

Every loading problem (bad YAML, unknown key, wrong type, bad JSONPath, undefined `${...}`) is
one WorkflowError sentence prefixed by `FILE:LINE:COLUMN: ` pointing at the offending node.
"""

from __future__ import annotations

import hashlib
import os
import re
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.composer import ComposerError, MaxDepthExceededError
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning, YAMLError
from ruamel.yaml.nodes import MappingNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from prodigy.display import unbroken
from prodigy.durations import WORKFLOW_SYNTAX
from prodigy.errors import InputError, UsageError, WorkflowError
from prodigy.interpolate import parse_reference, referenced_names, to_text
from prodigy.item_filter import FilterSyntaxError, compile_filter
from prodigy.items import compile_json_path, json_path_reason, parse_sort_by
from prodigy.secrets import (
    EnvEntry,
    Environment,
    EnvironmentProblem,
    Masker,
    SecretSource,
    masker_for,
    parse_secret_shorthand,
    resolve_environment,
)

# Names the runner itself defines; a workflow may not reuse them for env keys or captures.
ITEM_VARIABLES = frozenset({"item", "item_index", "item_id", "attempt"})
MAP_FIELDS = ("successful", "failed", "total", "results", "skipped")
MERGE_FIELDS = ("source_branch", "target_branch", "worktree")
FINAL_MERGE_FIELDS = (
    *MERGE_FIELDS,
    "session_id",
    "commit_count",
    "commits",
    "modified_files",
)
RESERVED_NAMES = ITEM_VARIABLES | {"job_id", "map", "merge"}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# pydantic's error type for the rules below; the sentence is carried whole in ctx["reason"].
_RULE = "workflow_rule"


def _rule(reason: str) -> PydanticCustomError:
    return PydanticCustomError(_RULE, "{reason}", {"reason": reason})


def _shown(value: Any) -> str:
    """A value as a user wrote it in YAML, for 'got ...' in messages."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, bool | int | float) or value is None:
        return to_text(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    return type(value).__name__


def _bound(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _parse_duration(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        seconds = WORKFLOW_SYNTAX.seconds(value)
        if seconds is not None:
            return seconds
    raise _rule(
        "must be a duration: a number of seconds or a string such as '500ms', '30s', '2m' "
        f"or '1h', got {_shown(value)}"
    )


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0)]


def _env_mapping(value: Any) -> Any:
    """Accept numbers and booleans as env values (`PORT: 8080`), spelled as in commands."""
    if not isinstance(value, dict):
        return value
    converted: dict[Any, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or _NAME.fullmatch(key) is None:
            raise _rule(
                f"has the key {_shown(key)}, which is not a variable name "
                "(letters, digits and underscores, not starting with a digit)"
            )
        converted[key] = to_text(item) if isinstance(item, bool | int | float) else item
    return converted


EnvMapping = Annotated[dict[str, str], BeforeValidator(_env_mapping)]


class _Model(BaseModel):
    # strict: YAML already types its scalars, so "5" for an integer is a mistake to report.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_by_name=True)


class EnvValue(_Model):
    """The mapping form of an env entry: `{secret: true, value: "${NAME}"}`. `${NAME}` in it
    is read from the environment when the workflow is loaded (SPEC §9)."""

    value: str
    secret: bool = False


def _env_values(value: Any) -> Any:
    """Like EnvMapping, but an entry may also be an EnvValue mapping."""
    if not isinstance(value, dict):
        return value
    plain = {k: v for k, v in value.items() if not isinstance(v, dict)}
    converted = _env_mapping(plain)
    return {k: v if isinstance(v, dict) else converted[k] for k, v in value.items()}


# Tags of union members appear in pydantic's error locations; the NUL (which no YAML key can
# hold) marks them so that `_problem_from_error` drops them.
_TAG = "\x00"


def _env_value_kind(value: Any) -> str:
    # Called on YAML data when validating, and on the model when serialising.
    return f"{_TAG}mapping" if isinstance(value, dict | EnvValue) else f"{_TAG}text"


EnvValues = Annotated[
    dict[
        str,
        Annotated[
            Annotated[str, Tag(f"{_TAG}text")] | Annotated[EnvValue, Tag(f"{_TAG}mapping")],
            Discriminator(_env_value_kind),
        ],
    ],
    BeforeValidator(_env_values),
]


class SecretSpec(_Model):
    provider: Literal["env", "file"]
    key: str = Field(min_length=1)


def _secret_spec(value: Any) -> Any:
    if isinstance(value, str):
        name = parse_secret_shorthand(value)
        if name is None:
            # Never quoted back: a string here may be a secret written inline by mistake.
            raise _rule(
                'must be "${env:NAME}" (the environment variable NAME) or a mapping '
                "{provider: env | file, key: ...}, got a string that is neither; keep secret "
                "values out of the workflow file"
            )
        return {"provider": "env", "key": name}
    return value


def _secret_names(value: Any) -> Any:
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or _NAME.fullmatch(key) is None:
                raise _rule(
                    f"has the key {_shown(key)}, which is not a variable name "
                    "(letters, digits and underscores, not starting with a digit)"
                )
    return value


SecretsMapping = Annotated[
    dict[str, Annotated[SecretSpec, BeforeValidator(_secret_spec)]],
    BeforeValidator(_secret_names),
]


class WriteFile(_Model):
    path: str = Field(min_length=1)
    content: str
    format: Literal["text", "json", "yaml"] = "text"


class Step(_Model):
    shell: str | None = None
    claude: str | None = None
    write_file: WriteFile | None = None
    timeout: PositiveDuration | None = None
    env: EnvMapping = {}
    on_failure: Step | None = None
    capture_output: str | None = None
    working_dir: str | None = None
    commit_required: bool = False

    @field_validator("capture_output", mode="before")
    @classmethod
    def _capture_name(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, str) or _NAME.fullmatch(value) is None:
            raise _rule(
                "must be the name of a variable to store the output in (such as base_commit), "
                f"got {_shown(value)}"
            )
        if value in RESERVED_NAMES:
            raise _rule(f"cannot be '{value}', a name prodigy defines itself; choose another name")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [k for k in ("shell", "claude", "write_file") if getattr(self, k) is not None]
        if len(kinds) != 1:
            has = "none of them" if not kinds else " and ".join(kinds)
            raise _rule(f"must have exactly one of shell, claude or write_file, but has {has}")
        return self

    @property
    def kind(self) -> Literal["shell", "claude", "write_file"]:
        if self.shell is not None:
            return "shell"
        if self.claude is not None:
            return "claude"
        return "write_file"

    @property
    def text(self) -> str:
        if self.shell is not None:
            return self.shell
        if self.claude is not None:
            return self.claude
        assert self.write_file is not None
        return f"write_file {self.write_file.path}"


def _steps_list(value: Any) -> Any:
    """`{commands: [steps]}` is accepted wherever a list of steps is."""
    if isinstance(value, dict):
        if set(value) == {"commands"}:
            return value["commands"]
        raise _rule("must be a list of steps, or a mapping with only the key 'commands'")
    return value


class SetupPhase(_Model):
    steps: list[Step] = Field(validation_alias="commands")
    timeout: PositiveDuration | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain_list(cls, value: Any) -> Any:
        return {"commands": value} if isinstance(value, list) else value


class MapPhase(_Model):
    input: str = Field(min_length=1)
    json_path: str | None = None
    filter: str | None = None
    sort_by: str | None = None
    distinct: str | None = None
    offset: int = Field(default=0, ge=0)
    max_items: int | None = Field(default=None, ge=1)
    max_parallel: int = Field(default=10, ge=1)
    agent_timeout_secs: PositiveDuration | None = None
    agent_template: Annotated[list[Step], BeforeValidator(_steps_list)] = Field(min_length=1)
    # None: `worktree` inside a git repository, `none` outside one (SPEC §6).
    isolation: Literal["worktree", "none"] | None = None
    id_field: str | None = None
    # Worktree isolation: steps run in each new agent worktree before its agent (installing
    # dependencies, say), and steps run in the parent worktree while a merge conflicts.
    worktree_setup: Annotated[list[Step], BeforeValidator(_steps_list)] = []
    on_merge_conflict: Annotated[list[Step], BeforeValidator(_steps_list)] = []


class RetryConfig(_Model):
    max_attempts: int = Field(default=1, ge=1)
    backoff: Literal["fixed", "linear", "exponential", "fibonacci"] = "exponential"
    initial_delay: Duration = 1.0
    max_delay: Duration = 60.0
    jitter: bool = False


class ErrorPolicy(_Model):
    on_item_failure: Literal["dlq", "skip", "stop"] = "dlq"
    max_failures: int | None = Field(default=None, ge=1)
    failure_threshold: float | None = Field(default=None, gt=0, le=1)
    retry_config: RetryConfig = RetryConfig()


class CheckpointConfig(_Model):
    interval_items: int = Field(default=1, ge=1)
    max_checkpoints: int = Field(default=3, ge=1)


class ExecutorConfig(_Model):
    dask: str | None = None  # HOST:PORT of a Dask scheduler
    working_dir: str | None = None  # where workers find the repository, if not the same path


class Workflow(_Model):
    name: str = Field(min_length=1)
    mode: Literal["mapreduce"]
    env: EnvValues = {}
    # SPEC §9: env_files, then env, then the chosen profile, then secrets (see secrets.py).
    env_files: list[Annotated[str, Field(min_length=1)]] = []
    profiles: dict[str, EnvValues] = {}
    secrets: SecretsMapping = {}
    setup: SetupPhase | None = None
    map: MapPhase
    reduce: list[Step] = []
    # Worktree isolation: steps that replace the final `git merge` (same shape as setup).
    merge: SetupPhase | None = None
    executor: ExecutorConfig | None = None
    error_policy: ErrorPolicy = ErrorPolicy()
    checkpoint: CheckpointConfig = CheckpointConfig()
    # Set by load_workflow, never read from YAML (the loader refuses them as keys).
    source_path: Path = Field(default=Path(), exclude=True)
    source_hash: str = Field(default="", exclude=True)
    # The resolved environment (env_files, env, profile, secrets) and the secret values in it.
    environment: dict[str, str] = Field(default={}, exclude=True)
    secret_values: tuple[str, ...] = Field(default=(), exclude=True)
    profile: str | None = Field(default=None, exclude=True)

    @field_validator("env", "secrets")
    @classmethod
    def _env_not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in RESERVED_NAMES:
                raise _rule(f"cannot define '{key}', a name prodigy defines itself")
        return value

    @field_validator("profiles")
    @classmethod
    def _profiles_not_reserved(cls, value: dict[str, dict[str, Any]]) -> dict[str, Any]:
        for name, entries in value.items():
            for key in entries:
                if key in RESERVED_NAMES:
                    raise _rule(
                        f"profile '{name}' cannot define '{key}', a name prodigy defines itself"
                    )
        return value

    @property
    def masker(self) -> Masker:
        """Masks this run's secret values (SPEC §9) in everything prodigy keeps or prints."""
        return masker_for(self.secret_values)

    def config_json(self) -> dict[str, Any]:
        """The validated configuration as plain JSON data, for storing in checkpoints; a
        secret value written in it (an inline env value, say) is masked."""
        config: dict[str, Any] = self.masker.mask_data(self.model_dump(mode="json"))
        return config

    def uses_claude(self) -> bool:
        return any(step.kind == "claude" for _, step in _all_steps(self))


def _with_handlers(step: Step) -> Iterator[Step]:
    yield step
    if step.on_failure is not None:
        yield from _with_handlers(step.on_failure)


def _all_steps(workflow: Workflow) -> Iterator[tuple[str, Step]]:
    """Every step with its phase name, on_failure handlers included."""
    phases: list[tuple[str, Sequence[Step]]] = [
        ("setup", workflow.setup.steps if workflow.setup else []),
        ("map", workflow.map.agent_template),
        ("map", workflow.map.worktree_setup),
        ("map", workflow.map.on_merge_conflict),
        ("reduce", workflow.reduce),
        ("merge", workflow.merge.steps if workflow.merge else []),
    ]
    for phase, steps in phases:
        for step in steps:
            for each in _with_handlers(step):
                yield phase, each


# ---- loading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    line: int  # 0-based, as ruamel reports them
    column: int
    sentence: str


class _ProblemFound(Exception):
    def __init__(self, problem: _Problem) -> None:
        super().__init__(problem.sentence)
        self.problem = problem


_INTERNAL_KEYS = ("source_path", "source_hash", "environment", "secret_values", "profile")
_MAX_DEPTH = 100  # levels of YAML nesting; a workflow needs a dozen
_MAX_VALUES = 10_000  # mappings, lists and scalars; a workflow needs hundreds at most


def load_workflow(
    path: Path, profile: str | None = None, process_env: Mapping[str, str] | None = None
) -> Workflow:
    """Read, parse and validate a workflow file; raise WorkflowError naming FILE:LINE:COLUMN.

    Its environment is resolved too (SPEC §9): env_files and `provider: file` secrets are
    read relative to the workflow file, the environment ones from `process_env` (default:
    prodigy's own), and `profile` is chosen."""
    if path.is_dir():
        raise UsageError(f"workflow file not found: {path} is a directory")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"workflow file not found: {path}") from None
    except OSError as exc:
        raise WorkflowError(f"cannot read workflow file {path}: {exc.strerror or exc}") from None
    sources = _Sources(path.parent, profile, os.environ if process_env is None else process_env)
    try:
        problems, workflow = _load(data, sources)
    except _ProblemFound as found:
        problems, workflow = [found.problem], None
    except EnvironmentProblem as problem:  # in another file (a .env file): named there
        raise WorkflowError(unbroken(f"{problem.at}: {problem.sentence}")) from None
    if problems or workflow is None:
        raise WorkflowError(_report(path, problems))
    return workflow.model_copy(
        update={"source_path": path, "source_hash": hashlib.sha256(data).hexdigest()}
    )


@dataclass(frozen=True)
class _Sources:
    """Where a workflow's environment comes from, besides the file itself."""

    base_dir: Path
    profile: str | None
    process_env: Mapping[str, str]


def _report(path: Path, problems: list[_Problem]) -> str:
    first = min(problems, key=lambda p: (p.line, p.column))
    message = f"{path}:{first.line + 1}:{first.column + 1}: {first.sentence}"
    more = len(problems) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    # Sentences quote the file's own text (a key, a ${...}), which may hold a line break.
    return unbroken(message)


def _load(data: bytes, sources: _Sources) -> tuple[list[_Problem], Workflow | None]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _ProblemFound(
            _Problem(0, 0, f"the workflow file is not UTF-8 text (bad byte at offset {exc.start})")
        ) from None
    tree = _parse_yaml(text)
    if tree is None:
        raise _ProblemFound(
            _Problem(0, 0, "the workflow file is empty; it needs at least name, mode and map")
        )
    if not isinstance(tree, CommentedMap):
        raise _ProblemFound(
            _Problem(
                0,
                0,
                f"the workflow must be a mapping with keys such as name, mode and map, "
                f"got {_shown(_plain(tree, (0, 0)))}",
            )
        )
    for key in _INTERNAL_KEYS:
        if key in tree:
            spot = _spot(tree, key)
            line, column = (spot[0], spot[1]) if spot else (0, 0)
            raise _ProblemFound(_Problem(line, column, _unknown_key(key, (), "the workflow")))
    try:
        workflow = Workflow.model_validate(_plain(tree, (0, 0)))
    except ValidationError as exc:
        return [_problem_from_error(tree, error) for error in exc.errors()], None
    try:
        environment = _environment(workflow, sources)
    except EnvironmentProblem as problem:
        if problem.at is not None:
            raise
        spot = _locate(tree, problem.loc)
        return [_Problem(spot.line, spot.column, problem.sentence)], None
    workflow = workflow.model_copy(
        update={
            "environment": environment.values,
            "secret_values": environment.secret_values,
            "profile": environment.profile,
        }
    )
    problems = _check_json_path(tree, workflow) + _check_item_settings(tree, workflow)
    return problems + _check_variables(tree, workflow), workflow


def _entries(values: Mapping[str, str | EnvValue]) -> dict[str, EnvEntry]:
    return {
        key: EnvEntry(value)
        if isinstance(value, str)
        else EnvEntry(value.value, value.secret, True)
        for key, value in values.items()
    }


def _environment(workflow: Workflow, sources: _Sources) -> Environment:
    return resolve_environment(
        env_files=workflow.env_files,
        env=_entries(workflow.env),
        profiles={name: _entries(values) for name, values in workflow.profiles.items()},
        secrets={
            name: SecretSource(spec.provider, spec.key) for name, spec in workflow.secrets.items()
        },
        profile=sources.profile,
        base_dir=sources.base_dir,
        process_env=sources.process_env,
    )


class _Constructor(RoundTripConstructor):
    """ruamel's round-trip constructor, except that a scalar it cannot convert (`2001-02-30`,
    `!!int abc`, an integer of 5000 digits) is a ConstructorError at that scalar, reported at
    its line like any YAML error, rather than a bare ValueError or KeyError."""

    def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
        try:
            return super().construct_non_recursive_object(node, tag)
        except (ValueError, KeyError, OverflowError) as exc:
            kind = str(tag or node.tag).rpartition(":")[2]
            # int()'s refusal goes on to suggest sys.set_int_max_str_digits(): not for users.
            reason = "" if isinstance(exc, KeyError) else f" ({str(exc).split(';')[0]})"
            raise ConstructorError(
                None,
                None,
                f"{_shown(node.value)} cannot be read as a YAML {kind}{reason}; quote it if it "
                "is meant as text",
                node.start_mark,
            ) from None

    def construct_mapping(self, node: Any, *args: Any, **kwargs: Any) -> Any:
        _check_keys(node)
        return super().construct_mapping(node, *args, **kwargs)

    def construct_setting(self, node: Any, *args: Any, **kwargs: Any) -> Any:
        _check_keys(node)
        return super().construct_setting(node, *args, **kwargs)


def _check_keys(node: Any) -> None:
    """A mapping or list used as a key (`{[a]: 1}`, `{&x {a: [b]}: 1}`) is valid YAML but can
    mean nothing in a workflow, and ruamel fails on it with a bare TypeError."""
    for key, _ in node.value:
        if isinstance(key, MappingNode | SequenceNode):
            kind = "mapping" if isinstance(key, MappingNode) else "list"
            raise ConstructorError(
                None,
                None,
                f"a {kind} is used as a key; a key must be a plain name (check the brackets "
                "and the colons on this line)",
                key.start_mark,
            )


def _parse_yaml(text: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    # Deeper YAML would run ruamel's composer into Python's recursion limit.
    yaml.max_depth = _MAX_DEPTH
    try:
        with warnings.catch_warnings():
            # An anchor defined again is valid YAML (an alias takes the latest); ruamel's
            # warning about it would print eight lines on stderr under a running command.
            warnings.simplefilter("ignore", ReusedAnchorWarning)
            return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line, mark.column) if mark is not None else (0, 0)
        raise _ProblemFound(_Problem(line, column, _yaml_sentence(exc))) from None
    except ReaderError as exc:
        # A character YAML does not allow, such as NUL; ruamel words it on two lines.
        position = min(max(exc.position, 0), len(text))
        line = text.count("\n", 0, position)
        column = position - (text.rfind("\n", 0, position) + 1)
        character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else "a character"
        sentence = f"invalid YAML: {character} is not allowed in a YAML file ({exc.reason})"
        raise _ProblemFound(_Problem(line, column, sentence)) from None
    except YAMLError as exc:
        raise _ProblemFound(_Problem(0, 0, f"invalid YAML: {unbroken(str(exc))}")) from None


def _yaml_sentence(exc: MarkedYAMLError) -> str:
    problem = (exc.problem or "").strip()
    if isinstance(exc, DuplicateKeyError):
        key = re.match(r'found duplicate key "(.*)" with value', problem)
        first = exc.context_mark
        name = f"'{key.group(1)}'" if key else "key"
        where = f" (in the mapping starting at line {first.line + 1})" if first else ""
        return f"duplicate key {name}{where}; each key may appear only once"
    if isinstance(exc, MaxDepthExceededError):
        return f"the YAML is nested more than {_MAX_DEPTH} levels deep"
    if isinstance(exc, ComposerError) and "single document" in (exc.context or ""):
        return "the workflow file must hold a single YAML document, but found another one"
    context = f" ({exc.context.strip()})" if exc.context else ""
    return f"invalid YAML: {problem}{context}"


def _spot(node: CommentedMap | CommentedSeq, key: Any) -> Any:
    """ruamel's position of `key` in `node`: (line, column, value line, value column) in a
    mapping, (line, column) in a list; None for what it has none for (keys merged in with
    `<<`, the contents of a tagged collection such as `!!omap`, whose `lc.data` is None)."""
    return (node.lc.data or {}).get(key)


def _plain(node: Any, position: tuple[int, int], seen: list[int] | None = None) -> Any:
    """ruamel's round-trip nodes as plain Python data, so pydantic sees only builtin types.

    `seen` counts the values so far: aliases of aliases repeat a value exponentially (ten
    lines of YAML can stand for a billion values), so past _MAX_VALUES the file is refused."""
    seen = seen if seen is not None else [0]
    seen[0] += 1
    if seen[0] > _MAX_VALUES:
        raise _ProblemFound(
            _Problem(
                *position,
                f"the workflow holds more than {_MAX_VALUES} values once its YAML aliases "
                "are expanded",
            )
        )
    if isinstance(node, CommentedMap):
        result: dict[Any, Any] = {}
        for key, value in node.items():
            spot = _spot(node, key)
            result[key] = _plain(value, (spot[2], spot[3]) if spot else position, seen)
        return result
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for i, value in enumerate(node):
            spot = _spot(node, i)
            items.append(_plain(value, (spot[0], spot[1]) if spot else position, seen))
        return items
    if isinstance(node, TaggedScalar):
        raise _ProblemFound(
            _Problem(*position, f"the YAML tag {node.tag.value} is not supported in a workflow")
        )
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


# ---- pydantic errors mapped back to the YAML --------------------------------------------------


@dataclass(frozen=True)
class _Located:
    line: int
    column: int
    path: str  # as a user would write it: map.agent_template[0].shell


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def _locate(tree: CommentedMap, loc: Sequence[str | int], *, at_key: bool = False) -> _Located:
    """The YAML position and display path of a pydantic `loc`.

    The position is that of the deepest node that exists in the file: the value, or the key
    when `at_key` is set. The path follows the file's own spelling of a list of steps (plain,
    or under `commands:`), which pydantic's loc does not know about.
    """
    node: Any = tree
    line, column, path = 0, 0, ""
    present = True
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if present and isinstance(node, CommentedMap) and isinstance(part, int):
            commands = node.get("commands")
            spot = _spot(node, "commands")
            if isinstance(commands, CommentedSeq) and spot is not None:
                line, column, path, node = spot[2], spot[3], _join(path, "commands"), commands
        if present and isinstance(node, CommentedSeq) and isinstance(part, str):
            continue  # a plain list standing for {commands: [...]}
        if part == "[key]":
            continue
        path = _join(path, part)
        if not present:
            continue
        spot = _spot(node, part) if isinstance(node, CommentedMap | CommentedSeq) else None
        if spot is None:
            present = False
        elif isinstance(node, CommentedSeq):
            line, column, node = spot[0], spot[1], node[part]
        elif last and at_key:
            line, column = spot[0], spot[1]
        else:
            line, column, node = spot[2], spot[3], node[part]
    return _Located(line, column, path)


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def _problem_from_error(tree: CommentedMap, error: Any) -> _Problem:
    kind: str = error["type"]
    loc: tuple[str | int, ...] = tuple(
        part for part in error["loc"] if not (isinstance(part, str) and part.startswith(_TAG))
    )
    ctx: dict[str, Any] = error.get("ctx") or {}
    got = _shown(error.get("input"))
    if kind in ("missing", "extra_forbidden") and loc:
        parent = _locate(tree, loc[:-1], at_key=True)
        where = parent.path or "the workflow"
        if kind == "missing":
            return _Problem(
                parent.line, parent.column, f"{where} is missing the required key '{loc[-1]}'"
            )
        spot = _locate(tree, loc, at_key=True)
        return _Problem(spot.line, spot.column, _unknown_key(loc[-1], loc[:-1], where))
    spot = _locate(tree, loc)
    subject = spot.path or "the workflow"
    if kind == _RULE:
        sentence = f"{subject} {ctx['reason']}"
    elif kind in _TYPE_WORDS:
        sentence = f"{subject} must be {_TYPE_WORDS[kind]}, got {got}"
    elif kind == "greater_than_equal":
        sentence = f"{subject} must be at least {_bound(ctx['ge'])}, got {got}"
    elif kind == "greater_than":
        sentence = f"{subject} must be greater than {_bound(ctx['gt'])}, got {got}"
    elif kind == "less_than_equal":
        sentence = f"{subject} must be at most {_bound(ctx['le'])}, got {got}"
    elif kind == "literal_error":
        expected = str(ctx["expected"])
        choice = f"one of {expected}" if " or " in expected else expected
        sentence = f"{subject} must be {choice}, got {got}"
    elif kind in ("too_short", "string_too_short"):
        sentence = f"{subject} must not be empty"
    else:
        sentence = f"{subject} is invalid: {error['msg']}"
    return _Problem(spot.line, spot.column, sentence)


def _unknown_key(key: str | int, parent_loc: Sequence[str | int], where: str) -> str:
    allowed = _allowed_keys(parent_loc)
    import difflib  # only to suggest a name for a misspelt key

    guess = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    place = "at the top level" if where == "the workflow" else f"in {where}"
    if guess:
        return f"unknown key '{key}' {place}; did you mean '{guess[0]}'?"
    return f"unknown key '{key}' {place}; the keys allowed there are {', '.join(allowed)}"


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _model_of(annotation: Any) -> Any:
    """Strip Optional, list and Annotated down to the model (or other type) inside; of a
    union, the member that is a model (an env value: text, or a mapping)."""
    while True:
        origin = get_origin(annotation)
        if origin in (Annotated, list):
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            annotation = next((m for m in members if _is_model(_model_of(m))), members[0])
        else:
            return annotation


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    model: Any = Workflow
    for part in loc:
        model = _model_of(model)
        if isinstance(part, str) and isinstance(model, type) and issubclass(model, BaseModel):
            field = next(
                (f for n, f in model.model_fields.items() if part in (n, f.validation_alias)),
                None,
            )
            if field is None:
                return []
            model = field.annotation
        elif isinstance(part, str) and get_origin(model) is dict:
            model = get_args(model)[1]  # a key of a mapping such as env or profiles
    model = _model_of(model)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [
        str(field.validation_alias or name)
        for name, field in model.model_fields.items()
        if not field.exclude
    ]


# ---- checks that need the whole validated workflow --------------------------------------------


def _check_json_path(tree: CommentedMap, workflow: Workflow) -> list[_Problem]:
    expression = workflow.map.json_path
    if expression is None:
        return []
    import jsonpath  # only for a workflow that uses it (80 ms to import)

    try:
        compile_json_path(expression)
    except jsonpath.JSONPathError as exc:
        spot = _locate(tree, ("map", "json_path"))
        detail = json_path_reason(exc)
        token = getattr(exc, "token", None)
        index = getattr(token, "index", -1)
        at = f" at character {index + 1}" if isinstance(index, int) and index >= 0 else ""
        sentence = f"map.json_path {_shown(expression)} is not valid JSONPath: {detail}{at}"
        return [_Problem(spot.line, spot.column, sentence)]
    return []


def _check_item_settings(tree: CommentedMap, workflow: Workflow) -> list[_Problem]:
    """`filter` and `sort_by` are compiled now, so a typo is caught before anything runs."""
    problems: list[_Problem] = []
    if workflow.map.filter is not None:
        try:
            compile_filter(workflow.map.filter)
        except FilterSyntaxError as exc:
            spot = _locate(tree, ("map", "filter"))
            problems.append(_Problem(spot.line, spot.column, f"map.{exc.message}"))
    if workflow.map.sort_by is not None:
        try:
            parse_sort_by(workflow.map.sort_by)
        except InputError as exc:
            spot = _locate(tree, ("map", "sort_by"))
            problems.append(_Problem(spot.line, spot.column, exc.message))
    return problems


def _step_locs(workflow: Workflow) -> Iterator[tuple[str, tuple[str | int, ...], Step]]:
    if workflow.setup is not None:
        for i, step in enumerate(workflow.setup.steps):
            yield "setup", ("setup", "commands", i), step
    for i, step in enumerate(workflow.map.agent_template):
        yield "map", ("map", "agent_template", i), step
    for i, step in enumerate(workflow.map.worktree_setup):
        yield "map", ("map", "worktree_setup", i), step
    for i, step in enumerate(workflow.map.on_merge_conflict):
        yield "merge_conflict", ("map", "on_merge_conflict", i), step
    for i, step in enumerate(workflow.reduce):
        yield "reduce", ("reduce", i), step
    if workflow.merge is not None:
        for i, step in enumerate(workflow.merge.steps):
            yield "merge", ("merge", "commands", i), step


def _check_variables(tree: CommentedMap, workflow: Workflow) -> list[_Problem]:
    captures = {
        step.capture_output
        for phase, _, step in _step_locs(workflow)
        if phase != "map" and step.capture_output
    }
    known = set(workflow.environment) | captures | {"job_id"}
    problems: list[_Problem] = []
    for phase, loc, step in _step_locs(workflow):
        problems += _check_step(tree, phase, loc, step, known, handler=False)
    return problems


def _check_step(
    tree: CommentedMap,
    phase: str,
    loc: tuple[str | int, ...],
    step: Step,
    known: set[str],
    *,
    handler: bool,
) -> list[_Problem]:
    problems: list[_Problem] = []
    in_map = phase in ("map", "merge_conflict")
    if step.capture_output is not None and (in_map or handler):
        spot = _locate(tree, (*loc, "capture_output"), at_key=True)
        reason = (
            "map steps cannot use capture_output; it is for setup and reduce steps"
            if in_map
            else "an on_failure handler cannot use capture_output; put it on the step itself"
        )
        problems.append(_Problem(spot.line, spot.column, reason))
    texts: list[tuple[tuple[str | int, ...], str | None]] = [
        (("shell",), step.shell),
        (("claude",), step.claude),
        (("working_dir",), step.working_dir),
    ]
    if step.write_file is not None:
        texts += [
            (("write_file", "path"), step.write_file.path),
            (("write_file", "content"), step.write_file.content),
        ]
    texts += [(("env", key), value) for key, value in step.env.items()]
    for field, text in texts:
        for name in referenced_names(text or ""):
            undefined = _variable_problem(name, phase, known, step)
            if undefined is not None:
                spot = _locate(tree, (*loc, *field))
                problems.append(_Problem(spot.line, spot.column, undefined))
    if step.on_failure is not None:
        problems += _check_step(
            tree, phase, (*loc, "on_failure"), step.on_failure, known, handler=True
        )
    return problems


def _variable_problem(name: str, phase: str, known: set[str], step: Step) -> str | None:
    try:
        ref = parse_reference(name)  # `${sh:x}` is checked as `${x}`
    except ValueError as exc:
        return f"{exc}; write $${{{name}}} to pass it to the shell unchanged"
    root, path = ref.root, ref.path
    if root in known:
        return None
    if root == "merge" and phase in ("merge_conflict", "merge"):
        fields = MERGE_FIELDS if phase == "merge_conflict" else FINAL_MERGE_FIELDS
        if path and path[0] in fields:
            return None
        return f"{phase} steps have only ${{merge.{'}, ${merge.'.join(fields)}}}"
    if root in ITEM_VARIABLES:
        if phase in ("map", "merge_conflict"):
            return None
        return f"{phase} step uses ${{{name}}}, but item variables exist only in map steps"
    if root == "map":
        if phase != "reduce":
            return f"{phase} step uses ${{{name}}}, but map results exist only in reduce steps"
        if path and path[0] in MAP_FIELDS:
            return None
        return (
            f"reduce step uses ${{{name}}}, but map has only the fields "
            f"{', '.join(MAP_FIELDS)} (as in ${{map.total}})"
        )
    if not path and root in os.environ:
        return None
    if root in step.env:
        return (
            f"${{{name}}} is set only in this step's env, which is the command's environment; "
            f"write ${root} to let the shell read it, or define it under the workflow's env:"
        )
    return (
        f"${{{name}}} is not a workflow variable or an environment variable; define it under env:"
    )
