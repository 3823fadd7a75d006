"""Every ``gendiff ...`` command in README.md parses and resolves to a valid config, and every sub-command it uses is
run at tiny settings by some test (``main([...])`` in tests/), so a renamed flag or a dropped command fails here."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from gendiff.cli import build_parser
from gendiff.config import config_from_args

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    """The argv of each ``gendiff`` line in README.md's bash blocks (continuations joined, comments dropped; also
    ``accelerate launch ... -m gendiff ...``) and of each inline ``gendiff ...`` span."""
    text = (ROOT / "README.md").read_text()
    found: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            while argv and "=" in argv[0] and not argv[0].startswith("-"):  # VAR=value prefixes
                argv = argv[1:]
            if argv[:1] == ["gendiff"]:
                found.append(argv[1:])
            elif argv[:2] == ["accelerate", "launch"] and "-m" in argv and argv[argv.index("-m") + 1:][:1] == ["gendiff"]:
                found.append(argv[argv.index("-m") + 2 :])  # accelerate launch ... -m gendiff <command>
    for span in re.findall(r"`(gendiff [^`<]+)`", text):  # not the `gendiff <group> <command> --help` pattern
        found.append(shlex.split(span.replace("\n", " "))[1:])
    return found


def _subcommand(argv: list[str]) -> tuple[str, ...]:
    """The command path of ``argv`` (e.g. ("mri", "benchmark")): the leading words that name sub-parsers."""
    path, words = [], list(argv)
    while words and not words[0].startswith("-"):
        path.append(words.pop(0))
    return tuple(path)


RUNNERS = {"main", "_run"}  # how tests run a command in-process: gendiff.cli.main(argv) or a parser's args._run(args)


def _call_name(node: ast.Call) -> str | None:
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)


def _leading_words(node: ast.List) -> list[str]:
    words = []
    for el in node.elts:
        if not (isinstance(el, ast.Constant) and isinstance(el.value, str)) or el.value.startswith("-"):
            break
        words.append(el.value)
    return words


def commands_run_by_tests() -> set[tuple[str, ...]]:
    """Command paths that tests run: in a test function that runs a command (calls main or ``_run``), the leading
    words of each list literal given to main / ``_run`` / ``parse_args``, directly or through a variable assigned in
    the same function (``argv = [...]; args = parser.parse_args(argv); args._run(args)``)."""
    out: set[tuple[str, ...]] = set()
    for f in (ROOT / "tests").rglob("*.py"):
        for fn in ast.walk(ast.parse(f.read_text())):
            if not isinstance(fn, ast.FunctionDef):
                continue
            calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call)]
            if not any(_call_name(c) in RUNNERS for c in calls):
                continue
            lists, passed = [], set()
            for c in calls:
                if _call_name(c) in RUNNERS | {"parse_args"} and c.args:
                    if isinstance(c.args[0], ast.List):
                        lists.append(c.args[0])
                    elif isinstance(c.args[0], ast.Name):
                        passed.add(c.args[0].id)
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.List) and any(
                        isinstance(t, ast.Name) and t.id in passed for t in node.targets):
                    lists.append(node.value)
            for node in lists:
                words = _leading_words(node)
                out.update(tuple(words[:k]) for k in range(1, len(words) + 1))
    return out


COMMANDS = readme_commands()


def test_readme_has_the_commands_it_documents():
    paths = {_subcommand(a) for a in COMMANDS}
    assert len(COMMANDS) >= 20 and {("mri", "benchmark"), ("offline", "train-agent"), ("llm", "train")} <= paths


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a[:2]) for a in COMMANDS])
def test_each_readme_command_parses_to_a_valid_config(argv):
    args = build_parser().parse_args(argv)
    assert args._config is not None
    config_from_args(args._config, args)  # types, choices and ranges checked as the real run would


def test_each_readme_command_is_run_by_a_test():
    missing = sorted({_subcommand(a) for a in COMMANDS} - commands_run_by_tests())
    assert not missing, f"README commands no test runs: {missing}"
