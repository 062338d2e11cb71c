"""Triton kernels of Infinite-Resolution integral noise warping, particle variant (Deng et al.,
ICLR 2025): a splat of Brownian-bridge pieces along bilinear area tickets (float32 atomics), then a
finalize pass (fresh noise for the area that did not arrive, renormalization).

Semantics follow :func:`warped_fast.noise.infres.infres_transport_reference`. The atomic sums make the
low bits depend on the order of arrival on the GPU (integer translations stay exact: one nonzero piece
per pixel). Runs on CUDA tensors and, under ``TRITON_INTERPRET=1``, on CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..ops._checks import as_f32
from . import on_tensor_device

__all__ = ["infres_transport"]


@triton.jit
def _splat_kernel(
    prev_ptr, fwd_ptr, z_ptr, acc_ptr, area_ptr,
    C, H, W, HW,
    BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    yy = offs // W
    xx = offs - yy * W
    px = xx.to(tl.float32) + tl.load(fwd_ptr + offs, mask=pm, other=0.0)
    py = yy.to(tl.float32) + tl.load(fwd_ptr + HW + offs, mask=pm, other=0.0)
    x0f = tl.floor(px)
    y0f = tl.floor(py)
    fx = px - x0f
    fy = py - y0f
    a0 = (1.0 - fx) * (1.0 - fy)
    a1 = fx * (1.0 - fy)
    a2 = (1.0 - fx) * fy
    a3 = fx * fy
    # Clamp far cells before the int conversion: every tap of a cell outside [-1, W] is outside.
    x0 = tl.minimum(tl.maximum(x0f, -2.0), W * 1.0).to(tl.int32)
    y0 = tl.minimum(tl.maximum(y0f, -2.0), H * 1.0).to(tl.int32)
    inx0 = (x0 >= 0) & (x0 <= W - 1)
    inx1 = (x0 >= -1) & (x0 <= W - 2)
    iny0 = (y0 >= 0) & (y0 <= H - 1) & pm
    iny1 = (y0 >= -1) & (y0 <= H - 2) & pm
    m0 = inx0 & iny0 & (a0 > 0.0)
    m1 = inx1 & iny0 & (a1 > 0.0)
    m2 = inx0 & iny1 & (a2 > 0.0)
    m3 = inx1 & iny1 & (a3 > 0.0)
    d0 = y0 * W + x0
    s0 = tl.sqrt_rn(a0)
    s1 = tl.sqrt_rn(a1)
    s2 = tl.sqrt_rn(a2)
    s3 = tl.sqrt_rn(a3)
    tl.atomic_add(area_ptr + d0, a0, mask=m0, sem="relaxed")
    tl.atomic_add(area_ptr + d0 + 1, a1, mask=m1, sem="relaxed")
    tl.atomic_add(area_ptr + d0 + W, a2, mask=m2, sem="relaxed")
    tl.atomic_add(area_ptr + d0 + W + 1, a3, mask=m3, sem="relaxed")
    c = 0
    while c < C:
        x = tl.load(prev_ptr + c * HW + offs, mask=pm, other=0.0)
        zb = z_ptr + c * 4 * HW + offs
        z0 = tl.load(zb, mask=pm, other=0.0)
        z1 = tl.load(zb + HW, mask=pm, other=0.0)
        z2 = tl.load(zb + 2 * HW, mask=pm, other=0.0)
        z3 = tl.load(zb + 3 * HW, mask=pm, other=0.0)
        # Same summation order as the reference: ((s0 z0 + s1 z1) + s2 z2) + s3 z3.
        s = s0 * z0 + s1 * z1
        s = s + s2 * z2
        s = s + s3 * z3
        base = acc_ptr + c * HW + d0
        tl.atomic_add(base, a0 * x + (s0 * z0 - a0 * s), mask=m0, sem="relaxed")
        tl.atomic_add(base + 1, a1 * x + (s1 * z1 - a1 * s), mask=m1, sem="relaxed")
        tl.atomic_add(base + W, a2 * x + (s2 * z2 - a2 * s), mask=m2, sem="relaxed")
        tl.atomic_add(base + W + 1, a3 * x + (s3 * z3 - a3 * s), mask=m3, sem="relaxed")
        c += 1


@triton.jit
def _finalize_kernel(
    acc_ptr, area_ptr, fresh_ptr, out_ptr,
    C, HW, min_area,
    FILL: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    n = C * HW
    m = offs < n
    p = offs % HW
    acc = tl.load(acc_ptr + offs, mask=m, other=0.0)
    area = tl.load(area_ptr + p, mask=m, other=0.0)
    fr = tl.load(fresh_ptr + offs, mask=m, other=0.0)
    if FILL:
        res = tl.div_rn(acc + tl.sqrt_rn(tl.maximum(1.0 - area, 0.0)) * fr, tl.sqrt_rn(tl.maximum(area, 1.0)))
    else:
        ok = area > min_area
        res = tl.where(ok, tl.div_rn(acc, tl.sqrt_rn(tl.where(ok, area, 1.0))), fr)
    tl.store(out_ptr + offs, res, mask=m)


@on_tensor_device
def infres_transport(
    prev: torch.Tensor,
    fwd: torch.Tensor,
    z: torch.Tensor,
    fresh: torch.Tensor,
    missing: str = "fill",
    min_area: float = 1e-6,
) -> torch.Tensor:
    """One particle step (arguments as :func:`warped_fast.noise.infres.infres_transport_reference`).

    Args:
        prev: ``[C, H, W]``; fwd: ``[2, H, W]``; z: ``[C, 4, H, W]``; fresh: ``[C, H, W]``.
    Returns:
        ``[C, H, W]`` float32.
    """
    c, h, w = prev.shape
    dev = prev.device
    for name, t, shape in (("fwd", fwd, (2, h, w)), ("z", z, (c, 4, h, w)), ("fresh", fresh, (c, h, w))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected shape {list(shape)}, got {list(t.shape)}")
        if t.device != dev:
            raise ValueError(f"{name}: expected a tensor on {dev}, got {t.device}")
    if missing not in ("fill", "renormalize"):
        raise ValueError(f"missing: expected 'fill' or 'renormalize', got {missing!r}")
    hw = h * w
    if 4 * c * hw >= 2**31:
        raise ValueError(f"frame too large for the Triton kernels: C*H*W = {c * hw}")
    prev, fwd, z, fresh = (as_f32(t) for t in (prev, fwd, z, fresh))
    acc = torch.zeros(c, h, w, device=dev)
    area = torch.zeros(h, w, device=dev)
    out = torch.empty_like(prev)
    interp = dev.type == "cpu"
    block = max(16, min(triton.next_power_of_2(hw), 8192)) if interp else 256
    _splat_kernel[(triton.cdiv(hw, block),)](prev, fwd, z, acc, area, c, h, w, hw, BLOCK=block, num_warps=4)
    n = c * hw
    eblock = max(16, min(triton.next_power_of_2(n), 32768)) if interp else 1024
    _finalize_kernel[(triton.cdiv(n, eblock),)](
        acc, area, fresh, out, c, hw, float(min_area), FILL=missing == "fill", BLOCK=eblock, num_warps=4
    )
    return out
