"""Reference (pure PyTorch) of the random-Fourier-feature GP noise field (method section 2).

``xi_c(x) = sqrt(2 / J) * sum_j w[c, j] * cos(<z[c', j], x> + b[c', j])`` with ``c' = c`` for
independent channels (``z: [C, J, 2]``) or ``c' = 0`` for shared features (``z: [1, J, 2]``).
"""

from __future__ import annotations

import math

import torch

_CHUNK_ELEMENTS = 1 << 24  # cap the materialized [pixels, J] block at 64 MB in float32


def gp_noise(coords: torch.Tensor, z: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Evaluate the RFF field at arbitrary coordinates, chunked over pixels.

    Args:
        coords: ``[N, H, W, 2]`` (x, y) in pixels.
        z: ``[Cz, J, 2]`` frequencies (radians per pixel), ``Cz`` in {1, C}.
        b: ``[Cz, J]`` phases.
        w: ``[C, J]`` weights.
    Returns:
        ``[N, C, H, W]`` in the dtype of ``coords`` (float32 or float64).
    """
    n, h, wd, _ = coords.shape
    c, j = w.shape
    dt = coords.dtype
    pts = coords.reshape(-1, 2)
    z, b, w = z.to(dt), b.to(dt), w.to(dt)
    out = torch.empty(pts.shape[0], c, dtype=dt, device=coords.device)
    step = max(1, _CHUNK_ELEMENTS // max(j, 1))
    for s in range(0, pts.shape[0], step):
        p = pts[s : s + step]
        if z.shape[0] == 1:
            out[s : s + step] = torch.cos(p @ z[0].T + b[0]) @ w.T
        else:
            for ci in range(c):
                out[s : s + step, ci] = torch.cos(p @ z[ci].T + b[ci]) @ w[ci]
    out = out * math.sqrt(2.0 / j)
    return out.reshape(n, h, wd, c).permute(0, 3, 1, 2).contiguous()
