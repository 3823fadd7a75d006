"""diffusers pipelines built on gendiff's GuidedSampler (one file per pipeline)."""

from gendiff.pipelines.ads import ActiveDiffusionSubsamplingPipeline, ADSOutput
from gendiff.pipelines.pgd import PGDOutput, PolicyGuidedTrajectoryPipeline

__all__ = ["ADSOutput", "ActiveDiffusionSubsamplingPipeline", "PGDOutput", "PolicyGuidedTrajectoryPipeline"]
