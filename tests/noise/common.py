"""Flows and statistics shared by the noise tests."""

from __future__ import annotations

import math

import torch


def translation(t: int, h: int, w: int, shift: tuple[float, float]):
    """Content moving by ``shift`` px per frame: back = -shift, fwd = +shift; each ``[t-1, 2, h, w]``."""
    s = torch.tensor(shift, dtype=torch.float32)[None, :, None, None]
    fwd = s.expand(t - 1, 2, h, w).contiguous()
    return -fwd, fwd


def similarity(t: int, h: int, w: int, scale=0.93, angle_deg=4.0, shift=(0.6, -0.35)):
    """A consistent pair of flows for a zoom + rotation + translation about the frame centre.

    Each new pixel x sits at ``p = c + s R (x - c) + shift`` in the previous frame (back = p - x);
    the forward flow is the exact inverse map. ``scale < 1`` magnifies the content (expansion).
    """
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    x, y = xs - cx, ys - cy
    px = cx + scale * (ca * x - sa * y) + shift[0]
    py = cy + scale * (sa * x + ca * y) + shift[1]
    back = torch.stack((px - xs, py - ys))
    # inverse: x = c + R^-1 (p - c - shift) / s
    qx, qy = xs - cx - shift[0], ys - cy - shift[1]
    fx = cx + (ca * qx + sa * qy) / scale
    fy = cy + (-sa * qx + ca * qy) / scale
    fwd = torch.stack((fx - xs, fy - ys))
    return (
        back.float()[None].expand(t - 1, 2, h, w).contiguous(),
        fwd.float()[None].expand(t - 1, 2, h, w).contiguous(),
    )


def morans_i(x: torch.Tensor) -> float:
    """Moran's I of a 2D field with rook (4-neighbour) weights; about -1/(N-1) for white noise."""
    z = x.double() - x.double().mean()
    num = (z[1:, :] * z[:-1, :]).sum() + (z[:, 1:] * z[:, :-1]).sum()
    s0 = z[1:, :].numel() + z[:, 1:].numel()  # unordered pairs (the 2 of ordered pairs cancels)
    return float(z.numel() / s0 * num / (z * z).sum())


def jittered_similarity(h: int, w: int, gen: torch.Generator, jitter: float = 1.0, **kw):
    """One frame pair of :func:`similarity` (``[2, h, w]`` back, fwd) plus N(0, (0.15 jitter)^2) px per
    pixel: folds and self-intersecting pixel quads for large ``jitter``."""
    back, fwd = similarity(2, h, w, **kw)
    noise = torch.randn(2, 2, h, w, generator=gen) * 0.15 * jitter
    return back[0] + noise[0], fwd[0] + noise[1]
