"""``--help`` of config flags: field docs, allowed values, defaults."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from gendiff.config import add_config_arguments, field_docs


@dataclass
class _Parent:
    steps: int = 50  # DDIM steps per sample
    skips: str = "all"  # the up path: "all" (every skip,
    # as the reference) or "janner"
    plain: int = 3
    # a leading comment: the DDIM noise scale
    eta: float = 0.0


@dataclass
class _Child(_Parent):
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast
    device: Literal["cpu", "cuda"] | None = None
    kinds: list[Literal["a", "b"]] = field(default_factory=lambda: ["a"])
    strategy: str = field(default="ads", metadata={"choices": lambda: {"ads": 1, "random": 2}})
    losses: list[str] = field(default_factory=list, metadata={"choices": ("grpo", "clip_cov")})
    told: int = field(default=1, metadata={"help": "from the metadata"})  # not this comment
    documented: int = 2  # not this comment either
    """the attribute docstring"""
    overwrite: bool = False  # replace an earlier run
    progress: bool = True


def _parser(cls: type = _Child) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t")
    add_config_arguments(parser, cls)
    return parser


def _help(name: str, cls: type = _Child) -> str:
    return next(a.help for a in _parser(cls)._actions if a.dest == name)


def test_help_shows_the_fields_comment_and_default():
    assert _help("steps") == "DDIM steps per sample (default: 50)"
    assert _help("overwrite") == "replace an earlier run (default: False)"


def test_help_joins_a_comment_continued_on_the_next_line_and_reads_leading_comments():
    assert _help("skips") == 'the up path: "all" (every skip, as the reference) or "janner" (default: \'all\')'
    assert _help("eta") == "a leading comment: the DDIM noise scale (default: 0.0)"


def test_inherited_fields_keep_their_parents_docs():
    docs = field_docs(_Child)
    assert docs["steps"] == "DDIM steps per sample" and docs["precision"] == "bf16: autocast"


def test_metadata_help_beats_docstring_beats_comment():
    assert _help("told") == "from the metadata (default: 1)"
    assert _help("documented") == "the attribute docstring (default: 2)"


def test_literal_choices_are_listed():
    assert _help("precision") == "bf16: autocast; one of: fp32, bf16 (default: 'fp32')"
    assert _help("device") == "one of: cpu, cuda (default: None)"
    assert _help("kinds") == "one of: a, b (default: ['a'])"


def test_metadata_choices_are_listed():
    assert _help("strategy") == "one of: ads, random (default: 'ads')"  # a callable returning a registry-like mapping
    assert _help("losses") == "one of: grpo, clip_cov (default: [])"


def test_a_field_without_docs_gets_just_its_default():
    assert _help("plain") == "(default: 3)"


def test_a_class_without_source_gets_no_text():
    made = dataclasses.make_dataclass("Made", [("n", int, 4)])
    assert field_docs(made) == {} and _help("n", made) == "(default: 4)"


def test_mri_benchmark_help_shows_inherited_docs_and_choices():
    from gendiff.mri.cli import MRIBenchmarkConfig

    assert _help("lookahead", MRIBenchmarkConfig).startswith("ADS scores on Tweedie estimates (1, the paper)")
    assert "one of: dps, x0_space" in _help("guidance", MRIBenchmarkConfig)
