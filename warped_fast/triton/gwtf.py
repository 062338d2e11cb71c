"""Triton kernels of Go-with-the-Flow noise warping (Burgert et al., CVPR 2025, Algorithm 1): four
linear passes over the pixels.

1. ``_contract_kernel`` (previous pixels): rounded forward target, coverage mark, edge count and
   the contraction draw into the per-source sum of draws.
2. ``_expand_kernel`` (new pixels): for uncovered pixels, the rounded backward source; atomically
   count the edge and add the expansion draw to that source's sum.
3. ``_scatter_kernel`` (previous pixels): split each value into its contraction piece and scatter
   ``w q``, ``w^2`` and ``w`` to the target (float32 atomics).
4. ``_gather_kernel`` (new pixels): covered: ``sum(w q) / sqrt(sum(w^2))``; expanded: the source's
   piece; else fresh noise with weight 1.

Semantics follow :func:`warped_fast.noise.gwtf.gwtf_transport_reference`; atomics make the low bits
order-dependent on the GPU (integer translations stay exact). Division and square root are the
correctly rounded ``div_rn`` / ``sqrt_rn``, as in the reference. Runs on CUDA tensors and, under
``TRITON_INTERPRET=1``, on CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..ops._checks import as_f32
from . import on_tensor_device

__all__ = ["gwtf_transport"]


@triton.jit
def _round_target(flow_ptr, offs, pm, H, W, HW):
    yy = offs // W
    xx = offs - yy * W
    tx = tl.floor(xx.to(tl.float32) + tl.load(flow_ptr + offs, mask=pm, other=0.0) + 0.5)
    ty = tl.floor(yy.to(tl.float32) + tl.load(flow_ptr + HW + offs, mask=pm, other=0.0) + 0.5)
    ok = (tx >= 0.0) & (tx <= W - 1.0) & (ty >= 0.0) & (ty <= H - 1.0) & pm
    # Integer flat index: float32 ty * W + tx is inexact past 2^24 pixels.
    idx = tl.where(ok, ty, 0.0).to(tl.int32) * W + tl.where(ok, tx, 0.0).to(tl.int32)
    return idx, ok


@triton.jit
def _contract_kernel(
    fwd_ptr, zc_ptr, cov_ptr, tgt_ptr, k_ptr, zsum_ptr,
    C, H, W, HW,
    BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    t, ok = _round_target(fwd_ptr, offs, pm, H, W, HW)
    tl.store(cov_ptr + t, tl.full([BLOCK], 1, tl.int8), mask=ok)
    tl.store(tgt_ptr + offs, tl.where(ok, t, -1), mask=pm)
    tl.store(k_ptr + offs, ok.to(tl.float32), mask=pm)
    c = 0
    while c < C:
        z = tl.load(zc_ptr + c * HW + offs, mask=pm, other=0.0)
        tl.store(zsum_ptr + c * HW + offs, tl.where(ok, z, 0.0), mask=pm)
        c += 1


@triton.jit
def _expand_kernel(
    back_ptr, ze_ptr, cov_ptr, src_ptr, k_ptr, zsum_ptr,
    C, H, W, HW,
    BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    e, ok = _round_target(back_ptr, offs, pm, H, W, HW)
    cov = tl.load(cov_ptr + offs, mask=pm, other=0) != 0
    ok = ok & ~cov
    tl.store(src_ptr + offs, tl.where(ok, e, -1), mask=pm)
    tl.atomic_add(k_ptr + e, tl.full([BLOCK], 1.0, tl.float32), mask=ok, sem="relaxed")
    c = 0
    while c < C:
        z = tl.load(ze_ptr + c * HW + offs, mask=ok, other=0.0)
        tl.atomic_add(zsum_ptr + c * HW + e, z, mask=ok, sem="relaxed")
        c += 1


@triton.jit
def _scatter_kernel(
    q_ptr, w_ptr, zc_ptr, tgt_ptr, k_ptr, zsum_ptr, num_ptr, den_ptr, wsum_ptr,
    C, HW,
    BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    t = tl.load(tgt_ptr + offs, mask=pm, other=-1)
    ok = t >= 0
    t = tl.where(ok, t, 0)
    k = tl.maximum(tl.load(k_ptr + offs, mask=ok, other=1.0), 1.0)
    wp = tl.div_rn(tl.load(w_ptr + offs, mask=ok, other=0.0), k)
    rk = tl.sqrt_rn(k)
    tl.atomic_add(den_ptr + t, wp * wp, mask=ok, sem="relaxed")
    tl.atomic_add(wsum_ptr + t, wp, mask=ok, sem="relaxed")
    c = 0
    while c < C:
        q = tl.load(q_ptr + c * HW + offs, mask=ok, other=0.0)
        z = tl.load(zc_ptr + c * HW + offs, mask=ok, other=0.0)
        zs = tl.load(zsum_ptr + c * HW + offs, mask=ok, other=0.0)
        piece = tl.div_rn(q, rk) + (z - tl.div_rn(zs, k))
        tl.atomic_add(num_ptr + c * HW + t, wp * piece, mask=ok, sem="relaxed")
        c += 1


@triton.jit
def _gather_kernel(
    q_ptr, w_ptr, ze_ptr, fresh_ptr, cov_ptr, src_ptr, k_ptr, zsum_ptr, num_ptr, den_ptr, wsum_ptr,
    out_ptr, wout_ptr,
    C, HW,
    BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    cov = (tl.load(cov_ptr + offs, mask=pm, other=0) != 0) & pm
    e = tl.load(src_ptr + offs, mask=pm, other=-1)
    exp = (e >= 0) & ~cov & pm
    e = tl.where(exp, e, 0)
    k = tl.maximum(tl.load(k_ptr + e, mask=exp, other=1.0), 1.0)
    rk = tl.sqrt_rn(k)
    den = tl.load(den_ptr + offs, mask=cov, other=1.0)
    rden = tl.sqrt_rn(tl.where(cov, den, 1.0))
    wsum = tl.load(wsum_ptr + offs, mask=cov, other=0.0)
    wexp = tl.div_rn(tl.load(w_ptr + e, mask=exp, other=0.0), k)
    tl.store(wout_ptr + offs, tl.where(cov, wsum, tl.where(exp, wexp, 1.0)), mask=pm)
    c = 0
    while c < C:
        num = tl.load(num_ptr + c * HW + offs, mask=cov, other=0.0)
        q = tl.load(q_ptr + c * HW + e, mask=exp, other=0.0)
        ze = tl.load(ze_ptr + c * HW + offs, mask=exp, other=0.0)
        zs = tl.load(zsum_ptr + c * HW + e, mask=exp, other=0.0)
        fr = tl.load(fresh_ptr + c * HW + offs, mask=pm, other=0.0)
        piece = tl.div_rn(q, rk) + (ze - tl.div_rn(zs, k))
        res = tl.where(cov, tl.div_rn(num, rden), tl.where(exp, piece, fr))
        tl.store(out_ptr + c * HW + offs, res, mask=pm)
        c += 1


@on_tensor_device
def gwtf_transport(q, weight, fwd, back, zc, ze, fresh) -> tuple[torch.Tensor, torch.Tensor]:
    """One Go-with-the-Flow step (arguments as :func:`warped_fast.noise.gwtf.gwtf_transport_reference`).

    Args:
        q: ``[C, H, W]``; weight: ``[H, W]``; fwd, back: ``[2, H, W]``; zc, ze, fresh: ``[C, H, W]``.
    Returns:
        new noise ``[C, H, W]`` and new (unnormalized) density ``[H, W]``, float32.
    """
    c, h, w = q.shape
    dev = q.device
    shapes = {"weight": (h, w), "fwd": (2, h, w), "back": (2, h, w), "zc": (c, h, w), "ze": (c, h, w)}
    shapes["fresh"] = (c, h, w)
    args = {"weight": weight, "fwd": fwd, "back": back, "zc": zc, "ze": ze, "fresh": fresh}
    for name, t in args.items():
        if tuple(t.shape) != shapes[name]:
            raise ValueError(f"{name}: expected shape {list(shapes[name])}, got {list(t.shape)}")
        if t.device != dev:
            raise ValueError(f"{name}: expected a tensor on {dev}, got {t.device}")
    hw = h * w
    if c * hw >= 2**31:
        raise ValueError(f"frame too large for the Triton kernels: C*H*W = {c * hw}")
    q, weight, fwd, back, zc, ze, fresh = (as_f32(t) for t in (q, weight, fwd, back, zc, ze, fresh))
    cov = torch.zeros(h, w, dtype=torch.int8, device=dev)
    tgt = torch.empty(h, w, dtype=torch.int32, device=dev)
    src = torch.empty(h, w, dtype=torch.int32, device=dev)
    k = torch.empty(h, w, device=dev)
    zsum = torch.empty(c, h, w, device=dev)
    num = torch.zeros(c, h, w, device=dev)
    den = torch.zeros(h, w, device=dev)
    wsum = torch.zeros(h, w, device=dev)
    out = torch.empty(c, h, w, device=dev)
    wout = torch.empty(h, w, device=dev)
    block = max(16, min(triton.next_power_of_2(hw), 8192)) if dev.type == "cpu" else 512
    grid = (triton.cdiv(hw, block),)
    _contract_kernel[grid](fwd, zc, cov, tgt, k, zsum, c, h, w, hw, BLOCK=block, num_warps=4)
    _expand_kernel[grid](back, ze, cov, src, k, zsum, c, h, w, hw, BLOCK=block, num_warps=4)
    _scatter_kernel[grid](q, weight, zc, tgt, k, zsum, num, den, wsum, c, hw, BLOCK=block, num_warps=4)
    _gather_kernel[grid](
        q, weight, ze, fresh, cov, src, k, zsum, num, den, wsum, out, wout, c, hw, BLOCK=block, num_warps=4
    )
    return out, wout
