"""Minari datasets for offline RL: load any local dataset by id, or build D4RL-style ones offline.

Loading (:func:`load_dataset`) reads ``$MINARI_DATASETS_PATH/<id>`` (default ``~/.minari/datasets``) and
checks what offline learners silently trip over: an unknown id (the error lists the local ids), spaces
that do not match the environment the data claims to come from, and NaN/inf in observations, actions or
rewards. Users with D4RL-compatible Minari datasets (e.g. ``mujoco/hopper/medium-v0``) use them as they are.

Building (:func:`make_dataset`) follows D4RL's recipe with gymnasium MuJoCo environments:
  1. random: uniform random actions.
  2. medium / expert: a SAC policy (:mod:`gendiff.rl.sac`) trained until its stochastic return reaches the
     level's band of normalised score (D4RL medium ~ 1/3 of expert), then rolled out: sampled actions as
     D4RL by default, or with ``rollout_noise`` s the mean action plus N(0, s^2) (band checked on the same).
  3. medium-replay: rollouts of the successive policy snapshots taken while training toward the medium band.
  4. medium-expert: half medium, half expert rollouts.
Episodes go into ``minari.data_collector.episode_buffer.EpisodeBuffer`` objects and
``minari.create_dataset_from_buffers`` (no jax needed). The reference random / expert returns (D4RL's for the
tasks it covers, else measured) are stored as ``ref_min_score`` / ``ref_max_score`` for normalised scores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from gendiff.config import check_literal_fields, check_numbers
from gendiff.io import loading, seed_everything, swap_dir

STAGING = ".gendiff_staging"  # <datasets root>/<this>/<id>/: a dataset being built (moved into place when complete)
Level = Literal["random", "medium", "expert", "medium-replay", "medium-expert"]
LEVELS: tuple[str, ...] = ("random", "medium", "expert", "medium-replay", "medium-expert")

# D4RL reference returns (random, expert) used for normalised scores (d4rl/infos.py, the v2 MuJoCo tasks).
D4RL_REF: dict[str, tuple[float, float]] = {
    "Hopper": (-20.272305, 3234.3),
    "HalfCheetah": (-280.178953, 12135.0),
    "Walker2d": (1.629008, 4592.3),
    "Ant": (-325.6, 3879.7),
}


@dataclass
class Episode:
    """One episode: observations [T+1, obs_dim], actions [T, act_dim], rewards/terminations/truncations [T]."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)


@dataclass
class OfflineDataset:
    """Episodes of a Minari dataset (or of synthetic data) with what normalised scores need.

    Attributes:
        dataset_id: the Minari id.
        env_id: gymnasium id of the environment, or None when the dataset names none.
        episodes: the episodes, float32 arrays.
        action_low, action_high: [act_dim] action-box bounds.
        ref_min_score, ref_max_score: reference random / expert returns (None when unknown).
        metadata: the dataset's Minari metadata.
    """

    dataset_id: str
    env_id: str | None
    episodes: list[Episode]
    action_low: np.ndarray
    action_high: np.ndarray
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    action_space: str = "Box"  # the Minari action space's class name

    def require_continuous(self, what: str) -> None:
        """Raise ValueError unless the actions are continuous (a Box): ``what`` names the user of the data."""
        if self.action_space != "Box":
            raise ValueError(f"dataset {self.dataset_id!r} has {self.action_space} actions; {what} needs continuous "
                             "(Box) actions")

    @property
    def obs_dim(self) -> int:
        return int(self.episodes[0].observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.episodes[0].actions.shape[1])

    @property
    def num_transitions(self) -> int:
        return sum(len(e) for e in self.episodes)

    def returns(self) -> np.ndarray:
        """Undiscounted return of every episode, [num_episodes]."""
        return np.array([float(e.rewards.sum()) for e in self.episodes])

    def normalized_score(self, returns: float | np.ndarray) -> np.ndarray:
        """D4RL normalised score 100 (R - R_random) / (R_expert - R_random)."""
        return normalized_score(returns, self.ref_min_score, self.ref_max_score)

    def fingerprint(self) -> str:
        """A short hash of the episodes' contents (every array's shape and values, in episode order).

        Unlike a hash of the files, it ignores what HDF5 and Minari store beside the data (object timestamps,
        library versions), so a dataset rebuilt with the same data gets the same fingerprint."""
        import hashlib

        h = hashlib.sha256()
        for e in self.episodes:
            for a in (e.observations, e.actions, e.rewards, e.terminations, e.truncations):
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()[:16]

    def transitions(self) -> dict[str, Tensor]:
        """All transitions as float32 tensors: obs/next_obs [N, obs_dim], act [N, act_dim], rew/done/timeout [N].

        ``done`` is the termination flag (what bootstrapping uses); ``timeout`` marks truncations.
        """
        eps = self.episodes
        cat = lambda xs: torch.as_tensor(np.concatenate(xs), dtype=torch.float32)  # noqa: E731
        return {
            "obs": cat([e.observations[:-1] for e in eps]), "act": cat([e.actions for e in eps]),
            "rew": cat([e.rewards for e in eps]), "next_obs": cat([e.observations[1:] for e in eps]),
            "done": cat([e.terminations for e in eps]), "timeout": cat([e.truncations for e in eps]),
        }


