"""Typed configs mirror their YAML files; every sub-command has --help; the CLI reports bad input clearly."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from gendiff.bench import SamplerBenchConfig
from gendiff.cli import build_parser, main
from gendiff.config import from_dict, load_yaml
from gendiff.images import ImagePriorConfig
from gendiff.mri.demo import DemoConfig
from gendiff.mri.prior import MRIPriorConfig
from gendiff.mri.study import ImagesBenchmarkConfig, MRIBenchmarkConfig
from gendiff.mri.synthetic import SyntheticConfig

ROOT = Path(__file__).resolve().parents[1]
MIRRORS = {
    "train_prior.yaml": ImagePriorConfig, "bench_sampler.yaml": SamplerBenchConfig,
    "mri_make_synthetic.yaml": SyntheticConfig, "mri_train_prior.yaml": MRIPriorConfig,
    "mri_benchmark.yaml": MRIBenchmarkConfig, "images_benchmark.yaml": ImagesBenchmarkConfig, "demo.yaml": DemoConfig,
}


@pytest.mark.parametrize("name,cls", sorted(MIRRORS.items()))
def test_yaml_mirrors_dataclass_defaults(name, cls):
    data = load_yaml(ROOT / "configs" / name)
    assert set(data) == {f.name for f in dataclasses.fields(cls)}
    assert from_dict(cls, data) == cls()


def _subcommands(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommands(sub, (*prefix, name))


def test_every_subcommand_has_help(capsys):
    commands = list(_subcommands(build_parser()))
    assert ("mri", "benchmark") in commands and ("images", "benchmark") in commands and ("demo",) in commands
    for cmd in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*cmd, "--help"])
        assert exit_.value.code == 0, cmd
        assert "usage: gendiff" in capsys.readouterr().out


def test_config_file_and_overrides(tmp_path):
    from gendiff.config import config_from_args

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("num_particles: 4\nstrategies: [ads, random]\n")
    parser = build_parser()
    args = parser.parse_args(["mri", "benchmark", "--config", str(cfg_file), "--num-inference-steps", "7",
                              "--acceleration", "4,8"])
    cfg = config_from_args(MRIBenchmarkConfig, args)
    assert (cfg.num_particles, cfg.num_inference_steps, cfg.strategies, cfg.acceleration) == (
        4, 7, ["ads", "random"], [4.0, 8.0])


@pytest.mark.parametrize("command,cls", [(["mri", "benchmark"], MRIBenchmarkConfig),
                                         (["images", "benchmark"], ImagesBenchmarkConfig), (["demo"], DemoConfig)])
def test_the_names_before_the_pipeline_keywords_still_work_for_one_release(tmp_path, capsys, command, cls):
    """particles / steps (window / lookahead) became num_particles / num_inference_steps (acquisition_window /
    lookahead_steps); the old YAML keys and flags still work, each with one deprecation line on stderr."""
    from gendiff.config import config_from_args

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("particles: 4\n")
    capsys.readouterr()
    args = build_parser().parse_args([*command, "--config", str(cfg_file), "--steps", "7"])
    cfg = config_from_args(cls, args)
    assert (cfg.num_particles, cfg.num_inference_steps) == (4, 7)
    assert capsys.readouterr().err.splitlines() == [
        "gendiff: --steps is deprecated (renamed); use --num-inference-steps",
        "gendiff: 'particles' is deprecated (renamed); use 'num_particles'"]
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--steps", "7", "--num-inference-steps", "8"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_config_saved_before_the_renames_still_loads(capsys):
    cfg = from_dict(MRIBenchmarkConfig, load_yaml(ROOT / "benchmarks" / "ads" / "mri32_results_config.yaml"))
    assert cfg.num_particles > 0 and len(cfg.acquisition_window) == 2
    assert "'window' is deprecated (renamed); use 'acquisition_window'" in capsys.readouterr().err


def test_bad_input_is_reported_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("particlez: 3\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [3\n")  # not YAML
    for argv, needle in [
        (["mri", "benchmark", "--config", str(bad)], "unknown MRIBenchmarkConfig field(s) ['particlez']"),
        (["gorl", "train", "--config", str(broken)], f"config file {broken} is not valid YAML"),
        (["llm", "train", "--loss", "clip_cov", "--loss-config", "{clip_ratio: [", "--out", str(tmp_path / "l")],
         "loss_config '{clip_ratio: [' is not valid YAML"),
        (["mri", "benchmark", "--steps", "many"], "expected an integer"),
        (["mri", "benchmark", "--guidance", "magic"], "is not one of"),
        (["mri", "make-synthetic"], "needs --out"),
        (["mri", "benchmark", "--prior", str(tmp_path), "--data", str(tmp_path)], "neither a saved pipeline"),
    ]:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert needle in err and "Traceback" not in err, (argv, err)


def test_the_command_line_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "gendiff.cli", "mri", "make-synthetic"], capture_output=True, text=True)
    assert proc.returncode == 2 and "needs --out" in proc.stderr and "Traceback" not in proc.stderr


def test_llm_spellings_from_before_the_typed_configs_still_parse():
    """``llm entropy-law --runs A B`` (a shell glob) and ``llm train --no-progress`` resolve as they did."""
    from gendiff.config import config_from_args
    from gendiff.llm.entropy_law import EntropyLawConfig
    from gendiff.llm.run import LLMRunConfig

    parser = build_parser()
    law = config_from_args(EntropyLawConfig, parser.parse_args(["llm", "entropy-law", "--runs", "a", "b", "--out", "x"]))
    assert law.runs == ("a", "b") and law.out == "x"
    train = parser.parse_args(["llm", "train", "--out", "r", "--no-progress"])
    assert config_from_args(LLMRunConfig, train).progress is False
    assert config_from_args(LLMRunConfig, parser.parse_args(["llm", "train", "--out", "r"])).progress is True


def test_bench_sampler_runs_at_a_tiny_size(tmp_path):
    """``gendiff bench sampler`` end to end: both JSON and markdown written, and refused again without --overwrite."""
    argv = ["bench", "sampler", "--out-dir", str(tmp_path), "--unet", "tiny", "--size", "16", "--batch", "2",
            "--steps", "2", "--repeats", "1"]
    assert main(argv) == 0
    assert (tmp_path / "sampler.json").stat().st_size > 0 and (tmp_path / "sampler.md").stat().st_size > 0
    assert main(argv) == 2  # an existing result is not replaced silently
