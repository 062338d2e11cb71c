"""Triton kernels of the warp family (method section 3): backward warp with validity and
forward-backward occlusion check, its adjoints (image splat, flow gradient), coordinate composition.

Semantics follow :mod:`warped_fast.reference.warp` (and ``csrc/warp.cpp``): pixel ``(x, y)`` is
(column, row); flows ``[N, 2, H, W]`` hold ``(dx, dy)``; bilinear sampling with zero padding.
All math is float32 whatever the storage dtype. Non-finite sample positions sample nothing
(all taps outside, output 0, invalid).

The same code runs on CUDA tensors and, under ``TRITON_INTERPRET=1``, on CPU tensors; meta-parameters
come from a small heuristic (no autotuning, which the interpreter does not support).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import on_tensor_device

__all__ = ["compose_coords", "warp_flow_grad", "warp_forward", "warp_image_grad"]

# Forward-backward consistency thresholds (UnFlow), as in the reference.
OCCLUSION_ALPHA1 = 0.01
OCCLUSION_ALPHA2 = 0.5
_ALPHA1 = tl.constexpr(OCCLUSION_ALPHA1)  # kernels only read constexpr globals
_ALPHA2 = tl.constexpr(OCCLUSION_ALPHA2)

_IMAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_GRID = 2**31 - 1

# Forward warp of images with at most this many channels as one [channels, pixels] tile: every tap
# load (all channels, and the back flow's) issued before the first store, against one channel after
# another. 0 keeps the channel loop, the path measured on the H100 and H200; bench_warp.py times both.
_CHANNEL_TILE_MAX = 0

# Cache hints of the forward warp: (eviction policy of the flow loads, read once; eviction policy of the
# tap gathers of the image and back flow; cache modifier of the stores; "" is none). The flow leaves the
# L2 first and the outputs stream, so the image and back flow stay there for whatever reads them next:
# on the H200 (bench/tune_warp.py) 1x3x1024x1024 smooth flow 15.1 against 18.6 us without hints in graph
# replay (the same inputs each call), 18.5 against 19.5 us with every call's inputs from HBM; random
# flow 34.8 against 37.0 us (from HBM equal); 1x4x128x128 within the spread.
_WARP_FWD_HINTS = ("evict_first", "", ".cs")


# --------------------------------------------------------------------------------------------------
# Launch heuristics
# --------------------------------------------------------------------------------------------------


def _pixel_block(hw: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK pixels, num_warps) for the per-pixel kernels.

    GPU: 512 pixels / 8 warps (2 pixels per thread, coalesced along W; ~55 registers, so about half
    occupancy keeps many tap gathers in flight). Interpreter: large blocks, since each program
    instance has a fixed cost of a few ms.
    """
    if device.type == "cpu":
        return max(16, min(triton.next_power_of_2(hw), 8192)), 4
    block = max(128, min(triton.next_power_of_2(hw), 512))
    return block, 8 if block >= 512 else 4


def _warp_fwd_block(hw: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK pixels, num_warps) for the forward warp + occlusion kernel.

    GPU: 256 pixels / 4 warps (2 pixels per thread, twice the programs of ``_pixel_block``). Swept on
    the H200 (bench/tune_warp.py, graph replay): against 512 / 8, 1x3x1024x1024 smooth flow 18.4 against
    19.9 us, random flow 37.5 against 37.1 us; 1x4x128x128 random flow 3.7 against 4.4 us, smooth equal.
    """
    if device.type == "cpu":
        return _pixel_block(hw, device)
    return max(128, min(triton.next_power_of_2(hw), 256)), 4


def _elem_block(numel: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK elements, num_warps) for elementwise kernels (GPU: 8 per thread, 16-byte accesses)."""
    if device.type == "cpu":
        return max(16, min(triton.next_power_of_2(numel), 32768)), 4
    return max(128, min(triton.next_power_of_2(numel), 1024)), 4