def normalized_score(returns: float | np.ndarray, ref_min: float | None, ref_max: float | None) -> np.ndarray:
    """100 (R - ref_min) / (ref_max - ref_min); raises when the references are missing or equal."""
    if ref_min is None or ref_max is None:
        raise ValueError("normalised scores need reference random and expert returns (ref_min_score/ref_max_score)")
    if ref_max == ref_min:
        raise ValueError(f"reference returns are equal ({ref_min}); cannot normalise")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def d4rl_reference(env_id: str) -> tuple[float, float] | None:
    """D4RL's (random, expert) returns for a gymnasium MuJoCo id such as ``Hopper-v5``, else None."""
    return D4RL_REF.get(env_id.split("/")[-1].split("-")[0])


def datasets_root() -> Path:
    """The local Minari folder: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def local_dataset_ids() -> list[str]:
    """Ids of the Minari datasets stored locally."""
    import minari

    return sorted(minari.list_local_datasets())


_ID = re.compile(r"[\w.-]+(/[\w.-]+)*-v\d+")


def check_dataset_id(dataset_id: str) -> str:
    """``dataset_id`` if it is a plain Minari id ``(namespace/)name-v<version>``, else ValueError.

    Parts that are empty, ``.``, ``..`` or hidden (``.x``) are refused: an id names a folder under the Minari
    datasets path and must never reach outside it (``../outside-v0``) or into gendiff's own hidden folders.
    """
    parts = str(dataset_id).split("/")
    if not _ID.fullmatch(str(dataset_id)) or any(p.startswith(".") for p in parts):
        raise ValueError(f"dataset id {dataset_id!r} must look like (namespace/)name-v<version> with plain names "
                         "(letters, digits, _ . -; no '..' or parts starting with '.'), e.g. gendiff/hopper/medium-v0")
    return dataset_id


def _dataset_dir(dataset_id: str) -> Path:
    return datasets_root() / check_dataset_id(dataset_id)


def dataset_exists(dataset_id: str) -> bool:
    """Whether a complete local dataset has this id: Minari's own metadata (data/metadata.json) is there.

    A folder that an interrupted write left without it (an empty data/) does not count.
    """
    return (_dataset_dir(dataset_id) / "data" / "metadata.json").is_file()


def _check_spaces(ds: Any, dataset_id: str, env_id: str) -> None:
    """The dataset's spaces must equal the environment's (shapes and bounds)."""
    from gendiff.rl.common import make_env

    env = make_env(env_id)
    try:
        for name, mine, theirs in (("observation", ds.observation_space, env.observation_space),
                                   ("action", ds.action_space, env.action_space)):
            same = getattr(mine, "shape", None) == getattr(theirs, "shape", None)
            if same and hasattr(mine, "low"):
                same = np.allclose(mine.low, theirs.low) and np.allclose(mine.high, theirs.high)
            if not same:
                raise ValueError(
                    f"dataset {dataset_id!r}: its {name} space {mine} does not match environment {env_id!r}'s "
                    f"{theirs}; pass the environment the data was collected in"
                )
    finally:
        env.close()


def _episode(ep: Any, dataset_id: str) -> Episode:
    obs = np.asarray(ep.observations, dtype=np.float32)
    if isinstance(ep.observations, dict) or obs.ndim != 2:
        raise ValueError(f"dataset {dataset_id!r}: only flat Box observations are supported, got shape {obs.shape}")
    out = Episode(obs, np.asarray(ep.actions, dtype=np.float32).reshape(len(ep.rewards), -1),
                  np.asarray(ep.rewards, dtype=np.float32), np.asarray(ep.terminations, dtype=np.float32),
                  np.asarray(ep.truncations, dtype=np.float32))
    for name in ("observations", "actions", "rewards"):
        bad = ~np.isfinite(getattr(out, name))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(f"dataset {dataset_id!r}: episode {ep.id} has NaN/inf {name} (first at step {row})")
    return out


def load_dataset(dataset_id: str, env_id: str | None = None, check_env: bool = True) -> OfflineDataset:
    """Load a local Minari dataset by id.

    Args:
        dataset_id: e.g. ``mujoco/hopper/medium-v0`` or one made by :func:`make_dataset`.
        env_id: the environment to check the spaces against (default: the one the dataset names).
        check_env: compare the dataset's spaces with the environment's.
    Raises:
        KeyError: no such id locally (the message lists the local ids).
        ValueError: spaces do not match the environment; NaN/inf in the data; an empty dataset.
    """
    import minari

    if not dataset_exists(dataset_id):
        ids = local_dataset_ids()
        half = _dataset_dir(dataset_id).exists()
        raise KeyError(f"no local Minari dataset {dataset_id!r} under {datasets_root()}"
                       f"{' (its folder holds no complete dataset: an interrupted write?)' if half else ''}; local ids: "
                       f"{', '.join(ids) if ids else '(none)'}. Create one with `gendiff offline make-dataset`")
    with loading(_dataset_dir(dataset_id), f"Minari dataset {dataset_id!r}"):
        ds = minari.load_dataset(dataset_id)
    meta = dict(ds.storage.metadata)
    spec_env = ds.env_spec.id if ds.env_spec is not None else None
    env_id = env_id or spec_env
    if check_env and env_id is not None:
        _check_spaces(ds, dataset_id, env_id)
    episodes = [_episode(ep, dataset_id) for ep in ds.iterate_episodes()]
    if not episodes:
        raise ValueError(f"dataset {dataset_id!r} holds no episodes")
    space = ds.action_space
    low = np.asarray(getattr(space, "low", -np.ones(episodes[0].actions.shape[1])), dtype=np.float32)
    high = np.asarray(getattr(space, "high", np.ones(episodes[0].actions.shape[1])), dtype=np.float32)
    ref = (meta.get("ref_min_score"), meta.get("ref_max_score"))
    if ref[0] is None and env_id is not None and d4rl_reference(env_id) is not None:
        ref = d4rl_reference(env_id)
    return OfflineDataset(dataset_id, env_id, episodes, low, high, ref[0], ref[1], meta, type(space).__name__)


# --------------------------------------------------------------------------------------------------
# make-dataset
# --------------------------------------------------------------------------------------------------
@dataclass
class MakeDatasetConfig:
    """``gendiff offline make-dataset``: a D4RL-style Minari dataset (configs/offline_make_dataset.yaml).

    Defaults are sized for 2 CPU cores (SAC reaches roughly 10-20 % normalised score on Hopper-v5 here);
    the full-size D4RL recipe is ``--steps 1000000 --sac-steps 1000000`` (see the module docstring).
    """

    env: str = "Hopper-v5"  # gymnasium MuJoCo env id
    level: Level = "medium"  # quality of the behaviour policy (D4RL naming)
    steps: int = 20_000  # transitions in the dataset
    dataset_id: str = ""  # "" -> gendiff/<env>/<level>-v0
    force: bool = False  # replace an existing dataset with this id (after the new one is complete)
    sac_steps: int = 30_000  # SAC env-step budget to reach the level's score
    learning_starts: int = 5_000  # SAC's random-action steps before it learns
    check_every: int = 5_000  # SAC env steps between checks of the score
    eval_episodes: int = 5  # episodes per score check
    medium_target: float = 33.0  # normalised score: D4RL medium ~ 1/3 of expert
    expert_target: float = 90.0  # normalised score the expert policy must reach
    reference: Literal["d4rl", "measured"] = "d4rl"  # normalised-score returns: D4RL's, or measured here
    ref_episodes: int = 10  # episodes of the random policy for a measured reference
    rollout_noise: float | None = None  # None: SAC's sampled actions (D4RL); s: tanh(mean) + N(0, s^2)
    seed: int = 0  # random seed
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        if self.rollout_noise is not None and not self.rollout_noise >= 0:
            raise ValueError(f"rollout_noise must be >= 0 (or None for the policy's own samples), "
                             f"got {self.rollout_noise}")
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        check_literal_fields(self)
        check_numbers(self, positive=("steps", "sac_steps", "check_every", "eval_episodes", "ref_episodes"),
                      nonnegative=("learning_starts",))
        if self.dataset_id:
            check_dataset_id(self.dataset_id)


def default_dataset_id(env: str, level: str) -> str:
    return f"gendiff/{env.split('-')[0].lower()}/{level}-v0"


def _references(cfg: MakeDatasetConfig) -> tuple[float, float, str]:
    from gendiff.offline.behaviour import random_return

    known = d4rl_reference(cfg.env)
    if cfg.reference == "d4rl" and known is not None:
        return known[0], known[1], "d4rl"
    rnd = random_return(cfg.env, cfg.ref_episodes, cfg.seed)
    return rnd, float("nan"), "measured"  # expert filled in from the expert policy's return


def _behaviour_buffers(cfg: MakeDatasetConfig, ref: tuple[float, float], out: Path) -> tuple[list, dict]:
    """Steps 1-4 of the module docstring; returns (episode buffers, metadata about the behaviour policy)."""
    from gendiff.offline.behaviour import policy_act, rollout, train_to_band
    from gendiff.rl.sac import SACConfig

    if cfg.level == "random":
        return rollout(cfg.env, None, cfg.steps, cfg.seed, progress=cfg.progress), {"behaviour": "uniform random"}
    sac_cfg = SACConfig(eval_every=0, learning_starts=min(cfg.learning_starts, cfg.sac_steps))
    target = cfg.expert_target if cfg.level == "expert" else cfg.medium_target
    ref_ok = ref if np.isfinite(ref[1]) else (ref[0], ref[0] + 1.0)
    noise = cfg.rollout_noise
    res = train_to_band(cfg.env, target, ref_ok, cfg.sac_steps, cfg.check_every, cfg.eval_episodes, sac_cfg,
                        cfg.seed, cfg.progress, noise)
    res.agent.save(out / cfg.level)
    meta = {"behaviour": "sac", "behaviour_return": res.ret, "behaviour_score": res.score,
            "band_target": target, "band_reached": res.reached, "sac_env_steps": res.env_steps,
            "behaviour_actions": "sampled" if noise is None else f"tanh(mean) + N(0, {noise}^2)"}
    if cfg.level in ("medium", "expert"):
        return rollout(cfg.env, policy_act(res.agent.policy, seed=cfg.seed, noise=noise), cfg.steps, cfg.seed), meta
    if cfg.level == "medium-replay":
        per = max(1, cfg.steps // len(res.snapshots))
        bufs: list = []
        for k, pol in enumerate(res.snapshots):
            n = per if k < len(res.snapshots) - 1 else cfg.steps - per * k
            if n > 0:
                bufs += rollout(cfg.env, policy_act(pol, seed=cfg.seed + k, noise=noise), n, cfg.seed + 1000 * k, len(bufs))
        return bufs, meta
    # medium-expert: the medium policy above, plus an expert policy trained further
    half = cfg.steps // 2
    bufs = rollout(cfg.env, policy_act(res.agent.policy, seed=cfg.seed, noise=noise), half, cfg.seed)
    exp = train_to_band(cfg.env, cfg.expert_target, ref_ok, cfg.sac_steps, cfg.check_every, cfg.eval_episodes,
                        sac_cfg, cfg.seed + 1, cfg.progress, noise)
    exp.agent.save(out / "expert")
    bufs += rollout(cfg.env, policy_act(exp.agent.policy, seed=cfg.seed + 1, noise=noise), cfg.steps - half, cfg.seed + 1,
                    len(bufs))
    meta.update({"expert_return": exp.ret, "expert_score": exp.score, "expert_band_reached": exp.reached})
    return bufs, meta


def check_env_for_dataset(env_id: str) -> None:
    """The environment exists and has flat Box observations and continuous (Box) actions, else ValueError."""
    from gendiff.rl.common import require_box_spaces

    require_box_spaces(env_id, "make-dataset (SAC behaviour policies, offline learners)")


@contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    """Point Minari (which reads MINARI_DATASETS_PATH at every call) at ``path`` for the block."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def make_dataset(env: str, level: Level, steps: int, dataset_id: str = "", force: bool = False,
                 config: MakeDatasetConfig | None = None) -> OfflineDataset:
    """Build a D4RL-style Minari dataset locally and return it loaded.

    Build-then-swap: the behaviour policies and the Minari dataset are written under
    ``<datasets root>/.gendiff_staging/<id>/`` and moved into place only when complete, so an existing dataset
    (with ``force``) is replaced only after success, and a kill at any point leaves it as it was.

    Args:
        env: gymnasium id (``Hopper-v5``, ``HalfCheetah-v5``, ...); level: one of LEVELS.
        steps: transitions in the dataset; dataset_id: Minari id ("" -> ``gendiff/<env>/<level>-v0``).
        force: replace an existing dataset with this id (otherwise FileExistsError).
        config: the remaining settings (SAC budget, band targets, seed); its env/level/steps/id are replaced.
    Raises:
        FileExistsError: the id exists and ``force`` is False.
        ValueError: a bad id, an unknown env or one without continuous actions (before any work).
    """
    base = config or MakeDatasetConfig()
    cfg = MakeDatasetConfig(**{**base.__dict__, "env": env, "level": level, "steps": steps,
                               "dataset_id": dataset_id or default_dataset_id(env, level), "force": force})
    _dataset_dir(cfg.dataset_id)  # a bad id: ValueError before any work
    check_env_for_dataset(cfg.env)  # before any training, and before anything is replaced
    seed_everything(cfg.seed)
    if dataset_exists(cfg.dataset_id) and not cfg.force:
        raise FileExistsError(f"Minari dataset {cfg.dataset_id!r} already exists under {datasets_root()}; "
                              "pass --force to replace it")
    stage = datasets_root() / STAGING / cfg.dataset_id  # what an interrupted earlier attempt left goes
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    ref_min, ref_max, source = _references(cfg)
    policy_dir = datasets_root() / ".gendiff_behaviour" / cfg.dataset_id
    buffers, meta = _behaviour_buffers(cfg, (ref_min, ref_max), stage / "behaviour")
    if not np.isfinite(ref_max):  # no D4RL reference: the best behaviour policy's return stands for expert
        ref_max = max(meta.get("expert_return", meta.get("behaviour_return", ref_min + 1.0)), ref_min + 1.0)
    from gendiff.bench import package_versions

    extra = {f"gendiff_{k}": v for k, v in meta.items()}
    # the SAC run and the rollouts depend on these: a rebuild that differs is traced with them
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    _stage_minari(stage, cfg.dataset_id, buffers, cfg.env,
                  {**extra, "gendiff_level": cfg.level, "gendiff_reference": source,
                   "gendiff_policy_dir": str(policy_dir), "gendiff_packages": versions},
                  (ref_min, ref_max), f"gendiff SAC ({cfg.level})",
                  f"D4RL-style {cfg.level} data for {cfg.env} made by gendiff", "gendiff.offline.datasets")
    # complete: swap the new dataset (and its behaviour policies) in place of the old
    if (stage / "behaviour").exists():
        policy_dir.parent.mkdir(parents=True, exist_ok=True)
        swap_dir(stage / "behaviour", policy_dir)
    _publish_staged(stage, cfg.dataset_id)
    return load_dataset(cfg.dataset_id)


