"""Pure-PyTorch oracles of every op; tests, benchmarks and the fallback path import these."""

from .gp_noise import gp_noise, gp_noise_vjp
from .guidance import euler_guided_step, guidance_grad, guidance_residual
from .warp import compose_coords, compose_coords_vjp, occlusion_mask, warp, warp_flow_grad, warp_image_grad

__all__ = [
    "compose_coords",
    "compose_coords_vjp",
    "euler_guided_step",
    "gp_noise",
    "gp_noise_vjp",
    "guidance_grad",
    "guidance_residual",
    "occlusion_mask",
    "warp",
    "warp_flow_grad",
    "warp_image_grad",
]
