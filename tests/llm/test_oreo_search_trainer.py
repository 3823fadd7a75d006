"""OREO on a real tiny LM: the value model's state alignment and save / load, the value-guided beam search (greedy at
B = E = 1, the known best sequence under a known value), the trainer's joint step, the ``gendiff llm oreo`` commands
at tiny sizes, and clear errors for bad input."""

from __future__ import annotations

import json
import random

import pytest
import torch
from datasets import DatasetDict, load_from_disk

from gendiff.llm.evaluation import teacher_forced_batch
from gendiff.llm.oreo import (
    TRAJECTORY_COLUMNS,
    OREOTrainConfig,
    OREOTrainer,
    SearchConfig,
    ValueModel,
    last_values,
    load_value_model,
    make_trajectories,
    save_value_model,
    state_values,
    value_guided_search,
)
from gendiff.llm.sampling import sample_completions
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_oreo")
    return build_tiny_lm(seed=0, sft_steps=40, out_dir=path, layers=2, hidden=64, batch_size=32)


@pytest.fixture(scope="module")
def data(tiny):
    prompts = ArithmeticTask().sample(12, random.Random(3))[0]
    return make_trajectories(tiny.model, tiny.tokenizer, prompts, arithmetic_reward, k=3, seed=0)


def test_trajectories_have_the_promised_columns(data):
    traj = data["trajectories"]
    assert tuple(traj.column_names) == TRAJECTORY_COLUMNS and len(traj) > 12
    assert set(traj["reward"]) <= {0.0, 1.0}
    assert traj["reward"] == arithmetic_reward(traj["prompt"], traj["completion"])


