"""Deterministic EDM Euler ODE sampling of one image (method section 4).

One step: ``u_next = u + (sigma_next - sigma) * (u - D(u, sigma)) / sigma``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..ops import euler_guided_step
from .schedules import SigmaSchedule, work_dtype

# Denoiser: (u [B, C, H, W], sigma [B], cond [B, Cc, H, W] | None) -> D [B, C, H, W]
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def sample_image(
    denoiser: Denoiser,
    noise: torch.Tensor,
    schedule: SigmaSchedule,
    cond: torch.Tensor | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Plain Euler ODE sampling from ``u = sigma_max * noise``.

    Args:
        denoiser: x0-predictor.
        noise: ``[B, C, H, W]`` unit-variance noise.
        schedule: sigmas (descending, last 0).
        cond: optional ``[B, Cc, H, W]`` concatenated conditioning.
        callback: called as ``callback(step, u, D)`` after each step.
    Returns:
        ``[B, C, H, W]`` the sample (the last prediction when the schedule ends at 0).
    """
    sig = schedule.sigmas
    u = noise * float(sig[0])
    b = u.shape[0]
    for i in range(schedule.num_steps):
        s = torch.full((b,), float(sig[i]), device=u.device, dtype=work_dtype(u.dtype))
        with torch.no_grad():
            d = denoiser(u, s, cond)
        u = euler_guided_step(u, d, s, float(sig[i + 1]))
        if callback is not None:
            callback(i, u, d)
    return u
