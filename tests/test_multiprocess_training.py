"""The training commands under ``accelerate launch`` with two CPU processes (gloo), against one process.

``TrainConfig.batch_size`` is the global batch and every process draws the same indices and noise for the whole
batch (gendiff/training.py), so two processes must give the weights one process gives, up to the order of float
additions (the gradient all-reduce adds two shard gradients where one process sums the batch). Tolerance, after
4-40 AdamW steps: every weight within one AdamW step (the lr: where a gradient is ~0 its sign is decided by rounding
and Adam moves that weight by up to lr either way), and the distance between the two runs' weights (L2) below 1 %
of the distance to a one-process run with another seed, the size of a real difference. Measured: train-prior
largest 1.4e-6; mri train-prior 5 of 267,602 weights above 1e-6, the largest 2.0e-5; train-diffusion 69 of 24,064,
the largest 1.4e-4, L2 3.4e-4 (AMD EPYC).

train-diffusion's tiny TemporalUNet1D (dim 8, 8 groups) has nine conv biases that feed a GroupNorm with one channel
per group: the norm subtracts them again, so their exact gradient is zero and what autograd returns is rounding
noise, which AdamW scales up to a step of ~lr in a direction rounding alone decides, every step. Those nine are not
the model's: any change of summation order moves them (on an Intel Xeon one process with 1 vs 2 threads ends
2.1e-4 apart there, two processes 2.1e-4) while the other 24,055 weights end within 5.7e-6 / 5.6e-7. They are held
out of the per-weight bound (`_gradient_free`), and the two runs' denoiser outputs must agree (they do not depend on
those biases). Each two-process launch costs ~10-20 s (two Python start-ups); the single-process runs are in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gendiff.checkpoints import list_checkpoints
from gendiff.cli import main
from gendiff.models.temporal_unet import TemporalUNet1D

sys.path.insert(0, str(Path(__file__).parent))
from multiproc import launch, launch_command, launch_env  # noqa: E402

pytestmark = [pytest.mark.multiprocess, pytest.mark.filterwarnings("ignore::UserWarning")]
UNET = "model/diffusion_pytorch_model.safetensors"
ROOT = Path(__file__).resolve().parents[1]
LR = 2e-4  # the three commands' learning rate in these tests (train-diffusion: set with --lr)


def _weights(path: Path, skip: frozenset[str] = frozenset()) -> torch.Tensor:
    w = load_file(str(path))
    assert len(w) > 0 and skip <= set(w), sorted(skip - set(w))
    return torch.cat([w[k].flatten() for k in sorted(w) if k not in skip])


def _same(one: Path, two: Path, other_seed: Path, skip: frozenset[str] = frozenset()) -> None:
    """``two`` equals ``one`` up to rounding (module docstring), measured against a run with another seed; the
    weights named in ``skip`` (gradient-free, see ``_gradient_free``) are left out of the comparison."""
    a, b, c = (_weights(p, skip) for p in (one, two, other_seed))
    largest, apart, real = float((a - b).abs().max()), float((a - b).norm()), float((a - c).norm())
    assert largest < LR and apart < 0.01 * real, (largest, apart, real)


def _gradient_free(model: torch.nn.Module) -> frozenset[str]:
    """Names of the conv biases whose exact gradient is zero: a Conv1d followed by a GroupNorm with one channel per
    group, which subtracts each channel's mean and with it the bias (module docstring)."""
    return frozenset(
        f"{name}.0.bias" for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Sequential) and len(mod) > 1 and isinstance(mod[0], torch.nn.Conv1d)
        and isinstance(mod[1], torch.nn.GroupNorm) and mod[1].num_groups == mod[1].num_channels
    )


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _log_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]


def _image_prior(out: Path, seed: int = 0, steps: int = 6) -> list[str]:
    return ["train-prior", "--data", "digits", "--size", "8", "--steps", str(steps), "--batch-size", "8",
            "--checkpoint-every", "3", "--seed", str(seed), "--out", str(out)]


def test_train_prior_two_processes_equal_one(tmp_path):
    assert main(_image_prior(tmp_path / "one")) == 0
    assert main(_image_prior(tmp_path / "other_seed", seed=1)) == 0
    proc = launch(_image_prior(tmp_path / "two"))
    _ok(proc)
    _same(*(tmp_path / r / UNET for r in ("one", "two", "other_seed")))  # the final (EMA) weights
    _same(*(tmp_path / r / "checkpoint-6" / UNET for r in ("one", "two", "other_seed")))  # the raw weights
    # one writer: one log line per logged step, both processes' random states in each checkpoint, one progress bar
    assert _log_steps(tmp_path / "two") == _log_steps(tmp_path / "one") == [6]
    a, b = (json.loads((tmp_path / r / "train_log.jsonl").read_text())["loss"] for r in ("one", "two"))
    assert abs(a - b) < 1e-6  # the logged loss is the global batch's mean
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoint-6").glob("rng_*.pt")) == ["rng_0.pt", "rng_1.pt"]
    assert proc.stderr.count(" 0/6 [") == 1, proc.stderr[-2000:]  # one progress bar (each starts at 0/6)


