"""Does a stronger prior close ADS's PSNR gap to the data-variance mask? Paired ADS - data variance per prior.

`gendiff mri benchmark` runs ADS and the data-variance mask on the same slices with the same noise (seeded per
batch), so their per-slice metrics pair up even when the two strategies ran as separate processes (side by side,
one core each). This script reads such pairs of result files, checks that they really are pairs (same prior, data,
slices, particles, steps, window, sigma, seed and budget), and writes one table:

  1. per prior and acceleration: mean SSIM / PSNR of ADS and of data variance;
  2. the paired difference ADS - data variance per slice, its mean and bootstrap 95% interval
     (gendiff.stats.bootstrap_ci, as the benchmark command's own tables);
  3. seconds and network evaluations per slice.

    python benchmarks/ads/ads_prior_size.py --out benchmarks/ads/prior_size64.json \\
        --run "tiny 6k:4:val4_t6k_ads.json:val4_t6k_data_variance.json" \\
        --run "small 4k:4:val4_s4k_ads.json:val4_s4k_data_variance.json"

Each ``--run`` is ``label:acceleration:ADS_JSON:DATA_VARIANCE_JSON``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gendiff.config import rename_aliases
from gendiff.io import beside
from gendiff.mri.study import MRIBenchmarkConfig
from gendiff.stats import bootstrap_ci

# the settings two result files must share to be a pair (everything but the strategy and the output path)
PAIRED_FIELDS = ("prior", "data", "train_data", "slices", "num_particles", "num_inference_steps", "acquisition_window",
                 "sigma", "lookahead_steps",
                 "guidance", "guidance_scale", "batch_slices", "precision", "seed", "acceleration", "crop_mode")


def load_row(path: str, strategy: str) -> tuple[dict, dict, dict]:
    """(config, the row of ``strategy``, machine) from one `gendiff mri benchmark` result file."""
    payload = json.loads(Path(path).read_text())
    rows = [r for r in payload["rows"] if r["strategy"] == strategy]
    if len(rows) != 1:
        raise ValueError(f"{path} holds {len(rows)} rows for strategy {strategy!r}; expected exactly one")
    config = rename_aliases(MRIBenchmarkConfig, payload["config"], warn=False)  # records may predate the renames
    return config, rows[0], payload["machine"]


def compare(label: str, acceleration: str, ads_path: str, dv_path: str, n_boot: int) -> tuple[dict, dict]:
    """Steps 1-3 for one prior at one acceleration; returns (the table row, the ADS run's machine)."""
    ads_cfg, ads, machine = load_row(ads_path, "ads")
    dv_cfg, dv, _ = load_row(dv_path, "data_variance")
    differing = [f for f in PAIRED_FIELDS if ads_cfg.get(f) != dv_cfg.get(f)]
    if differing or ads["budget"] != dv["budget"]:
        raise ValueError(f"{ads_path} and {dv_path} are not a pair: they differ in {differing or ['budget']}")
    if ads_cfg["acceleration"] != [float(acceleration)]:
        raise ValueError(f"{ads_path} ran at acceleration {ads_cfg['acceleration']}, not the {acceleration} its label says")
    out = {"label": label, "acceleration": float(acceleration), "prior": ads_cfg["prior"], "budget": ads["budget"],
           "slices": ads["slices"], "particles": ads_cfg["num_particles"], "steps": ads_cfg["num_inference_steps"],
           "seconds_per_slice_ads": ads["seconds_per_slice"], "nfe_per_slice": ads["nfe_per_slice"]}
    for m in ("ssim", "psnr"):
        a, d = np.asarray(ads["per_slice"][m]), np.asarray(dv["per_slice"][m])
        out[f"ads_{m}"], out[f"dv_{m}"] = float(a.mean()), float(d.mean())
        out[f"ads_minus_dv_{m}"] = float((a - d).mean())
        out[f"ads_minus_dv_{m}_ci95"] = bootstrap_ci(a - d, n_boot)
    return out, machine


def markdown(rows: list[dict], machine: str) -> str:
    lines = ["# ADS vs the data-variance mask, by prior (paired per slice)", "",
             f"Machine: {machine}. Each row: one prior, `gendiff mri benchmark` with ADS and with data variance on the "
             "same slices and noise; differences ADS - data variance with bootstrap 95% intervals.", "",
             "| prior | accel. | slices | ADS SSIM x100 / PSNR dB | data variance SSIM x100 / PSNR dB | "
             "ADS - DV: SSIM x100 [95% CI] | ADS - DV: PSNR dB [95% CI] | ADS s / slice | NFE / slice |",
             "|---|---:|---:|---|---|---|---|---:|---:|"]
    for r in rows:
        s_lo, s_hi = r["ads_minus_dv_ssim_ci95"]
        p_lo, p_hi = r["ads_minus_dv_psnr_ci95"]
        lines.append(
            f"| {r['label']} | {r['acceleration']:g}x | {r['slices']} | {100 * r['ads_ssim']:.2f} / {r['ads_psnr']:.2f} | "
            f"{100 * r['dv_ssim']:.2f} / {r['dv_psnr']:.2f} | {100 * r['ads_minus_dv_ssim']:+.2f} "
            f"[{100 * s_lo:+.2f}, {100 * s_hi:+.2f}] | {r['ads_minus_dv_psnr']:+.2f} [{p_lo:+.2f}, {p_hi:+.2f}] | "
            f"{r['seconds_per_slice_ads']:.1f} | {r['nfe_per_slice']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="label:acceleration:ADS_JSON:DATA_VARIANCE_JSON")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/ads/prior_size64.json")
    args = ap.parse_args()
    rows, machine = [], None
    for spec in args.run:
        parts = spec.split(":")
        if len(parts) != 4:
            ap.error(f"--run {spec!r}: expected label:acceleration:ADS_JSON:DATA_VARIANCE_JSON")
        try:
            row, m = compare(*parts, n_boot=args.bootstrap)
        except (ValueError, KeyError, FileNotFoundError) as err:
            ap.error(f"--run {spec!r}: {err}")
        rows.append(row)
        machine = f"{m['gpu'] or m['cpu']}, torch {m['torch']}, {m['torch_threads']} thread(s) per process"
    out = Path(args.out)
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    table = markdown(rows, machine)
    beside(out, ".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
