"""Reference (pure PyTorch) of the warp family: backward warp, occlusion check, coordinate composition.

Method section 3. Conventions: flows ``[N, 2, H, W]`` hold (dx, dy) in pixels; the forward flow
of a pair (a -> b) says pixel x of a is at x + f(x) in b. Every op computes in float32 (float64 when
any input is float64) whatever the storage dtype, and returns the dtype each op documents.
Non-finite sample positions sample nothing (all taps outside, output 0, invalid).
"""

from __future__ import annotations

import torch

from ._bilinear import _gather, compute_dtype, pixel_grid, sample_extrapolate, sample_zeros, taps

# Forward-backward consistency thresholds (UnFlow): |f + b~|^2 > A1 (|f|^2 + |b~|^2) + A2.
OCCLUSION_ALPHA1 = 0.01
OCCLUSION_ALPHA2 = 0.5


def warp(
    image: torch.Tensor, flow: torch.Tensor, back_flow: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear backward warp: ``out(x) = image(x + flow(x))`` with zero padding.

    Args:
        image: ``[N, C, H, W]`` (C may be 0).
        flow: ``[N, 2, H, W]``, where each output pixel samples ``image``.
        back_flow: optional ``[N, 2, H, W]``, the reverse flow defined on ``image``'s grid;
            when given, pixels failing the forward-backward check are marked invalid.
    Returns:
        out ``[N, C, H, W]`` (image dtype) and valid ``[N, 1, H, W]`` bool: the sample point lies
        in ``[0, W-1] x [0, H-1]`` (and passes the consistency check when ``back_flow`` is given).
    """
    n, c, h, w = image.shape
    ct = compute_dtype(image)  # the flows in the image's precision, as the kernels take them
    flow = flow.to(ct)
    xs, ys = pixel_grid(h, w, image.device, ct)
    x, y = xs + flow[:, 0], ys + flow[:, 1]
    out = sample_zeros(image.to(ct), x, y)
    valid = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)  # False for NaN / inf
    if back_flow is not None:
        bt = sample_zeros(back_flow.to(ct), x, y)
        s2 = ((flow + bt) ** 2).sum(1)
        m2 = (flow**2).sum(1) + (bt**2).sum(1)
        valid = valid & ~(s2 > OCCLUSION_ALPHA1 * m2 + OCCLUSION_ALPHA2)
    return out.to(image.dtype), valid.unsqueeze(1)


def occlusion_mask(flow: torch.Tensor, back_flow: torch.Tensor) -> torch.Tensor:
    """Pixels of ``flow``'s grid that are occluded or leave the frame (forward-backward check).

    Args:
        flow: ``[N, 2, H, W]`` forward flow (a -> b) on a's grid.
        back_flow: ``[N, 2, H, W]`` backward flow (b -> a) on b's grid.
    Returns:
        ``[N, 1, H, W]`` bool, True where the correspondence is NOT trustworthy.
    """
    empty = flow.new_zeros(flow.shape[0], 0, *flow.shape[2:])
    return ~warp(empty, flow, back_flow)[1]


def compose_coords(coords: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Pull a coordinate map back through a flow: ``X_new(x) = X(x + flow(x))``.

    ``X`` is sampled bilinearly and extrapolated linearly outside the frame (method section 3),
    in displacement form ``X(p) = p + (X - id)(p)`` so the identity map composes exactly. A NaN
    position gives NaN (see :func:`sample_extrapolate`).

    Args:
        coords: ``[N, H, W, 2]`` coordinate map X (x, y) in pixels.
        flow: ``[N, 2, H, W]`` backward flow of the new frame.
    Returns:
        ``[N, H, W, 2]`` in coords' dtype.
    """
    n, h, w, _ = coords.shape
    ct = compute_dtype(coords)  # the flow in the coordinates' precision, as the kernels
    xs, ys = pixel_grid(h, w, coords.device, ct)
    disp = (coords.to(ct) - torch.stack((xs, ys), -1)).permute(0, 3, 1, 2)
    x, y = xs + flow[:, 0].to(ct), ys + flow[:, 1].to(ct)
    d = sample_extrapolate(disp, x, y)
    return torch.stack((x + d[:, 0], y + d[:, 1]), -1).to(coords.dtype)


def _flow_taps(flow: torch.Tensor, h: int, w: int):
    """Bilinear taps of ``x + flow(x)`` on the pixel grid (see :func:`taps`)."""
    xs, ys = pixel_grid(h, w, flow.device, flow.dtype)
    return taps(xs + flow[:, 0], ys + flow[:, 1], h, w)


def warp_image_grad(
    grad_out: torch.Tensor, flow: torch.Tensor, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Adjoint of :func:`warp` in the image: the bilinear splat of ``grad_out`` (explicit scatter-add).

    Args:
        grad_out: ``[N, C, H, W]`` cotangent of the warped image.
        flow: ``[N, 2, H, W]``.
        scale: optional ``[N]`` factor per frame applied to ``grad_out``.
    Returns:
        ``[N, C, H, W]`` in grad_out's dtype.
    """
    n, c, h, w = grad_out.shape
    ct = compute_dtype(grad_out)  # as the kernels
    g = grad_out.to(ct)
    if scale is not None:
        g = g * scale.to(ct).view(-1, 1, 1, 1)
    taps_, _, _ = _flow_taps(flow.to(ct), h, w)
    out = g.new_zeros(n, c, h * w)
    for xi, yi, wt, inside in taps_:
        idx = (yi * w + xi).reshape(n, 1, h * w).expand(n, c, h * w)
        val = torch.where(inside.unsqueeze(1), g * wt.unsqueeze(1), 0.0).reshape(n, c, h * w)
        out.scatter_add_(2, idx, val)
    return out.reshape(n, c, h, w).to(grad_out.dtype)


def warp_flow_grad(grad_out: torch.Tensor, image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Gradient of ``<grad_out, warp(image, flow)>`` with respect to ``flow`` (explicit formula):
    ``gx = sum_c g ((v01 - v00)(1 - wy) + (v11 - v10) wy)``, ``gy = sum_c g ((v10 - v00)(1 - wx) + (v11 - v01) wx)``
    with zero-padded taps v.

    Returns:
        ``[N, 2, H, W]`` in the flow's dtype.
    """
    n, c, h, w = image.shape
    ct = compute_dtype(image)  # as the kernels
    grad_out, image = grad_out.to(ct), image.to(ct)
    taps_, wx, wy = _flow_taps(flow.to(ct), h, w)
    v = [torch.where(inside.unsqueeze(1), _gather(image, xi, yi), 0.0) for xi, yi, _, inside in taps_]
    v00, v01, v10, v11 = v
    wx, wy = wx.unsqueeze(1), wy.unsqueeze(1)
    gx = (grad_out * ((v01 - v00) * (1 - wy) + (v11 - v10) * wy)).sum(1)
    gy = (grad_out * ((v10 - v00) * (1 - wx) + (v11 - v01) * wx)).sum(1)
    return torch.stack((gx, gy), 1).to(flow.dtype)


def compose_coords_vjp(
    coords: torch.Tensor, flow: torch.Tensor, grad: torch.Tensor, needs: tuple[bool, bool] = (True, True)
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``<grad, compose_coords(coords, flow)>`` in ``coords`` and ``flow``: the derivative
    of :func:`compose_coords` itself (bilinear inside the frame, linear extrapolation outside), by
    recomputing it under autograd (memory ``O(N H W)``). Called with grad mode on (a backward with
    ``create_graph=True``), the gradients are themselves differentiable in the inputs and ``grad``.

    Args:
        coords, flow: as :func:`compose_coords`.
        grad: ``[N, H, W, 2]`` cotangent of the composed map.
        needs: which of (coords, flow) to differentiate.
    Returns:
        (d coords, d flow) in the inputs' dtypes, None where not needed.
    """
    # double backward (grad mode on, inputs in a graph): differentiate through the inputs themselves
    pairs = tuple(zip((coords, flow), needs, strict=True))
    create = torch.is_grad_enabled() and all(t.requires_grad for t, nd in pairs if nd)
    got = iter(())
    with torch.enable_grad():
        leaves = [t if create else t.detach().requires_grad_(nd) for t, nd in pairs]
        wanted = [t for t, (_, nd) in zip(leaves, pairs, strict=True) if nd]
        if wanted:
            out = compose_coords(*leaves)
            got = iter(
                torch.autograd.grad(out, wanted, grad.to(out.dtype), allow_unused=True, create_graph=create)
            )
    result = []
    for t, nd in zip((coords, flow), needs, strict=True):
        g = next(got) if nd else None
        result.append(None if not nd else torch.zeros_like(t) if g is None else g.to(t.dtype))
    return result[0], result[1]
