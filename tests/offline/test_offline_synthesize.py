"""``gendiff offline synthesize``: the file it writes, chunk seeding, PGD guidance from saved weights, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from gendiff.cli import main
from gendiff.offline.datasets import load_dataset, make_dataset
from gendiff.offline.learners import build_learner
from gendiff.offline.pgd_loop import learner_weights, load_learner_weights
from gendiff.offline.synthesize import SynthesizeConfig, chunk_generator, synthesize

DATASET = "t/syn/random-v0"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 300-step Hopper dataset and a 4-step trajectory pipeline (windows of 8) in a private Minari folder."""
    root = tmp_path_factory.mktemp("synth")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
    make_dataset("Hopper-v5", "random", 300, DATASET)
    assert main(["offline", "train-diffusion", "--dataset-id", DATASET, "--horizon", "8", "--stride", "4", "--dim", "8",
                 "--dim-mults", "1,2", "--train-steps", "4", "--batch-size", "8", "--no-progress", "--out-dir",
                 str(root / "diff")]) == 0
    yield root
    mp.undo()


def _cfg(tiny, out, **kw):
    base = {"dataset_id": DATASET, "pipeline": str(tiny / "diff" / "pipeline"), "num_transitions": 30,
            "sample_horizon": 8, "num_inference_steps": 3, "sampler": "euler", "chunk_windows": 2,
            "out": str(out), "progress": False}
    return SynthesizeConfig(**{**base, **kw})


def test_writes_transitions_and_summary(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny / "minari"))
    out = tmp_path / "syn.safetensors"
    res = synthesize(_cfg(tiny, out))
    rows = load_file(str(out))
    assert sorted(rows) == ["act", "done", "next_obs", "obs", "rew"]
    assert rows["obs"].shape == (30, 11) and rows["act"].shape == (30, 3) and rows["rew"].shape == (30,)
    assert all(torch.isfinite(v).all() for v in rows.values())
    summary = json.loads((tmp_path / "syn.json").read_text())
    assert summary["transitions"] == 30 and summary["chunks"] == 3 and summary["generator"] == "unguided"
    assert res["transitions"] == 30
    # within a window, next_obs of one row is obs of the next (7 rows per window of 8)
    assert torch.allclose(rows["next_obs"][:6], rows["obs"][1:7])


def test_windows_that_end_early_are_made_up_by_more_chunks(tiny, tmp_path, monkeypatch):
    """A window that terminates gives fewer than sample_horizon - 1 rows; more chunks are sampled until the file
    holds the requested count (here the 3-step Heun sampler on a 4-step model ends many windows early)."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny / "minari"))
    res = synthesize(_cfg(tiny, tmp_path / "h.safetensors", sampler="heun", num_transitions=35))
    rows = load_file(str(tmp_path / "h.safetensors"))
    assert res["transitions"] == 35 and rows["obs"].shape == (35, 11)
    assert rows["done"].sum() > 0 and res["chunks"] > 3 and res["rounds"] > 1, res


def test_chunks_are_seeded_by_index_alone(tiny, tmp_path, monkeypatch):
    """A chunk's rows do not depend on which chunks ran before it (what makes a split over processes exact)."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny / "minari"))
    full = synthesize(_cfg(tiny, tmp_path / "a.safetensors"))
    assert full["chunks"] == 3
    a = load_file(str(tmp_path / "a.safetensors"))
    # the first two chunks alone (2 windows x 7 rows each) are the first 28 rows of the full file
    synthesize(_cfg(tiny, tmp_path / "b.safetensors", num_transitions=28))
    b = load_file(str(tmp_path / "b.safetensors"))
    assert all(torch.equal(a[k][:28], b[k]) for k in a)
    c = synthesize(_cfg(tiny, tmp_path / "c.safetensors", seed=1))
    assert c["transitions"] == 30 and not torch.equal(load_file(str(tmp_path / "c.safetensors"))["obs"], a["obs"])
    g1, g2 = chunk_generator(0, 1), chunk_generator(1, 0)  # not seed + index: distinct streams
    assert not torch.equal(torch.randn(4, generator=g1), torch.randn(4, generator=g2))


