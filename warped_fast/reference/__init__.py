"""Pure-PyTorch oracles of every op; tests, benchmarks and the fallback path import these."""

from .gp_noise import gp_noise
from .guidance import euler_guided_step, guidance_grad, guidance_residual
from .warp import compose_coords, occlusion_mask, warp, warp_flow_grad, warp_image_grad

__all__ = [
    "compose_coords",
    "euler_guided_step",
    "gp_noise",
    "guidance_grad",
    "guidance_residual",
    "occlusion_mask",
    "warp",
    "warp_flow_grad",
    "warp_image_grad",
]
