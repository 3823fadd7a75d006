"""Typed experiment configs: one ``@dataclass`` per entry point, mirrored by a YAML file in configs/.

Each default lives in the dataclass. A YAML file (read with ``yaml.safe_load``) overrides some
fields, and command-line flags (``--field-name value``) override both. Unknown keys and values of
the wrong type raise errors that name the field. The resolved config is written beside the outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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


def from_dict(cls: type[C], data: dict[str, Any], base: C | None = None) -> C:
    """Build ``cls`` from ``data`` on top of ``base`` (or the defaults); unknown keys raise."""
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


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; a missing file, bad YAML or a non-mapping raises clearly."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {path} is a folder, not a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    return parse_yaml_mapping(path.read_text(), f"config file {path}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config FILE`` and one ``--field-name`` flag per dataclass field (default: unset).

    A list / tuple field reads comma-separated values (``--seeds 0,1,2``); one whose field metadata holds
    ``nargs="+"`` reads space-separated values instead (``--runs a b c``, as a shell glob expands).
    """
    parser.add_argument("--config", type=str, default=None, help="YAML file with field: value pairs")
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_ = (f.metadata.get("help", "") + f" (default: {default!r})").strip()
        bare = {"nargs": "?", "const": "true"} if types_[f.name] is bool else {}  # a bare --overwrite means true
        if f.metadata.get("nargs") == "+":
            bare = {"nargs": "+"}
        parser.add_argument(flag, dest=f.name, default=None, help=help_.replace("%", "%%"), **bare)


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
