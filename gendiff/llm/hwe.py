"""High-window-entropy (HWE) tokens (ARES, Chen et al. 2025, Sec. 3 "when to explore").

The window entropy of position t is the mean token entropy over a window of w tokens,
H_bar(t:w) = (1 / w) sum_{tau = t}^{t + w - 1} H_tau (the paper's definition; the authors' code,
``compute_reasoning_token_window_entropy``, averages the w tokens *after* a trigger token t, i.e. t + 1 .. t + w).
A token is an HWE token when its window entropy reaches a threshold tau_H. All of it is built on
``gendiff.entropy.windowed_entropy`` (the trailing mean over the last w valid tokens), shifted:

1. ``forward_window_entropy``: the mean over the w valid tokens *after* t (the authors' window) is the trailing
   window of the valid token w steps later; positions without w later valid tokens have no full window (NaN-free:
   value 0, ``full`` False), as in the authors' code, which skips them.
2. ``hwe_threshold``: the authors' dynamic threshold: per row the ``percentile`` (95) of its window entropies,
   the batch median of those, smoothed by an exponential moving average (decay 0.99) over steps
   (``HWEThreshold``).
3. ``hwe_mask`` / ``hwe_count``: the HWE positions (full window and window entropy >= tau_H) and their count per row.
   The authors count only candidate tokens from a list of reasoning words ("wait", "but", ...); the arithmetic
   task has none, so every token (a digit: the tokenizer is char-level) is a candidate.
4. ``trailing_hwe``: the causal variant used while sampling (the future is unknown at rollout time): the
   trailing window of the last w tokens up to t (``windowed_entropy`` itself), the exploration trigger of
   ``gendiff.llm.ares``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gendiff.entropy import windowed_entropy


def _check(entropy: Tensor, mask: Tensor, window: int) -> Tensor:
    if not isinstance(entropy, Tensor) or entropy.dim() != 2:
        raise ValueError(f"entropy must be a [B, T] tensor, got {getattr(entropy, 'shape', type(entropy).__name__)}")
    if not isinstance(mask, Tensor) or mask.shape != entropy.shape:
        raise ValueError(f"mask must be [B, T] = {tuple(entropy.shape)}, got {tuple(getattr(mask, 'shape', ()))}")
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"window must be a positive int, got {window!r}")
    return mask.to(entropy.device) != 0


def forward_window_entropy(entropy: Tensor, mask: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Step 1: the mean entropy of the ``window`` valid tokens after each valid token.

    Args:
        entropy: [B, T] token entropy; mask: [B, T] valid tokens (bool or 0/1); window: w >= 1.

    Returns:
        (window entropy [B, T], full [B, T] bool: t is valid and w valid tokens follow it); 0 where not full.
    """
    m = _check(entropy, mask, window)
    trailing = windowed_entropy(entropy, m, window)  # mean of the last min(c, w) valid tokens up to each position
    rank = m.long().cumsum(-1) - 1  # rank of each valid token among its row's valid tokens
    n = m.sum(-1, keepdim=True)
    # valid positions in rank order: position of the valid token of rank r (stable: valid first, in order)
    order = torch.argsort((~m).to(torch.int8), dim=-1, stable=True)
    target_rank = (rank + window).clamp(max=entropy.shape[1] - 1)  # the token w valid steps later
    full = m & (rank + window < n)
    later = trailing.gather(-1, order.gather(-1, target_rank.clamp_min(0)))
    return torch.where(full, later, torch.zeros_like(later)), full


def hwe_threshold(entropy: Tensor, mask: Tensor, window: int, percentile: float = 95.0) -> float:
    """Step 2 for one batch: the median over rows of each row's ``percentile`` of its full-window entropies
    (rows without a full window are skipped; 0.0 when no row has one)."""
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    win, full = forward_window_entropy(entropy, mask, window)
    per_row = [torch.quantile(win[b][full[b]].double(), percentile / 100.0) for b in range(win.shape[0])
               if bool(full[b].any())]
    return float(torch.stack(per_row).median()) if per_row else 0.0


@dataclass
class HWEThreshold:
    """Step 2 across steps: tau_H <- decay tau_H + (1 - decay) batch value (the first batch sets it).

    Attributes: window (w, 4), percentile (95), decay (0.99), value (None until the first update)."""

    window: int = 4
    percentile: float = 95.0
    decay: float = 0.99
    value: float | None = None

    def update(self, entropy: Tensor, mask: Tensor) -> float:
        """Fold in one batch ([B, T] entropy and mask); returns the new threshold."""
        batch = hwe_threshold(entropy, mask, self.window, self.percentile)
        self.value = batch if self.value is None else self.decay * self.value + (1.0 - self.decay) * batch
        return self.value


def hwe_mask(entropy: Tensor, mask: Tensor, window: int, threshold: float) -> Tensor:
    """Step 3: [B, T] bool, the HWE tokens: a full forward window whose mean entropy is >= ``threshold``."""
    win, full = forward_window_entropy(entropy, mask, window)
    return full & (win >= threshold)


def hwe_count(entropy: Tensor, mask: Tensor, window: int, threshold: float) -> Tensor:
    """Step 3: [B] number of HWE tokens per row (long)."""
    return hwe_mask(entropy, mask, window, threshold).sum(-1)


def trailing_hwe(entropy: Tensor, mask: Tensor, window: int, threshold: float) -> Tensor:
    """Step 4: [B, T] bool, valid positions whose trailing window (the last min(c, w) valid tokens, t included)
    has mean entropy >= ``threshold`` (causal: usable while sampling)."""
    m = _check(entropy, mask, window)
    return m & (windowed_entropy(entropy, m, window) >= threshold)
