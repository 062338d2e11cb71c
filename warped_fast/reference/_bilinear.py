"""Bilinear sampling helpers shared by the reference ops (pure PyTorch, differentiable).

Pixel-unit coordinates: the centre of row i, column j is (x, y) = (j, i). The helpers compute in
their inputs' dtype; the ops cast to :func:`compute_dtype` first.
"""

from __future__ import annotations

import torch


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any given tensor is float64, else float32 (half / bfloat16 storage included). The
    references pass the data tensor (image, coordinates, prediction), not the flow: a float64 flow is
    rounded to a float32 image's precision, as the kernels do."""
    return (
        torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32
    )


def pixel_grid(h: int, w: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates.

    Returns:
        xs, ys: each ``[H, W]``; ``xs[i, j] = j``, ``ys[i, j] = i``.
    """
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype),
        torch.arange(w, device=device, dtype=dtype),
        indexing="ij",
    )
    return xs, ys


def _gather(img: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
    """img ``[N, C, H, W]``, integer xi/yi ``[N, H', W']`` (already in range) -> ``[N, C, H', W']``."""
    n, c, h, w = img.shape
    idx = (yi * w + xi).reshape(n, 1, xi[0].numel() if n else 0).expand(n, c, -1)  # no -1: N may be 0
    return torch.gather(img.reshape(n, c, h * w), 2, idx).reshape(n, c, *xi.shape[1:])


def taps(x: torch.Tensor, y: torch.Tensor, h: int, w: int):
    """The four zero-padded bilinear taps of sample positions ``x, y`` (``[N, H', W']``).

    A non-finite position samples nothing: all four taps are outside and its weights are 0.

    Returns:
        A list of (xi, yi, weight, inside) for taps (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1):
        indices clamped into the frame, weights differentiable in ``x, y``, ``inside`` masks; and the
        fractional parts ``wx, wy``.
    """
    fin = torch.isfinite(x) & torch.isfinite(y)
    x, y = torch.where(fin, x, -4.0), torch.where(fin, y, -4.0)  # all four taps outside
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = x - x0, y - y0
    # Every tap of a cell left of -1 or right of W - 1 is outside: clamp before the integer conversion.
    x0i, y0i = x0.clamp(-2, w).long(), y0.clamp(-2, h).long()
    out = []
    for dy, wy_ in ((0, 1 - wy), (1, wy)):
        for dx, wx_ in ((0, 1 - wx), (1, wx)):
            xi, yi = x0i + dx, y0i + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            out.append((xi.clamp(0, w - 1), yi.clamp(0, h - 1), wx_ * wy_, inside))
    return out, wx, wy


def sample_zeros(img: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear sample with zero padding: taps outside the frame contribute 0.

    Args:
        img: ``[N, C, H, W]``.
        x, y: ``[N, H', W']`` sample positions in pixels.
    Returns:
        ``[N, C, H', W']``, differentiable in ``img``, ``x`` and ``y``.
    """
    n, c, h, w = img.shape
    out = img.new_zeros(n, c, *x.shape[1:])
    for xi, yi, wt, inside in taps(x, y, h, w)[0]:
        # where, not a product with the mask: an out-of-frame tap (clamped to the border) of an inf is 0
        out = out + torch.where(inside.unsqueeze(1), _gather(img, xi, yi) * wt.unsqueeze(1), 0.0)
    return out


def sample_extrapolate(img: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear sample that extrapolates linearly outside the frame (from the border cell).

    The cell is ``clamp(floor(x), 0, W - 2)`` and the weight ``x - cell`` may leave [0, 1], so
    the bilinear patch of the border cell is continued; a 1-pixel axis is constant. A NaN position
    gives NaN; an infinite one what the extrapolation gives (inf or NaN), as in the fast paths.

    Args / returns as :func:`sample_zeros`.
    """
    n, c, h, w = img.shape
    # NaN position: cell 0 (its weights, hence the output, are NaN); +-inf clamps to the border cell.
    x0 = torch.floor(x).clamp(0, max(w - 2, 0)).nan_to_num(0.0)
    y0 = torch.floor(y).clamp(0, max(h - 2, 0)).nan_to_num(0.0)
    wx, wy = x - x0, y - y0
    x0i, y0i = x0.long(), y0.long()
    x1i, y1i = (x0i + 1).clamp(max=w - 1), (y0i + 1).clamp(max=h - 1)
    v00, v01 = _gather(img, x0i, y0i), _gather(img, x1i, y0i)
    v10, v11 = _gather(img, x0i, y1i), _gather(img, x1i, y1i)
    wx, wy = wx.unsqueeze(1), wy.unsqueeze(1)
    return (v00 * (1 - wx) + v01 * wx) * (1 - wy) + (v10 * (1 - wx) + v11 * wx) * wy
