"""warped_fast: Warped Diffusion (Daras et al., NeurIPS 2024) for video inverse problems, with fused kernels.

Public API: the ops (``gp_noise``, ``warp``, ``occlusion_mask``, ``compose_coords``,
``guidance_residual``, ``guidance_loss``, ``guidance_grad``, ``euler_guided_step``), the RFF noise
field (``RFFConfig``, ``RFFField``, ``identity_coords``), ``backend_info()`` / ``use_backend()`` and
``set_value_checks()``. The subpackages
(``wf.io``, ``wf.flow``, ``wf.noise``, ``wf.metrics``, ``wf.models``, ``wf.sampling``, ``wf.pipelines``,
``wf.train``) load on first access.
"""

import importlib

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

_SUBPACKAGES = (
    "flow",
    "io",
    "metrics",
    "models",
    "noise",
    "ops",
    "pipelines",
    "reference",
    "sampling",
    "train",
)


def __getattr__(name: str):
    # Subpackages on first access (``wf.io.read_video``), so ``import warped_fast`` stays light.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))


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
