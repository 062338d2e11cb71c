"""warped_fast: Warped Diffusion (Daras et al., NeurIPS 2024) for video inverse problems, with fused kernels.

Public API: the ops (``gp_noise``, ``warp``, ``occlusion_mask``, ``compose_coords``,
``guidance_residual``, ``guidance_loss``, ``guidance_grad``, ``euler_guided_step``), the RFF noise
field (``RFFConfig``, ``RFFField``), and ``backend_info()`` / ``use_backend()``.
"""

from .noise import RFFConfig, RFFField, identity_coords
from .ops import (
    backend_info,
    compose_coords,
    euler_guided_step,
    gp_noise,
    guidance_grad,
    guidance_loss,
    guidance_residual,
    occlusion_mask,
    set_value_checks,
    use_backend,
    warp,
)

__version__ = "0.1.0"

__all__ = [
    "RFFConfig",
    "RFFField",
    "__version__",
    "backend_info",
    "compose_coords",
    "euler_guided_step",
    "gp_noise",
    "guidance_grad",
    "guidance_loss",
    "guidance_residual",
    "identity_coords",
    "occlusion_mask",
    "set_value_checks",
    "use_backend",
    "warp",
]
