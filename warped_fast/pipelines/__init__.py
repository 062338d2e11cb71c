"""User-facing video pipelines."""

from .warped_diffusion import PipelineOutput, WarpedDiffusionPipeline

__all__ = ["PipelineOutput", "WarpedDiffusionPipeline"]
