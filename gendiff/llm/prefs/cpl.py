"""CPL, contrastive preference learning (Hejna et al. 2023, "Contrastive Preference Learning: Learning from
Human Feedback without RL", arXiv 2310.13639).

The paper's model of preferences is regret-based: a person prefers the segment with the larger discounted sum of
optimal advantages, and in the maximum-entropy setting the optimal advantage is A*(s, a) = alpha log pi*(a | s).
Putting the policy in place of A* in the Bradley-Terry model gives a supervised, reward-free contrastive loss
(the paper's L_CPL), and its conservative variant L_CPL(lambda) down-weights the non-preferred segment:

    L = -log [ exp(S+) / (exp(S+) + exp(lambda S-)) ] = -log sigmoid(S+ - lambda S-),
    S = sum_t gamma^t alpha log pi(a_t | s_t) over a segment.

(/work/shared/reference holds only the abstract; the formula follows the paper's L_CPL(lambda) and
ALGORITHMS.md, so the steps name the objective, not an equation number.) With lambda < 1 and log pi <= 0,
lowering log pi of the rejected segment pays off less than raising the chosen one; the paper shows this makes the
in-distribution (dataset) segments the better optima of an otherwise only convex, not strictly convex loss.

For LLM completions a segment is the completion: its tokens are the actions, the prompt and the earlier tokens
the state, and gamma = 1 (no discount within one answer), so S = alpha log pi(y | x), the sequence log-prob that
the preference trainer already computes. CPL uses no reference model: ``ref_logp`` is accepted (one signature
for every preference loss) and ignored. The paper's optional behaviour-cloning term (CPL-BC) is not included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .common import check_preference_inputs, pair_metrics, register_preference_loss


@dataclass
class CPLConfig:
    """CPL's settings.

    Attributes:
        alpha: temperature of the maximum-entropy advantage A = alpha log pi (0.1 in the paper's runs).
        conservative: lambda, the weight of the non-preferred segment's score, in (0, 1] (1: the unbiased
            L_CPL; the paper's conservative runs use 0.5).
    """

    alpha: float = 0.1
    conservative: float = 0.5

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"CPLConfig.alpha must be positive, got {self.alpha}")
        if not 0.0 < self.conservative <= 1.0:
            raise ValueError(f"CPLConfig.conservative (lambda) must be in (0, 1], got {self.conservative}")


@register_preference_loss("cpl", CPLConfig, kind="pairwise")
def cpl_loss(logp: Tensor, ref_logp: Tensor, config: CPLConfig, rewards: Tensor | None = None,
             mask: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Conservative CPL on P pairs of completions.

    Args:
        logp: [P, 2] sequence log-probs log pi(y | x) (chosen, rejected) under the policy, with gradient; each
            is the sum of the completion's token log-probs, i.e. the segment's sum of log pi(a_t | s_t).
        ref_logp: [P, 2], checked for shape but not used (CPL is reference-free).
        config: ``CPLConfig``.
        rewards, mask: not used (one signature for every preference loss).

    Returns:
        (scalar loss, metrics: loss/preference, prefs/accuracy and prefs/margin of the policy's own preference
        alpha (log pi(y_c|x) - log pi(y_r|x)), i.e. without the conservative lambda).
    """
    logp, _, _ = check_preference_inputs("cpl", logp, ref_logp, pairwise=True)
    score = config.alpha * logp  # 1. segment scores S = alpha sum_t log pi(a_t|s_t) (gamma = 1), [P, 2]
    logit = score[:, 0] - config.conservative * score[:, 1]  # 2. S+ - lambda S-, [P]
    loss = -F.logsigmoid(logit).mean()  # 3. L_CPL(lambda), Bradley-Terry on the regret model, mean over pairs
    return loss, pair_metrics((score[:, 0] - score[:, 1]).detach(), loss)