def test_state_values_read_each_state_at_its_last_token(tiny, tmp_path):
    torch.manual_seed(0)
    value = ValueModel.from_causal_lm(tiny.model)
    torch.nn.init.normal_(value.head.weight)  # a non-trivial head
    tok = tiny.tokenizer
    prompts, comps = ["12+34=", "5+67="], [tok("46", add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
                                          tok("7", add_special_tokens=False)["input_ids"]]
    batch = teacher_forced_batch(tok, prompts, comps)
    with torch.no_grad():
        v = state_values(value, batch)
        for b, (p, c) in enumerate(zip(prompts, comps, strict=True)):
            for t in range(len(c) + 1):  # s_0 .. s_T
                ids = torch.tensor([tok(p)["input_ids"] + c[:t]])
                assert float(v[b, t]) == pytest.approx(float(last_values(value)(ids, torch.ones_like(ids))[0]), abs=1e-5)
        save_value_model(value, tmp_path / "v")
        again = load_value_model(tmp_path / "v")
        assert torch.allclose(state_values(again, batch), v, atol=1e-6)


def test_search_with_one_beam_and_one_expansion_is_greedy(tiny):
    held = ArithmeticTask().heldout(12)
    value = ValueModel.from_causal_lm(tiny.model)
    found = value_guided_search(tiny.model, last_values(value), tiny.tokenizer, held, SearchConfig(1, 1, 8))
    enc = tiny.tokenizer(held, return_tensors="pt", padding=True)
    g = sample_completions(tiny.model, enc["input_ids"], enc["attention_mask"], 8, [tiny.tokenizer.eos_token_id],
                           tiny.tokenizer.pad_token_id, greedy=True)
    assert found.texts == tiny.tokenizer.batch_decode(g.completion_ids, skip_special_tokens=True)


def test_search_with_a_known_value_finds_the_known_best_sequence(tiny):
    tok = tiny.tokenizer
    prompt = "12+34="
    n_prompt = len(tok(prompt)["input_ids"])
    target = tok("777", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # not what the policy says

    def value_fn(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """1 per correct leading token of the target; a wrong token anywhere scores -1."""
        out = []
        for row in ids[:, n_prompt:].tolist():
            ok = row == target[: len(row)]
            out.append(float(len(row)) if ok else -1.0)
        return torch.tensor(out)

    greedy = value_guided_search(tiny.model, value_fn, tok, [prompt], SearchConfig(1, 1))
    assert greedy.token_ids[0] != target
    found = value_guided_search(tiny.model, value_fn, tok, [prompt], SearchConfig(2, len(tok), 8))
    assert found.token_ids[0] == target and found.texts == ["777"] and found.scores == [4.0]


def test_one_trainer_step_updates_both_models_and_writes_them(tiny, data, tmp_path):
    model = type(tiny.model).from_pretrained(tiny.path).eval()
    cfg = OREOTrainConfig(steps=2, batch_size=8, alpha=0.1, lr=1e-3, value_lr=1e-3)
    trainer = OREOTrainer(model, tiny.tokenizer, data, cfg, out_dir=tmp_path / "run")
    p0 = [p.detach().clone() for p in model.parameters()]
    h0 = trainer.value_model.head.weight.detach().clone()
    logs = trainer.train(progress=False)
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(m["loss/value"])) for m in logs)
    assert logs[0]["oreo/kl"] == pytest.approx(0.0, abs=1e-6) and logs[1]["oreo/kl"] > 0  # starts at pi_ref
    assert any(not torch.equal(a, b) for a, b in zip(p0, model.parameters(), strict=True))
    assert not torch.equal(h0, trainer.value_model.head.weight)
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    assert isinstance(load_value_model(tmp_path / "run" / "value"), ValueModel)


def test_cli_make_train_search(tiny, tmp_path, capsys):
    from gendiff.cli import main

    d, r = tmp_path / "d", tmp_path / "r"
    assert main(["llm", "oreo", "make", "--out", str(d), "--model", str(tiny.path), "--prompts", "8", "--k", "2",
                 "--eval-prompts", "6", "--no-progress"]) in (0, None)
    stats = json.loads((d / "stats.json").read_text())
    assert stats["trajectories"] == len(load_from_disk(str(d / "data"))["trajectories"])
    main(["llm", "oreo", "train", "--data", str(d), "--out", str(r), "--steps", "1", "--batch-size", "4",
          "--eval-prompts", "6", "--no-progress"])
    summary = json.loads((r / "summary.json").read_text())
    assert 0.0 <= summary["greedy_after"] <= 1.0 and (r / "summary.md").is_file()
    main(["llm", "oreo", "search", "--run", str(r), "--eval-prompts", "6", "--beam-width", "2", "--expansions", "2",
          "--no-progress"])
    result = json.loads((r / "search.json").read_text())
    assert result["beam_width"] == 2 and 0.0 <= result["search"] <= 1.0 and (r / "search.md").is_file()
    capsys.readouterr()
    assert main(["llm", "oreo", "train", "--data", str(d), "--out", str(r), "--eval-prompts", "6"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["llm", "oreo", "train", "--data", str(d), "--out", str(tmp_path / "x"), "--eval-prompts", "50"]) == 2
    assert "would overlap the data" in capsys.readouterr().err
    assert main(["llm", "oreo", "search", "--run", str(r), "--beam-width", "0"]) == 2
    assert "beam_width (--beam-width) must be >= 1, got 0" in capsys.readouterr().err


def test_bad_input_gives_clear_errors(tiny, data):
    with pytest.raises(ValueError, match="'trajectories' split"):
        OREOTrainer(tiny.model, tiny.tokenizer, DatasetDict({"other": data["trajectories"]}))
    with pytest.raises(ValueError, match=r"batch_size \(--batch-size\) must be >= 1, got 0"):
        OREOTrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="beta"):
        OREOTrainConfig(beta=-1.0)
    with pytest.raises(ValueError, match=r"expansions \(--expansions\) must be >= 1, got 0"):
        SearchConfig(expansions=0)
    with pytest.raises(ValueError, match="at least one prompt"):
        value_guided_search(tiny.model, lambda i, m: torch.zeros(len(i)), tiny.tokenizer, [])
    with pytest.raises(FileNotFoundError, match="not a saved OREO value model"):
        load_value_model(tiny.path)


@pytest.mark.parametrize("name", ["llm_oreo_make.yaml", "llm_oreo_train.yaml", "llm_oreo_search.yaml"])
def test_yaml_mirrors_the_dataclass_defaults(name):
    from pathlib import Path

    from gendiff.config import from_dict, load_yaml
    from gendiff.llm.oreo.run import OREOMakeConfig, OREOSearchConfig, OREOTrainRunConfig

    cls = {"make": OREOMakeConfig, "train": OREOTrainRunConfig, "search": OREOSearchConfig}[name[9:-5]]
    data = load_yaml(Path(__file__).resolve().parents[2] / "configs" / name)
    assert set(data) == set(cls.__dataclass_fields__) and from_dict(cls, data) == cls()


def test_the_value_learns_a_reward_that_its_features_show(tiny):
    """Known answer: R = 1 exactly for the completions that start with "1"; after 30 joint steps V after "1" exceeds V
    after "2" on an unseen prompt (the trainer's value path learns a reward its features show)."""
    from datasets import Dataset

    tok = tiny.tokenizer
    prompts = ArithmeticTask().sample(8, random.Random(5))[0]
    rows = {"prompt": [], "completion_ids": [], "reward": []}
    for p in prompts:
        for text in ("12", "21", "13", "23"):
            rows["prompt"].append(p)
            rows["completion_ids"].append(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
            rows["reward"].append(float(text[0] == "1"))
    model = type(tiny.model).from_pretrained(tiny.path).eval()
    trainer = OREOTrainer(model, tok, Dataset.from_dict(rows),
                          OREOTrainConfig(steps=30, batch_size=16, lr=1e-5, value_lr=1e-3, seed=0))
    trainer.train(progress=False)
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in ("13", "23")]
    with torch.no_grad():
        v = state_values(trainer.value_model, teacher_forced_batch(tok, ["50+50="] * 2, ids))  # an unseen prompt
    assert float(v[0, 1]) > float(v[1, 1]) + 0.3, v  # right after the deciding token (measured gap 0.46)
    assert float(v[0, -1]) > float(v[1, -1]) + 0.1, v  # after EOS (measured gap 0.16)
