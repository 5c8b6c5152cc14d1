"""The `map.filter:` expression language: parsing a filter once and testing items against it.

Also owns field paths (`a.b[0]`), which sort_by, distinct and id_field share. Evaluation never
raises: a missing field is null, and ordering null or mismatched types is simply false.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple, NoReturn

from prodigy.display import unbroken
from prodigy.errors import InputError

FieldPath = tuple[str | int, ...]
Getter = Callable[[Any], Any]
Test = Callable[[Any], bool]

KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "matches", "true", "false", "null"})
_LITERAL_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
_COMPARISONS = frozenset({"==", "!=", ">", ">=", "<", "<="})

_SPACE = re.compile(r"\s+")
# Numbers are read greedily (`10kb` is one bad token, not `10` then `kb`) and validated after.
_NUMBER_TOKEN = re.compile(r"-?\d(?:[eE][+-]|[\w.])*")
_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[^\W\d][\w-]*")
_OPERATOR = re.compile(r"==|!=|>=|<=|&&|\|\||[<>!()\[\],.]")
_MAX_NUMBER_CHARS = 400
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


class FilterSyntaxError(InputError):
    """A filter that cannot be parsed; `column` (1-based) lets the workflow loader point at it."""

    def __init__(self, text: str, column: int, reason: str):
        # A filter may span lines in YAML (`filter: |`); the message stays one line.
        super().__init__(unbroken(f"filter '{text}' is invalid at column {column}: {reason}"))
        self.column = column
        self.reason = unbroken(reason)


@dataclass(frozen=True, slots=True)
class FilterExpr:
    """A compiled filter: `matches(item)` says whether the item stays in the job."""

    text: str
    _test: Test = field(repr=False, compare=False)

    def matches(self, item: Any) -> bool:
        return self._test(item)


def compile_filter(text: str) -> FilterExpr:
    """Parse `text` once; raise FilterSyntaxError (an InputError) naming the column at fault."""
    try:
        parser = _Parser(text, _tokenize(text))
        test = parser.parse_filter()
    except _Problem as problem:
        raise FilterSyntaxError(text, problem.column, problem.reason) from None
    except RecursionError:
        raise FilterSyntaxError(text, 1, "it is nested too deeply") from None
    return FilterExpr(text, test)


def parse_field_path(text: str) -> FieldPath:
    """Split `a.b[0]['c d']` into `("a", "b", 0, "c d")`; ValueError says what is wrong."""
    try:
        parser = _Parser(text, _tokenize(text))
        path = parser.parse_path_only()
    except _Problem as problem:
        raise ValueError(f"{problem.reason} at column {problem.column}") from None
    return path


def field_getter(path: FieldPath) -> Getter:
    """A function returning the value at `path` in an item, or None when any step is missing."""
    if len(path) == 1 and isinstance(path[0], str):
        key = path[0]

        # The common case (one plain field) kept to a single dict lookup for large inputs.
        def get_one(item: Any) -> Any:
            return item.get(key) if isinstance(item, dict) else None

        return get_one

    def get(item: Any) -> Any:
        value = item
        for step in path:
            if isinstance(step, str):
                if not isinstance(value, dict):
                    return None
                value = value.get(step)
            else:
                if not isinstance(value, list) or not -len(value) <= step < len(value):
                    return None
                value = value[step]
        return value

    return get


def json_equal(left: Any, right: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1 and "1" != 1; arrays and objects deeply."""
    if left is None or right is None:
        return left is right
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float):
        return isinstance(right, int | float) and left == right
    if isinstance(left, str):
        return isinstance(right, str) and left == right
    if isinstance(left, list):
        return (
            isinstance(right, list)
            and len(left) == len(right)
            and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and left.keys() == right.keys()
            and all(json_equal(value, right[key]) for key, value in left.items())
        )
    return False


