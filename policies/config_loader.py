"""Load the YAML configuration file into :class:`~policies.config.GatewayConfig`.

Every problem is reported, each with the file, line and column it comes from and
the key's path (``virtual_clusters[0].upstream.bootstrap_servers[1]``):

* the file is parsed with ruamel.yaml's round-trip loader, which keeps the line and
  column of every key and value (``.lc``); duplicate keys are errors;
* ``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the
  environment (``default`` is used when ``VAR`` is unset or empty; ``$${`` is a
  literal ``${``); an unset variable without a default is an error;
* the plain data is validated by pydantic, and each error location is mapped back
  to the YAML node: an unknown key points at the key, a missing key at the mapping
  that should contain it, any other problem at the offending value;
* file paths in the configuration (TLS certificates, JWKS files, users files) that
  are relative resolve against the directory of the configuration file (passed to
  the model as the validation context ``{"base_dir": ...}``).

The file is as hostile as any other input: nesting deeper than :data:`MAX_NESTING`
(flow ``[[[...`` or block indentation) and integers longer than
:data:`MAX_INTEGER_DIGITS` digits are reported with their line before the YAML
parser sees them (it would recurse until Python's limit, or fail Python's integer
conversion limit), and any other failure of the parser becomes a problem too:
:func:`load_config` raises nothing but :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from policies.config import GatewayConfig

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "load_config",
    "parse_config",
    "parse_config_bytes",
    "run_validate",
]

Loc = tuple[str | int, ...]

#: Deepest nesting of mappings and lists accepted (a real configuration uses under 10).
MAX_NESTING: Final = 64
#: Most values (after expanding ``*alias`` references) accepted: a "billion laughs"
#: file of nested aliases must not expand without bound.
MAX_VALUES: Final = 1_000_000
#: Longest integer accepted, in digits (a real configuration needs under 20).
MAX_INTEGER_DIGITS: Final = 100


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration file. ``line`` and ``column`` are 1-based."""

    source: str
    path: str
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists everything that is wrong."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_config(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
) -> GatewayConfig:
    """Read, substitute, parse and validate the configuration file at ``path``.

    ``env`` replaces ``os.environ`` for ``${VAR}`` substitution; relative file paths
    resolve against ``base_dir`` (default: the file's directory; a copy of the file
    elsewhere passes the original's). Raises :class:`ConfigError`.
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        message = f"cannot read file: {reason}"
        raise ConfigError([ConfigProblem(source, "", None, None, message)]) from None
    if base_dir is None:
        base_dir = Path(path).absolute().parent
    return parse_config_bytes(data, source, env=env, base_dir=base_dir)


def parse_config_bytes(
    data: bytes,
    source: str,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
) -> GatewayConfig:
    """:func:`parse_config` of a file's raw bytes (which must be UTF-8)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (invalid byte at offset {exc.start})"
        raise ConfigError([ConfigProblem(source, "", None, None, message)]) from None
    return parse_config(text, source, env=env, base_dir=base_dir)


def parse_config(
    text: str,
    source: str = "<string>",
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
) -> GatewayConfig:
    """Parse and validate configuration YAML ``text``; ``source`` names it in problems.

    ``env`` replaces ``os.environ`` for ``${VAR}`` substitution; relative file paths
    resolve against ``base_dir`` (default: the current directory). Raises
    :class:`ConfigError`.
    """
    limit_problem = _check_text_limits(text, source)
    if limit_problem is not None:
        raise ConfigError([limit_problem])
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(source, exc)]) from None
    except YAMLError as exc:
        raise ConfigError([ConfigProblem(source, "", None, None, f"invalid YAML: {exc}")]) from None
    except RecursionError:  # a nesting shape the text check does not see
        message = f"invalid YAML: nested too deeply (at most {MAX_NESTING} levels)"
        raise ConfigError([ConfigProblem(source, "", None, None, message)]) from None
    except Exception as exc:  # any parser failure is a problem of the file, not ours
        message = f"invalid YAML: {type(exc).__name__}: {_clip(str(exc))}"
        raise ConfigError([ConfigProblem(source, "", None, None, message)]) from None

    if root is None:
        message = "the configuration is empty; expected a mapping with 'virtual_clusters'"
        raise ConfigError([ConfigProblem(source, "", 1, 1, message)])
    if not isinstance(root, CommentedMap):
        message = f"expected a mapping at the top level, got {_kind(root)}"
        raise ConfigError([ConfigProblem(source, "", 1, 1, message)])

    converter = _Converter(os.environ if env is None else env)
    try:
        data = converter.plain(root, ())
    except ConfigError:
        raise ConfigError([ConfigProblem(source, "", None, None, _TOO_MANY_VALUES)]) from None
    located: list[tuple[Loc, bool, str]] = list(converter.problems)
    try:
        context = {"base_dir": Path(base_dir) if base_dir is not None else Path.cwd()}
        config = GatewayConfig.model_validate(data, context=context)
    except ValidationError as exc:
        # A value that could not be substituted already has its problem; the
        # validation error on the left-over text would only repeat it.
        reported = {loc for loc, _, _ in located}
        for error in exc.errors():
            if error["type"] == "extra_forbidden" or tuple(error["loc"]) not in reported:
                located.append(_from_pydantic(error))
    else:
        if not located:
            return config

    problems = [_locate(source, root, loc, at_key, message) for loc, at_key, message in located]
    problems.sort(key=lambda p: (p.line is None, p.line or 0, p.column or 0))
    raise ConfigError(problems)


