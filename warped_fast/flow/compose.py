"""Coordinate maps back to frame 0 and occlusion masks, from per-frame flows (method section 3).

``X_0 = id``, ``X_j(x) = X_{j-1}(x + b_j(x))``: the position of each pixel of frame j in frame 0's
coordinates, composed through the backward flows with :func:`warped_fast.compose_coords` (bilinear,
extrapolated linearly outside the frame).
"""

from __future__ import annotations

import torch

from ..ops import compose_coords, occlusion_mask
from ..ops._checks import check_finite
from ..reference._bilinear import pixel_grid

__all__ = ["coords_to_first", "flow_to_first", "occlusions"]


def _grid(h: int, w: int, device) -> torch.Tensor:
    xs, ys = pixel_grid(h, w, device, torch.float32)
    return torch.stack((xs, ys), -1)


def _check(name: str, flow) -> None:
    """Flows checked here, under the caller's names (the ops would name their own arguments)."""
    if not isinstance(flow, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(flow).__name__}")
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"{name}: expected shape [T-1, 2, H, W], got {list(flow.shape)}")
    if not flow.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {flow.dtype}")
    check_finite(name, flow)


def coords_to_first(back_flows: torch.Tensor) -> torch.Tensor:
    """Coordinate maps of every frame in frame 0's coordinates.

    Args:
        back_flows: ``[T-1, 2, H, W]``; entry j is the flow frame j+1 -> frame j.
    Returns:
        ``[T, H, W, 2]`` float32: ``X_j`` (x, y) in pixels; ``X_0`` is the pixel grid.
    """
    _check("back_flows", back_flows)
    t1, _, h, w = back_flows.shape
    out = torch.empty(t1 + 1, h, w, 2, dtype=torch.float32, device=back_flows.device)
    x = _grid(h, w, back_flows.device)[None]
    out[0] = x[0]
    for j in range(t1):
        x = compose_coords(x, back_flows[j : j + 1].float())
        out[j + 1] = x[0]
    return out


def flow_to_first(back_flows: torch.Tensor) -> torch.Tensor:
    """Flows from every frame to frame 0, ``X_j(x) - x``.

    Args:
        back_flows: ``[T-1, 2, H, W]``.
    Returns:
        ``[T, 2, H, W]`` float32 (frame 0: zeros).
    """
    x = coords_to_first(back_flows)
    _, h, w, _ = x.shape
    return (x - _grid(h, w, x.device)).permute(0, 3, 1, 2).contiguous()


def occlusions(fwd_flows: torch.Tensor, back_flows: torch.Tensor, frame: str = "new") -> torch.Tensor:
    """Forward-backward occlusion masks of consecutive frame pairs (UnFlow check, method section 3).

    Args:
        fwd_flows: ``[T-1, 2, H, W]``, frame j -> j+1.
        back_flows: ``[T-1, 2, H, W]``, frame j+1 -> j.
        frame: ``"new"``: pixels of frame j+1 with no trustworthy correspondence in frame j
            (disoccluded, or pointing outside); ``"prev"``: pixels of frame j that get occluded in
            (or leave) frame j+1.
    Returns:
        ``[T-1, 1, H, W]`` bool, True where occluded or out of frame.
    """
    _check("fwd_flows", fwd_flows)
    _check("back_flows", back_flows)
    if fwd_flows.shape != back_flows.shape:
        raise ValueError(f"back_flows: expected shape {list(fwd_flows.shape)}, got {list(back_flows.shape)}")
    if frame == "new":
        return occlusion_mask(back_flows, fwd_flows)
    if frame == "prev":
        return occlusion_mask(fwd_flows, back_flows)
    raise ValueError(f"frame: expected 'new' or 'prev', got {frame!r}")
