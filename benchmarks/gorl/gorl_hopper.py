r"""Hopper-v5 at a 2-core budget: GoRL (flow decoder, PPO base) vs Gaussian PPO, and a SAC learning curve.

The parts run as separate single-thread processes (one per core) and the report reads their run folders:

    OMP_NUM_THREADS=1 python benchmarks/gorl/gorl_hopper.py --part onpolicy --steps 300000 --seeds 0,1,2 &
    OMP_NUM_THREADS=1 python benchmarks/gorl/gorl_hopper.py --part sac --sac-steps 300000 --sac-seeds 0 &
    wait; python benchmarks/gorl/gorl_hopper.py --part report

Another budget goes in its own runs folder and report stem, e.g. the 1M-step runs (benchmarks/gorl/gorl_hopper_1m.md):
``--steps 1000000 --eval-every 50000 --runs-dir runs/gorl_hopper_1m`` and ``--part report --out benchmarks/gorl/gorl_hopper_1m``.

GoRL variants (a GoRLConfig YAML each; the report labels their rows with the group name):

    printf "reset_latent: true\ndecoder_data: all\nrecent_steps: 10240\n" > reset.yaml    # the reference's refit
    printf "num_inference_steps: 50\n" > nfe50.yaml                                        # 50 Euler steps
    printf "flow_solver: heun\nnum_inference_steps: 5\n" > heun5.yaml                       # 5 Heun steps, 9 calls
    printf "flow_solver: heun\nnum_inference_steps: 5\ndecoder_data: all\n" > heun5_all.yaml  # ... on all pairs
    cat heun5_all.yaml > heun5_all_reset.yaml; printf "reset_latent: true\nrecent_steps: 10240\n" >> heun5_all_reset.yaml
    cat heun5_all.yaml > stage50k.yaml   # 5 refits of 2,000 steps, latent policy reset to exactly N(0, I)
    printf "reset_latent: true\nlatent_reset_init: gaussian\nstage_steps: 50000\nrecent_steps: 20480\n" >> stage50k.yaml
    printf "decoder_fit_steps: 2000\n" >> stage50k.yaml
    cat stage50k.yaml > stage50k_lr.yaml; printf "lr_schedule: stage\n" >> stage50k_lr.yaml  # per-stage LR anneal
    sed 's/latent_reset_init: gaussian/latent_reset_init: recentre/' stage50k_lr.yaml > stage50k_lr_recentre.yaml  # keep the trunk
    sed 's/stage_steps: 50000/stage_steps: [100000, 100000, 50000]/' stage50k_lr.yaml > refsched.yaml  # the reference's
    printf "latent_kl_coef: 0.001\n" >> refsched.yaml      # HopperStand proportions (2:2:1:1) and z regulariser
    printf "anneal_lr: false\n" > ppo_const.yaml  # constant LR, as the reference's latent PPO per stage: the group
    # stage50k_const is stage50k.yaml with --ppo-config ppo_const.yaml; the PPO baseline takes it too (own --group)
    sed 's/decoder_data: all/decoder_data: final_policy/' stage50k.yaml > stage50k_final.yaml  # refit on the final
    # policy's actions (group stage50k_const_final, with --ppo-config ppo_const.yaml)
    cat stage50k.yaml > stage50k_kl0.yaml; printf "latent_kl_coef: 0.0\n" >> stage50k_kl0.yaml  # no latent regulariser
    cat stage50k_final.yaml > stage50k_final_k8.yaml; printf "final_policy_draws: 8\n" >> stage50k_final_k8.yaml
    # (the recipe configs/recipes/gorl_mujoco.yaml up to session 17; it now has a 100k last stage, k8_last100k below)
    sed 's/decoder_fit_steps: 2000/decoder_fit_steps: 6000/' stage50k_final_k8.yaml > stage50k_final_k8_fit6k.yaml
    # (groups stage50k_const_final_k8 and ..._k8_fit6k, with --ppo-config configs/recipes/ppo_const_lr.yaml)
    printf "anneal_lr: false\nactor_lr_scale: 2.0\n" > ppo_const_lr2.yaml  # the actor's rate x2, critic's unchanged:
    # groups ppo_const_lr2 (--algos ppo) and k8_lr2 (--algos gorl_fm --gorl-config stage50k_final_k8.yaml),
    # both --ppo-config ppo_const_lr2.yaml; the same at x4 (ppo_const_lr4, k8_lr4); benchmarks/gorl/gorl_hopper_actor_lr.md
    printf "anneal_lr: false\nactor_lr_scale: 8.0\n" > ppo_const_lr8.yaml  # group k8_lr8: the latent actor's rate x8
    cp stage50k_final_k8.yaml k8_decay.yaml; printf "actor_lr_decay: true\n" >> k8_decay.yaml  # group
    # k8_decay4 (--ppo-config ppo_const_lr4.yaml): x4 right after each refit, falling to x1 by the next
    # report with --compare k8_decay4:k8_lr4,... for GoRL-vs-GoRL pairs; benchmarks/gorl/gorl_hopper_actor_decay.md
    sed 's/^stage_steps: 50000/stage_steps: [50000, 50000, 50000, 50000, 100000]/' stage50k_final_k8.yaml > k8_last100k.yaml
    # group k8_lr4_last100k (--ppo-config configs/recipes/gorl_mujoco_ppo.yaml): the last stage 100k long, = the
    # recipe configs/recipes/gorl_mujoco.yaml since session 18; benchmarks/gorl/gorl_hopper_last_stage_10seeds.md
    OMP_NUM_THREADS=1 python benchmarks/gorl/gorl_hopper.py --part onpolicy --algos gorl_fm --gorl-config heun5.yaml \
        --group heun5 --seeds 0

Each run is ``gendiff gorl train`` with the library defaults (configs/gorl_ppo.yaml, gorl_sac.yaml,
gorl.yaml: PPO 4 x 512 rollouts, 10 epochs, 64x64 networks; SAC 256x2, one update per step; GoRL stages of
20k steps, 10-step flow decoder refit for 500 steps on the last 20k positive-advantage (s, a)). Learning-curve
evaluations: 5 episodes every ``--eval-every`` steps (deterministic: the mean action for PPO and SAC, the mean
latent through the decoder for GoRL); final returns: 20 episodes, stochastic and deterministic.

Cost on the AMD EPYC here (1 thread): SAC ~57 env steps/s (300k: ~90 min per seed); PPO ~1,100 env steps/s;
GoRL-fm ~500 env steps/s plus ~20 s per decoder refit. Writes benchmarks/gorl/gorl_hopper.{json,md},
gorl_hopper_curves.png (GoRL vs PPO) and gorl_hopper_sac_curve.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gendiff.bench import machine_info
from gendiff.io import beside
from gendiff.rl.benchmark import GorlBenchmarkConfig, run_benchmark
from gendiff.rl.train import plot_curves
from gendiff.stats import bootstrap_ci

HERE = Path(__file__).resolve().parent
ONPOLICY = ("ppo", "gorl_fm")
# published SAC on Hopper (SB3 / CleanRL / the SAC paper's curves): ~2,500-3,000 by 300k env steps
SAC_REFERENCE = 2500.0
N_BOOT = 10_000  # bootstrap resamples for the paired GoRL - PPO intervals (over seeds)


def _seeds(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(","))


def _load_runs(folder: Path) -> dict[str, list[dict]]:
    """``folder/<algo>_s<seed>/metrics.json`` -> {algo: [metrics per seed, by seed]}."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*_s*/metrics.json")):
        m = json.loads(path.read_text())
        runs.setdefault(m["algo"], []).append(m)
    for rs in runs.values():
        rs.sort(key=lambda m: m["seed"])
    return runs


