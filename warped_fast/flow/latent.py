"""Pixel flow -> latent-grid flow (method section 3): sample at latent pixel centres, divide by the factor.

Latent pixel i covers pixels ``[i f, (i + 1) f)``, so its centre is at pixel coordinate
``(i + 1/2) f - 1/2``. The flow is sampled there bilinearly (clamped at the border) and divided by f.
"""

from __future__ import annotations

import torch

from ..ops._checks import check_finite
from ..reference._bilinear import pixel_grid, sample_extrapolate

__all__ = ["flow_to_latent"]


def flow_to_latent(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """Map a pixel-resolution flow to the latent grid of an autoencoder that downsamples by ``factor``.

    Args:
        flow: ``[T, 2, H, W]`` (dx, dy) in pixels (float); H and W divisible by ``factor``.
        factor: the downsampling factor (8 for SD/SDXL VAEs).
    Returns:
        ``[T, 2, H / factor, W / factor]`` in latent pixels, the input's dtype and device.
    """
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"factor: expected an int >= 1, got {factor!r}")
    if not isinstance(flow, torch.Tensor):
        raise TypeError(f"flow: expected a torch.Tensor, got {type(flow).__name__}")
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow: expected shape [T, 2, H, W], got {list(flow.shape)}")
    if not flow.is_floating_point():
        raise TypeError(f"flow: expected a floating-point dtype, got {flow.dtype}")
    check_finite("flow", flow)
    t, _, h, w = flow.shape
    if h % factor or w % factor:
        raise ValueError(f"flow: H and W must be divisible by factor {factor}, got {h}x{w}")
    if factor == 1:
        return flow.clone()
    hl, wl = h // factor, w // factor
    # Positions and weights in float32 at least: in half precision the centres and the border clamp
    # round (a half-pixel off, or a tap past the row, on wide frames).
    work = torch.promote_types(flow.dtype, torch.float32)
    xs, ys = pixel_grid(hl, wl, flow.device, work)
    xs, ys = (xs + 0.5) * factor - 0.5, (ys + 0.5) * factor - 0.5
    # Centres lie inside [0, W-1] x [0, H-1] for factor >= 1, so extrapolation never triggers.
    out = sample_extrapolate(flow.to(work), xs.expand(t, hl, wl), ys.expand(t, hl, wl))
    return (out / factor).to(flow.dtype)
