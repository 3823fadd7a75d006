r"""Offline agents with and without synthetic data: none / unguided / synther / pgd for TD3+BC and IQL over seeds,
with paired differences (the PGD issue's agent table).

1. Every run is ``gendiff.offline.pgd_loop.train_agent`` with one TrainAgentConfig (the shared generators are
   trained once per dataset beforehand: ``--pipeline`` a trajectory pipeline, ``--synther`` a SynthER folder).
2. Runs are written to ``--work``/<tag>/<algo>_<synthetic>_s<seed>.json and skipped when present, so a study can be
   split over processes (e.g. one per algorithm) and resumed; ``--merge`` builds one table from several works.
   A run writes its folder's table to <work>/<tag>/table.{json,md}; ``--merge`` writes to ``--out`` and refuses
   to replace an existing table without ``--overwrite``.
3. The table: final D4RL-normalised score (mean +- std over seeds), and paired differences (same seed) of
   pgd - none, pgd - unguided, synther - none, unguided - none with 95 % t-intervals (and the bootstrap
   interval of the mean for comparison). Runs with ``--set relabel=simulator`` (the synthetic rows' next states,
   rewards and dones from the simulator) are labelled ``unguided+sim`` / ``pgd+sim``, and runs with another real
   share than the reference's 16 of 256 ``pgd@128real`` etc., another set size ``@<n>syn``, and non-PGD sets made
   once (runs before ``regenerate_unguided``) ``+once``, sets without their terminal rows
   (``--set synthetic_terminals=false``) ``+nofalls``; each such row is paired with ``none`` and with its plain
   row. ``resample`` (real rows as the synthetic set: a perfect generator) is paired with ``none`` and ``pgd``.
   Two folders holding the same row and seed stop the merge (neither may silently replace the other).
4. A work folder records its settings and a fingerprint of its inputs (the dataset's contents:
   ``OfflineDataset.fingerprint``; the pipeline's and SynthER's files: ``gendiff.io.tree_fingerprint``) and the
   versions of torch, numpy, gymnasium, mujoco and minari (a folder written before 2026-12-05 has none). Running
   again into it with other settings or other inputs (for example a dataset rebuilt in a later session that
   differs) stops with an error naming the difference, and ``--merge`` refuses folders whose fingerprints for one
   dataset disagree, so no table mixes them unnoticed.

  python benchmarks/offline/agents.py --tiny                       # smoke
Full commands and results: benchmarks/offline/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gendiff.bench import machine_line, package_versions
from gendiff.io import beside, refuse_existing_table, tree_fingerprint
from gendiff.offline.datasets import load_dataset
from gendiff.offline.pgd_loop import TrainAgentConfig, train_agent
from gendiff.stats import bootstrap_ci, t_interval

PAIRS = (("pgd", "none"), ("pgd", "unguided"), ("synther", "none"), ("unguided", "none"), ("pgd", "synther"),
         ("resample", "none"), ("pgd", "resample"))  # resample: the control with real rows as the synthetic set
SIM = "+sim"  # label suffix of runs with relabel=simulator (synthetic next_obs / reward / done from the simulator)
REAL_DEFAULT = TrainAgentConfig.real_per_batch  # the reference's share (16 real of 256); others are labelled @<n>real
SYN_DEFAULT = TrainAgentConfig.num_synthetic  # synthetic transitions per set; others are labelled @<n>syn


def label(config: dict[str, Any], layout: dict[str, Any] | None = None) -> str:
    """A run's row label: its synthetic source, ``+linact`` when the trajectory pipeline held actions linearly
    (``layout``: the run's ``"layout"`` record; runs before it existed used the paper's arctanh), ``+sim`` when
    relabelled by the simulator, ``+once`` when a
    non-PGD set was made once (runs before ``regenerate_unguided`` existed), ``+nofalls`` when the synthetic set's
    terminal rows were dropped (``synthetic_terminals=false``), ``+rwmatch`` when each set was redrawn to the data's
    reward deciles (``match_reward``), ``+actorreal`` when the actor's step took real rows only
    (``actor_batch=real``), ``@<n>real`` when its batches hold
    another number of real transitions than the reference's, ``@<n>syn`` when a set holds another number of
    transitions than the default (rows with real data only: ``none``)."""
    lab = config["synthetic"]
    if lab == "none":
        return lab
    if (layout or {}).get("action_layout", "arctanh") != "arctanh":
        lab += "+linact"
    if config.get("relabel", "none") == "simulator":
        lab += SIM
    if config["synthetic"] != "pgd" and not config.get("regenerate_unguided", False):
        lab += "+once"
    if not config.get("synthetic_terminals", True):
        lab += "+nofalls"
    if config.get("match_reward", False):
        lab += "+rwmatch"
    if config.get("actor_batch", "mixed") == "real":
        lab += "+actorreal"
    if int(config.get("real_per_batch", REAL_DEFAULT)) != REAL_DEFAULT:
        lab += f"@{int(config['real_per_batch'])}real"
    if int(config.get("num_synthetic", SYN_DEFAULT)) != SYN_DEFAULT:
        lab += f"@{int(config['num_synthetic'])}syn"
    return lab


def _base(lab: str) -> str:
    """``pgd+sim@128real@100000syn`` -> ``pgd``."""
    return lab.split("+")[0].split("@")[0]


def pairs(labels: set[str]) -> list[tuple[str, str]]:
    """The paired differences to report: :data:`PAIRS`, then every modified row against ``none`` and its plain row,
    ``pgd`` against every modified non-PGD row (e.g. ``unguided+once``, the tables made before 2026-12-04), and a
    modified PGD row against the unguided row modified alike (``pgd+linact`` - ``unguided+linact``)."""
    out = [p for p in PAIRS if p[0] in labels and p[1] in labels]
    for lab in sorted(labels):
        if lab != _base(lab):
            alike = "unguided" + lab[len("pgd"):] if _base(lab) == "pgd" else ""
            mine = [(lab, "none"), (lab, _base(lab))] + ([("pgd", lab)] if _base(lab) != "pgd" else [(lab, alike)])
            out += [p for p in mine if p[0] in labels and p[1] in labels and p not in out]
    return out


def inputs_fingerprint(dataset_id: str, pipeline: str, synther: str) -> dict[str, str]:
    """Step 4: a hash of the dataset's contents and of the generators' files the runs use ("" when unused)."""
    fp = {"dataset": load_dataset(dataset_id, check_env=False).fingerprint()}  # contents, not the HDF5 bytes
    for name, path in (("pipeline", pipeline), ("synther", synther)):
        fp[name] = tree_fingerprint(path) if path else ""
    return fp


def _seeds(spec: str) -> list[int]:
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",") if s]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-id", default="gendiff/hopper/medium-v3")
    p.add_argument("--pipeline", default="", help="saved trajectory pipeline (train-diffusion's <out_dir>/pipeline)")
    p.add_argument("--synther", default="", help="saved SynthER folder (SynthER.save)")
    p.add_argument("--algos", default="td3bc,iql")
    p.add_argument("--synthetic", default="none,unguided,synther,pgd")
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 10,11")
    p.add_argument("--tag", default="main", help="a name for these settings (a folder under --work)")
    p.add_argument("--work", default="runs/offline_agents")
    p.add_argument("--merge", nargs="*", default=None, metavar="WORK/TAG",
                   help="only build the table from these run folders")
    p.add_argument("--out", default="", help="the table's path without extension (.json / .md written beside it); "
                   "default: <work>/<tag>/table after runs; required with --merge")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out table")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="TrainAgentConfig overrides for every run, e.g. steps=100000 real_per_batch=16")
    p.add_argument("--tiny", action="store_true")
    return p.parse_args()


def _overrides(items: list[str]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(TrainAgentConfig)}
    out: dict[str, Any] = {}
    for item in items:
        k, _, v = item.partition("=")
        if k not in fields:
            raise SystemExit(f"unknown TrainAgentConfig field {k!r}")
        default = getattr(TrainAgentConfig, k, None)
        out[k] = (v.lower() in ("1", "true")) if isinstance(default, bool) else type(default)(v) if default is not None \
            else v
    return out


def claim_work(work: Path, settings: dict[str, Any]) -> None:
    """Step 4: write ``settings`` to ``work``/settings.json, or stop when the folder already holds runs made with
    other settings or from other input files (never adds them to its finished runs)."""
    if (work / "settings.json").exists():
        before = json.loads((work / "settings.json").read_text())
        differ = [k for k in settings if k in before and before[k] != settings[k]]
        if differ:
            raise SystemExit(f"{work} holds runs made with other settings ({', '.join(differ)}: "
                             f"{ {k: before[k] for k in differ} } there, { {k: settings[k] for k in differ} } now); "
                             "use another --tag")
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps(settings, indent=1))


def run_all(a: argparse.Namespace) -> Path:
    """Steps 1-2: the runs of one settings tag."""
    work = Path(a.work) / a.tag
    base = _overrides(a.set)
    settings = {"dataset_id": a.dataset_id, "pipeline": a.pipeline, "synther": a.synther, "overrides": base,
                "inputs": inputs_fingerprint(a.dataset_id, a.pipeline, a.synther), "packages": package_versions()}
    claim_work(work, settings)
    for seed in _seeds(a.seeds):
        for algo in a.algos.split(","):
            for syn in a.synthetic.split(","):
                out = work / f"{algo}_{syn}_s{seed}.json"
                if out.exists():
                    continue
                cfg = TrainAgentConfig(dataset_id=a.dataset_id, algo=algo, synthetic=syn, seed=seed, out=str(out),
                                       diffusion_dir=a.pipeline if syn in ("unguided", "pgd") else "",
                                       synther_dir=a.synther if syn == "synther" else "", progress=False, **base)
                t0 = time.perf_counter()
                res = train_agent(cfg)
                print(f"{a.tag} {algo} {syn} seed {seed}: score {res['final'].get('score_mean'):.1f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return work


Key = tuple[str, str, str]  # (dataset, algo, label)


def _load(works: list[Path]) -> tuple[dict[Key, dict[int, float]], dict[Key, dict[int, list[float]]],
                                      dict[Key, list[int]], dict[Key, float]]:
    """Per (dataset, algo, label): the final score per seed, the score at each evaluation per seed, the
    evaluation steps, and (PGD rows) the guidance coefficient; a PGD row whose runs used two coefficients stops
    the table (the label does not hold the coefficient, so such a row would silently average two settings)."""
    scores: dict[Key, dict[int, float]] = {}
    curves: dict[Key, dict[int, list[float]]] = {}
    steps: dict[Key, list[int]] = {}
    coeff: dict[Key, tuple[float, Path]] = {}
    source: dict[tuple[Key, int], Path] = {}
    for w in works:
        for f in sorted(w.glob("*_s*.json")):
            r = json.loads(f.read_text())
            c = r["config"]
            key = (c["dataset_id"], c["algo"], label(c, r.get("layout")))
            if (key, int(c["seed"])) in source:  # two folders' runs of one row and seed: neither may hide the other
                raise SystemExit(f"{f} and {source[key, int(c['seed'])]} are both row {key[2]!r} seed {c['seed']} "
                                 f"of {key[1]} on {key[0]}; merge folders whose rows differ")
            source[key, int(c["seed"])] = f
            if _base(key[2]) == "pgd" and "guidance_coeff" in c:
                g, first = coeff.setdefault(key, (float(c["guidance_coeff"]), f))
                if g != float(c["guidance_coeff"]):
                    raise SystemExit(f"{f} (guidance_coeff {c['guidance_coeff']}) and {first} ({g}) are both row "
                                     f"{key[2]!r} of {key[1]} on {key[0]}; merge one coefficient per table")
            scores.setdefault(key, {})[int(c["seed"])] = float(r["final"]["score_mean"])
            curves.setdefault(key, {})[int(c["seed"])] = [float(p.get("score_mean", np.nan)) for p in r["curve"]]
            steps[key] = [int(p["step"]) for p in r["curve"]]
    return scores, curves, steps, {k: g for k, (g, _) in coeff.items()}


def table(works: list[Path], out: Path) -> dict[str, Any]:
    """Step 3."""
    scores, curves, eval_steps, coeffs = _load(works)
    settings = [json.loads((w / "settings.json").read_text()) for w in works if (w / "settings.json").exists()]
    seen: dict[str, str] = {}
    for st in settings:  # step 4: one dataset, one set of files
        fp = st.get("inputs", {}).get("dataset")
        if fp and seen.setdefault(st["dataset_id"], fp) != fp:
            raise SystemExit(f"the work folders hold runs on two different copies of {st['dataset_id']} "
                             f"(fingerprints {seen[st['dataset_id']]} and {fp}); merge runs on one copy only")
    rows, diffs = [], []
    for (ds, algo, syn), by_seed in sorted(scores.items()):
        v = np.array(list(by_seed.values()))
        rows.append({"dataset_id": ds, "algo": algo, "synthetic": syn, "seeds": sorted(by_seed), "mean": v.mean(),
                     "std": v.std(ddof=1) if len(v) > 1 else 0.0, "guidance_coeff": coeffs.get((ds, algo, syn))})
    for ds, algo in sorted({(k[0], k[1]) for k in scores}):
        for x, y in pairs({k[2] for k in scores if k[:2] == (ds, algo)}):
            sx, sy = scores.get((ds, algo, x), {}), scores.get((ds, algo, y), {})
            common = sorted(set(sx) & set(sy))
            if not common:
                continue
            d = np.array([sx[s] - sy[s] for s in common])
            diffs.append({"dataset_id": ds, "algo": algo, "pair": f"{x} - {y}", "seeds": common, "mean": d.mean(),
                          "t95": t_interval(d), "boot95": bootstrap_ci(d), "wins": int((d > 0).sum())})
    res = {"rows": rows, "paired": diffs, "settings": settings, "works": [str(w) for w in works],
           "machine": machine_line("1 thread per run; runs share the cores")}
    out.parent.mkdir(parents=True, exist_ok=True)
    beside(out, ".json").write_text(json.dumps(res, indent=1, default=float))
    md = ["# Offline agents: final D4RL-normalised score (10 evaluation episodes per run)", "",
          f"Machine: {res['machine']}. Settings of the work folders (each distinct one once): "
          + "; ".join(dict.fromkeys(json.dumps(s["overrides"]) for s in settings))
          + ". A PGD row's guidance coefficient is in its column (read from its runs); other rows do not use one.",
          "", "| dataset | algo | synthetic | guidance coeff | score mean +- std | seeds |", "|---|---|---|---|---|---|"]
    md += [f"| {r['dataset_id']} | {r['algo']} | {r['synthetic']} | "
           f"{'-' if r['guidance_coeff'] is None else format(r['guidance_coeff'], 'g')} | {r['mean']:.1f} +- "
           f"{r['std']:.1f} | {','.join(map(str, r['seeds']))} |" for r in rows]
    md += ["", "Paired differences (same seed): mean, 95 % t-interval, bootstrap interval, seeds where the first is "
           "ahead", "", "| dataset | algo | pair | mean | t 95 % | bootstrap 95 % | ahead |", "|---|---|---|---|---|---|---|"]
    md += [f"| {d['dataset_id']} | {d['algo']} | {d['pair']} | {d['mean']:+.1f} | [{d['t95'][0]:+.1f}, "
           f"{d['t95'][1]:+.1f}] | [{d['boot95'][0]:+.1f}, {d['boot95'][1]:+.1f}] | {d['wins']} of {len(d['seeds'])} |"
           for d in diffs]
    if any(len(st) > 1 for st in eval_steps.values()):
        md += ["", "Mean score over seeds at each evaluation (intermediate: 5 episodes per seed; last: 10)", ""]
        for key, by_seed in sorted(curves.items()):
            steps = eval_steps[key]
            runs = np.array([v for v in by_seed.values() if len(v) == len(steps)])
            res.setdefault("curves", []).append({"dataset_id": key[0], "algo": key[1], "synthetic": key[2],
                                                 "steps": steps, "mean": runs.mean(0).tolist()})
            md.append(f"- {key[1]} / {key[2]}: " + ", ".join(f"{st // 1000}k {m:.1f}" for st, m in
                                                           zip(steps, runs.mean(0))))
        beside(out, ".json").write_text(json.dumps(res, indent=1, default=float))
    beside(out, ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return res


def main() -> None:
    a = _args()
    torch.set_num_threads(1)
    if a.merge is not None and not a.out:
        raise SystemExit("--merge needs --out (where the merged table goes)")
    if a.out:  # the default run-mode table is the work folder's own, rebuilt with each run
        refuse_existing_table(a.out, a.overwrite, "an agent table")
    out = Path(a.out) if a.out else Path(a.work) / a.tag / "table"
    if a.merge is not None:
        table([Path(w) for w in a.merge], out)
        return
    if a.tiny:
        a.set = ["steps=200", "eval_every=0", "eval_episodes=2", "num_synthetic=500", "regenerate_every=100",
                 "num_inference_steps=4", *a.set]
        a.seeds = "0-1"
    work = run_all(a)
    table([work], out)


if __name__ == "__main__":
    main()
