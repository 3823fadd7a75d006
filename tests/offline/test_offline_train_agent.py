"""End-to-end smoke runs of ``gendiff offline train-agent`` / ``dataset-stats`` / ``train-diffusion`` (tiny)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

from gendiff.offline.cli import add_offline_commands
from gendiff.offline.datasets import make_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _run(argv: list[str]):
    parser = argparse.ArgumentParser()
    add_offline_commands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(argv)
    return args._run(args)


TINY = ["--steps", "30", "--batch-size", "32", "--regenerate-every", "10", "--num-synthetic", "120",
        "--diffusion-train-steps", "10", "--synther-train-steps", "10", "--horizon", "8", "--sample-horizon", "16",
        "--num-inference-steps", "4", "--eval-every", "15", "--eval-episodes", "10", "--no-progress"]


@pytest.mark.parametrize(("algo", "synthetic", "sets"), [("iql", "pgd", 3), ("td3bc", "none", 0),
                                                          ("prdc", "synther", 3), ("td3bc", "resample", 3)])
def test_train_agent_writes_results(minari_dir, tmp_path, algo, synthetic, sets):
    make_dataset("Hopper-v5", "random", 400, "t/hopper/random-v0")
    out = tmp_path / f"{algo}_{synthetic}.json"
    _run(["offline", "train-agent", "--dataset-id", "t/hopper/random-v0", "--algo", algo, "--synthetic", synthetic,
          "--out", str(out), *TINY])
    res = json.loads(out.read_text())
    assert res["final"]["episodes"] == 10 and "score_mean" in res["final"]
    assert [r["step"] for r in res["curve"]] == [15, 30]
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").exists()
    # every synthetic source: the first set + regenerated at steps 10 and 20 (the reference regenerates unguided too)
    assert len(res["synthetic_per_s"]) == sets
    # the window layout of a trajectory pipeline's rows is recorded (agents.py labels a linear one +linact)
    assert res.get("layout") == ({"residual": False, "action_layout": "arctanh"} if synthetic == "pgd" else None)


def test_unguided_sets_made_once_on_request_and_resample_draws_real_rows(minari_dir, tmp_path):
    from gendiff.offline.datasets import load_dataset
    from gendiff.offline.pgd_loop import SyntheticSource, TrainAgentConfig

    make_dataset("Hopper-v5", "random", 400, "t/hopper/random-v0")
    out = tmp_path / "once.json"
    _run(["offline", "train-agent", "--dataset-id", "t/hopper/random-v0", "--synthetic", "resample",
          "--no-regenerate-unguided", "--out", str(out), *TINY])
    assert len(json.loads(out.read_text())["synthetic_per_s"]) == 1  # made once: the behaviour before the field
    ds = load_dataset("t/hopper/random-v0")
    real = ds.transitions()
    cfg = TrainAgentConfig(dataset_id="t/hopper/random-v0", synthetic="resample", num_synthetic=300)
    src = SyntheticSource(cfg, ds, tmp_path)
    a, b = src.generate(None), src.generate(None)
    rows = {tuple(r) for r in real["obs"].tolist()}
    assert a["obs"].shape[0] == 300 and all(tuple(r) in rows for r in a["obs"].tolist())  # real rows only
    pairs = {tuple(o) + tuple(u) for o, u in zip(a["obs"].tolist(), a["act"].tolist())}
    assert len(pairs) == 300  # without replacement within one set
    assert not all(torch.equal(a[k], b[k]) for k in a)  # a fresh draw each time
    falls = int((real["done"] > 0.5).sum())
    assert falls > 0  # random Hopper data falls often
    whole = TrainAgentConfig(dataset_id="t/hopper/random-v0", synthetic="resample", num_synthetic=400)
    assert int((SyntheticSource(whole, ds, tmp_path).generate(None)["done"] > 0.5).sum()) == falls
    nofalls = SyntheticSource(dataclasses.replace(whole, synthetic_terminals=False), ds, tmp_path).generate(None)
    assert nofalls["obs"].shape[0] == 400 - falls and not bool((nofalls["done"] > 0.5).any())
    with pytest.raises(ValueError, match="ask for at most 400"):
        SyntheticSource(TrainAgentConfig(dataset_id="t/hopper/random-v0", synthetic="resample", num_synthetic=401),
                        ds, tmp_path)


def test_dataset_stats_and_unknown_algo(minari_dir, tmp_path):
    make_dataset("Hopper-v5", "random", 200, "t/hopper/random-v0")
    info = _run(["offline", "dataset-stats", "--dataset-id", "t/hopper/random-v0", "--out", str(tmp_path / "s.json")])
    assert 0 < info["saco"] <= 1 and abs(info["tq"]) < 0.05  # random data: TQ ~ 0
    with pytest.raises(ValueError, match="'cql' is not one of"):
        _run(["offline", "train-agent", "--algo", "cql"])
    # a results path without .json: refused before any work (its siblings and run folder are named from it)
    for bad in ("coeff0.3", "run"):
        with pytest.raises(ValueError, match="must name the results .json file"):
            _run(["offline", "train-agent", "--dataset-id", "t/hopper/random-v0", "--out", str(tmp_path / bad)])
    assert not any((tmp_path / f"{bad}{ext}").exists() for bad in ("coeff0", "coeff0.3", "run") for ext in ("", ".md"))


def test_match_reward_deciles_gives_each_data_decile_a_tenth() -> None:
    """A synthetic set whose rewards run high, redrawn to the data's reward deciles: each decile then holds ~1/10 of
    the rows (before: most in the top ones), the size and the rows' contents (whole rows, not mixed) are kept."""
    from gendiff.offline.pgd_loop import match_reward_deciles, reward_decile_edges

    g = torch.Generator().manual_seed(0)
    real = torch.randn(20_000, generator=g)
    syn = {"rew": torch.randn(20_000, generator=g) + 0.8}
    syn["obs"] = syn["rew"][:, None].repeat(1, 3)  # a row's obs tells its reward: rows must stay whole
    edges = reward_decile_edges(real)
    assert edges.shape == (9,) and torch.allclose(edges, torch.quantile(real, torch.linspace(0, 1, 11)[1:-1]))
    before = torch.bincount(torch.bucketize(syn["rew"], edges), minlength=10) / 20_000
    out = match_reward_deciles(syn, edges, g)
    after = torch.bincount(torch.bucketize(out["rew"], edges), minlength=10) / 20_000
    assert before[-1] > 0.25 and before[0] < 0.03
    assert torch.allclose(after, torch.full((10,), 0.1), atol=0.01)
    assert out["obs"].shape == (20_000, 3) and torch.equal(out["obs"][:, 0], out["rew"])


