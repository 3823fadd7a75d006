"""``--help`` of config flags (field docs, allowed values, defaults) and the ``--flag`` / ``--no-flag`` booleans."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from gendiff.config import (
    add_bool_flag,
    add_config_arguments,
    add_renamed_argument,
    config_from_args,
    field_docs,
    from_dict,
    rename_aliases,
)


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
    strategy: str = field(default="ads",  # a field over two lines
                          metadata={"choices": lambda: {"ads": 1, "random": 2}})
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
    # a callable returning a registry-like mapping
    assert _help("strategy") == "a field over two lines; one of: ads, random (default: 'ads')"
    assert _help("losses") == "one of: grpo, clip_cov (default: [])"


def test_a_field_without_docs_gets_just_its_default():
    assert _help("plain") == "(default: 3)"


def test_a_class_without_source_gets_no_text():
    made = dataclasses.make_dataclass("Made", [("n", int, 4)])
    assert field_docs(made) == {} and _help("n", made) == "(default: 4)"


def test_mri_benchmark_help_shows_inherited_docs_and_choices():
    from gendiff.mri.study import MRIBenchmarkConfig

    assert _help("lookahead_steps", MRIBenchmarkConfig).startswith("ADS scores on Tweedie estimates (1, the paper)")
    assert "one of: dps, x0_space" in _help("guidance", MRIBenchmarkConfig)


def test_bool_fields_are_flag_and_no_flag():
    parser = _parser()
    assert config_from_args(_Child, parser.parse_args(["--overwrite"])).overwrite is True
    assert config_from_args(_Child, parser.parse_args(["--no-progress"])).progress is False
    cfg = config_from_args(_Child, parser.parse_args([]))
    assert (cfg.overwrite, cfg.progress) == (False, True)
    assert "--overwrite, --no-overwrite" in parser.format_help() and "[--overwrite]" in parser.format_usage()


def test_bool_flags_do_not_override_the_yaml_file_unless_given(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("overwrite: true\nprogress: false\n")
    parser = _parser()
    cfg = config_from_args(_Child, parser.parse_args(["--config", str(cfg_file)]))
    assert (cfg.overwrite, cfg.progress) == (True, False)
    cfg = config_from_args(_Child, parser.parse_args(["--config", str(cfg_file), "--no-overwrite", "--progress"]))
    assert (cfg.overwrite, cfg.progress) == (False, True)


def test_the_old_spelling_still_works_and_warns(capsys):
    parser = _parser()
    capsys.readouterr()
    assert config_from_args(_Child, parser.parse_args(["--progress", "false"])).progress is False
    assert capsys.readouterr().err == "gendiff: --progress false is deprecated; use --progress or --no-progress\n"
    assert config_from_args(_Child, parser.parse_args(["--overwrite", "yes"])).overwrite is True
    assert "--overwrite yes is deprecated" in capsys.readouterr().err


def test_a_value_that_is_no_boolean_or_after_no_flag_is_an_error(capsys):
    parser = _parser()
    for argv in (["--overwrite", "maybe"], ["--no-overwrite", "true"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert "--overwrite or --no-overwrite" in capsys.readouterr().err


def test_add_bool_flag_follows_the_same_convention(capsys):
    parser = argparse.ArgumentParser(prog="t")
    add_bool_flag(parser, "--partial-credit", "reward partly correct digits")
    assert parser.parse_args([]).partial_credit is False
    assert parser.parse_args(["--partial-credit"]).partial_credit is True
    assert parser.parse_args(["--no-partial-credit"]).partial_credit is False
    capsys.readouterr()
    assert parser.parse_args(["--partial-credit", "true"]).partial_credit is True
    assert "--partial-credit true is deprecated" in capsys.readouterr().err
    assert "--partial-credit, --no-partial-credit" in parser.format_help()


def test_registry_backed_fields_list_the_registrys_names():
    from gendiff.mri.demo import DemoConfig
    from gendiff.mri.strategies import ACQUISITION

    assert f"one of: {', '.join(ACQUISITION.names())}" in _help("strategies", DemoConfig)
    assert "one of: dps, zero_filled, cs_tv, cs_wavelet" in _help("reconstructors", DemoConfig)


@dataclass
class _Renamed:
    num_inference_steps: int = field(default=50, metadata={"aliases": ("steps",)})  # DDIM steps
    acquisition_window: list[float] = field(default_factory=lambda: [0.0, 0.5], metadata={"aliases": ("window",)})
    seed: int = 0


def test_an_old_field_name_still_reads_from_yaml_with_one_deprecation_line(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("steps: 7\nwindow: [0.1, 0.4]\n")
    capsys.readouterr()
    cfg = config_from_args(_Renamed, _parser(_Renamed).parse_args(["--config", str(cfg_file)]))
    assert (cfg.num_inference_steps, cfg.acquisition_window) == (7, [0.1, 0.4])
    assert capsys.readouterr().err.splitlines() == [
        "gendiff: 'steps' is deprecated (renamed); use 'num_inference_steps'",
        "gendiff: 'window' is deprecated (renamed); use 'acquisition_window'"]


def test_an_old_flag_still_parses_into_the_renamed_field_with_one_deprecation_line(capsys):
    capsys.readouterr()
    cfg = config_from_args(_Renamed, _parser(_Renamed).parse_args(["--steps", "7", "--window", "0.1,0.4"]))
    assert (cfg.num_inference_steps, cfg.acquisition_window) == (7, [0.1, 0.4])
    assert capsys.readouterr().err.splitlines() == [
        "gendiff: --steps is deprecated (renamed); use --num-inference-steps",
        "gendiff: --window is deprecated (renamed); use --acquisition-window"]


def test_the_new_name_needs_no_alias_and_the_old_flag_is_hidden_from_help(capsys):
    parser = _parser(_Renamed)
    capsys.readouterr()
    assert config_from_args(_Renamed, parser.parse_args(["--num-inference-steps", "9"])).num_inference_steps == 9
    assert capsys.readouterr().err == ""
    text = parser.format_help()
    assert "--num-inference-steps" in text and "[formerly --steps]" in text and "--steps " not in text


def test_old_and_new_name_together_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _parser(_Renamed).parse_args(["--steps", "7", "--num-inference-steps", "8"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ValueError, match="both 'steps' .* and 'num_inference_steps'"):
        from_dict(_Renamed, {"steps": 7, "num_inference_steps": 8})


def test_a_yaml_old_name_and_a_new_flag_are_two_layers_the_flag_wins(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("steps: 7\n")
    args = _parser(_Renamed).parse_args(["--config", str(cfg_file), "--num-inference-steps", "8"])
    assert config_from_args(_Renamed, args).num_inference_steps == 8


def test_rename_aliases_reads_old_records_quietly(capsys):
    capsys.readouterr()
    assert rename_aliases(_Renamed, {"steps": 3, "seed": 1}, warn=False) == {"num_inference_steps": 3, "seed": 1}
    assert capsys.readouterr().err == ""


def test_add_renamed_argument_serves_plain_argparse_scripts(capsys):
    parser = argparse.ArgumentParser(prog="t")
    add_renamed_argument(parser, "--num-particles", ("--particles",), type=int, default=8)
    assert parser.parse_args([]).num_particles == 8
    capsys.readouterr()
    assert parser.parse_args(["--particles", "3"]).num_particles == 3
    assert capsys.readouterr().err == "gendiff: --particles is deprecated (renamed); use --num-particles\n"
