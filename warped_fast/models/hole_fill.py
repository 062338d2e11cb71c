"""Classical hole fills: the base estimate of residual inpainting models and baselines of the evaluation.

- :func:`push_pull_fill`: pyramid normalized averaging, one pass, smooth but biased towards the mean of
  the hole's wide surroundings;
- :func:`harmonic_fill`: the discrete Laplace equation in the hole with the known pixels as boundary
  values (reflecting at the frame border), solved by preconditioned conjugate gradients started from the
  push-pull fill. It reproduces linear ramps exactly and continues each boundary value into the hole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(image: torch.Tensor, mask: torch.Tensor) -> None:
    if image.dim() != 4 or mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(
            f"image, mask: expected [B, C, H, W] and [B, 1, H, W], got {list(image.shape)}, {list(mask.shape)}"
        )
    if mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"mask: expected [{image.shape[0]}, 1, {image.shape[2]}, {image.shape[3]}], got {list(mask.shape)}"
        )


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
    _check(image, mask)
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


def _neg_laplacian(v: torch.Tensor) -> torch.Tensor:
    """``-(5-point Laplacian)`` of ``v`` ``[B, C, H, W]``, reflecting boundary (a border pixel has fewer
    neighbours): the graph Laplacian of the pixel grid, symmetric positive semi-definite."""
    p = F.pad(v, (1, 1, 1, 1), mode="replicate")
    return 4 * v - (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:])


@torch.no_grad()
def harmonic_fill(
    image: torch.Tensor, mask: torch.Tensor, tol: float = 1e-4, max_iters: int = 2000, check_every: int = 8
) -> torch.Tensor:
    """Fill the masked pixels with the harmonic interpolant of the known ones (Laplace inpainting).

    Solves ``L u = 0`` on the hole pixels with ``u`` = ``image`` on the known ones (``L``: the 5-point
    Laplacian of the pixel grid, reflecting at the frame border) by Jacobi-preconditioned conjugate
    gradients from the push-pull fill, per image and channel, until the residual is ``tol`` times the
    right-hand side's norm. Each image and channel stops on its own, so its fill does not depend on what
    else is in the batch. Computed without autograd (a fill of the conditioning needs no gradient).

    Args:
        image: ``[B, C, H, W]``.
        mask: ``[B, 1, H, W]``, 1 where the value is unknown (to be filled), 0 where known.
        tol: relative residual at which to stop; ``max_iters`` caps the iterations.
        check_every: iterations between convergence checks (each is a device synchronization).
    Returns:
        ``[B, C, H, W]``: ``image`` on known pixels, the fill on masked ones. A fully masked frame is
        filled with 0 (push-pull's convention).
    """
    _check(image, mask)
    if not tol > 0 or max_iters < 0 or check_every < 1:
        raise ValueError(
            f"tol, max_iters, check_every: expected > 0, >= 0, >= 1, got {tol}, {max_iters}, {check_every}"
        )
    dtype = image.dtype
    image = image.float() if dtype in (torch.float16, torch.bfloat16) else image  # CG needs the precision
    m = (mask > 0.5).to(image.dtype)
    known = image * (1 - m)
    start = push_pull_fill(known, m)
    if not bool(m.any()):
        return start.to(dtype)

    # Unknowns h on the hole (0 elsewhere): L(known + h) = 0 on the hole  <=>  A h = b.
    def apply(v: torch.Tensor) -> torch.Tensor:
        return _neg_laplacian(v) * m

    h, b = start * m, -apply(known)
    dinv = 1 / _degree(image.shape[-2:], image.device, image.dtype)  # Jacobi preconditioner
    sum_hw = (2, 3)
    r = b - apply(h)
    z = r * dinv
    p = z
    rz = (r * z).sum(sum_hw, keepdim=True)
    bb, rr = (b * b).sum(sum_hw, keepdim=True), (r * r).sum(sum_hw, keepdim=True)
    stop = (tol**2) * torch.where(bb > 0, bb, rr)  # b = 0 (zero boundary): relative to the start's residual
    active = torch.ones_like(rz)  # [B, C, 1, 1]: 0 once that channel has converged (it then stays put)
    for i in range(max_iters):
        ap = apply(p)
        alpha = active * rz / (p * ap).sum(sum_hw, keepdim=True).clamp_min(1e-30)
        h = h + alpha * p
        r = r - alpha * ap
        if (i + 1) % check_every == 0:
            active = active * ((r * r).sum(sum_hw, keepdim=True) > stop)
            if not bool(active.any()):
                break
        z = r * dinv
        rz_new = (r * z).sum(sum_hw, keepdim=True)
        p = z + (rz_new / rz.clamp_min(1e-30)) * p
        rz = rz_new
    return (known + h * m).to(dtype)


def _degree(hw: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Number of grid neighbours ``[1, 1, H, W]`` of each pixel (the diagonal of the Laplacian)."""
    h, w = hw
    deg = torch.full((1, 1, h, w), 4.0, device=device, dtype=dtype)
    deg[..., 0, :] -= 1
    deg[..., -1, :] -= 1
    deg[..., :, 0] -= 1
    deg[..., :, -1] -= 1
    return deg.clamp_min(1)


HOLE_FILLS = {"push_pull": push_pull_fill, "harmonic": harmonic_fill}


def check_hole_fill(name: str, fill: str) -> None:
    """Raise a ValueError naming ``name`` unless ``fill`` is a key of ``HOLE_FILLS``."""
    if fill not in HOLE_FILLS:
        raise ValueError(f"{name}: expected one of {sorted(HOLE_FILLS)}, got {fill!r}")
