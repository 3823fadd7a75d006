"""The prepared GPU scripts (tools/gpu/gpu_*.sh) run end to end on the CPU in their smoke mode.

A GPU is lent to few sessions and for 15 minutes, so a script that fails on a typo, a changed CLI flag or an import
wastes it; these tests run the same code paths at toy sizes (GPU_*_SMOKE=1) and check what each script writes.
They run as on the GPU machine: gendiff from a wheel carried in (GPU_WHEELS), the editable install hidden, and the
repo root as working directory (whose gendiff/ lacks .mri / .offline / .pipelines and must not shadow the wheel).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CARD = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU smoke"  # smoke runs use a GPU if any

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the GPU scripts are bash scripts")

# on PYTHONPATH: drops the editable install's import hook, so gendiff comes from the carried wheel only
_HIDE_EDITABLE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]  # a finder class
sys.path[:] = [p for p in sys.path if "__editable__" not in p]
"""


@pytest.fixture(scope="module")
def gpu_like_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a GPU run: a gendiff wheel in GPU_WHEELS, the editable install hidden, this Python on PATH."""
    root = tmp_path_factory.mktemp("gpu_like")
    wheels, hide = root / "wheels", root / "hide"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True)
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(_HIDE_EDITABLE)
    return {"GPU_WHEELS": str(wheels), "PYTHONPATH": str(hide),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run_smoke(script: str, flag: str, out: Path, gpu_like_env: dict[str, str]) -> None:
    """Run benchmarks/<script> with ``flag``=1 and OUT=out in ``gpu_like_env``; it must succeed."""
    env = dict(os.environ, OUT=str(out), OMP_NUM_THREADS="1", MPLBACKEND="Agg", HF_HUB_OFFLINE="1", **gpu_like_env)
    env[flag] = "1"
    proc = subprocess.run(["bash", str(ROOT / "tools" / "gpu" / script)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{script} smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (out / "gpu_card.txt").read_text().strip(), "gpu_env.sh wrote no card line"


def test_gpu_gorl_smoke_times_both_decoders(tmp_path: Path, gpu_like_env: dict[str, str]) -> None:
    _run_smoke("gpu_gorl.sh", "GPU_GORL_SMOKE", tmp_path, gpu_like_env)
    out = json.loads((tmp_path / "gpu_gorl.json").read_text())
    assert out["card"] == CARD and (out["obs_dim"], out["act_dim"]) == (15, 4)
    rows = {(r["decoder"], r["batch"]): r for r in out["rows"]}
    assert set(rows) == {(d, b) for d in ("FlowDecoder", "DiffusionDecoder") for b in (1, 64)}
    assert rows[("FlowDecoder", 64)]["nfe_per_action"] == 10
    assert all(math.isfinite(r["actions_per_s"]) and r["actions_per_s"] > 0 for r in rows.values())


def test_gpu_pgd_smoke_samples_unguided_and_guided(tmp_path: Path, gpu_like_env: dict[str, str]) -> None:
    _run_smoke("gpu_pgd.sh", "GPU_PGD_SMOKE", tmp_path, gpu_like_env)
    out = json.loads((tmp_path / "gpu_pgd.json").read_text())
    assert out["card"] == CARD
    assert [r["mode"] for r in out["rows"]] == ["unguided", "pgd"]
    assert all(r["transitions"] > 0 and r["transitions_per_s"] > 0 for r in out["rows"])
    assert [r["algo"] for r in out["learners"]] == ["td3bc", "iql", "prdc"]
    assert all(r["updates_per_s"] > 0 for r in out["learners"])


def test_gpu_pgd_width_smoke_trains_each_width_and_samples_back(tmp_path: Path, gpu_like_env: dict[str, str]) -> None:
    _run_smoke("gpu_pgd_width.sh", "GPU_PGD_WIDTH_SMOKE", tmp_path, gpu_like_env)
    out = json.loads((tmp_path / "gpu_pgd_width.json").read_text())
    assert out["card"] == CARD and out["dataset"] == "smoke/random-v0"
    (row,) = out["rows"]
    assert row["width"] == 8 and row["steps"] >= 1 and row["params"] > 0
    assert [(r["sigma"], r["churn"]) for r in row["denoise_back"]] == [
        (0.0, None), (0.2, 80.0), (0.2, 0.0), (1.0, 80.0), (1.0, 0.0), (80.0, 80.0), (80.0, 0.0)]
    assert all(math.isfinite(r["state_nn"]["mean"]) and r["state_nn"]["n"] == 4 * 16 for r in row["denoise_back"])


def test_gpu_ads_smoke_compares_every_mask_in_fp32_and_bf16(tmp_path: Path, gpu_like_env: dict[str, str]) -> None:
    _run_smoke("gpu_ads.sh", "GPU_ADS_SMOKE", tmp_path, gpu_like_env)
    fp32 = json.loads((tmp_path / "gpu_ads.json").read_text())
    bf16 = json.loads((tmp_path / "gpu_ads_bf16.json").read_text())
    strategies = {"ads", "equispaced", "random", "fixed_dps", "fastmri_equispaced", "fastmri_random", "data_variance"}
    assert {r["strategy"] for r in fp32["rows"]} == strategies
    assert {r["strategy"] for r in bf16["rows"]} == {"ads", "fixed_dps"}
    assert fp32["config"]["acquisition_window"] == [0.1, 0.4] and bf16["config"]["precision"] == "bf16"
    assert all(math.isfinite(r["ssim"]) and r["slices_per_second"] > 0 for r in fp32["rows"])
    report = (tmp_path / "gpu_ads.md").read_text()
    assert "bf16 autocast, ads: SSIM" in report
    assert ("Card: no GPU" in report) == (shutil.which("nvidia-smi") is None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_script_without_gpu_or_smoke_flag_says_why(tmp_path: Path) -> None:
    env = dict(os.environ, OUT=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               GPU_WHEELS=str(tmp_path / "no_wheels"))  # not a checkout's .gpu_wheels (Python 3.12 wheels)
    env.pop("GPU_GORL_SMOKE", None)
    proc = subprocess.run(["bash", str(ROOT / "tools" / "gpu" / "gpu_gorl.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "needs a CUDA GPU (or GPU_GORL_SMOKE=1" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "gpu_gorl.json").exists()
