r"""What the PGD trajectory model gets right and wrong: dynamics error by dimension, by window position, by
training step and by sampling step, the held-out loss per noise level, terminations; against "no change"
(next = obs) and SynthER, measured side by side on one dataset.

1. Episodes are split 95 / 5 % (seeded) into training and held-out episodes (the held-out loss; the reference
   keeps 5 % of windows).
2. Each variant (a name and TrajectoryDiffusionConfig overrides, e.g. ``paper:residual=0``
   ``residual:residual=1,dim=64``) trains in chunks up to each of ``--checkpoints`` (resuming the same run, so
   one run gives the whole error-vs-steps curve).
3. After each chunk: ``--transitions`` unguided transitions (EDM Algorithm 2, ``--inference-steps``) are checked
   in the simulator (gendiff.offline.dynamics: state error per dimension and per window position, reward error,
   generated vs simulated terminations), and the held-out EDM loss is measured at fixed noise levels.
4. At the last checkpoint, the sampling-step sweep (``--sweep-steps``).
5. Baselines: real transitions, "no change" on real data, and SynthER (``--synther-steps``) on the training
   episodes. Writes ``--out``.json and ``--out``.md.

  python benchmarks/offline/trajectory_model.py --tiny          # smoke (~2 min)
Full commands and results: benchmarks/offline/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from gendiff.bench import machine_line
from gendiff.io import beside
from gendiff.offline.datasets import load_dataset
from gendiff.offline.diffusion import (
    DATASET_RECORD,
    TrajectoryDiffusionConfig,
    edm_heun_scheduler,
    edm_scheduler,
    repeat_terminal_windows,
    trajectory_unet,
    trajectory_windows,
)
from gendiff.offline.dynamics import check_transitions
from gendiff.offline.synther import SynthER, SynthERConfig
from gendiff.offline.trajectories import split_episodes
from gendiff.pipelines.pgd import PolicyGuidedTrajectoryPipeline
from gendiff.training import TrainConfig, train_denoiser
from gendiff.trajectory_layout import TrajectoryNormalizer

SIGMAS = (0.002, 0.01, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 80.0)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-id", default="gendiff/hopper/medium-v3")
    p.add_argument("--variants", nargs="+", default=["paper:residual=0", "residual:residual=1"],
                   help="NAME:field=value,... (TrajectoryDiffusionConfig fields)")
    p.add_argument("--checkpoints", default="2500,5000,10000,20000")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--transitions", type=int, default=2000)
    p.add_argument("--sample-horizon", type=int, default=64)
    p.add_argument("--inference-steps", type=int, default=64)
    p.add_argument("--sweep-steps", default="16,32,64,128")
    p.add_argument("--synther-steps", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/trajectory_model", help="training runs (resumable)")
    p.add_argument("--out", default="benchmarks/offline/trajectory_model")
    p.add_argument("--export", action="store_true",
                   help="only save each variant's trained run (--work/NAME) as a pipeline in --work/NAME/pipeline")
    p.add_argument("--extend", action="store_true",
                   help="keep the rows --out.json holds for each variant and train on from its last checkpoint "
                        "in --work to the later --checkpoints")
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args()
    if a.tiny:
        a.checkpoints, a.transitions, a.sample_horizon, a.inference_steps = "20,40", 60, 32, 8
        a.sweep_steps, a.synther_steps, a.batch_size = "4,8", 40, 16
    return a


def _variant(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, body = spec.partition(":")
    fields = {f.name: f for f in dataclasses.fields(TrajectoryDiffusionConfig)}
    out: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        k, _, v = item.partition("=")
        if k not in fields:
            raise SystemExit(f"unknown TrajectoryDiffusionConfig field {k!r} in variant {spec!r}")
        if k == "dim_mults":
            out[k] = tuple(int(x) for x in v.split("-"))
        elif k == "residual":
            out[k] = v.lower() in ("1", "true", "yes")
        else:
            out[k] = type(getattr(TrajectoryDiffusionConfig, k))(v)
    return name, out


@torch.no_grad()
def held_out_loss(model: torch.nn.Module, sched: Any, x0: torch.Tensor, norm: TrajectoryNormalizer,
                  seed: int) -> dict[str, dict[str, float]]:
    """EDM's weighted loss per noise level, and the unweighted denoising MSE per feature group (z units)."""
    gen = torch.Generator().manual_seed(seed)
    groups = {"obs": norm.obs_slice, "act": norm.act_slice, "rew": slice(norm.reward_index, norm.reward_index + 1),
              "done": slice(norm.done_index, norm.done_index + 1)}
    if norm.residual:
        groups["delta"] = norm.delta_slice
    sd = float(sched.config.sigma_data)
    out = {}
    for s in SIGMAS:
        eps = torch.randn(x0.shape, generator=gen)
        x_t = x0 + s * eps
        sig = torch.tensor(s)
        f = model(sched.precondition_inputs(x_t, sig), sched.precondition_noise(sig).expand(x0.shape[0]))
        d = sched.precondition_outputs(x_t, f, sig)
        err = (d - x0).square()
        row = {"weighted": float(err.mean() * (s**2 + sd**2) / (s * sd) ** 2)}
        row.update({g: float(err[..., sl].mean()) for g, sl in groups.items()})
        out[f"{s:g}"] = row
    return out


