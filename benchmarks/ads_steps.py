"""How few reverse steps can ADS take? ADS alone on held-out slices at several step counts.

Finds the fewest steps whose mean SSIM is within ``--tolerance`` SSIM points (x100) of the largest step
count's result, on the same slices, particles and seeds. Writes ads_steps.json / ads_steps.md.

    python benchmarks/ads_steps.py --prior gendiff/assets/mri_prior_32 --data DIR --steps 25,50,100,200,1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gendiff.bench import machine_info
from gendiff.mri.benchmark import RunSettings, run_strategy
from gendiff.mri.cli import _pick, load_prior
from gendiff.mri.data import load_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", default="25,50,100,200,1000")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--acceleration", type=float, default=4.0)
    ap.add_argument("--guidance", default="dps")
    ap.add_argument("--guidance-scale", type=float, default=1.0)
    ap.add_argument("--tolerance", type=float, default=0.5)
    ap.add_argument("--window", default="0.0,0.5", help="ADS acquisition window, start,stop fractions")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="benchmarks/ads_steps.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    window = tuple(float(w) for w in args.window.split(","))
    pipe = load_prior(args.prior, "auto")
    size = int(pipe.unet.config.sample_size)
    targets = _pick(load_images(args.data, crop=size, crop_mode="kspace")[0], args.slices)
    budget = round(size / args.acceleration)
    rows = []
    for steps in sorted(int(s) for s in args.steps.split(",")):
        cfg = RunSettings(particles=args.particles, steps=steps, guidance=args.guidance,
                          guidance_scale=args.guidance_scale, batch_slices=args.slices, window=window)
        t0 = time.perf_counter()
        r = run_strategy(pipe, targets, "ads", budget, cfg, progress=False)
        rows.append({"steps": steps, "ssim_x100": 100 * float(r.metrics["ssim"].mean()),
                     "psnr": float(r.metrics["psnr"].mean()), "seconds_per_slice": r.seconds_per_slice,
                     "nfe_per_slice": r.nfe_per_slice, "nbe_per_slice": r.nbe_per_slice,
                     "wall_seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    best = rows[-1]["ssim_x100"]
    fewest = next(r["steps"] for r in rows if r["ssim_x100"] >= best - args.tolerance)
    machine = machine_info()
    payload = {"machine": machine,
               "settings": vars(args), "rows": rows, "reference_steps": rows[-1]["steps"],
               "fewest_steps_within_tolerance": fewest}
    out = Path(args.out)
    out.write_text(json.dumps(payload, indent=2))
    lines = [f"# ADS: steps vs quality ({size}x{size}, {targets.shape[0]} slices, {args.particles} particles, "
             f"{args.acceleration}x, {args.guidance} scale {args.guidance_scale}, window {window})", "",
             f"Machine: {machine['gpu'] or machine['cpu']}, torch {machine['torch']}, "
             f"{machine['torch_threads']} thread(s).", "",
             "| steps | SSIM x100 | PSNR | s / slice | NFE / slice | backward / slice |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['steps']} | {r['ssim_x100']:.2f} | {r['psnr']:.2f} | {r['seconds_per_slice']:.2f} | "
              f"{r['nfe_per_slice']} | {r['nbe_per_slice']} |" for r in rows]
    lines += ["", f"Fewest steps within {args.tolerance} SSIM points of the {rows[-1]['steps']}-step result: "
              f"**{fewest}**"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
