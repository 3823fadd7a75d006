r"""What one GoRL decoder refit loses: distillation error and return, by draws per state and fit length.

GoRL's latent policy is trained with the decoder frozen; at each refit the decoder is refitted on the
stage's final policy (``decoder_data: final_policy``) and the latent policy is reset to N(0, I), so that the
new decoder alone must reproduce the final policy. This measures how well it does, from one pre-refit agent:

  1. Train GoRL (PPO base, constant LR, the `stage50k_const_final` recipe of gorl_hopper.py) for ``--steps`` env
     steps with no refit (stage 0, identity decoder: the latent policy is a plain Gaussian PPO policy), and save it.
  2. For each setting (K = ``final_policy_draws`` actions redrawn per recent state, N = ``decoder_fit_steps``),
     reload the saved agent (the same untrained decoder every time), refit on the same recent states, and record
     StageRecord.policy_shift: the RMS change of the mean pre-squash action, noise-corrected (0 = perfect refit).
  3. Evaluate the policy before the refit and after each (``--episodes`` episodes, stochastic and deterministic).
  4. ``--continue-steps M``: train each trial on for M more env steps (latent PPO, no further refit) and evaluate
     again. The setting ``0:0`` is no refit at all (PPO continuing through the identity decoder), so the rows compare
     a stage that starts with a refit and a reset latent policy against the same PPO carrying on. Every trial is
     reloaded from the checkpoint, so all start with fresh Adam moments. (Training is deterministic for a seed,
     so runs of one seed with other settings share the same stage-0 agent.)
  5. ``--merge``: tabulate such runs over seeds, each setting against the same seed's no-refit row.

``--actor-lr-scale S`` trains every continuing trial (the no-refit one too) with PPOConfig.actor_lr_scale = S (the
stage-0 agent is the same); such runs are tabulated as their own settings ("..., actor lr x S"). ``--reuse`` loads
the stage-0 agent and its recent window from ``<out>_work`` of an earlier run with the same --steps and --seed
(or ``--work DIR``) instead of training them again (training is deterministic for a seed, so the result is the same).

    OMP_NUM_THREADS=1 python benchmarks/gorl/gorl_refit_error.py --steps 150000 --out benchmarks/gorl/gorl_refit_error
    OMP_NUM_THREADS=1 python benchmarks/gorl/gorl_refit_error.py --steps 150000 --settings 0:0,8:2000 \
        --continue-steps 50000 --seed S --out benchmarks/gorl/gorl_refit_continue_sS

Writes <out>.json and <out>.md (machine, settings, seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gendiff.bench import machine_info
from gendiff.io import beside
from gendiff.rl.gorl import GoRL, GoRLConfig
from gendiff.rl.ppo import PPOConfig
from gendiff.rl.train import final_returns
from gendiff.stats import bootstrap_ci

N_BOOT = 10_000  # bootstrap resamples (over seeds) in --merge
RECIPE = GoRLConfig(flow_solver="heun", num_inference_steps=5, decoder_data="final_policy", reset_latent=True,
                    latent_reset_init="gaussian", recent_steps=20480, decoder_fit_steps=2000)


def returns(agent: GoRL, env_id: str, episodes: int) -> dict[str, float]:
    """Mean stochastic and deterministic returns over ``episodes`` episodes (the runs' final evaluation)."""
    return {mode: float(np.mean(r)) for mode, r in final_returns(agent, env_id, episodes).items()}


def reference(setting: str) -> str:
    """The row a setting is paired with in --merge: the no-refit row at the same actor learning rate (the plain
    no-refit row for the no-refit rows at other rates, which thus show what the rate alone does to PPO)."""
    rate = setting[setting.index(", actor lr x"):] if ", actor lr x" in setting else ""
    return "no refit" if setting.startswith("no refit") else "no refit" + rate


def merge(paths: list[Path], out: Path) -> None:
    """Step 5 (``--merge``): one table over seeds of runs with ``--continue-steps``: every setting's returns
    after the extra steps, and its paired difference from the same seed's ``reference`` row (bootstrap 95% over
    seeds; seeds that lack either row are left out of that difference)."""
    runs = [json.loads(p.read_text()) for p in paths]
    settings = list(dict.fromkeys(r["setting"] for run in runs for r in run["rows"] if "continued_stochastic" in r))
    by_seed: dict[int, dict[str, dict]] = {}  # runs of one seed (e.g. more settings later) are pooled
    for run in runs:
        by_seed.setdefault(run["seed"], {}).update({r["setting"]: r for r in run["rows"]})
    seeds = sorted(by_seed)
    lines = [f"# GoRL: the stage after a refit vs PPO carrying on ({runs[0]['env']}, seeds {seeds})", "",
             f"Machine: {runs[0]['machine']['cpu']}, 1 thread per run. Per seed: {runs[0]['steps']:,} stage-0 env steps, "
             f"then each setting from the same saved agent and {runs[0]['continue_steps']:,} more env steps; returns "
             f"over {runs[0]['episodes']} episodes. Paired differences from the no-refit row at the same actor learning "
             f"rate (no-refit rows at other rates: from the plain no-refit row) with a bootstrap 95% interval over "
             f"seeds ({N_BOOT:,} resamples).", "",
             "| setting | policy_shift | stochastic, per seed | deterministic, per seed | - no refit: stochastic "
             "| - no refit: deterministic |", "|---|---:|---|---|---|---|"]
    summary = {}
    for name in settings:
        rows = [by_seed[s][name] for s in seeds if name in by_seed[s]]
        name_seeds = [s for s in seeds if name in by_seed[s]]
        label = name if len(name_seeds) == len(seeds) else f"{name} (seeds {name_seeds})"
        ref = reference(name)
        paired = [s for s in name_seeds if ref in by_seed[s]]
        cells = {}
        for mode in ("stochastic", "deterministic"):
            vals = [r[f"continued_{mode}"] for r in rows]
            diff = np.array([by_seed[s][name][f"continued_{mode}"] - by_seed[s][ref][f"continued_{mode}"]
                             for s in paired])
            lo, hi = bootstrap_ci(diff, N_BOOT) if name != ref else (0.0, 0.0)
            summary.setdefault(name, {})[mode] = {"per_seed": vals, "reference": ref, "paired_seeds": paired,
                                                  "minus_reference": diff.tolist(), "ci95": [lo, hi]}
            cells[mode] = (f"{np.mean(vals):.0f} ({', '.join(f'{v:.0f}' for v in vals)})",
                           "-" if name == ref else f"{diff.mean():+.0f} [{lo:+.0f}, {hi:+.0f}]")
        shift = np.mean([r["policy_shift"] for r in rows]) if "policy_shift" in rows[0] else None
        lines.append(f"| {label} | {'-' if shift is None else f'{shift:.3f}'} | {cells['stochastic'][0]} | "
                     f"{cells['deterministic'][0]} | {cells['stochastic'][1]} | {cells['deterministic'][1]} |")
    beside(out, ".json").write_text(json.dumps({"machine": runs[0]["machine"], "seeds": seeds,
                                                    "runs": [str(p) for p in paths], "summary": summary}, indent=2))
    beside(out, ".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=150_000, help="stage-0 env steps before the refit")
    p.add_argument("--settings", default="1:2000,8:2000,32:2000,8:6000",
                   help="K:N pairs, or K:N:reset with reset a latent_reset_init (default: the recipe's gaussian)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--continue-steps", type=int, default=0, help="env steps of latent RL after each refit (step 4)")
    p.add_argument("--actor-lr-scale", type=float, default=1.0,
                   help="PPOConfig.actor_lr_scale of every continuing trial (stage 0 is trained at 1)")
    p.add_argument("--reuse", action="store_true", help="load stage 0 from --work of a run with the same steps/seed")
    p.add_argument("--work", default=None, help="folder of the stage-0 agent and its recent window (<out>_work)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/gorl/gorl_refit_error")
    p.add_argument("--merge", default=None, help="comma-separated JSONs of --continue-steps runs: tabulate (step 5)")
    a = p.parse_args()
    if a.merge:
        merge([Path(x) for x in a.merge.split(",")], Path(a.out))
        return
    out, work = Path(a.out), Path(a.work or a.out + "_work")  # the pre-refit checkpoint (git-ignored)
    torch.set_num_threads(1)
    # Step 1: stage 0 only (the first refit would come after the run)
    t0, meta = time.perf_counter(), {"env": a.env, "steps": str(a.steps), "seed": str(a.seed)}
    if a.reuse:
        window = work / "recent_window.safetensors"
        if not window.exists():
            raise SystemExit(f"--reuse: {window} not found (run once without --reuse to write it)")
        tensors = load_file(window)
        with safe_open(window, "pt") as f:  # the metadata: what the window was trained with
            stored = f.metadata()
        if stored != meta:
            raise SystemExit(f"--reuse: {window} was written for {stored}, this run asks for {meta}")
        agent, (obs, u, adv) = GoRL.load(work / "pre_refit"), (tensors["obs"], tensors["u"], tensors["adv"])
    else:
        cfg = dataclasses.replace(RECIPE, stage_steps=a.steps + 1)
        agent = GoRL(a.env, cfg, PPOConfig(anneal_lr=False, eval_every=0), seed=a.seed)
        agent.learn(a.steps, progress=False)
        obs, u, adv = agent.base.recent.data()  # the recent window the refit would use (the PPO base's)
        agent.save(work / "pre_refit")
        save_file({"obs": obs, "u": u, "adv": adv}, work / "recent_window.safetensors", metadata=meta)
    rows = [{"setting": "before the refit (stage-0 policy)", **returns(agent, a.env, a.episodes)}]
    print(rows[-1], f"{time.perf_counter() - t0:.0f} s", flush=True)
    # Steps 2-3: one refit per setting, each from the same saved agent
    for item in a.settings.split(","):
        k, n, *rest = item.split(":")
        k, n, reset = int(k), int(n), (rest[0] if rest else RECIPE.latent_reset_init)
        trial = GoRL.load(work / "pre_refit")
        trial.agent.config = dataclasses.replace(trial.agent.config, actor_lr_scale=a.actor_lr_scale)
        suffix = "" if a.actor_lr_scale == 1 else f", actor lr x {a.actor_lr_scale:g}"
        if k == 0:  # no refit: the stage-0 policy as it is
            rows.append({"setting": "no refit" + suffix, **returns(trial, a.env, a.episodes)})
        else:
            trial.config = dataclasses.replace(trial.config, final_policy_draws=k, decoder_fit_steps=n,
                                               latent_reset_init=reset)
            trial._refit(a.steps, obs, u, adv)  # the refit the schedule would run here (steps 2-4 of gendiff.rl.gorl)
            st = trial.stages[-1]
            label = f"K = {k}, N = {n}" + ("" if reset == RECIPE.latent_reset_init else f", reset {reset}") + suffix
            rows.append({"setting": label, "draws": k, "fit_steps": n, "policy_shift": st.policy_shift,
                         "z_spread": st.z_spread, "data_spread": st.data_spread, "fit_s": st.seconds,
                         **returns(trial, a.env, a.episodes)})
        if a.continue_steps:  # Step 4
            trial.learn(a.continue_steps, progress=False)
            rows[-1].update({f"continued_{m}": v for m, v in returns(trial, a.env, a.episodes).items()})
        print(rows[-1], flush=True)
    res = {"machine": machine_info(), "env": a.env, "steps": a.steps, "seed": a.seed, "episodes": a.episodes,
           "continue_steps": a.continue_steps, "actor_lr_scale": a.actor_lr_scale,
           "recipe": dataclasses.asdict(RECIPE), "rows": rows}
    beside(out, ".json").write_text(json.dumps(res, indent=2))
    lines = [f"# One GoRL refit on {a.env}: distillation error and return", "",
             f"Machine: {machine_info()['cpu']}, 1 thread. Stage 0 ({a.steps:,} env steps, PPO with constant LR through "
             f"the identity decoder, seed {a.seed}), then one refit per setting from the same saved agent on the same "
             f"{obs.shape[0]:,} recent states (flow decoder 256x3, 5 Heun steps, batch 256, 8 noise draws, latent reset "
             f"to N(0, I)). Returns: {a.episodes} episodes, evaluation seeds 50,000+.", "",
             "| setting | policy_shift (RMS, pre-squash) | z_spread | data spread | fit s | return stochastic | "
             f"return deterministic | after +{a.continue_steps:,} steps: stochastic | deterministic |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [format(r[key], fmt) if key in r else "-" for key, fmt in
                 (("policy_shift", ".3f"), ("z_spread", ".3f"), ("data_spread", ".3f"), ("fit_s", ".0f"),
                  ("stochastic", ".0f"), ("deterministic", ".0f"), ("continued_stochastic", ".0f"),
                  ("continued_deterministic", ".0f"))]
        lines.append(f"| {r['setting']} | {' | '.join(cells)} |")
    beside(out, ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