def _check_frame(hw: int, w: int, pair: bool = False) -> None:
    # In-plane offsets (y * W + x, with taps one row/column outside) are int32, and so are the
    # interleaved (x, y) offsets 2 (y * W + x) of compose_coords (pair): int64 there costs ~30
    # registers (48 -> 78 on sm_90), so such frames (H*W >= 2^30) are refused instead.
    limit = 2**30 if pair else 2**31 - 2 * w - 2
    if hw >= limit:
        raise ValueError(f"frame too large for the Triton kernels: H*W = {hw}, expected < {limit}")


def _check_grid(n: int, nblk: int) -> None:
    if n * nblk > _MAX_GRID:
        raise ValueError(f"too many programs ({n} x {nblk}) for one launch")


def _flow_arg(name: str, flow: torch.Tensor, n: int, h: int, w: int, dtypes, device) -> torch.Tensor:
    """``flow`` checked and as the kernels read it: contiguous, of one of ``dtypes`` (any other floating
    dtype is cast to float32)."""
    if flow.shape != (n, 2, h, w):
        raise ValueError(f"{name}: expected shape [{n}, 2, {h}, {w}], got {list(flow.shape)}")
    if not flow.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point dtype, got {flow.dtype}")
    if flow.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got {flow.device}")
    return (flow if flow.dtype in dtypes else flow.float()).contiguous()


# --------------------------------------------------------------------------------------------------
# Shared device helpers
# --------------------------------------------------------------------------------------------------


@triton.jit
def _pixel_coords(blk, HW, W, BLOCK: tl.constexpr):
    """In-plane offsets (int32) of a block of pixels, their mask, and column / row as float32."""
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    xx = offs % W
    yy = offs // W
    return offs, pm, xx.to(tl.float32), yy.to(tl.float32)


@triton.jit
def _bilinear_taps(x, y, H, W, pm):
    """Zero-padded bilinear taps of float32 sample positions ``(x, y)``.

    Returns the int32 in-plane offset of the top-left tap ``(x0, y0)``, the fractional weights
    ``wx, wy`` of the ``x0 + 1`` column / ``y0 + 1`` row, the masks of the four taps
    (00, 01 = x0+1, 10 = y0+1, 11) restricted to the frame and to ``pm``, and ``inside`` (the sample
    point lies in ``[0, W-1] x [0, H-1]``). Non-finite positions get no taps and are not inside.
    """
    fin = (x > -1e30) & (x < 1e30) & (y > -1e30) & (y < 1e30)  # False for NaN / inf
    x = tl.where(fin, x, -4.0)
    y = tl.where(fin, y, -4.0)
    inside = (x >= 0.0) & (x <= W - 1.0) & (y >= 0.0) & (y <= H - 1.0) & pm
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    wx = x - x0f
    wy = y - y0f
    # Clamp far-away cells to just outside the frame before the integer conversion: every tap of a
    # cell with x0 <= -2 or x0 >= W is outside either way.
    x0 = tl.minimum(tl.maximum(x0f, -2.0), W * 1.0).to(tl.int32)
    y0 = tl.minimum(tl.maximum(y0f, -2.0), H * 1.0).to(tl.int32)
    cx0 = (x0 >= 0) & (x0 < W)
    cx1 = (x0 >= -1) & (x0 < W - 1)
    cy0 = (y0 >= 0) & (y0 < H) & pm
    cy1 = (y0 >= -1) & (y0 < H - 1) & pm
    i00 = y0 * W + x0
    return i00, wx, wy, cx0 & cy0, cx1 & cy0, cx0 & cy1, cx1 & cy1, inside


