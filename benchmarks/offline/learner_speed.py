"""Offline learner throughput: gendiff vs d3rlpy 2.8 on one CPU thread (TD3+BC, IQL, PRDC).

Both libraries run in this one process, one thread each (``torch.set_num_threads(1)``, BLAS/OpenMP pools of
one), on the same Minari dataset, with the same settings: batch 256, 256x2 MLPs, twin critics, Adam 3e-4,
gamma 0.99, tau 0.005, z-scored states (std + 1e-3), actions scaled from the box to [-1, 1]; TD3+BC / PRDC:
alpha 2.5, policy noise 0.2 clipped at 0.5, the actor and the targets every 2nd update; PRDC beta 2; IQL:
expectile 0.7, beta 3, weights clipped at 100, the actor's cosine learning-rate decay. An "update" is one
call of each library's update (for TD3+BC / PRDC: one critic step, plus the actor every 2nd call).

Two measures, each timed in blocks of ``--updates`` calls that alternate between the libraries (the order
flips every repeat), so both see the same load on a shared machine:

- train step: draw a batch from the dataset and update, as each library's training loop does
  (d3rlpy: ``ReplayBuffer.sample_transition_batch`` + ``algo.update``, the body of ``fit``;
  gendiff: ``BatchSampler.sample`` + ``learner.learn``, the body of ``train_agent``);
- update only: one fixed batch in the library's own format, updated repeatedly.

Clocks: CPU time of the process (``time.process_time``; the headline, robust to other jobs on the machine)
and wall time. Ratios are gendiff / d3rlpy per repeat; medians over repeats. The "dense floor" column is the
update's matrix-product FLOPs (counted by ``torch.utils.flop_counter``) at the speed this machine runs a
256 x 256 x 256 product, i.e. the most updates/s a one-thread fp32 implementation could reach.

Needs the benchmark extra (d3rlpy is never a runtime dependency of gendiff)::

    make bench-setup        # pip install -c requirements/constraints.txt -r requirements/bench.txt (+ d3rlpy)
    .venv/bin/python benchmarks/offline/learner_speed.py            # -> benchmarks/offline/learner_speed.{json,md}

The default dataset ``gendiff/hopper/random-v0`` (1M uniform-random Hopper-v5 transitions) is built on first
use when ``$MINARI_DATASETS_PATH`` lacks it; ``--dataset-id`` takes any local Minari dataset.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy / torch load BLAS
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from gendiff.bench import cpu_name  # noqa: E402
from gendiff.io import beside, refuse_existing_table  # noqa: E402
from gendiff.offline.datasets import OfflineDataset, load_dataset, load_or_make_dataset  # noqa: E402
from gendiff.offline.learners import build_learner  # noqa: E402
from gendiff.offline.pgd_loop import BatchSampler  # noqa: E402

HERE = Path(__file__).resolve().parent
BATCH = 256
TOTAL_STEPS = 1_000_000  # IQL's cosine horizon (CORL), the same in both libraries


def d3rlpy_dataset(ds: OfflineDataset) -> Any:
    """A d3rlpy MDPDataset from the episodes' arrays (d3rlpy's own get_minari misaligns observations)."""
    import d3rlpy

    obs = np.concatenate([e.observations[:-1] for e in ds.episodes])
    act = np.concatenate([e.actions for e in ds.episodes])
    rew = np.concatenate([e.rewards for e in ds.episodes])
    term = np.concatenate([e.terminations for e in ds.episodes]).astype(np.float32)
    tout = np.zeros_like(term)
    ends = np.cumsum([len(e) for e in ds.episodes]) - 1
    tout[ends] = 1.0 - term[ends]  # every episode ends in a termination or a time-out
    return d3rlpy.dataset.MDPDataset(obs, act, rew, term, tout)


def d3rlpy_algo(name: str, obs: np.ndarray, act: np.ndarray, low: np.ndarray, high: np.ndarray, mdp: Any) -> Any:
    """The d3rlpy learner with the settings of the module docstring, built for ``mdp``."""
    import d3rlpy

    scalers = {"observation_scaler": d3rlpy.preprocessing.StandardObservationScaler(mean=obs.mean(0), std=obs.std(0)),
               "action_scaler": d3rlpy.preprocessing.MinMaxActionScaler(minimum=low, maximum=high)}
    common = {"batch_size": BATCH, "actor_learning_rate": 3e-4, "critic_learning_rate": 3e-4, "gamma": 0.99,
              "tau": 0.005, **scalers}
    if name == "iql":
        cosine = d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=TOTAL_STEPS)
        cfg = d3rlpy.algos.IQLConfig(expectile=0.7, weight_temp=3.0, max_weight=100.0, n_critics=2,
                                     actor_optim_factory=d3rlpy.optimizers.AdamFactory(lr_scheduler_factory=cosine),
                                     **common)
    else:
        td3 = {"alpha": 2.5, "target_smoothing_sigma": 0.2, "target_smoothing_clip": 0.5, "update_actor_interval": 2,
               "n_critics": 2, **common}
        cfg = d3rlpy.algos.PRDCConfig(beta=2.0, **td3) if name == "prdc" else d3rlpy.algos.TD3PlusBCConfig(**td3)
    algo = cfg.create(device="cpu:0")
    algo.build_with_dataset(mdp)
    if name == "prdc":  # what PRDC.fit does before training: the neighbour index over [beta * s_norm, a_scaled]
        algo._nbsr.set_params(n_jobs=1)  # d3rlpy's default n_jobs=-1 would use every core
        s, a = algo.observation_scaler.transform_numpy(obs), algo.action_scaler.transform_numpy(act)
        algo._nbsr.fit(np.concatenate([s * 2.0, a], axis=1))
    return algo


def rate(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    """(updates per CPU-second, updates per wall-second) of ``n`` calls."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return n / (time.process_time() - c0), n / (time.perf_counter() - w0)


