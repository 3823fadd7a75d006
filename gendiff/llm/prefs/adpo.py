"""ADPO, anchored direct preference optimisation (Wang Zixian 2025, arXiv 2510.18913), pairwise and listwise.

The paper's objective (abstract; the seed-paper file in /work/shared/reference holds only the abstract, so the
steps cite the objective and the paper's named variants, not equation numbers):

    L = KL(q || softmax((l - l_anc) / tau_anc)) over the K candidates of a prompt,

with l the policy's sequence log-probs, l_anc the anchor policy's, tau_anc the anchor temperature and q a target
distribution over the candidates. Steps (per prompt, over its valid candidates):

1. Anchored scores s_k = (l_k - l_anc_k) / tau_anc (the "anchored logits").
2. p = softmax(s) (masked: padding candidates get probability 0).
3. Target q:
   - ``adpo`` (pairwise anchored Soft-DPO): K = 2, q = (1 - eps, eps) for (chosen, rejected); eps is the soft
     preference (``label_smoothing``). With eps = 0 and tau_anc = 1 / beta the loss *is* DPO (the paper's
     special case; tests/llm/test_prefs_losses.py checks it).
   - ``adpo_listwise`` (listwise anchored Soft-DPO with raw rewards): q = softmax(r / tau_q) over the list.
4. L = sum_k q_k (log q_k - log p_k) (0 log 0 = 0), averaged over prompts.

The anchor is whatever ``ref_logp`` holds: the frozen reference (fixed anchor) or a moving copy of the policy
(dynamic anchor: an exponential moving average of the policy's weights, alpha = 0 being the previous policy);
``gendiff.llm.prefs.trainer`` provides both (``anchor: fixed | ema``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .common import check_preference_inputs, pair_metrics, register_preference_loss


@dataclass
class ADPOConfig:
    """Pairwise ADPO.

    Attributes:
        tau_anc: anchor temperature; the trust region's curvature scales as 1 / tau_anc^2.
        label_smoothing: eps of the soft target q = (1 - eps, eps), in [0, 0.5) (0: hard labels, i.e. DPO
            with beta = 1 / tau_anc).
    """

    tau_anc: float = 1.0
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if not self.tau_anc > 0:
            raise ValueError(f"ADPOConfig.tau_anc must be positive, got {self.tau_anc}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"ADPOConfig.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


@dataclass
class ADPOListwiseConfig:
    """Listwise ADPO.

    Attributes:
        tau_anc: anchor temperature.
        reward_temperature: tau_q of the target q = softmax(r / tau_q) (small: nearly all mass on the best).
    """

    tau_anc: float = 1.0
    reward_temperature: float = 0.25

    def __post_init__(self) -> None:
        if not self.tau_anc > 0 or not self.reward_temperature > 0:
            raise ValueError(f"ADPOListwiseConfig.tau_anc and reward_temperature must be positive, got "
                             f"{self.tau_anc}, {self.reward_temperature}")


def anchored_kl(logp: Tensor, anchor_logp: Tensor, q: Tensor, mask: Tensor, tau_anc: float) -> tuple[Tensor, Tensor]:
    """Steps 1, 2 and 4: per-prompt KL(q || softmax((l - l_anc) / tau_anc)).

    Args:
        logp, anchor_logp: [P, K] sequence log-probs (policy with gradient, anchor without).
        q: [P, K] target distribution, 0 at mask = 0.
        mask: [P, K] bool, the valid candidates.
        tau_anc: anchor temperature.

    Returns:
        (kl [P], anchored scores s [P, K]; -inf at mask = 0).
    """
    s = ((logp - anchor_logp) / tau_anc).masked_fill(~mask, -torch.inf)  # 1.
    log_p = torch.log_softmax(s, dim=-1)  # 2.
    log_q = torch.where(q > 0, q.clamp_min(torch.finfo(q.dtype).tiny).log(), torch.zeros_like(q))
    terms = torch.where(mask & (q > 0), q * (log_q - log_p), torch.zeros_like(q))  # 4. (0 log 0 = 0)
    return terms.sum(-1), s


@register_preference_loss("adpo", ADPOConfig, kind="pairwise")
def adpo_loss(logp: Tensor, anchor_logp: Tensor, config: ADPOConfig, rewards: Tensor | None = None,
              mask: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Pairwise ADPO on P pairs.

    Args:
        logp: [P, 2] sequence log-probs (chosen, rejected) under the policy, with gradient.
        anchor_logp: [P, 2] the same under the anchor policy.
        config: ``ADPOConfig``.
        rewards, mask: not used (one signature for every preference loss).

    Returns:
        (scalar loss, metrics: loss/preference, prefs/accuracy, prefs/margin = mean of s_chosen - s_rejected).
    """
    logp, anchor_logp, m = check_preference_inputs("adpo", logp, anchor_logp, pairwise=True)
    eps = config.label_smoothing
    q = torch.tensor([1.0 - eps, eps], dtype=logp.dtype, device=logp.device).expand_as(logp)  # 3. soft target
    kl, s = anchored_kl(logp, anchor_logp, q, m, config.tau_anc)
    loss = kl.mean()
    return loss, pair_metrics((s[:, 0] - s[:, 1]).detach(), loss)


@register_preference_loss("adpo_listwise", ADPOListwiseConfig, kind="listwise")
def adpo_listwise_loss(logp: Tensor, anchor_logp: Tensor, config: ADPOListwiseConfig, rewards: Tensor | None = None,
                       mask: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Listwise ADPO on P lists of up to K candidates.

    Args:
        logp: [P, K] sequence log-probs under the policy, with gradient.
        anchor_logp: [P, K] the same under the anchor policy.
        config: ``ADPOListwiseConfig``.
        rewards: [P, K] the candidates' rewards (required).
        mask: [P, K] valid candidates (None: all); each row needs >= 2.

    Returns:
        (scalar loss, metrics: loss/preference, prefs/top1 = share of lists whose highest anchored score is a
        highest-reward candidate).
    """
    if rewards is None:
        raise ValueError("adpo_listwise needs rewards=[P, K] (the candidates' rewards)")
    logp, anchor_logp, m = check_preference_inputs("adpo_listwise", logp, anchor_logp, pairwise=False,
                                                   mask=mask, rewards=rewards)
    r = rewards.to(logp.dtype).masked_fill(~m, -torch.inf)
    q = torch.softmax(r / config.reward_temperature, dim=-1)  # 3. target from raw rewards
    kl, s = anchored_kl(logp, anchor_logp, q, m, config.tau_anc)
    loss = kl.mean()
    with torch.no_grad():
        top = s.argmax(-1, keepdim=True)
        top1 = (r.gather(-1, top) == r.max(-1, keepdim=True).values).float().mean()
    return loss, {"loss/preference": float(loss.detach()), "prefs/top1": float(top1)}
