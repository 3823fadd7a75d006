"""DPO, the pairwise baseline (Rafailov et al. 2023, "Direct Preference Optimization", eq. 7).

L = -log sigmoid(beta [(log pi(y_c|x) - log pi_ref(y_c|x)) - (log pi(y_r|x) - log pi_ref(y_r|x))]),
with sequence log-probs (sums over the completion's tokens), averaged over the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .common import check_preference_inputs, pair_metrics, register_preference_loss


@dataclass
class DPOConfig:
    """DPO's one setting.

    Attributes:
        beta: inverse temperature of the implicit reward beta log(pi / pi_ref) (0.1 in the paper's runs).
    """

    beta: float = 0.1

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"DPOConfig.beta must be positive, got {self.beta}")


@register_preference_loss("dpo", DPOConfig, kind="pairwise")
def dpo_loss(logp: Tensor, ref_logp: Tensor, config: DPOConfig, rewards: Tensor | None = None,
             mask: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """DPO on P pairs.

    Args:
        logp: [P, 2] sequence log-probs (chosen, rejected) under the policy, with gradient.
        ref_logp: [P, 2] the same under the frozen reference policy.
        config: ``DPOConfig``.
        rewards, mask: not used by DPO (accepted so that every preference loss has one signature).

    Returns:
        (scalar loss, metrics: loss/preference, prefs/accuracy, prefs/margin = the mean of beta * h).
    """
    logp, ref_logp, _ = check_preference_inputs("dpo", logp, ref_logp, pairwise=True)
    ratio = logp - ref_logp  # 1. log pi / pi_ref of each completion, [P, 2]
    h = ratio[:, 0] - ratio[:, 1]  # 2. chosen minus rejected, [P]
    loss = -F.logsigmoid(config.beta * h).mean()  # 3. eq. 7, mean over pairs
    return loss, pair_metrics(config.beta * h.detach(), loss)