def gemm_flops_per_s(reps: int = 5) -> float:
    """fp32 FLOP per CPU-second of a 256^3 matrix product on this thread (best of ``reps`` blocks)."""
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    best = 0.0
    for _ in range(reps):
        r, _ = rate(lambda: torch.mm(a, b), 400)
        best = max(best, r * 2 * 256**3)
    return best


def flops(fn: Callable[[], Any], calls: int = 2) -> float:
    """Matrix-product FLOPs per call, averaged over ``calls`` (TD3+BC's actor runs every 2nd update)."""
    counter = FlopCounterMode(display=False)
    with counter:
        for _ in range(calls):
            fn()
    return counter.get_total_flops() / calls


def update_calls(d3: Any, mdp: Any, ours: Any, sampler: BatchSampler) -> dict[str, dict[str, Callable[[], Any]]]:
    """The two measures' calls for each library (see the module docstring)."""
    fixed_d3, fixed_rows = mdp.sample_transition_batch(BATCH), sampler.sample()
    return {
        "train step": {"d3rlpy": lambda: d3.update(mdp.sample_transition_batch(BATCH)),
                       "gendiff": lambda: ours.learn(sampler.sample())},
        "update only": {"d3rlpy": lambda: d3.update(fixed_d3), "gendiff": lambda: ours.learn(fixed_rows)},
    }


def nn_search_ms(d3: Any, ours: Any, sampler: BatchSampler, reps: int = 20) -> dict[str, float]:
    """PRDC: CPU ms of one exact nearest-neighbour search for a batch (the current actor's keys) per library."""
    b = ours.split(sampler.sample())
    with torch.no_grad():
        query = torch.cat([b.obs * ours.config.beta, ours.actor(b.obs)], dim=1)
    q_np = query.numpy()
    out = {}
    for lib, fn in (("gendiff", lambda: ours.nearest(query)),
                    ("d3rlpy", lambda: d3._nbsr.kneighbors(q_np, n_neighbors=1, return_distance=False))):
        cpu, _ = rate(fn, reps)
        out[lib] = 1e3 / cpu
    return out