@triton.jit
def _flow_taps(pid, nblk, flow_ptr, H, W, HW, BLOCK: tl.constexpr):
    """Program ``pid``'s tile (BLOCK pixels of frame n = pid // nblk), its flow and bilinear taps.

    Returns ``n`` (int64), the in-plane offsets and mask, the frame's flow offset ``n * 2 * HW``, the flow
    ``dx, dy`` (float32) and :func:`_bilinear_taps` of ``p + flow(p)``.
    """
    n = pid // nblk
    blk = pid - n * nblk
    n = n.to(tl.int64)
    offs, pm, xf, yf = _pixel_coords(blk, HW, W, BLOCK)
    fbase = n * 2 * HW
    dx = tl.load(flow_ptr + fbase + offs, mask=pm, other=0.0).to(tl.float32)
    dy = tl.load(flow_ptr + fbase + HW + offs, mask=pm, other=0.0).to(tl.float32)
    i00, wx, wy, m00, m01, m10, m11, inside = _bilinear_taps(xf + dx, yf + dy, H, W, pm)
    return n, offs, pm, fbase, dx, dy, i00, wx, wy, m00, m01, m10, m11, inside


@triton.jit
def _sample_planes(
    base, stride, P, NP: tl.constexpr, i00, W, wx, wy, m00, m01, m10, m11, EVICT: tl.constexpr
):
    """Zero-padded bilinear samples ``[NP, BLOCK]`` (float32) of the planes ``base + p * stride``,
    ``p < P <= NP`` (rows past P are 0), every load issued together."""
    p = tl.arange(0, NP)[:, None]
    planes = base + p.to(tl.int64) * stride
    i = i00[None, :]
    cm = p < P
    v00 = tl.load(planes + i, mask=cm & m00[None, :], other=0.0, eviction_policy=EVICT).to(tl.float32)
    v01 = tl.load(planes + i + 1, mask=cm & m01[None, :], other=0.0, eviction_policy=EVICT).to(tl.float32)
    v10 = tl.load(planes + i + W, mask=cm & m10[None, :], other=0.0, eviction_policy=EVICT).to(tl.float32)
    v11 = tl.load(planes + i + W + 1, mask=cm & m11[None, :], other=0.0, eviction_policy=EVICT).to(tl.float32)
    x1 = wx[None, :]
    y1 = wy[None, :]
    return (v00 * (1.0 - x1) + v01 * x1) * (1.0 - y1) + (v10 * (1.0 - x1) + v11 * x1) * y1


@triton.jit
def _sample(plane, i00, W, wx, wy, m00, m01, m10, m11, EVICT: tl.constexpr):
    """Zero-padded bilinear sample (float32) of one plane at precomputed taps (loads with the eviction
    policy ``EVICT``)."""
    v00 = tl.load(plane + i00, mask=m00, other=0.0, eviction_policy=EVICT).to(tl.float32)
    v01 = tl.load(plane + i00 + 1, mask=m01, other=0.0, eviction_policy=EVICT).to(tl.float32)
    v10 = tl.load(plane + i00 + W, mask=m10, other=0.0, eviction_policy=EVICT).to(tl.float32)
    v11 = tl.load(plane + i00 + W + 1, mask=m11, other=0.0, eviction_policy=EVICT).to(tl.float32)
    return (v00 * (1.0 - wx) + v01 * wx) * (1.0 - wy) + (v10 * (1.0 - wx) + v11 * wx) * wy


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _warp_fwd_kernel(
    img_ptr, flow_ptr, back_ptr, out_ptr, valid_ptr,
    C, H, W, HW, nblk,
    HAS_BACK: tl.constexpr, BLOCK: tl.constexpr, CP: tl.constexpr,
    FLOW_EVICT: tl.constexpr, TAP_EVICT: tl.constexpr, STORE_CACHE: tl.constexpr,
):  # fmt: skip
    # One program = one tile (BLOCK pixels of a frame).
    tile = tl.program_id(0)
    n = tile // nblk
    offs = (tile - n * nblk) * BLOCK + tl.arange(0, BLOCK)
    base = flow_ptr + n.to(tl.int64) * 2 * HW + offs
    dx = tl.load(base, mask=offs < HW, other=0.0, eviction_policy=FLOW_EVICT).to(tl.float32)
    dy = tl.load(base + HW, mask=offs < HW, other=0.0, eviction_policy=FLOW_EVICT).to(tl.float32)
    _warp_fwd_tile(
        tile, dx, dy, img_ptr, back_ptr, out_ptr, valid_ptr, C, H, W, HW, nblk,
        HAS_BACK, BLOCK, CP, TAP_EVICT, STORE_CACHE,
    )  # fmt: skip


