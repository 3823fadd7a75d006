"""How a ``gendiff`` sub-command is declared: one typed config dataclass and one run function.

Application folders (gendiff.mri, gendiff.offline, gendiff.rl, gendiff.llm) build their command groups with these
helpers; the front door (gendiff/cli.py) only calls their ``add_*_commands`` functions, so nothing imports back into
it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from gendiff.config import add_config_arguments, config_from_args


def add_experiment(
    subparsers: argparse._SubParsersAction, name: str, cls: type, run: Callable[[Any], Any], help_: str,
) -> argparse.ArgumentParser:
    """A sub-command that takes one typed config (``--config FILE`` + ``--field value`` overrides).

    Args:
        subparsers: the group to add the command to (``parser.add_subparsers(...)``).
        name: the command's name (``gendiff GROUP NAME``).
        cls: the config dataclass; every field becomes a ``--field-name`` flag.
        run: called with the resolved ``cls`` instance; an int it returns is the exit status.
        help_: one line for ``--help`` (argparse's ``%`` escaping applies).

    The parsed namespace carries ``_run`` (resolve the config, then run) and ``_config`` (the dataclass, for tools
    that only resolve, such as the test that checks every command in README.md).
    """
    parser = subparsers.add_parser(name, help=help_, description=help_.replace("%%", "%"))
    add_config_arguments(parser, cls)
    parser.set_defaults(_run=lambda args: run(config_from_args(cls, args)), _config=cls)
    return parser


def add_group(subparsers: argparse._SubParsersAction, name: str, help_: str) -> argparse._SubParsersAction:
    """A command group (``gendiff NAME ...``) whose sub-commands are added with :func:`add_experiment`."""
    group = subparsers.add_parser(name, help=help_, description=help_)
    return group.add_subparsers(dest=f"{name.replace('-', '_')}_command", required=True)
