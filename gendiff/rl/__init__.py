"""Online RL: SAC, PPO, the probabilistic mixture-of-experts head and GoRL (latent policy + decoder).

Importing this package registers gendiff's gymnasium tasks (``gendiff/TwoModes-v0``, the dm_control ids,
``gendiff/SubmodularCoverage-v0``, ``gendiff/BiodiversityMap-v0``,
``gendiff/Fishery3-v0``, ``gendiff/Fishery1-v0``).
"""

from __future__ import annotations

from gendiff.rl import envs as envs  # noqa: F401  (registers the tasks)
from gendiff.rl import envs_submodular as envs_submodular  # noqa: F401  (registers the submodular grid tasks)
from gendiff.rl import fishery as fishery  # noqa: F401  (registers the fishery tasks)
from gendiff.rl.common import (
    ActionScaler,
    ReplayBuffer,
    check_action_space,
    evaluate,
    make_vec_env,
    soft_update,
)
from gendiff.rl.decoders import DiffusionDecoder, FlowDecoder, IdentityDecoder, decoder_loss, make_decoder
from gendiff.rl.gorl import GoRL, GoRLConfig
from gendiff.rl.pmoe import PMOESAC, MixtureGaussianHead, PMOESACConfig
from gendiff.rl.ppo import PPO, PPOConfig
from gendiff.rl.sac import SAC, SACConfig, TanhGaussianPolicy

__all__ = [
    "PMOESAC", "PPO", "SAC", "ActionScaler", "DiffusionDecoder", "FlowDecoder", "GoRL", "GoRLConfig",
    "IdentityDecoder", "MixtureGaussianHead", "PMOESACConfig", "PPOConfig", "ReplayBuffer", "SACConfig",
    "TanhGaussianPolicy", "check_action_space", "decoder_loss", "evaluate", "make_decoder", "make_vec_env",
    "soft_update",
]
