"""Every entropy and log-prob formula of gendiff, written once.

Users: ADS measurement selection (particle entropy), GoRL / SAC (Gaussian and tanh-Gaussian policies),
PGD (``atanh_clipped``), LLM RL (token entropy, token log-probs, windowed entropy, masked statistics,
the Clip-Cov / KL-Cov log-prob x advantage covariance).

Conventions: every function checks its shapes and raises ``ValueError`` naming the argument; non-finite
inputs that would silently turn into NaN raise ``ValueError`` too. Reductions run in float32 (float64 for
float64 input), also for bf16 / fp16 input.

The formulas live in one module per family (all re-exported here, so ``from gendiff.entropy import ...``
is the one import users need):

- :mod:`gendiff.entropy.particles`: ADS particle entropy scores and candidate selection;
- :mod:`gendiff.entropy.tokens`: chunked token entropy and token log-probs, per-position categorical KL;
- :mod:`gendiff.entropy.masked`: masked statistics and the log-prob x advantage covariance;
- :mod:`gendiff.entropy.gaussian`: Gaussian and tanh-Gaussian policies.
"""

from gendiff.entropy.gaussian import (
    atanh_clipped,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
)
from gendiff.entropy.masked import logp_advantage_covariance, masked_mean, masked_var, windowed_entropy
from gendiff.entropy.particles import gaussian_mixture_entropy_mc, particle_entropy_scores, select_max_entropy
from gendiff.entropy.tokens import token_entropy, token_kl, token_logprobs

__all__ = [
    "atanh_clipped", "gaussian_entropy", "gaussian_kl", "gaussian_log_prob", "gaussian_mixture_entropy_mc",
    "logp_advantage_covariance", "masked_mean", "masked_var", "particle_entropy_scores", "select_max_entropy",
    "tanh_gaussian_log_prob", "tanh_gaussian_sample", "token_entropy", "token_kl", "token_logprobs", "windowed_entropy",
]