@triton.jit
def _warp_fwd_tile(
    pid, dx, dy, img_ptr, back_ptr, out_ptr, valid_ptr,
    C, H, W, HW, nblk,
    HAS_BACK: tl.constexpr, BLOCK: tl.constexpr, CP: tl.constexpr,
    TAP_EVICT: tl.constexpr, STORE_CACHE: tl.constexpr,
):  # fmt: skip
    # Tile pid = BLOCK pixels of frame n, flow (dx, dy): taps once, then the C channels (CP = 0: a loop,
    # one channel after another; else one [CP >= C, BLOCK] tile after the back flow's taps); validity
    # (in-frame, and the forward-backward check against the sampled back flow when HAS_BACK).
    # Cache hints (_WARP_FWD_HINTS): TAP_EVICT eviction policy, STORE_CACHE.
    n = pid // nblk
    blk = pid - n * nblk
    n = n.to(tl.int64)
    offs, pm, xf, yf = _pixel_coords(blk, HW, W, BLOCK)
    fbase = n * 2 * HW
    i00, wx, wy, m00, m01, m10, m11, ok = _bilinear_taps(xf + dx, yf + dy, H, W, pm)

    if CP > 0:
        if HAS_BACK:
            bx = _sample(back_ptr + fbase, i00, W, wx, wy, m00, m01, m10, m11, TAP_EVICT)
            by = _sample(back_ptr + fbase + HW, i00, W, wx, wy, m00, m01, m10, m11, TAP_EVICT)
        v = _sample_planes(img_ptr + n * C * HW, HW, C, CP, i00, W, wx, wy, m00, m01, m10, m11, TAP_EVICT)
        ch = tl.arange(0, CP)[:, None]
        dst = out_ptr + n * C * HW + ch.to(tl.int64) * HW + offs[None, :]
        tl.store(dst, v.to(out_ptr.dtype.element_ty), mask=(ch < C) & pm[None, :], cache_modifier=STORE_CACHE)
    else:
        plane = img_ptr + n * C * HW
        dst = out_ptr + n * C * HW + offs
        c = 0
        while c < C:
            c += 1
            v = _sample(plane, i00, W, wx, wy, m00, m01, m10, m11, TAP_EVICT)
            tl.store(dst, v.to(out_ptr.dtype.element_ty), mask=pm, cache_modifier=STORE_CACHE)
            plane += HW
            dst += HW
        if HAS_BACK:
            bx = _sample(back_ptr + fbase, i00, W, wx, wy, m00, m01, m10, m11, TAP_EVICT)
            by = _sample(back_ptr + fbase + HW, i00, W, wx, wy, m00, m01, m10, m11, TAP_EVICT)

    if HAS_BACK:
        sx = dx + bx
        sy = dy + by
        s2 = sx * sx + sy * sy
        m2 = dx * dx + dy * dy + bx * bx + by * by
        ok = ok & ~(s2 > _ALPHA1 * m2 + _ALPHA2)
    tl.store(valid_ptr + n * HW + offs, ok.to(tl.uint8), mask=pm, cache_modifier=STORE_CACHE)


