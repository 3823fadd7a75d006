"""Minari datasets of the safe-or-gamble task (gendiff/rl/gamble.py) from a mix of behaviour policies.

1. Behaviour policies: policy i gambles with probability ``gamble_probs[i]`` at every step (else plays safe); each
   plays an equal share of the ``episodes`` episodes (the remainder goes to the first ones).
2. The episodes become ``EpisodeBuffer`` objects and a Minari dataset, written beside the others under
   ``$MINARI_DATASETS_PATH`` by build-then-swap (:func:`gendiff.offline.datasets.write_buffers`): an existing
   dataset is replaced only with ``force`` and only after the new one is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gendiff.config import check_numbers
from gendiff.offline.datasets import OfflineDataset, check_dataset_id, load_dataset, write_buffers
from gendiff.rl.common import make_env

ENVS = ("gendiff/Gamble-v0", "gendiff/GambleDeterministic-v0")


@dataclass
class MakeGambleConfig:
    """``gendiff offline make-gamble``: a Minari dataset of the safe-or-gamble task (configs/offline_make_gamble.yaml)."""

    env: str = "gendiff/Gamble-v0"  # gendiff/Gamble-v0 (the gamble pays 3 w.p. 0.25) or gendiff/GambleDeterministic-v0
    episodes: int = 3000  # episodes in the dataset
    gamble_probs: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])  # each behaviour policy's P(gamble)
    dataset_id: str = ""  # "" -> gendiff/gamble/mixed-v0 (gendiff/gamble-deterministic/mixed-v0)
    force: bool = False  # replace an existing dataset with this id (after the new one is complete)
    seed: int = 0  # random seed of the behaviour policies and the environment

    def __post_init__(self) -> None:
        if self.env not in ENVS:
            raise ValueError(f"env must be one of {ENVS}, got {self.env!r}")
        check_numbers(self, positive=("episodes",), fraction=("gamble_probs",))
        if not self.gamble_probs:
            raise ValueError("gamble_probs must name at least one behaviour policy")
        if self.dataset_id:
            check_dataset_id(self.dataset_id)


def default_gamble_id(env: str) -> str:
    return "gendiff/gamble/mixed-v0" if env == ENVS[0] else "gendiff/gamble-deterministic/mixed-v0"


def gamble_buffers(env_id: str, episodes: int, gamble_probs: list[float], seed: int) -> list:
    """Step 1: ``episodes`` episodes of the behaviour mix as Minari ``EpisodeBuffer`` objects."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    env, rng = make_env(env_id), np.random.default_rng(seed)
    counts = [episodes // len(gamble_probs) + (i < episodes % len(gamble_probs)) for i in range(len(gamble_probs))]
    buffers = []
    for p, n in zip(gamble_probs, counts):
        for _ in range(n):
            ep = len(buffers)
            obs, _ = env.reset(seed=seed + ep)
            o_list, a_list, r_list, te_list, tr_list = [obs], [], [], [], []
            done = False
            while not done:
                a = int(rng.random() < p)
                obs, r, term, trunc, _ = env.step(a)
                o_list.append(obs), a_list.append(np.int64(a)), r_list.append(float(r))
                te_list.append(bool(term)), tr_list.append(bool(trunc))
                done = term or trunc
            buffers.append(EpisodeBuffer(id=ep, seed=seed + ep, observations=o_list, actions=a_list, rewards=r_list,
                                         terminations=te_list, truncations=tr_list, infos={}))
    env.close()
    return buffers


def make_gamble_dataset(cfg: MakeGambleConfig) -> OfflineDataset:
    """Steps 1-2: build the dataset and return it loaded (FileExistsError when it exists and not ``force``)."""
    dataset_id = cfg.dataset_id or default_gamble_id(cfg.env)
    env = make_env(cfg.env).unwrapped
    opt, safe = env.optimal_return(), env.horizon * env.expected_reward(0)
    gamble = env.horizon * env.expected_reward(1)
    buffers = gamble_buffers(cfg.env, cfg.episodes, cfg.gamble_probs, cfg.seed)
    meta = {"gendiff_behaviour": f"P(gamble) per step in {cfg.gamble_probs}, equal shares",
            "gendiff_optimal_return": opt, "gendiff_seed": cfg.seed}
    write_buffers(dataset_id, buffers, cfg.env, meta, force=cfg.force, ref=(min(safe, gamble), opt),
                  algorithm=f"gendiff behaviour mix {cfg.gamble_probs}",
                  description=f"safe-or-gamble episodes of {cfg.env} from behaviour policies gambling w.p. "
                              f"{cfg.gamble_probs}")
    return load_dataset(dataset_id)


def run_make_gamble(cfg: MakeGambleConfig) -> dict[str, Any]:
    """``gendiff offline make-gamble``: build the dataset and print its summary as JSON."""
    ds = make_gamble_dataset(cfg)
    rets = ds.returns()
    info = {"dataset_id": ds.dataset_id, "env": ds.env_id, "episodes": len(ds.episodes),
            "transitions": ds.num_transitions, "mean_return": float(rets.mean()), "max_return": float(rets.max()),
            "optimal_expected_return": ds.metadata.get("gendiff_optimal_return")}
    print(json.dumps(info, indent=2))
    return info
