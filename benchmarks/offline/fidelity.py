r"""Dynamics fidelity of synthetic data and the guidance sweep (the PGD issue's fidelity must-show), per env.

1. Generators: a saved trajectory pipeline (``--pipeline``, from ``gendiff offline train-diffusion``) and SynthER
   (``--synther``: loaded if saved there, else trained on the dataset and saved).
2. Target policy: TD3+BC after ``--target-steps`` updates on the real data (deterministic: N(pi(s), 1), as the
   reference treats TD3+BC).
3. Table A, rows real / no change (next = obs) / synther / unguided / pgd at every ``--coeffs``: the simulator's
   dynamics MSE, reward MSE, generated and simulated termination rates, the target policy's log-likelihood of the
   actions and the mean squared distance of the actions to pi(s).
4. Table B, the guidance placement: the same coefficients with the shift before the denoiser call (the reference,
   gendiff's default) and with gendiff's earlier placement (added after every scheduler stage), so that an old
   coefficient can be mapped to a new one.

  python benchmarks/offline/fidelity.py --tiny --dataset-id gendiff/hopper/randomtiny-v0   # smoke
Full commands and results: benchmarks/offline/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from gendiff.bench import machine_line
from gendiff.io import beside, refuse_existing_table
from gendiff.offline.datasets import load_dataset
from gendiff.offline.diffusion import edm_heun_scheduler, load_trajectory_pipeline
from gendiff.offline.dynamics import check_transitions
from gendiff.offline.learners import build_learner
from gendiff.offline.synther import SynthER, SynthERConfig
from gendiff.pipelines.pgd import policy_log_prob_fn


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-id", default="gendiff/hopper/medium-v3")
    p.add_argument("--pipeline", required=True, help="a saved trajectory pipeline folder")
    p.add_argument("--synther", default="", help="SynthER folder: loaded if saved there, else trained and saved")
    p.add_argument("--synther-steps", type=int, default=20_000)
    p.add_argument("--target-steps", type=int, default=20_000)
    p.add_argument("--coeffs", default="0.1,0.3,1.0,3.0")
    p.add_argument("--direction-coeffs", default="0.1,0.3,1.0", help="Table B: the earlier placement ('' skips)")
    p.add_argument("--transitions", type=int, default=4000)
    p.add_argument("--sample-horizon", type=int, default=64)
    p.add_argument("--inference-steps", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/offline/fidelity")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out .json / .md")
    a = p.parse_args()
    refuse_existing_table(a.out, a.overwrite)
    if a.tiny:
        a.synther_steps, a.target_steps, a.transitions, a.sample_horizon, a.inference_steps = 50, 50, 100, 16, 8
    return a


def _synther(a: argparse.Namespace, ds: Any) -> SynthER:
    folder = Path(a.synther) if a.synther else Path(a.out + "_runs") / "synther"
    if (folder / "synther_model").is_dir():
        return SynthER.load(folder)
    return SynthER.fit(ds.transitions(), ds.action_low, ds.action_high,
                       SynthERConfig(train_steps=a.synther_steps, seed=a.seed), folder)


def _target(a: argparse.Namespace, ds: Any, real: dict[str, torch.Tensor]) -> Any:
    agent = build_learner("td3bc", real, ds.action_low, ds.action_high, seed=a.seed)
    g = torch.Generator().manual_seed(a.seed)
    n = real["obs"].shape[0]
    for _ in range(a.target_steps):
        agent.update({k: v[torch.randint(0, n, (256,), generator=g)] for k, v in real.items()})
    return agent


def _row(env_id: str, tr: dict[str, torch.Tensor], agent: Any, horizon: int, rate: float | None = None) -> dict:
    with torch.no_grad():
        lp = float(policy_log_prob_fn(agent, "deterministic")(tr["obs"], tr["act"]).mean())
        dist = float((tr["act"] - agent(tr["obs"])).square().sum(-1).mean())
    return {**check_transitions(env_id, tr, horizon), "target_log_likelihood": lp, "action_sq_dist_to_pi": dist,
            "transitions_per_s": rate}


def main() -> None:
    a = _args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    ds = load_dataset(a.dataset_id)
    real = {k: v for k, v in ds.transitions().items()}
    pipe = load_trajectory_pipeline(a.pipeline, ds, strict=False)
    heun = pipe.with_scheduler(edm_heun_scheduler(pipe.scheduler))
    per = a.sample_horizon if pipe.normalizer.residual else a.sample_horizon - 1
    synther, agent = _synther(a, ds), _target(a, ds, real)

    def generate(coeff: float, kind: str = "shift") -> tuple[dict, float]:
        t0 = time.perf_counter()
        res = heun(batch_size=-(-a.transitions // per), horizon=a.sample_horizon, num_inference_steps=a.inference_steps,
                   policy=agent if coeff else None, guidance_scale=coeff, policy_type="deterministic",
                   guidance_kind=kind, generator=torch.Generator().manual_seed(a.seed))
        tr = {k: v[:a.transitions] for k, v in res.transitions.items()}
        return tr, tr["obs"].shape[0] / (time.perf_counter() - t0)

    idx = torch.randperm(real["obs"].shape[0], generator=torch.Generator().manual_seed(a.seed))[:a.transitions]
    sub = {k: v[idx] for k, v in real.items()}
    rows: dict[str, dict] = {"real": _row(ds.env_id, sub, agent, a.sample_horizon),
                             "no change (next = obs)": _row(ds.env_id, {**sub, "next_obs": sub["obs"]}, agent,
                                                            a.sample_horizon)}
    t0 = time.perf_counter()
    s = synther.sample(a.transitions, 128, torch.Generator().manual_seed(a.seed))
    rows["synther"] = _row(ds.env_id, s, agent, a.sample_horizon, a.transitions / (time.perf_counter() - t0))
    rows["unguided"] = _row(ds.env_id, *generate(0.0)[:1], agent, a.sample_horizon)
    coeffs = [float(c) for c in a.coeffs.split(",") if c]
    for c in coeffs:
        tr, rate = generate(c)
        rows[f"pgd (coeff {c:g})"] = _row(ds.env_id, tr, agent, a.sample_horizon, rate)
    placement = []
    for c in [float(c) for c in a.direction_coeffs.split(",") if c]:
        tr, rate = generate(c, "direction")
        placement.append({"coeff": c, "direction": _row(ds.env_id, tr, agent, a.sample_horizon, rate),
                          "shift": rows.get(f"pgd (coeff {c:g})")})
    res = {"settings": vars(a), "env_id": ds.env_id, "pipeline_normalizer_residual": pipe.normalizer.residual,
           "pipeline_action_layout": pipe.normalizer.action_layout,
           "rows": rows, "placement": placement, "wall_s": time.perf_counter() - t_start,
           "machine": machine_line("1 thread")}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    beside(out, ".json").write_text(json.dumps(res, indent=1))
    md = [f"# Dynamics fidelity and guidance on {a.dataset_id} ({ds.env_id})", "",
          f"Machine: {res['machine']}. Pipeline {a.pipeline} (residual layout: {pipe.normalizer.residual}, "
          f"action layout: {pipe.normalizer.action_layout}); "
          f"{a.transitions} transitions per row, windows of {a.sample_horizon}, EDM Algorithm 2 with "
          f"{a.inference_steps} steps, seed {a.seed}; SynthER 128 steps; target policy TD3+BC after {a.target_steps} "
          f"updates on the real data (N(pi(s), 1)). Wall {res['wall_s']:.0f} s.", "",
          "| data | dynamics MSE [95 % CI] | reward MSE | done % (simulator %) | target log-lik | ||a - pi(s)||^2 |",
          "|---|---|---|---|---|---|"]
    md += [f"| {k} | {r['dynamics_mse']:.4g} [{r['dynamics_mse_ci95'][0]:.4g}, {r['dynamics_mse_ci95'][1]:.4g}] | "
           f"{r['reward_mse']:.4g} | {100 * r['done_rate']:.2f} "
           f"({100 * r['sim_terminated_rate']:.2f}) | {r['target_log_likelihood']:.3f} | "
           f"{r['action_sq_dist_to_pi']:.4g} |" for k, r in rows.items()]
    if placement:
        md += ["", "Guidance placement (same coefficient): shift before the denoiser call (default) vs the earlier "
               "placement after every scheduler stage", "",
               "| coeff | shift: target log-lik | shift: dynamics MSE | earlier: target log-lik | earlier: dynamics MSE |",
               "|---|---|---|---|---|"]
        for p in placement:
            sh = p["shift"] or {}
            md.append(f"| {p['coeff']:g} | {sh.get('target_log_likelihood', float('nan')):.3f} | "
                      f"{sh.get('dynamics_mse', float('nan')):.4g} | {p['direction']['target_log_likelihood']:.3f} | "
                      f"{p['direction']['dynamics_mse']:.4g} |")
    beside(out, ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