def run_validate(path: str | Path) -> int:
    """``kafka-gateway validate FILE``: report OK (exit 0) or every problem on stderr (exit 1)."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    count = len(config.virtual_clusters)
    print(f"OK: {path} ({count} virtual cluster{'' if count == 1 else 's'})")
    return 0


# --------------------------------------------------------------------------------------
# YAML syntax errors


def _syntax_problem(source: str, exc: MarkedYAMLError) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context and not isinstance(exc, DuplicateKeyError):
        message = f"{exc.problem} ({exc.context}"
        if exc.context_mark is not None and exc.context_mark is not exc.problem_mark:
            message += f" at line {exc.context_mark.line + 1}"
        message += ")"
    line = None if mark is None else mark.line + 1
    column = None if mark is None else mark.column + 1
    return ConfigProblem(source, "", line, column, f"invalid YAML: {message}")


# --------------------------------------------------------------------------------------
# Limits checked on the text, before the YAML parser

_NESTING_MESSAGE: Final = f"nested too deeply (at most {MAX_NESTING} levels of mappings and lists)"
_TOO_MANY_VALUES: Final = (
    f"more than {MAX_VALUES} values once aliases are expanded (nested *alias references?)"
)
_LONG_INTEGER_RE: Final = re.compile(rf"(?<![\w.])[-+]?[0-9_]{{{MAX_INTEGER_DIGITS + 1},}}")


def _check_text_limits(text: str, source: str) -> ConfigProblem | None:
    """The first place where ``text`` nests too deeply or holds too long an integer.

    An approximate scan, generous on purpose: flow brackets outside quotes and
    comments, and the stack of block indentations (``- `` counts as a level).
    """
    indents: list[int] = []
    flow_depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        body = line.lstrip(" ")
        if body and not body.startswith("#") and flow_depth == 0:
            indent = len(line) - len(body)
            while indents and indents[-1] >= indent:
                indents.pop()
            indents.append(indent)
            dashes = len(body) - len(body.lstrip("- "))
            if len(indents) + dashes // 2 > MAX_NESTING:
                return ConfigProblem(source, "", number, indent + 1, _NESTING_MESSAGE)
        flow_depth, column = _scan_flow(line, flow_depth)
        if column is not None:
            return ConfigProblem(source, "", number, column, _NESTING_MESSAGE)
        match = _LONG_INTEGER_RE.search(line)
        if match is not None and _outside_quotes(line, match.start()):
            message = f"number too long (more than {MAX_INTEGER_DIGITS} digits)"
            return ConfigProblem(source, "", number, match.start() + 1, message)
    return None


def _scan_flow(line: str, depth: int) -> tuple[int, int | None]:
    """Flow depth after ``line``, and the 1-based column where it first exceeds the limit."""
    quote = ""
    previous = " "
    for index, char in enumerate(line):
        if quote:
            if char == quote and (quote == "'" or previous != "\\"):
                quote = ""
        elif char in "'\"" and previous in " \t[{,:":
            quote = char
        elif char == "#" and previous in " \t":
            break
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return depth, index + 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        previous = char
    return depth, None


def _outside_quotes(line: str, position: int) -> bool:
    before = line[:position]
    return before.count('"') % 2 == 0 and before.count("'") % 2 == 0


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------
# ruamel tree -> plain data, with ${VAR} substitution

_VAR_RE: Final = re.compile(r"\$(\$?)\{([^}]*)\}")
_VAR_NAME_RE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class _Converter:
    """Turns the round-trip tree into dicts, lists and scalars; collects problems."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[tuple[Loc, bool, str]] = []
        self.values = 0

    def plain(self, node: Any, loc: Loc) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise ConfigError([ConfigProblem("", "", None, None, _TOO_MANY_VALUES)])
        if len(loc) > MAX_NESTING:  # aliases can nest deeper than the text shows
            self.problems.append((loc[:MAX_NESTING], False, _NESTING_MESSAGE))
            return None
        if isinstance(node, dict):
            out: dict[Any, Any] = {}
            for key, value in node.items():
                if isinstance(key, bool | int | float | str) or key is None:
                    plain_key = key if key is None or isinstance(key, bool) else _scalar(key)
                    part = key if isinstance(key, str | int) else str(key)
                    out[plain_key] = self.plain(value, (*loc, part))
                else:
                    self.problems.append((loc, False, "mapping keys must be plain scalars"))
            return out
        if isinstance(node, list):
            return [self.plain(item, (*loc, i)) for i, item in enumerate(node)]
        if isinstance(node, TaggedScalar):
            self.problems.append((loc, False, f"unsupported YAML tag {str(node.tag)!r}"))
            return None
        if isinstance(node, str):
            return self.substitute(str(node), loc)
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int | float):
            return _scalar(node)
        return node

    def substitute(self, text: str, loc: Loc) -> str:
        if "${" not in text:
            return text

        def replace(match: re.Match[str]) -> str:
            escaped, body = match.group(1), match.group(2)
            if escaped:
                return "${" + body + "}"
            ref = _VAR_NAME_RE.fullmatch(body)
            if ref is None:
                self.problems.append(
                    (
                        loc,
                        False,
                        f"invalid variable reference {match.group(0)!r} "
                        "(expected ${NAME} or ${NAME:-default})",
                    )
                )
                return match.group(0)
            name, default = ref.group(1), ref.group(2)
            value = self.env.get(name)
            if default is not None and not value:
                return default
            if value is None:
                self.problems.append(
                    (
                        loc,
                        False,
                        f"environment variable {name!r} is not set "
                        f"(use ${{{name}:-default}} for a default)",
                    )
                )
                return match.group(0)
            return value

        return _VAR_RE.sub(replace, text)


