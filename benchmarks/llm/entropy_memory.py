"""Peak extra memory and time of chunked token entropy vs a full-softmax entropy (CPU, fp32 logits).

Each variant runs in a fresh subprocess, so peaks do not mix: the worker allocates the logits, reads its
resident set (psutil if installed, else ru_maxrss) as the baseline, runs the variant once, then reads the
peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``); extra = peak - baseline. tracemalloc
is useless here (torch's CPU allocations bypass it). Median of ``--runs`` subprocesses per variant.

Variants:
    full               H = -(softmax(l) * log_softmax(l)).sum(-1), no grad
    chunked            gendiff.entropy.token_entropy(l, chunk_rows), no grad
    full_backward      the full formula, forward + backward of H.sum() (includes the [.., V] gradient)
    chunked_backward   token_entropy, forward + backward (includes the [.., V] gradient)

Usage: ``python benchmarks/llm/entropy_memory.py --out benchmarks/llm`` writes entropy_memory.json and
entropy_memory.md into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("full", "chunked", "full_backward", "chunked_backward")


def _rss_mb() -> float:
    """Current resident set in MB (psutil), or the peak so far when psutil is missing."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return _maxrss_mb()


def _maxrss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / 2**20 if sys.platform == "darwin" else kb / 2**10


def _worker(variant: str, shape: list[int], chunk_rows: int, threads: int, seed: int) -> dict:
    """Run one variant once in this (fresh) process and return its measurements."""
    import torch

    from gendiff.entropy import token_entropy

    torch.set_num_threads(threads)

    def full(logits: torch.Tensor) -> torch.Tensor:
        return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)

    fn = full if variant.startswith("full") else (lambda x: token_entropy(x, chunk_rows))
    backward = variant.endswith("backward")
    fn(torch.randn(4, 64, requires_grad=backward)).sum()  # warm-up on a tiny input (kernels, lazy init)
    logits = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    logits.requires_grad_(backward)
    rss_before, maxrss_before = _rss_mb(), _maxrss_mb()
    start = time.perf_counter()
    with torch.set_grad_enabled(backward):
        h = fn(logits)
        if backward:
            h.sum().backward()
    seconds = time.perf_counter() - start
    peak = _maxrss_mb()
    return {
        "variant": variant,
        "seconds": seconds,
        "extra_mb": peak - rss_before,
        "rss_before_mb": rss_before,
        "maxrss_before_mb": maxrss_before,
        "peak_mb": peak,
        "entropy_sum": float(h.detach().double().sum()),
        "grad_abs_sum": float(logits.grad.double().abs().sum()) if backward else None,
    }


def _spawn(variant: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--shape", *map(str, args.shape)]
    cmd += ["--chunk-rows", str(args.chunk_rows), "--threads", str(args.threads), "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {variant} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _summarise(runs: list[dict]) -> dict:
    return {
        "extra_mb_median": statistics.median(r["extra_mb"] for r in runs),
        "seconds_median": statistics.median(r["seconds"] for r in runs),
        "runs": runs,
    }


def _markdown(report: dict) -> str:
    s, m, r = report["settings"], report["machine"], report["results"]
    lines = [
        "# Token entropy: chunked vs full softmax (CPU)",
        "",
        f"Machine: {m['cpu_model']} (platform.processor() = `{m['processor']}`, {m['machine']}), "
        f"{m['cpu_count']} cores, "
        f"torch {m['torch']}, Python {m['python']}.",
        f"Settings: fp32 logits {s['shape']}, chunk_rows {s['chunk_rows']}, {s['threads']} thread(s), "
        f"median of {s['runs']} fresh subprocesses per variant; extra = peak RSS - RSS after allocating logits "
        f"(logits alone: {s['logits_mb']:.0f} MB). 1-min load average before/after: "
        f"{m['loadavg_1min_before_after'][0]:.2f} / {m['loadavg_1min_before_after'][1]:.2f} on a shared "
        "machine: memory is exact, times are noisy.",
        "",
        "| variant | peak extra memory (MB) | time (s) |",
        "|---|---:|---:|",
    ]
    for name in report["variants"]:
        lines.append(f"| {name} | {r[name]['extra_mb_median']:.0f} | {r[name]['seconds_median']:.3f} |")
    lines += [""] + [f"- {k}: {v:.3f}" for k, v in report["ratios"].items()]
    lines += [f"- max |entropy_sum difference| between variants: {report['entropy_sum_max_diff']:.3e}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    # imported here, not at module level: the workers measure their own memory from a fresh process
    from gendiff.bench import cpu_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/llm"), help="folder for the JSON + markdown")
    parser.add_argument("--shape", type=int, nargs="+", default=[8, 512, 32000], help="logits shape [..., V]")
    parser.add_argument("--chunk-rows", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--runs", type=int, default=3, help="subprocesses per variant (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.shape, args.chunk_rows, args.threads, args.seed)))
        return None

    import torch

    load_before = os.getloadavg()
    results = {}
    for variant in args.variants:
        runs = [_spawn(variant, args) for _ in range(args.runs)]
        results[variant] = _summarise(runs)
        print(
            f"{variant:>17}: +{results[variant]['extra_mb_median']:.0f} MB, "
            f"{results[variant]['seconds_median']:.3f} s",
            flush=True,
        )
    ratios = {}
    for a, b in (("chunked", "full"), ("chunked_backward", "full_backward")):
        if a in results and b in results:
            ratios[f"{a}/{b} memory"] = results[a]["extra_mb_median"] / results[b]["extra_mb_median"]
            ratios[f"{a}/{b} time"] = results[a]["seconds_median"] / results[b]["seconds_median"]
    sums = [run["entropy_sum"] for v in results.values() for run in v["runs"]]
    numel = 1
    for d in args.shape:
        numel *= d
    report = {
        "machine": {
            "processor": platform.processor() or "unknown",
            "cpu_model": cpu_name(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "loadavg_1min_before_after": [load_before[0], os.getloadavg()[0]],
        },
        "settings": {
            "shape": args.shape,
            "dtype": "float32",
            "chunk_rows": args.chunk_rows,
            "threads": args.threads,
            "runs": args.runs,
            "seed": args.seed,
            "logits_mb": numel * 4 / 2**20,
        },
        "variants": list(results),
        "results": results,
        "ratios": ratios,
        "entropy_sum_max_diff": max(sums) - min(sums),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "entropy_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "entropy_memory.md").write_text(_markdown(report))
    print(_markdown(report))
    return report


if __name__ == "__main__":
    main()
