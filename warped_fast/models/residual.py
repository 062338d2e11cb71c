"""Residual parametrization of a conditional denoiser: the network models ``x - base(cond)``, where the
base is a cheap estimate read off the conditioning (SRDiff / ResShift style for super-resolution):

- super-resolution: the upsampled low-resolution frame itself;
- inpainting: the known pixels, with the hole filled by a classical fill (``fill``: push-pull averaging
  or the harmonic interpolant, :mod:`warped_fast.models.hole_fill`).

Diffusing the residual is an ordinary diffusion model of ``r = x - base`` under the same noise, so the
sampler, the noise warping and the guidance are unchanged: ``D(u) = base + D_r(u - base)``.

Contrast normalization (optional, :func:`residual_frame`): natural images are close to scale invariant, so
the residual of a flat region is as predictable, relative to its contrast, as that of a busy one. The
residual is divided by the contrast ``c`` measured from the conditioning (inpainting: the per-channel std
of the known pixels within ``CONTRAST_RING`` px of the hole, which predicts the hole's own contrast well;
SR: that of the upsampled frame) and the network sees the conditioning in the same units. The denoising
loss then weighs every crop's *relative* error alike, which is what a per-crop PSNR measures, and flat
regions are no longer filled with the absolute error a busy region would tolerate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .hole_fill import HOLE_FILLS, check_hole_fill

CONTRAST_RING = 2  # px: known pixels this close to the hole measure the contrast of an inpainting crop
CONTRAST_REF = 0.2  # per-channel std (in [-1, 1]) of a typical photo region: the gain there is ``k``
CONTRAST_FLOOR = 0.02  # flatter regions count as this flat (about the noise level of 8-bit photos)
COND_RANGE = 4.0  # normalized conditioning is squashed softly into (-COND_RANGE, COND_RANGE)


def residual_base(
    kind: str, cond: torch.Tensor, latent_channels: int, fill: str = "push_pull"
) -> torch.Tensor:
    """The base estimate ``[B, C, H, W]`` of a conditioning tensor.

    Args:
        kind: the layout kind, "inpaint" (``cond = [mask | masked latent]``) or "sr" (``cond`` = the
            upsampled low-resolution latent).
        cond: ``[B, Cc, H, W]``.
        latent_channels: C.
        fill: the hole fill of an inpainting base, a key of ``HOLE_FILLS`` ("push_pull", "harmonic").
    """
    check_hole_fill("fill", fill)
    if kind == "sr":
        return cond[:, :latent_channels]
    if kind == "inpaint":
        mask, masked = cond[:, :1], cond[:, 1 : 1 + latent_channels]
        return HOLE_FILLS[fill](masked, mask)
    raise ValueError(f"residual: needs an 'inpaint' or 'sr' conditioning layout, got {kind!r}")


def _masked_stats(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean ``[B, C, 1, 1]``, channel-averaged std ``[B]`` and weight count ``[B]`` of ``x``
    ``[B, C, H, W]`` over the pixels where ``w`` ``[B, 1, H, W]`` is 1."""
    n = w.sum((2, 3), keepdim=True)
    mean = (x * w).sum((2, 3), keepdim=True) / n.clamp_min(1)
    var = (((x - mean) * w) ** 2).sum((2, 3), keepdim=True) / n.clamp_min(1)
    return mean, var.mean(1).flatten().sqrt(), n.flatten()


def contrast(kind: str, cond: torch.Tensor, latent_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrast ``c`` ``[B]`` (at least ``CONTRAST_FLOOR``) and reference mean ``[B, C, 1, 1]`` of a
    conditioning tensor (see the module docstring). An inpainting crop with no hole uses all its known
    pixels; one with no known pixel gets ``CONTRAST_REF`` and mean 0."""
    if kind == "sr":
        img = cond[:, :latent_channels]
        mean, std, _ = _masked_stats(img, torch.ones_like(img[:, :1]))
        return std.clamp_min(CONTRAST_FLOOR), mean
    if kind != "inpaint":
        raise ValueError(f"contrast: needs an 'inpaint' or 'sr' conditioning layout, got {kind!r}")
    mask, masked = cond[:, :1], cond[:, 1 : 1 + latent_channels]
    k = 2 * CONTRAST_RING + 1
    ring = (F.max_pool2d(mask, k, 1, CONTRAST_RING) - mask).clamp(0, 1)
    mean, std, n = _masked_stats(masked, ring)
    mean_all, std_all, n_all = _masked_stats(masked, 1 - mask)
    no_ring = (n == 0).view(-1, 1, 1, 1)
    mean, std = torch.where(no_ring, mean_all, mean), torch.where(n == 0, std_all, std)
    std = torch.where(n_all == 0, torch.full_like(std, CONTRAST_REF), std)
    return std.clamp_min(CONTRAST_FLOOR), mean


def residual_frame(
    kind: str,
    cond: torch.Tensor,
    latent_channels: int,
    scale: float,
    normalize: bool = False,
    fill: str = "push_pull",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a residual model's network sees: ``r = gain * (x - base)`` given ``cond``.

    Args:
        kind, cond, latent_channels, fill: as in :func:`residual_base`.
        scale: ``k``, the gain (about 1 / the residual's std at ``CONTRAST_REF``).
        normalize: contrast normalization (module docstring): ``gain = k * CONTRAST_REF / c`` and the
            conditioning's image expressed as ``(image - mean) / c``, softly limited to ``COND_RANGE``.
    Returns:
        ``base`` ``[B, C, H, W]``, ``gain`` ``[B]`` and the network's conditioning ``[B, Cc, H, W]``.
    """
    base = residual_base(kind, cond, latent_channels, fill)
    if not normalize:
        return base, torch.full((cond.shape[0],), float(scale), dtype=cond.dtype, device=cond.device), cond
    c, mean = contrast(kind, cond, latent_channels)
    cv = c.view(-1, 1, 1, 1)

    def squash(v: torch.Tensor) -> torch.Tensor:
        return COND_RANGE * torch.tanh((v - mean) / cv / COND_RANGE)

    if kind == "sr":
        net_cond = torch.cat([squash(cond[:, :latent_channels]), cond[:, latent_channels:]], 1)
    else:
        mask = cond[:, :1]
        img = squash(cond[:, 1 : 1 + latent_channels]) * (1 - mask)
        net_cond = torch.cat([mask, img, cond[:, 1 + latent_channels :]], 1)
    return base, scale * CONTRAST_REF / c, net_cond