def matmul_replay_ms(fn: Callable[[], Any], reps: int = 50) -> float:
    """CPU ms per update of the update's matrix products alone: the products of two calls of ``fn`` (shapes,
    strides and order recorded with a dispatch mode) replayed on random operands. What is left of an update's
    time is everything else: element-wise work, optimiser steps, autograd and Python."""
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    products = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
    recorded: list[tuple[Any, list[Any], dict[str, Any]]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            kwargs = kwargs or {}
            if func in products:
                recorded.append((func, [(a.shape, a.stride()) if isinstance(a, torch.Tensor) else a for a in args],
                                 kwargs))
            return func(*args, **kwargs)

    with Record():
        fn()
        fn()

    def operand(spec: Any) -> Any:
        if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], torch.Size)):
            return spec
        shape, stride = spec
        size = 1 + sum((n - 1) * st for n, st in zip(shape, stride))
        return torch.randn(max(size, 1)).as_strided(shape, stride)

    replay = [(f, [operand(a) for a in args], kw) for f, args, kw in recorded]

    def run() -> None:
        for f, args, kw in replay:
            f(*args, **kw)

    run()
    cpu, _ = rate(run, reps)
    return 1e3 / cpu / 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset-id", default="gendiff/hopper/random-v0")
    p.add_argument("--make-steps", type=int, default=1_000_000, help="size of the default dataset when it is built")
    p.add_argument("--algos", default="td3bc,iql,prdc")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--updates", type=int, default=300, help="updates per timed block")
    p.add_argument("--prdc-updates", type=int, default=60,
                   help="updates per timed block for PRDC (its neighbour search makes an update ~10x slower)")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "learner_speed"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out .json / .md")
    args = p.parse_args()
    refuse_existing_table(args.out, args.overwrite)

    import d3rlpy

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    d3rlpy.seed(args.seed)
    if args.dataset_id == "gendiff/hopper/random-v0":
        ds = load_or_make_dataset("Hopper-v5", "random", args.make_steps, args.dataset_id)
    else:
        ds = load_dataset(args.dataset_id)
    real = ds.transitions()
    mdp = d3rlpy_dataset(ds)
    obs_np, act_np = real["obs"].numpy(), real["act"].numpy()
    load_start = os.getloadavg()
    gemm = gemm_flops_per_s()
    results: dict[str, Any] = {}
    for name in args.algos.split(","):
        d3 = d3rlpy_algo(name, obs_np, act_np, ds.action_low, ds.action_high, mdp)
        ours = build_learner(name, real, ds.action_low, ds.action_high, seed=args.seed)
        sampler = BatchSampler(ours, real, BATCH, BATCH, args.seed)
        calls = update_calls(d3, mdp, ours, sampler)
        for fns in calls.values():  # warm-up (allocations, the first actor steps)
            for fn in fns.values():
                for _ in range(args.warmup):
                    fn()
        floor = {lib: gemm / flops(calls["update only"][lib]) for lib in ("d3rlpy", "gendiff")}
        matmul_ms = {lib: matmul_replay_ms(calls["update only"][lib]) for lib in ("d3rlpy", "gendiff")}
        per: dict[str, list[dict[str, float]]] = {m: [] for m in calls}
        n_updates = args.prdc_updates if name == "prdc" else args.updates
        for r in range(args.repeats):
            for measure, fns in calls.items():
                order = ("d3rlpy", "gendiff") if r % 2 == 0 else ("gendiff", "d3rlpy")
                row: dict[str, float] = {}
                for lib in order:
                    row[f"{lib}_cpu"], row[f"{lib}_wall"] = rate(fns[lib], n_updates)
                row["ratio_cpu"] = row["gendiff_cpu"] / row["d3rlpy_cpu"]
                row["ratio_wall"] = row["gendiff_wall"] / row["d3rlpy_wall"]
                per[measure].append(row)
                print(f"{name} {measure} repeat {r}: d3rlpy {row['d3rlpy_cpu']:.1f} gendiff {row['gendiff_cpu']:.1f} "
                      f"updates/CPU-s, ratio {row['ratio_cpu']:.2f} (wall {row['ratio_wall']:.2f})", flush=True)
        results[name] = {
            "dense_floor_updates_per_cpu_s": floor,
            **({"nn_search_ms_per_actor_update": nn_search_ms(d3, ours, sampler)} if name == "prdc" else {}),
            "matmul_mflop_per_update": {lib: gemm / floor[lib] / 1e6 for lib in floor},
            "matmul_replay_ms_per_update": matmul_ms,
            **{m: {"repeats": rows, "median": {k: statistics.median(x[k] for x in rows) for k in rows[0]}}
               for m, rows in per.items()},
        }
    meta = {
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "d3rlpy": d3rlpy.__version__, "threads": torch.get_num_threads(),
                    "load_average_start": load_start, "load_average_end": os.getloadavg(),
                    "gemm_256_gflop_per_cpu_s": gemm / 1e9},
        "settings": {"dataset_id": args.dataset_id, "transitions": int(real["obs"].shape[0]),
                     "obs_dim": ds.obs_dim, "act_dim": ds.act_dim, "batch": BATCH, "hidden": [256, 256],
                     "repeats": args.repeats, "updates_per_block": args.updates,
                     "prdc_updates_per_block": args.prdc_updates, "warmup": args.warmup,
                     "seed": args.seed, "clock": "process CPU time (headline) and wall time"},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    beside(out, ".json").write_text(json.dumps({**meta, "results": results}, indent=2))
    beside(out, ".md").write_text(markdown(meta, results))
    print(beside(out, ".md").read_text())


