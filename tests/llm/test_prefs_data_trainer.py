"""Preference data (columns, skipped ties, exact seeded flips), one preference step's sign on a real tiny LM, the
``gendiff llm prefs`` commands at tiny sizes, and clear errors for bad input."""

from __future__ import annotations

import json
import random

import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk

from gendiff.llm.evaluation import teacher_forced_batch
from gendiff.llm.prefs.data import (
    LIST_COLUMNS,
    PAIR_COLUMNS,
    add_label_noise,
    flip_indices,
    make_preferences,
)
from gendiff.llm.prefs.trainer import PrefTrainConfig, PrefTrainer
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm
from gendiff.llm.trainer import policy_logp_entropy


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_prefs")
    return build_tiny_lm(seed=0, sft_steps=40, out_dir=path, layers=2, hidden=64, batch_size=32)


def partial(prompts, completions):
    return arithmetic_reward(prompts, completions, partial_credit=True)


@pytest.fixture(scope="module")
def clean(tiny):
    prompts = ArithmeticTask().sample(24, random.Random(3))[0]
    return make_preferences(tiny.model, tiny.tokenizer, prompts, partial, k=4, seed=0)


def test_the_data_has_the_promised_columns_and_skips_ties(clean):
    assert set(clean) == {"pairs", "lists"}
    assert tuple(clean["pairs"].column_names) == PAIR_COLUMNS and tuple(clean["lists"].column_names) == LIST_COLUMNS
    pairs, lists = clean["pairs"], clean["lists"]
    assert len(pairs) > 10 and len(lists) > 3
    assert all(c > r for c, r in zip(pairs["chosen_reward"], pairs["rejected_reward"], strict=True))  # no ties
    assert not any(pairs["flipped"]) and not any(lists["flipped"])
    for row in lists:
        assert max(row["rewards"]) > min(row["rewards"]) and len(row["completions"]) == len(row["completion_ids"])
        assert len({tuple(i) for i in row["completion_ids"]}) == len(row["completion_ids"])  # deduplicated


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.4, 1.0])
def test_the_flip_fraction_is_exact_recorded_and_nested(clean, fraction):
    noisy = add_label_noise(clean, fraction, seed=7)
    n, m = len(clean["pairs"]), len(clean["lists"])
    assert sum(noisy["pairs"]["flipped"]) == round(fraction * n) and sum(noisy["lists"]["flipped"]) == round(fraction * m)
    for a, b in zip(clean["pairs"], noisy["pairs"], strict=True):
        if b["flipped"]:
            assert (b["chosen_ids"], b["rejected_ids"], b["chosen_reward"]) == (a["rejected_ids"], a["chosen_ids"],
                                                                                a["rejected_reward"])
        else:
            assert b == a
    for a, b in zip(clean["lists"], noisy["lists"], strict=True):
        assert b["true_rewards"] == a["rewards"]
        want = [max(a["rewards"]) + min(a["rewards"]) - r for r in a["rewards"]] if b["flipped"] else a["rewards"]
        assert b["rewards"] == pytest.approx(want)
    assert set(flip_indices(n, 0.2, 7)) <= set(flip_indices(n, 0.4, 7))


def _margin(model, tok, prompt: str, good: str, bad: str) -> float:
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in (good, bad)]
    batch = teacher_forced_batch(tok, [prompt, prompt], ids)
    with torch.no_grad():
        logp, _ = policy_logp_entropy(model, batch, 1.0)
    seq = (logp * batch.completion_mask).sum(-1)
    return float(seq[0] - seq[1])


@pytest.mark.parametrize("loss,anchor", [("dpo", "fixed"), ("adpo", "fixed"), ("adpo_listwise", "fixed"),
                                         ("adpo", "ema")])
def test_one_step_raises_the_chosen_over_the_rejected(tiny, loss, anchor):
    import copy

    model, tok = copy.deepcopy(tiny.model), tiny.tokenizer
    prompt, good, bad = "12+34=", "46", "47"
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in (good, bad)]
    data = DatasetDict({
        "pairs": Dataset.from_dict({"prompt": [prompt], "chosen_ids": [ids[0]], "rejected_ids": [ids[1]]}),
        "lists": Dataset.from_dict({"prompt": [prompt], "completion_ids": [ids], "rewards": [[1.0, 0.0]]}),
    })
    before = _margin(model, tok, prompt, good, bad)
    trainer = PrefTrainer(model, tok, data, PrefTrainConfig(loss=loss, anchor=anchor, steps=1, batch_size=1, lr=1e-3))
    m = trainer.step()
    assert _margin(model, tok, prompt, good, bad) > before + 1e-3, m


