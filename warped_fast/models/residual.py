"""Residual parametrization of a conditional denoiser: the network models ``x - base(cond)``, where the
base is a cheap estimate read off the conditioning (SRDiff / ResShift style for super-resolution):

- super-resolution: the upsampled low-resolution frame itself;
- inpainting: the known pixels, with the hole filled by :func:`push_pull_fill`.

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

CONTRAST_RING = 2  # px: known pixels this close to the hole measure the contrast of an inpainting crop
CONTRAST_REF = 0.2  # per-channel std (in [-1, 1]) of a typical photo region: the gain there is ``k``
CONTRAST_FLOOR = 0.02  # flatter regions count as this flat (about the noise level of 8-bit photos)
COND_RANGE = 4.0  # normalized conditioning is squashed softly into (-COND_RANGE, COND_RANGE)


def push_pull_fill(image: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Fill the masked pixels by push-pull (pyramid normalized averaging) of the known ones.

    Each coarser level averages the known pixels below it; going back up, a pixel keeps its own
    level's average where that level saw known pixels and takes the upsampled coarser estimate
    elsewhere. Smooth, exact on known pixels, any size, all torch ops (runs on the input's device).

    Args:
        image: ``[B, C, H, W]``.
        mask: ``[B, 1, H, W]``, 1 where the value is unknown (to be filled), 0 where known.
    Returns:
        ``[B, C, H, W]``: ``image`` on known pixels, the fill on masked ones. A fully masked frame
        is filled with 0.
    """
    if image.dim() != 4 or mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(
            f"image, mask: expected [B, C, H, W] and [B, 1, H, W], got {list(image.shape)}, {list(mask.shape)}"
        )
    if mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"mask: expected [{image.shape[0]}, 1, {image.shape[2]}, {image.shape[3]}], got {list(mask.shape)}"
        )
    w = (1 - mask).to(image.dtype)
    vals, weights = [image * w], [w]
    while max(vals[-1].shape[-2:]) > 1:
        vals.append(F.avg_pool2d(vals[-1], 2, ceil_mode=True))
        weights.append(F.avg_pool2d(weights[-1], 2, ceil_mode=True))
    fill = vals[-1] / weights[-1].clamp_min(eps)
    for v, wt in zip(reversed(vals[:-1]), reversed(weights[:-1]), strict=True):
        up = F.interpolate(fill, size=v.shape[-2:], mode="bilinear", align_corners=False)
        own = v / wt.clamp_min(eps)
        alpha = (wt * 4).clamp(max=1)  # trust this level where enough of it is known
        fill = alpha * own + (1 - alpha) * up
    return image * w + fill * (1 - w)


def residual_base(kind: str, cond: torch.Tensor, latent_channels: int) -> torch.Tensor:
    """The base estimate ``[B, C, H, W]`` of a conditioning tensor.

    Args:
        kind: the layout kind, "inpaint" (``cond = [mask | masked latent]``) or "sr" (``cond`` = the
            upsampled low-resolution latent).
        cond: ``[B, Cc, H, W]``.
        latent_channels: C.
    """
    if kind == "sr":
        return cond[:, :latent_channels]
    if kind == "inpaint":
        mask, masked = cond[:, :1], cond[:, 1 : 1 + latent_channels]
        return push_pull_fill(masked, mask)
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
    kind: str, cond: torch.Tensor, latent_channels: int, scale: float, normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a residual model's network sees: ``r = gain * (x - base)`` given ``cond``.

    Args:
        kind, cond, latent_channels: as in :func:`residual_base`.
        scale: ``k``, the gain (about 1 / the residual's std at ``CONTRAST_REF``).
        normalize: contrast normalization (module docstring): ``gain = k * CONTRAST_REF / c`` and the
            conditioning's image expressed as ``(image - mean) / c``, softly limited to ``COND_RANGE``.
    Returns:
        ``base`` ``[B, C, H, W]``, ``gain`` ``[B]`` and the network's conditioning ``[B, Cc, H, W]``.
    """
    base = residual_base(kind, cond, latent_channels)
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