def test_policy_weights_round_trip_and_guide(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny / "minari"))
    ds = load_dataset(DATASET)
    agent = build_learner("td3bc", ds.transitions(), ds.action_low, ds.action_high, seed=3)
    save_file(learner_weights(agent), str(tmp_path / "agent.safetensors"))
    fresh = load_learner_weights(build_learner("td3bc", ds.transitions(), ds.action_low, ds.action_high, seed=4),
                                 tmp_path / "agent.safetensors")
    assert all(torch.equal(v, learner_weights(fresh)[k]) for k, v in learner_weights(agent).items())
    with pytest.raises(ValueError, match="does not hold IQL weights"):
        load_learner_weights(build_learner("iql", ds.transitions(), ds.action_low, ds.action_high),
                             tmp_path / "agent.safetensors")
    unguided = synthesize(_cfg(tiny, tmp_path / "u.safetensors"))
    guided = synthesize(_cfg(tiny, tmp_path / "g.safetensors", policy=str(tmp_path / "agent.safetensors"),
                             guidance_coeff=1.0))
    assert unguided["generator"] == "unguided" and guided["generator"] == "pgd"
    u, g = (load_file(str(tmp_path / f)) for f in ("u.safetensors", "g.safetensors"))
    with torch.no_grad():  # guidance moves the actions toward the policy's (same noise, same model)
        gap_u = (u["act"] - agent(u["obs"])).square().mean()
        gap_g = (g["act"] - agent(g["obs"])).square().mean()
    assert gap_g < gap_u, (float(gap_g), float(gap_u))


def test_bad_input_is_refused_before_any_work(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny / "minari"))
    with pytest.raises(ValueError, match="exactly one generator"):
        synthesize(SynthesizeConfig(dataset_id=DATASET, out=str(tmp_path / "none.safetensors")))
    with pytest.raises(ValueError, match="exactly one generator"):
        SynthesizeConfig(dataset_id=DATASET, pipeline="p", synther="s")
    with pytest.raises(ValueError, match="must be a .safetensors file"):
        SynthesizeConfig(dataset_id=DATASET, pipeline="p", out="syn.pt")
    with pytest.raises(ValueError, match="SynthER samples transitions unguided"):
        SynthesizeConfig(dataset_id=DATASET, synther="s", policy="a.safetensors")
    out = tmp_path / "kept.safetensors"
    out.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError, match="kept.safetensors"):
        synthesize(_cfg(tiny, out))
    assert out.read_bytes() == b"the user's file"
    with pytest.raises(FileNotFoundError, match="--pipeline .*missing: no such file or folder"):
        synthesize(_cfg(tiny, tmp_path / "x.safetensors", pipeline=str(tmp_path / "missing")))
    assert main(["offline", "synthesize", "--dataset-id", DATASET, "--pipeline", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "x.safetensors")]) != 0
    assert not (tmp_path / "x.safetensors").exists()


def test_simulator_relabel_gives_the_real_next_states(tiny, monkeypatch):
    """relabel_with_simulator (train-agent's relabel='simulator' diagnostic): on real Hopper transitions whose
    next_obs / rew / done were scrambled it restores the recorded ones (up to float32 and velocity clipping)."""
    from gendiff.offline.dynamics import relabel_with_simulator
    from gendiff.offline.pgd_loop import SyntheticSource, TrainAgentConfig

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny / "minari"))
    ds = load_dataset(DATASET)
    tr = {k: v[:50] for k, v in ds.transitions().items()}
    scrambled = {**tr, "next_obs": tr["next_obs"].flip(0), "rew": torch.zeros(50), "done": torch.ones(50)}
    fixed = relabel_with_simulator("Hopper-v5", scrambled)
    assert torch.allclose(fixed["next_obs"], tr["next_obs"], atol=1e-4)
    assert torch.allclose(fixed["rew"], tr["rew"], atol=1e-4) and torch.equal(fixed["done"], tr["done"])
    assert torch.equal(fixed["obs"], tr["obs"]) and torch.equal(fixed["act"], tr["act"])
    cfg = TrainAgentConfig(dataset_id=DATASET, synthetic="unguided", diffusion_dir=str(tiny / "diff" / "pipeline"),
                           num_synthetic=14, sample_horizon=8, num_inference_steps=3, sampler="euler",
                           relabel="simulator", progress=False)
    out = SyntheticSource(cfg, ds, tiny / "unused").generate(None)
    again = relabel_with_simulator("Hopper-v5", out)
    assert torch.allclose(out["next_obs"], again["next_obs"]) and out["obs"].shape[0] > 0
