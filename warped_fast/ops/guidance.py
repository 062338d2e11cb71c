"""Equivariance self-guidance ops (method section 4, Algorithm 1): the fused masked residual with
its per-frame squared norm, the guidance loss and gradient, and the fused Euler + guidance update.
"""

from __future__ import annotations

import torch

from .. import reference
from ..reference.guidance import norm_active
from . import _cpu, _eager
from ._checks import as_sigma, check_bool, check_finite, check_nonempty, check_real, check_tensor, fake_like
from ._dispatch import register, register_autograd, select

register("guidance_residual", ("triton", "cpu", "reference"))
register("euler_guided_step", ("triton", "cpu", "reference"))


def _triton():
    from ..triton import guidance as tg

    return tg


# --- residual -------------------------------------------------------------------------------------


@_eager.custom_op("guidance_residual")
def _guidance_residual(
    pred: torch.Tensor, prev_pred: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    backend = select("guidance_residual", pred.device.type, pred.dtype)
    if backend == "reference":
        r = reference.guidance_residual(pred, prev_pred, flow, mask)  # float32 (float64): sumsq unrounded
        return r.to(pred.dtype), r.to(_cpu.compute_dtype(pred.dtype)).pow(2).flatten(1).sum(1)
    if backend == "triton":
        return _triton().guidance_residual(pred, prev_pred, flow, mask)
    n, c, h, w = pred.shape
    cd = _cpu.compute_dtype(pred.dtype)
    p, q, fl = (t.to(cd).contiguous() for t in (pred, prev_pred, flow))
    m = None if mask is None else mask.to(torch.bool).contiguous()
    r = torch.empty(n, c, h, w, dtype=cd)
    rows = torch.empty(n, h, dtype=torch.float64)
    _cpu.lib().guidance_residual_cpu(
        _cpu.dtype_code(p),
        _cpu.ptr(p),
        _cpu.ptr(q),
        _cpu.ptr(fl),
        _cpu.ptr(m),
        _cpu.ptr(r),
        _cpu.ptr(rows),
        n,
        c,
        h,
        w,
        _cpu.threads(n * max(c, 1) * h * w),
    )
    return r.to(pred.dtype), rows.sum(1).to(cd)


@_guidance_residual.register_fake
def _(pred, prev_pred, flow, mask):
    return fake_like(pred), pred.new_empty((pred.shape[0],), dtype=_cpu.compute_dtype(pred.dtype))


def _residual_setup(ctx, inputs, output):
    _, _, flow, mask = inputs
    r, _ = output
    ctx.save_for_backward(flow, mask, r)


def _residual_backward(ctx, grad_r, grad_sumsq):
    # r = M (warp(pred) - prev), sumsq = ||r||^2: d/dpred = splat(M grad_r + 2 r grad_sumsq). Formed in
    # float32 (float64): in float16, d||r||/dsumsq = 1 / (2 ||r||) overflows for ||r|| < 8e-6, and 0 * inf
    # would put NaN in every gradient.
    flow, mask, r = ctx.saved_tensors
    ct = _cpu.compute_dtype(r.dtype)
    g = torch.zeros_like(r, dtype=ct)
    if grad_r is not None:
        empty = r.new_empty((flow.shape[0], 0, *flow.shape[2:]))  # r's dtype: the backend of the forward
        valid = torch.ops.warped_fast.warp(empty, flow, None)[1]
        if mask is not None:
            valid = valid & mask.bool()
        g = g + grad_r.to(ct) * valid.to(ct)
    if grad_sumsq is not None:
        g = g + 2 * r.to(ct) * grad_sumsq.to(ct).view(-1, 1, 1, 1)
    gp = None
    if ctx.needs_input_grad[0]:
        gp = torch.ops.warped_fast.warp_image_grad(g.contiguous(), flow, None).to(r.dtype)
    return gp, (-g.to(r.dtype) if ctx.needs_input_grad[1] else None), None, None


register_autograd(_guidance_residual, _residual_backward, _residual_setup)


def _check_guidance(pred, prev_pred, flow, mask) -> None:
    check_tensor("pred", pred, (None, None, None, None))
    check_nonempty("pred", pred, (2, 3))
    check_tensor("prev_pred", prev_pred, tuple(pred.shape), dtypes=(pred.dtype,), device=pred.device)
    check_tensor("flow", flow, (pred.shape[0], 2, *pred.shape[2:]), device=pred.device)
    check_finite("flow", flow)
    if mask is not None:
        check_tensor("mask", mask, (pred.shape[0], 1, *pred.shape[2:]), dtypes=None, device=pred.device)


def guidance_residual(
    pred: torch.Tensor, prev_pred: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused masked residual ``r = M * (warp(pred, flow) - prev_pred)`` and ``||r_n||^2``.

    Args:
        pred: ``[N, C, H, W]`` prediction D of frame j (one frame per batch element).
        prev_pred: ``[N, C, H, W]`` stored prediction of frame j-1 at the same step.
        flow: ``[N, 2, H, W]`` forward flow (j-1 -> j) on frame j-1's grid.
        mask: optional ``[N, 1, H, W]`` (bool or 0/1) extra pixels to keep, e.g. non-occluded;
            M = in-frame validity AND mask.
    Returns:
        r ``[N, C, H, W]`` and sumsq ``[N]`` (float32, float64 for float64 input); differentiable
        in ``pred`` and ``prev_pred``.
    """
    _check_guidance(pred, prev_pred, flow, mask)
    m = None if mask is None else mask.bool().contiguous()
    return _eager.call(
        "guidance_residual",
        pred.contiguous(),
        prev_pred.contiguous(),
        flow.contiguous(),
        m,
    )


def guidance_loss(
    pred: torch.Tensor,
    prev_pred: torch.Tensor,
    flow: torch.Tensor,
    mask: torch.Tensor | None = None,
    squared: bool = False,
    min_rms: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Per-frame guidance loss ``||r_n||`` (default, as in DPS) or ``||r_n||^2``; differentiable.

    Args:
        pred, prev_pred, flow, mask: as for :func:`guidance_residual` (``flow``: the forward flow
            j-1 -> j on frame j-1's grid).
        squared: the squared norm ``||r_n||^2`` instead of the norm.
        min_rms: the norm's dead zone, an RMS residual per element (a float or ``[N]``) under which it
            has no gradient (float rounding, not a residual); None:
            :data:`warped_fast.reference.guidance.NORM_GRAD_MIN_RMS`.
    Returns:
        ``[N]``.
    """
    check_bool("squared", squared)
    _, sumsq = guidance_residual(pred, prev_pred, flow, mask)
    if squared:
        return sumsq
    norm = sumsq.clamp_min(1e-30).sqrt()
    active = norm_active(sumsq.detach(), pred[0].numel() if len(pred) else 1, min_rms)
    return torch.where(active, norm, norm.detach())


def guidance_grad(
    pred: torch.Tensor,
    prev_pred: torch.Tensor,
    flow: torch.Tensor,
    mask: torch.Tensor | None = None,
    squared: bool = False,
    min_rms: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guidance loss and its gradient with respect to ``pred``, without autograd (two fused kernels).

    The gradient is the adjoint warp (bilinear splat) of ``r / ||r||`` (0 in the dead zone of
    :func:`guidance_loss`), or of ``2 r`` when squared;
    it is what the Jacobian-free mode uses as ``g`` (method section 5).

    Args:
        pred, prev_pred, flow, mask: as for :func:`guidance_residual` (``flow``: the forward flow
            j-1 -> j on frame j-1's grid).
        squared: the loss ``||r_n||^2`` (gradient of it) instead of the norm.
        min_rms: the norm's dead zone, as for :func:`guidance_loss`.
    Returns:
        loss ``[N]`` and grad ``[N, C, H, W]``.
    """
    check_bool("squared", squared)
    with torch.no_grad():
        r, sumsq = guidance_residual(pred, prev_pred, flow, mask)
        if squared:
            loss, scale = sumsq, torch.full_like(sumsq, 2.0)
        else:
            loss = sumsq.sqrt()
            active = norm_active(sumsq, pred[0].numel() if len(pred) else 1, min_rms)  # empty batch: any
            scale = torch.where(active, 1.0 / loss.clamp_min(1e-30), torch.zeros_like(loss))
        grad = _eager.call("warp_image_grad", r, flow.contiguous(), scale)
    return loss, grad


# --- Euler + guidance update ----------------------------------------------------------------------


@_eager.custom_op("euler_guided_step")
def _euler_guided_step(
    u: torch.Tensor,
    pred: torch.Tensor,
    grad: torch.Tensor | None,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    backend = select("euler_guided_step", u.device.type, u.dtype)
    if backend == "reference":
        return reference.euler_guided_step(u, pred, grad, sigma, sigma_next, lam).contiguous()
    if backend == "triton":
        return _triton().euler_guided_step(u, pred, grad, sigma, sigma_next, lam)
    cd = _cpu.compute_dtype(u.dtype)
    uu, pp = u.to(cd).contiguous(), pred.to(cd).contiguous()
    gg = None if grad is None else grad.to(cd).contiguous()
    s, sn = sigma.to(cd).contiguous(), sigma_next.to(cd).contiguous()
    out = torch.empty_like(uu)
    n = u.shape[0]
    _cpu.lib().euler_guided_step_cpu(
        _cpu.dtype_code(uu),
        _cpu.ptr(uu),
        _cpu.ptr(pp),
        _cpu.ptr(gg),
        _cpu.ptr(s),
        _cpu.ptr(sn),
        float(lam),
        _cpu.ptr(out),
        n,
        u.numel() // max(n, 1),
        _cpu.threads(u.numel()),
    )
    return out.to(u.dtype)


@_euler_guided_step.register_fake
def _(u, pred, grad, sigma, sigma_next, lam):
    return fake_like(u)


def _euler_setup(ctx, inputs, output):
    u, pred, grad, sigma, sigma_next, lam = inputs
    # u and D only where a noise level is differentiated (d out / d s = -(u - D) s_next / s^2)
    ctx.sigma_grad = sigma.requires_grad or sigma_next.requires_grad
    ctx.save_for_backward(sigma, sigma_next, *((u, pred) if ctx.sigma_grad else ()))
    ctx.lam = lam
    ctx.has_grad = grad is not None


def _euler_backward(ctx, gout):
    # out = (1 + k) u - k D - lam g with k = (s_next - s) / s: linear in u, D and g;
    # d out / d s_next = (u - D) / s, d out / d s = -(u - D) s_next / s^2, summed over each item.
    sigma, sigma_next, *ud = ctx.saved_tensors
    k = ((sigma_next - sigma) / sigma).to(gout.dtype).view(-1, *([1] * (gout.dim() - 1)))
    gg = -ctx.lam * gout if ctx.has_grad else None
    gs = gsn = None
    if ctx.sigma_grad:
        u, pred = ud
        ct = sigma.dtype  # float32 (float64 for float64 samples)
        per = ((u.to(ct) - pred.to(ct)) * gout.to(ct)).reshape(u.shape[0], -1).sum(1)  # [N]
        gs = -per * sigma_next / sigma.square() if ctx.needs_input_grad[3] else None
        gsn = per / sigma if ctx.needs_input_grad[4] else None
    return gout * (1 + k), -k * gout, gg, gs, gsn, None


_euler_guided_step.register_autograd(_euler_backward, setup_context=_euler_setup)


def euler_guided_step(
    u: torch.Tensor,
    pred: torch.Tensor,
    sigma,
    sigma_next,
    grad: torch.Tensor | None = None,
    lam: float = 1.0,
) -> torch.Tensor:
    """Fused EDM Euler step with guidance: ``u + (s_next - s) * (u - D) / s - lam * g``.

    Args:
        u: ``[N, ...]`` current noisy sample (one item per frame).
        pred: ``[N, ...]`` denoised prediction D (detached).
        sigma, sigma_next: noise levels, a float or ``[N]`` (items may be at different steps).
        grad: optional ``[N, ...]`` guidance gradient g.
        lam: guidance weight lambda.
    Returns:
        ``[N, ...]`` in ``u``'s dtype.
    """
    check_tensor("u", u)
    if u.dim() < 1 or u.shape[0] == 0:
        raise ValueError(f"u: expected a non-empty batch [N, ...], got shape {list(u.shape)}")
    check_tensor("pred", pred, tuple(u.shape), device=u.device)
    if grad is not None:
        check_tensor("grad", grad, tuple(u.shape), device=u.device)
    check_real("lam", lam)
    n = u.shape[0]
    sd = torch.float64 if u.dtype == torch.float64 else torch.float32
    s = as_sigma("sigma", sigma, n, u.device, sd)
    sn = as_sigma("sigma_next", sigma_next, n, u.device, sd, allow_zero=True)
    g = None if grad is None else grad.contiguous()
    return _eager.call("euler_guided_step", u.contiguous(), pred.contiguous(), g, s, sn, float(lam))
