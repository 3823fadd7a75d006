"""Are the particles' early estimates informative? Particle spread vs actual error per k-space line.

ADS scores every unmeasured line by the particles' disagreement there (eq. 11-12). That is only useful when
the disagreement tracks where the estimate is actually wrong. For each prior, on the same slices, particles
and seed, this script runs ADS with ``record_estimates=True`` and, at every acquisition:

  1. spread(l) = mean_i ||yhat_i[l] - mean_j yhat_j[l]||^2 (particle variance of line l, summed over entries);
  2. error(l) = ||mean_i yhat_i[l] - y_true[l]||^2 (error of the particle mean; the script reads the target,
     the pipeline never does);
  3. over the unmeasured lines of each slice: Pearson correlation of log spread and log error, and the
     ratio of the mean spread on the outer half of k-space to that on the central 8 lines (an ideal prior's
     spread falls with frequency, like the data's variance; a flat ratio ~1 means white noise);
  4. the fraction of the lines ADS chose that lie >= K/4 lines from the centre.

Writes JSON + markdown (early = first half of the acquisitions, late = second half).

    python benchmarks/ads/ads_estimate_noise.py --priors priors/mri64,priors/mri64v --data data/val --slices 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gendiff.bench import machine_info
from gendiff.io import beside
from gendiff.mri.data import load_images
from gendiff.mri.prior import load_prior
from gendiff.mri.study import pick_slices
from gendiff.operators import make_operator


def line_statistics(estimates: list[torch.Tensor], truth: torch.Tensor, op, masks: list[torch.Tensor]) -> dict:
    """Steps 1-3 for every acquisition: estimates A x [B, N, C, H, W], truth [B, C, H, W], masks A x [B, K]."""
    y_true = op.full(truth)  # [B, K, E]
    k = y_true.shape[1]
    far = torch.zeros(k, dtype=torch.bool)
    far[: k // 4] = far[k - k // 4 :] = True  # outer half of k-space (lines >= K/4 from the centre)
    centre = torch.zeros(k, dtype=torch.bool)
    centre[k // 2 - 4 : k // 2 + 4] = True
    corr, ratio = [], []
    for x0, measured in zip(estimates, masks):
        yhat = op.full(x0)  # [B, N, K, E]
        spread = (yhat - yhat.mean(1, keepdim=True)).pow(2).sum(-1).mean(1)  # Step 1: [B, K]
        error = (yhat.mean(1) - y_true).pow(2).sum(-1)  # Step 2: [B, K]
        c, r = [], []
        for b in range(spread.shape[0]):  # Step 3
            free = ~measured[b]
            ls, le = spread[b, free].clamp_min(1e-12).log(), error[b, free].clamp_min(1e-12).log()
            c.append(float(np.corrcoef(ls.numpy(), le.numpy())[0, 1]))
            fc = free & centre
            r.append(float(spread[b, free & far].mean() / spread[b, fc].mean()) if fc.any() else float("nan"))
        corr.append(float(np.mean(c)))
        ratio.append(float(np.nanmean(r)))
    half = max(len(corr) // 2, 1)
    return {"corr_early": float(np.mean(corr[:half])), "corr_late": float(np.mean(corr[half:] or corr)),
            "far_centre_ratio_early": float(np.mean(ratio[:half])),
            "far_centre_ratio_late": float(np.mean(ratio[half:] or ratio)),
            "corr_per_acquisition": corr, "ratio_per_acquisition": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--priors", default="", help="comma-separated prior folders")
    ap.add_argument("--data", default="")
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--particles", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--acceleration", type=float, default=4.0)
    ap.add_argument("--window", default="0.2,0.5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="benchmarks/ads/estimate_noise.json")
    ap.add_argument("--render-only", action="store_true", help="rewrite the markdown from --out's JSON")
    args = ap.parse_args()
    if args.render_only:
        write_markdown(json.loads(Path(args.out).read_text()), beside(Path(args.out), ".md"))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    window = tuple(float(v) for v in args.window.split(","))
    rows = []
    for path in args.priors.split(","):
        pipe = load_prior(path)
        size = pipe.unet.config.sample_size
        targets = pick_slices(load_images(args.data, crop=size, crop_mode="kspace")[0], args.slices)
        out = pipe(targets, measurement="kspace_line", acceleration=args.acceleration,
                   num_particles=args.particles, num_inference_steps=args.steps, acquisition_window=window,
                   generator=torch.Generator().manual_seed(args.seed), record_estimates=True)
        op = make_operator("kspace_line", tuple(targets.shape[1:]), targets.shape[0])
        masks = [torch.isneginf(s) for s in out.scores]  # measured lines at each acquisition
        stats = line_statistics(out.estimates, targets, op, masks)
        k = targets.shape[-1]
        far_chosen = float(((out.order - k // 2).abs() >= k // 4).float().mean())  # Step 4
        rows.append({"prior": path, "prediction": pipe.scheduler.config.prediction_type,
                     "far_lines_chosen": far_chosen, **stats})
    payload = {"machine": machine_info(), "config": vars(args), "rows": rows}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(payload, indent=2))
    write_markdown(payload, beside(out_path, ".md"))


def _fmt(v: float, spec: str) -> str:
    """NaN (e.g. far/centre once every central line is measured) shows as n/a."""
    return "n/a" if v != v else format(v, spec)


def write_markdown(payload: dict, path: Path) -> None:
    """The table of :func:`main`'s rows."""
    c = payload["config"]
    lines = [
        "# ADS: particle spread vs actual error per k-space line, at each acquisition",
        "",
        f"{c['slices']} slices of {c['data']}, {c['particles']} particles, {c['steps']} DDIM steps, "
        f"{c['acceleration']}x, window {c['window']}, seed {c['seed']}. Machine: {payload['machine']['cpu']}.",
        "corr: Pearson correlation of log spread and log error over the unmeasured lines (higher = ADS's "
        "score points at real errors); far/centre: mean spread on the outer half of k-space over that on "
        "the unmeasured central 8 lines (~1 = white noise; n/a once all 8 are measured); far chosen: share of "
        "ADS's lines >= K/4 from the centre.",
        "",
        "| prior | prediction | corr early | corr late | far/centre early | far/centre late | far chosen |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        lines.append(f"| {r['prior']} | {r['prediction']} | {r['corr_early']:.2f} | {r['corr_late']:.2f} | "
                     f"{_fmt(r['far_centre_ratio_early'], '.3f')} | {_fmt(r['far_centre_ratio_late'], '.3f')} | "
                     f"{r['far_lines_chosen']:.2f} |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
