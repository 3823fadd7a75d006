"""diffusers pipelines built on gendiff's GuidedSampler (one file per pipeline)."""

from gendiff.pipelines.ads import ActiveDiffusionSubsamplingPipeline, ADSOutput

__all__ = ["ADSOutput", "ActiveDiffusionSubsamplingPipeline"]
