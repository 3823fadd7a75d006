r"""How few reverse steps can ADS take? ADS alone on held-out slices at several step counts.

Finds the fewest steps whose mean SSIM is within ``--tolerance`` SSIM points (x100) of the largest step
count's result, on the same slices, particles and seeds. Writes ads_steps.json / ads_steps.md.

    python benchmarks/ads/ads_steps.py --prior gendiff/assets/mri_prior_32 --data DIR --steps 25,50,100,200,1000

Long runs can be split over processes by slices and merged (the per-slice values are kept in the JSON):

    python benchmarks/ads/ads_steps.py ... --shard 0/2 --out a.json & python benchmarks/ads/ads_steps.py ... --shard 1/2 \
        --out b.json; wait; python benchmarks/ads/ads_steps.py --merge a.json,b.json --out ads_steps.json

(each shard draws its own noise, so a sharded run is paired across step counts but not identical to an
unsharded one).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gendiff.bench import machine_info
from gendiff.io import beside
from gendiff.mri.benchmark import RunSettings, run_strategy
from gendiff.mri.data import load_images
from gendiff.mri.prior import load_prior
from gendiff.mri.study import pick_slices


def run(args: argparse.Namespace) -> dict:
    """ADS at every step count on the (sharded) slices; per-slice metrics kept for merging."""
    if args.threads:
        torch.set_num_threads(args.threads)
    window = tuple(float(w) for w in args.window.split(","))
    pipe = load_prior(args.prior, "auto")
    size = int(pipe.unet.config.sample_size)
    targets = pick_slices(load_images(args.data, crop=size, crop_mode="kspace")[0], args.slices)
    shard, shards = (int(v) for v in args.shard.split("/"))
    if not 0 <= shard < shards:
        raise SystemExit(f"--shard must be I/N with 0 <= I < N, got {args.shard}")
    targets = torch.tensor_split(targets, shards)[shard]
    budget = pipe.budget_from(size, None, args.acceleration)
    rows = []
    for steps in sorted(int(s) for s in args.steps.split(",")):
        cfg = RunSettings(num_particles=args.particles, num_inference_steps=steps, guidance=args.guidance,
                          guidance_scale=args.guidance_scale, batch_slices=targets.shape[0],
                          acquisition_window=window)
        t0 = time.perf_counter()
        r = run_strategy(pipe, targets, "ads", budget, cfg, progress=False)
        rows.append({"steps": steps, "ssim_per_slice": (100 * r.metrics["ssim"]).tolist(),
                     "psnr_per_slice": r.metrics["psnr"].tolist(), "seconds_per_slice": r.seconds_per_slice,
                     "nfe_per_slice": r.nfe_per_slice, "nbe_per_slice": r.nbe_per_slice,
                     "wall_seconds": time.perf_counter() - t0})
        print({k: v for k, v in rows[-1].items() if not k.endswith("per_slice")}, flush=True)
    settings = {**vars(args), "size": size}
    return {"machine": machine_info(), "settings": settings, "shards": [args.shard], "rows": rows}


def merge(payloads: list[dict]) -> dict:
    """Concatenate the per-slice values of shard runs, step count by step count."""
    by_steps: dict[int, list[dict]] = {}
    for p in payloads:
        for r in p["rows"]:
            by_steps.setdefault(r["steps"], []).append(r)
    rows = []
    for steps, parts in sorted(by_steps.items()):
        n = [len(r["ssim_per_slice"]) for r in parts]
        rows.append({"steps": steps, "ssim_per_slice": [v for r in parts for v in r["ssim_per_slice"]],
                     "psnr_per_slice": [v for r in parts for v in r["psnr_per_slice"]],
                     "seconds_per_slice": sum(r["seconds_per_slice"] * k for r, k in zip(parts, n)) / sum(n),
                     "nfe_per_slice": parts[0]["nfe_per_slice"], "nbe_per_slice": parts[0]["nbe_per_slice"],
                     "wall_seconds": max(r["wall_seconds"] for r in parts)})
    counts = {len(r["ssim_per_slice"]) for r in rows}
    if len(counts) != 1:
        raise SystemExit(f"the shards cover different numbers of slices per step count: {sorted(counts)}")
    first = payloads[0]
    return {"machine": first["machine"], "settings": first["settings"],
            "shards": [s for p in payloads for s in p["shards"]], "rows": rows}


def report(payload: dict, out: Path) -> None:
    """Means, the fewest steps within tolerance of the largest step count, JSON + markdown."""
    s, rows, machine = payload["settings"], payload["rows"], payload["machine"]
    for r in rows:
        r["ssim_x100"] = sum(r["ssim_per_slice"]) / len(r["ssim_per_slice"])
        r["psnr"] = sum(r["psnr_per_slice"]) / len(r["psnr_per_slice"])
    best = rows[-1]["ssim_x100"]
    fewest = next(r["steps"] for r in rows if r["ssim_x100"] >= best - s["tolerance"])
    payload.update(reference_steps=rows[-1]["steps"], fewest_steps_within_tolerance=fewest)
    out.write_text(json.dumps(payload, indent=2))
    n, shards = len(rows[0]["ssim_per_slice"]), payload["shards"]
    lines = [f"# ADS: steps vs quality ({s['size']}x{s['size']}, {n} slices, {s['particles']} particles, "
             f"{s['acceleration']}x, {s['guidance']} scale {s['guidance_scale']}, window {s['window']})", "",
             f"Prior {s['prior']}, data {s['data']}. Machine: {machine['gpu'] or machine['cpu']}, torch "
             f"{machine['torch']}, {machine['torch_threads']} thread(s) per process; slice shards {shards} "
             "(one process each, side by side).", "",
             "| steps | SSIM x100 | PSNR | s / slice | NFE / slice | backward / slice |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['steps']} | {r['ssim_x100']:.2f} | {r['psnr']:.2f} | {r['seconds_per_slice']:.2f} | "
              f"{r['nfe_per_slice']} | {r['nbe_per_slice']} |" for r in rows]
    lines += ["", f"Fewest steps within {s['tolerance']} SSIM points of the {rows[-1]['steps']}-step result: "
              f"**{fewest}**"]
    beside(out, ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior")
    ap.add_argument("--data")
    ap.add_argument("--steps", default="25,50,100,200,1000")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--acceleration", type=float, default=4.0)
    ap.add_argument("--guidance", default="dps")
    ap.add_argument("--guidance-scale", type=float, default=1.0)
    ap.add_argument("--tolerance", type=float, default=0.5)
    ap.add_argument("--window", default="0.0,0.5", help="ADS acquisition window, start,stop fractions")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--shard", default="0/1", help="I/N: run the I-th of N contiguous slice shards")
    ap.add_argument("--merge", default="", help="comma-separated shard JSONs to merge (no reconstruction)")
    ap.add_argument("--out", default="benchmarks/ads/ads_steps.json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.merge:
        report(merge([json.loads(Path(p).read_text()) for p in args.merge.split(",")]), out)
        return
    if not (args.prior and args.data):
        raise SystemExit("--prior and --data are required (unless --merge)")
    payload = run(args)
    if int(args.shard.split("/")[1]) == 1:  # the whole set of slices (run() has checked the I/N form)
        report(payload, out)
    else:  # a shard: raw per-slice rows, merged later
        out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
