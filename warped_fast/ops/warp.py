"""Warp family (method section 3): bilinear backward warp with validity and optional
forward-backward occlusion check, its adjoint (splat) and flow gradient, and coordinate composition.

Conventions: pixel (x, y) = (column, row); flows ``[N, 2, H, W]`` hold (dx, dy) in pixels.
"""

from __future__ import annotations

import torch

from .. import reference
from . import _cpu, _eager
from ._checks import as_dtype, check_finite, check_nonempty, check_tensor, fake_like
from ._dispatch import register, register_autograd, select

register("warp", ("triton", "cpu", "reference"))
register("warp_image_grad", ("triton", "cpu", "reference"))
register("warp_flow_grad", ("triton", "cpu", "reference"))
register("compose_coords", ("triton", "cpu", "reference"))


def _triton():
    from ..triton import warp as tw

    return tw


# --- warp -----------------------------------------------------------------------------------------


@_eager.custom_op("warp")
def _warp(
    image: torch.Tensor, flow: torch.Tensor, back_flow: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    backend = select("warp", image.device.type, image.dtype)
    if backend == "reference":
        out, valid = reference.warp(image, flow, back_flow)
        return out, valid
    if backend == "triton":
        return _triton().warp_forward(image, flow, back_flow)
    n, c, h, w = image.shape
    cd = _cpu.compute_dtype(image.dtype)
    img, fl = image.to(cd).contiguous(), flow.to(cd).contiguous()
    bf = None if back_flow is None else back_flow.to(cd).contiguous()
    out = torch.empty(n, c, h, w, dtype=cd)
    valid = torch.empty(n, 1, h, w, dtype=torch.bool)
    _cpu.lib().warp_forward_cpu(
        _cpu.dtype_code(img),
        _cpu.ptr(img),
        _cpu.ptr(fl),
        _cpu.ptr(bf),
        _cpu.ptr(out),
        _cpu.ptr(valid),
        n,
        c,
        h,
        w,
        _cpu.threads(n * max(c, 1) * h * w),
    )
    return out.to(image.dtype), valid


@_warp.register_fake
def _(image, flow, back_flow):
    n, _, h, w = image.shape
    return fake_like(image), image.new_empty((n, 1, h, w), dtype=torch.bool)


def _warp_setup(ctx, inputs, output):
    image, flow, _ = inputs
    ctx.save_for_backward(image, flow)


def _warp_backward(ctx, grad_out, grad_valid):
    image, flow = ctx.saved_tensors
    gi = gf = None
    if ctx.needs_input_grad[0]:
        gi = torch.ops.warped_fast.warp_image_grad(grad_out.contiguous(), flow, None)
    if ctx.needs_input_grad[1]:
        gf = torch.ops.warped_fast.warp_flow_grad(grad_out.contiguous(), image, flow)
    return gi, gf, None


register_autograd(_warp, _warp_backward, _warp_setup)


# --- adjoints -------------------------------------------------------------------------------------


@_eager.custom_op("warp_image_grad")
def _warp_image_grad(grad_out: torch.Tensor, flow: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    backend = select("warp_image_grad", grad_out.device.type, grad_out.dtype)
    if backend == "reference":
        return reference.warp_image_grad(grad_out, flow, scale)
    if backend == "triton":
        return _triton().warp_image_grad(grad_out, flow, scale)
    n, c, h, w = grad_out.shape
    cd = _cpu.compute_dtype(grad_out.dtype)
    go, fl = grad_out.to(cd).contiguous(), flow.to(cd).contiguous()
    sc = None if scale is None else scale.to(cd).contiguous()
    gi = torch.empty(n, c, h, w, dtype=cd)
    _cpu.lib().warp_backward_cpu(
        _cpu.dtype_code(go),
        _cpu.ptr(go),
        0,
        _cpu.ptr(fl),
        _cpu.ptr(sc),
        _cpu.ptr(gi),
        0,
        n,
        c,
        h,
        w,
        _cpu.threads(n * c * h * w),
    )
    return gi.to(grad_out.dtype)


@_warp_image_grad.register_fake
def _(grad_out, flow, scale):
    return fake_like(grad_out)


@_eager.custom_op("warp_flow_grad")
def _warp_flow_grad(grad_out: torch.Tensor, image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    backend = select("warp_flow_grad", grad_out.device.type, image.dtype)
    if backend == "reference":
        return reference.warp_flow_grad(grad_out, image, flow)
    if backend == "triton":
        return _triton().warp_flow_grad(grad_out, image, flow)
    n, c, h, w = image.shape
    cd = _cpu.compute_dtype(image.dtype)
    go, img, fl = (t.to(cd).contiguous() for t in (grad_out, image, flow))
    gf = torch.empty(n, 2, h, w, dtype=cd)
    _cpu.lib().warp_backward_cpu(
        _cpu.dtype_code(go),
        _cpu.ptr(go),
        _cpu.ptr(img),
        _cpu.ptr(fl),
        0,
        0,
        _cpu.ptr(gf),
        n,
        c,
        h,
        w,
        _cpu.threads(n * c * h * w),
    )
    return gf.to(flow.dtype)


@_warp_flow_grad.register_fake
def _(grad_out, image, flow):
    return fake_like(flow)


# --- composition ----------------------------------------------------------------------------------


@_eager.custom_op("compose_coords")
def _compose_coords(coords: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    backend = select("compose_coords", coords.device.type, coords.dtype)
    if backend == "reference":
        return reference.compose_coords(coords, flow)
    if backend == "triton":
        return _triton().compose_coords(coords, flow)
    n, h, w, _ = coords.shape
    cd = _cpu.compute_dtype(coords.dtype)
    co, fl = as_dtype(coords, cd), as_dtype(flow, cd)
    out = torch.empty(n, h, w, 2, dtype=cd)
    _cpu.lib().compose_coords_cpu(
        _cpu.dtype_code(co), _cpu.ptr(co), _cpu.ptr(fl), _cpu.ptr(out), n, h, w, _cpu.threads(n * h * w)
    )
    return out if cd == coords.dtype else out.to(coords.dtype)


@_compose_coords.register_fake
def _(coords, flow):
    return fake_like(coords)


def _compose_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _compose_backward(ctx, grad):
    # the reference's derivative (bilinear inside, linear extrapolation outside), recomputed
    return reference.compose_coords_vjp(*ctx.saved_tensors, grad, tuple(ctx.needs_input_grad))


register_autograd(_compose_coords, _compose_backward, _compose_setup)


# --- public functions -----------------------------------------------------------------------------


def _check_flow(name: str, flow, n: int, h: int, w: int, device) -> None:
    check_tensor(name, flow, (n, 2, h, w), device=device)
    check_finite(name, flow)


def warp(
    image: torch.Tensor, flow: torch.Tensor, back_flow: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear backward warp ``out(x) = image(x + flow(x))`` (zero padding) with a validity mask.

    Differentiable in ``image`` (the adjoint is a bilinear splat) and in ``flow``.

    Args:
        image: ``[N, C, H, W]`` float32/float64/float16/bfloat16.
        flow: ``[N, 2, H, W]`` sampling offsets (dx, dy) in pixels.
        back_flow: optional ``[N, 2, H, W]`` reverse flow on ``image``'s grid; pixels failing the
            forward-backward check ``|f + b~|^2 > 0.01 (|f|^2 + |b~|^2) + 0.5`` become invalid.
    Returns:
        out ``[N, C, H, W]`` and valid ``[N, 1, H, W]`` bool (sample point inside
        ``[0, W-1] x [0, H-1]`` and, with ``back_flow``, consistent).
    """
    check_tensor("image", image, (None, None, None, None))
    check_nonempty("image", image, (2, 3))
    n, _, h, w = image.shape
    _check_flow("flow", flow, n, h, w, image.device)
    if back_flow is not None:
        _check_flow("back_flow", back_flow, n, h, w, image.device)
        back_flow = back_flow.contiguous()
    return _eager.call("warp", image.contiguous(), flow.contiguous(), back_flow)


def occlusion_mask(flow: torch.Tensor, back_flow: torch.Tensor) -> torch.Tensor:
    """Pixels whose correspondence is untrustworthy: occluded (forward-backward check) or out of frame.

    Args:
        flow: ``[N, 2, H, W]`` forward flow (a -> b) on a's grid.
        back_flow: ``[N, 2, H, W]`` backward flow (b -> a) on b's grid.
    Returns:
        ``[N, 1, H, W]`` bool, True where occluded or leaving the frame.
    """
    check_tensor("flow", flow, (None, 2, None, None))
    check_nonempty("flow", flow, (2, 3))
    if back_flow is None:  # warp() takes None (no check); here the check is the point
        raise TypeError("back_flow: expected a tensor [N, 2, H, W], got None")
    empty = flow.new_empty((flow.shape[0], 0, *flow.shape[2:]))
    return ~warp(empty, flow, back_flow)[1]


def compose_coords(coords: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Compose a coordinate map with a flow: ``X_new(x) = X(x + flow(x))`` (method section 3).

    ``X`` is sampled bilinearly and extrapolated linearly outside the frame, so positions are
    interpolated, never noise values. Computed in float32 (or float64 for float64 coords).
    Differentiable in ``coords`` and ``flow``: the backward recomputes the PyTorch reference under
    autograd (``reference.compose_coords_vjp``), on every backend.

    Args:
        coords: ``[N, H, W, 2]`` map X in pixels (frame 0's coordinates of each pixel).
        flow: ``[N, 2, H, W]`` backward flow of the new frame (new -> previous).
    Returns:
        ``[N, H, W, 2]``.
    """
    check_tensor("coords", coords, (None, None, None, 2), dtypes=(torch.float32, torch.float64))
    check_nonempty("coords", coords, (1, 2))
    n, h, w, _ = coords.shape
    _check_flow("flow", flow, n, h, w, coords.device)
    check_finite("coords", coords)
    return _eager.call("compose_coords", coords.contiguous(), flow.contiguous())