def truthy(value: Any) -> bool:
    """null, false, 0, "", [] and {} are false; everything else is true."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


# ---- lexing ------------------------------------------------------------------------------------


class _Problem(Exception):
    def __init__(self, column: int, reason: str):
        super().__init__(reason)
        self.column = column
        self.reason = reason


class _Token(NamedTuple):
    kind: str  # "number", "string", "word", "op" or "end"
    value: Any
    start: int
    end: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        space = _SPACE.match(text, pos)
        if space:
            pos = space.end()
            continue
        char = text[pos]
        if char in "'\"":
            tokens.append(_read_string(text, pos))
        elif match := _NUMBER_TOKEN.match(text, pos):
            tokens.append(_read_number(match.group(), pos))
        elif match := _WORD.match(text, pos):
            tokens.append(_Token("word", match.group(), pos, match.end()))
        elif match := _OPERATOR.match(text, pos):
            tokens.append(_Token("op", match.group(), pos, match.end()))
        elif char == "=":
            raise _Problem(pos + 1, "'=' is not an operator; write '==' to compare")
        elif char in "&|":
            raise _Problem(pos + 1, f"'{char}' is not an operator; write '{char * 2}'")
        else:
            raise _Problem(pos + 1, f"unexpected character '{char}'")
        pos = tokens[-1].end
    tokens.append(_Token("end", None, len(text), len(text)))
    return tokens


def _read_string(text: str, start: int) -> _Token:
    quote = text[start]
    parts: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == quote:
            return _Token("string", "".join(parts), start, pos + 1)
        if char == "\\" and pos + 1 < len(text):
            following = text[pos + 1]
            # Unknown escapes stay as written so that regexes like '\d+' need no doubling.
            parts.append(_ESCAPES.get(following, "\\" + following))
            pos += 2
            continue
        parts.append(char)
        pos += 1
    raise _Problem(start + 1, f"unterminated string (no closing {quote})")


def _read_number(spelling: str, start: int) -> _Token:
    end = start + len(spelling)
    if len(spelling) > _MAX_NUMBER_CHARS:
        # int() refuses more than 4300 digits, and no JSON item holds such a number anyway.
        raise _Problem(start + 1, f"'{spelling[:20]}…' is too long to be a number")
    if _INT.fullmatch(spelling):
        return _Token("number", int(spelling), start, end)
    if _FLOAT.fullmatch(spelling):
        return _Token("number", float(spelling), start, end)
    raise _Problem(start + 1, f"'{spelling}' is not a number")


# ---- parsing into closures ---------------------------------------------------------------------


class _Operand(NamedTuple):
    get: Getter
    is_constant: bool
    constant: Any


class _Parser:
    """Recursive descent: or < and < not < comparison < operand, compiled to closures."""

    def __init__(self, text: str, tokens: list[_Token]):
        self.text = text
        self.tokens = tokens
        self.pos = 0

    # -- entry points

    def parse_filter(self) -> Test:
        test = self._or()
        token = self._peek()
        if token.kind != "end":
            self._fail(
                token, f"expected 'and', 'or' or the end of the filter, found {self._show(token)}"
            )
        return test

    def parse_path_only(self) -> FieldPath:
        token = self._next()
        if token.kind != "word":
            self._fail(token, f"expected a field name, found {self._show(token)}")
        path = self._path_after(token)
        if self._peek().kind != "end":
            self._fail(self._peek(), f"unexpected {self._show(self._peek())} in a field path")
        return path

    # -- token helpers

    def _peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def _next(self) -> _Token:
        token = self._peek()
        self.pos += 1
        return token

    def _is(self, token: _Token, *spellings: str) -> bool:
        return token.kind in ("op", "word") and token.value in spellings

    def _fail(self, token: _Token, reason: str) -> NoReturn:
        raise _Problem(token.start + 1, reason)

    def _show(self, token: _Token) -> str:
        if token.kind == "end":
            return "the end of the filter"
        spelling = self.text[token.start : token.end]
        if token.kind == "word" and spelling.lower() in KEYWORDS and spelling not in KEYWORDS:
            return f"'{spelling}' (keywords are lowercase: '{spelling.lower()}')"
        return f"'{spelling}'"

    # -- boolean structure

    def _or(self) -> Test:
        parts = [self._and()]
        while self._is(self._peek(), "or", "||"):
            self._next()
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        return lambda item: any(part(item) for part in parts)

    def _and(self) -> Test:
        parts = [self._unary()]
        while self._is(self._peek(), "and", "&&"):
            self._next()
            parts.append(self._unary())
        if len(parts) == 1:
            return parts[0]
        return lambda item: all(part(item) for part in parts)

    def _unary(self) -> Test:
        if self._is(self._peek(), "not", "!"):
            self._next()
            inner = self._unary()
            return lambda item: not inner(item)
        return self._comparison()

    def _comparison(self) -> Test:
        left = self._operand()
        token = self._peek()
        if token.kind == "op" and token.value in _COMPARISONS:
            self._next()
            return _compare(token.value, left, self._operand())
        if self._is(token, "in", "contains"):
            self._next()
            right = self._operand()
            return _contains(right, left) if token.value == "in" else _contains(left, right)
        if self._is(token, "not") and self._is(self._peek(1), "in"):
            self._next()
            self._next()
            is_in = _contains(self._operand(), left)
            return lambda item: not is_in(item)
        if self._is(token, "matches"):
            self._next()
            pattern_token = self._peek()
            return self._matches(left, self._operand(), pattern_token)
        get = left.get
        return lambda item: truthy(get(item))

    def _matches(self, subject: _Operand, pattern: _Operand, token: _Token) -> Test:
        get = subject.get
        if pattern.is_constant:
            if not isinstance(pattern.constant, str):
                self._fail(token, "'matches' needs a regular expression in quotes")
            try:
                regex = _compile_regex(pattern.constant)
            except re.error as exc:
                self._fail(token, f"invalid regular expression: {exc}")

            def search(item: Any) -> bool:
                value = get(item)
                return isinstance(value, str) and regex.search(value) is not None

            return search
        get_pattern = pattern.get

        def search_dynamic(item: Any) -> bool:
            value, spelled = get(item), get_pattern(item)
            if not isinstance(value, str) or not isinstance(spelled, str):
                return False
            compiled = _regex_or_none(spelled)
            return compiled is not None and compiled.search(value) is not None

        return search_dynamic

    # -- operands

    def _operand(self) -> _Operand:
        token = self._peek()
        if token.kind in ("number", "string"):
            self._next()
            return _constant(token.value)
        if token.kind == "word" and token.value in _LITERAL_WORDS:
            self._next()
            return _constant(_LITERAL_WORDS[token.value])
        if token.kind == "word" and token.value not in KEYWORDS:
            self._next()
            path = self._path_after(token)
            return _Operand(field_getter(path), False, None)
        if self._is(token, "["):
            return _constant(self._list())
        if self._is(token, "("):
            self._next()
            inner = self._or()
            closing = self._next()
            if not self._is(closing, ")"):
                self._fail(closing, f"expected ')', found {self._show(closing)}")
            return _Operand(inner, False, None)
        self._fail(token, "expected a value")

    def _list(self) -> list[Any]:
        self._next()
        values: list[Any] = []
        while not self._is(self._peek(), "]"):
            values.append(self._literal())
            separator = self._peek()
            if self._is(separator, ","):
                self._next()
            elif not self._is(separator, "]"):
                self._fail(separator, f"expected ',' or ']', found {self._show(separator)}")
        self._next()
        return values

    def _literal(self) -> Any:
        token = self._peek()
        if token.kind in ("number", "string"):
            self._next()
            return token.value
        if token.kind == "word" and token.value in _LITERAL_WORDS:
            self._next()
            return _LITERAL_WORDS[token.value]
        if self._is(token, "["):
            return self._list()
        self._fail(token, "expected a number, a quoted string, true, false, null or a list")

    def _path_after(self, first: _Token) -> FieldPath:
        path: list[str | int] = [first.value]
        previous = first
        # Segments must touch (`a.b[0]`); `a [0]` is a field followed by something else.
        while self._peek().start == previous.end and self._is(self._peek(), ".", "["):
            opener = self._next()
            if opener.value == ".":
                name = self._next()
                if name.kind != "word" or name.start != opener.end:
                    self._fail(name, "expected a field name after '.'")
                path.append(name.value)
                previous = name
            else:
                key = self._next()
                if not (key.kind == "string" or (key.kind == "number" and type(key.value) is int)):
                    self._fail(key, "expected an index like [0] or a quoted key like ['name']")
                closing = self._next()
                if not self._is(closing, "]"):
                    self._fail(closing, f"expected ']', found {self._show(closing)}")
                path.append(key.value)
                previous = closing
        return tuple(path)


def _constant(value: Any) -> _Operand:
    return _Operand(lambda _item: value, True, value)


def _compare(operator: str, left: _Operand, right: _Operand) -> Test:
    get_left, get_right = left.get, right.get
    if operator == "==":
        return lambda item: json_equal(get_left(item), get_right(item))
    if operator == "!=":
        return lambda item: not json_equal(get_left(item), get_right(item))
    ordered = _ORDERINGS[operator]

    def compare(item: Any) -> bool:
        a, b = get_left(item), get_right(item)
        if isinstance(a, bool) or isinstance(b, bool):
            return False
        if isinstance(a, int | float) and isinstance(b, int | float):
            return ordered(a, b)
        if isinstance(a, str) and isinstance(b, str):
            return ordered(a, b)
        return False

    return compare


_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _contains(container: _Operand, member: _Operand) -> Test:
    """`container contains member`: list membership, substring, or key of an object."""
    get_container, get_member = container.get, member.get

    def contains(item: Any) -> bool:
        whole, part = get_container(item), get_member(item)
        if isinstance(whole, list):
            return any(json_equal(part, element) for element in whole)
        if isinstance(whole, str):
            return isinstance(part, str) and part in whole
        if isinstance(whole, dict):
            return isinstance(part, str) and part in whole
        return False

    return contains


def _compile_regex(pattern: str) -> re.Pattern[str]:
    """re.compile with every refusal as re.error: a repeat count past 2**32 is otherwise an
    OverflowError, and groups nested past the recursion limit a RecursionError."""
    try:
        return re.compile(pattern)
    except OverflowError as exc:
        raise re.error(str(exc)) from None
    except RecursionError:
        raise re.error("its groups are nested too deeply") from None


@lru_cache(maxsize=256)
def _regex_or_none(pattern: str) -> re.Pattern[str] | None:
    try:
        return _compile_regex(pattern)
    except re.error:
        return None
