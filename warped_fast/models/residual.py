"""Residual parametrization of a conditional denoiser: the network models ``x - base(cond)``, where the
base is a cheap estimate read off the conditioning (SRDiff / ResShift style for super-resolution):

- super-resolution: the upsampled low-resolution frame itself;
- inpainting: the known pixels, with the hole filled by :func:`push_pull_fill`.

Diffusing the residual is an ordinary diffusion model of ``r = x - base`` under the same noise, so the
sampler, the noise warping and the guidance are unchanged: ``D(u) = base + D_r(u - base)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
