"""Noise fields and warpers: RFF GP noise (``rff``) and every noise method behind one interface
(:class:`NoiseWarper`, :func:`warp_noise_video`, :func:`make_noise_warper`)."""

from .base import METHODS, NoiseWarper, fresh_offset, make_noise_warper, warp_noise_video
from .gp_warp import GPWarp, GPWarpConfig, occluded_pixels
from .grid_warp import BilinearWarp, GridWarpConfig, NearestWarp
from .gwtf import GWTFConfig, GWTFWarp, gwtf_transport
from .hiwyn import HIWYNConfig, HIWYNWarp, hiwyn_transport, pixel_corners
from .infres import InfResConfig, InfResWarp, infres_transport
from .rff import PAPER_LENGTHSCALE_PX, RFFConfig, RFFField, identity_coords, truncated_rbf_kernel
from .simple import FixedNoise, ResampleNoise, SimpleConfig

__all__ = [
    "METHODS",
    "PAPER_LENGTHSCALE_PX",
    "BilinearWarp",
    "FixedNoise",
    "GPWarp",
    "GPWarpConfig",
    "GWTFConfig",
    "GWTFWarp",
    "GridWarpConfig",
    "HIWYNConfig",
    "HIWYNWarp",
    "InfResConfig",
    "InfResWarp",
    "NearestWarp",
    "NoiseWarper",
    "RFFConfig",
    "RFFField",
    "ResampleNoise",
    "SimpleConfig",
    "fresh_offset",
    "gwtf_transport",
    "hiwyn_transport",
    "identity_coords",
    "infres_transport",
    "make_noise_warper",
    "occluded_pixels",
    "pixel_corners",
    "truncated_rbf_kernel",
    "warp_noise_video",
]
