"""Same seed, same weights: every training command run twice gives identical saved weights (CPU, tiny sizes).

The two runs share one process and start from different global random states: a command that builds anything
random before setting its seed (issue 32: the U-Net of train-prior) gives other weights.
benchmarks/reliability/battery.py repeats this across processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gendiff.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _same(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert sorted(wa) == sorted(wb) and len(wa) > 0
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _twice(tmp_path: Path, argv: list[str], weights: str, out_is_file: bool = False) -> None:
    for i in (1, 2):
        torch.manual_seed(1000 + i)  # each run starts from another global random state
        out = tmp_path / f"run{i}"
        assert main([*argv, str(out / "results.json" if out_is_file else out)]) == 0
    _same(tmp_path / "run1" / weights, tmp_path / "run2" / weights)


@pytest.fixture
def minari_dataset(tmp_path, monkeypatch) -> str:
    from gendiff.offline.datasets import make_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    make_dataset("Hopper-v5", "random", 300, "t/seed/random-v0")
    return "t/seed/random-v0"


def test_mri_train_prior(tmp_path):
    from gendiff.mri.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", volumes=1, slices=4, size=32)
    _twice(tmp_path, ["mri", "train-prior", "--data", str(tmp_path / "data"), "--size", "16", "--steps", "3",
                      "--batch-size", "4", "--out"], "model/diffusion_pytorch_model.safetensors")


def test_image_train_prior(tmp_path):
    _twice(tmp_path, ["train-prior", "--data", "digits", "--size", "8", "--steps", "3", "--batch-size", "8", "--out"],
           "model/diffusion_pytorch_model.safetensors")


def test_offline_train_diffusion(tmp_path, minari_dataset):
    _twice(tmp_path, ["offline", "train-diffusion", "--dataset-id", minari_dataset, "--horizon", "8", "--stride", "4",
                      "--dim", "8", "--dim-mults", "1,2", "--train-steps", "3", "--batch-size", "8", "--no-progress",
                      "--out-dir"], "pipeline/unet/diffusion_pytorch_model.safetensors")


def test_offline_train_agent_with_synthetic_data(tmp_path, minari_dataset):
    _twice(tmp_path, ["offline", "train-agent", "--dataset-id", minari_dataset, "--synthetic", "unguided", "--steps",
                      "10", "--batch-size", "32", "--real-per-batch", "16", "--diffusion-train-steps", "2", "--horizon",
                      "8", "--sample-horizon", "8", "--num-inference-steps", "2", "--num-synthetic", "32",
                      "--eval-every", "0", "--eval-episodes", "1", "--no-progress", "--out"],
           "results.safetensors", out_is_file=True)


def test_gorl_train(tmp_path):
    (tmp_path / "gorl.yaml").write_text("stage_steps: 64\nrecent_steps: 128\ndecoder_fit_steps: 3\n"
                                        "decoder_width: 16\ndecoder_depth: 1\ndecoder_batch_size: 16\n")
    (tmp_path / "ppo.yaml").write_text("num_envs: 2\nnum_steps: 32\nnum_minibatches: 2\nupdate_epochs: 1\n")
    _twice(tmp_path, ["gorl", "train", "--env", "gendiff/TwoModes-v0", "--algo", "gorl_fm", "--steps", "128",
                      "--gorl-config", str(tmp_path / "gorl.yaml"), "--ppo-config", str(tmp_path / "ppo.yaml"),
                      "--eval-every", "64", "--eval-episodes", "1", "--final-eval-episodes", "1", "--no-progress",
                      "--out"], "model/model.safetensors")


def test_llm_train(tmp_path):
    _twice(tmp_path, ["llm", "train", "--sft-steps", "4", "--steps", "2", "--group-size", "4", "--prompts-per-step",
                      "2", "--max-new-tokens", "4", "--lr", "1e-3", "--no-progress", "--out"],
           "final/model.safetensors")


def test_llm_train_resumed_equals_straight(tmp_path):
    """2 steps, then --resume to 4, give the weights of 4 steps straight (optimizer and random states saved)."""
    argv = ["llm", "train", "--sft-steps", "4", "--group-size", "4", "--prompts-per-step", "2", "--max-new-tokens",
            "4", "--lr", "1e-3", "--checkpoint-every", "2", "--no-progress", "--out"]
    assert main([*argv, str(tmp_path / "straight"), "--steps", "4"]) == 0
    assert main([*argv, str(tmp_path / "resumed"), "--steps", "2"]) == 0
    assert main([*argv, str(tmp_path / "resumed"), "--steps", "4", "--resume"]) == 0
    _same(tmp_path / "straight" / "final" / "model.safetensors", tmp_path / "resumed" / "final" / "model.safetensors")
