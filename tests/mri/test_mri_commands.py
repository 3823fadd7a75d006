"""Smoke runs of the MRI / images commands and the demo, at tiny sizes (real files, real models)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from gendiff.cli import main


def test_make_synthetic_train_prior_benchmark(tmp_path):
    data, test, prior = tmp_path / "train", tmp_path / "test", tmp_path / "prior"
    assert main(["mri", "make-synthetic", "--out", str(data), "--volumes", "1", "--slices", "4", "--size", "32"]) == 0
    assert main(["mri", "make-synthetic", "--out", str(test), "--volumes", "1", "--slices", "2", "--size", "32",
                 "--seed", "5"]) == 0
    # the same files again: refused, nothing overwritten
    assert main(["mri", "make-synthetic", "--out", str(data), "--volumes", "1", "--slices", "4", "--size", "32"]) == 2
    assert main(["mri", "train-prior", "--data", str(data), "--out", str(prior), "--size", "16", "--steps", "3",
                 "--batch-size", "4", "--checkpoint-every", "2"]) == 0
    assert (prior / "model" / "diffusion_pytorch_model.safetensors").exists() and (prior / "config.yaml").exists()
    sched = json.loads((prior / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction"  # the default; benchmark below samples with it
    eps = tmp_path / "prior_eps"
    assert main(["mri", "train-prior", "--data", str(data), "--out", str(eps), "--size", "16", "--steps", "2",
                 "--batch-size", "4", "--prediction", "epsilon"]) == 0
    assert json.loads((eps / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "epsilon"
    assert main(["mri", "train-prior", "--data", str(data), "--out", str(tmp_path / "bad"), "--size", "16",
                 "--steps", "2", "--prediction", "x1"]) == 2  # unknown prediction type: a clear error
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "res" / "results.json"
    assert main(["mri", "benchmark", "--prior", str(prior), "--data", str(test), "--out", str(out),
                 "--acceleration", "4", "--strategies", "ads,equispaced,fastmri_random,data_variance",
                 "--train-data", str(data), "--slices", "2", "--num-particles", "2", "--num-inference-steps", "4",
                 "--no-progress"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["ads", "equispaced", "fastmri_random", "data_variance"]
    # SSIM lies in [-1, 1]: a 3-step prior reconstructs noise, whose SSIM is near 0 and can be negative
    assert all(math.isfinite(r["ssim"]) and -1 <= r["ssim"] <= 1 and r["nfe_per_slice"] == 8 for r in rows)
    assert "ads_minus_ssim_ci95" in rows[1]
    # mask x reconstructor: every mask (ADS's final ones too) reconstructed classically as well; no DPS run for
    # a fixed mask whose DPS row is not asked for, and its masks are the very masks the DPS run draws
    both = tmp_path / "res" / "both.json"
    assert main(["mri", "benchmark", "--prior", str(prior), "--data", str(test), "--out", str(both),
                 "--acceleration", "4", "--strategies", "ads,fastmri_random,centre", "--slices", "2",
                 "--num-particles", "2", "--num-inference-steps", "4", "--reconstructors", "zero_filled,cs_tv",
                 "--cs-iterations", "5", "--no-progress"]) == 0
    got = [(r["strategy"], r["reconstructor"]) for r in json.loads(both.read_text())["rows"]]
    assert got == [("ads", "dps"), ("ads", "zero_filled"), ("ads", "cs_tv"), ("fastmri_random", "zero_filled"),
                   ("fastmri_random", "cs_tv"), ("centre", "zero_filled"), ("centre", "cs_tv")]
    zf = {r["strategy"]: r for r in json.loads(both.read_text())["rows"] if r["reconstructor"] == "zero_filled"}
    dps_rows = {r["strategy"]: r for r in rows}
    assert zf["fastmri_random"]["ssim"] == pytest.approx(dps_rows["fastmri_random"]["zero_filled_ssim"])
    assert main(["mri", "benchmark", "--prior", str(prior), "--data", str(test), "--out", str(both),
                 "--reconstructors", "dps,sense"]) == 2  # unknown reconstructor: a clear error
    assert out.with_suffix(".md").exists() and (out.parent / "results_budget4.png").exists()
    assert main(["mri", "benchmark", "--prior", str(prior), "--data", str(test), "--out", str(out),
                 "--acceleration", "0.5"]) == 2  # impossible acceleration: a clear error
    # bf16 autocast over the sampler (the GPU script's setting): runs, float32 metrics, recorded
    bf = tmp_path / "res" / "bf16.json"
    assert main(["mri", "benchmark", "--prior", str(prior), "--data", str(test), "--out", str(bf),
                 "--acceleration", "4", "--strategies", "ads,random", "--slices", "2", "--num-particles", "2",
                 "--num-inference-steps", "4", "--precision", "bf16", "--no-progress"]) == 0
    payload = json.loads(bf.read_text())
    assert payload["config"]["precision"] == "bf16" and all(math.isfinite(r["ssim"]) for r in payload["rows"])
    assert main(["mri", "benchmark", "--prior", str(prior), "--data", str(test), "--out", str(bf),
                 "--precision", "fp8"]) == 2  # unknown precision: a clear error


def test_benchmarks_refuse_a_bad_strategy_or_budget_before_reconstructing(tmp_path, capsys, monkeypatch):
    """A typo in the last strategy, or one impossible budget among good ones, fails before the first run."""
    import gendiff.mri.study as mri_study

    runs = []
    monkeypatch.setattr(mri_study, "run_strategy", lambda *a, **k: runs.append(a) or pytest.fail("ran a strategy"))
    prior = Path(__file__).resolve().parents[2] / "gendiff" / "assets" / "mri_prior_32"
    test = tmp_path / "test"
    assert main(["mri", "make-synthetic", "--out", str(test), "--volumes", "1", "--slices", "2", "--size", "32"]) == 0
    out = tmp_path / "res" / "results.json"
    assert main(["mri", "benchmark", "--prior", str(prior), "--data", str(test), "--out", str(out),
                 "--acceleration", "4", "--strategies", "ads,equispaced,bogus"]) == 2
    assert "unknown acquisition strategy 'bogus'" in capsys.readouterr().err
    assert main(["images", "benchmark", "--prior", str(prior), "--data", "digits", "--measurement", "column",
                 "--budgets", "2,999", "--out", str(out)]) == 2
    assert "impossible budget 999" in capsys.readouterr().err
    assert runs == [] and not out.parent.exists()


def test_image_prior_and_images_benchmark(tmp_path):
    prior = tmp_path / "digits"
    assert main(["train-prior", "--data", "digits", "--out", str(prior), "--size", "8", "--steps", "3",
                 "--batch-size", "8", "--unet", "tiny"]) == 0
    out = tmp_path / "img.json"
    assert main(["images", "benchmark", "--prior", str(prior), "--data", "digits", "--measurement", "column",
                 "--budgets", "2", "--slices", "2", "--num-particles", "2", "--num-inference-steps", "3",
                 "--out", str(out), "--no-progress"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["strategy"] for r in rows} == {"ads", "random", "data_variance"}


def test_demo_runs_with_the_shipped_prior(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--volumes", "1", "--slices", "2", "--num-particles", "2",
                 "--num-inference-steps", "4", "--train-volumes", "1"]) == 0
    payload = json.loads((out / "results.json").read_text())
    strategies = ["ads", "data_variance", "centre", "fixed_dps", "random"]
    assert [(r["strategy"], r["reconstructor"]) for r in payload["rows"]] == [
        (s, rec) for s in strategies for rec in ("dps", "cs_tv")]
    assert (out / "results_budget8.png").exists()


def test_the_64x64_study_prior_ships_and_reconstructs(tmp_path):
    """benchmarks/ads/priors/mri64v6k (the prior of the 64x64 studies) is in the repo and runs ADS at 4x."""
    prior = Path(__file__).resolve().parents[2] / "benchmarks" / "ads" / "priors" / "mri64v6k"
    cfg = yaml.safe_load((prior / "config.yaml").read_text())
    assert (cfg["size"], cfg["unet"], cfg["steps"], cfg["prediction"]) == (64, "tiny", 6000, "v_prediction")
    data, out = tmp_path / "data", tmp_path / "bench.json"
    assert main(["mri", "make-synthetic", "--out", str(data), "--volumes", "1", "--slices", "1", "--size", "128"]) == 0
    assert main(["mri", "benchmark", "--prior", str(prior), "--data", str(data), "--acceleration", "4",
                 "--slices", "1", "--num-particles", "2", "--num-inference-steps", "3",
                 "--strategies", "ads,equispaced", "--out", str(out), "--no-progress"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["lines_measured_mean"] for r in rows] == [16.0, 16.0]  # 64 lines / 4
    assert all(math.isfinite(r["ssim"]) and math.isfinite(r["psnr"]) for r in rows)
