"""Integral noise warping of "How I Warped Your Noise" (HIWYN; Chang, Tang, Gross, Azevedo, ICLR 2024).

Each noise pixel is the normalized integral of a white-noise field over the pixel's area. One step:

1. Conditional upsampling of the previous frame's noise x (k x k sub-pixels per pixel):
   ``s = x / k + (Z - mean(Z))`` with ``Z`` i.i.d. N(0, 1) over the pixel's k^2 sub-pixels. The
   sub-pixels are then i.i.d. N(0, 1) (unconditionally) and ``sum(s) / k = x`` exactly.
2. The polygon of each new pixel: its 4 corners ``(j +- 1/2, i +- 1/2)`` moved by the backward flow
   (sampled bilinearly at the corners, extrapolated linearly outside the frame) into the previous frame.
3. Rasterization: the sub-pixels whose centres lie inside the polygon (even-odd crossing test on
   the 4 straight edges, half-open in y, with each edge evaluated from its canonically ordered
   endpoints, so polygons sharing an edge partition the sub-pixels).
4. ``x'(p) = sum(s over covered sub-pixels) / sqrt(number covered)``: N(0, 1), and independent between
   pixels whose polygons do not overlap.

What this implementation decides where the paper leaves room: polygons are the 4-corner quads (no
edge subdivision); the sum is grouped by source pixel, and a source pixel fully covered contributes
exactly ``k x`` (its residual sums to 0 analytically), which makes integer translations exact; a
pixel whose polygon covers no sub-pixel (it lies outside the previous frame, or is thinner than a
sub-pixel) gets fresh N(0, 1) noise; a polygon whose bounding box spans more than ``max_extent``
source pixels per axis is clipped to its first ``max_extent`` (still unit variance, but it no longer
integrates its whole area).

Known limits: k^2 random numbers per pixel and frame (k = 8: 64); where the flow folds (occlusions),
overlapping polygons share sub-pixels, so those pixels are correlated; expansion beyond 1/k per pixel
leaves pixels empty (fresh noise); the upsampling is redone every frame from the previous frame's
noise (as the paper does frame to frame), so errors accumulate like any frame-to-frame warp.

GPU path: :mod:`warped_fast.triton.hiwyn` (one kernel for the rasterization and sums); CPU path: the
C++ kernel ``csrc/hiwyn.cpp`` (the same covered sets as the reference, bit masks per sub-row); the
PyTorch implementation below is the reference both are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops import _cpu, value_checks
from ..ops._checks import as_f32, check_finite, check_int
from ..ops._dispatch import register, select
from ..reference._bilinear import pixel_grid, sample_extrapolate
from .base import NoiseWarper, check_cpu_kernel_frame, check_tensors, frame_shape, register_method

register("hiwyn", ("triton", "cpu", "reference"))

_CHUNK = 1 << 22  # elements of one [pixels, k, k] block in the PyTorch implementation


@dataclass(frozen=True)
class HIWYNConfig:
    """Options of ``hiwyn``.

    Attributes:
        upsample: k, sub-pixels per pixel side (HIWYN's code uses 2^3 = 8). A power of two keeps
            integer translations bit-exact.
        max_extent: most source pixels a warped pixel's polygon may span per axis (larger ones are
            clipped).
    """

    upsample: int = 8
    max_extent: int = 8

    def __post_init__(self):
        if check_int("upsample", self.upsample, 1) > 32:
            raise ValueError(f"upsample: expected an int in [1, 32], got {self.upsample!r}")
        check_int("max_extent", self.max_extent, 1)
        for name in ("upsample", "max_extent"):  # numpy integers stored as ints
            object.__setattr__(self, name, int(getattr(self, name)))


def pixel_corners(back: torch.Tensor) -> torch.Tensor:
    """Positions in the previous frame of the pixel corners of the new frame.

    Args:
        back: ``[2, H, W]`` backward flow (new -> previous) at pixel centres.
    Returns:
        ``[2, H+1, W+1]``: (x, y) of corner (a, b), which sits at ``(b - 1/2, a - 1/2)``, moved by the
        flow sampled there bilinearly (linear extrapolation beyond the outer pixel centres).
    """
    _, h, w = back.shape
    xs, ys = pixel_grid(h + 1, w + 1, back.device, torch.float32)
    xs, ys = xs - 0.5, ys - 0.5
    f = sample_extrapolate(back[None].float(), xs[None], ys[None])[0]
    return torch.stack((xs + f[0], ys + f[1]))


def _edges(cx: torch.Tensor, cy: torch.Tensor):
    """Canonical edges of the quads c00 -> c01 -> c11 -> c10: per edge (ya, yb, xa, slope), ya <= yb."""
    quad = [
        (cx[:-1, :-1], cy[:-1, :-1]),
        (cx[:-1, 1:], cy[:-1, 1:]),
        (cx[1:, 1:], cy[1:, 1:]),
        (cx[1:, :-1], cy[1:, :-1]),
    ]
    out = []
    for e in range(4):
        (x1, y1), (x2, y2) = quad[e], quad[(e + 1) % 4]
        swap = y1 > y2
        ya, yb = torch.where(swap, y2, y1), torch.where(swap, y1, y2)
        xa, xb = torch.where(swap, x2, x1), torch.where(swap, x1, x2)
        dy = yb - ya
        slope = torch.where(dy > 0, (xb - xa) / torch.where(dy > 0, dy, 1.0), 0.0)
        out.append((ya, yb, xa, slope))
    return out, quad


def _sub_range(lo: torch.Tensor, hi: torch.Tensor, k: int, n: int):
    """Global sub-pixel indices g (centre ``(g + 1/2)/k - 1/2``) with centres in [lo, hi], clipped."""
    g0 = torch.ceil(k * (lo + 0.5) - 0.5).clamp(0, n * k - 1)
    g1 = torch.floor(k * (hi + 0.5) - 0.5).clamp(-1, n * k - 1)
    return g0, g1


def hiwyn_transport_reference(
    prev: torch.Tensor, corners: torch.Tensor, z: torch.Tensor, fresh: torch.Tensor, max_extent: int = 8
) -> torch.Tensor:
    """One HIWYN step in PyTorch (vectorized over pixels; loops over the source-pixel window).

    Args:
        prev: ``[C, H, W]`` previous frame's noise.
        corners: ``[2, H+1, W+1]`` corner positions in the previous frame (:func:`pixel_corners`).
        z: ``[C, H, W, k, k]`` i.i.d. N(0, 1) sub-pixel draws (row-major sub-pixels of each pixel).
        fresh: ``[C, H, W]`` N(0, 1) for pixels whose polygon covers no sub-pixel.
        max_extent: clip of the source window per axis.
    Returns:
        ``[C, H, W]`` float32.
    """
    c, h, w = prev.shape
    k = z.shape[-1]
    kk = k * k
    prev, fresh = prev.float(), fresh.float()
    zf = z.float().reshape(c, h * w, kk)
    zmean = zf.mean(-1)
    pf = prev.reshape(c, h * w)
    cx, cy = corners[0].float(), corners[1].float()
    edges, quad = _edges(cx, cy)
    qx = torch.stack([q[0] for q in quad])
    qy = torch.stack([q[1] for q in quad])
    gx0, gx1 = _sub_range(qx.amin(0), qx.amax(0), k, w)
    gy0, gy1 = _sub_range(qy.amin(0), qy.amax(0), k, h)
    empty = (gx1 < gx0) | (gy1 < gy0)
    sx0, sy0 = torch.floor(gx0 / k), torch.floor(gy0 / k)
    nwx = torch.where(
        empty, 0.0, torch.minimum(torch.floor(gx1 / k) - sx0 + 1, torch.tensor(float(max_extent)))
    )
    nwy = torch.where(
        empty, 0.0, torch.minimum(torch.floor(gy1 / k) - sy0 + 1, torch.tensor(float(max_extent)))
    )
    mwx, mwy = int(nwx.max().item()), int(nwy.max().item())

    # Pixel axis last (contiguous) in every [k, k, pixels] block.
    sub = (torch.arange(k, device=prev.device, dtype=torch.float32) + 0.5) / k - 0.5  # centre offsets
    sub_x, sub_y = sub.view(1, k, 1), sub.view(k, 1, 1)
    zrow = zf.transpose(0, 1).contiguous()  # [H*W, C, k*k]: one source pixel's draws per row
    acc = torch.zeros(c, h * w, device=prev.device)
    cnt = torch.zeros(h * w, device=prev.device)
    e_flat = [tuple(t.reshape(-1) for t in e) for e in edges]
    sx0f, sy0f, nwxf, nwyf = (t.reshape(-1) for t in (sx0, sy0, nwx, nwy))
    rows = max(1, _CHUNK // (kk * w))
    for r0 in range(0, h, rows):
        sl = slice(r0 * w, min(h, r0 + rows) * w)
        eds = [tuple(t[sl][None, None] for t in e) for e in e_flat]
        for wy in range(mwy):
            for wx in range(mwx):
                sv = (wy < nwyf[sl]) & (wx < nwxf[sl])
                sx, sy = sx0f[sl] + wx, sy0f[sl] + wy
                px = sx[None, None] + sub_x  # [1, k, n]: sub-pixel column b
                py = sy[None, None] + sub_y  # [k, 1, n]: sub-pixel row a
                par = None
                for ya, yb, xa, slope in eds:
                    cr = (ya <= py) & (py < yb) & (px < xa + (py - ya) * slope)
                    par = cr if par is None else par ^ cr
                inside = (par & sv).reshape(kk, -1)
                n_s = inside.sum(0).float()
                src = torch.where(sv, sy.long() * w + sx.long(), 0)
                ins = inside.t().to(torch.float32).unsqueeze(2)  # [n, k*k, 1]
                t = torch.bmm(zrow.index_select(0, src), ins)[..., 0].t()  # [C, n]
                xs, zm = pf.index_select(1, src), zmean.index_select(1, src)
                contrib = (n_s / k) * xs + torch.where(n_s == kk, 0.0, t - n_s * zm)
                acc[:, sl] += torch.where(sv, contrib, 0.0)
                cnt[sl] += n_s
    out = torch.where(cnt > 0, acc / cnt.clamp_min(1).sqrt(), fresh.reshape(c, -1))
    return out.reshape(c, h, w)


def hiwyn_transport(
    prev: torch.Tensor, corners: torch.Tensor, z: torch.Tensor, fresh: torch.Tensor, max_extent: int = 8
) -> torch.Tensor:
    """One HIWYN step (see :func:`hiwyn_transport_reference` for the arguments), dispatched: Triton on
    GPU tensors (and on CPU under the interpreter when forced), the C++ kernel on CPU tensors (PyTorch
    where the compiled module is missing)."""
    c, h, w = frame_shape("prev", prev)
    if isinstance(z, torch.Tensor) and z.dim() != 5:
        raise ValueError(f"z: expected shape [C, H, W, k, k], got {list(z.shape)}")
    k = z.shape[-1] if isinstance(z, torch.Tensor) else 1
    if k < 1:
        raise ValueError(f"z: expected k x k sub-pixel draws with k >= 1, got {list(z.shape)}")
    check_tensors(prev=(prev, (c, h, w)), corners=(corners, (2, h + 1, w + 1)), z=(z, (c, h, w, k, k)),
                  fresh=(fresh, (c, h, w)))  # fmt: skip
    check_int("max_extent", max_extent, 1)
    check_finite("corners", corners)  # every backend: the reference fails on NaN, the kernels differ on it
    backend = select("hiwyn", prev.device.type)
    if backend == "triton":
        from ..triton import hiwyn as th

        return th.hiwyn_transport(prev, corners, z, fresh, max_extent)
    if backend == "cpu" and k <= 32:  # the C++ kernel keeps one 32-bit mask per sub-row
        return _hiwyn_transport_cpu(prev, corners, z, fresh, max_extent)
    return hiwyn_transport_reference(prev, corners, z, fresh, max_extent)


def _hiwyn_transport_cpu(prev, corners, z, fresh, max_extent: int) -> torch.Tensor:
    """The C++ kernel on CPU tensors (arguments checked by :func:`hiwyn_transport`)."""
    c, h, w = prev.shape
    k = z.shape[-1]
    check_cpu_kernel_frame("prev", h, w, k)
    prev, fresh, z = (as_f32(t) for t in (prev, fresh, z))
    cx, cy = (as_f32(t) for t in corners.unbind(0))
    zmean = z.view(c, h * w, k * k).mean(-1)  # the reference's mean, bit for bit
    out = torch.empty_like(prev)
    # a window never spans more source pixels than a side has: the same result as any larger clip
    extent = min(int(max_extent), max(h, w))
    _cpu.lib().hiwyn_transport_cpu(
        *(_cpu.ptr(t) for t in (prev, cx, cy, z, zmean, fresh, out)),
        c, h, w, k, extent, _cpu.threads(c * h * w * k * k),
    )  # fmt: skip
    return out


@register_method("hiwyn")
class HIWYNWarp(NoiseWarper):
    """How I Warped Your Noise (Chang et al., ICLR 2024): integral noise warping by conditional
    upsampling, polygon rasterization and renormalization by the square root of the covered area.

    Uses the backward flow only. Exact under integer translation (with a power-of-two ``upsample``).
    Options: :class:`HIWYNConfig`. See the module docstring for what is implemented and its limits.
    """

    needs_forward_flow = False

    def __init__(self, upsample: int = 8, max_extent: int = 8):
        super().__init__()
        self.config = HIWYNConfig(upsample, max_extent)

    def _reset(self) -> torch.Tensor:
        self._noise = self.randn(*self.shape)
        return self._noise

    def _step(self, back, fwd) -> torch.Tensor:
        c, h, w = self.shape
        k = self.config.upsample
        corners = pixel_corners(back)
        check_finite("back_flow", corners)  # a huge finite flow overflows there: the caller's argument
        z = self.randn(c, h, w, k, k)
        fresh = self.randn(c, h, w)
        with value_checks(False):  # the corners were just checked (a second scan: a GPU sync)
            self._noise = hiwyn_transport(self._noise, corners, z, fresh, self.config.max_extent)
        return self._noise
