"""Public tensor ops (custom ops with fake kernels and autograd), dispatched per backend."""

from ._checks import set_value_checks, value_checks
from ._dispatch import BACKENDS, OP_BACKENDS, backend_info, select, use_backend
from .gp_noise import GP_CUDA_KERNELS, gp_noise, gp_noise_cuda_kernel
from .guidance import euler_guided_step, guidance_grad, guidance_loss, guidance_residual
from .warp import compose_coords, occlusion_mask, warp

__all__ = [
    "BACKENDS",
    "GP_CUDA_KERNELS",
    "OP_BACKENDS",
    "backend_info",
    "compose_coords",
    "euler_guided_step",
    "gp_noise",
    "gp_noise_cuda_kernel",
    "guidance_grad",
    "guidance_loss",
    "guidance_residual",
    "occlusion_mask",
    "warp",
    "select",
    "set_value_checks",
    "use_backend",
    "value_checks",
]
