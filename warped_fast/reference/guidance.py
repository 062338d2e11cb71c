"""Reference (pure PyTorch, unfused) of the equivariance-guidance ops (method section 4, Algorithm 1)."""

from __future__ import annotations

import torch

from ._bilinear import compute_dtype
from .warp import warp

# The normalized loss ||r|| has a unit-norm gradient r / ||r|| however small r is: float rounding alone
# (another batch size, a resumed run) would give a full guidance step where the exact residual is 0.
# Below this RMS residual per element, far under anything visible, the gradient is taken as 0 (the ops'
# default; the video sampler widens it to the rounding of the model's precision, see
# warped_fast.sampling.guidance.dead_zone).
NORM_GRAD_MIN_RMS = 1e-5


def norm_active(sumsq: torch.Tensor, numel: int, min_rms: torch.Tensor | float | None = None) -> torch.Tensor:
    """``[N]`` bool: whether ``||r_n||`` (``sumsq`` its square, ``numel`` elements per frame) is above the
    dead zone, an RMS residual of ``min_rms`` (a float or ``[N]``; None: :data:`NORM_GRAD_MIN_RMS`), i.e.
    has a gradient."""
    m = NORM_GRAD_MIN_RMS if min_rms is None else min_rms
    if isinstance(m, torch.Tensor):
        m = m.to(sumsq.device, sumsq.dtype)
    return sumsq > (m**2) * numel


def guidance_residual(
    pred: torch.Tensor, prev_pred: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Masked residual ``r = M * (warp(pred, flow) - prev_pred)``.

    Args:
        pred: ``[N, C, H, W]`` prediction D of frame j.
        prev_pred: ``[N, C, H, W]`` stored prediction of frame j-1 at the same step.
        flow: ``[N, 2, H, W]`` forward flow (j-1 -> j) on frame j-1's grid.
        mask: optional ``[N, 1, H, W]`` bool, extra pixels to keep (e.g. non-occluded);
            M is this AND the in-frame validity of the warp.
    Returns:
        ``[N, C, H, W]`` in float32 (float64 for float64 inputs) whatever the storage dtype, as the fast
        paths compute it; differentiable in ``pred``.
    """
    ct = compute_dtype(pred, prev_pred)  # the flow in the prediction's precision, as the kernels
    warped, valid = warp(pred.to(ct), flow)
    if mask is not None:
        valid = valid & mask.bool()
    # where, not a product: NaN/inf outside M (never read by the fast paths) gives 0 there, not NaN
    return torch.where(valid, warped - prev_pred.to(ct), 0.0)


def guidance_grad(
    pred: torch.Tensor,
    prev_pred: torch.Tensor,
    flow: torch.Tensor,
    mask: torch.Tensor | None = None,
    squared: bool = False,
    min_rms: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame guidance loss and its gradient with respect to ``pred``.

    loss_n = ||r_n||_2 (default, normalized as in DPS; no gradient while the residual's RMS is under
    ``min_rms``, default :data:`NORM_GRAD_MIN_RMS`) or ||r_n||_2^2 (``squared=True``).

    Returns:
        loss ``[N]`` (float32, or float64 for float64 inputs) and grad ``[N, C, H, W]`` in ``pred``'s
        dtype (the adjoint warp of ``r / ||r||``, or of ``2 r``).
    """
    with torch.enable_grad():
        p = pred.detach().requires_grad_(True)
        r = guidance_residual(p, prev_pred, flow, mask).flatten(1)
        if squared:
            loss = (r**2).sum(1)
        else:
            norm = r.norm(dim=1)
            loss = torch.where(norm_active(norm.detach() ** 2, r.shape[1], min_rms), norm, norm.detach())
        (grad,) = torch.autograd.grad(loss.sum(), p)
    return loss.detach(), grad


def euler_guided_step(
    u: torch.Tensor,
    pred: torch.Tensor,
    grad: torch.Tensor | None,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    lam: float = 1.0,
) -> torch.Tensor:
    """EDM Euler step plus guidance: ``u + (s_next - s) * (u - D) / s - lam * g``.

    Args:
        u, pred, grad: ``[N, ...]`` (``grad`` may be None: plain Euler step).
        sigma, sigma_next: ``[N]`` noise levels per batch element.
    Returns:
        ``[N, ...]`` in ``u``'s dtype, computed in float32 (float64 for float64 ``u``).
    """
    per_item = (-1,) + (1,) * (u.dim() - 1)  # broadcast [N] over the item dims
    ct = torch.float64 if u.dtype == torch.float64 else torch.float32  # as the fast paths compute
    s = sigma.to(ct).reshape(per_item)
    sn = sigma_next.to(ct).reshape(per_item)
    uc = u.to(ct)
    out = uc + (sn - s) * (uc - pred.to(ct)) / s
    if grad is not None:
        out = out - lam * grad.to(ct)
    return out.to(u.dtype)  # u's dtype whatever pred's and grad's, as the op documents
