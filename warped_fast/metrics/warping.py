"""Self-warping error (the paper's temporal-consistency metric; the project's definition, method section 8):
warp generated frame j into the reference frame's coordinates with the flow used for the noise, and take
the mean squared difference over valid pixels. Reference: the first frame or the previous one."""

from __future__ import annotations

from typing import Literal

import torch

from ..ops import warp
from ..ops._checks import check_tensor, value_checks_on


def _accumulated_flows(fwd_flows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flows from frame 0 to every frame j, ``[T-1, 2, H, W]`` on frame 0's grid:
    ``F_j(x) = F_(j-1)(x) + f_(j-1)(x + F_(j-1)(x))`` (the flow is sampled, never the frames), and
    ``[T-1, 1, H, W]`` whether the path stayed in the frame at every intermediate frame (a path that
    leaves it samples zero padding there and can land back inside at a wrong place)."""
    disp = torch.zeros_like(fwd_flows[:1])
    inside = torch.ones_like(fwd_flows[:1, :1], dtype=torch.bool)
    out, valid = [], []
    for j in range(fwd_flows.shape[0]):
        f_at, ok = warp(fwd_flows[j : j + 1], disp)  # f_j sampled in frame j, where the path is now
        inside = inside & ok.bool()
        disp = disp + f_at
        out.append(disp)
        valid.append(inside)
    return torch.cat(out), torch.cat(valid)


def warping_error(
    video: torch.Tensor,
    fwd_flows: torch.Tensor,
    reference: Literal["previous", "first"] = "previous",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-frame self-warping error.

    Args:
        video: ``[T, C, H, W]`` generated frames (latents, or pixels in [0, 1]).
        fwd_flows: ``[T-1, 2, H, W]``, flow j-1 -> j on frame j-1's grid (at the video's resolution).
        reference: compare with the previous frame or with the first frame (flows accumulated).
        mask: optional ``[T-1, 1, H, W]`` extra valid pixels (e.g. non-occluded) on the reference grid:
            bool or integer (nonzero: valid), or float 0/1.
    Returns:
        ``[T-1]``: mean over valid pixels and channels of ``(warp(frame_j) - frame_ref)^2``; NaN for a
        frame with no valid pixel (nothing of it is seen in the reference frame): average with nanmean.
    """
    check_tensor("video", video, dtypes=None)
    if video.dim() != 4 or video.shape[0] < 2:
        raise ValueError(f"video: expected [T >= 2, C, H, W], got {list(video.shape)}")
    t, c, h, w = video.shape
    if not video.is_floating_point():
        raise TypeError(
            f"video: expected floating-point frames (pixels in [0, 1] or latents), got {video.dtype}"
        )
    check_tensor("fwd_flows", fwd_flows, (t - 1, 2, h, w), dtypes=None)
    if not fwd_flows.is_floating_point():
        raise TypeError(f"fwd_flows: expected floating-point flows (pixels), got {fwd_flows.dtype}")
    if reference not in ("previous", "first"):
        raise ValueError(f"reference: expected 'previous' or 'first', got {reference!r}")
    if reference == "previous":
        flows, path_ok = fwd_flows.float(), None
    else:
        flows, path_ok = _accumulated_flows(fwd_flows.float())
    ref = video[:-1] if reference == "previous" else video[:1].expand(t - 1, -1, -1, -1)
    warped, valid = warp(video[1:].float(), flows)
    if path_ok is not None:
        valid = valid & path_ok
    if mask is not None:
        check_tensor("mask", mask, (t - 1, 1, h, w), dtypes=None)
        if mask.is_floating_point() and value_checks_on() and not ((mask == 0) | (mask == 1)).all():
            raise ValueError(
                "mask: a float mask must hold 0 and 1 only (1: valid); a bool or integer one: nonzero"
            )
        valid = valid & mask.to(valid.device).bool()
    # where, not a product: NaN outside the valid pixels is left out
    err = torch.where(valid, (warped - ref.float()) ** 2, 0.0).sum((1, 2, 3))
    n = valid.sum((1, 2, 3)) * c
    return torch.where(n > 0, err / n.clamp_min(1), torch.full_like(err, float("nan")))
