r"""Where synthetic rows lie against the real data: the states' distance to it, and how well each action fits its state.

The agent study's diagnostics left the synthetic *states and actions* as the suspect (the simulator's next states do
not rescue them). This measures them, against held-out real rows as the yardstick:

1. Split the real transitions: ``--held-out`` rows for the yardstick, the rest as the reference set.
2. Behaviour cloning: an MLP (256x2, ReLU) regresses action on z-scored state over the reference set
   (``--bc-steps`` Adam steps, lr 1e-3, batch 256). It stands in for the behaviour policy's mean.
3. Per source (real held-out; unguided and PGD windows from ``--pipeline``; SynthER from ``--synther``), on
   ``--transitions`` rows:
   - ``state_nn``: the z-scored distance of each row's state to the nearest reference state;
   - ``bc_residual``: ||a - f(s)||^2, how far the action lies from what the data does at that state (real rows:
     the behaviour's own noise plus the fit's error);
   - the same residual on the rows whose ``state_nn`` is below the real rows' median (familiar states only), which
     separates "the states are elsewhere" from "the actions do not fit familiar states";
   - the share of saturated actions (|a| > 0.99);
   - the mean reward the rows carry (a set whose rewards run above the data's raises a learner's Q values).
   Each mean comes with a 95 % bootstrap interval over rows.
4. PGD is guided by a TD3+BC agent saved by ``agents.py`` / ``train-agent`` (``--agent``: its .safetensors), with
   ``--coeff`` and the reference's Heun sampler (``--sampler``, ``--inference-steps``: how sampling changes it).
5. The value a row feeds a critic (``--critic``: a TD3+BC agent's .safetensors, e.g. one trained on real data only,
   as a fixed judge): its TD3 backup y = r + gamma (1 - d) min_k Q_k(s', pi(s')) (step 1 of td3bc.py, without the
   smoothing noise), and the same with the simulator's r, s' and d for the row's (s, a) (``relabel_with_simulator``).
   y - y_sim is the value a row's generated dynamics add (real rows: ~0), y_sim - the real rows' y the value its
   choice of (s, a) adds; a critic trained on the rows inherits both. The spread of y over rows (std, 5 / 95 %
   quantiles) says how much of the data's range of values the rows cover.

  python benchmarks/offline/coverage.py --tiny --dataset-id gendiff/hopper/randomtiny-v0   # smoke
Full commands and results: benchmarks/offline/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from scipy.spatial import cKDTree
from torch import Tensor, nn

from gendiff.bench import machine_line
from gendiff.io import beside, refuse_existing_table
from gendiff.offline.datasets import load_dataset
from gendiff.offline.diffusion import load_trajectory_pipeline
from gendiff.offline.learners import build_learner
from gendiff.offline.pgd_loop import TrainAgentConfig, load_learner_weights, sample_windows, with_sampler
from gendiff.offline.synther import SynthER
from gendiff.rl.common import mlp
from gendiff.stats import mean_ci


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-id", default="gendiff/hopper/medium-v3")
    p.add_argument("--pipeline", required=True, help="a saved trajectory pipeline folder")
    p.add_argument("--synther", default="", help="a saved SynthER folder ('' skips the row)")
    p.add_argument("--agent", default="", help="a TD3+BC learner's .safetensors to guide PGD ('' skips the row)")
    p.add_argument("--critic", default="", help="a TD3+BC learner's .safetensors whose critic values each row's "
                   "backup, generated vs simulated (step 5; '' skips it)")
    p.add_argument("--coeff", type=float, default=0.1)
    p.add_argument("--transitions", type=int, default=2000)
    p.add_argument("--held-out", type=int, default=2000)
    p.add_argument("--bc-steps", type=int, default=5000)
    p.add_argument("--sample-horizon", type=int, default=64)
    p.add_argument("--inference-steps", type=int, default=64)
    p.add_argument("--sampler", choices=("heun", "euler"), default="heun",
                   help="heun: the reference's EDM Algorithm 2 (churn 80); euler: the scheduler the pipeline was saved with")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/offline/coverage_hopper")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out .json / .md")
    a = p.parse_args()
    refuse_existing_table(a.out, a.overwrite)
    if a.tiny:
        a.transitions, a.held_out, a.bc_steps, a.sample_horizon, a.inference_steps = 64, 64, 50, 16, 4
    return a


def fit_bc(obs: Tensor, act: Tensor, steps: int, seed: int) -> nn.Module:
    """Step 2: f(z-scored s) -> a, an MLP fitted by mean squared error."""
    torch.manual_seed(seed)
    net = mlp(obs.shape[1], act.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, obs.shape[0], (256,), generator=g)
        loss = (net(obs[i]) - act[i]).square().sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def measure(obs: Tensor, act: Tensor, rew: Tensor, ref: cKDTree, mu: Tensor, sd: Tensor, bc: nn.Module,
            familiar: float | None) -> dict[str, Any]:
    """Step 3 for one source: ``obs`` [N, S], ``act`` [N, A], ``rew`` [N]; ``ref`` a tree of the z-scored reference
    states (built once); ``familiar`` the distance below which a state counts as familiar (None: this is the
    yardstick, whose median defines it)."""
    z = (obs - mu) / sd
    nn_dist = torch.as_tensor(ref.query(z.double().numpy(), k=1)[0], dtype=torch.float32)
    with torch.no_grad():
        resid = (act - bc(z)).square().sum(-1)
    cut = float(nn_dist.median()) if familiar is None else familiar
    near = nn_dist <= cut
    return {"state_nn": mean_ci(nn_dist.numpy()), "state_nn_median": float(nn_dist.median()),
            "bc_residual": mean_ci(resid.numpy()), "bc_residual_familiar": mean_ci(resid[near].numpy()),
            "familiar_share": float(near.float().mean()), "saturated": float((act.abs() > 0.99).float().mean()),
            "familiar_cut": cut, "reward": mean_ci(rew.numpy())}


def _oar(tr: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """A source's (obs, act, rew), the inputs of :func:`measure`."""
    return tr["obs"], tr["act"], tr["rew"]


