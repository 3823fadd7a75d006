"""Typed experiment configs: one ``@dataclass`` per entry point, mirrored by a YAML file in configs/.

Each default lives in the dataclass. A YAML file (read with ``yaml.safe_load``) overrides some
fields, and command-line flags (``--field-name value``; a boolean is ``--field-name`` or ``--no-field-name``)
override both. Unknown keys and values of the wrong type raise errors that name the field. The resolved config
is written beside the outputs. ``--help`` shows each field's documentation from the dataclass source.

A renamed field lists its old names in ``field(metadata={"aliases": ("old_name",)})``: for one release the old
name still works as a YAML key (:func:`from_dict`) and as a flag (``--old-name``, :func:`add_config_arguments`),
each time with one deprecation line on stderr naming the old and the new spelling. Giving both the old and the new
name in one place (one YAML file, or one command line) is an error, not a silent choice.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import json
import math
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

C = TypeVar("C")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` (from YAML or the command line) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, a, value)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise ValueError(f"config field {name!r}: cannot read {value!r} as {tp}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"config field {name!r}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, list | tuple):
            raise ValueError(f"config field {name!r}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(name, inner, v) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"config field {name!r}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"config field {name!r}: expected an integer, got {value!r}")
        try:
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        except (TypeError, ValueError):
            raise ValueError(f"config field {name!r}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"config field {name!r}: expected a number, got {value!r}") from None
        if not math.isfinite(out):
            raise ValueError(f"config field {name!r}: expected a finite number, got {value!r}")
        return out
    if tp is str:
        return str(value)
    if tp is Any:
        return value
    return value


def check_literal_fields(cfg: Any) -> None:
    """Raise ValueError naming the field if a ``Literal``-typed field of the dataclass ``cfg`` holds another value.

    For ``__post_init__``: :func:`from_dict` checks the values it reads, this also covers direct construction.
    """
    for name, tp in _field_types(type(cfg)).items():
        value = getattr(cfg, name)
        if typing.get_origin(tp) is Literal and value not in typing.get_args(tp):
            choices = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ValueError(f"{type(cfg).__name__}.{name} must be one of {choices}, got {value!r}")


def check_numbers(cfg: Any, positive: tuple[str, ...] = (), nonnegative: tuple[str, ...] = (),
                  fraction: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the first field of the dataclass ``cfg`` outside its range (None is skipped).

    Args:
        positive: fields that must be > 0 (counts, sizes, rates).
        nonnegative: fields that must be >= 0.
        fraction: fields that must lie in [0, 1].
    For ``__post_init__``, so that a bad value fails when the config is loaded, before any work.
    """
    name = type(cfg).__name__
    for fields, ok, want in ((positive, lambda v: v > 0, "positive"), (nonnegative, lambda v: v >= 0, ">= 0"),
                             (fraction, lambda v: 0 <= v <= 1, "in [0, 1]")):
        for f in fields:
            value = getattr(cfg, f)
            values = value if isinstance(value, list | tuple) else [value]
            for v in values:
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not ok(v)
                                      or not math.isfinite(v)):
                    flag = "--" + f.replace("_", "-")
                    raise ValueError(f"{name}.{f} ({flag}) must be {want}, got {value!r}")


def field_aliases(cls: type) -> dict[str, str]:
    """Old name -> field name for every field of the dataclass ``cls`` with ``metadata["aliases"]``."""
    return {old: f.name for f in dataclasses.fields(cls) for old in f.metadata.get("aliases", ())}


def deprecation_line(old: str, new: str) -> str:
    """The one stderr line printed when a renamed field or flag is used under its old name."""
    return f"gendiff: {old} is deprecated (renamed); use {new}"


