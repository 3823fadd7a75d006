"""The ``gendiff`` command. One sub-command group per area; application folders load lazily.

  gendiff demo                      ADS vs fixed masks on synthetic fastMRI data (the main job)
  gendiff train-prior               an image prior on bundled images (digits, faces, phantoms) or a folder
  gendiff bench sampler             GuidedSampler overhead vs the plain diffusers loop; DPS vs x0-space
  gendiff mri ...                   make-synthetic, train-prior, benchmark
  gendiff images ...                benchmark (pixel / column subsampling)
  gendiff offline ...               Minari datasets, offline learners, policy-guided trajectory diffusion
  gendiff gorl ...                  generative policies for online RL
  gendiff subrl ...                 submodular RL: SubPO vs the additive-reward policy gradient
  gendiff tabular ...               tabular RL: UCBVI, StepMix / EpsMix conservative exploration
  gendiff fishery ...               fishery control: best constant-mortality / constant-escapement policies
  gendiff robust ...                robust RL: non-dominated policies against state-adversarial attacks
  gendiff llm ...                   entropy-aware LLM RL

The front door is the one place in gendiff/ allowed to import gendiff.mri / gendiff.pipelines /
gendiff.offline, and only inside the functions that build their groups.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gendiff.commands import add_experiment, add_group


def _core_commands(sub: argparse._SubParsersAction) -> None:
    from gendiff.bench import SamplerBenchConfig, run_sampler_bench
    from gendiff.images import ImagePriorConfig, train_image_prior

    add_experiment(sub, "train-prior", ImagePriorConfig, train_image_prior,
                   "train an image prior on digits, faces, phantoms or a folder of images", multiprocess=True)
    bsub = add_group(sub, "bench", "benchmarks that write JSON + markdown under benchmarks/")
    add_experiment(bsub, "sampler", SamplerBenchConfig, run_sampler_bench,
                   "time per step: GuidedSampler vs the plain diffusers loop; DPS vs x0-space guidance")


def _app_commands(sub: argparse._SubParsersAction) -> None:
    from gendiff.llm.cli import add_llm_commands
    from gendiff.mri.cli import add_demo_command, add_images_commands, add_mri_commands
    from gendiff.offline.cli import add_offline_commands
    from gendiff.rl.cli import (
        add_fishery_commands,
        add_gorl_commands,
        add_robust_commands,
        add_subrl_commands,
        add_tabular_commands,
    )

    add_demo_command(sub)
    add_mri_commands(sub)
    add_images_commands(sub)
    add_offline_commands(sub)
    add_gorl_commands(sub)
    add_subrl_commands(sub)
    add_tabular_commands(sub)
    add_fishery_commands(sub)
    add_robust_commands(sub)
    add_llm_commands(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gendiff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _core_commands(sub)
    _app_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        run = getattr(args, "func", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        result = run(args)
    except (ValueError, KeyError, OSError, FloatingPointError, ModuleNotFoundError) as err:
        # bad input (files, numbers, names), a diverging run, or a missing optional package (gendiff's own messages
        # say what to pip install): one line. GENDIFF_DEBUG=1 shows the traceback instead.
        if os.environ.get("GENDIFF_DEBUG"):
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"gendiff: error: {msg}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
