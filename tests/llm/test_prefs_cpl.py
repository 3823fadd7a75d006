"""CPL equals a literal float64 per-example reference of L_CPL(lambda); its gradient raises the chosen completion;
one CPL step on a real tiny LM raises the chosen over the rejected."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from datasets import Dataset, DatasetDict
from test_prefs_losses import pairs  # the same random (policy, reference) log-prob pairs

from gendiff.llm.evaluation import teacher_forced_batch
from gendiff.llm.prefs import PREFERENCE_LOSSES, CPLConfig, cpl_loss
from gendiff.llm.prefs.trainer import PrefTrainConfig, PrefTrainer
from gendiff.llm.tasks import build_tiny_lm
from gendiff.llm.trainer import policy_logp_entropy

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def test_cpl_is_registered_as_a_pairwise_loss():
    fn = PREFERENCE_LOSSES.get("cpl")
    assert fn.kind == "pairwise" and fn.config_class is CPLConfig


@pytest.mark.parametrize("alpha,lam", [(0.1, 0.5), (1.0, 1.0), (2.0, 0.25)])
def test_cpl_matches_reference(alpha, lam):
    logp, ref = pairs(0)
    loss, metrics = cpl_loss(logp, ref, CPLConfig(alpha=alpha, conservative=lam))
    per, agree = [], []
    for p in range(logp.shape[0]):
        s_pos, s_neg = alpha * float(logp[p, 0]), alpha * float(logp[p, 1])
        # -log exp(S+) / (exp(S+) + exp(lambda S-)), written out
        per.append(-(s_pos - math.log(math.exp(s_pos) + math.exp(lam * s_neg))))
        agree.append(s_pos > s_neg)
    assert loss.item() == pytest.approx(sum(per) / len(per), abs=1e-12)
    assert metrics["prefs/accuracy"] == pytest.approx(sum(agree) / len(agree))


def test_cpl_ignores_the_reference():
    logp, ref = pairs(1)
    a, _ = cpl_loss(logp, ref)
    b, _ = cpl_loss(logp, ref + 5.0)
    assert a.item() == b.item()


def test_cpl_gradient_raises_the_chosen_and_lowers_the_rejected_less():
    """d L / d log pi < 0 on the chosen, > 0 on the rejected, and the rejected's push is lambda times smaller."""
    logp, ref = pairs(2)
    lam = 0.5
    loss, _ = cpl_loss(logp, ref, CPLConfig(alpha=1.0, conservative=lam))
    grad, = torch.autograd.grad(loss, logp)
    assert (grad[:, 0] < 0).all() and (grad[:, 1] > 0).all()
    assert torch.allclose(grad[:, 1], -lam * grad[:, 0], atol=1e-15)


def test_cpl_rejects_bad_input():
    logp, ref = pairs(3)
    with pytest.raises(ValueError, match=r"\[P, 2\]"):
        cpl_loss(torch.zeros(4, 3), torch.zeros(4, 3))
    nan = logp.detach().clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        cpl_loss(nan, ref)
    with pytest.raises(ValueError, match="conservative"):
        CPLConfig(conservative=1.5)
    with pytest.raises(ValueError, match="alpha must be positive"):
        CPLConfig(alpha=0.0)


def test_one_cpl_step_on_a_tiny_lm_raises_the_chosen(tmp_path):
    tiny = build_tiny_lm(seed=0, sft_steps=20, out_dir=tmp_path, layers=2, hidden=64, batch_size=32)
    model, tok = copy.deepcopy(tiny.model), tiny.tokenizer
    prompt, good, bad = "12+34=", "46", "47"
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in (good, bad)]
    data = DatasetDict({"pairs": Dataset.from_dict({"prompt": [prompt], "chosen_ids": [ids[0]],
                                                    "rejected_ids": [ids[1]]})})

    def margin() -> float:
        batch = teacher_forced_batch(tok, [prompt, prompt], ids)
        with torch.no_grad():
            logp, _ = policy_logp_entropy(model, batch, 1.0)
        seq = (logp * batch.completion_mask).sum(-1)
        return float(seq[0] - seq[1])

    before = margin()
    trainer = PrefTrainer(model, tok, data, PrefTrainConfig(loss="cpl", loss_config={"alpha": 1.0}, steps=1,
                                                            batch_size=1, lr=1e-3))
    trainer.step()
    assert margin() > before + 1e-3
    with pytest.raises(ValueError, match="no moving anchor"):
        PrefTrainer(model, tok, data, PrefTrainConfig(loss="cpl", anchor="ema"))
