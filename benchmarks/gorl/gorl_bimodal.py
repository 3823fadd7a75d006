"""GoRL (flow and diffusion decoders) vs Gaussian PPO vs SAC on gendiff/TwoModes-v0 or TwoModesNoRepeat-v0.

Same env-step budget for every algorithm, >= 3 seeds. Writes benchmarks/gorl/gorl_bimodal.{json,md}, the
learning curves (gorl_bimodal_curves.png) and action histograms at fixed contexts (gorl_bimodal_actions.png),
plus the decoders' cost per action on this CPU (network evaluations, microseconds).

Usage: OMP_NUM_THREADS=1 python benchmarks/gorl/gorl_bimodal.py [--env gendiff/TwoModesNoRepeat-v0 --out
benchmarks/gorl/gorl_norepeat] [--steps 20000] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import yaml

from gendiff.rl.benchmark import GorlBenchmarkConfig, run_benchmark
from gendiff.rl.envs import TwoModesEnv

HERE = Path(__file__).resolve().parent
# Budget-sized settings (all algorithms use 64x64 networks; GoRL's decoder is 128 wide).
PPO = {"num_envs": 4, "num_steps": 256, "num_minibatches": 16, "update_epochs": 10, "hidden": [64, 64],
       "eval_deterministic": False}
SAC = {"hidden": [64, 64], "learning_starts": 1000, "batch_size": 256, "eval_deterministic": False}
GORL = {"stage_steps": 2048, "recent_steps": 4096, "decoder_fit_steps": 300, "decoder_batch_size": 128,
        "decoder_width": 128, "decoder_depth": 3, "latent_kl_coef": 0.01}


def _act(agent, obs: np.ndarray) -> np.ndarray:
    if hasattr(agent, "decoder"):
        return agent.act(obs, deterministic=False)
    if hasattr(agent, "policy"):
        return agent.policy.act(obs, deterministic=False)
    return agent.act(obs, deterministic=False)


def mode_stats(agent, env: TwoModesEnv, contexts: int = 16, n: int = 256, seed: int = 0) -> dict[str, float]:
    """Shares of actions within 2 w of each mode, and the balance min/max of the two, per context.

    The balance is measured at each of ``contexts`` fixed contexts (n actions each) and then averaged, so a
    policy that picks one mode per context (a different one for different contexts) scores 0, not 1.
    """
    rng = np.random.default_rng(seed)
    c = np.repeat(np.linspace(-0.9, 0.9, contexts), n)
    a = _act(agent, env.context_obs(c, rng.integers(0, env.horizon, c.shape[0])))
    d = np.sqrt(((a[:, None, :] - env.modes(c)) ** 2).sum(-1))  # [contexts * n, 2]
    near = (d < 2 * env.width).reshape(contexts, n, 2).mean(1)  # [contexts, 2]
    balance = near.min(1) / np.maximum(near.max(1), 1e-9)
    return {"near_plus": float(near[:, 0].mean()), "near_minus": float(near[:, 1].mean()),
            "balance": float(balance.mean()), "mean_reward_ignoring_repeats": float(env.reward(c, a).mean())}


def decoder_cost(decoder, obs_dim: int, act_dim: int, batch: int, repeats: int = 20) -> dict[str, float]:
    """Wall time of one decode call on this CPU (1 thread): microseconds per action and per call."""
    obs, z = torch.randn(batch, obs_dim), torch.randn(batch, act_dim)
    decoder.decode(obs, z)
    t0 = time.perf_counter()
    for _ in range(repeats):
        decoder.decode(obs, z)
    per_call = (time.perf_counter() - t0) / repeats
    return {"batch": batch, "nfe_per_action": decoder.nfe_per_action, "us_per_call": per_call * 1e6,
            "us_per_action": per_call * 1e6 / batch}


def plot_actions(agents: dict[str, object], env: TwoModesEnv, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contexts = (-0.8, 0.0, 0.8)
    fig, axes = plt.subplots(len(agents), len(contexts), figsize=(10, 2.2 * len(agents)), squeeze=False)
    for i, (name, agent) in enumerate(agents.items()):
        for j, c in enumerate(contexts):
            a = _act(agent, env.context_obs(np.full(2000, c)))
            ax = axes[i, j]
            ax.hist(a[:, 0], bins=80, range=(-1, 1), color="C0")
            for m in env.modes(c)[:, 0]:
                ax.axvline(m, color="C3", ls="--", lw=1)
            ax.set_title(f"{name}, context c={c}", fontsize=9)
            ax.set_yticks([])
    axes[-1, 1].set_xlabel("action dimension 0 (dashed: the two optimal modes)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--env", type=str, default="gendiff/TwoModes-v0",
                   help="gendiff/TwoModes-v0 or gendiff/TwoModesNoRepeat-v0")
    p.add_argument("--steps", type=int, default=12_288)
    p.add_argument("--seeds", type=str, default="0,1,2")
    p.add_argument("--algos", type=str, default="gorl_fm,gorl_diffusion,ppo,sac")
    p.add_argument("--latent-kl", type=float, default=GORL["latent_kl_coef"],
                   help="GoRL's latent KL toward N(0, I) (1.0 on TwoModesNoRepeat-v0: benchmarks/gorl/gorl_norepeat_kl1.md)")
    p.add_argument("--runs-dir", type=str, default="/tmp/gorl_bimodal_runs")
    p.add_argument("--out", type=str, default=str(HERE / "gorl_bimodal"))
    args = p.parse_args()
    torch.set_num_threads(1)
    env = gym.make(args.env).unwrapped  # checked before any training: the statistics below need its modes
    if not isinstance(env, TwoModesEnv):
        raise SystemExit(f"--env must be one of gendiff's TwoModes tasks, got {args.env}")
    runs = Path(args.runs_dir)
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    gorl = {**GORL, "latent_kl_coef": args.latent_kl}
    for name, d in (("ppo", PPO), ("sac", SAC), ("gorl", gorl)):
        (runs / f"{name}.yaml").write_text(yaml.safe_dump(d))
    cfg = GorlBenchmarkConfig(env=args.env, algos=tuple(args.algos.split(",")),
                              seeds=tuple(int(s) for s in args.seeds.split(",")), steps=args.steps,
                              out=str(runs), eval_every=2048, eval_episodes=10, ppo_config=str(runs / "ppo.yaml"),
                              sac_config=str(runs / "sac.yaml"), gorl_config=str(runs / "gorl.yaml"))
    t0 = time.perf_counter()
    res = run_benchmark(cfg)
    total = time.perf_counter() - t0
    modes = {algo: [mode_stats(res["agents"][(algo, s)], env, seed=s) for s in cfg.seeds] for algo in cfg.algos}
    cost = {}
    for algo in cfg.algos:
        agent = res["agents"][(algo, cfg.seeds[0])]
        if hasattr(agent, "generative"):
            cost[algo] = [decoder_cost(agent.generative, agent.obs_dim, agent.act_dim, b) for b in (1, 256)]
    out = Path(args.out)
    shutil.copy(runs / "curves.png", f"{out}_curves.png")
    plot_actions({a: res["agents"][(a, cfg.seeds[0])] for a in cfg.algos}, env, Path(f"{out}_actions.png"))
    report = {"env": cfg.env, "steps": cfg.steps, "seeds": list(cfg.seeds), "total_wall_s": total,
              "settings": {"ppo": PPO, "sac": SAC, "gorl": gorl}, "results": res["summary"], "modes": modes,
              "decoder_cost_cpu_1thread": cost,
              "curves": {a: [r["curve"] for r in res["rows"][a]] for a in cfg.algos},
              "stages": {a: res["rows"][a][0]["stages"] for a in cfg.algos}}
    Path(f"{out}.json").write_text(json.dumps(report, indent=2))
    lines = [f"# GoRL on {cfg.env}: {cfg.steps} env steps, seeds {list(cfg.seeds)}, GoRL latent KL "
             f"{args.latent_kl}", "",
             "Return = mean over 20 evaluation episodes (max 10). Stochastic: actions sampled from the policy;",
             "deterministic: Gaussian mean (GoRL: latent mean through the decoder). Mode balance = min/max of the",
             "shares of actions within 2w of each mode at a fixed context, averaged over 16 contexts (1 = both",
             "modes equally used at every context, 0 = one mode per context).", "",
             "| algo | return (stochastic) | return (deterministic) | mode balance | wall s / run |",
             "|---|---|---|---|---|"]
    for algo, s in res["summary"].items():
        st, de = s["final_return_stochastic"], s["final_return_deterministic"]
        bal = [m["balance"] for m in modes[algo]]
        lines.append(f"| {algo} | {st['mean']:.2f} +- {st['std']:.2f} | {de['mean']:.2f} +- {de['std']:.2f} | "
                     f"{np.mean(bal):.2f} +- {np.std(bal):.2f} | {s['wall_s']['mean']:.0f} |")
    lines += ["", "Decoder cost per action on this CPU (1 thread):", "",
              "| decoder | batch | network evaluations / action | us / action | us / call |", "|---|---|---|---|---|"]
    for algo, rows in cost.items():
        for r in rows:
            lines.append(f"| {algo} | {r['batch']} | {r['nfe_per_action']} | {r['us_per_action']:.1f} | "
                         f"{r['us_per_call']:.0f} |")
    lines += ["", f"Total wall time {total:.0f} s. Figures: {out.name}_curves.png, {out.name}_actions.png."]
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
