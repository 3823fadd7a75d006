"""How much of the action spread does one GoRL decoder refit keep?

GoRL refits its decoder on the executed actions and then feeds it latents near N(0, I). If the refit decoder
maps N(0, I) to a narrower distribution than its data, every stage narrows the policy by that factor and the
policy turns deterministic after enough stages (seen on Hopper-v5: benchmarks/gorl/gorl_hopper.md).

Synthetic data with a known answer: states s ~ N(0, I_11), actions u = 2 tanh(s W) + sd * eps, eps ~ N(0, I_3)
(Hopper's sizes). Fit each decoder on 10,240 pairs (the library's refit: batch 256, 8 noise draws, lr 1e-3),
then decode 32 latents z ~ N(0, I) at each of 512 states and compare the std over z with sd. Ratio 1 means
the refit keeps the spread; GoRL's default is 500 fit steps and 10 sampling steps. The flow decoder is also
sampled with 50 Euler steps and with diffusers' FlowMatchHeunDiscreteScheduler (5 steps = 9 network calls).

Usage: OMP_NUM_THREADS=1 python benchmarks/gorl/gorl_decoder_spread.py   (about 4 min on one core)
Writes benchmarks/gorl/gorl_decoder_spread.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gendiff.bench import machine_info
from gendiff.rl.decoders import DiffusionDecoder, FlowDecoder

# (solver, steps): the flow decoder's variants; the diffusion decoder always samples its 10 DDIM levels
FLOW_SOLVERS = (("euler", 10), ("euler", 50), ("heun", 5))

HERE = Path(__file__).resolve().parent


def spread_after_fit(cls: type, sd: float, fit_steps: int, seed: int = 0, n: int = 10_240, obs_dim: int = 11,
                     act_dim: int = 3) -> dict[tuple[str, int], tuple[float, int]]:
    """Fit ``cls`` on the synthetic pairs; {(solver, steps): (mean over states of std_z u, network calls)}."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, obs_dim, generator=g)
    w = 0.5 * torch.randn(obs_dim, act_dim, generator=g)
    u = 2 * torch.tanh(obs @ w) + sd * torch.randn(n, act_dim, generator=g)
    torch.manual_seed(seed)
    dec = cls(obs_dim, act_dim, width=256, depth=3, num_inference_steps=10)
    dec.fit(obs, u, fit_steps, 256, 1e-3, 8, g)
    calls = [0]
    dec.net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    out = {}
    states = obs[:512].repeat(32, 1)
    for solver, steps in FLOW_SOLVERS if cls is FlowDecoder else (("ddim", 10),):
        if cls is FlowDecoder:
            dec.set_solver(solver, steps)
        z = torch.randn(32 * 512, act_dim, generator=g)
        calls[0] = 0
        us = dec.decode(states, z).view(32, 512, act_dim)
        out[(solver, steps)] = (float(us.std(0).mean()), calls[0])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fit-steps", type=str, default="500,2000")
    p.add_argument("--sds", type=str, default="1.0,0.3")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows, t0 = [], time.perf_counter()
    for cls in (FlowDecoder, DiffusionDecoder):
        for sd in (float(x) for x in args.sds.split(",")):
            for fit in (int(x) for x in args.fit_steps.split(",")):
                for (solver, steps), (spread, nfe) in spread_after_fit(cls, sd, fit, args.seed).items():
                    rows.append({"decoder": cls.__name__, "data_sd": sd, "fit_steps": fit, "solver": solver,
                                 "sample_steps": steps, "nfe": nfe, "decoded_sd": spread, "ratio": spread / sd})
                    print(rows[-1])
    out = {"machine": machine_info(), "seed": args.seed, "wall_s": time.perf_counter() - t0, "rows": rows}
    (HERE / "gorl_decoder_spread.json").write_text(json.dumps(out, indent=2))
    md = ["# GoRL decoder refit: spread kept (synthetic Hopper-sized data, known spread)", "",
          f"Machine: {out['machine']['cpu']}, 1 thread; seed {args.seed}; {out['wall_s']:.0f} s. "
          "Decoded spread: mean over 512 states of the std over 32 latents z ~ N(0, I).", "",
          "| decoder | data sd | fit steps | solver, steps | network calls | decoded sd | kept (ratio) "
          "| ratio^14 (14 refits) |", "|---|---:|---:|---|---:|---:|---:|---:|"]
    md += [f"| {r['decoder']} | {r['data_sd']} | {r['fit_steps']} | {r['solver']}, {r['sample_steps']} | {r['nfe']} | "
           f"{r['decoded_sd']:.3f} | {r['ratio']:.2f} | {r['ratio'] ** 14:.2f} |" for r in rows]
    (HERE / "gorl_decoder_spread.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
