r"""Which 4x k-space masks buy SSIM and which buy PSNR? Hand-made masks given up front vs ADS and data variance.

At 64x64 ADS beats the data-variance mask in SSIM by ~3.4 points but trails it by ~0.26 dB in PSNR, and its own
final mask given up front does the same (``ads_mask_vs_timing.py``), so the difference is the mask. ADS takes a
contiguous block around the centre (lines -8..+7); the data-variance mask skips lines +-7 and reaches +8, +9.
This script maps the trade-off on the same slices, noise, particles and steps:

  1. ``ads`` (mask chosen online) and ``data_variance`` (training-set line variance), as in the benchmark;
  2. every mask of ``--masks`` (line offsets from the centre line, e.g. ``-6..6,-8,8,9``; each must hold the
     budget's number of lines), reconstructed by the same loop with the mask given up front;
  3. per row: mean SSIM x100 and PSNR, paired differences to ``data_variance``, and whether the row beats
     ``data_variance`` in both metrics;
  4. a per-slice oracle (it reads the targets' metrics, so it bounds what choosing among these masks slice by
     slice could give): on each slice, of the rows with higher SSIM than ``data_variance`` there, the one of
     highest PSNR. If even the oracle trails ``data_variance`` in PSNR, no per-slice choice among these masks
     beats it in both metrics.

Writes JSON + markdown (``--render-only`` rewrites the markdown from the JSON).

    python benchmarks/ads/ads_mask_tradeoff.py --prior priors/mri64v6k --data data/val --train-data data/train \
        --slices 8 --acquisition-window 0.1,0.4 --threads 1 --out benchmarks/ads/mask_tradeoff64v6k.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gendiff.bench import machine_info
from gendiff.config import rename_aliases
from gendiff.io import beside
from gendiff.mri.benchmark import RunSettings, run_strategy
from gendiff.mri.study import ReconstructionConfig, add_study_arguments, load_study

DEFAULT_MASKS = (
    "-8..7",  # ADS's usual 4x mask with the 6,000-step prior (29 of 32 test slices)
    "-7..8",
    "-8,-6..6,8,9",  # the data-variance mask, written out (a check: must equal the data_variance row)
    "-6..6,-8,8,9",
    "-6..6,-8,8,10",
    "-6..6,-9,9,10",
    "-6..6,-10,10,11",
    "-5..5,-7,7,-9,9,11",
    "-7..7,9",
    "-7..7,10",
    "-7..7,12",
    "-6..7,-9,9",
    "-7..6,-9,9",
)


def parse_offsets(spec: str) -> list[int]:
    """'-6..6,-8,8' -> [-6, ..., 6, -8, 8]: comma-separated offsets from the centre line, 'a..b' inclusive."""
    offsets: list[int] = []
    for item in spec.split(","):
        lo, sep, hi = item.partition("..")
        try:
            offsets += list(range(int(lo), int(hi) + 1)) if sep else [int(item)]
        except ValueError:
            raise ValueError(f"mask {spec!r}: {item!r} is not an offset or an 'a..b' range") from None
    if len(set(offsets)) != len(offsets):
        raise ValueError(f"mask {spec!r} names a line twice")
    return offsets


def offsets_mask(spec: str, num_lines: int, budget: int, batch: int) -> torch.Tensor:
    """Step 2: [batch, num_lines] bool mask of the lines ``spec`` names, checked against the budget."""
    centre = num_lines // 2
    lines = [centre + o for o in parse_offsets(spec)]
    if len(lines) != budget:
        raise ValueError(f"mask {spec!r} holds {len(lines)} lines; the budget is {budget}")
    if not all(0 <= line < num_lines for line in lines):
        raise ValueError(f"mask {spec!r} reaches past the {num_lines} lines of k-space")
    mask = torch.zeros(batch, num_lines, dtype=torch.bool)
    mask[:, lines] = True
    return mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_arguments(ap)
    ap.add_argument("--masks", default=";".join(DEFAULT_MASKS), help="';'-separated masks of line offsets; write --masks='-6..6,-8,8,9;...' (they start with '-')")
    ap.add_argument("--out", default="benchmarks/ads/mask_tradeoff.json")
    ap.add_argument("--render-only", action="store_true", help="rewrite the markdown from --out's JSON")
    args = ap.parse_args()
    if args.render_only:
        render(json.loads(Path(args.out).read_text()), beside(Path(args.out), ".md"))
        return
    pipe, targets, train, budget, window = load_study(args)
    size = int(pipe.unet.config.sample_size)
    specs = [s.strip() for s in args.masks.split(";") if s.strip()]
    try:  # checked before any run
        masks = {s: offsets_mask(s, size, budget, targets.shape[0]) for s in specs}
    except ValueError as err:
        ap.error(str(err))
    cfg = RunSettings(num_particles=args.num_particles, num_inference_steps=args.num_inference_steps,
                      acquisition_window=window, batch_slices=args.slices)
    t0 = time.perf_counter()
    runs = {name: run_strategy(pipe, targets, name, budget, cfg, train, progress=False)  # Step 1
            for name in ("ads", "data_variance")}
    for spec, mask in masks.items():  # Step 2
        runs[spec] = run_strategy(pipe, targets, spec, budget, cfg, progress=False, fixed_masks=mask)
        print(spec, 100 * float(runs[spec].metrics["ssim"].mean()), float(runs[spec].metrics["psnr"].mean()),
              flush=True)
    dv = runs["data_variance"].metrics
    rows = []
    for name, r in runs.items():  # Step 3
        m = r.metrics
        d_ssim, d_psnr = 100 * float((m["ssim"] - dv["ssim"]).mean()), float((m["psnr"] - dv["psnr"]).mean())
        rows.append({"mask": name, "ssim_x100": 100 * float(m["ssim"].mean()), "psnr": float(m["psnr"].mean()),
                     "minus_dv_ssim_x100": d_ssim, "minus_dv_psnr": d_psnr,
                     "beats_dv_both": bool(d_ssim > 0 and d_psnr > 0),
                     "ssim_per_slice": m["ssim"].tolist(), "psnr_per_slice": m["psnr"].tolist()})
    payload = {"machine": machine_info(), "config": vars(args), "size": size, "seconds": time.perf_counter() - t0,
               "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    render(payload, beside(out, ".md"))


def slice_oracle(rows: list[dict], reference: str = "data_variance") -> dict:
    """Step 4: per slice, the highest-PSNR row among those with higher SSIM than ``reference`` on that slice."""
    names = [r["mask"] for r in rows]
    ssim = np.array([r["ssim_per_slice"] for r in rows])  # [rows, slices]
    psnr = np.array([r["psnr_per_slice"] for r in rows])
    ref = names.index(reference)
    eligible = np.where(ssim > ssim[ref], psnr, -np.inf)  # [rows, slices]: PSNR of the rows above ref's SSIM
    picks = np.where(np.isfinite(eligible.max(0)), eligible.argmax(0), ref)  # argmax: the first row on a tie
    cols = np.arange(ssim.shape[1])
    return {"picks": [names[i] for i in picks], "ssim_x100": 100 * float(ssim[picks, cols].mean()),
            "psnr": float(psnr[picks, cols].mean()),
            "slices_psnr_above_reference": int((psnr[picks, cols] > psnr[ref]).sum())}


def render(payload: dict, path: Path) -> None:
    """The markdown table of the rows and the per-slice oracle."""
    c = rename_aliases(ReconstructionConfig, payload["config"], warn=False)  # records may predate the renames
    rows = payload["rows"]
    size = payload["size"]
    budget = round(size / c["acceleration"])
    dv = next(r for r in rows if r["mask"] == "data_variance")
    orc = slice_oracle(rows)
    lines = [f"# ADS: the SSIM / PSNR trade-off between {c['acceleration']:g}x masks ({size}x{size}, {c['slices']} slices of "
             f"{c['data']}, {c['acceleration']}x = {budget} lines, {c['num_particles']} particles, {c['num_inference_steps']} steps)", "",
             f"Prior {c['prior']}; ADS window ({c['acquisition_window']}). Masks are line offsets from the centre line, given up front. "
             f"Machine: {payload['machine']['cpu']}, {payload['machine']['torch_threads']} thread(s); "
             f"{payload['seconds']:.0f} s.", "",
             "| mask | SSIM x100 | PSNR dB | it - data variance: SSIM x100 | it - data variance: PSNR | beats it in both |",
             "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r['mask']} | {r['ssim_x100']:.2f} | {r['psnr']:.3f} | {r['minus_dv_ssim_x100']:+.2f} | "
              f"{r['minus_dv_psnr']:+.3f} | {'yes' if r['beats_dv_both'] else 'no'} |" for r in rows]
    lines += ["", f"Per-slice oracle (Step 4; reads the targets): SSIM x100 {orc['ssim_x100']:.2f}, PSNR "
              f"{orc['psnr']:.3f} dB (data variance {dv['ssim_x100']:.2f} / {dv['psnr']:.3f}); PSNR above data "
              f"variance on {orc['slices_psnr_above_reference']} of {c['slices']} slices. Picks: "
              + ", ".join(orc["picks"]) + "."]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
