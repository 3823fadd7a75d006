r"""Is ADS's gain its mask or its timing? ADS vs its own final mask given up front vs the data-variance mask.

ADS measures progressively: its lines arrive during the acquisition window, so early reverse steps are
guided by few measurements. A fixed mask is measured from the first step. This script separates the two:

  1. ``ads``: ADS as in the benchmark (mask chosen online);
  2. ``ads_mask_fixed``: the same slices and noise, reconstructed with ADS's final mask given up front;
  3. ``data_variance``: the training-set variance mask, given up front;

all at each guidance scale in ``--scales`` (the fixed masks may prefer a weaker DPS step, which is measured
rather than assumed). If (2) ~ (1), the gain is the mask; if (2) ~ (3), it is the progressive measurement.
Writes JSON + markdown (mean SSIM x100 and PSNR per row, paired differences to ``ads`` at the same scale).

    python benchmarks/ads/ads_mask_vs_timing.py --prior priors/mri64v --data data/val --train-data data/train \
        --slices 8 --acquisition-window 0.1,0.4 --scales 1.0,0.5 --out benchmarks/ads/mask_vs_timing64v.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gendiff.bench import machine_info
from gendiff.io import beside
from gendiff.mri.benchmark import RunSettings, run_strategy
from gendiff.mri.study import add_study_arguments, load_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_arguments(ap)
    ap.add_argument("--scales", default="1.0,0.5", help="DPS guidance scales")
    ap.add_argument("--out", default="benchmarks/ads/mask_vs_timing.json")
    args = ap.parse_args()
    pipe, targets, train, budget, window = load_study(args)
    size = int(pipe.unet.config.sample_size)
    rows, t0 = [], time.perf_counter()
    for scale in (float(v) for v in args.scales.split(",")):
        cfg = RunSettings(num_particles=args.num_particles, num_inference_steps=args.num_inference_steps,
                          acquisition_window=window, guidance_scale=scale, batch_slices=args.slices)
        ads = run_strategy(pipe, targets, "ads", budget, cfg, progress=False)  # Step 1
        fixed = run_strategy(pipe, targets, "ads_mask_fixed", budget, cfg, progress=False, fixed_masks=ads.masks)
        dv = run_strategy(pipe, targets, "data_variance", budget, cfg, train, progress=False)  # Step 3
        runs = {"ads": ads.metrics, "ads_mask_fixed": fixed.metrics, "data_variance": dv.metrics}  # Step 2: fixed
        for name, m in runs.items():
            rows.append({"scale": scale, "strategy": name, "ssim_x100": 100 * float(m["ssim"].mean()),
                         "psnr": float(m["psnr"].mean()),
                         "ads_minus_ssim_x100": 100 * float((runs["ads"]["ssim"] - m["ssim"]).mean()),
                         "ads_minus_psnr": float((runs["ads"]["psnr"] - m["psnr"]).mean()),
                         "ssim_per_slice": m["ssim"].tolist(), "psnr_per_slice": m["psnr"].tolist()})
            print({k: v for k, v in rows[-1].items() if not k.endswith("per_slice")}, flush=True)
    payload = {"machine": machine_info(), "config": vars(args), "seconds": time.perf_counter() - t0, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    lines = [f"# ADS: mask or timing? ({size}x{size}, {targets.shape[0]} slices of {args.data}, "
             f"{args.acceleration}x, {args.num_particles} particles, {args.num_inference_steps} steps, window {window})", "",
             f"Prior {args.prior}. Machine: {payload['machine']['cpu']}, {payload['machine']['torch_threads']} "
             f"thread(s); {payload['seconds']:.0f} s.", "",
             "| DPS scale | strategy | SSIM x100 | PSNR dB | ADS - it: SSIM x100 | ADS - it: PSNR |",
             "|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['scale']} | {r['strategy']} | {r['ssim_x100']:.2f} | {r['psnr']:.2f} | "
              f"{r['ads_minus_ssim_x100']:+.2f} | {r['ads_minus_psnr']:+.2f} |" for r in rows]
    beside(out, ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