def rename_aliases(cls: type, data: dict[str, Any], warn: bool = True) -> dict[str, Any]:
    """``data`` with each old field name of ``cls`` (:func:`field_aliases`) replaced by the field's name.

    With ``warn``, prints :func:`deprecation_line` to stderr for each old name used; ``warn=False`` reads records
    written before the rename (results JSON, saved configs) quietly.

    Raises:
        ValueError: ``data`` holds both a field's old and new name.
    """
    aliases = field_aliases(cls)
    out = dict(data)
    for old in [k for k in data if k in aliases]:
        new = aliases[old]
        if new in data:
            raise ValueError(f"config gives both {old!r} (the old name) and {new!r} for {cls.__name__}.{new}; "
                             f"keep only {new!r}")
        if warn:
            print(deprecation_line(repr(old), repr(new)), file=sys.stderr)
        out[new] = out.pop(old)
    return out


def from_dict(cls: type[C], data: dict[str, Any], base: C | None = None) -> C:
    """Build ``cls`` from ``data`` on top of ``base`` (or the defaults); unknown keys raise.

    An old field name (``metadata["aliases"]``) is read as the field's, with a deprecation line
    (:func:`rename_aliases`).
    """
    data = rename_aliases(cls, data)
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise KeyError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(types_)}")
    cfg = base if base is not None else cls()
    updates = {k: _coerce(k, types_[k], v) for k, v in data.items()}
    return dataclasses.replace(cfg, **updates)


def parse_yaml_mapping(text: str, what: str) -> dict[str, Any]:
    """``yaml.safe_load`` a mapping of field: value (empty text gives {}).

    Raises:
        ValueError: the text is not valid YAML, or not a mapping; the message starts with ``what``.
    """
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{what} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def as_mapping(name: str, value: Any) -> dict[str, Any]:
    """A config field that holds a mapping of field: value, given as a dict or as YAML text (a CLI flag); ValueError
    naming ``name`` otherwise."""
    if isinstance(value, str):
        return parse_yaml_mapping(value, f"{name} {value!r}")
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping of field: value, got {value!r}")
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; a missing file, bad YAML or a non-mapping raises clearly."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {path} is a folder, not a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    return parse_yaml_mapping(path.read_text(), f"config file {path}")


_Comments = dict[int, tuple[int, str]]  # line number -> (column of its "#" or -1 after code, text without "#")


def _comments_by_line(source: str) -> _Comments:
    """The ``#`` comments of ``source`` by line; the column is -1 for a comment that follows code on its line."""
    lines = source.splitlines()
    out: _Comments = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                own_line = not lines[row - 1][:col].strip()
                out[row] = (col if own_line else -1, tok.string.lstrip("#").strip())
    except (tokenize.TokenError, IndentationError):
        return {}
    return out


def _unfinished(text: str) -> bool:
    """Whether a trailing comment visibly runs on to the next line (an open bracket, a trailing comma...)."""
    return text.count("(") > text.count(")") or text.endswith((",", ";", "(", " and", " or"))


def _trailing_comment(stmt: ast.stmt, comments: _Comments) -> tuple[str, list[int]]:
    """The trailing ``#`` comment of ``stmt`` with the comment-only lines that continue it, and their line numbers.

    The comment is the one after its last line, else after its first (a field written over several lines).
    A comment-only line continues it when it is indented deeper than ``stmt`` or the text so far is unfinished
    (:func:`_unfinished`); otherwise it is left to the next field as its leading comment.
    """
    line = next((n for n in (stmt.end_lineno or stmt.lineno, stmt.lineno) if comments.get(n, (0, ""))[0] == -1), 0)
    if not line:
        return "", []
    parts, used = [comments[line][1]], [line]
    while (col_text := comments.get(used[-1] + 1)) and col_text[0] >= 0:
        if not (col_text[0] > stmt.col_offset or _unfinished(" ".join(parts))):
            break
        parts.append(col_text[1])
        used.append(used[-1] + 1)
    return " ".join(p for p in parts if p), used


def _leading_comment(stmt: ast.stmt, comments: _Comments, taken: set[int]) -> str:
    """The block of comment-only lines right above ``stmt`` (lines in ``taken`` belong to the previous field)."""
    parts: list[str] = []
    line = stmt.lineno - 1
    while line in comments and comments[line][0] >= 0 and line not in taken:
        parts.insert(0, comments[line][1])
        line -= 1
    return " ".join(p for p in parts if p)


