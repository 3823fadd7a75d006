"""How a ``gendiff`` sub-command is declared: one typed config dataclass and one run function.

Application folders (gendiff.mri, gendiff.offline, gendiff.rl, gendiff.llm) build their command groups with these
helpers; the front door (gendiff/cli.py) only calls their ``add_*_commands`` functions, so nothing imports back into
it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from gendiff.config import add_config_arguments, config_from_args


def launched_processes() -> int:
    """How many processes the launch that started this one has (``accelerate launch`` and torchrun set WORLD_SIZE);
    1 without a launcher."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


MULTIPROCESS_COMMANDS: list[str] = []  # the commands declared with multiprocess=True, in declaration order


def _single_process_only(command: str) -> None:
    """ValueError under a launch of several processes: each would repeat the whole command on the same files."""
    n = launched_processes()
    if n > 1:
        names = ", ".join(c.removeprefix("gendiff ") for c in MULTIPROCESS_COMMANDS)
        raise ValueError(f"`{command}` runs in one process; under this launch of {n} processes each would repeat it "
                         "and write the same files. Run it without `accelerate launch` (several seeds: several "
                         f"plain processes). Commands that split their work over processes: {names} "
                         "(README, 'Scaling out')")


def add_experiment(
    subparsers: argparse._SubParsersAction, name: str, cls: type, run: Callable[[Any], Any], help_: str,
    multiprocess: bool = False,
) -> argparse.ArgumentParser:
    """A sub-command that takes one typed config (``--config FILE`` + ``--field value`` overrides).

    Args:
        subparsers: the group to add the command to (``parser.add_subparsers(...)``).
        name: the command's name (``gendiff GROUP NAME``).
        cls: the config dataclass; every field becomes a ``--field-name`` flag.
        run: called with the resolved ``cls`` instance; an int it returns is the exit status.
        help_: one line for ``--help`` (argparse's ``%`` escaping applies).
        multiprocess: the command splits its work over the processes of an ``accelerate launch`` (one writer,
            gathered results; tested in tests/test_multiprocess_training.py). Otherwise a launch of several
            processes is refused with a clear error before any work.

    The parsed namespace carries ``_run`` (resolve the config, then run) and ``_config`` (the dataclass, for tools
    that only resolve, such as the test that checks every command in README.md).
    """
    parser = subparsers.add_parser(name, help=help_, description=help_.replace("%%", "%"))
    add_config_arguments(parser, cls)
    command = parser.prog  # "gendiff GROUP NAME"
    if multiprocess and command not in MULTIPROCESS_COMMANDS:
        MULTIPROCESS_COMMANDS.append(command)

    def _run(args: argparse.Namespace) -> Any:
        cfg = config_from_args(cls, args)
        if not multiprocess:
            _single_process_only(command)
        return run(cfg)

    parser.set_defaults(_run=_run, _config=cls)
    return parser


def add_group(subparsers: argparse._SubParsersAction, name: str, help_: str) -> argparse._SubParsersAction:
    """A command group (``gendiff NAME ...``) whose sub-commands are added with :func:`add_experiment`."""
    group = subparsers.add_parser(name, help=help_, description=help_)
    return group.add_subparsers(dest=f"{name.replace('-', '_')}_command", required=True)