def markdown(meta: dict[str, Any], results: dict[str, Any]) -> str:
    m, s = meta["machine"], meta["settings"]
    lines = [
        "# Offline learner throughput: gendiff vs d3rlpy (one CPU thread)", "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs shared with other jobs (load average "
        f"{m['load_average_start'][0]:.1f} at start, {m['load_average_end'][0]:.1f} at end); one thread per library; "
        f"torch {m['torch']}, d3rlpy {m['d3rlpy']}, Python {m['python']}. A 256^3 fp32 product runs at "
        f"{m['gemm_256_gflop_per_cpu_s']:.0f} GFLOP per CPU-second here.", "",
        f"Settings: {s['dataset_id']} ({s['transitions']:,} transitions, obs {s['obs_dim']}, act {s['act_dim']}), "
        f"batch {s['batch']}, MLPs 256x2, twin critics, CORL defaults; {s['repeats']} repeats of {s['updates_per_block']} "
        f"updates (PRDC {s['prdc_updates_per_block']}) per library and measure, interleaved, after {s['warmup']} "
        f"warm-up updates; seed {s['seed']}.", "",
        "Updates per CPU-second (medians over repeats); ratio = gendiff / d3rlpy, per repeat in brackets.", "",
        "| algorithm | measure | d3rlpy | gendiff | ratio (median) | ratio per repeat | ratio, wall clock | dense floor "
        "| gendiff matmul share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for measure in ("train step", "update only"):
            med, reps = res[measure]["median"], res[measure]["repeats"]
            per = ", ".join(f"{r['ratio_cpu']:.2f}" for r in reps)
            floor = res["dense_floor_updates_per_cpu_s"]["gendiff"]
            share = res["matmul_replay_ms_per_update"]["gendiff"] * med["gendiff_cpu"] / 1e3
            lines.append(f"| {name} | {measure} | {med['d3rlpy_cpu']:.1f} | {med['gendiff_cpu']:.1f} | "
                         f"**{med['ratio_cpu']:.2f}x** | {per} | {med['ratio_wall']:.2f}x | {floor:.0f} | {share:.0%} |")
    lines += ["", "Dense floor: the update's matrix-product FLOPs (gendiff: "
              + ", ".join(f"{n} {r['matmul_mflop_per_update']['gendiff']:.0f}" for n, r in results.items())
              + " MFLOP; d3rlpy: "
              + ", ".join(f"{n} {r['matmul_mflop_per_update']['d3rlpy']:.0f}" for n, r in results.items())
              + " MFLOP) at the 256^3 product speed above: no fp32 one-thread implementation of these networks "
              "and batch can exceed it.", "",
              "Matmul share: CPU time of the update's matrix products alone (recorded shapes and strides replayed on "
              "random operands; gendiff "
              + ", ".join(f"{n} {r['matmul_replay_ms_per_update']['gendiff']:.1f}" for n, r in results.items())
              + " ms; d3rlpy "
              + ", ".join(f"{n} {r['matmul_replay_ms_per_update']['d3rlpy']:.1f}" for n, r in results.items())
              + " ms per update) over the measured time per update: the part of gendiff's time that no "
              "reorganisation of the rest can remove.", ""]
    if "prdc" in results and "nn_search_ms_per_actor_update" in results["prdc"]:
        nn = results["prdc"]["nn_search_ms_per_actor_update"]
        lines += [f"PRDC's exact nearest-neighbour search of a batch's keys (once per actor update, every 2nd update), "
                  f"measured at the end: gendiff (scipy cKDTree) {nn['gendiff']:.1f} ms, d3rlpy (scikit-learn, n_jobs=1) "
                  f"{nn['d3rlpy']:.1f} ms of CPU time.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