def _docstring_after(body: list[ast.stmt], i: int) -> str:
    """The attribute docstring of ``body[i]``: a string literal statement right after it ("" if none)."""
    nxt = body[i + 1] if i + 1 < len(body) else None
    if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
        return " ".join(inspect.cleandoc(nxt.value.value).split())
    return ""


def _own_field_docs(cls: type) -> dict[str, str]:
    """Docs of the fields annotated in ``cls``'s own body (see :func:`field_docs`)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return {}
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if node is None:
        return {}
    comments = _comments_by_line(source)
    docs: dict[str, str] = {}
    taken: set[int] = set()
    for i, stmt in enumerate(node.body):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            trailing, used = _trailing_comment(stmt, comments)
            doc = _docstring_after(node.body, i) or trailing or _leading_comment(stmt, comments, taken)
            taken.update(used)
            if doc:
                docs[stmt.target.id] = doc
    return docs


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its documentation in the source of the dataclass ``cls`` and of its bases.

    A field's doc is, first found: its attribute docstring (a string literal right after it); its trailing ``#``
    comment with the comment-only lines that continue it; the comment-only lines right above it. A subclass's doc
    of a field wins over its parent's; a class whose source cannot be read contributes nothing.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object:
            docs.update(_own_field_docs(klass))
    return docs


def _literal_values(tp: Any) -> list[Any]:
    """The values of a ``Literal`` type, also inside ``Optional`` / unions / ``list[...]`` ([] for other types)."""
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    return [v for arg in typing.get_args(tp) for v in _literal_values(arg)]


def _choices(f: dataclasses.Field, tp: Any) -> list[str]:
    """Allowed values of a field: its ``metadata["choices"]`` (a callable is called now) or its ``Literal`` values."""
    choices = f.metadata.get("choices")
    if callable(choices):
        choices = choices()
    values = list(choices) if choices is not None else _literal_values(tp)
    return [str(v) for v in values]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def field_help(cls: type, f: dataclasses.Field, tp: Any) -> str:
    """``--help`` text of one field: its meaning, its allowed values and its default.

    The meaning is ``metadata["help"]``, else the field's docstring or ``#`` comment in the source (:func:`field_docs`).
    """
    meaning = f.metadata.get("help") or field_docs(cls).get(f.name, "")
    choices = _choices(f, tp)
    parts = [meaning, f"one of: {', '.join(choices)}" if choices else ""]
    text = "; ".join(p for p in parts if p)
    return f"{text} (default: {_default(f)!r})".strip()


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


class BoolFlagAction(argparse.Action):
    """``--flag`` sets True, ``--no-flag`` sets False.

    The old spelling ``--flag VALUE`` (true/false, 1/0, yes/no, on/off) still parses, with one deprecation line
    on stderr; it goes in the next release.
    """

    def __init__(self, option_strings: list[str], dest: str, default: Any = None, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs="?", default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        flag, no_flag = self.option_strings
        if values is None:
            setattr(namespace, self.dest, option_string != no_flag)
            return
        value = _BOOL_WORDS.get(str(values).lower())
        if option_string == no_flag or value is None:
            parser.error(f"argument {option_string}: takes no value (use {flag} or {no_flag}), got {values!r}")
        print(f"gendiff: {flag} {values} is deprecated; use {flag} or {no_flag}", file=sys.stderr)
        setattr(namespace, self.dest, value)


class _BoolFlagHelp(argparse.HelpFormatter):
    """Shows a :class:`BoolFlagAction` as ``--flag, --no-flag`` (no value) in help and usage."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, BoolFlagAction):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if isinstance(action, BoolFlagAction):
            return ""
        return super()._format_args(action, default_metavar)


