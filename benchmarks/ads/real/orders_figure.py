"""ADS's per-slice acquisition orders (a figure) and how adaptive its masks are (mri.benchmark.mask_adaptivity).

    python benchmarks/ads/real/orders_figure.py --results benchmarks/ads/real/real64.json,\
benchmarks/ads/mri64v6k_shipped_acc4.json,benchmarks/ads/mri64v6k_shipped_acc8.json \
        --names real,phantom_4x,phantom_8x --out benchmarks/ads/real/ads_orders.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gendiff.io import beside
from gendiff.mri.benchmark import mask_adaptivity
from gendiff.mri.figures import order_figure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="comma-separated benchmark JSON files with ads_order")
    ap.add_argument("--names", required=True, help="one label per file")
    ap.add_argument("--lines", type=int, default=64)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    orders, titles, table = {}, {}, {}
    for path, name in zip(args.results.split(","), args.names.split(",")):
        for budget, order in json.loads(Path(path).read_text())["ads_order"].items():
            key = f"{name}, {budget} lines"
            orders[key] = torch.tensor(order)
            a = mask_adaptivity(orders[key], args.lines)
            table[key] = a
            titles[key] = (f"{key}: {a['distinct_masks']} masks / {orders[key].shape[0]} slices,\n"
                           f"{a['pairwise_lines_differing']:.2f} lines differ per pair")
    out = Path(args.out)
    order_figure(out, orders, args.lines, titles)
    lines = ["# How adaptive are ADS's masks?", "", "Per setting: distinct final masks over the slices, share of slices "
             "with the most common mask, and lines in one slice's mask but not the other's, averaged over pairs of "
             "slices (0 for any fixed mask). Figure: " + out.name, "",
             "| setting | slices | distinct masks | modal mask share | lines differing per pair (of budget) |",
             "|---|---:|---:|---:|---:|"]
    for key, a in table.items():
        n = orders[key].shape
        lines.append(f"| {key} | {n[0]} | {a['distinct_masks']} | {100 * a['modal_mask_share']:.0f} % | "
                     f"{a['pairwise_lines_differing']:.2f} of {n[1]} ({100 * a['pairwise_fraction_differing']:.1f} %) |")
    beside(out, ".md").write_text("\n".join(lines) + "\n")
    beside(out, ".json").write_text(json.dumps(table, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