def test_actor_batch_real_draws_its_own_rows() -> None:
    """actor_batch=real: ``sample_real`` gives batch_size real rows from a stream of its own, so the mixed batches
    the critic gets are the ones a run without it gets; an unknown actor_batch is refused."""
    from gendiff.offline.pgd_loop import BatchSampler, TrainAgentConfig
    from gendiff.offline.td3bc import TD3BC, TD3BCConfig

    g = torch.Generator().manual_seed(0)
    real = {"obs": torch.randn(50, 4, generator=g), "act": torch.rand(50, 2, generator=g) * 2 - 1,
            "rew": torch.randn(50, generator=g), "next_obs": torch.randn(50, 4, generator=g), "done": torch.zeros(50)}
    syn = {k: v + 10.0 * (k != "done") for k, v in real.items()}  # synthetic rows are told apart by obs > 5
    agent = TD3BC(4, 2, [-1, -1], [1, 1], real["obs"], TD3BCConfig(hidden=(8,)))
    plain, split = BatchSampler(agent, real, 32, 4, seed=1), BatchSampler(agent, real, 32, 4, seed=1)
    plain.set_synthetic(syn)
    split.set_synthetic(syn)
    for _ in range(3):
        actor_rows = split.sample_real()
        assert torch.equal(plain.sample(), split.sample())
        assert actor_rows.shape == (32, plain.real.shape[1]) and bool((agent.split(actor_rows).obs.abs() < 5).all())
    with pytest.raises(ValueError, match="actor_batch"):
        TrainAgentConfig(actor_batch="critic")
