"""The phantom table of the shipped 64x64 prior with the centre-block and CS rows added (issue 33).

The seven-strategy tables `benchmarks/ads/mri64v6k_shipped_acc{4,8}.json` (32 held-out phantom slices, shipped prior
`benchmarks/ads/priors/mri64v6k`, 8 particles, 50 steps, window (0.1, 0.4), seed 0) store every strategy's per-slice
metrics and ADS's acquisition orders. A new run of the same command with `--strategies centre --reconstructors
dps,zero_filled,cs_tv` (and fastMRI masks with zero_filled,cs_tv, no DPS) reconstructs the same slices with the same noise (the slices
are picked the same way, and the centre block draws no random numbers, so the DPS noise is that of ADS's run).
This script:
  1. reconstructs ADS's stored final masks with CS-TV and zero-filling (they need no DPS run);
  2. merges the stored rows, the new rows and step 1, with paired differences ADS (DPS) - row and bootstrap 95 %
     intervals over the same 32 slices (gendiff.stats.bootstrap_ci);
  3. writes JSON + a markdown table, and the adaptivity of ADS's masks (mri.benchmark.mask_adaptivity).

    python benchmarks/ads/real/phantom_table.py --stored benchmarks/ads/mri64v6k_shipped_acc4.json \
        --new benchmarks/ads/real/phantom64_centre_acc4.json,benchmarks/ads/real/phantom64_cs_acc4.json --data runs/phantom_data/test --cs-tv-weight W \
        --out benchmarks/ads/real/phantom64_acc4.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gendiff.io import beside
from gendiff.mri.benchmark import METRICS, magnitude_image, mask_adaptivity
from gendiff.mri.data import load_images
from gendiff.mri.metrics import slice_metrics
from gendiff.mri.reconstruction import ReconSettings, reconstruct
from gendiff.mri.study import pick_slices
from gendiff.stats import bootstrap_ci


def _row(strategy: str, recon: str, per_slice: dict, ref: dict | None, n_boot: int) -> dict:
    row = {"strategy": strategy, "reconstructor": recon}
    for m in METRICS:
        v = np.asarray(per_slice[m])
        row[m], row[f"{m}_ci95"] = float(v.mean()), bootstrap_ci(v, n_boot)
        if ref is not None:
            d = np.asarray(ref[m]) - v
            row[f"ads_minus_{m}"], row[f"ads_minus_{m}_ci95"] = float(d.mean()), bootstrap_ci(d, n_boot)
        row.setdefault("per_slice", {})[m] = v.tolist()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stored", required=True)
    ap.add_argument("--new", required=True, help="comma-separated result files of the new rows")
    ap.add_argument("--data", required=True, help="the phantom test folder of the stored run")
    ap.add_argument("--cs-tv-weight", type=float, required=True)
    ap.add_argument("--cs-iterations", type=int, default=100)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    stored = json.loads(Path(args.stored).read_text())
    new_rows = [r for f in args.new.split(",") for r in json.loads(Path(f).read_text())["rows"]]
    cfg = stored["config"]
    budget = next(iter(stored["ads_order"]))
    orders = torch.tensor(stored["ads_order"][budget])
    size = 64
    targets = pick_slices(load_images(args.data, crop=size, crop_mode=cfg["crop_mode"])[0], cfg["slices"])
    ads = next(r for r in stored["rows"] if r["strategy"] == "ads")["per_slice"]
    masks = torch.zeros(orders.shape[0], size, dtype=torch.bool)
    masks[torch.arange(orders.shape[0])[:, None], orders] = True
    truth = magnitude_image(targets).numpy()
    settings = ReconSettings(cs_tv_weight=args.cs_tv_weight, cs_iterations=args.cs_iterations)
    rows = [_row("ads", "dps", ads, None, args.bootstrap)]
    rows += [_row(r["strategy"], "dps", r["per_slice"], ads, args.bootstrap) for r in stored["rows"]
             if r["strategy"] != "ads"]
    for rec in ("zero_filled", "cs_tv"):  # Step 1
        rows.append(_row("ads", rec, slice_metrics(truth, reconstruct(rec, targets, masks, settings).numpy()), ads,
                         args.bootstrap))
    stored_zf = next(r for r in stored["rows"] if r["strategy"] == "ads")["zero_filled_ssim"]
    if abs(rows[-2]["ssim"] - stored_zf) > 1e-4:  # ADS's masks on these slices must give the stored zero-filled SSIM
        raise SystemExit(f"{args.data} is not the stored run's data: zero-filled SSIM {rows[-2]['ssim']:.5f} with "
                         f"ADS's masks, stored {stored_zf:.5f}")
    rows += [_row(r["strategy"], r["reconstructor"], r["per_slice"], ads, args.bootstrap) for r in new_rows]
    adapt = mask_adaptivity(orders, size)
    out = Path(args.out)
    out.write_text(json.dumps({"stored": args.stored, "new": args.new, "cs_tv_weight": args.cs_tv_weight,
                               "budget": int(budget), "adaptivity": adapt, "rows": rows}, indent=2))

    def diff(r: dict, m: str, scale: float) -> str:
        if f"ads_minus_{m}" not in r:
            return "-"
        lo, hi = r[f"ads_minus_{m}_ci95"]
        return f"{scale * r[f'ads_minus_{m}']:+.2f} [{scale * lo:+.2f}, {scale * hi:+.2f}]"

    lines = [f"# Phantoms, 64x64, budget {budget} of 64 lines: every mask, DPS and CS-TV / zero-filled", "",
             f"{len(ads['ssim'])} held-out phantom slices; DPS rows except centre from `{args.stored}`; centre (DPS) "
             f"and CS rows from `{args.new}` and ADS's stored masks (CS-TV weight {args.cs_tv_weight}, "
             f"{args.cs_iterations} FISTA iterations). ADS's masks: {adapt['distinct_masks']} distinct over "
             f"{orders.shape[0]} slices, the most common on {100 * adapt['modal_mask_share']:.0f} %, two slices differ "
             f"in {adapt['pairwise_lines_differing']:.2f} of {orders.shape[1]} lines on average.", "",
             "| strategy | reconstructor | SSIM x100 [95% CI] | PSNR dB | ADS (DPS) - it: SSIM x100 [95% CI] | "
             "ADS (DPS) - it: PSNR dB [95% CI] |", "|---|---|---|---:|---|---|"]
    for r in rows:
        lo, hi = r["ssim_ci95"]
        lines.append(f"| {r['strategy']} | {r['reconstructor']} | {100 * r['ssim']:.2f} [{100 * lo:.2f}, "
                     f"{100 * hi:.2f}] | {r['psnr']:.2f} | {diff(r, 'ssim', 100)} | {diff(r, 'psnr', 1)} |")
    beside(out, ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