def test_cli_make_and_train(tiny, tmp_path, capsys):
    from gendiff.cli import main

    data = tmp_path / "prefs"
    main(["llm", "prefs", "make", "--out", str(data), "--model", str(tiny.path), "--prompts", "16", "--k", "4",
          "--partial-credit", "--noise", "0.25", "--eval-prompts", "20", "--no-progress"])
    stats = json.loads((data / "stats.json").read_text())
    made = load_from_disk(str(data / "data"))
    assert stats["pairs"] == len(made["pairs"]) and stats["flipped_pairs"] == round(0.25 * stats["pairs"])
    for loss in ("adpo", "adpo_listwise"):
        run = tmp_path / loss
        main(["llm", "prefs", "train", "--data", str(data), "--loss", loss, "--steps", "2", "--batch-size", "4",
              "--eval-prompts", "20", "--eval-samples", "2", "--out", str(run), "--no-progress"])
        summary = json.loads((run / "summary.json").read_text())
        assert summary["loss"] == loss and 0.0 <= summary["after"]["greedy"] <= 1.0
        assert (run / "summary.md").is_file() and (run / "final" / "config.json").is_file()
        assert len((run / "log.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["llm", "prefs", "make", "--out", str(data), "--model", str(tiny.path), "--no-progress"]) == 2
    assert "data exists" in capsys.readouterr().err
    assert main(["llm", "prefs", "train", "--data", str(data), "--eval-prompts", "50", "--out", str(tmp_path / "x")]) == 2
    assert "would overlap the data" in capsys.readouterr().err


def test_bad_input_gives_clear_errors(tiny, clean):
    prompts = ["12+34="]
    with pytest.raises(ValueError, match="k .* must be >= 2"):
        make_preferences(tiny.model, tiny.tokenizer, prompts, partial, k=1)
    with pytest.raises(ValueError, match="noise fraction must be in"):
        make_preferences(tiny.model, tiny.tokenizer, prompts, partial, noise=1.5)
    with pytest.raises(ValueError, match="no preference pair"):
        make_preferences(tiny.model, tiny.tokenizer, prompts, lambda p, c: [0.0] * len(c), k=2)
    with pytest.raises(ValueError, match="anchor 'ema' is an ADPO option"):
        PrefTrainer(tiny.model, tiny.tokenizer, clean, PrefTrainConfig(loss="dpo", anchor="ema"))
    with pytest.raises(ValueError, match="'lists' split"):
        PrefTrainer(tiny.model, tiny.tokenizer, DatasetDict({"pairs": clean["pairs"]}),
                    PrefTrainConfig(loss="adpo_listwise"))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        PrefTrainer(tiny.model, tiny.tokenizer, clean, PrefTrainConfig(batch_size=0))
    with pytest.raises(ValueError, match="tau_anc"):
        PrefTrainer(tiny.model, tiny.tokenizer, clean, PrefTrainConfig(loss="adpo", loss_config={"tau_anc": 0}))
    with pytest.raises(ValueError, match="needs --out"):
        from gendiff.llm.prefs.run import PrefMakeConfig, run_make

        run_make(PrefMakeConfig())


@pytest.mark.parametrize("name", ["llm_prefs_make.yaml", "llm_prefs_train.yaml"])
def test_yaml_mirrors_the_dataclass_defaults(name):
    from pathlib import Path

    from gendiff.config import from_dict, load_yaml
    from gendiff.llm.prefs.run import PrefMakeConfig, PrefTrainRunConfig

    cls = PrefMakeConfig if "make" in name else PrefTrainRunConfig
    data = load_yaml(Path(__file__).resolve().parents[2] / "configs" / name)
    assert set(data) == set(cls.__dataclass_fields__) and from_dict(cls, data) == cls()