def write_buffers(dataset_id: str, buffers: list, env_id: str, metadata: dict[str, Any], force: bool = False,
                  ref: tuple[float, float] | None = None, algorithm: str = "gendiff",
                  description: str = "") -> None:
    """Write episode buffers as the Minari dataset ``dataset_id`` by build-then-swap (as :func:`make_dataset`).

    The dataset is written under ``<datasets root>/.gendiff_staging/<id>/`` and moved into place only when
    complete, so an existing one (with ``force``) is replaced only after success.

    Args:
        buffers: ``minari.data_collector.episode_buffer.EpisodeBuffer`` objects. env_id: the gymnasium id.
        metadata: extra Minari metadata (keys ``gendiff_*``). ref: (ref_min_score, ref_max_score) or None.
    Raises:
        FileExistsError: the id exists and ``force`` is False. ValueError: a bad id.
    """
    _dataset_dir(dataset_id)  # a bad id: ValueError before any work
    if dataset_exists(dataset_id) and not force:
        raise FileExistsError(f"Minari dataset {dataset_id!r} already exists under {datasets_root()}; "
                              "pass --force to replace it")
    stage = datasets_root() / STAGING / dataset_id
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    _stage_minari(stage, dataset_id, buffers, env_id, metadata, ref, algorithm, description or algorithm,
                  "gendiff.offline")
    _publish_staged(stage, dataset_id)


