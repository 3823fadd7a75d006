"""Why do ADS's lines lose to the data-variance mask? Measure, per acquisition, what ADS's score sees and what is true.

On validation slices (never the test slices), one ADS run with ``record_estimates=True``. At each acquisition a,
over the lines not yet measured:
  1. spread(l) = mean_i ||yhat_i[l] - mean_j yhat_j[l]||^2: the particles' disagreement, what ADS's score ranks
     (eq. 11-12; with sigma = 1 the score orders lines like this spread, benchmarks/ads/README.md);
  2. error(l) = ||mean_i yhat_i[l] - y_true[l]||^2: the actual error of the particles' estimate of line l (the
     script reads the target; the pipeline never does);
  3. for ADS's chosen line, the data-variance mask's next line (the unmeasured line of highest training-set
     variance) and the best line in hindsight (largest error): the error of each as a share of the largest;
  4. calibration by distance from the centre: sum of error / sum of spread over lines |l - K/2| in bands
     (1 = the spread is the right size; > 1 = the particles underrate the uncertainty there), and error / (spread +
     residual), the residual being the within-particle variance Var[y_l | x_t] of a Gaussian prior with the training
     set's line variance (gendiff.entropy.particles.residual_line_variance; what ``ads_total_variance`` adds);
  5. the final masks: lines ADS took that data variance did not, and the reverse, and how far out each reaches.
Writes JSON + markdown.

    python benchmarks/ads/real/why_ads.py --prior runs/real/prior64ft --data runs/real_data/val \
        --train-data runs/real_data/train --slices 4 --out benchmarks/ads/real/why_ads_real64.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gendiff.bench import machine_info
from gendiff.entropy.particles import residual_line_variance
from gendiff.io import beside
from gendiff.mri.study import add_study_arguments, load_study
from gendiff.operators import make_operator
from gendiff.parameterization import noise_coefficients

BANDS = ((0, 4), (4, 8), (8, 12), (12, 16), (16, 33))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(ap)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    pipe, targets, train, budget, window = load_study(args)
    k = targets.shape[-1]
    op = make_operator("kspace_line", tuple(targets.shape[1:]), targets.shape[0])
    dv_score = op.full(train).var(0).sum(-1)  # [K] training-set variance per line (data_variance's score)
    out = pipe(targets, measurement="kspace_line", budget=budget, num_particles=args.num_particles,
               num_inference_steps=args.num_inference_steps, acquisition_window=window,
               generator=torch.Generator().manual_seed(0), record_estimates=True)
    y_true = op.full(targets)  # [B, K, E]
    dist = (torch.arange(k) - k // 2).abs()
    share = {"ads": [], "data_variance": [], "hindsight": []}
    err_band = np.zeros(len(BANDS))
    spr_band = np.zeros(len(BANDS))
    tot_band = np.zeros(len(BANDS))
    timesteps = pipe.scheduler.timesteps
    for x0, s, chosen, step in zip(out.estimates, out.scores, out.order[:, 1:].T, out.acquisition_steps):
        alpha, sigma = noise_coefficients(pipe.scheduler, timesteps[step])
        residual = residual_line_variance(dv_score, alpha, sigma, op.entries_per_candidate)  # [K]
        yhat = op.full(x0)  # [B, N, K, E]
        spread = (yhat - yhat.mean(1, keepdim=True)).pow(2).sum(-1).mean(1)  # Step 1
        error = (yhat.mean(1) - y_true).pow(2).sum(-1)  # Step 2
        free = ~torch.isneginf(s)  # [B, K]
        for b in range(targets.shape[0]):  # Step 3
            e = error[b].masked_fill(~free[b], -1.0)
            dv_next = int(dv_score.masked_fill(~free[b], -1.0).argmax())
            share["ads"].append(float(e[chosen[b]] / e.max()))
            share["data_variance"].append(float(e[dv_next] / e.max()))
            share["hindsight"].append(1.0)
            for i, (lo, hi) in enumerate(BANDS):  # Step 4
                sel = free[b] & (dist >= lo) & (dist < hi)
                err_band[i] += float(error[b, sel].sum())
                spr_band[i] += float(spread[b, sel].sum())
                tot_band[i] += float((spread[b] + residual)[sel].sum())
    ads_mask = out.mask.bool()  # Step 5
    dv_mask = torch.zeros(k, dtype=torch.bool)
    dv_mask[dv_score.topk(budget).indices] = True
    only_ads = (ads_mask & ~dv_mask).float().sum(1).mean()
    reach = {"ads": float(dist[None].expand_as(ads_mask)[ads_mask].float().max()), "data_variance": float(dist[dv_mask].max())}
    result = {
        "machine": machine_info(), "args": vars(args), "budget": budget,
        "chosen_error_share": {n: float(np.mean(v)) for n, v in share.items()},
        "calibration_error_over_spread": {f"{lo}-{hi - 1}": (e / s if s > 0 else None)
                                          for (lo, hi), e, s in zip(BANDS, err_band, spr_band)},
        "calibration_error_over_total": {f"{lo}-{hi - 1}": (e / s if s > 0 else None)
                                         for (lo, hi), e, s in zip(BANDS, err_band, tot_band)},
        "lines_ads_not_data_variance": float(only_ads), "farthest_line": reach,
        "ads_lines": sorted(set(int(v) - k // 2 for v in ads_mask.nonzero()[:, 1].tolist())),
        "data_variance_lines": sorted(int(v) - k // 2 for v in dv_mask.nonzero().flatten().tolist()),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    def cal_text(key: str) -> str:
        return " / ".join(f"{band}: {v:.2f}" if v is not None else f"{band}: n/a" for band, v in result[key].items())

    text = (f"# Why ADS's lines: {args.slices} slices of {args.data}, prior {args.prior}\n\n"
            f"Budget {budget} of {k} lines, {args.num_particles} particles, {args.num_inference_steps} steps, window {args.acquisition_window}.\n\n"
            f"- error of the line chosen, as a share of the largest error among unmeasured lines (mean over "
            f"acquisitions and slices): ADS {result['chosen_error_share']['ads']:.3f}, data variance's next line "
            f"{result['chosen_error_share']['data_variance']:.3f}, hindsight 1\n"
            f"- error / spread by distance from the centre (lines): {cal_text('calibration_error_over_spread')}\n"
            f"- error / (spread + residual): {cal_text('calibration_error_over_total')}\n"
            f"- final masks: {only_ads:.2f} lines per slice in ADS's mask and not in data variance's; farthest line "
            f"ADS {reach['ads']:.0f}, data variance {reach['data_variance']:.0f}\n"
            f"- ADS lines (offsets, any slice): {result['ads_lines']}\n"
            f"- data-variance lines (offsets): {result['data_variance_lines']}\n")
    beside(path, ".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