@triton.jit
def _warp_splat_kernel(
    gout_ptr, flow_ptr, scale_ptr, gimg_ptr,
    C, H, W, HW, nblk,
    HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # Adjoint of the warp in the image: each pixel splats scale[n] * grad_out onto its in-frame taps
    # with float32 atomic adds (zero cotangents are skipped).
    n, offs, pm, _fbase, _dx, _dy, i00, wx, wy, m00, m01, m10, m11, _inside = _flow_taps(
        tl.program_id(0), nblk, flow_ptr, H, W, HW, BLOCK
    )
    w00 = (1.0 - wx) * (1.0 - wy)
    w01 = wx * (1.0 - wy)
    w10 = (1.0 - wx) * wy
    w11 = wx * wy
    if HAS_SCALE:
        s = tl.load(scale_ptr + n).to(tl.float32)

    src = gout_ptr + n * C * HW + offs
    dst = gimg_ptr + n * C * HW + i00
    c = 0
    while c < C:
        c += 1
        g = tl.load(src, mask=pm, other=0.0).to(tl.float32)
        if HAS_SCALE:
            g = g * s
        nz = g != 0.0
        tl.atomic_add(dst, g * w00, mask=m00 & nz, sem="relaxed")
        tl.atomic_add(dst + 1, g * w01, mask=m01 & nz, sem="relaxed")
        tl.atomic_add(dst + W, g * w10, mask=m10 & nz, sem="relaxed")
        tl.atomic_add(dst + W + 1, g * w11, mask=m11 & nz, sem="relaxed")
        src += HW
        dst += HW


@triton.jit
def _warp_flow_grad_kernel(
    gout_ptr, img_ptr, flow_ptr, gflow_ptr,
    C, H, W, HW, nblk,
    BLOCK: tl.constexpr,
):  # fmt: skip
    # Gradient of sum_c grad_out * warp(image) w.r.t. the flow: derivative of the bilinear weights,
    # accumulated over channels in float32 registers.
    n, offs, pm, fbase, _dx, _dy, i00, wx, wy, m00, m01, m10, m11, _inside = _flow_taps(
        tl.program_id(0), nblk, flow_ptr, H, W, HW, BLOCK
    )

    gx = tl.zeros([BLOCK], dtype=tl.float32)
    gy = tl.zeros([BLOCK], dtype=tl.float32)
    plane = img_ptr + n * C * HW
    src = gout_ptr + n * C * HW + offs
    c = 0
    while c < C:
        c += 1
        g = tl.load(src, mask=pm, other=0.0).to(tl.float32)
        v00 = tl.load(plane + i00, mask=m00, other=0.0).to(tl.float32)
        v01 = tl.load(plane + i00 + 1, mask=m01, other=0.0).to(tl.float32)
        v10 = tl.load(plane + i00 + W, mask=m10, other=0.0).to(tl.float32)
        v11 = tl.load(plane + i00 + W + 1, mask=m11, other=0.0).to(tl.float32)
        gx += g * ((v01 - v00) * (1.0 - wy) + (v11 - v10) * wy)
        gy += g * ((v10 - v00) * (1.0 - wx) + (v11 - v01) * wx)
        plane += HW
        src += HW
    ty = gflow_ptr.dtype.element_ty
    tl.store(gflow_ptr + fbase + offs, gx.to(ty), mask=pm)
    tl.store(gflow_ptr + fbase + HW + offs, gy.to(ty), mask=pm)


@triton.jit
def _compose_kernel(
    coords_ptr, flow_ptr, out_ptr,
    H, W, HW, WM2, HM2, nblk,
    BLOCK: tl.constexpr,
):  # fmt: skip
    # X_new(p) = q + (X - id)(q), q = p + flow(p): bilinear with linear extrapolation from the border
    # cell clamp(floor(q), 0, max(W-2, 0)). Coordinates are interleaved (x, y): [BLOCK, 2] tiles.
    pid = tl.program_id(0)
    n = pid // nblk
    blk = pid - n * nblk
    n = n.to(tl.int64)
    offs, pm, xf, yf = _pixel_coords(blk, HW, W, BLOCK)
    fbase = n * 2 * HW
    px = xf + tl.load(flow_ptr + fbase + offs, mask=pm, other=0.0).to(tl.float32)
    py = yf + tl.load(flow_ptr + fbase + HW + offs, mask=pm, other=0.0).to(tl.float32)
    cx = tl.minimum(tl.maximum(tl.floor(px), 0.0), WM2 * 1.0)
    cy = tl.minimum(tl.maximum(tl.floor(py), 0.0), HM2 * 1.0)
    cx = tl.where(cx == cx, cx, 0.0)  # NaN position: any in-range cell (the output is NaN anyway)
    cy = tl.where(cy == cy, cy, 0.0)
    wx = (px - cx)[:, None]
    wy = (py - cy)[:, None]
    x0 = cx.to(tl.int32)
    y0 = cy.to(tl.int32)
    x1 = tl.minimum(x0 + 1, W - 1)
    y1 = tl.minimum(y0 + 1, H - 1)

    k = tl.arange(0, 2)[None, :]
    is_x = k == 0
    m2 = pm[:, None] & (k < 2)
    base = coords_ptr + n * HW * 2 + k
    idx0 = tl.where(is_x, x0[:, None], y0[:, None]).to(tl.float32)  # identity at the 4 taps
    idx1 = tl.where(is_x, x1[:, None], y0[:, None]).to(tl.float32)
    idy0 = tl.where(is_x, x0[:, None], y1[:, None]).to(tl.float32)
    idy1 = tl.where(is_x, x1[:, None], y1[:, None]).to(tl.float32)
    d00 = tl.load(base + ((y0 * W + x0) * 2)[:, None], mask=m2, other=0.0).to(tl.float32) - idx0
    d01 = tl.load(base + ((y0 * W + x1) * 2)[:, None], mask=m2, other=0.0).to(tl.float32) - idx1
    d10 = tl.load(base + ((y1 * W + x0) * 2)[:, None], mask=m2, other=0.0).to(tl.float32) - idy0
    d11 = tl.load(base + ((y1 * W + x1) * 2)[:, None], mask=m2, other=0.0).to(tl.float32) - idy1
    d = (d00 * (1.0 - wx) + d01 * wx) * (1.0 - wy) + (d10 * (1.0 - wx) + d11 * wx) * wy
    o = tl.where(is_x, px[:, None], py[:, None]) + d
    dst = out_ptr + n * HW * 2 + (offs * 2)[:, None] + k
    tl.store(dst, o.to(out_ptr.dtype.element_ty), mask=m2)


# --------------------------------------------------------------------------------------------------
# Python wrappers
# --------------------------------------------------------------------------------------------------


@on_tensor_device
def warp_forward(
    image: torch.Tensor, flow: torch.Tensor, back_flow: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear backward warp ``out(x) = image(x + flow(x))`` with zero padding, and its validity.

    Args:
        image: ``[N, C, H, W]`` float32 / float16 / bfloat16 (C may be 0).
        flow: ``[N, 2, H, W]`` (dx, dy) in pixels; read as float32 or the image's dtype (any other
            floating dtype is cast to float32, as for every flow below).
        back_flow: optional ``[N, 2, H, W]`` reverse flow on ``image``'s grid (float32 or the
            image's dtype); pixels failing the forward-backward check
            ``|f + b~|^2 > 0.01 (|f|^2 + |b~|^2) + 0.5`` (``b~`` = back_flow sampled at x + f) are
            marked invalid.
    Returns:
        out ``[N, C, H, W]`` in the image dtype, and valid ``[N, 1, H, W]`` bool: the sample point
        lies in ``[0, W-1] x [0, H-1]`` (and passes the consistency check when ``back_flow`` is given).
    """
    if image.dim() != 4:
        raise ValueError(f"image: expected shape [N, C, H, W], got {list(image.shape)}")
    if image.dtype not in _IMAGE_DTYPES:
        raise TypeError(f"image: expected dtype in {[str(d) for d in _IMAGE_DTYPES]}, got {image.dtype}")
    n, c, h, w = image.shape
    fdt = (torch.float32, image.dtype)
    flow = _flow_arg("flow", flow, n, h, w, fdt, image.device)
    if back_flow is not None:
        back_flow = _flow_arg("back_flow", back_flow, n, h, w, fdt, image.device)
    image = image.contiguous()

    out = torch.empty_like(image)
    valid = torch.empty((n, 1, h, w), dtype=torch.uint8, device=image.device)
    hw = h * w
    if n == 0 or hw == 0:
        return out, valid.view(torch.bool)
    _check_frame(hw, w)
    block, warps = _warp_fwd_block(hw, image.device)
    nblk = triton.cdiv(hw, block)
    _check_grid(n, nblk)
    # Empty image: the channel loop never runs; pass the flow as a stand-in pointer.
    img_arg, out_arg = (image, out) if c > 0 else (flow, flow)
    _warp_fwd_kernel[(n * nblk,)](
        img_arg, flow, back_flow if back_flow is not None else flow, out_arg, valid,
        c, h, w, hw, nblk,
        HAS_BACK=back_flow is not None, BLOCK=block, CP=_channel_tile(c), FLOW_EVICT=_WARP_FWD_HINTS[0],
        TAP_EVICT=_WARP_FWD_HINTS[1], STORE_CACHE=_WARP_FWD_HINTS[2], num_warps=warps,
    )  # fmt: skip
    return out, valid.view(torch.bool)


def _channel_tile(c: int) -> int:
    """Rows of the forward warp's channel tile for ``c`` channels (0: the channel loop)."""
    return triton.next_power_of_2(c) if 0 < c <= _CHANNEL_TILE_MAX else 0


@on_tensor_device
def warp_image_grad(
    grad_out: torch.Tensor, flow: torch.Tensor, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Adjoint of :func:`warp_forward` in the image (bilinear splat).

    ``grad_image[n] = splat(scale[n] * grad_out[n])`` through the bilinear weights of the taps that
    lie inside the frame. Accumulates with float32 atomics (summation order is not deterministic
    on the GPU).

    Args:
        grad_out: ``[N, C, H, W]`` cotangent of the warped image (float32 / float16 / bfloat16).
        flow: ``[N, 2, H, W]``, read as float32 or grad_out's dtype.
        scale: optional float32 ``[N]`` per-frame factor.
    Returns:
        grad_image ``[N, C, H, W]`` in grad_out's dtype.
    """
    if grad_out.dim() != 4:
        raise ValueError(f"grad_out: expected shape [N, C, H, W], got {list(grad_out.shape)}")
    if grad_out.dtype not in _IMAGE_DTYPES:
        raise TypeError(
            f"grad_out: expected dtype in {[str(d) for d in _IMAGE_DTYPES]}, got {grad_out.dtype}"
        )
    n, c, h, w = grad_out.shape
    flow = _flow_arg("flow", flow, n, h, w, (torch.float32, grad_out.dtype), grad_out.device)
    if scale is not None:
        if scale.shape != (n,) or scale.device != grad_out.device:
            raise ValueError(f"scale: expected a [{n}] tensor on {grad_out.device}, got {list(scale.shape)}")
        scale = scale.to(torch.float32).contiguous()
    grad_out = grad_out.contiguous()

    acc = torch.zeros(grad_out.shape, dtype=torch.float32, device=grad_out.device)
    hw = h * w
    if grad_out.numel() > 0:
        _check_frame(hw, w)
        block, warps = _pixel_block(hw, grad_out.device)
        nblk = triton.cdiv(hw, block)
        _check_grid(n, nblk)
        _warp_splat_kernel[(n * nblk,)](
            grad_out, flow, scale if scale is not None else flow, acc,
            c, h, w, hw, nblk,
            HAS_SCALE=scale is not None, BLOCK=block, num_warps=warps,
        )  # fmt: skip
    return acc if grad_out.dtype == torch.float32 else acc.to(grad_out.dtype)


@on_tensor_device
def warp_flow_grad(grad_out: torch.Tensor, image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Gradient of ``sum(grad_out * warp_forward(image, flow)[0])`` with respect to the flow.

    ``gx = sum_c g ((v01 - v00)(1 - wy) + (v11 - v10) wy)``,
    ``gy = sum_c g ((v10 - v00)(1 - wx) + (v11 - v01) wx)`` with zero-padded taps ``v``.

    Args:
        grad_out: ``[N, C, H, W]`` cotangent of the warped image.
        image: ``[N, C, H, W]`` float32 / float16 / bfloat16.
        flow: ``[N, 2, H, W]``, read as float32 or the image's dtype.
    Returns:
        grad_flow ``[N, 2, H, W]`` in the flow's dtype.
    """
    if image.dim() != 4:
        raise ValueError(f"image: expected shape [N, C, H, W], got {list(image.shape)}")
    if image.dtype not in _IMAGE_DTYPES:
        raise TypeError(f"image: expected dtype in {[str(d) for d in _IMAGE_DTYPES]}, got {image.dtype}")
    n, c, h, w = image.shape
    if grad_out.shape != image.shape or grad_out.device != image.device:
        raise ValueError(f"grad_out: expected shape {list(image.shape)}, got {list(grad_out.shape)}")
    flow_dtype = flow.dtype
    flow = _flow_arg("flow", flow, n, h, w, (torch.float32, image.dtype), image.device)
    grad_out, image = grad_out.contiguous(), image.contiguous()

    hw = h * w
    if c == 0 or n == 0 or hw == 0:
        return torch.zeros_like(flow, dtype=flow_dtype)
    grad_flow = torch.empty_like(flow)
    _check_frame(hw, w)
    block, warps = _pixel_block(hw, image.device)
    nblk = triton.cdiv(hw, block)
    _check_grid(n, nblk)
    _warp_flow_grad_kernel[(n * nblk,)](
        grad_out, image, flow, grad_flow,
        c, h, w, hw, nblk,
        BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return grad_flow.to(flow_dtype)


@on_tensor_device
def compose_coords(coords: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Pull a coordinate map back through a flow: ``X_new(p) = X(p + flow(p))``.

    ``X`` is sampled bilinearly in displacement form ``X(q) = q + (X - id)(q)`` from the cell
    ``clamp(floor(q), 0, max(W-2, 0))`` (weights may leave [0, 1]: linear extrapolation outside the
    frame; a 1-pixel axis is constant). A NaN position gives NaN.

    Args:
        coords: ``[N, H, W, 2]`` float32 coordinate map (x, y) in pixels.
        flow: ``[N, 2, H, W]`` backward flow of the new frame (read as float32, float16 or bfloat16).
    Returns:
        ``[N, H, W, 2]`` float32.
    """
    if coords.dim() != 4 or coords.shape[3] != 2:
        raise ValueError(f"coords: expected shape [N, H, W, 2], got {list(coords.shape)}")
    if coords.dtype != torch.float32:
        raise TypeError(f"coords: expected dtype torch.float32, got {coords.dtype}")
    n, h, w, _ = coords.shape
    flow = _flow_arg("flow", flow, n, h, w, _IMAGE_DTYPES, coords.device)
    coords = coords.contiguous()

    out = torch.empty_like(coords)
    hw = h * w
    if n == 0 or hw == 0:
        return out
    _check_frame(hw, w, pair=True)
    block, warps = _pixel_block(hw, coords.device)
    nblk = triton.cdiv(hw, block)
    _check_grid(n, nblk)
    _compose_kernel[(n * nblk,)](
        coords, flow, out,
        h, w, hw, max(w - 2, 0), max(h - 2, 0), nblk,
        BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return out
