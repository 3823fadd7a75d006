"""Choose the CS weights (lam of CS-TV and L1-wavelet) on validation slices, never on the test slices.

For each reconstructor, every weight of a grid reconstructs the validation slices from the masks of the given
strategies at each acceleration (the masks `gendiff mri benchmark` draws); the weight with the highest mean SSIM
over all of them is chosen. Writes JSON + a markdown table.

    python benchmarks/ads/real/tune_cs.py --data runs/real_data/val --size 64 --out benchmarks/ads/real/tune_cs64.json
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
from gendiff.mri.reconstruction import choose_weight
from gendiff.mri.strategies import StrategyContext, make_mask
from gendiff.operators import make_operator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--train-data", default=None, help="for the data_variance mask")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--slices", type=int, default=0, help="0: all")
    ap.add_argument("--accelerations", default="4,8")
    ap.add_argument("--masks", default="fastmri_random,fastmri_equispaced")
    ap.add_argument("--reconstructors", default="cs_tv,cs_wavelet")
    ap.add_argument("--weights", default="3e-4,1e-3,3e-3")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = load_images(args.data, crop=args.size, crop_mode="kspace")[0]
    if args.slices:
        x = x[torch.linspace(0, x.shape[0] - 1, args.slices).round().long()]
    train = load_images(args.train_data, crop=args.size, crop_mode="kspace")[0] if args.train_data else None
    weights = [float(w) for w in args.weights.split(",")]
    targets, masks, labels = [], [], []
    for acc in (float(a) for a in args.accelerations.split(",")):
        budget = round(args.size / acc)
        for name in args.masks.split(","):
            op = make_operator("kspace_line", (2, args.size, args.size), x.shape[0])
            ctx = StrategyContext(op, "kspace_line", budget, x.shape[0], torch.Generator().manual_seed(0), train)
            masks.append(make_mask(name, ctx))
            targets.append(x)
            labels += [f"{acc:g}x {name}"] * x.shape[0]
    targets, masks = torch.cat(targets), torch.cat(masks)
    result = {"machine": machine_info(), "args": vars(args), "slices": int(x.shape[0]), "chosen": {}, "rows": {}}
    lines = [f"# CS weights chosen on {x.shape[0]} validation slices of {args.data} ({args.size} x {args.size})", "",
             f"Masks {args.masks} at {args.accelerations}x (seed 0), {args.iterations} FISTA iterations; "
             "mean over all of them. Chosen: the highest mean SSIM.", "",
             "| reconstructor | weight | SSIM x100 | PSNR dB |", "|---|---:|---:|---:|"]
    for rec in args.reconstructors.split(","):
        best, rows = choose_weight(rec, targets, masks, weights, args.iterations)
        result["chosen"][rec], result["rows"][rec] = best, rows
        lines += [f"| {rec} | {r['weight']:g}{' (chosen)' if r['weight'] == best else ''} | {100 * r['ssim']:.2f} | "
                  f"{r['psnr']:.2f} |" for r in rows]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=lambda o: np.asarray(o).tolist()))
    beside(out, ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
