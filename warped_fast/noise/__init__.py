"""Noise fields and warpers."""

from .rff import PAPER_LENGTHSCALE_PX, RFFConfig, RFFField, identity_coords, truncated_rbf_kernel

__all__ = ["PAPER_LENGTHSCALE_PX", "RFFConfig", "RFFField", "identity_coords", "truncated_rbf_kernel"]