def _scalar(value: Any) -> Any:
    """Drop ruamel's scalar subclasses (HexInt, ScalarFloat, quoted strings...)."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


# --------------------------------------------------------------------------------------
# pydantic errors -> messages and YAML locations


def _from_pydantic(error: ErrorDetails) -> tuple[Loc, bool, str]:
    """``(loc, point_at_key, message)`` for one pydantic error."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if loc and loc[-1] == "[key]":
        reason = _message(kind, _lower_first(error["msg"]), ctx, value)
        return loc[:-1], True, f"invalid key {_show(value)}: {reason}"
    if kind == "missing":
        return loc, False, f"missing required key {loc[-1]!r}" if loc else "missing value"
    if kind == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
        suggestions = difflib.get_close_matches(str(loc[-1]), _known_keys(loc[:-1]), n=1)
        if suggestions:
            message += f" (did you mean {suggestions[0]!r}?)"
        return loc, True, message
    return loc, False, _message(kind, error["msg"], ctx, value)


def _message(kind: str, default: str, ctx: dict[str, Any], value: Any) -> str:
    got = _show(value)
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"expected an integer, got {got}"
    if kind in {"string_type"}:
        return f"expected a string, got {got}"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return f"expected a mapping, got {got}"
    if kind in {"list_type"}:
        return f"expected a list, got {got}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '?')}, got {got}"
    if kind == "too_short" and isinstance(value, list | dict):
        return f"must not be empty (at least {ctx.get('min_length')} item expected)"
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        return f"must be {bounds[kind]} {limit}, got {got}"
    return default


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int) and value.bit_length() > 64:  # str() of it may even raise
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, int | float):
        return str(value)
    return _kind(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _known_keys(loc: Loc) -> list[str]:
    """Field names of the model found at ``loc`` (empty if ``loc`` is not a model)."""
    annotation: Any = GatewayConfig
    for part in loc:
        model = _model_of(annotation)
        if model is not None and isinstance(part, str):
            field = model.model_fields.get(part)
            if field is None:
                return []
            annotation = field.annotation
        else:
            annotation = _item_type(annotation)
            if annotation is None:
                return []
    model = _model_of(annotation)
    return list(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in _union_members(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _item_type(annotation: Any) -> Any:
    """Element type of ``list[X]`` / value type of ``dict[K, V]`` (through ``| None``)."""
    for candidate in _union_members(annotation):
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if origin is list and args:
            return args[0]
        if origin is dict and len(args) == 2:
            return args[1]
    return None


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in {typing.Union, types.UnionType}:
        return typing.get_args(annotation)
    return (annotation,)


def _locate(source: str, root: CommentedMap, loc: Loc, at_key: bool, message: str) -> ConfigProblem:
    """Map a location in the data to ``path`` text and the YAML node's line and column.

    The position is the value's, or the key's when ``at_key`` or the value is a
    mapping/list (whose own position is its first entry). A key that is not in the
    file (missing) leaves the position at the enclosing mapping.
    """
    node: Any = root
    line, column = 0, 0
    path = ""
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            path += f"[{part}]"
            line, column = node.lc.item(part)
            node = node[part]
        elif isinstance(node, CommentedMap):
            path += f".{part}" if path else str(part)
            if part not in node:
                node = None
                continue
            child = node[part]
            if part in node.lc.data:  # not for keys merged in with "<<: *anchor"
                if (last and at_key) or isinstance(child, CommentedMap | CommentedSeq):
                    line, column = node.lc.key(part)
                else:
                    line, column = node.lc.value(part)
            node = child
        else:
            is_index = isinstance(part, int) and not isinstance(part, bool)
            path += f"[{part}]" if is_index else (f".{part}" if path else str(part))
            node = None
    return ConfigProblem(source, path, line + 1, column + 1, message)