def _stage_minari(stage: Path, dataset_id: str, buffers: list, env_id: str, metadata: dict[str, Any],
                  ref: tuple[float, float] | None, algorithm: str, description: str, permalink: str) -> None:
    """Build-then-swap, step 1: write the Minari dataset under ``stage/minari`` (nothing outside ``stage``)."""
    import minari

    scores = {} if ref is None else {"ref_min_score": float(ref[0]), "ref_max_score": float(ref[1])}
    with _minari_root(stage / "minari"):
        ds = minari.create_dataset_from_buffers(
            dataset_id, buffers, env=env_id, eval_env=env_id, algorithm_name=algorithm, author="gendiff",
            author_email="gendiff@localhost", code_permalink=permalink, description=description, **scores)
        ds.storage.update_metadata(metadata)
        del ds


def _publish_staged(stage: Path, dataset_id: str) -> None:
    """Build-then-swap, step 2: move the complete staged dataset in place of the old one, drop the stage, and
    register the id's namespace (Minari's own bookkeeping, as ``create_dataset_from_buffers`` does)."""
    from minari.namespace import create_namespace, list_local_namespaces

    final = _dataset_dir(dataset_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    swap_dir(stage / "minari" / dataset_id, final)
    shutil.rmtree(stage, ignore_errors=True)
    namespace = dataset_id.rsplit("/", 1)[0] if "/" in dataset_id else None
    if namespace is not None and namespace not in list_local_namespaces():
        create_namespace(namespace)


def load_or_make_dataset(env: str, level: Level, steps: int, dataset_id: str = "",
                         config: MakeDatasetConfig | None = None) -> OfflineDataset:
    """Load ``dataset_id`` when it exists locally, else build it with :func:`make_dataset` (never replaces)."""
    dataset_id = dataset_id or default_dataset_id(env, level)
    if dataset_exists(dataset_id):
        return load_dataset(dataset_id)
    return make_dataset(env, level, steps, dataset_id, config=config)


def run_make_dataset(cfg: MakeDatasetConfig) -> dict[str, Any]:
    """``gendiff offline make-dataset``: build (or reuse) the dataset and print its summary as JSON."""
    ds = make_dataset(cfg.env, cfg.level, cfg.steps, cfg.dataset_id, cfg.force, cfg)
    rets = ds.returns()
    info = {"dataset_id": ds.dataset_id, "episodes": len(ds.episodes), "transitions": ds.num_transitions,
            "mean_return": float(rets.mean()), "normalised_score": float(ds.normalized_score(rets).mean()),
            "ref_min_score": ds.ref_min_score, "ref_max_score": ds.ref_max_score,
            **{k: v for k, v in ds.metadata.items() if k.startswith("gendiff_")}}
    print(json.dumps(info, indent=2, default=str))
    return info