def backups(judge: Any, env_id: str, tr: dict[str, Tensor]) -> dict[str, Any]:
    """Step 5 for one source: rows ``tr`` (obs / act / rew / next_obs / done, N each) -> the TD3 backup y under the
    ``judge`` learner, the simulator's y_sim for the same (s, a), and y - y_sim, each mean with a 95 % interval."""
    from gendiff.offline.dynamics import relabel_with_simulator

    def y(rows: dict[str, Tensor]) -> Tensor:
        with torch.no_grad():
            s2 = judge.state_norm(rows["next_obs"].float())
            v = judge.critic_target(s2, judge.actor_target(s2)).amin(0).squeeze(-1)  # [N]
        return rows["rew"].float() + judge.config.gamma * (1.0 - rows["done"].float()) * v

    y_gen, y_sim = y(tr), y(relabel_with_simulator(env_id, tr))
    return {"backup": mean_ci(y_gen.numpy()), "backup_sim": mean_ci(y_sim.numpy()),
            "backup_gap": mean_ci((y_gen - y_sim).numpy()), "backup_std": float(y_gen.std()),
            "backup_quantiles": {q: float(y_gen.quantile(q)) for q in (0.05, 0.5, 0.95)}}


def main() -> None:
    a = _args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ds = load_dataset(a.dataset_id)
    real = ds.transitions()
    perm = torch.randperm(real["obs"].shape[0], generator=torch.Generator().manual_seed(a.seed))
    held, ref = perm[: a.held_out], perm[a.held_out:]  # 1.
    mu, sd = real["obs"][ref].mean(0), real["obs"][ref].std(0) + 1e-6
    ref_z = (real["obs"][ref] - mu) / sd
    tree = cKDTree(ref_z.double().numpy())
    bc = fit_bc(ref_z, real["act"][ref], a.bc_steps, a.seed)  # 2.
    rows: dict[str, dict[str, Any]] = {}
    keys = ("obs", "act", "rew", "next_obs", "done")
    sets: dict[str, dict[str, Tensor]] = {"real (held out)": {k: real[k][held] for k in keys}}
    rows["real (held out)"] = measure(*_oar(sets["real (held out)"]), tree, mu, sd, bc, None)  # 3.
    cut = rows["real (held out)"]["familiar_cut"]
    pipe = with_sampler(load_trajectory_pipeline(a.pipeline, ds, strict=False), a.sampler)
    gen = torch.Generator().manual_seed(a.seed)
    windows = -(-a.transitions // (a.sample_horizon - 1))
    cfg = TrainAgentConfig(dataset_id="", sample_horizon=a.sample_horizon, num_inference_steps=a.inference_steps,
                           guidance_coeff=a.coeff)
    tr = sample_windows(pipe, windows, cfg, None, gen)
    sets["unguided"] = {k: tr[k][: a.transitions] for k in keys}
    rows["unguided"] = measure(*_oar(sets["unguided"]), tree, mu, sd, bc, cut)
    if a.agent:  # 4.
        agent = load_learner_weights(build_learner("td3bc", real, ds.action_low, ds.action_high, seed=a.seed), a.agent)
        tr = sample_windows(pipe, windows, cfg, agent, gen)
        pgd = f"pgd (coeff {a.coeff:g})"
        sets[pgd] = {k: tr[k][: a.transitions] for k in keys}
        rows[pgd] = measure(*_oar(sets[pgd]), tree, mu, sd, bc, cut)
    if a.synther:
        s = SynthER.load(a.synther).sample(a.transitions, a.inference_steps, gen)
        sets["synther"] = {k: s[k] for k in keys}
        rows["synther"] = measure(*_oar(sets["synther"]), tree, mu, sd, bc, cut)
    if a.critic:  # 5.
        if ds.env_id is None:
            raise ValueError(f"--critic needs the dataset's environment (the simulator's backups); {a.dataset_id!r} "
                             "names none")
        judge = load_learner_weights(build_learner("td3bc", real, ds.action_low, ds.action_high, seed=a.seed),
                                     a.critic)
        for k, rows_k in sets.items():
            rows[k].update(backups(judge, ds.env_id, rows_k))
    res = {"settings": vars(a), "rows": rows, "wall_s": time.perf_counter() - t0,
           "machine": machine_line("1 thread")}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    beside(out, ".json").write_text(json.dumps(res, indent=1))
    md = [f"# Where synthetic rows lie: {a.dataset_id}", "",
          f"Machine: {res['machine']}. {a.transitions} rows per source, seed {a.seed}; reference set: the dataset less "
          f"{a.held_out} held-out rows; BC fit {a.bc_steps} steps; windows of {a.sample_horizon}, {a.sampler} "
          f"{a.inference_steps} steps; PGD coeff {a.coeff:g} guided by {a.agent or '(not run)'}. "
          f"Familiar states: nearest-reference distance <= {cut:.3f} (the held-out real rows' median). "
          f"Wall {res['wall_s']:.0f} s.", "",
          "| rows | state distance to the real data [95 %] | BC residual ||a - f(s)||^2 [95 %] | "
          "BC residual, familiar states only | familiar share | |a| > 0.99 | mean reward [95 %] |",
          "|---|---|---|---|---|---|---|"]

    def cell(m: dict[str, Any]) -> str:
        return f"{m['mean']:.4f} [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]"

    md += [f"| {k} | {cell(r['state_nn'])} | {cell(r['bc_residual'])} | {cell(r['bc_residual_familiar'])} | "
           f"{r['familiar_share']:.2f} | {r['saturated']:.3f} | {cell(r['reward'])} |" for k, r in rows.items()]
    if a.critic:
        md += ["", f"Step 5, the TD3 backup y = r + gamma (1 - d) min_k Q_k(s', pi(s')) each row feeds a critic, judged "
               f"by {a.critic}; y_sim: the simulator's r, s', d for the same (s, a):", "",
               "| rows | backup y [95 %] | y over rows: std (5 % / 50 % / 95 %) | y_sim [95 %] | y - y_sim [95 %] |",
               "|---|---|---|---|---|"]
        md += [f"| {k} | {cell(r['backup'])} | {r['backup_std']:.1f} ({r['backup_quantiles'][0.05]:.1f} / "
               f"{r['backup_quantiles'][0.5]:.1f} / {r['backup_quantiles'][0.95]:.1f}) | {cell(r['backup_sim'])} | "
               f"{cell(r['backup_gap'])} |" for k, r in rows.items()]
    beside(out, ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
