"""Merge per-strategy `gendiff mri benchmark` results (same slices, seed and settings) into one paired table.

A benchmark run's noise depends only on the slice batch and the seed, never on which other strategies run beside it,
so strategies run as separate invocations (``--strategies X``, one result file each, in priority order) give the
same per-slice numbers as one joint run. This script pairs every row with ADS (DPS) slice by slice: mean, bootstrap
95 % interval, and the paired difference ADS - row with its interval (gendiff.stats.bootstrap_ci), in JSON +
markdown, with the settings of the first file.

    python benchmarks/ads/real/merge_tables.py --inputs 'benchmarks/ads/real/parts/real64_acc4_*.json' \
        --out benchmarks/ads/real/real64_acc4.json --title "Real test split, 4x"
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np

from gendiff.config import rename_aliases
from gendiff.io import beside
from gendiff.mri.benchmark import METRICS
from gendiff.mri.study import MRIBenchmarkConfig
from gendiff.stats import bootstrap_ci


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", required=True, help="a glob of per-strategy result files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args()
    files = sorted(glob.glob(args.inputs), key=lambda f: Path(f).stat().st_mtime)
    payloads = [json.loads(Path(f).read_text()) for f in files]
    latest = {(r["strategy"], r.get("reconstructor", "dps")): r for p in payloads for r in p["rows"]}
    rows = list(latest.values())  # a (strategy, reconstructor) measured twice (same slices and noise): the later file
    ref = next(r for r in rows if r["strategy"] == "ads" and r.get("reconstructor", "dps") == "dps")["per_slice"]
    merged = []
    for r in rows:
        row = {k: r[k] for k in ("strategy", "budget", "slices", "seconds_per_slice", "nfe_per_slice",
                                 "lines_measured_mean", "zero_filled_ssim")}
        row["reconstructor"] = r.get("reconstructor", "dps")
        for m in METRICS:
            v = np.asarray(r["per_slice"][m])
            row[m], row[f"{m}_ci95"] = float(v.mean()), bootstrap_ci(v, args.bootstrap)
            if not (r["strategy"] == "ads" and row["reconstructor"] == "dps"):
                d = np.asarray(ref[m]) - v
                row[f"ads_minus_{m}"], row[f"ads_minus_{m}_ci95"] = float(d.mean()), bootstrap_ci(d, args.bootstrap)
        row["per_slice"] = r["per_slice"]
        merged.append(row)
    orders = {k: v for p in payloads for k, v in p.items() if k.endswith("_order") and v}
    cfg = rename_aliases(MRIBenchmarkConfig, payloads[0]["config"], warn=False)  # may predate the renames
    out = Path(args.out)
    out.write_text(json.dumps({"files": files, "machine": payloads[0]["machine"], "config": cfg, "rows": merged,
                               **orders}, indent=2))

    def diff(r: dict, m: str, scale: float) -> str:
        if f"ads_minus_{m}" not in r:
            return "-"
        lo, hi = r[f"ads_minus_{m}_ci95"]
        return f"{scale * r[f'ads_minus_{m}']:+.2f} [{scale * lo:+.2f}, {scale * hi:+.2f}]"

    lines = [f"# {args.title}", "", f"{merged[0]['slices']} slices of {cfg['data']}, prior {cfg['prior']}, "
             f"budget {merged[0]['budget']} lines; {cfg['num_particles']} particles, {cfg['num_inference_steps']} DDIM steps, "
             f"window {cfg['acquisition_window']}, seed {cfg['seed']}; CS-TV weight {cfg['cs_tv_weight']}, L1-wavelet "
             f"{cfg['cs_wavelet_weight']}, {cfg['cs_iterations']} FISTA iterations (chosen on validation slices). "
             f"Merged from {len(files)} runs of `gendiff mri benchmark` (one per strategy, same slices and noise).",
             "", "| strategy | reconstructor | SSIM x100 [95% CI] | PSNR dB | ADS (DPS) - it: SSIM x100 [95% CI] | "
             "ADS (DPS) - it: PSNR dB [95% CI] | s / slice |", "|---|---|---|---:|---|---|---:|"]
    for r in merged:
        lo, hi = r["ssim_ci95"]
        lines.append(f"| {r['strategy']} | {r['reconstructor']} | {100 * r['ssim']:.2f} [{100 * lo:.2f}, "
                     f"{100 * hi:.2f}] | {r['psnr']:.2f} | {diff(r, 'ssim', 100)} | {diff(r, 'psnr', 1)} | "
                     f"{r['seconds_per_slice']:.2f} |")
    beside(out, ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
