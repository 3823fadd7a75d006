"""The prepared GPU scripts (benchmarks/gpu_*.sh) run end to end on the CPU in their smoke mode.

A GPU is lent to few sessions and for 15 minutes, so a script that fails on a typo or a changed CLI flag wastes
it; these tests run the same code paths at toy sizes (GPU_*_SMOKE=1) and check what each script writes.
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

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the GPU scripts are bash scripts")


def _run_smoke(script: str, flag: str, out: Path) -> str:
    """Run benchmarks/<script> with ``flag``=1 and OUT=out, the current interpreter first on PATH; return stdout."""
    env = dict(os.environ, OUT=str(out), OMP_NUM_THREADS="1", MPLBACKEND="Agg", HF_HUB_OFFLINE="1")
    env[flag] = "1"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / script)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{script} smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (out / "gpu_card.txt").read_text().strip(), "gpu_env.sh wrote no card line"
    return proc.stdout


def test_gpu_gorl_smoke_times_both_decoders(tmp_path: Path) -> None:
    _run_smoke("gpu_gorl.sh", "GPU_GORL_SMOKE", tmp_path)
    out = json.loads((tmp_path / "gpu_gorl.json").read_text())
    assert out["card"] == "CPU smoke" and (out["obs_dim"], out["act_dim"]) == (15, 4)
    rows = {(r["decoder"], r["batch"]): r for r in out["rows"]}
    assert set(rows) == {(d, b) for d in ("FlowDecoder", "DiffusionDecoder") for b in (1, 64)}
    assert rows[("FlowDecoder", 64)]["nfe_per_action"] == 10
    assert all(math.isfinite(r["actions_per_s"]) and r["actions_per_s"] > 0 for r in rows.values())


def test_gpu_pgd_smoke_samples_unguided_and_guided(tmp_path: Path) -> None:
    _run_smoke("gpu_pgd.sh", "GPU_PGD_SMOKE", tmp_path)
    out = json.loads((tmp_path / "gpu_pgd.json").read_text())
    assert out["card"] == "CPU smoke"
    assert [r["mode"] for r in out["rows"]] == ["unguided", "pgd"]
    assert all(r["transitions"] > 0 and r["transitions_per_s"] > 0 for r in out["rows"])


def test_gpu_ads_smoke_compares_every_mask_in_fp32_and_bf16(tmp_path: Path) -> None:
    _run_smoke("gpu_ads.sh", "GPU_ADS_SMOKE", tmp_path)
    fp32 = json.loads((tmp_path / "gpu_ads.json").read_text())
    bf16 = json.loads((tmp_path / "gpu_ads_bf16.json").read_text())
    strategies = {"ads", "equispaced", "random", "fixed_dps", "fastmri_equispaced", "fastmri_random", "data_variance"}
    assert {r["strategy"] for r in fp32["rows"]} == strategies
    assert {r["strategy"] for r in bf16["rows"]} == {"ads", "fixed_dps"}
    assert fp32["config"]["window"] == [0.1, 0.4] and bf16["config"]["precision"] == "bf16"
    assert all(math.isfinite(r["ssim"]) and r["slices_per_second"] > 0 for r in fp32["rows"])
    report = (tmp_path / "gpu_ads.md").read_text()
    assert "Card: no GPU" in report and "bf16 autocast, ads: SSIM" in report


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_script_without_gpu_or_smoke_flag_says_why(tmp_path: Path) -> None:
    env = dict(os.environ, OUT=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("GPU_GORL_SMOKE", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_gorl.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "needs a CUDA GPU (or GPU_GORL_SMOKE=1" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "gpu_gorl.json").exists()
