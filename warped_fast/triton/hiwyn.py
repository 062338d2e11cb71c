"""Triton kernel of HIWYN integral noise warping (Chang et al., ICLR 2024): polygon rasterization on
the conditionally upsampled grid and the renormalized sums, one program per block of new pixels.

Semantics follow :func:`warped_fast.noise.hiwyn.hiwyn_transport_reference`: for each new pixel, loop
over the source pixels its warped quad's bounding box touches (at most ``max_extent`` per axis); per
source pixel and sub-row, test the k sub-pixel centres against the quad (even-odd crossings of the
4 canonically ordered edges, half-open in y; each edge's crossing computed once per sub-row) as a
``[BLOCK, k]`` tile, count them, and sum the covered draws per channel; a fully covered source pixel contributes exactly ``k x`` (its zero-sum
residual is dropped). Float32 throughout, with correctly rounded division and square root
(``div_rn``, ``sqrt_rn``) as in the reference. Runs on CUDA tensors and, under ``TRITON_INTERPRET=1``,
on CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..ops._checks import as_f32
from . import on_tensor_device

__all__ = ["hiwyn_transport"]


@triton.jit
def _edge(x1, y1, x2, y2):
    # Canonical edge (ya <= yb) so that two quads sharing an edge evaluate it identically.
    swap = y1 > y2
    ya = tl.where(swap, y2, y1)
    yb = tl.where(swap, y1, y2)
    xa = tl.where(swap, x2, x1)
    xb = tl.where(swap, x1, x2)
    dy = yb - ya
    slope = tl.where(dy > 0.0, tl.div_rn(xb - xa, tl.where(dy > 0.0, dy, 1.0)), 0.0)
    return ya, yb, xa, slope


@triton.jit
def _cross(px, py, ya, yb, xa, slope):
    # px: [BLOCK, KP] sub-pixel centres of one sub-row; py, edge: [BLOCK]. Same formula as the
    # reference: (ya <= py) & (py < yb) & (px < xa + (py - ya) * slope).
    hit = (ya <= py) & (py < yb)
    xi = xa + (py - ya) * slope
    return hit[:, None] & (px < xi[:, None])


@triton.jit
def _sub_range(lo, hi, K: tl.constexpr, n):
    g0 = tl.minimum(tl.maximum(tl.ceil(K * (lo + 0.5) - 0.5), 0.0), n * K - 1.0)
    g1 = tl.minimum(tl.maximum(tl.floor(K * (hi + 0.5) - 0.5), -1.0), n * K - 1.0)
    return g0, g1


@triton.jit
def _corner_index(offs, W):
    # int64 offset of pixel offs's top-left corner in the [H+1, W+1] corner grid (past int32 for a
    # tall frame: (H+1)(W+1) may exceed H W + 2 W + 2).
    i = offs // W
    j = offs - i * W
    return i.to(tl.int64) * (W + 1) + j


@triton.jit
def _hiwyn_kernel(
    prev_ptr, cx_ptr, cy_ptr, z_ptr, zmean_ptr, fresh_ptr, out_ptr,
    C, H, W, HW, MAXE,
    K: tl.constexpr, KP: tl.constexpr, CP: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # One program = BLOCK new pixels. Loop over the source pixels of each quad's bounding box, then
    # over the k sub-rows of a source pixel: a [BLOCK, k] tile of sub-pixel centres per sub-row.
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    W1 = W + 1
    ci = _corner_index(offs, W)
    x00 = tl.load(cx_ptr + ci, mask=pm, other=0.0)
    y00 = tl.load(cy_ptr + ci, mask=pm, other=0.0)
    x01 = tl.load(cx_ptr + ci + 1, mask=pm, other=0.0)
    y01 = tl.load(cy_ptr + ci + 1, mask=pm, other=0.0)
    x11 = tl.load(cx_ptr + ci + W1 + 1, mask=pm, other=0.0)
    y11 = tl.load(cy_ptr + ci + W1 + 1, mask=pm, other=0.0)
    x10 = tl.load(cx_ptr + ci + W1, mask=pm, other=0.0)
    y10 = tl.load(cy_ptr + ci + W1, mask=pm, other=0.0)
    a0, b0, c0, s0 = _edge(x00, y00, x01, y01)
    a1, b1, c1, s1 = _edge(x01, y01, x11, y11)
    a2, b2, c2, s2 = _edge(x11, y11, x10, y10)
    a3, b3, c3, s3 = _edge(x10, y10, x00, y00)

    xmin = tl.minimum(tl.minimum(x00, x01), tl.minimum(x10, x11))
    xmax = tl.maximum(tl.maximum(x00, x01), tl.maximum(x10, x11))
    ymin = tl.minimum(tl.minimum(y00, y01), tl.minimum(y10, y11))
    ymax = tl.maximum(tl.maximum(y00, y01), tl.maximum(y10, y11))
    gx0, gx1 = _sub_range(xmin, xmax, K, W)
    gy0, gy1 = _sub_range(ymin, ymax, K, H)
    empty = (gx1 < gx0) | (gy1 < gy0) | ~pm
    sx0 = tl.floor(tl.div_rn(gx0, K * 1.0))
    sy0 = tl.floor(tl.div_rn(gy0, K * 1.0))
    nwx = tl.where(empty, 0.0, tl.minimum(tl.floor(tl.div_rn(gx1, K * 1.0)) - sx0 + 1.0, MAXE * 1.0)).to(
        tl.int32
    )
    nwy = tl.where(empty, 0.0, tl.minimum(tl.floor(tl.div_rn(gy1, K * 1.0)) - sy0 + 1.0, MAXE * 1.0)).to(
        tl.int32
    )
    mwx = tl.max(nwx, axis=0)
    mwy = tl.max(nwy, axis=0)
    sx0i = sx0.to(tl.int32)
    sy0i = sy0.to(tl.int32)

    kb = tl.arange(0, KP)
    kvalid = (kb < K)[None, :]
    sub_x = (tl.div_rn(kb.to(tl.float32) + 0.5, K * 1.0) - 0.5)[None, :]
    cc = tl.arange(0, CP)[None, :]
    zstride = tl.cast(HW, tl.int64) * (K * K)  # z's channel stride; channel offsets are int64
    acc = tl.zeros([BLOCK, CP], dtype=tl.float32)
    cnt = tl.zeros([BLOCK], dtype=tl.float32)

    wy = 0
    while wy < mwy:
        wx = 0
        while wx < mwx:
            sv = (wy < nwy) & (wx < nwx)
            sx = sx0i + wx
            sy = sy0i + wy
            src = tl.where(sv, sy * W + sx, 0).to(tl.int64)
            px = sx.to(tl.float32)[:, None] + sub_x
            n_s = tl.zeros([BLOCK], dtype=tl.float32)
            tsum = tl.zeros([BLOCK, CP], dtype=tl.float32)
            a = 0
            while a < K:
                py = sy.to(tl.float32) + (tl.div_rn(a + 0.5, K * 1.0) - 0.5)
                par = _cross(px, py, a0, b0, c0, s0) ^ _cross(px, py, a1, b1, c1, s1)
                par = par ^ _cross(px, py, a2, b2, c2, s2) ^ _cross(px, py, a3, b3, c3, s3)
                inside = par & sv[:, None] & kvalid
                n_s += tl.sum(inside.to(tl.float32), axis=1)
                zp = z_ptr + (src * K + a)[:, None] * K + kb[None, :]  # sub-pixel (a, b) of src, channel 0
                c = 0
                while c < C:
                    zt = tl.load(zp, mask=inside, other=0.0)
                    tsum += tl.where(cc == c, tl.sum(zt, axis=1)[:, None], 0.0)
                    zp += zstride
                    c += 1
                a += 1
            full = n_s == K * K
            xp = prev_ptr + src  # channel 0; pointer steps of HW keep the channel offsets 64-bit
            zmp = zmean_ptr + src
            c = 0
            while c < C:
                t = tl.sum(tl.where(cc == c, tsum, 0.0), axis=1)
                xs = tl.load(xp, mask=sv, other=0.0)
                zm = tl.load(zmp, mask=sv, other=0.0)
                xp += HW
                zmp += HW
                contrib = tl.div_rn(n_s, K * 1.0) * xs + tl.where(full, 0.0, t - n_s * zm)
                contrib = tl.where(sv, contrib, 0.0)
                acc += tl.where(cc == c, contrib[:, None], 0.0)
                c += 1
            cnt += n_s
            wx += 1
        wy += 1

    root = tl.sqrt_rn(tl.maximum(cnt, 1.0))
    om = pm[:, None] & (cc < C)
    dst = cc.to(tl.int64) * HW + offs[:, None]
    fr = tl.load(fresh_ptr + dst, mask=om, other=0.0)
    res = tl.where((cnt > 0.0)[:, None], tl.div_rn(acc, root[:, None]), fr)
    tl.store(out_ptr + dst, res, mask=om)


@on_tensor_device
def hiwyn_transport(
    prev: torch.Tensor, corners: torch.Tensor, z: torch.Tensor, fresh: torch.Tensor, max_extent: int = 8
) -> torch.Tensor:
    """One HIWYN step (arguments as :func:`warped_fast.noise.hiwyn.hiwyn_transport_reference`, checked by
    :func:`warped_fast.noise.hiwyn.hiwyn_transport`).

    Args:
        prev: ``[C, H, W]``; corners: ``[2, H+1, W+1]``; z: ``[C, H, W, k, k]``; fresh: ``[C, H, W]``.
    Returns:
        ``[C, H, W]`` float32.
    """
    c, h, w = prev.shape
    k = z.shape[-1]
    dev = prev.device
    if c > 64:
        raise ValueError(f"prev: at most 64 channels, got {c}")
    hw = h * w
    # Pixel offsets are int32; corner and sub-pixel offsets int64, channels 64-bit pointer steps.
    if c * hw * k * k >= 2**62 or hw + 2 * w + 2 >= 2**31:
        raise ValueError(f"frame too large for the Triton kernel: H*W = {hw}")
    prev, corners, fresh = (as_f32(t) for t in (prev, corners, fresh))
    z = as_f32(z)
    zmean = z.view(c, hw, k * k).mean(-1)
    out = torch.empty_like(prev)
    if dev.type == "cpu":  # interpreter: few large programs
        block, warps = max(16, min(triton.next_power_of_2(hw), 1024)), 4
    else:  # [BLOCK, k] tiles, 128 pixels over 4 warps: ptxas (sm_90a) reports 128 registers, no real spills
        block, warps = 128, 4
    grid = (triton.cdiv(hw, block),)
    _hiwyn_kernel[grid](
        prev, corners[0], corners[1], z, zmean, fresh, out,
        c, h, w, hw, int(max_extent),
        K=k, KP=triton.next_power_of_2(k), CP=triton.next_power_of_2(c), BLOCK=block,
        num_warps=warps,
    )  # fmt: skip
    return out
