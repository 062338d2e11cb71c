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


def gp_noise_vjp(
    coords: torch.Tensor,
    z: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    grad: torch.Tensor,
    needs: tuple[bool, bool, bool, bool] = (True, True, True, True),
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of ``<grad, gp_noise(coords, z, b, w)>`` in each input, chunked over pixels.

    With ``phi = <z_j, x> + b_j`` and ``s = sqrt(2 / J)``: ``d/dw[c, j] = s sum_x grad_c(x) cos(phi)``;
    ``u = -s sum_c grad_c w[c, j] sin(phi)`` gives ``d/db_j = sum_x u``, ``d/dz_j = sum_x u x`` and
    ``d/dx = sum_j u z_j``. Computed in float64 (phases of far-away coordinates stay accurate), over
    chunks of pixels: a few float64 ``[chunk, J]`` blocks (about 64 MB each) at a time, besides
    float64 copies of ``coords`` and ``grad``.

    Args:
        coords, z, b, w: as :func:`gp_noise`.
        grad: ``[N, C, H, W]`` cotangent of the field.
        needs: which of (coords, z, b, w) to differentiate.
    Returns:
        (d coords, d z, d b, d w), each in its input's dtype and shape, None where not needed.
    """
    n, h, wd, _ = coords.shape
    c, j = w.shape
    f64 = torch.float64
    pts = coords.reshape(-1, 2).to(f64)
    g = grad.to(f64).permute(0, 2, 3, 1).reshape(-1, c)
    zz, bb, ww = z.to(f64), b.to(f64), w.to(f64)
    scale = math.sqrt(2.0 / j)
    gx = torch.zeros_like(pts) if needs[0] else None
    gz, gb, gw = torch.zeros_like(zz), torch.zeros_like(bb), torch.zeros_like(ww)
    step = max(1, _CHUNK_ELEMENTS // 2 // max(j, 1))
    groups = [(0, slice(0, c))] if z.shape[0] == 1 else [(ci, slice(ci, ci + 1)) for ci in range(c)]
    for s in range(0, pts.shape[0], step):
        p, gp = pts[s : s + step], g[s : s + step]
        for k, chans in groups:
            phi = p @ zz[k].T + bb[k]  # [P, J]
            if needs[3]:
                gw[chans] += scale * (gp[:, chans].T @ torch.cos(phi))
            if needs[0] or needs[1] or needs[2]:
                u = -scale * (gp[:, chans] @ ww[chans]) * torch.sin(phi)  # [P, J]
                if needs[2]:
                    gb[k] += u.sum(0)
                if needs[1]:
                    gz[k] += u.T @ p
                if needs[0]:
                    gx[s : s + step] += u @ zz[k]
    return (
        gx.reshape(n, h, wd, 2).to(coords.dtype) if needs[0] else None,
        gz.to(z.dtype) if needs[1] else None,
        gb.to(b.dtype) if needs[2] else None,
        gw.to(w.dtype) if needs[3] else None,
    )