def _use_bool_flag_help(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` format its boolean flags with :class:`_BoolFlagHelp`, keeping its own formatter's style."""
    base = parser.formatter_class
    if isinstance(base, type) and issubclass(base, argparse.HelpFormatter) and not issubclass(base, _BoolFlagHelp):
        parser.formatter_class = type(f"BoolFlag{base.__name__}", (_BoolFlagHelp, base), {})


def add_bool_flag(parser: argparse.ArgumentParser, flag: str, help_: str, dest: str | None = None,
                  default: bool | None = False) -> None:
    """A boolean option spelled as the config fields are: ``--flag`` (True) and ``--no-flag`` (False).

    ``--flag true|false`` still works for one release, with a deprecation line on stderr (:class:`BoolFlagAction`).
    """
    _use_bool_flag_help(parser)
    no_flag = "--no-" + flag.removeprefix("--")
    dest = dest or flag.removeprefix("--").replace("-", "_")
    parser.add_argument(flag, no_flag, dest=dest, default=default, help=help_.replace("%", "%%"),
                        action=BoolFlagAction)


class DeprecatedFlagAction(argparse.Action):
    """Stores like a plain option, after one :func:`deprecation_line` on stderr naming the flag that replaces it."""

    def __init__(self, option_strings: list[str], dest: str, new_flag: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(deprecation_line(option_string or self.option_strings[0], self.new_flag), file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_renamed_argument(parser: argparse.ArgumentParser, flag: str, old_flags: tuple[str, ...] | list[str],
                         **kwargs: Any) -> None:
    """``parser.add_argument(flag, **kwargs)`` plus each old spelling in ``old_flags`` as a deprecated alias.

    An old flag stores into the same ``dest``, prints :func:`deprecation_line` when used, and is hidden from
    ``--help`` (the new flag's help names it). The new and old flags are mutually exclusive: giving both is an
    argparse error. For the plain argparse scripts too (benchmarks/ads), so that they rename flags as the configs do.
    """
    if not old_flags:
        parser.add_argument(flag, **kwargs)
        return
    dest = kwargs.pop("dest", None) or flag.removeprefix("--").replace("-", "_")
    help_ = kwargs.pop("help", None) or ""
    was = ", ".join(old_flags)
    group = parser.add_mutually_exclusive_group()
    group.add_argument(flag, dest=dest, help=f"{help_} [formerly {was}]".lstrip(), **kwargs)
    for old in old_flags:
        group.add_argument(old, dest=dest, help=argparse.SUPPRESS, action=DeprecatedFlagAction, new_flag=flag,
                           **{k: v for k, v in kwargs.items() if k != "required"})


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config FILE`` and one ``--field-name`` flag per dataclass field (default: unset).

    A boolean field gets ``--field-name`` / ``--no-field-name`` (:func:`add_bool_flag`). Each flag's help shows the
    field's documentation, its allowed values and its default (:func:`field_help`).
    A list / tuple field reads comma-separated values (``--seeds 0,1,2``); one whose field metadata holds
    ``nargs="+"`` reads space-separated values instead (``--runs a b c``, as a shell glob expands).
    A renamed field's old names (``metadata["aliases"]``, not for booleans) are deprecated flags of the same field
    (:func:`add_renamed_argument`).
    """
    parser.add_argument("--config", type=str, default=None, help="YAML file with field: value pairs")
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = field_help(cls, f, types_[f.name])
        old_flags = tuple("--" + old.replace("_", "-") for old in f.metadata.get("aliases", ()))
        if types_[f.name] is bool:
            if old_flags:
                raise TypeError(f"{cls.__name__}.{f.name}: aliases of a boolean field are not supported")
            add_bool_flag(parser, flag, help_, dest=f.name, default=None)
        else:
            nargs = {"nargs": "+"} if f.metadata.get("nargs") == "+" else {}
            add_renamed_argument(parser, flag, old_flags, dest=f.name, default=None, help=help_.replace("%", "%%"),
                                 **nargs)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Resolve defaults <- YAML file <- command-line flags into one ``cls`` instance."""
    cfg = cls()
    if getattr(args, "config", None):
        cfg = from_dict(cls, load_yaml(args.config), cfg)
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return from_dict(cls, flags, cfg)


def to_dict(cfg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def save_config(cfg: Any, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside an experiment's outputs and return its path."""
    from gendiff.io import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2)
