"""Regression tests for issue 32 (nothing lost, nothing silent): one test per failure the battery found.

Every case runs the real command in-process (``gendiff.cli.main``) at tiny sizes. The whole battery, with the
kill -9 cases and same-seed runs in subprocesses, is benchmarks/reliability/battery.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from gendiff.cli import main
from gendiff.io import beside, recover_swap, staging_dir, swap_dir

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
PRIOR = ROOT / "gendiff" / "assets" / "mri_prior_32"
WEIGHTS = "model/diffusion_pytorch_model.safetensors"


class _Evil:
    """A malicious pickle: loading it with pickle would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo PWNED > pwned_by_test.txt",))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        h.update(str(f.relative_to(path.parent)).encode() + f.read_bytes())
    return h.hexdigest()


def _error(capsys, argv: list[str], *needles: str) -> str:
    """Run ``gendiff argv``: exit 2 with one clear line holding ``needles``, no traceback, no unsafe advice."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = next(ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("gendiff: error: "))
    for n in needles:
        assert n in line, (n, line)
    assert "Traceback" not in err and "weights_only=False" not in err.replace(" ", "")
    return line


@pytest.fixture
def minari_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


@pytest.fixture(scope="module")
def mri_data(tmp_path_factory) -> Path:
    from gendiff.mri.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("mri")
    write_synthetic_dataset(root / "test", volumes=1, slices=2, size=32, seed=1)
    write_synthetic_dataset(root / "train", volumes=1, slices=4, size=32, seed=0)
    return root


BENCH = ["--slices", "2", "--particles", "2", "--steps", "2", "--strategies", "ads,equispaced", "--bootstrap", "20",
         "--no-progress"]


# --------------------------------------------------------------------------------------------------
# Data lost or overwritten
# --------------------------------------------------------------------------------------------------
def test_make_dataset_force_with_a_bad_env_keeps_the_dataset(minari_dir, capsys):
    from gendiff.offline.datasets import load_dataset, make_dataset

    make_dataset("Hopper-v5", "random", 60, "t/keep/random-v0")
    before = _digest(minari_dir / "t" / "keep" / "random-v0")
    _error(capsys, ["offline", "make-dataset", "--env", "Bogus-v0", "--dataset-id", "t/keep/random-v0", "--force"],
           "Bogus-v0")
    assert _digest(minari_dir / "t" / "keep" / "random-v0") == before
    assert load_dataset("t/keep/random-v0").num_transitions == 60


def test_an_interrupted_write_keeps_the_old_dataset_and_leaves_nothing_that_counts(minari_dir, monkeypatch):
    """A failure inside the Minari write (as a kill there) of a --force replacement and of a new id."""
    import minari

    from gendiff.offline.datasets import dataset_exists, load_dataset, make_dataset

    make_dataset("Hopper-v5", "random", 60, "t/int/random-v0")
    before = _digest(minari_dir / "t" / "int" / "random-v0")
    real = minari.create_dataset_from_buffers

    def write_then_die(dataset_id, buffers, **kw):
        real(dataset_id, buffers[:1], **kw)  # data/ is on disk, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", write_then_die)
    for ds_id in ("t/int/random-v0", "t/new/random-v0"):
        with pytest.raises(KeyboardInterrupt):
            make_dataset("Hopper-v5", "random", 80, ds_id, force=True)
    assert _digest(minari_dir / "t" / "int" / "random-v0") == before
    assert not dataset_exists("t/new/random-v0") and not (minari_dir / "t" / "new").exists()
    monkeypatch.setattr(minari, "create_dataset_from_buffers", real)
    assert make_dataset("Hopper-v5", "random", 80, "t/new/random-v0").num_transitions == 80  # no --force needed
    assert make_dataset("Hopper-v5", "random", 90, "t/int/random-v0", force=True).num_transitions == 90
    assert load_dataset("t/int/random-v0").num_transitions == 90
    assert not any((minari_dir / ".gendiff_staging").rglob("data"))


def test_an_empty_data_folder_is_not_a_dataset(minari_dir, capsys):
    from gendiff.offline.datasets import dataset_exists

    (minari_dir / "t" / "half" / "random-v0" / "data").mkdir(parents=True)  # what a killed write used to leave
    assert not dataset_exists("t/half/random-v0")
    _error(capsys, ["offline", "dataset-stats", "--dataset-id", "t/half/random-v0"], "interrupted write")
    assert main(["offline", "make-dataset", "--env", "Hopper-v5", "--level", "random", "--steps", "40",
                 "--dataset-id", "t/half/random-v0", "--no-progress"]) == 0
    assert dataset_exists("t/half/random-v0")


def test_results_files_are_never_overwritten_without_overwrite(tmp_path, minari_dir, mri_data, capsys):
    # mri benchmark: a table, then the same --out (refused before any reconstruction), then an empty strategy list
    out = tmp_path / "res" / "mri.json"
    bench = ["mri", "benchmark", "--prior", str(PRIOR), "--data", str(mri_data / "test"), *BENCH, "--out", str(out)]
    assert main(bench) == 0
    before = [_digest(p) for p in (out, out.with_suffix(".md"))]
    _error(capsys, bench, str(out), "--overwrite")
    _error(capsys, [*bench, "--strategies", "", "--overwrite"], "strategies", "empty")
    assert [_digest(p) for p in (out, out.with_suffix(".md"))] == before
    # offline train-agent and dataset-stats: refused before any work
    from gendiff.offline.datasets import make_dataset

    make_dataset("Hopper-v5", "random", 60, "t/res/random-v0")
    agent = tmp_path / "res" / "agent.json"
    agent.write_text("{}")
    _error(capsys, ["offline", "train-agent", "--dataset-id", "t/res/random-v0", "--out", str(agent)],
           "--overwrite")
    stats = tmp_path / "res" / "stats.json"
    stats.write_text("{}")
    _error(capsys, ["offline", "dataset-stats", "--dataset-id", "t/res/random-v0", "--out", str(stats)],
           "--overwrite")
    assert agent.read_text() == stats.read_text() == "{}"
    assert main(["offline", "dataset-stats", "--dataset-id", "t/res/random-v0", "--out", str(stats),
                 "--overwrite"]) == 0
    assert json.loads(stats.read_text())["dataset_id"] == "t/res/random-v0"


def test_resume_with_other_settings_is_refused_and_names_them(tmp_path, mri_data, capsys):
    run = tmp_path / "prior"
    train = ["mri", "train-prior", "--data", str(mri_data / "train"), "--out", str(run), "--size", "16", "--steps",
             "2", "--batch-size", "4", "--checkpoint-every", "2"]
    assert main(train) == 0
    config = (run / "config.yaml").read_text()
    _error(capsys, [*train, "--size", "24", "--batch-size", "2", "--steps", "4", "--resume"],
           "size (saved 16, now 24)", "batch_size (saved 4, now 2)")
    assert (run / "config.yaml").read_text() == config
    assert main([*train, "--steps", "4", "--resume"]) == 0  # more steps is a resume
    assert json.loads((run / "train_log.jsonl").read_text().splitlines()[-1])["step"] == 4


def test_overwrite_replaces_a_run_only_after_success(tmp_path):
    """A replacement run that fails (a diverging loss) leaves the earlier run as it was."""
    from diffusers import DDPMScheduler

    from gendiff.models import ResidualMLPDenoiser
    from gendiff.training import TrainConfig, train_denoiser

    data, sched = torch.randn(32, 4), DDPMScheduler(num_train_timesteps=100)
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_every=2, log_every=1)
    train_denoiser(ResidualMLPDenoiser(4, width=8, depth=1), data, sched, cfg, tmp_path / "run", progress=False)
    (tmp_path / "run" / "notes.txt").write_text("mine")  # the user's own file in the run folder
    before = _digest(tmp_path / "run")
    bad = TrainConfig(steps=50, batch_size=8, lr=1e30, grad_clip=None, checkpoint_every=1, log_every=1)
    with pytest.raises(FloatingPointError):
        train_denoiser(ResidualMLPDenoiser(4, width=8, depth=1), data * 1e30, sched, bad, tmp_path / "run",
                       progress=False, overwrite=True)
    assert _digest(tmp_path / "run") == before
    res = train_denoiser(ResidualMLPDenoiser(4, width=8, depth=1), data, sched, TrainConfig(steps=3, batch_size=8),
                         tmp_path / "run", progress=False, overwrite=True)
    assert res.global_step == 3 and (tmp_path / "run" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-3"]
    assert not staging_dir(tmp_path / "run").exists()


def test_a_swap_interrupted_between_its_renames_is_undone_or_completed(tmp_path):
    final, new = tmp_path / "run", tmp_path / "new"
    for folder, text in ((final, "old"), (new, "new")):
        folder.mkdir()
        (folder / "weights").write_text(text)
    (final / "user.txt").write_text("kept")
    os.replace(final, tmp_path / ".run.old")  # killed after the first rename: the old folder comes back
    recover_swap(final)
    assert (final / "weights").read_text() == "old"
    swap_dir(new, final, owned=lambda p: p.name == "weights")
    assert (final / "weights").read_text() == "new" and (final / "user.txt").read_text() == "kept"
    assert not (tmp_path / ".run.old").exists()


# --------------------------------------------------------------------------------------------------
# Silent wrong results
# --------------------------------------------------------------------------------------------------
def test_gorl_train_steps_zero_is_refused(tmp_path, capsys):
    _error(capsys, ["gorl", "train", "--steps", "0", "--out", str(tmp_path / "g")], "GorlTrainConfig.steps",
           "--steps")
    assert not (tmp_path / "g").exists()


def test_unknown_scheduler_class_is_an_error_not_ddim(tmp_path, mri_data, capsys):
    prior = tmp_path / "prior"
    shutil.copytree(PRIOR, prior)
    cfg = prior / "scheduler" / "scheduler_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "_class_name": "NoSuchScheduler"}))
    _error(capsys, ["mri", "benchmark", "--prior", str(prior), "--data", str(mri_data / "test"), *BENCH],
           "NoSuchScheduler", str(cfg))


def test_discrete_actions_are_refused_before_any_work(minari_dir, tmp_path, capsys):
    import minari

    from gendiff.offline.behaviour import rollout

    _error(capsys, ["offline", "make-dataset", "--env", "CartPole-v1", "--level", "random", "--steps", "50",
                    "--dataset-id", "t/cart/made-v0"], "Discrete", "continuous")
    assert not (minari_dir / "t" / "cart").exists()
    minari.create_dataset_from_buffers("t/cart/random-v0", rollout("CartPole-v1", None, 60, 0), env="CartPole-v1",
                                       algorithm_name="random", author="t", author_email="t@localhost",
                                       code_permalink="t")
    _error(capsys, ["offline", "train-agent", "--dataset-id", "t/cart/random-v0", "--steps", "5", "--out",
                    str(tmp_path / "a.json")], "Discrete", "continuous (Box)")
    _error(capsys, ["offline", "train-diffusion", "--dataset-id", "t/cart/random-v0", "--out-dir",
                    str(tmp_path / "d")], "Discrete")


@pytest.mark.parametrize("bad_id", ["../outside-v0", "a/../../outside-v0", "/abs/path-v0", ".hidden/x-v0", "noversion"])
def test_dataset_ids_cannot_leave_the_minari_folder(minari_dir, tmp_path, capsys, bad_id):
    for cmd in (["offline", "make-dataset", "--env", "Hopper-v5", "--level", "random", "--steps", "20"],
                ["offline", "dataset-stats"], ["offline", "train-agent", "--out", str(tmp_path / "t.json")],
                ["offline", "train-diffusion", "--out-dir", str(tmp_path / "d")]):
        _error(capsys, [*cmd, "--dataset-id", bad_id], "must look like")
    assert not any(p.name.startswith("outside") for p in tmp_path.rglob("*"))
    assert not (tmp_path.parent / "outside-v0").exists()


# --------------------------------------------------------------------------------------------------
# Tracebacks
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value,needle", [
    ("--num-inference-steps", "0", "MRIBenchmarkConfig.num_inference_steps"),
    ("--steps", "0", "MRIBenchmarkConfig.num_inference_steps"), ("--slices", "0", "MRIBenchmarkConfig.slices"),
    ("--bootstrap", "0", "MRIBenchmarkConfig.bootstrap"), ("--batch-slices", "0", "batch_slices"),
    ("--num-particles", "-1", "MRIBenchmarkConfig.num_particles"), ("--device", "tpu9", "'tpu9'"),
    ("--acquisition-window", "0.6,0.2", "MRIBenchmarkConfig.acquisition_window"),
    ("--window", "0.6,0.2", "acquisition_window"),
    ("--sigma", "inf", "finite"), ("--acceleration", "0", "acceleration"),
])
def test_mri_benchmark_numbers_and_devices_fail_at_config_load(capsys, flag, value, needle):
    _error(capsys, ["mri", "benchmark", "--prior", "x", "--data", "y", flag, value], needle)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_build_is_one_line(capsys):
    _error(capsys, ["mri", "benchmark", "--prior", "x", "--data", "y", "--device", "cuda"], "no CUDA device")
    _error(capsys, ["images", "benchmark", "--prior", "x", "--device", "cuda:1"], "no CUDA device")


@pytest.mark.parametrize("spoil", ["truncated", "pickle", "pickle_bin", "bad_config"])
def test_broken_priors_are_one_line_naming_the_file(tmp_path, mri_data, capsys, monkeypatch, spoil):
    monkeypatch.chdir(tmp_path)  # where the pickle would write
    prior = tmp_path / "prior"
    shutil.copytree(PRIOR, prior)
    w = prior / WEIGHTS
    if spoil == "truncated":
        w.write_bytes(w.read_bytes()[:300])
    elif spoil == "pickle":
        w.write_bytes(pickle.dumps({"w": _Evil()}))
    elif spoil == "pickle_bin":
        w.unlink()
        (prior / "model" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"w": _Evil()}))
    else:
        (prior / "model" / "config.json").write_text("{'sample_size': 32,")
    line = _error(capsys, ["mri", "benchmark", "--prior", str(prior), "--data", str(mri_data / "test"), *BENCH],
                  "cannot load the prior's U-Net", str(prior / "model"))
    assert ("config" in line) if spoil == "bad_config" else True
    assert not (tmp_path / "pwned_by_test.txt").exists()


def test_a_pickled_checkpoint_file_is_refused_without_unsafe_advice(tmp_path, mri_data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "prior"
    train = ["mri", "train-prior", "--data", str(mri_data / "train"), "--out", str(run), "--size", "16", "--steps",
             "2", "--batch-size", "4", "--checkpoint-every", "2"]
    assert main(train) == 0
    (run / "checkpoint-2" / "optimizer.pt").write_bytes(pickle.dumps({"state": _Evil()}))
    _error(capsys, [*train, "--steps", "3", "--resume"], "checkpoint-2", "pickled", "--overwrite")
    assert not (tmp_path / "pwned_by_test.txt").exists()


def test_llm_model_with_a_broken_config_is_one_line(tmp_path, capsys):
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    _error(capsys, ["llm", "train", "--model", str(tmp_path / "lm"), "--out", str(tmp_path / "run"), "--steps", "1"],
           "cannot load --model", str(tmp_path / "lm"))


@pytest.mark.parametrize("flag,value,needle", [
    ("--top-p", "0", "LLMTrainConfig.top_p (--top-p)"), ("--top-p", "1.5", "top_p"),
    ("--temperature", "0", "LLMTrainConfig.temperature"), ("--lr", "-1", "LLMTrainConfig.lr"),
    ("--weight-decay", "-0.1", "weight_decay"), ("--riskpo-momentum", "2", "riskpo_momentum"),
    ("--steps", "0", "LLMTrainConfig.steps"), ("--sft-steps", "-1", "--sft-steps"),
    ("--prompt-templates", "0", "--prompt-templates"), ("--spear-config", "{sil_coef: 0.5}", "spear is off"),
])
def test_llm_numbers_fail_before_any_work_naming_the_field(tmp_path, capsys, flag, value, needle):
    _error(capsys, ["llm", "train", "--out", str(tmp_path / "run"), flag, value], needle)
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_is_one_line(tmp_path, mri_data, capsys):
    _error(capsys, ["mri", "train-prior", "--data", str(mri_data / "train"), "--out", str(tmp_path / "p"), "--size",
                    "16", "--steps", "30", "--batch-size", "4", "--lr", "1e30"], "training loss is nan",
           "learning rate")


# --------------------------------------------------------------------------------------------------
# Misleading messages
# --------------------------------------------------------------------------------------------------
def test_config_that_is_a_folder_says_so(tmp_path, capsys):
    _error(capsys, ["mri", "benchmark", "--config", str(tmp_path)], "is a folder")


def test_resume_hints_name_options_the_command_has(tmp_path, minari_dir, capsys):
    from gendiff.offline.datasets import make_dataset

    make_dataset("Hopper-v5", "random", 200, "t/hint/random-v0")
    argv = ["offline", "train-diffusion", "--dataset-id", "t/hint/random-v0", "--out-dir", str(tmp_path / "d"),
            "--horizon", "8", "--stride", "4", "--dim", "8", "--dim-mults", "1,2", "--train-steps", "2",
            "--batch-size", "8", "--no-progress"]
    assert main(argv) == 0
    line = _error(capsys, argv, "--overwrite", "--resume")
    assert "resume=True" not in line
    shutil.rmtree(tmp_path / "d" / "pipeline")  # the run folder alone: train_denoiser's own hint
    _error(capsys, argv, "--resume", "--overwrite")
    assert main([*argv, "--train-steps", "4", "--resume"]) == 0  # the option the hint names exists
    assert json.loads((tmp_path / "d" / "train" / "train_log.jsonl").read_text().splitlines()[-1])["step"] == 4


def test_nan_in_kspace_names_the_whole_path(tmp_path, capsys):
    from gendiff.mri.synthetic import ismrmrd_header

    k = np.ones((2, 32, 32), np.complex64)
    k[1, 3, 4] = np.nan
    path = tmp_path / "data" / "nan_file.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=k)
        hf.create_dataset("ismrmrd_header", data=ismrmrd_header((32, 32), (32, 32)))
    _error(capsys, ["mri", "benchmark", "--prior", str(PRIOR), "--data", str(path.parent), *BENCH,
                    "--out", str(tmp_path / "r.json")], f"{path}: slice 1", "NaN")


def test_mri_benchmark_reads_multicoil_files(tmp_path, capsys):
    from gendiff.mri.synthetic import make_volume

    img = make_volume(32, 2, np.random.default_rng(0))
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    sens = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2)) for cx, cy in [(-1, -1), (1, -1), (0, 1), (1, 1)]])
    coils = img[:, None] * sens[None]
    ax = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coils, axes=ax), norm="ortho"), axes=ax)
    from gendiff.mri.synthetic import ismrmrd_header

    (tmp_path / "mc").mkdir()
    with h5py.File(tmp_path / "mc" / "mc.h5", "w") as hf:
        hf.create_dataset("kspace", data=k.astype(np.complex64))
        hf.create_dataset("ismrmrd_header", data=ismrmrd_header((32, 32), (32, 32)))
    out = tmp_path / "mc.json"
    argv = ["mri", "benchmark", "--prior", str(PRIOR), "--data", str(tmp_path / "mc"), *BENCH, "--out", str(out)]
    _error(capsys, argv, "mc.h5", "singlecoil")  # without the option: a clear error, not garbage
    assert main([*argv, "--challenge", "multicoil"]) == 0
    payload = json.loads(out.read_text())
    assert [r["strategy"] for r in payload["rows"]] == ["ads", "equispaced"]
    assert payload["config"]["challenge"] == "multicoil" and "multicoil slices" in out.with_suffix(".md").read_text()


def test_one_spelling_for_boolean_flags(tmp_path, capsys):
    """--overwrite / --no-overwrite parse the same way on every command; the old --overwrite true|false still does."""
    from gendiff.cli import build_parser

    parser = build_parser()
    for cmd, flag in ((["mri", "benchmark"], "--overwrite"), (["offline", "train-agent"], "--overwrite"),
                      (["gorl", "train"], "--overwrite"), (["llm", "train", "--out", "x"], "--overwrite"),
                      (["llm", "train", "--out", "x"], "--resume"), (["llm", "train", "--out", "x"], "--partial-credit"),
                      (["train-prior"], "--overwrite"), (["offline", "make-dataset"], "--force")):
        dest = flag[2:].replace("-", "_")
        no_flag = "--no-" + flag[2:]
        capsys.readouterr()
        bare = getattr(parser.parse_args([*cmd, flag]), dest)
        off = getattr(parser.parse_args([*cmd, no_flag]), dest)
        assert bare is True and off is False and capsys.readouterr().err == "", cmd
        said = getattr(parser.parse_args([*cmd, flag, "true"]), dest)
        said_off = getattr(parser.parse_args([*cmd, flag, "false"]), dest)
        assert said is True and said_off is False, cmd
        lines = capsys.readouterr().err.splitlines()
        assert [ln.split(" is deprecated")[0] for ln in lines] == [f"gendiff: {flag} true", f"gendiff: {flag} false"]


def test_llm_sft_of_any_length_runs():
    """Found by the battery: --sft-steps 10 crashed (OneCycleLR divided by zero at pct_start * steps == 1)."""
    from gendiff.llm.tasks import build_tiny_lm

    for steps in (1, 2, 10):
        assert len(build_tiny_lm(sft_steps=steps, layers=1, hidden=16, batch_size=4).sft_losses) == steps


def test_beside_keeps_a_dot_in_the_name_and_swaps_a_results_extension() -> None:
    assert beside("runs/coeff0.3", ".md") == Path("runs/coeff0.3.md")  # with_suffix: runs/coeff0.md
    assert beside("runs/coeff0.1", ".md") != beside("runs/coeff0.3", ".md")
    assert beside("runs/table.json", ".md") == Path("runs/table.md")
    assert beside(Path("runs/table"), ".json") == Path("runs/table.json")
    assert beside("runs/fig.PNG", ".json") == Path("runs/fig.json")