def _at(curve: dict, step: int) -> float | None:
    """The evaluation return logged at ``step`` (None when the curve has no point there)."""
    return next((r for s, r in zip(curve["steps"], curve["mean"]) if s == step), None)


def _paired(a: dict[int, dict], b: dict[int, dict], seeds: list[int]) -> dict:
    """Final returns of runs ``a`` minus runs ``b`` (metrics by seed) on ``seeds``: per seed, mean, bootstrap 95%."""
    return {mode: {"seeds": seeds, "per_seed": (d := [
        a[s][f"final_return_{mode}"] - b[s][f"final_return_{mode}"] for s in seeds]),
        "mean": float(np.mean(d)), "ci95": bootstrap_ci(np.asarray(d), N_BOOT)} for mode in ("stochastic", "deterministic")}


def _fmt_paired(paired: dict) -> str:
    """One line of a :func:`_paired` result: mean [95% CI] (per seed) for each mode."""
    return "; ".join(f"{mode} {p['mean']:+.0f} [{p['ci95'][0]:+.0f}, {p['ci95'][1]:+.0f}] "
                     f"(per seed {', '.join(f'{v:+.0f}' for v in p['per_seed'])})" for mode, p in paired.items())


def report(runs_dir: Path, stem: Path = HERE / "gorl_hopper", compare: tuple[tuple[str, str], ...] = ()) -> dict:
    """Tabulate every ``runs_dir/<group>/<algo>_s<seed>`` run; groups other than onpolicy / sac are variants.
    Every GoRL row is paired with every PPO row on their common seeds; ``compare`` adds pairs of groups (A, B):
    A - B, each a group of one algorithm.

    Writes ``<stem>.json``, ``<stem>.md``, ``<stem>_curves.png`` and ``<stem>_sac_curve.png``.
    """
    order = lambda d: (d.name != "onpolicy", d.name == "sac", d.name)  # noqa: E731  defaults, variants, SAC
    folders = sorted((d for d in runs_dir.iterdir() if d.is_dir()), key=order) if runs_dir.is_dir() else []
    groups = {d.name: _load_runs(d) for d in folders}
    groups = {g: r for g, r in groups.items() if r}
    if not groups:
        raise FileNotFoundError(f"no <group>/<algo>_s<seed>/metrics.json under {runs_dir}: run the parts first")
    missing = [g for pair in compare for g in pair if g not in groups or len(groups[g]) != 1]
    if missing:  # before any table is built
        raise ValueError(f"--compare: {missing} are not groups of one algorithm under {runs_dir} "
                         f"(groups: {sorted(groups)})")
    rows = {(algo if g in ("onpolicy", "sac") else f"{algo} ({g})"): rs for g, runs in groups.items()
            for algo, rs in runs.items()}
    onpolicy = {label: rs for label, rs in rows.items() if not label.startswith("sac")}
    sac = {label: rs for label, rs in rows.items() if label.startswith("sac")}
    summary = {algo: {"steps": rs[0]["steps"], "seeds": [m["seed"] for m in rs],
                      **{k: {"mean": float(np.mean([m[k] for m in rs])), "std": float(np.std([m[k] for m in rs])),
                             "per_seed": [m[k] for m in rs]}
                         for k in ("final_return_stochastic", "final_return_deterministic", "wall_s")}}
               for algo, rs in rows.items()}
    lines = ["# Hopper-v5 at a 2-core budget", "",
             f"Machine: {machine_info()['cpu']}, 1 thread per run, the parts in parallel processes. "
             "Library defaults unless the row names a variant (see benchmarks/gorl/gorl_hopper.py). Final returns: "
             "20 episodes per seed.", "",
             "| algo | env steps | seeds | return (stochastic), mean +- std | per seed | return (deterministic) "
             "| per seed | wall min / run |", "|---|---:|---|---|---|---|---|---:|"]
    for algo, s in summary.items():
        st, de = s["final_return_stochastic"], s["final_return_deterministic"]
        lines.append(f"| {algo} | {s['steps']:,} | {s['seeds']} | {st['mean']:.0f} +- {st['std']:.0f} | "
                     f"{', '.join(f'{v:.0f}' for v in st['per_seed'])} | {de['mean']:.0f} +- {de['std']:.0f} | "
                     f"{', '.join(f'{v:.0f}' for v in de['per_seed'])} | {s['wall_s']['mean'] / 60:.0f} |")
    paired: dict[str, dict] = {}
    # every GoRL row against every PPO row ("ppo": the library defaults; "ppo (<group>)": a --ppo-config variant)
    baselines = {lb: {m["seed"]: m for m in rs} for lb, rs in onpolicy.items() if lb.split(" ")[0] == "ppo"}
    if baselines:
        for label in (lb for lb in onpolicy if lb.startswith("gorl")):
            by = {m["seed"]: m for m in onpolicy[label]}
            for base, ppo in baselines.items():
                common = sorted(set(ppo) & set(by))
                if not common:
                    continue
                key = label if base == "ppo" else f"{label} - {base}"
                paired[key] = _paired(by, ppo, common)
                lines += ["", f"{label} - {'PPO' if base == 'ppo' else base}, same seed: " + _fmt_paired(paired[key])]
            spread = [(m["seed"], m["stages"][0].get("z_spread"), m["stages"][-1].get("z_spread"))
                      for m in onpolicy[label] if m["stages"] and m["stages"][0].get("z_spread") is not None]
            if spread:
                lines.append(f"{label}: decoder spread over z (StageRecord.z_spread), first -> last refit: " + "; ".join(
                    f"seed {sd} {a:.3f} -> {b:.3f}" for sd, a, b in spread))
            shifts = [(m["seed"], [st["policy_shift"] for st in m["stages"]]) for m in onpolicy[label]
                      if m["stages"] and m["stages"][0].get("policy_shift") is not None]
            if shifts:
                lines.append(f"{label}: mean-action change at each refit (StageRecord.policy_shift, pre-squash units): "
                             + "; ".join(f"seed {sd} {', '.join(f'{v:.3f}' for v in vs)}" for sd, vs in shifts))
    for a, b in compare:  # extra pairs named by group, e.g. GoRL variants against each other (checked above)
        (ra,), (rb,) = groups[a].values(), groups[b].values()
        by_a, by_b = {m["seed"]: m for m in ra}, {m["seed"]: m for m in rb}
        common = sorted(set(by_a) & set(by_b))
        if common:
            paired[f"{a} - {b}"] = _paired(by_a, by_b, common)
            lines += ["", f"{a} - {b}, same seed: " + _fmt_paired(paired[f"{a} - {b}"])]
    sac_points = {}
    if "sac" in sac:
        for m in sac["sac"]:
            pts = {k: _at(m["curve"], k) for k in (100_000, 200_000, 300_000)}
            sac_points[m["seed"]] = pts
            best = max(m["curve"]["mean"]) if m["curve"]["mean"] else float("nan")
            at = ", ".join(f"{k // 1000}k: {v:.0f}" for k, v in pts.items() if v is not None) or "no point at 100k-300k"
            lines += ["", f"SAC seed {m['seed']} learning curve (5 deterministic episodes per point): {at}; "
                      f"best point {best:.0f}. Published SAC on Hopper: ~{SAC_REFERENCE:,.0f}-3,000 by 300k."]
    out = {"machine": machine_info(), "runs_dir": str(runs_dir), "results": summary, "gorl_minus_ppo": paired,
           "sac_curve_points": sac_points, "sac_reference_300k": SAC_REFERENCE,
           "curves": {algo: [m["curve"] for m in rs] for algo, rs in rows.items()}}
    beside(stem, ".json").write_text(json.dumps(out, indent=2))
    beside(stem, ".md").write_text("\n".join(lines) + "\n")
    if onpolicy:
        plot_curves({a: [(m["curve"]["steps"], m["curve"]["mean"]) for m in rs] for a, rs in onpolicy.items()},
                    stem.with_name(stem.name + "_curves.png"), "Hopper-v5: GoRL-fm vs Gaussian PPO (mean +- std)")
    if sac:
        plot_curves({a: [(m["curve"]["steps"], m["curve"]["mean"]) for m in rs] for a, rs in sac.items()},
                    stem.with_name(stem.name + "_sac_curve.png"), "Hopper-v5: SAC")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("onpolicy", "sac", "report"), required=True)
    p.add_argument("--steps", type=int, default=300_000, help="env-step budget of GoRL and Gaussian PPO")
    p.add_argument("--seeds", type=str, default="0,1,2")
    p.add_argument("--sac-steps", type=int, default=300_000)
    p.add_argument("--sac-seeds", type=str, default="0")
    p.add_argument("--eval-every", type=int, default=20_000, help="on-policy curve spacing (SAC: half of it)")
    p.add_argument("--algos", type=str, default=",".join(ONPOLICY), help="onpolicy part: algorithms")
    p.add_argument("--gorl-config", type=str, default=None, help="onpolicy part: GoRLConfig YAML (a variant)")
    p.add_argument("--ppo-config", type=str, default=None, help="onpolicy part: PPOConfig YAML (GoRL's latent PPO "
                   "and the Gaussian PPO baseline)")
    p.add_argument("--group", type=str, default="onpolicy", help="onpolicy part: folder name (variants: not "
                   "'onpolicy'; the report labels their rows with it)")
    p.add_argument("--runs-dir", type=str, default="runs/gorl_hopper")
    p.add_argument("--out", type=str, default=str(HERE / "gorl_hopper"),
                   help="report part: output stem (<stem>.json, .md and the curve PNGs)")
    p.add_argument("--compare", type=str, default="", help="report part: extra paired differences A - B between "
                   "groups, as A:B[,C:D...] (e.g. k8_decay4:k8_lr4)")
    args = p.parse_args()
    runs = Path(args.runs_dir)
    common = {"env": "Hopper-v5", "eval_episodes": 5, "progress": args.part == "sac"}
    if args.part == "onpolicy":
        run_benchmark(GorlBenchmarkConfig(**common, algos=tuple(args.algos.split(",")), seeds=_seeds(args.seeds),
                                          steps=args.steps, eval_every=args.eval_every, out=str(runs / args.group),
                                          gorl_config=args.gorl_config, ppo_config=args.ppo_config))
    elif args.part == "sac":
        run_benchmark(GorlBenchmarkConfig(**common, algos=("sac",), seeds=_seeds(args.sac_seeds), steps=args.sac_steps,
                                          eval_every=args.eval_every // 2, out=str(runs / "sac")))
    else:
        stem = Path(args.out)
        pairs = tuple(tuple(c.split(":")) for c in args.compare.split(",") if c)
        if any(len(c) != 2 for c in pairs):
            p.error(f"--compare takes A:B pairs separated by commas, got {args.compare!r}")
        try:
            report(runs, stem, pairs)
        except ValueError as err:  # a --compare group that is not there
            p.error(str(err))
        print(beside(stem, ".md").read_text())


if __name__ == "__main__":
    main()