def _sample(pipe: PolicyGuidedTrajectoryPipeline, n: int, horizon: int, steps: int, seed: int) -> tuple[dict, float]:
    heun = pipe.with_scheduler(edm_heun_scheduler(pipe.scheduler))
    per = horizon if pipe.normalizer.residual else horizon - 1
    t0 = time.perf_counter()
    res = heun(batch_size=-(-n // per), horizon=horizon, num_inference_steps=steps,
               generator=torch.Generator().manual_seed(seed))
    return {k: v[:n] for k, v in res.transitions.items()}, n / (time.perf_counter() - t0)


def run_variant(name: str, overrides: dict[str, Any], ds: Any, train_eps: list, val_eps: list, a: argparse.Namespace,
                checkpoints: list[int], save: Any = None, done: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Steps 2-4 for one variant; ``save(partial)`` is called after every checkpoint (an interrupted study keeps
    the checkpoints it measured). ``done``: rows an earlier run of this variant measured (``--extend``); training
    resumes from its last checkpoint and only the later checkpoints are trained and measured."""
    cfg = TrajectoryDiffusionConfig(dataset_id=ds.dataset_id, seed=a.seed, progress=False, **overrides)
    windows, norm = trajectory_windows(ds, cfg, train_eps)
    windows = repeat_terminal_windows(windows, norm, cfg.terminal_repeat)
    val = norm.normalize(trajectory_windows(ds, cfg, val_eps)[0])
    torch.manual_seed(a.seed)
    unet = trajectory_unet(norm, cfg)
    sched, run_dir = edm_scheduler(), Path(a.work) / name
    rows = list(done or [])
    wall = rows[-1]["train_wall_s"] if rows else 0.0
    checkpoints = [c for c in checkpoints if not rows or c > rows[-1]["train_steps"]]
    if not checkpoints:
        raise SystemExit(f"{name}: every step in --checkpoints is already measured (last: {rows[-1]['train_steps']})")
    for i, steps in enumerate(checkpoints, start=len(rows)):
        tcfg = TrainConfig(steps=steps, batch_size=a.batch_size, lr=cfg.lr, ema_decay=cfg.ema_decay, seed=a.seed,
                           checkpoint_every=steps, log_every=max(steps // 50, 1), checkpoints_keep=1)
        t0 = time.perf_counter()
        res = train_denoiser(unet, norm.normalize(windows), sched, tcfg, run_dir, progress=False,
                             resume=i > 0, overwrite=i == 0)
        wall += time.perf_counter() - t0
        pipe = PolicyGuidedTrajectoryPipeline(unet=res.model, scheduler=sched, normalizer=norm.to_config())
        save_pipeline(pipe, ds, run_dir / "pipeline")
        tr, per_s = _sample(pipe, a.transitions, a.sample_horizon, a.inference_steps, a.seed)
        row = {"train_steps": steps, "train_wall_s": wall, "samples_per_s": per_s,
               "train_loss": res.losses[-1][1] if res.losses else None,
               "held_out": held_out_loss(res.model, sched, val, norm, a.seed),
               **check_transitions(ds.env_id, tr, a.sample_horizon)}
        rows.append(row)
        unet = res.model.train()  # EMA weights are in res.model; the checkpoint keeps the raw ones for resuming
        print(f"[{name}] step {steps}: dynamics MSE {row['dynamics_mse']:.4f}, done {row['done_rate']:.4f}, "
              f"train loss {row['train_loss']}", flush=True)
        if save is not None:
            save({"config": dataclasses.asdict(cfg), "params": sum(p.numel() for p in res.model.parameters()),
                  "rows": rows, "sampling_sweep": {}, "partial": True})
    sweep = {}
    for steps in [int(s) for s in a.sweep_steps.split(",") if s]:
        tr, per_s = _sample(pipe, a.transitions, a.sample_horizon, steps, a.seed + 1)
        f = check_transitions(ds.env_id, tr, a.sample_horizon)
        sweep[str(steps)] = {"dynamics_mse": f["dynamics_mse"], "samples_per_s": per_s, "done_rate": f["done_rate"]}
    params = sum(p.numel() for p in res.model.parameters())
    return {"config": dataclasses.asdict(cfg), "params": params, "rows": rows, "sampling_sweep": sweep}


def save_pipeline(pipe: PolicyGuidedTrajectoryPipeline, ds: Any, folder: Path) -> None:
    """The variant's model as a pipeline that fidelity.py / agents.py / train-agent --diffusion-dir load."""
    pipe.save_pretrained(folder)
    (folder / DATASET_RECORD).write_text(json.dumps({"dataset_id": ds.dataset_id, "transitions": ds.num_transitions,
                                                     "held_out_episodes_excluded": True}, indent=2))


def export_variant(name: str, overrides: dict[str, Any], ds: Any, train_eps: list, a: argparse.Namespace) -> Path:
    """``--export``: the EMA model a finished run left in --work/NAME/model, with its normaliser (the same training
    episodes), saved as --work/NAME/pipeline."""
    from gendiff.models import TemporalUNet1D

    cfg = TrajectoryDiffusionConfig(dataset_id=ds.dataset_id, seed=a.seed, progress=False, **overrides)
    norm = trajectory_windows(ds, cfg, train_eps)[1]
    run_dir = Path(a.work) / name
    unet = TemporalUNet1D.from_pretrained(run_dir / "model", use_safetensors=True)
    pipe = PolicyGuidedTrajectoryPipeline(unet=unet, scheduler=edm_scheduler(), normalizer=norm.to_config())
    save_pipeline(pipe, ds, run_dir / "pipeline")
    return run_dir / "pipeline"


def baselines(ds: Any, train_eps: list, a: argparse.Namespace) -> dict[str, Any]:
    """Step 5: real, no change, SynthER."""
    real = ds.transitions()
    idx = torch.randperm(real["obs"].shape[0], generator=torch.Generator().manual_seed(a.seed))[:a.transitions]
    sub = {k: v[idx] for k, v in real.items()}
    out = {"real": check_transitions(ds.env_id, sub, a.sample_horizon),
           "no_change": check_transitions(ds.env_id, {**sub, "next_obs": sub["obs"]}, a.sample_horizon)}
    tr_eps = type(ds)(ds.dataset_id, ds.env_id, train_eps, ds.action_low, ds.action_high)
    t0 = time.perf_counter()
    syn = SynthER.fit(tr_eps.transitions(), ds.action_low, ds.action_high,
                      SynthERConfig(train_steps=a.synther_steps, seed=a.seed), Path(a.work) / "synther")
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = syn.sample(a.transitions, 128, torch.Generator().manual_seed(a.seed))
    out["synther"] = {**check_transitions(ds.env_id, s, a.sample_horizon), "train_steps": a.synther_steps,
                      "train_wall_s": wall, "samples_per_s": a.transitions / (time.perf_counter() - t0)}
    return out


def write_markdown(res: dict[str, Any], out: Path) -> None:
    a, base = res["settings"], res["baselines"]
    lines = [f"# Trajectory model diagnostics on {a['dataset_id']} ({res['env_id']})", "",
             f"Machine: {res['machine']}. Seed {a['seed']}; {a['transitions']} transitions per row, windows of "
             f"{a['sample_horizon']} steps, EDM Algorithm 2 (churn 80) with {a['inference_steps']} steps; batch "
             f"{a['batch_size']}; held-out: {res['held_out_episodes']} of {res['episodes']} episodes. "
             f"Wall {res['wall_s']:.0f} s.", "",
             "| data | train steps | params | dynamics MSE | median | reward MSE | done % (sim %) | train wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for k in ("real", "no_change", "synther"):
        b = base[k]
        lines.append(f"| {k} | {b.get('train_steps', '')} |  | {b['dynamics_mse']:.4g} | {b['dynamics_median']:.4g} | "
                     f"{b['reward_mse']:.4g} | {100 * b['done_rate']:.2f} ({100 * b['sim_terminated_rate']:.2f}) | "
                     f"{b.get('train_wall_s', 0):.0f} |")
    for name, v in res["variants"].items():
        for r in v["rows"]:
            lines.append(f"| {name} | {r['train_steps']} | {v['params']:,} | {r['dynamics_mse']:.4g} | "
                         f"{r['dynamics_median']:.4g} | {r['reward_mse']:.4g} | {100 * r['done_rate']:.2f} "
                         f"({100 * r['sim_terminated_rate']:.2f}) | {r['train_wall_s']:.0f} |")
    lines += ["", "Dynamics MSE by sampling steps (last checkpoint):", "",
              "| variant | " + " | ".join(next(iter(res["variants"].values()))["sampling_sweep"]) + " |",
              "|---|" + "---|" * len(next(iter(res["variants"].values()))["sampling_sweep"])]
    for name, v in res["variants"].items():
        lines.append(f"| {name} | " + " | ".join(f"{s['dynamics_mse']:.4g}" for s in v["sampling_sweep"].values())
                     + " |")
    lines += ["", "Per-dimension squared error (last checkpoint; no change and SynthER for scale):", "",
              "| dim | no change | synther | " + " | ".join(res["variants"]) + " |",
              "|---|---|---|" + "---|" * len(res["variants"])]
    for d in range(len(base["no_change"]["per_dim"])):
        lines.append(f"| {d} | {base['no_change']['per_dim'][d]:.4g} | {base['synther']['per_dim'][d]:.4g} | "
                     + " | ".join(f"{v['rows'][-1]['per_dim'][d]:.4g}" for v in res["variants"].values()) + " |")
    lines += ["", "Error by position in the generated window (last checkpoint):", "",
              "| variant | first | 1 | 2 | middle | second last | last |", "|---|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        pp = v["rows"][-1]["per_pos"]
        h = len(pp)
        cells = [pp[0], pp[1], pp[2], pp[h // 2], pp[h - 2], pp[h - 1]]
        lines.append(f"| {name} | " + " | ".join("-" if c is None else f"{c:.4g}" for c in cells) + " |")
    lines += ["", "Held-out denoising error per noise level (last checkpoint; weighted EDM loss, and obs / act / "
              "delta MSE in z units):", "", "| sigma | " + " | ".join(
                  f"{n} weighted | {n} obs | {n} act" + (f" | {n} delta" if v["config"]["residual"] else "")
                  for n, v in res["variants"].items()) + " |"]
    ncols = sum(4 if v["config"]["residual"] else 3 for v in res["variants"].values())
    lines.append("|---|" + "---|" * ncols)
    for s in SIGMAS:
        cells = []
        for v in res["variants"].values():
            h = v["rows"][-1]["held_out"][f"{s:g}"]
            cells += [f"{h['weighted']:.4g}", f"{h['obs']:.4g}", f"{h['act']:.4g}"]
            if v["config"]["residual"]:
                cells.append(f"{h['delta']:.4g}")
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
    beside(out, ".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    a = _args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ds = load_dataset(a.dataset_id)
    if a.tiny:
        ds = type(ds)(ds.dataset_id, ds.env_id, ds.episodes[:20], ds.action_low, ds.action_high)
    train_eps, val_eps = split_episodes(ds.episodes, a.seed)
    checkpoints = [int(s) for s in a.checkpoints.split(",")]
    if a.export:
        for spec in a.variants:
            print(export_variant(*_variant(spec), ds, train_eps, a))
        return
    res: dict[str, Any] = {"settings": vars(a), "env_id": ds.env_id, "episodes": len(ds.episodes),
                           "held_out_episodes": len(val_eps),
                           "machine": machine_line("1 thread; other jobs may share the cores"),
                           "baselines": baselines(ds, train_eps, a), "variants": {}}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(beside(out, ".json").read_text())["variants"] if a.extend else {}

    def save(name: str, variant: dict[str, Any]) -> None:
        res["variants"][name] = variant
        res["wall_s"] = time.perf_counter() - t0
        beside(out, ".json").write_text(json.dumps(res, indent=1))
        write_markdown(res, out)

    for spec in a.variants:
        name, overrides = _variant(spec)
        save(name, run_variant(name, overrides, ds, train_eps, val_eps, a, checkpoints, lambda v, n=name: save(n, v),
                               done=earlier.get(name, {}).get("rows")))
    print(beside(out, ".md").read_text())


if __name__ == "__main__":
    main()
