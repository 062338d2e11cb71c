"""warped_fast: Warped Diffusion (Daras et al., NeurIPS 2024) with fused kernels."""

__version__ = "0.1.0"