def test_batch_that_processes_cannot_share_is_refused(tmp_path):
    argv = _image_prior(tmp_path / "odd")
    argv[argv.index("--batch-size") + 1] = "7"
    proc = launch(argv)
    assert proc.returncode != 0
    assert "batch size 7 must be a multiple of the number of processes 2" in proc.stderr
    assert not (tmp_path / "odd").exists()


def test_killed_two_process_run_resumes_exactly(tmp_path):
    """kill -9 of the whole launch after a checkpoint; a two-process --resume ends where one process ends."""
    run = tmp_path / "run"
    argv = _image_prior(run, steps=40)
    argv[argv.index("--checkpoint-every") + 1] = "5"
    proc = subprocess.Popen(launch_command(argv), env=launch_env(), stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while not (run / "checkpoint-5").exists():
        assert proc.poll() is None, f"launch exited early: {proc.stderr.read().decode()[-2000:]}"
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
    proc.wait()
    assert not (run / "model").exists()
    killed_at = int(list_checkpoints(run)[-1].name.split("-")[1])
    assert 5 <= killed_at < 40
    _ok(launch([*argv, "--resume"]))
    assert _log_steps(run)[-1] == 40 and len(_log_steps(run)) == len(set(_log_steps(run)))
    for name, seed in (("ref", 0), ("other_seed", 1)):
        ref = _image_prior(tmp_path / name, seed=seed, steps=40)
        ref[ref.index("--checkpoint-every") + 1] = "5"
        assert main(ref) == 0
    _same(tmp_path / "ref" / UNET, run / UNET, tmp_path / "other_seed" / UNET)


def test_mri_train_prior_and_train_diffusion_two_processes(tmp_path, monkeypatch):
    from gendiff.mri.synthetic import write_synthetic_dataset
    from gendiff.offline.datasets import make_dataset

    write_synthetic_dataset(tmp_path / "data", volumes=1, slices=4, size=32)
    mri = ["mri", "train-prior", "--data", str(tmp_path / "data"), "--size", "16", "--steps", "4", "--batch-size",
           "4", "--out"]
    assert main([*mri, str(tmp_path / "mri_one")]) == 0
    assert main([*mri, str(tmp_path / "mri_seed1"), "--seed", "1"]) == 0
    _ok(launch([*mri, str(tmp_path / "mri_two")]))
    _same(*(tmp_path / r / UNET for r in ("mri_one", "mri_two", "mri_seed1")))

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    make_dataset("Hopper-v5", "random", 300, "t/mp/random-v0")
    pgd = ["offline", "train-diffusion", "--dataset-id", "t/mp/random-v0", "--horizon", "8", "--stride", "4",
           "--dim", "8", "--dim-mults", "1,2", "--train-steps", "4", "--batch-size", "8", "--lr", str(LR),
           "--no-progress", "--out-dir"]
    assert main([*pgd, str(tmp_path / "pgd_one")]) == 0
    assert main([*pgd, str(tmp_path / "pgd_seed1"), "--seed", "1"]) == 0
    proc = launch([*pgd, str(tmp_path / "pgd_two")], env={"MINARI_DATASETS_PATH": str(tmp_path / "minari")})
    _ok(proc)
    unets = [TemporalUNet1D.from_pretrained(tmp_path / r / "pipeline" / "unet").eval()
             for r in ("pgd_one", "pgd_two", "pgd_seed1")]
    free = _gradient_free(unets[0])
    assert len(free) == 9  # dim 8 and 8 groups: both conv blocks of the 8-channel levels, and the final block
    _same(*(tmp_path / r / "pipeline/unet/diffusion_pytorch_model.safetensors" for r in ("pgd_one", "pgd_two",
                                                                                         "pgd_seed1")), skip=free)
    # the denoisers themselves agree (they do not depend on the gradient-free biases)
    x, t = torch.randn(4, 8, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([1.0, 10.0, 100.0, 500.0])
    with torch.no_grad():
        one, two, other = (unet(x, t) for unet in unets)
    assert float((one - two).norm()) < 0.01 * float((one - other).norm()), (one - two).norm()
    assert proc.stdout.count('"pipeline"') == 1  # printed by the main process only


def test_ads_benchmark_table_same_with_two_processes(tmp_path):
    """`gendiff mri benchmark` under two processes: every number of the table and ADS's line orders are the
    one-process run's (batches and CS slices split round robin, gathered in order); only timings differ."""
    from gendiff.mri.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "train", volumes=1, slices=4, size=32)
    write_synthetic_dataset(tmp_path / "test", volumes=1, slices=3, size=32, seed=5)
    prior = tmp_path / "prior"
    assert main(["mri", "train-prior", "--data", str(tmp_path / "train"), "--size", "16", "--steps", "3",
                 "--batch-size", "4", "--out", str(prior)]) == 0
    bench = ["mri", "benchmark", "--prior", str(prior), "--data", str(tmp_path / "test"), "--acceleration", "4",
             "--strategies", "ads,fastmri_random,data_variance", "--train-data", str(tmp_path / "train"),
             "--slices", "3", "--batch-slices", "1", "--num-particles", "2", "--num-inference-steps", "3",
             "--reconstructors", "dps,cs_tv", "--cs-iterations", "3", "--no-progress", "--out"]
    # the one-process run with the launch's one thread per process, as in the synthesize test below: two threads
    # round the U-Net's convolutions differently, and the in-process thread count depends on earlier tests
    _ok(subprocess.run([sys.executable, "-m", "gendiff", *bench, str(tmp_path / "one" / "results.json")],
                       capture_output=True, text=True, timeout=300, env=launch_env()))
    proc = launch([*bench, str(tmp_path / "two" / "results.json")])
    _ok(proc)
    one, two = (json.loads((tmp_path / r / "results.json").read_text()) for r in ("one", "two"))
    timing = {"seconds_per_slice"}
    strip = [[{k: v for k, v in row.items() if k not in timing} for row in res["rows"]] for res in (one, two)]
    assert len(strip[0]) == 6 and strip[0] == strip[1]  # three strategies x (dps, cs_tv)
    assert one["ads_order"] == two["ads_order"]
    assert proc.stdout.count("# ADS vs fixed masks") == 1  # the table is printed (and written) by one process


def test_offline_synthesize_same_file_with_two_processes(tmp_path, monkeypatch):
    """`gendiff offline synthesize` under two processes writes the one-process file bit for bit: chunk i's noise is
    seeded by (seed, i) alone, the chunks are split round robin and gathered in order; PGD guidance included."""
    from safetensors.torch import save_file

    from gendiff.offline.datasets import load_dataset, make_dataset
    from gendiff.offline.learners import build_learner
    from gendiff.offline.pgd_loop import learner_weights

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    make_dataset("Hopper-v5", "random", 300, "t/mp/random-v0")
    assert main(["offline", "train-diffusion", "--dataset-id", "t/mp/random-v0", "--horizon", "8", "--stride", "4",
                 "--dim", "8", "--dim-mults", "1,2", "--train-steps", "3", "--batch-size", "8", "--no-progress",
                 "--out-dir", str(tmp_path / "diff")]) == 0
    ds = load_dataset("t/mp/random-v0")
    save_file(learner_weights(build_learner("td3bc", ds.transitions(), ds.action_low, ds.action_high)),
              str(tmp_path / "agent.safetensors"))
    syn = ["offline", "synthesize", "--dataset-id", "t/mp/random-v0", "--pipeline", str(tmp_path / "diff" / "pipeline"),
           "--policy", str(tmp_path / "agent.safetensors"), "--num-transitions", "35", "--sample-horizon", "8",
           "--num-inference-steps", "3", "--sampler", "euler", "--chunk-windows", "2", "--no-progress", "--out"]
    env = {"MINARI_DATASETS_PATH": str(tmp_path / "minari")}
    # the one-process run with the launch's one thread per process (two threads round convolutions differently)
    _ok(subprocess.run([sys.executable, "-m", "gendiff", *syn, str(tmp_path / "one.safetensors")], capture_output=True,
                       text=True, timeout=300, env=launch_env(env)))
    proc = launch([*syn, str(tmp_path / "two.safetensors")], env=env)
    _ok(proc)
    one, two = (load_file(str(tmp_path / f)) for f in ("one.safetensors", "two.safetensors"))
    assert sorted(one) == sorted(two) and one["obs"].shape == (35, 11)
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert proc.stdout.count('"transitions"') == 1  # the summary is printed by the main process only


def test_single_process_commands_refuse_a_launch(tmp_path):
    """A command that does not split its work (here offline train-agent) refuses a two-process launch before any
    work: both processes would run the whole command on the same files."""
    proc = launch(["offline", "train-agent", "--dataset-id", "t/none/none-v0", "--out", str(tmp_path / "r.json")])
    assert proc.returncode != 0
    assert "`gendiff offline train-agent` runs in one process; under this launch of 2 processes" in proc.stderr
    frames = [line for line in proc.stderr.splitlines() if line.strip().startswith("File ")]
    ours = [f for f in frames if "site-packages/gendiff/" in f or (str(ROOT) in f and "site-packages" not in f
                                                                     and "/bin/" not in f)]
    assert not ours, ours  # the launcher's own traceback only
    assert not (tmp_path / "r.json").exists()
