"""Triton kernels of the equivariance-guidance step (method section 4, Algorithm 1): the fused masked
residual with per-frame squared norms, and the fused Euler + guidance update.

Semantics follow :mod:`warped_fast.reference.guidance` (and ``csrc/guidance.cpp``); all math is
float32 whatever the storage dtype. Runs on CUDA tensors and, under ``TRITON_INTERPRET=1``, on CPU
tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import on_tensor_device
from .warp import (
    _IMAGE_DTYPES,
    _check_frame,
    _check_grid,
    _elem_block,
    _flow_arg,
    _flow_taps,
    _pixel_block,
    _sample,
)

__all__ = ["euler_guided_step", "guidance_residual"]


@triton.jit
def _residual_kernel(
    pred_ptr, prev_ptr, flow_ptr, mask_ptr, r_ptr, part_ptr,
    C, H, W, HW, nblk,
    HAS_MASK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # One program = BLOCK pixels of frame n: r = M * (warp(pred) - prev) over the C channels, with
    # M = in-frame & mask; the block's float32 sum of r^2 goes to part[n, blk] (deterministic).
    pid = tl.program_id(0)
    n, offs, pm, _fbase, _dx, _dy, i00, wx, wy, m00, m01, m10, m11, keep = _flow_taps(
        pid, nblk, flow_ptr, H, W, HW, BLOCK
    )
    if HAS_MASK:
        keep = keep & (tl.load(mask_ptr + n * HW + offs, mask=pm, other=0) != 0)
    # Dropped pixels read nothing.
    m00 = m00 & keep
    m01 = m01 & keep
    m10 = m10 & keep
    m11 = m11 & keep

    acc = tl.zeros([BLOCK], dtype=tl.float32)
    plane = pred_ptr + n * C * HW
    off = n * C * HW + offs
    c = 0
    while c < C:
        c += 1
        v = _sample(plane, i00, W, wx, wy, m00, m01, m10, m11, "")
        p = tl.load(prev_ptr + off, mask=keep, other=0.0).to(tl.float32)
        r = tl.where(keep, v - p, 0.0)
        tl.store(r_ptr + off, r.to(r_ptr.dtype.element_ty), mask=pm)
        acc += r * r
        plane += HW
        off += HW
    tl.store(part_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _euler_kernel(
    u_ptr, pred_ptr, grad_ptr, sigma_ptr, sigma_next_ptr, out_ptr,
    lam, per_item, nblk,
    HAS_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # Elementwise u + (s_next - s) / s * (u - pred) - lam * grad on BLOCK elements of item n (the
    # per-item factor is a scalar of the program); int64 offsets.
    pid = tl.program_id(0)
    n = pid // nblk
    blk = (pid - n * nblk).to(tl.int64)
    s = tl.load(sigma_ptr + n).to(tl.float32)
    sn = tl.load(sigma_next_ptr + n).to(tl.float32)
    k = (sn - s) / s
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    m = offs < per_item
    offs = n.to(tl.int64) * per_item + offs
    u = tl.load(u_ptr + offs, mask=m, other=0.0).to(tl.float32)
    d = tl.load(pred_ptr + offs, mask=m, other=0.0).to(tl.float32)
    o = u + k * (u - d)
    if HAS_GRAD:
        g = tl.load(grad_ptr + offs, mask=m, other=0.0).to(tl.float32)
        o = o - lam * g
    tl.store(out_ptr + offs, o.to(out_ptr.dtype.element_ty), mask=m)


@on_tensor_device
def guidance_residual(
    pred: torch.Tensor, prev: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked residual ``r = M * (warp(pred, flow) - prev)`` and its per-frame squared norm.

    Args:
        pred: ``[N, C, H, W]`` prediction of frame j (float32 / float16 / bfloat16).
        prev: ``[N, C, H, W]`` stored prediction of frame j-1 (any float dtype, read as float32).
        flow: ``[N, 2, H, W]`` forward flow (j-1 -> j) on frame j-1's grid, read as float32 or pred's dtype.
        mask: optional ``[N, 1, H, W]`` bool of pixels to keep; M is this AND the in-frame validity
            of the warp.
    Returns:
        r ``[N, C, H, W]`` in pred's dtype, and sumsq ``[N]`` float32: the sum of r^2 per frame,
        accumulated in float32 from the unrounded residual (per-block partial sums, then a
        torch sum: deterministic).
    """
    if pred.dim() != 4:
        raise ValueError(f"pred: expected shape [N, C, H, W], got {list(pred.shape)}")
    if pred.dtype not in _IMAGE_DTYPES:
        raise TypeError(f"pred: expected dtype in {[str(d) for d in _IMAGE_DTYPES]}, got {pred.dtype}")
    n, c, h, w = pred.shape
    if prev.shape != pred.shape or prev.device != pred.device:
        raise ValueError(f"prev: expected shape {list(pred.shape)} on {pred.device}, got {list(prev.shape)}")
    flow = _flow_arg("flow", flow, n, h, w, (torch.float32, pred.dtype), pred.device)
    if mask is not None:
        if mask.shape != (n, 1, h, w) or mask.device != pred.device:
            raise ValueError(f"mask: expected shape [{n}, 1, {h}, {w}], got {list(mask.shape)}")
        mask = mask.to(torch.bool).contiguous().view(torch.uint8)
    pred, prev = pred.contiguous(), prev.contiguous()

    r = torch.empty_like(pred)
    hw = h * w
    if r.numel() == 0:
        return r, torch.zeros(n, dtype=torch.float32, device=pred.device)
    _check_frame(hw, w)
    block, warps = _pixel_block(hw, pred.device)
    nblk = triton.cdiv(hw, block)
    _check_grid(n, nblk)
    part = torch.empty((n, nblk), dtype=torch.float32, device=pred.device)
    _residual_kernel[(n * nblk,)](
        pred, prev, flow, mask if mask is not None else flow, r, part,
        c, h, w, hw, nblk,
        HAS_MASK=mask is not None, BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return r, part.sum(1)


@on_tensor_device
def euler_guided_step(
    u: torch.Tensor,
    pred: torch.Tensor,
    grad: torch.Tensor | None,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    lam: float = 1.0,
) -> torch.Tensor:
    """Fused EDM Euler step plus guidance: ``u + (s_next - s) / s * (u - pred) - lam * grad``.

    Args:
        u, pred: ``[N, ...]`` (e.g. ``[N, C, H, W]``), same shape; float32 / float16 / bfloat16.
        grad: same shape as ``u``, or None (plain Euler step).
        sigma, sigma_next: float32 ``[N]`` noise levels per batch element.
        lam: guidance weight.
    Returns:
        ``[N, ...]`` in u's dtype (computed in float32).
    """
    if u.dim() < 1:
        raise ValueError("u: expected a tensor with a batch dimension")
    if u.dtype not in _IMAGE_DTYPES:
        raise TypeError(f"u: expected dtype in {[str(d) for d in _IMAGE_DTYPES]}, got {u.dtype}")
    n = u.shape[0]
    for name, t in (("pred", pred), ("grad", grad)):
        if t is not None and (t.shape != u.shape or t.device != u.device):
            raise ValueError(f"{name}: expected shape {list(u.shape)} on {u.device}, got {list(t.shape)}")
    for name, t in (("sigma", sigma), ("sigma_next", sigma_next)):
        if t.shape != (n,) or t.device != u.device:
            raise ValueError(f"{name}: expected a [{n}] tensor on {u.device}, got {list(t.shape)}")
    u, pred = u.contiguous(), pred.contiguous()
    grad = grad.contiguous() if grad is not None else None
    sigma = sigma.to(torch.float32).contiguous()
    sigma_next = sigma_next.to(torch.float32).contiguous()

    out = torch.empty_like(u)
    if u.numel() == 0:
        return out
    per_item = u.numel() // n
    block, warps = _elem_block(per_item, u.device)
    nblk = triton.cdiv(per_item, block)
    _check_grid(n, nblk)
    _euler_kernel[(n * nblk,)](
        u, pred, grad if grad is not None else u, sigma, sigma_next, out,
        float(lam), per_item, nblk,
        HAS_GRAD=grad is not None, BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return out
