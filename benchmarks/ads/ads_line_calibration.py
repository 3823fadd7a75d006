r"""Is the prior calibrated line by line? Data vs prior k-space variance, and posterior spread vs error.

ADS ranks k-space lines by the particles' disagreement. That ranking can only be as good as the prior's sense
of which lines are uncertain. For one prior this script measures, per line offset from the centre:

  1. the training set's line variance, var_data(l) = mean_s ||k_s[l] - mean k[l]||^2 (real and imaginary parts);
  2. the same over unconditional prior samples (a mask with no lines: the same sampler with nothing to guide it),
     and the ratio var_prior / var_data (1 = the prior reproduces the data's spread on that line);
  3. given a centre block of lines -c..+c measured up front, on held-out slices: the final particles' spread
     (mean_i ||yhat_i[l] - mean_j yhat_j[l]||^2) and the error of their mean (||mean_i yhat_i[l] - y[l]||^2),
     averaged over slices, and error / spread (1 = calibrated; > 1 = overconfident). No hard data consistency,
     so the measured lines show the guidance's residual.
  4. optionally (``--sweep``), Step 2 again for other sampler settings, steps and DDIM eta (0 = deterministic
     DDIM, as ADS samples; 1 = DDPM-like ancestral steps): is the under-dispersion the sampler's or the network's?

Writes JSON + markdown.

    python benchmarks/ads/ads_line_calibration.py --prior priors/mri64v6k --data data/val --train-data data/train \
        --slices 8 --threads 1 --out benchmarks/ads/line_calibration64v6k.json --sweep 50:0,50:1,200:0,200:1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gendiff.bench import machine_info
from gendiff.io import beside
from gendiff.mri.data import load_images
from gendiff.mri.prior import load_prior
from gendiff.mri.study import pick_slices
from gendiff.operators import MeasurementOracle, make_operator
from gendiff.sampler import GuidedSampler


def line_variance(y: torch.Tensor) -> torch.Tensor:
    """[S, K, E] measurements -> [K] variance over S, summed over the entries of each line."""
    return (y - y.mean(0)).pow(2).sum(-1).mean(0)


def unconditional_line_variance(pipe, shape: tuple[int, ...], samples: int, steps: int, eta: float,
                                seed: int) -> torch.Tensor:
    """[K] line variance of ``samples`` unconditional prior draws of ``shape`` (DDIM, ``steps``, ``eta``)."""
    sampler = GuidedSampler(pipe.unet, pipe.scheduler, step_kwargs={"eta": eta})
    x0 = sampler(shape, batch_size=1, num_particles=samples, num_inference_steps=steps,
                 generator=torch.Generator().manual_seed(seed)).x0[0]
    return line_variance(make_operator("kspace_line", shape, 1).full(x0))


def parse_sweep(text: str) -> list[tuple[int, float]]:
    """"50:0,200:1" -> [(50, 0.0), (200, 1.0)]: (reverse steps, DDIM eta) pairs."""
    pairs = []
    for item in filter(None, text.split(",")):
        steps, sep, eta = item.partition(":")
        try:
            n, e = int(steps), float(eta)
        except ValueError:
            n, e = 0, 0.0
        if not sep or n < 1:
            raise ValueError(f"--sweep items are steps:eta with steps >= 1, e.g. 50:0,200:1; got {item!r}")
        if not 0.0 <= e <= 1.0:  # nan fails here too
            raise ValueError(f"--sweep: DDIM eta must be in [0, 1], got {eta!r}")
        pairs.append((n, e))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", required=True)
    ap.add_argument("--data", required=True, help="held-out files (Step 3)")
    ap.add_argument("--train-data", required=True, help="training files (Step 1)")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--samples", type=int, default=64, help="unconditional prior samples (Step 2)")
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--centre", type=int, default=6, help="Step 3 measures lines -centre..+centre")
    ap.add_argument("--reach", type=int, default=12, help="report offsets -reach..+reach")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", default="", help="Step 4: steps:eta pairs, e.g. 50:0,50:1,200:0,200:1")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/ads/line_calibration.json")
    args = ap.parse_args()
    sweep = parse_sweep(args.sweep)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe = load_prior(args.prior)
    size = int(pipe.unet.config.sample_size)
    train = load_images(args.train_data, crop=size, crop_mode="kspace")[0]
    targets = pick_slices(load_images(args.data, crop=size, crop_mode="kspace")[0], args.slices)
    if not 0 < args.reach < size // 2 or not 0 <= args.centre < args.reach:
        raise ValueError(f"need 0 <= centre < reach < {size // 2}, got centre {args.centre}, reach {args.reach}")
    full = make_operator("kspace_line", tuple(train.shape[1:]), 1)
    var_data = line_variance(full.full(train))  # Step 1
    # Step 2: no lines measured, so nothing guides the particles and the target is never read
    shape = tuple(train.shape[1:])
    var_prior = unconditional_line_variance(pipe, shape, args.samples, args.steps, 0.0, args.seed)
    # Step 3: the centre block given up front
    b, c = targets.shape[0], size // 2
    mask = torch.zeros(b, size, dtype=torch.bool)
    mask[:, c - args.centre : c + args.centre + 1] = True
    op = make_operator("kspace_line", tuple(targets.shape[1:]), b)
    out = pipe(oracle=MeasurementOracle(targets, op), mask=mask, num_particles=args.particles,
               num_inference_steps=args.steps, data_consistency=False,
               generator=torch.Generator().manual_seed(args.seed))
    yhat = full.full(out.particles)  # [B, N, K, E]
    spread = (yhat - yhat.mean(1, keepdim=True)).pow(2).sum(-1).mean(1).mean(0)
    error = (yhat.mean(1) - full.full(targets)).pow(2).sum(-1).mean(0)
    rows = [{"offset": o, "measured": abs(o) <= args.centre, "var_data_rel": float(var_data[c + o] / var_data[c]),
             "var_prior_rel": float(var_prior[c + o] / var_prior[c]),
             "prior_over_data": float(var_prior[c + o] / var_data[c + o]), "spread": float(spread[c + o]),
             "error": float(error[c + o]), "error_over_spread": float(error[c + o] / spread[c + o])}
            for o in range(-args.reach, args.reach + 1)]
    # Step 4: the unconditional samples again, for each (steps, eta); no guidance term, nothing measured
    reach = range(0, args.reach + 1)
    sweep_rows = []
    for steps, eta in sweep:
        var_sweep = unconditional_line_variance(pipe, shape, args.samples, steps, eta, args.seed)  # [K]
        ratio = var_sweep / var_data
        sweep_rows.append({"steps": steps, "eta": eta, "total_ratio": float(var_sweep.sum() / var_data.sum()),
                           "ratio_by_offset": {o: float((ratio[c + o] + ratio[c - o]) / 2) for o in reach}})
    payload = {"machine": machine_info(), "config": vars(args), "size": size,
               "seconds": time.perf_counter() - t0, "rows": rows, "sweep": sweep_rows}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    lines = [f"# ADS: line-by-line calibration of the prior ({size}x{size})", "",
             f"Prior {args.prior}. Steps 1-2: line variance of {train.shape[0]} training slices and of {args.samples} "
             f"unconditional prior samples, relative to the centre line. Step 3: {b} slices of {args.data} with lines "
             f"-{args.centre}..+{args.centre} given up front, {args.particles} particles, {args.steps} steps, "
             f"seed {args.seed}; spread and error in k-space units (orthonormal FFT). "
             f"Machine: {payload['machine']['cpu']}, {payload['machine']['torch_threads']} thread(s); "
             f"{payload['seconds']:.0f} s.", "",
             "| offset | data var (rel.) | prior var (rel.) | prior / data var | spread | error | error / spread |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['offset']}{' (measured)' if r['measured'] else ''} | {r['var_data_rel']:.4f} | "
              f"{r['var_prior_rel']:.4f} | {r['prior_over_data']:.3f} | {r['spread']:.4f} | {r['error']:.4f} | "
              f"{r['error_over_spread']:.2f} |" for r in rows]
    if sweep_rows:
        lines += ["", f"Step 4: prior / data line variance of {args.samples} unconditional samples by sampler setting "
                  "(DDIM eta 0 = deterministic, as ADS samples; offsets averaged over +-o; total = summed over all lines).",
                  "", "| steps | eta | total | " + " | ".join(f"+-{o}" for o in reach) + " |",
                  "|---:|---:|---:|" + "---:|" * len(reach)]
        lines += [f"| {r['steps']} | {r['eta']:g} | {r['total_ratio']:.3f} | "
                  + " | ".join(f"{r['ratio_by_offset'][o]:.2f}" for o in reach) + " |" for r in sweep_rows]
    beside(path, ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
