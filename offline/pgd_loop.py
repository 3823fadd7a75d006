"""Train an offline agent on real + synthetic data: none / unguided / pgd / synther (PGD, Jackson et al. 2024).

1. Load the Minari dataset; build the learner (OFFLINE_LEARNERS) on its transitions.
2. Synthetic data: ``unguided`` and ``pgd`` sample trajectory windows from a
   :class:`gendiff.pipelines.PolicyGuidedTrajectoryPipeline` (a saved one, or one trained here);
   ``synther`` samples single transitions from a residual-MLP EDM model; ``none`` uses real data only;
   ``resample`` is a control, a perfect generator: ``num_synthetic`` real transitions drawn afresh each time.
   The first synthetic set is unguided; every ``regenerate_every`` (K) agent steps it is regenerated, with
   guidance from the current policy for ``pgd`` and unguided for the others, as the reference regenerates its
   unguided baseline (K = 10,000; ``regenerate_unguided=False`` keeps the non-PGD sets made once).
3. Each agent step draws ``real_per_batch`` real and ``batch_size - real_per_batch`` synthetic transitions
   (reference: 16 + 240 = 256); with ``actor_batch="real"`` (a diagnostic) the actor's step takes its own batch of
   ``batch_size`` real transitions instead.
4. Evaluate every ``eval_every`` steps and at the end (D4RL normalised score, >= 10 episodes);
   write results JSON, a markdown table and a learning-curve PNG.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from gendiff.config import check_literal_fields, check_numbers
from gendiff.io import atomic_path, atomic_write_text, loading, refuse_existing, seed_everything
from gendiff.offline.datasets import OfflineDataset, check_dataset_id, load_dataset
from gendiff.offline.learners import OFFLINE_LEARNERS, OfflineLearner, build_learner

Synthetic = Literal["none", "unguided", "pgd", "synther", "resample"]


@dataclass
class TrainAgentConfig:
    """``gendiff offline train-agent`` (configs/offline_train_agent.yaml). CPU-sized defaults; the reference
    runs 1M agent steps with 1M synthetic transitions regenerated every 10k steps."""

    dataset_id: str = "gendiff/hopper/medium-v0"  # Minari dataset of real transitions
    algo: Literal["td3bc", "iql", "prdc"] = "td3bc"  # offline learner
    synthetic: Synthetic = "none"  # source of synthetic transitions (none: real data only)
    steps: int = 10_000  # agent training steps
    seed: int = 0  # random seed
    out: str = "results.json"  # results JSON (markdown and learning-curve PNG beside it)
    batch_size: int = 256  # transitions per agent step, real + synthetic
    real_per_batch: int = 16  # real transitions per batch (reference: 16 of 256)
    regenerate_every: int = 10_000  # agent steps between regenerations of the synthetic set (K)
    regenerate_unguided: bool = True  # regenerate the unguided / synther / resample sets too (the reference's
    # unguided baseline is regenerated like PGD's); False: made once (tables made before 2026-12-04)
    num_synthetic: int = 20_000  # synthetic transitions per (re)generation (the reference: ~1M, 8192 windows of 128)
    diffusion_dir: str = ""  # a saved pipeline; "" trains one (diffusion_train_steps) beside `out`
    diffusion_train_steps: int = 2000  # training steps of a trajectory model trained here
    horizon: int = 32  # window length of a trajectory model trained here
    sample_horizon: int = 64  # length of the sampled trajectory windows
    num_inference_steps: int = 64  # denoising steps per sample
    sampler: Literal["heun", "euler"] = "heun"  # heun: EDM Algorithm 2 with the reference churn (2 calls/step)
    guidance_coeff: float = 0.5  # pgd: guidance scale (PGDSchedule's coeff). For a Gaussian actor the shift is
    # coeff * (mu(s) - a) / sigma^2: TD3+BC is treated as sigma = 1, while IQL learns its sigma (often ~0.1), so the
    # same coeff moves IQL's actions ~1 / sigma^2 times as far; scale it by sigma^2 when changing learner
    cosine_coeff: float = 0.3  # pgd: the guidance schedule's cosine term
    normalize_grad: bool = False  # pgd: guide with g / (||g|| + eps)
    synther_train_steps: int = 2000  # training steps of a SynthER model trained here
    synther_dir: str = ""  # a saved SynthER model (SynthER.save); "" trains one (synther_train_steps) beside `out`
    relabel: Literal["none", "simulator"] = "none"  # simulator: a diagnostic; each synthetic row's next_obs, reward
    # and done replaced by the MuJoCo simulator's for its (obs, act): what a perfect dynamics model would give
    synthetic_terminals: bool = True  # False: a diagnostic; the synthetic set's terminal rows (done = 1) are dropped,
    # so e.g. `resample` serves real rows without the falls, as the trajectory model generates none
    match_reward: bool = False  # a departure from the paper: each synthetic set is redrawn (with replacement) so
    # that its rewards fall in the data's reward deciles as often as the data's do (the trajectory model's rows carry
    # 6-9 % more reward than the data, benchmarks/offline/README.md)
    actor_batch: Literal["mixed", "real"] = "mixed"  # real: diagnostic, the actor's step on real rows only
    # (its own batch of batch_size real rows) while the critic keeps the mixed batch, drawn exactly as without it:
    # tells whether the synthetic rows cost the actor's step or the critic's
    eval_every: int = 5000  # agent steps between evaluations (0: only at the end)
    eval_episodes: int = 10  # episodes per evaluation
    progress: bool = True  # show a progress bar
    overwrite: bool = False  # replace the results of an earlier run at `out`

    def __post_init__(self) -> None:
        if not 0 <= self.real_per_batch <= self.batch_size:
            raise ValueError(f"real_per_batch must lie in [0, batch_size={self.batch_size}], got {self.real_per_batch}")
        if self.steps < 1 or self.regenerate_every < 1 or self.num_synthetic < 1 or self.eval_episodes < 1:
            raise ValueError("steps, regenerate_every, num_synthetic and eval_episodes must be >= 1")
        if Path(self.out).suffix.lower() != ".json":  # the .md / .png / .safetensors and run folder are named from it
            raise ValueError(f"TrainAgentConfig.out must name the results .json file (got {self.out!r}): its "
                             "markdown, PNG, weights and run folder are put beside it, and without .json two runs "
                             "such as 'coeff0.1' and 'coeff0.3' would share 'coeff0.md' and 'coeff0/'")
        check_literal_fields(self)
        check_numbers(self, positive=("batch_size", "diffusion_train_steps", "horizon", "sample_horizon",
                                      "num_inference_steps", "synther_train_steps"),
                      nonnegative=("eval_every", "guidance_coeff", "cosine_coeff"))
        if self.dataset_id:
            check_dataset_id(self.dataset_id)


class BatchSampler:
    """Step 3: batches of packed rows (:meth:`OfflineLearner.pack`) drawn on the learner's device, no host sync.

    Each batch holds ``n_real`` real rows and, once a synthetic set is given, ``batch_size - n_real`` synthetic
    ones (uniform with replacement within each set); without a synthetic set all ``batch_size`` rows are real.
    """

    def __init__(self, learner: OfflineLearner, real: dict[str, Tensor], batch_size: int, n_real: int,
                 seed: int) -> None:
        self.learner, self.batch_size, self.n_real = learner, batch_size, n_real
        self.real = learner.pack(real)  # checked and normalised once, not per batch
        self.synthetic: Tensor | None = None
        self.gen = torch.Generator(device=learner.device).manual_seed(seed)
        self.gen_real = torch.Generator(device=learner.device).manual_seed(seed + 1)  # sample_real's own stream

    def set_synthetic(self, transitions: dict[str, Tensor]) -> None:
        self.synthetic = self.learner.pack(transitions)

    def sample(self) -> Tensor:
        """[batch_size, D] packed rows: real first, then synthetic."""
        dev = self.learner.device
        if self.synthetic is None or self.n_real == self.batch_size:
            idx = torch.randint(0, self.real.shape[0], (self.batch_size,), generator=self.gen, device=dev)
            return self.real[idx]
        i_real = torch.randint(0, self.real.shape[0], (self.n_real,), generator=self.gen, device=dev)
        i_syn = torch.randint(0, self.synthetic.shape[0], (self.batch_size - self.n_real,), generator=self.gen,
                              device=dev)
        return torch.cat([self.real[i_real], self.synthetic[i_syn]])

    def sample_real(self) -> Tensor:
        """[batch_size, D] real rows from a stream of their own (``sample``'s batches are unchanged by it)."""
        idx = torch.randint(0, self.real.shape[0], (self.batch_size,), generator=self.gen_real,
                            device=self.learner.device)
        return self.real[idx]


def reward_decile_edges(real_rew: Tensor, bins: int = 10) -> Tensor:
    """The ``bins - 1`` inner edges [bins - 1] of the data's equal-mass reward bins (``real_rew`` [M])."""
    return torch.quantile(real_rew.float(), torch.linspace(0, 1, bins + 1)[1:-1])


def match_reward_deciles(tr: dict[str, Tensor], edges: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
    """``tr`` (N rows) redrawn with replacement so that the share of its rows in each of the data's reward
    bins (``edges`` [bins - 1] from :func:`reward_decile_edges`) equals the data's, 1 / bins; a bin the synthetic
    set never reaches stays empty. Same keys, N rows."""
    bins = edges.shape[0] + 1
    b = torch.bucketize(tr["rew"].float(), edges)  # [N] bin of each synthetic row
    count = torch.bincount(b, minlength=bins).float()
    weight = (1.0 / bins) / count[b]  # target share / synthetic share, per row
    idx = torch.multinomial(weight, b.shape[0], replacement=True, generator=gen)
    return {k: v[idx] for k, v in tr.items()}


def finite_rows(tr: dict[str, Tensor]) -> dict[str, Tensor]:
    """The transitions whose every entry is finite (a diverged window's rows are dropped), same keys."""
    ok = torch.ones(tr["obs"].shape[0], dtype=torch.bool)
    for v in tr.values():
        ok &= torch.isfinite(v.reshape(v.shape[0], -1)).all(1)
    return {k: v[ok] for k, v in tr.items()}


def with_sampler(pipe: Any, sampler: str) -> Any:
    """``pipe`` with the sampler of ``TrainAgentConfig.sampler``: "heun" is the reference's (EDM Algorithm 2,
    churn 80, :func:`gendiff.offline.diffusion.edm_heun_scheduler`), "euler" the scheduler it was saved with."""
    if sampler == "heun":
        from gendiff.offline.diffusion import edm_heun_scheduler

        return pipe.with_scheduler(edm_heun_scheduler(pipe.scheduler))
    return pipe


def sample_windows(pipe: Any, windows: int, cfg: Any, policy: Any, generator: torch.Generator) -> dict[str, Tensor]:
    """Transitions of ``windows`` sampled windows (``windows * (sample_horizon - 1)`` rows; environment units).

    ``cfg`` supplies ``sample_horizon``, ``num_inference_steps``, ``guidance_coeff``, ``cosine_coeff`` and
    ``normalize_grad`` (:class:`TrainAgentConfig` or ``gendiff.offline.synthesize.SynthesizeConfig``); ``policy``
    None samples unguided, a learner guides the actions toward it (PGD; a deterministic actor as N(pi(s), I)).
    """
    res = pipe(batch_size=windows, horizon=cfg.sample_horizon, num_inference_steps=cfg.num_inference_steps,
               policy=policy, guidance_scale=cfg.guidance_coeff if policy is not None else 0.0,
               cosine_coeff=cfg.cosine_coeff, normalize_grad=cfg.normalize_grad,
               policy_type="deterministic" if getattr(policy, "deterministic", True) else "stochastic",
               generator=generator)
    return res.transitions


class SyntheticSource:
    """Step 2: makes (and remakes) the synthetic transition set for one run."""

    def __init__(self, cfg: TrainAgentConfig, ds: OfflineDataset, run_dir: Path,
                 real: dict[str, Tensor] | None = None) -> None:
        """``real``: ``ds.transitions()`` when the caller already holds them (read from ``ds`` otherwise)."""
        self.cfg, self.gen = cfg, torch.Generator().manual_seed(cfg.seed + 123)
        self.env_id = ds.env_id
        if real is None and (cfg.synthetic == "resample" or (cfg.synthetic == "synther" and not cfg.synther_dir)
                             or cfg.match_reward):
            real = ds.transitions()
        self.reward_edges = reward_decile_edges(real["rew"]) if cfg.match_reward else None  # real loaded above
        self.real = real if cfg.synthetic == "resample" else None
        if self.real is not None and cfg.num_synthetic > self.real["obs"].shape[0]:
            raise ValueError(f"synthetic='resample' draws num_synthetic={cfg.num_synthetic} of the dataset's "
                             f"{self.real['obs'].shape[0]} transitions; ask for at most {self.real['obs'].shape[0]}")
        if cfg.relabel == "simulator" and ds.env_id is None:
            raise ValueError(f"relabel='simulator' needs the dataset's environment; {ds.dataset_id!r} names none")
        self.pipe: Any = None
        self.synther: Any = None
        self.throughput: list[float] = []
        if cfg.synthetic in ("unguided", "pgd"):
            self.pipe = with_sampler(self._pipeline(ds, run_dir), cfg.sampler)
        elif cfg.synthetic == "synther":
            from gendiff.offline.synther import SynthER, SynthERConfig

            if cfg.synther_dir:  # trained once per dataset and shared by every seed's run
                self.synther = SynthER.load(cfg.synther_dir)
                if (self.synther.obs_dim, self.synther.act_dim) != (ds.obs_dim, ds.act_dim):
                    raise ValueError(f"synther_dir {cfg.synther_dir}: a model of obs/act dims "
                                     f"{self.synther.obs_dim}/{self.synther.act_dim}, the dataset has "
                                     f"{ds.obs_dim}/{ds.act_dim}")
            else:
                self.synther = SynthER.fit(real, ds.action_low, ds.action_high,
                                           SynthERConfig(train_steps=cfg.synther_train_steps, seed=cfg.seed),
                                           run_dir / "synther")

    def _pipeline(self, ds: OfflineDataset, run_dir: Path) -> Any:
        from gendiff.offline.diffusion import (
            TrajectoryDiffusionConfig,
            load_trajectory_pipeline,
            train_trajectory_diffusion,
        )

        if self.cfg.diffusion_dir:  # the user's choice: another dataset's pipeline is warned about, sizes checked
            return load_trajectory_pipeline(self.cfg.diffusion_dir, ds, strict=False)
        dcfg = TrajectoryDiffusionConfig(dataset_id=ds.dataset_id, out_dir=str(run_dir / "diffusion"),
                                         horizon=self.cfg.horizon, train_steps=self.cfg.diffusion_train_steps,
                                         seed=self.cfg.seed, overwrite=True, progress=self.cfg.progress)
        return train_trajectory_diffusion(ds, dcfg)

    def generate(self, policy: OfflineLearner | None) -> dict[str, Tensor]:
        """``num_synthetic`` transitions; guided by ``policy`` when given (PGD)."""
        cfg, t0 = self.cfg, time.perf_counter()
        if self.real is not None:  # the control: real rows, without replacement within one set
            idx = torch.randperm(self.real["obs"].shape[0], generator=self.gen)[: cfg.num_synthetic]
            out = {k: v[idx] for k, v in self.real.items()}
        elif self.synther is not None:
            out = self.synther.sample(cfg.num_synthetic, cfg.num_inference_steps, self.gen)
        else:
            per = max(cfg.sample_horizon - 1, 1)
            windows, parts = math.ceil(cfg.num_synthetic / per), []
            for start in range(0, windows, 256):
                parts.append(sample_windows(self.pipe, min(256, windows - start), cfg, policy, self.gen))
            out = {k: torch.cat([p[k] for p in parts])[: cfg.num_synthetic] for k in parts[0]}
        out = finite_rows(out)
        if out["obs"].shape[0] == 0:
            raise ValueError("the generator produced no usable transitions (all windows terminated at once?)")
        if cfg.relabel == "simulator":
            from gendiff.offline.dynamics import relabel_with_simulator

            out = relabel_with_simulator(self.env_id, out)
        if self.reward_edges is not None:
            out = match_reward_deciles(out, self.reward_edges, self.gen)
        if not cfg.synthetic_terminals:
            keep = out["done"] < 0.5
            out = {k: v[keep] for k, v in out.items()}
            if out["obs"].shape[0] == 0:
                raise ValueError("synthetic_terminals=false dropped every row: the synthetic set held only terminal "
                                 "transitions")
        self.throughput.append(out["obs"].shape[0] / (time.perf_counter() - t0))
        return out


def _evaluate(learner: OfflineLearner, ds: OfflineDataset, episodes: int, seed: int) -> dict[str, Any]:
    if ds.env_id is None:
        raise ValueError(f"dataset {ds.dataset_id!r} names no environment to evaluate in")
    return learner.evaluate(ds.env_id, episodes, (ds.ref_min_score, ds.ref_max_score), seed=10_000 + seed)


def train_agent(cfg: TrainAgentConfig) -> dict[str, Any]:
    """Steps 1-4; returns the results dict (also written to ``cfg.out``)."""
    OFFLINE_LEARNERS.get(cfg.algo)  # unknown algo: KeyError listing the valid ones
    out = Path(cfg.out)
    refuse_existing(result_paths(out), cfg.overwrite)  # before any work
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    ds = load_dataset(cfg.dataset_id)
    ds.require_continuous(f"offline learner {cfg.algo!r}")
    real = ds.transitions()
    run_dir = out.with_suffix("")  # a trajectory model / SynthER the run trains itself goes here
    learner = build_learner(cfg.algo, real, ds.action_low, ds.action_high, _learner_config(cfg), cfg.seed)
    source = SyntheticSource(cfg, ds, run_dir, real) if cfg.synthetic != "none" else None
    sampler = BatchSampler(learner, real, cfg.batch_size, cfg.real_per_batch, cfg.seed)
    if source is not None:
        sampler.set_synthetic(source.generate(None))
    curve: list[dict[str, Any]] = []
    metrics: dict[str, Tensor] = {}
    for step in tqdm(range(1, cfg.steps + 1), disable=not cfg.progress, desc=f"{cfg.algo}/{cfg.synthetic}"):
        actor_rows = sampler.sample_real() if cfg.actor_batch == "real" else None
        metrics = learner.learn(sampler.sample(), actor_rows)  # 3. (metrics stay on the device until the end)
        if source is not None and step % cfg.regenerate_every == 0 and step < cfg.steps and (
                cfg.synthetic == "pgd" or cfg.regenerate_unguided):  # 2. pgd: guided by the current policy
            sampler.set_synthetic(source.generate(learner if cfg.synthetic == "pgd" else None))
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            curve.append({"step": step, **_evaluate(learner, ds, min(cfg.eval_episodes, 5), cfg.seed)})
    final = _evaluate(learner, ds, cfg.eval_episodes, cfg.seed)  # 4.
    curve.append({"step": cfg.steps, **final})
    result = {"config": asdict(cfg), "final": final, "curve": curve,
              "last_metrics": {k: float(v) for k, v in metrics.items()},
              "synthetic_per_s": source.throughput if source is not None else [],
              "wall_s": time.perf_counter() - t0}
    if source is not None and source.pipe is not None:  # which window layout made the synthetic rows
        norm = source.pipe.normalizer
        result["layout"] = {"residual": norm.residual, "action_layout": norm.action_layout}
    write_results(result, out, learner)
    result["learner"] = learner  # in memory only (not in the JSON); the weights are in out.with_suffix(".safetensors")
    return result


def run_train_agent(cfg: TrainAgentConfig) -> dict[str, Any]:
    """``gendiff offline train-agent``: :func:`train_agent`, printing the final evaluation as JSON."""
    res = train_agent(cfg)
    print(json.dumps(res["final"], indent=2))
    return res


def _learner_config(cfg: TrainAgentConfig) -> Any:
    lc = OFFLINE_LEARNERS.get(cfg.algo).config_class()
    if hasattr(lc, "total_steps"):
        lc.total_steps = cfg.steps
    return lc


def result_paths(out: Path) -> list[Path]:
    """What a run writes: results JSON, markdown table, learning-curve PNG and the agent's weights (safetensors)."""
    return [out, out.with_suffix(".md"), out.with_suffix(".png"), out.with_suffix(".safetensors")]


def learner_weights(learner: OfflineLearner) -> dict[str, Tensor]:
    """Every parameter and buffer of the learner's networks, keyed ``<attribute>.<name>``."""
    return {f"{attr}.{k}": v.detach().contiguous() for attr, mod in sorted(vars(learner).items())
            if isinstance(mod, torch.nn.Module) for k, v in mod.state_dict().items()}


def load_learner_weights(learner: OfflineLearner, path: str | Path) -> OfflineLearner:
    """Load the weights :func:`write_results` saved (``<out>.safetensors``) into ``learner``, built by
    :func:`build_learner` for the same algorithm and sizes; ValueError naming the first mismatch."""
    from safetensors.torch import load_file

    with loading(path, "the learner's weights"):
        saved = load_file(str(path))
    mine = learner_weights(learner)
    missing, extra = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
    if missing or extra:
        raise ValueError(f"{path} does not hold {type(learner).__name__} weights: missing {missing[:3]}, "
                         f"unexpected {extra[:3]} (was it written by another --algo?)")
    for attr, mod in vars(learner).items():
        if isinstance(mod, torch.nn.Module):
            state = {k[len(attr) + 1:]: v for k, v in saved.items() if k.startswith(attr + ".")}
            for k, v in state.items():
                if v.shape != mod.state_dict()[k].shape:
                    raise ValueError(f"{path}: {attr}.{k} has shape {tuple(v.shape)}, this learner's is "
                                     f"{tuple(mod.state_dict()[k].shape)} (another dataset's sizes or network?)")
            mod.load_state_dict(state)
    return learner


def write_results(result: dict[str, Any], out: Path, learner: OfflineLearner | None = None) -> None:
    """JSON, markdown table, learning-curve PNG and (with ``learner``) its weights, each written atomically."""
    from safetensors.torch import save_file

    if learner is not None:
        with atomic_path(out.with_suffix(".safetensors")) as tmp:
            save_file(learner_weights(learner), str(tmp))
    atomic_write_text(out, json.dumps(result, indent=2, default=str))
    cfg, fin = result["config"], result["final"]
    lines = [f"# {cfg['algo']} on {cfg['dataset_id']} (synthetic: {cfg['synthetic']}, seed {cfg['seed']})", "",
             "| step | return | normalised score |", "|---|---|---|"]
    for row in result["curve"]:
        lines.append(f"| {row['step']} | {row['return_mean']:.1f} +- {row['return_std']:.1f} | "
                     f"{row.get('score_mean', float('nan')):.1f} |")
    lines += ["", f"Final: {fin.get('score_mean', float('nan')):.1f} normalised over {fin['episodes']} episodes; "
              f"wall {result['wall_s']:.0f} s."]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [r["step"] for r in result["curve"]]
    ys = [r.get("score_mean", r["return_mean"]) for r in result["curve"]]
    ax.plot(xs, ys, marker="o")
    ax.set_xlabel("agent step")
    ax.set_ylabel("normalised score" if "score_mean" in fin else "return")
    ax.set_title(f"{cfg['algo']} / {cfg['synthetic']}")
    fig.tight_layout()
    with atomic_path(out.with_suffix(".png")) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
