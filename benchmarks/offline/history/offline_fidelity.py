r"""Dynamics fidelity and guidance sweep for policy-guided trajectory diffusion (the issue's must-show tables).

1. Dataset: a local Minari id (made with ``gendiff offline make-dataset`` if missing).
2. Generators: the trajectory-diffusion pipeline (temporal U-Net, EDM) and SynthER (residual MLP, EDM).
3. Target policy: TD3+BC trained on the dataset for ``--agent-steps`` (a deterministic actor, N(pi(s), 1)).
4. Table A (dynamics fidelity): dynamics MSE (MuJoCo set_state from the generated state) of real, SynthER,
   unguided and PGD transitions, and of "no change" (next state = state, on real data) as a scale.
   Table B (guidance sweep, >= 4 coefficients): the target policy's mean log-likelihood of the synthetic
   actions and the dynamics MSE. Also synthetic transitions per second.

Tiny run (~1-2 min on 2 busy cores):
  python benchmarks/offline_fidelity.py --tiny
Measured CPU run (benchmarks/offline_fidelity_{hopper,halfcheetah}.md; 14-16 min per env on 1 core of an AMD EPYC,
most of it the 5,000 trajectory-diffusion steps at ~0.14 s each; the medium datasets made beforehand, see
benchmarks/offline_agents.py):
  python benchmarks/offline_fidelity.py --env Hopper-v5 --diffusion-dir /work/results/offline/Hopper-v5 \
      --out benchmarks/offline_fidelity_hopper
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from gendiff.offline.datasets import MakeDatasetConfig, default_dataset_id, load_or_make_dataset
from gendiff.offline.diffusion import (
    TrajectoryDiffusionConfig,
    edm_heun_scheduler,
    load_or_train_trajectory_diffusion,
)
from gendiff.offline.dynamics import dynamics_mse
from gendiff.offline.learners import build_learner
from gendiff.offline.pgd_loop import TrainAgentConfig
from gendiff.offline.synther import SynthER, SynthERConfig
from gendiff.pipelines.pgd import policy_log_prob_fn


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--level", default="medium")
    p.add_argument("--dataset-steps", type=int, default=20_000)
    p.add_argument("--sac-steps", type=int, default=20_000)
    p.add_argument("--diffusion-steps", type=int, default=5_000)
    p.add_argument("--synther-steps", type=int, default=5_000)
    p.add_argument("--agent-steps", type=int, default=2_000)
    p.add_argument("--transitions", type=int, default=2_000)
    p.add_argument("--inference-steps", type=int, default=64)
    p.add_argument("--coeffs", default="0,0.1,0.3,0.5,1.0,2.0")
    p.add_argument("--pgd-coeff", type=float, default=TrainAgentConfig.guidance_coeff,
                   help="the coefficient reported as the 'pgd' row (train-agent's default); added to --coeffs")
    p.add_argument("--sampler", choices=("heun", "euler"), default="heun",
                   help="heun: EDM Algorithm 2 with the reference churn, as train-agent samples (default)")
    p.add_argument("--diffusion-dir", default="",
                   help="reuse the pipeline saved under DIR/pipeline (train it there if missing); "
                        "default <out>_runs/diffusion")
    p.add_argument("--out", default="benchmarks/offline_fidelity")
    p.add_argument("--dataset-id", default="", help="a Minari id (made if missing) instead of gendiff/<env>/<level>-v0")
    p.add_argument("--tiny", action="store_true", help="minute-sized smoke version")
    a = p.parse_args()
    if a.tiny:
        a.level, a.dataset_steps, a.sac_steps, a.diffusion_steps, a.synther_steps = "random", 3000, 1, 300, 300
        a.agent_steps, a.transitions, a.inference_steps, a.out = 200, 300, 16, "benchmarks/offline_fidelity_tiny"
    return a


def _generate(pipe, n: int, horizon: int, steps: int, policy=None, coeff: float = 0.0) -> tuple[dict, float]:
    t0, per = time.perf_counter(), horizon - 1
    res = pipe(batch_size=-(-n // per), horizon=horizon, num_inference_steps=steps, policy=policy,
               guidance_scale=coeff, cosine_coeff=TrainAgentConfig.cosine_coeff, policy_type="deterministic",
               generator=torch.Generator().manual_seed(0))
    tr = {k: v[:n] for k, v in res.transitions.items()}
    return tr, tr["obs"].shape[0] / (time.perf_counter() - t0)


def main() -> None:
    a = _args()
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    ds_id = a.dataset_id or default_dataset_id(a.env, a.level + ("-tiny" if a.tiny else ""))
    ds = load_or_make_dataset(a.env, a.level, a.dataset_steps, ds_id,
                              config=MakeDatasetConfig(sac_steps=a.sac_steps, progress=False))
    out = Path(a.out)
    real = ds.transitions()
    pipe = load_or_train_trajectory_diffusion(ds, TrajectoryDiffusionConfig(
        dataset_id=ds_id, out_dir=a.diffusion_dir or str(out) + "_runs/diffusion", horizon=8 if a.tiny else 32,
        stride=2 if a.tiny else 8, train_steps=a.diffusion_steps, overwrite=True, progress=False))
    if a.sampler == "heun":
        pipe = pipe.with_scheduler(edm_heun_scheduler(pipe.scheduler))
    synther = SynthER.fit(real, ds.action_low, ds.action_high, SynthERConfig(train_steps=a.synther_steps),
                          str(out) + "_runs/synther")
    agent = build_learner("td3bc", real, ds.action_low, ds.action_high)
    g = torch.Generator().manual_seed(0)
    for _ in range(a.agent_steps):
        agent.update({k: v[torch.randint(0, len(real["obs"]), (256,), generator=g)] for k, v in real.items()})
    log_pi = policy_log_prob_fn(agent, "deterministic")
    horizon = 16 if a.tiny else 64
    n = min(a.transitions, len(real["obs"]))

    def row(tr: dict, rate: float, next_obs=None, stats: dict | None = None) -> dict:
        """Dynamics MSE of ``tr``, and the termination rate and mean reward (of ``stats``, default ``tr``) that the
        critic will learn from."""
        nxt, st = tr["next_obs"] if next_obs is None else next_obs, tr if stats is None else stats
        return {"dynamics_mse": dynamics_mse(a.env, tr["obs"], tr["act"], nxt).mse, "transitions_per_s": rate,
                "termination_pct": 100 * float(st["done"].float().mean()), "mean_reward": float(st["rew"].mean())}

    # the real row: n transitions for the simulator, all of them for the termination rate (terminations are rare)
    real_n = {k: v[:n] for k, v in real.items()}
    fidelity = {"real": row(real_n, float("nan"), stats=real),
                # scale reference: a "model" that predicts no change (next state = state) on the real transitions
                "no change (next = obs)": row(real_n, float("nan"), next_obs=real_n["obs"])}
    t0 = time.perf_counter()
    syn = synther.sample(a.transitions, a.inference_steps, torch.Generator().manual_seed(0))
    rate = a.transitions / (time.perf_counter() - t0)
    fidelity["synther"] = row(syn, rate)
    sweep = []
    for c in sorted({float(x) for x in a.coeffs.split(",")} | {0.0, a.pgd_coeff}):
        tr, rate = _generate(pipe, a.transitions, horizon, a.inference_steps, agent if c else None, c)
        with torch.no_grad():
            lp = float(log_pi(tr["obs"], tr["act"]).mean())
        sweep.append({"coeff": c, "policy_log_likelihood": lp, **row(tr, rate)})
    by_coeff = {r["coeff"]: r for r in sweep}
    for name, c in (("unguided", 0.0), (f"pgd (coeff {a.pgd_coeff})", a.pgd_coeff)):
        fidelity[name] = {k: by_coeff[c][k] for k in ("dynamics_mse", "transitions_per_s", "termination_pct",
                                                       "mean_reward")}
    res = {"args": vars(a), "dataset_id": ds_id, "fidelity": fidelity, "sweep": sweep,
           "wall_s": time.perf_counter() - t_start, "device": "CPU (2 shared cores)"}
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".json").write_text(json.dumps(res, indent=2))
    md = [f"# Dynamics fidelity and guidance sweep on {ds_id}", "",
          f"Settings: {a.diffusion_steps} trajectory-diffusion training steps, {a.synther_steps} SynthER steps, "
          f"sampler {a.sampler} with {a.inference_steps} steps, {a.transitions} transitions per row (seed 0), "
          f"target policy TD3+BC after {a.agent_steps} steps on the real data (a deterministic actor, N(pi(s), 1)).",
          "", "| data | dynamics MSE | transitions/s | terminations % | mean reward |", "|---|---|---|---|---|"]
    md += [f"| {k} | {v['dynamics_mse']:.4g} | {v['transitions_per_s']:.0f} | {v['termination_pct']:.2f} | "
           f"{v['mean_reward']:.3f} |" for k, v in fidelity.items()]
    md += ["", "| guidance coeff | target log-likelihood | dynamics MSE |", "|---|---|---|"]
    md += [f"| {r['coeff']} | {r['policy_log_likelihood']:.3f} | {r['dynamics_mse']:.4g} |" for r in sweep]
    md += ["", f"Wall time {res['wall_s']:.0f} s on {res['device']}."]
    Path(str(out) + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
